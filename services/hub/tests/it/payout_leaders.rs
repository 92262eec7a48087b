//! Payout leaders as real `hub` processes: two hubs contending for the
//! lock, a leader paused past its lease (SIGSTOP/SIGCONT), and leaders
//! that die (abort at armed crash points, kill -9 at random moments).
//! Each ends with the chain audit: every validator received exactly what
//! the ledger marks paid.

use crate::common;

use std::time::Duration;

use solana_keypair::Keypair;
use solana_signer::Signer;

use common::payouts::*;
use common::{eventually, free_port, HubProc};
use test_support::solana::{ChainConfig, SendBehaviour, SolanaRpc};
use test_support::{TestDb, TestRedis};

struct World {
    db: TestDb,
    chain: SolanaRpc,
    treasury: Keypair,
    start: u64,
    _dir: tempdir::Dir,
    keyfile: String,
}

mod tempdir {
    /// A private directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("uptime-payouts-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl World {
    async fn new() -> Self {
        let db = TestDb::new().await.unwrap();
        // Blocks advance by themselves: a hub's payer pays only once the
        // blockhashes from before it started have expired (about 50 blocks
        // here, half a second).
        let chain = SolanaRpc::start(ChainConfig {
            blockhash_validity: VALIDITY,
            block_interval: Some(Duration::from_millis(10)),
            ..Default::default()
        })
        .await
        .unwrap();
        let key = protocol::keypair::generate();
        let dir = tempdir::Dir::new();
        let keyfile = dir.0.join("treasury.json");
        protocol::keypair::write_new(&keyfile, &key).unwrap();
        let treasury = Keypair::new_from_array(key.to_bytes());
        let start = 1_000_000_000_000;
        chain.airdrop(treasury.pubkey().to_bytes(), start);
        Self {
            db,
            chain,
            treasury,
            start,
            keyfile: keyfile.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HUB_PAYOUT_TREASURY_KEYPAIR", self.keyfile.clone()),
            ("HUB_PAYOUT_RPC_URL", self.chain.url()),
            ("HUB_PAYOUT_INTERVAL_MS", "200".into()),
            ("HUB_TASK_DEADLINE_MS", "2000".into()),
            ("HUB_PAYOUT_SETTLE_DELAY_MS", "2000".into()),
            ("HUB_PAYOUT_CONFIRM_TIMEOUT_MS", "300".into()),
            ("HUB_PAYOUT_MAX_TRANSFERS", "3".into()),
            ("HUB_PAYOUT_MAX_ATTEMPTS", "100".into()),
            ("HUB_LEADER_LEASE_MS", "1000".into()),
            ("HUB_ANNOUNCE_INTERVAL_MS", "200".into()),
        ]
    }

    async fn all_paid(&self, secs: u64) {
        eventually(secs, "every claim paid", || async {
            settled_up(&self.db).await.then_some(())
        })
        .await;
    }

    async fn audit(&self, vals: &[Val]) {
        audit(&self.db, &self.chain, &self.treasury, self.start, vals).await;
    }
}

