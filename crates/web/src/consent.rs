//! Cookie consent (C19–C21), the Global Privacy Control signal (C20),
//! first-party analytics (C22) and request logs (C23).
//!
//! Until the visitor chooses, only essential cookies exist: the session,
//! the CSRF token and the consent record itself. The consent cookie holds a
//! random id and the choice; each choice is also stored as a proof record.
//! Everything works without JavaScript: the banner and the settings page are
//! plain forms.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::Error;
use serde::Deserialize;
use store::{ConsentChoice, NewAnalyticsEvent, NewConsent, NewRequestLog};

use crate::auth::new_token;
use crate::context::{cookie, set_cookie, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, page, FormBody};
use crate::AppState;

pub const CONSENT_COOKIE: &str = "atelier_consent";
/// The analytics id of a browser; set only with analytics consent.
pub const ANALYTICS_COOKIE: &str = "atelier_aid";
const COOKIE_DAYS: i64 = 365;

/// The privacy state of one request, resolved by [`track`].
#[derive(Debug, Clone, Default)]
pub struct PrivacyCtx {
    /// The random id of this browser's consent record, once it chose.
    pub visitor_id: Option<String>,
    /// `None` until the visitor chooses: the banner is shown.
    pub choice: Option<ConsentChoice>,
    /// The Global Privacy Control signal was received (now or before) and
    /// is being honoured.
    pub gpc: bool,
    /// A material policy version the signed-in user has not accepted yet.
    pub pending_policy: Option<store::PolicyVersion>,
    /// The request path, for the banner forms to come back to.
    pub path: String,
    /// The operator tags this visitor may get (none for a restricted
    /// account); the consent choice picks among them when a page renders.
    pub tags: Vec<crate::tags::OperatorTag>,
}

/// `{visitor id}.{analytics}{preferences}{marketing}{gpc}`, each digit 0 or 1.
fn encode(visitor_id: &str, choice: ConsentChoice, gpc: bool) -> String {
    let bit = |b: bool| if b { '1' } else { '0' };
    format!("{visitor_id}.{}{}{}{}", bit(choice.analytics), bit(choice.preferences), bit(choice.marketing), bit(gpc))
}

fn decode(value: &str) -> Option<(String, ConsentChoice, bool)> {
    let (id, bits) = value.split_once('.')?;
    let valid_id = id.len() == 43 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let bits: Vec<bool> = bits.chars().map(|c| c == '1').collect();
    if !valid_id || bits.len() != 4 || !value.ends_with(['0', '1']) {
        return None;
    }
    Some((id.to_string(), ConsentChoice { analytics: bits[0], preferences: bits[1], marketing: bits[2] }, bits[3]))
}

fn gpc_signal(headers: &HeaderMap) -> bool {
    headers.get("sec-gpc").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "1")
}

/// The GPC signal is an opt-out of analytics and marketing; it leaves the
/// other categories as chosen.
fn honour_gpc(choice: ConsentChoice) -> ConsentChoice {
    ConsentChoice { analytics: false, marketing: false, ..choice }
}

async fn policy_version(state: &AppState) -> Result<String, Error> {
    Ok(crate::legal::current_policy(state).await?.version)
}

/// Stores a proof record and returns the consent cookie that carries it.
async fn record(
    state: &AppState,
    ctx: &Ctx,
    visitor_id: &str,
    choice: ConsentChoice,
    gpc: bool,
    source: &str,
) -> Result<axum::http::HeaderValue, Error> {
    let version = policy_version(state).await?;
    state
        .store
        .record_consent(NewConsent {
            user_id: ctx.user.as_ref().map(|u| u.id.as_str()),
            visitor_id,
            choice,
            policy_version: &version,
            source,
            at: state.config.clock.now_ms(),
        })
        .await?;
    Ok(set_cookie(CONSENT_COOKIE, &encode(visitor_id, choice, gpc), COOKIE_DAYS * 86_400, true, state.config.https))
}

