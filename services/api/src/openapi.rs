//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the body types; served at `/openapi.json`, browsable at `/docs`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::model::*;
use crate::routes::alerts::{
    ChannelList, ChannelPatchBody, ChannelView, CreatedChannel, DeliveryPage, DeliveryView, Kind,
    NewChannelBody, TestResult,
};
use crate::routes::{accounts, alerts, dashboard, keys, reads, sites};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "uptime owners' API",
        description = "Accounts, API keys, websites and what they show. Errors have one shape, `{\"error\": {\"code\", \"message\"}}`; codes are listed in docs/api.md.",
        version = "1"
    ),
    paths(
        accounts::sign_up, accounts::sign_in, accounts::sign_out, accounts::me,
        keys::list, keys::create, keys::revoke,
        sites::create, sites::list, sites::get, sites::update, sites::delete,
        sites::pause, sites::resume,
        reads::status, reads::uptime, reads::latency, reads::rounds, reads::results,
        reads::validators, reads::incidents,
        alerts::list, alerts::create, alerts::get, alerts::update, alerts::delete, alerts::test,
        alerts::deliveries,
        dashboard::overview, dashboard::uptime_daily, dashboard::latency_series,
        dashboard::status_page, dashboard::save_status_page, dashboard::make_badge,
        dashboard::delete_badge, dashboard::earnings,
    ),
    components(schemas(ErrorBody, ErrorDetail, Credentials, AccountView, SessionView, Me,
        Scope, NewKey, KeyView, CreatedKey, KeyList, NewSite, SitePatch, SiteView, SitePage,
        RegionCheckView, RoundRef, StatusView, UptimeWindow, UptimeView, RegionLatencyView,
        LatencyView, TickView, RoundView, RoundPage, TickPage, SiteValidatorView, SiteValidators,
        IncidentRegion, IncidentView, IncidentPage, DegradedRegion, Kind, NewChannelBody,
        ChannelPatchBody, ChannelView, CreatedChannel, ChannelList, TestResult, DeliveryView,
        DeliveryPage, Overview, SiteGlanceView, LatestView, StateView, OpenIncidentView,
        GlanceCheckView, DailyUptime, DayView, SeriesWindow, LatencySeries, RegionSeriesView,
        StatusPageView, StatusPageInput, BadgeView)),
    modifiers(&Security),
    security(("api_key" = []), ("session" = [])),
    tags(
        (name = "accounts", description = "Sign-up, sign-in, sign-out"),
        (name = "keys", description = "API keys for programs (managed by a signed-in account)"),
        (name = "websites", description = "The websites an account monitors"),
        (name = "reads", description = "Status, uptime, latency and history of a website"),
        (name = "alerts", description = "Alert channels and the delivery log"),
        (name = "dashboard", description = "What the browser dashboard's list shows, in one request"),
        (name = "status pages", description = "The public status page and site badges"),
        (name = "validators", description = "A validator's earnings (public)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        common_responses(doc);
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("upk_<prefix>_<secret>")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// Answers any operation can give, added where the handler's annotation
/// does not list them: 400 (a path, query or body that cannot be read),
/// 413 and 415 (operations with a body), 401 (operations that need a
/// caller), 429 (rate limits) and 503 (database unreachable, time limit).
fn common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::HttpMethod;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let open = ["/v1/accounts", "/v1/sessions"];
    for (path, item) in doc.paths.paths.iter_mut() {
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Patch,
            HttpMethod::Delete,
            HttpMethod::Put,
        ] {
            let op = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                _ => None,
            };
            let Some(op) = op else { continue };
            let mut add = vec![
                (
                    "400",
                    "`bad_request`: a path, query or body that cannot be read",
                ),
                ("429", "`rate_limited` (see `Retry-After`)"),
                ("503", "`unavailable` or `timeout`"),
            ];
            if op.request_body.is_some() {
                add.push(("413", "`payload_too_large`"));
                add.push(("415", "`unsupported_media_type`"));
            }
            if !open.contains(&path.as_str()) {
                add.push(("401", "`unauthorized`"));
            }
            for (code, what) in add {
                if !op.responses.responses.contains_key(code) {
                    op.responses
                        .responses
                        .insert(code.to_string(), error(what).into());
                }
            }
        }
    }
}
