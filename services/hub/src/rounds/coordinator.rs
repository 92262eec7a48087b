//! The coordinator: one task that owns the schedule and the open rounds of
//! the websites this hub owns, so none of that state needs a lock. It does
//! the I/O; the rules are in [`machine`] ([`Sites`]: what is due;
//! [`Rounds`]: staffing, answers, replacements, when a round may close).
//!
//! Each tick it opens the rounds that are due (one batched insert; the
//! database refuses a second round for a slot), has the machine staff them
//! through the [`Router`], replaces a task once when its validator
//! disconnects or misses the deadline, and closes the rounds the machine
//! says may close (one batched update that counts the stored ticks). Others
//! reach it through a bounded channel with `try_send`: a lost event only
//! means a round closes at its deadline instead of early.

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use protocol::{now_ms, Keyring};
use store::{ClosedRound, Store, Website, WebsiteId};

use crate::cluster::router::{Router, Target};
use crate::cluster::Ring;
use crate::config::RoundSettings;
use crate::ingest::Backlog;
use crate::metrics::Metrics;
use crate::rounds::machine::{self, Dispatch, NewTask, Rounds, Sites};
use crate::rounds::scheduler::Candidate;
use crate::rounds::{Changed, Event};

/// How often any hub closes rounds whose deadline passed long ago (their
/// owner may be gone), and how long past the deadline it waits.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SWEEP_GRACE: Duration = Duration::from_millis(machine::SWEEP_GRACE_MS as u64);
const TOUCH_VALIDATORS_EVERY: Duration = Duration::from_secs(30);

/// After a statement failed, how long the coordinator waits before its next
/// one (the database is likely away).
const DB_RETRY_MS: i64 = 1_000;

/// Slots of failed inserts remembered for clean-up (see
/// `Coordinator::forget_uncertain`): 16 bytes each, so at most ~2 MiB
/// however long an outage lasts. Past it, such a round is swept `unknown`.
const MAX_UNCERTAIN: usize = 100_000;

/// What the coordinator uses of the hub.
pub struct Parts {
    pub settings: RoundSettings,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Where tasks go, and who can take them.
    pub router: Router,
    /// Signs task tokens.
    pub keyring: Keyring,
    /// Results accepted and not yet answered: a round is not decided
    /// while one of its results may still be on its way.
    pub backlog: Arc<Backlog>,
    /// The current ring: this hub schedules the websites it owns in it.
    pub ring: watch::Receiver<Arc<Ring>>,
    /// Cancelled on shutdown: no new rounds, no replacements.
    pub draining: CancellationToken,
}

pub struct Coordinator {
    app: Parts,
    rx: mpsc::Receiver<Event>,
    sites: Sites,
    rounds: Rounds,
    /// No statement before this time (Unix ms): the last one failed.
    db_retry_at: i64,
    /// `(website_id, scheduled_at_ms)` of rounds a failed insert may have
    /// created all the same; at most [`MAX_UNCERTAIN`].
    uncertain: HashSet<(WebsiteId, i64)>,
}

/// A snapshot of reachable validators for one step, and the way to them.
struct Snapshot<'a> {
    cands: Vec<Candidate>,
    targets: Vec<Target>,
    router: &'a Router,
    keyring: &'a Keyring,
    metrics: &'a Metrics,
}

/// This hub's validators and, in a cluster, those other hubs advertise,
/// with the load their holders count (other owners' tasks included);
/// [`Rounds::pool`] raises it to what this hub sent, if that is more.
fn snapshot(app: &Parts) -> Snapshot<'_> {
    let reachable = app.router.reachable();
    let mut cands = Vec::with_capacity(reachable.len());
    let mut targets = Vec::with_capacity(reachable.len());
    for r in reachable {
        cands.push(Candidate {
            key: r.key,
            local: r.is_local(),
            region: r.region,
            load: r.load,
            capacity: r.capacity,
            prefix: r.prefix,
            crowded: false,
            counts: r.counts,
        });
        targets.push(r.target);
    }
    Snapshot {
        cands,
        targets,
        router: &app.router,
        keyring: &app.keyring,
        metrics: &app.metrics,
    }
}

