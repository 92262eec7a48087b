//! All SQL in one place.
//!
//! # Layout
//! - [`Store`]: a PostgreSQL pool with one method per query the services run.
//! - [`migrate`]: applies `migrations/` (sqlx takes an advisory lock, so any
//!   number of hubs may start at once).
//! - [`WebsiteUrl`]: a validated check target, parsed once at the edge.
//! - [`WebsiteId`], [`RoundId`], [`ValidatorId`], [`RoundStatus`]: typed ids
//!   and the round's state, encoded as their columns are.
//! - `payouts`: the ledger and payout statements, fenced by an epoch.
//! - `simulated`: the load tool's statements (simulated websites).
//! - [`schedule_phase_ms`]: where in its interval a website is checked (the
//!   hubs schedule by it; the load tool picks website ids with it).
//! - `accounts`, `owner_sites`: the owners' API (services/api): accounts,
//!   sessions, API keys, and websites scoped to their account.
//! - `access`: the operator's allow and deny rules for validators.
//! - `retention`: how long ticks (daily partitions, detached concurrently)
//!   and rounds are kept.
//!
//! Times cross this boundary as Unix milliseconds (`i64`), like the wire
//! protocol; conversion to `timestamptz` happens in SQL.

mod access;
mod accounts;
mod alerts;
mod dashboard;
mod owner_sites;
mod payouts;
mod reconcile;
mod retention;
mod rollups;
mod schedule;
mod simulated;
mod types;
mod website_url;

pub use crate::access::{
    AccessKind, AccessRule, AccessSubject, StandingCounts, ValidatorSummary, TRUST_BANDS,
};
pub use crate::accounts::{Account, ApiKey, KeyLookup, KeyScope, NewAccount, NewKey};
pub use crate::alerts::{
    AlertChannel, AlertDelivery, AlertOutcome, ChannelId, ChannelKind, ChannelPatch, ClaimedAlert,
    DeliveryId, NewChannel, NewChannelOutcome, ALERT_EVENTS,
};
pub use crate::dashboard::{
    DayCount, GlanceCheck, PublicSite, RegionSeries, SiteChange, SiteGlance, StatusPage,
    StatusPageRefused,
};
pub use crate::owner_sites::{
    IncidentRecord, IncidentState, LatestRound, OwnedSite, QuotaReached, RegionCheck,
    RegionLatency, RoundRecord, SiteSettings, SiteValidator, TickRecord, UptimeCount,
    MAX_CURSOR_MS,
};
pub use crate::payouts::{
    BatchOutcome, Earnings, NewBatch, PayoutRow, Probation, Settled, UnfinishedBatch, WaitingPayout,
};
pub use crate::reconcile::{ChainCursor, FoundBatch, FoundOutcome};
pub use crate::rollups::{KEEP_1D, KEEP_1H, KEEP_5M, LATENCY_BOUNDS_MS};
pub use crate::schedule::schedule_phase_ms;
pub use crate::simulated::{SeededWebsites, SIMULATED_BURST_FIRST_ID, SIMULATED_URL_PREFIX};
pub use crate::types::{
    AccountId, ApiKeyId, RoundId, RoundStatus, UnknownRoundStatus, ValidatorId, WebsiteId,
};
pub use crate::website_url::{check_keyword, KeywordError, UrlError, WebsiteUrl};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// See [`Store::connect`].
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[source] sqlx::Error),
    /// A tick's scheduled time has no partition of `ticks` (there is no
    /// default partition): the partitions ahead were not made
    /// ([`Store::ensure_partitions`]). Not the rows' fault, so transient:
    /// making the partition mends it.
    #[error("no tick partition for this scheduled time (see Store::ensure_partitions): {0}")]
    NoTickPartition(#[source] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A payout write carried an epoch older than the newest one: another
    /// leader has taken over. Refused by the database (see migrations).
    #[error("stale payout epoch {0}: another leader has taken over")]
    StaleEpoch(i64),
    /// A payout write found the rows in another state than it expected.
    #[error("payout state conflict: {0}")]
    Conflict(String),
    /// A website the validators would refuse to check.
    #[error(transparent)]
    Keyword(#[from] KeywordError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_missing_tick_partition(&e) {
            StoreError::NoTickPartition(e)
        } else {
            StoreError::Db(e)
        }
    }
}

/// "no partition of relation "ticks" found for row": SQLSTATE 23514 like a
/// CHECK violation, told apart by naming the table `ticks` itself and no
/// constraint (a CHECK violation names its constraint and the partition),
/// which holds whatever language the server reports in.
fn is_missing_tick_partition(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("23514")
                && d.constraint().is_none()
                && d.table() == Some("ticks")
        }
        _ => false,
    }
}

