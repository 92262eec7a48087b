//! Status, uptime, latency, rounds, results and validators of a site, from
//! rounds and ticks written as the hubs write them.

use reqwest::StatusCode;

use crate::common::{code, Api};

/// A closed round of `website` with `status`, `ago_secs` in the past, and
/// one result per region in eu-west, us-east (latency 100 and 300 ms) for
/// an `up` round, or one `down` result.
pub async fn seed_round(api: &Api, website: i64, status: &str, ago_secs: i64) -> i64 {
    for (key, region) in [("val-eu", "eu-west"), ("val-us", "us-east")] {
        sqlx::query(
            "INSERT INTO validators (public_key, region) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(region)
        .execute(api.db.pool())
        .await
        .unwrap();
    }
    let round: i64 = sqlx::query_scalar(
        "INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status, closed_at, closed_by) \
         VALUES ($1, $2, date_trunc('milliseconds', now() - make_interval(secs => $2)), date_trunc('milliseconds', now() - make_interval(secs => $2)) + interval '10 s', \
                 'hub-1', $3, now() - make_interval(secs => $2) + interval '5 s', 'hub-1') RETURNING id",
    )
    .bind(website)
    .bind(ago_secs as f64)
    .bind(status)
    .fetch_one(api.db.pool())
    .await
    .unwrap();
    let results: &[(&str, i32, &str)] = if status == "down" {
        &[("val-eu", 0, "down")]
    } else {
        &[("val-eu", 100, "up"), ("val-us", 300, "up")]
    };
    for (key, latency, tick) in results {
        sqlx::query(
            "INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, http_status, \
                                latency_ms, checked_at, reward_lamports, hub_id) \
             SELECT $1, r.id, v.id, gen_random_uuid(), r.scheduled_at, $3, 200, $4, r.scheduled_at + interval '1 s', 1000, 'hub-1' \
               FROM rounds r, validators v WHERE r.id = $2 AND v.public_key = $5",
        )
        .bind(website)
        .bind(round)
        .bind(tick)
        .bind(latency)
        .bind(key)
        .execute(api.db.pool())
        .await
        .unwrap();
    }
    round
}

#[tokio::test]
async fn status_uptime_latency_and_validators_follow_the_rounds() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let id = c.new_site("http://127.0.0.1:8089/a").await;
    let (_, s) = c.get(&format!("/v1/websites/{id}/status")).await;
    assert_eq!(s["status"], "pending");
    assert!(s["last_round"].is_null());
    let (_, u) = c.get(&format!("/v1/websites/{id}/uptime")).await;
    assert!(u["windows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["uptime_pct"].is_null()));

    // 3 up, 1 down and 1 unknown in the last day; 4 up two days ago.
    for ago in [60, 120, 180] {
        seed_round(&api, id, "up", ago).await;
    }
    seed_round(&api, id, "down", 240).await;
    seed_round(&api, id, "unknown", 300).await;
    for ago in 0..4 {
        seed_round(&api, id, "up", 2 * 86_400 + ago * 60).await;
    }
    let (s, st) = c.get(&format!("/v1/websites/{id}/status")).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["status"], "up");
    let regions: Vec<&str> = st["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["eu-west", "us-east"]);

    let (_, u) = c.get(&format!("/v1/websites/{id}/uptime")).await;
    let w = |label: &str| {
        u["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["window"] == label)
            .unwrap()
            .clone()
    };
    assert_eq!(w("24h")["uptime_pct"], 75.0);
    assert_eq!(
        (
            w("24h")["rounds_decided"].as_i64(),
            w("24h")["rounds_unknown"].as_i64()
        ),
        (Some(4), Some(1))
    );
    assert_eq!(w("7d")["uptime_pct"], 87.5);
    assert_eq!(w("90d")["rounds_up"], 7);

    let (_, l) = c
        .get(&format!("/v1/websites/{id}/latency?window=24h"))
        .await;
    let eu = &l["regions"][0];
    assert_eq!(
        (
            eu["region"].as_str(),
            eu["results"].as_i64(),
            eu["p50_ms"].as_f64()
        ),
        (Some("eu-west"), Some(4), Some(100.0))
    );
    assert_eq!(l["regions"][1]["p99_ms"], 300.0);
    let (s, b) = c.get(&format!("/v1/websites/{id}/latency?window=1y")).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));

    let (_, v) = c
        .get(&format!("/v1/websites/{id}/validators?window=7d"))
        .await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (
            items[0]["public_key"].as_str(),
            items[0]["results"].as_i64()
        ),
        (Some("val-eu"), Some(9))
    );
    api.stop().await;
}

