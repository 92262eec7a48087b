//! [`SolanaRpc`]: a real Solana runtime ([`litesvm`]) behind a small
//! JSON-RPC 2.0 endpoint on 127.0.0.1, so the production
//! `solana_rpc_client::nonblocking::rpc_client::RpcClient` talks to it
//! unchanged. It exists to test exactly-once payouts: a test decides, per
//! `sendTransaction` call, whether the transaction lands at once, is held
//! (and lands later, or expires), or is dropped; and block height advances
//! so blockhashes really expire.
//!
//! # What it models
//!
//! - **Execution**: transactions run in litesvm with signature verification
//!   on (mainnet feature set, builtins, fees charged as litesvm charges
//!   them, at [`ChainConfig::lamports_per_signature`]). A transaction that
//!   fails in the runtime (say the payer has the fee but not the transfer)
//!   lands with an error and its fee is charged, as on a real chain.
//! - **Blocks and blockhashes**: one counter is both block height and slot
//!   (it starts at 1). Each block has its own blockhash, valid through
//!   `issued_height + blockhash_validity`; a transaction whose blockhash is
//!   unknown or past that height is accepted by `sendTransaction` (as a node
//!   does with `skipPreflight`) and never lands. Held transactions expire the
//!   same way when blocks advance.
//! - **Finality**: everything that lands is rooted at once: statuses report
//!   `confirmations: null` and `confirmationStatus: "finalized"`, and
//!   commitment parameters are ignored.
//! - **Delivery**: `sendTransaction` checks, in order: undecodable or
//!   malformed (fails sanitize) → error `-32602`; a bad signature → `-32003`;
//!   a signature that already landed → its signature and nothing else (a
//!   resend never pays twice); a blockhash unknown or expired → its
//!   signature, and it never lands. Otherwise it consumes the next
//!   [`SendBehaviour`] ([`SolanaRpc::push_behaviour`], else the default).
//!   `Land` executes it now: if litesvm refuses it as malformed, `-32003`
//!   and nothing is recorded; if it is not included for another reason (its
//!   fee payer cannot pay the fee), its signature is returned and nothing is
//!   recorded, as when a leader drops it. `Hold` keeps one copy, `Drop`
//!   forgets it; resends of held or dropped transactions consume a
//!   behaviour like any send.
//! - **Outages**: [`SolanaRpc::set_unavailable`] answers HTTP 503 to everything.
//! - **History of an address**: `getSignaturesForAddress` lists the landed
//!   transactions (successful or failed) that carry the address among their
//!   static account keys, newest first, as the answering node knows them
//!   (landed within its view and its history), with `before`, `until`,
//!   `limit` (default and maximum 1,000) and `minContextSlot` (a node whose
//!   view is below it answers `-32016`). `getTransaction` returns one of them
//!   in the `base64` encoding (or `base58`), with a meta holding `err`,
//!   `status` and `fee` (balances, logs and inner instructions are empty), or
//!   null where the node does not know it. `blockTime` is the wall clock at
//!   landing, in Unix seconds.
//! - **A lagging node and a pool**: the chain is served by two "nodes".
//!   [`SolanaRpc::url`] is a node at the tip with all history (minimum
//!   ledger slot 0). [`SolanaRpc::lagging_url`] is a node [`LaggingNode::lag`]
//!   blocks behind that keeps only the last [`LaggingNode::history`] slots:
//!   its height, slot, latest blockhash and context slots lag; statuses of
//!   transactions that landed after its view, or before its
//!   `minimumLedgerSlot` (its view minus its history), are unknown there.
//!   [`SolanaRpc::pool_url`] is a load-balanced pool of both: each HTTP
//!   request (a JSON-RPC batch is one request) goes to one of them, picked
//!   at random (seeded, [`ChainConfig::pool_seed`]). Transactions sent to
//!   either node are forwarded to the leader: the same chain executes them.
//! - **Fees**: `getFeeForMessage` reports the signature fee plus the
//!   priority fee of the message's compute-budget instructions (unit price
//!   times unit limit, rounded up), as litesvm charges; [`Landed::fee`] is
//!   what was charged.
//!
//! # What it does not model
//!
//! Forks, rollbacks and confirmation levels below finalized; leader
//! schedules, `maxRetries` and rebroadcasting (a held transaction lands only
//! when the test releases it); preflight simulation (`skipPreflight: false`
//! is treated like `true`); account state as of a lagging view (`getBalance` on the lagging node
//! answers the tip's balance with its lagging context slot); the
//! `searchTransactionHistory` flag (statuses are always searched back to the
//! node's minimum ledger slot); account methods other than `getBalance`;
//! balances, logs and inner instructions in `getTransaction`'s meta;
//! websockets. Airdrops go straight into litesvm and
//! are not part of [`SolanaRpc::landed`].
//!
//! # Methods served
//!
//! `POST /` (the tip node), `POST /lagging` and `POST /pool`, single
//! requests or batches: `getLatestBlockhash`,
//! `isBlockhashValid`, `getBlockHeight`, `getSlot`, `getEpochInfo`,
//! `minimumLedgerSlot`, `getBalance`,
//! `getMinimumBalanceForRentExemption`, `getFeeForMessage`,
//! `getSignatureStatuses`, `getSignaturesForAddress`, `getTransaction`,
//! `sendTransaction`, `getVersion`, `getHealth`, `getGenesisHash`. Anything
//! else is `-32601 Method not found`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use litesvm::LiteSVM;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction::{Address, Hash, TransactionError, VersionedMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The chain's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// Blocks a blockhash stays valid: last_valid_block_height =
    /// height_when_issued + this. Default 150 (as on mainnet).
    pub blockhash_validity: u64,
    /// If Some, a background task advances one block every interval.
    /// Default None (tests call [`SolanaRpc::advance_blocks`]).
    pub block_interval: Option<Duration>,
    /// Fee per signature. Default 5000.
    pub lamports_per_signature: u64,
    /// The second node's lag and history (changeable later with
    /// [`SolanaRpc::set_lagging`]).
    pub lagging: LaggingNode,
    /// Seeds the pool's choice of node per request. Default 0.
    pub pool_seed: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            blockhash_validity: 150,
            block_interval: None,
            lamports_per_signature: 5000,
            lagging: LaggingNode::default(),
            pool_seed: 0,
        }
    }
}

