//! What a hub spends per result: decoding the frame, checking the task token,
//! checking the ed25519 signature, one at a time and in batches.
//!
//! Run with `cargo bench -p protocol --bench verify`. Every benchmark reports
//! throughput in elements (results), so criterion prints results per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{SigningKey, VerifyingKey};

use protocol::crypto::{sign_result, verify_result, verify_results_batch};
use protocol::{
    keypair, CheckResult, CheckStatus, Keyring, PublicKey, Task, TokenFields, ValidatorMessage,
};
use uuid::Uuid;

/// Distinct validators in the batch fixtures: a hub's batch mixes senders.
const VALIDATORS: usize = 16;

/// Signed results as validators would send them, and the keyring that
/// issued their tokens.
struct Fixture {
    keyring: Keyring,
    keys: Vec<(PublicKey, VerifyingKey)>,
    /// `(index into keys, result)`.
    results: Vec<(usize, CheckResult)>,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let keyring = Keyring::random("k1");
        let signers: Vec<SigningKey> = (0..VALIDATORS).map(|_| keypair::generate()).collect();
        let keys = signers
            .iter()
            .map(|k| (PublicKey::from(k), k.verifying_key()))
            .collect();
        let now = protocol::now_ms();
        let results = (0..n)
            .map(|i| {
                let signer = &signers[i % VALIDATORS];
                let task = Task::sample(&keyring, PublicKey::from(signer), i as i64, now);
                let mut r =
                    CheckResult::for_task(&task, CheckStatus::Up, Some(200), 87, None, now + 200);
                sign_result(signer, &mut r);
                (i % VALIDATORS, r)
            })
            .collect();
        Self {
            keyring,
            keys,
            results,
        }
    }

    fn pairs(&self) -> Vec<(&VerifyingKey, &CheckResult)> {
        self.results
            .iter()
            .map(|(k, r)| (&self.keys[*k].1, r))
            .collect()
    }
}

fn fields_of(
    task_id: Uuid,
    website_id: i64,
    round_id: i64,
    slot: i64,
    scheduled_at_ms: i64,
    validator: &PublicKey,
    deadline_ms: i64,
) -> TokenFields<'_> {
    TokenFields {
        task_id,
        website_id,
        round_id,
        slot,
        scheduled_at_ms,
        validator,
        deadline_ms,
    }
}

fn token_fields(r: &CheckResult) -> TokenFields<'_> {
    fields_of(
        r.task_id,
        r.website_id,
        r.round_id,
        r.slot,
        r.scheduled_at_ms,
        &r.validator,
        r.deadline_ms,
    )
}

/// The hub's per-result path up to the database (services/hub/src/ingest.rs
/// `Verifier::check`, after `ValidatorMessage::decode` in the session loop):
/// decode, token, assignee, signature. The range and clock comparisons it
/// also makes are a few integer compares and are left out.
fn hub_check(
    keyring: &Keyring,
    session: &(PublicKey, VerifyingKey),
    frame: &str,
) -> Result<CheckResult, &'static str> {
    let ValidatorMessage::Result(r) = ValidatorMessage::decode(frame).map_err(|_| "malformed")?
    else {
        return Err("not a result");
    };
    keyring
        .verify(&r.token, &token_fields(&r))
        .map_err(|_| "bad_token")?;
    if r.validator != session.0 {
        return Err("not_assigned");
    }
    verify_result(&session.1, &r).map_err(|_| "bad_signature")?;
    Ok(r)
}

fn single(c: &mut Criterion) {
    let fx = Fixture::new(1);
    let (k, r) = &fx.results[0];
    let session = fx.keys[*k];
    let frame = ValidatorMessage::Result(r.clone()).encode();
    assert!(hub_check(&fx.keyring, &session, &frame).is_ok());

    let mut g = c.benchmark_group("per_result");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_result_frame", |b| {
        b.iter(|| ValidatorMessage::decode(black_box(&frame)).unwrap())
    });
    g.bench_function("token_verify", |b| {
        b.iter(|| {
            fx.keyring
                .verify(black_box(&r.token), &token_fields(black_box(r)))
                .unwrap()
        })
    });
    g.bench_function("verify_result", |b| {
        b.iter(|| verify_result(black_box(&session.1), black_box(r)).unwrap())
    });
    g.bench_function("hub_check_decode_token_signature", |b| {
        b.iter(|| hub_check(&fx.keyring, &session, black_box(&frame)).unwrap())
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_results_batch");
    for n in [64usize, 256] {
        let fx = Fixture::new(n);
        let pairs = fx.pairs();
        assert!(verify_results_batch(&pairs).iter().all(|ok| *ok));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &pairs, |b, pairs| {
            b.iter(|| verify_results_batch(black_box(pairs)))
        });
    }
    g.finish();
}

criterion_group!(benches, single, batch);
criterion_main!(benches);
