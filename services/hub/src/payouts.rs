//! Payouts, run only by the leader: settle closed rounds into the ledger,
//! claim unclaimed earnings into payouts, pay them in SOL, and find out
//! what happened to every transaction a previous leader sent.
//!
//! Exactly once rests on three rules (docs/ARCHITECTURE.md, "Payouts"):
//! 1. every write carries the leader's fencing epoch and PostgreSQL refuses
//!    it unless the epoch is the newest (so a stale leader writes nothing);
//! 2. a transaction is stored, signed, with its signature and last valid
//!    block height, *before* it is sent; only that stored transaction is
//!    ever re-sent;
//! 3. a payout leaves a batch only when the batch provably did not pay: it
//!    landed with an error, or the chain's finalized block height is past the
//!    batch's last valid block height and its signature is unknown (height
//!    and slot read first, in one `getEpochInfo` response, so a landing
//!    cannot slip in between), to a node that has seen that slot (the status
//!    response's context slot) and keeps history back to the slot the batch
//!    was signed at (`minimumLedgerSlot`, checked every cycle: an RPC pool
//!    may mix nodes that are behind or forget).
//!
//! Before each step the payer checks that its term is still valid on its
//! own monotonic clock; a paused leader stops when it wakes.
//!
//! A ledger restored from an older backup forgets what was paid after the
//! backup. Two more rules keep it from paying that again (docs/ARCHITECTURE.md,
//! "After a restore"):
//! 4. before claiming anything, every cycle reads the treasury's finalized
//!    transactions since the reconciliation cursor (kept in the same
//!    database, so a restore rolls it back with the ledger) and records as
//!    paid the transfers of any transaction no batch here knows;
//! 5. a payer that has just started claims and pays nothing until the
//!    chain's finalized block height is past the last valid height of the
//!    newest blockhash at its start (plus a margin): by then any
//!    transaction a payer before it signed has landed, and is listed, or
//!    can never land.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use solana_commitment_config::CommitmentConfig;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_rpc_client::api::client_error::ErrorKind as RpcErrorKind;
use solana_rpc_client::api::config::{
    RpcSendTransactionConfig, RpcTransactionConfig, UiTransactionEncoding,
};
use solana_rpc_client::api::request::{RpcError as RpcResponseError, RpcRequest};
use solana_rpc_client::api::response::RpcConfirmedTransactionStatusWithSignature;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_signer::Signer;
use solana_transaction::Transaction;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use store::{BatchOutcome, FoundBatch, NewBatch, Store, StoreError, UnfinishedBatch};

use crate::cluster::leader::Leadership;
use crate::metrics::Metrics;

/// Rounds settled per statement.
const SETTLE_LIMIT: i64 = 5_000;
/// Payouts claimed per cycle.
const CLAIM_LIMIT: i64 = 10_000;
/// Transactions built per cycle.
const BATCHES_PER_CYCLE: usize = 50;
/// How often a transaction awaiting confirmation is re-sent.
const RESEND_EVERY: Duration = Duration::from_secs(2);
/// Compute units asked per instruction when a priority fee is set (a system
/// transfer and a compute-budget instruction use 150 each); the fee is the
/// unit price times this limit, so it is kept small.
const UNITS_PER_INSTRUCTION: u32 = 450;
/// Signatures per `getSignaturesForAddress` page (the RPC's maximum).
const SIGNATURE_PAGE: usize = 1_000;
/// Blocks added to the last valid height of the newest blockhash seen at
/// start before a payer may pay: another RPC node may have been a little
/// ahead of ours when a payer before us signed.
const START_FENCE_MARGIN_BLOCKS: u64 = 32;
/// With no reconciled slot yet: how much older than the cursor's creation a
/// treasury transaction may be and still be read (clock skew).
const SINCE_MARGIN_SECS: i64 = 600;
/// `fence` values: not armed yet (pay nothing), passed (pay).
const FENCE_NOT_ARMED: u64 = u64::MAX;
const FENCE_PASSED: u64 = 0;
/// The JSON-RPC error of a node whose view is below `minContextSlot`.
const MIN_CONTEXT_SLOT_NOT_REACHED: i64 = -32016;

/// A JSON-RPC URL. Providers put API keys in the path, the query or the
/// userinfo, so `Debug` and `Display` show `scheme://host[:port]` only
/// (with `/…` when something was left out); [`RpcUrl::expose`] gives the
/// whole URL, for the RPC client alone.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RpcUrl(String);

impl RpcUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL, secrets included: only for the RPC client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An `http://` or `https://` URL.
    pub fn is_http(&self) -> bool {
        url::Url::parse(&self.0).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    }
}

impl fmt::Display for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        let Ok(u) = url::Url::parse(&self.0) else {
            return f.write_str("(unparsable URL)");
        };
        write!(f, "{}://{}", u.scheme(), u.host_str().unwrap_or(""))?;
        if let Some(port) = u.port() {
            write!(f, ":{port}")?;
        }
        let hidden = !u.username().is_empty()
            || u.password().is_some()
            || u.path() != "/"
            || u.query().is_some()
            || u.fragment().is_some();
        if hidden {
            f.write_str("/…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RpcUrl({self})")
    }
}

