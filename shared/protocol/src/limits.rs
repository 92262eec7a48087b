//! Limits documented in docs/protocol.md, and the rules on field values
//! that go with them. The hub announces the values it enforces in
//! `welcome.limits`; these are the defaults.
//!
//! The `check_*` functions are the one definition of what a hub accepts in a
//! `hello` and a `result`: the hub refuses what they refuse, and a validator
//! or the load tool checks its own settings with the same functions, so the
//! two sides cannot drift apart. Each error says the rule and the value.

use std::ops::RangeInclusive;

use crate::messages::{CheckResult, Hello};

/// Largest text frame either side accepts, in bytes. A bigger frame is
/// answered with `frame_too_large` and the connection is closed (code 1009).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Sustained messages per second a validator may send on one connection.
pub const MAX_MESSAGES_PER_SEC: u32 = 50;
/// Size of the rate limit's token bucket: the most messages at once (the
/// bucket refills at `MAX_MESSAGES_PER_SEC`; not an allowance on top of it).
pub const MESSAGE_BURST: u32 = 100;
/// Time from connect to a valid `hello`.
pub const AUTH_TIMEOUT_MS: u64 = 10_000;
/// How often a validator sends `heartbeat`.
pub const HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// Silence after which the hub closes a session (`heartbeat_timeout`).
pub const HEARTBEAT_TIMEOUT_MS: u64 = 45_000;
/// Longest `error` text in a result, in bytes.
pub const MAX_ERROR_TEXT: usize = 512;
/// Longest region name, in bytes ([`check_region`]).
pub const MAX_REGION_LEN: usize = 32;
/// The characters a region may hold, as docs/protocol.md writes them.
pub const REGION_CHARS: &str = "[a-z0-9-]";
/// Most tags on a hello, and the longest tag ([`check_tags`]).
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 32;
/// The characters a tag may hold, as docs/protocol.md writes them: a
/// region's, plus `_`, `.` and `:` (`isp:hetzner`, `dc.fsn1`).
pub const TAG_CHARS: &str = "[a-z0-9-_.:]";
/// Fewest and most tasks a hello may ask for at once (`hello.capacity`,
/// [`check_capacity`]).
pub const MIN_CAPACITY: u32 = 1;
pub const MAX_CAPACITY: u32 = 1000;
/// Longest client version string, in bytes.
pub const MAX_CLIENT_VERSION_LEN: usize = 64;
/// `result.http_status`, when present ([`check_http_status`]).
pub const HTTP_STATUS_RANGE: RangeInclusive<u16> = 100..=599;
/// Longest `result.latency_ms` (ten minutes, [`check_latency`]).
pub const MAX_LATENCY_MS: u32 = 600_000;
/// Most body bytes a result's evidence hashes (`evidence.body_sha256`).
pub const EVIDENCE_BODY_BYTES: usize = 64 * 1024;
/// Longest `check.keyword`, in bytes. Refused at registration; a validator
/// answers a task with a longer one as a failed check without fetching.
pub const MAX_KEYWORD_LEN: usize = 256;
/// Ports a validator never checks (and a hub never registers): the Fetch
/// standard's "bad ports", where a text protocol (SMTP, IRC, ...) could be
/// fed an HTTP request, as browsers refuse them.
pub const BLOCKED_PORTS: &[u16] = &[
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
    102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427,
    465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990,
    993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667,
    6668, 6669, 6679, 6697, 10080,
];
/// A validator resends a result that has had no `result_ack` this long on
/// the same connection (and after every reconnect), until it is
/// acknowledged or `deadline_ms + RESULT_RESEND_GRACE_MS` has passed.
pub const RESULT_RESEND_MS: u64 = 10_000;
/// How long after a result's deadline a validator keeps it for resending:
/// a result the hub received in time may be acknowledged after the deadline
/// (a database outage). Two minutes, so that an outage of well over the 30 s
/// the hub is built to ride out still loses no result that reached it.
pub const RESULT_RESEND_GRACE_MS: i64 = 120_000;
/// How far a result's `checked_at_ms` may lie outside the task's window
/// (`scheduled_at_ms` .. receive time) before it is `implausible_time`.
pub const CLOCK_SKEW_MS: i64 = 30_000;

