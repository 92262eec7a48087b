//! Settings in two layers. [`Config`] is what an operator writes: defaults,
//! then an optional TOML file, then `HUB_*` environment variables (and
//! `DATABASE_URL`), flat and named as the variables are. [`Config::parse`]
//! checks it once, at start, and turns it into [`Settings`]: typed values
//! (the keyring, the proxy list, durations, the commitment level) grouped by
//! the part of the hub that uses them. A bad value stops the hub with a
//! message naming the variable; nothing is parsed again later.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use protocol::limits;
use protocol::Keyring;

use crate::edge::access::AccessMode;
use crate::payouts::{CrashAction, PayoutConfig, RpcUrl};
use crate::rounds::machine::Diversity;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL (`HUB_DATABASE_URL` or `DATABASE_URL`); may hold a
    /// password.
    pub database_url: Secret,
    pub db_max_connections: u32,
    /// Where `/ws`, `/healthz`, `/readyz` and `/metrics` listen.
    pub listen: SocketAddr,
    /// This replica's id; unique in the cluster (`HUB_ID`).
    pub hub_id: String,
    /// Task-token keys, `kid:hex[,kid:hex]`; the first signs. Same on every hub.
    pub token_keys: Secret,
    /// Validators per round (K).
    pub validators_per_round: usize,
    /// At most one validator per network (/24 IPv4, /48 IPv6, after trusted
    /// proxies) in a round.
    pub prefix_diversity: bool,
    /// A network that supplied more than this share of a hub's recent
    /// tasks is picked only after every other (1 turns it off).
    pub prefix_max_task_share: f64,
    /// Floor for a website's interval, seconds.
    pub min_interval_secs: u32,
    /// Time a validator has to answer a task, ms (capped at the interval).
    pub task_deadline_ms: u64,
    /// How often the scheduler looks for due websites and expired tasks, ms.
    pub scheduler_tick_ms: u64,
    /// How often websites are re-read from PostgreSQL, ms.
    pub reload_interval_ms: u64,
    /// Consecutive `down` rounds that open an incident.
    pub incident_open_after: u32,
    /// Consecutive `up` rounds that resolve it.
    pub incident_resolve_after: u32,
    /// Lamports an accepted tick earns.
    pub reward_lamports: i64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub auth_timeout_ms: u64,
    pub max_frame_bytes: usize,
    pub max_messages_per_sec: u32,
    pub message_burst: u32,
    /// Most validator sockets this replica holds.
    pub max_connections: usize,
    /// Outbound frames queued per session before it counts as a slow consumer.
    pub session_queue: usize,
    /// Verified results waiting to be written.
    pub ingest_queue: usize,
    /// Most rows per tick write.
    pub write_batch_max: usize,
    /// Concurrent tick writers.
    pub writers: usize,
    /// How long a tick writer waits, after its first result, for more to
    /// share the write, ms (0: it writes what is there at once).
    pub write_linger_ms: u64,
    /// How long a session may hold acknowledgements back, ms, so they go
    /// out in one write with the next task instead of a write each (0:
    /// sent at once). Only while tasks flow to the session (one was sent
    /// within the last second), and never while it drains.
    pub ack_hold_ms: u64,
    /// On SIGTERM, how long sessions may take to hand in their results, ms.
    pub drain_timeout_ms: u64,
    /// Redis for cluster coordination; empty runs this hub alone. May hold
    /// a password.
    pub redis_url: Secret,
    /// With a `rediss://` URL: a PEM file of the CA(s) the server's
    /// certificate must chain to; empty: the system's roots.
    pub redis_tls_ca: String,
    /// Prepended to every Redis key and channel (one per deployment).
    pub redis_prefix: String,
    /// How often this hub announces itself; it counts as gone after two
    /// missed announcements.
    pub announce_interval_ms: u64,
    /// Address other hubs and operators see; defaults to `listen`.
    pub advertise_address: String,
    /// Hub-driven rebalancing (cluster only): a hub well above the
    /// cluster's mean of validators per hub sends some of them the
    /// `reconnect` hint, so the load balancer places them again.
    pub rebalance: bool,
    /// How far above the mean a hub may be before it acts, as a fraction
    /// of the mean (0.2: above mean x 1.2).
    pub rebalance_tolerance: f64,
    /// ... and by how many validators at least, so small clusters do not
    /// churn.
    pub rebalance_min_excess: usize,
    /// Most reconnect hints per second a hub sends to rebalance.
    pub rebalance_max_per_sec: u32,
    /// Most of its sockets a hub hints in one round (one announcement).
    pub rebalance_max_share: f64,
    /// Load balancers whose `X-Forwarded-For` is believed, comma-separated
    /// IP addresses and CIDR ranges (`10.0.0.0/8,fd00::/8,127.0.0.1`).
    /// From anyone else the header is ignored (see [`runtime::client_ip`]).
    pub trusted_proxies: String,
    /// The payout leader's lease; renewed every third of it (hubs with a
    /// treasury only).
    pub leader_lease_ms: u64,
    /// Treasury keypair file (Solana CLI JSON), mounted as a secret. Only
    /// hubs with one stand for the payout election; empty: this hub never
    /// leads and never pays.
    pub payout_treasury_keypair: String,
    /// Read the treasury keypair even if its mode lets others read it or
    /// group or others write it (refused by default, as ssh does).
    pub allow_insecure_keypair: bool,
    /// Solana JSON-RPC endpoint payouts use. Often carries a provider's
    /// API key: `Debug` and logs show its scheme and host only.
    pub payout_rpc_url: RpcUrl,
    /// Endpoint for signature status look-ups (`getSignatureStatuses` with
    /// history, `minimumLedgerSlot`); empty: `payout_rpc_url`. Must keep
    /// transaction history back to the oldest unfinished batch.
    pub payout_history_rpc_url: RpcUrl,
    /// Compute-unit price of payout transactions, micro-lamports; 0: none.
    pub payout_priority_fee_micro_lamports: u64,
    /// Most lamports (transfers and fees) payout batches may spend per UTC
    /// day; once reached, payouts wait for the next day. 0: no cap.
    pub payout_daily_cap_lamports: u64,
    /// How often the leader settles, claims and pays, ms.
    pub payout_interval_ms: u64,
    /// Smallest payout; at least the rent-exempt minimum of a new account.
    pub payout_min_lamports: i64,
    /// Transfers per Solana transaction.
    pub payout_max_transfers: usize,
    /// Transactions a payout may go through before it is marked failed.
    pub payout_max_attempts: i32,
    /// A closed round is credited this long after it closed, ms.
    pub payout_settle_delay_ms: u64,
    /// How long a cycle waits for its transactions to confirm, ms; the next
    /// cycle picks up what is still unconfirmed.
    pub payout_confirm_timeout_ms: u64,
    /// `finalized` (default) or `confirmed`: when a transfer counts as paid.
    /// `confirmed` is faster but marks a payout paid before its block is
    /// final; a rolled-back block would leave it recorded as paid.
    pub payout_commitment: String,
    /// Fault injection for tests: abort the process at this payout step
    /// (`after_claim`, `after_sign`, `after_send`, `before_confirm`). Refused
    /// by release builds (without debug assertions).
    pub payout_crash_at: String,
    // ---- cheap attacks (issue 10, section 4) ----
    /// Sockets that have not said a valid hello yet, on this replica: a cap
    /// of their own, below `max_connections`, so silent sockets cannot take
    /// the room of validators. Over it, the upgrade gets HTTP 503.
    pub max_preauth_connections: usize,
    /// Of those, per client address (after `trusted_proxies`; IPv6 by /64).
    /// Over it, the upgrade gets HTTP 429.
    pub max_preauth_per_ip: usize,
    /// Hellos per second per client address (token bucket), and its burst.
    /// Over it: `rate_limited`, close 1008.
    pub hello_rate_per_ip: u32,
    pub hello_burst_per_ip: u32,
    /// A validator row whose key never had a result stored is deleted once
    /// it has not been seen for this long, seconds.
    pub unused_validator_ttl_secs: u64,
    /// Keys never on probation, comma-separated base58: the operator's own
    /// validators, so a new network has quorum at once.
    pub trusted_validators: String,
    /// Results agreeing with a decided round a new key needs to leave
    /// probation (0: no probation).
    pub probation_results: u32,
    /// Shadow checks passed a new key needs to leave probation.
    pub probation_challenges: u32,
    /// Share of rounds given one extra (shadow) task for a key on probation
    /// or below the trust threshold.
    pub shadow_share: f64,
    /// `open` (any key unless denied) or `allowlist` (only keys added with
    /// `hub validators allow`): see docs/ARCHITECTURE.md, "Validator trust".
    pub validator_access: String,
    /// Raw ticks and rounds are kept this many days (rounds also until
    /// settled and rolled up); rollups are kept by their own settings.
    pub retention_days: u32,
    /// Days of tick partitions kept made ahead.
    pub tick_partitions_ahead_days: u32,
    /// How often retention runs (partitions ahead, old rollups, old
    /// rounds, old tick partitions), seconds.
    pub retention_interval_secs: u64,
    /// Lock timeout of each retention statement, ms, and how many times a
    /// partition detach or drop that timed out is retried.
    pub retention_lock_timeout_ms: u64,
    pub retention_retries: u32,
    /// Rounds deleted per statement.
    pub retention_rounds_batch: u32,
    /// How often closed rounds are rolled up, ms, and how long after its
    /// close a round is rolled up, seconds (a result arriving later is
    /// stored and paid but not in the rollups).
    pub rollup_interval_ms: u64,
    pub rollup_grace_secs: u64,
    /// Rollups are kept this many days: 5-minute, hourly, daily.
    pub rollup_keep_5m_days: u32,
    pub rollup_keep_1h_days: u32,
    pub rollup_keep_1d_days: u32,
    /// HTTP: time to read a request's head (also how long an idle
    /// keep-alive connection, or one that never sends a request, stays
    /// open) and to answer a non-WebSocket request, ms.
    pub http_timeout_ms: u64,
    /// Requests to `/v1/validators/{key}/earnings` and `/metrics` served at
    /// once; more get 503 `overloaded`.
    pub http_max_concurrent: usize,
    /// PostgreSQL connections for those endpoints, a pool apart from the
    /// tick writers' (`db_max_connections`).
    pub read_db_max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: Secret::default(),
            db_max_connections: 16,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            hub_id: String::new(),
            token_keys: Secret::default(),
            validators_per_round: 3,
            prefix_diversity: true,
            prefix_max_task_share: 0.2,
            min_interval_secs: 10,
            task_deadline_ms: 30_000,
            scheduler_tick_ms: 200,
            reload_interval_ms: 5_000,
            incident_open_after: 2,
            incident_resolve_after: 2,
            reward_lamports: 1_000,
            heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS,
            heartbeat_timeout_ms: limits::HEARTBEAT_TIMEOUT_MS,
            auth_timeout_ms: limits::AUTH_TIMEOUT_MS,
            max_frame_bytes: limits::MAX_FRAME_BYTES,
            max_messages_per_sec: limits::MAX_MESSAGES_PER_SEC,
            message_burst: limits::MESSAGE_BURST,
            max_connections: 20_000,
            session_queue: 256,
            ingest_queue: 10_000,
            write_batch_max: 2_000,
            writers: 2,
            write_linger_ms: 50,
            ack_hold_ms: 200,
            drain_timeout_ms: 10_000,
            redis_url: Secret::default(),
            redis_tls_ca: String::new(),
            redis_prefix: "uptime:".into(),
            announce_interval_ms: 2_000,
            advertise_address: String::new(),
            rebalance: true,
            rebalance_tolerance: 0.2,
            rebalance_min_excess: 10,
            rebalance_max_per_sec: 20,
            rebalance_max_share: 0.1,
            trusted_proxies: String::new(),
            leader_lease_ms: 10_000,
            payout_treasury_keypair: String::new(),
            allow_insecure_keypair: false,
            payout_rpc_url: Default::default(),
            payout_history_rpc_url: Default::default(),
            payout_priority_fee_micro_lamports: 0,
            payout_daily_cap_lamports: 0,
            payout_interval_ms: 60_000,
            payout_min_lamports: MIN_PAYOUT_LAMPORTS,
            payout_max_transfers: 10,
            payout_max_attempts: 5,
            payout_settle_delay_ms: 30_000,
            payout_confirm_timeout_ms: 15_000,
            payout_commitment: "finalized".into(),
            payout_crash_at: String::new(),
            max_preauth_connections: 1_024,
            max_preauth_per_ip: 16,
            hello_rate_per_ip: 5,
            hello_burst_per_ip: 20,
            unused_validator_ttl_secs: 86_400,
            validator_access: "open".into(),
            trusted_validators: String::new(),
            probation_results: 20,
            probation_challenges: 2,
            shadow_share: 0.1,
            retention_days: 30,
            tick_partitions_ahead_days: 7,
            retention_interval_secs: 3_600,
            retention_lock_timeout_ms: 2_000,
            retention_retries: 10,
            retention_rounds_batch: 5_000,
            rollup_interval_ms: 30_000,
            rollup_grace_secs: 180,
            rollup_keep_5m_days: 8,
            rollup_keep_1h_days: 100,
            rollup_keep_1d_days: 400,
            http_timeout_ms: 10_000,
            http_max_concurrent: 32,
            read_db_max_connections: 2,
        }
    }
}

