//! Every frame on the wire. Frames are JSON text with a `type` field;
//! times are Unix milliseconds; keys and signatures are base58.
//!
//! Validator -> hub messages refuse unknown fields (a hub stores what it
//! verified, nothing else); hub -> validator messages ignore them, so a
//! newer hub can add optional fields without breaking older validators.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{Digest, Nonce, PublicKey, Signature, TaskToken, TokenFields};

/// Hub -> validator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMessage {
    Challenge(Challenge),
    Welcome(Welcome),
    HeartbeatAck(HeartbeatAck),
    Task(Task),
    ResultAck(ResultAck),
    Error(ErrorFrame),
    Reconnect(Reconnect),
}

/// Validator -> hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ValidatorMessage {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Result(CheckResult),
}

/// First frame on every connection: the validator must sign `nonce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Challenge {
    pub nonce: Nonce,
    pub hub_id: String,
    /// Versions this hub speaks.
    pub protocol_versions: Vec<u16>,
    pub server_time_ms: i64,
}

/// The validator's answer to the challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub public_key: PublicKey,
    /// Where the validator runs, e.g. `eu-west`. 1..=32 bytes of `[a-z0-9-]`.
    pub region: String,
    /// Labels such as `isp:hetzner`: at most 16, each 1..=32 bytes of
    /// `[a-z0-9-_.:]`. Optional: absent and `null` both mean no tags.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schemars(with = "Option<Vec<String>>")]
    pub tags: Vec<String>,
    /// Most checks it runs at once (1..=1000).
    pub capacity: u32,
    pub client_version: String,
    /// Versions this validator speaks.
    pub protocol_versions: Vec<u16>,
    /// Protocol 2: the account its earnings are paid to, when not
    /// `public_key` (so the key on the server does not hold the earnings).
    /// One validator's alone: a hub refuses an address another validator
    /// uses. Absent: paid to `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_address: Option<PublicKey>,
    /// Over `hello_signing_bytes(nonce, hello)`.
    pub signature: Signature,
}

/// Reads `null` as an empty list, as the protocol reads `null` as absent.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Limits the hub enforces on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    pub max_frame_bytes: u32,
    pub max_messages_per_sec: u32,
    pub message_burst: u32,
    pub auth_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Welcome {
    pub validator_id: i64,
    pub protocol_version: u16,
    pub hub_id: String,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub seq: u64,
    /// Checks running now.
    pub in_flight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatAck {
    pub seq: u64,
    pub server_time_ms: i64,
}

/// Inclusive range of HTTP status codes that count as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    /// 2xx and 3xx.
    pub const DEFAULT: Self = Self { min: 200, max: 399 };

    pub fn contains(&self, code: u16) -> bool {
        (self.min..=self.max).contains(&code)
    }
}

/// How to check a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckSpec {
    /// Whole-request timeout.
    pub timeout_ms: u32,
    pub expected_status: StatusRange,
    /// If set, the body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// Follow up to 5 redirects (each target is checked like the URL).
    pub follow_redirects: bool,
}

/// One check to run and report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub task_id: Uuid,
    pub website_id: i64,
    pub round_id: i64,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    pub url: String,
    pub check: CheckSpec,
    /// The validator the task is assigned to (the token binds it).
    pub validator: PublicKey,
    /// Absolute, judged by the hub's clock: a result received later is rejected.
    pub deadline_ms: i64,
    pub token: TaskToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Up,
    Down,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// A signed check result. It repeats the task's identifying fields and token
/// so that any hub can verify it without knowing the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub task_id: Uuid,
    pub website_id: i64,
    pub round_id: i64,
    pub slot: i64,
    pub scheduled_at_ms: i64,
    pub deadline_ms: i64,
    pub validator: PublicKey,
    pub token: TaskToken,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub latency_ms: u32,
    /// Why it is down, at most 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checked_at_ms: i64,
    /// Protocol 2: what the check saw, under the signature. Required on a
    /// protocol 2 session, refused on a protocol 1 one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Over `result_signing_bytes(result)`.
    pub signature: Signature,
}

/// Evidence that a check was made (protocol 2): hubs compare it across the
/// validators of a round and with what they know a page serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// SHA-256 of the first `body_bytes` bytes of the final response's body
    /// (after redirects): at most `EVIDENCE_BODY_BYTES` (65,536), fewer
    /// only when the body is shorter. `null` when no response arrived.
    pub body_sha256: Option<Digest>,
    /// How many bytes were hashed; 0 when `body_sha256` is `null`.
    pub body_bytes: u32,
    /// The address the final request was sent to (after DNS), e.g.
    /// `93.184.216.34` or `2606:2800::1`; `null` when no connection was made.
    #[schemars(with = "Option<String>")]
    pub remote_ip: Option<std::net::IpAddr>,
}