/// The second node: behind the tip, with a short history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaggingNode {
    /// Blocks it is behind the tip (its view is `max(1, height - lag)`).
    /// Default 4.
    pub lag: u64,
    /// Slots of history it keeps: its `minimumLedgerSlot` is its view minus
    /// this (at least 0), and older statuses are unknown there. Default 32.
    pub history: u64,
}

impl Default for LaggingNode {
    fn default() -> Self {
        Self {
            lag: 4,
            history: 32,
        }
    }
}

/// Which node answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// At the tip, all history.
    Tip,
    /// Behind, recent history only.
    Lagging,
}

/// What happens to a transaction that `sendTransaction` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendBehaviour {
    /// Executed now; its status is visible at once.
    Land,
    /// Kept aside: it lands on [`SolanaRpc::release_held`] if its blockhash
    /// is still valid then, and is discarded once the blockhash expires.
    Hold,
    /// Forgotten, as if the leader never saw it.
    Drop,
}

/// A system-program transfer carried by a landed transaction. It moved
/// lamports only if the transaction succeeded ([`Landed::ok`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub from: [u8; 32],
    pub to: [u8; 32],
    pub lamports: u64,
}

/// A transaction that was executed on the chain, successfully or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landed {
    /// The first signature, base58.
    pub signature: String,
    /// The slot (= block height) it landed in.
    pub slot: u64,
    /// Whether it succeeded. A failed transaction still paid its fee.
    pub ok: bool,
    /// Its system `Transfer` instructions, in order (only those whose
    /// accounts are static keys of the message).
    pub transfers: Vec<Transfer>,
    /// The runtime's error, if it failed (`Debug` of the `TransactionError`).
    pub err: Option<String>,
    /// The fee charged (signature and priority fees).
    pub fee: u64,
}

/// A litesvm chain behind a JSON-RPC endpoint on 127.0.0.1. See the
/// [module docs](self). Dropping it stops the server and the block ticker.
pub struct SolanaRpc {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    ticker: Option<JoinHandle<()>>,
}