/// A field value that breaks a rule of the protocol. The text names the
/// field, states the rule and shows the value (quoted and escaped, so it is
/// safe to log or print); the hub sends it as an `invalid_hello` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("region must be 1-{MAX_REGION_LEN} bytes of {REGION_CHARS}, got {0:?}")]
    Region(String),
    #[error("at most {MAX_TAGS} tags, got {0}")]
    TooManyTags(usize),
    #[error("each tag must be 1-{MAX_TAG_LEN} bytes of {TAG_CHARS}, got {0:?}")]
    Tag(String),
    #[error("capacity must be {MIN_CAPACITY}..={MAX_CAPACITY}, got {0}")]
    Capacity(u32),
    /// The length in bytes.
    #[error("client_version must be at most {MAX_CLIENT_VERSION_LEN} bytes, got {0}")]
    ClientVersion(usize),
    /// The length in bytes.
    #[error("error must be at most {MAX_ERROR_TEXT} bytes, got {0}")]
    ErrorTooLong(usize),
    /// The first control character found.
    #[error("error must hold no control characters, got {0:?}")]
    ErrorControl(char),
    #[error("http_status must be {HTTP_STATUS_RANGE:?}, got {0}")]
    HttpStatus(u16),
    #[error("latency_ms must be at most {MAX_LATENCY_MS}, got {0}")]
    Latency(u32),
    #[error("evidence.body_bytes must be at most {EVIDENCE_BODY_BYTES}, and 0 without body_sha256, got {0}")]
    EvidenceBytes(u32),
    #[error("protocol {0} results must carry evidence")]
    EvidenceMissing(u16),
    #[error("protocol {0} results carry no evidence (it came with protocol 2)")]
    EvidenceUnexpected(u16),
    #[error("payout_address needs protocol 2 (this session speaks {0})")]
    PayoutAddressVersion(u16),
}

/// `hello.region`: 1 to [`MAX_REGION_LEN`] bytes of [`REGION_CHARS`].
pub fn check_region(region: &str) -> Result<(), WireError> {
    if is_name(region, MAX_REGION_LEN, b"") {
        Ok(())
    } else {
        Err(WireError::Region(region.to_string()))
    }
}

/// One of `hello.tags`: 1 to [`MAX_TAG_LEN`] bytes of [`TAG_CHARS`].
pub fn check_tag(tag: &str) -> Result<(), WireError> {
    if is_name(tag, MAX_TAG_LEN, b"_.:") {
        Ok(())
    } else {
        Err(WireError::Tag(tag.to_string()))
    }
}

/// `hello.tags`: at most [`MAX_TAGS`], each passing [`check_tag`]. The
/// count is judged first; then the first bad tag is named.
pub fn check_tags(tags: &[String]) -> Result<(), WireError> {
    if tags.len() > MAX_TAGS {
        return Err(WireError::TooManyTags(tags.len()));
    }
    tags.iter().try_for_each(|t| check_tag(t))
}

/// `hello.capacity`: [`MIN_CAPACITY`]..=[`MAX_CAPACITY`].
pub fn check_capacity(capacity: u32) -> Result<(), WireError> {
    if (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        Ok(())
    } else {
        Err(WireError::Capacity(capacity))
    }
}

/// `hello.client_version`: free text of at most [`MAX_CLIENT_VERSION_LEN`]
/// bytes.
pub fn check_client_version(version: &str) -> Result<(), WireError> {
    if version.len() <= MAX_CLIENT_VERSION_LEN {
        Ok(())
    } else {
        Err(WireError::ClientVersion(version.len()))
    }
}

/// What a session of protocol `version` requires of a result: evidence
/// from protocol 2 on, none before.
pub fn check_result_version(result: &CheckResult, version: u16) -> Result<(), WireError> {
    match (version >= 2, result.evidence.is_some()) {
        (true, false) => Err(WireError::EvidenceMissing(version)),
        (false, true) => Err(WireError::EvidenceUnexpected(version)),
        _ => Ok(()),
    }
}

/// What protocol `version` allows in a hello: a payout address from 2 on.
pub fn check_hello_version(hello: &Hello, version: u16) -> Result<(), WireError> {
    if version < 2 && hello.payout_address.is_some() {
        return Err(WireError::PayoutAddressVersion(version));
    }
    Ok(())
}

/// Every field rule of a hello (not its signature or versions), in the
/// order the hub judges them: region, tags, capacity, client version.
pub fn check_hello(hello: &Hello) -> Result<(), WireError> {
    check_region(&hello.region)?;
    check_tags(&hello.tags)?;
    check_capacity(hello.capacity)?;
    check_client_version(&hello.client_version)
}

/// `result.error`: at most [`MAX_ERROR_TEXT`] bytes and no control character
/// (NUL included, which PostgreSQL text cannot hold).
/// [`clean_error_text`](crate::clean_error_text) makes any text pass.
pub fn check_error_text(error: &str) -> Result<(), WireError> {
    if error.len() > MAX_ERROR_TEXT {
        return Err(WireError::ErrorTooLong(error.len()));
    }
    match error.chars().find(|c| c.is_control()) {
        Some(c) => Err(WireError::ErrorControl(c)),
        None => Ok(()),
    }
}

