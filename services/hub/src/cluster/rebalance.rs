//! Hub-driven rebalancing. A WebSocket stays on the hub it opened on, so a
//! hub added to a loaded cluster gets validators only as they reconnect: a
//! hub well above the cluster's mean of validators per hub asks some of its
//! own to reconnect, with the `reconnect` hint a drain sends (no `urls`: the
//! load balancer places them again; least connections puts them on the
//! emptiest hub).
//!
//! [`decide`] is the rule, pure (counts in, how many to hint out); [`run`]
//! applies it after every successful announcement, chooses the sessions
//! (no task in flight first) and paces the hints.
//!
//! **Architecture Invariant:** rebalancing never drops a result and never
//! acts on stale membership. A hinted session drains as on shutdown: it
//! takes no new task, waits (up to `HUB_DRAIN_TIMEOUT_MS`) for the results
//! it is owed and their acks, and a result still unacknowledged when it
//! closes is resent by the validator to its next hub. The rule runs only on
//! a [`Loads`] from this hub's own announcement at most two intervals old
//! (the age at which a silent member is dropped), in which every member
//! said how many validators it holds; never while this hub drains or is
//! alone.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use protocol::PublicKey;

use crate::cluster::membership::Loads;
use crate::cluster::router::Router;
use crate::config::RebalanceSettings;
use crate::registry::SessionHandle;

/// The rule's settings, and how often it is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    /// Acts only above mean x (1 + tolerance) ...
    pub tolerance: f64,
    /// ... and at least this many validators above the mean.
    pub min_excess: usize,
    /// Of this hub's sockets, the most hinted in one round.
    pub max_share: f64,
    pub max_per_sec: u32,
    /// Between rounds (one announcement interval): with `max_per_sec`, a
    /// round's budget.
    pub period: Duration,
}

impl Policy {
    pub fn new(s: &RebalanceSettings, period: Duration) -> Self {
        Self {
            enabled: s.enabled,
            tolerance: s.tolerance,
            min_excess: s.min_excess,
            max_share: s.max_share,
            max_per_sec: s.max_per_sec.get(),
            period,
        }
    }
}

/// What the rule is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// This hub's sessions not told to move.
    pub staying: usize,
    /// Told to move and not yet counted anywhere else: still here
    /// draining, or on their way to another hub.
    pub moving: usize,
    /// Every other live member's announced validators (`None`: unknown).
    pub others: Vec<Option<usize>>,
}

impl Counts {
    /// Validators per live hub, counting those on their way; `None` if a
    /// member's count is unknown.
    pub fn mean(&self) -> Option<f64> {
        let others: usize = self.others.iter().copied().sum::<Option<usize>>()?;
        let total = self.staying + self.moving + others;
        Some(total as f64 / (self.others.len() + 1) as f64)
    }
}

/// What the rule looks at besides the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// This hub is shutting down.
    pub draining: bool,
    /// The membership view is at most two announcement intervals old.
    pub fresh: bool,
    /// Validators hinted lately came back here more often than they went
    /// elsewhere: the balancer cannot place them on another hub (they know
    /// only this one, or the others take no connections), so hinting more
    /// would only churn.
    pub returning: bool,
}

/// Why a round sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `HUB_REBALANCE=false`.
    Off,
    /// This hub is shutting down (every session gets the hint anyway).
    Draining,
    /// The membership view is older than it may be (Redis unreachable).
    Stale,
    /// Backing off: hinted validators came back (see [`Status::returning`]).
    Returning,
    /// No other live hub.
    Alone,
    /// A member did not say how many validators it holds.
    Unknown,
    /// Not far enough above the mean.
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hold(Hold),
    /// Send the hint to this many sessions, paced.
    Hint(usize),
}

