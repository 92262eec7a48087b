//! The rounds this hub owns, as a pure state machine.
//!
//! [`Sites`] keeps the schedule of the websites this hub owns and says which
//! rounds are due. [`Rounds`] follows each round the database opened, from
//! staffing to closing: up to K tasks in distinct regions, answers, one
//! replacement for a task whose validator left or missed its deadline, and
//! the decision that the round may close. Neither reads a clock or does
//! I/O: the coordinator passes `now` in, carries out what they decide
//! (database writes, metrics) and reports back what it learnt (an answer, a
//! validator gone, a close committed).
//!
//! Sending a task is the one effect the machine starts itself, through
//! [`Dispatch`]: a send either finds room in a queue at once or is refused,
//! and a refusal decides who else is picked for the same round in the same
//! step, so it is a call with an answer rather than a returned command.
//! Everything that can wait is returned: a [`Close`] the coordinator writes
//! and then confirms with [`Rounds::closed`] (a failed write confirms
//! nothing, and the same rounds are offered again), and counts for metrics.
//!
//! Load accounting: a task counts against its validator from the moment it
//! is sent until it is answered, fails (its validator left, or its deadline
//! passed) or its round closes, whichever comes first; exactly once.

mod sites;

pub use sites::Sites;

use foldhash::{HashMap, HashMapExt, HashSet};
use uuid::Uuid;

use protocol::{CheckSpec, PublicKey, Task, TaskToken, TokenFields};
use store::{RoundId, WebsiteId};

use super::scheduler::{pick, Candidate, Used};
use crate::registry::NetPrefix;

/// How long after a round's deadline its owner still waits before closing
/// it by time: a result accepted just before the deadline may still be in
/// the tick writer's queue, and should count.
pub const CLOSE_GRACE_MS: i64 = 2_000;

/// How long past their deadline any hub's sweep closes rounds from the
/// database (their owner may be gone).
pub const SWEEP_GRACE_MS: i64 = 5_000;

/// Whether the overdue sweep may run now. `clear_before`: see
/// [`Backlog::clear_before`](crate::ingest::Backlog::clear_before). Results
/// received before the swept rounds' deadlines may still be on their way to
/// the database (an outage, or just after one): the sweep would decide
/// those rounds without them.
pub fn may_sweep(now: i64, clear_before: i64) -> bool {
    clear_before >= now - SWEEP_GRACE_MS
}

/// A round the database just opened for this hub, as its tasks will carry
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSpec {
    pub round_id: RoundId,
    pub website_id: WebsiteId,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    /// The round's deadline: room for one replacement after a first task
    /// missed its own.
    pub deadline_ms: i64,
    /// The first tasks' deadline.
    pub task_deadline_ms: i64,
    pub url: String,
    pub check: CheckSpec,
}

/// A task to send: everything but its token, which needs the cluster
/// keyring ([`NewTask::token_fields`] is what the token binds). Its two
/// methods are where the typed ids become the wire's plain integers.
#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    pub task_id: Uuid,
    pub website_id: WebsiteId,
    pub round_id: RoundId,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    pub url: &'a str,
    pub check: &'a CheckSpec,
    pub validator: PublicKey,
    pub deadline_ms: i64,
}

impl NewTask<'_> {
    pub fn token_fields(&self) -> TokenFields<'_> {
        TokenFields {
            task_id: self.task_id,
            website_id: self.website_id.0,
            round_id: self.round_id.0,
            slot: self.slot,
            scheduled_at_ms: self.scheduled_at_ms,
            validator: &self.validator,
            deadline_ms: self.deadline_ms,
        }
    }

    pub fn into_task(self, token: TaskToken) -> Task {
        Task {
            task_id: self.task_id,
            website_id: self.website_id.0,
            round_id: self.round_id.0,
            slot: self.slot,
            scheduled_at_ms: self.scheduled_at_ms,
            url: self.url.to_owned(),
            check: self.check.clone(),
            validator: self.validator,
            deadline_ms: self.deadline_ms,
            token,
        }
    }
}