/// Paths that are neither pages nor features: no analytics, no request log.
fn untracked(path: &str) -> bool {
    path.starts_with("/static/") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Resolves the consent state before the handler, and after it: honours a
/// new GPC signal (proof record, cookie), stores an analytics event when
/// allowed, and writes the reduced request log row.
pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(mut ctx) = request.extensions().get::<Ctx>().cloned() else {
        return next.run(request).await;
    };
    // Owned copies: the request is not `Sync`, no borrow of it may live across an await.
    let (gpc_now, stored, analytics_id) = {
        let headers = request.headers();
        let analytics_id = cookie(headers, ANALYTICS_COOKIE).filter(|v| v.len() == 43).map(str::to_string);
        (gpc_signal(headers), cookie(headers, CONSENT_COOKIE).and_then(decode), analytics_id)
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("(unmatched)".to_string(), |m| m.as_str().to_string());

    let (visitor_id, mut choice, mut gpc) = match stored {
        Some((id, choice, gpc)) => (Some(id), Some(choice), gpc),
        None => (None, None, false),
    };
    // A new GPC signal becomes a recorded opt-out. Its later absence changes
    // nothing: opting back in takes an explicit choice.
    let mut gpc_cookie = None;
    let opted_out = choice.is_some_and(|c| !c.analytics && !c.marketing) && gpc;
    if gpc_now && !opted_out && method != Method::POST {
        let id = visitor_id.clone().unwrap_or_else(new_token);
        let honoured = honour_gpc(choice.unwrap_or_default());
        match record(&state, &ctx, &id, honoured, true, "gpc").await {
            Ok(set) => gpc_cookie = Some(set),
            Err(e) => tracing::warn!(error = %e, "GPC opt-out not recorded"),
        }
        choice = Some(honoured);
        gpc = true;
    }
    gpc |= gpc_now;
    let wants_banner = method == Method::GET && !path.starts_with("/api/") && !path.starts_with("/v1/") && !untracked(&path);
    let pending_policy = match (&ctx.user, wants_banner) {
        (Some(user), true) => state.store.pending_material_policy(&user.id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "pending policy not read");
            None
        }),
        _ => None,
    };
    let tags = if wants_tags(&state, &method, &path) { eligible_tags(&state, ctx.user.as_ref()).await } else { Vec::new() };
    ctx.privacy = PrivacyCtx { visitor_id, choice, gpc, pending_policy, path: path.clone(), tags };
    let user_id = ctx.user.as_ref().map(|u| u.id.clone());
    let (ip, user_agent) = (ctx.ip, ctx.user_agent.clone());
    request.extensions_mut().insert(ctx);

    let mut response = next.run(request).await;
    if untracked(&path) {
        return response;
    }
    if let Some(set) = gpc_cookie {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    // The consent handler may have just changed the choice: its cookie wins.
    let consent_prefix = format!("{CONSENT_COOKIE}=");
    let fresh = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix(&consent_prefix))
        .filter_map(|v| decode(v.split(';').next().unwrap_or("")))
        .last();
    if let Some((_, c, _)) = fresh {
        choice = Some(c);
    }
    let analytics_allowed = choice.is_some_and(|c| c.analytics) && !gpc_now;
    let analytics_id = match (analytics_allowed, analytics_id) {
        (true, Some(id)) => Some(id),
        (true, None) => {
            let id = new_token();
            response
                .headers_mut()
                .append(header::SET_COOKIE, set_cookie(ANALYTICS_COOKIE, &id, COOKIE_DAYS * 86_400, true, state.config.https));
            Some(id)
        }
        (false, Some(_)) => {
            // Consent withdrawn: the analytics id goes with it.
            response.headers_mut().append(header::SET_COOKIE, set_cookie(ANALYTICS_COOKIE, "", 0, true, state.config.https));
            None
        }
        (false, None) => None,
    };
    let now = state.config.clock.now_ms();
    if let Some(id) = analytics_id {
        let html = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
        if let Err(e) = record_event(&state, user_id.as_deref(), &id, &method, &route, response.status(), html, now).await {
            tracing::warn!(error = %e, "analytics event not stored");
        }
    }
    let ip_prefix = ip.map(privacy::analytics::truncate_ip);
    let log = NewRequestLog {
        at: now,
        method: method.as_str(),
        route: &route,
        status: response.status().as_u16(),
        ip_prefix: ip_prefix.as_deref(),
        browser: privacy::analytics::browser_family(user_agent.as_deref()),
    };
    if let Err(e) = state.store.record_request(log).await {
        tracing::warn!(error = %e, "request log not stored");
    }
    response
}

/// Pages (not the APIs) may carry operator tags.
fn wants_tags(state: &AppState, method: &Method, path: &str) -> bool {
    !state.config.tags.is_empty()
        && matches!(*method, Method::GET | Method::POST)
        && !path.starts_with("/api/")
        && !path.starts_with("/v1/")
        && !untracked(path)
}

