//! Fixed test vectors for everything that is signed or MACed: the canonical
//! bytes, the ed25519 signatures (deterministic) and the task token. They pin
//! the signing layouts (a change here breaks every deployed validator) and
//! are printed in docs/protocol.md for implementers in other languages. The
//! tests re-derive every layout from the document's tables (`spec` below),
//! check that the document still shows exactly these values, and verify the
//! signed examples it shows.

use ed25519_dalek::SigningKey;
use hmac::{Mac, SimpleHmac};
use sha2::Sha256;
use uuid::Uuid;

use protocol::crypto::{
    hello_signing_bytes, result_signing_bytes, sign_hello, sign_result, verify_hello, verify_result,
};
use protocol::{
    CheckResult, CheckStatus, Hello, HubMessage, Keyring, Nonce, PublicKey, Signature, TaskToken,
    TokenFields, ValidatorMessage,
};

/// Secret seed of the vectors' validator key: 32 bytes of 0x07.
const SEED: [u8; 32] = [7; 32];
const PUBLIC_KEY: &str = "GmaDrppBC7P5ARKV8g3djiwP89vz1jLK23V2GBjuAEGB";
/// Challenge nonce: the bytes 0x00, 0x01, ..., 0x1f.
const NONCE_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const HELLO_BYTES: &str = "757074696d652f68656c6c6f2f763100000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0000000765752d77657374000000010000000b6973703a6865747a6e6572000000080000000f76616c696461746f722f302e312e30000000010001";
const HELLO_SIGNATURE: &str =
    "5b8XtNGV3ZWmCXCKcLhiLG4ZRBpct8RkSjctcqNBuRrpPEBgzrS53c4iC7HT8dXYdhMmSwk6g8XDuGbaeuTjNRv6";
/// The cluster keyring `k1:4242...42` (32 bytes of 0x42).
const KEYRING: &str = "k1:4242424242424242424242424242424242424242424242424242424242424242";
const TOKEN_BYTES: &str = "757074696d652f7461736b2d746f6b656e2f7631000b5e8f8a2c1d4f3e9a7b6c5d4e3f2a1b000000000000002a000000000000000700000000037c333e00000198628c0400ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c00000198628c7930";
const TOKEN_MAC: &str = "923b076b6c3dad7d0445cd4aa25c47d47ab5957647fc186db14b51c5312a0ff5";
const RESULT_BYTES: &str = "757074696d652f726573756c742f7631000b5e8f8a2c1d4f3e9a7b6c5d4e3f2a1b000000000000002a000000000000000700000000037c333e00000198628c040000000198628c7930ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c000000026b31923b076b6c3dad7d0445cd4aa25c47d47ab5957647fc186db14b51c5312a0ff5010100c8000000570000000198628c04fa";
const HELLO_V2_BYTES: &str = "757074696d652f68656c6c6f2f763200000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0000000765752d77657374000000010000000b6973703a6865747a6e6572000000080000000f76616c696461746f722f302e312e300000000200010002fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618";
const HELLO_V2_SIGNATURE: &str =
    "5woTDrUk1exuPULe8DdyajQe3oQMfiio5qVsvZbdzCXVwCizTiTdreqE6yhTic76pHhHCJMNXWWYhXmhdyF588qD";
const RESULT_V2_BYTES: &str = "757074696d652f726573756c742f7632000b5e8f8a2c1d4f3e9a7b6c5d4e3f2a1b000000000000002a000000000000000700000000037c333e00000198628c040000000198628c7930ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c000000026b31923b076b6c3dad7d0445cd4aa25c47d47ab5957647fc186db14b51c5312a0ff5010100c8000000570000000198628c04fa01b6c951ed9485262465aa9b940f7e9b7df577e3a299a33f8c86fdda98f66a9fdc0000000f01045db8d822";
const RESULT_V2_SIGNATURE: &str =
    "65YF5WCX4seoQNhz8w98xD93aVXiDoLodRoppFQc5zNXEsQ8CSgib9Yet6BoZMyxDiiqew1rsEQCGZvZaseExpJF";
const RESULT_SIGNATURE: &str =
    "265DZNx7QyaRkTEic4rF9LE8FvB8RG2LjKjjbpUwZwZN2D7EcA2MzGrWrPut4bdzfnDRrRuGTQtgHSLQAAbK7VY4";

fn key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

fn hello() -> (Nonce, Hello) {
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(NONCE_HEX, &mut nonce).unwrap();
    let mut h = Hello {
        public_key: PublicKey([0; 32]),
        region: "eu-west".into(),
        tags: vec!["isp:hetzner".into()],
        capacity: 8,
        client_version: "validator/0.1.0".into(),
        protocol_versions: vec![1],
        payout_address: None,
        signature: Signature([0; 64]),
    };
    sign_hello(&key(), &Nonce(nonce), &mut h);
    (Nonce(nonce), h)
}

/// The protocol 2 hello: versions [1, 2] and a payout address (the public
/// key of 32 bytes of 0x09).
fn hello_v2() -> (Nonce, Hello) {
    let (nonce, mut h) = hello();
    h.protocol_versions = vec![1, 2];
    h.payout_address = Some(PublicKey::from(&SigningKey::from_bytes(&[9; 32])));
    sign_hello(&key(), &nonce, &mut h);
    (nonce, h)
}

