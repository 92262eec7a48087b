//! Payout test helpers: earnings seeded as real rounds and ticks, a payer
//! leading a fresh epoch, the litesvm chain, and the audit every payout
//! test ends with.

use std::collections::HashMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use solana_keypair::Keypair;
use solana_signer::Signer;
use tokio::sync::watch;
use uuid::Uuid;

use hub::cluster::leader::{Term, PAYOUT_ROLE};
use hub::metrics::Metrics;
use hub::payouts::{CrashAction, CrashPoint, Payer, PayoutConfig};
use protocol::PublicKey;
use store::{NewRound, NewTick, RoundId, Store, ValidatorId, WebsiteId};
use test_support::solana::{ChainConfig, SolanaRpc};
use test_support::TestDb;

pub const MIN: i64 = 890_880;
pub const VALIDITY: u64 = 20;

/// Earnings seeded as rounds and ticks of one website.
pub struct Farm {
    store: Store,
    website: WebsiteId,
    slot: i64,
    base_ms: i64,
}

pub struct Val {
    pub id: ValidatorId,
    pub key: SigningKey,
    /// Its account, when not `key`'s public key (see [`Farm::account`]).
    pub account: Option<[u8; 32]>,
}

impl Val {
    pub fn bytes(&self) -> [u8; 32] {
        self.account
            .unwrap_or_else(|| self.key.verifying_key().to_bytes())
    }
}

impl Farm {
    pub async fn new(db: &TestDb) -> Self {
        // Disabled: hubs in these tests must not schedule it themselves.
        let site = super::add_site(db, "http://127.0.0.1:1023/farm", 60, 1_000, None).await;
        db.store.set_website_enabled(site, false).await.unwrap();
        Self {
            store: db.store.clone(),
            website: site,
            slot: 0,
            base_ms: protocol::now_ms() - 3_600_000,
        }
    }

    pub async fn validator(&self, n: u64) -> Val {
        let key = SigningKey::from_bytes(&{
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&n.to_le_bytes());
            b[8] = 0xa5;
            b
        });
        let id = self
            .store
            .upsert_validator(&PublicKey::from(&key).to_string(), "eu", &[], "test")
            .await
            .unwrap();
        Val {
            id,
            key,
            account: None,
        }
    }

    /// A validator registered under any account, say one that cannot
    /// receive lamports (no one holds its secret key; `key` is unused).
    pub async fn account(&self, account: [u8; 32]) -> Val {
        let public_key = solana_pubkey::Pubkey::new_from_array(account).to_string();
        let id = self
            .store
            .upsert_validator(&public_key, "eu", &[], "test")
            .await
            .unwrap();
        Val {
            id,
            key: SigningKey::from_bytes(&[0xee; 32]),
            account: Some(account),
        }
    }

    /// One closed round in which each `(validator, lamports, up)` has a
    /// tick with that reward, received 20 ms after the scheduled time;
    /// `replaced` lists validators whose task was replaced, and when (ms
    /// after the scheduled time). A lone tick gets a witness beside it (a
    /// validator of its own that earns nothing and agrees), so the round is
    /// decided and the tick earns: a round with one result is `unknown`,
    /// and pays nothing (`tick_rewards`, migrations/20261202000004).
    pub async fn round(
        &mut self,
        ticks: &[(&Val, i64, bool)],
        replaced: &[(&Val, i64)],
    ) -> RoundId {
        if let [(_, _, up)] = ticks {
            let witness = self.validator(0xffff_ffff).await;
            let with: Vec<(&Val, i64, bool)> = vec![ticks[0], (&witness, 0, *up)];
            return self.round_alone(&with, replaced).await;
        }
        self.round_alone(ticks, replaced).await
    }

    /// As [`Self::round`], without a witness.
    pub async fn round_alone(
        &mut self,
        ticks: &[(&Val, i64, bool)],
        replaced: &[(&Val, i64)],
    ) -> RoundId {
        self.slot += 1;
        let sched = self.base_ms + self.slot * 1000;
        let opened = self
            .store
            .open_rounds(
                "test",
                &[NewRound {
                    website_id: self.website,
                    slot: self.slot,
                    scheduled_at_ms: sched,
                    deadline_ms: sched + 500,
                }],
            )
            .await
            .unwrap();
        let round = opened[0].round_id;
        let mut task_of = HashMap::new();
        let rows: Vec<NewTick> = ticks
            .iter()
            .map(|(v, lamports, up)| {
                let task = Uuid::now_v7();
                task_of.insert(v.id, task);
                NewTick {
                    website_id: self.website,
                    round_id: round,
                    validator_id: v.id,
                    task_id: task,
                    scheduled_at_ms: sched,
                    up: *up,
                    http_status: Some(200),
                    latency_ms: 5,
                    error: None,
                    checked_at_ms: sched + 10,
                    received_at_ms: sched + 20,
                    reward_lamports: *lamports,
                    evidence: None,
                }
            })
            .collect();
        self.store.insert_ticks("test", &rows).await.unwrap();
        let repl: Vec<(RoundId, Uuid, i64)> = replaced
            .iter()
            .map(|(v, at)| (round, task_of[&v.id], sched + at))
            .collect();
        self.store
            .close_rounds(&[round], "test", &repl)
            .await
            .unwrap();
        // Closed long ago, so any settle delay has passed.
        sqlx::query("UPDATE rounds SET closed_at = now() - interval '1 hour' WHERE id = $1")
            .bind(round)
            .execute(self.store.pool())
            .await
            .unwrap();
        round
    }
}

