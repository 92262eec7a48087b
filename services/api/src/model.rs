//! Request and response bodies. Times are Unix milliseconds (`*_at_ms`), as
//! everywhere else in the system; ids are integers, except task ids (UUID).

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

// ---- accounts ----

/// `Debug` shows the email only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "owner@example.com", max_length = 254)]
    pub email: String,
    /// 10 to 256 bytes.
    #[schema(
        example = "correct horse battery staple",
        min_length = 10,
        max_length = 256
    )]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub email: String,
    /// Most websites this account may have (set by the operator).
    pub max_sites: i32,
    /// Shortest check interval this account may set, seconds.
    pub min_interval_secs: i32,
    pub created_at_ms: i64,
}

impl From<&store::Account> for AccountView {
    fn from(a: &store::Account) -> Self {
        Self {
            id: a.id.0,
            email: a.email.clone(),
            max_sites: a.max_sites,
            min_interval_secs: a.min_interval_secs,
            created_at_ms: a.created_at_ms,
        }
    }
}

/// A signed-in browser's view of itself. `csrf_token` goes in
/// `X-CSRF-Token` on every change made with the session cookie.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub account: AccountView,
    pub csrf_token: String,
}

/// The caller's account; `csrf_token` only when signed in with a cookie.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub account: AccountView,
    /// Websites the account has (not deleted).
    pub sites: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

// Bodies that carry a secret: `Debug` leaves it out, so a log line of one
// cannot leak it.
macro_rules! redacted_debug {
    ($t:ty, $($field:ident),*) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}
redacted_debug!(Credentials, email);
redacted_debug!(SessionView, account);
redacted_debug!(Me, account, sites);

// ---- API keys ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

impl From<Scope> for store::KeyScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Read => store::KeyScope::Read,
            Scope::Write => store::KeyScope::Write,
        }
    }
}

impl From<store::KeyScope> for Scope {
    fn from(s: store::KeyScope) -> Self {
        match s {
            store::KeyScope::Read => Scope::Read,
            store::KeyScope::Write => Scope::Write,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1 to 100 characters, for people.
    #[schema(example = "ci deploy checks", min_length = 1, max_length = 100)]
    pub name: String,
    pub scope: Scope,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: i64,
    /// The visible start of the key (`upk_<prefix>_...`).
    pub prefix: String,
    pub name: String,
    pub scope: Scope,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

impl From<&store::ApiKey> for KeyView {
    fn from(k: &store::ApiKey) -> Self {
        Self {
            id: k.id.0,
            prefix: k.prefix.clone(),
            name: k.name.clone(),
            scope: k.scope.into(),
            created_at_ms: k.created_at_ms,
            last_used_at_ms: k.last_used_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        }
    }
}

/// The key itself is in this response only; it is never shown again.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[schema(example = "upk_0a1b2c3d4e5f_...")]
    pub key: String,
    pub api_key: KeyView,
}

redacted_debug!(CreatedKey, api_key);

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
}

// ---- websites ----

/// A whole number, also when a client writes it as `120.0` (JSON Schema
/// counts that as an integer); anything else is refused by serde's
/// message, which names the field.
fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    let n = match Option::<Num>::deserialize(d)? {
        None => return Ok(None),
        Some(Num::Int(i)) => i,
        Some(Num::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
        Some(Num::Float(_)) => return Err(serde::de::Error::custom("expected a whole number")),
    };
    T::try_from(n)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
}

/// Reads `null` as `Some(None)` (clear the field) and absence as `None`
/// (leave it).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// [`whole`], with `null` read as `Some(None)` (clear the field).
fn nullable_whole<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    whole(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    /// http or https, at most 2048 bytes, no user or password, not a
    /// private or loopback address (unless the operator allows them).
    #[schema(example = "https://example.com/health", max_length = 2048)]
    pub url: String,
    /// At most 100 characters.
    #[schema(max_length = 100)]
    pub name: Option<String>,
    /// Seconds between checks: the account's minimum to 86400. Default:
    /// the larger of 60 and the account's minimum.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 86400)]
    pub interval_secs: Option<i32>,
    /// Per check, 100 to 60000 ms and at most the interval. Default 10000.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 60000)]
    pub timeout_ms: Option<i32>,
    /// HTTP statuses counted as up: 100 to 599. Default 200 to 399.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 599)]
    pub expected_status_min: Option<i16>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 599)]
    pub expected_status_max: Option<i16>,
    /// Text that must appear in the body's first MiB (bytes, case-sensitive).
    #[schema(min_length = 1, max_length = 256)]
    pub keyword: Option<String>,
    /// Follow up to 5 redirects (default true); if false a 3xx is judged
    /// against the expected statuses.
    pub follow_redirects: Option<bool>,
    /// Alert channels subscribed to `latency_high` hear when the median
    /// latency of a round's `up` results is above this, 1 to 120000 ms,
    /// for `latency_alert_rounds` up rounds in a row. Default: none (off).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 120000)]
    pub latency_threshold_ms: Option<i32>,
    /// 1 to 100; default 3.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub latency_alert_rounds: Option<i32>,
}

