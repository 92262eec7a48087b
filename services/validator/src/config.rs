//! The validator's settings, validated once at start so a bad value never
//! reaches a socket. Errors name the command-line flag they came from, since
//! that is what an operator has to fix.

use std::path::PathBuf;

use protocol::limits::{self, WireError};
use url::Url;

/// Most checks a validator may run at once; also the most a hello may claim
/// (`--concurrency` is sent as `hello.capacity`).
pub const MAX_CONCURRENCY: u32 = limits::MAX_CAPACITY;
/// Default `--concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 32;

/// The `User-Agent` sent with every check unless configured otherwise.
pub fn default_user_agent() -> String {
    format!("uptime-validator/{}", env!("CARGO_PKG_VERSION"))
}

/// Everything [`crate::run`] needs besides the key and the shutdown signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// Hubs to connect to, tried in turn; `ws://` or `wss://`, at least one.
    pub hub_urls: Vec<Url>,
    /// Where the binary loaded the key from. [`crate::run`] takes the key
    /// itself, so in-process callers need no file and may leave this empty.
    pub keypair: PathBuf,
    /// 1..=32 bytes of `[a-z0-9-]` ([`limits::check_region`]).
    pub region: String,
    /// At most 16, each 1..=32 bytes of `[a-z0-9-_.:]`, e.g. `isp:hetzner`
    /// ([`limits::check_tags`]).
    pub tags: Vec<String>,
    /// Most checks run at once (1..=1000); sent to the hub as `hello.capacity`.
    pub concurrency: u32,
    /// Allow checks of loopback, private and link-local addresses. Off in
    /// production: a hub (or whoever registered a website) could otherwise
    /// aim the validator at its own network or a cloud metadata endpoint.
    pub allow_private_targets: bool,
    pub user_agent: String,
    /// The account earnings are paid to, when not the signing key
    /// (`hello.payout_address`, protocol 2).
    pub payout_address: Option<protocol::PublicKey>,
}

impl RunConfig {
    /// A valid config for one hub with defaults elsewhere (region `local`).
    pub fn new(hub_url: Url) -> Self {
        Self {
            hub_urls: vec![hub_url],
            keypair: PathBuf::new(),
            region: "local".into(),
            tags: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            allow_private_targets: false,
            user_agent: default_user_agent(),
            payout_address: None,
        }
    }

    /// Parses and validates values as they arrive from the command line or
    /// the environment.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let hub_urls = raw
            .hubs
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(parse_hub_url)
            .collect::<Result<Vec<_>, _>>()?;
        let concurrency = raw
            .concurrency
            .trim()
            .parse::<u32>()
            .map_err(|_| ConfigError::Concurrency(raw.concurrency.clone()))?;
        let payout_address = match raw.payout_address.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => Some(
                protocol::PublicKey::from_base58(a)
                    .ok_or_else(|| ConfigError::PayoutAddress(a.to_string()))?,
            ),
        };
        let config = Self {
            payout_address,
            hub_urls,
            keypair: raw.keypair,
            region: raw.region,
            tags: raw
                .tags
                .into_iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            concurrency,
            allow_private_targets: raw.allow_private_targets,
            user_agent: raw.user_agent.unwrap_or_else(default_user_agent),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; [`crate::run`] calls this too, so a config built
    /// by hand gets the same treatment as one from the command line. What
    /// goes into the hello is judged by the hub's own rules
    /// ([`protocol::limits`]), so a config that passes is not refused as
    /// `invalid_hello`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hub_urls.is_empty() {
            return Err(ConfigError::NoHub);
        }
        for u in &self.hub_urls {
            check_hub_url(u).map_err(|why| ConfigError::HubUrl {
                url: u.to_string(),
                why,
            })?;
        }
        limits::check_region(&self.region).map_err(ConfigError::Region)?;
        limits::check_tags(&self.tags).map_err(ConfigError::Tags)?;
        limits::check_capacity(self.concurrency)
            .map_err(|_| ConfigError::Concurrency(self.concurrency.to_string()))?;
        if reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(ConfigError::UserAgent(self.user_agent.clone()));
        }
        Ok(())
    }
}

/// Unparsed settings, one field per flag.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub hubs: Vec<String>,
    pub keypair: PathBuf,
    pub region: String,
    pub tags: Vec<String>,
    pub concurrency: String,
    pub allow_private_targets: bool,
    pub user_agent: Option<String>,
    pub payout_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--hub: at least one hub URL is required")]
    NoHub,
    #[error("--hub {url:?}: {why}")]
    HubUrl { url: String, why: String },
    /// The rule and the value are in the [`WireError`].
    #[error("--region: {0}")]
    Region(WireError),
    /// Too many tags, or the first bad one.
    #[error("--tag: {0}")]
    Tags(WireError),
    #[error("--concurrency {0:?}: must be a whole number from 1 to {MAX_CONCURRENCY}")]
    Concurrency(String),
    #[error("--user-agent {0:?}: not a valid header value")]
    UserAgent(String),
    #[error("--payout-address {0:?}: not a base58 ed25519 public key")]
    PayoutAddress(String),
}

