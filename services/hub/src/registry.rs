//! The validators connected to this replica, by public key.
//!
//! One key has at most one session: a new session replaces the old one,
//! which is told `session_replaced` and closed. Removal is compare-and-delete
//! on the session's generation, so a closing old session can never erase
//! the entry of the newer session that replaced it.

use foldhash::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use protocol::{HubMessage, PublicKey};
use store::ValidatorId;

/// What the rest of the hub may push to one session.
#[derive(Debug)]
/// Boxed so the enum is one pointer wide: each session's queue allocates
/// its first block of 32 slots up front, and a 208-byte `HubMessage` inline
/// made that about 6.6 KB of every idle connection.
pub enum Outbound {
    Frame(Box<HubMessage>),
    /// The writer has answered one result this session enqueued.
    Ack(Box<HubMessage>),
    /// The database refused a row of this session's (a data error the
    /// checks at the door did not catch): answered like `Ack`, and counted
    /// against the session.
    Refused(Box<HubMessage>),
}

/// A client's network as the diversity rule counts it: its /24 (IPv4,
/// IPv4-mapped IPv6 included) or /48 (IPv6). Packed in a `u64`: the family
/// in the top byte, the prefix's bits below. One operator renting a few
/// addresses usually gets them from one such block, whatever keys and
/// regions it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetPrefix(pub u64);

impl NetPrefix {
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => Self((4 << 56) | u64::from(u32::from(v4) >> 8)),
            IpAddr::V6(v6) => Self((6 << 56) | (u128::from(v6) >> 80) as u64),
        }
    }

    /// As a network, e.g. `10.1.2.0/24` or `2001:db8:1::/48`.
    pub fn network(self) -> String {
        if self.0 >> 56 == 4 {
            let a = ((self.0 & 0xff_ffff) as u32) << 8;
            format!("{}/24", std::net::Ipv4Addr::from(a))
        } else {
            let a = u128::from(self.0 & 0xffff_ffff_ffff) << 80;
            format!("{}/48", std::net::Ipv6Addr::from(a))
        }
    }

    /// The announcement's text form (presence), and back.
    pub fn to_hex(self) -> String {
        format!("{:x}", self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        u64::from_str_radix(s, 16).ok().map(Self)
    }
}

/// Why a session is told to end other than by a newer session of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kick {
    /// The access rules refuse its key or address now (`access_denied`).
    Refused(String),
}

#[derive(Debug)]
pub struct SessionHandle {
    pub generation: u64,
    pub validator_id: ValidatorId,
    pub key: PublicKey,
    pub region: String,
    pub capacity: u32,
    /// The client's address (after trusted proxies).
    pub client: IpAddr,
    /// `NetPrefix::of(client)`.
    pub prefix: NetPrefix,
    /// Its results count toward decisions (not on probation, trust at
    /// least `store::MIN_TRUST`): read at hello, refreshed every 30 s.
    pub counts: std::sync::atomic::AtomicBool,
    /// Tasks sent on this socket and not yet answered (kept by the session).
    pub in_flight: AtomicU32,
    pub tx: mpsc::Sender<Outbound>,
    pub kicked: OnceLock<Kick>,
    /// Replacement and the rebalancing hint.
    pub signals: Signals,
}

impl SessionHandle {
    /// Told to go elsewhere: no new task should be sent here.
    pub fn is_leaving(&self) -> bool {
        self.signals.is_rebalanced()
    }

    /// Ends the session for `why`; true the first time.
    pub fn kick(&self, why: Kick) -> bool {
        let first = self.kicked.set(why).is_ok();
        self.signals.replace();
        first
    }
}

/// What others tell a session: to end (a newer session with its key took
/// over, or a kick), or to reconnect elsewhere (rebalancing: it sends
/// `reconnect`, takes no new task, and closes once its work is handed in,
/// as in a drain). Either also cancels the attention token, which the
/// hub's drain cancels too (it is a child of the drain's token): the one
/// token the session's loop waits on while it works, instead of three, one
/// of them shared by every session (each wait locks what it waits on). The
/// tokens are private so that nothing cancels one without the other.
#[derive(Debug, Clone)]
pub struct Signals {
    replaced: CancellationToken,
    rebalanced: CancellationToken,
    attention: CancellationToken,
}

impl Signals {
    /// `draining`: the hub's drain, which the attention token follows.
    pub fn new(draining: &CancellationToken) -> Self {
        Self {
            replaced: CancellationToken::new(),
            rebalanced: CancellationToken::new(),
            attention: draining.child_token(),
        }
    }

