//! TLS to PostgreSQL, as managed databases require it: the store connects with
//! `sslmode=verify-full` and a CA file, checks the server's certificate and name, and
//! refuses a server whose certificate it cannot verify. The test server's certificate
//! comes from scripts/lib/pg.sh (a CA of its own, `UPTIME_TEST_PG_TLS_CA`).

use store::Store;

use crate::fresh_db::TEST_DB_ENV;

fn base_and_ca() -> (String, String) {
    let base = std::env::var(TEST_DB_ENV).expect("UPTIME_TEST_DATABASE_URL");
    let ca = std::env::var("UPTIME_TEST_PG_TLS_CA").expect(
        "UPTIME_TEST_PG_TLS_CA is not set: run the tests with scripts/test.sh, which starts \
         PostgreSQL with a certificate of its own CA",
    );
    (base, ca)
}

fn with_query(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

#[tokio::test]
async fn the_store_connects_over_verified_tls() {
    let (base, ca) = base_and_ca();
    let url = with_query(&base, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let store = Store::connect(&url, 2).await.unwrap_or_else(|e| {
        panic!("TLS connection failed (a server started before pg.sh made certificates? restart it): {e}")
    });
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(ssl, "the session is encrypted");
    assert!(version.unwrap_or_default().starts_with("TLSv1."));
}

#[tokio::test]
async fn a_certificate_the_store_cannot_verify_is_refused() {
    let (base, _) = base_and_ca();
    // The public roots do not know the test CA.
    let url = with_query(&base, "sslmode=verify-full");
    let Err(e) = Store::connect(&url, 1).await else {
        panic!("an unverifiable certificate is refused");
    };
    let text = format!("{e:#}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls") || text.contains("ssl"),
        "{text}"
    );
    // Without TLS the same server still answers: the refusal was the certificate.
    Store::connect(&base, 1).await.expect("plain connection");
}
