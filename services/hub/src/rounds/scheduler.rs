//! Pure scheduling logic: slots and validator choice. No I/O, no clock:
//! callers pass the time in, so every rule here is unit-tested.

use foldhash::HashSet;

use protocol::PublicKey;
use store::WebsiteId;

use crate::registry::NetPrefix;

/// A website's schedule: slots of `interval_ms`, offset by a phase derived
/// from the website id so that sites added together do not fire together.
/// Every hub computes the same slots for the same website.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval_ms: i64,
    pub phase_ms: i64,
}

impl Schedule {
    /// The phase is [`store::schedule_phase_ms`] (a fixed hash of the id),
    /// in `store` so the load tool can pick ids that land where it wants.
    pub fn new(website_id: WebsiteId, interval_secs: u32) -> Self {
        Self {
            interval_ms: i64::from(interval_secs.max(1)) * 1000,
            phase_ms: store::schedule_phase_ms(website_id, interval_secs),
        }
    }

    /// The slot containing time `t_ms`.
    pub fn slot_at(&self, t_ms: i64) -> i64 {
        (t_ms - self.phase_ms).div_euclid(self.interval_ms)
    }

    /// When slot `slot` is due.
    pub fn scheduled_at(&self, slot: i64) -> i64 {
        self.phase_ms + slot * self.interval_ms
    }
}

/// A connected validator as the picker sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: PublicKey,
    pub region: String,
    /// Tasks assigned and not yet answered.
    pub load: u32,
    pub capacity: u32,
    /// Held by this hub: a task to it needs no message through Redis.
    pub local: bool,
    /// Its client's network; `None` if unknown (announced by an older hub):
    /// then it counts as a network of its own.
    pub prefix: Option<NetPrefix>,
    /// Its network supplied more than its share of this hub's recent tasks
    /// (`HUB_PREFIX_MAX_TASK_SHARE`): picked only after everyone else.
    pub crowded: bool,
    /// Its results count toward decisions (not on probation, trusted
    /// enough). Those that do not are picked last, and for shadow places.
    pub counts: bool,
}

/// What a round already has, for [`pick`], which adds its picks to it.
/// Regions are a handful at most: a list compares faster than a hash.
#[derive(Debug, Default, Clone)]
pub struct Used<'a> {
    pub regions: Vec<&'a str>,
    pub prefixes: Vec<NetPrefix>,
    /// At most one validator per network in the round
    /// (`HUB_PREFIX_DIVERSITY`).
    pub one_per_prefix: bool,
    /// A shadow place: only validators whose results do not count.
    pub shadow_only: bool,
}

impl Candidate {
    fn has_room(&self) -> bool {
        self.load < self.capacity
    }
}

/// Random draws [`pick`] makes looking for two candidates of the best tier
/// before it classifies them all in one pass (they are rare then, or there
/// are none).
const DRAWS: usize = 32;