/// Parses one hub URL, accepting only `ws://` and `wss://`.
pub fn parse_hub_url(s: &str) -> Result<Url, ConfigError> {
    let err = |why: String| ConfigError::HubUrl {
        url: s.to_string(),
        why,
    };
    let url = Url::parse(s).map_err(|e| err(e.to_string()))?;
    check_hub_url(&url).map_err(err)?;
    Ok(url)
}

fn check_hub_url(u: &Url) -> Result<(), String> {
    if !matches!(u.scheme(), "ws" | "wss") {
        return Err("scheme must be ws or wss".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        RawConfig {
            hubs: vec!["ws://127.0.0.1:8080/ws".into()],
            keypair: "k.json".into(),
            region: "eu-west".into(),
            tags: vec!["isp-a".into()],
            concurrency: "32".into(),
            allow_private_targets: false,
            user_agent: None,
            payout_address: None,
        }
    }

    #[track_caller]
    fn check_err(edit: impl FnOnce(&mut RawConfig), want: &str) {
        let mut r = raw();
        edit(&mut r);
        let e = RunConfig::from_raw(r).unwrap_err().to_string();
        assert_eq!(e, want);
    }

    #[test]
    fn accepts_a_good_config() {
        let mut r = raw();
        r.hubs = vec![" wss://hub.example.com/ws ".into(), "ws://[::1]:9/".into()];
        let c = RunConfig::from_raw(r).unwrap();
        assert_eq!(c.hub_urls.len(), 2);
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.user_agent, default_user_agent());
        RunConfig::new(c.hub_urls[0].clone()).validate().unwrap();
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        check_err(
            |r| r.hubs = vec!["http://x".into()],
            r#"--hub "http://x": scheme must be ws or wss"#,
        );
        check_err(
            |r| r.hubs = vec!["not a url".into()],
            r#"--hub "not a url": relative URL without a base"#,
        );
        check_err(
            |r| r.hubs.clear(),
            "--hub: at least one hub URL is required",
        );
        check_err(
            |r| r.region = "EU".into(),
            r#"--region: region must be 1-32 bytes of [a-z0-9-], got "EU""#,
        );
        check_err(
            |r| r.region = String::new(),
            r#"--region: region must be 1-32 bytes of [a-z0-9-], got """#,
        );
        check_err(
            |r| r.region = "a".repeat(33),
            &format!(
                r#"--region: region must be 1-32 bytes of [a-z0-9-], got "{}""#,
                "a".repeat(33)
            ),
        );
        // Tag characters are not region characters.
        check_err(
            |r| r.region = "isp:hetzner".into(),
            r#"--region: region must be 1-32 bytes of [a-z0-9-], got "isp:hetzner""#,
        );
        check_err(
            |r| r.tags = vec!["isp:hetzner".into(), "a b".into()],
            r#"--tag: each tag must be 1-32 bytes of [a-z0-9-_.:], got "a b""#,
        );
        check_err(
            |r| r.tags = vec!["ISP:Hetzner".into()],
            r#"--tag: each tag must be 1-32 bytes of [a-z0-9-_.:], got "ISP:Hetzner""#,
        );
        check_err(
            |r| r.tags = (0..17).map(|i| format!("t{i}")).collect(),
            "--tag: at most 16 tags, got 17",
        );
        for bad in ["0", "1001", "-1", "lots"] {
            check_err(
                |r| r.concurrency = bad.into(),
                &format!("--concurrency {bad:?}: must be a whole number from 1 to 1000"),
            );
        }
        check_err(
            |r| r.user_agent = Some("a\nb".into()),
            r#"--user-agent "a\nb": not a valid header value"#,
        );
    }

    /// The documented tag alphabet, `[a-z0-9-_.:]`, as a hub accepts it;
    /// tags arrive trimmed and empty ones (`VALIDATOR_TAGS="a,,b"`) dropped.
    #[test]
    fn accepts_the_documented_tags() {
        let mut r = raw();
        r.tags = vec![
            "isp:hetzner".into(),
            " dc.fsn1 ".into(),
            String::new(),
            "tier_2".into(),
            "a".repeat(32),
        ];
        let c = RunConfig::from_raw(r).unwrap();
        assert_eq!(
            c.tags,
            ["isp:hetzner", "dc.fsn1", "tier_2", &"a".repeat(32)]
        );
        let mut c = RunConfig::new(Url::parse("ws://h/").unwrap());
        c.tags = vec!["isp:hetzner".into()];
        c.validate().unwrap();
    }

    #[test]
    fn validate_catches_hand_built_configs() {
        let mut c = RunConfig::new(Url::parse("ws://h/").unwrap());
        c.concurrency = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Concurrency(_))));
        let mut c = RunConfig::new(Url::parse("https://h/").unwrap());
        c.concurrency = 1;
        assert!(matches!(c.validate(), Err(ConfigError::HubUrl { .. })));
        let mut c = RunConfig::new(Url::parse("ws://h/").unwrap());
        c.tags = vec!["isp hetzner".into()];
        assert_eq!(
            c.validate(),
            Err(ConfigError::Tags(WireError::Tag("isp hetzner".into())))
        );
    }
}
