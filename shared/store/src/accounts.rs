//! Website owners: accounts, sign-in sessions and API keys (services/api).
//!
//! Secrets never reach this module in the clear: a session is looked up by
//! the SHA-256 of its cookie, an API key by its visible prefix and compared
//! by its HMAC, a password only as its argon2id hash.

use sqlx::Row;
use std::time::Duration;

use crate::{AccountId, ApiKeyId, Result, Store};

/// An owner, with the quotas the operator set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub email: String,
    pub max_sites: i32,
    pub min_interval_secs: i32,
    pub created_at_ms: i64,
}

/// What sign-up writes. `password_hash` is a PHC string (argon2id).
#[derive(Clone)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub max_sites: i32,
    pub min_interval_secs: i32,
}

/// A key's scope: `Read` may only read; `Write` may also change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    Read,
    Write,
}

impl KeyScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Write => "write",
        }
    }

    fn from_column(s: &str) -> Self {
        // The column's CHECK allows only these two; anything newer is read
        // as the weaker scope.
        if s == "write" {
            KeyScope::Write
        } else {
            KeyScope::Read
        }
    }
}

/// An API key as its owner sees it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub prefix: String,
    pub name: String,
    pub scope: KeyScope,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// What [`Store::create_api_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKey {
    Created(ApiKey),
    /// Another key has this prefix: draw another.
    PrefixTaken,
    /// The account has its limit of live keys.
    TooMany,
}

/// A live key found by its prefix, with what the caller must compare.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    pub id: ApiKeyId,
    pub mac: Vec<u8>,
    pub scope: KeyScope,
    pub account: Account,
}

macro_rules! account_columns {
    ($a:literal) => {
        concat!(
            $a,
            ".id, ",
            $a,
            ".email, ",
            $a,
            ".max_sites, ",
            $a,
            ".min_interval_secs, ",
            "(extract(epoch FROM ",
            $a,
            ".created_at) * 1000)::int8 AS account_created_ms"
        )
    };
}

fn account_from_row(r: &sqlx::postgres::PgRow) -> Account {
    Account {
        id: r.get("id"),
        email: r.get("email"),
        max_sites: r.get("max_sites"),
        min_interval_secs: r.get("min_interval_secs"),
        created_at_ms: r.get("account_created_ms"),
    }
}

macro_rules! key_columns {
    () => {
        "id, prefix, name, scope, \
     (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, \
     (extract(epoch FROM last_used_at) * 1000)::int8 AS used_ms, \
     (extract(epoch FROM revoked_at) * 1000)::int8 AS revoked_ms"
    };
}

fn key_from_row(r: &sqlx::postgres::PgRow) -> ApiKey {
    ApiKey {
        id: r.get("id"),
        prefix: r.get("prefix"),
        name: r.get("name"),
        scope: KeyScope::from_column(r.get("scope")),
        created_at_ms: r.get("created_ms"),
        last_used_at_ms: r.get("used_ms"),
        revoked_at_ms: r.get("revoked_ms"),
    }
}

/// SQLSTATE 23505: a unique index refused the row.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

impl Store {
    // ---- accounts ----