/// What a failed statement says about retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database is away or busy (connection errors, SQLSTATE classes
    /// 08, 53, 57, 58, serialization failures, deadlocks and lock
    /// timeouts), or a tick has no partition yet
    /// ([`StoreError::NoTickPartition`]): the same statement may succeed
    /// later.
    Transient,
    /// The rows themselves are refused (SQLSTATE class 22, data exception,
    /// or 23, integrity constraint): the same rows fail every time.
    Data,
    /// Anything else (a bug, a schema mismatch): retried a few times only.
    Other,
}

impl StoreError {
    /// A statement the caller gave up waiting for, as the transient error it
    /// is (the database is busy or away): for callers that put their own
    /// time limit around a store method.
    pub fn timeout() -> Self {
        StoreError::Db(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the statement did not finish in time",
        )))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Db(e) => db_error_kind(e),
            StoreError::NoTickPartition(_) => ErrorKind::Transient,
            _ => ErrorKind::Other,
        }
    }
}

fn db_error_kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Transient,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) => sqlstate_kind(code),
            None => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    }
}

/// Classifies a SQLSTATE (five characters; the first two are its class).
pub fn sqlstate_kind(code: &str) -> ErrorKind {
    match code.get(..2) {
        Some("22" | "23") => ErrorKind::Data,
        Some("08" | "53" | "57" | "58") => ErrorKind::Transient,
        // Serialization failure, deadlock, lock timeout (or NOWAIT).
        _ if matches!(code, "40001" | "40P01" | "55P03") => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// The NOTIFY channel the `websites` trigger uses.
pub const WEBSITES_CHANGED: &str = "websites_changed";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Applies pending migrations. Safe to call from many processes at once.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// A website as the scheduler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Website {
    pub id: WebsiteId,
    pub url: String,
    pub interval_secs: i32,
    pub timeout_ms: i32,
    pub expected_status_min: i16,
    pub expected_status_max: i16,
    pub keyword: Option<String>,
    pub follow_redirects: bool,
    pub enabled: bool,
    pub owner: String,
}

#[derive(Debug, Clone)]
pub struct NewWebsite {
    pub url: WebsiteUrl,
    pub interval_secs: i32,
    pub timeout_ms: i32,
    pub expected_status_min: i16,
    pub expected_status_max: i16,
    pub keyword: Option<String>,
    pub follow_redirects: bool,
    pub owner: String,
}

/// A round to open: (website, slot) and its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRound {
    pub website_id: WebsiteId,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    pub deadline_ms: i64,
}

/// A round this caller opened (no other caller opened the same slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedRound {
    pub round_id: RoundId,
    pub website_id: WebsiteId,
    pub scheduled_at_ms: i64,
}

/// A round closed by this call, with the quorum it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedRound {
    pub round_id: RoundId,
    pub website_id: WebsiteId,
    /// The hub that opened the round.
    pub opened_by: String,
    pub status: String,
    pub up: i64,
    pub down: i64,
}

/// One verified result ready to be stored.
#[derive(Debug, Clone)]
pub struct NewTick {
    pub website_id: WebsiteId,
    pub round_id: RoundId,
    pub validator_id: ValidatorId,
    pub task_id: Uuid,
    pub scheduled_at_ms: i64,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
    /// When the hub received and verified it (its clock).
    pub received_at_ms: i64,
    pub reward_lamports: i64,
    /// A protocol 2 result's evidence, as signed; `None` for protocol 1.
    pub evidence: Option<protocol::Evidence>,
}

/// A hello as [`Store::record_hello`] records it.
#[derive(Debug, Clone, Copy)]
pub struct HelloRecord<'a> {
    pub public_key: &'a str,
    pub region: &'a str,
    pub tags: &'a [String],
    pub client_version: &'a str,
    /// `None`: paid to `public_key`.
    pub payout_address: Option<&'a str>,
    /// On `HUB_TRUSTED_VALIDATORS`: never on probation.
    pub trusted: bool,
    /// New keys start on probation (`HUB_PROBATION_RESULTS` above 0); with
    /// it off, a key on probation leaves it at its next hello.
    pub probation: bool,
}

/// A validator's standing as its hello left it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub id: ValidatorId,
    pub probation: bool,
    pub trust: f32,
}

impl Standing {
    /// Its results count toward a round's decision (not on probation, trust
    /// at least [`MIN_TRUST`]).
    pub fn counts(&self) -> bool {
        !self.probation && self.trust >= MIN_TRUST
    }
}

/// Below this trust a validator's results decide nothing and it is picked
/// for extra (shadow) places only (migrations/20261202000004_trust.sql).
pub const MIN_TRUST: f32 = 0.5;

/// Why a hello's payout address cannot be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayoutAddressTaken {
    #[error("this payout address belongs to another validator (its key, or its payout address)")]
    Address,
    #[error("this key is another validator's payout address")]
    KeyIsAnAddress,
}

/// A website's latest closed round and what each validator saw.
#[derive(Debug, Clone)]
pub struct SiteStatus {
    pub website: Website,
    pub round: Option<RoundSummary>,
}

