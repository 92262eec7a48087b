//! The coordinator: one task that owns the schedule and the open rounds of
//! the websites this hub owns, so none of that state needs a lock.
//!
//! Each tick it opens the rounds that are due (one batched insert; the
//! database refuses a second round for a slot), assigns each to up to K
//! validators, replaces a task once when its validator disconnects or misses
//! the deadline, and closes rounds that are fully answered or out of time
//! (one batched update that counts the stored ticks). Others reach it
//! through a bounded channel with `try_send`: a lost event only means a
//! round closes at its deadline instead of early.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::{now_ms, CheckSpec, HubMessage, PublicKey, StatusRange, Task, TokenFields};
use store::{ClosedRound, NewRound, Website};

use crate::app::AppState;
use crate::cluster::routing::InboxMessage;
use crate::registry::{Outbound, SessionHandle};
use crate::scheduler::{pick, Candidate, Schedule};

/// How often any hub closes rounds whose deadline passed long ago (their
/// owner may be gone), and how long past the deadline it waits.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SWEEP_GRACE: Duration = Duration::from_secs(5);
const TOUCH_VALIDATORS_EVERY: Duration = Duration::from_secs(30);
const PARTITIONS_EVERY: Duration = Duration::from_secs(3600);
/// When more sites than this become ours in one reload (a start, a ring
/// change, an import), each starts at its next slot instead of running its
/// current one at once: no catch-up burst (100k sites at 60 s would
/// otherwise be 300k tasks in a second; spread over 20 s, they were still
/// three times the steady rate, and on a small cluster that burst decided
/// the schedule jitter of the whole first minute). The price: a site whose
/// current slot its previous owner had not run skips that slot. A next
/// slot more than BULK_MAX_WAIT_MS away (long intervals) is not waited
/// for: those sites run their current slot, spread over that time.
const CATCH_UP_BULK: usize = 1_000;
const BULK_MAX_WAIT_MS: i64 = 60_000;

/// How long after it became due a slot may still start: half the interval,
/// between 1 and 10 s.
fn misfire_ms(interval_ms: i64) -> i64 {
    (interval_ms / 2).clamp(1_000, 10_000)
}

#[derive(Debug)]
pub enum Event {
    /// A result for this task was committed.
    Answered { round_id: i64, task_id: Uuid },
    /// A session ended; its unanswered tasks may need replacing.
    SessionClosed { key: PublicKey, generation: u64 },
    /// Websites changed in PostgreSQL (NOTIFY): reload now.
    WebsitesChanged,
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
    deadline_ms: i64,
    state: TaskState,
    /// Set on the task that replaced another: it is not replaced again.
    is_replacement: bool,
    /// When (Unix ms) another validator got a replacement for this task.
    replaced_at: Option<i64>,
}

#[derive(Debug)]
struct OpenRound {
    website_id: i64,
    slot: i64,
    scheduled_at_ms: i64,
    deadline_ms: i64,
    url: String,
    check: CheckSpec,
    tasks: Vec<TaskSlot>,
}

/// How long after a round's deadline its owner still waits before closing
/// it by time: a result accepted just before the deadline may still be in
/// the tick writer's queue, and should count.
const CLOSE_GRACE_MS: i64 = 2_000;

/// After a statement failed, how long the coordinator waits before its next
/// one (the database is likely away).
const DB_RETRY_MS: i64 = 1_000;

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

struct Site {
    website: Website,
    schedule: Schedule,
    next_due_ms: i64,
}

pub struct Coordinator {
    app: Arc<AppState>,
    rx: mpsc::Receiver<Event>,
    sites: HashMap<i64, Site>,
    rounds: HashMap<i64, OpenRound>,
    load: HashMap<PublicKey, u32>,
    /// Tasks sent to each validator, so a disconnect touches only its own
    /// (see [`Coordinator::note_task`]).
    tasks_of: HashMap<PublicKey, Vec<(i64, Uuid)>>,
    notes_since_prune: u32,
    rng: fastrand::Rng,
    /// No statement before this time (Unix ms): the last one failed.
    db_retry_at: i64,
}