pub use runtime::{Secret, TrustedProxies};

/// Rent-exempt minimum of a new, empty system account: a smaller transfer
/// to an account that does not exist yet would fail the whole transaction.
pub const MIN_PAYOUT_LAMPORTS: i64 = 890_880;

/// Highest `HUB_PAYOUT_PRIORITY_FEE_MICRO_LAMPORTS`: 100 lamports per
/// compute unit (a 20-transfer batch then pays about 0.001 SOL more).
pub const MAX_PRIORITY_FEE: u64 = 100_000_000;

/// `HUB_PAYOUT_CRASH_AT`, with fault injection compiled in (`hooks`) or not.
fn crash_at(v: &str, hooks: bool) -> Result<Option<crate::payouts::CrashPoint>, ConfigError> {
    if v.is_empty() {
        return Ok(None);
    }
    if !hooks {
        return Err(invalid(
            "HUB_PAYOUT_CRASH_AT",
            "fault injection is for tests only; this release build refuses it (unset it)",
        ));
    }
    v.parse()
        .map(Some)
        .map_err(|e: String| invalid("HUB_PAYOUT_CRASH_AT", e))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `#[source]`: figment's message already says everything, and a
    /// source would print it twice in `{:#}`.
    #[error("configuration: {}", without_excerpt(&.0.to_string()))]
    Figment(Box<figment::Error>),
    #[error("{var}: {problem}")]
    Invalid { var: &'static str, problem: String },
}

/// A TOML syntax error quotes the offending line, which may hold a secret
/// (`token_keys = k1:...` without quotes): keep the position and the
/// reason, drop the quoted source, on one line.
fn without_excerpt(msg: &str) -> String {
    msg.lines()
        .filter(|l| {
            let t = l
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !t.trim_start().starts_with('|')
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        Self::Figment(e)
    }
}

impl Config {
    /// `HUB_TRUSTED_VALIDATORS` as keys.
    fn trusted_keys(&self) -> Result<foldhash::HashSet<protocol::PublicKey>, ConfigError> {
        self.trusted_validators
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                protocol::PublicKey::from_base58(k).ok_or_else(|| {
                    invalid(
                        "HUB_TRUSTED_VALIDATORS",
                        format!(
                            "{:?} is not a base58 public key",
                            protocol::terminal_safe(k)
                        ),
                    )
                })
            })
            .collect()
    }
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        problem: problem.into(),
    }
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig =
            fig.merge(Env::raw().only(&["DATABASE_URL"]))
                // `HUB_ID` reads better than `HUB_HUB_ID`.
                .merge(Env::prefixed("HUB_").map(|k| {
                    if k == "id" {
                        "hub_id".into()
                    } else {
                        k.into()
                    }
                }));
        Ok(fig.extract().map_err(Box::new)?)
    }

    /// Checks every value and turns them into [`Settings`].
    pub fn parse(mut self) -> Result<Settings, ConfigError> {
        if self.hub_id.is_empty() {
            self.hub_id = format!("hub-{:06x}", fastrand::u32(..0x100_0000));
        }
        self.validate()?;
        let c = self;
        let ms = Duration::from_millis;
        let positive = |v: u32| NonZeroU32::new(v).expect("validated positive");
        let payouts = if c.payout_treasury_keypair.is_empty() {
            None
        } else {
            Some(PayoutSettings {
                treasury_keypair: c.payout_treasury_keypair.clone().into(),
                allow_insecure_keypair: c.allow_insecure_keypair,
                rpc_url: c.payout_rpc_url.clone(),
                cycle: c.payout_config()?,
            })
        };
        let cluster = (!c.redis_url.is_empty()).then(|| ClusterSettings {
            redis_url: c.redis_url.clone(),
            tls_ca: (!c.redis_tls_ca.is_empty()).then(|| PathBuf::from(&c.redis_tls_ca)),
            prefix: c.redis_prefix.clone(),
            announce_interval: ms(c.announce_interval_ms),
            advertise_address: (!c.advertise_address.is_empty())
                .then(|| c.advertise_address.clone()),
            leader_lease: ms(c.leader_lease_ms),
            rebalance: RebalanceSettings {
                enabled: c.rebalance,
                tolerance: c.rebalance_tolerance,
                min_excess: c.rebalance_min_excess,
                max_per_sec: positive(c.rebalance_max_per_sec),
                max_share: c.rebalance_max_share,
            },
        });
        Ok(Settings {
            keyring: c.keyring()?,
            database: DatabaseSettings {
                url: c.database_url.clone(),
                max_connections: c.db_max_connections,
                read_max_connections: c.read_db_max_connections,
            },
            rounds: RoundSettings {
                hub_id: c.hub_id.clone(),
                validators_per_round: c.validators_per_round,
                min_interval_secs: c.min_interval_secs,
                task_deadline: ms(c.task_deadline_ms),
                scheduler_tick: ms(c.scheduler_tick_ms),
                reload_interval: ms(c.reload_interval_ms),
                incident_open_after: c.incident_open_after as i32,
                incident_resolve_after: c.incident_resolve_after as i32,
                diversity: Diversity {
                    one_per_prefix: c.prefix_diversity,
                    max_task_share: c.prefix_max_task_share,
                    shadow_share: c.shadow_share,
                },
            },
            sessions: SessionSettings {
                hub_id: c.hub_id.clone(),
                heartbeat_interval: ms(c.heartbeat_interval_ms),
                heartbeat_timeout: ms(c.heartbeat_timeout_ms),
                auth_timeout: ms(c.auth_timeout_ms),
                max_frame_bytes: c.max_frame_bytes,
                messages_per_sec: positive(c.max_messages_per_sec),
                message_burst: positive(c.message_burst),
                queue: c.session_queue,
                drain_timeout: ms(c.drain_timeout_ms),
                ack_hold: ms(c.ack_hold_ms),
                max_connections: c.max_connections,
                max_preauth_connections: c.max_preauth_connections.min(c.max_connections),
                max_preauth_per_ip: c.max_preauth_per_ip,
                hello_rate_per_ip: positive(c.hello_rate_per_ip),
                hello_burst_per_ip: positive(c.hello_burst_per_ip),
                reward_lamports: c.reward_lamports,
                trusted: std::sync::Arc::new(c.trusted_keys()?),
                probation: c.probation_results > 0,
            },
            ingest: IngestSettings {
                queue: c.ingest_queue,
                batch_max: c.write_batch_max,
                writers: c.writers,
                linger: Duration::from_millis(c.write_linger_ms),
            },
            http: HttpSettings {
                listen: c.listen,
                timeout: ms(c.http_timeout_ms),
                max_concurrent: c.http_max_concurrent,
                trusted_proxies: c.trusted_proxies()?,
            },
            unused_validator_ttl: Duration::from_secs(c.unused_validator_ttl_secs),
            validator_access: AccessMode::parse(&c.validator_access)
                .expect("validated: HUB_VALIDATOR_ACCESS"),
            maintenance: MaintenanceSettings {
                retention_days: c.retention_days as i32,
                partitions_ahead_days: c.tick_partitions_ahead_days as i32,
                retention_interval: Duration::from_secs(c.retention_interval_secs),
                lock_timeout: ms(c.retention_lock_timeout_ms),
                retries: c.retention_retries as usize,
                rounds_batch: i64::from(c.retention_rounds_batch),
                rollup_interval: ms(c.rollup_interval_ms),
                rollup_grace: Duration::from_secs(c.rollup_grace_secs),
                keep_5m: days(c.rollup_keep_5m_days),
                keep_1h: days(c.rollup_keep_1h_days),
                keep_1d: days(c.rollup_keep_1d_days),
            },
            cluster,
            payouts,
            hub_id: c.hub_id,
        })
    }

    fn validate_maintenance(&self) -> Result<(), ConfigError> {
        if !(1..=3_650).contains(&self.retention_days) {
            return Err(invalid("HUB_RETENTION_DAYS", "must be 1 to 3650"));
        }
        if !(2..=60).contains(&self.tick_partitions_ahead_days) {
            return Err(invalid("HUB_TICK_PARTITIONS_AHEAD_DAYS", "must be 2 to 60"));
        }
        if !(60..=86_400).contains(&self.retention_interval_secs) {
            return Err(invalid(
                "HUB_RETENTION_INTERVAL_SECS",
                "must be 60 to 86400",
            ));
        }
        if !(10..=60_000).contains(&self.retention_lock_timeout_ms) {
            return Err(invalid(
                "HUB_RETENTION_LOCK_TIMEOUT_MS",
                "must be 10 to 60000",
            ));
        }
        if self.retention_retries > 100 {
            return Err(invalid("HUB_RETENTION_RETRIES", "must be 0 to 100"));
        }
        if !(1..=100_000).contains(&self.retention_rounds_batch) {
            return Err(invalid("HUB_RETENTION_ROUNDS_BATCH", "must be 1 to 100000"));
        }
        if !(100..=3_600_000).contains(&self.rollup_interval_ms) {
            return Err(invalid("HUB_ROLLUP_INTERVAL_MS", "must be 100 to 3600000"));
        }
        if self.rollup_grace_secs > 86_400 {
            return Err(invalid("HUB_ROLLUP_GRACE_SECS", "must be 0 to 86400"));
        }
        // The reads need a day and an hour of 5-minute rows, 31 days of
        // hourly and 91 of daily.
        for (var, v, min) in [
            ("HUB_ROLLUP_KEEP_5M_DAYS", self.rollup_keep_5m_days, 2),
            ("HUB_ROLLUP_KEEP_1H_DAYS", self.rollup_keep_1h_days, 32),
            ("HUB_ROLLUP_KEEP_1D_DAYS", self.rollup_keep_1d_days, 92),
        ] {
            if !(min..=36_500).contains(&v) {
                return Err(invalid(
                    var,
                    format!("must be {min} to 36500 (what the reads need at least)"),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.is_empty() {
            return Err(invalid("HUB_DATABASE_URL", "must be set (or DATABASE_URL)"));
        }
        self.keyring()?;
        for (var, v) in [
            ("HUB_INCIDENT_OPEN_AFTER", self.incident_open_after),
            ("HUB_INCIDENT_RESOLVE_AFTER", self.incident_resolve_after),
        ] {
            if !(1..=100).contains(&v) {
                return Err(invalid(var, "must be 1 to 100 rounds"));
            }
        }
        if !(self.prefix_max_task_share > 0.0 && self.prefix_max_task_share <= 1.0) {
            return Err(invalid(
                "HUB_PREFIX_MAX_TASK_SHARE",
                "must be above 0 and at most 1",
            ));
        }
        if !(1..=16).contains(&self.validators_per_round) {
            return Err(invalid("HUB_VALIDATORS_PER_ROUND", "must be 1..=16"));
        }
        if !(1..=86_400).contains(&self.min_interval_secs) {
            return Err(invalid("HUB_MIN_INTERVAL_SECS", "must be 1..=86400"));
        }
        if !(100..=600_000).contains(&self.task_deadline_ms) {
            return Err(invalid("HUB_TASK_DEADLINE_MS", "must be 100..=600000"));
        }
        if !(10..=10_000).contains(&self.scheduler_tick_ms) {
            return Err(invalid("HUB_SCHEDULER_TICK_MS", "must be 10..=10000"));
        }
        if self.reward_lamports < 0 {
            return Err(invalid("HUB_REWARD_LAMPORTS", "must not be negative"));
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "HUB_HEARTBEAT_TIMEOUT_MS",
                "must be longer than HUB_HEARTBEAT_INTERVAL_MS",
            ));
        }
        if !(1024..=1 << 20).contains(&self.max_frame_bytes) {
            return Err(invalid("HUB_MAX_FRAME_BYTES", "must be 1024..=1048576"));
        }
        if self.max_messages_per_sec == 0 || self.message_burst == 0 {
            return Err(invalid(
                "HUB_MAX_MESSAGES_PER_SEC",
                "rate and burst must be positive",
            ));
        }
        if !(50..=60_000).contains(&self.announce_interval_ms) {
            return Err(invalid("HUB_ANNOUNCE_INTERVAL_MS", "must be 50..=60000"));
        }
        let redis_ok = self.redis_url.is_empty()
            || self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("rediss://");
        if !redis_ok {
            return Err(invalid(
                "HUB_REDIS_URL",
                "must be a redis:// or rediss:// URL (or empty for a single hub)",
            ));
        }
        if !self.redis_tls_ca.is_empty() && !self.redis_url.starts_with("rediss://") {
            return Err(invalid(
                "HUB_REDIS_TLS_CA",
                "is for TLS: HUB_REDIS_URL must be a rediss:// URL",
            ));
        }
        self.trusted_proxies()?;
        self.validate_rebalance()?;
        if !(300..=600_000).contains(&self.leader_lease_ms) {
            return Err(invalid("HUB_LEADER_LEASE_MS", "must be 300..=600000"));
        }
        self.validate_payouts()?;
        self.validate_abuse_limits()?;
        if self.write_linger_ms > 1000 {
            return Err(invalid("HUB_WRITE_LINGER_MS", "must be at most 1000"));
        }
        if self.ack_hold_ms > 1000 {
            return Err(invalid("HUB_ACK_HOLD_MS", "must be at most 1000"));
        }
        for (var, v) in [
            ("HUB_MAX_CONNECTIONS", self.max_connections),
            ("HUB_SESSION_QUEUE", self.session_queue),
            ("HUB_INGEST_QUEUE", self.ingest_queue),
            ("HUB_WRITE_BATCH_MAX", self.write_batch_max),
            ("HUB_WRITERS", self.writers),
        ] {
            if v == 0 {
                return Err(invalid(var, "must be positive"));
            }
        }
        Ok(())
    }

    /// Checked whether or not rebalancing is on, so switching it on later
    /// cannot meet a bad value.
    fn validate_rebalance(&self) -> Result<(), ConfigError> {
        // Not 0: a hub hinting as soon as it is one validator above the
        // mean would bounce validators between hubs that round differently.
        if !(0.05..=10.0).contains(&self.rebalance_tolerance) {
            return Err(invalid(
                "HUB_REBALANCE_TOLERANCE",
                "must be 0.05 to 10 (a fraction of the mean; HUB_REBALANCE=false turns rebalancing off)",
            ));
        }
        if self.rebalance_min_excess == 0 {
            return Err(invalid("HUB_REBALANCE_MIN_EXCESS", "must be positive"));
        }
        if !(1..=10_000).contains(&self.rebalance_max_per_sec) {
            return Err(invalid("HUB_REBALANCE_MAX_PER_SEC", "must be 1 to 10000"));
        }
        if !(self.rebalance_max_share > 0.0 && self.rebalance_max_share <= 1.0) {
            return Err(invalid(
                "HUB_REBALANCE_MAX_SHARE",
                "must be above 0 and at most 1 (a fraction of this hub's sockets)",
            ));
        }
        Ok(())
    }

    fn validate_payouts(&self) -> Result<(), ConfigError> {
        if self.payout_min_lamports < MIN_PAYOUT_LAMPORTS {
            return Err(invalid(
                "HUB_PAYOUT_MIN_LAMPORTS",
                format!("must be at least {MIN_PAYOUT_LAMPORTS} (the rent-exempt minimum of a new account)"),
            ));
        }
        if !(1..=20).contains(&self.payout_max_transfers) {
            return Err(invalid("HUB_PAYOUT_MAX_TRANSFERS", "must be 1..=20"));
        }
        if !(1..=100).contains(&self.payout_max_attempts) {
            return Err(invalid("HUB_PAYOUT_MAX_ATTEMPTS", "must be 1..=100"));
        }
        if !(100..=86_400_000).contains(&self.payout_interval_ms) {
            return Err(invalid("HUB_PAYOUT_INTERVAL_MS", "must be 100..=86400000"));
        }
        if self.payout_settle_delay_ms > 3_600_000 {
            return Err(invalid(
                "HUB_PAYOUT_SETTLE_DELAY_MS",
                "must be at most 3600000",
            ));
        }
        // A result may be resent, accepted and committed until its task
        // deadline; a round settled earlier would miss it.
        if self.payouts_enabled() && self.payout_settle_delay_ms < self.task_deadline_ms {
            return Err(invalid(
                "HUB_PAYOUT_SETTLE_DELAY_MS",
                "must be at least HUB_TASK_DEADLINE_MS (results may arrive until a task's deadline)",
            ));
        }
        if !(100..=600_000).contains(&self.payout_confirm_timeout_ms) {
            return Err(invalid(
                "HUB_PAYOUT_CONFIRM_TIMEOUT_MS",
                "must be 100..=600000",
            ));
        }
        self.payout_commitment()?;
        self.payout_crash_at()?;
        if self.payout_priority_fee_micro_lamports > MAX_PRIORITY_FEE {
            return Err(invalid(
                "HUB_PAYOUT_PRIORITY_FEE_MICRO_LAMPORTS",
                format!("must be at most {MAX_PRIORITY_FEE}"),
            ));
        }
        if i64::try_from(self.payout_daily_cap_lamports).is_err() {
            return Err(invalid(
                "HUB_PAYOUT_DAILY_CAP_LAMPORTS",
                "must be at most 9223372036854775807",
            ));
        }
        if !self.payout_history_rpc_url.is_empty() && !self.payout_history_rpc_url.is_http() {
            return Err(invalid(
                "HUB_PAYOUT_HISTORY_RPC_URL",
                "must be an http:// or https:// URL (or empty to use HUB_PAYOUT_RPC_URL)",
            ));
        }
        if !self.payout_treasury_keypair.is_empty() {
            let ok = self.payout_rpc_url.is_http();
            if !ok {
                return Err(invalid(
                    "HUB_PAYOUT_RPC_URL",
                    "must be an http:// or https:// URL when HUB_PAYOUT_TREASURY_KEYPAIR is set",
                ));
            }
        }
        Ok(())
    }

    fn validate_abuse_limits(&self) -> Result<(), ConfigError> {
        // Each is also bounded by the one above it (HUB_MAX_CONNECTIONS),
        // so lowering only the total stays valid.
        if self.max_preauth_connections == 0 {
            return Err(invalid("HUB_MAX_PREAUTH_CONNECTIONS", "must be positive"));
        }
        if self.max_preauth_per_ip == 0 {
            return Err(invalid("HUB_MAX_PREAUTH_PER_IP", "must be positive"));
        }
        if self.hello_rate_per_ip == 0 || self.hello_burst_per_ip == 0 {
            return Err(invalid(
                "HUB_HELLO_RATE_PER_IP",
                "rate and burst (HUB_HELLO_BURST_PER_IP) must be positive",
            ));
        }
        self.trusted_keys()?;
        if self.probation_results > 100_000 || self.probation_challenges > 100_000 {
            return Err(invalid(
                "HUB_PROBATION_RESULTS",
                "probation counts (and HUB_PROBATION_CHALLENGES) must be at most 100000",
            ));
        }
        if !(0.0..=1.0).contains(&self.shadow_share) {
            return Err(invalid("HUB_SHADOW_SHARE", "must be from 0 to 1"));
        }
        if AccessMode::parse(&self.validator_access).is_none() {
            return Err(invalid(
                "HUB_VALIDATOR_ACCESS",
                "must be `open` or `allowlist`",
            ));
        }
        // Well above any database outage: a connected validator's last_seen
        // is refreshed every 30 s only while the database answers.
        if self.unused_validator_ttl_secs < 3_600 {
            return Err(invalid(
                "HUB_UNUSED_VALIDATOR_TTL_SECS",
                "must be at least 3600",
            ));
        }
        self.validate_maintenance()?;
        if !(100..=600_000).contains(&self.http_timeout_ms) {
            return Err(invalid("HUB_HTTP_TIMEOUT_MS", "must be 100..=600000"));
        }
        if self.http_max_concurrent == 0 {
            return Err(invalid("HUB_HTTP_MAX_CONCURRENT", "must be positive"));
        }
        if !(1..=64).contains(&self.read_db_max_connections) {
            return Err(invalid("HUB_READ_DB_MAX_CONNECTIONS", "must be 1..=64"));
        }
        Ok(())
    }

    /// Payouts run on this hub (when it is the leader) only with a treasury.
    fn payouts_enabled(&self) -> bool {
        !self.payout_treasury_keypair.is_empty()
    }

    fn payout_config(&self) -> Result<PayoutConfig, ConfigError> {
        let ms = Duration::from_millis;
        Ok(PayoutConfig {
            interval: ms(self.payout_interval_ms),
            min_lamports: self.payout_min_lamports,
            max_transfers: self.payout_max_transfers,
            max_attempts: self.payout_max_attempts,
            settle_delay: ms(self.payout_settle_delay_ms),
            confirm_timeout: ms(self.payout_confirm_timeout_ms),
            poll_every: ms(self.payout_confirm_timeout_ms.clamp(100, 2_000) / 8).max(ms(20)),
            commitment: self.payout_commitment()?,
            history_rpc_url: (!self.payout_history_rpc_url.is_empty())
                .then(|| self.payout_history_rpc_url.clone()),
            priority_fee_micro_lamports: self.payout_priority_fee_micro_lamports,
            daily_cap_lamports: self.payout_daily_cap_lamports,
            probation: store::Probation {
                results: self.probation_results as i32,
                challenges: self.probation_challenges as i32,
            },
            crash: self.payout_crash_at()?.map(|p| (p, CrashAction::Abort)),
        })
    }

    fn payout_commitment(&self) -> Result<solana_commitment_config::CommitmentConfig, ConfigError> {
        match self.payout_commitment.as_str() {
            "finalized" => Ok(solana_commitment_config::CommitmentConfig::finalized()),
            "confirmed" => Ok(solana_commitment_config::CommitmentConfig::confirmed()),
            _ => Err(invalid(
                "HUB_PAYOUT_COMMITMENT",
                "must be finalized or confirmed",
            )),
        }
    }

    /// The armed crash point. Fault injection exists for tests only: a
    /// release build (no debug assertions) refuses any value.
    fn payout_crash_at(&self) -> Result<Option<crate::payouts::CrashPoint>, ConfigError> {
        crash_at(&self.payout_crash_at, cfg!(debug_assertions))
    }

    fn keyring(&self) -> Result<Keyring, ConfigError> {
        Keyring::parse(&self.token_keys).map_err(|e| invalid("HUB_TOKEN_KEYS", e.to_string()))
    }

    fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| invalid("HUB_TRUSTED_PROXIES", e.to_string()))
    }
}

