//! One test per transition of [`Rounds`], each checking the two invariants
//! after every step: a validator's load is exactly its pending tasks, and a
//! task is replaced at most once (a replacement never).

use super::*;
use foldhash::HashSetExt;
use protocol::{StatusRange, TaskToken};

/// Tasks per round, and a task's time to answer.
const K: usize = 3;
const TD: i64 = 10_000;
/// Nothing waits for the database.
const ALL_CLEAR: i64 = i64::MAX;
const R1: RoundId = RoundId(1);
const R2: RoundId = RoundId(2);

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    to: PublicKey,
    task_id: Uuid,
    round_id: RoundId,
    deadline_ms: i64,
    /// As it goes on the wire.
    task: Task,
}

/// Validators `key(1)`, `key(2)`, ... in the given regions; those in
/// `refuse` have full queues.
struct Fake {
    cands: Vec<Candidate>,
    refuse: HashSet<PublicKey>,
    sent: Vec<Sent>,
}

impl Fake {
    fn new(regions: &[&str]) -> Self {
        Self::with_capacity(regions, 100)
    }

    fn with_capacity(regions: &[&str], capacity: u32) -> Self {
        Self {
            cands: regions
                .iter()
                .enumerate()
                .map(|(i, region)| Candidate {
                    key: key(i as u8 + 1),
                    region: (*region).into(),
                    load: 0,
                    capacity,
                    local: true,
                    prefix: None,
                    crowded: false,
                    counts: true,
                })
                .collect(),
            refuse: HashSet::new(),
            sent: Vec::new(),
        }
    }

    /// A fresh snapshot: each holder counts what this hub counts.
    fn refresh(&mut self, r: &Rounds) {
        for c in &mut self.cands {
            c.load = r.load(&c.key);
        }
    }

    fn to_round(&self, round_id: RoundId) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| s.round_id == round_id)
            .collect()
    }

    fn region(&self, k: &PublicKey) -> &str {
        &self.cands.iter().find(|c| c.key == *k).unwrap().region
    }
}

impl Dispatch for Fake {
    fn candidates(&mut self) -> &mut [Candidate] {
        &mut self.cands
    }

    fn send(&mut self, to: usize, task: NewTask<'_>) -> bool {
        let fields = task.token_fields();
        let round_id = task.round_id;
        let wire = task.into_task(TaskToken {
            kid: "k1".into(),
            mac: [0; 32],
        });
        assert_eq!(wire.token_fields(), fields, "the token binds the task");
        assert_eq!(
            wire.validator, self.cands[to].key,
            "the token binds the assignee"
        );
        if self.refuse.contains(&wire.validator) {
            return false;
        }
        self.sent.push(Sent {
            to: wire.validator,
            task_id: wire.task_id,
            round_id,
            deadline_ms: wire.deadline_ms,
            task: wire,
        });
        true
    }
}

/// The dispatch a step asks for, lent for that step.
fn via<'a>(f: &'a mut Fake) -> impl FnOnce() -> &'a mut Fake + 'a {
    move || f
}

/// For steps that must not need a dispatch (nothing to replace).
fn never() -> Fake {
    panic!("asked for validators with nothing to replace")
}

fn machine() -> Rounds {
    Rounds::new(K, TD, fastrand::Rng::with_seed(11))
}

/// Round `round_id` opened at `now`, as the coordinator builds it: tasks
/// due in TD, the round in 2 TD.
fn spec(round_id: RoundId, now: i64) -> RoundSpec {
    RoundSpec {
        round_id,
        website_id: WebsiteId(100 + round_id.0),
        slot: 7,
        scheduled_at_ms: now,
        deadline_ms: now + 2 * TD,
        task_deadline_ms: now + TD,
        url: "http://127.0.0.1/".into(),
        check: CheckSpec {
            timeout_ms: 1_000,
            expected_status: StatusRange::DEFAULT,
            keyword: None,
            follow_redirects: true,
        },
    }
}