/// The rule. A hub acts when its staying sessions are above
/// mean x (1 + tolerance) and at least `min_excess` above the mean; it then
/// hints at most the excess over the mean (so it aims at the mean, well
/// inside the band, and does not act again on the next round), at most
/// `max_share` of its sockets (at least one), and at most `max_per_sec`
/// times the period (at least one).
pub fn decide(p: &Policy, c: &Counts, s: Status) -> Decision {
    let hold = if !p.enabled {
        Some(Hold::Off)
    } else if s.draining {
        Some(Hold::Draining)
    } else if !s.fresh {
        Some(Hold::Stale)
    } else if s.returning {
        Some(Hold::Returning)
    } else if c.others.is_empty() {
        Some(Hold::Alone)
    } else {
        None
    };
    if let Some(h) = hold {
        return Decision::Hold(h);
    }
    let Some(mean) = c.mean() else {
        return Decision::Hold(Hold::Unknown);
    };
    let own = c.staying as f64;
    let excess = own - mean;
    if own <= mean * (1.0 + p.tolerance) || excess < p.min_excess as f64 {
        return Decision::Hold(Hold::Balanced);
    }
    let by_excess = excess.floor() as usize;
    let by_share = ((own * p.max_share).floor() as usize).max(1);
    let by_rate = ((f64::from(p.max_per_sec) * p.period.as_secs_f64()).floor() as usize).max(1);
    Decision::Hint(by_excess.min(by_share).min(by_rate))
}

/// A validator this hub told to move.
#[derive(Debug, Clone, Copy)]
struct Told {
    /// The hinted session's.
    generation: u64,
    /// When it was first found gone from here (or back with a new session).
    left_at: Option<Instant>,
    /// A new session of its key is here: the balancer sent it back.
    returned: bool,
}

/// Validators this hub told to move, until they can be counted elsewhere,
/// and where they went.
struct Moving {
    told: HashMap<PublicKey, Told>,
    /// How long after leaving a validator may still be missing from every
    /// count: its reconnect, its new hub's next announcement, then ours.
    /// Whether it came back is judged at the end of it too, so that coming
    /// back (seen at once) and going elsewhere (seen only by not coming
    /// back) are counted with the same delay.
    settle: Duration,
    /// Judged since the last [`Self::mostly_returned`].
    returned: usize,
    landed: usize,
}

impl Moving {
    fn new(settle: Duration) -> Self {
        Self {
            told: HashMap::default(),
            settle,
            returned: 0,
            landed: 0,
        }
    }

    fn hinted(&mut self, h: &SessionHandle) {
        let told = Told {
            generation: h.generation,
            left_at: None,
            returned: false,
        };
        // Hinted again before its last move was judged: it is here, so it
        // came back.
        if self.told.insert(h.key, told).is_some() {
            self.returned += 1;
        }
    }

    /// Judges and forgets those whose settle time is over; returns how many
    /// are still moving: here and draining, or gone and not yet back.
    fn count(&mut self, sessions: &[Arc<SessionHandle>], now: Instant) -> usize {
        if self.told.is_empty() {
            return 0;
        }
        let here: HashMap<PublicKey, u64> =
            sessions.iter().map(|h| (h.key, h.generation)).collect();
        let (settle, mut returned, mut landed, mut moving) = (self.settle, 0, 0, 0);
        self.told.retain(|key, t| {
            match here.get(key) {
                Some(g) if *g == t.generation => {
                    moving += 1;
                    return true;
                }
                // A new session of its key, which counts as staying.
                Some(_) => t.returned = true,
                None => {}
            }
            let left_at = *t.left_at.get_or_insert(now);
            if now.duration_since(left_at) < settle {
                moving += usize::from(!t.returned);
                return true;
            }
            if t.returned {
                returned += 1;
            } else {
                landed += 1;
            }
            false
        });
        self.returned += returned;
        self.landed += landed;
        moving
    }

    /// Whether most of the validators judged since the last call (more
    /// than two in three) came back: `None` if none was judged. A balancer
    /// that picks at random among two hubs sends back about half.
    fn mostly_returned(&mut self) -> Option<bool> {
        if self.returned + self.landed == 0 {
            return None;
        }
        let r = self.returned > 2 * self.landed;
        (self.returned, self.landed) = (0, 0);
        Some(r)
    }
}

/// Rounds to sit out after hinted validators came back: doubling from
/// [`Backoff::FIRST`] to [`Backoff::MAX`] while they keep coming back, and
/// reset once they go elsewhere.
#[derive(Debug, Default)]
struct Backoff {
    pause: u32,
    skip: u32,
}

