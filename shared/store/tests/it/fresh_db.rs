//! [`FreshDb`]: a fresh, migrated database per test on the server named by
//! `UPTIME_TEST_DATABASE_URL`, dropped afterwards.
//!
//! It does what `test_support::TestDb` does; store cannot use that one
//! without a dependency cycle (test-support depends on store), which would
//! also build test-support's whole tree (an SVM, Solana crates) to test SQL.
//! Shared with `benches/tick_writer.rs` by path.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};
use store::Store;

/// The variable naming the test server's superuser URL.
pub(crate) const TEST_DB_ENV: &str = "UPTIME_TEST_DATABASE_URL";

pub struct FreshDb {
    pub store: Store,
    name: String,
    admin: PgConnectOptions,
}

impl FreshDb {
    /// Creates and migrates the database; panics (failing the test) with
    /// the reason if it cannot.
    pub async fn new() -> Self {
        let base = std::env::var(TEST_DB_ENV).unwrap_or_else(|_| {
            panic!("{TEST_DB_ENV} is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
        });
        let admin = PgConnectOptions::from_str(&base)
            .unwrap_or_else(|e| panic!("{TEST_DB_ENV} is not a PostgreSQL URL: {e}"));
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to {TEST_DB_ENV}: {e}"));
        // `name` is generated above from a UUID: nothing to inject.
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE");
        conn.close().await.expect("closing the admin connection");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(admin.clone().database(&name))
            .await
            .expect("connecting to the fresh database");
        let store = Store::from_pool(pool);
        store.migrate().await.expect("migrating the fresh database");
        Self { store, name, admin }
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime is blocked while we wait
        // here: drop the database (best effort) from a runtime of its own.
        // FORCE ends the connections still open.
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