/// The protocol 2 result: the vector result with evidence of a 15-byte
/// body `<html>ok</html>` fetched from 93.184.216.34.
fn result_v2(token: TaskToken) -> CheckResult {
    let mut r = result(token);
    r.evidence = Some(protocol::Evidence {
        body_sha256: Some(protocol::Digest::of(b"<html>ok</html>")),
        body_bytes: 15,
        remote_ip: Some("93.184.216.34".parse().unwrap()),
    });
    sign_result(&key(), &mut r);
    r
}

fn token_fields(validator: &PublicKey) -> TokenFields<'_> {
    TokenFields {
        task_id: Uuid::parse_str("0b5e8f8a-2c1d-4f3e-9a7b-6c5d4e3f2a1b").unwrap(),
        website_id: 42,
        round_id: 7,
        slot: 58_471_230,
        scheduled_at_ms: 1_754_000_000_000,
        validator,
        deadline_ms: 1_754_000_030_000,
    }
}

fn result(token: TaskToken) -> CheckResult {
    let pk = PublicKey::from(&key());
    let f = token_fields(&pk);
    let mut r = CheckResult {
        task_id: f.task_id,
        website_id: f.website_id,
        round_id: f.round_id,
        slot: f.slot,
        scheduled_at_ms: f.scheduled_at_ms,
        deadline_ms: f.deadline_ms,
        validator: pk,
        token,
        status: CheckStatus::Up,
        http_status: Some(200),
        latency_ms: 87,
        error: None,
        checked_at_ms: 1_754_000_000_250,
        evidence: None,
        signature: Signature([0; 64]),
    };
    sign_result(&key(), &mut r);
    r
}

/// The layouts as docs/protocol.md states them, written out independently
/// of `protocol::crypto`.
mod spec {
    pub fn str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u32).to_be_bytes());
        out.extend(s.as_bytes());
    }

    pub fn hello(nonce: &[u8; 32], h: &protocol::Hello) -> Vec<u8> {
        let mut b = if h.payout_address.is_some() {
            b"uptime/hello/v2\0".to_vec()
        } else {
            b"uptime/hello/v1\0".to_vec()
        };
        b.extend(nonce);
        b.extend(h.public_key.0);
        str(&mut b, &h.region);
        b.extend((h.tags.len() as u32).to_be_bytes());
        for t in &h.tags {
            str(&mut b, t);
        }
        b.extend(h.capacity.to_be_bytes());
        str(&mut b, &h.client_version);
        b.extend((h.protocol_versions.len() as u32).to_be_bytes());
        for v in &h.protocol_versions {
            b.extend(v.to_be_bytes());
        }
        if let Some(p) = &h.payout_address {
            b.extend(p.0);
        }
        b
    }

    pub fn token(f: &protocol::TokenFields<'_>) -> Vec<u8> {
        let mut b = b"uptime/task-token/v1\0".to_vec();
        b.extend(f.task_id.as_bytes());
        for v in [f.website_id, f.round_id, f.slot, f.scheduled_at_ms] {
            b.extend(v.to_be_bytes());
        }
        b.extend(f.validator.0);
        b.extend(f.deadline_ms.to_be_bytes());
        b
    }

    pub fn result(r: &protocol::CheckResult) -> Vec<u8> {
        let mut b = if r.evidence.is_some() {
            b"uptime/result/v2\0".to_vec()
        } else {
            b"uptime/result/v1\0".to_vec()
        };
        b.extend(r.task_id.as_bytes());
        for v in [
            r.website_id,
            r.round_id,
            r.slot,
            r.scheduled_at_ms,
            r.deadline_ms,
        ] {
            b.extend(v.to_be_bytes());
        }
        b.extend(r.validator.0);
        str(&mut b, &r.token.kid);
        b.extend(r.token.mac);
        b.push(match r.status {
            protocol::CheckStatus::Up => 1,
            protocol::CheckStatus::Down => 0,
        });
        match r.http_status {
            None => b.push(0),
            Some(s) => {
                b.push(1);
                b.extend(s.to_be_bytes());
            }
        }
        b.extend(r.latency_ms.to_be_bytes());
        match &r.error {
            None => b.push(0),
            Some(e) => {
                b.push(1);
                str(&mut b, e);
            }
        }
        b.extend(r.checked_at_ms.to_be_bytes());
        if let Some(e) = &r.evidence {
            match &e.body_sha256 {
                None => b.push(0),
                Some(d) => {
                    b.push(1);
                    b.extend(d.0);
                }
            }
            b.extend(e.body_bytes.to_be_bytes());
            match e.remote_ip {
                None => b.push(0),
                Some(std::net::IpAddr::V4(ip)) => {
                    b.extend([1, 4]);
                    b.extend(ip.octets());
                }
                Some(std::net::IpAddr::V6(ip)) => {
                    b.extend([1, 6]);
                    b.extend(ip.octets());
                }
            }
        }
        b
    }
}

