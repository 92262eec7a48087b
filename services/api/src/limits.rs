//! Rate limits: per client address on every `/v1` request, per caller (API
//! key or signed-in account) once authenticated, and a tighter one per
//! address and per email address on sign-up and sign-in (each costs an
//! argon2id hash; the email's limit stops many addresses guessing one
//! password). An IPv6 client is counted per /64. A refused request gets
//! 429 `rate_limited` with `Retry-After`.
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
    auth_per_email: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    metrics: std::sync::Arc<Metrics>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    Key(i64),
    Account(i64),
}

/// What one client controls: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network; anyone holding one has 2^64 addresses).
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
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
            auth_per_email: RateLimiter::keyed(
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
        self.per_ip
            .check_key(&network(ip))
            .map_err(|e| self.refuse("ip", e))
    }

    /// A sign-up or sign-in: limited per client network and, so that many
    /// addresses cannot guess one account's password, per email address.
    pub fn check_auth_attempt(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        self.auth_per_ip
            .check_key(&network(ip))
            .map_err(|e| self.refuse("auth", e))?;
        let email = email.trim().to_lowercase();
        if email.len() <= 254 {
            self.auth_per_email
                .check_key(&email)
                .map_err(|e| self.refuse("auth", e))?;
        }
        Ok(())
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
        self.auth_per_email.retain_recent();
    }

    /// How often [`Self::forget_idle`] should run.
    pub const FORGET_EVERY: Duration = Duration::from_secs(60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let v4: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(network("::ffff:203.0.113.5".parse().unwrap()), v4);
        assert_eq!(network(v4), v4);
    }

    #[test]
    fn sign_in_attempts_are_limited_per_email_across_addresses() {
        let l = Limits::new(
            (100, 100),
            (100, 100),
            3,
            std::sync::Arc::new(Metrics::new()),
        );
        for i in 0..3u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            assert!(l.check_auth_attempt(ip, "Victim@example.com").is_ok());
        }
        let e = l
            .check_auth_attempt(IpAddr::from([198, 51, 100, 9]), "victim@example.com")
            .unwrap_err();
        assert_eq!(e.code, "rate_limited");
        assert!(l
            .check_auth_attempt(IpAddr::from([198, 51, 100, 9]), "other@example.com")
            .is_ok());
    }
}