fn open(r: &mut Rounds, fake: &mut Fake, round_id: RoundId, now: i64) -> usize {
    let mut pool = r.pool(&mut *fake);
    let sent = r.open(spec(round_id, now), &mut pool);
    check(r);
    sent
}

fn slot(r: &Rounds, round_id: RoundId, task_id: Uuid) -> &TaskSlot {
    r.rounds[&round_id]
        .tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .unwrap()
}

/// The invariants, after any step.
fn check(r: &Rounds) {
    let mut pending: HashMap<PublicKey, u32> = HashMap::new();
    for round in r.rounds.values() {
        for t in &round.tasks {
            if t.state == TaskState::Pending {
                *pending.entry(t.validator).or_default() += 1;
            }
        }
    }
    assert_eq!(r.load, pending, "load is exactly the pending tasks");
    for round in r.rounds.values() {
        let replacements = round.tasks.iter().filter(|t| t.is_replacement).count();
        let replaced = round
            .tasks
            .iter()
            .filter(|t| t.replaced_at.is_some())
            .count();
        assert_eq!(replacements, replaced, "one replacement per replaced task");
        for t in &round.tasks {
            if t.is_replacement {
                assert_eq!(t.replaced_at, None, "a replacement is never replaced");
            }
            if t.replaced_at.is_some() {
                assert_ne!(t.state, TaskState::Pending);
            }
        }
        assert!(round.tasks.iter().filter(|t| !t.is_replacement).count() <= K);
        let validators: HashSet<PublicKey> = round.tasks.iter().map(|t| t.validator).collect();
        assert_eq!(
            validators.len(),
            round.tasks.len(),
            "one task per validator"
        );
    }
}

#[test]
fn opening_sends_k_tasks_to_distinct_regions_and_counts_them() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "eu", "us", "ap"]);
    assert_eq!(open(&mut r, &mut fake, R1, 0), K);
    let sent = fake.to_round(R1);
    assert_eq!(sent.len(), K);
    let regions: HashSet<&str> = sent.iter().map(|s| fake.region(&s.to)).collect();
    assert_eq!(regions.len(), K, "regions the round lacks first");
    let spec = spec(R1, 0);
    for s in &sent {
        assert_eq!(s.deadline_ms, TD);
        assert_eq!(
            (s.task.website_id, s.task.slot, s.task.scheduled_at_ms),
            (spec.website_id.0, spec.slot, spec.scheduled_at_ms)
        );
        assert_eq!((&s.task.url, &s.task.check), (&spec.url, &spec.check));
        assert_eq!(r.load(&s.to), 1);
        let t = slot(&r, R1, s.task_id);
        assert_eq!((t.state, t.is_replacement), (TaskState::Pending, false));
    }
    // The pool counted them too, for the next round in the same step.
    let loads: u32 = fake.cands.iter().map(|c| c.load).sum();
    assert_eq!(loads, K as u32);
}

#[test]
fn the_pool_starts_from_what_this_hub_sent() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap"]);
    open(&mut r, &mut fake, R1, 0);
    // A holder may not count tasks still in a queue: at least ours.
    let mut fresh = Fake::new(&["eu", "us", "ap"]);
    fresh.cands[0].load = 5;
    let _ = r.pool(&mut fresh);
    let loads: Vec<u32> = fresh.cands.iter().map(|c| c.load).collect();
    assert_eq!(loads, vec![5, 1, 1]);
}

#[test]
fn room_is_free_capacity_over_k_and_none_without_any() {
    let r = machine();
    let mut full = Fake::with_capacity(&["eu", "us"], 2);
    full.cands[0].load = 2;
    full.cands[1].load = 3;
    assert_eq!(r.room(&mut r.pool(&mut full)), 0);
    full.cands[1].load = 1;
    assert_eq!(
        r.room(&mut r.pool(&mut full)),
        1,
        "one free validator: one round"
    );
    let mut fake = Fake::with_capacity(&["eu", "us"], 4);
    assert_eq!(r.room(&mut r.pool(&mut fake)), 8 / K);
    assert_eq!(r.room(&mut r.pool(&mut Fake::new(&[]))), 0);
}

