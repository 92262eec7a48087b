//! Every metric the hub exports, defined in one place.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub validators_connected: IntGauge,
    pub sessions_replaced: IntCounter,
    pub sessions_refused: IntCounter,
    pub protocol_errors: IntCounterVec,
    pub tasks_sent: IntCounter,
    pub tasks_replaced: IntCounter,
    pub rounds_prefix_repeated: IntCounter,
    pub results_judged: IntCounterVec,
    pub validators_by_standing: IntGaugeVec,
    pub validators_by_trust: IntGaugeVec,
    pub results_accepted: IntCounter,
    pub results_rejected: IntCounterVec,
    pub ticks_written: IntCounter,
    pub ticks_duplicate: IntCounter,
    pub write_batch_size: Histogram,
    pub write_latency: Histogram,
    pub dispatch_to_commit: Histogram,
    pub write_errors: IntCounter,
    pub ticks_refused: IntCounter,
    pub results_resent: IntCounter,
    pub ingest_backlog: IntGauge,
    pub store_failing: IntGauge,
    pub rounds_opened: IntCounter,
    pub rounds_skipped: IntCounter,
    pub rounds_closed: IntCounterVec,
    pub rounds_unstaffed: IntCounter,
    pub slots_missed: IntCounter,
    pub ingest_queue_depth: IntGauge,
    pub ring_members: IntGauge,
    pub websites_owned: IntGauge,
    pub website_reloads: IntCounterVec,
    pub incidents: IntCounterVec,
    /// Rounds added to the rollups.
    pub rounds_rolled_up: IntCounter,
    /// Old rounds deleted and tick partitions dropped by retention.
    pub retention_rounds_deleted: IntCounter,
    pub retention_partitions_dropped: IntCounter,
    /// Whole days of tick partitions from now without a gap.
    pub tick_partitions_ahead_days: IntGauge,
    /// Maintenance steps that failed, by task (rollups, partitions,
    /// rollup_prune, rounds, tick_partitions).
    pub maintenance_errors: IntCounterVec,
    pub ownership_changes: IntCounter,
    pub redis_errors: IntCounter,
    pub pubsub_lagged: IntCounter,
    pub cross_hub_messages: IntCounterVec,
    pub cross_hub_dropped: IntCounterVec,
    pub rounds_closed_by_non_owner: IntCounter,
    pub pubsub_rtt: Histogram,
    pub redis_reconnects: IntCounter,
    /// Reconnect hints sent to rebalance, and the mean they aim at.
    pub rebalance_hints: IntCounter,
    pub cluster_mean_validators: Gauge,
    pub is_leader: IntGauge,
    pub leader_epoch: IntGauge,
    pub leader_changes: IntCounter,
    pub lease_renewal_failures: IntCounter,
    pub payout_cycles: IntCounterVec,
    pub rounds_settled: IntCounter,
    pub payouts_claimed: IntCounter,
    pub payout_transactions: IntCounterVec,
    pub lamports_paid: IntCounter,
    pub payouts_insufficient_funds: IntGauge,
    pub payouts_failed: IntGauge,
    pub payout_batches_unfinished: IntGauge,
    pub treasury_lamports: IntGauge,
    pub payout_history_gap: IntGauge,
    pub payout_daily_cap_reached: IntGauge,
    pub payout_spent_today_lamports: IntGauge,
    pub payout_found_transfers: IntCounterVec,
    pub payout_start_wait_blocks: IntGauge,
    // ---- cheap attacks (issue 10, section 4) ----
    pub preauth_connections: IntGauge,
    pub connections_refused: IntCounterVec,
    pub http_refused: IntCounterVec,
    pub validators_forgotten: IntCounter,
    pub earnings_summary_refreshes: IntCounterVec,
}

