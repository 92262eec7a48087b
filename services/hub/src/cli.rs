//! `hub` command line: serve, migrate, and website management until the
//! owner-facing API exists.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use store::{AccessKind, AccessSubject, NewWebsite, SiteStatus, Store, WebsiteId, WebsiteUrl};

use crate::{Application, Settings};

#[derive(Debug, Parser)]
#[command(name = "hub", version, about = "Uptime hub replica")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve validators (settings: defaults, --config FILE, HUB_* variables).
    Serve {
        #[arg(long, env = "HUB_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate(Db),
    /// Manage monitored websites.
    Sites {
        #[command(flatten)]
        db: Db,
        #[command(subcommand)]
        command: SitesCommand,
    },
    /// List validators; ban, unban and allow keys and networks
    /// (applied by every hub within 5 s).
    Validators {
        #[command(flatten)]
        db: Db,
        #[command(subcommand)]
        command: ValidatorsCommand,
    },
    /// Inspect and repair payouts.
    Payouts {
        #[command(flatten)]
        db: Db,
        #[command(subcommand)]
        command: PayoutsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ValidatorsCommand {
    /// Validators seen lately, with their results and agreement.
    List {
        /// Only validators seen within this many hours.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8_760))]
        seen_within_hours: u32,
        /// Results and agreement over this many hours.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720))]
        window_hours: u32,
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    /// Every allow and deny rule.
    Rules,
    /// Refuse a key, or every address in a network (`203.0.113.0/24`,
    /// `2001:db8::/48`, or one address), at hello; live sessions close.
    Ban {
        #[arg(value_parser = parse_subject)]
        subject: AccessSubject,
        /// Shown to the validator in the `access_denied` error.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove a ban.
    Unban {
        #[arg(value_parser = parse_subject)]
        subject: AccessSubject,
    },
    /// Put a key on the allow-list (needed with HUB_VALIDATOR_ACCESS=allowlist).
    Allow {
        #[arg(value_parser = parse_key)]
        key: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take a key off the allow-list; with HUB_VALIDATOR_ACCESS=allowlist its
    /// live sessions close.
    Disallow {
        #[arg(value_parser = parse_key)]
        key: String,
    },
}

fn parse_key(s: &str) -> Result<String, String> {
    protocol::PublicKey::from_base58(s.trim())
        .map(|k| k.to_base58())
        .ok_or_else(|| format!("{:?} is not a base58 ed25519 public key", terminal_safe(s)))
}

/// A key, a network prefix, or one address (its /32 or /128).
fn parse_subject(s: &str) -> Result<AccessSubject, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(AccessSubject::Network(ipnet::IpNet::from(ip).to_string()));
    }
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; the network is {}",
                net.trunc()
            ));
        }
        return Ok(AccessSubject::Network(net.to_string()));
    }
    parse_key(s).map(AccessSubject::Key).map_err(|_| {
        format!(
            "{:?} is neither a public key nor a network prefix",
            terminal_safe(s)
        )
    })
}

fn subject_text(s: &AccessSubject) -> &str {
    match s {
        AccessSubject::Key(k) | AccessSubject::Network(k) => k,
    }
}

#[derive(Debug, Subcommand)]
pub enum PayoutsCommand {
    /// Counts of unfinished transactions, payouts short of funds, failed payouts.
    Status,
    /// Put payouts marked `failed` back in the queue (after fixing the cause).
    /// Written under the current leader's epoch, so the leader pays them next cycle.
    RetryFailed,
}

#[derive(Args)]
pub struct Db {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// The URL may hold a password.
impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("database_url", &"<redacted>")
            .finish()
    }
}

