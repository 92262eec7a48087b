//! The validator picker, run for every round a hub opens (three picks each):
//! `cargo bench -p hub --bench pick` (part of `scripts/bench.sh`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use foldhash::{HashSet, HashSetExt};

use hub::rounds::scheduler::{pick, Candidate, Used};
use protocol::PublicKey;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// `n` validators over three regions, capacity 16; `load(i)` each;
/// `local(i)` whether this hub holds it.
fn pool(n: usize, load: impl Fn(usize) -> u32, local: impl Fn(usize) -> bool) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Candidate {
                key: PublicKey(key),
                region: REGIONS[i % 3].to_string(),
                load: load(i),
                capacity: 16,
                local: local(i),
                prefix: Some(hub::NetPrefix(i as u64)),
                crowded: false,
                counts: true,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    let cases = [
        ("900 idle, one hub", pool(900, |i| (i % 3) as u32, |_| true)),
        (
            "900 half busy (load 4-15), one hub",
            pool(900, |i| 4 + (i * 7 % 12) as u32, |_| true),
        ),
        (
            "900 nearly full (load 12-16), one hub",
            pool(900, |i| 12 + (i * 7 % 5) as u32, |_| true),
        ),
        (
            "900 idle, half on another hub",
            pool(900, |i| (i % 3) as u32, |i| i % 2 == 0),
        ),
    ];
    let no_keys = HashSet::new();
    // One validator per network in a round, as production runs.
    let rule = Used {
        one_per_prefix: true,
        ..Used::default()
    };
    let mut g = c.benchmark_group("pick 3 of");
    for (name, cands) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(pick(black_box(cands), 3, &no_keys, rule.clone(), &mut rng)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
