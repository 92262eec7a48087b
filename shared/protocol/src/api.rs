//! JSON bodies of the hub's read-only HTTP API (not WebSocket frames).
//! `GET /v1/validators/{public_key}/earnings` returns [`Earnings`]; errors
//! return [`ApiError`]. Documented in docs/protocol.md.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a validator earned and was paid, in lamports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Earnings {
    pub public_key: String,
    /// Credited from settled rounds (on-time, not replaced results).
    pub earned_lamports: i64,
    /// Rewards of stored results whose rounds are not settled yet; an upper
    /// bound, since results of replaced tasks among them earn nothing.
    pub settling_lamports: i64,
    /// Earned, not yet claimed into a payout (below the minimum payout, or
    /// waiting for the next payout cycle).
    pub unclaimed_lamports: i64,
    /// Paid on chain beyond what the ledger credits as earned: transfers the
    /// payout leader found on chain after the database was restored from an
    /// older backup, until the rounds those transfers paid for are settled
    /// again.
    /// Absent (0) from hubs before this field existed.
    #[serde(default)]
    pub prepaid_lamports: i64,
    /// Claimed, not yet paid: waiting, short of treasury funds, or in a
    /// transaction not yet confirmed.
    pub pending_lamports: i64,
    /// In confirmed transactions.
    pub paid_lamports: i64,
    /// Given up after repeated transaction failures; an operator retries them.
    pub failed_lamports: i64,
    /// Results that earned a reward.
    pub earning_ticks: i64,
    pub agreement: Agreement,
    /// Newest first, at most 50.
    pub payouts: Vec<Payout>,
}

/// How often the validator's results matched their round's up/down
/// majority. Rounds without a majority count for neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Agreement {
    pub agreed: i64,
    pub disagreed: i64,
    /// agreed / (agreed + disagreed); null before any counted result.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Payout {
    /// The payout's idempotency key.
    pub id: Uuid,
    pub lamports: i64,
    /// `claimed`, `insufficient_funds`, `batched`, `paid` or `failed`.
    pub state: String,
    /// Transactions this payout has been through that did not pay.
    pub attempts: i32,
    /// Base58 signature of the transaction carrying it (batched or paid).
    pub signature: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub paid_at_ms: Option<i64>,
}

/// Error body: a stable code and a readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// `invalid_public_key`, `unknown_validator` or `unavailable`.
    pub code: String,
    pub message: String,
}
