//! Which validators may connect: the operator's rules (`validator_access`,
//! managed with `hub validators ban|unban|allow|disallow` or plain SQL) and
//! the access mode (`HUB_VALIDATOR_ACCESS`).
//!
//! A hello is judged twice: its client address against the denied prefixes
//! before the signature is checked (a banned network costs no signature
//! work), then its proven key against the denied keys and, in `allowlist`
//! mode, the allowed ones. Every hub reloads the rules on the database's
//! notification and whenever their generation moved (polled every
//! [`POLL`]), then closes its live sessions the new rules refuse, so a ban
//! reaches every hub within a few seconds.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foldhash::{HashMap, HashSet};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use protocol::PublicKey;
use store::{AccessKind, AccessSubject, Store};

use crate::metrics::Metrics;
use crate::registry::{Kick, Registry};

/// How often a hub looks whether the rules changed, as a safety net for a
/// lost notification.
pub const POLL: Duration = Duration::from_secs(2);

/// `HUB_VALIDATOR_ACCESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// Any key may connect unless denied.
    #[default]
    Open,
    /// Only keys with an `allow` rule (and not denied) may connect.
    Allowlist,
}

impl AccessMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "allowlist" => Some(Self::Allowlist),
            _ => None,
        }
    }
}

/// Why a validator is refused; the text goes into the `access_denied`
/// error frame (the operator's reason included: it is meant for the
/// validator's operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    KeyDenied(String),
    NetworkDenied(IpNet, String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = |r: &str| {
            if r.is_empty() {
                String::new()
            } else {
                format!(": {}", protocol::terminal_safe(r))
            }
        };
        match self {
            Self::NotAllowed => f.write_str("this network admits listed validators only"),
            Self::KeyDenied(r) => write!(f, "this key is banned{}", reason(r)),
            Self::NetworkDenied(net, r) => {
                write!(f, "connections from {net} are banned{}", reason(r))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Rules {
    generation: i64,
    allowed: HashSet<PublicKey>,
    denied: HashMap<PublicKey, String>,
    denied_nets: Vec<(IpNet, String)>,
}

/// The rules this hub applies; cheap to read on every hello.
#[derive(Debug)]
pub struct AccessPolicy {
    mode: AccessMode,
    rules: RwLock<Arc<Rules>>,
}

impl AccessPolicy {
    pub fn new(mode: AccessMode) -> Self {
        Self {
            mode,
            rules: RwLock::new(Arc::default()),
        }
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("access rules lock").clone()
    }

    /// The address check, made before the hello's signature is verified.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let rules = self.rules();
        match rules.denied_nets.iter().find(|(n, _)| n.contains(&ip)) {
            Some((net, reason)) => Err(Refusal::NetworkDenied(*net, reason.clone())),
            None => Ok(()),
        }
    }

    /// The key check, made once the hello's signature proved the key.
    pub fn check_key(&self, key: &PublicKey) -> Result<(), Refusal> {
        let rules = self.rules();
        if let Some(reason) = rules.denied.get(key) {
            return Err(Refusal::KeyDenied(reason.clone()));
        }
        if self.mode == AccessMode::Allowlist && !rules.allowed.contains(key) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }

    pub fn check(&self, key: &PublicKey, ip: IpAddr) -> Result<(), Refusal> {
        self.check_address(ip)?;
        self.check_key(key)
    }

    /// Reads the rules if their generation moved; true if they changed.
    /// A rule the hub cannot read (a key that is not base58, say, written
    /// with plain SQL) is skipped with a warning: it names nothing a
    /// validator can hold.
    pub async fn reload(&self, store: &Store) -> store::Result<bool> {
        let generation = store.access_generation().await?;
        if generation == self.rules().generation {
            return Ok(false);
        }
        let mut next = Rules {
            generation,
            ..Rules::default()
        };
        for rule in store.access_rules().await? {
            match (&rule.kind, &rule.subject) {
                (kind, AccessSubject::Key(k)) => match PublicKey::from_base58(k) {
                    Some(key) if *kind == AccessKind::Allow => {
                        next.allowed.insert(key);
                    }
                    Some(key) => {
                        next.denied.insert(key, rule.reason);
                    }
                    None => {
                        tracing::warn!(key = %protocol::terminal_safe(k), "validator_access: not a base58 public key; rule skipped")
                    }
                },
                (_, AccessSubject::Network(n)) => match n.parse::<IpNet>() {
                    Ok(net) => next.denied_nets.push((net, rule.reason)),
                    Err(_) => {
                        tracing::warn!(network = %n, "validator_access: not a prefix; rule skipped")
                    }
                },
            }
        }
        tracing::info!(
            generation,
            allowed = next.allowed.len(),
            denied_keys = next.denied.len(),
            denied_networks = next.denied_nets.len(),
            "validator access rules loaded"
        );
        *self.rules.write().expect("access rules lock") = Arc::new(next);
        Ok(true)
    }
}

/// Keeps `policy` current and closes the live sessions it stops admitting.
/// Runs until `stop`.
pub async fn follow(
    store: Store,
    policy: Arc<AccessPolicy>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut listener = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() {
            // Without a listener the poll still applies changes.
            listener = store.listen_access_changes().await.ok();
        }
        let woke = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            ok = woke => {
                if !ok {
                    listener = None;
                }
            }
            _ = poll.tick() => {}
        }
        match policy.reload(&store).await {
            Ok(true) => enforce(&policy, &registry, &metrics),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "reading validator access rules failed"),
        }
    }
}

