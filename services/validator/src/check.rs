//! One HTTP(S) check: fetch the URL, judge the response against the spec,
//! and describe a failure in a short human sentence.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::limits::{EVIDENCE_BODY_BYTES, MAX_ERROR_TEXT, MAX_KEYWORD_LEN};
use protocol::{CheckSpec, CheckStatus, Digest, Evidence};
use reqwest::redirect;

use crate::guard::{GuardedResolver, Refused, ResolveFailed, TargetPolicy};

/// At most this much of a body is read (and searched for the keyword).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Redirects followed when the spec asks to follow them.
pub const MAX_REDIRECTS: usize = 5;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: CheckStatus,
    pub http_status: Option<u16>,
    /// Until the response was complete (or the check gave up).
    pub latency_ms: u32,
    /// Why it is down; at most `MAX_ERROR_TEXT` bytes.
    pub error: Option<String>,
    /// What the check saw (protocol 2): a digest of the first
    /// `EVIDENCE_BODY_BYTES` of the final body and the address it came from.
    pub evidence: Evidence,
}

/// No response, no connection.
const NO_EVIDENCE: Evidence = Evidence {
    body_sha256: None,
    body_bytes: 0,
    remote_ip: None,
};

/// Runs checks. Cheap to share: the two clients are reference-counted.
#[derive(Debug, Clone)]
pub struct Checker {
    /// Reports a redirect as the response it is.
    direct: reqwest::Client,
    /// Follows up to [`MAX_REDIRECTS`], vetting every hop.
    follow: reqwest::Client,
    policy: TargetPolicy,
}

#[derive(Debug, thiserror::Error)]
#[error("too many redirects (more than {MAX_REDIRECTS})")]
struct TooManyRedirects;

#[derive(Debug, thiserror::Error)]
#[error("redirect to unsupported scheme {0:?}")]
struct BadRedirectScheme(String);

impl Checker {
    pub fn new(allow_private: bool) -> Self {
        Self::with_user_agent(allow_private, &crate::config::default_user_agent())
    }

    /// # Panics
    /// If `user_agent` is not a valid header value (config validation rules
    /// that out) or the TLS backend cannot start.
    pub fn with_user_agent(allow_private: bool, user_agent: &str) -> Self {
        Self::with_policy(TargetPolicy::new(allow_private), user_agent)
    }

