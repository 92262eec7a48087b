//! API keys: created and revoked by a signed-in account (a key cannot mint
//! keys), shown once, stored as an HMAC.

use axum::extract::State;
use axum::http::StatusCode;

use crate::app::AppState;
use crate::auth::{key_mac, new_api_key, Session};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::model::{CreatedKey, KeyList, KeyView, NewKey};

/// Live keys an account may hold.
pub const MAX_LIVE_KEYS: i64 = 50;

/// The account's API keys, newest first (revoked ones too).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, body = KeyList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`session_required`", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Session(caller): Session,
) -> ApiResult<axum::Json<KeyList>> {
    let keys = state.store.api_keys(caller.account.id).await?;
    Ok(axum::Json(KeyList {
        items: keys.iter().map(KeyView::from).collect(),
    }))
}

/// Create a key. The response holds the key; it is never shown again.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey,
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 201, body = CreatedKey),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`session_required`, `csrf_failed`", body = ErrorBody),
        (status = 409, description = "`too_many_keys`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Session(caller): Session,
    Json(req): Json<NewKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    // A prefix is 48 random bits: a collision is rare, and retried.
    for _ in 0..3 {
        let (key, prefix) = new_api_key();
        let mac = key_mac(&state.settings.key_secret.0, &key);
        match state
            .store
            .create_api_key(
                caller.account.id,
                &prefix,
                &mac,
                name,
                req.scope.into(),
                MAX_LIVE_KEYS,
            )
            .await?
        {
            store::NewKey::Created(k) => {
                tracing::info!(account = caller.account.id.0, key = k.id.0, prefix = %k.prefix, "api key created");
                return Ok((
                    StatusCode::CREATED,
                    axum::Json(CreatedKey {
                        key,
                        api_key: KeyView::from(&k),
                    }),
                ));
            }
            store::NewKey::TooMany => {
                return Err(ApiError::conflict(
                    "too_many_keys",
                    format!("an account may hold {MAX_LIVE_KEYS} live keys; revoke one first"),
                ))
            }
            store::NewKey::PrefixTaken => continue,
        }
    }
    Err(ApiError::internal())
}

/// Revoke a key: it stops working at once, on every replica.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path), ("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`session_required`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Session(caller): Session,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<KeyView>> {
    let k = state
        .store
        .revoke_api_key(caller.account.id, store::ApiKeyId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    tracing::info!(account = caller.account.id.0, key = id, "api key revoked");
    Ok(axum::Json(KeyView::from(&k)))
}
