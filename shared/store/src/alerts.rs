//! Alerts: each account's channels, and the outbox their deliveries go
//! through (migrations/*_alerts.sql).
//!
//! Rows are written by `apply_round_decisions` in the transaction that
//! changes a website's state. A worker claims due rows with a lease
//! ([`Store::claim_alerts`]: `FOR UPDATE SKIP LOCKED`, committed before
//! anything is sent), delivers with no transaction open, and records the
//! outcome with [`Store::finish_alert`], which only the holder of the
//! claim can do. A row of one (channel, subject) is claimable only once
//! every earlier row of that pair is delivered or dead.

use std::fmt;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::{AccountId, Result, Store, WebsiteId};

/// `alert_channels.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct ChannelId(pub i64);

/// `alert_outbox.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct DeliveryId(pub i64);

/// Where alerts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A JSON POST signed with the channel's secret.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord incoming webhook.
    Discord,
    /// Email over the operator's SMTP server.
    Email,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [Self::Webhook, Self::Slack, Self::Discord, Self::Email];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The events a channel may subscribe to (the column's CHECK lists the
/// same).
pub const ALERT_EVENTS: [&str; 6] = [
    "incident_opened",
    "incident_resolved",
    "degradation_opened",
    "degradation_ended",
    "latency_high",
    "latency_normal",
];

/// A channel as its owner sees it (the webhook secret is not part of it).
/// `Debug` leaves the target out: a Slack or Discord URL is a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct AlertChannel {
    pub id: ChannelId,
    pub kind: ChannelKind,
    pub name: String,
    pub target: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at_ms: i64,
}

impl fmt::Debug for AlertChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertChannel")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// What creating a channel writes.
pub struct NewChannel<'a> {
    pub kind: ChannelKind,
    pub name: &'a str,
    pub target: &'a str,
    /// Webhooks only.
    pub secret: Option<&'a str>,
    pub events: &'a [String],
}

/// What [`Store::create_alert_channel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewChannelOutcome {
    Created(AlertChannel),
    /// The account has its limit of channels.
    TooMany,
}

/// A change to a channel: `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A claimed delivery: what to send, where, and the claim's token.
#[derive(Clone)]
pub struct ClaimedAlert {
    pub id: DeliveryId,
    pub claim_token: Uuid,
    pub channel_id: ChannelId,
    pub kind: ChannelKind,
    pub target: String,
    /// The webhook's signing key.
    pub secret: Option<String>,
    pub event: String,
    pub idempotency_key: Uuid,
    /// The JSON the transition wrote.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

impl fmt::Debug for ClaimedAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedAlert")
            .field("id", &self.id)
            .field("channel_id", &self.channel_id)
            .field("kind", &self.kind)
            .field("event", &self.event)
            .field("idempotency_key", &self.idempotency_key)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOutcome {
    Delivered {
        status: Option<i32>,
    },
    /// Try again after `after`.
    Retry {
        after: Duration,
        error: String,
        status: Option<i32>,
    },
    /// Give up: the row stays, `dead`, for its owner to see.
    Dead {
        error: String,
        status: Option<i32>,
    },
}

/// One row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertDelivery {
    pub id: DeliveryId,
    pub channel_id: ChannelId,
    pub website_id: Option<WebsiteId>,
    pub event: String,
    pub idempotency_key: Uuid,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

macro_rules! channel_columns {
    () => {
        "id, kind, name, target, events, enabled, \
         (extract(epoch FROM created_at) * 1000)::int8 AS created_ms"
    };
}

fn channel_from_row(r: &sqlx::postgres::PgRow) -> AlertChannel {
    AlertChannel {
        id: r.get("id"),
        // The column's CHECK allows only the four kinds.
        kind: ChannelKind::parse(r.get("kind")).unwrap_or(ChannelKind::Webhook),
        name: r.get("name"),
        target: r.get("target"),
        events: r.get("events"),
        enabled: r.get("enabled"),
        created_at_ms: r.get("created_ms"),
    }
}

macro_rules! delivery_columns {
    () => {
        "id, channel_id, website_id, event, idempotency_key, state, attempts, last_error, \
         last_status, (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, \
         CASE WHEN state = 'pending' THEN (extract(epoch FROM next_attempt_at) * 1000)::int8 \
         END AS next_ms, (extract(epoch FROM finished_at) * 1000)::int8 AS finished_ms"
    };
}

fn delivery_from_row(r: &sqlx::postgres::PgRow) -> AlertDelivery {
    AlertDelivery {
        id: r.get("id"),
        channel_id: r.get("channel_id"),
        website_id: r.get("website_id"),
        event: r.get("event"),
        idempotency_key: r.get("idempotency_key"),
        state: r.get("state"),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
        last_status: r.get("last_status"),
        created_at_ms: r.get("created_ms"),
        next_attempt_at_ms: r.get("next_ms"),
        finished_at_ms: r.get("finished_ms"),
    }
}

fn claimed_from_row(r: &sqlx::postgres::PgRow) -> ClaimedAlert {
    ClaimedAlert {
        id: r.get("id"),
        claim_token: r.get("claim_token"),
        channel_id: r.get("channel_id"),
        kind: ChannelKind::parse(r.get("kind")).unwrap_or(ChannelKind::Webhook),
        target: r.get("target"),
        secret: r.get("secret"),
        event: r.get("event"),
        idempotency_key: r.get("idempotency_key"),
        payload: r.get("payload"),
        attempts: r.get("attempts"),
    }
}

/// Error text kept per delivery, characters.
const MAX_ERROR_CHARS: usize = 500;

fn clip(s: &str) -> String {
    s.chars().take(MAX_ERROR_CHARS).collect()
}

impl Store {
    /// Creates a channel unless the account holds `max` already (counted
    /// with the account row locked, so concurrent creates cannot pass the
    /// limit together).
    pub async fn create_alert_channel(
        &self,
        account: AccountId,
        c: &NewChannel<'_>,
        max: i64,
    ) -> Result<NewChannelOutcome> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM alert_channels WHERE account_id = $1")
                .bind(account)
                .fetch_one(&mut *tx)
                .await?;
        if n >= max {
            return Ok(NewChannelOutcome::TooMany);
        }
        let row = sqlx::query(concat!(
            "INSERT INTO alert_channels (account_id, kind, name, target, secret, events)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            channel_columns!(),
            ""
        ))
        .bind(account)
        .bind(c.kind.as_str())
        .bind(c.name)
        .bind(c.target)
        .bind(c.secret)
        .bind(c.events)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(NewChannelOutcome::Created(channel_from_row(&row)))
    }