    /// End the session (a newer one took over, or a kick).
    pub fn replace(&self) {
        self.replaced.cancel();
        self.attention.cancel();
    }

    /// Ask the validator to reconnect elsewhere.
    pub fn rebalance(&self) {
        self.rebalanced.cancel();
        self.attention.cancel();
    }

    pub fn is_replaced(&self) -> bool {
        self.replaced.is_cancelled()
    }

    pub fn is_rebalanced(&self) -> bool {
        self.rebalanced.is_cancelled()
    }

    /// Replaced, rebalanced, or the hub drains.
    pub fn needs_attention(&self) -> bool {
        self.attention.is_cancelled()
    }

    /// Resolves once [`Self::needs_attention`].
    pub fn attention(&self) -> WaitForCancellationFuture<'_> {
        self.attention.cancelled()
    }

    /// Resolves once replaced.
    pub fn on_replaced(&self) -> WaitForCancellationFuture<'_> {
        self.replaced.cancelled()
    }
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<PublicKey, Arc<SessionHandle>>>,
    last_generation: AtomicU64,
}

impl Registry {
    /// A session's generation is its hello time in microseconds since the
    /// epoch, made strictly increasing on this hub. Comparable across hubs
    /// (to clock skew), so the cluster keeps the newest session of a key
    /// whichever presence claim reaches Redis first; and a restarted hub
    /// never reuses one that a stale cluster record might still hold.
    pub fn next_generation(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let next = |prev: u64| now.max(prev + 1);
        let prev = self
            .last_generation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(next(p)))
            .expect("the update always succeeds");
        next(prev)
    }

    /// Adds a session; an older session with the same key is told to go.
    pub fn register(&self, handle: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        let old = self
            .sessions
            .lock()
            .expect("registry lock")
            .insert(handle.key, handle);
        if let Some(o) = &old {
            o.signals.replace();
        }
        old
    }

    /// Removes `key` only if it still maps to `generation`.
    pub fn unregister(&self, key: &PublicKey, generation: u64) -> bool {
        let mut map = self.sessions.lock().expect("registry lock");
        if map.get(key).is_some_and(|h| h.generation == generation) {
            map.remove(key);
            true
        } else {
            false
        }
    }

    pub fn get(&self, key: &PublicKey) -> Option<Arc<SessionHandle>> {
        self.sessions
            .lock()
            .expect("registry lock")
            .get(key)
            .cloned()
    }

    pub fn snapshot(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(reg: &Registry, key: u8) -> Arc<SessionHandle> {
        let (tx, _rx) = mpsc::channel(1);
        Arc::new(SessionHandle {
            generation: reg.next_generation(),
            validator_id: ValidatorId(1),
            key: PublicKey([key; 32]),
            region: "eu".into(),
            capacity: 1,
            client: IpAddr::from([127, 0, 0, 1]),
            prefix: NetPrefix::of(IpAddr::from([127, 0, 0, 1])),
            counts: true.into(),
            kicked: OnceLock::new(),
            in_flight: AtomicU32::new(0),
            tx,
            signals: Signals::new(&CancellationToken::new()),
        })
    }

    #[test]
    fn prefixes_are_the_slash_24_or_slash_48() {
        let p = |s: &str| NetPrefix::of(s.parse().unwrap());
        assert_eq!(p("10.1.2.3"), p("10.1.2.250"));
        assert_ne!(p("10.1.2.3"), p("10.1.3.3"));
        assert_eq!(p("::ffff:10.1.2.3"), p("10.1.2.9"));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:ffff::9"));
        assert_ne!(p("2001:db8:1::1"), p("2001:db8:2::1"));
        assert_eq!(p("10.1.2.3").network(), "10.1.2.0/24");
        assert_eq!(p("2001:db8:1:2::1").network(), "2001:db8:1::/48");
        let x = p("2001:db8:1:2::1");
        assert_eq!(NetPrefix::from_hex(&x.to_hex()), Some(x));
    }

    #[test]
    fn newer_session_replaces_and_old_cannot_erase_it() {
        let reg = Registry::default();
        let old = handle(&reg, 1);
        let new = handle(&reg, 1);
        assert!(reg.register(old.clone()).is_none());
        assert!(reg.register(new.clone()).is_some());
        assert!(old.signals.is_replaced());
        assert!(
            !reg.unregister(&old.key, old.generation),
            "stale delete refused"
        );
        assert_eq!(reg.get(&new.key).unwrap().generation, new.generation);
        assert!(reg.unregister(&new.key, new.generation));
        assert!(reg.is_empty());
    }
}
