//! Alert delivery: the worker that drains the outbox, and how each kind of
//! channel is sent to.
//!
//! The worker claims due deliveries with a lease ([`Store::claim_alerts`]),
//! sends them with no transaction open, and records each outcome; a failed
//! attempt is retried with exponential backoff and jitter until
//! `max_attempts`, then the row is `dead` (visible in the delivery log).
//! Delivery is at least once: a worker that stalls past its lease may see
//! its row sent again by another, with the same idempotency key.
//!
//! Webhooks, Slack and Discord go through [`runtime::guard`]: a target that
//! resolves to a private address is refused at send time too, not only
//! when the channel is created. Redirects are not followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use protocol::target::TargetPolicy;
use serde_json::{json, Value};
use sha2::Sha256;
use store::{AlertOutcome, ChannelKind, ClaimedAlert, Store};
use tokio_util::sync::CancellationToken;

use crate::config::{AlertSettings, SmtpSettings};
use crate::metrics::Metrics;

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub delivered: bool,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// Retrying cannot help (the target is refused by the address guard).
    pub permanent: bool,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    fn ok(status: Option<i32>) -> Self {
        Self {
            delivered: true,
            status,
            error: None,
            permanent: false,
            retry_after: None,
        }
    }

    fn failed(error: impl Into<String>) -> Self {
        Self {
            delivered: false,
            status: None,
            error: Some(error.into()),
            permanent: false,
            retry_after: None,
        }
    }
}

/// Sends one delivery to its channel.
pub struct Deliverer {
    http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, lettre::message::Mailbox)>,
    policy: TargetPolicy,
    timeout: Duration,
}

/// The user agent of alert requests.
const USER_AGENT: &str = concat!("uptime-alerts/", env!("CARGO_PKG_VERSION"));