impl Metrics {
    pub fn new(hub_id: &str) -> Self {
        let registry = Registry::new_custom(
            Some("uptime_hub".into()),
            Some([("hub".to_string(), hub_id.to_string())].into()),
        )
        .expect("valid registry");
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            r.register(Box::new(m.clone()))
                .expect("metric names are unique");
            m
        }
        let counter = |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).unwrap());
        let counter_vec = |name: &str, help: &str, label: &str| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &[label]).unwrap(),
            )
        };
        let gauge = |name: &str, help: &str| reg(&registry, IntGauge::new(name, help).unwrap());
        let gauge_vec = |name: &str, help: &str, label: &str| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &[label]).unwrap(),
            )
        };
        Self {
            validators_connected: gauge(
                "validators_connected",
                "Authenticated validator sessions.",
            ),
            sessions_replaced: counter(
                "sessions_replaced_total",
                "Sessions closed because the same key connected again.",
            ),
            sessions_refused: counter(
                "sessions_refused_total",
                "Live sessions closed because the access rules stopped admitting their key or address.",
            ),
            protocol_errors: counter_vec(
                "protocol_errors_total",
                "Error frames sent to validators, by code.",
                "code",
            ),
            tasks_sent: counter("tasks_sent_total", "Tasks sent to validators."),
            results_judged: counter_vec(
                "results_judged_total",
                "Results settled, by how they were judged: agreed or disagreed with their round's decision, shadow check passed or failed (payout leader).",
                "outcome",
            ),
            validators_by_standing: gauge_vec(
                "validators_by_standing",
                "Validators seen in the last day, by standing: good, low_trust (below 0.5), probation (payout leader, refreshed every cycle).",
                "standing",
            ),
            validators_by_trust: gauge_vec(
                "validators_by_trust",
                "Validators seen in the last day, by trust band: 0-0.25, 0.25-0.5, 0.5-0.75, 0.75-1 (payout leader, every cycle).",
                "band",
            ),
            rounds_prefix_repeated: counter(
                "rounds_prefix_repeated_total",
                "Rounds given two or more validators from one network (/24, /48); 0 while HUB_PREFIX_DIVERSITY is on.",
            ),
            tasks_replaced: counter(
                "tasks_replaced_total",
                "Tasks re-sent to another validator after a disconnect or missed deadline.",
            ),
            results_accepted: counter(
                "results_accepted_total",
                "Results that passed verification and were queued for writing.",
            ),
            results_rejected: counter_vec(
                "results_rejected_total",
                "Results rejected, by reason.",
                "reason",
            ),
            ticks_written: counter("ticks_written_total", "Ticks committed to PostgreSQL."),
            ticks_duplicate: counter(
                "ticks_duplicate_total",
                "Results already stored (resends); nothing written.",
            ),
            write_batch_size: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("write_batch_size", "Rows per tick write.")
                        .buckets(exponential_buckets(1.0, 2.0, 14).unwrap()),
                )
                .unwrap(),
            ),
            write_latency: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("write_latency_seconds", "Time to commit one tick batch.")
                        .buckets(exponential_buckets(0.0005, 2.0, 14).unwrap()),
                )
                .unwrap(),
            ),
            dispatch_to_commit: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "dispatch_to_commit_seconds",
                        "From a task's dispatch to the commit of its tick, minus the check time the validator reports.",
                    )
                    .buckets(exponential_buckets(0.001, 2.0, 16).unwrap()),
                )
                .unwrap(),
            ),
            write_errors: counter("write_errors_total", "Failed tick batch writes (retried)."),
            ticks_refused: counter(
                "ticks_refused_total",
                "Rows the database refused (data errors), each isolated from its batch and answered invalid_result.",
            ),
            results_resent: counter(
                "results_resent_total",
                "Resends of a result still on its way to the database: dropped, its ack goes to the newest copy's session.",
            ),
            ingest_backlog: gauge(
                "ingest_backlog",
                "Results accepted and not yet answered by a tick writer (queued, in a batch, or waiting for the database).",
            ),
            store_failing: gauge(
                "store_failing",
                "1 while tick writes fail because PostgreSQL is unreachable or unavailable (writers keep retrying).",
            ),
            slots_missed: counter(
                "slots_missed_total",
                "Slots skipped because they could not start within half their interval (at most 10 s): no validator capacity.",
            ),
            rounds_opened: counter("rounds_opened_total", "Rounds this hub opened."),
            rounds_skipped: counter(
                "rounds_skipped_total",
                "Due slots that already had a round (opened elsewhere or earlier).",
            ),
            rounds_closed: counter_vec(
                "rounds_closed_total",
                "Rounds closed by this hub, by status.",
                "status",
            ),
            rounds_unstaffed: counter(
                "rounds_unstaffed_total",
                "Rounds opened with fewer validators than wanted.",
            ),
            ingest_queue_depth: gauge(
                "ingest_queue_depth",
                "Verified results waiting for the tick writer.",
            ),
            ring_members: gauge("ring_members", "Hubs in this hub's view of the ring."),
            websites_owned: gauge("websites_owned", "Enabled websites this hub schedules."),
            incidents: counter_vec(
                "incidents_total",
                "Incidents this hub opened or resolved while applying decided rounds, by transition.",
                "transition",
            ),
            rounds_rolled_up: counter(
                "rounds_rolled_up_total",
                "Rounds this hub added to the 5-minute, hourly and daily rollups.",
            ),
            retention_rounds_deleted: counter(
                "retention_rounds_deleted_total",
                "Rounds past the retention (settled and rolled up) this hub deleted.",
            ),
            retention_partitions_dropped: counter(
                "retention_partitions_dropped_total",
                "Tick partitions past the retention this hub dropped.",
            ),
            tick_partitions_ahead_days: gauge(
                "tick_partitions_ahead_days",
                "Whole days of tick partitions from now on, without a gap (0: a tick now would have no partition).",
            ),
            maintenance_errors: counter_vec(
                "maintenance_errors_total",
                "Failed maintenance steps, by task; each is retried at its next interval.",
                "task",
            ),
            website_reloads: counter_vec(
                "website_reloads_total",
                "Reloads of websites from PostgreSQL: all of them (start, timer, ring change, `*`) or some (a notification naming ids).",
                "scope",
            ),
            ownership_changes: counter("ownership_changes_total", "Times this hub's ring changed."),
            redis_errors: counter("redis_errors_total", "Failed Redis operations."),
            pubsub_lagged: counter(
                "pubsub_lagged_total",
                "Pub/sub messages this hub fell behind on and skipped.",
            ),
            cross_hub_messages: counter_vec(
                "cross_hub_messages_total",
                "Hub-to-hub messages, by direction (in, out).",
                "direction",
            ),
            cross_hub_dropped: counter_vec(
                "cross_hub_dropped_total",
                "Hub-to-hub messages dropped on a full queue or with no recipient, by direction.",
                "direction",
            ),
            rounds_closed_by_non_owner: counter(
                "rounds_closed_by_non_owner_total",
                "Overdue rounds of other hubs this hub closed from PostgreSQL.",
            ),
            pubsub_rtt: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "pubsub_rtt_seconds",
                        "Round trip of a probe through this hub's own Redis inbox.",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 16).unwrap()),
                )
                .unwrap(),
            ),
            redis_reconnects: counter(
                "redis_reconnects_total",
                "Reconnections of this hub's Redis clients (a subscriber closed for falling behind shows here).",
            ),
            rebalance_hints: counter(
                "rebalance_hints_total",
                "Reconnect hints this hub sent to validators because it held well above the cluster's mean.",
            ),
            cluster_mean_validators: reg(
                &registry,
                Gauge::new(
                    "cluster_mean_validators",
                    "Validators per live hub (those moving between hubs included), as of this hub's last successful announcement.",
                )
                .unwrap(),
            ),
            is_leader: gauge("is_leader", "1 while this hub holds the payout leader lock."),
            leader_epoch: gauge(
                "leader_epoch",
                "Fencing epoch of this hub's latest term as leader.",
            ),
            leader_changes: counter(
                "leader_changes_total",
                "Times this hub became the leader.",
            ),
            lease_renewal_failures: counter(
                "lease_renewal_failures_total",
                "Leader lease renewals that failed, were refused, or came too late.",
            ),
            payout_cycles: counter_vec(
                "payout_cycles_total",
                "Payout cycles run by this hub as leader, by outcome (ok, held_back, not_leader, stale_epoch, history_gap, error).",
                "outcome",
            ),
            rounds_settled: counter(
                "rounds_settled_total",
                "Closed rounds whose ticks this leader credited to the ledger.",
            ),
            payouts_claimed: counter(
                "payouts_claimed_total",
                "Payouts claimed from validators' unclaimed earnings.",
            ),
            payout_transactions: counter_vec(
                "payout_transactions_total",
                "Payout transactions by event (signed, sent, resent, confirmed, failed, expired, insufficient_funds).",
                "event",
            ),
            lamports_paid: counter(
                "lamports_paid_total",
                "Lamports in payout transactions this hub saw confirmed.",
            ),
            payouts_insufficient_funds: gauge(
                "payouts_insufficient_funds",
                "Payouts waiting because the treasury cannot cover them (as of the last cycle).",
            ),
            payouts_failed: gauge(
                "payouts_failed",
                "Payouts given up after repeated failures; they need an operator (as of the last cycle).",
            ),
            payout_batches_unfinished: gauge(
                "payout_batches_unfinished",
                "Payout transactions sent or signed whose outcome is not known yet (as of the last cycle).",
            ),
            treasury_lamports: gauge(
                "treasury_lamports",
                "Treasury balance seen in the last payout cycle.",
            ),
            payout_history_gap: gauge(
                "payout_history_gap",
                "1 while payouts are stopped: the history RPC no longer keeps the slot of the oldest unfinished payout batch, or the slot reconciliation with the treasury's history resumes from (minimumLedgerSlot too high).",
            ),
            payout_daily_cap_reached: gauge(
                "payout_daily_cap_reached",
                "1 while payouts wait because HUB_PAYOUT_DAILY_CAP_LAMPORTS is reached for the current UTC day.",
            ),
            payout_spent_today_lamports: gauge(
                "payout_spent_today_lamports",
                "Lamports of payout batches signed since 00:00 UTC (transfers and fees; failed: fees only), as of the last cycle.",
            ),
            payout_found_transfers: counter_vec(
                "payout_found_transfers_total",
                "Treasury transfers found on chain that no batch in the ledger knew (a database restored from an older backup, or the treasury key used elsewhere), by outcome: matched (paid an open payout), added (recorded as a new paid payout), unknown_account (to an account no validator has; not recorded).",
                "outcome",
            ),
            payout_start_wait_blocks: gauge(
                "payout_start_wait_blocks",
                "Blocks a payer that just started still waits before claiming or paying, until every blockhash a payer before it could have signed with has expired; 0 once passed.",
            ),
            preauth_connections: gauge(
                "preauth_connections",
                "WebSocket sessions that have not said a valid hello yet.",
            ),
            connections_refused: counter_vec(
                "connections_refused_total",
                "Validator connections refused before a session: preauth_per_ip (429), preauth_total (503), total (503), hello_rate (rate_limited after the hello).",
                "reason",
            ),
            http_refused: counter_vec(
                "http_refused_total",
                "HTTP requests refused: overloaded (503, over HUB_HTTP_MAX_CONCURRENT) or timeout (503, over HUB_HTTP_TIMEOUT_MS).",
                "reason",
            ),
            validators_forgotten: counter(
                "validators_forgotten_total",
                "Validator rows deleted because their key never had a result stored and was not seen for HUB_UNUSED_VALIDATOR_TTL_SECS.",
            ),
            earnings_summary_refreshes: counter_vec(
                "earnings_summary_refreshes_total",
                "Refreshes of the per-validator earnings summary by the payout leader, by outcome (ok, error).",
                "outcome",
            ),
            registry,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