#[test]
fn a_full_queue_sends_the_task_to_someone_else() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    fake.refuse.insert(key(1));
    assert_eq!(open(&mut r, &mut fake, R1, 0), K);
    assert!(fake.sent.iter().all(|s| s.to != key(1)));
    assert_eq!(r.load(&key(1)), 0);
    assert_eq!(
        fake.cands[0].load, 0,
        "a refused task counts against nobody"
    );
}

#[test]
fn fewer_validators_than_k_staff_what_they_can() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us"]);
    assert_eq!(open(&mut r, &mut fake, R1, 0), 2);
    assert_eq!(r.rounds[&R1].tasks.len(), 2);
    // A validator at capacity is not picked.
    let mut r = machine();
    let mut fake = Fake::with_capacity(&["eu", "us", "ap"], 1);
    fake.cands[2].load = 1;
    assert_eq!(open(&mut r, &mut fake, R2, 0), 2);
}

#[test]
fn a_round_nobody_can_take_is_not_kept() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us"]);
    fake.refuse.extend([key(1), key(2)]);
    assert_eq!(open(&mut r, &mut fake, R1, 0), 0);
    assert_eq!(open(&mut r, &mut Fake::new(&[]), R2, 0), 0);
    assert!(r.rounds.is_empty());
    assert!(r.load.is_empty() && r.tasks_of.is_empty());
    assert_eq!(r.closable(i64::MAX / 2, ALL_CLEAR), None);
}

#[test]
fn an_answer_releases_its_task_once() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap"]);
    open(&mut r, &mut fake, R1, 0);
    open(&mut r, &mut fake, R2, 0);
    let first = fake.to_round(R1)[0].clone();
    assert_eq!(r.load(&first.to), 2, "in both rounds");
    r.answered(R1, first.task_id);
    check(&r);
    assert_eq!(r.load(&first.to), 1);
    assert_eq!(slot(&r, R1, first.task_id).state, TaskState::Answered);
    // A repeat, an unknown round or task: nothing changes (round 2's task
    // still counts).
    r.answered(R1, first.task_id);
    r.answered(RoundId(99), first.task_id);
    r.answered(R1, Uuid::nil());
    check(&r);
    assert_eq!(r.load(&first.to), 1);
}

/// The store hands back a hub's own open round when its slot is tried
/// again (an insert whose answer was lost); one already running is left as
/// it is.
#[test]
fn opening_a_round_already_running_changes_nothing() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    assert_eq!(open(&mut r, &mut fake, R1, 0), 3);
    assert!(r.is_open(R1) && !r.is_open(R2));
    let before: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    let loads: Vec<u32> = before.iter().map(|s| r.load(&s.to)).collect();
    assert_eq!(
        open(&mut r, &mut fake, R1, 500),
        3,
        "its tasks, not new ones"
    );
    let after: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    assert_eq!(
        after.iter().map(|s| s.task_id).collect::<Vec<_>>(),
        before.iter().map(|s| s.task_id).collect::<Vec<_>>()
    );
    assert_eq!(
        before.iter().map(|s| r.load(&s.to)).collect::<Vec<_>>(),
        loads
    );
}

#[test]
fn a_missed_deadline_is_replaced_once_by_a_validator_new_to_the_round() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    open(&mut r, &mut fake, R1, 0);
    let sent: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    r.answered(R1, sent[0].task_id);
    r.answered(R1, sent[1].task_id);
    let slow = &sent[2];
    assert_eq!(r.expire(TD - 1, never), 0, "not yet");
    assert_eq!(r.expire(TD, via(&mut fake)), 1);
    check(&r);
    let new = fake.sent.last().unwrap().clone();
    assert!(
        sent.iter().all(|s| s.to != new.to),
        "someone not in the round"
    );
    assert_ne!(new.task_id, slow.task_id, "a new task id");
    assert_eq!(
        new.deadline_ms,
        2 * TD,
        "a task deadline, capped by the round's"
    );
    let old = slot(&r, R1, slow.task_id);
    assert_eq!((old.state, old.replaced_at), (TaskState::Failed, Some(TD)));
    assert!(slot(&r, R1, new.task_id).is_replacement);
    assert_eq!(r.load(&slow.to), 0);
    assert_eq!(r.load(&new.to), 1);
    // Failed once: a later tick does not fail or replace it again.
    let before = fake.sent.len();
    assert_eq!(r.expire(TD + 1, never), 0);
    assert_eq!(fake.sent.len(), before);
}

