//! Who is calling: a signed-in browser (a session cookie) or a program (an
//! API key). Handlers say what they need by the extractor they take:
//! [`Reader`] (either, any scope), [`Writer`] (a key with the `write`
//! scope, or a session whose request carries its CSRF token), [`Session`]
//! (a signed-in browser only: key management, sign-out).
//!
//! Secrets are compared by what is stored of them: the SHA-256 of a session
//! token, the HMAC-SHA256 of an API key under the server's key secret (one
//! hash per request, so a key is cheap to check; argon2id is for passwords,
//! whose entropy is low).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use store::{Account, ApiKeyId, KeyScope};

use crate::app::AppState;
use crate::error::ApiError;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "uptime_session";
/// Header a cookie-authenticated write must carry (the session's token).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Every API key starts with this.
pub const KEY_PREFIX: &str = "upk_";
/// Hex digits of a key's visible prefix.
const PREFIX_LEN: usize = 12;

/// How the caller proved who it is. `Debug` hides the session's secrets.
#[derive(Clone)]
pub enum Via {
    Session {
        token_sha256: [u8; 32],
        csrf_token: String,
    },
    Key {
        id: ApiKeyId,
        scope: KeyScope,
    },
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Session { .. } => f.write_str("Session(<redacted>)"),
            Via::Key { id, scope } => f
                .debug_struct("Key")
                .field("id", id)
                .field("scope", scope)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    pub via: Via,
}

/// Any authenticated caller.
pub struct Reader(pub Caller);
/// A caller allowed to change things (see the module docs).
pub struct Writer(pub Caller);
/// A signed-in browser; writes need the CSRF token too.
pub struct Session(pub Caller);

/// 32 random bytes as 43 characters of URL-safe base64.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the OS random source");
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A new API key: (the key, shown once; its visible prefix).
pub fn new_api_key() -> (String, String) {
    let mut p = [0u8; PREFIX_LEN / 2];
    getrandom::getrandom(&mut p).expect("the OS random source");
    let prefix = hex::encode(p);
    (format!("{KEY_PREFIX}{prefix}_{}", random_token()), prefix)
}

/// The key's HMAC-SHA256 under the server's secret.
pub fn key_mac(secret: &[u8], key: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(key.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn key_matches(secret: &[u8], key: &str, mac: &[u8]) -> bool {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(key.as_bytes());
    m.verify_slice(mac).is_ok()
}

/// The visible prefix of a well-formed key, else `None`.
pub fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(prefix)
}

/// Constant-time equality of two short strings (CSRF tokens).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The session cookie's value, if the request has one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

/// `Set-Cookie` for a new session (`Some(token)`) or for signing out.
pub fn session_cookie(token: Option<&str>, ttl_secs: i64, secure: bool) -> HeaderValue {
    let c = cookie::Cookie::build((SESSION_COOKIE, token.unwrap_or("").to_string()))
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(if token.is_some() {
            ttl_secs
        } else {
            0
        }))
        .build();
    HeaderValue::from_str(&c.to_string()).expect("a cookie of URL-safe characters")
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    if let Some(caller) = parts.extensions.get::<Caller>() {
        return Ok(caller.clone());
    }
    let caller = if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let key = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        by_key(state, key).await?
    } else if let Some(token) = session_token(&parts.headers) {
        let token_sha256 = sha256(&token);
        match state.store.session(&token_sha256).await? {
            Some((account, csrf_token)) => Caller {
                account,
                via: Via::Session {
                    token_sha256,
                    csrf_token,
                },
            },
            None => {
                state
                    .metrics
                    .auth_failures
                    .with_label_values(&["session"])
                    .inc();
                return Err(ApiError::unauthorized());
            }
        }
    } else {
        return Err(ApiError::unauthorized());
    };
    state.limits.check_caller(&caller)?;
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

async fn by_key(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let fail = || {
        state
            .metrics
            .auth_failures
            .with_label_values(&["key"])
            .inc();
        ApiError::unauthorized()
    };
    let prefix = key_prefix(key).ok_or_else(fail)?;
    let found = state
        .store
        .api_key_by_prefix(prefix)
        .await?
        .ok_or_else(fail)?;
    if !key_matches(&state.settings.key_secret.0, key, &found.mac) {
        return Err(fail());
    }
    state.key_use.note(found.id);
    Ok(Caller {
        account: found.account,
        via: Via::Key {
            id: found.id,
            scope: found.scope,
        },
    })
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(Reader)
    }
}

fn check_csrf(parts: &Parts, expected: &str) -> Result<(), ApiError> {
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if same(sent, expected) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf_failed",
            "a signed-in change needs the session's token in X-CSRF-Token",
        ))
    }
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        match &caller.via {
            Via::Key {
                scope: KeyScope::Write,
                ..
            } => {}
            Via::Key { .. } => {
                return Err(ApiError::forbidden(
                    "insufficient_scope",
                    "this API key may only read; create a key with the write scope",
                ))
            }
            Via::Session { csrf_token, .. } => check_csrf(parts, csrf_token)?,
        }
        Ok(Writer(caller))
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        let Via::Session { csrf_token, .. } = &caller.via else {
            return Err(ApiError::forbidden(
                "session_required",
                "API keys are managed by a signed-in account, not by another key",
            ));
        };
        if !parts.method.is_safe() {
            check_csrf(parts, csrf_token)?;
        }
        Ok(Session(caller))
    }
}

/// Hashes and checks passwords with argon2id (the crate's defaults: 19 MiB,
/// two passes), on the blocking pool, at most `permits` at once so a flood
/// of sign-ins cannot take every core.
pub struct Passwords {
    permits: Arc<tokio::sync::Semaphore>,
    /// A real hash of a random password: unknown emails are checked against
    /// it, so they take as long as known ones.
    decoy: String,
}

impl Passwords {
    pub fn new(permits: usize) -> Arc<Self> {
        let decoy = hash_now(&random_token()).expect("hashing a random password");
        Arc::new(Self {
            permits: Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
            decoy,
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _p = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal())?;
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(|_| ApiError::internal())
    }

    /// Whether `password` matches `hash` (the decoy when `None`: false).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        let _p = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal())?;
        let ok = tokio::task::spawn_blocking(move || {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(&hash)
                .map(|h| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|_| ApiError::internal())?;
        Ok(ok && known)
    }
}

fn hash_now(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("the OS random source");
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_prefix_and_are_checked_by_their_mac() {
        let secret = [7u8; 32];
        let (key, prefix) = new_api_key();
        assert_eq!(key_prefix(&key), Some(prefix.as_str()));
        assert_eq!(key.len(), KEY_PREFIX.len() + PREFIX_LEN + 1 + 43);
        let mac = key_mac(&secret, &key);
        assert!(key_matches(&secret, &key, &mac));
        assert!(!key_matches(&[8u8; 32], &key, &mac));
        let mut other = key.clone();
        other.pop();
        other.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert!(!key_matches(&secret, &other, &mac));
        for bad in [
            "",
            "upk_",
            "upk_abc_def",
            "xyz_0123456789ab_",
            &key[..key.len() - 1],
        ] {
            assert_eq!(key_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure() {
        let c = session_cookie(Some("tok"), 60, true);
        let c = c.to_str().unwrap();
        for part in [
            "uptime_session=tok",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let gone = session_cookie(None, 60, false);
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; uptime_session=xyz; b=2"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }

    #[tokio::test]
    async fn passwords_round_trip_and_unknown_accounts_never_match() {
        let p = Passwords::new(1);
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p
            .verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!p.verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
    }
}
