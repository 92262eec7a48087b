//! `SolanaRpc` through the production `RpcClient`.

use std::time::Duration;

use serde_json::json;
use solana_commitment_config::CommitmentConfig;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_rpc_client::api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client::api::config::RpcSendTransactionConfig;
use solana_rpc_client::api::request::{RpcError, RpcRequest};
use solana_rpc_client::api::response::TransactionConfirmationStatus;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_signer::Signer;
use solana_transaction::{Signature, Transaction, TransactionError};
use test_support::solana::{ChainConfig, SendBehaviour, SolanaRpc, Transfer};

const SOL: u64 = 1_000_000_000;
const FEE: u64 = 5000;
/// Above rent exemption for a new, empty account (890,880 lamports).
const PAY: u64 = 1_000_000;

struct Fixture {
    chain: SolanaRpc,
    rpc: RpcClient,
    payer: Keypair,
    to: Pubkey,
}

async fn fixture(cfg: ChainConfig) -> Fixture {
    let chain = SolanaRpc::start(cfg).await.unwrap();
    let rpc = RpcClient::new_with_commitment(chain.url(), CommitmentConfig::finalized());
    let payer = Keypair::new();
    chain.airdrop(payer.pubkey().to_bytes(), SOL);
    Fixture {
        chain,
        rpc,
        payer,
        to: Pubkey::new_unique(),
    }
}

impl Fixture {
    /// A signed transfer of `lamports` from the payer to `to`, over the
    /// latest blockhash; and that blockhash's last valid height.
    async fn transfer(&self, lamports: u64) -> (Transaction, u64) {
        let (blockhash, last_valid) = self
            .rpc
            .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
            .await
            .unwrap();
        (self.transfer_with(lamports, blockhash), last_valid)
    }

    fn transfer_with(&self, lamports: u64, blockhash: Hash) -> Transaction {
        let ix = solana_system_interface::instruction::transfer(
            &self.payer.pubkey(),
            &self.to,
            lamports,
        );
        Transaction::new_signed_with_payer(
            &[ix],
            Some(&self.payer.pubkey()),
            &[&self.payer],
            blockhash,
        )
    }

    async fn send(&self, tx: &Transaction) -> Result<Signature, ClientError> {
        let cfg = RpcSendTransactionConfig {
            skip_preflight: true,
            ..Default::default()
        };
        self.rpc.send_transaction_with_config(tx, cfg).await
    }

    async fn status(&self, sig: &Signature) -> Option<Status> {
        let st = self
            .rpc
            .get_signature_statuses_with_history(&[*sig])
            .await
            .unwrap()
            .value
            .remove(0)?;
        Some(Status {
            finalized: st.satisfies_commitment(CommitmentConfig::finalized()),
            slot: st.slot,
            confirmations: st.confirmations,
            status: st.status,
            err: st.err,
            confirmation_status: st.confirmation_status,
        })
    }
}

/// The client's `TransactionStatus` (whose crate is not a dependency here).
struct Status {
    slot: u64,
    confirmations: Option<usize>,
    status: Result<(), TransactionError>,
    err: Option<TransactionError>,
    confirmation_status: Option<TransactionConfirmationStatus>,
    finalized: bool,
}

