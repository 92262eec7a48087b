//! [`TestDb`]: a fresh PostgreSQL database per test.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection};
use store::Store;

/// The variable naming the test server's superuser URL.
pub const TEST_DB_ENV: &str = "UPTIME_TEST_DATABASE_URL";

/// A fresh database that is dropped (best effort) when the test ends.
pub struct TestDb {
    pub name: String,
    /// URL of the fresh database, for child processes.
    pub url: String,
    pub store: Store,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        let base = std::env::var(TEST_DB_ENV).with_context(|| {
            format!("{TEST_DB_ENV} is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
        })?;
        let admin = PgConnectOptions::from_str(&base)
            .with_context(|| format!("{TEST_DB_ENV} is not a PostgreSQL URL"))?;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .with_context(|| format!("connecting to {base}"))?;
        // `name` is generated above from a UUID: nothing to inject.
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        conn.close().await?;
        let opts = admin.clone().database(&name);
        let url = opts.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let store = Store::from_pool(pool);
        store
            .migrate()
            .await
            .context("migrating the test database")?;
        Ok(Self {
            name,
            url,
            store,
            admin,
        })
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping needs its own runtime: Drop cannot await, and the test's
        // runtime is blocked while we wait here (so nothing that needs it,
        // like closing the pool gracefully, may be awaited). FORCE ends the
        // connections still open, the hub's included.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                conn.execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .ok()
            })
        })
        .join();
    }
}