/// The configured tags, unless the signed-in account restricted processing
/// (C37); an unreadable restriction counts as restricted.
async fn eligible_tags(state: &AppState, user: Option<&store::User>) -> Vec<crate::tags::OperatorTag> {
    if let Some(user) = user {
        match state.store.account_privacy(&user.id).await {
            Ok(p) if !p.restricted => {}
            Ok(_) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "restriction not read; no operator tags");
                return Vec::new();
            }
        }
    }
    state.config.tags.clone()
}

/// A page view (a successful HTML GET) or a feature use (a successful form
/// or API action), under the route template, never the concrete URL.
#[allow(clippy::too_many_arguments)]
async fn record_event(
    state: &AppState,
    user_id: Option<&str>,
    analytics_id: &str,
    method: &Method,
    route: &str,
    status: StatusCode,
    html: bool,
    now: i64,
) -> Result<(), Error> {
    let kind = match *method {
        Method::GET if status.is_success() && html => "page",
        Method::POST | Method::PATCH | Method::DELETE | Method::PUT if status.is_success() || status.is_redirection() => "feature",
        _ => return Ok(()),
    };
    // Restricted accounts are never used for analytics (C37).
    if let Some(user_id) = user_id {
        if state.store.account_privacy(user_id).await?.restricted {
            return Ok(());
        }
    }
    let visitor = privacy::analytics::visitor_hash(&state.store, analytics_id, now).await?;
    state.store.record_analytics_event(NewAnalyticsEvent { at: now, visitor: &visitor, kind, name: route }).await
}

/// `/.well-known/gpc.json`: this site honours the Global Privacy Control.
pub async fn gpc_json() -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=86400")], Json(serde_json::json!({ "gpc": true, "lastUpdate": "2026-11-01" })))
        .into_response()
}

/// The banner shown until the visitor chooses, and the notice of a pending
/// material policy change. "Reject all" and "Accept all" are the same kind
/// of button, side by side.
pub fn banners(ctx: &Ctx) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let mut out = String::new();
    if let Some(version) = &ctx.privacy.pending_policy {
        out.push_str(&format!(
            r#"<aside class="policy-banner" role="region" aria-label="{label}"><p>{text} <a href="/legal/privacy">{read}</a></p><p class="summary">{summary}</p>
<form method="post" action="/legal/accept" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="version" value="{version}"><input type="hidden" name="back" value="{back}"><button>{accept}</button></form></aside>"#,
            label = t("legal.banner_label"),
            text = esc(&ctx.lang.t("legal.banner_text").replace("{version}", &version.version)),
            read = t("legal.banner_read"),
            summary = esc(&version.summary),
            csrf = esc(&ctx.csrf),
            version = esc(&version.version),
            back = esc(&ctx.privacy.path),
            accept = t("legal.banner_accept"),
        ));
    }
    if ctx.privacy.choice.is_none() {
        out.push_str(&format!(
            r#"<aside class="consent-banner" role="region" aria-label="{label}"><p>{text} <a href="/legal/cookies">{policy}</a></p>
<form method="post" action="/consent" class="consent-actions"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="source" value="banner"><input type="hidden" name="back" value="{back}">
<button class="consent-choice" name="choice" value="none">{reject}</button> <button class="consent-choice" name="choice" value="all">{accept}</button> <a href="/consent">{customize}</a></form></aside>"#,
            label = t("consent.banner_label"),
            text = t("consent.banner_text"),
            policy = t("consent.footer_cookies"),
            csrf = esc(&ctx.csrf),
            back = esc(&ctx.privacy.path),
            reject = t("consent.reject_all"),
            accept = t("consent.accept_all"),
            customize = t("consent.customize"),
        ));
    }
    out
}