/// The JSON-RPC error code of a client error.
fn rpc_code(e: &ClientError) -> Option<i64> {
    match e.kind() {
        ErrorKind::RpcError(RpcError::RpcResponseError { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn a_transfer_lands_and_is_finalized() {
    let f = fixture(ChainConfig::default()).await;
    assert_eq!(f.rpc.get_balance(&f.payer.pubkey()).await.unwrap(), SOL);
    let (tx, _) = f.transfer(PAY).await;
    let sig = f.send(&tx).await.unwrap();
    assert_eq!(sig, tx.signatures[0]);

    let st = f.status(&sig).await.expect("landed");
    assert_eq!(st.slot, f.chain.block_height());
    assert_eq!(st.confirmations, None);
    assert_eq!(st.err, None);
    assert_eq!(st.status, Ok(()));
    assert!(st.finalized);
    assert_eq!(
        st.confirmation_status,
        Some(TransactionConfirmationStatus::Finalized)
    );

    assert_eq!(f.rpc.get_balance(&f.to).await.unwrap(), PAY);
    assert_eq!(
        f.rpc.get_balance(&f.payer.pubkey()).await.unwrap(),
        SOL - PAY - FEE
    );
    assert_eq!(f.chain.balance(f.to.to_bytes()), PAY);
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
    assert_eq!(f.chain.send_calls(), 1);
    let landed = f.chain.landed();
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].signature, sig.to_string());
    assert!(landed[0].ok);
    assert_eq!(
        landed[0].transfers,
        vec![Transfer {
            from: f.payer.pubkey().to_bytes(),
            to: f.to.to_bytes(),
            lamports: PAY,
        }]
    );
}

#[tokio::test]
async fn a_held_transaction_lands_when_released() {
    let f = fixture(ChainConfig::default()).await;
    f.chain.push_behaviour(SendBehaviour::Hold);
    let (tx, _) = f.transfer(PAY).await;
    let sig = f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.is_none());
    assert_eq!(f.chain.balance(f.to.to_bytes()), 0);

    // A second send of the held transaction keeps one copy.
    f.chain.push_behaviour(SendBehaviour::Hold);
    f.send(&tx).await.unwrap();
    f.chain.advance_blocks(3);
    assert_eq!(f.chain.release_held(), 1);
    assert_eq!(f.chain.release_held(), 0);

    let st = f.status(&sig).await.expect("landed on release");
    assert_eq!(st.slot, f.chain.block_height());
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
    assert_eq!(f.rpc.get_balance(&f.to).await.unwrap(), PAY);
    assert_eq!(f.chain.send_calls(), 2);
}

#[tokio::test]
async fn a_held_transaction_expires_with_its_blockhash() {
    let f = fixture(ChainConfig {
        blockhash_validity: 5,
        ..Default::default()
    })
    .await;
    let start = f.rpc.get_block_height().await.unwrap();
    f.chain.push_behaviour(SendBehaviour::Hold);
    let (tx, last_valid) = f.transfer(PAY).await;
    assert_eq!(last_valid, start + 5);
    let sig = f.send(&tx).await.unwrap();

    // Still valid at its last valid height.
    f.chain.advance_blocks(5);
    assert_eq!(f.rpc.get_block_height().await.unwrap(), last_valid);
    let (blockhash, _) = f
        .rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
        .await
        .unwrap();
    assert!(f
        .rpc
        .is_blockhash_valid(&tx.message.recent_blockhash, CommitmentConfig::finalized())
        .await
        .unwrap());
    assert_ne!(blockhash, tx.message.recent_blockhash);

    // One block later it has expired, and the held copy is gone.
    f.chain.advance_blocks(1);
    assert!(f.rpc.get_block_height().await.unwrap() > last_valid);
    assert!(!f
        .rpc
        .is_blockhash_valid(&tx.message.recent_blockhash, CommitmentConfig::finalized())
        .await
        .unwrap());
    assert_eq!(f.chain.release_held(), 0);
    assert!(f.status(&sig).await.is_none());

    // A resend is accepted, never lands, and consumes no behaviour.
    f.chain.push_behaviour(SendBehaviour::Hold);
    assert_eq!(f.send(&tx).await.unwrap(), sig);
    assert!(f.status(&sig).await.is_none());
    assert!(f.chain.landed().is_empty());
    assert_eq!(f.chain.balance(f.to.to_bytes()), 0);
    assert_eq!(f.chain.send_calls(), 2);

    // The queued Hold is still there for the next valid send.
    let (fresh, _) = f.transfer(PAY).await;
    let fresh_sig = f.send(&fresh).await.unwrap();
    assert!(f.status(&fresh_sig).await.is_none());
    assert_eq!(f.chain.release_held(), 1);
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
}

#[tokio::test]
async fn a_dropped_transaction_never_lands_but_a_resend_can() {
    let f = fixture(ChainConfig::default()).await;
    f.chain.push_behaviour(SendBehaviour::Drop);
    let (tx, _) = f.transfer(PAY).await;
    let sig = f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.is_none());
    assert_eq!(f.chain.release_held(), 0);
    assert!(f.chain.landed().is_empty());

    // The queue is empty again: the resend lands.
    f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.is_some());
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
}

#[tokio::test]
async fn the_default_behaviour_applies_when_the_queue_is_empty() {
    let f = fixture(ChainConfig::default()).await;
    f.chain.set_default_behaviour(SendBehaviour::Drop);
    f.chain.push_behaviour(SendBehaviour::Land);
    let (first, _) = f.transfer(PAY).await;
    let (second, _) = f.transfer(PAY + 1).await;
    let first = f.send(&first).await.unwrap();
    let second = f.send(&second).await.unwrap();
    assert!(f.status(&first).await.is_some());
    assert!(f.status(&second).await.is_none());
}

