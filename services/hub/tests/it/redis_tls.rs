//! Redis over TLS (`rediss://`), as managed Redis services require: two hubs form a ring
//! through the test Redis's TLS port, checking its certificate against the CA given in
//! `HUB_REDIS_TLS_CA`; a hub that cannot verify the certificate stays alone. The test
//! server's TLS port and CA come from scripts/lib/redis.sh.

use crate::common::*;

use test_support::{TestDb, TestRedis};

fn tls_url_and_ca() -> (String, String) {
    let url = std::env::var("UPTIME_TEST_REDIS_TLS_URL").expect(
        "UPTIME_TEST_REDIS_TLS_URL is not set: run the tests with scripts/test.sh, which \
         starts Redis with a TLS port",
    );
    let ca = std::env::var("UPTIME_TEST_REDIS_TLS_CA").expect("UPTIME_TEST_REDIS_TLS_CA");
    (url, ca)
}

fn tls_settings(db: &TestDb, redis: &TestRedis, id: &str, ca: &str) -> hub::Config {
    let (url, _) = tls_url_and_ca();
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = url.into();
    s.redis_tls_ca = ca.into();
    s.redis_prefix = redis.prefix.clone();
    s.announce_interval_ms = 200;
    s
}

fn members(h: &TestHub) -> f64 {
    metric(&h.state, "uptime_hub_ring_members", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_form_a_ring_over_verified_tls() {
    let (_, ca) = tls_url_and_ca();
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let a = TestHub::start(tls_settings(&db, &redis, "hub-a", &ca)).await;
    let b = TestHub::start(tls_settings(&db, &redis, "hub-b", &ca)).await;
    eventually(10, "two members over TLS", || {
        let ok = members(&a) == 2.0 && members(&b) == 2.0;
        async move { ok.then_some(()) }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_hub_cannot_verify_keeps_it_out_of_the_ring() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    // A CA file with some other CA: the PostgreSQL test CA (scripts/lib/pg.sh makes its own).
    let other = std::env::var("UPTIME_TEST_PG_TLS_CA").expect("UPTIME_TEST_PG_TLS_CA");
    let (_, ca) = tls_url_and_ca();
    let good = TestHub::start(tls_settings(&db, &redis, "hub-good", &ca)).await;
    let bad = TestHub::start(tls_settings(&db, &redis, "hub-bad", &other)).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // Each sees only itself: the bad one never reached Redis to announce.
    assert_eq!((members(&good), members(&bad)), (1.0, 1.0));
    assert!(metric(&bad.state, "uptime_hub_redis_errors_total", &[]) > 0.0);
    assert_eq!(
        metric(&good.state, "uptime_hub_redis_errors_total", &[]),
        0.0
    );
    good.stop().await;
    bad.stop().await;
}

#[test]
fn a_tls_ca_needs_a_rediss_url() {
    let db_url = "postgres://x@127.0.0.1/x";
    let c = hub::Config {
        database_url: db_url.into(),
        token_keys: TOKEN_KEYS.into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        redis_tls_ca: "/etc/ca.pem".into(),
        ..hub::Config::default()
    };
    let e = c.parse().unwrap_err().to_string();
    assert!(e.contains("HUB_REDIS_TLS_CA"), "{e}");
}