/// Everything the hub runs on, checked and typed (see [`Config::parse`]).
/// `Debug` shows no secret: the URLs and keys are [`Secret`], [`RpcUrl`] or
/// a [`Keyring`], each of which hides its value.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's id; unique in the cluster.
    pub hub_id: String,
    /// The cluster's task-token keys.
    pub keyring: Keyring,
    pub database: DatabaseSettings,
    pub rounds: RoundSettings,
    pub sessions: SessionSettings,
    pub ingest: IngestSettings,
    pub http: HttpSettings,
    /// Redis coordination; `None` runs this hub alone.
    pub cluster: Option<ClusterSettings>,
    /// Payouts while this hub leads; `None` without a treasury keypair,
    /// and then this hub does not stand for the election.
    pub payouts: Option<PayoutSettings>,
    /// Validator rows never used are deleted once unseen this long.
    pub unused_validator_ttl: Duration,
    /// `HUB_VALIDATOR_ACCESS`.
    pub validator_access: AccessMode,
    pub maintenance: MaintenanceSettings,
}

/// Rollups and retention ([`crate::maintenance`]).
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    pub retention_days: i32,
    pub partitions_ahead_days: i32,
    pub retention_interval: Duration,
    pub lock_timeout: Duration,
    pub retries: usize,
    pub rounds_batch: i64,
    pub rollup_interval: Duration,
    pub rollup_grace: Duration,
    pub keep_5m: Duration,
    pub keep_1h: Duration,
    pub keep_1d: Duration,
}