pub fn config(crash: Option<CrashPoint>) -> PayoutConfig {
    PayoutConfig {
        interval: Duration::from_millis(200),
        min_lamports: MIN,
        max_transfers: 3,
        max_attempts: 100,
        settle_delay: Duration::ZERO,
        confirm_timeout: Duration::from_millis(150),
        poll_every: Duration::from_millis(20),
        commitment: solana_commitment_config::CommitmentConfig::finalized(),
        history_rpc_url: None,
        priority_fee_micro_lamports: 0,
        daily_cap_lamports: 0,
        probation: store::Probation::default(),
        crash: crash.map(|p| (p, CrashAction::Stop)),
    }
}

/// A payer leading a fresh epoch (taken from the database).
pub async fn leader(
    db: &TestDb,
    chain: &SolanaRpc,
    treasury: &Keypair,
    crash: Option<CrashPoint>,
) -> (Payer, watch::Sender<Option<Term>>, i64) {
    leader_with(db, chain, treasury, config(crash)).await
}

pub async fn leader_with(
    db: &TestDb,
    chain: &SolanaRpc,
    treasury: &Keypair,
    cfg: PayoutConfig,
) -> (Payer, watch::Sender<Option<Term>>, i64) {
    leader_on(db, &chain.url(), treasury, cfg).await
}

/// A payer leading a fresh epoch, paying through the RPC at `rpc_url`.
pub async fn leader_on(
    db: &TestDb,
    rpc_url: &str,
    treasury: &Keypair,
    cfg: PayoutConfig,
) -> (Payer, watch::Sender<Option<Term>>, i64) {
    let metrics = std::sync::Arc::new(Metrics::new("test"));
    leader_full(db, rpc_url, treasury, cfg, metrics).await
}

/// Like [`leader_on`], reporting to `metrics`.
pub async fn leader_full(
    db: &TestDb,
    rpc_url: &str,
    treasury: &Keypair,
    cfg: PayoutConfig,
    metrics: std::sync::Arc<Metrics>,
) -> (Payer, watch::Sender<Option<Term>>, i64) {
    let epoch = db.store.next_epoch(PAYOUT_ROLE).await.unwrap();
    let (tx, rx) = watch::channel(Some(Term {
        epoch,
        lease_until: tokio::time::Instant::now() + Duration::from_secs(3600),
    }));
    let payer = Payer::new(
        db.store.clone(),
        rpc_url,
        treasury.insecure_clone(),
        cfg,
        metrics,
        rx,
    );
    (payer, tx, epoch)
}