#[test]
fn a_replacement_is_never_replaced() {
    let mut r = machine();
    // Plenty of free validators throughout.
    let mut fake = Fake::new(&["eu", "us", "ap", "sa", "af", "oc"]);
    open(&mut r, &mut fake, R1, 0);
    assert_eq!(r.expire(TD, via(&mut fake)), K);
    let replacements: Vec<Sent> = fake.sent[K..].to_vec();
    assert_eq!(replacements.len(), K);
    // One leaves before its deadline, the others miss it.
    assert_eq!(
        r.validator_gone(&replacements[0].to, TD + 5, via(&mut fake)),
        0
    );
    assert_eq!(r.expire(2 * TD, via(&mut fake)), 0);
    check(&r);
    assert_eq!(fake.sent.len(), 2 * K, "nothing sent");
    for s in &replacements {
        let t = slot(&r, R1, s.task_id);
        assert_eq!((t.state, t.replaced_at), (TaskState::Failed, None));
    }
}

#[test]
fn no_replacement_once_the_round_is_out_of_time() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    open(&mut r, &mut fake, R1, 0);
    // The first tick after the task deadline comes only at the round's.
    assert_eq!(r.expire(2 * TD, via(&mut fake)), 0);
    check(&r);
    assert_eq!(fake.sent.len(), K);
    assert!(r.rounds[&R1]
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Failed && t.replaced_at.is_none()));
}

#[test]
fn without_a_free_validator_a_failed_task_stays_failed() {
    let mut r = machine();
    // The fourth is full.
    let mut fake = Fake::with_capacity(&["eu", "us", "ap", "sa"], 1);
    fake.cands[3].load = 1;
    open(&mut r, &mut fake, R1, 0);
    assert_eq!(r.expire(TD, via(&mut fake)), 0);
    check(&r);
    assert!(r.rounds[&R1]
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Failed && t.replaced_at.is_none()));
    // Not retried later either, and nothing to record as replaced.
    fake.cands[3].load = 0;
    assert_eq!(r.expire(TD + 1, never), 0);
    let close = r.closable(2 * TD + CLOSE_GRACE_MS, ALL_CLEAR).unwrap();
    assert!(close.replaced.is_empty());
}

#[test]
fn a_gone_validators_pending_tasks_fail_and_are_replaced() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    open(&mut r, &mut fake, R1, 0);
    open(&mut r, &mut fake, R2, 0);
    // Three of four in each round: at least two validators are in both.
    let in_both = fake
        .to_round(R1)
        .into_iter()
        .find_map(|a| {
            let b = fake.to_round(R2).into_iter().find(|b| b.to == a.to)?;
            Some((a.clone(), b.clone()))
        })
        .unwrap();
    let (answered, pending) = in_both;
    r.answered(R1, answered.task_id);
    let before = fake.sent.len();
    assert_eq!(r.validator_gone(&answered.to, 100, via(&mut fake)), 1);
    check(&r);
    assert_eq!(fake.sent.len(), before + 1);
    let new = fake.sent.last().unwrap();
    assert_eq!(new.round_id, R2);
    assert_eq!(new.deadline_ms, 100 + TD);
    assert_eq!(slot(&r, R2, pending.task_id).replaced_at, Some(100));
    assert_eq!(
        slot(&r, R1, answered.task_id).state,
        TaskState::Answered,
        "its answered task stands"
    );
    assert_eq!(r.load(&answered.to), 0);
    // Told twice, or about a validator with no tasks: nothing to do.
    assert_eq!(r.validator_gone(&answered.to, 200, never), 0);
    assert_eq!(r.validator_gone(&key(42), 200, never), 0);
}

