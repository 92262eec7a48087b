//! Issue 16's simulation: 10 honest validators in 3 regions, each on a /24
//! of its own, and 20 hostile keys sharing one /24, each claiming a region
//! of its own: half answer `up` at once without fetching, half report the
//! opposite of what they see. Real hub, real sockets, real HTTP targets on
//! loopback (a static page and one that flaps every 4 s), the rules as
//! production runs them (network diversity on, probation on, shadow places
//! in 10% of rounds, the honest keys on HUB_TRUSTED_VALIDATORS).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use protocol::crypto::{sign_hello, sign_result};
use protocol::limits::EVIDENCE_BODY_BYTES;
use protocol::{CheckResult, CheckStatus, Digest, Evidence, HubMessage, ValidatorMessage};
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{add_site, demo_sites, hello, key, metric, settings, RawClient, TestHub};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Acts {
    Honest,
    Lazy,
    Liar,
}

const FLAP: Duration = Duration::from_secs(4);
const RUN: Duration = Duration::from_secs(24);
const HONEST: u8 = 10;
const HOSTILE: u8 = 20;

/// What a fetch of `url` finds: up (2xx/3xx), the digest of the first
/// 64 KiB of the body.
async fn fetch(client: &reqwest::Client, url: &str) -> (bool, Digest, u32) {
    match client.get(url).send().await {
        Ok(r) => {
            let up = r.status().is_success() || r.status().is_redirection();
            let body = r.bytes().await.unwrap_or_default();
            let n = body.len().min(EVIDENCE_BODY_BYTES);
            (up, Digest::of(&body[..n]), n as u32)
        }
        Err(_) => (false, Digest::of(b""), 0),
    }
}