/// A fresh database, chain and treasury funded with `start` lamports, and
/// a farm to seed earnings.
pub struct Setup {
    pub db: TestDb,
    pub chain: SolanaRpc,
    pub treasury: Keypair,
    pub start: u64,
    pub farm: Farm,
}

pub async fn setup(start: u64) -> Setup {
    let db = TestDb::new().await.unwrap();
    let chain = chain().await;
    let treasury = Keypair::new();
    chain.airdrop(treasury.pubkey().to_bytes(), start);
    let farm = Farm::new(&db).await;
    Setup {
        db,
        chain,
        treasury,
        start,
        farm,
    }
}

pub async fn chain() -> SolanaRpc {
    SolanaRpc::start(ChainConfig {
        blockhash_validity: VALIDITY,
        block_interval: None,
        lamports_per_signature: 5_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

pub async fn scalar(db: &TestDb, sql: &str, v: ValidatorId) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(v)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

pub async fn paid(db: &TestDb, v: &Val) -> i64 {
    scalar(
        db,
        "SELECT COALESCE(sum(lamports), 0)::int8 FROM payouts WHERE validator_id = $1 AND state = 'paid'",
        v.id,
    )
    .await
}

pub async fn ledger(db: &TestDb, v: &Val) -> (i64, i64) {
    let earned = scalar(
        db,
        "SELECT COALESCE((SELECT earned_lamports FROM validator_ledger WHERE validator_id = $1), 0)",
        v.id,
    )
    .await;
    let claimed = scalar(
        db,
        "SELECT COALESCE((SELECT claimed_lamports FROM validator_ledger WHERE validator_id = $1), 0)",
        v.id,
    )
    .await;
    (earned, claimed)
}

/// Nothing waits: no unfinished batch, no waiting payout, nothing claimable.
pub async fn settled_up(db: &TestDb) -> bool {
    let open: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM payout_batches WHERE state IN ('signed', 'sent'))
              + (SELECT count(*) FROM payouts WHERE state IN ('claimed', 'insufficient_funds', 'batched'))
              + (SELECT count(*) FROM validator_ledger WHERE earned_lamports - claimed_lamports >= $1)
              + (SELECT count(*) FROM rounds WHERE settled_at IS NULL AND status <> 'open')",
    )
    .bind(MIN)
    .fetch_one(db.pool())
    .await
    .unwrap();
    open == 0
}

/// The audit every test ends with: on chain, each validator received
/// exactly what the ledger marks paid; every landed payout transaction is
/// a confirmed batch; the treasury lost exactly payouts + fees.
pub async fn audit(db: &TestDb, chain: &SolanaRpc, treasury: &Keypair, start: u64, vals: &[Val]) {
    let mut total = 0i64;
    for v in vals {
        let got = chain.received(v.bytes()) as i64;
        assert_eq!(got, paid(db, v).await, "validator {} received", v.id);
        let (earned, claimed) = ledger(db, v).await;
        assert!(claimed <= earned);
        total += got;
    }
    let tre = treasury.pubkey().to_bytes();
    let landed: Vec<_> = chain
        .landed()
        .into_iter()
        .filter(|l| l.transfers.iter().any(|t| t.from == tre))
        .collect();
    let confirmed: Vec<String> = sqlx::query_scalar(
        "SELECT signature FROM payout_batches WHERE state = 'confirmed' ORDER BY signature",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut ok: Vec<String> = landed
        .iter()
        .filter(|l| l.ok)
        .map(|l| l.signature.clone())
        .collect();
    ok.sort();
    assert_eq!(
        ok, confirmed,
        "landed payout transactions = confirmed batches"
    );
    let fees: u64 = landed.iter().map(|l| l.fee).sum();
    assert_eq!(
        chain.balance(tre),
        start - total as u64 - fees,
        "treasury lost exactly the payouts and fees"
    );
}