impl SolanaRpc {
    /// Starts the chain and binds its endpoint to 127.0.0.1 on a free port.
    /// Must be called within a Tokio runtime, which then runs the server.
    pub async fn start(cfg: ChainConfig) -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Like [`SolanaRpc::start`], on a given loopback address (the dev
    /// stack's `local-solana`). Refuses anything but loopback.
    pub async fn start_on(addr: SocketAddr, cfg: ChainConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the local Solana RPC listens on loopback only, not {addr}"
        );
        let shared = Arc::new(Shared {
            chain: Mutex::new(Chain::new(&cfg)),
            unavailable: AtomicBool::new(false),
            ticking: AtomicBool::new(true),
            pool: Mutex::new(fastrand::Rng::with_seed(cfg.pool_seed)),
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Solana RPC endpoint on {addr}"))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", post(tip))
            .route("/lagging", post(lagging))
            .route("/pool", post(pool))
            .with_state(shared.clone());
        let (shutdown, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "test Solana RPC server failed");
            }
        });
        let ticker = cfg.block_interval.map(|every| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await; // the first tick is immediate
                loop {
                    interval.tick().await;
                    if shared.ticking.load(Ordering::SeqCst) {
                        shared.chain().advance(1);
                    }
                }
            })
        });
        Ok(Self {
            shared,
            addr,
            shutdown,
            ticker,
        })
    }

    /// The tip node, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The lagging node alone, `http://127.0.0.1:PORT/lagging`.
    pub fn lagging_url(&self) -> String {
        format!("http://{}/lagging", self.addr)
    }

    /// Both nodes behind a load balancer, `http://127.0.0.1:PORT/pool`: each
    /// request goes to one of them, at random.
    pub fn pool_url(&self) -> String {
        format!("http://{}/pool", self.addr)
    }

    /// Changes the lagging node's lag and history.
    pub fn set_lagging(&self, node: LaggingNode) {
        self.shared.chain().lagging = node;
    }

    /// How many requests each node answered through the pool: (tip, lagging).
    pub fn pool_answers(&self) -> (usize, usize) {
        self.shared.chain().pool_answers
    }

    /// Credits `lamports` to `to` from litesvm's faucet (not recorded in
    /// [`landed`](Self::landed)). Panics if the runtime refuses it, e.g. an
    /// amount below rent exemption for a new account.
    pub fn airdrop(&self, to: [u8; 32], lamports: u64) {
        let result = {
            let mut chain = self.shared.chain();
            // Airdrops are signed over litesvm's own blockhash; a fresh one
            // keeps two equal airdrops from sharing a signature.
            chain.svm.expire_blockhash();
            chain.svm.airdrop(&Address::from(to), lamports)
        };
        if let Err(failed) = result {
            panic!("airdrop of {lamports} lamports failed: {:?}", failed.err);
        }
    }

    /// The lamports of `of`, 0 if it has no account.
    pub fn balance(&self, of: [u8; 32]) -> u64 {
        self.shared
            .chain()
            .svm
            .get_balance(&Address::from(of))
            .unwrap_or(0)
    }

    /// The current block height (also the slot).
    pub fn block_height(&self) -> u64 {
        self.shared.chain().height
    }

    /// Advances `n` blocks, each with a new latest blockhash. Held
    /// transactions whose blockhash expires are discarded.
    pub fn advance_blocks(&self, n: u64) {
        self.shared.chain().advance(n);
    }

    /// Queues the behaviour for the next `sendTransaction` calls, consumed
    /// one per call in order; when the queue is empty, the default applies
    /// ([`SendBehaviour::Land`] unless [`set_default_behaviour`](Self::set_default_behaviour)).
    pub fn push_behaviour(&self, b: SendBehaviour) {
        self.shared.chain().behaviours.push_back(b);
    }

    /// The behaviour when the queue is empty.
    pub fn set_default_behaviour(&self, b: SendBehaviour) {
        self.shared.chain().default_behaviour = b;
    }

    /// Lands every held transaction whose blockhash is still valid (height
    /// <= its last valid height), in the order they were held; returns how
    /// many landed (successfully or not). The runtime may still refuse one
    /// (say its fee payer cannot pay the fee): it is discarded, as a leader
    /// would drop it.
    pub fn release_held(&self) -> usize {
        self.shared.chain().release_held()
    }

    /// Every transaction that was executed, in order, successful or failed.
    pub fn landed(&self) -> Vec<Landed> {
        self.shared.chain().landed.clone()
    }

    /// The lamports moved to `to` by the system transfers of successful
    /// landed transactions (airdrops not included).
    pub fn received(&self, to: [u8; 32]) -> u64 {
        self.shared
            .chain()
            .landed
            .iter()
            .filter(|l| l.ok)
            .flat_map(|l| &l.transfers)
            .filter(|t| t.to == to)
            .map(|t| t.lamports)
            .sum()
    }

    /// How many `sendTransaction` calls were handled (any outcome; not those
    /// answered 503 by [`set_unavailable`](Self::set_unavailable)).
    pub fn send_calls(&self) -> usize {
        self.shared.chain().send_calls
    }

    /// Pauses (false) or resumes (true) the block ticker of
    /// [`ChainConfig::block_interval`]; [`advance_blocks`](Self::advance_blocks)
    /// works either way.
    pub fn set_ticking(&self, on: bool) {
        self.shared.ticking.store(on, Ordering::SeqCst);
    }

    /// While true, every request gets HTTP 503 (an RPC outage).
    pub fn set_unavailable(&self, down: bool) {
        self.shared.unavailable.store(down, Ordering::SeqCst);
    }
}