#[test]
fn a_draining_hub_replaces_nothing() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa", "af"]);
    open(&mut r, &mut fake, R1, 0);
    open(&mut r, &mut fake, R2, 0);
    r.drain();
    let gone = fake.to_round(R2)[0].to;
    assert_eq!(r.validator_gone(&gone, 100, via(&mut fake)), 0);
    assert_eq!(r.expire(TD, via(&mut fake)), 0);
    check(&r);
    assert_eq!(fake.sent.len(), 2 * K);
    assert!(r
        .rounds
        .values()
        .flat_map(|round| &round.tasks)
        .all(|t| t.state == TaskState::Failed));
}

#[test]
fn a_round_closes_early_once_every_task_is_answered() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap"]);
    open(&mut r, &mut fake, R1, 0);
    let sent: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    for s in &sent {
        assert_eq!(r.closable(1_000, ALL_CLEAR), None);
        r.answered(R1, s.task_id);
    }
    let close = r.closable(1_000, ALL_CLEAR).unwrap();
    assert_eq!(
        close,
        Close {
            round_ids: vec![R1],
            replaced: vec![]
        }
    );
    r.closed(&close.round_ids);
    check(&r);
    assert!(r.rounds.is_empty() && r.load.is_empty());
    assert_eq!(r.closable(1_000, ALL_CLEAR), None);
    // A late repeat of an answer finds nothing.
    r.answered(R1, sent[0].task_id);
    check(&r);
}

#[test]
fn a_round_closes_by_time_after_the_grace_and_releases_its_pending_tasks_once() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap"]);
    open(&mut r, &mut fake, R1, 0);
    open(&mut r, &mut fake, R2, 5_000);
    let sent: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    r.answered(R1, sent[0].task_id);
    let deadline = 2 * TD;
    assert_eq!(r.closable(deadline + CLOSE_GRACE_MS - 1, ALL_CLEAR), None);
    let close = r.closable(deadline + CLOSE_GRACE_MS, ALL_CLEAR).unwrap();
    assert_eq!(close.round_ids, vec![R1], "round 2's deadline is later");
    r.closed(&close.round_ids);
    check(&r);
    // Round 2's tasks still count; round 1's are gone, and stay gone.
    for s in &sent {
        assert_eq!(r.load(&s.to), 1);
    }
    r.closed(&close.round_ids);
    r.answered(R1, sent[1].task_id);
    check(&r);
    for s in &sent {
        assert_eq!(r.load(&s.to), 1);
    }
}

#[test]
fn a_round_is_decided_only_when_no_result_can_be_on_its_way() {
    use TaskState::*;
    fn round(states: &[(TaskState, i64)]) -> OpenRound {
        let spec = spec(R1, -10_000);
        OpenRound {
            website_id: spec.website_id,
            slot: spec.slot,
            scheduled_at_ms: spec.scheduled_at_ms,
            deadline_ms: 10_000,
            url: spec.url,
            check: spec.check,
            prefix_repeated: false,
            tasks: states
                .iter()
                .enumerate()
                .map(|(i, &(state, deadline_ms))| TaskSlot {
                    task_id: Uuid::now_v7(),
                    validator: key(i as u8),
                    region: "eu-west".into(),
                    prefix: None,
                    deadline_ms,
                    state,
                    is_replacement: false,
                    replaced_at: None,
                })
                .collect(),
        }
    }
    // Answered by everyone: done at once.
    assert!(round(&[(Answered, 5_000), (Answered, 5_000)]).done(1_000, ALL_CLEAR));
    assert!(!round(&[(Answered, 5_000), (Pending, 5_000)]).done(1_000, ALL_CLEAR));
    // A task that missed its deadline counts once nothing received
    // before that deadline still waits for the database.
    let missed = round(&[(Answered, 5_000), (Failed, 5_000)]);
    assert!(missed.done(6_000, ALL_CLEAR));
    assert!(!missed.done(6_000, 5_000), "its result may still be queued");
    // By time: 2 s after the deadline, and only if everything received
    // before the deadline has been written.
    let open = round(&[(Pending, 5_000)]);
    assert!(!open.done(10_000 + CLOSE_GRACE_MS - 1, ALL_CLEAR));
    assert!(open.done(10_000 + CLOSE_GRACE_MS, ALL_CLEAR));
    assert!(!open.done(60_000, 9_000), "an outage holds it");
    assert!(open.done(60_000, 10_001));
}