#[tokio::test]
async fn resending_a_landed_transaction_does_not_pay_twice() {
    let f = fixture(ChainConfig::default()).await;
    let (tx, _) = f.transfer(PAY).await;
    let sig = f.send(&tx).await.unwrap();
    f.chain.advance_blocks(2);
    assert_eq!(f.send(&tx).await.unwrap(), sig);
    // Held then released: still once.
    f.chain.push_behaviour(SendBehaviour::Hold);
    f.send(&tx).await.unwrap();
    assert_eq!(f.chain.release_held(), 0);

    assert_eq!(f.chain.landed().len(), 1);
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
    assert_eq!(f.rpc.get_balance(&f.to).await.unwrap(), PAY);
    assert_eq!(
        f.rpc.get_balance(&f.payer.pubkey()).await.unwrap(),
        SOL - PAY - FEE
    );
    assert_eq!(f.chain.send_calls(), 3);
    // It kept the slot it first landed in.
    assert_eq!(
        f.status(&sig).await.unwrap().slot,
        f.chain.block_height() - 2
    );
}

#[tokio::test]
async fn a_transaction_failing_on_chain_lands_with_its_error() {
    let f = fixture(ChainConfig::default()).await;
    let (tx, _) = f.transfer(2 * SOL).await;
    let sig = f.send(&tx).await.unwrap();
    let st = f.status(&sig).await.expect("landed, failed");
    assert!(matches!(
        st.err,
        Some(TransactionError::InstructionError(0, _))
    ));
    assert!(st.status.is_err());
    // The fee is charged; nothing moved.
    assert_eq!(f.chain.balance(f.payer.pubkey().to_bytes()), SOL - FEE);
    assert_eq!(f.chain.balance(f.to.to_bytes()), 0);
    assert_eq!(f.chain.received(f.to.to_bytes()), 0);
    let landed = f.chain.landed();
    assert_eq!(landed.len(), 1);
    assert!(!landed[0].ok);
    assert!(landed[0].err.is_some());
    assert_eq!(landed[0].transfers.len(), 1);
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let f = fixture(ChainConfig::default()).await;
    let (mut tx, _) = f.transfer(PAY).await;
    tx.signatures[0] = Signature::from([7u8; 64]);
    let err = f.send(&tx).await.unwrap_err();
    assert_eq!(rpc_code(&err), Some(-32003), "{err}");
    assert!(f.chain.landed().is_empty());
    assert_eq!(f.chain.send_calls(), 1);
}

#[tokio::test]
async fn an_unfunded_payer_is_accepted_and_never_lands() {
    let f = fixture(ChainConfig::default()).await;
    let stranger = Keypair::new();
    let (blockhash, _) = f
        .rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
        .await
        .unwrap();
    let ix = solana_system_interface::instruction::transfer(&stranger.pubkey(), &f.to, PAY);
    let tx = Transaction::new_signed_with_payer(
        &[ix],
        Some(&stranger.pubkey()),
        &[&stranger],
        blockhash,
    );
    let sig = f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.is_none());
    assert!(f.chain.landed().is_empty());
}

#[tokio::test]
async fn fees_and_rent_through_the_client() {
    let f = fixture(ChainConfig {
        lamports_per_signature: 7000,
        ..Default::default()
    })
    .await;
    let (tx, _) = f.transfer(PAY).await;
    assert_eq!(f.rpc.get_fee_for_message(&tx.message).await.unwrap(), 7000);
    f.send(&tx).await.unwrap();
    assert_eq!(
        f.chain.balance(f.payer.pubkey().to_bytes()),
        SOL - PAY - 7000
    );

    // A blockhash the chain never issued has no fee.
    let unknown = f.transfer_with(PAY, Hash::new_from_array([9; 32]));
    assert!(f.rpc.get_fee_for_message(&unknown.message).await.is_err());

    let rent = f
        .rpc
        .get_minimum_balance_for_rent_exemption(0)
        .await
        .unwrap();
    assert_eq!(rent, 890_880);
    assert!(
        f.rpc
            .get_minimum_balance_for_rent_exemption(165)
            .await
            .unwrap()
            > rent
    );
}