impl Drop for SolanaRpc {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        // Graceful, so that the server also closes its idle keep-alive
        // connections, which would otherwise go on serving.
        let _ = self.shutdown.send(true);
    }
}

struct Shared {
    chain: Mutex<Chain>,
    unavailable: AtomicBool,
    /// Whether the block ticker advances blocks (see [`SolanaRpc::set_ticking`]).
    ticking: AtomicBool,
    /// Picks the node for each pooled request.
    pool: Mutex<fastrand::Rng>,
}

impl Shared {
    fn chain(&self) -> MutexGuard<'_, Chain> {
        // A test that panicked while holding the lock leaves a usable chain.
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A transaction kept by [`SendBehaviour::Hold`].
struct Held {
    signature: String,
    tx: VersionedTransaction,
    last_valid: u64,
}

/// A landed transaction's status.
struct Status {
    slot: u64,
    err: Option<TransactionError>,
    /// The transaction as it landed, for `getTransaction`.
    tx: VersionedTransaction,
    fee: u64,
    /// Unix seconds at landing.
    block_time: i64,
}

/// How executing a transaction went.
enum Executed {
    /// On chain, successful or not.
    Landed,
    /// Refused as malformed (a sanitize or signature error).
    Refused(TransactionError),
    /// Not included for another reason (e.g. the fee payer cannot pay): a
    /// leader would drop it.
    NotIncluded(TransactionError),
}

struct Chain {
    svm: LiteSVM,
    blockhash_validity: u64,
    lamports_per_signature: u64,
    height: u64,
    latest: Hash,
    /// Each unexpired blockhash and its last valid block height.
    blockhashes: HashMap<Hash, u64>,
    behaviours: VecDeque<SendBehaviour>,
    default_behaviour: SendBehaviour,
    held: Vec<Held>,
    landed: Vec<Landed>,
    /// Signature → where it landed and how it went.
    statuses: HashMap<String, Status>,
    send_calls: usize,
    lagging: LaggingNode,
    pool_answers: (usize, usize),
}

impl Chain {
    fn new(cfg: &ChainConfig) -> Self {
        let mut svm = LiteSVM::new().with_blockhash_check(false);
        let mut fees = svm.get_fee_structure().clone();
        fees.lamports_per_signature = cfg.lamports_per_signature;
        svm.set_fee_structure(fees);
        let height = 1;
        svm.warp_to_slot(height);
        let latest = blockhash_at(height);
        Self {
            svm,
            blockhash_validity: cfg.blockhash_validity,
            lamports_per_signature: cfg.lamports_per_signature,
            height,
            latest,
            blockhashes: HashMap::from([(latest, height + cfg.blockhash_validity)]),
            behaviours: VecDeque::new(),
            default_behaviour: SendBehaviour::Land,
            held: Vec::new(),
            landed: Vec::new(),
            statuses: HashMap::new(),
            send_calls: 0,
            lagging: cfg.lagging,
            pool_answers: (0, 0),
        }
    }

    fn advance(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let from = self.height;
        self.height += n;
        // Blocks older than this issued hashes that have expired already.
        let first_live = (from + 1).max(self.height.saturating_sub(self.blockhash_validity));
        for h in first_live..=self.height {
            self.blockhashes
                .insert(blockhash_at(h), h + self.blockhash_validity);
        }
        self.latest = blockhash_at(self.height);
        let height = self.height;
        self.blockhashes
            .retain(|_, last_valid| *last_valid >= height);
        self.held.retain(|h| {
            let live = h.last_valid >= height;
            if !live {
                tracing::debug!(signature = %h.signature, "held transaction expired");
            }
            live
        });
        self.svm.warp_to_slot(self.height);
    }

    /// The last valid height of `hash` if it is still valid.
    fn valid_until(&self, hash: &Hash) -> Option<u64> {
        self.blockhashes
            .get(hash)
            .copied()
            .filter(|last| *last >= self.height)
    }

    fn release_held(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        let mut landed = 0;
        for h in held {
            if h.last_valid < self.height {
                continue;
            }
            match self.execute(&h.signature, h.tx) {
                Executed::Landed => landed += 1,
                Executed::Refused(err) | Executed::NotIncluded(err) => {
                    tracing::debug!(signature = %h.signature, ?err, "released transaction not included");
                }
            }
        }
        landed
    }