#[test]
fn a_close_lists_each_replaced_task_and_when() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    open(&mut r, &mut fake, R1, 0);
    let sent: Vec<Sent> = fake.to_round(R1).into_iter().cloned().collect();
    r.answered(R1, sent[0].task_id);
    r.answered(R1, sent[1].task_id);
    assert_eq!(r.expire(TD, via(&mut fake)), 1);
    let new = fake.sent.last().unwrap().clone();
    r.answered(R1, new.task_id);
    // The replaced task's own result, received before its deadline, may
    // still be in a writer's queue.
    assert_eq!(r.closable(TD + 1, TD), None);
    let close = r.closable(TD + 1, TD + 1).unwrap();
    assert_eq!(close.replaced, vec![(R1, sent[2].task_id, TD)]);
    // It arrives after all: the round is decided the same, and its load
    // was released once, when it failed.
    r.answered(R1, sent[2].task_id);
    check(&r);
    assert_eq!(r.closable(TD + 1, TD + 1), Some(close));
}

#[test]
fn a_failed_close_write_keeps_the_rounds_until_one_is_confirmed() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap"]);
    open(&mut r, &mut fake, R1, 0);
    let first = r.closable(2 * TD + CLOSE_GRACE_MS, ALL_CLEAR).unwrap();
    // The write failed: nothing is confirmed, the same close comes again.
    assert_eq!(
        r.closable(2 * TD + CLOSE_GRACE_MS + 1_000, ALL_CLEAR),
        Some(first.clone())
    );
    assert_eq!(r.load.len(), K);
    r.closed(&first.round_ids);
    check(&r);
    assert!(r.load.is_empty());
}

#[test]
fn the_overdue_sweep_waits_while_results_may_be_queued() {
    let now = 100_000;
    assert!(may_sweep(now, now), "nothing waiting");
    assert!(may_sweep(now, now - SWEEP_GRACE_MS));
    assert!(!may_sweep(now, now - SWEEP_GRACE_MS - 1));
}

#[test]
fn a_validators_task_list_stays_bounded_and_still_finds_its_pending_tasks() {
    let mut r = machine();
    let mut fake = Fake::new(&["eu", "us", "ap", "sa"]);
    for n in 0..200 {
        let round_id = RoundId(n);
        fake.refresh(&r);
        open(&mut r, &mut fake, round_id, 0);
        // Everyone answers except key(1) in the last ten rounds.
        for s in fake.to_round(round_id) {
            if !(s.to == key(1) && n >= 190) {
                r.answered(round_id, s.task_id);
            }
        }
        for list in r.tasks_of.values() {
            assert!(list.len() <= 2 * 10 + 16 + 1, "{}", list.len());
        }
    }
    let pending = r.load(&key(1)) as usize;
    assert!(pending > 0);
    assert_eq!(r.validator_gone(&key(1), 100, via(&mut fake)), pending);
    check(&r);
}