#[tokio::test]
async fn an_unavailable_rpc_fails_every_call() {
    let f = fixture(ChainConfig::default()).await;
    let (tx, _) = f.transfer(PAY).await;
    f.chain.set_unavailable(true);
    assert!(f.rpc.get_block_height().await.is_err());
    assert!(f.send(&tx).await.is_err());
    assert!(f.rpc.get_balance(&f.to).await.is_err());
    assert_eq!(f.chain.send_calls(), 0);
    assert!(f.chain.landed().is_empty());

    f.chain.set_unavailable(false);
    let sig = f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.is_some());
}

#[tokio::test]
async fn blocks_advance_on_their_own_with_an_interval() {
    let f = fixture(ChainConfig {
        block_interval: Some(Duration::from_millis(10)),
        ..Default::default()
    })
    .await;
    let start = f.rpc.get_block_height().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.rpc.get_block_height().await.unwrap() < start + 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("blocks advance");
    // One response: two calls would race the ticker.
    let info = f.rpc.get_epoch_info().await.unwrap();
    assert_eq!(info.absolute_slot, info.block_height);
}

#[tokio::test]
async fn other_methods() {
    let f = fixture(ChainConfig::default()).await;
    let unknown = f
        .rpc
        .send::<serde_json::Value>(RpcRequest::Custom { method: "getNope" }, json!([]))
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&unknown), Some(-32601));
    assert_eq!(
        f.rpc.get_version().await.unwrap().solana_core,
        "2.2.0".to_string()
    );
    f.rpc.get_health().await.unwrap();
    f.rpc.get_genesis_hash().await.unwrap();

    let bad = f
        .rpc
        .send::<String>(
            RpcRequest::SendTransaction,
            json!(["AAAA", {"encoding": "base64"}]),
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&bad), Some(-32602));

    // Base58, the node's default encoding.
    let (tx, _) = f.transfer(PAY).await;
    let encoded = bs58::encode(wincode::serialize(&tx).unwrap()).into_string();
    let sig: String = f
        .rpc
        .send(RpcRequest::SendTransaction, json!([encoded]))
        .await
        .unwrap();
    assert_eq!(sig, tx.signatures[0].to_string());
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
}

#[tokio::test]
async fn batches_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = fixture(ChainConfig::default()).await;
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "getBlockHeight"},
        {"jsonrpc": "2.0", "id": 2, "method": "getHealth"},
    ])
    .to_string();
    let addr = f.chain.url().trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (_, json_body) = response.split_once("\r\n\r\n").unwrap();
    let replies: serde_json::Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(
        replies,
        json!([
            {"jsonrpc": "2.0", "id": 1, "result": f.chain.block_height()},
            {"jsonrpc": "2.0", "id": 2, "result": "ok"},
        ])
    );
}

#[tokio::test]
async fn dropping_it_stops_the_server() {
    let f = fixture(ChainConfig {
        block_interval: Some(Duration::from_millis(10)),
        ..Default::default()
    })
    .await;
    f.rpc.get_block_height().await.unwrap();
    drop(f.chain);
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.rpc.get_block_height().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server stops");
}

/// A transfer to an account that cannot receive (a sysvar: the runtime
/// demotes it to read-only) lands with an error, fee charged, every time.
#[tokio::test]
async fn a_transfer_to_a_sysvar_fails_on_chain() {
    let f = fixture(ChainConfig::default()).await;
    let rent = Pubkey::from_str_const("SysvarRent111111111111111111111111111111111");
    let (blockhash, _) = f
        .rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
        .await
        .unwrap();
    let ix = solana_system_interface::instruction::transfer(&f.payer.pubkey(), &rent, PAY);
    let tx =
        Transaction::new_signed_with_payer(&[ix], Some(&f.payer.pubkey()), &[&f.payer], blockhash);
    let sig = f.send(&tx).await.unwrap();
    let st = f.status(&sig).await.expect("landed, failed");
    assert!(st.status.is_err(), "{:?}", st.status);
    assert_eq!(f.chain.balance(f.payer.pubkey().to_bytes()), SOL - FEE);
    assert_eq!(f.chain.received(rent.to_bytes()), 0);
}