pub use protocol::terminal_safe;

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Register a website.
    Add {
        url: String,
        /// Seconds between checks (the hub applies its configured floor).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=86_400))]
        interval: i32,
        /// Request timeout in milliseconds.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(100..=120_000))]
        timeout_ms: i32,
        /// Status codes that count as up: `200-399` or one code.
        #[arg(long, default_value = "200-399", value_parser = parse_status_range)]
        expect: (i16, i16),
        /// Text the body must contain (at most 256 bytes).
        #[arg(long)]
        keyword: Option<String>,
        /// Do not follow redirects.
        #[arg(long)]
        no_follow_redirects: bool,
        #[arg(long, default_value = "local")]
        owner: String,
    },
    /// List websites.
    List,
    /// Stop checking a website.
    Disable { id: i64 },
    /// Resume checking a website.
    Enable { id: i64 },
    /// Each website's latest round: status, per-region results, latency.
    Status,
}

fn parse_status_range(s: &str) -> Result<(i16, i16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| {
        x.trim()
            .parse::<i16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{x:?} is not an HTTP status code (100-599)"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a > b {
        return Err(format!("range {a}-{b} is empty"));
    }
    Ok((a, b))
}

/// Runs a parsed command. Errors are printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(db) => {
            let store = connect(&db).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Sites { db, command } => sites(connect(&db).await?, command).await,
        Command::Validators { db, command } => validators(connect(&db).await?, command).await,
        Command::Payouts { db, command } => {
            let store = connect(&db).await?;
            match command {
                PayoutsCommand::Status => {
                    let (unfinished, short, failed) = store.payout_backlog().await?;
                    println!("unfinished transactions  {unfinished}");
                    println!("insufficient funds       {short}");
                    println!("failed payouts           {failed}");
                }
                PayoutsCommand::RetryFailed => {
                    let epoch = store
                        .current_epoch(crate::cluster::leader::PAYOUT_ROLE)
                        .await?;
                    let n = store.retry_failed_payouts(epoch).await?;
                    println!("{n} failed payouts queued again");
                }
            }
            Ok(())
        }
    }
}

async fn connect(db: &Db) -> anyhow::Result<Store> {
    Store::connect(&db.database_url, 2)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL)")
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
    runtime::shutdown_signal().await;
}

async fn sites(store: Store, command: SitesCommand) -> anyhow::Result<()> {
    match command {
        SitesCommand::Add {
            url,
            interval,
            timeout_ms,
            expect,
            keyword,
            no_follow_redirects,
            owner,
        } => {
            let url = WebsiteUrl::parse(&url)?;
            let keyword = keyword.filter(|k| !k.is_empty());
            if let Some(k) = &keyword {
                store::check_keyword(k)?;
            }
            let w = store
                .add_website(&NewWebsite {
                    url,
                    interval_secs: interval,
                    timeout_ms,
                    expected_status_min: expect.0,
                    expected_status_max: expect.1,
                    keyword,
                    follow_redirects: !no_follow_redirects,
                    owner,
                })
                .await?;
            println!("added website {} {}", w.id, w.url);
        }
        SitesCommand::List => {
            println!(
                "{:>4}  {:<8}  {:>8}  {:>8}  {:<9}  URL",
                "ID", "ENABLED", "INTERVAL", "TIMEOUT", "EXPECT"
            );
            for w in store.list_websites().await? {
                println!(
                    "{:>4}  {:<8}  {:>7}s  {:>6}ms  {:<9}  {}{}",
                    w.id,
                    if w.enabled { "yes" } else { "no" },
                    w.interval_secs,
                    w.timeout_ms,
                    format!("{}-{}", w.expected_status_min, w.expected_status_max),
                    terminal_safe(&w.url),
                    w.keyword
                        .map(|k| format!("  (keyword \"{}\")", terminal_safe(&k)))
                        .unwrap_or_default()
                );
            }
        }
        SitesCommand::Disable { id } | SitesCommand::Enable { id } => {
            let enable = matches!(command, SitesCommand::Enable { .. });
            if !store.set_website_enabled(WebsiteId(id), enable).await? {
                anyhow::bail!("no website with id {id}");
            }
            println!(
                "website {id} {}",
                if enable { "enabled" } else { "disabled" }
            );
        }
        SitesCommand::Status => {
            print!(
                "{}",
                status_table(&store.site_statuses().await?, protocol::now_ms())
            );
        }
    }
    Ok(())
}