/// The validators a step may staff rounds from, and the way to reach them:
/// the coordinator's snapshot of sessions and presence, a fake in tests.
pub trait Dispatch {
    /// Candidates with their load as their holder counts it (a session's
    /// tasks in flight, another hub's announcement). [`Rounds::pool`] raises
    /// each to at least what this hub sent it, and every task sent counts.
    fn candidates(&mut self) -> &mut [Candidate];

    /// Hands `task` to `candidates()[to]` at once. `false`: it cannot take
    /// it now (a full queue means a slow consumer; no route to its hub), and
    /// someone else is picked.
    fn send(&mut self, to: usize, task: NewTask<'_>) -> bool;
}

impl<D: Dispatch + ?Sized> Dispatch for &mut D {
    fn candidates(&mut self) -> &mut [Candidate] {
        (**self).candidates()
    }

    fn send(&mut self, to: usize, task: NewTask<'_>) -> bool {
        (**self).send(to, task)
    }
}

/// A [`Dispatch`] whose candidates carry this hub's own load (see
/// [`Rounds::pool`]); good for one step (a tick, an event): it is a
/// snapshot.
pub struct Pool<D> {
    dispatch: D,
    /// Some candidate with room is one whose results do not count: a
    /// shadow place can be filled.
    has_shadow_candidates: bool,
}

/// Rounds that may be closed now: the coordinator writes the close and, once
/// it is committed, confirms it with [`Rounds::closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub round_ids: Vec<RoundId>,
    /// `(round, task, when)` for each task another validator got a
    /// replacement for: a result for it received after `when` earns
    /// nothing.
    pub replaced: Vec<(RoundId, Uuid, i64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Pending,
    Answered,
    Failed,
}

#[derive(Debug)]
struct TaskSlot {
    task_id: Uuid,
    validator: PublicKey,
    region: String,
    prefix: Option<NetPrefix>,
    deadline_ms: i64,
    state: TaskState,
    /// Set on a task that replaced another, and on a shadow task: it is not
    /// replaced.
    is_replacement: bool,
    /// When (Unix ms) another validator got a replacement for this task.
    replaced_at: Option<i64>,
}

#[derive(Debug)]
struct OpenRound {
    website_id: WebsiteId,
    slot: i64,
    scheduled_at_ms: i64,
    deadline_ms: i64,
    url: String,
    check: CheckSpec,
    tasks: Vec<TaskSlot>,
    /// Counted in `prefix_repeats` already.
    prefix_repeated: bool,
}

impl OpenRound {
    /// Fully answered, or out of time. `clear_before`: every result received
    /// before this instant has been answered by the tick writers (see
    /// [`Backlog::clear_before`](crate::ingest::Backlog::clear_before)); a
    /// round is not decided by time while results received before its
    /// deadline may still be on their way to the database (an outage), or
    /// its status would count them as missing.
    fn done(&self, now: i64, clear_before: i64) -> bool {
        if now >= self.deadline_ms + CLOSE_GRACE_MS {
            return self.deadline_ms < clear_before;
        }
        // Early: nothing pending, and a task that missed its deadline (and
        // was replaced) cannot have a result on its way: one received in
        // time may still wait for the database.
        self.tasks.iter().all(|t| match t.state {
            TaskState::Pending => false,
            TaskState::Answered => true,
            TaskState::Failed => t.deadline_ms < clear_before,
        })
    }
}

/// What a task [`Rounds::assign`] sends is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// One of the K that decide.
    Regular,
    /// Instead of a task that failed; not replaced again.
    Replacement,
    /// An extra place for a key whose results do not count.
    Shadow,
}

/// The network diversity rules (`HUB_PREFIX_DIVERSITY`,
/// `HUB_PREFIX_MAX_TASK_SHARE`); both off by default here (the settings
/// turn them on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diversity {
    /// At most one validator per network (/24, /48) in a round.
    pub one_per_prefix: bool,
    /// A network that supplied more than this share of this hub's recent
    /// tasks is picked only after every other (1.0: never).
    pub max_task_share: f64,
    /// Share of rounds given one extra task for a key whose results do not
    /// count (probation, low trust): its shadow check.
    pub shadow_share: f64,
}