/// A partial update: absent fields keep their value; `null` clears `name`
/// or `keyword`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    pub url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 86400)]
    pub interval_secs: Option<i32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 60000)]
    pub timeout_ms: Option<i32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 599)]
    pub expected_status_min: Option<i16>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 100, maximum = 599)]
    pub expected_status_max: Option<i16>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub keyword: Option<Option<String>>,
    pub follow_redirects: Option<bool>,
    /// `null` turns latency alerts off.
    #[serde(default, deserialize_with = "nullable_whole")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 120000)]
    pub latency_threshold_ms: Option<Option<i32>>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub latency_alert_rounds: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteView {
    pub id: i64,
    pub name: Option<String>,
    pub url: String,
    pub interval_secs: i32,
    pub timeout_ms: i32,
    pub expected_status_min: i16,
    pub expected_status_max: i16,
    pub keyword: Option<String>,
    pub follow_redirects: bool,
    /// Latency alerts: off when null.
    pub latency_threshold_ms: Option<i32>,
    pub latency_alert_rounds: i32,
    /// Paused sites are not checked.
    pub paused: bool,
    /// Its status and uptime badges, when on (`POST /v1/websites/{id}/badge`).
    pub badge: Option<BadgeView>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&store::OwnedSite> for SiteView {
    fn from(s: &store::OwnedSite) -> Self {
        Self {
            id: s.id.0,
            name: s.name.clone(),
            url: s.url.clone(),
            interval_secs: s.interval_secs,
            timeout_ms: s.timeout_ms,
            expected_status_min: s.expected_status_min,
            expected_status_max: s.expected_status_max,
            keyword: s.keyword.clone(),
            follow_redirects: s.follow_redirects,
            latency_threshold_ms: s.latency_threshold_ms,
            latency_alert_rounds: s.latency_alert_rounds,
            paused: s.paused,
            badge: s.badge_token.as_deref().map(BadgeView::for_token),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
        }
    }
}

/// A site in the account's list, with its uptime over the last day.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteListItem {
    #[serde(flatten)]
    pub site: SiteView,
    /// Rounds decided up over rounds decided up or down in the last 24 hours
    /// (from the 5-minute boundary at or before 24 hours ago), in percent;
    /// null when none was decided. As `GET /v1/websites/{id}/uptime` counts.
    pub uptime_24h_pct: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SitePage {
    pub items: Vec<SiteListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

// ---- reads ----

#[derive(Debug, Serialize, ToSchema)]
pub struct RegionCheckView {
    pub region: String,
    /// The validator's public key (base58).
    pub validator: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
    pub round_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundRef {
    pub round_id: i64,
    /// `up`, `down` or `unknown` (no majority of at least two results).
    pub status: String,
    pub scheduled_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub website_id: i64,
    /// The state under the incident rule (N down rounds in a row open an
    /// incident, M up rounds resolve it; `unknown` rounds count for
    /// neither): `up`, `down`, or `unknown` before a streak decided it.
    pub incident_state: String,
    /// The open incident, if any.
    pub open_incident: Option<i64>,
    /// Regions that see the site down while the quorum sees it up
    /// (regional degradations: not incidents).
    pub degraded_regions: Vec<DegradedRegion>,
    /// The latest decided round's status; `pending` before the first one,
    /// `paused` while paused.
    #[schema(example = "up")]
    pub status: String,
    pub last_round: Option<RoundRef>,
    /// Each region's latest result of the last 24 hours.
    pub regions: Vec<RegionCheckView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DegradedRegion {
    pub region: String,
    /// Scheduled time of the first round of its streak.
    pub since_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeWindow {
    #[schema(example = "24h")]
    pub window: String,
    /// Rounds decided up over rounds decided up or down, in percent;
    /// absent when none was decided. `unknown` rounds count for neither.
    pub uptime_pct: Option<f64>,
    pub rounds_up: i64,
    pub rounds_decided: i64,
    pub rounds_unknown: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeView {
    pub website_id: i64,
    pub windows: Vec<UptimeWindow>,
}

/// A window of raw results, back from now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum Window {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    pub fn label(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            Window::Hour => 3_600,
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// `1h`, `24h` (default) or `7d`.
    pub window: Option<Window>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegionLatencyView {
    pub region: String,
    /// `up` results in the window.
    pub results: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyView {
    pub website_id: i64,
    pub window: String,
    pub regions: Vec<RegionLatencyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TickView {
    pub task_id: uuid::Uuid,
    pub round_id: i64,
    pub scheduled_at_ms: i64,
    pub validator: String,
    pub region: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
}

impl From<&store::TickRecord> for TickView {
    fn from(t: &store::TickRecord) -> Self {
        Self {
            task_id: t.task_id,
            round_id: t.round_id.0,
            scheduled_at_ms: t.scheduled_at_ms,
            validator: t.validator.clone(),
            region: t.region.clone(),
            up: t.up,
            http_status: t.http_status,
            latency_ms: t.latency_ms,
            error: t.error.clone(),
            checked_at_ms: t.checked_at_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundView {
    pub id: i64,
    /// `open` until decided, then `up`, `down` or `unknown`.
    pub status: String,
    pub scheduled_at_ms: i64,
    pub deadline_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub results: Vec<TickView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundPage {
    pub items: Vec<RoundView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TickPage {
    pub items: Vec<TickView>,
    pub next_cursor: Option<String>,
}

/// What a region saw in the round that opened an incident.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentRegion {
    pub region: String,
    pub validator: String,
    pub up: bool,
    pub http_status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub id: i64,
    /// Scheduled time of the first down round of the streak that opened it.
    pub started_at_ms: i64,
    pub opened_at_ms: i64,
    /// Scheduled time of the first up round of the streak that resolved
    /// it; absent while open.
    pub resolved_at_ms: Option<i64>,
    pub regions: Vec<IncidentRegion>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<IncidentView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteValidatorView {
    pub public_key: String,
    pub region: String,
    pub results: i64,
    pub last_checked_at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteValidators {
    pub website_id: i64,
    pub window: String,
    pub items: Vec<SiteValidatorView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_secrets_out() {
        let c: Credentials =
            serde_json::from_str(r#"{"email":"a@b.co","password":"hunter2-hunter2"}"#).unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("a@b.co") && !d.contains("hunter2"), "{d}");
        let k = CreatedKey {
            key: "upk_0123456789ab_SECRETSECRET".into(),
            api_key: KeyView {
                id: 1,
                prefix: "0123456789ab".into(),
                name: "n".into(),
                scope: Scope::Read,
                created_at_ms: 0,
                last_used_at_ms: None,
                revoked_at_ms: None,
            },
        };
        let d = format!("{k:?}");
        assert!(!d.contains("SECRET") && d.contains("0123456789ab"), "{d}");
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let s: NewSite =
            serde_json::from_str(r#"{"url":"https://x.example","interval_secs":120.0}"#).unwrap();
        assert_eq!(s.interval_secs, Some(120));
        for bad in [r#"120.5"#, r#"1e12"#, r#""120""#] {
            let body = format!(r#"{{"url":"https://x.example","interval_secs":{bad}}}"#);
            assert!(serde_json::from_str::<NewSite>(&body).is_err(), "{bad}");
        }
    }
}

// ---- dashboard ----

/// Every site of the account, with what the dashboard's list shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub sites: Vec<SiteGlanceView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteGlanceView {
    pub id: i64,
    pub name: Option<String>,
    pub url: String,
    pub paused: bool,
    pub interval_secs: i32,
    /// The latest closed round; null before the first.
    pub latest: Option<LatestView>,
    /// The state under the confirmation rule.
    pub state: StateView,
    /// Each region's latest result of the last hour.
    pub regions: Vec<GlanceCheckView>,
    /// As in the site list: null when no round was decided in 24 hours.
    pub uptime_24h_pct: Option<f64>,
    /// Hourly median latency of `up` results over 24 hours, all regions:
    /// `[bucket start (Unix ms), median ms or null]`, from the rollups.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub sparkline: Vec<(i64, Option<f64>)>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatestView {
    /// `up`, `down` or `unknown`.
    pub status: String,
    pub scheduled_at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    /// `up`, `down`, or `unknown` before a streak decided it.
    pub status: String,
    pub open_incident: Option<OpenIncidentView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIncidentView {
    pub id: i64,
    pub started_at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GlanceCheckView {
    pub region: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub checked_at_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DaysQuery {
    /// 1 to 365 (default 90).
    #[param(minimum = 1, maximum = 365)]
    pub days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyUptime {
    pub website_id: i64,
    /// Oldest first, one per UTC day, today last.
    pub days: Vec<DayView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    /// The day's start (00:00 UTC), Unix ms.
    pub day_ms: i64,
    /// Null when no round was decided that day.
    pub uptime_pct: Option<f64>,
    pub rounds_up: i64,
    pub rounds_decided: i64,
    pub rounds_unknown: i64,
}

impl From<store::DayCount> for DayView {
    fn from(d: store::DayCount) -> Self {
        let decided = d.up + d.down;
        Self {
            day_ms: d.day_ms,
            uptime_pct: (decided > 0).then(|| d.up as f64 * 100.0 / decided as f64),
            rounds_up: d.up,
            rounds_decided: decided,
            rounds_unknown: d.unknown,
        }
    }
}

/// A latency chart's span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum SeriesWindow {
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl SeriesWindow {
    pub fn label(self) -> &'static str {
        match self {
            SeriesWindow::Day => "24h",
            SeriesWindow::Week => "7d",
            SeriesWindow::Month => "30d",
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            SeriesWindow::Day => 86_400,
            SeriesWindow::Week => 7 * 86_400,
            SeriesWindow::Month => 30 * 86_400,
        }
    }

    /// 5-minute points over a day, hourly beyond.
    pub fn bucket_secs(self) -> i32 {
        match self {
            SeriesWindow::Day => 300,
            SeriesWindow::Week | SeriesWindow::Month => 3_600,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// `24h` (default, 5-minute points), `7d` or `30d` (hourly points).
    pub window: Option<SeriesWindow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencySeries {
    pub website_id: i64,
    pub window: String,
    pub bucket_secs: i32,
    pub regions: Vec<RegionSeriesView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegionSeriesView {
    pub region: String,
    /// `[bucket start (Unix ms), p50 ms, p95 ms]`, oldest first, buckets
    /// with results only (estimated from the rollups' histograms).
    #[schema(value_type = Vec<Vec<f64>>)]
    pub points: Vec<(i64, Option<f64>, Option<f64>)>,
}

/// The account's public status page.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusPageView {
    /// Null until the page is first saved.
    pub slug: Option<String>,
    pub title: String,
    /// Whether `/status/{slug}` is served.
    pub enabled: bool,
    /// The sites it shows (by name only: never their URLs).
    pub website_ids: Vec<i64>,
    /// Its path when enabled, e.g. `/status/acme`.
    pub url: Option<String>,
}

impl StatusPageView {
    pub fn new(page: Option<store::StatusPage>, ids: Vec<store::WebsiteId>) -> Self {
        let enabled = page.as_ref().is_some_and(|p| p.enabled);
        Self {
            url: page
                .as_ref()
                .filter(|p| p.enabled)
                .map(|p| format!("/status/{}", p.slug)),
            slug: page.as_ref().map(|p| p.slug.clone()),
            title: page.map_or_else(|| "Status".to_string(), |p| p.title),
            enabled,
            website_ids: ids.into_iter().map(|i| i.0).collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusPageInput {
    /// 3 to 40 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
    #[schema(example = "acme")]
    pub slug: Option<String>,
    /// 1 to 100 characters.
    pub title: String,
    pub enabled: bool,
    /// Exactly the sites to show (the account's own).
    pub website_ids: Vec<i64>,
}

/// A site's badge URLs (a token in the path: whoever has the URL sees the
/// badge; a new token replaces the old).
#[derive(Debug, Serialize, ToSchema)]
pub struct BadgeView {
    pub status_svg: String,
    pub uptime_svg: String,
}

impl BadgeView {
    pub fn for_token(token: &str) -> Self {
        Self {
            status_svg: format!("/badge/{token}/status.svg"),
            uptime_svg: format!("/badge/{token}/uptime.svg"),
        }
    }
}
