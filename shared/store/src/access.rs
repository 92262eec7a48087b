//! Which validators may connect: the operator's allow and deny rules
//! (`validator_access`, see migrations/20261202000001_validator_access.sql).

use sqlx::Row;

use crate::{Result, Store};

/// Channel the rules' trigger notifies on.
const ACCESS_CHANGED: &str = "validator_access_changed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Allow,
    Deny,
}

impl AccessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What a rule names: a key (base58) or a network prefix (`cidr` text, as
/// PostgreSQL prints it: `10.1.2.0/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessSubject {
    Key(String),
    Network(String),
}

impl AccessSubject {
    /// `(public_key, network)` as the table holds them: one of the two.
    fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::Key(k) => (Some(k), None),
            Self::Network(n) => (None, Some(n)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub kind: AccessKind,
    pub subject: AccessSubject,
    pub reason: String,
    pub created_at_ms: i64,
}

/// Validators by standing and by trust band ([`Store::standings_seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandingCounts {
    pub good: i64,
    pub low_trust: i64,
    pub probation: i64,
    /// Trust in [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1].
    pub trust_bands: [i64; 4],
}

/// The labels of [`StandingCounts::trust_bands`].
pub const TRUST_BANDS: [&str; 4] = ["0-0.25", "0.25-0.5", "0.5-0.75", "0.75-1"];

/// One validator as the hub CLI lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorSummary {
    pub public_key: String,
    pub region: String,
    pub client_version: String,
    pub last_seen_ms: i64,
    /// Results stored in the window, and of those, how many agree with
    /// their round's decision (rounds closed `unknown` or still open count
    /// in neither).
    pub results: i64,
    pub decided: i64,
    pub agreed: i64,
    pub probation: bool,
    pub trust: f32,
    /// Shadow checks passed and failed, all time (settled).
    pub shadow_passed: i64,
    pub shadow_failed: i64,
}