/// Picks up to `k` candidates for a round. With `used.one_per_prefix`, a
/// candidate whose network is in the round (or picked now) is never
/// picked: one operator's many keys in one /24 fill one place at most.
/// Then: validators whose results count (not on probation, trusted enough)
/// before the others; networks within their share first (`crowded` last); among those,
/// regions not yet in `used.regions` (a claimed region is a preference, not
/// a rule: any key can claim one); among those, this hub's own validators
/// while they have room, then anyone's.
/// Within a tier, weighted power-of-two choices (two at random, the one
/// with the lower load/capacity wins) spread work without every hub
/// herding onto the same least-loaded validator. Candidates in `exclude` or
/// at capacity are never picked. Returns indexes into `cands`.
pub fn pick(
    cands: &[Candidate],
    k: usize,
    exclude: &HashSet<PublicKey>,
    used: Used<'_>,
    rng: &mut fastrand::Rng,
) -> Vec<usize> {
    let Used {
        mut regions,
        mut prefixes,
        one_per_prefix,
        shadow_only,
    } = used;
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut scratch: Vec<usize> = Vec::new();
    while chosen.len() < k {
        // 0 is the best tier; None: not eligible at all.
        let tier = |i: usize| -> Option<u8> {
            let c = &cands[i];
            if !c.has_room()
                || chosen.contains(&i)
                || (!exclude.is_empty() && exclude.contains(&c.key))
            {
                return None;
            }
            if one_per_prefix && c.prefix.is_some_and(|p| prefixes.contains(&p)) {
                return None;
            }
            if shadow_only && c.counts {
                return None;
            }
            // A validator held by another hub costs a message there and a
            // summary back: ours go first while they have room. (Preferring
            // them only while half idle sent half the tasks across hubs as
            // soon as a burst filled them, when CPU was shortest: two hubs
            // collapsed at 15k ticks/s and hold it with this rule;
            // docs/performance.md.)
            let used_region = regions.iter().any(|r| *r == c.region);
            Some(
                8 * u8::from(!c.counts)
                    + 4 * u8::from(c.crowded)
                    + 2 * u8::from(used_region)
                    + u8::from(!c.local),
            )
        };
        let Some(best) = choose(cands, &tier, rng, &mut scratch) else {
            break;
        };
        regions.push(cands[best].region.as_str());
        if let Some(p) = cands[best].prefix {
            prefixes.push(p);
        }
        chosen.push(best);
    }
    chosen
}

