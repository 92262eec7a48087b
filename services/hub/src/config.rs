//! Typed settings: defaults, then an optional TOML file, then `HUB_*`
//! environment variables (and `DATABASE_URL`). Validated once at start; a bad
//! value stops the hub with a message naming the variable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use protocol::limits;
use protocol::Keyring;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL URL (`HUB_DATABASE_URL` or `DATABASE_URL`).
    pub database_url: String,
    pub db_max_connections: u32,
    /// Where `/ws`, `/healthz`, `/readyz` and `/metrics` listen.
    pub listen: SocketAddr,
    /// This replica's id; unique in the cluster (`HUB_ID`).
    pub hub_id: String,
    /// Task-token keys, `kid:hex[,kid:hex]`; the first signs. Same on every hub.
    pub token_keys: String,
    /// Validators per round (K).
    pub validators_per_round: usize,
    /// Floor for a website's interval, seconds.
    pub min_interval_secs: u32,
    /// Time a validator has to answer a task, ms (capped at the interval).
    pub task_deadline_ms: u64,
    /// How often the scheduler looks for due websites and expired tasks, ms.
    pub scheduler_tick_ms: u64,
    /// How often websites are re-read from PostgreSQL, ms.
    pub reload_interval_ms: u64,
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
    /// On SIGTERM, how long sessions may take to hand in their results, ms.
    pub drain_timeout_ms: u64,
    /// Redis for cluster coordination; empty runs this hub alone.
    pub redis_url: String,
    /// Prepended to every Redis key and channel (one per deployment).
    pub redis_prefix: String,
    /// How often this hub announces itself; it counts as gone after two
    /// missed announcements.
    pub announce_interval_ms: u64,
    /// Address other hubs and operators see; defaults to `listen`.
    pub advertise_address: String,
    /// Load balancers whose `X-Forwarded-For` is believed, comma-separated
    /// IP addresses. From anyone else the header is ignored.
    pub trusted_proxies: String,
    /// The payout leader's lease; renewed every third of it.
    pub leader_lease_ms: u64,
    /// Treasury keypair file (Solana CLI JSON), mounted as a secret. Empty
    /// disables payouts on this hub.
    pub payout_treasury_keypair: String,
    /// Solana JSON-RPC endpoint payouts use.
    pub payout_rpc_url: String,
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
    /// (`after_claim`, `after_sign`, `after_send`, `before_confirm`).
    pub payout_crash_at: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            db_max_connections: 16,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            hub_id: String::new(),
            token_keys: String::new(),
            validators_per_round: 3,
            min_interval_secs: 10,
            task_deadline_ms: 30_000,
            scheduler_tick_ms: 200,
            reload_interval_ms: 5_000,
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
            drain_timeout_ms: 10_000,
            redis_url: String::new(),
            redis_prefix: "uptime:".into(),
            announce_interval_ms: 2_000,
            advertise_address: String::new(),
            trusted_proxies: String::new(),
            leader_lease_ms: 10_000,
            payout_treasury_keypair: String::new(),
            payout_rpc_url: String::new(),
            payout_interval_ms: 60_000,
            payout_min_lamports: MIN_PAYOUT_LAMPORTS,
            payout_max_transfers: 10,
            payout_max_attempts: 5,
            payout_settle_delay_ms: 30_000,
            payout_confirm_timeout_ms: 15_000,
            payout_commitment: "finalized".into(),
            payout_crash_at: String::new(),
        }
    }
}

/// Rent-exempt minimum of a new, empty system account: a smaller transfer
/// to an account that does not exist yet would fail the whole transaction.
pub const MIN_PAYOUT_LAMPORTS: i64 = 890_880;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `#[source]`: figment's message already says everything, and a
    /// source would print it twice in `{:#}`.
    #[error("configuration: {0}")]
    Figment(Box<figment::Error>),
    #[error("{var}: {problem}")]
    Invalid { var: &'static str, problem: String },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        Self::Figment(e)
    }
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        problem: problem.into(),
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
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
        Self::from_figment(fig)
    }

    /// Extracts and validates settings from any provider stack (tests inject
    /// a map instead of touching the process environment).
    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let mut s: Settings = fig.extract().map_err(Box::new)?;
        if s.hub_id.is_empty() {
            s.hub_id = format!("hub-{:06x}", fastrand::u32(..0x100_0000));
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.is_empty() {
            return Err(invalid("HUB_DATABASE_URL", "must be set (or DATABASE_URL)"));
        }
        self.keyring()?;
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
        self.trusted_proxies()?;
        if !(300..=600_000).contains(&self.leader_lease_ms) {
            return Err(invalid("HUB_LEADER_LEASE_MS", "must be 300..=600000"));
        }
        self.validate_payouts()?;
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
        if !self.payout_treasury_keypair.is_empty() {
            let ok = url::Url::parse(&self.payout_rpc_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(invalid(
                    "HUB_PAYOUT_RPC_URL",
                    "must be an http:// or https:// URL when HUB_PAYOUT_TREASURY_KEYPAIR is set",
                ));
            }
        }
        Ok(())
    }

    /// Payouts run on this hub (when it is the leader) only with a treasury.
    pub fn payouts_enabled(&self) -> bool {
        !self.payout_treasury_keypair.is_empty()
    }

    pub fn payout_commitment(
        &self,
    ) -> Result<solana_commitment_config::CommitmentConfig, ConfigError> {
        match self.payout_commitment.as_str() {
            "finalized" => Ok(solana_commitment_config::CommitmentConfig::finalized()),
            "confirmed" => Ok(solana_commitment_config::CommitmentConfig::confirmed()),
            _ => Err(invalid(
                "HUB_PAYOUT_COMMITMENT",
                "must be finalized or confirmed",
            )),
        }
    }

    pub fn payout_crash_at(&self) -> Result<Option<crate::payouts::CrashPoint>, ConfigError> {
        if self.payout_crash_at.is_empty() {
            return Ok(None);
        }
        self.payout_crash_at
            .parse()
            .map(Some)
            .map_err(|e: String| invalid("HUB_PAYOUT_CRASH_AT", e))
    }

    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        Keyring::parse(&self.token_keys).map_err(|e| invalid("HUB_TOKEN_KEYS", e.to_string()))
    }

    pub fn trusted_proxies(&self) -> Result<Vec<std::net::IpAddr>, ConfigError> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse().map_err(|_| {
                    invalid("HUB_TRUSTED_PROXIES", format!("{p:?} is not an IP address"))
                })
            })
            .collect()
    }

    pub fn task_deadline(&self) -> Duration {
        Duration::from_millis(self.task_deadline_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn limits(&self) -> protocol::Limits {
        protocol::Limits {
            max_frame_bytes: self.max_frame_bytes as u32,
            max_messages_per_sec: self.max_messages_per_sec,
            message_burst: self.message_burst,
            auth_timeout_ms: self.auth_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are TOML literals, as in a config file.
    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let toml: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        Settings::from_figment(
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(&toml)),
        )
    }

    const KEY: &str = "'k1:0000000000000000000000000000000000000000000000000000000000000000'";
    const DB: &str = "'postgres://x/y'";

    #[test]
    fn valid_settings_load_and_get_a_hub_id() {
        let s = from_pairs(&[("database_url", DB), ("token_keys", KEY)]).unwrap();
        assert!(s.hub_id.starts_with("hub-"));
        assert_eq!(s.validators_per_round, 3);
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
        let e = from_pairs(&[("listen", "'not-an-address'")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }
}
