//! `GET /v1/validators/{public_key}/earnings`: what a validator earned,
//! what is pending, what was paid, with transaction signatures. Read-only
//! and served by every hub (it reads PostgreSQL).
//!
//! Bounded per request: a few primary-key and index lookups on the hub's
//! read pool (`HUB_READ_DB_MAX_CONNECTIONS`, apart from the tick writers'),
//! behind a cap on requests at once and a time limit (`edge::http`). `settling`
//! comes from a summary the payout leader rewrites after each settlement
//! (`payouts::refresh_summary`), not from the ticks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use protocol::api::{ApiError, Earnings};
use protocol::PublicKey;

use store::Store;

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// Served from the read pool (`read`), never the tick writers'.
pub async fn earnings(State(read): State<Store>, Path(key): Path<String>) -> Response {
    if PublicKey::from_base58(&key).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
            "not a base58 ed25519 public key",
        );
    }
    let e = match read.earnings_summary(&key).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_validator",
                "no validator with this key has connected",
            )
        }
        Err(err) => {
            tracing::warn!(error = %err, "reading earnings failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "database unavailable",
            );
        }
    };
    Json(Earnings::from(e)).into_response()
}
