//! Keys, signatures, canonical signing bytes and task tokens.
//!
//! Everything a validator signs starts with a domain tag ending in a NUL byte
//! (`uptime/hello/v1\0`, `uptime/result/v1\0`) so a signature made for one
//! purpose can never be replayed as another. Fields follow in a fixed order;
//! integers are big-endian; variable-length fields carry a u32 length prefix;
//! optional fields carry a presence byte. Nothing depends on JSON formatting.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use uuid::Uuid;

use crate::messages::{CheckResult, CheckStatus, Hello};

const HELLO_DOMAIN: &[u8] = b"uptime/hello/v1\0";
/// A hello that names a payout address (protocol 2).
const HELLO_DOMAIN_V2: &[u8] = b"uptime/hello/v2\0";
const RESULT_DOMAIN: &[u8] = b"uptime/result/v1\0";
/// A result that carries evidence (protocol 2).
const RESULT_DOMAIN_V2: &[u8] = b"uptime/result/v2\0";
const TOKEN_DOMAIN: &[u8] = b"uptime/task-token/v1\0";

/// Why a signature or key did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("public key is not a valid ed25519 point")]
    BadKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// A key or signature in base58, on the stack: serializing one (every task
/// names its validator) allocates nothing. five8's fixed-size 32- and
/// 64-byte codecs are several times faster than a general one, and keys
/// and signatures are decoded for every result.
struct Base58<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> Base58<N> {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)])
            .expect("the base58 alphabet is ASCII")
    }
}

/// An ed25519 public key, written on the wire in base58 like every Solana
/// address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    fn base58(&self) -> Base58<{ five8::BASE58_ENCODED_32_MAX_LEN }> {
        let mut buf = [0u8; five8::BASE58_ENCODED_32_MAX_LEN];
        let len = five8::encode_32(&self.0, &mut buf);
        Base58 { buf, len }
    }

    pub fn to_base58(&self) -> String {
        self.base58().as_str().to_owned()
    }

    pub fn from_base58(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        five8::decode_32(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// The curve point, or `BadKey` if the bytes are not one.
    pub fn verifying_key(&self) -> Result<VerifyingKey, VerifyError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| VerifyError::BadKey)
    }
}

impl From<&SigningKey> for PublicKey {
    fn from(k: &SigningKey) -> Self {
        Self(k.verifying_key().to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base58().as_str())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.base58().as_str())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a base58 ed25519 public key", Self::from_base58)
    }
}

/// Reads a string and parses it, copying nothing (serde's `Cow<str>`
/// always copies): keys, signatures and MACs are decoded for every result.
/// A string that does not parse fails with "expected {what}".
fn parse_str<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, D::Error> {
    struct Parse<T> {
        what: &'static str,
        parse: fn(&str) -> Option<T>,
    }
    impl<T> serde::de::Visitor<'_> for Parse<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).ok_or_else(|| E::custom(format_args!("expected {}", self.what)))
        }
    }
    d.deserialize_str(Parse { what, parse })
}

impl JsonSchema for PublicKey {
    fn schema_name() -> Cow<'static, str> {
        "PublicKey".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "ed25519 public key, base58 (Solana address)",
            "type": "string",
            "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,44}$"
        })
    }
}

/// An ed25519 signature, base58 on the wire (as Solana prints them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    fn base58(&self) -> Base58<{ five8::BASE58_ENCODED_64_MAX_LEN }> {
        let mut buf = [0u8; five8::BASE58_ENCODED_64_MAX_LEN];
        let len = five8::encode_64(&self.0, &mut buf);
        Base58 { buf, len }
    }

    fn from_base58(s: &str) -> Option<Self> {
        let mut out = [0u8; 64];
        five8::decode_64(s, &mut out).ok()?;
        Some(Self(out))
    }

    fn dalek(&self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.base58().as_str())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.base58().as_str())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a base58 64-byte ed25519 signature", Self::from_base58)
    }
}

impl JsonSchema for Signature {
    fn schema_name() -> Cow<'static, str> {
        "Signature".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "ed25519 signature, base58",
            "type": "string",
            "pattern": "^[1-9A-HJ-NP-Za-km-z]{64,88}$"
        })
    }
}

/// A 32-byte value that is lowercase hex on the wire: its Debug, serde and
/// JSON Schema, once for every such type.
macro_rules! hex32 {
    ($(#[$doc:meta])* $name:ident, $schema:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; 32]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex::encode(self.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                ser_hex32(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                de_hex32(d).map(Self)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                hex32_schema($schema)
            }
        }
    };
}