impl Dispatch for Snapshot<'_> {
    fn candidates(&mut self) -> &mut [Candidate] {
        &mut self.cands
    }

    fn send(&mut self, to: usize, task: NewTask<'_>) -> bool {
        let token = self.keyring.issue(&task.token_fields());
        // A full queue means a slow consumer: the machine picks someone
        // else.
        let sent = self
            .router
            .send_task(&self.targets[to], task.into_task(token));
        if sent {
            self.metrics.tasks_sent.inc();
        }
        sent
    }
}

impl Coordinator {
    pub fn new(app: Parts, rx: mpsc::Receiver<Event>) -> Self {
        let s = &app.settings;
        let task_deadline_ms = s.task_deadline.as_millis() as i64;
        let sites = Sites::new(s.min_interval_secs, task_deadline_ms);
        let rounds = Rounds::new(
            s.validators_per_round,
            task_deadline_ms,
            fastrand::Rng::new(),
        )
        .with_diversity(s.diversity);
        Self {
            app,
            rx,
            sites,
            rounds,
            db_retry_at: 0,
            uncertain: HashSet::new(),
        }
    }

    /// Runs until `stop`. After `draining` it opens no new rounds but
    /// keeps tracking answers, so rounds in flight can still close early.
    pub async fn run(mut self, stop: CancellationToken) {
        let s = &self.app.settings;
        let mut tick = interval(s.scheduler_tick);
        let mut reload = interval(s.reload_interval);
        let mut sweep = interval(SWEEP_EVERY);
        let mut touch = interval(TOUCH_VALIDATORS_EVERY);
        for t in [&mut tick, &mut reload, &mut sweep, &mut touch] {
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
                Some(ev) = self.rx.recv() => match ev {
                    Event::WebsitesChanged(Changed::All) => self.reload().await,
                    Event::WebsitesChanged(Changed::Ids(ids)) => self.reload_some(ids).await,
                    ev => self.on_event(ev),
                },
                _ = reload.tick() => self.reload().await,
                _ = tick.tick() => self.on_tick().await,
                _ = sweep.tick() => self.sweep().await,
                _ = touch.tick() => self.touch_validators().await,
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
        tracing::debug!(websites = websites.len(), "reloaded websites");
        let mine = self.mine(websites, "all");
        self.sites.reconcile(mine, now_ms());
        self.note_owned();
    }

    /// Reloads the named websites only (a notification named them): those
    /// this hub owns and that are enabled are scheduled with their new
    /// settings, the rest are dropped from its schedule.
    async fn reload_some(&mut self, ids: Vec<WebsiteId>) {
        let found = match self.app.store.enabled_websites_by_ids(&ids).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "reloading changed websites failed; reloading all next");
                self.reload().await;
                return;
            }
        };
        let mine = self.mine(found, "some");
        tracing::debug!(
            changed = ids.len(),
            mine = mine.len(),
            "reloaded changed websites"
        );
        self.sites.reconcile_some(&ids, mine, now_ms());
        self.note_owned();
    }

    /// The websites of a reload (`scope`: all, or some) this hub owns in
    /// the current ring.
    fn mine(&self, websites: Vec<Website>, scope: &str) -> Vec<Website> {
        self.app
            .metrics
            .website_reloads
            .with_label_values(&[scope])
            .inc();
        let ring = self.app.ring.borrow().clone();
        let me = self.app.settings.hub_id.as_str();
        websites
            .into_iter()
            .filter(|w| ring.owner(w.id) == Some(me))
            .collect()
    }

    fn note_owned(&self) {
        self.app
            .metrics
            .websites_owned
            .set(self.sites.owned() as i64);
    }

    /// Once the hub drains, the machine replaces no task (every session is
    /// leaving). Called before each step that may replace one.
    fn note_draining(&mut self) {
        if self.app.draining.is_cancelled() {
            self.rounds.drain();
        }
    }

    async fn on_tick(&mut self) {
        let now = now_ms();
        self.note_draining();
        let app = &self.app;
        let replaced = self.rounds.expire(now, || snapshot(app));
        self.app.metrics.tasks_replaced.inc_by(replaced as u64);
        // After a failed statement the database is given a second before
        // the next one, instead of one failing call (and log line) a tick.
        if now < self.db_retry_at {
            return;
        }
        if !self.app.draining.is_cancelled() {
            self.open_due(now).await;
        }
        self.forget_uncertain(now).await;
        self.close_done(now).await;
        let repeats = self.rounds.take_prefix_repeats();
        if repeats > 0 {
            self.app.metrics.rounds_prefix_repeated.inc_by(repeats);
        }
    }

    /// Deletes the rounds failed inserts may have created (see `open_due`)
    /// that this hub does not run: no task went out for them.
    async fn forget_uncertain(&mut self, now: i64) {
        if self.uncertain.is_empty() || now < self.db_retry_at {
            return;
        }
        let slots: Vec<(WebsiteId, i64)> = self.uncertain.iter().copied().collect();
        let hub = &self.app.settings.hub_id;
        match self.app.store.delete_unstaffed_rounds(hub, &slots).await {
            Ok(n) => {
                self.uncertain.clear();
                if n > 0 {
                    tracing::info!(
                        rounds = n,
                        "deleted rounds whose insert had failed with an unknown outcome"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting rounds of failed inserts failed");
                self.db_retry_at = now + DB_RETRY_MS;
            }
        }
    }

    async fn open_due(&mut self, now: i64) {
        // With nobody to check, opening a round would only burn its slot as
        // `unknown`; keep the sites due and try again next tick (a site
        // moves on to its next slot if this one passes meanwhile).
        let mut pool = self.rounds.pool(snapshot(&self.app));
        let room = self.rounds.room(&mut pool);
        if room == 0 {
            return;
        }
        let due = self.sites.due(now, room);
        let m = &self.app.metrics;
        m.slots_missed.inc_by(due.missed);
        if due.rounds.is_empty() {
            return;
        }
        let opened = match self
            .app
            .store
            .open_rounds(&self.app.settings.hub_id, &due.rounds)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                // Leave them due: the next try is for the same slot (or,
                // past the misfire window, the next one). The insert may
                // have committed all the same (the connection broke after
                // it): remember the slots, so a round nobody will staff is
                // deleted once the database answers, not swept `unknown`.
                tracing::warn!(error = %e, rounds = due.rounds.len(), "opening rounds failed");
                self.db_retry_at = now + DB_RETRY_MS;
                for r in &due.rounds {
                    if self.uncertain.len() >= MAX_UNCERTAIN {
                        break;
                    }
                    self.uncertain.insert((r.website_id, r.scheduled_at_ms));
                }
                return;
            }
        };
        for o in &opened {
            self.uncertain.remove(&(o.website_id, o.scheduled_at_ms));
        }
        m.rounds_opened.inc_by(opened.len() as u64);
        m.rounds_skipped
            .inc_by((due.rounds.len() - opened.len()) as u64);
        let k = self.app.settings.validators_per_round;
        let mut unsent = Vec::new();
        for spec in self.sites.opened(&due.rounds, &opened, now) {
            let (round_id, website_id, scheduled_at_ms) =
                (spec.round_id, spec.website_id, spec.scheduled_at_ms);
            // Our own round handed back by the store (see `open_rounds`)
            // that we already run: nothing to do.
            if self.rounds.is_open(round_id) {
                continue;
            }
            match self.rounds.open(spec, &mut pool) {
                // Nobody could take it after all (full queues): give the
                // slot back and retry it next tick rather than burn it.
                0 => {
                    unsent.push(round_id);
                    self.sites.give_back(website_id, scheduled_at_ms);
                }
                sent if sent < k => m.rounds_unstaffed.inc(),
                _ => {}
            }
        }
        if !unsent.is_empty() {
            if let Err(e) = self.app.store.delete_open_rounds(&unsent).await {
                tracing::warn!(error = %e, "giving back unstaffed rounds failed");
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Answered { round_id, task_id } => self.rounds.answered(round_id, task_id),
            Event::WebsitesChanged(_) => {}
            Event::SessionClosed { key, .. } => {
                // A validator that already reconnected may still deliver.
                if self.app.router.is_local(&key) {
                    return;
                }
                self.note_draining();
                let app = &self.app;
                let replaced = self.rounds.validator_gone(&key, now_ms(), || snapshot(app));
                self.app.metrics.tasks_replaced.inc_by(replaced as u64);
            }
        }
    }

    async fn close_done(&mut self, now: i64) {
        let clear_before = self.app.backlog.clear_before(now);
        let Some(close) = self.rounds.closable(now, clear_before) else {
            return;
        };
        match self
            .app
            .store
            .close_rounds(&close.round_ids, &self.app.settings.hub_id, &close.replaced)
            .await
        {
            Ok(closed) => {
                self.count_closed(&closed);
                self.rounds.closed(&close.round_ids);
                self.apply_decisions(&closed).await;
            }
            // Kept open in memory; tried again after DB_RETRY_MS.
            Err(e) => {
                tracing::warn!(error = %e, rounds = close.round_ids.len(), "closing rounds failed");
                self.db_retry_at = now + DB_RETRY_MS;
            }
        }
    }

    /// Moves the incident state of the closed rounds' websites. A failure
    /// (or this hub dying first) loses nothing: the website's next close,
    /// by whichever hub, applies every decided round since, in slot order.
    async fn apply_decisions(&self, closed: &[ClosedRound]) {
        if closed.is_empty() {
            return;
        }
        // The function takes each website once, in id order, itself.
        let sites: Vec<WebsiteId> = closed.iter().map(|c| c.website_id).collect();
        let s = &self.app.settings;
        match self
            .app
            .store
            .apply_round_decisions(&sites, s.incident_open_after, s.incident_resolve_after)
            .await
        {
            Ok((opened, resolved)) => {
                let m = &self.app.metrics.incidents;
                m.with_label_values(&["opened"]).inc_by(opened as u64);
                m.with_label_values(&["resolved"]).inc_by(resolved as u64);
                if opened + resolved > 0 {
                    tracing::info!(opened, resolved, "incidents changed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, websites = sites.len(), "applying round decisions failed")
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
            tracing::debug!(round = c.round_id.0, website = c.website_id.0, status = %c.status, up = c.up, down = c.down, "round closed");
        }
    }

    async fn sweep(&mut self) {
        let now = now_ms();
        if !machine::may_sweep(now, self.app.backlog.clear_before(now)) {
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
                self.apply_decisions(&closed).await;
            }
            Err(e) => tracing::warn!(error = %e, "sweeping overdue rounds failed"),
        }
    }

    /// Bumps `last_seen` of this hub's validators and reads back their
    /// standing (settlement, on the payout leader, moves it).
    async fn touch_validators(&self) {
        let ids = self.app.router.local_validator_ids();
        match self.app.store.touch_validators(&ids).await {
            Ok(standings) => self.app.router.note_standings(&standings),
            Err(e) => tracing::warn!(error = %e, "updating validators' last_seen failed"),
        }
    }
}

/// Turns PostgreSQL notifications about `websites` into reloads, so a change
/// made anywhere (CLI, API, plain SQL) reaches the owner within a second.
/// The coordinator's periodic reload covers anything missed here.
pub async fn follow_website_changes(store: Store, router: Router, stop: CancellationToken) {
    let mut listener = loop {
        match store.listen_website_changes().await {
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
                    tracing::debug!(payload = n.payload(), "websites changed");
                    router.websites_changed(Changed::from_payload(n.payload()));
                }
                Err(e) => {
                    // recv() reconnects on the next call; reload meanwhile
                    // in case a notification was lost with the connection.
                    if failures == 0 {
                        tracing::warn!(error = %e, "website notifications interrupted");
                    } else {
                        tracing::debug!(error = %e, failures, "website notifications still interrupted");
                    }
                    router.websites_changed(Changed::All);
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