fn protocol_md() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .expect("docs/protocol.md")
}

/// `actual` is the pinned value, and docs/protocol.md shows it.
fn check(what: &str, actual: &str, pinned: &str) {
    assert_eq!(actual, pinned, "{what} changed: this breaks deployed peers");
    assert!(
        protocol_md().contains(pinned),
        "docs/protocol.md must show the {what}: {pinned}"
    );
}

#[test]
fn hello_vector() {
    let (nonce, h) = hello();
    check("public key", &h.public_key.to_base58(), PUBLIC_KEY);
    let bytes = hello_signing_bytes(&nonce, &h);
    assert_eq!(bytes, spec::hello(&nonce.0, &h), "the documented layout");
    check("hello signing bytes", &hex::encode(bytes), HELLO_BYTES);
    check(
        "hello signature",
        &bs58::encode(h.signature.0).into_string(),
        HELLO_SIGNATURE,
    );
    verify_hello(&nonce, &h).unwrap();
}

#[test]
fn token_and_result_vector() {
    let pk = PublicKey::from(&key());
    let keyring = Keyring::parse(KEYRING).unwrap();
    let token = keyring.issue(&token_fields(&pk));
    let token_bytes = spec::token(&token_fields(&pk));
    check("token input bytes", &hex::encode(&token_bytes), TOKEN_BYTES);
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(&[0x42; 32]).unwrap();
    mac.update(&token_bytes);
    assert_eq!(
        token.mac,
        <[u8; 32]>::from(mac.finalize().into_bytes()),
        "HMAC-SHA256 of the documented bytes"
    );
    check("token MAC", &hex::encode(token.mac), TOKEN_MAC);
    let r = result(token);
    let bytes = result_signing_bytes(&r);
    assert_eq!(bytes, spec::result(&r), "the documented layout");
    check("result signing bytes", &hex::encode(bytes), RESULT_BYTES);
    check(
        "result signature",
        &bs58::encode(r.signature.0).into_string(),
        RESULT_SIGNATURE,
    );
    verify_result(&key().verifying_key(), &r).unwrap();
    keyring.verify(&r.token, &token_fields(&pk)).unwrap();
}

#[test]
fn protocol_2_vectors() {
    let (nonce, h) = hello_v2();
    let bytes = hello_signing_bytes(&nonce, &h);
    assert_eq!(bytes, spec::hello(&nonce.0, &h), "the documented layout");
    check(
        "v2 hello signing bytes",
        &hex::encode(&bytes),
        HELLO_V2_BYTES,
    );
    check(
        "v2 hello signature",
        &bs58::encode(h.signature.0).into_string(),
        HELLO_V2_SIGNATURE,
    );
    verify_hello(&nonce, &h).unwrap();
    let mut stripped = h.clone();
    stripped.payout_address = None;
    assert!(
        verify_hello(&nonce, &stripped).is_err(),
        "the payout address is under the signature"
    );

    let pk = PublicKey::from(&key());
    let token = Keyring::parse(KEYRING).unwrap().issue(&token_fields(&pk));
    let r = result_v2(token);
    let bytes = result_signing_bytes(&r);
    assert_eq!(bytes, spec::result(&r), "the documented layout");
    check(
        "v2 result signing bytes",
        &hex::encode(&bytes),
        RESULT_V2_BYTES,
    );
    check(
        "v2 result signature",
        &bs58::encode(r.signature.0).into_string(),
        RESULT_V2_SIGNATURE,
    );
    verify_result(&key().verifying_key(), &r).unwrap();
    let mut other = r.clone();
    other.evidence.as_mut().unwrap().remote_ip = Some("10.0.0.1".parse().unwrap());
    assert!(
        verify_result(&key().verifying_key(), &other).is_err(),
        "the evidence is under the signature"
    );
}

/// The signed examples in docs/protocol.md verify: the hellos over the
/// example challenge's nonce, the results and their tokens under the vector
/// keyring.
#[test]
fn docs_examples_verify() {
    let doc = protocol_md();
    let frames: Vec<String> = doc
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(str::to_string)
        .collect();
    let nonce = frames
        .iter()
        .find_map(|f| match HubMessage::decode(f) {
            Ok(HubMessage::Challenge(c)) => Some(c.nonce),
            _ => None,
        })
        .expect("a challenge example");
    let keyring = Keyring::parse(KEYRING).unwrap();
    let (mut hellos, mut results) = (0, 0);
    for f in &frames {
        match ValidatorMessage::decode(f) {
            Ok(ValidatorMessage::Hello(h)) => {
                verify_hello(&nonce, &h).expect("the hello example verifies");
                hellos += 1;
            }
            Ok(ValidatorMessage::Result(r)) => {
                let vk = r.validator.verifying_key().unwrap();
                verify_result(&vk, &r).expect("the result example verifies");
                keyring
                    .verify(&r.token, &token_fields(&r.validator))
                    .expect("the result example's token verifies");
                results += 1;
            }
            _ => {}
        }
    }
    assert!(hellos >= 1 && results >= 1);
}
