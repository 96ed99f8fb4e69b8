//! Admin › Requests (C38): every data subject request with its kind,
//! status and legal due date, overdue ones first; admins log requests that
//! arrive by mail and move each one along (received → in_progress →
//! completed | denied with a reason), every change audited. Non-admins get
//! 404 from every route, pages and API alike.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::rights::{is_open, STATUSES};
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{NewRightsRequest, RightsRequest, User};

use crate::admin::require_admin;
use crate::api::{checked_id, JsonBody};
use crate::auth::audit;
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, FormBody};
use crate::privacy_center::{kind_options, status_badge};
use crate::AppState;

/// Requests shown (and returned) at most.
const LIST_LIMIT: i64 = 500;

/// Logs a request received by mail; linked to the account with that
/// address, if there is one.
async fn log_request(
    state: &AppState,
    admin: &User,
    ip: Option<std::net::IpAddr>,
    contact: &str,
    kind: &str,
    details: &str,
) -> Result<RightsRequest, Error> {
    let contact = domain::account::normalize_email(contact)?;
    let account = state.store.user_by_email(&contact).await?;
    let request = state
        .store
        .file_rights_request(NewRightsRequest {
            user_id: account.as_ref().map(|u| u.id.clone()),
            contact: Some(contact),
            kind: kind.to_string(),
            channel: "email".into(),
            details: details.to_string(),
            logged_by: Some(admin.id.clone()),
            received_at: state.config.clock.now_ms(),
        })
        .await?;
    let target = request.user_id.as_deref().unwrap_or(&request.id);
    audit(state, Some(&admin.id), "rights_request_logged", Some(target), ip, Some(&format!("{} {}", request.kind, request.id))).await;
    Ok(request)
}

/// Moves a request to `status`; the audit entry names both ends of the move.
async fn change_status(
    state: &AppState,
    admin: &User,
    ip: Option<std::net::IpAddr>,
    id: &str,
    status: &str,
    reason: Option<&str>,
) -> Result<RightsRequest, Error> {
    let (before, after) = state.store.set_rights_request_status(id, status, reason, state.config.clock.now_ms()).await?;
    let target = after.user_id.as_deref().unwrap_or(&after.id);
    let detail = format!("{} {}: {} -> {}", after.kind, after.id, before.status, after.status);
    audit(state, Some(&admin.id), "rights_request_updated", Some(target), ip, Some(&detail)).await;
    Ok(after)
}

fn request_json(r: &RightsRequest, now: i64) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["overdue"] = json!(is_open(&r.status) && r.due_at < now);
    v
}

