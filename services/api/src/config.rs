//! Settings in two layers, as the hub has them: [`Config`] is what an
//! operator writes (defaults, then an optional TOML file, then `API_*`
//! environment variables and `DATABASE_URL`); [`Config::parse`] checks it
//! once and returns typed [`Settings`]. A bad value stops the service with
//! a message naming the variable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use runtime::{Secret, TrustedProxies};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL (`API_DATABASE_URL` or `DATABASE_URL`).
    pub database_url: Secret,
    pub db_max_connections: u32,
    /// Where the API, `/healthz`, `/readyz` and `/metrics` listen.
    pub listen: SocketAddr,
    /// Key of the HMAC that API keys are stored under: at least 32 bytes,
    /// hex. Changing it invalidates every API key.
    pub key_secret: Secret,
    /// Whether anyone may sign up (`true`), or only the operator creates
    /// accounts (`api accounts create`).
    pub signup_open: bool,
    /// Quotas of a new account; the operator changes them per account.
    pub default_max_sites: i32,
    pub default_min_interval_secs: i32,
    /// Shortest interval any account may set (the hubs' own floor).
    pub min_interval_secs: i32,
    /// Accept websites on private, loopback and link-local addresses (local
    /// demos and tests). Off in production: validators refuse them anyway.
    pub allow_private_targets: bool,
    /// Send the session cookie with `Secure` (off only for plain-HTTP local
    /// runs).
    pub cookie_secure: bool,
    /// How long a sign-in lasts, seconds.
    pub session_ttl_secs: u64,
    /// Requests per second (and burst) per API key or session.
    pub rate_per_caller: u32,
    pub burst_per_caller: u32,
    /// Requests per second (and burst) per client address.
    pub rate_per_ip: u32,
    pub burst_per_ip: u32,
    /// Sign-up and sign-in attempts per minute per client address.
    pub auth_attempts_per_minute: u32,
    /// Longest time a request may take, ms.
    pub request_timeout_ms: u64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// How long status pages and badges may be cached, seconds: by clients
    /// (`Cache-Control: max-age`) and by each replica (rendered at most once
    /// per this long).
    pub public_cache_secs: u32,
    /// Load balancers whose `X-Forwarded-For` is believed, comma-separated
    /// IP addresses and CIDR ranges (`10.0.0.0/8,fd00::/8,127.0.0.1`); see
    /// [`runtime::client_ip`].
    pub trusted_proxies: String,
    /// Alert deliveries in flight per replica; 0 runs no delivery worker
    /// here (another replica delivers).
    pub alert_workers: u32,
    /// How long a claimed delivery stays with its worker, seconds: longer
    /// than one attempt may take (`alert_timeout_ms` plus 5 s).
    pub alert_lease_secs: u64,
    /// Time limit of one delivery attempt, ms.
    pub alert_timeout_ms: u64,
    /// Attempts before a delivery is given up (dead).
    pub alert_max_attempts: u32,
    /// First retry delay, ms; doubled per attempt (with jitter) up to
    /// `alert_retry_max_secs`.
    pub alert_retry_base_ms: u64,
    pub alert_retry_max_secs: u64,
    /// Delivered and dead deliveries are deleted after these many days.
    pub alert_keep_delivered_days: u32,
    pub alert_keep_dead_days: u32,
    /// SMTP server for email channels: `smtp://host:587` (STARTTLS
    /// required), `smtps://host:465` (TLS), `smtp://host:25?tls=none`
    /// (plain: local tests only); credentials as `user:password@`. Empty:
    /// email channels are refused.
    pub smtp_url: Secret,
    /// The From address of alert emails.
    pub smtp_from: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: Secret::default(),
            db_max_connections: 10,
            listen: "127.0.0.1:8090".parse().expect("literal"),
            key_secret: Secret::default(),
            signup_open: true,
            default_max_sites: 20,
            default_min_interval_secs: 60,
            min_interval_secs: 10,
            allow_private_targets: false,
            cookie_secure: true,
            session_ttl_secs: 7 * 24 * 3600,
            rate_per_caller: 20,
            burst_per_caller: 60,
            rate_per_ip: 50,
            burst_per_ip: 100,
            auth_attempts_per_minute: 10,
            request_timeout_ms: 10_000,
            max_body_bytes: 64 * 1024,
            public_cache_secs: 30,
            trusted_proxies: String::new(),
            alert_workers: 8,
            alert_lease_secs: 60,
            alert_timeout_ms: 10_000,
            alert_max_attempts: 8,
            alert_retry_base_ms: 5_000,
            alert_retry_max_secs: 1_800,
            alert_keep_delivered_days: 7,
            alert_keep_dead_days: 30,
            smtp_url: Secret::default(),
            smtp_from: "uptime alerts <alerts@localhost>".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {var}: {why}")]
    Invalid { var: &'static str, why: String },
}

