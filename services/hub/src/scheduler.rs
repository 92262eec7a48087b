//! Pure scheduling logic: slots and validator choice. No I/O, no clock:
//! callers pass the time in, so every rule here is unit-tested.

use std::collections::HashSet;

use protocol::PublicKey;

/// A website's schedule: slots of `interval_ms`, offset by a phase derived
/// from the website id so that sites added together do not fire together.
/// Every hub computes the same slots for the same website.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval_ms: i64,
    pub phase_ms: i64,
}

/// SplitMix64: a fixed, well-mixed hash so the phase never depends on the
/// process (std's hasher is randomly seeded).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Schedule {
    pub fn new(website_id: i64, interval_secs: u32) -> Self {
        let interval_ms = i64::from(interval_secs.max(1)) * 1000;
        Self {
            interval_ms,
            phase_ms: (mix(website_id as u64) % interval_ms as u64) as i64,
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
}

impl Candidate {
    fn has_room(&self) -> bool {
        self.load < self.capacity
    }
}

/// Picks up to `k` candidates for a round: regions not yet in `used_regions`
/// first, then by load with weighted power-of-two choices (two at random,
/// the one with the lower load/capacity wins), which spreads work without
/// every hub herding onto the same least-loaded validator. Candidates in
/// `exclude` or at capacity are never picked. Returns indexes into `cands`.
pub fn pick(
    cands: &[Candidate],
    k: usize,
    exclude: &HashSet<PublicKey>,
    used_regions: &HashSet<&str>,
    rng: &mut fastrand::Rng,
) -> Vec<usize> {
    let mut regions: HashSet<&str> = used_regions.clone();
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut pool: Vec<usize> = Vec::new();
    while chosen.len() < k {
        let open = |i: &usize| {
            let c = &cands[*i];
            c.has_room() && !exclude.contains(&c.key) && !chosen.contains(i)
        };
        pool.clear();
        pool.extend(
            (0..cands.len())
                .filter(open)
                .filter(|i| !regions.contains(cands[*i].region.as_str())),
        );
        if pool.is_empty() {
            pool.extend((0..cands.len()).filter(open));
        }
        let best = match pool.len() {
            0 => break,
            1 => pool[0],
            n => {
                let a = pool[rng.usize(..n)];
                let mut b = pool[rng.usize(..n - 1)];
                if b == a {
                    b = pool[n - 1];
                }
                // Compare load/capacity without division: la/ca <= lb/cb.
                let (ca, cb) = (&cands[a], &cands[b]);
                if u64::from(ca.load) * u64::from(cb.capacity)
                    <= u64::from(cb.load) * u64::from(ca.capacity)
                {
                    a
                } else {
                    b
                }
            }
        };
        regions.insert(cands[best].region.as_str());
        chosen.push(best);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u8, region: &str, load: u32, capacity: u32) -> Candidate {
        Candidate {
            key: PublicKey([n; 32]),
            region: region.into(),
            load,
            capacity,
        }
    }

    #[test]
    fn slots_come_from_the_schedule_not_from_when_you_look() {
        let s = Schedule::new(42, 60);
        assert!((0..60_000).contains(&s.phase_ms));
        let t0 = s.scheduled_at(1000);
        assert_eq!(s.slot_at(t0), 1000);
        assert_eq!(s.slot_at(t0 + 59_999), 1000);
        assert_eq!(s.slot_at(t0 + 60_000), 1001);
        assert_eq!(s.slot_at(t0 - 1), 999);
        // Same website, same schedule, on any hub.
        assert_eq!(Schedule::new(42, 60), s);
        // Phases differ across websites.
        let phases: HashSet<i64> = (0..50).map(|id| Schedule::new(id, 60).phase_ms).collect();
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
            let got = pick(&cands, 3, &HashSet::new(), &HashSet::new(), &mut rng);
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
        let exclude = HashSet::from([PublicKey([1; 32])]);
        let got = pick(&cands, 3, &exclude, &HashSet::new(), &mut rng);
        assert_eq!(got, vec![1], "excluded and full validators are skipped");
        let got = pick(&cands, 3, &HashSet::new(), &HashSet::new(), &mut rng);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn replacement_prefers_a_region_the_round_lacks() {
        let cands = vec![cand(1, "eu", 0, 10), cand(2, "us", 3, 10)];
        let mut rng = fastrand::Rng::with_seed(3);
        let used = HashSet::from(["eu"]);
        for _ in 0..20 {
            assert_eq!(pick(&cands, 1, &HashSet::new(), &used, &mut rng), vec![1]);
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
            wins[pick(&cands, 1, &HashSet::new(), &HashSet::new(), &mut rng)[0]] += 1;
        }
        assert!(wins[0] > wins[5] && wins[5] > wins[9], "{wins:?}");
        assert!(wins[0] < 5_000, "no herding onto one validator: {wins:?}");
        assert_eq!(wins[9], 0, "the most loaded never beats anyone");
    }
}