impl Default for Diversity {
    fn default() -> Self {
        Self {
            one_per_prefix: false,
            max_task_share: 1.0,
            shadow_share: 0.0,
        }
    }
}

/// Tasks per network over this hub's last [`SHARE_WINDOW`] to
/// 2 x [`SHARE_WINDOW`] tasks (two buckets: the current one, and the one
/// before it), counted by task, not by clock.
#[derive(Debug, Default)]
struct PrefixShare {
    cur: HashMap<NetPrefix, u32>,
    prev: HashMap<NetPrefix, u32>,
    cur_total: u32,
    prev_total: u32,
}

const SHARE_WINDOW: u32 = 2_000;
/// Below this many tasks in the window no network counts as crowded.
const SHARE_MIN: u32 = 100;

impl PrefixShare {
    fn note(&mut self, p: NetPrefix) {
        *self.cur.entry(p).or_default() += 1;
        self.cur_total += 1;
        if self.cur_total >= SHARE_WINDOW {
            self.prev = std::mem::take(&mut self.cur);
            self.prev_total = std::mem::take(&mut self.cur_total);
        }
    }

    fn over(&self, p: NetPrefix, max: f64) -> bool {
        let total = self.cur_total + self.prev_total;
        if total < SHARE_MIN {
            return false;
        }
        let n = self.cur.get(&p).copied().unwrap_or(0) + self.prev.get(&p).copied().unwrap_or(0);
        f64::from(n) > max * f64::from(total)
    }
}

/// The open rounds of the websites this hub owns, and the load their tasks
/// put on each validator.
pub struct Rounds {
    validators_per_round: usize,
    /// A replacement's deadline from when it is sent (capped by its round's).
    task_deadline_ms: i64,
    rounds: HashMap<RoundId, OpenRound>,
    /// Pending tasks per validator; no entry at zero.
    load: HashMap<PublicKey, u32>,
    /// Tasks sent to each validator, so a disconnect touches only its own
    /// (see [`Rounds::note_task`]).
    tasks_of: HashMap<PublicKey, Vec<(RoundId, Uuid)>>,
    notes_since_prune: u32,
    rng: fastrand::Rng,
    /// Set when the hub drains: every session is leaving, nothing is
    /// replaced.
    draining: bool,
    diversity: Diversity,
    share: PrefixShare,
    /// Rounds given two validators of one network (only possible with
    /// `one_per_prefix` off), not yet taken by [`Rounds::take_prefix_repeats`].
    prefix_repeats: u64,
}

impl Rounds {
    pub fn new(validators_per_round: usize, task_deadline_ms: i64, rng: fastrand::Rng) -> Self {
        Self {
            validators_per_round,
            task_deadline_ms,
            rounds: HashMap::new(),
            load: HashMap::new(),
            tasks_of: HashMap::new(),
            notes_since_prune: 0,
            rng,
            draining: false,
            diversity: Diversity::default(),
            share: PrefixShare::default(),
            prefix_repeats: 0,
        }
    }

    pub fn with_diversity(mut self, d: Diversity) -> Self {
        self.diversity = d;
        self
    }

    /// Rounds given two validators of one network since the last call.
    pub fn take_prefix_repeats(&mut self) -> u64 {
        std::mem::take(&mut self.prefix_repeats)
    }

    /// Tasks this hub sent `key` that are still pending.
    pub fn load(&self, key: &PublicKey) -> u32 {
        self.load.get(key).copied().unwrap_or(0)
    }

    /// Candidates to staff rounds from: each one's load raised to at least
    /// what this hub sent it and has not heard back about (a session's
    /// count may not include tasks still in its queue, another hub's is as
    /// old as its last announcement).
    pub fn pool<D: Dispatch>(&self, mut dispatch: D) -> Pool<D> {
        let max = self.diversity.max_task_share;
        let (mut roomy, mut shadows) = (false, false);
        for c in dispatch.candidates() {
            c.load = c.load.max(self.load(&c.key));
            c.crowded = max < 1.0 && c.prefix.is_some_and(|p| self.share.over(p, max));
            if c.load < c.capacity {
                roomy |= !c.crowded;
                shadows |= !c.counts;
            }
        }
        // Crowded only means something beside a network that is not (one
        // network alone, say): with every network crowded, none is, and the
        // picker's quick draws find their best tier again instead of
        // scanning every candidate for every place.
        if !roomy {
            for c in dispatch.candidates() {
                c.crowded = false;
            }
        }
        Pool {
            dispatch,
            has_shadow_candidates: shadows,
        }
    }