impl Store {
    /// Every rule, oldest first.
    pub async fn access_rules(&self) -> Result<Vec<AccessRule>> {
        let rows = sqlx::query(
            "SELECT kind, public_key, network::text AS network, reason, \
                    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms \
             FROM validator_access ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let kind = if r.get::<&str, _>("kind") == "allow" {
                    AccessKind::Allow
                } else {
                    AccessKind::Deny
                };
                let subject = match r.get::<Option<String>, _>("public_key") {
                    Some(k) => AccessSubject::Key(k),
                    None => AccessSubject::Network(r.get("network")),
                };
                AccessRule {
                    kind,
                    subject,
                    reason: r.get("reason"),
                    created_at_ms: r.get("created_ms"),
                }
            })
            .collect())
    }

    /// Moves whenever a rule is added, changed or removed.
    pub async fn access_generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT generation FROM validator_access_state")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Adds a rule, or updates the reason of the same rule. A network is
    /// normalised by PostgreSQL (`cidr` refuses host bits set:
    /// `10.1.2.3/24` is an error, say `10.1.2.0/24`).
    pub async fn add_access_rule(
        &self,
        kind: AccessKind,
        subject: &AccessSubject,
        reason: &str,
    ) -> Result<()> {
        let (key, net) = subject.columns();
        let sql = if key.is_some() {
            "INSERT INTO validator_access (kind, public_key, network, reason) \
             VALUES ($1, $2, $3::cidr, $4) \
             ON CONFLICT (kind, public_key) WHERE public_key IS NOT NULL \
             DO UPDATE SET reason = EXCLUDED.reason"
        } else {
            "INSERT INTO validator_access (kind, public_key, network, reason) \
             VALUES ($1, $2, $3::cidr, $4) \
             ON CONFLICT (kind, network) WHERE network IS NOT NULL \
             DO UPDATE SET reason = EXCLUDED.reason"
        };
        sqlx::query(sql)
            .bind(kind.as_str())
            .bind(key)
            .bind(net)
            .bind(reason)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes a rule; false if there was none.
    pub async fn remove_access_rule(
        &self,
        kind: AccessKind,
        subject: &AccessSubject,
    ) -> Result<bool> {
        let (key, net) = subject.columns();
        let r = sqlx::query(
            "DELETE FROM validator_access WHERE kind = $1 \
               AND public_key IS NOT DISTINCT FROM $2 AND network IS NOT DISTINCT FROM $3::cidr",
        )
        .bind(kind.as_str())
        .bind(key)
        .bind(net)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// A listener for rule changes (one notification per statement).
    pub async fn listen_access_changes(&self) -> Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        l.listen(ACCESS_CHANGED).await?;
        Ok(l)
    }

    /// Validators seen within `seen_within_ms`: how many are in good
    /// standing, below the trust threshold, and on probation; and how many
    /// have trust in [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1].
    pub async fn standings_seen(&self, seen_within_ms: i64) -> Result<StandingCounts> {
        let r = sqlx::query(
            "SELECT count(*) FILTER (WHERE NOT probation AND trust >= 0.5) AS good, \
                    count(*) FILTER (WHERE NOT probation AND trust < 0.5) AS low, \
                    count(*) FILTER (WHERE probation) AS probation, \
                    count(*) FILTER (WHERE trust < 0.25) AS t0, \
                    count(*) FILTER (WHERE trust >= 0.25 AND trust < 0.5) AS t1, \
                    count(*) FILTER (WHERE trust >= 0.5 AND trust < 0.75) AS t2, \
                    count(*) FILTER (WHERE trust >= 0.75) AS t3 \
               FROM validators \
              WHERE last_seen > now() - make_interval(secs => $1::double precision / 1000)",
        )
        .bind(seen_within_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(StandingCounts {
            good: r.get("good"),
            low_trust: r.get("low"),
            probation: r.get("probation"),
            trust_bands: [r.get("t0"), r.get("t1"), r.get("t2"), r.get("t3")],
        })
    }

    /// Validators seen within `seen_within_ms`, newest first, with their
    /// results over the last `window_ms` and how many agreed with their
    /// round's decision.
    pub async fn validator_summaries(
        &self,
        seen_within_ms: i64,
        window_ms: i64,
        limit: i64,
    ) -> Result<Vec<ValidatorSummary>> {
        let rows = sqlx::query(
            "SELECT v.public_key, v.region, v.client_version, \
                    (extract(epoch FROM v.last_seen) * 1000)::bigint AS last_seen_ms, \
                    coalesce(s.results, 0) AS results, coalesce(s.decided, 0) AS decided, \
                    coalesce(s.agreed, 0) AS agreed, v.probation, v.trust, \
                    coalesce(l.challenges_passed, 0) AS shadow_passed, \
                    coalesce(l.challenges_failed, 0) AS shadow_failed \
             FROM validators v \
             LEFT JOIN validator_ledger l ON l.validator_id = v.id \
             LEFT JOIN LATERAL ( \
                 SELECT count(*) AS results, \
                        count(*) FILTER (WHERE r.status IN ('up', 'down')) AS decided, \
                        count(*) FILTER (WHERE r.status = t.status) AS agreed \
                 FROM ticks t JOIN rounds r ON r.id = t.round_id \
                 WHERE t.validator_id = v.id \
                   AND t.scheduled_at > now() - make_interval(secs => $2::double precision / 1000) \
             ) s ON true \
             WHERE v.last_seen > now() - make_interval(secs => $1::double precision / 1000) \
             ORDER BY v.last_seen DESC, v.id \
             LIMIT $3",
        )
        .bind(seen_within_ms)
        .bind(window_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| ValidatorSummary {
                public_key: r.get("public_key"),
                region: r.get("region"),
                client_version: r.get("client_version"),
                last_seen_ms: r.get("last_seen_ms"),
                results: r.get("results"),
                decided: r.get("decided"),
                agreed: r.get("agreed"),
                probation: r.get("probation"),
                trust: r.get("trust"),
                shadow_passed: r.get("shadow_passed"),
                shadow_failed: r.get("shadow_failed"),
            })
            .collect())
    }
}
