//! The admin console (pages under `/admin`) and the admin API (under
//! `/api/v1/admin`), plus image reports (C41).
//!
//! Every route checks the role on the server and answers 404 to anyone not
//! allowed, so its existence is not revealed. Moderators reach only the
//! moderation queue and its actions; admins reach everything. Nobody sees
//! another account's images except the one a report points to, and every
//! such view is audited (C34).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{AuditEntry, AuditRecord, ModerationEvent, Page, Report, Suspension, TaskStat, User, UserSummary};

use crate::api::{checked_id, JsonBody, QueryParams};
use crate::auth::notices;
use crate::context::{ApiUser, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::i18n::Lang;
use crate::pages::{check_csrf, error_box, esc, page, status_of, FormBody};
use crate::AppState;

pub fn require_admin(user: &User) -> ApiResult<()> {
    if user.role == "admin" {
        Ok(())
    } else {
        Err(ApiError(Error::not_found()))
    }
}

/// Whether `user` may use a route: admins everywhere, moderators on
/// moderation routes.
fn allowed(user: &User, admin_only: bool) -> bool {
    require_admin(user).is_ok() || (!admin_only && user.role == "moderator")
}

/// The caller of an admin API route. Everyone else, signed in or not, gets
/// 404; staff still get their own mistakes (a missing CSRF token).
async fn staff_api(parts: &mut Parts, state: &AppState, admin_only: bool) -> Result<User, ApiError> {
    match ApiUser::from_request_parts(parts, state).await {
        Ok(api) if allowed(&api.user, admin_only) => Ok(api.user),
        Err(e)
            if crate::api_keys::bearer(parts).is_none()
                && parts.extensions.get::<Ctx>().and_then(|c| c.user.as_ref()).is_some_and(|u| allowed(u, admin_only)) =>
        {
            Err(e)
        }
        _ => Err(ApiError(Error::not_found())),
    }
}

/// An admin, for admin API routes.
pub struct AdminUser {
    pub user: User,
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(AdminUser { user: staff_api(parts, state, true).await? })
    }
}

/// A moderator or an admin, for moderation API routes.
pub struct StaffUser {
    pub user: User,
}

impl FromRequestParts<AppState> for StaffUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(StaffUser { user: staff_api(parts, state, false).await? })
    }
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub account: Option<String>,
    pub before: Option<String>,
    pub limit: Option<i64>,
}

/// The audit trail (C34), newest first; `account` narrows it to one account.
pub async fn audit_log(
    State(state): State<AppState>,
    _admin: AdminUser,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    let account = q.account.as_deref().map(checked_id).transpose()?;
    let before = q.before.as_deref().map(checked_id).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(state.store.audit_entries(account, before, limit).await?))
}

/// With `first_sign_up_is_admin`, the first account of an instance
/// without accounts becomes its admin.
pub async fn after_sign_up(state: &AppState, user: &User) -> Result<(), Error> {
    if !state.config.first_sign_up_is_admin || state.store.search_users("", 2).await?.len() != 1 {
        return Ok(());
    }
    state.store.set_role(&user.id, "admin").await?;
    let entry = AuditEntry {
        action: "role_changed",
        target_id: Some(&user.id),
        detail: Some("user -> admin (first sign-up)"),
        ..AuditEntry::default()
    };
    state.store.audit(entry).await?;
    tracing::info!(user = %user.id, "first account made admin");
    Ok(())
}

// ---------------------------------------------------------------------------
// Actions shared by the pages and the API. Each is audited.

async fn audit(state: &AppState, actor: &User, action: &str, target: &str, ip: Option<std::net::IpAddr>, detail: Option<&str>) {
    let ip = ip.map(crate::auth::truncate_ip);
    let entry = AuditEntry { actor_id: Some(&actor.id), action, target_id: Some(target), ip: ip.as_deref(), detail };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(action, error = %e, "audit entry not written");
    }
}