/// `result.http_status`, when present: within [`HTTP_STATUS_RANGE`].
pub fn check_http_status(status: u16) -> Result<(), WireError> {
    if HTTP_STATUS_RANGE.contains(&status) {
        Ok(())
    } else {
        Err(WireError::HttpStatus(status))
    }
}

/// `result.latency_ms`: at most [`MAX_LATENCY_MS`].
pub fn check_latency(latency_ms: u32) -> Result<(), WireError> {
    if latency_ms <= MAX_LATENCY_MS {
        Ok(())
    } else {
        Err(WireError::Latency(latency_ms))
    }
}

/// The field rules of a result (`invalid_result` when broken): error text,
/// `http_status`, `latency_ms`. Token, signature and times are judged
/// elsewhere (they need keys and clocks).
pub fn check_result(result: &CheckResult) -> Result<(), WireError> {
    if let Some(e) = &result.error {
        check_error_text(e)?;
    }
    if let Some(ev) = &result.evidence {
        let max = EVIDENCE_BODY_BYTES as u32;
        if ev.body_bytes > max || (ev.body_sha256.is_none() && ev.body_bytes > 0) {
            return Err(WireError::EvidenceBytes(ev.body_bytes));
        }
    }
    if let Some(s) = result.http_status {
        check_http_status(s)?;
    }
    check_latency(result.latency_ms)
}

