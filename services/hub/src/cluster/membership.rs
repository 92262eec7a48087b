//! Hub membership through Redis.
//!
//! Every `interval` each hub runs one script that, on Redis's own clock,
//! records its announcement, drops members silent for more than two
//! intervals, and returns the live set. When the set it sees differs from its
//! ring it rebuilds the ring and publishes on the membership channel, so every
//! other hub re-reads at once instead of at its next announcement. A hub that
//! cannot reach Redis keeps its last ring: it goes on scheduling what it last
//! owned, and the PostgreSQL round guard keeps that safe.
//!
//! Each announcement carries the hub's validator count, and the script hands
//! back every live member's announcement: a successful announcement also
//! refreshes [`Loads`], which rebalancing acts on. A failed one leaves it
//! as it was, and it ages: nothing acts on membership older than it may be.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Keys, Ring};
use crate::metrics::Metrics;

/// Records an announcement and returns the live members, each followed by
/// its announcement (empty if it has none).
/// KEYS: members zset, info hash. ARGV: hub id, ttl ms, info JSON.
const ANNOUNCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"#;

/// Returns the live members without announcing. KEYS: members. ARGV: ttl ms.
const READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"#;

/// Removes a hub. KEYS: members, info. ARGV: hub id.
const LEAVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub keys: Keys,
    pub hub_id: String,
    /// Where validators and peers can reach this hub.
    pub address: String,
    pub interval: Duration,
}

/// What a hub writes about itself each announcement. Hubs of different
/// versions read each other's during a rolling upgrade: a field is only
/// ever added, a reader ignores fields it does not know, and a field an
/// older writer lacks reads as `None`.
#[derive(Serialize)]
struct Announcement<'a> {
    id: &'a str,
    address: &'a str,
    started_at_ms: i64,
    validators: usize,
}

/// The part of another hub's [`Announcement`] this hub uses.
#[derive(Deserialize)]
struct Announced {
    #[serde(default)]
    validators: Option<usize>,
}

/// The live members and their validators, as one successful announcement
/// found them.
#[derive(Debug, Clone, PartialEq)]
pub struct Loads {
    /// When that announcement's reply came back.
    pub at: Instant,
    /// Every live member (this hub too) with the validators it announced
    /// (`None`: its announcement does not say, or could not be read).
    pub members: Vec<(String, Option<usize>)>,
}

/// Members and their announcements from the ANNOUNCE script's flat reply.
fn parse_loads(reply: Vec<String>, at: Instant) -> Loads {
    let members = reply
        .chunks(2)
        .map(|pair| {
            let validators = pair
                .get(1)
                .and_then(|info| serde_json::from_str::<Announced>(info).ok())
                .and_then(|a| a.validators);
            (pair[0].clone(), validators)
        })
        .collect();
    Loads { at, members }
}

/// A hub's view of the cluster. Cheap to share; `run` drives it.
pub struct Membership {
    cfg: MembershipConfig,
    client: Client,
    subscriber: SubscriberClient,
    ring: watch::Sender<Arc<Ring>>,
    /// `None` until the first successful announcement.
    loads: watch::Sender<Option<Arc<Loads>>>,
    metrics: Arc<Metrics>,
    started_at_ms: i64,
    announce: Script,
    read: Script,
    leave: Script,
}

/// Builds the command and subscriber clients for `url` and starts them
/// connecting (without waiting: a hub starts even while Redis is down).
/// Commands time out after `interval`, so a stuck Redis looks like an error
/// rather than a hang.
pub fn connect(
    url: &str,
    tls_ca: Option<&std::path::Path>,
    interval: Duration,
) -> Result<Clients, fred::error::Error> {
    let b = builder(url, tls_ca, interval)?;
    let client = b.build()?;
    // Two subscribers: membership notices are rare and must not queue
    // behind (or be woken by) the inbox's task traffic.
    let membership = b.build_subscriber_client()?;
    let inbox = b.build_subscriber_client()?;
    client.connect();
    for s in [&membership, &inbox] {
        s.connect();
        // Re-subscribes to every tracked channel after a reconnect.
        s.manage_subscriptions();
    }
    Ok(Clients {
        client,
        membership,
        inbox,
    })
}