hex32!(
    /// 32 random bytes, hex on the wire.
    Nonce,
    "32 random bytes, lowercase hex"
);

impl Nonce {
    /// A fresh nonce from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("operating system RNG unavailable");
        Self(b)
    }
}

hex32!(
    /// A SHA-256 digest, hex on the wire.
    Digest,
    "SHA-256, lowercase hex"
);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }
}

fn ser_hex32<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(b, &mut buf).expect("64 digits for 32 bytes");
    s.serialize_str(std::str::from_utf8(&buf).expect("hex digits are ASCII"))
}

fn de_hex32<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    parse_str(d, "64 hex digits", |s| {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).ok()?;
        Some(out)
    })
}

fn hex32_schema(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "type": "string",
        "pattern": "^[0-9a-f]{64}$"
    })
}

/// Appends canonical fields. Private so every signed layout lives here.
struct Canon(Vec<u8>);

impl Canon {
    fn new(domain: &[u8]) -> Self {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(domain);
        Self(v)
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.raw(b)
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) -> &mut Self {
        match v {
            None => self.raw(&[0]),
            Some(x) => {
                self.raw(&[1]);
                f(self, x);
                self
            }
        }
    }
}

/// The bytes a validator signs in `hello`: the hub's nonce and every field
/// of the hello, so neither can be replayed nor altered in flight.
///
/// A hello with a `payout_address` (protocol 2) is signed under its own
/// domain, with the address's 32 bytes last; one without it, exactly as in
/// protocol 1.
pub fn hello_signing_bytes(nonce: &Nonce, h: &Hello) -> Vec<u8> {
    let domain = if h.payout_address.is_some() {
        HELLO_DOMAIN_V2
    } else {
        HELLO_DOMAIN
    };
    let mut c = Canon::new(domain);
    c.raw(&nonce.0)
        .raw(&h.public_key.0)
        .str(&h.region)
        .u32(h.tags.len() as u32);
    for t in &h.tags {
        c.str(t);
    }
    c.u32(h.capacity).str(&h.client_version);
    c.u32(h.protocol_versions.len() as u32);
    for v in &h.protocol_versions {
        c.u16(*v);
    }
    if let Some(p) = &h.payout_address {
        c.raw(&p.0);
    }
    c.0
}

/// Signs `h` for the challenge `nonce`, filling in `h.signature`.
pub fn sign_hello(key: &SigningKey, nonce: &Nonce, h: &mut Hello) {
    h.public_key = PublicKey::from(key);
    h.signature = Signature(key.sign(&hello_signing_bytes(nonce, h)).to_bytes());
}

/// Checks the hello's signature against the nonce this connection was sent.
pub fn verify_hello(nonce: &Nonce, h: &Hello) -> Result<VerifyingKey, VerifyError> {
    let vk = h.public_key.verifying_key()?;
    vk.verify_strict(&hello_signing_bytes(nonce, h), &h.signature.dalek())
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(vk)
}

/// The bytes a validator signs in `result`: everything the hub stores, the
/// round it belongs to, and the hub's token for the task. A result with
/// `evidence` (protocol 2) is signed under its own domain, with the
/// evidence last; one without it, exactly as in protocol 1.
pub fn result_signing_bytes(r: &CheckResult) -> Vec<u8> {
    let domain = if r.evidence.is_some() {
        RESULT_DOMAIN_V2
    } else {
        RESULT_DOMAIN
    };
    let mut c = Canon::new(domain);
    c.raw(r.task_id.as_bytes())
        .i64(r.website_id)
        .i64(r.round_id)
        .i64(r.slot)
        .i64(r.scheduled_at_ms)
        .i64(r.deadline_ms)
        .raw(&r.validator.0)
        .str(&r.token.kid)
        .raw(&r.token.mac)
        .raw(&[match r.status {
            CheckStatus::Up => 1,
            CheckStatus::Down => 0,
        }])
        .opt(r.http_status, |c, s| {
            c.u16(s);
        })
        .u32(r.latency_ms)
        .opt(r.error.as_deref(), |c, e| {
            c.str(e);
        })
        .i64(r.checked_at_ms);
    if let Some(e) = &r.evidence {
        c.opt(e.body_sha256.as_ref(), |c, d| {
            c.raw(&d.0);
        })
        .u32(e.body_bytes)
        .opt(e.remote_ip, |c, ip| match ip {
            std::net::IpAddr::V4(v4) => {
                c.raw(&[4]).raw(&v4.octets());
            }
            std::net::IpAddr::V6(v6) => {
                c.raw(&[6]).raw(&v6.octets());
            }
        });
    }
    c.0
}