/// A snapshot of connected validators for one tick.
struct Pool {
    cands: Vec<Candidate>,
    targets: Vec<Target>,
}

/// Where a candidate's task goes.
enum Target {
    Local(Arc<SessionHandle>),
    /// Held by another hub: the task travels through that hub's inbox.
    Remote(String),
}

impl Coordinator {
    pub fn new(app: Arc<AppState>, rx: mpsc::Receiver<Event>) -> Self {
        Self {
            app,
            rx,
            sites: HashMap::new(),
            rounds: HashMap::new(),
            load: HashMap::new(),
            tasks_of: HashMap::new(),
            notes_since_prune: 0,
            rng: fastrand::Rng::new(),
            db_retry_at: 0,
        }
    }

    /// Runs until `stop`. After `app.shutdown` it opens no new rounds but
    /// keeps tracking answers, so rounds in flight can still close early.
    pub async fn run(mut self, stop: CancellationToken) {
        let s = &self.app.settings;
        let mut tick = interval(Duration::from_millis(s.scheduler_tick_ms));
        let mut reload = interval(Duration::from_millis(s.reload_interval_ms));
        let mut sweep = interval(SWEEP_EVERY);
        let mut touch = interval(TOUCH_VALIDATORS_EVERY);
        let mut partitions = interval(PARTITIONS_EVERY);
        for t in [
            &mut tick,
            &mut reload,
            &mut sweep,
            &mut touch,
            &mut partitions,
        ] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        let mut ring = self.app.ring.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                // A new ring changes what this hub owns: re-filter at once.
                Ok(()) = ring.changed() => {
                    ring.mark_unchanged();
                    self.reload().await;
                }
                Some(ev) = self.rx.recv() => {
                    if matches!(ev, Event::WebsitesChanged) {
                        self.reload().await;
                    } else {
                        self.on_event(ev);
                    }
                }
                _ = reload.tick() => self.reload().await,
                _ = tick.tick() => self.on_tick().await,
                _ = sweep.tick() => self.sweep().await,
                _ = touch.tick() => self.touch_validators().await,
                _ = partitions.tick() => {
                    if let Err(e) = self.app.store.ensure_partitions(3).await {
                        tracing::warn!(error = %e, "creating tick partitions failed");
                    }
                }
            }
        }
        // Close what is complete; the rest is closed from the database by
        // whichever hub sweeps after its deadline.
        while let Ok(ev) = self.rx.try_recv() {
            self.on_event(ev);
        }
        self.close_done(now_ms()).await;
    }

    async fn reload(&mut self) {
        let websites = match self.app.store.enabled_websites().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "reloading websites failed; keeping the last set");
                return;
            }
        };
        let now = now_ms();
        tracing::debug!(websites = websites.len(), "reloaded websites");
        let floor = self.app.settings.min_interval_secs;
        let ring = self.app.ring.borrow().clone();
        let me = self.app.settings.hub_id.as_str();
        let mut seen = HashSet::with_capacity(websites.len());
        let mine: Vec<Website> = websites
            .into_iter()
            .filter(|w| ring.owner(w.id) == Some(me))
            .collect();
        let new = mine
            .iter()
            .filter(|w| !self.sites.contains_key(&w.id))
            .count();
        let bulk = new > CATCH_UP_BULK;
        for w in mine {
            seen.insert(w.id);
            let schedule = Schedule::new(w.id, (w.interval_secs.max(1) as u32).max(floor));
            match self.sites.get_mut(&w.id) {
                Some(site) if site.schedule == schedule => site.website = w,
                Some(site) => {
                    site.schedule = schedule;
                    site.next_due_ms = schedule.scheduled_at(schedule.slot_at(now) + 1);
                    site.website = w;
                }
                None => {
                    // The current slot is due; if it already ran (say, before
                    // a restart) the round key skips it. Sites taken on in
                    // bulk start at their next slot (CATCH_UP_BULK).
                    let next_due_ms = if bulk {
                        let next_slot = schedule.scheduled_at(schedule.slot_at(now) + 1);
                        if next_slot - now <= BULK_MAX_WAIT_MS {
                            next_slot
                        } else {
                            now + schedule.phase_ms % BULK_MAX_WAIT_MS
                        }
                    } else {
                        now
                    };
                    self.sites.insert(
                        w.id,
                        Site {
                            website: w,
                            schedule,
                            next_due_ms,
                        },
                    );
                }
            }
        }
        self.sites.retain(|id, _| seen.contains(id));
        self.app.metrics.websites_owned.set(self.sites.len() as i64);
    }

    /// This hub's validators and, in a cluster, those other hubs advertise.
    fn pool(&self) -> Pool {
        let handles = self.app.registry.snapshot();
        let mut cands = Vec::with_capacity(handles.len());
        let mut targets = Vec::with_capacity(handles.len());
        let mut seen = HashSet::with_capacity(handles.len());
        for h in handles {
            seen.insert(h.key);
            cands.push(Candidate {
                key: h.key,
                region: h.region.clone(),
                // What this hub sent, or all the session has in flight
                // (other owners' tasks included), whichever is more.
                load: self
                    .load
                    .get(&h.key)
                    .copied()
                    .unwrap_or(0)
                    .max(h.in_flight.load(std::sync::atomic::Ordering::Relaxed)),
                capacity: h.capacity,
                local: true,
            });
            targets.push(Target::Local(h));
        }
        if let Some(link) = &self.app.cluster {
            for r in link.remotes.borrow().iter() {
                let key = r.key;
                // A validator that just moved here may still be listed there.
                if !seen.insert(key) {
                    continue;
                }
                cands.push(Candidate {
                    key,
                    region: r.region.clone(),
                    // Its holder's count (this hub's tasks included once
                    // delivered), or what this hub sent, whichever is more.
                    load: r.load.max(self.load.get(&key).copied().unwrap_or(0)),
                    capacity: r.capacity,
                    local: false,
                });
                targets.push(Target::Remote(r.hub_id.clone()));
            }
        }
        Pool { cands, targets }
    }

    async fn on_tick(&mut self) {
        let now = now_ms();
        self.expire_tasks(now);
        // After a failed statement the database is given a second before
        // the next one, instead of one failing call (and log line) a tick.
        if now < self.db_retry_at {
            return;
        }
        if !self.app.shutdown.is_cancelled() {
            self.open_due(now).await;
        }
        self.close_done(now).await;
    }

    async fn open_due(&mut self, now: i64) {
        // With nobody to check, opening a round would only burn its slot as
        // `unknown`; keep the sites due and try again next tick (a site
        // moves on to its next slot if this one passes meanwhile).
        let mut pool = self.pool();
        // Open no more rounds than there is room for (each needs at least
        // one free validator); the rest stay due for the next tick.
        let free: u64 = pool
            .cands
            .iter()
            .map(|c| u64::from(c.capacity.saturating_sub(c.load)))
            .sum();
        if free == 0 {
            return;
        }
        let k = self.app.settings.validators_per_round;
        let room = (free as usize / k).max(1);
        let task_deadline = self.app.settings.task_deadline_ms as i64;
        // Misfire: a slot that could not start within MISFIRE of its time
        // (validators were missing or saturated) is skipped, not run late;
        // an overloaded cluster sheds stale checks instead of queueing them.
        let mut missed = 0u64;
        for site in self.sites.values_mut().filter(|s| s.next_due_ms <= now) {
            let slot = site.schedule.slot_at(now);
            // Late since it became due (a new site is due from when it
            // became ours, not from its slot's start).
            let late = now - site.next_due_ms;
            if late > misfire_ms(site.schedule.interval_ms) {
                site.next_due_ms = site.schedule.scheduled_at(slot + 1);
                missed += 1;
            }
        }
        self.app.metrics.slots_missed.inc_by(missed);
        let mut waiting: Vec<&Site> = self
            .sites
            .values()
            .filter(|s| s.next_due_ms <= now)
            .collect();
        // Longest-waiting first, so a shortage delays sites fairly.
        if waiting.len() > room {
            waiting.sort_unstable_by_key(|s| s.next_due_ms);
            waiting.truncate(room);
        }
        let due: Vec<NewRound> = waiting
            .into_iter()
            .map(|s| {
                let slot = s.schedule.slot_at(now);
                let td = task_deadline.min(s.schedule.interval_ms);
                NewRound {
                    website_id: s.website.id,
                    slot,
                    scheduled_at_ms: s.schedule.scheduled_at(slot),
                    // Room for one replacement after a missed first deadline.
                    deadline_ms: now + 2 * td,
                }
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let opened = match self
            .app
            .store
            .open_rounds(&self.app.settings.hub_id, &due)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                // Leave them due: the next try is for the same slot (or,
                // past the misfire window, the next one).
                tracing::warn!(error = %e, rounds = due.len(), "opening rounds failed");
                self.db_retry_at = now + DB_RETRY_MS;
                return;
            }
        };
        let m = self.app.metrics.clone();
        m.rounds_opened.inc_by(opened.len() as u64);
        m.rounds_skipped.inc_by((due.len() - opened.len()) as u64);
        for r in &due {
            if let Some(site) = self.sites.get_mut(&r.website_id) {
                site.next_due_ms = site.schedule.scheduled_at(r.slot + 1);
            }
        }
        let by_site: HashMap<i64, &NewRound> = due.iter().map(|r| (r.website_id, r)).collect();
        let mut unsent = Vec::new();
        for o in opened {
            let (Some(site), Some(new)) =
                (self.sites.get(&o.website_id), by_site.get(&o.website_id))
            else {
                continue;
            };
            let w = &site.website;
            let mut round = OpenRound {
                website_id: w.id,
                slot: new.slot,
                scheduled_at_ms: o.scheduled_at_ms,
                deadline_ms: new.deadline_ms,
                url: w.url.clone(),
                check: CheckSpec {
                    timeout_ms: w.timeout_ms as u32,
                    expected_status: StatusRange {
                        min: w.expected_status_min as u16,
                        max: w.expected_status_max as u16,
                    },
                    keyword: w.keyword.clone(),
                    follow_redirects: w.follow_redirects,
                },
                tasks: Vec::with_capacity(k),
            };
            let td = task_deadline.min(site.schedule.interval_ms);
            let sent = self.assign(&mut pool, o.round_id, &mut round, k, now + td, false);
            if sent == 0 {
                // Nobody could take it after all (full queues): give the
                // slot back and retry it next tick rather than burn it.
                unsent.push(o.round_id);
                if let Some(site) = self.sites.get_mut(&o.website_id) {
                    site.next_due_ms = o.scheduled_at_ms;
                }
                continue;
            }
            if sent < k {
                m.rounds_unstaffed.inc();
            }
            self.rounds.insert(o.round_id, round);
        }
        if !unsent.is_empty() {
            if let Err(e) = self.app.store.delete_open_rounds(&unsent).await {
                tracing::warn!(error = %e, "giving back unstaffed rounds failed");
            }
        }
    }

    /// Sends up to `want` new tasks for `round`, to validators not yet in it.
    fn assign(
        &mut self,
        pool: &mut Pool,
        round_id: i64,
        round: &mut OpenRound,
        want: usize,
        deadline_ms: i64,
        is_replacement: bool,
    ) -> usize {
        let mut exclude: HashSet<PublicKey> = round.tasks.iter().map(|t| t.validator).collect();
        let mut sent = 0;
        while sent < want {
            let regions: HashSet<&str> = round.tasks.iter().map(|t| t.region.as_str()).collect();
            let picked = pick(&pool.cands, want - sent, &exclude, &regions, &mut self.rng);
            if picked.is_empty() {
                break;
            }
            for i in picked {
                let key = pool.cands[i].key;
                exclude.insert(key);
                // Time-ordered ids keep the ticks primary key append-mostly.
                let task_id = Uuid::now_v7();
                let token = self.app.verifier.keyring.issue(&TokenFields {
                    task_id,
                    website_id: round.website_id,
                    round_id,
                    slot: round.slot,
                    scheduled_at_ms: round.scheduled_at_ms,
                    validator: &key,
                    deadline_ms,
                });
                let task = Task {
                    task_id,
                    website_id: round.website_id,
                    round_id,
                    slot: round.slot,
                    scheduled_at_ms: round.scheduled_at_ms,
                    url: round.url.clone(),
                    check: round.check.clone(),
                    validator: key,
                    deadline_ms,
                    token,
                };
                let sent_ok = match &pool.targets[i] {
                    // A full queue means a slow consumer: pick someone else.
                    Target::Local(h) => {
                        h.tx.try_send(Outbound::Frame(Box::new(HubMessage::Task(task))))
                            .is_ok()
                    }
                    Target::Remote(hub) => self
                        .app
                        .cluster
                        .as_ref()
                        .is_some_and(|c| c.outbox.send(hub, InboxMessage::Task { task })),
                };
                if !sent_ok {
                    continue;
                }
                self.app.metrics.tasks_sent.inc();
                pool.cands[i].load += 1;
                *self.load.entry(key).or_default() += 1;
                self.note_task(key, round_id, task_id);
                round.tasks.push(TaskSlot {
                    task_id,
                    validator: key,
                    region: pool.cands[i].region.clone(),
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

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Answered { round_id, task_id } => {
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
            Event::WebsitesChanged => {}
            Event::SessionClosed { key, .. } => {
                // A validator that already reconnected may still deliver.
                if self.app.registry.get(&key).is_some() {
                    return;
                }
                // Only this validator's tasks: a disconnect (say, one of a
                // flood of fresh keys) never scans every open round.
                let Some(noted) = self.tasks_of.remove(&key) else {
                    return;
                };
                let failed: Vec<(i64, Uuid)> = noted
                    .into_iter()
                    .filter(|(round_id, task_id)| self.is_pending(*round_id, *task_id))
                    .collect();
                if failed.is_empty() {
                    return;
                }
                let mut pool = self.pool();
                for (round_id, task_id) in failed {
                    self.fail_task(&mut pool, round_id, task_id, now_ms());
                }
            }
        }
    }

    /// Records a task sent to `key` (called with its load already counted).
    /// Entries whose task has since been answered, replaced or closed are
    /// dropped lazily: a validator's list once it is twice its pending
    /// tasks (plus slack), all of it when the validator disconnects, and,
    /// every few thousand tasks, the lists of validators with nothing
    /// pending (say, another hub's validators that left). Amortized O(1)
    /// per task.
    fn note_task(&mut self, key: PublicKey, round_id: i64, task_id: Uuid) {
        const PRUNE_EVERY: u32 = 4_096;
        self.notes_since_prune += 1;
        if self.notes_since_prune >= PRUNE_EVERY {
            self.notes_since_prune = 0;
            let load = &self.load;
            self.tasks_of.retain(|k, _| load.contains_key(k));
        }
        let pending = self.load.get(&key).copied().unwrap_or(0) as usize;
        let mut list = self.tasks_of.remove(&key).unwrap_or_default();
        if list.len() >= 2 * pending + 16 {
            list.retain(|(r, t)| self.is_pending(*r, *t));
        }
        list.push((round_id, task_id));
        self.tasks_of.insert(key, list);
    }

    fn is_pending(&self, round_id: i64, task_id: Uuid) -> bool {
        self.rounds.get(&round_id).is_some_and(|r| {
            r.tasks
                .iter()
                .any(|t| t.task_id == task_id && t.state == TaskState::Pending)
        })
    }

    fn expire_tasks(&mut self, now: i64) {
        let expired: Vec<(i64, Uuid)> = self
            .rounds
            .iter()
            .flat_map(|(id, r)| {
                r.tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Pending && t.deadline_ms <= now)
                    .map(|t| (*id, t.task_id))
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut pool = self.pool();
        for (round_id, task_id) in expired {
            self.fail_task(&mut pool, round_id, task_id, now);
        }
    }

    /// Marks a task failed and, once per task, sends a replacement with a
    /// new task id to a validator not yet in the round.
    fn fail_task(&mut self, pool: &mut Pool, round_id: i64, task_id: Uuid, now: i64) {
        let Some(mut round) = self.rounds.remove(&round_id) else {
            return;
        };
        if let Some(i) = round.tasks.iter().position(|t| t.task_id == task_id) {
            let t = &mut round.tasks[i];
            if t.state == TaskState::Pending {
                t.state = TaskState::Failed;
                release(&mut self.load, &t.validator);
                let is_replacement = t.is_replacement;
                let task_deadline = self.app.settings.task_deadline_ms as i64;
                let deadline = (now + task_deadline).min(round.deadline_ms);
                // No replacements while draining: every session is leaving.
                if !is_replacement && deadline > now && !self.app.shutdown.is_cancelled() {
                    let n = self.assign(pool, round_id, &mut round, 1, deadline, true);
                    self.app.metrics.tasks_replaced.inc_by(n as u64);
                    // A result for it received from now on earns nothing.
                    round.tasks[i].replaced_at = (n > 0).then_some(now);
                }
            }
        }
        self.rounds.insert(round_id, round);
    }

    async fn close_done(&mut self, now: i64) {
        let clear_before = self.app.backlog.clear_before(now);
        let done: Vec<i64> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.done(now, clear_before))
            .map(|(id, _)| *id)
            .collect();
        if done.is_empty() {
            return;
        }
        let replaced: Vec<(i64, Uuid, i64)> = done
            .iter()
            .flat_map(|id| {
                self.rounds[id]
                    .tasks
                    .iter()
                    .filter_map(move |t| Some((*id, t.task_id, t.replaced_at?)))
            })
            .collect();
        match self
            .app
            .store
            .close_rounds(&done, &self.app.settings.hub_id, &replaced)
            .await
        {
            Ok(closed) => {
                self.count_closed(&closed);
                for id in done {
                    if let Some(r) = self.rounds.remove(&id) {
                        for t in r.tasks.iter().filter(|t| t.state == TaskState::Pending) {
                            release(&mut self.load, &t.validator);
                        }
                    }
                }
            }
            // Kept open in memory; tried again after DB_RETRY_MS.
            Err(e) => {
                tracing::warn!(error = %e, rounds = done.len(), "closing rounds failed");
                self.db_retry_at = now + DB_RETRY_MS;
            }
        }
    }

    fn count_closed(&self, closed: &[ClosedRound]) {
        for c in closed {
            self.app
                .metrics
                .rounds_closed
                .with_label_values(&[c.status.as_str()])
                .inc();
            tracing::debug!(round = c.round_id, website = c.website_id, status = %c.status, up = c.up, down = c.down, "round closed");
        }
    }

    async fn sweep(&mut self) {
        // Results received before the rounds' deadlines may still be on
        // their way to the database (an outage, or just after one): the
        // sweep would decide those rounds without them.
        let now = now_ms();
        if self.app.backlog.clear_before(now) < now - SWEEP_GRACE.as_millis() as i64 {
            return;
        }
        let hub = &self.app.settings.hub_id;
        match self
            .app
            .store
            .close_overdue_rounds(SWEEP_GRACE, 1000, hub)
            .await
        {
            Ok(closed) => {
                if !closed.is_empty() {
                    tracing::info!(rounds = closed.len(), "closed overdue rounds");
                }
                let others = closed.iter().filter(|c| c.opened_by != *hub).count();
                self.app
                    .metrics
                    .rounds_closed_by_non_owner
                    .inc_by(others as u64);
                self.count_closed(&closed);
            }
            Err(e) => tracing::warn!(error = %e, "sweeping overdue rounds failed"),
        }
    }

    async fn touch_validators(&self) {
        let ids: Vec<i64> = self
            .app
            .registry
            .snapshot()
            .iter()
            .map(|h| h.validator_id)
            .collect();
        if let Err(e) = self.app.store.touch_validators(&ids).await {
            tracing::warn!(error = %e, "updating validators' last_seen failed");
        }
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

/// Turns PostgreSQL notifications about `websites` into reloads, so a change
/// made anywhere (CLI, API, plain SQL) reaches the owner within a second.
/// The coordinator's periodic reload covers anything missed here.
pub async fn follow_website_changes(app: Arc<AppState>, stop: CancellationToken) {
    let mut listener = loop {
        match app.store.listen_website_changes().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN websites_changed failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    // Failed receives in a row: the database is away. The first is logged
    // as a warning, the rest (one per back-off step, up to 5 s) at debug.
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = listener.recv() => match n {
                Ok(n) => {
                    failures = 0;
                    tracing::debug!(op = n.payload(), "websites changed");
                    let _ = app.events.try_send(Event::WebsitesChanged);
                }
                Err(e) => {
                    // recv() reconnects on the next call; reload meanwhile
                    // in case a notification was lost with the connection.
                    if failures == 0 {
                        tracing::warn!(error = %e, "website notifications interrupted");
                    } else {
                        tracing::debug!(error = %e, failures, "website notifications still interrupted");
                    }
                    let _ = app.events.try_send(Event::WebsitesChanged);
                    let wait = Duration::from_millis(500 << failures.min(3)).min(Duration::from_secs(5));
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(states: &[(TaskState, i64)]) -> OpenRound {
        OpenRound {
            website_id: 1,
            slot: 1,
            scheduled_at_ms: 0,
            deadline_ms: 10_000,
            url: "http://127.0.0.1/".into(),
            check: CheckSpec {
                timeout_ms: 1_000,
                expected_status: StatusRange::DEFAULT,
                keyword: None,
                follow_redirects: true,
            },
            tasks: states
                .iter()
                .map(|&(state, deadline_ms)| TaskSlot {
                    task_id: Uuid::now_v7(),
                    validator: PublicKey([1; 32]),
                    region: "eu-west".into(),
                    deadline_ms,
                    state,
                    is_replacement: false,
                    replaced_at: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_round_is_decided_only_when_no_result_can_be_on_its_way() {
        use TaskState::*;
        let all_clear = i64::MAX;
        // Answered by everyone: done at once.
        assert!(round(&[(Answered, 5_000), (Answered, 5_000)]).done(1_000, all_clear));
        assert!(!round(&[(Answered, 5_000), (Pending, 5_000)]).done(1_000, all_clear));
        // A task that missed its deadline counts once nothing received
        // before that deadline still waits for the database.
        let missed = round(&[(Answered, 5_000), (Failed, 5_000)]);
        assert!(missed.done(6_000, all_clear));
        assert!(!missed.done(6_000, 5_000), "its result may still be queued");
        // By time: 2 s after the deadline, and only if everything received
        // before the deadline has been written.
        let open = round(&[(Pending, 5_000)]);
        assert!(!open.done(10_000 + CLOSE_GRACE_MS - 1, all_clear));
        assert!(open.done(10_000 + CLOSE_GRACE_MS, all_clear));
        assert!(!open.done(60_000, 9_000), "an outage holds it");
        assert!(open.done(60_000, 10_001));
    }
}