fn days(d: u32) -> Duration {
    Duration::from_secs(u64::from(d) * 86_400)
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Config::load(file)?.parse()
    }

    /// From any provider stack (tests inject a map instead of touching the
    /// process environment).
    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let c: Config = fig.extract().map_err(Box::new)?;
        c.parse()
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May hold a password.
    pub url: Secret,
    /// The tick writers' and coordinator's pool.
    pub max_connections: u32,
    /// The read endpoints' own pool.
    pub read_max_connections: u32,
}

/// The coordinator's.
#[derive(Debug, Clone)]
pub struct RoundSettings {
    pub hub_id: String,
    /// Validators per round (K).
    pub validators_per_round: usize,
    /// Floor for a website's interval.
    pub min_interval_secs: u32,
    /// Time a validator has to answer a task (capped at the interval).
    pub task_deadline: Duration,
    pub scheduler_tick: Duration,
    pub reload_interval: Duration,
    /// Consecutive down rounds that open an incident, up rounds that
    /// resolve it (1 to 100 each).
    pub incident_open_after: i32,
    pub incident_resolve_after: i32,
    /// `HUB_PREFIX_DIVERSITY`, `HUB_PREFIX_MAX_TASK_SHARE`.
    pub diversity: Diversity,
}

/// Each validator session's.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub hub_id: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub auth_timeout: Duration,
    pub max_frame_bytes: usize,
    pub messages_per_sec: NonZeroU32,
    pub message_burst: NonZeroU32,
    /// Outbound frames queued before the session counts as a slow consumer.
    pub queue: usize,
    /// On shutdown, how long a session may take to hand in its results.
    pub drain_timeout: Duration,
    /// `HUB_ACK_HOLD_MS`.
    pub ack_hold: Duration,
    pub max_connections: usize,
    /// Never above `max_connections`.
    pub max_preauth_connections: usize,
    pub max_preauth_per_ip: usize,
    pub hello_rate_per_ip: NonZeroU32,
    pub hello_burst_per_ip: NonZeroU32,
    /// Lamports an accepted tick earns (stamped on it at the door).
    pub reward_lamports: i64,
    /// `HUB_TRUSTED_VALIDATORS`.
    pub trusted: std::sync::Arc<foldhash::HashSet<protocol::PublicKey>>,
    /// New keys start on probation (`HUB_PROBATION_RESULTS` above 0).
    pub probation: bool,
}