#[derive(Debug, Clone)]
pub struct RoundSummary {
    pub round_id: RoundId,
    pub status: String,
    pub scheduled_at_ms: i64,
    pub results: Vec<RegionResult>,
}

#[derive(Debug, Clone)]
pub struct RegionResult {
    pub region: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
}

macro_rules! website_columns {
    () => {
        "id, url, interval_secs, timeout_ms, expected_status_min, \
         expected_status_max, keyword, follow_redirects, enabled, owner"
    };
}

fn website_from_row(r: &sqlx::postgres::PgRow) -> Website {
    Website {
        id: r.get("id"),
        url: r.get("url"),
        interval_secs: r.get("interval_secs"),
        timeout_ms: r.get("timeout_ms"),
        expected_status_min: r.get("expected_status_min"),
        expected_status_max: r.get("expected_status_max"),
        keyword: r.get("keyword"),
        follow_redirects: r.get("follow_redirects"),
        enabled: r.get("enabled"),
        owner: r.get("owner"),
    }
}

/// Majority of at least two results, else unknown. Shared by every close.
/// Only results of validators in good standing count (not on probation,
/// trust at least 0.5: migrations/20261202000004_trust.sql), and only if
/// the validator was not on probation when the result arrived
/// (`ticks.on_probation`); the others are stored and judged, and decide
/// nothing.
const CLOSE_ROUNDS_SQL: &str = "
WITH counts AS (
    SELECT r.id,
           count(t.task_id) FILTER (WHERE t.status = 'up' AND v.counts
                                     AND t.on_probation IS NOT TRUE)   AS up,
           count(t.task_id) FILTER (WHERE t.status = 'down' AND v.counts
                                     AND t.on_probation IS NOT TRUE) AS down
      FROM rounds r
      LEFT JOIN ticks t
        ON t.round_id = r.id AND t.website_id = r.website_id AND t.scheduled_at = r.scheduled_at
      LEFT JOIN LATERAL (SELECT NOT probation AND trust >= 0.5 AS counts
                           FROM validators WHERE id = t.validator_id) v ON true
     WHERE r.id = ANY($1) AND r.status = 'open'
     GROUP BY r.id
), replaced AS (
    SELECT rid, array_agg(tid ORDER BY tid) AS tasks, array_agg(at ORDER BY tid) AS ats
      FROM UNNEST($3::int8[], $4::uuid[], $5::int8[]) AS u(rid, tid, at)
     GROUP BY rid
)
UPDATE rounds r
   SET status = CASE
           WHEN c.up + c.down >= 2 AND c.up * 2 > c.up + c.down THEN 'up'
           WHEN c.up + c.down >= 2 AND c.down * 2 > c.up + c.down THEN 'down'
           ELSE 'unknown' END,
       results_up = c.up, results_down = c.down,
       closed_at = now(), closed_by = $2,
       replaced_tasks = r.replaced_tasks || COALESCE(x.tasks, '{}'),
       replaced_at_ms = r.replaced_at_ms || COALESCE(x.ats, '{}')
  FROM counts c
  LEFT JOIN replaced x ON x.rid = c.id
 WHERE r.id = c.id AND r.status = 'open'
RETURNING r.id, r.website_id, r.hub_id, r.status, c.up, c.down";