async fn validator(
    hub: &TestHub,
    n: u8,
    src: IpAddr,
    region: String,
    acts: Acts,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u32> {
    let mut c = RawClient::connect_from(&hub.ws_url(), key(n), src).await;
    let mut h = hello(&c.key, &c.nonce, &region);
    h.protocol_versions = vec![1, 2];
    h.capacity = 10;
    sign_hello(&c.key, &c.nonce, &mut h);
    c.send(&ValidatorMessage::Hello(h)).await;
    assert!(matches!(c.recv().await, Some(HubMessage::Welcome(_))));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    tokio::spawn(async move {
        let mut tasks = 0;
        loop {
            // No time limit on a read: a key on probation may wait long for
            // a task.
            let frame = tokio::select! {
                _ = stop.cancelled() => return tasks,
                f = futures_util::StreamExt::next(&mut c.ws) => f,
            };
            let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = frame else {
                match frame {
                    Some(Ok(_)) => continue,
                    _ => return tasks,
                }
            };
            let Ok(HubMessage::Task(t)) = HubMessage::decode(&text) else {
                continue;
            };
            tasks += 1;
            let (up, digest, bytes) = match acts {
                Acts::Lazy => (true, Digest::of(b"never fetched"), 0),
                Acts::Honest | Acts::Liar => {
                    let (up, d, b) = fetch(&client, &t.url).await;
                    (if acts == Acts::Liar { !up } else { up }, d, b)
                }
            };
            let status = if up {
                CheckStatus::Up
            } else {
                CheckStatus::Down
            };
            let mut r = CheckResult::for_task(&t, status, Some(200), 3, None, protocol::now_ms());
            r.evidence = Some(Evidence {
                body_sha256: Some(digest),
                body_bytes: bytes,
                remote_ip: Some("127.0.0.1".parse().unwrap()),
            });
            sign_result(&c.key, &mut r);
            c.send(&ValidatorMessage::Result(r)).await;
        }
    })
}

fn acts_of(n: u8) -> Acts {
    match n {
        1..=HONEST => Acts::Honest,
        _ if n % 2 == 0 => Acts::Lazy,
        _ => Acts::Liar,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_honest_keys_outvote_twenty_hostile_ones_on_one_network() {
    let db = TestDb::new().await.unwrap();
    let (base, stop_sites) = demo_sites(demo_sites::Config {
        flap_period: FLAP,
        ..demo_sites::Config::default()
    })
    .await;
    let mut s = settings(&db);
    s.prefix_diversity = true;
    s.probation_results = 20;
    s.probation_challenges = 2;
    s.shadow_share = 0.1;
    s.task_deadline_ms = 900;
    s.trusted_validators = (1..=HONEST)
        .map(|n| protocol::PublicKey::from(&key(n)).to_base58())
        .collect::<Vec<_>>()
        .join(",");
    let hub = TestHub::start(s).await;
    let mut flap_sites = Vec::new();
    for i in 0..3 {
        add_site(&db, &format!("{base}/up?s={i}"), 1, 500, None).await;
        flap_sites.push(add_site(&db, &format!("{base}/flap?s={i}"), 1, 500, None).await);
    }

    let stop = CancellationToken::new();
    let mut running = Vec::new();
    let regions = ["eu-west", "us-east", "ap-south"];
    for n in 1..=HONEST {
        // 127.0.(10+n).1: a /24 of its own.
        let src = IpAddr::from([127, 0, 10 + n, 1]);
        let region = regions[usize::from(n) % 3].to_string();
        running.push((
            n,
            validator(&hub, n, src, region, Acts::Honest, stop.clone()).await,
        ));
    }
    for n in HONEST + 1..=HONEST + HOSTILE {
        // All in 127.0.99.0/24, each claiming a region of its own.
        let src = IpAddr::from([127, 0, 99, n]);
        let region = format!("hostile-{n}");
        running.push((
            n,
            validator(&hub, n, src, region, acts_of(n), stop.clone()).await,
        ));
    }
    tokio::time::sleep(RUN).await;
    stop.cancel();
    let mut tasks: HashMap<u8, u32> = HashMap::new();
    for (n, j) in running {
        tasks.insert(n, j.await.unwrap());
    }
    // Let the last rounds close, then settle (the payout leader's statement).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let epoch = db.store.next_epoch("payouts").await.unwrap();
    db.store
        .settle_rounds_with(
            epoch,
            Duration::ZERO,
            100_000,
            store::Probation {
                results: 20,
                challenges: 2,
            },
        )
        .await
        .unwrap();

    // 1. No round was decided against what the honest keys in it saw, and
    //    the flapping sites' rounds follow the page: every round more than
    //    a second from a flip has the page's status then (under load a
    //    task can go out late, and an honest key then honestly sees the
    //    next phase), so a site going down is reported down in the first
    //    round after it does.
    let honest_keys: Vec<String> = (1..=HONEST)
        .map(|n| protocol::PublicKey::from(&key(n)).to_base58())
        .collect();
    let (decided, against_honest): (i64, i64) = sqlx::query_as(
        "WITH h AS ( \
             SELECT t.round_id, count(*) FILTER (WHERE t.status = 'up') AS ups, \
                    count(*) FILTER (WHERE t.status = 'down') AS downs \
               FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE v.public_key = ANY($1) GROUP BY t.round_id) \
         SELECT count(*), count(*) FILTER (WHERE \
                  (r.status = 'up' AND h.downs > h.ups) OR (r.status = 'down' AND h.ups > h.downs) \
                  OR (r.status = 'unknown' AND h.ups + h.downs >= 2 AND h.ups <> h.downs)) \
           FROM rounds r JOIN h ON h.round_id = r.id WHERE r.status <> 'open'",
    )
    .bind(&honest_keys)
    .fetch_one(db.pool())
    .await
    .unwrap();
    eprintln!("rounds decided {decided}, against their honest keys {against_honest}");
    assert!(decided >= 100, "{decided} rounds");
    assert_eq!(against_honest, 0, "hostile keys decided a round");
    let rounds: Vec<(i64, String)> = sqlx::query_as(
        "SELECT (extract(epoch FROM scheduled_at) * 1000)::int8, status FROM rounds \
          WHERE website_id = ANY($1) AND status <> 'open'",
    )
    .bind(&flap_sites)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let period = FLAP.as_millis() as i64;
    let (mut judged, mut wrong) = (0, 0);
    for (at, status) in &rounds {
        let into = at.rem_euclid(period);
        if into < 1_000 || period - into < 1_000 {
            continue;
        }
        judged += 1;
        let t = UNIX_EPOCH + Duration::from_millis(*at as u64);
        let truth = if demo_sites::flap_is_up(t, FLAP) {
            "up"
        } else {
            "down"
        };
        if status != truth {
            wrong += 1;
        }
    }
    eprintln!("flap rounds judged {judged}, not the page's status {wrong}");
    assert!(judged >= 25, "{judged} flap rounds");
    assert_eq!(wrong, 0, "a flapping round missed the page's status");

    // 2. Hostile keys earned nothing; honest keys earned for what they did.
    let ledger: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT v.public_key, COALESCE(l.earned_lamports, 0), COALESCE(l.earning_ticks, 0), \
                COALESCE(l.challenges_passed, 0), COALESCE(l.challenges_failed, 0) \
           FROM validators v LEFT JOIN validator_ledger l ON l.validator_id = v.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let of = |n: u8| {
        let k = protocol::PublicKey::from(&key(n)).to_base58();
        ledger.iter().find(|r| r.0 == k).cloned()
    };
    let hostile_earned: i64 = (HONEST + 1..=HONEST + HOSTILE)
        .filter_map(of)
        .map(|r| r.1)
        .sum();
    assert_eq!(hostile_earned, 0);
    for n in 1..=HONEST {
        let r = of(n).expect("honest key recorded");
        assert!(r.1 > 0, "honest key {n} earned nothing: {r:?}");
    }
    let lazy_passed: i64 = (HONEST + 1..=HONEST + HOSTILE)
        .filter(|n| acts_of(*n) == Acts::Lazy)
        .filter_map(of)
        .map(|r| r.3)
        .sum();
    assert_eq!(lazy_passed, 0, "a lazy key passed a shadow check");

    // 3. Hostile keys got a small share of the tasks: shadow places in
    //    about 10% of rounds (one task in 31), and nothing else while honest
    //    keys had room.
    let all: u32 = tasks.values().sum();
    let hostile: u32 = (HONEST + 1..=HONEST + HOSTILE).map(|n| tasks[&n]).sum();
    eprintln!(
        "tasks: {all} in all, {hostile} to hostile keys ({:.1}%)",
        100.0 * f64::from(hostile) / f64::from(all)
    );
    assert!(
        f64::from(hostile) <= 0.06 * f64::from(all),
        "hostile keys got {hostile} of {all} tasks"
    );

    // 4. No round had results from two keys of the hostile network, and the
    //    metric agrees.
    let hostile_keys: Vec<String> = (HONEST + 1..=HONEST + HOSTILE)
        .map(|n| protocol::PublicKey::from(&key(n)).to_base58())
        .collect();
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT t.round_id FROM ticks t \
           JOIN validators v ON v.id = t.validator_id WHERE v.public_key = ANY($1) \
          GROUP BY t.round_id HAVING count(*) > 1) r",
    )
    .bind(&hostile_keys)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(doubled, 0, "rounds with two hostile keys");
    assert_eq!(
        metric(&hub.state, "uptime_hub_rounds_prefix_repeated_total", &[]),
        0.0
    );
    hub.stop().await;
    stop_sites.cancel();
}
