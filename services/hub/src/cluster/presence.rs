//! Which hub holds which validator, with its region and load.
//!
//! Two records per validator session:
//! - `{v:KEY}:session` = "hub|generation" says who holds the key. A new
//!   session claims it (learning the previous holder, which it tells to
//!   close); a closing session deletes it only if it still holds it
//!   (compare-and-delete), so an old hub can never erase a newer session.
//! - `{hub:ID}:validators` lists a hub's validators with region, capacity
//!   and load; the hub rewrites it every announcement and it expires with
//!   the hub, so owners picking validators cluster-wide see only live ones.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::scripts::Script;

use protocol::PublicKey;

use crate::cluster::Keys;

/// KEYS: session. ARGV: new holder, ttl ms. Returns the previous holder.
const CLAIM: &str = r#"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return old
"#;

/// KEYS: session. ARGV: holder, ttl ms. Extends our claim, or restores it
/// if it vanished (Redis restarted empty, or the claim at hello failed);
/// never takes over another session's claim.
const EXTEND: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
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

/// A validator as another hub advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub key: PublicKey,
    pub hub_id: String,
    pub region: String,
    pub capacity: u32,
    pub load: u32,
}

/// A local session as this hub advertises it.
#[derive(Debug, Clone)]
pub struct Local {
    pub key: String,
    pub generation: u64,
    pub region: String,
    pub capacity: u32,
    pub load: u32,
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

    /// Claims `key` for this session; returns the previous holder's hub id
    /// and generation if another session held it.
    pub async fn claim(
        &self,
        key: &str,
        generation: u64,
    ) -> Result<Option<(String, u64)>, fred::error::Error> {
        let old: Option<String> = self
            .claim
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.validator_session(key)],
                vec![self.holder(generation), self.ttl.as_millis().to_string()],
            )
            .await?;
        Ok(old.and_then(|o| {
            let (hub, generation) = o.rsplit_once('|')?;
            Some((hub.to_string(), generation.parse().ok()?))
        }))
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
    pub async fn publish(&self, locals: &[Local]) -> Result<(), fred::error::Error> {
        let list = self.keys.hub_validators(&self.hub_id);
        let ttl_ms = self.ttl.as_millis() as i64;
        let mut args = Vec::with_capacity(1 + 2 * locals.len());
        args.push(ttl_ms.to_string());
        for l in locals {
            args.push(l.key.clone());
            args.push(format!("{}|{}|{}", l.region, l.capacity, l.load));
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
        let mut first_err = None;
        for chunk in locals.chunks(EXTEND_BATCH) {
            let extends = chunk.iter().map(|l| {
                self.extend.evalsha_with_reload::<i64, _, _>(
                    &self.client,
                    vec![self.keys.validator_session(&l.key)],
                    vec![self.holder(l.generation), ttl_arg.clone()],
                )
            });
            for r in futures_util::future::join_all(extends).await {
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
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