    /// The account's channels, oldest first.
    pub async fn alert_channels(&self, account: AccountId) -> Result<Vec<AlertChannel>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM alert_channels WHERE account_id = $1 ORDER BY id LIMIT 1000"
        ))
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(channel_from_row).collect())
    }

    pub async fn alert_channel(
        &self,
        account: AccountId,
        id: ChannelId,
    ) -> Result<Option<AlertChannel>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM alert_channels WHERE id = $1 AND account_id = $2"
        ))
        .bind(id)
        .bind(account)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(channel_from_row))
    }

    /// Changes what the patch names; `None` if the account has no such
    /// channel.
    pub async fn update_alert_channel(
        &self,
        account: AccountId,
        id: ChannelId,
        p: &ChannelPatch,
    ) -> Result<Option<AlertChannel>> {
        let row = sqlx::query(concat!(
            "UPDATE alert_channels
                SET name = COALESCE($3, name), events = COALESCE($4, events),
                    enabled = COALESCE($5, enabled)
              WHERE id = $1 AND account_id = $2 RETURNING ",
            channel_columns!(),
            ""
        ))
        .bind(id)
        .bind(account)
        .bind(p.name.as_deref())
        .bind(p.events.as_deref())
        .bind(p.enabled)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(channel_from_row))
    }

    /// Deletes a channel and its deliveries (pending ones are not sent).
    pub async fn delete_alert_channel(&self, account: AccountId, id: ChannelId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM alert_channels WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Claims up to `limit` due deliveries for `lease`: each gets a new
    /// claim token and one more attempt. The claim commits before this
    /// returns, so no row lock is held while a request is in flight; a
    /// worker that dies leaves its rows to the next claim after the lease.
    pub async fn claim_alerts(&self, lease: Duration, limit: i64) -> Result<Vec<ClaimedAlert>> {
        let rows = sqlx::query(
            "WITH c AS (
                 SELECT o.id FROM alert_outbox o
                  WHERE o.state = 'pending' AND o.event <> 'test' AND o.next_attempt_at <= now()
                    AND (o.claimed_until IS NULL OR o.claimed_until < now())
                    AND NOT EXISTS (SELECT 1 FROM alert_outbox p
                                     WHERE p.channel_id = o.channel_id AND p.subject = o.subject
                                       AND p.state = 'pending' AND p.id < o.id)
                  ORDER BY o.next_attempt_at, o.id
                  LIMIT $2
                    FOR UPDATE OF o SKIP LOCKED)
             UPDATE alert_outbox o
                SET claimed_until = now() + make_interval(secs => $1),
                    claim_token = gen_random_uuid(), attempts = o.attempts + 1
               FROM c, alert_channels ch
              WHERE o.id = c.id AND ch.id = o.channel_id
             RETURNING o.id, o.claim_token, o.channel_id, ch.kind, ch.target, ch.secret,
                       o.event, o.idempotency_key, o.payload::text AS payload, o.attempts",
        )
        .bind(lease.as_secs_f64())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<ClaimedAlert> = rows.iter().map(claimed_from_row).collect();
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    /// Records how a claimed delivery ended. `false` when the claim was
    /// lost (the lease ran out and another worker claimed the row): the
    /// outcome is dropped and the other worker's counts.
    pub async fn finish_alert(
        &self,
        id: DeliveryId,
        claim_token: Uuid,
        outcome: &AlertOutcome,
    ) -> Result<bool> {
        let (state, after, error, status) = match outcome {
            AlertOutcome::Delivered { status } => ("delivered", None, None, *status),
            AlertOutcome::Retry {
                after,
                error,
                status,
            } => (
                "pending",
                Some(after.as_secs_f64()),
                Some(clip(error)),
                *status,
            ),
            AlertOutcome::Dead { error, status } => ("dead", None, Some(clip(error)), *status),
        };
        let r = sqlx::query(
            "UPDATE alert_outbox
                SET state = $3,
                    next_attempt_at = CASE WHEN $3 = 'pending'
                                           THEN now() + make_interval(secs => $4)
                                           ELSE next_attempt_at END,
                    finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
                    claimed_until = NULL, claim_token = NULL,
                    last_error = $5, last_status = $6
              WHERE id = $1 AND claim_token = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(claim_token)
        .bind(state)
        .bind(after)
        .bind(error)
        .bind(status)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Writes a `test` delivery for one of the account's channels, already
    /// claimed by the caller (who sends it at once and finishes it);
    /// `None` if the account has no such channel.
    pub async fn claim_test_alert(
        &self,
        account: AccountId,
        channel: ChannelId,
        payload: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedAlert>> {
        let row = sqlx::query(
            "WITH ins AS (
                 INSERT INTO alert_outbox (channel_id, account_id, event, subject, payload,
                                           attempts, claimed_until, claim_token)
                 SELECT c.id, c.account_id, 'test', 'test:' || gen_random_uuid(),
                        $3::jsonb, 1, now() + make_interval(secs => $4), gen_random_uuid()
                   FROM alert_channels c WHERE c.id = $1 AND c.account_id = $2
                 RETURNING *)
             SELECT ins.id, ins.claim_token, ins.channel_id, ch.kind, ch.target, ch.secret,
                    ins.event, ins.idempotency_key, ins.payload::text AS payload, ins.attempts
               FROM ins JOIN alert_channels ch ON ch.id = ins.channel_id",
        )
        .bind(channel)
        .bind(account)
        .bind(payload)
        .bind(lease.as_secs_f64())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(claimed_from_row))
    }

    /// The account's deliveries with ids below `before`, newest first,
    /// optionally of one channel.
    pub async fn alert_deliveries(
        &self,
        account: AccountId,
        channel: Option<ChannelId>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AlertDelivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM alert_outbox
              WHERE account_id = $1 AND ($2::int8 IS NULL OR channel_id = $2) AND id < $3
              ORDER BY id DESC LIMIT $4"
        ))
        .bind(account)
        .bind(channel)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(delivery_from_row).collect())
    }

    /// How long until the next pending delivery is due (zero if one is due
    /// now); `None` when nothing is pending. A row waiting for an earlier
    /// one of its subject counts through that one.
    pub async fn next_alert_due(&self) -> Result<Option<Duration>> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT CASE WHEN m IS NOT NULL
                         THEN greatest(extract(epoch FROM m - now()), 0)::float8 END
               FROM (SELECT min(greatest(next_attempt_at, COALESCE(claimed_until, next_attempt_at))) AS m
                       FROM alert_outbox o
                      WHERE state = 'pending' AND event <> 'test'
                        AND NOT EXISTS (SELECT 1 FROM alert_outbox p
                                         WHERE p.channel_id = o.channel_id AND p.subject = o.subject
                                           AND p.state = 'pending' AND p.id < o.id)) AS due",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// Deletes up to `limit` delivered rows finished more than
    /// `keep_delivered` ago and dead ones finished more than `keep_dead`
    /// ago; returns how many. A `test` delivery whose call ended before
    /// recording its outcome (its lease ran out) is marked dead: workers
    /// never send test rows.
    pub async fn clean_alert_outbox(
        &self,
        keep_delivered: Duration,
        keep_dead: Duration,
        limit: i64,
    ) -> Result<u64> {
        sqlx::query(
            "UPDATE alert_outbox
                SET state = 'dead', finished_at = now(), claimed_until = NULL, claim_token = NULL,
                    last_error = 'the test call ended before its outcome was recorded'
              WHERE event = 'test' AND state = 'pending' AND claimed_until < now()",
        )
        .execute(self.pool())
        .await?;
        let r = sqlx::query(
            "DELETE FROM alert_outbox WHERE id IN (
                 SELECT id FROM alert_outbox
                  WHERE state <> 'pending'
                    AND finished_at < now() - make_interval(secs => CASE WHEN state = 'delivered'
                                                                        THEN $1 ELSE $2 END)
                  LIMIT $3)",
        )
        .bind(keep_delivered.as_secs_f64())
        .bind(keep_dead.as_secs_f64())
        .bind(limit)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// Pending and dead deliveries, for the gauges.
    pub async fn alert_backlog(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'dead') AS dead
               FROM alert_outbox WHERE state <> 'delivered'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((row.get("pending"), row.get("dead")))
    }

    /// Listens for new outbox rows (the channel `alert_outbox`).
    pub async fn listen_alerts(&self) -> Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        l.listen("alert_outbox").await?;
        Ok(l)
    }
}