impl SessionSettings {
    /// The limits a welcome announces.
    pub fn limits(&self) -> protocol::Limits {
        protocol::Limits {
            max_frame_bytes: self.max_frame_bytes as u32,
            max_messages_per_sec: self.messages_per_sec.get(),
            message_burst: self.message_burst.get(),
            auth_timeout_ms: self.auth_timeout.as_millis() as u64,
        }
    }

    /// A session's message budget (and, apart, its resends').
    pub fn message_quota(&self) -> governor::Quota {
        governor::Quota::per_second(self.messages_per_sec).allow_burst(self.message_burst)
    }

    /// Hellos per client address.
    pub fn hello_quota(&self) -> governor::Quota {
        governor::Quota::per_second(self.hello_rate_per_ip).allow_burst(self.hello_burst_per_ip)
    }
}

/// The tick writers'.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Verified results waiting to be written.
    pub queue: usize,
    /// Most rows per write.
    pub batch_max: usize,
    pub writers: usize,
    /// Wait this long after the first result for more (see `Writer::run`).
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// To read a request's head, and to answer a non-WebSocket request.
    pub timeout: Duration,
    /// Earnings and metrics requests served at once.
    pub max_concurrent: usize,
    /// Load balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub redis_url: Secret,
    /// CA file for `rediss://` (`None`: the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// Prepended to every key and channel.
    pub prefix: String,
    pub announce_interval: Duration,
    /// Address other hubs see; `None`: the listener's.
    pub advertise_address: Option<String>,
    pub leader_lease: Duration,
    pub rebalance: RebalanceSettings,
}