    /// How many rounds may open now: each needs at least one free validator
    /// in `pool`. 0: none (with nobody to check, opening a round would only
    /// burn its slot as `unknown`).
    pub fn room<D: Dispatch>(&self, pool: &mut Pool<D>) -> usize {
        let free: u64 = pool
            .dispatch
            .candidates()
            .iter()
            .map(|c| u64::from(c.capacity.saturating_sub(c.load)))
            .sum();
        if free == 0 {
            return 0;
        }
        (free as usize / self.validators_per_round).max(1)
    }

    /// Staffs a round the database just opened: up to K tasks, regions the
    /// round lacks first. Returns how many were sent; with none (nobody
    /// could take one, say full queues) the round is not kept, and the
    /// caller gives its slot back.
    ///
    /// A round this hub already runs (the store hands back a hub's own open
    /// round when its slot is tried again, after an insert whose answer was
    /// lost) is left as it is: no new tasks; the count is its tasks'.
    pub fn open<D: Dispatch>(&mut self, spec: RoundSpec, pool: &mut Pool<D>) -> usize {
        if let Some(r) = self.rounds.get(&spec.round_id) {
            return r.tasks.len();
        }
        let mut round = OpenRound {
            website_id: spec.website_id,
            slot: spec.slot,
            scheduled_at_ms: spec.scheduled_at_ms,
            deadline_ms: spec.deadline_ms,
            url: spec.url,
            check: spec.check,
            tasks: Vec::with_capacity(self.validators_per_round),
            prefix_repeated: false,
        };
        let want = self.validators_per_round;
        let mut sent = self.assign(
            &mut pool.dispatch,
            spec.round_id,
            &mut round,
            want,
            spec.task_deadline_ms,
            Place::Regular,
        );
        // A shadow place for a key whose results do not count (probation,
        // low trust): how it earns its way in, judged against this round.
        let share = self.diversity.shadow_share;
        if sent > 0 && pool.has_shadow_candidates && share > 0.0 && self.rng.f64() < share {
            sent += self.assign(
                &mut pool.dispatch,
                spec.round_id,
                &mut round,
                1,
                spec.task_deadline_ms,
                Place::Shadow,
            );
        }
        if sent > 0 {
            self.rounds.insert(spec.round_id, round);
        }
        sent
    }

    /// Whether this hub runs the round.
    pub fn is_open(&self, round_id: RoundId) -> bool {
        self.rounds.contains_key(&round_id)
    }

