//! Support tickets (C26), kept with the account and deleted with it, and
//! reports that an account belongs to a child under 13 (C05): anyone may
//! file one, an admin reviews it, and a confirmed report purges the account
//! at once, without grace.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::{Error, Result};
use serde::Deserialize;
use store::{ChildReport, User, CHILD_REPORT_DETAILS_MAX, TICKET_BODY_MAX, TICKET_SUBJECT_MAX};

use crate::admin::require_admin;
use crate::api::{checked_id, QueryParams};
use crate::auth;
use crate::auth_pages::{message, NoticeQuery};
use crate::context::Ctx;
use crate::error::ApiResult;
use crate::pages::{check_csrf, error_box, esc, not_found_page, page, signed_in, status_of, CsrfOnly, FormBody};
use crate::AppState;

fn t(ctx: &Ctx, key: &str) -> String {
    esc(&ctx.lang.t(key))
}

// ------------------------------------------------------------------ tickets

#[derive(Debug, Default, Deserialize)]
pub struct TicketForm {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub _csrf: String,
}

async fn support_body(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    form: &TicketForm,
    notice: Option<&str>,
    error: Option<&Error>,
) -> Result<String> {
    let tickets = state.store.tickets_of_user(&user.id).await?;
    let list: String = tickets
        .iter()
        .map(|ticket| {
            format!(
                r#"<li class="ticket"><h3>{subject}</h3><p>{at} <span class="badge">{status}</span></p><p class="body">{body}</p></li>"#,
                subject = esc(&ticket.subject),
                at = ctx.lang.time_html(ticket.created_at),
                status = t(ctx, &format!("support.status_{}", ticket.status)),
                body = esc(&ticket.body),
            )
        })
        .collect();
    let list = if list.is_empty() { format!("<p>{}</p>", t(ctx, "support.none")) } else { format!(r#"<ul class="tickets">{list}</ul>"#) };
    Ok(format!(
        r#"<section class="card"><h1>{title}</h1>{notice}{error}<p>{lead}</p>
<form method="post" action="/support" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{subject_l}<input name="subject" required maxlength="{subject_max}" value="{subject}"></label>
<label>{body_l}<textarea name="body" rows="6" required maxlength="{body_max}">{body}</textarea></label>
<button>{submit}</button></form>
<h2>{mine}</h2>{list}</section>"#,
        title = t(ctx, "support.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "support.lead"),
        csrf = esc(&ctx.csrf),
        subject_l = t(ctx, "support.subject"),
        subject_max = TICKET_SUBJECT_MAX,
        subject = esc(&form.subject),
        body_l = t(ctx, "support.body"),
        body_max = TICKET_BODY_MAX,
        body = esc(&form.body),
        submit = t(ctx, "support.submit"),
        mine = t(ctx, "support.mine"),
    ))
}

pub async fn support_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<NoticeQuery>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let notice = (q.notice.as_deref() == Some("sent")).then(|| ctx.lang.t("support.sent"));
    let body = support_body(&state, &ctx, user, &TicketForm::default(), notice.as_deref(), None).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("support.title"), &body))
}

pub async fn create_ticket(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TicketForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        state.store.create_ticket(&user.id, &form.subject, &form.body).await
    };
    match attempt.await {
        Ok(ticket) => {
            tracing::info!(user = %user.id, ticket = %ticket.id, "support ticket filed");
            Ok(Redirect::to("/support?notice=sent").into_response())
        }
        Err(e) => {
            let body = support_body(&state, &ctx, user, &form, None, Some(&e)).await?;
            Ok(page(&ctx, status_of(&e), &ctx.lang.t("support.title"), &body))
        }
    }
}

// ------------------------------------------------------------ child reports

#[derive(Debug, Default, Deserialize)]
pub struct ChildReportForm {
    /// The reported account: its email address or its id.
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub _csrf: String,
}

fn report_body(ctx: &Ctx, form: &ChildReportForm, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<form method="post" action="/report-child" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{account_l}<input name="account" required maxlength="320" value="{account}"></label>
<label>{details_l}<textarea name="details" rows="5" required maxlength="{details_max}">{details}</textarea></label>
<button>{submit}</button></form></section>"#,
        title = t(ctx, "child_report.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "child_report.lead"),
        csrf = esc(&ctx.csrf),
        account_l = t(ctx, "child_report.account"),
        account = esc(&form.account),
        details_l = t(ctx, "child_report.details"),
        details_max = CHILD_REPORT_DETAILS_MAX,
        details = esc(&form.details),
        submit = t(ctx, "child_report.submit"),
    )
}

pub async fn report_form(ctx: Ctx) -> Response {
    page(&ctx, StatusCode::OK, &ctx.lang.t("child_report.title"), &report_body(&ctx, &ChildReportForm::default(), None))
}

/// Files a report. The answer is the same whether or not the account
/// exists (no account enumeration); only a report naming an existing
/// account is stored, by its id.
async fn file_child_report(state: &AppState, ctx: &Ctx, form: &ChildReportForm) -> Result<()> {
    let details = form.details.trim();
    if details.is_empty() || details.chars().count() > CHILD_REPORT_DETAILS_MAX {
        return Err(Error::invalid(format!("details are required, at most {CHILD_REPORT_DETAILS_MAX} characters")));
    }
    let named = form.account.trim();
    let account = if domain::ids::is_valid_id(named) {
        state.store.user_by_id(named).await?
    } else {
        match domain::account::normalize_email(named) {
            Ok(email) => state.store.user_by_email(&email).await?,
            Err(_) => return Err(Error::invalid("name the account by its email address or its id")),
        }
    };
    let reporter = ctx.user.as_ref().map(|u| u.id.as_str());
    match account {
        Some(account) => {
            let report = state.store.create_child_report(&account.id, reporter, details).await?;
            tracing::info!(report = %report.id, "child account report filed");
        }
        None => tracing::info!("child account report names no account"),
    }
    Ok(())
}

