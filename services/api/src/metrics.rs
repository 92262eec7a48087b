//! Prometheus metrics, prefixed `uptime_api_`, served at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// By route template (e.g. `/v1/websites/{id}`), method and status.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Requests refused with 429, by which limit (`ip`, `caller`, `auth`).
    pub rate_limited: IntCounterVec,
    /// Failed authentications, by kind (`key`, `session`, `password`).
    pub auth_failures: IntCounterVec,
    /// Alert delivery attempts, by channel kind and outcome (`delivered`,
    /// `retry`, `dead`).
    pub alert_attempts: IntCounterVec,
    /// Outbox rows by state (`pending`, `dead`), read every 30 s.
    pub alert_outbox: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("uptime_api".into()), None).expect("valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time to answer, by route.").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            ),
            &["route"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused with 429, by limit."),
            &["limit"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "Failed authentications, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let alert_attempts = IntCounterVec::new(
            Opts::new(
                "alert_attempts_total",
                "Alert delivery attempts, by channel kind and outcome.",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let alert_outbox = IntGaugeVec::new(
            Opts::new(
                "alert_outbox",
                "Alert deliveries waiting or given up, by state.",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(alert_outbox.clone()))
            .expect("unique metric");
        for c in [&requests, &rate_limited, &auth_failures, &alert_attempts] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Self {
            registry,
            requests,
            request_seconds,
            rate_limited,
            auth_failures,
            alert_attempts,
            alert_outbox,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of valid metrics");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