impl Deliverer {
    pub fn new(settings: &AlertSettings, allow_private: bool) -> anyhow::Result<Self> {
        let policy = TargetPolicy::new(allow_private);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(runtime::guard::GuardedResolver { policy }))
            .redirect(reqwest::redirect::Policy::none())
            // Through a proxy the name would be resolved by the proxy, past
            // the guard: alerts go direct, as the validator's checks do.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .user_agent(USER_AGENT)
            .build()?;
        let smtp = settings.smtp.as_ref().map(smtp_transport).transpose()?;
        Ok(Self {
            http,
            smtp,
            policy,
            timeout: settings.timeout,
        })
    }

    /// Whether email channels can be delivered here.
    pub fn has_smtp(&self) -> bool {
        self.smtp.is_some()
    }

    pub async fn deliver(&self, a: &ClaimedAlert) -> Attempt {
        let payload: Value = serde_json::from_str(&a.payload).unwrap_or(Value::Null);
        match a.kind {
            ChannelKind::Webhook => {
                let mut body = payload;
                if let Value::Object(m) = &mut body {
                    m.insert(
                        "idempotency_key".into(),
                        Value::String(a.idempotency_key.to_string()),
                    );
                }
                let body = body.to_string();
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let sig = sign(a.secret.as_deref().unwrap_or(""), t, &body);
                self.post(a, body, Some(format!("t={t},v1={sig}"))).await
            }
            ChannelKind::Slack => {
                let body = json!({ "text": summary(&a.event, &payload) }).to_string();
                self.post(a, body, None).await
            }
            ChannelKind::Discord => {
                let body = json!({
                    "content": summary(&a.event, &payload),
                    "allowed_mentions": { "parse": [] },
                })
                .to_string();
                self.post(a, body, None).await
            }
            ChannelKind::Email => self.email(a, &payload).await,
        }
    }

    async fn post(&self, a: &ClaimedAlert, body: String, signature: Option<String>) -> Attempt {
        let url = match url::Url::parse(&a.target) {
            Ok(u) => u,
            Err(e) => {
                return Attempt {
                    permanent: true,
                    ..Attempt::failed(format!("the target is not a URL: {e}"))
                }
            }
        };
        if let Err(e) = self.policy.check_url(&url) {
            let why = match e {
                runtime::guard::Refused::Port(p) => format!("port {p} is refused"),
                runtime::guard::Refused::Address(_) => {
                    "the target is a private/loopback/link-local address".into()
                }
            };
            return Attempt {
                permanent: true,
                ..Attempt::failed(format!("target refused: {why}"))
            };
        }
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Idempotency-Key", a.idempotency_key.to_string())
            .header("X-Alert-Event", a.event.as_str())
            .body(body);
        if let Some(s) = signature {
            req = req.header("X-Signature", s);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if status.is_success() {
                    Attempt::ok(Some(i32::from(status.as_u16())))
                } else {
                    Attempt {
                        status: Some(i32::from(status.as_u16())),
                        retry_after,
                        ..Attempt::failed(format!("the receiver answered {status}"))
                    }
                }
            }
            Err(e) => {
                let refused = std::iter::successors(std::error::Error::source(&e), |c| c.source())
                    .any(|c| c.downcast_ref::<runtime::guard::Refused>().is_some());
                Attempt {
                    permanent: refused,
                    ..Attempt::failed(describe(&e))
                }
            }
        }
    }

    async fn email(&self, a: &ClaimedAlert, payload: &Value) -> Attempt {
        let Some((transport, from)) = &self.smtp else {
            return Attempt::failed("email is not configured on this server (API_SMTP_URL)");
        };
        let to = match a.target.parse::<lettre::message::Mailbox>() {
            Ok(to) => to,
            Err(e) => {
                return Attempt {
                    permanent: true,
                    ..Attempt::failed(format!("not an email address: {e}"))
                }
            }
        };
        let text = summary(&a.event, payload);
        let subject = text.lines().next().unwrap_or("uptime alert").to_string();
        let body = format!(
            "{text}\n\n{}\n\nIdempotency key: {}\n",
            serde_json::to_string_pretty(payload).unwrap_or_default(),
            a.idempotency_key
        );
        let msg = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            // Every attempt carries the same Message-ID: mail systems (and
            // the tests' sink) dedupe on it.
            .message_id(Some(format!("<{}@uptime-alerts>", a.idempotency_key)))
            .header(ContentType::TEXT_PLAIN)
            .body(body);
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                return Attempt {
                    permanent: true,
                    ..Attempt::failed(format!("building the email failed: {e}"))
                }
            }
        };
        match tokio::time::timeout(self.timeout, transport.send(msg)).await {
            Ok(Ok(r)) => Attempt::ok(Some(i32::from(u16::from(r.code())))),
            Ok(Err(e)) => Attempt {
                permanent: e.is_permanent(),
                status: e.status().map(|c| i32::from(u16::from(c))),
                ..Attempt::failed(format!("smtp: {e}"))
            },
            Err(_) => Attempt::failed("smtp: timed out"),
        }
    }
}

fn smtp_transport(
    s: &SmtpSettings,
) -> anyhow::Result<(AsyncSmtpTransport<Tokio1Executor>, lettre::message::Mailbox)> {
    let mut url =
        url::Url::parse(&s.url).map_err(|_| anyhow::anyhow!("API_SMTP_URL is not a URL"))?;
    // STARTTLS is required unless the URL says otherwise; `tls=none` is
    // lettre's plain `smtp://` (no `tls` at all).
    if url.scheme() == "smtp" {
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "tls")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !others.is_empty() {
            url.query_pairs_mut().extend_pairs(others);
        }
        match tls.as_deref() {
            Some("none") => {}
            Some(mode) => {
                url.query_pairs_mut().append_pair("tls", mode);
            }
            None => {
                url.query_pairs_mut().append_pair("tls", "required");
            }
        }
    }
    let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str())
        // lettre's message may quote the URL: not shown.
        .map_err(|_| anyhow::anyhow!("API_SMTP_URL is not a usable SMTP URL"))?
        .build();
    Ok((t, s.from.clone()))
}