/// Random steps (opens, answers, repeats, disconnects, deadlines, closes
/// that fail or commit) keep both invariants at every step, and closing
/// everything leaves no load behind.
#[test]
fn load_is_released_exactly_once_per_task_whatever_happens() {
    for seed in 0..20 {
        let mut dice = fastrand::Rng::with_seed(seed);
        let mut r = Rounds::new(K, TD, fastrand::Rng::with_seed(seed));
        let mut fake = Fake::with_capacity(&["eu", "us", "ap", "eu", "us", "sa"], 6);
        let mut now = 0;
        let mut next_round = 0;
        for _ in 0..1_000 {
            now += dice.i64(0..800);
            fake.refresh(&r);
            match dice.u8(0..6) {
                0 => {
                    let mut pool = r.pool(&mut fake);
                    if r.room(&mut pool) > 0 {
                        r.open(spec(RoundId(next_round), now), &mut pool);
                        next_round += 1;
                    }
                }
                // An answer, a repeat, a late one for a failed or closed task.
                1 | 2 if !fake.sent.is_empty() => {
                    let s = &fake.sent[dice.usize(..fake.sent.len())];
                    r.answered(s.round_id, s.task_id);
                }
                3 => {
                    let gone = key(dice.u8(1..=6));
                    r.validator_gone(&gone, now, via(&mut fake));
                }
                4 => {
                    r.expire(now, via(&mut fake));
                }
                _ => {
                    let clear_before = now - dice.i64(0..3_000);
                    if let Some(close) = r.closable(now, clear_before) {
                        // Some writes fail.
                        if dice.bool() {
                            r.closed(&close.round_ids);
                        }
                    }
                }
            }
            check(&r);
            // The pool's copy never falls below what this hub counts.
            for c in &fake.cands {
                assert!(c.load >= r.load(&c.key));
            }
        }
        let close = r.closable(now + 10 * TD, ALL_CLEAR);
        r.closed(&close.map(|c| c.round_ids).unwrap_or_default());
        assert!(r.rounds.is_empty() && r.load.is_empty(), "seed {seed}");
    }
}

#[test]
fn a_network_over_its_share_of_recent_tasks_is_crowded() {
    let (a, b) = (NetPrefix(1), NetPrefix(2));
    let mut s = PrefixShare::default();
    for _ in 0..60 {
        s.note(a);
    }
    assert!(
        !s.over(a, 0.2),
        "fewer than SHARE_MIN tasks: nobody is crowded"
    );
    for i in 0..240 {
        s.note(if i % 6 == 0 { a } else { NetPrefix(100 + i) });
    }
    // a: 100 of 300.
    assert!(s.over(a, 0.2) && !s.over(a, 0.5));
    assert!(!s.over(b, 0.2));
    // Two windows later a's old tasks are forgotten.
    for i in 0..2 * SHARE_WINDOW {
        s.note(NetPrefix(1_000 + u64::from(i % 50)));
    }
    assert!(!s.over(a, 0.2));
}

#[test]
fn crowding_and_shadow_places_are_relative_to_the_pool() {
    let mut r = machine().with_diversity(Diversity {
        one_per_prefix: false,
        max_task_share: 0.2,
        shadow_share: 1.0,
    });
    for _ in 0..200 {
        r.share.note(NetPrefix(1));
    }
    // Everyone in the one crowded network: nobody is crowded.
    let mut one = Fake::new(&["eu", "us", "ap"]);
    for c in &mut one.cands {
        c.prefix = Some(NetPrefix(1));
    }
    let mut pool = r.pool(one);
    assert!(pool.dispatch.cands.iter().all(|c| !c.crowded));
    assert!(
        !pool.has_shadow_candidates,
        "no key whose results do not count: no shadow place"
    );
    // Beside another network, the crowded one is crowded; a key on
    // probation makes a shadow place possible.
    let mut two = Fake::new(&["eu", "us", "ap"]);
    two.cands[0].prefix = Some(NetPrefix(1));
    two.cands[1].prefix = Some(NetPrefix(2));
    two.cands[2].counts = false;
    pool = r.pool(two);
    let crowded: Vec<bool> = pool.dispatch.cands.iter().map(|c| c.crowded).collect();
    assert_eq!(crowded, [true, false, false]);
    assert!(pool.has_shadow_candidates);
}