impl Backoff {
    const FIRST: u32 = 4;
    const MAX: u32 = 64;

    /// Called once a round; true while this round is sat out.
    fn returning(&mut self, mostly_returned: Option<bool>) -> bool {
        match mostly_returned {
            Some(true) => {
                self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
                self.skip = self.pause;
            }
            Some(false) => self.pause = 0,
            None => {}
        }
        let sitting_out = self.skip > 0;
        self.skip = self.skip.saturating_sub(1);
        sitting_out
    }
}

/// Spaces hints `1 / max_per_sec` apart, across rounds.
struct Pace {
    every: Duration,
    next: Instant,
}

impl Pace {
    async fn wait(&mut self) {
        sleep_until(self.next).await;
        self.next = Instant::now().max(self.next) + self.every;
    }
}

/// Up to `n` sessions to hint: not already moving, no task in flight first.
fn choose(sessions: &[Arc<SessionHandle>], n: usize) -> Vec<Arc<SessionHandle>> {
    let mut staying: Vec<_> = sessions
        .iter()
        .filter(|h| !h.is_leaving() && !h.signals.is_replaced())
        .cloned()
        .collect();
    staying.sort_by_key(|h| h.in_flight.load(Relaxed));
    staying.truncate(n);
    staying
}

/// After every successful announcement (a new [`Loads`]): report the
/// cluster's mean and apply [`decide`]. Stops when this hub drains.
pub async fn run(
    router: Router,
    mut loads: watch::Receiver<Option<Arc<Loads>>>,
    settings: RebalanceSettings,
    interval: Duration,
    draining: CancellationToken,
) {
    let policy = Policy::new(&settings, interval);
    let max_age = interval * 2;
    let fresh = |view: &Loads| view.at.elapsed() <= max_age;
    let mut moving = Moving::new(interval * 2 + Duration::from_secs(1));
    let mut backoff = Backoff::default();
    let mut pace = Pace {
        every: Duration::from_secs(1) / policy.max_per_sec,
        next: Instant::now(),
    };
    let metrics = router.metrics();
    let mut last_hold = None;
    loop {
        tokio::select! {
            _ = draining.cancelled() => return,
            changed = loads.changed() => if changed.is_err() { return },
        }
        let Some(view) = loads.borrow_and_update().clone() else {
            continue;
        };
        let sessions = router.registry().snapshot();
        let me = router.hub_id();
        let counts = Counts {
            staying: sessions.iter().filter(|h| !h.is_leaving()).count(),
            moving: moving.count(&sessions, Instant::now()),
            others: view
                .members
                .iter()
                .filter(|(id, _)| id != me)
                .map(|(_, n)| *n)
                .collect(),
        };
        let mean = counts.mean();
        if let Some(m) = mean {
            metrics.cluster_mean_validators.set(m);
        }
        let status = Status {
            draining: draining.is_cancelled(),
            fresh: fresh(&view),
            returning: backoff.returning(moving.mostly_returned()),
        };
        let n = match decide(&policy, &counts, status) {
            Decision::Hold(why) => {
                if last_hold != Some(why) {
                    tracing::debug!(?why, ?counts, "not rebalancing");
                    last_hold = Some(why);
                }
                continue;
            }
            Decision::Hint(n) => n,
        };
        last_hold = None;
        tracing::info!(
            hints = n,
            staying = counts.staying,
            moving = counts.moving,
            mean = mean.unwrap_or_default(),
            "above the cluster's mean: asking validators to reconnect elsewhere"
        );
        for h in choose(&sessions, n) {
            tokio::select! {
                _ = draining.cancelled() => return,
                () = pace.wait() => {}
            }
            // The view may have aged while pacing; and a session may have
            // ended meanwhile.
            if !fresh(&view) {
                break;
            }
            if h.is_leaving() || h.signals.is_replaced() {
                continue;
            }
            h.signals.rebalance();
            moving.hinted(&h);
            metrics.rebalance_hints.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            enabled: true,
            tolerance: 0.2,
            min_excess: 10,
            max_share: 0.1,
            max_per_sec: 20,
            period: Duration::from_secs(2),
        }
    }

    fn counts(staying: usize, others: &[usize]) -> Counts {
        Counts {
            staying,
            moving: 0,
            others: others.iter().map(|n| Some(*n)).collect(),
        }
    }

    const USUAL: Status = Status {
        draining: false,
        fresh: true,
        returning: false,
    };

    /// One case: counts in, the decision out (fresh, not draining).
    fn check(p: Policy, c: Counts, want: Decision) {
        assert_eq!(decide(&p, &c, USUAL), want, "{c:?} under {p:?}");
    }

    #[test]
    fn alone_never_acts() {
        check(policy(), counts(1_000, &[]), Decision::Hold(Hold::Alone));
    }

    #[test]
    fn balanced_and_slightly_above_do_nothing() {
        check(
            policy(),
            counts(500, &[500, 500]),
            Decision::Hold(Hold::Balanced),
        );
        // 20% above the mean of 500 is 600: 590 stays.
        check(
            policy(),
            counts(590, &[455, 455]),
            Decision::Hold(Hold::Balanced),
        );
        // Far above in proportion, but fewer than min_excess above the mean.
        check(policy(), counts(12, &[0]), Decision::Hold(Hold::Balanced));
        // Below the mean: the others act, not this hub.
        check(policy(), counts(0, &[36]), Decision::Hold(Hold::Balanced));
    }

    #[test]
    fn well_above_hints_at_most_the_excess() {
        // Mean 100; 150 is 50 above. The share cap (15) and the rate cap
        // (40) are looser than the excess only with a wide share.
        let wide = Policy {
            max_share: 1.0,
            ..policy()
        };
        check(wide, counts(150, &[75, 75]), Decision::Hint(40));
        let slow = Policy {
            max_share: 1.0,
            max_per_sec: 1_000,
            ..policy()
        };
        check(slow, counts(150, &[75, 75]), Decision::Hint(50));
        // The default share: a tenth of the sockets a round.
        check(policy(), counts(150, &[75, 75]), Decision::Hint(15));
        // A hub that just joined: 36 and 0, mean 18.
        check(policy(), counts(36, &[0]), Decision::Hint(3));
    }

    #[test]
    fn validators_on_their_way_count_toward_the_mean() {
        // 30 staying, 6 moving (not yet counted by the new hub): the mean is
        // 18, not 15, so the hub does not overshoot below it.
        let c = Counts {
            staying: 30,
            moving: 6,
            others: vec![Some(0)],
        };
        assert_eq!(c.mean(), Some(18.0));
        check(policy(), c, Decision::Hint(3));
        let c = Counts {
            staying: 25,
            moving: 11,
            others: vec![Some(0)],
        };
        check(policy(), c, Decision::Hold(Hold::Balanced));
    }

    #[test]
    fn the_per_second_cap_bounds_a_round() {
        let p = Policy {
            max_share: 1.0,
            ..policy()
        };
        // 20/s over a 2 s round.
        check(p, counts(10_000, &[0]), Decision::Hint(40));
        // A 200 ms round at 20/s: 4.
        let fast = Policy {
            period: Duration::from_millis(200),
            ..p
        };
        check(fast, counts(10_000, &[0]), Decision::Hint(4));
        // Never less than one hint a round.
        let slowest = Policy {
            max_per_sec: 1,
            period: Duration::from_millis(100),
            ..p
        };
        check(slowest, counts(10_000, &[0]), Decision::Hint(1));
    }

    #[test]
    fn draining_stale_returning_unknown_or_off_never_act() {
        let c = counts(1_000, &[0]);
        let draining = Status {
            draining: true,
            ..USUAL
        };
        assert_eq!(
            decide(&policy(), &c, draining),
            Decision::Hold(Hold::Draining)
        );
        let stale = Status {
            fresh: false,
            ..USUAL
        };
        assert_eq!(decide(&policy(), &c, stale), Decision::Hold(Hold::Stale));
        let returning = Status {
            returning: true,
            ..USUAL
        };
        assert_eq!(
            decide(&policy(), &c, returning),
            Decision::Hold(Hold::Returning)
        );
        let off = Policy {
            enabled: false,
            ..policy()
        };
        check(off, c, Decision::Hold(Hold::Off));
        let unknown = Counts {
            staying: 1_000,
            moving: 0,
            others: vec![Some(0), None],
        };
        check(policy(), unknown, Decision::Hold(Hold::Unknown));
    }

    fn handle(key: u8, generation: u64, in_flight: u32) -> Arc<SessionHandle> {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        Arc::new(SessionHandle {
            generation,
            validator_id: store::ValidatorId(i64::from(key)),
            key: PublicKey([key; 32]),
            region: "eu".into(),
            capacity: 1,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            prefix: crate::registry::NetPrefix(0),
            counts: true.into(),
            kicked: std::sync::OnceLock::new(),
            in_flight: std::sync::atomic::AtomicU32::new(in_flight),
            tx,
            signals: crate::registry::Signals::new(&CancellationToken::new()),
        })
    }

    #[test]
    fn idle_sessions_are_chosen_first_and_moving_ones_never() {
        let busy = handle(1, 1, 2);
        let idle = handle(2, 1, 0);
        let leaving = handle(3, 1, 0);
        leaving.signals.rebalance();
        let some = handle(4, 1, 1);
        let all = [busy.clone(), idle.clone(), leaving, some.clone()];
        let keys = |v: Vec<Arc<SessionHandle>>| v.iter().map(|h| h.key).collect::<Vec<_>>();
        assert_eq!(keys(choose(&all, 2)), vec![idle.key, some.key]);
        assert_eq!(keys(choose(&all, 9)), vec![idle.key, some.key, busy.key]);
    }

    #[test]
    fn a_moved_validator_counts_until_it_settles_or_comes_back() {
        let mut m = Moving::new(Duration::from_secs(5));
        let (a, b, c) = (handle(1, 10, 0), handle(2, 10, 0), handle(3, 10, 0));
        m.hinted(&a);
        m.hinted(&b);
        m.hinted(&c);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        // All still here, draining.
        assert_eq!(m.count(&[a.clone(), b.clone(), c.clone()], at(0)), 3);
        // A and C are gone; B came back as a new session (a new
        // generation), which counts as staying, not moving.
        let b_again = handle(2, 11, 0);
        assert_eq!(m.count(std::slice::from_ref(&b_again), at(1)), 2);
        assert_eq!(m.mostly_returned(), None, "nothing judged yet");
        assert_eq!(m.count(std::slice::from_ref(&b_again), at(5)), 2);
        assert_eq!(m.count(std::slice::from_ref(&b_again), at(6)), 0);
        // Two went elsewhere, one came back.
        assert_eq!(m.mostly_returned(), Some(false));
        assert_eq!(m.mostly_returned(), None, "judged once");
        // B is hinted again, comes back, and is hinted a third time before
        // that return was judged: both moves count as coming back.
        m.hinted(&b_again);
        let b3 = handle(2, 13, 0);
        assert_eq!(m.count(std::slice::from_ref(&b3), at(7)), 0);
        m.hinted(&b3);
        let b4 = handle(2, 14, 0);
        assert_eq!(m.count(std::slice::from_ref(&b4), at(8)), 0);
        assert_eq!(m.mostly_returned(), Some(true), "the first return");
        assert_eq!(m.count(&[b4], at(13)), 0);
        assert_eq!(m.mostly_returned(), Some(true), "the second");
    }

    #[test]
    fn validators_that_keep_coming_back_pause_rebalancing_longer_each_time() {
        let mut b = Backoff::default();
        assert!(!b.returning(None));
        // They came back: sit out 4 rounds, this one included.
        let sat_out = |b: &mut Backoff, first: Option<bool>| {
            let mut n = usize::from(b.returning(first));
            while b.returning(None) {
                n += 1;
            }
            n
        };
        assert_eq!(sat_out(&mut b, Some(true)), 4);
        assert_eq!(sat_out(&mut b, Some(true)), 8);
        for _ in 0..10 {
            sat_out(&mut b, Some(true));
        }
        assert_eq!(sat_out(&mut b, Some(true)), 64, "capped");
        // They went elsewhere: no pause, and the next one starts short.
        assert!(!b.returning(Some(false)));
        assert_eq!(sat_out(&mut b, Some(true)), 4);
    }
}