#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects a pool of at most `max_connections`. A session left idle
    /// inside a transaction for [`IDLE_IN_TRANSACTION_TIMEOUT`] is ended by
    /// the server: every transaction here runs its statements back to back,
    /// so only a frozen process (SIGSTOP, a paused VM) does that, and its
    /// open transaction must not hold the fencing row's lock and keep a new
    /// payout leader from taking its epoch.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?
            .application_name("uptime")
            .options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Makes the daily tick partitions (UTC days) from today to `days_ahead`
    /// days ahead that do not exist yet; returns how many it made. Hubs call
    /// it at start and hourly: there is no default partition, so a tick
    /// whose day has none is refused ([`StoreError::NoTickPartition`]).
    /// Each partition is attached (SHARE UPDATE EXCLUSIVE on `ticks`): it
    /// neither waits for readers nor blocks the tick writers.
    pub async fn ensure_partitions(&self, days_ahead: i32) -> Result<i32> {
        self.ensure_daily_partitions(days_ahead).await
    }

    // ---- websites ----

    pub async fn add_website(&self, w: &NewWebsite) -> Result<Website> {
        if let Some(k) = &w.keyword {
            check_keyword(k)?;
        }
        let row = sqlx::query(concat!(
            "INSERT INTO websites (url, interval_secs, timeout_ms, expected_status_min, \
             expected_status_max, keyword, follow_redirects, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            website_columns!()
        ))
        .bind(w.url.as_str())
        .bind(w.interval_secs)
        .bind(w.timeout_ms)
        .bind(w.expected_status_min)
        .bind(w.expected_status_max)
        .bind(&w.keyword)
        .bind(w.follow_redirects)
        .bind(&w.owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(website_from_row(&row))
    }

    /// Every website not deleted (the operator's list), by id.
    pub async fn list_websites(&self) -> Result<Vec<Website>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            website_columns!(),
            " FROM websites WHERE deleted_at IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(website_from_row).collect())
    }

    pub async fn enabled_websites(&self) -> Result<Vec<Website>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            website_columns!(),
            " FROM websites WHERE enabled ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(website_from_row).collect())
    }

    /// The enabled websites among `ids` (a notification named them).
    pub async fn enabled_websites_by_ids(&self, ids: &[WebsiteId]) -> Result<Vec<Website>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            website_columns!(),
            " FROM websites WHERE enabled AND id = ANY($1) ORDER BY id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(website_from_row).collect())
    }

    /// Returns false if there is no such website (a deleted one included).
    pub async fn set_website_enabled(&self, id: WebsiteId, enabled: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE websites SET enabled = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .bind(enabled)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A listener that receives one notification per statement that changed
    /// `websites` (see migrations). It reconnects by itself after errors.
    pub async fn listen_website_changes(&self) -> Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        l.listen(WEBSITES_CHANGED).await?;
        Ok(l)
    }

    // ---- fencing ----

    /// Takes the next fencing epoch for `role` (e.g. "payouts"): strictly
    /// greater than any epoch handed out before, whatever Redis remembers.
    pub async fn next_epoch(&self, role: &str) -> Result<i64> {
        let epoch = sqlx::query_scalar(
            "INSERT INTO fencing (role, epoch) VALUES ($1, 1) \
             ON CONFLICT (role) DO UPDATE SET epoch = fencing.epoch + 1 \
             RETURNING epoch",
        )
        .bind(role)
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch)
    }

    /// The newest epoch handed out for `role` (0 if none).
    pub async fn current_epoch(&self, role: &str) -> Result<i64> {
        let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM fencing WHERE role = $1")
            .bind(role)
            .fetch_optional(&self.pool)
            .await?;
        Ok(epoch.unwrap_or(0))
    }

    // ---- validators ----

    /// Records a validator's hello (paid to its own key); returns its id.
    pub async fn upsert_validator(
        &self,
        public_key: &str,
        region: &str,
        tags: &[String],
        client_version: &str,
    ) -> Result<ValidatorId> {
        let hello = HelloRecord {
            public_key,
            region,
            tags,
            client_version,
            payout_address: None,
            trusted: false,
            probation: false,
        };
        match self.record_hello(&hello).await? {
            Ok(s) => Ok(s.id),
            Err(taken) => Err(StoreError::Conflict(taken.to_string())),
        }
    }

    /// Records a validator's hello with the account it is paid to (`None`:
    /// its own key); returns its id, or why the payout address cannot be
    /// its. An address belongs to one validator only and is never another
    /// validator's key, and a key that is another validator's payout
    /// address cannot be a validator: so every transfer found on chain
    /// names one validator (see `reconcile`). Every address a validator
    /// names is kept.
    pub async fn record_hello(
        &self,
        h: &HelloRecord<'_>,
    ) -> Result<Result<Standing, PayoutAddressTaken>> {
        let (public_key, region, tags, client_version) =
            (h.public_key, h.region, h.tags, h.client_version);
        let payout = h.payout_address.filter(|a| *a != public_key);
        // One statement, guarded; with a payout address, a second one in
        // the same transaction records the address.
        let upsert = sqlx::query(
            "INSERT INTO validators (public_key, region, tags, client_version, payout_address, \
                                     trusted, probation) \
             SELECT $1, $2, $3, $4, $5, $6, $7 AND NOT $6 \
              WHERE NOT EXISTS (SELECT 1 FROM validator_payout_addresses a \
                                  JOIN validators v ON v.id = a.validator_id \
                                 WHERE a.address = $1 AND v.public_key <> $1) \
                AND ($5::text IS NULL \
                     OR NOT (EXISTS (SELECT 1 FROM validators WHERE public_key = $5) \
                             OR EXISTS (SELECT 1 FROM validator_payout_addresses a \
                                          JOIN validators v ON v.id = a.validator_id \
                                         WHERE a.address = $5 AND v.public_key <> $1))) \
             ON CONFLICT (public_key) DO UPDATE SET region = EXCLUDED.region, \
               region_since = CASE WHEN validators.region IS DISTINCT FROM EXCLUDED.region \
                                   THEN now() ELSE validators.region_since END, \
               tags = EXCLUDED.tags, client_version = EXCLUDED.client_version, \
               payout_address = EXCLUDED.payout_address, trusted = EXCLUDED.trusted, \
               probation = validators.probation AND $7 AND NOT $6, last_seen = now() \
             RETURNING id, probation, trust",
        )
        .bind(public_key)
        .bind(region)
        .bind(tags)
        .bind(client_version)
        .bind(payout)
        .bind(h.trusted)
        .bind(h.probation);
        let Some(addr) = payout else {
            // No address: one round trip, as every hello before protocol 2.
            return match upsert.fetch_optional(&self.pool).await? {
                Some(row) => Ok(Ok(Standing {
                    id: row.get("id"),
                    probation: row.get("probation"),
                    trust: row.get("trust"),
                })),
                None => Ok(Err(PayoutAddressTaken::KeyIsAnAddress)),
            };
        };
        let mut tx = self.pool.begin().await?;
        let row = upsert.fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            let key_is_paid_to: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM validator_payout_addresses a \
                                  JOIN validators v ON v.id = a.validator_id \
                                 WHERE a.address = $1 AND v.public_key <> $1)",
            )
            .bind(public_key)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(Err(if key_is_paid_to {
                PayoutAddressTaken::KeyIsAnAddress
            } else {
                PayoutAddressTaken::Address
            }));
        };
        let standing = Standing {
            id: row.get("id"),
            probation: row.get("probation"),
            trust: row.get("trust"),
        };
        let id = standing.id;
        // Two validators naming one new address at once: the first to
        // commit keeps it, and the second is refused.
        let owner: ValidatorId = sqlx::query_scalar(
            "INSERT INTO validator_payout_addresses (address, validator_id) VALUES ($1, $2) \
             ON CONFLICT (address) DO UPDATE SET address = EXCLUDED.address \
             RETURNING validator_id",
        )
        .bind(addr)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if owner != id {
            return Ok(Err(PayoutAddressTaken::Address));
        }
        tx.commit().await?;
        Ok(Ok(standing))
    }

    /// Bumps `last_seen` for many validators in one statement.
    /// Returns their standing (settlement moves it).
    pub async fn touch_validators(&self, ids: &[ValidatorId]) -> Result<Vec<Standing>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE validators SET last_seen = now() WHERE id = ANY($1) \
             RETURNING id, probation, trust",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Standing {
                id: r.get("id"),
                probation: r.get("probation"),
                trust: r.get("trust"),
            })
            .collect())
    }

    // ---- rounds ----

    /// Inserts rounds; returns those this call created, and this hub's own
    /// rounds for those slots that are still open (with the new deadline).
    /// A slot that already has another hub's round, or a closed one, is
    /// skipped by the unique key. Taking back its own open round is how a hub
    /// recovers from an insert that committed while the connection broke: it
    /// saw an error, kept the slot due, and would otherwise leave the round
    /// open with no task until the sweep closed it `unknown`.
    pub async fn open_rounds(&self, hub_id: &str, rounds: &[NewRound]) -> Result<Vec<OpenedRound>> {
        if rounds.is_empty() {
            return Ok(Vec::new());
        }
        let website: Vec<WebsiteId> = rounds.iter().map(|r| r.website_id).collect();
        let slot: Vec<i64> = rounds.iter().map(|r| r.slot).collect();
        let sched: Vec<i64> = rounds.iter().map(|r| r.scheduled_at_ms).collect();
        let deadline: Vec<i64> = rounds.iter().map(|r| r.deadline_ms).collect();
        let rows = sqlx::query(
            "INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id) \
             SELECT w, s, to_timestamp(a / 1000.0), to_timestamp(d / 1000.0), $5 \
               FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS u(w, s, a, d) \
             ON CONFLICT (website_id, scheduled_at) DO UPDATE SET deadline = EXCLUDED.deadline \
               WHERE rounds.hub_id = EXCLUDED.hub_id AND rounds.status = 'open' \
             RETURNING id, website_id, \
               (extract(epoch FROM scheduled_at) * 1000)::int8 AS scheduled_at_ms",
        )
        .bind(&website)
        .bind(&slot)
        .bind(&sched)
        .bind(&deadline)
        .bind(hub_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OpenedRound {
                round_id: r.get("id"),
                website_id: r.get("website_id"),
                scheduled_at_ms: r.get("scheduled_at_ms"),
            })
            .collect())
    }

    /// Deletes rounds that were opened but never sent a task, so their slot
    /// can be opened again. Only rounds still open are touched.
    pub async fn delete_open_rounds(&self, round_ids: &[RoundId]) -> Result<u64> {
        let r = sqlx::query("DELETE FROM rounds WHERE id = ANY($1) AND status = 'open'")
            .bind(round_ids)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Deletes this hub's rounds at these `(website_id, scheduled_at_ms)`
    /// slots that are still open and have no tick: rounds an insert may have
    /// created while its connection broke, whose ids the hub never learnt
    /// (so no task went out for them). Returns how many it deleted.
    pub async fn delete_unstaffed_rounds(
        &self,
        hub_id: &str,
        slots: &[(WebsiteId, i64)],
    ) -> Result<u64> {
        if slots.is_empty() {
            return Ok(0);
        }
        let website: Vec<WebsiteId> = slots.iter().map(|s| s.0).collect();
        let sched: Vec<i64> = slots.iter().map(|s| s.1).collect();
        let r = sqlx::query(
            "DELETE FROM rounds r \
              USING UNNEST($2::int8[], $3::int8[]) AS u(w, a) \
              WHERE r.website_id = u.w AND r.scheduled_at = to_timestamp(u.a / 1000.0) \
                AND r.hub_id = $1 AND r.status = 'open' \
                AND NOT EXISTS (SELECT 1 FROM ticks t WHERE t.round_id = r.id \
                                   AND t.website_id = r.website_id \
                                   AND t.scheduled_at = r.scheduled_at)",
        )
        .bind(hub_id)
        .bind(&website)
        .bind(&sched)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Closes open rounds from the ticks in the database. Rounds already
    /// closed (by anyone) are skipped, so closing is idempotent. `replaced`
    /// lists `(round_id, task_id, replaced_at_ms)` of tasks the owner
    /// replaced: their results, if received after that, earn nothing.
    pub async fn close_rounds(
        &self,
        round_ids: &[RoundId],
        closed_by: &str,
        replaced: &[(RoundId, Uuid, i64)],
    ) -> Result<Vec<ClosedRound>> {
        if round_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rids: Vec<RoundId> = replaced.iter().map(|r| r.0).collect();
        let tids: Vec<Uuid> = replaced.iter().map(|r| r.1).collect();
        let ats: Vec<i64> = replaced.iter().map(|r| r.2).collect();
        let rows = sqlx::query(CLOSE_ROUNDS_SQL)
            .bind(round_ids)
            .bind(closed_by)
            .bind(&rids)
            .bind(&tids)
            .bind(&ats)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ClosedRound {
                round_id: r.get("id"),
                website_id: r.get("website_id"),
                opened_by: r.get("hub_id"),
                status: r.get("status"),
                up: r.get("up"),
                down: r.get("down"),
            })
            .collect())
    }

    /// Moves each website's incident state over its decided rounds that
    /// follow what was applied before, in slot order (see the migration's
    /// `apply_round_decisions`): `open_after` consecutive down rounds open
    /// an incident, `resolve_after` up rounds resolve it, `unknown` counts
    /// for neither. Safe to call from any number of hubs at once: each
    /// round is applied once. Returns (incidents opened, resolved).
    pub async fn apply_round_decisions(
        &self,
        websites: &[WebsiteId],
        open_after: i32,
        resolve_after: i32,
    ) -> Result<(i32, i32)> {
        if websites.is_empty() {
            return Ok((0, 0));
        }
        let row = sqlx::query("SELECT opened, resolved FROM apply_round_decisions($1, $2, $3)")
            .bind(websites)
            .bind(open_after)
            .bind(resolve_after)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get("opened"), row.get("resolved")))
    }

    /// Closes rounds whose deadline passed more than `grace` ago, whoever
    /// opened them: a round never stays open because its hub died.
    pub async fn close_overdue_rounds(
        &self,
        grace: Duration,
        limit: i64,
        closed_by: &str,
    ) -> Result<Vec<ClosedRound>> {
        let ids: Vec<RoundId> = sqlx::query_scalar(
            "SELECT id FROM rounds WHERE status = 'open' \
               AND deadline < now() - make_interval(secs => $1) \
             ORDER BY deadline LIMIT $2",
        )
        .bind(grace.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        // The owner's knowledge of replaced tasks died with it.
        self.close_rounds(&ids, closed_by, &[]).await
    }

    // ---- ticks ----

    /// Writes a batch of ticks in one statement. Returns the `(task_id,
    /// validator_id)` pairs that were new; the rest were already stored
    /// (the primary key is the duplicate guard).
    pub async fn insert_ticks(
        &self,
        hub_id: &str,
        ticks: &[NewTick],
    ) -> Result<Vec<(Uuid, ValidatorId)>> {
        if ticks.is_empty() {
            return Ok(Vec::new());
        }
        let n = ticks.len();
        let mut website = Vec::with_capacity(n);
        let mut round = Vec::with_capacity(n);
        let mut validator = Vec::with_capacity(n);
        let mut task = Vec::with_capacity(n);
        let mut sched = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut http = Vec::with_capacity(n);
        let mut latency = Vec::with_capacity(n);
        let mut error = Vec::with_capacity(n);
        let mut checked = Vec::with_capacity(n);
        let mut reward = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        let mut digest: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut hashed: Vec<Option<i32>> = Vec::with_capacity(n);
        let mut remote: Vec<Option<String>> = Vec::with_capacity(n);
        for t in ticks {
            let e = t.evidence.as_ref();
            digest.push(e.and_then(|e| e.body_sha256.as_ref()).map(|d| &d.0[..]));
            hashed.push(e.map(|e| e.body_bytes as i32));
            remote.push(e.and_then(|e| e.remote_ip).map(|ip| ip.to_string()));
            website.push(t.website_id);
            round.push(t.round_id);
            validator.push(t.validator_id);
            task.push(t.task_id);
            sched.push(t.scheduled_at_ms);
            status.push(if t.up { "up" } else { "down" });
            http.push(t.http_status);
            latency.push(t.latency_ms);
            error.push(t.error.as_deref());
            checked.push(t.checked_at_ms);
            reward.push(t.reward_lamports);
            received.push(t.received_at_ms);
        }
        // `on_probation`: the validator's probation as the result is stored,
        // fixed on the tick (migrations/20261202000005).
        let rows = sqlx::query(
            "INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, \
               http_status, latency_ms, error, checked_at, reward_lamports, hub_id, received_at, \
               evidence_sha256, evidence_bytes, remote_ip, on_probation) \
             SELECT w, r, v, t, to_timestamp(s / 1000.0), st, h, l, e, to_timestamp(c / 1000.0), \
                    rw, $12, to_timestamp(ra / 1000.0), ed, eb, ei::inet, vv.probation \
               FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::uuid[], $5::int8[], \
                           $6::text[], $7::int2[], $8::int4[], $9::text[], $10::int8[], \
                           $11::int8[], $13::int8[], $14::bytea[], $15::int4[], $16::text[]) \
                    AS u(w, r, v, t, s, st, h, l, e, c, rw, ra, ed, eb, ei) \
               LEFT JOIN validators vv ON vv.id = u.v \
             ON CONFLICT DO NOTHING \
             RETURNING task_id, validator_id",
        )
        .bind(&website)
        .bind(&round)
        .bind(&validator)
        .bind(&task)
        .bind(&sched)
        .bind(&status)
        .bind(&http)
        .bind(&latency)
        .bind(&error)
        .bind(&checked)
        .bind(&reward)
        .bind(hub_id)
        .bind(&received)
        .bind(&digest)
        .bind(&hashed)
        .bind(&remote)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("task_id"), r.get("validator_id")))
            .collect())
    }

    /// Whether the tick of `(task, validator)` is stored (`scheduled_at_ms`
    /// picks its partition).
    pub async fn tick_exists(
        &self,
        task_id: Uuid,
        validator_id: ValidatorId,
        scheduled_at_ms: i64,
    ) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ticks WHERE task_id = $1 AND validator_id = $2 \
               AND scheduled_at = to_timestamp($3 / 1000.0))",
        )
        .bind(task_id)
        .bind(validator_id)
        .bind(scheduled_at_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- status ----

    /// Every website with its latest closed round and per-validator results.
    pub async fn site_statuses(&self) -> Result<Vec<SiteStatus>> {
        let sites = self.list_websites().await?;
        let rows = sqlx::query(
            "SELECT w.id AS website_id, r.id AS round_id, r.status, \
                    (extract(epoch FROM r.scheduled_at) * 1000)::int8 AS sched_ms, \
                    v.region, t.status = 'up' AS up, t.http_status, t.latency_ms, t.error, \
                    (extract(epoch FROM t.checked_at) * 1000)::int8 AS checked_ms \
               FROM websites w \
               JOIN LATERAL (SELECT id, status, scheduled_at FROM rounds \
                              WHERE website_id = w.id AND status <> 'open' \
                              ORDER BY scheduled_at DESC LIMIT 1) r ON true \
               LEFT JOIN ticks t ON t.round_id = r.id AND t.website_id = w.id \
                                AND t.scheduled_at = r.scheduled_at \
               LEFT JOIN validators v ON v.id = t.validator_id \
              ORDER BY w.id, v.region",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<SiteStatus> = sites
            .into_iter()
            .map(|website| SiteStatus {
                website,
                round: None,
            })
            .collect();
        for row in rows {
            let wid: WebsiteId = row.get("website_id");
            let Some(site) = out.iter_mut().find(|s| s.website.id == wid) else {
                continue;
            };
            let round = site.round.get_or_insert_with(|| RoundSummary {
                round_id: row.get("round_id"),
                status: row.get("status"),
                scheduled_at_ms: row.get("sched_ms"),
                results: Vec::new(),
            });
            if let Some(region) = row.get::<Option<String>, _>("region") {
                round.results.push(RegionResult {
                    region,
                    up: row.get("up"),
                    http_status: row.get("http_status"),
                    latency_ms: row.get("latency_ms"),
                    error: row.get("error"),
                    checked_at_ms: row.get("checked_ms"),
                });
            }
        }
        Ok(out)
    }

    // ---- cheap attacks (issue 10, section 4) ----

    /// A second, small pool to the same database for read endpoints, so
    /// they can never take the connections the tick writers need. Every
    /// statement on it is cut off after `statement_timeout`.
    pub async fn connect_reader(
        url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?
            .application_name("uptime-read")
            .options([(
                "statement_timeout",
                statement_timeout.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(statement_timeout)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }

    /// Deletes up to `limit` validator rows whose key was not seen for
    /// `idle` and never had a result stored (no tick, ledger row or payout
    /// refers to it); marks the ones found in use `retained` so they are
    /// never examined again. Returns how many were deleted. A validator
    /// still connected is seen every 30 s, so it never qualifies; a key that
    /// comes back later gets a new row (and id) at its next hello.
    pub async fn forget_unused_validators(&self, idle: Duration, limit: i64) -> Result<u64> {
        let gone: i64 = sqlx::query_scalar(
            "WITH cand AS (
                 SELECT id FROM validators
                  WHERE NOT retained AND last_seen < now() - make_interval(secs => $1)
                  ORDER BY last_seen
                  LIMIT $2
                    FOR UPDATE SKIP LOCKED
             ), checked AS (
                 SELECT c.id,
                        EXISTS (SELECT 1 FROM ticks t WHERE t.validator_id = c.id)
                        OR EXISTS (SELECT 1 FROM validator_ledger l WHERE l.validator_id = c.id)
                        OR EXISTS (SELECT 1 FROM payouts p WHERE p.validator_id = c.id) AS used
                   FROM cand c
             ), kept AS (
                 UPDATE validators v SET retained = true
                   FROM checked c WHERE v.id = c.id AND c.used
                 RETURNING 1
             ), gone AS (
                 DELETE FROM validators v USING checked c
                  WHERE v.id = c.id AND NOT c.used
                 RETURNING 1
             )
             -- `kept` runs to completion unreferenced, as every data-modifying WITH does.
             SELECT count(*) FROM gone",
        )
        .bind(idle.as_secs_f64())
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        Ok(gone as u64)
    }

    /// Rewrites every validator's `settling_lamports` in
    /// `validator_earnings_summary`: the rewards of its stored ticks whose
    /// rounds (open, or closed and not settled) were scheduled in the last
    /// 7 days. One aggregate over the unsettled rounds, for the payout
    /// leader after it settles; with payouts running those are only the
    /// last few minutes of rounds. Returns the rows written.
    pub async fn refresh_earnings_summary(&self) -> Result<i64> {
        let n: i64 = sqlx::query_scalar(
            "WITH unsettled AS (
                 SELECT id, website_id, scheduled_at FROM rounds
                  WHERE status = 'open' AND scheduled_at > now() - interval '7 days'
                 UNION ALL
                 SELECT id, website_id, scheduled_at FROM rounds
                  WHERE settled_at IS NULL AND status <> 'open'
                    AND scheduled_at > now() - interval '7 days'
             ), sums AS (
                 SELECT t.validator_id, sum(t.reward_lamports)::int8 AS lamports
                   FROM unsettled r
                   JOIN ticks t ON t.round_id = r.id AND t.website_id = r.website_id
                               AND t.scheduled_at = r.scheduled_at
                  GROUP BY t.validator_id
             ), upserted AS (
                 INSERT INTO validator_earnings_summary AS s
                        (validator_id, settling_lamports, refreshed_at)
                 SELECT validator_id, lamports, now() FROM sums ORDER BY validator_id
                 ON CONFLICT (validator_id) DO UPDATE
                    SET settling_lamports = EXCLUDED.settling_lamports, refreshed_at = now()
                 RETURNING 1
             ), cleared AS (
                 UPDATE validator_earnings_summary s
                    SET settling_lamports = 0, refreshed_at = now()
                  WHERE s.settling_lamports <> 0
                    AND NOT EXISTS (SELECT 1 FROM sums WHERE sums.validator_id = s.validator_id)
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM cleared)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// What a validator earned and was paid, for the HTTP endpoint; `None`
    /// if no validator has this key. Bounded per request: primary-key
    /// lookups of the validator, its ledger row and its earnings summary
    /// (`settling`, kept by [`Store::refresh_earnings_summary`]), and index
    /// scans of its own payouts.
    pub async fn earnings_summary(&self, public_key: &str) -> Result<Option<Earnings>> {
        let Some(r) = sqlx::query(
            "SELECT v.id, v.public_key,
                    COALESCE(l.earned_lamports, 0) AS earned,
                    COALESCE(l.claimed_lamports, 0) AS claimed,
                    COALESCE(l.earning_ticks, 0) AS earning_ticks,
                    COALESCE(l.agreed, 0) AS agreed,
                    COALESCE(l.disagreed, 0) AS disagreed,
                    COALESCE(s.settling_lamports, 0) AS settling,
                    p.paid, p.pending, p.failed
               FROM validators v
               LEFT JOIN validator_ledger l ON l.validator_id = v.id
               LEFT JOIN validator_earnings_summary s ON s.validator_id = v.id
               CROSS JOIN LATERAL (
                   SELECT COALESCE(sum(lamports) FILTER (WHERE state = 'paid'), 0)::int8 AS paid,
                          COALESCE(sum(lamports) FILTER (
                              WHERE state IN ('claimed', 'insufficient_funds', 'batched')), 0)::int8
                              AS pending,
                          COALESCE(sum(lamports) FILTER (WHERE state = 'failed'), 0)::int8 AS failed
                     FROM payouts WHERE validator_id = v.id) p
              WHERE v.public_key = $1",
        )
        .bind(public_key)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        self.earnings_document(&r).await.map(Some)
    }
}
