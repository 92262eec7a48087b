//! Network diversity (issue 16, part 4): with `HUB_PREFIX_DIVERSITY` on, a
//! round never gets two validators from one /24, whatever regions their keys
//! claim; with it off, the claimed regions pull one operator's keys into the
//! same round (what the rule prevents).

use std::net::IpAddr;

use protocol::HubMessage;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{add_site, key, metric, result, settings, RawClient, TestHub};

/// Five validators: keys 1-3 on 127.0.0.0/24, each claiming a region of
/// its own; keys 4 and 5 on networks of their own, both in `eu`. They
/// answer every task `up` until `stop`.
async fn validators(hub: &TestHub, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let who: [(u8, &str, &str); 5] = [
        (1, "127.0.0.1", "eu"),
        (2, "127.0.0.2", "us"),
        (3, "127.0.0.3", "ap"),
        (4, "127.0.1.1", "eu"),
        (5, "127.0.2.1", "eu"),
    ];
    let mut out = Vec::new();
    for (n, src, region) in who {
        let src: IpAddr = src.parse().unwrap();
        let mut c = RawClient::connect_from(&hub.ws_url(), key(n), src).await;
        c.try_hello(region).await.expect("welcome");
        let stop = stop.clone();
        out.push(tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = c.recv() => m,
                };
                match m {
                    Some(HubMessage::Task(t)) => c.send(&result(&t, &key(n))).await,
                    Some(_) => {}
                    None => return,
                }
            }
        }));
    }
    out
}

/// Rounds with results from two or more of keys 1-3, rounds with one of
/// them, and rounds in all.
async fn shared_network_rounds(db: &TestDb) -> (i64, i64, i64) {
    let shared: Vec<String> = (1..=3)
        .map(|n| protocol::PublicKey::from(&key(n)).to_base58())
        .collect();
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE n = 1), count(*) FROM ( \
             SELECT t.round_id, count(*) FILTER (WHERE v.public_key = ANY($1)) AS n \
             FROM ticks t JOIN validators v ON v.id = t.validator_id GROUP BY t.round_id) r",
    )
    .bind(&shared)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Rounds with two or more keys of the shared network, with one, in all;
/// and the metric.
async fn run(one_per_prefix: bool) -> (i64, i64, i64, f64) {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    s.prefix_diversity = one_per_prefix;
    s.task_deadline_ms = 800;
    let hub = TestHub::start(s).await;
    for i in 0..6 {
        add_site(&db, &format!("http://127.0.0.1:8080/{i}"), 1, 500, None).await;
    }
    let stop = CancellationToken::new();
    let tasks = validators(&hub, &stop).await;
    crate::common::eventually(20, "30 rounds with results", || async {
        let (_, _, rounds) = shared_network_rounds(&db).await;
        (rounds >= 30).then_some(())
    })
    .await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let (shared, once, rounds) = shared_network_rounds(&db).await;
    let repeated = metric(&hub.state, "uptime_hub_rounds_prefix_repeated_total", &[]);
    hub.stop().await;
    (shared, once, rounds, repeated)
}

#[tokio::test]
async fn one_network_never_supplies_two_results_of_a_round() {
    let (shared, once, rounds, repeated) = run(true).await;
    assert!(rounds >= 30);
    // The network keeps its one place: most rounds have one of its keys.
    assert!(
        once * 2 > rounds,
        "{once} of {rounds} rounds with one of its keys"
    );
    assert_eq!(
        shared, 0,
        "rounds with two keys of 127.0.0.0/24 of {rounds}"
    );
    assert_eq!(repeated, 0.0);
}

#[tokio::test]
async fn without_the_rule_claimed_regions_pull_one_network_in_twice() {
    let (shared, _, rounds, repeated) = run(false).await;
    assert!(
        shared * 2 > rounds,
        "the three-region network should fill most rounds: {shared} of {rounds}"
    );
    assert!(repeated >= shared as f64, "{repeated} < {shared}");
}