    /// Runs `tx` in litesvm and records it if it was included.
    fn execute(&mut self, signature: &str, tx: VersionedTransaction) -> Executed {
        let sig = tx.signatures[0];
        let transfers = system_transfers(&tx.message);
        let kept = tx.clone();
        let result = self.svm.send_transaction(tx);
        let (err, fee) = match result {
            Ok(meta) => (None, meta.fee),
            Err(failed) => {
                // litesvm keeps what it included (executed, fee charged) in
                // its history; what it refused outright is not there.
                if self.svm.get_transaction(&sig).is_none() {
                    return if is_refusal(&failed.err) {
                        Executed::Refused(failed.err)
                    } else {
                        Executed::NotIncluded(failed.err)
                    };
                }
                (Some(failed.err), failed.meta.fee)
            }
        };
        tracing::debug!(%signature, slot = self.height, ?err, "transaction landed");
        let block_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let status = Status {
            slot: self.height,
            err: err.clone(),
            tx: kept,
            fee,
            block_time,
        };
        self.statuses.insert(signature.to_owned(), status);
        self.landed.push(Landed {
            signature: signature.to_owned(),
            slot: self.height,
            ok: err.is_none(),
            transfers,
            err: err.as_ref().map(|e| format!("{e:?}")),
            fee,
        });
        Executed::Landed
    }
}

/// The JSON-RPC methods. Each returns the `result`, or an error object.
impl Chain {
    /// The height (= slot) `node` has seen.
    fn view(&self, node: Node) -> u64 {
        match node {
            Node::Tip => self.height,
            Node::Lagging => self.height.saturating_sub(self.lagging.lag).max(1),
        }
    }

    /// The oldest slot whose statuses `node` still has.
    fn minimum_ledger_slot(&self, node: Node) -> u64 {
        match node {
            Node::Tip => 0,
            Node::Lagging => self.view(node).saturating_sub(self.lagging.history),
        }
    }

    fn call(&mut self, node: Node, method: &str, params: &Value) -> Result<Value, RpcError> {
        let view = self.view(node);
        match method {
            "getLatestBlockhash" => Ok(self.with_context(
                node,
                json!({
                    "blockhash": blockhash_at(view).to_string(),
                    "lastValidBlockHeight": view + self.blockhash_validity,
                }),
            )),
            "isBlockhashValid" => {
                let hash = Hash::new_from_array(base58_32(param_str(params, 0)?)?);
                // Issued at or before this node's view, and not expired.
                let valid = self
                    .valid_until(&hash)
                    .is_some_and(|last| last - self.blockhash_validity <= view);
                Ok(self.with_context(node, json!(valid)))
            }
            "getBlockHeight" | "getSlot" => Ok(json!(view)),
            "getEpochInfo" => Ok(json!({
                "absoluteSlot": view,
                "blockHeight": view,
                "epoch": 0,
                "slotIndex": view,
                "slotsInEpoch": 432_000,
                "transactionCount": null,
            })),
            "minimumLedgerSlot" => Ok(json!(self.minimum_ledger_slot(node))),
            "getBalance" => {
                let of = Address::new_from_array(base58_32(param_str(params, 0)?)?);
                Ok(self.with_context(node, json!(self.svm.get_balance(&of).unwrap_or(0))))
            }
            "getMinimumBalanceForRentExemption" => {
                let len = params
                    .get(0)
                    .and_then(Value::as_u64)
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| RpcError::invalid_params("expected a data length"))?;
                Ok(json!(self.svm.minimum_balance_for_rent_exemption(len)))
            }
            "getFeeForMessage" => self.fee_for_message(node, params),
            "getSignatureStatuses" => self.signature_statuses(node, params),
            "getSignaturesForAddress" => self.signatures_for_address(node, params),
            "getTransaction" => self.transaction(node, params),
            // Either node forwards it to the leader: the same chain runs it.
            "sendTransaction" => self.send_transaction(params),
            "getVersion" => Ok(json!({"solana-core": "2.2.0", "feature-set": 0})),
            "getHealth" => Ok(json!("ok")),
            "getGenesisHash" => Ok(json!(blockhash_at(0).to_string())),
            _ => Err(RpcError {
                code: -32601,
                message: "Method not found".into(),
            }),
        }
    }

    /// `{context: {slot}, value}`, at `node`'s view.
    fn with_context(&self, node: Node, value: Value) -> Value {
        json!({"context": {"slot": self.view(node)}, "value": value})
    }

    /// The fee of a message (signatures plus the priority fee of its
    /// compute-budget instructions), or null if its blockhash is unknown or
    /// expired (as a node answers).
    fn fee_for_message(&self, node: Node, params: &Value) -> Result<Value, RpcError> {
        let bytes = BASE64_STANDARD
            .decode(param_str(params, 0)?)
            .map_err(|e| RpcError::invalid_params(format!("invalid base64: {e}")))?;
        let message: VersionedMessage = wincode::deserialize(&bytes)
            .map_err(|e| RpcError::invalid_params(format!("invalid message: {e}")))?;
        let fee = self.valid_until(message.recent_blockhash()).map(|_| {
            self.lamports_per_signature * u64::from(message.header().num_required_signatures)
                + priority_fee(&message)
        });
        Ok(self.with_context(node, json!(fee)))
    }

