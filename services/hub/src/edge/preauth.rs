//! Sockets that have not said a valid hello yet, capped in all and per
//! client address, so silent sockets cannot take the room of validators.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::SessionSettings;
use crate::metrics::Metrics;

/// The key the per-address limits count by: the address itself, except
/// IPv6, counted per /64 (one host usually holds a whole /64), and IPv4
/// mapped into IPv6, counted as the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// Sockets that have not said a valid hello yet: at most
/// `HUB_MAX_PREAUTH_CONNECTIONS` in all (and never more than
/// `HUB_MAX_CONNECTIONS`), and `HUB_MAX_PREAUTH_PER_IP` per client key.
/// Silent sockets therefore hold at most that much of the total, and a
/// single address at most its share of that.
pub struct PreAuth {
    total: Arc<Semaphore>,
    /// Attacker-chosen keys: std's randomly seeded hasher, not foldhash.
    per_ip: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    metrics: Arc<Metrics>,
}

pub enum PreAuthFull {
    PerIp,
    Total,
}

/// A socket's place among the pre-auth ones; dropped after a valid hello
/// (or when the socket ends first).
pub struct PreAuthGuard {
    preauth: Arc<PreAuth>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl PreAuth {
    pub fn new(s: &SessionSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            // Parsing keeps it at most `max_connections`.
            total: Arc::new(Semaphore::new(s.max_preauth_connections)),
            per_ip: Default::default(),
            max_per_ip: s.max_preauth_per_ip,
            metrics,
        }
    }

    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<PreAuthGuard, PreAuthFull> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(PreAuthFull::PerIp);
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            return Err(PreAuthFull::Total);
        };
        *n += 1;
        self.metrics.preauth_connections.inc();
        Ok(PreAuthGuard {
            preauth: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for PreAuthGuard {
    fn drop(&mut self) {
        let mut per_ip = self
            .preauth
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.preauth.metrics.preauth_connections.dec();
    }
}