impl From<&str> for RpcUrl {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for RpcUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&String> for RpcUrl {
    fn from(s: &String) -> Self {
        Self(s.clone())
    }
}

impl From<&RpcUrl> for RpcUrl {
    fn from(u: &RpcUrl) -> Self {
        u.clone()
    }
}

/// A step after which tests can make the leader die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Payouts claimed, nothing signed.
    AfterClaim,
    /// A transaction stored, not sent.
    AfterSign,
    /// Sent, not yet recorded as sent.
    AfterSend,
    /// Recorded as sent, confirmation not awaited.
    BeforeConfirm,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 4] = [
        CrashPoint::AfterClaim,
        CrashPoint::AfterSign,
        CrashPoint::AfterSend,
        CrashPoint::BeforeConfirm,
    ];
}

impl FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "after_claim" => Ok(Self::AfterClaim),
            "after_sign" => Ok(Self::AfterSign),
            "after_send" => Ok(Self::AfterSend),
            "before_confirm" => Ok(Self::BeforeConfirm),
            _ => Err(format!(
                "{s:?} is not one of after_claim, after_sign, after_send, before_confirm"
            )),
        }
    }
}

/// What a crash point does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAction {
    /// `std::process::abort()`: the process dies on the spot.
    Abort,
    /// The cycle returns [`PayoutError::Crashed`] and the payer writes and
    /// sends nothing more (in-process tests drop it, as if it died).
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("not the leader (or the lease ran out)")]
    NotLeader,
    #[error("{0}")]
    Stale(StoreError),
    #[error("crashed at {0:?} (fault injection)")]
    Crashed(CrashPoint),
    #[error(
        "the history RPC keeps slots from {kept} on, but {what} needs slot {needed}: payouts \
         stop until HUB_PAYOUT_HISTORY_RPC_URL points at a node with that history"
    )]
    HistoryGap {
        needed: u64,
        kept: u64,
        what: &'static str,
    },
    #[error("database: {0}")]
    Store(StoreError),
    #[error("solana rpc: {0}")]
    Rpc(#[from] Box<solana_rpc_client::api::client_error::Error>),
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for PayoutError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleEpoch(_) => Self::Stale(e),
            e => Self::Store(e),
        }
    }
}

/// An RPC client error without the request URL (which may carry an API
/// key): reqwest puts it in both `Display` and `Debug`.
fn rpc_err(mut e: solana_rpc_client::api::client_error::Error) -> PayoutError {
    if let RpcErrorKind::Reqwest(r) = *e.kind {
        e.kind = Box::new(RpcErrorKind::Reqwest(r.without_url()));
    }
    PayoutError::Rpc(Box::new(e))
}

#[derive(Debug, Clone)]
pub struct PayoutConfig {
    pub interval: Duration,
    pub min_lamports: i64,
    pub max_transfers: usize,
    pub max_attempts: i32,
    pub settle_delay: Duration,
    pub confirm_timeout: Duration,
    /// How often a cycle polls its transactions' status.
    pub poll_every: Duration,
    pub commitment: CommitmentConfig,
    /// Where signature statuses are looked up; `None`: the main RPC.
    pub history_rpc_url: Option<RpcUrl>,
    /// Compute-unit price, micro-lamports; 0: no priority fee.
    pub priority_fee_micro_lamports: u64,
    /// Lamports batches may spend per UTC day; 0: no cap.
    pub daily_cap_lamports: u64,
    /// When settlement ends a new key's probation.
    pub probation: store::Probation,
    pub crash: Option<(CrashPoint, CrashAction)>,
}

const DAY_MS: i64 = 86_400_000;

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub rounds_settled: i64,
    pub payouts_claimed: u64,
    pub batches_sent: usize,
    pub batches_confirmed: usize,
    pub batches_abandoned: usize,
    pub insufficient_funds: usize,
    pub lamports_confirmed: i64,
    /// Payouts left waiting because the daily spend cap is reached.
    pub capped: usize,
    /// Batches still unconfirmed when the cycle ended.
    pub unfinished: usize,
    /// Treasury transactions found on chain that no batch knew, recorded.
    pub found_batches: usize,
    /// Nothing was claimed or paid: reconciliation could not finish (the
    /// node answering was behind), or a payer that just started waits for
    /// older blockhashes to expire.
    pub held_back: bool,
}

pub struct Payer {
    store: Store,
    rpc: RpcClient,
    /// For signature statuses and `minimumLedgerSlot` (may be `rpc`'s URL).
    history: RpcClient,
    rpc_url: RpcUrl,
    history_url: RpcUrl,
    treasury: Keypair,
    cfg: PayoutConfig,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    /// The finalized block height that must be passed before paying (rule
    /// 5), or [`FENCE_NOT_ARMED`] / [`FENCE_PASSED`].
    fence: AtomicU64,
    /// Signatures of found transactions already counted and logged.
    reported: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What became of a batch when looked up.
#[derive(PartialEq, Eq)]
enum Resolution {
    Confirmed,
    Abandoned,
    Waiting,
}

impl Payer {
    pub fn new(
        store: Store,
        rpc_url: impl Into<RpcUrl>,
        treasury: Keypair,
        cfg: PayoutConfig,
        metrics: Arc<Metrics>,
        leadership: Leadership,
    ) -> Self {
        let rpc_url = rpc_url.into();
        let history_url = cfg
            .history_rpc_url
            .clone()
            .unwrap_or_else(|| rpc_url.clone());
        let client = |url: &RpcUrl| {
            RpcClient::new_with_timeout_and_commitment(
                url.expose().to_owned(),
                Duration::from_secs(10),
                cfg.commitment,
            )
        };
        Self {
            store,
            rpc: client(&rpc_url),
            history: client(&history_url),
            rpc_url,
            history_url,
            treasury,
            cfg,
            metrics,
            leadership,
            // `run` arms it; a payer driven by `cycle` alone (tests) pays
            // at once.
            fence: AtomicU64::new(FENCE_PASSED),
            reported: Default::default(),
        }
    }