    /// Statuses as `node` knows them: landed within its view and its
    /// history.
    fn signature_statuses(&self, node: Node, params: &Value) -> Result<Value, RpcError> {
        let (view, oldest) = (self.view(node), self.minimum_ledger_slot(node));
        let signatures = params
            .get(0)
            .and_then(Value::as_array)
            .ok_or_else(|| RpcError::invalid_params("expected an array of signatures"))?;
        let statuses = signatures
            .iter()
            .map(|s| {
                let s = s
                    .as_str()
                    .ok_or_else(|| RpcError::invalid_params("a signature is not a string"))?;
                let known = self
                    .statuses
                    .get(s)
                    .filter(|st| st.slot <= view && st.slot >= oldest);
                Ok(known.map_or(Value::Null, |st| {
                    let status = match &st.err {
                        None => json!({"Ok": null}),
                        Some(e) => json!({"Err": e}),
                    };
                    json!({
                        "slot": st.slot,
                        "confirmations": null,
                        "status": status,
                        "err": st.err,
                        "confirmationStatus": "finalized",
                    })
                }))
            })
            .collect::<Result<Vec<_>, RpcError>>()?;
        Ok(self.with_context(node, Value::Array(statuses)))
    }

    /// Whether `node` knows the landed transaction `st`: within its view
    /// and its history.
    fn knows(&self, node: Node, st: &Status) -> bool {
        st.slot <= self.view(node) && st.slot >= self.minimum_ledger_slot(node)
    }