impl Task {
    /// A representative task for `validator` (an HTTPS health check), its
    /// token issued by `keyring`; `n` varies its ids. What the signature
    /// benchmark (`benches/verify.rs`) and the load tool's yardstick
    /// (`loadtest/src/calibrate.rs`) verify results of, so both time the
    /// same bytes.
    pub fn sample(keyring: &crate::Keyring, validator: PublicKey, n: i64, now_ms: i64) -> Self {
        let task_id = Uuid::new_v4();
        let (website_id, round_id, slot) = (1_000 + n, 50_000 + n, 1_754_000_000 + n);
        let deadline_ms = now_ms + 30_000;
        let token = keyring.issue(&TokenFields {
            task_id,
            website_id,
            round_id,
            slot,
            scheduled_at_ms: now_ms,
            validator: &validator,
            deadline_ms,
        });
        Self {
            task_id,
            website_id,
            round_id,
            slot,
            scheduled_at_ms: now_ms,
            url: "https://example.com/health".into(),
            check: CheckSpec {
                timeout_ms: 10_000,
                expected_status: StatusRange::DEFAULT,
                keyword: None,
                follow_redirects: true,
            },
            validator,
            deadline_ms,
            token,
        }
    }

    /// What this task's token binds.
    pub fn token_fields(&self) -> TokenFields<'_> {
        TokenFields {
            task_id: self.task_id,
            website_id: self.website_id,
            round_id: self.round_id,
            slot: self.slot,
            scheduled_at_ms: self.scheduled_at_ms,
            validator: &self.validator,
            deadline_ms: self.deadline_ms,
        }
    }
}

impl CheckResult {
    /// What the token this result carries must bind.
    pub fn token_fields(&self) -> TokenFields<'_> {
        TokenFields {
            task_id: self.task_id,
            website_id: self.website_id,
            round_id: self.round_id,
            slot: self.slot,
            scheduled_at_ms: self.scheduled_at_ms,
            validator: &self.validator,
            deadline_ms: self.deadline_ms,
        }
    }

    /// A result for `task`, unsigned (all-zero signature) until `sign_result`.
    pub fn for_task(
        task: &Task,
        status: CheckStatus,
        http_status: Option<u16>,
        latency_ms: u32,
        error: Option<String>,
        checked_at_ms: i64,
    ) -> Self {
        Self {
            task_id: task.task_id,
            website_id: task.website_id,
            round_id: task.round_id,
            slot: task.slot,
            scheduled_at_ms: task.scheduled_at_ms,
            deadline_ms: task.deadline_ms,
            validator: task.validator,
            token: task.token.clone(),
            status,
            http_status,
            latency_ms,
            error: error.map(|e| clean_error_text(&e)),
            checked_at_ms,
            evidence: None,
            signature: Signature([0; 64]),
        }
    }

    /// Whether every free-text field may be stored and shown: `error` passes
    /// [`check_error_text`](crate::limits::check_error_text). Part of
    /// [`check_result`](crate::limits::check_result), which also judges
    /// `http_status` and `latency_ms`.
    pub fn text_is_valid(&self) -> bool {
        self.error
            .as_deref()
            .is_none_or(|e| crate::limits::check_error_text(e).is_ok())
    }
}