    /// `None` when the email (compared case-insensitively) is taken.
    pub async fn create_account(&self, a: &NewAccount<'_>) -> Result<Option<Account>> {
        let r = sqlx::query(concat!(
            "INSERT INTO accounts (email, password_hash, max_sites, min_interval_secs) \
             VALUES ($1, $2, $3, $4) RETURNING ",
            account_columns!("accounts")
        ))
        .bind(a.email)
        .bind(a.password_hash)
        .bind(a.max_sites)
        .bind(a.min_interval_secs)
        .fetch_one(self.pool())
        .await;
        match r {
            Ok(row) => Ok(Some(account_from_row(&row))),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The account and its password hash, for sign-in.
    pub async fn account_for_login(&self, email: &str) -> Result<Option<(Account, String)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!("a"),
            ", a.password_hash FROM accounts a WHERE lower(a.email) = lower($1)"
        ))
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (account_from_row(&r), r.get("password_hash"))))
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        Ok(self.account_for_login(email).await?.map(|(a, _)| a))
    }

    /// Sets whichever quota is given; `None` if there is no such account.
    pub async fn set_account_quota(
        &self,
        email: &str,
        max_sites: Option<i32>,
        min_interval_secs: Option<i32>,
    ) -> Result<Option<Account>> {
        let row = sqlx::query(concat!(
            "UPDATE accounts SET max_sites = COALESCE($2, max_sites), \
                    min_interval_secs = COALESCE($3, min_interval_secs) \
              WHERE lower(email) = lower($1) RETURNING ",
            account_columns!("accounts")
        ))
        .bind(email)
        .bind(max_sites)
        .bind(min_interval_secs)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(account_from_row))
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        account: AccountId,
        token_sha256: &[u8; 32],
        csrf_token: &str,
        ttl: Duration,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO account_sessions (token_sha256, account_id, csrf_token, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        )
        .bind(&token_sha256[..])
        .bind(account)
        .bind(csrf_token)
        .bind(ttl.as_secs_f64())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The account of a live session and the session's CSRF token.
    pub async fn session(&self, token_sha256: &[u8; 32]) -> Result<Option<(Account, String)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!("a"),
            ", s.csrf_token FROM account_sessions s JOIN accounts a ON a.id = s.account_id \
              WHERE s.token_sha256 = $1 AND s.expires_at > now()"
        ))
        .bind(&token_sha256[..])
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (account_from_row(&r), r.get("csrf_token"))))
    }

    pub async fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM account_sessions WHERE token_sha256 = $1")
            .bind(&token_sha256[..])
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes up to `limit` expired sessions; returns how many.
    pub async fn delete_expired_sessions(&self, limit: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM account_sessions WHERE token_sha256 IN \
               (SELECT token_sha256 FROM account_sessions WHERE expires_at <= now() LIMIT $1)",
        )
        .bind(limit)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    // ---- API keys ----

    /// Creates a key unless the account already has `max_live` live ones;
    /// the account row is locked meanwhile, so concurrent creates cannot
    /// pass the limit together.
    pub async fn create_api_key(
        &self,
        account: AccountId,
        prefix: &str,
        mac: &[u8],
        name: &str,
        scope: KeyScope,
        max_live: i64,
    ) -> Result<NewKey> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
        )
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
        if live >= max_live {
            return Ok(NewKey::TooMany);
        }
        let r = sqlx::query(concat!(
            "INSERT INTO api_keys (account_id, prefix, mac, name, scope) \
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            key_columns!()
        ))
        .bind(account)
        .bind(prefix)
        .bind(mac)
        .bind(name)
        .bind(scope.as_str())
        .fetch_one(&mut *tx)
        .await;
        match r {
            Ok(row) => {
                tx.commit().await?;
                Ok(NewKey::Created(key_from_row(&row)))
            }
            Err(e) if is_unique_violation(&e) => Ok(NewKey::PrefixTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// A key that is not revoked, by its prefix, with its account.
    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<KeyLookup>> {
        let row = sqlx::query(concat!(
            "SELECT k.id AS key_id, k.mac, k.scope, ",
            account_columns!("a"),
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id \
              WHERE k.prefix = $1 AND k.revoked_at IS NULL"
        ))
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| KeyLookup {
            id: r.get("key_id"),
            mac: r.get("mac"),
            scope: KeyScope::from_column(r.get("scope")),
            account: account_from_row(&r),
        }))
    }

    /// Records that these keys were used now (callers batch and throttle).
    pub async fn touch_api_keys(&self, ids: &[ApiKeyId]) -> Result<()> {
        let ids: Vec<i64> = ids.iter().map(|k| k.0).collect();
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
            .bind(ids)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The account's keys, newest first, revoked ones included.
    pub async fn api_keys(&self, account: AccountId) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE account_id = $1 ORDER BY id DESC LIMIT 1000"
        ))
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    /// Revokes one of the account's keys; `None` if it has no such key.
    /// Revoking a revoked key changes nothing and returns it.
    pub async fn revoke_api_key(&self, account: AccountId, id: ApiKeyId) -> Result<Option<ApiKey>> {
        let row = sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) \
              WHERE id = $1 AND account_id = $2 RETURNING ",
            key_columns!(),
            ""
        ))
        .bind(id)
        .bind(account)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(key_from_row))
    }
}
