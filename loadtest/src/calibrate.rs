//! A yardstick for the hub's CPU per tick: how long one
//! `protocol::crypto::verify_result` takes on this machine, in this
//! sitting. Hub CPU per stored tick divided by it is a figure that can be
//! compared across machines and days (docs/performance.md keeps them so),
//! where microseconds alone cannot.
//!
//! The result verified is the one `shared/protocol/benches/verify.rs`
//! times as `per_result/verify_result`: a result of `Task::sample` (the
//! same function), `CheckResult::for_task` up, 200, 87 ms, signed with
//! `sign_result`, no evidence, so the figure is that benchmark's. It is timed on the calling thread in [`BATCHES`] batches of
//! about [`BATCH`] each after a warm-up; the median batch is the figure,
//! min and max show the spread. The tool measures before the load (the
//! machine idle) and again after every connection closed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use protocol::crypto::{sign_result, verify_result};
use protocol::{keypair, CheckResult, CheckStatus, Keyring, PublicKey, Task};
use serde::Serialize;

/// Batches timed; the median is reported.
pub const BATCHES: usize = 15;
/// About this long per batch.
pub const BATCH: Duration = Duration::from_millis(150);
/// Verifying before any batch is timed (CPU frequency, caches).
const WARM_UP: Duration = Duration::from_millis(300);

/// One calibration: µs per `verify_result` call.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct VerifyTiming {
    /// The median batch's µs per call: the figure.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub batches: usize,
    pub calls_per_batch: u64,
}

/// The bench's fixture: one signed result and its signer's key.
fn fixture() -> (VerifyingKey, CheckResult) {
    let keyring = Keyring::random("k1");
    let signer = keypair::generate();
    let validator = PublicKey::from(&signer);
    let now = protocol::now_ms();
    let task = Task::sample(&keyring, validator, 0, now);
    let mut r = CheckResult::for_task(&task, CheckStatus::Up, Some(200), 87, None, now + 200);
    sign_result(&signer, &mut r);
    (signer.verifying_key(), r)
}

/// Verifies `n` times; panics if the signature does not verify (it is the
/// tool's own, so that would be a bug, and timing a failure path would
/// measure the wrong thing).
fn verify_n(key: &VerifyingKey, r: &CheckResult, n: u64) {
    for _ in 0..n {
        verify_result(black_box(key), black_box(r)).expect("the fixture's signature verifies");
    }
}

/// Times `verify_result` on this thread (blocks for about
/// `WARM_UP + BATCHES * BATCH`).
pub fn verify_result_timing() -> VerifyTiming {
    let (key, r) = fixture();
    let t0 = Instant::now();
    let mut warm = 0u64;
    while t0.elapsed() < WARM_UP {
        verify_n(&key, &r, 16);
        warm += 16;
    }
    let per_call = WARM_UP.as_secs_f64() / warm as f64;
    let calls = ((BATCH.as_secs_f64() / per_call) as u64).max(1);
    let mut us: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            verify_n(&key, &r, calls);
            t.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    VerifyTiming {
        median: median(&mut us).expect("BATCHES > 0"),
        min: us.iter().copied().fold(f64::INFINITY, f64::min),
        max: us.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        batches: BATCHES,
        calls_per_batch: calls,
    }
}

/// The median (the mean of the middle two for an even count); `None` for
/// no values. Sorts `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The first `model name` of `/proc/cpuinfo` text (x86; other
/// architectures may have none).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_string())
    })
}

/// This machine's CPU model, if `/proc/cpuinfo` names it.
pub fn read_cpu_model() -> Option<String> {
    cpu_model(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// `hub_cpu_us_per_tick` in `verify_result`s of the lower of the medians
/// measured: the slower one was the one disturbed (a frequency drop, a
/// neighbour), and the ratio should not flatter the hub because of it.
pub fn in_verify_results(
    hub_cpu_us_per_tick: Option<f64>,
    timings: [Option<&VerifyTiming>; 2],
) -> Option<f64> {
    let unit = timings
        .into_iter()
        .flatten()
        .map(|t| t.median)
        .filter(|m| *m > 0.0)
        .reduce(f64::min)?;
    Some(hub_cpu_us_per_tick? / unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [7.5]), Some(7.5));
        assert_eq!(median(&mut []), None);
        // An outlier moves the mean, not the median.
        assert_eq!(median(&mut [45.0, 46.0, 900.0, 44.0, 45.5]), Some(45.5));
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n\
                   model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\nstepping\t: 7\n\n\
                   processor\t: 1\nmodel name\t: Something else\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz")
        );
        // `model` alone is not the name; a blank name is none.
        assert_eq!(cpu_model("model\t\t: 85\n"), None);
        assert_eq!(cpu_model("model name\t: \n"), None);
        assert_eq!(cpu_model(""), None);
        // A colon inside the value stays.
        assert_eq!(
            cpu_model("model name : AMD EPYC 7B13: 64-Core\n").as_deref(),
            Some("AMD EPYC 7B13: 64-Core")
        );
    }

    #[test]
    fn the_ratio_uses_the_lower_median() {
        let t = |median| VerifyTiming {
            median,
            min: median,
            max: median,
            batches: 1,
            calls_per_batch: 1,
        };
        let (a, b) = (t(50.0), t(40.0));
        assert_eq!(
            in_verify_results(Some(80.0), [Some(&a), Some(&b)]),
            Some(2.0)
        );
        assert_eq!(
            in_verify_results(Some(80.0), [Some(&b), Some(&a)]),
            Some(2.0)
        );
        assert_eq!(in_verify_results(Some(80.0), [Some(&a), None]), Some(1.6));
        assert_eq!(in_verify_results(None, [Some(&a), Some(&b)]), None);
        assert_eq!(in_verify_results(Some(80.0), [None, None]), None);
        assert_eq!(in_verify_results(Some(80.0), [Some(&t(0.0)), None]), None);
    }

    #[test]
    fn the_fixture_verifies_and_a_changed_result_does_not() {
        let (key, mut r) = fixture();
        assert!(verify_result(&key, &r).is_ok());
        assert!(r.evidence.is_none(), "as the bench: protocol 1 bytes");
        r.latency_ms += 1;
        assert!(verify_result(&key, &r).is_err());
    }
}