    pub(crate) fn with_policy(policy: TargetPolicy, user_agent: &str) -> Self {
        let follow_policy = redirect::Policy::custom(move |attempt| {
            // `previous` starts with the original URL, so this allows exactly
            // MAX_REDIRECTS hops.
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(TooManyRedirects);
            }
            let scheme = attempt.url().scheme();
            if scheme != "http" && scheme != "https" {
                let scheme = scheme.to_string();
                return attempt.error(BadRedirectScheme(scheme));
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        let build = |redirects| {
            reqwest::Client::builder()
                .user_agent(user_agent)
                .redirect(redirects)
                .dns_resolver(Arc::new(GuardedResolver { policy }))
                // A proxy would resolve the name itself, out of the guard's sight.
                .no_proxy()
                // Fresh connections: a check measures connect and TLS time too,
                // and a pooled socket would hide a site that stopped accepting.
                .pool_max_idle_per_host(0)
                .tcp_nodelay(true)
                .build()
                .expect("reqwest client with rustls builds")
        };
        Self {
            direct: build(redirect::Policy::none()),
            follow: build(follow_policy),
            policy,
        }
    }

    pub async fn run(&self, url: &str, spec: &CheckSpec) -> Outcome {
        // Hubs refuse such keywords at registration; one that gets here
        // anyway is the task's fault, reported the same by every validator.
        if let Some(k) = spec
            .keyword
            .as_deref()
            .filter(|k| k.len() > MAX_KEYWORD_LEN)
        {
            return Outcome {
                status: CheckStatus::Down,
                http_status: None,
                latency_ms: 0,
                error: Some(format!(
                    "keyword is {} bytes; at most {MAX_KEYWORD_LEN} are checked",
                    k.len()
                )),
                evidence: NO_EVIDENCE,
            };
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
        let (http_status, result, evidence) =
            match tokio::time::timeout(timeout, self.fetch(url, spec)).await {
                Ok(r) => r,
                Err(_) => (
                    None,
                    Err(format!("timeout after {} ms", spec.timeout_ms)),
                    NO_EVIDENCE,
                ),
            };
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        match result {
            Ok(()) => Outcome {
                status: CheckStatus::Up,
                http_status,
                latency_ms,
                error: None,
                evidence,
            },
            Err(e) => Outcome {
                status: CheckStatus::Down,
                http_status,
                latency_ms,
                error: Some(truncate(e, MAX_ERROR_TEXT)),
                evidence,
            },
        }
    }

    /// The HTTP status if one arrived, why the check failed if it did, and
    /// what it saw.
    async fn fetch(
        &self,
        url: &str,
        spec: &CheckSpec,
    ) -> (Option<u16>, Result<(), String>, Evidence) {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return (None, Err(format!("invalid url: {e}")), NO_EVIDENCE),
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return (
                None,
                Err(format!("unsupported scheme {:?}", parsed.scheme())),
                NO_EVIDENCE,
            );
        }
        if let Err(refused) = self.policy.check_url(&parsed) {
            return (None, Err(refused.to_string()), NO_EVIDENCE);
        }
        let client = if spec.follow_redirects {
            &self.follow
        } else {
            &self.direct
        };
        let mut resp = match client.get(parsed).send().await {
            Ok(r) => r,
            Err(e) => return (None, Err(describe(&e)), NO_EVIDENCE),
        };
        let code = resp.status().as_u16();
        let remote_ip = resp.remote_addr().map(|a| a.ip().to_canonical());
        let mut hashed = sha2::Sha256::default();
        let mut hashed_len = 0usize;
        // An empty keyword is trivially present; treat it as none.
        let keyword = spec.keyword.as_deref().filter(|k| !k.is_empty());
        let mut body = Vec::new();
        let mut read = 0usize;
        // Read to the end (up to the cap) so latency covers the whole response.
        while read < MAX_BODY_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(MAX_BODY_BYTES - read);
                    let hash = chunk.len().min(EVIDENCE_BODY_BYTES - hashed_len);
                    if hash > 0 {
                        sha2::Digest::update(&mut hashed, &chunk[..hash]);
                        hashed_len += hash;
                    }
                    read += take;
                    if keyword.is_some() {
                        body.extend_from_slice(&chunk[..take]);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let evidence = Evidence {
                        body_sha256: None,
                        body_bytes: 0,
                        remote_ip,
                    };
                    return (Some(code), Err(describe(&e)), evidence);
                }
            }
        }
        let evidence = Evidence {
            body_sha256: Some(Digest(sha2::Digest::finalize(hashed).into())),
            body_bytes: hashed_len as u32,
            remote_ip,
        };
        let expected = spec.expected_status;
        if !expected.contains(code) {
            return (
                Some(code),
                Err(format!(
                    "status {code} not in {}-{}",
                    expected.min, expected.max
                )),
                evidence,
            );
        }
        if let Some(k) = keyword {
            if memchr::memmem::find(&body, k.as_bytes()).is_none() {
                return (
                    Some(code),
                    Err(format!("keyword {k:?} not found")),
                    evidence,
                );
            }
        }
        (Some(code), Ok(()), evidence)
    }
}

/// A short sentence for a failed request, from the most telling error in
/// reqwest's chain of causes.
fn describe(e: &reqwest::Error) -> String {
    let mut innermost: &dyn StdError = e;
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return r.to_string();
        }
        if let Some(r) = c.downcast_ref::<ResolveFailed>() {
            return r.to_string();
        }
        if c.is::<TooManyRedirects>() || c.is::<BadRedirectScheme>() {
            return c.to_string();
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                ConnectionReset => return "connection reset".into(),
                ConnectionAborted => return "connection aborted".into(),
                UnexpectedEof => return "connection closed early".into(),
                _ => {}
            }
        }
        innermost = c;
        cur = c.source();
    }
    let what = if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "reading body failed"
    } else if e.is_redirect() {
        "redirect failed"
    } else {
        "request failed"
    };
    format!("{what}: {innermost}")
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("abc".into(), 10), "abc");
        assert_eq!(
            truncate("é".repeat(400), MAX_ERROR_TEXT).len(),
            MAX_ERROR_TEXT
        );
    }
}

/// Against a real HTTP server on loopback.
#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
