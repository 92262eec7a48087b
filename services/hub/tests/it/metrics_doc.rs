//! docs/metrics.md lists exactly what a real hub's `/metrics` serves: the
//! same families, types and labels, and only documented label values.

use crate::common;

use std::mem::{size_of, size_of_val};

use common::*;
use test_support::metrics::{doc_differences, read_doc, scrape, touch};
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

/// Makes one series of each labelled family (see [`touch`]), so that the
/// page serves the families nothing has used yet.
macro_rules! touch_vecs {
    ($m:expr, [$($field:ident),* $(,)?]) => {{
        $( touch(|v| $m.$field.get_metric_with_label_values(v).is_ok()); )*
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_metrics_md_lists_what_the_hub_serves() {
    // A hub with a validator checking a site, so real values show up too.
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    add_site(&db, &format!("{base}/up"), 1, 1_000, None).await;
    let hub = TestHub::start(settings(&db)).await;
    let stop = CancellationToken::new();
    let validator = spawn_validator(&[hub.ws_url()], 60, "eu-west", &stop);
    eventually(20, "a closed round", || async {
        (metric(&hub.state, "uptime_hub_rounds_closed_total", &[]) > 0.0).then_some(())
    })
    .await;

    let m = &hub.state.metrics;
    touch_vecs!(
        m,
        [
            protocol_errors,
            results_rejected,
            rounds_closed,
            website_reloads,
            incidents,
            maintenance_errors,
            cross_hub_messages,
            cross_hub_dropped,
            payout_cycles,
            payout_transactions,
            payout_found_transfers,
            connections_refused,
            http_refused,
            earnings_summary_refreshes,
            results_judged,
            validators_by_standing,
            validators_by_trust,
        ]
    );
    let page = scrape(&format!("http://{}/metrics", hub.addr))
        .await
        .unwrap();
    let doc = read_doc().unwrap();
    let differences = doc_differences(&doc, &page, "uptime_hub_", &["hub"]);
    assert!(
        differences.is_empty(),
        "docs/metrics.md and the hub's /metrics differ:\n{}",
        differences.join("\n")
    );

    // A labelled family added to `Metrics` and missing from `touch_vecs!`
    // would be neither served nor compared. `Metrics` is the registry plus
    // one handle per family, each a single pointer (an `Arc` in prometheus
    // 0.14, checked here), so its size counts the families.
    let word = size_of::<usize>();
    assert_eq!(size_of_val(&m.protocol_errors), word);
    assert_eq!(size_of_val(&m.write_latency), word);
    assert_eq!(size_of_val(&m.ticks_written), word);
    assert_eq!(size_of_val(&m.is_leader), word);
    let handles = size_of::<hub::metrics::Metrics>() / word - 1;
    let served = page
        .families()
        .keys()
        .filter(|n| n.starts_with("uptime_hub_"))
        .count();
    assert_eq!(
        served, handles,
        "hub::metrics::Metrics holds {handles} metrics but /metrics serves {served} families: \
         add a new labelled metric to touch_vecs! above (or, if a field that is not a metric \
         was added, count it here)"
    );

    stop_validators(&stop, vec![validator]).await;
    hub.stop().await;
    sites_stop.cancel();
}