pub async fn api_list(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<Value>> {
    require_admin(&api.user)?;
    let now = state.config.clock.now_ms();
    let requests = state.store.all_rights_requests(now, LIST_LIMIT).await?;
    Ok(Json(json!({ "items": requests.iter().map(|r| request_json(r, now)).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBody {
    pub contact: String,
    pub kind: String,
    #[serde(default)]
    pub details: String,
}

pub async fn api_log(
    State(state): State<AppState>,
    ctx: Ctx,
    api: ApiUser,
    JsonBody(body): JsonBody<LogBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_admin(&api.user)?;
    let request = log_request(&state, &api.user, ctx.ip, &body.contact, &body.kind, &body.details).await?;
    Ok((StatusCode::CREATED, Json(request_json(&request, state.config.clock.now_ms()))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub status: String,
    pub reason: Option<String>,
}

pub async fn api_status(
    State(state): State<AppState>,
    ctx: Ctx,
    api: ApiUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StatusBody>,
) -> ApiResult<Json<Value>> {
    require_admin(&api.user)?;
    let request = change_status(&state, &api.user, ctx.ip, checked_id(&id)?, &body.status, body.reason.as_deref()).await?;
    Ok(Json(request_json(&request, state.config.clock.now_ms())))
}

// ---------------------------------------------------------------- page

async fn admin_body(state: &AppState, ctx: &Ctx, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let now = state.config.clock.now_ms();
    let csrf = esc(&ctx.csrf);
    let requests = state.store.all_rights_requests(now, LIST_LIMIT).await?;
    let mut rows = String::new();
    for r in &requests {
        let who = match &r.user_id {
            Some(id) => state.store.user_by_id(id).await?.map(|u| u.email).unwrap_or_default(),
            None => r.contact.clone().unwrap_or_default(),
        };
        let actions = if is_open(&r.status) {
            let next: String = STATUSES
                .iter()
                .filter(|s| domain::rights::check_transition(&r.status, s, Some("-")).is_ok())
                .map(|s| format!(r#"<option value="{s}">{}</option>"#, t(&format!("rights.status.{s}"))))
                .collect();
            format!(
                r#"<form method="post" action="/admin/requests/{id}/status" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><select name="status">{next}</select> <input name="reason" maxlength="500" placeholder="{reason_l}"> <button class="secondary">{update}</button></form>"#,
                id = r.id,
                reason_l = t("rights.reason"),
                update = t("admin_requests.update"),
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            r#"<tr data-request="{id}"><td>{received}</td><td>{due}</td><td>{kind}</td><td>{channel}</td><td>{who}</td><td>{status}</td><td>{details}</td><td>{reason}</td><td>{actions}</td></tr>"#,
            id = r.id,
            received = ctx.lang.time_html(r.received_at),
            due = ctx.lang.time_html(r.due_at),
            kind = t(&format!("rights.kind.{}", r.kind)),
            channel = t(&format!("admin_requests.channel.{}", r.channel)),
            who = esc(&who),
            status = status_badge(ctx.lang, r, now),
            details = esc(&r.details),
            reason = esc(r.reason.as_deref().unwrap_or("")),
        ));
    }
    if rows.is_empty() {
        rows = format!(r#"<tr><td colspan="9">{}</td></tr>"#, t("admin_requests.none"));
    }
    Ok(format!(
        r#"<section class="card"><h1>{title}</h1>{error}<p>{lead}</p>
<div class="table-wrap"><table class="requests"><thead><tr><th>{received}</th><th>{due}</th><th>{kind}</th><th>{channel}</th><th>{who}</th><th>{state_t}</th><th>{details}</th><th>{reason}</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>
<h2>{log_t}</h2>
<form method="post" action="/admin/requests" class="stack"><input type="hidden" name="_csrf" value="{csrf}">
<label>{contact_l}<input type="email" name="contact" required maxlength="320"></label>
<label>{kind}<select name="kind">{kinds}</select></label>
<label>{details}<textarea name="details" rows="3" maxlength="{max}"></textarea></label>
<button>{log}</button></form></section>"#,
        title = t("admin_requests.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t("admin_requests.lead"),
        received = t("rights.received"),
        due = t("rights.due"),
        kind = t("rights.kind_label"),
        channel = t("admin_requests.channel_label"),
        who = t("admin_requests.requester"),
        state_t = t("rights.state"),
        details = t("rights.details"),
        reason = t("rights.reason"),
        log_t = t("admin_requests.log_title"),
        contact_l = t("admin_requests.contact"),
        kinds = kind_options(ctx.lang, "access"),
        max = domain::rights::DETAILS_MAX_CHARS,
        log = t("admin_requests.log"),
    ))
}

/// The signed-in admin, or the response for anyone else: sign-in for
/// visitors, the ordinary 404 page for non-admins.
async fn admin_of(ctx: &Ctx) -> Result<&User, Response> {
    let user = signed_in(ctx)?;
    if require_admin(user).is_err() {
        return Err(crate::pages::not_found_page(ctx));
    }
    Ok(user)
}

async fn page_response(state: &AppState, ctx: &Ctx, error: Option<&Error>) -> ApiResult<Response> {
    let body = admin_body(state, ctx, error).await?;
    Ok(page(ctx, error.map(status_of).unwrap_or(StatusCode::OK), &ctx.lang.t("admin_requests.title"), &body))
}

pub async fn admin_page(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    if let Err(response) = admin_of(&ctx).await {
        return Ok(response);
    }
    page_response(&state, &ctx, None).await
}

#[derive(Debug, Default, Deserialize)]
pub struct LogForm {
    #[serde(default)]
    pub contact: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn log_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<LogForm>) -> ApiResult<Response> {
    let admin = match admin_of(&ctx).await {
        Ok(admin) => admin,
        Err(response) => return Ok(response),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        log_request(&state, admin, ctx.ip, &form.contact, &form.kind, &form.details).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/admin/requests").into_response()),
        Err(e) => page_response(&state, &ctx, Some(&e)).await,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn status_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<StatusForm>,
) -> ApiResult<Response> {
    let admin = match admin_of(&ctx).await {
        Ok(admin) => admin,
        Err(response) => return Ok(response),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let reason = Some(form.reason.as_str()).filter(|r| !r.trim().is_empty());
        change_status(&state, admin, ctx.ip, checked_id(&id).map_err(|e| e.0)?, &form.status, reason).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/admin/requests").into_response()),
        Err(e) => page_response(&state, &ctx, Some(&e)).await,
    }
}