/// The Redis connections one hub uses.
pub struct Clients {
    pub client: Client,
    pub membership: SubscriberClient,
    pub inbox: SubscriberClient,
}

/// A rustls client that trusts only the CA certificates in the PEM file
/// `ca` (ring, the provider every TLS user of this workspace builds with).
fn tls_with_ca(ca: &std::path::Path) -> Result<rustls::ClientConfig, fred::error::Error> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let tls_err = |what: String| fred::error::Error::new(fred::error::ErrorKind::Tls, what);
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| tls_err(format!("reading {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| tls_err(format!("{}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| tls_err(format!("{}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(tls_err(format!(
            "{} holds no PEM certificate",
            ca.display()
        )));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Messages a subscriber buffers for its readers before they lag.
const PUBSUB_BUFFER: usize = 16_384;

fn builder(
    url: &str,
    tls_ca: Option<&std::path::Path>,
    interval: Duration,
) -> Result<Builder, fred::error::Error> {
    let mut config = Config::from_url(url)?;
    // `rediss://` gets TLS with the system's roots from the URL alone; an
    // operator's CA replaces them.
    if let Some(ca) = tls_ca {
        config.tls = Some(tls_with_ca(ca)?.into());
    }
    // Keep trying to connect even if Redis is down when the hub starts;
    // with fail_fast the first failed attempt would be the last.
    config.fail_fast = false;
    let mut b = Builder::from_config(config);
    // Never retry forever inside a command: a stuck Redis must look like an
    // error to the membership loop, which then keeps the last ring.
    b.with_performance_config(|p| {
        p.default_command_timeout = interval;
        p.broadcast_channel_capacity = PUBSUB_BUFFER;
    })
    .with_connection_config(|c| {
        c.connection_timeout = interval;
        c.internal_command_timeout = interval;
        c.max_command_attempts = 1;
        c.unresponsive.max_timeout = Some(interval * 2);
        c.unresponsive.interval = interval / 2;
    })
    .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(b)
}

impl Membership {
    pub fn new(
        cfg: MembershipConfig,
        client: Client,
        subscriber: SubscriberClient,
        metrics: Arc<Metrics>,
        ring: watch::Sender<Arc<Ring>>,
    ) -> Self {
        Self {
            cfg,
            client,
            subscriber,
            ring,
            loads: watch::Sender::new(None),
            metrics,
            started_at_ms: protocol::now_ms(),
            announce: Script::from_lua(ANNOUNCE),
            read: Script::from_lua(READ),
            leave: Script::from_lua(LEAVE),
        }
    }

    /// Follows [`Loads`]: a new value after every successful announcement.
    pub fn loads(&self) -> watch::Receiver<Option<Arc<Loads>>> {
        self.loads.subscribe()
    }

    fn ttl_ms(&self) -> i64 {
        (self.cfg.interval.as_millis() as i64) * 2 + 500
    }

    /// Swaps in a ring over `members` if it differs; true if it changed.
    fn adopt(&self, members: Vec<String>) -> bool {
        let mut sorted = members;
        sorted.sort();
        if self.ring.borrow().members() == sorted.as_slice() {
            return false;
        }
        tracing::info!(members = ?sorted, "ring changed");
        self.metrics.ring_members.set(sorted.len() as i64);
        self.metrics.ownership_changes.inc();
        self.ring.send_replace(Arc::new(Ring::new(sorted)));
        true
    }

    async fn announce(&self, validators: usize) -> Result<bool, fred::error::Error> {
        let info = serde_json::to_string(&Announcement {
            id: &self.cfg.hub_id,
            address: &self.cfg.address,
            started_at_ms: self.started_at_ms,
            validators,
        })
        .expect("announcement serializes");
        let reply: Vec<String> = self
            .announce
            .evalsha_with_reload(
                &self.client,
                vec![self.cfg.keys.members(), self.cfg.keys.hub_info()],
                vec![self.cfg.hub_id.clone(), self.ttl_ms().to_string(), info],
            )
            .await?;
        let loads = parse_loads(reply, Instant::now());
        let members = loads.members.iter().map(|(id, _)| id.clone()).collect();
        let changed = self.adopt(members);
        self.loads.send_replace(Some(Arc::new(loads)));
        Ok(changed)
    }

    async fn reread(&self) -> Result<bool, fred::error::Error> {
        let members: Vec<String> = self
            .read
            .evalsha_with_reload(
                &self.client,
                vec![self.cfg.keys.members()],
                vec![self.ttl_ms().to_string()],
            )
            .await?;
        Ok(self.adopt(members))
    }

    async fn publish_change(&self) {
        let r: Result<i64, _> = self
            .client
            .publish(self.cfg.keys.membership_channel(), &self.cfg.hub_id)
            .await;
        if let Err(e) = r {
            self.redis_error("publishing a membership change", &e);
        }
    }

    fn redis_error(&self, what: &str, e: &fred::error::Error) {
        self.metrics.redis_errors.inc();
        tracing::warn!(error = %e, "{what} failed; keeping the last ring");
    }

    /// Announces every interval and follows other hubs' changes until
    /// `stop`, then leaves the ring. `load` reports this hub's validators.
    pub async fn run(self, load: impl Fn() -> usize, stop: CancellationToken) {
        let mut messages = self.subscriber.message_rx();
        let channel = self.cfg.keys.membership_channel();
        let mut subscribed = false;
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if !subscribed {
                        match self.subscriber.subscribe(channel.clone()).await {
                            Ok(()) => subscribed = true,
                            Err(e) => self.redis_error("subscribing", &e),
                        }
                    }
                    match self.announce(load()).await {
                        Ok(true) => self.publish_change().await,
                        Ok(false) => {}
                        Err(e) => self.redis_error("announcing", &e),
                    }
                }
                msg = messages.recv() => match msg {
                    Ok(m) if m.channel == channel => {
                        if let Err(e) = self.reread().await {
                            self.redis_error("reading members", &e);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.metrics.pubsub_lagged.inc_by(n);
                        tracing::warn!(missed = n, "fell behind on pub/sub; re-reading members");
                        if let Err(e) = self.reread().await {
                            self.redis_error("reading members", &e);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        messages = self.subscriber.message_rx();
                    }
                },
            }
        }
        // Leave so the others take over at once rather than after the TTL.
        let left: Result<i64, _> = self
            .leave
            .evalsha_with_reload(
                &self.client,
                vec![self.cfg.keys.members(), self.cfg.keys.hub_info()],
                vec![self.cfg.hub_id.clone()],
            )
            .await;
        match left {
            Ok(_) => self.publish_change().await,
            Err(e) => self.redis_error("leaving the ring", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Announcements from older and newer hubs both read: a missing count
    /// is unknown, an unknown field is ignored, a missing or unreadable
    /// announcement is unknown.
    #[test]
    fn announcements_of_any_version_read() {
        let ours = serde_json::to_string(&Announcement {
            id: "hub-a",
            address: "10.0.0.1:8080",
            started_at_ms: 1,
            validators: 36,
        })
        .unwrap();
        let older = r#"{"id":"hub-b","address":"10.0.0.2:8080","started_at_ms":1}"#;
        let newer = r#"{"id":"hub-c","validators":7,"zone":"eu-west-1a","draining":false}"#;
        let reply = [
            "hub-a", &ours, "hub-b", older, "hub-c", newer, "hub-d", "", "hub-e", "{",
        ];
        let at = Instant::now();
        let loads = parse_loads(reply.iter().map(|s| s.to_string()).collect(), at);
        assert_eq!(
            loads.members,
            vec![
                ("hub-a".to_string(), Some(36)),
                ("hub-b".to_string(), None),
                ("hub-c".to_string(), Some(7)),
                ("hub-d".to_string(), None),
                ("hub-e".to_string(), None),
            ]
        );
        assert_eq!(loads.at, at);
    }
}