/// A reqwest error without the URL (a webhook URL is a credential) and
/// without the addresses a refused name resolved to.
fn describe(e: &reqwest::Error) -> String {
    let mut s = String::from(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    });
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        if c.downcast_ref::<runtime::guard::Refused>().is_some() {
            s.push_str(": the target resolves only to private/loopback/link-local addresses");
            break;
        }
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// `X-Signature`'s `v1`: hex HMAC-SHA256 under the channel's secret of
/// `"{t}.{body}"`, `t` the Unix time in seconds.
pub fn sign(secret: &str, t: u64, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// One line (then details) for people: Slack, Discord, email subjects.
pub fn summary(event: &str, p: &Value) -> String {
    let site = &p["site"];
    let name = site["name"]
        .as_str()
        .or_else(|| site["url"].as_str())
        .unwrap_or("a website");
    let url = site["url"].as_str().unwrap_or("");
    match event {
        "incident_opened" => {
            let regions: Vec<String> = p["incident"]["regions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            let what = r["error"]
                                .as_str()
                                .map(str::to_string)
                                .or_else(|| r["http_status"].as_i64().map(|s| format!("HTTP {s}")))
                                .unwrap_or_else(|| "down".into());
                            format!("{}: {what}", r["region"].as_str().unwrap_or("?"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "DOWN: {name} ({url}) is down since {}.\n{}",
                p["incident"]["started_at"].as_str().unwrap_or("?"),
                regions.join("\n")
            )
        }
        "incident_resolved" => format!(
            "UP: {name} ({url}) is up again after {}.",
            human_secs(p["incident"]["duration_secs"].as_f64().unwrap_or(0.0))
        ),
        "degradation_opened" => format!(
            "DEGRADED: {name} ({url}) looks down from {} while the other regions see it up.",
            p["degradation"]["region"].as_str().unwrap_or("one region")
        ),
        "degradation_ended" => format!(
            "RECOVERED: {name} ({url}) is reachable from {} again.",
            p["degradation"]["region"].as_str().unwrap_or("the region")
        ),
        "latency_high" => format!(
            "SLOW: {name} ({url}) answered in {} ms (median), above its {} ms threshold, for {} rounds.",
            p["latency"]["median_ms"],
            p["latency"]["threshold_ms"],
            p["latency"]["rounds"]
        ),
        "latency_normal" => format!(
            "FAST AGAIN: {name} ({url}) answers in {} ms (median), under its {} ms threshold.",
            p["latency"]["median_ms"], p["latency"]["threshold_ms"]
        ),
        "test" => "TEST: this channel receives uptime alerts.".to_string(),
        other => format!("{other}: {name} ({url})"),
    }
}

fn human_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The delay before attempt `attempts + 1`: `base` doubled per attempt,
/// with jitter, at most `max` (and at least the receiver's `Retry-After`,
/// itself capped at `max`).
pub fn retry_delay(
    attempts: i32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    use backon::BackoffBuilder;
    let n = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(n + 1)
        .build()
        .nth(n)
        .unwrap_or(max);
    backoff
        .max(retry_after.unwrap_or_default().min(max))
        .min(max)
}

/// What a finished attempt writes.
pub fn outcome(a: &Attempt, attempts: i32, s: &AlertSettings) -> AlertOutcome {
    if a.delivered {
        return AlertOutcome::Delivered { status: a.status };
    }
    let error = a.error.clone().unwrap_or_else(|| "failed".into());
    if a.permanent || attempts >= s.max_attempts {
        AlertOutcome::Dead {
            error,
            status: a.status,
        }
    } else {
        AlertOutcome::Retry {
            after: retry_delay(attempts, s.retry_base, s.retry_max, a.retry_after),
            error,
            status: a.status,
        }
    }
}

/// Drains the outbox until `stop`: keeps up to `workers` deliveries in
/// flight, claiming more as each finishes; when nothing is due, sleeps
/// until the next row is due or a new one is announced. Also deletes old
/// finished rows and keeps the backlog gauges. Deliveries in flight when
/// `stop` comes are finished (each is bounded by the attempt timeout).
pub async fn run(
    store: Store,
    deliverer: Arc<Deliverer>,
    settings: AlertSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut listener = None;
    let mut chores_at = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut backoff = Duration::ZERO;
    while !stop.is_cancelled() {
        if Instant::now() >= chores_at {
            chores_at = Instant::now() + Duration::from_secs(30);
            chores(&store, &settings, &metrics).await;
        }
        if listener.is_none() {
            listener = store.listen_alerts().await.ok();
        }
        while in_flight.try_join_next().is_some() {}
        let free = settings.workers.saturating_sub(in_flight.len());
        let mut claimed = 0;
        if free > 0 && backoff.is_zero() {
            match store.claim_alerts(settings.lease, free as i64).await {
                Ok(rows) => {
                    claimed = rows.len();
                    for a in rows {
                        let (store, deliverer, settings, metrics) = (
                            store.clone(),
                            deliverer.clone(),
                            settings.clone(),
                            metrics.clone(),
                        );
                        in_flight.spawn(async move {
                            deliver_one(&store, &deliverer, &settings, &metrics, &a).await
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming alert deliveries failed");
                    backoff = Duration::from_secs(1);
                }
            }
        }
        if claimed > 0 && in_flight.len() < settings.workers {
            continue;
        }
        // Full, or nothing due: wait for a slot, a due time or a new row.
        let wait = if !backoff.is_zero() {
            std::mem::take(&mut backoff)
        } else if in_flight.len() >= settings.workers {
            Duration::from_secs(30)
        } else {
            match store.next_alert_due().await {
                Ok(Some(d)) => d.clamp(Duration::from_millis(20), Duration::from_secs(30)),
                Ok(None) => Duration::from_secs(30),
                Err(_) => Duration::from_secs(1),
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            r = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if r.is_err() {
                    listener = None;
                }
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

async fn chores(store: &Store, settings: &AlertSettings, metrics: &Metrics) {
    match store.alert_backlog().await {
        Ok((pending, dead)) => {
            metrics
                .alert_outbox
                .with_label_values(&["pending"])
                .set(pending);
            metrics.alert_outbox.with_label_values(&["dead"]).set(dead);
        }
        Err(e) => tracing::warn!(error = %e, "reading the alert backlog failed"),
    }
    match store
        .clean_alert_outbox(settings.keep_delivered, settings.keep_dead, 10_000)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "old alert deliveries deleted"),
        Err(e) => tracing::warn!(error = %e, "deleting old alert deliveries failed"),
    }
}

async fn deliver_one(
    store: &Store,
    deliverer: &Deliverer,
    settings: &AlertSettings,
    metrics: &Metrics,
    a: &ClaimedAlert,
) {
    let attempt = deliverer.deliver(a).await;
    let outcome = outcome(&attempt, a.attempts, settings);
    let label = match &outcome {
        AlertOutcome::Delivered { .. } => "delivered",
        AlertOutcome::Retry { .. } => "retry",
        AlertOutcome::Dead { .. } => "dead",
    };
    metrics
        .alert_attempts
        .with_label_values(&[a.kind.as_str(), label])
        .inc();
    match &outcome {
        AlertOutcome::Delivered { .. } => {
            tracing::info!(delivery = a.id.0, channel = a.channel_id.0, event = %a.event, attempts = a.attempts, "alert delivered")
        }
        AlertOutcome::Retry { after, error, .. } => {
            tracing::info!(delivery = a.id.0, channel = a.channel_id.0, event = %a.event, attempts = a.attempts, %error, retry_in_ms = after.as_millis() as u64, "alert delivery failed; will retry")
        }
        AlertOutcome::Dead { error, .. } => {
            tracing::warn!(delivery = a.id.0, channel = a.channel_id.0, event = %a.event, attempts = a.attempts, %error, "alert delivery given up")
        }
    }
    match store.finish_alert(a.id, a.claim_token, &outcome).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(
                delivery = a.id.0,
                "alert claim lost (lease ran out); the other worker's outcome counts"
            )
        }
        // The lease runs out and the row is claimed again: at least once.
        Err(e) => {
            tracing::warn!(delivery = a.id.0, error = %e, "recording an alert outcome failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn retries_back_off_within_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 1..20 {
            let d = retry_delay(attempt, base, max, None);
            assert!(d <= max, "{attempt}: {d:?}");
            assert!(d >= base.min(max), "{attempt}: {d:?}");
        }
        assert!(retry_delay(8, base, max, None) >= Duration::from_secs(6));
        assert_eq!(
            retry_delay(1, base, max, Some(Duration::from_secs(60))),
            max,
            "Retry-After is honoured up to the cap"
        );
    }
}