/// The account an action targets. Staff accounts are out of moderators'
/// reach, and nobody acts on their own account here.
async fn target(state: &AppState, actor: &User, id: &str) -> Result<User, Error> {
    let user = state.store.user_by_id(checked_id(id).map_err(|e| e.0)?).await?.ok_or_else(Error::not_found)?;
    if user.id == actor.id {
        return Err(Error::new(ErrorCode::Forbidden, "use another admin account to act on your own"));
    }
    if user.role != "user" && actor.role != "admin" {
        return Err(Error::new(ErrorCode::Forbidden, "only admins act on staff accounts"));
    }
    Ok(user)
}

/// An account-level action, by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountAction {
    Suspend,
    Reinstate,
    Close,
    ResetTwoFactor,
}

impl AccountAction {
    fn parse(s: &str) -> Result<AccountAction, Error> {
        Ok(match s {
            "suspend" => AccountAction::Suspend,
            "reinstate" => AccountAction::Reinstate,
            "close" => AccountAction::Close,
            "reset-2fa" | "reset_2fa" => AccountAction::ResetTwoFactor,
            _ => return Err(Error::invalid("action must be suspend, reinstate, close or reset-2fa")),
        })
    }
}

#[derive(Debug, Default, Serialize)]
struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    suspension: Option<Suspension>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_deleted: Option<usize>,
}

async fn act_on_account(
    state: &AppState,
    actor: &User,
    user: &User,
    action: AccountAction,
    ip: Option<std::net::IpAddr>,
    why: Option<&str>,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    match action {
        AccountAction::Suspend => {
            let s = state.store.suspend_account(&user.id).await?;
            audit(state, actor, "account_suspended", &user.id, ip, why).await;
            notices::send_quietly(state, user, "account_suspended", &[]).await;
            tracing::info!(user = %user.id, sessions = s.sessions_ended, tasks = s.tasks_canceled, "account suspended");
            outcome.suspension = Some(s);
        }
        AccountAction::Reinstate => {
            state.store.reinstate_account(&user.id).await?;
            audit(state, actor, "account_reinstated", &user.id, ip, why).await;
            notices::send_quietly(state, user, "account_reinstated", &[]).await;
        }
        AccountAction::Close => {
            // Recorded before the purge: afterwards the account id is gone.
            audit(state, actor, "account_closed", &user.id, ip, why).await;
            let report = privacy::purge_account(&state.store, state.objects.as_ref(), &user.id, Some(&actor.id)).await?;
            outcome.objects_deleted = Some(report.objects_deleted);
        }
        AccountAction::ResetTwoFactor => {
            if !state.store.disable_totp(&user.id).await? {
                return Err(Error::invalid("this account has no two-factor authentication"));
            }
            audit(state, actor, "totp_reset", &user.id, ip, why).await;
            notices::send_quietly(state, user, "totp_disabled", &[]).await;
        }
    }
    Ok(outcome)
}

async fn change_role(state: &AppState, actor: &User, user: &User, role: &str, ip: Option<std::net::IpAddr>) -> Result<(), Error> {
    let before = user.role.clone();
    state.store.set_role(&user.id, role).await?;
    audit(state, actor, "role_changed", &user.id, ip, Some(&format!("{before} -> {role}"))).await;
    Ok(())
}

/// What a moderator does about a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportAction {
    Remove,
    Warn,
    Suspend,
    Reinstate,
    Close,
    Authorities,
    Dismiss,
}

impl ReportAction {
    const ALL: [(&'static str, ReportAction); 7] = [
        ("remove", ReportAction::Remove),
        ("warn", ReportAction::Warn),
        ("suspend", ReportAction::Suspend),
        ("reinstate", ReportAction::Reinstate),
        ("close", ReportAction::Close),
        ("authorities", ReportAction::Authorities),
        ("dismiss", ReportAction::Dismiss),
    ];

    fn parse(s: &str) -> Result<ReportAction, Error> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, a)| *a)
            .ok_or_else(|| Error::invalid("action must be remove, warn, suspend, reinstate, close, authorities or dismiss"))
    }

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).unwrap_or("dismiss")
    }
}

