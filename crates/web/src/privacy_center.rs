//! The privacy center (`/account/privacy`): one place for every right the
//! policy promises. This module holds the hub, the data export (C35) — its
//! background build, notice mail and owner-only download — and the rights
//! requests a person files (C36–C38). Consent, email preferences, deletion
//! and support have their own pages, linked from here.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::rights::{is_open, RIGHTS_KINDS};
use domain::time::format_utc;
use domain::Error;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{Export, NewMail, NewRightsRequest, RightsRequest, User};

use crate::api::{checked_id, JsonBody, QueryParams};
use crate::auth::audit;
use crate::context::{ApiUser, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::i18n::{I18n, Lang};
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, FormBody};
use crate::AppState;

fn now(state: &AppState) -> i64 {
    state.config.clock.now_ms()
}

fn base_url(state: &AppState) -> &str {
    state.config.public_url.trim_end_matches('/')
}

fn user_lang(user: &User) -> &'static Lang {
    I18n::global().lang(user.locale.as_deref().unwrap_or("en"))
}

// ---------------------------------------------------------------- export

/// Queues an export and starts building it in the background. A second
/// request while one is waiting or being built returns that one.
async fn request_export(state: &AppState, user: &User, ip: Option<std::net::IpAddr>) -> Result<Export, Error> {
    let (export, created) = state.store.request_export(&user.id, now(state)).await?;
    if created {
        audit(state, Some(&user.id), "export_requested", Some(&user.id), ip, Some(&export.id)).await;
    }
    tokio::spawn(run_exports(state.clone()));
    Ok(export)
}

/// Builds every export waiting in the queue (or left behind by a crashed
/// build), one after the other, and mails each owner a link when theirs is
/// ready.
pub async fn run_exports(state: AppState) {
    loop {
        let claimed = state.store.claim_export(now(&state), privacy::export::EXPORT_LEASE_MS).await;
        let export = match claimed {
            Ok(Some(export)) => export,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "export queue unreadable"),
        };
        if let Err(e) = build_one(&state, &export).await {
            tracing::warn!(export = %export.id, error = %e, "export not built");
        }
    }
}

async fn build_one(state: &AppState, export: &Export) -> Result<(), Error> {
    // The account's row cascades to its exports: no user, nothing to build.
    let Some(user) = state.store.user_by_id(&export.user_id).await? else { return Ok(()) };
    let lang = user_lang(&user);
    let readme = readme(state, lang);
    let built =
        privacy::export::build_export(&state.store, state.blobs.as_ref(), &state.config.privacy, export, &readme, now(state)).await?;
    if built.as_ref().is_some_and(|e| e.status == "ready") {
        let mail = NewMail {
            user_id: Some(user.id.clone()),
            kind: "export_ready".into(),
            to_addr: user.email.clone(),
            subject: lang.t("mail.export_ready.subject"),
            body_text: lang
                .t("mail.export_ready.body")
                .replace("{name}", &user.name)
                .replace("{days}", &state.config.privacy.export_days.to_string())
                .replace("{url}", &format!("{}/account/privacy#export", base_url(state))),
        };
        state.store.enqueue_mail(mail).await?;
    }
    Ok(())
}

/// Who, besides this deployment, receives personal data: the processors
/// that are switched on.
fn recipients(state: &AppState, lang: &Lang) -> String {
    let mut lines = Vec::new();
    if state.config.billing.enabled && state.config.billing.stripe_enabled() {
        lines.push(lang.t("export.recipient_payments").replace("{name}", "Stripe"));
    }
    if state.config.billing.enabled && state.config.billing.creem_enabled() {
        lines.push(lang.t("export.recipient_payments").replace("{name}", "Creem"));
    }
    if state.config.provider != "procedural" {
        lines.push(lang.t("export.recipient_ai").replace("{name}", &state.config.provider));
    }
    lines.push(lang.t("export.recipient_infrastructure"));
    lines.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
}