/// When a hub sends some of its validators elsewhere
/// ([`crate::cluster::rebalance`]).
#[derive(Debug, Clone)]
pub struct RebalanceSettings {
    /// Off: the hub never hints (it still reports the cluster's mean).
    pub enabled: bool,
    /// Acts only above mean x (1 + tolerance) ...
    pub tolerance: f64,
    /// ... and at least this many validators above the mean.
    pub min_excess: usize,
    /// Hints per second, at most.
    pub max_per_sec: NonZeroU32,
    /// Of this hub's sockets, the most hinted in one round.
    pub max_share: f64,
}

#[derive(Debug, Clone)]
pub struct PayoutSettings {
    pub treasury_keypair: PathBuf,
    pub allow_insecure_keypair: bool,
    pub rpc_url: RpcUrl,
    pub cycle: PayoutConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are TOML literals, as in a config file.
    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let toml: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        Settings::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&toml)),
        )
    }

    const KEY: &str = "'k1:0000000000000000000000000000000000000000000000000000000000000000'";
    const DB: &str = "'postgres://x/y'";

    #[test]
    fn valid_settings_load_and_get_a_hub_id() {
        let s = from_pairs(&[("database_url", DB), ("token_keys", KEY)]).unwrap();
        assert!(s.hub_id.starts_with("hub-"));
        assert_eq!(s.rounds.validators_per_round, 3);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("token_keys", KEY)], "HUB_DATABASE_URL"),
            (&[("database_url", DB)], "HUB_TOKEN_KEYS"),
            (
                &[
                    ("database_url", DB),
                    ("token_keys", KEY),
                    ("validators_per_round", "0"),
                ],
                "HUB_VALIDATORS_PER_ROUND",
            ),
            (
                &[
                    ("database_url", DB),
                    ("token_keys", KEY),
                    ("heartbeat_timeout_ms", "10"),
                ],
                "HUB_HEARTBEAT_TIMEOUT_MS",
            ),
        ];
        for (pairs, var) in cases {
            let e = from_pairs(pairs).unwrap_err().to_string();
            assert!(e.contains(var), "{e}");
        }
        for (pair, var) in [
            (
                ("payout_history_rpc_url", "'ftp://x'"),
                "HUB_PAYOUT_HISTORY_RPC_URL",
            ),
            (
                ("payout_priority_fee_micro_lamports", "100000001"),
                "HUB_PAYOUT_PRIORITY_FEE_MICRO_LAMPORTS",
            ),
            (("rebalance_tolerance", "0.0"), "HUB_REBALANCE_TOLERANCE"),
            (("rebalance_tolerance", "nan"), "HUB_REBALANCE_TOLERANCE"),
            (("rebalance_min_excess", "0"), "HUB_REBALANCE_MIN_EXCESS"),
            (("rebalance_max_per_sec", "0"), "HUB_REBALANCE_MAX_PER_SEC"),
            (("rebalance_max_share", "0.0"), "HUB_REBALANCE_MAX_SHARE"),
            (("rebalance_max_share", "1.5"), "HUB_REBALANCE_MAX_SHARE"),
            (("write_linger_ms", "1001"), "HUB_WRITE_LINGER_MS"),
            (("ack_hold_ms", "1001"), "HUB_ACK_HOLD_MS"),
        ] {
            let e = from_pairs(&[("database_url", DB), ("token_keys", KEY), pair])
                .unwrap_err()
                .to_string();
            assert!(e.contains(var), "{e}");
        }
        let e = from_pairs(&[("listen", "'not-an-address'")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn rebalancing_is_on_by_default_and_can_be_turned_off() {
        let s = from_pairs(&[
            ("database_url", DB),
            ("token_keys", KEY),
            ("redis_url", "'redis://127.0.0.1:6379'"),
        ])
        .unwrap();
        let r = s.cluster.unwrap().rebalance;
        assert!(r.enabled);
        assert_eq!(
            (r.tolerance, r.min_excess, r.max_per_sec.get(), r.max_share),
            (0.2, 10, 20, 0.1)
        );
        let s = from_pairs(&[
            ("database_url", DB),
            ("token_keys", KEY),
            ("redis_url", "'redis://127.0.0.1:6379'"),
            ("rebalance", "false"),
        ])
        .unwrap();
        assert!(!s.cluster.unwrap().rebalance.enabled);
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let s = from_pairs(&[
            ("database_url", DB),
            ("token_keys", KEY),
            ("trusted_proxies", "'10.0.0.0/8, fd00::/8,127.0.0.1'"),
        ])
        .unwrap();
        let p = &s.http.trusted_proxies;
        assert_eq!(p.to_string(), "10.0.0.0/8,fd00::/8,127.0.0.1");
        assert!(p.contains("10.20.30.40".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        for bad in [
            "'10.0.0.0/33'",
            "'10.0.0.1,fd00::/129'",
            "'10.0.0.1/8'",
            "'proxy'",
        ] {
            let e = from_pairs(&[
                ("database_url", DB),
                ("token_keys", KEY),
                ("trusted_proxies", bad),
            ])
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("HUB_TRUSTED_PROXIES: \""), "{bad}: {e}");
        }
    }

    /// Settings get logged and printed in panics: secrets must not be.
    #[test]
    fn a_release_build_refuses_a_crash_point() {
        assert!(crash_at("after_send", true).unwrap().is_some());
        assert!(crash_at("", false).unwrap().is_none());
        let e = crash_at("after_send", false).unwrap_err().to_string();
        assert!(
            e.contains("HUB_PAYOUT_CRASH_AT") && e.contains("tests only"),
            "{e}"
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let key = "6b".repeat(32);
        let s = from_pairs(&[
            ("database_url", "'postgres://hub:db-pass-1@db/uptime'"),
            ("token_keys", &format!("'k1:{key}'")),
            ("redis_url", "'redis://:redis-pass-2@redis:6379/'"),
        ])
        .unwrap();
        let shown = format!("{s:?} {s:#?}");
        for secret in ["db-pass-1", "redis-pass-2", &key[..16], "postgres://"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("keyring"), "{shown}");
    }

    /// A syntax error in the TOML file gives the line and the reason, not
    /// the line's text (an unquoted key would be in it).
    #[test]
    fn a_toml_syntax_error_does_not_quote_the_file() {
        let key = "6b".repeat(32);
        let e = from_pairs(&[("database_url", DB), ("token_keys", &format!("k1:{key}"))])
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&key[..16]), "{e}");
        assert!(e.contains("line 2") && !e.contains('\n'), "{e}");
    }

    /// A malformed HUB_TOKEN_KEYS is named, its value never shown, whatever
    /// figment makes of it (an all-digit value reads as a number).
    #[test]
    fn a_bad_token_key_is_named_not_shown() {
        let digits = "12".repeat(32);
        for bad in [
            digits.clone(),
            format!("k:{digits}z"),
            format!(":{digits}"),
            format!("[{digits}]"),
            format!("{digits}.5"),
        ] {
            // What `Env` does with the variable's text.
            let value: figment::value::Value = bad.parse().unwrap();
            let e = Settings::from_figment(
                Figment::from(Serialized::defaults(Config::default()))
                    .merge(Toml::string(&format!("database_url = {DB}")))
                    .merge(Serialized::default("token_keys", value)),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("token_keys") || e.contains("TOKEN_KEYS"), "{e}");
            assert!(!e.contains(&digits[..16]), "{bad}: {e}");
        }
    }
}