    /// `getSignaturesForAddress`: see the module docs.
    fn signatures_for_address(&self, node: Node, params: &Value) -> Result<Value, RpcError> {
        let address = Address::new_from_array(base58_32(param_str(params, 0)?)?);
        let cfg = params.get(1).cloned().unwrap_or(Value::Null);
        let opt_str = |name: &str| -> Result<Option<String>, RpcError> {
            match cfg.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(RpcError::invalid_params(format!("{name} must be a string"))),
            }
        };
        let before = opt_str("before")?;
        let until = opt_str("until")?;
        let limit = match cfg.get("limit") {
            None | Some(Value::Null) => 1000,
            Some(v) => match v.as_u64() {
                Some(n @ 1..=1000) => n as usize,
                _ => return Err(RpcError::invalid_params("Invalid limit; max 1000")),
            },
        };
        if let Some(min) = cfg.get("minContextSlot").and_then(Value::as_u64) {
            if self.view(node) < min {
                return Err(RpcError {
                    code: -32016,
                    message: "Minimum context slot has not been reached".into(),
                });
            }
        }
        let mut out = Vec::new();
        // Newest first; `before` and `until` are exclusive bounds.
        let mut started = before.is_none();
        for l in self.landed.iter().rev() {
            if !started {
                started = before.as_deref() == Some(l.signature.as_str());
                continue;
            }
            if until.as_deref() == Some(l.signature.as_str()) || out.len() == limit {
                break;
            }
            let Some(st) = self.statuses.get(&l.signature) else {
                continue;
            };
            if !self.knows(node, st) || !st.tx.message.static_account_keys().contains(&address) {
                continue;
            }
            out.push(json!({
                "signature": l.signature,
                "slot": st.slot,
                "err": st.err,
                "memo": null,
                "blockTime": st.block_time,
                "confirmationStatus": "finalized",
            }));
        }
        Ok(Value::Array(out))
    }

    /// `getTransaction`: see the module docs.
    fn transaction(&self, node: Node, params: &Value) -> Result<Value, RpcError> {
        let signature = param_str(params, 0)?;
        let encoding = params
            .get(1)
            .and_then(|c| c.get("encoding"))
            .and_then(Value::as_str)
            .unwrap_or("json");
        let Some(st) = self
            .statuses
            .get(signature)
            .filter(|st| self.knows(node, st))
        else {
            return Ok(Value::Null);
        };
        let bytes = wincode::serialize(&st.tx)
            .map_err(|e| RpcError::invalid_params(format!("serializing: {e}")))?;
        let encoded = match encoding {
            "base64" => json!([BASE64_STANDARD.encode(&bytes), "base64"]),
            "base58" => json!([bs58::encode(&bytes).into_string(), "base58"]),
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unsupported encoding: {other}"
                )))
            }
        };
        let version = match st.tx.message {
            VersionedMessage::Legacy(_) => json!("legacy"),
            VersionedMessage::V0(_) => json!(0),
            VersionedMessage::V1(_) => json!(1),
        };
        let status = match &st.err {
            None => json!({"Ok": null}),
            Some(e) => json!({"Err": e}),
        };
        Ok(json!({
            "slot": st.slot,
            "blockTime": st.block_time,
            "transaction": encoded,
            "version": version,
            "meta": {
                "err": st.err,
                "status": status,
                "fee": st.fee,
                "preBalances": [],
                "postBalances": [],
                "innerInstructions": [],
                "logMessages": [],
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
            },
        }))
    }

    /// `sendTransaction`: see the module docs and [`SendBehaviour`].
    fn send_transaction(&mut self, params: &Value) -> Result<Value, RpcError> {
        self.send_calls += 1;
        let encoded = param_str(params, 0)?;
        let encoding = params
            .get(1)
            .and_then(|c| c.get("encoding"))
            .and_then(Value::as_str)
            .unwrap_or("base58");
        let bytes = match encoding {
            "base64" => BASE64_STANDARD
                .decode(encoded)
                .map_err(|e| RpcError::invalid_params(format!("invalid base64: {e}")))?,
            "base58" => bs58::decode(encoded)
                .into_vec()
                .map_err(|e| RpcError::invalid_params(format!("invalid base58: {e}")))?,
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unsupported encoding: {other}"
                )))
            }
        };
        let tx: VersionedTransaction = wincode::deserialize(&bytes)
            .map_err(|e| RpcError::invalid_params(format!("invalid transaction: {e}")))?;
        if tx.signatures.is_empty() {
            return Err(RpcError::invalid_params("invalid transaction: unsigned"));
        }
        tx.sanitize()
            .map_err(|e| RpcError::invalid_params(format!("invalid transaction: {e}")))?;
        if !tx.verify_with_results().into_iter().all(|ok| ok) {
            return Err(RpcError::refused(
                "Transaction signature verification failure",
            ));
        }
        let signature = tx.signatures[0].to_string();
        if self.statuses.contains_key(&signature) {
            tracing::debug!(%signature, "resend of a landed transaction ignored");
            return Ok(json!(signature));
        }
        let Some(last_valid) = self.valid_until(tx.message.recent_blockhash()) else {
            tracing::debug!(%signature, "blockhash unknown or expired: accepted, never lands");
            return Ok(json!(signature));
        };
        let behaviour = self
            .behaviours
            .pop_front()
            .unwrap_or(self.default_behaviour);
        tracing::debug!(%signature, ?behaviour, "sendTransaction");
        match behaviour {
            SendBehaviour::Land => match self.execute(&signature, tx) {
                Executed::Landed => self.held.retain(|h| h.signature != signature),
                Executed::NotIncluded(err) => {
                    tracing::debug!(%signature, ?err, "transaction not included");
                }
                Executed::Refused(err) => {
                    return Err(RpcError::refused(format!("Transaction refused: {err}")));
                }
            },
            SendBehaviour::Hold => {
                if !self.held.iter().any(|h| h.signature == signature) {
                    self.held.push(Held {
                        signature: signature.clone(),
                        tx,
                        last_valid,
                    });
                }
            }
            SendBehaviour::Drop => {}
        }
        Ok(json!(signature))
    }
}

/// A JSON-RPC error object.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn invalid_params(message: impl Into<String>) -> Self {
        Self {
            code: -32602,
            message: message.into(),
        }
    }

    /// What a node answers for a transaction it will not forward.
    fn refused(message: impl Into<String>) -> Self {
        Self {
            code: -32003,
            message: message.into(),
        }
    }
}

/// `POST /`: the tip node.
async fn tip(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(&shared, Node::Tip, &body)
}

/// `POST /lagging`: the lagging node.
async fn lagging(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(&shared, Node::Lagging, &body)
}

/// `POST /pool`: one node, picked at random, answers the whole request.
async fn pool(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let lagging = shared
        .pool
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .bool();
    let node = if lagging { Node::Lagging } else { Node::Tip };
    {
        let mut chain = shared.chain();
        match node {
            Node::Tip => chain.pool_answers.0 += 1,
            Node::Lagging => chain.pool_answers.1 += 1,
        }
    }
    handle(&shared, node, &body)
}

/// One request or a batch, answered by `node`.
fn handle(shared: &Shared, node: Node, body: &[u8]) -> Response {
    if shared.unavailable.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "RPC unavailable").into_response();
    }
    let reply = match serde_json::from_slice::<Value>(body) {
        Err(e) => reply(
            Value::Null,
            Err(RpcError {
                code: -32700,
                message: format!("Parse error: {e}"),
            }),
        ),
        Ok(Value::Array(batch)) if !batch.is_empty() => {
            let mut chain = shared.chain();
            Value::Array(batch.iter().map(|r| answer(&mut chain, node, r)).collect())
        }
        Ok(request) => answer(&mut shared.chain(), node, &request),
    };
    Json(reply).into_response()
}