/// The GDPR Art. 15 information that travels with the archive: purposes,
/// categories, recipients, retention, rights and sources, from the live
/// configuration.
pub fn readme(state: &AppState, lang: &Lang) -> String {
    let privacy = &state.config.privacy;
    let dpo = if privacy.dpo_contact.is_empty() { &privacy.operator_contact } else { &privacy.dpo_contact };
    let files: String = privacy::export::SECTIONS
        .iter()
        .map(|f| format!("- {f}: {}\n", lang.t(&format!("export.file.{}", f.trim_end_matches(".json")))))
        .collect();
    lang.t("export.readme")
        .replace("{operator}", &privacy.operator_name)
        .replace("{contact}", &privacy.operator_contact)
        .replace("{dpo}", dpo)
        .replace("{files}", files.trim_end())
        .replace("{recipients}", &recipients(state, lang))
        .replace("{export_days}", &privacy.export_days.to_string())
        .replace("{grace_days}", &privacy.deletion_grace_days.to_string())
        .replace("{analytics_days}", &privacy.analytics_raw_days.to_string())
        .replace("{log_days}", &privacy.request_log_days.to_string())
        .replace("{url}", base_url(state))
}

/// A finished archive the owner may still download.
fn downloadable(export: &Export, now: i64) -> bool {
    export.status == "ready" && export.expires_at.is_some_and(|t| t > now)
}

fn export_json(export: &Export, now: i64) -> Value {
    let mut v = serde_json::to_value(export).unwrap_or(Value::Null);
    v["download_url"] =
        if downloadable(export, now) { json!(format!("/account/privacy/exports/{}/download", export.id)) } else { Value::Null };
    v
}

/// The archive, streamed part by part from the object store: signed-in
/// owner only; anyone else, or an expired link, gets 404.
pub async fn download_export(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let export = state.store.export_of_user(&user.id, checked_id(&id)?).await?;
    if !downloadable(&export, now(&state)) {
        return Err(ApiError(Error::not_found()));
    }
    audit(&state, Some(&user.id), "export_downloaded", Some(&user.id), ctx.ip, Some(&export.id)).await;
    let blobs = state.blobs.clone();
    let parts = export.parts;
    let size = export.size_bytes;
    let filename = format!("atelier-export-{}.zip", format_utc(export.created_at).get(..10).unwrap_or("archive"));
    let body = stream::try_unfold((0i64, export), move |(n, export)| {
        let blobs = blobs.clone();
        async move {
            if n >= parts {
                return Ok(None);
            }
            match blobs.get(&export.part_key(n)).await {
                Ok(Some(bytes)) => Ok(Some((Bytes::from(bytes), (n + 1, export)))),
                Ok(None) => Err(std::io::Error::other("an export part is missing")),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn export_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<crate::pages::CsrfOnly>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        request_export(&state, user, ctx.ip).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/account/privacy?notice=export#export").into_response()),
        Err(e) => hub_response(&state, &ctx, user, None, Some(&e)).await,
    }
}

pub async fn api_exports(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<Value>> {
    let now = now(&state);
    let exports = state.store.exports_of_user(&api.user.id).await?;
    Ok(Json(json!({ "items": exports.iter().map(|e| export_json(e, now)).collect::<Vec<_>>() })))
}

pub async fn api_request_export(State(state): State<AppState>, ctx: Ctx, api: ApiUser) -> ApiResult<(StatusCode, Json<Value>)> {
    let export = request_export(&state, &api.user, ctx.ip).await?;
    Ok((StatusCode::ACCEPTED, Json(export_json(&export, now(&state)))))
}

// ---------------------------------------------------------------- rights requests

/// Files a request from the account itself (C38), audited.
async fn file_request(
    state: &AppState,
    user: &User,
    kind: &str,
    details: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<RightsRequest, Error> {
    let request = state
        .store
        .file_rights_request(NewRightsRequest {
            user_id: Some(user.id.clone()),
            contact: None,
            kind: kind.to_string(),
            channel: "dashboard".into(),
            details: details.to_string(),
            logged_by: None,
            received_at: now(state),
        })
        .await?;
    audit(state, Some(&user.id), "rights_request_filed", Some(&user.id), ip, Some(&format!("{} {}", request.kind, request.id))).await;
    Ok(request)
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn request_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<RequestForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        file_request(&state, user, &form.kind, &form.details, ctx.ip).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to("/account/privacy?notice=request#requests").into_response()),
        Err(e) => hub_response(&state, &ctx, user, None, Some(&e)).await,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub kind: String,
    #[serde(default)]
    pub details: String,
}

pub async fn api_requests(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "items": state.store.rights_requests_of_user(&api.user.id).await? })))
}

