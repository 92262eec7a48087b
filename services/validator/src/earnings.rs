//! `validator earnings`: asks a hub what this validator earned and was paid
//! (`GET /v1/validators/{key}/earnings`) and prints it.

use std::fmt::Write as _;
use std::time::Duration;

use protocol::api::{ApiError, Earnings};
use protocol::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum EarningsError {
    #[error("hub URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error("asking the hub: {0}")]
    Http(#[from] reqwest::Error),
    #[error("hub answered {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("hub answered {0} with a body that is not the earnings document: {1}")]
    Body(u16, String),
}

/// The hub's HTTP base for a hub URL as validators know it (ws:// or
/// wss:// with `/ws`, or already http(s)://).
pub fn http_base(hub: &str) -> Result<url::Url, EarningsError> {
    let bad = |why: &str| EarningsError::BadUrl(hub.to_string(), why.to_string());
    let mut u = url::Url::parse(hub).map_err(|e| bad(&e.to_string()))?;
    let scheme = match u.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return Err(bad("must be ws://, wss://, http:// or https://")),
    };
    u.set_scheme(scheme)
        .map_err(|_| bad("cannot use this scheme"))?;
    u.set_path("/");
    u.set_query(None);
    Ok(u)
}

/// Fetches the earnings of `key` from the hub at `hub`.
pub async fn fetch(hub: &str, key: &PublicKey) -> Result<Earnings, EarningsError> {
    let url = http_base(hub)?
        .join(&format!("v1/validators/{key}/earnings"))
        .map_err(|e| EarningsError::BadUrl(hub.to_string(), e.to_string()))?;
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(url)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&body).map_err(|e| EarningsError::Body(status, e.to_string()));
    }
    match serde_json::from_str::<ApiError>(&body) {
        Ok(e) => Err(EarningsError::Api {
            status,
            code: terminal_safe(&e.code),
            message: terminal_safe(&e.message),
        }),
        Err(_) => Err(EarningsError::Body(
            status,
            terminal_safe(&body.chars().take(200).collect::<String>()),
        )),
    }
}

pub use protocol::terminal_safe;

fn sol(lamports: i64) -> String {
    format!("{:.9} SOL", lamports as f64 / 1e9)
}

/// A human summary: totals, agreement, then each payout with its signature.
pub fn render(e: &Earnings) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "validator  {}", terminal_safe(&e.public_key));
    for (label, v) in [
        ("earned", e.earned_lamports),
        ("settling", e.settling_lamports),
        ("unclaimed", e.unclaimed_lamports),
        ("pending", e.pending_lamports),
        ("paid", e.paid_lamports),
        ("failed", e.failed_lamports),
    ] {
        let _ = writeln!(out, "{label:<10} {v:>16} lamports  ({})", sol(v));
    }
    if e.prepaid_lamports > 0 {
        // Only after a restore of the hubs' database: see docs/protocol.md.
        let v = e.prepaid_lamports;
        let _ = writeln!(out, "{:<10} {v:>16} lamports  ({})", "prepaid", sol(v));
    }
    let rate = e
        .agreement
        .rate
        .map(|r| format!("{:.2}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        out,
        "agreement  {rate} ({} agreed, {} disagreed; {} results earned)",
        e.agreement.agreed, e.agreement.disagreed, e.earning_ticks
    );
    if e.payouts.is_empty() {
        let _ = writeln!(out, "payouts    none yet");
    } else {
        let _ = writeln!(out, "payouts (newest first):");
        for p in &e.payouts {
            let _ = writeln!(
                out,
                "  {:<18} {:>14} lamports  {}{}",
                terminal_safe(&p.state),
                p.lamports,
                terminal_safe(p.signature.as_deref().unwrap_or("-")),
                p.last_error
                    .as_deref()
                    .map(|e| format!("  ({})", terminal_safe(e)))
                    .unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_map_to_http_bases() {
        for (hub, base) in [
            ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/"),
            ("wss://hub.example/ws?x=1", "https://hub.example/"),
            ("http://127.0.0.1:9", "http://127.0.0.1:9/"),
        ] {
            assert_eq!(http_base(hub).unwrap().as_str(), base);
        }
        assert!(http_base("ftp://x").is_err());
        assert!(http_base("not a url").is_err());
    }

    /// Everything in the document comes from a hub: an ANSI sequence or a
    /// newline in it must reach the terminal as visible text.
    #[test]
    fn render_escapes_text_from_the_hub() {
        let e: Earnings = serde_json::from_value(serde_json::json!({
            "public_key": "key\u{1b}[2J",
            "earned_lamports": 1, "settling_lamports": 0, "unclaimed_lamports": 0,
            "pending_lamports": 0, "paid_lamports": 0, "failed_lamports": 0,
            "earning_ticks": 1,
            "agreement": {"agreed": 1, "disagreed": 0, "rate": 1.0},
            "payouts": [{
                "id": "0193a1b2-0000-7000-8000-000000000001", "lamports": 1,
                "state": "failed\u{7}", "attempts": 5,
                "signature": "sig\u{1b}]0;title\u{7}",
                "last_error": "boom\nvalidator  FAKE\u{9b}31m",
                "created_at_ms": 1, "paid_at_ms": null
            }]
        }))
        .unwrap();
        let out = render(&e);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(!out.contains("\nvalidator  FAKE"), "{out:?}");
        assert!(out.contains(r"boom\nvalidator  FAKE\u{9b}31m"), "{out:?}");
        assert!(out.contains(r"key\u{1b}[2J"), "{out:?}");
    }
}
