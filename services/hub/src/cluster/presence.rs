//! Which hub holds which validator, with its region and load.
//!
//! Two records per validator session:
//! - `{v:KEY}:session` = "hub|generation" says who holds the key. A new
//!   session claims it (learning the previous holder, which it tells to
//!   close); a closing session deletes it only if it still holds it
//!   (compare-and-delete), so an old hub can never erase a newer session.
//!   Generations are hello times (microseconds), so the later hello keeps
//!   the key however the claims of two near-simultaneous hellos interleave.
//! - `{hub:ID}:validators` lists a hub's validators with region, capacity
//!   and load; the hub rewrites it every announcement and it expires with
//!   the hub, so owners picking validators cluster-wide see only live ones.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::scripts::Script;

use protocol::PublicKey;

use crate::cluster::Keys;
use crate::registry::NetPrefix;

/// KEYS: session. ARGV: new holder ("hub|generation"), ttl ms, generation.
/// Generations are hello times, so an older session never displaces a newer
/// one, whichever claim Redis runs first. Returns "+" and the previous
/// holder (empty if none) when the claim is ours, "-" and the holder when a
/// newer session holds the key.
const CLAIM: &str = r#"
local old = redis.call('GET', KEYS[1])
if old then
  local gen = tonumber(string.match(old, '|(%d+)$'))
  if gen and gen > tonumber(ARGV[3]) then
    return '-' .. old
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return '+' .. (old or '')
"#;

/// KEYS: session. ARGV: holder, ttl ms, generation. "=": our claim,
/// extended. "-": a newer session holds the key (ours must close: its kick
/// may have been lost). "+" and the previous holder (empty if the claim had
/// vanished: Redis restarted empty, or the claim at hello failed): the key
/// is ours now, and an older session that held it must be told to close.
const EXTEND: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return '='
end
if cur then
  local gen = tonumber(string.match(cur, '|(%d+)$'))
  if gen and gen > tonumber(ARGV[3]) then
    return '-'
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return '+' .. (cur or '')
"#;

/// KEYS: a hub's list. ARGV: ttl ms, then key, value pairs. Replaces it.
const PUBLISH: &str = r#"
redis.call('DEL', KEYS[1])
-- unpack in chunks: Lua's stack holds a few thousand values at most
for i = 2, #ARGV, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
if #ARGV > 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"#;

/// Claim extensions in flight at once during an announcement.
const EXTEND_BATCH: usize = 512;

/// What a session's claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this session's now; the session that held it before, if
    /// any (hub id, generation), must be told to close.
    Won(Option<(String, u64)>),
    /// A newer session (a later hello) holds the key: this one must close.
    Lost(String, u64),
}

fn parse_holder(v: &str) -> Option<(String, u64)> {
    let (hub, generation) = v.rsplit_once('|')?;
    Some((hub.to_string(), generation.parse().ok()?))
}

/// What one announcement found about this hub's sessions (indexes into
/// the `locals` given to [`Presence::publish`]).
#[derive(Debug, Default)]
pub struct Announced {
    /// Sessions a newer session (a later hello) has superseded: close them.
    pub superseded: Vec<usize>,
    /// Sessions that took their key over from an older session, whose hub
    /// id and generation are given: tell that hub to close it.
    pub displaced: Vec<(usize, String, u64)>,
    /// The first claim extension that failed, if any (the others ran).
    pub error: Option<fred::error::Error>,
}

/// A validator as another hub advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub key: PublicKey,
    pub hub_id: String,
    pub region: String,
    pub capacity: u32,
    pub load: u32,
    /// Absent in an older hub's announcement.
    pub prefix: Option<NetPrefix>,
    /// Its results count toward decisions; `true` when an older hub does
    /// not say.
    pub counts: bool,
}

/// A local session as this hub advertises it.
#[derive(Debug, Clone)]
pub struct Local {
    pub key: String,
    pub generation: u64,
    pub region: String,
    pub capacity: u32,
    pub load: u32,
    pub prefix: NetPrefix,
    pub counts: bool,
}

#[derive(Clone)]
pub struct Presence {
    client: Client,
    keys: Keys,
    hub_id: String,
    ttl: Duration,
    claim: Script,
    release: Script,
    extend: Script,
    publish: Script,
}

impl Presence {
    /// `ttl` should cover a few announcement intervals.
    pub fn new(client: Client, keys: Keys, hub_id: String, ttl: Duration) -> Self {
        Self {
            client,
            keys,
            hub_id,
            ttl,
            claim: Script::from_lua(CLAIM),
            release: Script::from_lua(super::COMPARE_AND_DELETE),
            extend: Script::from_lua(EXTEND),
            publish: Script::from_lua(PUBLISH),
        }
    }