fn with_redis(mut env: Vec<(&'static str, String)>, r: &TestRedis) -> Vec<(&'static str, String)> {
    env.push(("HUB_REDIS_URL", r.url.clone()));
    env.push(("HUB_REDIS_PREFIX", r.prefix.clone()));
    env
}

async fn earn(farm: &mut Farm, vals: &[Val], rng: &mut fastrand::Rng) {
    let mut t: Vec<(&Val, i64, bool)> = Vec::new();
    for v in vals {
        if rng.bool() {
            t.push((v, rng.i64(MIN..3 * MIN), true));
        }
    }
    if !t.is_empty() {
        farm.round(&t, &[]).await;
    }
}

async fn leaders(hubs: &[&HubProc]) -> Vec<bool> {
    let mut out = Vec::new();
    for h in hubs {
        out.push(h.metric("uptime_hub_is_leader").await == Some(1.0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_contending_for_leadership_never_both_pay() {
    let w = World::new().await;
    let redis = TestRedis::new().await.unwrap();
    let env = with_redis(w.env(), &redis);
    let mut farm = Farm::new(&w.db).await;
    let mut vals = Vec::new();
    for n in 0..8 {
        vals.push(farm.validator(n).await);
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let mut a = HubProc::start(&w.db, "hub-a", free_port(), &env).await;
    let mut b = HubProc::start(&w.db, "hub-b", free_port(), &env).await;
    for round in 0..8 {
        earn(&mut farm, &vals, &mut rng).await;
        // Both never lead at once (sampled), whoever pays.
        for _ in 0..10 {
            let l = leaders(&[&a, &b]).await;
            assert!(!(l[0] && l[1]), "two leaders at once");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round == 3 {
            // The leader dies mid-stream; the other takes over.
            if leaders(&[&a, &b]).await[0] {
                a.kill9().await;
                a = HubProc::start(&w.db, "hub-a", free_port(), &env).await;
            } else {
                b.kill9().await;
                b = HubProc::start(&w.db, "hub-b", free_port(), &env).await;
            }
        }
    }
    w.all_paid(30).await;
    let epochs: i64 = sqlx::query_scalar("SELECT count(DISTINCT epoch) FROM payout_batches")
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    eprintln!("payout batches written under {epochs} epochs");
    w.audit(&vals).await;
    a.kill9().await;
    b.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_pays_nothing_more_when_resumed() {
    let w = World::new().await;
    let redis = TestRedis::new().await.unwrap();
    let env = with_redis(w.env(), &redis);
    let mut farm = Farm::new(&w.db).await;
    let mut vals = Vec::new();
    for n in 0..6 {
        vals.push(farm.validator(n).await);
    }
    let mut rng = fastrand::Rng::with_seed(11);
    let a = HubProc::start(&w.db, "hub-a", free_port(), &env).await;
    let b = HubProc::start(&w.db, "hub-b", free_port(), &env).await;
    let (leader, other) = eventually(10, "a leader", || async {
        match leaders(&[&a, &b]).await[..] {
            [true, false] => Some((&a, &b)),
            [false, true] => Some((&b, &a)),
            _ => None,
        }
    })
    .await;
    earn(&mut farm, &vals, &mut rng).await;
    w.all_paid(15).await;
    let old_epoch = leader.metric("uptime_hub_leader_epoch").await.unwrap() as i64;

    // Paused mid-flight: its transactions are held by the chain (and the
    // blocks stop, so they can still land late; first past any hub's start
    // wait).
    w.chain.advance_blocks(2 * VALIDITY + 40);
    w.chain.set_ticking(false);
    w.chain.set_default_behaviour(SendBehaviour::Hold);
    let sends = w.chain.send_calls();
    earn(&mut farm, &vals, &mut rng).await;
    eventually(10, "the leader to send a (held) transaction", || async {
        (w.chain.send_calls() > sends).then_some(())
    })
    .await;
    leader.signal(libc::SIGSTOP);
    let paused_at: i64 =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8")
            .fetch_one(w.db.pool())
            .await
            .unwrap();
    // The other hub takes over, finds what the paused one left, pays.
    eventually(10, "the other hub leads", || async {
        (other.metric("uptime_hub_is_leader").await == Some(1.0)).then_some(())
    })
    .await;
    assert!(
        w.chain.release_held() > 0,
        "the held transaction lands late"
    );
    w.chain.set_default_behaviour(SendBehaviour::Land);
    w.chain.set_ticking(true);
    earn(&mut farm, &vals, &mut rng).await;
    w.all_paid(15).await;
    // New earnings waiting as the paused leader wakes up.
    earn(&mut farm, &vals, &mut rng).await;
    leader.signal(libc::SIGCONT);
    eventually(
        10,
        "the resumed hub to know it is not the leader",
        || async { (leader.metric("uptime_hub_is_leader").await == Some(0.0)).then_some(()) },
    )
    .await;
    // Five of its payout intervals in which it could still try to pay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.all_paid(15).await;
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payout_batches
          WHERE epoch <= $1 AND created_at > to_timestamp($2 / 1000.0)",
    )
    .bind(old_epoch)
    .bind(paused_at)
    .fetch_one(w.db.pool())
    .await
    .unwrap();
    assert_eq!(late, 0, "the resumed leader wrote no new batch");
    let new_epoch = other.metric("uptime_hub_leader_epoch").await.unwrap() as i64;
    assert!(new_epoch > old_epoch);
    w.audit(&vals).await;
}

/// The leader aborts at each armed crash point (a real process death);
/// the next one recovers. Then kill -9 at random moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_that_die_at_any_step_pay_exactly_once() {
    let w = World::new().await;
    let mut farm = Farm::new(&w.db).await;
    let mut vals = Vec::new();
    for n in 0..7 {
        vals.push(farm.validator(n).await);
    }
    let mut rng = fastrand::Rng::with_seed(5);
    for point in ["after_claim", "after_sign", "after_send", "before_confirm"] {
        let mut env = w.env();
        env.push(("HUB_PAYOUT_CRASH_AT", point.into()));
        let h = HubProc::start(&w.db, "hub-crash", free_port(), &env).await;
        earn(&mut farm, &vals, &mut rng).await;
        let status = h.wait_exit(20).await;
        assert!(!status.success(), "{point}: the hub aborted");
        let h = HubProc::start(&w.db, "hub-next", free_port(), &w.env()).await;
        w.all_paid(20).await;
        h.kill9().await;
        w.audit(&vals).await;
    }
    for i in 0..3 {
        // Held transactions make "sent but unconfirmed" likely at the kill.
        w.chain.set_default_behaviour(if i % 2 == 0 {
            SendBehaviour::Hold
        } else {
            SendBehaviour::Land
        });
        earn(&mut farm, &vals, &mut rng).await;
        let h = HubProc::start(&w.db, "hub-victim", free_port(), &w.env()).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(100..900))).await;
        h.kill9().await;
        w.chain.release_held();
        w.chain.set_default_behaviour(SendBehaviour::Land);
        let h = HubProc::start(&w.db, "hub-next", free_port(), &w.env()).await;
        w.all_paid(20).await;
        h.kill9().await;
        w.audit(&vals).await;
    }
}

/// A real hub paying through RPC URLs that carry a provider's key (in the
/// userinfo and the query) logs them as `scheme://host:port/…` only, also in
/// the errors it logs while the RPC is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_never_logs_the_rpc_url_whole() {
    use tokio::io::AsyncReadExt;
    let w = World::new().await;
    let mut farm = Farm::new(&w.db).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 2 * MIN, true)], &[]).await;
    let secret = w.chain.url().replace("http://", "http://user:SECRETPW@") + "/?api-key=SECRETKEY";
    let mut env = w.env();
    env.retain(|(k, _)| *k != "HUB_PAYOUT_RPC_URL");
    env.push(("HUB_PAYOUT_RPC_URL", secret.clone()));
    env.push(("HUB_PAYOUT_HISTORY_RPC_URL", secret));
    w.chain.set_unavailable(true);
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"));
    cmd.arg("serve")
        .env("HUB_DATABASE_URL", &w.db.url)
        .env("HUB_LISTEN", format!("127.0.0.1:{port}"))
        .env("HUB_TOKEN_KEYS", common::TOKEN_KEYS)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, val) in &env {
        cmd.env(k, val);
    }
    let mut child = cmd.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = tokio::spawn(async move {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
        a.extend(b);
        String::from_utf8_lossy(&a).into_owned()
    });
    // A few failing cycles, then the RPC is back and the payout is made.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    w.chain.set_unavailable(false);
    w.all_paid(20).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let log = read.await.unwrap();
    assert!(log.contains("payouts enabled"), "{log}");
    assert!(log.contains("payout cycle failed"), "{log}");
    let shown = format!("{}/…", w.chain.url());
    assert!(log.contains(&shown), "{log}");
    assert!(!log.contains("SECRET"), "{log}");
    w.audit(&[v]).await;
}