    /// A result for this task was committed: it no longer counts against
    /// its validator. A task that had failed (its result was received in
    /// time but committed late) counts as answered too.
    pub fn answered(&mut self, round_id: RoundId, task_id: Uuid) {
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return;
        };
        if let Some(t) = round.tasks.iter_mut().find(|t| t.task_id == task_id) {
            if t.state == TaskState::Pending {
                release(&mut self.load, &t.validator);
            }
            t.state = TaskState::Answered;
        }
    }

    /// `key` has no session any more (the caller checked that it did not
    /// reconnect): its pending tasks fail and each is replaced once.
    /// `dispatch` is called only if there is something to replace. Returns
    /// the replacements sent.
    pub fn validator_gone<D: Dispatch>(
        &mut self,
        key: &PublicKey,
        now: i64,
        dispatch: impl FnOnce() -> D,
    ) -> usize {
        // Only this validator's tasks: a disconnect (say, one of a flood of
        // fresh keys) never scans every open round.
        let Some(noted) = self.tasks_of.remove(key) else {
            return 0;
        };
        let failed: Vec<(RoundId, Uuid)> = noted
            .into_iter()
            .filter(|(round_id, task_id)| self.is_pending(*round_id, *task_id))
            .collect();
        self.fail_all(&failed, now, dispatch)
    }

    /// Pending tasks whose deadline has come fail, and each is replaced
    /// once. `dispatch` is called only if there is something to replace.
    /// Returns the replacements sent.
    pub fn expire<D: Dispatch>(&mut self, now: i64, dispatch: impl FnOnce() -> D) -> usize {
        let expired: Vec<(RoundId, Uuid)> = self
            .rounds
            .iter()
            .flat_map(|(id, r)| {
                r.tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Pending && t.deadline_ms <= now)
                    .map(|t| (*id, t.task_id))
            })
            .collect();
        self.fail_all(&expired, now, dispatch)
    }

    /// The hub drains: from now on a failed task is not replaced (every
    /// session is leaving).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The rounds that may close now: fully answered, or out of time and
    /// with no result that may still be on its way to the database (see
    /// `clear_before` on [`Backlog`](crate::ingest::Backlog::clear_before)).
    /// Their status is decided by the write, from the stored ticks.
    pub fn closable(&self, now: i64, clear_before: i64) -> Option<Close> {
        let round_ids: Vec<RoundId> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.done(now, clear_before))
            .map(|(id, _)| *id)
            .collect();
        if round_ids.is_empty() {
            return None;
        }
        let replaced = round_ids
            .iter()
            .flat_map(|id| {
                self.rounds[id]
                    .tasks
                    .iter()
                    .filter_map(move |t| Some((*id, t.task_id, t.replaced_at?)))
            })
            .collect();
        Some(Close {
            round_ids,
            replaced,
        })
    }

    /// The close of these rounds was committed (or another hub had closed
    /// them already): they are forgotten, and their pending tasks no longer
    /// count against anyone.
    pub fn closed(&mut self, round_ids: &[RoundId]) {
        for id in round_ids {
            if let Some(r) = self.rounds.remove(id) {
                for t in r.tasks.iter().filter(|t| t.state == TaskState::Pending) {
                    release(&mut self.load, &t.validator);
                }
            }
        }
    }

    fn fail_all<D: Dispatch>(
        &mut self,
        tasks: &[(RoundId, Uuid)],
        now: i64,
        dispatch: impl FnOnce() -> D,
    ) -> usize {
        if tasks.is_empty() {
            return 0;
        }
        let mut pool = self.pool(dispatch());
        tasks
            .iter()
            .map(|(round_id, task_id)| self.fail_task(&mut pool.dispatch, *round_id, *task_id, now))
            .sum()
    }

    /// Marks a pending task failed and, once per task, sends a replacement
    /// with a new task id to a validator not yet in the round. Returns the
    /// replacements sent (0 or 1).
    fn fail_task(
        &mut self,
        pool: &mut impl Dispatch,
        round_id: RoundId,
        task_id: Uuid,
        now: i64,
    ) -> usize {
        // Out of the map while it is staffed: `assign` needs the rest of
        // `self`.
        let Some(mut round) = self.rounds.remove(&round_id) else {
            return 0;
        };
        let mut sent = 0;
        if let Some(i) = round.tasks.iter().position(|t| t.task_id == task_id) {
            let t = &mut round.tasks[i];
            if t.state == TaskState::Pending {
                t.state = TaskState::Failed;
                release(&mut self.load, &t.validator);
                let is_replacement = t.is_replacement;
                let deadline = (now + self.task_deadline_ms).min(round.deadline_ms);
                if !is_replacement && deadline > now && !self.draining {
                    sent = self.assign(pool, round_id, &mut round, 1, deadline, Place::Replacement);
                    // A result for it received from now on earns nothing.
                    round.tasks[i].replaced_at = (sent > 0).then_some(now);
                }
            }
        }
        self.rounds.insert(round_id, round);
        sent
    }

    /// Sends up to `want` new tasks for `round`, to validators not yet in it.
    fn assign(
        &mut self,
        pool: &mut impl Dispatch,
        round_id: RoundId,
        round: &mut OpenRound,
        want: usize,
        deadline_ms: i64,
        place: Place,
    ) -> usize {
        // Neither a replacement nor a shadow task is replaced in its turn.
        let is_replacement = place != Place::Regular;
        let mut exclude: HashSet<PublicKey> = round.tasks.iter().map(|t| t.validator).collect();
        let mut sent = 0;
        while sent < want {
            let used = Used {
                regions: round.tasks.iter().map(|t| t.region.as_str()).collect(),
                prefixes: round.tasks.iter().filter_map(|t| t.prefix).collect(),
                one_per_prefix: self.diversity.one_per_prefix,
                shadow_only: place == Place::Shadow,
            };
            let picked = pick(
                pool.candidates(),
                want - sent,
                &exclude,
                used,
                &mut self.rng,
            );
            if picked.is_empty() {
                break;
            }
            for i in picked {
                let key = pool.candidates()[i].key;
                // A validator that refused is not asked again for this round.
                exclude.insert(key);
                // Time-ordered ids keep the ticks primary key append-mostly.
                let task_id = Uuid::now_v7();
                let task = NewTask {
                    task_id,
                    website_id: round.website_id,
                    round_id,
                    slot: round.slot,
                    scheduled_at_ms: round.scheduled_at_ms,
                    url: &round.url,
                    check: &round.check,
                    validator: key,
                    deadline_ms,
                };
                if !pool.send(i, task) {
                    continue;
                }
                let c = &mut pool.candidates()[i];
                c.load += 1;
                let region = c.region.clone();
                let prefix = c.prefix;
                if let Some(p) = prefix {
                    if self.diversity.max_task_share < 1.0 {
                        self.share.note(p);
                    }
                    // With one validator per network the picker never
                    // repeats one. A failed task's validator will not
                    // answer: a replacement from its network is no repeat.
                    if !self.diversity.one_per_prefix
                        && !round.prefix_repeated
                        && round
                            .tasks
                            .iter()
                            .any(|t| t.state != TaskState::Failed && t.prefix == Some(p))
                    {
                        round.prefix_repeated = true;
                        self.prefix_repeats += 1;
                    }
                }
                *self.load.entry(key).or_default() += 1;
                self.note_task(key, round_id, task_id);
                round.tasks.push(TaskSlot {
                    task_id,
                    validator: key,
                    region,
                    prefix,
                    deadline_ms,
                    state: TaskState::Pending,
                    is_replacement,
                    replaced_at: None,
                });
                sent += 1;
            }
        }
        sent
    }

    /// Records a task sent to `key` (called with its load already counted).
    /// Entries whose task has since been answered, replaced or closed are
    /// dropped lazily: a validator's list once it is twice its pending
    /// tasks (plus slack), all of it when the validator disconnects, and,
    /// every few thousand tasks, the lists of validators with nothing
    /// pending (say, another hub's validators that left). Amortized O(1)
    /// per task.
    fn note_task(&mut self, key: PublicKey, round_id: RoundId, task_id: Uuid) {
        const PRUNE_EVERY: u32 = 4_096;
        self.notes_since_prune += 1;
        if self.notes_since_prune >= PRUNE_EVERY {
            self.notes_since_prune = 0;
            let load = &self.load;
            self.tasks_of.retain(|k, _| load.contains_key(k));
        }
        let pending = self.load(&key) as usize;
        let mut list = self.tasks_of.remove(&key).unwrap_or_default();
        if list.len() >= 2 * pending + 16 {
            list.retain(|(r, t)| self.is_pending(*r, *t));
        }
        list.push((round_id, task_id));
        self.tasks_of.insert(key, list);
    }

    fn is_pending(&self, round_id: RoundId, task_id: Uuid) -> bool {
        self.rounds.get(&round_id).is_some_and(|r| {
            r.tasks
                .iter()
                .any(|t| t.task_id == task_id && t.state == TaskState::Pending)
        })
    }
}

fn release(load: &mut HashMap<PublicKey, u32>, key: &PublicKey) {
    if let Some(n) = load.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            load.remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
