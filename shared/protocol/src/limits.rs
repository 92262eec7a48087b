//! Limits documented in docs/protocol.md. The hub announces the values it
//! enforces in `welcome.limits`; these are the defaults.

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
/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 32;
/// Most tags on a hello, and the longest tag.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 32;
/// Longest client version string.
pub const MAX_CLIENT_VERSION_LEN: usize = 64;
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
