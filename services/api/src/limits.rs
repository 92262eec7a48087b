//! Rate limits: per client address on every `/v1` request, per caller (API
//! key or signed-in account) once authenticated, and a tighter one per
//! address on sign-up and sign-in (each costs an argon2id hash). A refused
//! request gets 429 `rate_limited` with `Retry-After`.
//!
//! The counters live in this replica's memory (GCRA buckets, `governor`):
//! with N replicas behind a load balancer a client gets up to N times the
//! rate. Documented in docs/api.md; the buckets of idle keys are dropped
//! every minute, so memory follows the active callers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{Caller, Via};
use crate::error::ApiError;
use crate::metrics::Metrics;

pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_caller: DefaultKeyedRateLimiter<CallerKey>,
    auth_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    metrics: std::sync::Arc<Metrics>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    Key(i64),
    Account(i64),
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(
        per_ip: (u32, u32),
        per_caller: (u32, u32),
        auth_per_minute: u32,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        let q = |(rate, burst): (u32, u32)| Quota::per_second(nz(rate)).allow_burst(nz(burst));
        Self {
            per_ip: RateLimiter::keyed(q(per_ip)),
            per_caller: RateLimiter::keyed(q(per_caller)),
            auth_per_ip: RateLimiter::keyed(
                Quota::per_minute(nz(auth_per_minute)).allow_burst(nz(auth_per_minute)),
            ),
            clock: DefaultClock::default(),
            metrics,
        }
    }

    fn refuse(
        &self,
        by: &str,
        earliest: governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> ApiError {
        self.metrics.rate_limited.with_label_values(&[by]).inc();
        ApiError::rate_limited(earliest.wait_time_from(self.clock.now()))
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.per_ip.check_key(&ip).map_err(|e| self.refuse("ip", e))
    }

    pub fn check_auth_attempt(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.auth_per_ip
            .check_key(&ip)
            .map_err(|e| self.refuse("auth", e))
    }

    pub fn check_caller(&self, c: &Caller) -> Result<(), ApiError> {
        let key = match &c.via {
            Via::Key { id, .. } => CallerKey::Key(id.0),
            Via::Session { .. } => CallerKey::Account(c.account.id.0),
        };
        self.per_caller
            .check_key(&key)
            .map_err(|e| self.refuse("caller", e))
    }

    /// Drops the buckets of keys that are back to full (idle callers).
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_caller.retain_recent();
        self.auth_per_ip.retain_recent();
    }

    /// How often [`Self::forget_idle`] should run.
    pub const FORGET_EVERY: Duration = Duration::from_secs(60);
}