#[tokio::test]
async fn rounds_and_results_page_newest_first_without_gaps() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let id = c.new_site("http://127.0.0.1:8089/a").await;
    let mut rounds = Vec::new();
    for ago in 1..=5 {
        rounds.push(seed_round(&api, id, "up", ago * 60).await);
    }
    // Newest first: the round 60 s ago is first.
    let pages = c
        .all_pages(&format!("/v1/websites/{id}/rounds?limit=2"), 2)
        .await;
    for r in &pages {
        assert_eq!(r["results"].as_array().unwrap().len(), 2, "{r}");
    }
    let seen: Vec<i64> = pages.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, rounds);

    let ticks: Vec<(i64, String)> = c
        .all_pages(&format!("/v1/websites/{id}/results?limit=3"), 3)
        .await
        .iter()
        .map(|t| {
            (
                t["scheduled_at_ms"].as_i64().unwrap(),
                t["task_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ticks.len(), 10);
    let mut sorted = ticks.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    // A forged cursor with a time out of range is refused, not a 500.
    use base64::Engine;
    for forged in ["-9223372036854775808:1", "9223372036854775807:1", "-1:1"] {
        let cur = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
        for list in ["rounds", "results"] {
            let (s, b) = c
                .get(&format!("/v1/websites/{id}/{list}?cursor={cur}"))
                .await;
            assert_eq!(
                (s, code(&b)),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
                "{list} {forged}"
            );
        }
    }
    assert_eq!(ticks, sorted, "newest first, no duplicates");
    sorted.dedup();
    assert_eq!(sorted.len(), 10);
    api.stop().await;
}

#[tokio::test]
async fn incidents_and_the_incident_state_follow_decided_rounds() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let id = c.new_site("http://127.0.0.1:8089/a").await;
    let (_, st) = c.get(&format!("/v1/websites/{id}/status")).await;
    assert_eq!(
        (st["incident_state"].as_str(), st["open_incident"].is_null()),
        (Some("unknown"), true)
    );
    // Oldest first: up, down, down (opens), up, up (resolves), down, down (opens).
    let statuses = ["up", "down", "down", "up", "up", "down", "down"];
    for (i, status) in statuses.iter().enumerate() {
        seed_round(&api, id, status, 600 - 60 * i as i64).await;
    }
    let site = store::WebsiteId(id);
    let (opened, resolved) = api
        .db
        .store
        .apply_round_decisions(&[site], 2, 2)
        .await
        .unwrap();
    assert_eq!((opened, resolved), (2, 1));
    let (_, st) = c.get(&format!("/v1/websites/{id}/status")).await;
    assert_eq!(st["incident_state"], "down");
    assert!(
        st["degraded_regions"].as_array().unwrap().is_empty(),
        "{st}"
    );
    let open = st["open_incident"].as_i64().expect("an open incident");
    let (s, page) = c.get(&format!("/v1/websites/{id}/incidents?limit=1")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let newest = &page["items"][0];
    assert_eq!(newest["id"].as_i64(), Some(open));
    assert!(newest["resolved_at_ms"].is_null());
    assert_eq!(newest["regions"][0]["region"], "eu-west", "{newest}");
    assert_eq!(newest["regions"][0]["up"], false);
    let cur = page["next_cursor"].as_str().expect("a second page");
    let (_, page) = c
        .get(&format!("/v1/websites/{id}/incidents?limit=1&cursor={cur}"))
        .await;
    let older = &page["items"][0];
    assert!(older["resolved_at_ms"].as_i64().unwrap() > older["started_at_ms"].as_i64().unwrap());
    assert!(page["next_cursor"].is_null());
    api.stop().await;
}