    fn holder(&self, generation: u64) -> String {
        format!("{}|{generation}", self.hub_id)
    }

    /// Claims `key` for this session, unless a newer session holds it.
    pub async fn claim(&self, key: &str, generation: u64) -> Result<Claim, fred::error::Error> {
        let r: String = self
            .claim
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.validator_session(key)],
                vec![
                    self.holder(generation),
                    self.ttl.as_millis().to_string(),
                    generation.to_string(),
                ],
            )
            .await?;
        let malformed = || fred::error::Error::new(fred::error::ErrorKind::Parse, "claim reply");
        match r.split_at_checked(1) {
            Some(("+", old)) => Ok(Claim::Won(parse_holder(old))),
            Some(("-", newer)) => {
                let (hub, generation) = parse_holder(newer).ok_or_else(malformed)?;
                Ok(Claim::Lost(hub, generation))
            }
            _ => Err(malformed()),
        }
    }

    /// Compare-and-delete: true if this session still held the key.
    pub async fn release(&self, key: &str, generation: u64) -> Result<bool, fred::error::Error> {
        let n: i64 = self
            .release
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.validator_session(key)],
                vec![self.holder(generation)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Rewrites this hub's validator list and extends its sessions' claims.
    /// Fails only if the list could not be written; a failed extension is
    /// reported in [`Announced::error`] beside what the others found.
    pub async fn publish(&self, locals: &[Local]) -> Result<Announced, fred::error::Error> {
        let list = self.keys.hub_validators(&self.hub_id);
        let ttl_ms = self.ttl.as_millis() as i64;
        let mut args = Vec::with_capacity(1 + 2 * locals.len());
        args.push(ttl_ms.to_string());
        for l in locals {
            args.push(l.key.clone());
            args.push(format!(
                "{}|{}|{}|{}|{}",
                l.region,
                l.capacity,
                l.load,
                l.prefix.to_hex(),
                u8::from(l.counts)
            ));
        }
        let _: i64 = self
            .publish
            .evalsha_with_reload(&self.client, vec![list], args)
            .await?;
        // Every claim is its own key (its own slot on Redis Cluster), so one
        // script each; they go out pipelined, EXTEND_BATCH at a time, not
        // one round trip each (19k validators were 19k sequential round
        // trips per announcement). One failure must not leave the other
        // claims to expire.
        let ttl_arg = ttl_ms.to_string();
        let mut out = Announced::default();
        for (n, chunk) in locals.chunks(EXTEND_BATCH).enumerate() {
            let extends = chunk.iter().map(|l| {
                self.extend.evalsha_with_reload::<String, _, _>(
                    &self.client,
                    vec![self.keys.validator_session(&l.key)],
                    vec![
                        self.holder(l.generation),
                        ttl_arg.clone(),
                        l.generation.to_string(),
                    ],
                )
            });
            for (i, r) in futures_util::future::join_all(extends)
                .await
                .into_iter()
                .enumerate()
            {
                let i = n * EXTEND_BATCH + i;
                match r {
                    Ok(reply) => match reply.split_at_checked(1) {
                        Some(("-", _)) => out.superseded.push(i),
                        Some(("+", old)) => {
                            if let Some((hub, generation)) = parse_holder(old) {
                                out.displaced.push((i, hub, generation));
                            }
                        }
                        _ => {}
                    },
                    Err(e) => {
                        out.error.get_or_insert(e);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every validator the other live hubs advertise.
    pub async fn remotes(&self, hubs: &[String]) -> Result<Vec<Remote>, fred::error::Error> {
        let mut out = Vec::new();
        for hub in hubs.iter().filter(|h| **h != self.hub_id) {
            let map: std::collections::HashMap<String, String> =
                self.client.hgetall(self.keys.hub_validators(hub)).await?;
            for (key, v) in map {
                let Some(key) = PublicKey::from_base58(&key) else {
                    continue;
                };
                let mut parts = v.split('|');
                let (Some(region), Some(cap), Some(load)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                out.push(Remote {
                    key,
                    hub_id: hub.clone(),
                    region: region.to_string(),
                    capacity: cap.parse().unwrap_or(0),
                    load: load.parse().unwrap_or(0),
                    prefix: parts.next().and_then(NetPrefix::from_hex),
                    counts: parts.next() != Some("0"),
                });
            }
        }
        Ok(out)
    }

    /// Drops this hub's list at once (graceful shutdown).
    pub async fn clear(&self) -> Result<(), fred::error::Error> {
        let _: i64 = self
            .client
            .del(self.keys.hub_validators(&self.hub_id))
            .await?;
        Ok(())
    }
}