async fn validators(store: Store, command: ValidatorsCommand) -> anyhow::Result<()> {
    const HOUR_MS: i64 = 3_600_000;
    match command {
        ValidatorsCommand::List {
            seen_within_hours,
            window_hours,
            limit,
        } => {
            let rules = store.access_rules().await?;
            let listed = |kind: AccessKind, key: &str| {
                rules.iter().any(|r| {
                    r.kind == kind && matches!(&r.subject, AccessSubject::Key(k) if k == key)
                })
            };
            let rows = store
                .validator_summaries(
                    i64::from(seen_within_hours) * HOUR_MS,
                    i64::from(window_hours) * HOUR_MS,
                    i64::from(limit),
                )
                .await?;
            print!("{}", validators_table(&rows, protocol::now_ms(), listed));
        }
        ValidatorsCommand::Rules => {
            println!(
                "{:<5}  {:<44}  {:<10}  REASON",
                "KIND", "KEY OR NETWORK", "ADDED"
            );
            let now = protocol::now_ms();
            for r in store.access_rules().await? {
                println!(
                    "{:<5}  {:<44}  {:<10}  {}",
                    r.kind.as_str(),
                    terminal_safe(subject_text(&r.subject)),
                    ago(now - r.created_at_ms),
                    terminal_safe(&r.reason)
                );
            }
        }
        ValidatorsCommand::Ban { subject, reason } => {
            store
                .add_access_rule(AccessKind::Deny, &subject, reason.trim())
                .await?;
            println!("banned {}", subject_text(&subject));
        }
        ValidatorsCommand::Unban { subject } => {
            if !store.remove_access_rule(AccessKind::Deny, &subject).await? {
                anyhow::bail!("{} is not banned", subject_text(&subject));
            }
            println!("unbanned {}", subject_text(&subject));
        }
        ValidatorsCommand::Allow { key, reason } => {
            store
                .add_access_rule(
                    AccessKind::Allow,
                    &AccessSubject::Key(key.clone()),
                    reason.trim(),
                )
                .await?;
            println!("allowed {key}");
        }
        ValidatorsCommand::Disallow { key } => {
            if !store
                .remove_access_rule(AccessKind::Allow, &AccessSubject::Key(key.clone()))
                .await?
            {
                anyhow::bail!("{key} is not on the allow-list");
            }
            println!("disallowed {key}");
        }
    }
    Ok(())
}

/// The `validators list` table.
pub fn validators_table(
    rows: &[store::ValidatorSummary],
    now_ms: i64,
    listed: impl Fn(AccessKind, &str) -> bool,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44}  {:<12}  {:<10}  {:>8}  {:>8}  {:>5}  {:>11}  {:<9}  {:<8}  VERSION",
        "KEY",
        "REGION",
        "LAST SEEN",
        "RESULTS",
        "AGREED",
        "TRUST",
        "SHADOW +/-",
        "STANDING",
        "ACCESS"
    );
    for v in rows {
        let agreed = if v.decided == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * v.agreed as f64 / v.decided as f64)
        };
        let access = if listed(AccessKind::Deny, &v.public_key) {
            "banned"
        } else if listed(AccessKind::Allow, &v.public_key) {
            "allowed"
        } else {
            "-"
        };
        let region: String = v.region.chars().take(12).collect();
        let version: String = v.client_version.chars().take(40).collect();
        let standing = if v.probation {
            "probation"
        } else if v.trust < store::MIN_TRUST {
            "low trust"
        } else {
            "good"
        };
        let _ = writeln!(
            out,
            "{:<44}  {:<12}  {:<10}  {:>8}  {:>8}  {:>5.2}  {:>11}  {:<9}  {:<8}  {}",
            terminal_safe(&v.public_key),
            terminal_safe(&region),
            ago(now_ms - v.last_seen_ms),
            v.results,
            agreed,
            v.trust,
            format!("{}/{}", v.shadow_passed, v.shadow_failed),
            standing,
            access,
            terminal_safe(&version)
        );
    }
    out
}