    /// Reads a Solana CLI keypair file (the treasury secret), refusing one
    /// others can read unless `allow_insecure` (`HUB_ALLOW_INSECURE_KEYPAIR`).
    pub fn read_treasury(path: &std::path::Path, allow_insecure: bool) -> anyhow::Result<Keypair> {
        let key = protocol::keypair::read_with(path, allow_insecure).map_err(|e| match e {
            protocol::keypair::KeypairError::Insecure { .. } => {
                anyhow::anyhow!("{e} (HUB_ALLOW_INSECURE_KEYPAIR=true)")
            }
            e => e.into(),
        })?;
        Ok(Keypair::new_from_array(key.to_bytes()))
    }

    pub fn treasury(&self) -> Pubkey {
        self.treasury.pubkey()
    }

    /// The epoch of the current term, if this hub holds a valid one.
    fn term_epoch(&self) -> Option<i64> {
        self.leadership
            .borrow()
            .filter(|t| t.valid())
            .map(|t| t.epoch)
    }

    /// Still the leader of `epoch`, by the lease on our own clock?
    fn guard(&self, epoch: i64) -> Result<(), PayoutError> {
        match self.term_epoch() {
            Some(e) if e == epoch => Ok(()),
            _ => Err(PayoutError::NotLeader),
        }
    }

    fn crash_point(&self, at: CrashPoint) -> Result<(), PayoutError> {
        match self.cfg.crash {
            Some((p, CrashAction::Abort)) if p == at => {
                tracing::error!(point = ?at, "payout crash point reached: aborting (fault injection)");
                std::process::abort();
            }
            Some((p, CrashAction::Stop)) if p == at => Err(PayoutError::Crashed(at)),
            _ => Ok(()),
        }
    }

    /// Checks that the history RPC keeps every slot an unfinished batch may
    /// have landed in: its `minimumLedgerSlot` is at most the oldest
    /// unfinished batch's signed slot. Sets the gap metric either way.
    pub async fn check_history(&self) -> Result<(), PayoutError> {
        let oldest = self
            .store
            .unfinished_batches()
            .await?
            .iter()
            .map(|b| b.signed_slot)
            .min();
        let Some(needed) = oldest else {
            self.metrics.payout_history_gap.set(0);
            return Ok(());
        };
        let kept = self.history.minimum_ledger_slot().await.map_err(rpc_err)?;
        if kept > needed {
            self.metrics.payout_history_gap.set(1);
            return Err(PayoutError::HistoryGap {
                needed,
                kept,
                what: "the oldest unfinished payout batch (signed there)",
            });
        }
        self.metrics.payout_history_gap.set(0);
        Ok(())
    }

    /// Arms rule 5: no claim or payment until the finalized block height is
    /// past the last valid height of the newest blockhash now, plus a
    /// margin. `run` calls it at start.
    pub async fn arm_start_fence(&self) -> Result<u64, PayoutError> {
        let (_, last_valid) = self
            .rpc
            .get_latest_blockhash_with_commitment(CommitmentConfig::processed())
            .await
            .map_err(rpc_err)?;
        let fence = last_valid + START_FENCE_MARGIN_BLOCKS;
        self.fence.store(fence, Ordering::SeqCst);
        tracing::info!(
            until_block_height = fence,
            "payouts wait until every blockhash a payer before this one could have signed with has expired"
        );
        Ok(fence)
    }

    /// Whether rule 5 lets this payer claim and pay, given the finalized
    /// block height its reconciliation read (with the slot it reconciled
    /// through, from one response): every transaction signed before this
    /// payer started had a last valid height below the fence, so once the
    /// reconciled height is past it, each either landed at or before the
    /// reconciled slot, and was listed, or can never land. Arms the fence
    /// first if `run` could not.
    async fn fence_passed(&self, reconciled_height: u64) -> Result<bool, PayoutError> {
        let mut fence = self.fence.load(Ordering::SeqCst);
        if fence == FENCE_PASSED {
            return Ok(true);
        }
        if fence == FENCE_NOT_ARMED {
            fence = self.arm_start_fence().await?;
        }
        if reconciled_height > fence {
            self.fence.store(FENCE_PASSED, Ordering::SeqCst);
            self.metrics.payout_start_wait_blocks.set(0);
            tracing::info!(
                block_height = reconciled_height,
                "payouts may start: blockhashes from before this payer started have expired"
            );
            return Ok(true);
        }
        self.metrics
            .payout_start_wait_blocks
            .set((fence + 1 - reconciled_height) as i64);
        Ok(false)
    }