/// The lagging node and the pool: height, slot, blockhash and context
/// lag; statuses outside its view or history are unknown; sends land.
#[tokio::test]
async fn a_lagging_node_and_a_pool_of_both() {
    use test_support::solana::LaggingNode;
    let f = fixture(ChainConfig {
        blockhash_validity: 50,
        lagging: LaggingNode { lag: 3, history: 5 },
        ..ChainConfig::default()
    })
    .await;
    let lagging =
        RpcClient::new_with_commitment(f.chain.lagging_url(), CommitmentConfig::finalized());
    f.chain.advance_blocks(9); // height 10
    let tip = f.rpc.get_epoch_info().await.unwrap();
    assert_eq!((tip.absolute_slot, tip.block_height), (10, 10));
    let behind = lagging.get_epoch_info().await.unwrap();
    assert_eq!((behind.absolute_slot, behind.block_height), (7, 7));
    assert_eq!(lagging.get_block_height().await.unwrap(), 7);
    assert_eq!(f.rpc.minimum_ledger_slot().await.unwrap(), 0);
    assert_eq!(lagging.minimum_ledger_slot().await.unwrap(), 2);
    let (_, last_valid) = lagging
        .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
        .await
        .unwrap();
    assert_eq!(last_valid, 7 + 50);

    // Sent through the lagging node, it lands on the chain (slot 10).
    let (tx, _) = f.transfer(PAY).await;
    let sig = lagging
        .send_transaction_with_config(
            &tx,
            RpcSendTransactionConfig {
                skip_preflight: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(f.chain.received(f.to.to_bytes()), PAY);
    assert_eq!(seen(&f.rpc, sig).await, (10, true));
    assert_eq!(seen(&lagging, sig).await, (7, false), "not seen yet");
    f.chain.advance_blocks(3);
    assert_eq!(seen(&lagging, sig).await, (10, true), "seen");
    f.chain.advance_blocks(5);
    assert_eq!(
        seen(&lagging, sig).await,
        (15, true),
        "slot 10 is its oldest"
    );
    f.chain.advance_blocks(1);
    assert_eq!(lagging.minimum_ledger_slot().await.unwrap(), 11);
    assert_eq!(seen(&lagging, sig).await, (16, false), "forgotten");
    assert_eq!(seen(&f.rpc, sig).await, (19, true));

    // The pool sends each request to one node or the other.
    let pool = RpcClient::new_with_commitment(f.chain.pool_url(), CommitmentConfig::finalized());
    let mut slots = std::collections::HashSet::new();
    for _ in 0..40 {
        slots.insert(pool.get_epoch_info().await.unwrap().absolute_slot);
    }
    assert_eq!(slots, [16, 19].into(), "both nodes answered");
    let (tip_answers, lagging_answers) = f.chain.pool_answers();
    assert_eq!(tip_answers + lagging_answers, 40);

    // Lag and history can change on the fly.
    f.chain.set_lagging(LaggingNode {
        lag: 0,
        history: 100,
    });
    assert_eq!(seen(&lagging, sig).await, (19, true));
    assert_eq!(lagging.minimum_ledger_slot().await.unwrap(), 0);
}

/// `getFeeForMessage` includes the priority fee of compute-budget
/// instructions, and it is what litesvm charges.
#[tokio::test]
async fn priority_fees_are_reported_and_charged() {
    let f = fixture(ChainConfig::default()).await;
    let (blockhash, _) = f
        .rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::finalized())
        .await
        .unwrap();
    let ixs = [
        ComputeBudgetInstruction::set_compute_unit_limit(1_350),
        ComputeBudgetInstruction::set_compute_unit_price(1_000_000),
        solana_system_interface::instruction::transfer(&f.payer.pubkey(), &f.to, PAY),
    ];
    let tx =
        Transaction::new_signed_with_payer(&ixs, Some(&f.payer.pubkey()), &[&f.payer], blockhash);
    let fee = f.rpc.get_fee_for_message(&tx.message).await.unwrap();
    assert_eq!(fee, FEE + 1_350, "1 lamport per unit, 1,350 units");
    let sig = f.send(&tx).await.unwrap();
    assert!(f.status(&sig).await.unwrap().status.is_ok());
    assert_eq!(f.chain.landed()[0].fee, fee);
    assert_eq!(
        f.chain.balance(f.payer.pubkey().to_bytes()),
        SOL - PAY - fee
    );
}

/// The status response's context slot, and whether the signature is known.
async fn seen(rpc: &RpcClient, sig: Signature) -> (u64, bool) {
    let r = rpc
        .get_signature_statuses_with_history(&[sig])
        .await
        .unwrap();
    (r.context.slot, r.value[0].is_some())
}

/// `getSignaturesForAddress` lists an address's landed transactions newest
/// first (paged with `before`, bounded by `until` and `limit`), as each
/// node knows them, refusing a `minContextSlot` above the node's view;
/// `getTransaction` returns one that the production client decodes.
#[tokio::test]
async fn an_addresss_history_and_its_transactions() {
    use solana_rpc_client::api::config::{RpcTransactionConfig, UiTransactionEncoding};
    use solana_rpc_client::rpc_client::GetConfirmedSignaturesForAddress2Config;
    use test_support::solana::LaggingNode;
    let f = fixture(ChainConfig {
        lagging: LaggingNode { lag: 2, history: 3 },
        ..ChainConfig::default()
    })
    .await;
    let mut sigs = Vec::new();
    for i in 0..4u64 {
        let (tx, _) = f.transfer(PAY + i).await;
        sigs.push(f.send(&tx).await.unwrap());
        f.chain.advance_blocks(1);
    }
    // A failed one is listed too, with its error (to a sysvar: fails).
    let bad = Transaction::new_signed_with_payer(
        &[solana_system_interface::instruction::transfer(
            &f.payer.pubkey(),
            &solana_pubkey::Pubkey::from_str_const("SysvarC1ock11111111111111111111111111111111"),
            PAY,
        )],
        Some(&f.payer.pubkey()),
        &[&f.payer],
        f.rpc.get_latest_blockhash().await.unwrap(),
    );
    let bad_sig = f.send(&bad).await.unwrap();
    let list = |cfg: GetConfirmedSignaturesForAddress2Config| {
        let rpc = &f.rpc;
        let address = f.payer.pubkey();
        async move {
            rpc.get_signatures_for_address_with_config(&address, cfg)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.signature, e.slot, e.err.is_some()))
                .collect::<Vec<_>>()
        }
    };
    let all = list(Default::default()).await;
    let want: Vec<(String, u64, bool)> = [(bad_sig, 5, true)]
        .into_iter()
        .chain(
            sigs.iter()
                .enumerate()
                .rev()
                .map(|(i, s)| (*s, i as u64 + 1, false)),
        )
        .map(|(s, slot, err)| (s.to_string(), slot, err))
        .collect();
    assert_eq!(all, want);
    // The receiver sees only the transfers to it (the sysvar one is not).
    let to = f.rpc.get_signatures_for_address(&f.to).await.unwrap().len();
    assert_eq!(to, 4);
    let page = list(GetConfirmedSignaturesForAddress2Config {
        before: Some(sigs[3]),
        until: Some(sigs[0]),
        limit: Some(1),
        commitment: None,
    })
    .await;
    assert_eq!(page, want[2..3]);
    let page = list(GetConfirmedSignaturesForAddress2Config {
        before: Some(sigs[3]),
        until: Some(sigs[0]),
        ..Default::default()
    })
    .await;
    assert_eq!(page, want[2..4]);

    // The lagging node (2 behind: view 3) knows what landed up to slot 3.
    let lagging =
        RpcClient::new_with_commitment(f.chain.lagging_url(), CommitmentConfig::finalized());
    let known = lagging
        .get_signatures_for_address(&f.payer.pubkey())
        .await
        .unwrap();
    assert_eq!(known.len(), 3, "slots 1..=3 only");
    let behind = lagging
        .send::<serde_json::Value>(
            RpcRequest::GetSignaturesForAddress,
            json!([f.payer.pubkey().to_string(), {"minContextSlot": 5}]),
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&behind), Some(-32016));

    let cfg = RpcTransactionConfig {
        encoding: Some(UiTransactionEncoding::Base64),
        commitment: Some(CommitmentConfig::finalized()),
        max_supported_transaction_version: Some(0),
    };
    let got = f
        .rpc
        .get_transaction_with_config(&sigs[2], cfg)
        .await
        .unwrap();
    assert_eq!(got.slot, 3);
    let tx = got.transaction.transaction.decode().expect("decodes");
    assert_eq!(tx.signatures[0], sigs[2]);
    let meta = got.transaction.meta.expect("meta");
    assert_eq!((meta.fee, meta.err), (FEE, None));
    let failed = f
        .rpc
        .get_transaction_with_config(&bad_sig, cfg)
        .await
        .unwrap();
    assert!(failed.transaction.meta.unwrap().err.is_some());
    // Unknown: null.
    let none: serde_json::Value = f
        .rpc
        .send(
            RpcRequest::GetTransaction,
            json!([Signature::default().to_string(), {"encoding": "base64"}]),
        )
        .await
        .unwrap();
    assert!(none.is_null());
}