/// One weighted power-of-two choice among the candidates of the best tier
/// present: two distinct ones uniformly at random, the lower load/capacity
/// wins. Random draws find the two in O(1) when best-tier candidates are
/// common (the usual case: most validators have room); otherwise one pass
/// over all candidates finds the best tier present and its members.
fn choose(
    cands: &[Candidate],
    tier: &dyn Fn(usize) -> Option<u8>,
    rng: &mut fastrand::Rng,
    scratch: &mut Vec<usize>,
) -> Option<usize> {
    let n = cands.len();
    if n == 0 {
        return None;
    }
    let mut found = [usize::MAX; 2];
    let mut got = 0;
    for _ in 0..DRAWS {
        let i = rng.usize(..n);
        if found[0] != i && tier(i) == Some(0) {
            found[got] = i;
            got += 1;
            if got == 2 {
                break;
            }
        }
    }
    let (a, b) = if got == 2 {
        (found[0], found[1])
    } else {
        scratch.clear();
        let mut best = u8::MAX;
        for i in 0..n {
            match tier(i) {
                Some(t) if t < best => {
                    best = t;
                    scratch.clear();
                    scratch.push(i);
                }
                Some(t) if t == best => scratch.push(i),
                _ => {}
            }
        }
        match scratch.len() {
            0 => return None,
            1 => return Some(scratch[0]),
            m => {
                let a = scratch[rng.usize(..m)];
                let mut b = scratch[rng.usize(..m - 1)];
                if b == a {
                    b = scratch[m - 1];
                }
                (a, b)
            }
        }
    };
    // Compare load/capacity without division: la/ca <= lb/cb.
    let (ca, cb) = (&cands[a], &cands[b]);
    if u64::from(ca.load) * u64::from(cb.capacity) <= u64::from(cb.load) * u64::from(ca.capacity) {
        Some(a)
    } else {
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldhash::HashSetExt;

    fn cand(n: u8, region: &str, load: u32, capacity: u32) -> Candidate {
        Candidate {
            key: PublicKey([n; 32]),
            region: region.into(),
            load,
            capacity,
            local: true,
            prefix: Some(NetPrefix(u64::from(n))),
            crowded: false,
            counts: true,
        }
    }

    fn regions<'a>(r: &[&'a str]) -> Used<'a> {
        Used {
            regions: r.to_vec(),
            ..Used::default()
        }
    }

    #[test]
    fn one_network_fills_one_place_and_crowded_networks_come_last() {
        // Keys 1-4 share a network and each claims a region of its own.
        let mut cands: Vec<_> = (1..=4)
            .map(|i| Candidate {
                prefix: Some(NetPrefix(99)),
                ..cand(i, ["eu", "us", "ap", "sa"][usize::from(i) - 1], 0, 10)
            })
            .collect();
        cands.push(cand(5, "eu", 5, 10));
        cands.push(cand(6, "eu", 5, 10));
        let mut rng = fastrand::Rng::with_seed(9);
        let rule = Used {
            one_per_prefix: true,
            ..Used::default()
        };
        for _ in 0..200 {
            let got = pick(&cands, 3, &HashSet::new(), rule.clone(), &mut rng);
            assert_eq!(got.len(), 3, "{got:?}");
            let shared = got.iter().filter(|i| **i < 4).count();
            assert_eq!(shared, 1, "one of the shared network's keys: {got:?}");
        }
        // The network already in the round: none of its keys.
        let in_round = Used {
            prefixes: vec![NetPrefix(99)],
            one_per_prefix: true,
            ..Used::default()
        };
        let mut got = pick(&cands, 3, &HashSet::new(), in_round, &mut rng);
        got.sort_unstable();
        assert_eq!(got, vec![4, 5]);
        // Without the rule, regions decide: the shared network's four
        // regions win over two validators in one region.
        let got = pick(&cands, 3, &HashSet::new(), Used::default(), &mut rng);
        assert!(got.iter().all(|i| *i < 4), "{got:?}");
        // A crowded network comes after the others, whatever its regions.
        for c in &mut cands[..4] {
            c.crowded = true;
        }
        for _ in 0..50 {
            let mut got = pick(&cands, 2, &HashSet::new(), Used::default(), &mut rng);
            got.sort_unstable();
            assert_eq!(got, vec![4, 5]);
        }
    }

    fn remote(n: u8, region: &str, load: u32, capacity: u32) -> Candidate {
        Candidate {
            local: false,
            ..cand(n, region, load, capacity)
        }
    }

    #[test]
    fn slots_come_from_the_schedule_not_from_when_you_look() {
        let s = Schedule::new(WebsiteId(42), 60);
        assert!((0..60_000).contains(&s.phase_ms));
        let t0 = s.scheduled_at(1000);
        assert_eq!(s.slot_at(t0), 1000);
        assert_eq!(s.slot_at(t0 + 59_999), 1000);
        assert_eq!(s.slot_at(t0 + 60_000), 1001);
        assert_eq!(s.slot_at(t0 - 1), 999);
        // Same website, same schedule, on any hub.
        assert_eq!(Schedule::new(WebsiteId(42), 60), s);
        // Phases differ across websites.
        let phases: HashSet<i64> = (0..50)
            .map(|id| Schedule::new(WebsiteId(id), 60).phase_ms)
            .collect();
        assert!(phases.len() > 40);
    }

    #[test]
    fn picks_distinct_regions_first() {
        let cands = vec![
            cand(1, "eu", 0, 10),
            cand(2, "eu", 0, 10),
            cand(3, "us", 5, 10),
            cand(4, "ap", 9, 10),
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let got = pick(&cands, 3, &HashSet::new(), Used::default(), &mut rng);
            let regions: HashSet<&str> = got.iter().map(|i| cands[*i].region.as_str()).collect();
            assert_eq!(regions.len(), 3, "{got:?}");
        }
    }

    #[test]
    fn fills_from_the_same_region_when_regions_run_out_and_respects_exclusions() {
        let cands = vec![
            cand(1, "eu", 0, 10),
            cand(2, "eu", 0, 10),
            cand(3, "eu", 10, 10),
        ];
        let mut rng = fastrand::Rng::with_seed(2);
        let exclude: HashSet<PublicKey> = [PublicKey([1; 32])].into_iter().collect();
        let got = pick(&cands, 3, &exclude, Used::default(), &mut rng);
        assert_eq!(got, vec![1], "excluded and full validators are skipped");
        let got = pick(&cands, 3, &HashSet::new(), Used::default(), &mut rng);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn replacement_prefers_a_region_the_round_lacks() {
        let cands = vec![cand(1, "eu", 0, 10), cand(2, "us", 3, 10)];
        let mut rng = fastrand::Rng::with_seed(3);
        let used = regions(&["eu"]);
        for _ in 0..20 {
            assert_eq!(
                pick(&cands, 1, &HashSet::new(), used.clone(), &mut rng),
                vec![1]
            );
        }
    }

    #[test]
    fn power_of_two_choices_spreads_by_load_without_herding() {
        // One region, ten validators with rising load: the least loaded wins
        // most often but not always.
        let cands: Vec<_> = (0..10).map(|i| cand(i, "eu", u32::from(i), 20)).collect();
        let mut rng = fastrand::Rng::with_seed(4);
        let mut wins = [0u32; 10];
        for _ in 0..10_000 {
            wins[pick(&cands, 1, &HashSet::new(), Used::default(), &mut rng)[0]] += 1;
        }
        assert!(wins[0] > wins[5] && wins[5] > wins[9], "{wins:?}");
        assert!(wins[0] < 5_000, "no herding onto one validator: {wins:?}");
        assert_eq!(wins[9], 0, "the most loaded never beats anyone");
    }

    #[test]
    fn the_picker_finds_the_one_eligible_validator_among_hundreds() {
        // 600 busy validators and one with room, in a region the round lacks.
        let mut cands: Vec<_> = (0..600u32)
            .map(|i| cand((i % 250) as u8, "eu", 10, 10))
            .collect();
        cands[417] = cand(251, "us", 0, 10);
        let mut rng = fastrand::Rng::with_seed(5);
        assert_eq!(
            pick(&cands, 2, &HashSet::new(), Used::default(), &mut rng),
            vec![417]
        );
    }

    #[test]
    fn own_validators_are_preferred_while_they_have_room_but_regions_come_first() {
        let mut rng = fastrand::Rng::with_seed(6);
        // Same region, all idle: always the local one.
        let cands = vec![
            remote(1, "eu", 0, 16),
            cand(2, "eu", 0, 16),
            remote(3, "eu", 0, 16),
        ];
        for _ in 0..200 {
            assert_eq!(
                pick(&cands, 1, &HashSet::new(), Used::default(), &mut rng),
                vec![1]
            );
        }
        // A region the round lacks beats a local validator in a used one.
        let used = regions(&["eu"]);
        let cands = vec![cand(1, "eu", 0, 16), remote(2, "us", 0, 16)];
        assert_eq!(
            pick(&cands, 1, &HashSet::new(), used.clone(), &mut rng),
            vec![1]
        );
        // A busy local validator with room still beats an idle remote one;
        // a full one is never picked, and the remote one takes the task.
        let cands = vec![cand(1, "eu", 15, 16), remote(2, "eu", 0, 16)];
        for _ in 0..50 {
            assert_eq!(
                pick(&cands, 1, &HashSet::new(), Used::default(), &mut rng),
                vec![0]
            );
        }
        let cands = vec![cand(1, "eu", 16, 16), remote(2, "eu", 0, 16)];
        assert_eq!(
            pick(&cands, 1, &HashSet::new(), Used::default(), &mut rng),
            vec![1]
        );
        // Three picks, three regions, locals first in each.
        let cands = vec![
            cand(1, "eu", 0, 16),
            remote(2, "eu", 0, 16),
            remote(3, "us", 0, 16),
            cand(4, "us", 0, 16),
            remote(5, "ap", 0, 16),
        ];
        for _ in 0..50 {
            let mut got = pick(&cands, 3, &HashSet::new(), Used::default(), &mut rng);
            got.sort_unstable();
            assert_eq!(got, vec![0, 3, 4]);
        }
    }
}