    /// Rule 4: records as paid the transfers of every successful treasury
    /// transaction finalized since the cursor that no batch here knows,
    /// then moves the cursor. Returns the finalized block height read with
    /// the slot it reconciled through, or `None` when it could not finish
    /// (a node behind that slot, a listing that did not reach back to the
    /// cursor, a transaction the node would not serve, a validator with a
    /// batch still unresolved): nothing may be claimed or paid this cycle.
    async fn reconcile(
        &self,
        epoch: i64,
        report: &mut CycleReport,
    ) -> Result<Option<u64>, PayoutError> {
        let cursor = self.store.chain_cursor().await?;
        let info = self
            .history
            .get_epoch_info_with_commitment(CommitmentConfig::finalized())
            .await
            .map_err(rpc_err)?;
        let tip = info.absolute_slot;
        if let Some(slot) = cursor.slot {
            let kept = self.history.minimum_ledger_slot().await.map_err(rpc_err)?;
            if kept > slot + 1 {
                self.metrics.payout_history_gap.set(1);
                return Err(PayoutError::HistoryGap {
                    needed: slot + 1,
                    kept,
                    what: "reconciling the treasury's transactions since the last reconciled slot",
                });
            }
        }
        let treasury = self.treasury.pubkey().to_string();
        // Newest first, back to the cursor. Complete only if the listing
        // reaches an entry at or below the cursor's slot (a node with a
        // shorter history, or one that does not know a page's `before`,
        // answers short), or, where the cursor has seen no transaction, if
        // it ends.
        let mut listed: Vec<RpcConfirmedTransactionStatusWithSignature> = Vec::new();
        let mut before: Option<String> = None;
        let mut reached = false;
        'pages: loop {
            let page: Vec<RpcConfirmedTransactionStatusWithSignature> = match self
                .history
                .send(
                    RpcRequest::GetSignaturesForAddress,
                    serde_json::json!([treasury, {
                        "limit": SIGNATURE_PAGE,
                        "before": before,
                        "commitment": "finalized",
                        "minContextSlot": tip,
                    }]),
                )
                .await
            {
                Ok(page) => page,
                Err(e) if min_context_slot_not_reached(&e) => {
                    tracing::debug!(slot = tip, "history listed by a node behind the finalized slot read first; reconciling again next cycle");
                    return Ok(None);
                }
                Err(e) => return Err(rpc_err(e)),
            };
            let full = page.len() >= SIGNATURE_PAGE;
            before = page.last().map(|e| e.signature.clone());
            for e in page {
                let older = match cursor.slot {
                    Some(slot) => e.slot <= slot,
                    None => e
                        .block_time
                        .is_some_and(|t| t < cursor.since_unix - SINCE_MARGIN_SECS),
                };
                if older {
                    reached = true;
                    break 'pages;
                }
                // Finalized after the slot read first: the next cycle.
                if e.slot <= tip {
                    listed.push(e);
                }
            }
            if !full {
                break;
            }
        }
        if !reached && cursor.slot.is_some() && cursor.signature.is_some() {
            tracing::debug!(slot = tip, "the treasury's history was listed short of the reconciled slot; reconciling again next cycle");
            return Ok(None);
        }
        listed.reverse();
        // The cursor stays one slot back, so the finalized slot read first
        // is listed once more next cycle: cheap (known signatures are
        // skipped), and safe with a node that calls the slot it is still
        // filling finalized.
        let new_slot = tip.saturating_sub(1);
        let newest = listed
            .iter()
            .rev()
            .find(|e| e.slot <= new_slot)
            .map(|e| e.signature.clone())
            .or(cursor.signature);
        // Failed transactions moved nothing but their fee.
        let landed: Vec<&RpcConfirmedTransactionStatusWithSignature> =
            listed.iter().filter(|e| e.err.is_none()).collect();
        let signatures: Vec<String> = landed.iter().map(|e| e.signature.clone()).collect();
        let known = if signatures.is_empty() {
            Default::default()
        } else {
            self.store.known_signatures(&signatures).await?
        };
        for e in landed.iter().filter(|e| !known.contains(&e.signature)) {
            if !self.record_found(epoch, &e.signature, report).await? {
                return Ok(None);
            }
        }
        self.guard(epoch)?;
        self.store
            .set_chain_cursor(epoch, new_slot, newest.as_deref())
            .await?;
        Ok(Some(info.block_height))
    }

    /// Fetches one unknown treasury transaction and records its transfers
    /// out of the treasury. False if it could not be recorded yet.
    async fn record_found(
        &self,
        epoch: i64,
        signature: &str,
        report: &mut CycleReport,
    ) -> Result<bool, PayoutError> {
        let sig = solana_transaction::Signature::from_str(signature)
            .map_err(|e| PayoutError::Other(format!("listed signature {signature:?}: {e}")))?;
        let cfg = RpcTransactionConfig {
            encoding: Some(UiTransactionEncoding::Base64),
            commitment: Some(CommitmentConfig::finalized()),
            max_supported_transaction_version: Some(0),
        };
        let fetched = match self.history.get_transaction_with_config(&sig, cfg).await {
            Ok(t) => t,
            Err(e) => {
                let e = rpc_err(e);
                tracing::warn!(%signature, error = %e, "fetching a treasury transaction the ledger does not know failed; reconciling again next cycle");
                return Ok(false);
            }
        };
        let Some(tx) = fetched.transaction.transaction.decode() else {
            return Err(PayoutError::Other(format!(
                "treasury transaction {signature} could not be decoded"
            )));
        };
        let fee = fetched.transaction.meta.as_ref().map_or(0, |m| m.fee);
        let treasury = self.treasury.pubkey();
        let transfers: Vec<(String, i64)> = treasury_transfers(&tx.message, &treasury)
            .into_iter()
            .map(|(to, lamports)| (to.to_string(), lamports as i64))
            .collect();
        if transfers.is_empty() {
            // A deposit, or anything else that moved nothing out.
            return Ok(true);
        }
        let found = FoundBatch {
            signature: signature.to_owned(),
            transaction: wincode::serialize(&tx)
                .map_err(|e| PayoutError::Other(format!("serializing a transaction: {e}")))?,
            blockhash: tx.message.recent_blockhash().to_string(),
            slot: fetched.slot,
            block_time: fetched.block_time,
            fee_lamports: fee as i64,
            transfers,
        };
        self.guard(epoch)?;
        let out = self
            .store
            .record_found_batch(epoch, &found, self.cfg.settle_delay)
            .await?;
        if out.blocked {
            tracing::info!(%signature, "a treasury transaction the ledger does not know pays a validator whose payout is in a batch not resolved yet; recorded once that batch is");
            return Ok(false);
        }
        if out.known || !self.first_report(signature) {
            return Ok(true);
        }
        let count = |what: &str, n: usize| {
            self.metrics
                .payout_found_transfers
                .with_label_values(&[what])
                .inc_by(n as u64)
        };
        count("matched", out.matched);
        count("added", out.added);
        count("unknown_account", out.unknown.len());
        report.found_batches += 1;
        tracing::warn!(
            %signature,
            slot = fetched.slot,
            lamports = out.lamports,
            matched = out.matched,
            added = out.added,
            unknown_accounts = out.unknown.len(),
            "the treasury paid a transaction no payout batch knew (a database restored from an older backup, or the treasury key used elsewhere): its transfers are recorded as paid"
        );
        for (to, lamports) in &out.unknown {
            tracing::warn!(%signature, account = %to, lamports, "a transfer out of the treasury to an account no validator has: not recorded");
        }
        Ok(true)
    }