pub async fn report_child(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<ChildReportForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        file_child_report(&state, &ctx, &form).await
    };
    match attempt.await {
        Ok(()) => message(&ctx, StatusCode::OK, "child_report.received_title", "child_report.received", ""),
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("child_report.title"), &report_body(&ctx, &form, Some(&e))),
    }
}

// ------------------------------------------------- admin review of reports

/// The signed-in admin, or the plain 404 page for anyone else (signed out
/// included), so the admin pages do not reveal themselves.
#[allow(clippy::result_large_err)]
async fn admin_of(ctx: &Ctx) -> std::result::Result<&User, Response> {
    match ctx.user.as_ref().filter(|u| require_admin(u).is_ok()) {
        Some(admin) => Ok(admin),
        None => Err(not_found_page(ctx)),
    }
}

async fn report_row(state: &AppState, ctx: &Ctx, report: &ChildReport) -> Result<String> {
    let account = state.store.user_by_id(&report.account_id).await?;
    let who = account.as_ref().map_or_else(|| report.account_id.clone(), |u| format!("{} ({})", u.email, u.id));
    let actions = if report.status == "open" {
        format!(
            r#"<form method="post" action="/admin/child-reports/{id}/confirm" class="inline" data-confirm="{confirm_q}"><input type="hidden" name="_csrf" value="{csrf}"><button class="danger">{confirm}</button></form>
<form method="post" action="/admin/child-reports/{id}/dismiss" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><button class="secondary">{dismiss}</button></form>"#,
            id = report.id,
            csrf = esc(&ctx.csrf),
            confirm_q = t(ctx, "admin_child_reports.confirm_question"),
            confirm = t(ctx, "admin_child_reports.confirm"),
            dismiss = t(ctx, "admin_child_reports.dismiss"),
        )
    } else {
        String::new()
    };
    Ok(format!(
        r#"<tr id="report-{id}"><td>{at}</td><td>{who}</td><td>{details}</td><td><span class="badge">{status}</span></td><td>{actions}</td></tr>"#,
        id = report.id,
        at = ctx.lang.time_html(report.created_at),
        who = esc(&who),
        details = esc(&report.details),
        status = t(ctx, &format!("admin_child_reports.status_{}", report.status)),
    ))
}

async fn admin_body(state: &AppState, ctx: &Ctx, notice: Option<&str>) -> Result<String> {
    let mut rows = String::new();
    for report in state.store.child_reports(200).await? {
        rows.push_str(&report_row(state, ctx, &report).await?);
    }
    let table = if rows.is_empty() {
        format!("<p>{}</p>", t(ctx, "admin_child_reports.none"))
    } else {
        format!(
            r#"<div class="table-wrap"><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>"#,
            t(ctx, "admin_child_reports.received"),
            t(ctx, "admin_child_reports.account"),
            t(ctx, "admin_child_reports.details"),
            t(ctx, "admin_child_reports.status"),
        )
    };
    Ok(format!(
        r#"<section class="card"><h1>{}</h1>{}<p>{}</p>{table}</section>"#,
        t(ctx, "admin_child_reports.title"),
        notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        t(ctx, "admin_child_reports.lead"),
    ))
}

pub async fn admin_reports(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<NoticeQuery>) -> ApiResult<Response> {
    if let Err(not_found) = admin_of(&ctx).await {
        return Ok(not_found);
    }
    let notice = match q.notice.as_deref() {
        Some("confirmed") => Some(ctx.lang.t("admin_child_reports.confirmed")),
        Some("dismissed") => Some(ctx.lang.t("admin_child_reports.dismissed")),
        _ => None,
    };
    let body = admin_body(&state, &ctx, notice.as_deref()).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("admin_child_reports.title"), &body))
}

/// Confirms a report: the account is purged at once, without grace, and
/// the decision is audited (under the tombstone id once purged).
pub async fn confirm_report(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<CsrfOnly>,
) -> ApiResult<Response> {
    let admin = match admin_of(&ctx).await {
        Ok(admin) => admin,
        Err(not_found) => return Ok(not_found),
    };
    check_csrf(&ctx, &form._csrf)?;
    let report = state.store.review_child_report(checked_id(&id)?, "confirmed", &admin.id, state.config.clock.now_ms()).await?;
    auth::audit(&state, Some(&admin.id), "child_report_confirmed", Some(&report.account_id), ctx.ip, Some(&report.id)).await;
    let purged = privacy::purge_account(&state.store, state.objects.as_ref(), &report.account_id, Some(&admin.id)).await?;
    tracing::info!(report = %report.id, objects = purged.objects_deleted, "child account purged");
    Ok(Redirect::to("/admin/child-reports?notice=confirmed").into_response())
}

pub async fn dismiss_report(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<CsrfOnly>,
) -> ApiResult<Response> {
    let admin = match admin_of(&ctx).await {
        Ok(admin) => admin,
        Err(not_found) => return Ok(not_found),
    };
    check_csrf(&ctx, &form._csrf)?;
    let report = state.store.review_child_report(checked_id(&id)?, "dismissed", &admin.id, state.config.clock.now_ms()).await?;
    auth::audit(&state, Some(&admin.id), "child_report_dismissed", Some(&report.account_id), ctx.ip, Some(&report.id)).await;
    Ok(Redirect::to("/admin/child-reports?notice=dismissed").into_response())
}