/// Signs `r`, filling in `r.signature`.
pub fn sign_result(key: &SigningKey, r: &mut CheckResult) {
    r.signature = Signature(key.sign(&result_signing_bytes(r)).to_bytes());
}

/// Checks one result's signature against the session's key.
pub fn verify_result(vk: &VerifyingKey, r: &CheckResult) -> Result<(), VerifyError> {
    vk.verify(&result_signing_bytes(r), &r.signature.dalek())
        .map_err(|_| VerifyError::BadSignature)
}

/// Verifies many results at once (about twice the single-signature rate).
/// Returns one verdict per item: when the batch fails, which is all it can
/// say, every item is checked on its own to find the bad ones.
pub fn verify_results_batch(items: &[(&VerifyingKey, &CheckResult)]) -> Vec<bool> {
    let msgs: Vec<Vec<u8>> = items.iter().map(|(_, r)| result_signing_bytes(r)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> =
        items.iter().map(|(_, r)| r.signature.dalek()).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _)| **k).collect();
    if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
        return vec![true; items.len()];
    }
    items
        .iter()
        .zip(&msgs)
        .map(|((k, r), m)| k.verify(m, &r.signature.dalek()).is_ok())
        .collect()
}

/// The hub's proof that it assigned a task: an HMAC-SHA256 under a cluster
/// key named by `kid`. Any hub holding the keyring can check it, so a result
/// may arrive at a different hub than the one that sent the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskToken {
    /// Which cluster key made the MAC (keys rotate by adding a new id).
    pub kid: String,
    #[serde(serialize_with = "ser_hex32", deserialize_with = "de_hex32")]
    #[schemars(schema_with = "mac_schema")]
    pub mac: [u8; 32],
}

fn mac_schema(_: &mut SchemaGenerator) -> Schema {
    hex32_schema("HMAC-SHA256, lowercase hex")
}

/// What a task token binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFields<'a> {
    pub task_id: Uuid,
    pub website_id: i64,
    pub round_id: i64,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    pub validator: &'a PublicKey,
    pub deadline_ms: i64,
}

impl TokenFields<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut c = Canon::new(TOKEN_DOMAIN);
        c.raw(self.task_id.as_bytes())
            .i64(self.website_id)
            .i64(self.round_id)
            .i64(self.slot)
            .i64(self.scheduled_at_ms)
            .raw(&self.validator.0)
            .i64(self.deadline_ms);
        c.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown token key id {0:?}")]
    UnknownKey(String),
    #[error("token does not match the task")]
    BadMac,
}

/// Why a keyring value was refused. Names a key id or an entry's position
/// (1-based), never key material: these end up in logs and on terminals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("expected KID:HEXKEY[,KID:HEXKEY...], got an empty value")]
    Empty,
    #[error("entry {0} is not KID:HEXKEY (key id missing)")]
    Entry(usize),
    #[error("key {0:?} is not hex")]
    Hex(String),
    #[error("key {0:?} must be at least 32 bytes (64 hex digits)")]
    Short(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
}

/// The cluster's task-token keys. The first key signs; all verify, so a key
/// can be rotated by prepending a new one and dropping the old one later.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    /// Each key's HMAC state with the key already absorbed (its inner and
    /// outer pads), cloned per token instead of rekeyed: two of the five
    /// SHA-256 blocks a token costs.
    keys: HashMap<String, HmacSha256>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