    /// Whether `signature` is reported (counted and logged) for the first
    /// time by this payer: a transaction with transfers only to unknown
    /// accounts writes no row, and the slot read last is listed again.
    fn first_report(&self, signature: &str) -> bool {
        let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 10_000 {
            seen.clear();
        }
        seen.insert(signature.to_owned())
    }

    /// Cycles every interval while leader, and at once on becoming leader,
    /// until `stop`. Returns after a `Stop` crash point.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            rpc = %self.rpc_url,
            history_rpc = %self.history_url,
            priority_fee_micro_lamports = self.cfg.priority_fee_micro_lamports,
            daily_cap_lamports = self.cfg.daily_cap_lamports,
            "payout RPC endpoints"
        );
        match self.check_history().await {
            Ok(()) => {}
            Err(e @ PayoutError::HistoryGap { .. }) => {
                tracing::error!(error = %e, "payouts cannot run against this history RPC");
            }
            Err(e) => tracing::warn!(error = %e, "checking the history RPC at start failed"),
        }
        self.fence.store(FENCE_NOT_ARMED, Ordering::SeqCst);
        if let Err(e) = self.arm_start_fence().await {
            tracing::warn!(error = %e, "reading the newest blockhash at start failed; payouts wait until it is read");
        }
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                r = self.leadership.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
            }
            if self.term_epoch().is_none() {
                continue;
            }
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.cycle() => r,
            };
            match outcome {
                Ok(r) => {
                    // Held back: settled and recovered, but nothing claimed
                    // or paid (a payer that just started, or reconciliation
                    // that could not finish); for long, payouts are stuck.
                    let outcome = if r.held_back { "held_back" } else { "ok" };
                    self.metrics
                        .payout_cycles
                        .with_label_values(&[outcome])
                        .inc();
                    if r != CycleReport::default() {
                        tracing::info!(?r, "payout cycle");
                    }
                }
                Err(PayoutError::NotLeader) => {
                    self.metrics
                        .payout_cycles
                        .with_label_values(&["not_leader"])
                        .inc();
                    tracing::info!("payout cycle stopped: no longer the leader");
                }
                Err(PayoutError::Stale(e)) => {
                    self.metrics
                        .payout_cycles
                        .with_label_values(&["stale_epoch"])
                        .inc();
                    tracing::warn!(error = %e, "payout cycle refused by the database");
                }
                Err(PayoutError::Crashed(p)) => {
                    tracing::error!(point = ?p, "payout crash point reached: payer stops");
                    return;
                }
                Err(e @ PayoutError::HistoryGap { .. }) => {
                    self.metrics
                        .payout_cycles
                        .with_label_values(&["history_gap"])
                        .inc();
                    tracing::error!(error = %e, history_rpc = %self.history_url, "payouts stopped");
                }
                Err(e) => {
                    self.metrics
                        .payout_cycles
                        .with_label_values(&["error"])
                        .inc();
                    tracing::warn!(error = %e, "payout cycle failed; the next one retries");
                }
            }
        }
    }

    /// One full cycle: check the history RPC, recover, settle, claim, pay,
    /// confirm. With a history gap nothing is looked up or sent.
    pub async fn cycle(&self) -> Result<CycleReport, PayoutError> {
        let epoch = self.term_epoch().ok_or(PayoutError::NotLeader)?;
        let mut report = CycleReport::default();
        // Settling needs no chain: it goes on whatever the history RPC keeps.
        self.settle(epoch, &mut report).await?;
        refresh_summary(&self.store, &self.metrics).await;
        self.check_history().await?;
        // Recover first: a batch of this ledger that landed explains a
        // transfer reconciliation would otherwise take for unknown.
        self.recover(epoch, &mut report).await?;
        let reconciled = self.reconcile(epoch, &mut report).await?;
        self.guard(epoch)?;
        let may_pay = match reconciled {
            Some(height) => self.fence_passed(height).await?,
            None => false,
        };
        if !may_pay {
            report.held_back = true;
            return self.backlog(report).await;
        }
        report.payouts_claimed = self
            .store
            .claim_payouts(epoch, self.cfg.min_lamports, CLAIM_LIMIT)
            .await?;
        self.metrics.payouts_claimed.inc_by(report.payouts_claimed);
        if report.payouts_claimed > 0 {
            self.crash_point(CrashPoint::AfterClaim)?;
        }
        let sent = self.pay(epoch, &mut report).await?;
        self.confirm(epoch, sent, &mut report).await?;
        self.backlog(report).await
    }

    /// Sets the backlog gauges; the cycle's report with its unfinished
    /// batches.
    async fn backlog(&self, mut report: CycleReport) -> Result<CycleReport, PayoutError> {
        let (unfinished, insufficient, failed) = self.store.payout_backlog().await?;
        report.unfinished = unfinished as usize;
        self.metrics.payout_batches_unfinished.set(unfinished);
        self.metrics.payouts_insufficient_funds.set(insufficient);
        self.metrics.payouts_failed.set(failed);
        let c = self.store.standings_seen(DAY_MS).await?;
        let by = &self.metrics.validators_by_standing;
        by.with_label_values(&["good"]).set(c.good);
        by.with_label_values(&["low_trust"]).set(c.low_trust);
        by.with_label_values(&["probation"]).set(c.probation);
        for (band, n) in store::TRUST_BANDS.iter().zip(c.trust_bands) {
            self.metrics
                .validators_by_trust
                .with_label_values(&[band])
                .set(n);
        }
        Ok(report)
    }

    /// Settles every round that is due.
    async fn settle(&self, epoch: i64, report: &mut CycleReport) -> Result<(), PayoutError> {
        loop {
            self.guard(epoch)?;
            let settled = self
                .store
                .settle_rounds_with(
                    epoch,
                    self.cfg.settle_delay,
                    SETTLE_LIMIT,
                    self.cfg.probation,
                )
                .await?;
            let rounds = settled.rounds;
            let judged = &self.metrics.results_judged;
            for (outcome, n) in [
                ("agreed", settled.agreed),
                ("disagreed", settled.disagreed),
                ("shadow_passed", settled.passed),
                ("shadow_failed", settled.failed),
            ] {
                judged.with_label_values(&[outcome]).inc_by(n as u64);
            }
            report.rounds_settled += rounds;
            self.metrics.rounds_settled.inc_by(rounds as u64);
            if rounds < SETTLE_LIMIT {
                return Ok(());
            }
        }
    }

    /// Finds out what became of every batch a previous cycle (or leader)
    /// left unfinished; re-sends those that may still land.
    async fn recover(&self, epoch: i64, report: &mut CycleReport) -> Result<(), PayoutError> {
        for b in self.store.unfinished_batches().await? {
            self.resolve(epoch, &b, true, report).await?;
        }
        Ok(())
    }

    /// Looks a batch up on chain and records the outcome. With `resend`, a
    /// batch that may still land is sent again (the same stored bytes).
    async fn resolve(
        &self,
        epoch: i64,
        b: &UnfinishedBatch,
        resend: bool,
        report: &mut CycleReport,
    ) -> Result<Resolution, PayoutError> {
        self.guard(epoch)?;
        let tx: Transaction = wincode::deserialize(&b.transaction)
            .map_err(|e| PayoutError::Other(format!("stored batch {} unreadable: {e}", b.id)))?;
        let Some(signature) = tx.signatures.first().copied() else {
            return Err(PayoutError::Other(format!(
                "stored batch {} unsigned",
                b.id
            )));
        };
        // Height first: if it is already past the last valid height, any
        // landing happened before the status lookup below and shows there,
        // provided the node answering the lookup has seen that far. Height
        // and slot come from one response (one node); an RPC pool may send
        // the lookup to another node, so its context slot must reach that
        // slot. Its history reaching back to the batch is checked per cycle.
        let finalized = CommitmentConfig::finalized();
        let info = self
            .rpc
            .get_epoch_info_with_commitment(finalized)
            .await
            .map_err(rpc_err)?;
        let height = info.block_height;
        let response = self
            .history
            .get_signature_statuses_with_history(&[signature])
            .await
            .map_err(rpc_err)?;
        let caught_up = response.context.slot >= info.absolute_slot;
        let status = response.value.into_iter().next().flatten();
        match status {
            // Only a finalized failure is final: a failure on a minority
            // fork could still be followed by a landing on the main one.
            Some(st) if st.err.is_some() && !st.satisfies_commitment(finalized) => {
                Ok(Resolution::Waiting)
            }
            Some(st) if st.err.is_some() => {
                let err = format!("transaction failed on chain: {:?}", st.err);
                self.guard(epoch)?;
                self.store
                    .abandon_batch(
                        epoch,
                        b.id,
                        &BatchOutcome::Failed(err),
                        self.cfg.max_attempts,
                    )
                    .await?;
                tracing::warn!(batch = %b.id, %signature, error = ?st.err, payouts = b.payout_ids.len(), "payout transaction failed on chain; a batch of several is retried one payout per transaction");
                self.event("failed");
                report.batches_abandoned += 1;
                Ok(Resolution::Abandoned)
            }
            Some(st) if st.satisfies_commitment(self.cfg.commitment) => {
                self.guard(epoch)?;
                self.store.confirm_batch(epoch, b.id, st.slot).await?;
                tracing::info!(batch = %b.id, %signature, lamports = b.lamports, payouts = b.payout_ids.len(), "payout transaction confirmed");
                self.event("confirmed");
                self.metrics.lamports_paid.inc_by(b.lamports as u64);
                report.batches_confirmed += 1;
                report.lamports_confirmed += b.lamports;
                Ok(Resolution::Confirmed)
            }
            // Landed, not yet at our commitment: wait.
            Some(_) => Ok(Resolution::Waiting),
            None if height > b.last_valid_block_height && caught_up => {
                self.guard(epoch)?;
                self.store
                    .abandon_batch(epoch, b.id, &BatchOutcome::Expired, self.cfg.max_attempts)
                    .await?;
                tracing::warn!(batch = %b.id, %signature, height, last_valid = b.last_valid_block_height, "payout transaction expired unconfirmed; its payouts get a new transaction");
                self.event("expired");
                report.batches_abandoned += 1;
                Ok(Resolution::Abandoned)
            }
            // Past its last valid height, but the status came from a node
            // that is behind: ask again later.
            None if height > b.last_valid_block_height => {
                tracing::debug!(batch = %b.id, context_slot = response.context.slot, slot = info.absolute_slot, "status from a node behind the slot read with the height; asking again later");
                Ok(Resolution::Waiting)
            }
            None => {
                if resend {
                    self.send(epoch, b.id, &tx).await?;
                    self.event("resent");
                }
                Ok(Resolution::Waiting)
            }
        }
    }

    /// Sends a stored transaction and records the send. An RPC error is
    /// logged, not fatal: the batch stays stored and is looked up (and
    /// re-sent) later.
    async fn send(&self, epoch: i64, id: Uuid, tx: &Transaction) -> Result<(), PayoutError> {
        self.guard(epoch)?;
        let cfg = RpcSendTransactionConfig {
            skip_preflight: true,
            ..Default::default()
        };
        if let Err(e) = self.rpc.send_transaction_with_config(tx, cfg).await {
            // Through rpc_err: the client's error names the URL, key and all.
            let e = rpc_err(e);
            tracing::warn!(batch = %id, error = %e, "sending a payout transaction failed; it stays stored and is retried");
            return Ok(());
        }
        self.crash_point(CrashPoint::AfterSend)?;
        self.guard(epoch)?;
        self.store.mark_batch_sent(epoch, id).await?;
        Ok(())
    }

    /// Builds, stores and sends transactions for waiting payouts. Returns
    /// the batches it sent.
    async fn pay(
        &self,
        epoch: i64,
        report: &mut CycleReport,
    ) -> Result<Vec<UnfinishedBatch>, PayoutError> {
        let waiting = self
            .store
            .waiting_payouts((self.cfg.max_transfers * BATCHES_PER_CYCLE) as i64)
            .await?;
        self.metrics.payout_daily_cap_reached.set(0);
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let treasury = self.treasury.pubkey();
        let balance = self
            .rpc
            .get_balance_with_commitment(&treasury, self.cfg.commitment)
            .await
            .map_err(rpc_err)?
            .value;
        self.metrics.treasury_lamports.set(balance as i64);
        // The treasury stays rent-exempt, and what unfinished batches may
        // still take is spoken for.
        let keep = self
            .rpc
            .get_minimum_balance_for_rent_exemption(0)
            .await
            .map_err(rpc_err)?;
        let in_flight: i64 = self
            .store
            .unfinished_batches()
            .await?
            .iter()
            .map(|b| b.lamports + b.fee_lamports)
            .sum();
        let mut available = balance as i128 - keep as i128 - in_flight as i128;
        // What today's batches may still spend under the daily cap.
        let spent = self.store.payout_spent_today().await?;
        self.metrics.payout_spent_today_lamports.set(spent);
        let mut allowance = match self.cfg.daily_cap_lamports {
            0 => i128::MAX,
            cap => cap as i128 - spent as i128,
        };
        // No batch can land before the finalized slot read now: the history
        // RPC must keep that slot until the batch is resolved.
        let signed_slot = self
            .rpc
            .get_epoch_info_with_commitment(CommitmentConfig::finalized())
            .await
            .map_err(rpc_err)?
            .absolute_slot;
        // Payouts whose batch failed on chain ride alone; the rest are
        // grouped.
        let (solo, grouped): (Vec<_>, Vec<_>) = waiting.iter().partition(|p| p.solo);
        let chunks = solo.chunks(1).chain(grouped.chunks(self.cfg.max_transfers));
        let mut sent = Vec::new();
        for chunk in chunks {
            self.guard(epoch)?;
            let mut transfers = Vec::with_capacity(chunk.len() + 2);
            if self.cfg.priority_fee_micro_lamports > 0 {
                let units = UNITS_PER_INSTRUCTION * (chunk.len() as u32 + 2);
                transfers.push(ComputeBudgetInstruction::set_compute_unit_limit(units));
                transfers.push(ComputeBudgetInstruction::set_compute_unit_price(
                    self.cfg.priority_fee_micro_lamports,
                ));
            }
            for p in chunk {
                let to = Pubkey::from_str(&p.public_key).map_err(|e| {
                    PayoutError::Other(format!("validator key {:?}: {e}", p.public_key))
                })?;
                transfers.push(solana_system_interface::instruction::transfer(
                    &treasury,
                    &to,
                    p.lamports as u64,
                ));
            }
            let (blockhash, last_valid) = self
                .rpc
                .get_latest_blockhash_with_commitment(self.cfg.commitment)
                .await
                .map_err(rpc_err)?;
            let tx = Transaction::new_signed_with_payer(
                &transfers,
                Some(&treasury),
                &[&self.treasury],
                blockhash,
            );
            let fee = self
                .rpc
                .get_fee_for_message(&tx.message)
                .await
                .map_err(rpc_err)?;
            let lamports: i64 = chunk.iter().map(|p| p.lamports).sum();
            let ids: Vec<Uuid> = chunk.iter().map(|p| p.id).collect();
            let need = lamports as i128 + fee as i128;
            if available < need {
                self.guard(epoch)?;
                self.store.mark_insufficient_funds(epoch, &ids).await?;
                tracing::warn!(
                    payouts = ids.len(),
                    lamports,
                    fee,
                    available = available.max(0) as u64,
                    "treasury cannot cover this payout batch; it waits"
                );
                self.event("insufficient_funds");
                report.insufficient_funds += ids.len();
                continue;
            }
            if allowance < need {
                self.metrics.payout_daily_cap_reached.set(1);
                tracing::warn!(
                    payouts = ids.len(),
                    lamports,
                    fee,
                    cap = self.cfg.daily_cap_lamports,
                    spent_today = self.cfg.daily_cap_lamports as i128 - allowance,
                    "daily payout spend cap reached (HUB_PAYOUT_DAILY_CAP_LAMPORTS); this batch waits for the next UTC day"
                );
                self.event("capped");
                report.capped += ids.len();
                continue;
            }
            let batch = NewBatch {
                id: Uuid::now_v7(),
                signature: tx.signatures[0].to_string(),
                transaction: wincode::serialize(&tx)
                    .map_err(|e| PayoutError::Other(format!("serializing a transaction: {e}")))?,
                blockhash: blockhash.to_string(),
                last_valid_block_height: last_valid,
                lamports,
                fee_lamports: fee as i64,
                payout_ids: ids,
                signed_slot,
            };
            self.guard(epoch)?;
            match self.store.save_batch(epoch, &batch).await {
                Ok(()) => {}
                // Identical to an earlier transaction (same blockhash, same
                // transfers): try again with the next blockhash.
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(%why, "payout batch postponed");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            available -= need;
            allowance -= need;
            self.event("signed");
            self.crash_point(CrashPoint::AfterSign)?;
            self.send(epoch, batch.id, &tx).await?;
            self.event("sent");
            self.crash_point(CrashPoint::BeforeConfirm)?;
            report.batches_sent += 1;
            sent.push(UnfinishedBatch {
                id: batch.id,
                signature: batch.signature,
                transaction: batch.transaction,
                last_valid_block_height: last_valid,
                lamports,
                fee_lamports: batch.fee_lamports,
                payout_ids: batch.payout_ids,
                signed_slot,
            });
        }
        Ok(sent)
    }

    /// Polls the batches just sent until they resolve or the confirm
    /// timeout passes, re-sending now and then; the rest is left to the
    /// next cycle's recovery.
    async fn confirm(
        &self,
        epoch: i64,
        mut pending: Vec<UnfinishedBatch>,
        report: &mut CycleReport,
    ) -> Result<(), PayoutError> {
        let until = Instant::now() + self.cfg.confirm_timeout;
        let mut last_send = Instant::now();
        while !pending.is_empty() && Instant::now() < until {
            tokio::time::sleep(self.cfg.poll_every).await;
            let resend = last_send.elapsed() >= RESEND_EVERY;
            if resend {
                last_send = Instant::now();
            }
            let mut still = Vec::with_capacity(pending.len());
            for b in pending {
                if self.resolve(epoch, &b, resend, report).await? == Resolution::Waiting {
                    still.push(b);
                }
            }
            pending = still;
        }
        Ok(())
    }

    fn event(&self, what: &str) {
        self.metrics
            .payout_transactions
            .with_label_values(&[what])
            .inc();
    }
}