pub async fn api_file_request(
    State(state): State<AppState>,
    ctx: Ctx,
    api: ApiUser,
    JsonBody(body): JsonBody<RequestBody>,
) -> ApiResult<(StatusCode, Json<RightsRequest>)> {
    let request = file_request(&state, &api.user, &body.kind, &body.details, ctx.ip).await?;
    Ok((StatusCode::CREATED, Json(request)))
}

/// A request's status in the reader's language, with its reason if denied.
pub fn status_badge(lang: &Lang, request: &RightsRequest, now: i64) -> String {
    let overdue = is_open(&request.status) && request.due_at < now;
    format!(
        r#"<span class="badge {status}" data-status="{status}">{label}</span>{overdue}"#,
        status = esc(&request.status),
        label = esc(&lang.t(&format!("rights.status.{}", request.status))),
        overdue = if overdue {
            format!(r#" <span class="badge failed" data-overdue="1">{}</span>"#, esc(&lang.t("rights.overdue")))
        } else {
            String::new()
        },
    )
}

pub fn kind_options(lang: &Lang, selected: &str) -> String {
    RIGHTS_KINDS
        .iter()
        .map(|k| {
            format!(
                r#"<option value="{k}"{}>{}</option>"#,
                if *k == selected { " selected" } else { "" },
                esc(&lang.t(&format!("rights.kind.{k}")))
            )
        })
        .collect()
}

// ---------------------------------------------------------------- the hub

#[derive(Debug, Default, Deserialize)]
pub struct HubQuery {
    pub notice: Option<String>,
}

async fn hub_body(state: &AppState, ctx: &Ctx, user: &User, notice: Option<&str>, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let now = now(state);
    let csrf = esc(&ctx.csrf);
    let links: String = [
        ("/account/privacy/settings", "privacy_center.consent", "privacy_center.consent_help"),
        ("/account/privacy/settings#marketing", "privacy_center.email", "privacy_center.email_help"),
        ("/account/privacy/settings#restriction", "privacy_center.restrict", "privacy_center.restrict_help"),
        ("/account", "privacy_center.rectify", "privacy_center.rectify_help"),
        ("#export", "privacy_center.export", "privacy_center.export_help"),
        ("#requests", "privacy_center.requests", "privacy_center.requests_help"),
        ("/account/delete", "privacy_center.delete", "privacy_center.delete_help"),
        ("/support", "privacy_center.support", "privacy_center.support_help"),
    ]
    .iter()
    .map(|(href, label, help)| format!(r#"<li><a href="{href}">{}</a> <small>{}</small></li>"#, t(label), t(help)))
    .collect();

    let exports = state.store.exports_of_user(&user.id).await?;
    // A build cut short by a restart resumes when its owner comes to look.
    if exports.iter().any(|e| e.status == "pending" || (e.status == "running" && e.lease_expires_at.is_some_and(|t| t < now))) {
        tokio::spawn(run_exports(state.clone()));
    }
    let export_rows: String = exports
        .iter()
        .map(|e| {
            let action = if downloadable(e, now) {
                format!(r#"<a class="button secondary" href="/account/privacy/exports/{}/download" download>{}</a>"#, e.id, t("export.download"))
            } else {
                String::new()
            };
            let expires = e.expires_at.filter(|_| e.status == "ready").map(|at| ctx.lang.time_html(at)).unwrap_or_default();
            format!(
                r#"<tr data-export="{id}"><td>{created}</td><td><span class="badge {status}">{status_t}</span></td><td class="num">{size}</td><td>{expires}</td><td>{action}</td></tr>"#,
                id = e.id,
                created = ctx.lang.time_html(e.created_at),
                status = esc(&e.status),
                status_t = t(&format!("export.status.{}", e.status)),
                size = if e.status == "ready" { format!("{:.1} MB", e.size_bytes as f64 / 1_000_000.0) } else { String::new() },
                expires = expires,
            )
        })
        .collect();
    let exports_table = if export_rows.is_empty() {
        String::new()
    } else {
        format!(
            r#"<div class="table-wrap"><table class="exports"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>{export_rows}</tbody></table></div>"#,
            t("export.created"),
            t("export.state"),
            t("export.size"),
            t("export.expires"),
        )
    };

    let requests = state.store.rights_requests_of_user(&user.id).await?;
    let request_rows: String = requests
        .iter()
        .map(|r| {
            format!(
                r#"<tr data-request="{id}"><td>{received}</td><td>{kind}</td><td>{status}</td><td>{due}</td><td>{reason}</td></tr>"#,
                id = r.id,
                received = ctx.lang.time_html(r.received_at),
                kind = t(&format!("rights.kind.{}", r.kind)),
                status = status_badge(ctx.lang, r, now),
                due = ctx.lang.time_html(r.due_at),
                reason = esc(r.reason.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let requests_table = if request_rows.is_empty() {
        String::new()
    } else {
        format!(
            r#"<div class="table-wrap"><table class="requests"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{request_rows}</tbody></table></div>"#,
            t("rights.received"),
            t("rights.kind_label"),
            t("rights.state"),
            t("rights.due"),
            t("rights.reason"),
        )
    };
    let notice = notice
        .and_then(|n| match n {
            "export" => Some("export.queued"),
            "request" => Some("rights.filed"),
            _ => None,
        })
        .map(|key| format!(r#"<p class="notice" role="status">{}</p>"#, t(key)))
        .unwrap_or_default();

    Ok(format!(
        r##"<section class="card"><h1>{title}</h1>{notice}{error}<p>{lead}</p><ul class="privacy-links">{links}</ul></section>
<section class="card" id="export"><h2>{export_t}</h2><p>{export_lead}</p>
<form method="post" action="/account/privacy/export"><input type="hidden" name="_csrf" value="{csrf}"><button>{export_button}</button></form>
{exports_table}</section>
<section class="card" id="requests"><h2>{requests_t}</h2><p>{requests_lead}</p>
<form method="post" action="/account/privacy/requests" class="stack"><input type="hidden" name="_csrf" value="{csrf}">
<label>{kind_l}<select name="kind">{kinds}</select></label>
<label>{details_l}<textarea name="details" rows="3" maxlength="{max}"></textarea></label>
<button>{file}</button></form>
{requests_table}</section>"##,
        title = t("privacy_center.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t("privacy_center.lead"),
        export_t = t("privacy_center.export"),
        export_lead = esc(&ctx.lang.t("export.lead").replace("{days}", &state.config.privacy.export_days.to_string())),
        export_button = t("export.request"),
        requests_t = t("privacy_center.requests"),
        requests_lead = t("rights.lead"),
        kind_l = t("rights.kind_label"),
        kinds = kind_options(ctx.lang, "access"),
        details_l = t("rights.details"),
        max = domain::rights::DETAILS_MAX_CHARS,
        file = t("rights.file"),
    ))
}

async fn hub_response(state: &AppState, ctx: &Ctx, user: &User, notice: Option<&str>, error: Option<&Error>) -> ApiResult<Response> {
    let body = hub_body(state, ctx, user, notice, error).await?;
    let status = error.map(status_of).unwrap_or(StatusCode::OK);
    Ok(page(ctx, status, &ctx.lang.t("privacy_center.title"), &body))
}

pub async fn hub(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<HubQuery>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    hub_response(&state, &ctx, user, q.notice.as_deref(), None).await
}