fn ago(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// The `sites status` table.
pub fn status_table(sites: &[SiteStatus], now_ms: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:<8}  {:<38}  {:>8}  {:<10}  RESULTS BY REGION",
        "ID", "STATUS", "URL", "LATENCY", "LAST CHECK"
    );
    for s in sites {
        let w = &s.website;
        let (status, latency, last, results) = match &s.round {
            None => (
                if w.enabled { "pending" } else { "disabled" }.to_string(),
                "-".to_string(),
                "never".to_string(),
                String::new(),
            ),
            Some(r) => {
                let mut lat: Vec<i32> = r
                    .results
                    .iter()
                    .filter(|x| x.up)
                    .map(|x| x.latency_ms)
                    .collect();
                lat.sort_unstable();
                let median = lat
                    .get(lat.len() / 2)
                    .map(|l| format!("{l}ms"))
                    .unwrap_or_else(|| "-".into());
                let last = r
                    .results
                    .iter()
                    .map(|x| x.checked_at_ms)
                    .max()
                    .unwrap_or(r.scheduled_at_ms);
                let results = r
                    .results
                    .iter()
                    .map(|x| {
                        let what = match (x.up, x.http_status, &x.error) {
                            (true, Some(c), _) => format!("up {c} {}ms", x.latency_ms),
                            (true, None, _) => format!("up {}ms", x.latency_ms),
                            (false, Some(c), _) => format!("down {c}"),
                            (false, None, Some(e)) => {
                                let e: String = e.chars().take(40).collect();
                                format!("down ({})", terminal_safe(&e))
                            }
                            (false, None, None) => "down".into(),
                        };
                        format!("{}: {what}", terminal_safe(&x.region))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let status = if w.enabled {
                    terminal_safe(&r.status)
                } else {
                    format!("{} (off)", terminal_safe(&r.status))
                };
                (status, median, ago(now_ms - last), results)
            }
        };
        let url: String = terminal_safe(&w.url.chars().take(38).collect::<String>());
        let _ = writeln!(
            out,
            "{:>4}  {:<8}  {:<38}  {:>8}  {:<10}  {}",
            w.id, status, url, latency, last, results
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse_or_explain() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        assert!(parse_status_range("399-200").unwrap_err().contains("empty"));
        assert!(parse_status_range("abc")
            .unwrap_err()
            .contains("not an HTTP status"));
        assert!(parse_status_range("99").is_err());
    }

    #[test]
    fn terminal_text_is_escaped() {
        assert_eq!(terminal_safe("plain é text"), "plain é text");
        assert_eq!(
            terminal_safe("a\x1b[2Jb\nc\rd\x07\u{9b}e\u{202e}f"),
            r"a\u{1b}[2Jb\nc\rd\u{7}\u{9b}e\u{202e}f"
        );
    }

    #[test]
    fn status_table_escapes_validator_text() {
        let site = SiteStatus {
            website: store::Website {
                id: WebsiteId(1),
                url: "https://example.com/".into(),
                interval_secs: 60,
                timeout_ms: 1000,
                expected_status_min: 200,
                expected_status_max: 399,
                keyword: None,
                follow_redirects: true,
                enabled: true,
                owner: "o".into(),
            },
            round: Some(store::RoundSummary {
                round_id: store::RoundId(1),
                status: "down".into(),
                scheduled_at_ms: 0,
                results: vec![store::RegionResult {
                    region: "eu\x1b]0;x\x07".into(),
                    up: false,
                    http_status: None,
                    latency_ms: 1,
                    error: Some("bad\x1b[2J\nFAKE".into()),
                    checked_at_ms: 0,
                }],
            }),
        };
        let out = status_table(&[site], 1000);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert_eq!(out.lines().count(), 2, "{out:?}");
        assert!(out.contains(r"bad\u{1b}[2J\nFAKE"), "{out:?}");
    }
}
