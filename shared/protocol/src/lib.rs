//! Wire protocol (versions 1 and 2) between validators and hubs.
//!
//! # Layout
//! - [`messages`]: every frame on the wire, as serde types with JSON Schemas
//!   ([`HubMessage`] hub -> validator, [`ValidatorMessage`] validator -> hub).
//! - [`crypto`]: keys, signatures, the domain-separated canonical bytes that
//!   validators sign, and the HMAC task token any hub can verify.
//! - [`keypair`]: the Solana CLI keypair file format.
//! - [`limits`]: the documented limits both sides agree on, and the
//!   `check_*` rules on hello and result fields ([`WireError`]).
//! - [`api`]: JSON bodies of the hub's read-only HTTP API (earnings).
//! - [`target`]: which check targets (addresses, ports) are refused.
//!
//! **API boundary**: this crate knows nothing of tokio, axum, sqlx or Redis.
//! It is pure data and pure functions, so the hub, the validator, the load
//! tester and the benchmarks share one definition of the protocol.

pub mod api;
pub mod crypto;
pub mod keypair;
pub mod limits;
pub mod messages;
pub mod target;

pub use crypto::{
    Digest, Keyring, Nonce, PublicKey, Signature, TaskToken, TokenError, TokenFields, VerifyError,
};
pub use limits::WireError;
pub use messages::*;

/// Protocol versions this build speaks, newest last.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2];

/// Picks the newest version both sides speak.
pub fn negotiate_version(theirs: &[u16]) -> Option<u16> {
    SUPPORTED_VERSIONS
        .iter()
        .rev()
        .find(|v| theirs.contains(v))
        .copied()
}

/// Milliseconds since the Unix epoch, the only time unit on the wire.
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `unix_ms(SystemTime::now())`.
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}
