//! Limits documented in docs/protocol.md. The hub announces the values it
//! enforces in `welcome.limits`; these are the defaults.

/// Largest text frame either side accepts, in bytes. A bigger frame is
/// answered with `frame_too_large` and the connection is closed (code 1009).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Sustained messages per second a validator may send on one connection.
pub const MAX_MESSAGES_PER_SEC: u32 = 50;
/// Burst allowance on top of the sustained rate.
pub const MESSAGE_BURST: u32 = 100;
/// Time from connect to a valid `hello`.
pub const AUTH_TIMEOUT_MS: u64 = 10_000;
/// How often a validator sends `heartbeat`.
pub const HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// Silence after which the hub closes a session (`heartbeat_timeout`).
pub const HEARTBEAT_TIMEOUT_MS: u64 = 45_000;
/// Longest `error` text in a result, in bytes.
pub const MAX_ERROR_TEXT: usize = 512;
/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 32;
/// Most tags on a hello, and the longest tag.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 32;
/// Longest client version string.
pub const MAX_CLIENT_VERSION_LEN: usize = 64;
/// How far a result's `checked_at_ms` may lie outside the task's window
/// (`scheduled_at_ms` .. receive time) before it is `implausible_time`.
pub const CLOCK_SKEW_MS: i64 = 30_000;