/// Footer links on every page: reopening the consent choice is one click
/// away, as is the policy; the GPC notice when the signal is honoured.
pub fn footer(ctx: &Ctx) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let gpc =
        if ctx.privacy.gpc { format!(r#"<span class="gpc" role="status">{}</span>"#, t("consent.gpc_honoured")) } else { String::new() };
    format!(
        r#"<nav class="legal"><a href="/consent">{}</a> <a href="/legal/privacy">{}</a> <a href="/legal/cookies">{}</a></nav>{gpc}"#,
        t("consent.footer_settings"),
        t("consent.footer_privacy"),
        t("consent.footer_cookies"),
    )
}

fn checkbox(ctx: &Ctx, name: &str, checked: bool) -> String {
    format!(
        r#"<label class="check"><input type="checkbox" name="{name}"{}> {}</label>"#,
        if checked { " checked" } else { "" },
        esc(&ctx.lang.t(&format!("consent.{name}")))
    )
}

fn settings_body(ctx: &Ctx, notice: Option<&str>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let current = ctx.privacy.choice.unwrap_or_default();
    let status = if ctx.privacy.choice.is_none() { format!("<p>{}</p>", t("consent.current_none")) } else { String::new() };
    let gpc =
        if ctx.privacy.gpc { format!(r#"<p class="notice gpc" role="status">{}</p>"#, t("consent.gpc_honoured")) } else { String::new() };
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{notice}{gpc}<p>{intro}</p>{status}
<form method="post" action="/consent" class="stack"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="source" value="settings"><input type="hidden" name="back" value="/consent">
<label class="check"><input type="checkbox" checked disabled> {essential}</label>{analytics}{preferences}{marketing}
<p class="consent-actions"><button class="consent-choice" name="choice" value="custom">{save}</button> <button class="consent-choice" name="choice" value="none">{reject}</button> <button class="consent-choice" name="choice" value="all">{accept}</button></p>
</form><p><a href="/legal/cookies">{policy}</a></p></section>"#,
        title = t("consent.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        intro = t("consent.intro"),
        csrf = esc(&ctx.csrf),
        essential = t("consent.essential"),
        analytics = checkbox(ctx, "analytics", current.analytics),
        preferences = checkbox(ctx, "preferences", current.preferences),
        marketing = checkbox(ctx, "marketing", current.marketing),
        save = t("consent.save"),
        reject = t("consent.reject_all"),
        accept = t("consent.accept_all"),
        policy = t("consent.footer_cookies"),
    )
}

pub async fn settings_page(ctx: Ctx) -> Response {
    page(&ctx, StatusCode::OK, &ctx.lang.t("consent.title"), &settings_body(&ctx, None))
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub choice: String,
    pub analytics: Option<String>,
    pub preferences: Option<String>,
    pub marketing: Option<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub back: String,
}

/// A local path to return to; anything else goes to the settings page.
pub(crate) fn local_path(back: &str) -> &str {
    if back.starts_with('/') && !back.starts_with("//") && !back.contains(['\\', '\r', '\n']) {
        back
    } else {
        "/consent"
    }
}

/// Records a choice from the banner or the settings page: given, changed
/// or withdrawn the same way, with one click.
pub async fn choose(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    FormBody(form): FormBody<ConsentForm>,
) -> ApiResult<Response> {
    check_csrf(&ctx, &form._csrf)?;
    let choice = match form.choice.as_str() {
        "all" => ConsentChoice { analytics: true, preferences: true, marketing: true },
        "none" => ConsentChoice::default(),
        "custom" => ConsentChoice {
            analytics: form.analytics.is_some(),
            preferences: form.preferences.is_some(),
            marketing: form.marketing.is_some(),
        },
        _ => return Err(Error::invalid("choice must be all, none or custom").into()),
    };
    let source = if form.source == "banner" { "banner" } else { "settings" };
    let gpc = gpc_signal(&headers);
    let choice = if gpc { honour_gpc(choice) } else { choice };
    let visitor_id = ctx.privacy.visitor_id.clone().unwrap_or_else(new_token);
    let set = record(&state, &ctx, &visitor_id, choice, gpc, source).await?;
    let mut response = if source == "banner" {
        Redirect::to(local_path(&form.back)).into_response()
    } else {
        let mut ctx = ctx.clone();
        ctx.privacy.choice = Some(choice);
        ctx.privacy.gpc = gpc;
        page(&ctx, StatusCode::OK, &ctx.lang.t("consent.title"), &settings_body(&ctx, Some(&ctx.lang.t("consent.saved"))))
    };
    response.headers_mut().append(header::SET_COOKIE, set);
    // A chosen theme is kept for a year only with preference consent.
    if let Some(theme) = crate::theme::chosen(&headers) {
        response.headers_mut().append(header::SET_COOKIE, crate::theme::set_cookie(Some(theme), choice.preferences, state.config.https));
    }
    Ok(response)
}