fn invalid(var: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        why: why.into(),
    }
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Secret,
    pub db_max_connections: u32,
    pub listen: SocketAddr,
    pub key_secret: KeySecret,
    pub signup_open: bool,
    pub default_max_sites: i32,
    pub default_min_interval_secs: i32,
    pub min_interval_secs: i32,
    pub allow_private_targets: bool,
    pub cookie_secure: bool,
    pub session_ttl: Duration,
    pub rate_per_caller: (u32, u32),
    pub rate_per_ip: (u32, u32),
    pub auth_attempts_per_minute: u32,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub public_cache: Duration,
    pub trusted_proxies: TrustedProxies,
    pub alerts: AlertSettings,
}

/// How alerts are delivered.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub workers: usize,
    pub lease: Duration,
    pub timeout: Duration,
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub keep_delivered: Duration,
    pub keep_dead: Duration,
    /// `None`: email channels are refused.
    pub smtp: Option<SmtpSettings>,
}

/// The operator's SMTP server (the URL may hold a password: never shown).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub url: Secret,
    pub from: lettre::message::Mailbox,
}

/// The HMAC key for API keys; never shown.
#[derive(Clone)]
pub struct KeySecret(pub Vec<u8>);

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = file {
            f = f.merge(Toml::file_exact(p));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            f = f.merge(Serialized::default("database_url", url));
        }
        f = f.merge(Env::prefixed("API_"));
        Self::from_figment(f)
    }

    pub fn from_figment(f: Figment) -> Result<Settings, ConfigError> {
        let c: Config = f.extract().map_err(|e| {
            // figment's message names the key; it never holds a value of
            // a secret field (those deserialize from any string).
            ConfigError::Load(e.to_string())
        })?;
        c.parse()
    }

    pub fn parse(self) -> Result<Settings, ConfigError> {
        if self.database_url.is_empty() {
            return Err(invalid("API_DATABASE_URL", "is required (or DATABASE_URL)"));
        }
        let key = hex::decode(self.key_secret.trim())
            .map_err(|_| invalid("API_KEY_SECRET", "must be hex (64 or more digits)"))?;
        if key.len() < 32 {
            return Err(invalid(
                "API_KEY_SECRET",
                "must be at least 32 bytes (64 hex digits); generate one with `openssl rand -hex 32`",
            ));
        }
        if !(1..=86_400).contains(&self.min_interval_secs) {
            return Err(invalid("API_MIN_INTERVAL_SECS", "must be 1 to 86400"));
        }
        if !(self.min_interval_secs..=86_400).contains(&self.default_min_interval_secs) {
            return Err(invalid(
                "API_DEFAULT_MIN_INTERVAL_SECS",
                "must be between API_MIN_INTERVAL_SECS and 86400",
            ));
        }
        if self.default_max_sites < 0 {
            return Err(invalid("API_DEFAULT_MAX_SITES", "must be 0 or more"));
        }
        if self.db_max_connections == 0 {
            return Err(invalid("API_DB_MAX_CONNECTIONS", "must be at least 1"));
        }
        if self.session_ttl_secs < 60 {
            return Err(invalid("API_SESSION_TTL_SECS", "must be at least 60"));
        }
        for (var, v) in [
            ("API_RATE_PER_CALLER", self.rate_per_caller),
            ("API_BURST_PER_CALLER", self.burst_per_caller),
            ("API_RATE_PER_IP", self.rate_per_ip),
            ("API_BURST_PER_IP", self.burst_per_ip),
            (
                "API_AUTH_ATTEMPTS_PER_MINUTE",
                self.auth_attempts_per_minute,
            ),
        ] {
            if v == 0 {
                return Err(invalid(var, "must be at least 1"));
            }
        }
        if !(100..=120_000).contains(&self.request_timeout_ms) {
            return Err(invalid("API_REQUEST_TIMEOUT_MS", "must be 100 to 120000"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid("API_MAX_BODY_BYTES", "must be 1024 to 16777216"));
        }
        if !(1..=3600).contains(&self.public_cache_secs) {
            return Err(invalid("API_PUBLIC_CACHE_SECS", "must be 1 to 3600"));
        }
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| invalid("API_TRUSTED_PROXIES", e.to_string()))?;
        let alerts = self.alert_settings()?;
        Ok(Settings {
            database_url: self.database_url,
            db_max_connections: self.db_max_connections,
            listen: self.listen,
            key_secret: KeySecret(key),
            signup_open: self.signup_open,
            default_max_sites: self.default_max_sites,
            default_min_interval_secs: self.default_min_interval_secs,
            min_interval_secs: self.min_interval_secs,
            allow_private_targets: self.allow_private_targets,
            cookie_secure: self.cookie_secure,
            session_ttl: Duration::from_secs(self.session_ttl_secs),
            rate_per_caller: (self.rate_per_caller, self.burst_per_caller),
            rate_per_ip: (self.rate_per_ip, self.burst_per_ip),
            auth_attempts_per_minute: self.auth_attempts_per_minute,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            public_cache: Duration::from_secs(u64::from(self.public_cache_secs)),
            trusted_proxies,
            alerts,
        })
    }

    fn alert_settings(&self) -> Result<AlertSettings, ConfigError> {
        if self.alert_workers > 256 {
            return Err(invalid("API_ALERT_WORKERS", "must be 0 to 256"));
        }
        if !(1_000..=60_000).contains(&self.alert_timeout_ms) {
            return Err(invalid("API_ALERT_TIMEOUT_MS", "must be 1000 to 60000"));
        }
        if self.alert_lease_secs.saturating_mul(1000) < self.alert_timeout_ms + 5_000
            || self.alert_lease_secs > 3_600
        {
            return Err(invalid(
                "API_ALERT_LEASE_SECS",
                "must be at least API_ALERT_TIMEOUT_MS + 5 s, and at most 3600",
            ));
        }
        if !(1..=50).contains(&self.alert_max_attempts) {
            return Err(invalid("API_ALERT_MAX_ATTEMPTS", "must be 1 to 50"));
        }
        if !(10..=3_600_000).contains(&self.alert_retry_base_ms) {
            return Err(invalid("API_ALERT_RETRY_BASE_MS", "must be 10 to 3600000"));
        }
        if self.alert_retry_max_secs.saturating_mul(1000) < self.alert_retry_base_ms
            || self.alert_retry_max_secs > 86_400
        {
            return Err(invalid(
                "API_ALERT_RETRY_MAX_SECS",
                "must be at least API_ALERT_RETRY_BASE_MS, and at most 86400",
            ));
        }
        for (var, v) in [
            (
                "API_ALERT_KEEP_DELIVERED_DAYS",
                self.alert_keep_delivered_days,
            ),
            ("API_ALERT_KEEP_DEAD_DAYS", self.alert_keep_dead_days),
        ] {
            if !(1..=3_650).contains(&v) {
                return Err(invalid(var, "must be 1 to 3650"));
            }
        }
        let smtp = if self.smtp_url.is_empty() {
            None
        } else {
            let u = url::Url::parse(&self.smtp_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some())
                .ok_or_else(|| {
                    invalid(
                        "API_SMTP_URL",
                        "must be smtp://host[:port] or smtps://host[:port] (the value is not shown)",
                    )
                })?;
            let tls = u
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.into_owned());
            if !matches!(
                tls.as_deref(),
                None | Some("none" | "required" | "opportunistic")
            ) {
                return Err(invalid(
                    "API_SMTP_URL",
                    "tls= must be none, opportunistic or required",
                ));
            }
            let from = self.smtp_from.parse().map_err(|_| {
                invalid(
                    "API_SMTP_FROM",
                    "must be an address, optionally with a name: `Name <a@b>`",
                )
            })?;
            Some(SmtpSettings {
                url: self.smtp_url.clone(),
                from,
            })
        };
        Ok(AlertSettings {
            workers: self.alert_workers as usize,
            lease: Duration::from_secs(self.alert_lease_secs),
            timeout: Duration::from_millis(self.alert_timeout_ms),
            max_attempts: self.alert_max_attempts as i32,
            retry_base: Duration::from_millis(self.alert_retry_base_ms),
            retry_max: Duration::from_secs(self.alert_retry_max_secs),
            keep_delivered: Duration::from_secs(u64::from(self.alert_keep_delivered_days) * 86_400),
            keep_dead: Duration::from_secs(u64::from(self.alert_keep_dead_days) * 86_400),
            smtp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'";

    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let toml: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&toml)),
        )
    }

    #[test]
    fn defaults_with_a_database_and_a_key_load() {
        let s = from_pairs(&[("database_url", "'postgres://x/y'"), ("key_secret", KEY)]).unwrap();
        assert_eq!(s.key_secret.0.len(), 32);
        assert!(s.signup_open && s.cookie_secure && !s.allow_private_targets);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let db = ("database_url", "'postgres://x/y'");
        let key = ("key_secret", KEY);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[key], "API_DATABASE_URL"),
            (&[db], "API_KEY_SECRET"),
            (&[db, ("key_secret", "'abcd'")], "API_KEY_SECRET"),
            (&[db, ("key_secret", "'not hex at all'")], "API_KEY_SECRET"),
            (
                &[db, key, ("min_interval_secs", "0")],
                "API_MIN_INTERVAL_SECS",
            ),
            (
                &[db, key, ("default_min_interval_secs", "5")],
                "API_DEFAULT_MIN_INTERVAL_SECS",
            ),
            (
                &[db, key, ("default_max_sites", "-1")],
                "API_DEFAULT_MAX_SITES",
            ),
            (&[db, key, ("rate_per_ip", "0")], "API_RATE_PER_IP"),
            (
                &[db, key, ("request_timeout_ms", "5")],
                "API_REQUEST_TIMEOUT_MS",
            ),
            (
                &[db, key, ("trusted_proxies", "'10.0.0.1, nope'")],
                "API_TRUSTED_PROXIES",
            ),
        ];
        for (pairs, var) in cases {
            let e = from_pairs(pairs).unwrap_err().to_string();
            assert!(e.contains(var), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let db = ("database_url", "'postgres://x/y'");
        let key = ("key_secret", KEY);
        let s = from_pairs(&[
            db,
            key,
            ("trusted_proxies", "'10.0.0.0/8,fd00::/8, 127.0.0.1'"),
        ])
        .unwrap();
        let p = &s.trusted_proxies;
        assert_eq!(p.to_string(), "10.0.0.0/8,fd00::/8,127.0.0.1");
        assert!(p.contains("fd00::5".parse().unwrap()));
        for (bad, entry) in [
            ("'10.0.0.0/33'", "10.0.0.0/33"),
            ("'127.0.0.1, ::/129'", "::/129"),
            ("'192.168.1.1/16'", "192.168.1.1/16"),
            ("'10.0.0.1, nope'", "nope"),
        ] {
            let e = from_pairs(&[db, key, ("trusted_proxies", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("API_TRUSTED_PROXIES") && e.contains(&format!("{entry:?}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let secret = "'postgres://u:hunter2@h/d'";
        let s = from_pairs(&[("database_url", secret), ("key_secret", KEY)]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && !d.contains("00112233"), "{d}");
        let e = from_pairs(&[("database_url", secret), ("key_secret", "'zz-hunter3'")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter3"), "{e}");
    }
}