/// No control characters (C0 with NUL, tab and newline; DEL; C1).
pub fn is_clean_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// `s` made safe for a terminal: control characters (C0, DEL, C1: ESC
/// sequences, newlines, BEL) and bidirectional overrides are shown escaped,
/// `\u{1b}`, so text from the network (validators, hubs, the chain) cannot
/// move the cursor, retitle the window or fake a line on an operator's
/// terminal.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_unicode());
        } else if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` made fit for a result's `error`: each control character becomes a
/// space, and the text is cut to `MAX_ERROR_TEXT` bytes on a character
/// boundary. [`CheckResult::for_task`] applies it.
pub fn clean_error_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(crate::limits::MAX_ERROR_TEXT));
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > crate::limits::MAX_ERROR_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// Committed to the database now.
    Stored,
    /// Already committed earlier (a resend); nothing new was written.
    Duplicate,
    /// Not stored and never will be; `code` says why. Do not resend.
    Rejected,
}

/// Sent only after the tick is committed (or known to be a duplicate, or
/// rejected). A validator resends an unacknowledged result until its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultAck {
    pub task_id: Uuid,
    pub outcome: AckOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// Stable error codes. Documented, with what the hub does next, in
/// docs/protocol.md; never renamed, only added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedFrame,
    UnknownType,
    FrameTooLarge,
    RateLimited,
    AuthTimeout,
    NotAuthenticated,
    AlreadyAuthenticated,
    InvalidHello,
    UnsupportedVersion,
    BadSignature,
    BadToken,
    NotAssigned,
    DeadlinePassed,
    ImplausibleTime,
    InvalidResult,
    HeartbeatTimeout,
    SessionReplaced,
    SlowConsumer,
    ShuttingDown,
    Internal,
    /// The operator's access rules refuse the key or the client's address
    /// (a ban, or an allow-list network the key is not on).
    AccessDenied,
    /// What a peer built against an older protocol crate decodes a code it
    /// does not know as. Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        Self::MalformedFrame,
        Self::UnknownType,
        Self::FrameTooLarge,
        Self::RateLimited,
        Self::AuthTimeout,
        Self::NotAuthenticated,
        Self::AlreadyAuthenticated,
        Self::InvalidHello,
        Self::UnsupportedVersion,
        Self::BadSignature,
        Self::BadToken,
        Self::NotAssigned,
        Self::DeadlinePassed,
        Self::ImplausibleTime,
        Self::InvalidResult,
        Self::HeartbeatTimeout,
        Self::SessionReplaced,
        Self::SlowConsumer,
        Self::ShuttingDown,
        Self::Internal,
        Self::AccessDenied,
        Self::Unknown,
    ];

    /// The wire name, also used as the `reason` label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed_frame",
            Self::UnknownType => "unknown_type",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::AuthTimeout => "auth_timeout",
            Self::NotAuthenticated => "not_authenticated",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::InvalidHello => "invalid_hello",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadSignature => "bad_signature",
            Self::BadToken => "bad_token",
            Self::NotAssigned => "not_assigned",
            Self::DeadlinePassed => "deadline_passed",
            Self::ImplausibleTime => "implausible_time",
            Self::InvalidResult => "invalid_result",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::SessionReplaced => "session_replaced",
            Self::SlowConsumer => "slow_consumer",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::AccessDenied => "access_denied",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// The hub is going away: finish in-flight results, then reconnect after
/// `retry_after_ms`, to one of `urls` if any are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reconnect {
    pub reason: String,
    pub retry_after_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// Why a text frame could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not a JSON object with a string `type`: {0}")]
    Malformed(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} message: {detail}")]
    Invalid { kind: String, detail: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) | Self::Invalid { .. } => ErrorCode::MalformedFrame,
            Self::UnknownType(_) => ErrorCode::UnknownType,
        }
    }
}

/// A message whose variant is known by its `type`, read in one pass from
/// a map whose first key is `type` (as every encoder here writes it). Only
/// for messages whose every variant refuses unknown fields, so that a
/// second `type` is refused as serde's tagged-enum path refuses it
/// (validator -> hub); hub -> validator messages ignore unknown fields and
/// take that path.
trait TypeFirst: Sized {
    fn variant<'de, A: serde::de::MapAccess<'de>>(kind: &str, rest: A) -> Result<Self, A::Error>;
}

/// The fast path of [`decode`]: a frame whose first key is `type` goes
/// straight into its variant's struct, without serde's tagged-enum
/// buffering (which copies the whole object into an intermediate tree
/// first: most of a result frame's decoding cost). Anything else fails here
/// and takes the general path, which also words every error.
struct FastTagged<T>(T);

impl<'de, T: TypeFirst> Deserialize<'de> for FastTagged<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FastVisitor(std::marker::PhantomData))
    }
}

struct FastVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: TypeFirst> serde::de::Visitor<'de> for FastVisitor<T> {
    type Value = FastTagged<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object whose first key is `type`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        if map.next_key::<Key<'de>>()?.as_ref().map(Key::as_str) != Some("type") {
            return Err(A::Error::custom("`type` is not the first key"));
        }
        let kind: Key<'de> = map.next_value()?;
        T::variant(kind.as_str(), map).map(FastTagged)
    }
}

/// A string read without a copy unless it has escapes.
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The rest of a map, after its `type`, as one struct.
fn rest<'de, T: Deserialize<'de>, A: serde::de::MapAccess<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
}

impl TypeFirst for ValidatorMessage {
    fn variant<'de, A: serde::de::MapAccess<'de>>(kind: &str, map: A) -> Result<Self, A::Error> {
        match kind {
            "result" => rest(map).map(Self::Result),
            "heartbeat" => rest(map).map(Self::Heartbeat),
            "hello" => rest(map).map(Self::Hello),
            _ => Err(serde::de::Error::custom("unknown type")),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(m) => Ok(m),
        Err(e) => {
            // Tell "unknown type" apart from "bad fields" so each gets its code.
            #[derive(Deserialize)]
            struct Head {
                #[serde(rename = "type")]
                kind: String,
            }
            match serde_json::from_str::<Head>(text) {
                Err(_) => Err(DecodeError::Malformed(e.to_string())),
                Ok(h) if !known.contains(&h.kind.as_str()) => Err(DecodeError::UnknownType(h.kind)),
                Ok(h) => Err(DecodeError::Invalid {
                    kind: h.kind,
                    detail: e.to_string(),
                }),
            }
        }
    }
}

impl ValidatorMessage {
    pub const TYPES: &'static [&'static str] = &["hello", "heartbeat", "result"];

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        if let Ok(FastTagged(m)) = serde_json::from_str::<FastTagged<Self>>(text) {
            return Ok(m);
        }
        decode(text, Self::TYPES)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("messages always serialize")
    }
}

impl HubMessage {
    pub const TYPES: &'static [&'static str] = &[
        "challenge",
        "welcome",
        "heartbeat_ack",
        "task",
        "result_ack",
        "error",
        "reconnect",
    ];

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text, Self::TYPES)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("messages always serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorFrame {
            code,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_tells_malformed_unknown_and_invalid_apart() {
        let e = ValidatorMessage::decode("{not json").unwrap_err();
        assert_eq!(e.code(), ErrorCode::MalformedFrame);
        let e = ValidatorMessage::decode(r#"{"type":"launch_missiles"}"#).unwrap_err();
        assert_eq!(e, DecodeError::UnknownType("launch_missiles".into()));
        assert_eq!(e.code(), ErrorCode::UnknownType);
        let e = ValidatorMessage::decode(r#"{"type":"heartbeat","seq":"x"}"#).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid { .. }));
        assert_eq!(e.code(), ErrorCode::MalformedFrame);
        let e = ValidatorMessage::decode(r#"{"type":"heartbeat","seq":1,"in_flight":0,"x":1}"#)
            .unwrap_err();
        assert!(
            matches!(e, DecodeError::Invalid { .. }),
            "unknown fields are refused"
        );
    }

    #[test]
    fn type_need_not_come_first_nor_be_written_plainly() {
        let want = ValidatorMessage::Heartbeat(Heartbeat {
            seq: 1,
            in_flight: 0,
        });
        for text in [
            r#"{"type":"heartbeat","seq":1,"in_flight":0}"#,
            r#"{"seq":1,"type":"heartbeat","in_flight":0}"#,
            r#"{"seq":1,"in_flight":0,"type":"heartbeat"}"#,
            r#"{"typ\u0065":"heart\u0062eat","seq":1,"in_flight":0}"#,
        ] {
            assert_eq!(ValidatorMessage::decode(text), Ok(want.clone()), "{text}");
        }
        // A second `type` is refused whichever key comes first.
        let twice = r#"{"type":"heartbeat","seq":1,"in_flight":0,"type":"heartbeat"}"#;
        assert_eq!(
            ValidatorMessage::decode(twice).map_err(|e| e.code()),
            Err(ErrorCode::MalformedFrame)
        );
        let m = HubMessage::decode(
            r#"{"type":"heartbeat_ack","seq":3,"server_time_ms":9,"type":"task"}"#,
        );
        assert!(
            m.is_err(),
            "a second `type` is refused from a hub too: {m:?}"
        );
    }

    #[test]
    fn a_code_from_a_newer_hub_decodes_as_unknown() {
        let m = HubMessage::decode(r#"{"type":"error","code":"from_the_future","message":"x"}"#)
            .unwrap();
        assert!(matches!(m, HubMessage::Error(e) if e.code == ErrorCode::Unknown));
        let a = HubMessage::decode(
            r#"{"type":"result_ack","task_id":"00000000-0000-0000-0000-000000000001","outcome":"rejected","code":"new_reason"}"#,
        )
        .unwrap();
        assert!(matches!(a, HubMessage::ResultAck(r) if r.code == Some(ErrorCode::Unknown)));
    }

    #[test]
    fn error_codes_are_listed_once_with_their_wire_names() {
        for c in ErrorCode::ALL {
            let wire = serde_json::to_value(c).unwrap();
            assert_eq!(wire, serde_json::Value::String(c.as_str().into()));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
