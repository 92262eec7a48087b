//! Every Redis key and channel name, built here and nowhere else.
//!
//! Names carry a hash tag (`{...}`) so that the same code runs on one Redis
//! and on Redis Cluster: keys one script touches together share a tag and
//! therefore a slot; per-hub channels have their own tag so sharded pub/sub
//! spreads them over the cluster. `prefix` namespaces a deployment (and each
//! test).

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn cluster(&self, name: &str) -> String {
        format!("{}{{cluster}}:{name}", self.prefix)
    }

    /// Sorted set: hub id -> last announce (Redis server time, ms).
    pub fn members(&self) -> String {
        self.cluster("members")
    }

    /// Hash: hub id -> JSON announcement (address, start time, load).
    pub fn hub_info(&self) -> String {
        self.cluster("hubs")
    }

    /// Channel: "membership changed, re-read it".
    pub fn membership_channel(&self) -> String {
        self.cluster("membership")
    }

    /// String: the payout leader's lock, "hub id|random".
    pub fn leader_lock(&self) -> String {
        self.cluster("leader")
    }

    /// Channel: "websites changed, reload them".
    pub fn websites_channel(&self) -> String {
        self.cluster("websites")
    }

    /// Channel: messages for one hub (tasks to forward, result summaries).
    pub fn hub_inbox(&self, hub_id: &str) -> String {
        format!("{}{{hub:{hub_id}}}:inbox", self.prefix)
    }

    /// Hash: the validators one hub holds, key -> "region|capacity|load".
    pub fn hub_validators(&self, hub_id: &str) -> String {
        format!("{}{{hub:{hub_id}}}:validators", self.prefix)
    }

    /// String: which session holds a validator, "hub id|generation".
    pub fn validator_session(&self, key: &str) -> String {
        format!("{}{{v:{key}}}:session", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_hash_tags_and_the_prefix() {
        let k = Keys::new("t1:");
        assert_eq!(k.members(), "t1:{cluster}:members");
        assert_eq!(k.hub_info(), "t1:{cluster}:hubs");
        assert_eq!(k.hub_inbox("hub-a"), "t1:{hub:hub-a}:inbox");
        // Keys used by one script share a slot.
        let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_string();
        assert_eq!(tag(&k.members()), tag(&k.hub_info()));
    }
}
