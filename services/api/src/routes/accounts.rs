//! Sign-up, sign-in, sign-out and the caller's own account.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

use crate::app::{client_ip, AppState};
use crate::auth::{random_token, session_cookie, session_token, sha256, Reader, Session, Via};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::model::{AccountView, Credentials, Me, SessionView};

/// Shortest and longest password, bytes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 10..=256;

/// A plausible email address: one `@` with text on both sides, a dot in
/// the domain, no spaces or control characters, at most 254 bytes. Whether
/// it receives mail is not checked here.
pub fn check_email(e: &str) -> Result<(), ApiError> {
    let bad = || ApiError::invalid("email", "not an email address (name@domain.tld)");
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

pub fn check_password(p: &str) -> Result<(), ApiError> {
    if !PASSWORD_LEN.contains(&p.len()) {
        return Err(ApiError::invalid(
            "password",
            format!(
                "must be {} to {} bytes",
                PASSWORD_LEN.start(),
                PASSWORD_LEN.end()
            ),
        ));
    }
    Ok(())
}

async fn start_session(
    state: &AppState,
    account: &store::Account,
    status: StatusCode,
) -> ApiResult<Response> {
    let token = random_token();
    let csrf_token = random_token();
    state
        .store
        .create_session(
            account.id,
            &sha256(&token),
            &csrf_token,
            state.settings.session_ttl,
        )
        .await?;
    let cookie = session_cookie(
        Some(&token),
        state.settings.session_ttl.as_secs() as i64,
        state.settings.cookie_secure,
    );
    let body = SessionView {
        account: account.into(),
        csrf_token,
    };
    Ok((status, [(header::SET_COOKIE, cookie)], axum::Json(body)).into_response())
}

/// Create an account and sign in.
///
/// Open only while the operator allows sign-up (`API_SIGNUP_OPEN`); the
/// operator can always create accounts with `api accounts create`.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = Credentials, security(()),
    responses(
        (status = 201, description = "Signed up and signed in; sets the session cookie", body = SessionView),
        (status = 403, description = "`signup_closed`", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub async fn sign_up(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> ApiResult<Response> {
    state.limits.check_auth_attempt(
        client_ip(&state.settings.trusted_proxies, peer, &headers),
        &c.email,
    )?;
    if !state.settings.signup_open {
        return Err(ApiError::forbidden(
            "signup_closed",
            "sign-up is closed on this service; ask its operator for an account",
        ));
    }
    check_email(&c.email)?;
    check_password(&c.password)?;
    let hash = state.passwords.hash(c.password).await?;
    let account = state
        .store
        .create_account(&store::NewAccount {
            email: &c.email,
            password_hash: &hash,
            max_sites: state.settings.default_max_sites,
            min_interval_secs: state.settings.default_min_interval_secs,
        })
        .await?
        .ok_or_else(|| ApiError::conflict("email_taken", "an account with this email exists"))?;
    tracing::info!(account = account.id.0, "account created");
    start_session(&state, &account, StatusCode::CREATED).await
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/v1/sessions", tag = "accounts", request_body = Credentials, security(()),
    responses(
        (status = 200, description = "Signed in; sets the session cookie", body = SessionView),
        (status = 401, description = "`bad_credentials`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> ApiResult<Response> {
    state.limits.check_auth_attempt(
        client_ip(&state.settings.trusted_proxies, peer, &headers),
        &c.email,
    )?;
    let found = if c.email.len() <= 254 && c.password.len() <= *PASSWORD_LEN.end() {
        state.store.account_for_login(&c.email).await?
    } else {
        None
    };
    let (account, hash) = match found {
        Some((a, h)) => (Some(a), Some(h)),
        None => (None, None),
    };
    let ok = state.passwords.verify(c.password, hash).await?;
    match account {
        Some(a) if ok => start_session(&state, &a, StatusCode::OK).await,
        _ => {
            state
                .metrics
                .auth_failures
                .with_label_values(&["password"])
                .inc();
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                "wrong email or password",
            ))
        }
    }
}

/// Sign out: ends this session and clears its cookie.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "accounts",
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`csrf_failed` or `session_required`", body = ErrorBody),
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    Session(caller): Session,
) -> ApiResult<Response> {
    if let Via::Session { token_sha256, .. } = &caller.via {
        state.store.delete_session(token_sha256).await?;
    }
    let cookie = session_cookie(None, 0, state.settings.cookie_secure);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// The caller's account, quotas and number of sites.
#[utoipa::path(get, path = "/v1/account", tag = "accounts",
    responses(
        (status = 200, body = Me),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn me(
    State(state): State<AppState>,
    Reader(caller): Reader,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Me>> {
    let sites = state.store.count_owned_sites(caller.account.id).await?;
    let csrf_token = match caller.via {
        // Only the cookie's own session; a key never sees one.
        Via::Session { csrf_token, .. } if session_token(&headers).is_some() => Some(csrf_token),
        _ => None,
    };
    Ok(axum::Json(Me {
        account: AccountView::from(&caller.account),
        sites,
        csrf_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_passwords() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org"] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@b.co",
            "a@b",
            "a@.b",
            "a@b.",
            "a b@c.d",
            "a@b@c.d",
            "a\u{0}@b.co",
        ] {
            assert_eq!(
                check_email(bad).unwrap_err().field,
                Some("email"),
                "{bad:?}"
            );
        }
        assert!(check_password("0123456789").is_ok());
        assert!(check_password("012345678").is_err());
        assert!(check_password(&"x".repeat(257)).is_err());
    }
}