/// Closes every session of this hub that `policy` refuses now.
pub fn enforce(policy: &AccessPolicy, registry: &Registry, metrics: &Metrics) {
    for s in registry.snapshot() {
        if let Err(why) = policy.check(&s.key, s.client) {
            if s.kick(Kick::Refused(why.to_string())) {
                metrics.sessions_refused.inc();
                tracing::info!(validator = %s.key, reason = %why, "closing a session the access rules refuse");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn policy(mode: AccessMode, rules: Rules) -> AccessPolicy {
        let p = AccessPolicy::new(mode);
        *p.rules.write().unwrap() = Arc::new(rules);
        p
    }

    #[test]
    fn deny_rules_win_and_allowlist_mode_admits_listed_keys_only() {
        let mut rules = Rules::default();
        rules.allowed.insert(key(1));
        rules.allowed.insert(key(2));
        rules.denied.insert(key(2), "spam".into());
        rules
            .denied_nets
            .push(("10.9.8.0/24".parse().unwrap(), String::new()));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = policy(AccessMode::Open, rules);
        assert_eq!(open.check(&key(3), ip("10.9.9.1")), Ok(()));
        assert!(
            open.check(&key(3), ip("::ffff:10.9.8.7")).is_err(),
            "an IPv4-mapped address is judged as its IPv4 address"
        );
        assert_eq!(
            open.check(&key(2), ip("10.9.9.1")),
            Err(Refusal::KeyDenied("spam".into()))
        );
        assert!(matches!(
            open.check(&key(1), ip("10.9.8.200")),
            Err(Refusal::NetworkDenied(..))
        ));
        let closed = Rules {
            allowed: open.rules().allowed.clone(),
            ..Rules::default()
        };
        let closed = policy(AccessMode::Allowlist, closed);
        assert_eq!(closed.check(&key(1), ip("10.9.9.1")), Ok(()));
        assert_eq!(
            closed.check(&key(3), ip("10.9.9.1")),
            Err(Refusal::NotAllowed)
        );
    }

    #[test]
    fn a_reason_cannot_drive_the_terminal() {
        let r = Refusal::KeyDenied("bad\u{1b}[2Jactor".into()).to_string();
        assert!(!r.contains('\u{1b}'), "{r}");
    }
}