/// 1..=`max` bytes, each a lowercase ASCII letter, a digit, `-` or one of
/// `extra`. Byte-wise: a non-ASCII character never matches.
fn is_name(s: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || extra.contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `check` gives for `value`.
    #[track_caller]
    fn message<T: ?Sized>(check: impl Fn(&T) -> Result<(), WireError>, value: &T) -> String {
        check(value).expect_err("refused").to_string()
    }

    #[test]
    fn regions_are_1_to_32_bytes_of_lowercase_digits_and_dashes() {
        let (longest, too_long) = ("a".repeat(MAX_REGION_LEN), "a".repeat(MAX_REGION_LEN + 1));
        for good in ["eu-west", "a", "0", "-", "us-east-1", &longest] {
            assert_eq!(check_region(good), Ok(()), "{good:?}");
        }
        // The tag-only characters are not region characters.
        let bad = [
            "",
            "EU",
            "eu west",
            "isp:hetzner",
            "eu_west",
            "eu.west",
            "é",
            &too_long,
        ];
        for bad in bad {
            assert_eq!(check_region(bad), Err(WireError::Region(bad.into())));
        }
        assert_eq!(
            message(check_region, "EU WEST!"),
            r#"region must be 1-32 bytes of [a-z0-9-], got "EU WEST!""#
        );
        // The value is escaped, so it cannot forge a log line.
        assert_eq!(
            message(check_region, "eu\nwest"),
            r#"region must be 1-32 bytes of [a-z0-9-], got "eu\nwest""#
        );
    }

    #[test]
    fn tags_may_also_hold_underscores_dots_and_colons() {
        let longest = "a".repeat(MAX_TAG_LEN);
        let too_long = format!("isp:{}", "a".repeat(MAX_TAG_LEN - 3));
        for good in [
            "isp:hetzner",
            "dc.fsn1",
            "tier_2",
            "a-b",
            "0",
            ":",
            &longest,
        ] {
            assert_eq!(check_tag(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "ISP:Hetzner",
            "a b",
            "a/b",
            "a,b",
            "ü",
            "a\tb",
            &too_long,
        ] {
            assert_eq!(check_tag(bad), Err(WireError::Tag(bad.into())));
        }
        assert_eq!(
            message(check_tag, "ISP Hetzner"),
            r#"each tag must be 1-32 bytes of [a-z0-9-_.:], got "ISP Hetzner""#
        );
    }

    #[test]
    fn at_most_16_tags_and_the_first_bad_one_is_named() {
        let tags = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        assert_eq!(check_tags(&[]), Ok(()));
        assert_eq!(check_tags(&tags(MAX_TAGS)), Ok(()));
        assert_eq!(
            message(check_tags, &tags(MAX_TAGS + 1)),
            "at most 16 tags, got 17"
        );
        // The count is judged before the tags.
        let mut many_bad = tags(MAX_TAGS + 1);
        many_bad[0] = "BAD".into();
        assert_eq!(check_tags(&many_bad), Err(WireError::TooManyTags(17)));
        let mixed = ["isp:hetzner", "Bad", "x y"].map(String::from);
        assert_eq!(check_tags(&mixed), Err(WireError::Tag("Bad".into())));
    }

    #[test]
    fn capacity_is_1_to_1000() {
        for good in [1, 8, 1000] {
            assert_eq!(check_capacity(good), Ok(()));
        }
        for bad in [0, 1001, u32::MAX] {
            assert_eq!(check_capacity(bad), Err(WireError::Capacity(bad)));
        }
        assert_eq!(
            message(|c| check_capacity(*c), &0),
            "capacity must be 1..=1000, got 0"
        );
    }

    #[test]
    fn client_version_is_at_most_64_bytes() {
        assert_eq!(check_client_version(""), Ok(()));
        assert_eq!(check_client_version(&"v".repeat(64)), Ok(()));
        assert_eq!(
            message(check_client_version, &"v".repeat(65)),
            "client_version must be at most 64 bytes, got 65"
        );
    }

    #[test]
    fn error_text_is_at_most_512_bytes_without_control_characters() {
        let longest = "é".repeat(MAX_ERROR_TEXT / 2);
        for good in [
            "",
            "connect: connection refused",
            "keyword \"ok\" not found",
            &longest,
        ] {
            assert_eq!(check_error_text(good), Ok(()), "{good:?}");
        }
        assert_eq!(
            message(check_error_text, &format!("{longest}x")),
            "error must be at most 512 bytes, got 513"
        );
        for (bad, c) in [
            ("a\0b", '\0'),
            ("a\nb", '\n'),
            ("\t", '\t'),
            ("\u{1b}[2J", '\u{1b}'),
        ] {
            assert_eq!(check_error_text(bad), Err(WireError::ErrorControl(c)));
        }
        assert_eq!(
            message(check_error_text, "c1 \u{85}"),
            r"error must hold no control characters, got '\u{85}'"
        );
    }

    fn hello() -> Hello {
        Hello {
            public_key: crate::PublicKey([0; 32]),
            region: "eu-west".into(),
            tags: vec!["isp:hetzner".into()],
            capacity: 8,
            client_version: "validator/0.1.0".into(),
            protocol_versions: vec![1],
            payout_address: None,
            signature: crate::Signature([0; 64]),
        }
    }

    #[test]
    fn a_hello_is_judged_region_tags_capacity_then_client_version() {
        assert_eq!(check_hello(&hello()), Ok(()));
        let mut h = hello();
        h.client_version = "v".repeat(65);
        assert_eq!(check_hello(&h), Err(WireError::ClientVersion(65)));
        h.capacity = 0;
        assert_eq!(check_hello(&h), Err(WireError::Capacity(0)));
        h.tags = vec!["ISP".into()];
        assert_eq!(check_hello(&h), Err(WireError::Tag("ISP".into())));
        h.region = "EU".into();
        assert_eq!(check_hello(&h), Err(WireError::Region("EU".into())));
    }

    fn result() -> CheckResult {
        let task = crate::Task {
            task_id: uuid::Uuid::nil(),
            website_id: 1,
            round_id: 2,
            slot: 3,
            scheduled_at_ms: 4,
            url: "https://example.com/".into(),
            check: crate::CheckSpec {
                timeout_ms: 1_000,
                expected_status: crate::StatusRange::DEFAULT,
                keyword: None,
                follow_redirects: false,
            },
            validator: crate::PublicKey([0; 32]),
            deadline_ms: 5,
            token: crate::TaskToken {
                kid: "k1".into(),
                mac: [0; 32],
            },
        };
        CheckResult::for_task(&task, crate::CheckStatus::Up, Some(200), 87, None, 4)
    }

    #[test]
    fn a_result_is_judged_on_error_status_and_latency() {
        assert_eq!(check_result(&result()), Ok(()));
        let mut r = result();
        r.latency_ms = MAX_LATENCY_MS + 1;
        assert_eq!(check_result(&r), Err(WireError::Latency(600_001)));
        r.http_status = Some(600);
        assert_eq!(check_result(&r), Err(WireError::HttpStatus(600)));
        r.http_status = None;
        r.error = Some("a\0b".into());
        assert_eq!(check_result(&r), Err(WireError::ErrorControl('\0')));
        assert!(!r.text_is_valid());
        // `for_task` cleans its error text, so a result it builds passes.
        let mut task_result = result();
        task_result.error = Some(crate::clean_error_text(&"\n".repeat(600)));
        assert_eq!(check_result(&task_result), Ok(()));
    }

    #[test]
    fn http_status_and_latency() {
        for good in [100, 200, 599] {
            assert_eq!(check_http_status(good), Ok(()));
        }
        for bad in [0, 99, 600, u16::MAX] {
            assert_eq!(check_http_status(bad), Err(WireError::HttpStatus(bad)));
        }
        assert_eq!(
            message(|s| check_http_status(*s), &99),
            "http_status must be 100..=599, got 99"
        );
        assert_eq!(check_latency(0), Ok(()));
        assert_eq!(check_latency(MAX_LATENCY_MS), Ok(()));
        assert_eq!(
            message(|l| check_latency(*l), &600_001),
            "latency_ms must be at most 600000, got 600001"
        );
    }
}