/// Whether an RPC error is a node's answer that its view is below the
/// request's `minContextSlot`.
fn min_context_slot_not_reached(e: &solana_rpc_client::api::client_error::Error) -> bool {
    matches!(
        &*e.kind,
        RpcErrorKind::RpcError(RpcResponseError::RpcResponseError { code, .. })
            if *code == MIN_CONTEXT_SLOT_NOT_REACHED
    )
}

/// The system-program transfers out of `treasury` in `message`, in order:
/// (to, lamports). Only static account keys are read (payout transactions
/// use no lookup tables).
fn treasury_transfers(
    message: &solana_transaction::VersionedMessage,
    treasury: &Pubkey,
) -> Vec<(Pubkey, u64)> {
    let keys = message.static_account_keys();
    let key = |i: Option<&u8>| i.and_then(|&i| keys.get(usize::from(i)));
    message
        .instructions()
        .iter()
        .filter_map(|ix| {
            let program = keys.get(usize::from(ix.program_id_index))?;
            if *program != solana_system_interface::program::ID {
                return None;
            }
            let lamports = transfer_lamports(&ix.data)?;
            let (from, to) = (key(ix.accounts.first())?, key(ix.accounts.get(1))?);
            (from == treasury).then_some((*to, lamports))
        })
        .collect()
}

/// The lamports of a system `Transfer` instruction's data (bincode: the
/// `u32` variant index 2, then the `u64` lamports); `None` for any other.
fn transfer_lamports(data: &[u8]) -> Option<u64> {
    const TRANSFER: u32 = 2;
    let (variant, rest) = data.split_first_chunk::<4>()?;
    (u32::from_le_bytes(*variant) == TRANSFER).then_some(())?;
    Some(u64::from_le_bytes(rest.try_into().ok()?))
}

/// Rewrites the earnings summary (`settling` of every validator). For the
/// payout leader, right after it settles; a failure is logged and counted
/// and costs only freshness (the next cycle rewrites it).
async fn refresh_summary(store: &store::Store, metrics: &crate::metrics::Metrics) {
    let outcome = match store.refresh_earnings_summary().await {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "refreshing the earnings summary failed");
            "error"
        }
    };
    metrics
        .earnings_summary_refreshes
        .with_label_values(&[outcome])
        .inc();
}