/// The response to one request object.
fn answer(chain: &mut Chain, node: Node, request: &Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        let invalid = RpcError {
            code: -32600,
            message: "Invalid request".into(),
        };
        return reply(id, Err(invalid));
    };
    let no_params = Value::Array(Vec::new());
    let params = request.get("params").unwrap_or(&no_params);
    reply(id, chain.call(node, method, params))
}

fn reply(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "error": {"code": e.code, "message": e.message},
            "id": id,
        }),
    }
}

fn param_str(params: &Value, i: usize) -> Result<&str, RpcError> {
    params
        .get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("parameter {i} must be a string")))
}

/// A base58 public key or hash.
fn base58_32(s: &str) -> Result<[u8; 32], RpcError> {
    bs58::decode(s)
        .into_vec()
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| RpcError::invalid_params(format!("invalid base58 key or hash: {s}")))
}

/// The blockhash of block `height`.
fn blockhash_at(height: u64) -> Hash {
    let digest = Sha256::new()
        .chain_update(b"test-support solana block")
        .chain_update(height.to_le_bytes())
        .finalize();
    Hash::new_from_array(digest.into())
}

/// Errors litesvm refuses a transaction with before executing it, because
/// it is malformed: a node rejects these at `sendTransaction`.
fn is_refusal(err: &TransactionError) -> bool {
    use TransactionError as E;
    matches!(
        err,
        E::SanitizeFailure
            | E::SignatureFailure
            | E::AccountLoadedTwice
            | E::TooManyAccountLocks
            | E::UnsupportedVersion
            | E::MissingSignatureForFee
            | E::InvalidAccountIndex
            | E::AddressLookupTableNotFound
            | E::InvalidAddressLookupTableOwner
            | E::InvalidAddressLookupTableData
            | E::InvalidAddressLookupTableIndex
    )
}

/// The priority fee of `message`: its compute-unit price (micro-lamports)
/// times its compute-unit limit, rounded up to a lamport. Without a limit
/// instruction the limit is 200,000 units per other instruction (at most
/// 1,400,000), as the runtime assumes.
fn priority_fee(message: &VersionedMessage) -> u64 {
    const SET_LIMIT: u8 = 2;
    const SET_PRICE: u8 = 3;
    let budget_program = Address::from_str_const("ComputeBudget111111111111111111111111111111");
    let keys = message.static_account_keys();
    let (mut limit, mut price, mut others) = (None, 0u64, 0u64);
    for ix in message.instructions() {
        let program = keys.get(usize::from(ix.program_id_index));
        if program != Some(&budget_program) {
            others += 1;
            continue;
        }
        match ix.data.split_first() {
            Some((&SET_LIMIT, rest)) if rest.len() == 4 => {
                limit = Some(u64::from(u32::from_le_bytes(
                    rest.try_into().unwrap_or_default(),
                )));
            }
            Some((&SET_PRICE, rest)) if rest.len() == 8 => {
                price = u64::from_le_bytes(rest.try_into().unwrap_or_default());
            }
            _ => {}
        }
    }
    let limit = limit
        .unwrap_or((200_000 * others).min(1_400_000))
        .min(1_400_000);
    (u128::from(price) * u128::from(limit)).div_ceil(1_000_000) as u64
}

/// The system program's `Transfer` instructions of `message` whose accounts
/// are static keys. System instructions are bincode: a `u32` variant index
/// (2 = `Transfer`) then, for `Transfer`, the `u64` lamports.
fn system_transfers(message: &VersionedMessage) -> Vec<Transfer> {
    const SYSTEM_PROGRAM: [u8; 32] = [0; 32];
    const TRANSFER: u32 = 2;
    let keys = message.static_account_keys();
    let key = |i: Option<&u8>| {
        i.and_then(|&i| keys.get(usize::from(i)))
            .map(Address::to_bytes)
    };
    message
        .instructions()
        .iter()
        .filter_map(|ix| {
            let program = keys.get(usize::from(ix.program_id_index))?;
            let data = ix.data.as_slice();
            if program.to_bytes() != SYSTEM_PROGRAM
                || data.len() != 12
                || data[..4] != TRANSFER.to_le_bytes()
            {
                return None;
            }
            Some(Transfer {
                from: key(ix.accounts.first())?,
                to: key(ix.accounts.get(1))?,
                lamports: u64::from_le_bytes(data[4..].try_into().ok()?),
            })
        })
        .collect()
}