async fn act_on_report(
    state: &AppState,
    moderator: &User,
    report_id: &str,
    action: ReportAction,
    reference: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Result<Outcome, Error> {
    let report = state.store.report(checked_id(report_id).map_err(|e| e.0)?).await?;
    let owner = target(state, moderator, &report.owner_id).await?;
    let reference = reference.map(str::trim).filter(|r| !r.is_empty());
    if reference.is_some_and(|r| r.chars().count() > 200) {
        return Err(Error::invalid("the reference is at most 200 characters"));
    }
    let detail = format!("report {}", report.id);
    let mut outcome = Outcome::default();
    match action {
        ReportAction::Remove => {
            // Objects first, then rows: once this returns the bytes are gone.
            crate::api::delete_image(state, &owner, &report.asset_id).await?;
            notices::send_quietly(state, &owner, "content_removed", &[("reason", &report.reason)]).await;
        }
        ReportAction::Warn => notices::send_quietly(state, &owner, "moderation_warning", &[("reason", &report.reason)]).await,
        ReportAction::Suspend => outcome = act_on_account(state, moderator, &owner, AccountAction::Suspend, ip, Some(&detail)).await?,
        ReportAction::Reinstate => outcome = act_on_account(state, moderator, &owner, AccountAction::Reinstate, ip, Some(&detail)).await?,
        ReportAction::Close => {}
        ReportAction::Authorities => {
            if reference.is_none() {
                return Err(Error::invalid("a report to the authorities needs their reference"));
            }
        }
        ReportAction::Dismiss => {}
    }
    let audit_detail = match reference {
        Some(r) => format!("{detail}: {r}"),
        None => detail.clone(),
    };
    audit(state, moderator, &format!("report_{}", action.name()), &owner.id, ip, Some(&audit_detail)).await;
    state.store.resolve_report(&report.id, &moderator.id, action.name(), reference).await?;
    if action == ReportAction::Close {
        // The purge takes the report with the account; the audit entry stays.
        outcome = act_on_account(state, moderator, &owner, AccountAction::Close, ip, Some(&detail)).await?;
    }
    Ok(outcome)
}

/// The image a report points to; the view is audited.
async fn reported_image(state: &AppState, moderator: &User, report_id: &str, ip: Option<std::net::IpAddr>) -> Result<Response, Error> {
    let report = state.store.report(checked_id(report_id).map_err(|e| e.0)?).await?;
    let asset = state.store.get_asset(&report.owner_id, &report.asset_id).await?;
    let bytes = state.blobs.get(&asset.storage_key).await?.ok_or_else(Error::not_found)?;
    audit(state, moderator, "reported_image_viewed", &report.owner_id, ip, Some(&format!("report {} asset {}", report.id, asset.id))).await;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&asset.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

// ---------------------------------------------------------------------------
// Reports by users.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub asset_id: String,
    pub reason: String,
}

/// `POST /api/v1/reports`: any signed-in account reports an image.
pub async fn create_report(State(state): State<AppState>, api: ApiUser, JsonBody(body): JsonBody<ReportBody>) -> ApiResult<Response> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(Error::invalid("give a reason of 1 to 1000 characters").into());
    }
    let report = state.store.create_report(Some(api.user.id.as_str()), checked_id(&body.asset_id)?, reason).await?;
    tracing::info!(report = %report.id, "image reported");
    Ok((StatusCode::CREATED, Json(json!({ "id": report.id, "status": report.status }))).into_response())
}

// ---------------------------------------------------------------------------
// The admin API.

#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

pub async fn api_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    QueryParams(q): QueryParams<UsersQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let users = state.store.search_users(q.q.as_deref().unwrap_or(""), q.limit.unwrap_or(50).clamp(1, 500)).await?;
    Ok(Json(json!({ "items": users })))
}

#[derive(Debug, Serialize)]
struct UserDetail {
    summary: UserSummary,
    assets: i64,
    tasks: Vec<serde_json::Value>,
    ledger: Vec<store::LedgerEntry>,
    sessions: Vec<store::Session>,
    two_factor: bool,
}