impl Keyring {
    /// Parses `kid:hexkey[,kid:hexkey...]`; the first entry signs.
    pub fn parse(s: &str) -> Result<Self, KeyringError> {
        let mut keys = HashMap::new();
        let mut current = None;
        let entries = s.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let (kid, hexkey) = entry
                .split_once(':')
                .filter(|(k, _)| !k.is_empty())
                .ok_or(KeyringError::Entry(i + 1))?;
            let key = hex::decode(hexkey).map_err(|_| KeyringError::Hex(kid.to_string()))?;
            if key.len() < 32 {
                return Err(KeyringError::Short(kid.to_string()));
            }
            if keys.insert(kid.to_string(), keyed(&key)).is_some() {
                return Err(KeyringError::Duplicate(kid.to_string()));
            }
            current.get_or_insert_with(|| kid.to_string());
        }
        Ok(Self {
            current: current.ok_or(KeyringError::Empty)?,
            keys,
        })
    }

    /// A keyring with one fresh random key, for tests and one-hub demos.
    pub fn random(kid: &str) -> Self {
        let Nonce(k) = Nonce::random();
        Self {
            current: kid.to_string(),
            keys: HashMap::from([(kid.to_string(), keyed(&k))]),
        }
    }

    fn mac(key: &HmacSha256, f: &TokenFields<'_>) -> HmacSha256 {
        let mut m = key.clone();
        m.update(&f.bytes());
        m
    }

    pub fn issue(&self, f: &TokenFields<'_>) -> TaskToken {
        let m = Self::mac(&self.keys[&self.current], f);
        TaskToken {
            kid: self.current.clone(),
            mac: m.finalize().into_bytes().into(),
        }
    }

    /// Constant-time check of a token against the fields it claims to bind.
    pub fn verify(&self, token: &TaskToken, f: &TokenFields<'_>) -> Result<(), TokenError> {
        let key = self
            .keys
            .get(&token.kid)
            .ok_or_else(|| TokenError::UnknownKey(token.kid.clone()))?;
        Self::mac(key, f)
            .verify_slice(&token.mac)
            .map_err(|_| TokenError::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_parse_errors_name_the_problem() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert!(matches!(
            Keyring::parse("nokey").unwrap_err(),
            KeyringError::Entry(_)
        ));
        assert!(matches!(
            Keyring::parse("k1:abcd").unwrap_err(),
            KeyringError::Short(_)
        ));
        let k = "00".repeat(32);
        assert!(matches!(
            Keyring::parse(&format!("a:{k},a:{k}")).unwrap_err(),
            KeyringError::Duplicate(_)
        ));
        let ring = Keyring::parse(&format!("new:{k},old:{}", "11".repeat(32))).unwrap();
        assert_eq!(ring.current, "new");
        assert!(!format!("{ring:?}").contains(&k));
    }

    /// Errors end up in logs and on terminals: they may name a key id or an
    /// entry's position, never key material, however the value is mangled.
    #[test]
    fn keyring_errors_never_echo_key_material() {
        let key = "ab".repeat(32);
        for bad in [
            key.clone(),
            format!(":{key}"),
            format!("k1:{key}zz"),
            format!("k1:{}", &key[..20]),
            format!("k1:{key}, {key}"),
            format!("k1:{key},k1:{key}"),
        ] {
            let msg = Keyring::parse(&bad).unwrap_err().to_string();
            assert!(!msg.contains(&key[..16]), "{bad}: {msg}");
        }
    }

    #[test]
    fn token_binds_every_field_and_rotates() {
        let old = Keyring::parse(&format!("old:{}", "11".repeat(32))).unwrap();
        let both =
            Keyring::parse(&format!("new:{},old:{}", "22".repeat(32), "11".repeat(32))).unwrap();
        let v = PublicKey([7; 32]);
        let f = TokenFields {
            task_id: Uuid::from_u128(1),
            website_id: 2,
            round_id: 3,
            slot: 4,
            scheduled_at_ms: 5,
            validator: &v,
            deadline_ms: 6,
        };
        let t = old.issue(&f);
        assert_eq!(
            both.verify(&t, &f),
            Ok(()),
            "old tokens verify after rotation"
        );
        let other = PublicKey([8; 32]);
        let variants = [
            TokenFields {
                task_id: Uuid::from_u128(9),
                ..f
            },
            TokenFields { website_id: 9, ..f },
            TokenFields { round_id: 9, ..f },
            TokenFields { slot: 9, ..f },
            TokenFields {
                scheduled_at_ms: 9,
                ..f
            },
            TokenFields {
                validator: &other,
                ..f
            },
            TokenFields {
                deadline_ms: 9,
                ..f
            },
        ];
        for g in variants {
            assert_eq!(both.verify(&t, &g), Err(TokenError::BadMac), "{g:?}");
        }
        let unknown = TaskToken {
            kid: "x".into(),
            mac: t.mac,
        };
        assert!(matches!(
            both.verify(&unknown, &f),
            Err(TokenError::UnknownKey(_))
        ));
    }

    #[test]
    fn base58_rejects_wrong_lengths() {
        assert!(PublicKey::from_base58("11111111111111111111111111111111").is_some());
        assert!(PublicKey::from_base58("1111").is_none());
        assert!(PublicKey::from_base58("0OIl").is_none());
    }
}