async fn user_detail(state: &AppState, id: &str) -> Result<UserDetail, Error> {
    let id = checked_id(id).map_err(|e| e.0)?;
    let summary = state.store.search_users(id, 1).await?.into_iter().find(|u| u.user.id == id).ok_or_else(Error::not_found)?;
    // Task metadata only: prompts stay out of the console.
    let tasks = state
        .store
        .list_tasks(id, None, 20)
        .await?
        .items
        .iter()
        .map(|t| {
            json!({ "id": t.id, "kind": t.kind, "status": t.status.as_str(), "model": t.model, "cost": t.cost, "created_at": t.created_at })
        })
        .collect();
    Ok(UserDetail {
        assets: state.store.asset_count(id).await?,
        tasks,
        ledger: state.store.ledger_entries(id, None, 20).await?.items,
        sessions: state.store.sessions_of_user(id).await?,
        two_factor: state.store.totp_of_user(id).await?.is_some(),
        summary,
    })
}

pub async fn api_user(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let detail = user_detail(&state, &id).await?;
    Ok(Json(serde_json::to_value(detail).map_err(|e| Error::internal(e.to_string()))?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn api_user_action(
    State(state): State<AppState>,
    ctx: Ctx,
    api: AdminUser,
    Path((id, action)): Path<(String, String)>,
    JsonBody(body): JsonBody<ActionBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let action = AccountAction::parse(&action)?;
    let user = target(&state, &api.user, &id).await?;
    let outcome = act_on_account(&state, &api.user, &user, action, ctx.ip, body.reason.as_deref()).await?;
    Ok(Json(serde_json::to_value(outcome).map_err(|e| Error::internal(e.to_string()))?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

pub async fn api_set_role(
    State(state): State<AppState>,
    ctx: Ctx,
    api: AdminUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RoleBody>,
) -> ApiResult<StatusCode> {
    let user = target(&state, &api.user, &id).await?;
    change_role(&state, &api.user, &user, &body.role, ctx.ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Stats {
    queued: i64,
    tasks: Vec<TaskStat>,
    open_reports: usize,
    open_reviews: usize,
    /// Breaker state, in-flight and waiting counts per provider.
    providers: Vec<engines::ProviderHealth>,
}

async fn stats(state: &AppState) -> Result<Stats, Error> {
    Ok(Stats {
        queued: state.store.queued_count().await?,
        tasks: state.store.task_stats().await?,
        open_reports: state.store.reports(Some("open"), 1000).await?.len(),
        open_reviews: state.store.moderation_events(Some("open"), None, 1000).await?.len(),
        providers: state.engines.health(),
    })
}

pub async fn api_stats(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(serde_json::to_value(stats(&state).await?).map_err(|e| Error::internal(e.to_string()))?))
}

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    pub status: Option<String>,
}

pub async fn api_reports(
    State(state): State<AppState>,
    _staff: StaffUser,
    QueryParams(q): QueryParams<StatusQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let reports = state.store.reports(Some(q.status.as_deref().unwrap_or("open")), 200).await?;
    Ok(Json(json!({ "items": reports })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportActionBody {
    pub action: String,
    #[serde(default)]
    pub reference: Option<String>,
}

pub async fn api_report_action(
    State(state): State<AppState>,
    ctx: Ctx,
    api: StaffUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReportActionBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let action = ReportAction::parse(&body.action)?;
    let outcome = act_on_report(&state, &api.user, &id, action, body.reference.as_deref(), ctx.ip).await?;
    Ok(Json(serde_json::to_value(outcome).map_err(|e| Error::internal(e.to_string()))?))
}

pub async fn api_report_image(State(state): State<AppState>, ctx: Ctx, api: StaffUser, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(reported_image(&state, &api.user, &id, ctx.ip).await?)
}

pub async fn api_moderation_events(
    State(state): State<AppState>,
    _staff: StaffUser,
    QueryParams(q): QueryParams<StatusQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let events = state.store.moderation_events(Some(q.status.as_deref().unwrap_or("open")), None, 200).await?;
    Ok(Json(json!({ "items": events })))
}

pub async fn api_event_reviewed(State(state): State<AppState>, ctx: Ctx, api: StaffUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store.mark_moderation_event_reviewed(checked_id(&id)?, &api.user.id).await?;
    audit(&state, &api.user, "moderation_event_reviewed", &id, ctx.ip, None).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Pages.

/// The signed-in staff member, or the not-found page for everyone else.
pub(crate) async fn staff(ctx: &Ctx, admin_only: bool) -> Result<&User, Response> {
    match &ctx.user {
        Some(user) if allowed(user, admin_only) => Ok(user),
        _ => Err(crate::pages::not_found_page(ctx)),
    }
}

fn time(lang: &Lang, ms: Option<i64>) -> String {
    ms.map(|at| lang.time_html(at)).unwrap_or_else(|| "—".into())
}

fn notice_and_error(lang: &Lang, notice: Option<&str>, error: Option<&Error>) -> String {
    let notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(&lang.t(n)))).unwrap_or_default();
    notice + &error.map(|e| error_box(lang, e)).unwrap_or_default()
}

fn csrf_input(ctx: &Ctx) -> String {
    format!(r#"<input type="hidden" name="_csrf" value="{}">"#, esc(&ctx.csrf))
}

pub async fn dashboard(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let user = match staff(&ctx, false).await {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let t = |k: &str| esc(&ctx.lang.t(k));
    let mut body = format!(r#"<section class="card"><h1>{}</h1><ul class="admin-links">"#, t("admin.title"));
    body.push_str(&format!(r#"<li><a href="/admin/moderation">{}</a></li>"#, t("admin.moderation")));
    if user.role == "admin" {
        for (href, key) in [
            ("/admin/users", "admin.users"),
            ("/admin/credits", "admin.credits"),
            ("/admin/requests", "admin.requests"),
            ("/admin/child-reports", "admin.child_reports"),
        ] {
            body.push_str(&format!(r#"<li><a href="{href}">{}</a></li>"#, t(key)));
        }
        body.push_str("</ul>");
        let s = stats(&state).await?;
        body.push_str(&format!(
            r#"<h2>{}</h2><p>{}: <strong class="queued">{}</strong> · {}: {} · {}: {}</p>"#,
            t("admin.queue"),
            t("admin.queued"),
            s.queued,
            t("admin.open_reports"),
            s.open_reports,
            t("admin.open_reviews"),
            s.open_reviews
        ));
        body.push_str(&format!(
            r#"<div class="table-wrap"><table class="stats"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>"#,
            t("admin.status"),
            t("admin.model"),
            t("admin.count")
        ));
        for row in &s.tasks {
            body.push_str(&format!(
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
                esc(&row.status),
                esc(row.model.as_deref().unwrap_or("—")),
                row.count
            ));
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&format!(
            r#"<h2>{}</h2><div class="table-wrap"><table class="stats providers"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>"#,
            t("admin.providers"),
            t("admin.provider"),
            t("admin.provider_state"),
            t("admin.in_flight"),
            t("admin.succeeded_failed"),
            t("admin.last_error")
        ));
        for p in &s.providers {
            body.push_str(&format!(
                r#"<tr><td>{} ({})</td><td>{}</td><td class="num">{} / {}</td><td class="num">{} / {}</td><td>{}</td></tr>"#,
                esc(&p.name),
                esc(&p.kind),
                p.state,
                p.in_flight,
                p.max_concurrency,
                p.succeeded,
                p.failed,
                esc(p.last_error.as_deref().unwrap_or("—"))
            ));
        }
        body.push_str("</tbody></table></div>");
    } else {
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin.title"), &body))
}

pub async fn users_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<UsersQuery>) -> ApiResult<Response> {
    if let Err(r) = staff(&ctx, true).await {
        return Ok(r);
    }
    let t = |k: &str| esc(&ctx.lang.t(k));
    let query = q.q.unwrap_or_default();
    let users = state.store.search_users(&query, 100).await?;
    let mut rows = String::new();
    for u in &users {
        rows.push_str(&format!(
            r#"<tr><td><a href="/admin/users/{id}">{email}</a></td><td>{name}</td><td>{status}</td><td>{role}</td><td class="num">{bal}</td><td>{created}</td><td>{seen}</td></tr>"#,
            id = esc(&u.user.id),
            email = esc(&u.user.email),
            name = esc(&u.user.name),
            status = esc(&u.user.status),
            role = esc(&u.user.role),
            bal = ctx.lang.number(u.available),
            created = time(ctx.lang, Some(u.user.created_at)),
            seen = time(ctx.lang, u.last_seen_at),
        ));
    }
    let body = format!(
        r#"<section class="card"><h1>{title}</h1>
<form method="get" action="/admin/users" class="row"><label>{search}<input name="q" value="{q}" maxlength="320"></label><button>{go}</button></form>
<div class="table-wrap"><table class="users"><thead><tr><th>{email}</th><th>{name}</th><th>{status}</th><th>{role}</th><th>{balance}</th><th>{created}</th><th>{seen}</th></tr></thead><tbody>{rows}</tbody></table></div></section>"#,
        title = t("admin.users"),
        search = t("admin.search"),
        q = esc(&query),
        go = t("admin.go"),
        email = t("admin.email"),
        name = t("admin.name"),
        status = t("admin.status"),
        role = t("admin.role"),
        balance = t("admin.balance"),
        created = t("admin.created"),
        seen = t("admin.last_seen"),
    );
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin.users"), &body))
}

async fn user_body(state: &AppState, ctx: &Ctx, id: &str, notice: Option<&str>, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let d = user_detail(state, id).await?;
    let u = &d.summary.user;
    let mut tasks = String::new();
    for task in &d.tasks {
        tasks.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(task["id"].as_str().unwrap_or("")),
            esc(task["kind"].as_str().unwrap_or("")),
            esc(task["status"].as_str().unwrap_or("")),
            esc(task["model"].as_str().unwrap_or("—")),
            task["cost"],
            time(ctx.lang, task["created_at"].as_i64()),
        ));
    }
    let mut ledger = String::new();
    for e in &d.ledger {
        ledger.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            time(ctx.lang, Some(e.created_at)),
            esc(&e.kind),
            e.amount,
            esc(&e.reason)
        ));
    }
    let mut sessions = String::new();
    for s in &d.sessions {
        sessions.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(ctx.lang, Some(s.created_at)),
            time(ctx.lang, Some(s.last_seen_at)),
            esc(s.ip.as_deref().unwrap_or("—"))
        ));
    }
    let action = |name: &str, label: &str| {
        format!(
            r#"<form method="post" action="/admin/users/{id}/action" class="inline">{csrf}<input type="hidden" name="action" value="{name}"><button>{label}</button></form>"#,
            id = esc(&u.id),
            csrf = csrf_input(ctx),
            label = t(label)
        )
    };
    let mut actions = String::new();
    actions.push_str(&if u.status == "suspended" { action("reinstate", "admin.reinstate") } else { action("suspend", "admin.suspend") });
    if d.two_factor {
        actions.push_str(&action("reset-2fa", "admin.reset_2fa"));
    }
    actions.push_str(&action("close", "admin.close"));
    let roles: String = store::ROLES
        .iter()
        .map(|r| format!(r#"<option value="{r}"{}>{r}</option>"#, if *r == u.role { " selected" } else { "" }))
        .collect();
    Ok(format!(
        r#"<section class="card"><h1>{email}</h1>{flash}
<dl><dt>{id_l}</dt><dd><code>{id}</code></dd><dt>{name_l}</dt><dd>{name}</dd><dt>{status_l}</dt><dd class="status">{status}</dd><dt>{role_l}</dt><dd>{role}</dd>
<dt>{balance_l}</dt><dd>{available} / {held} / {debt}</dd><dt>{assets_l}</dt><dd>{assets}</dd><dt>{created_l}</dt><dd>{created}</dd><dt>{seen_l}</dt><dd>{seen}</dd></dl>
<div class="actions">{actions}</div>
<form method="post" action="/admin/users/{id}/action" class="row">{csrf}<input type="hidden" name="action" value="role"><label>{role_l}<select name="role">{roles}</select></label><button>{save}</button></form>
<form method="post" action="/admin/credits" class="row">{csrf}<input type="hidden" name="account" value="{email}"><label>{amount_l}<input name="amount" type="number" required step="1"></label><label>{reason_l}<input name="reason" required maxlength="200"></label><button>{adjust}</button></form>
<h2>{tasks_l}</h2><div class="table-wrap"><table><tbody>{tasks}</tbody></table></div>
<h2>{ledger_l}</h2><div class="table-wrap"><table><tbody>{ledger}</tbody></table></div>
<h2>{sessions_l}</h2><div class="table-wrap"><table><tbody>{sessions}</tbody></table></div></section>"#,
        email = esc(&u.email),
        flash = notice_and_error(ctx.lang, notice, error),
        id_l = t("admin.id"),
        id = esc(&u.id),
        name_l = t("admin.name"),
        name = esc(&u.name),
        status_l = t("admin.status"),
        status = esc(&u.status),
        role_l = t("admin.role"),
        role = esc(&u.role),
        balance_l = t("admin.balance_detail"),
        available = d.summary.available,
        held = d.summary.held,
        debt = d.summary.debt,
        assets_l = t("admin.assets"),
        assets = d.assets,
        created_l = t("admin.created"),
        created = time(ctx.lang, Some(u.created_at)),
        seen_l = t("admin.last_seen"),
        seen = time(ctx.lang, d.summary.last_seen_at),
        csrf = csrf_input(ctx),
        save = t("admin.save"),
        amount_l = t("admin.amount"),
        reason_l = t("admin.reason"),
        adjust = t("admin.adjust"),
        tasks_l = t("admin.tasks"),
        ledger_l = t("admin.ledger"),
        sessions_l = t("admin.sessions"),
    ))
}

pub async fn user_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    if let Err(r) = staff(&ctx, true).await {
        return Ok(r);
    }
    let body = user_body(&state, &ctx, &id, None, None).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin.users"), &body))
}

#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn user_action_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    let actor = match staff(&ctx, true).await {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let user = target(&state, actor, &id).await?;
        if form.action == "role" {
            change_role(&state, actor, &user, &form.role, ctx.ip).await?;
            return Ok("admin.done");
        }
        let action = AccountAction::parse(&form.action)?;
        act_on_account(&state, actor, &user, action, ctx.ip, None).await?;
        Ok::<&str, Error>(if action == AccountAction::Close { "admin.closed" } else { "admin.done" })
    };
    match attempt.await {
        Ok("admin.closed") => Ok(Redirect::to("/admin/users").into_response()),
        Ok(notice) => {
            let body = user_body(&state, &ctx, &id, Some(notice), None).await?;
            Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin.users"), &body))
        }
        Err(e) => {
            let body = user_body(&state, &ctx, &id, None, Some(&e)).await?;
            Ok(page(&ctx, status_of(&e), &ctx.lang.t("admin.users"), &body))
        }
    }
}

async fn moderation_body(state: &AppState, ctx: &Ctx, notice: Option<&str>, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let reports: Vec<Report> = state.store.reports(Some("open"), 200).await?;
    let events: Vec<ModerationEvent> = state.store.moderation_events(Some("open"), None, 200).await?;
    let options: String = ReportAction::ALL
        .iter()
        .map(|(name, _)| format!(r#"<option value="{name}">{}</option>"#, t(&format!("admin.action_{name}"))))
        .collect();
    let mut report_rows = String::new();
    for r in &reports {
        report_rows.push_str(&format!(
            r#"<tr data-report="{id}"><td>{created}</td><td>{reason}</td><td><code>{owner}</code></td><td><a href="/admin/reports/{id}/image">{view}</a></td>
<td><form method="post" action="/admin/reports/{id}/action" class="row">{csrf}<select name="action">{options}</select><input name="reference" maxlength="200" placeholder="{reference}"><button>{apply}</button></form></td></tr>"#,
            id = esc(&r.id),
            created = time(ctx.lang, Some(r.created_at)),
            reason = esc(&r.reason),
            owner = esc(&r.owner_id),
            view = t("admin.view_image"),
            csrf = csrf_input(ctx),
            reference = t("admin.reference"),
            apply = t("admin.apply"),
        ));
    }
    if report_rows.is_empty() {
        report_rows = format!(r#"<tr><td colspan="5">{}</td></tr>"#, t("admin.queue_empty"));
    }
    let mut event_rows = String::new();
    for e in &events {
        event_rows.push_str(&format!(
            r#"<tr><td>{created}</td><td>{category}</td><td><code>{rule}</code></td><td><code>{user}</code></td><td>{prompt}</td>
<td><form method="post" action="/admin/moderation/events/{id}/reviewed">{csrf}<button>{done}</button></form></td></tr>"#,
            id = esc(&e.id),
            created = time(ctx.lang, Some(e.created_at)),
            category = esc(&e.category),
            rule = esc(&e.rule_id),
            user = esc(&e.user_id),
            prompt = e.prompt.as_deref().map(esc).unwrap_or_else(|| t("admin.prompt_not_kept")),
            csrf = csrf_input(ctx),
            done = t("admin.reviewed"),
        ));
    }
    if event_rows.is_empty() {
        event_rows = format!(r#"<tr><td colspan="6">{}</td></tr>"#, t("admin.queue_empty"));
    }
    Ok(format!(
        r#"<section class="card"><h1>{title}</h1>{flash}<h2>{reports_l}</h2><div class="table-wrap"><table class="reports"><tbody>{report_rows}</tbody></table></div>
<h2>{reviews_l}</h2><div class="table-wrap"><table class="reviews"><tbody>{event_rows}</tbody></table></div></section>"#,
        title = t("admin.moderation"),
        flash = notice_and_error(ctx.lang, notice, error),
        reports_l = t("admin.open_reports"),
        reviews_l = t("admin.open_reviews"),
    ))
}

pub async fn moderation_page(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    if let Err(r) = staff(&ctx, false).await {
        return Ok(r);
    }
    let body = moderation_body(&state, &ctx, None, None).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin.moderation"), &body))
}

pub async fn report_image_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let moderator = match staff(&ctx, false).await {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    Ok(reported_image(&state, moderator, &id, ctx.ip).await?)
}

pub async fn report_action_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    let moderator = match staff(&ctx, false).await {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let action = ReportAction::parse(&form.action)?;
        act_on_report(&state, moderator, &id, action, Some(&form.reference), ctx.ip).await
    };
    let result = attempt.await;
    let body = moderation_body(&state, &ctx, result.is_ok().then_some("admin.done"), result.as_ref().err()).await?;
    let status = result.as_ref().err().map(status_of).unwrap_or(StatusCode::OK);
    Ok(page(&ctx, status, &ctx.lang.t("admin.moderation"), &body))
}

pub async fn event_reviewed_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    let moderator = match staff(&ctx, false).await {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        state.store.mark_moderation_event_reviewed(checked_id(&id).map_err(|e| e.0)?, &moderator.id).await?;
        audit(&state, moderator, "moderation_event_reviewed", &id, ctx.ip, None).await;
        Ok::<_, Error>(())
    };
    let result = attempt.await;
    let body = moderation_body(&state, &ctx, result.is_ok().then_some("admin.done"), result.as_ref().err()).await?;
    let status = result.as_ref().err().map(status_of).unwrap_or(StatusCode::OK);
    Ok(page(&ctx, status, &ctx.lang.t("admin.moderation"), &body))
}
