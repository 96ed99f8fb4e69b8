//! Per-account privacy settings: restriction of processing (C37) and the
//! marketing mail opt-in (C25), the signed one-click unsubscribe link that
//! works without signing in, and the operator's marketing send, which only
//! reaches accounts that opted in and did not restrict processing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use domain::ids::{is_valid_id, to_hex};
use domain::{Error, ErrorCode};
use serde::Deserialize;
use store::{AuditEntry, NewMail, User};

use crate::admin::require_admin;
use crate::api::QueryParams;
use crate::context::{tokens_match, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, page, signed_in, FormBody};
use crate::AppState;

fn settings_body(ctx: &Ctx, user: &User, settings: store::AccountPrivacy, notice: Option<&str>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let toggle = |action: &str, field: &str, on: bool, on_key: &str, off_key: &str| {
        format!(
            r#"<form method="post" action="{action}" class="inline"><input type="hidden" name="_csrf" value="{}"><input type="hidden" name="{field}" value="{}"><button class="secondary">{}</button></form>"#,
            esc(&ctx.csrf),
            if on { "0" } else { "1" },
            t(if on { off_key } else { on_key }),
        )
    };
    format!(
        r#"<section class="card narrow" data-account="{id}"><h1>{title}</h1>{notice}
<h2>{restrict_t}</h2><p>{restrict_text}</p><p class="state" id="restriction">{restrict_state}</p>{restrict_form}
<h2>{marketing_t}</h2><p>{marketing_text}</p><p class="state" id="marketing">{marketing_state}</p>{marketing_form}
<h2>{cookies_t}</h2><p><a href="/consent">{cookies}</a></p></section>"#,
        id = esc(&user.id),
        title = t("privacy_settings.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        restrict_t = t("privacy_settings.restrict_title"),
        restrict_text = t("privacy_settings.restrict_text"),
        restrict_state = t(if settings.restricted { "privacy_settings.restricted_on" } else { "privacy_settings.restricted_off" }),
        restrict_form = toggle(
            "/account/privacy/restriction",
            "restricted",
            settings.restricted,
            "privacy_settings.restrict",
            "privacy_settings.unrestrict"
        ),
        marketing_t = t("privacy_settings.marketing_title"),
        marketing_text = t("privacy_settings.marketing_text"),
        marketing_state = t(if settings.marketing_opt_in { "privacy_settings.marketing_on" } else { "privacy_settings.marketing_off" }),
        marketing_form = toggle(
            "/account/privacy/marketing",
            "opt_in",
            settings.marketing_opt_in,
            "privacy_settings.opt_in",
            "privacy_settings.opt_out"
        ),
        cookies_t = t("consent.title"),
        cookies = t("consent.footer_settings"),
    )
}

pub async fn settings_page(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let settings = state.store.account_privacy(&user.id).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("privacy_settings.title"), &settings_body(&ctx, user, settings, None)))
}

#[derive(Debug, Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    pub _csrf: String,
    pub restricted: Option<String>,
    pub opt_in: Option<String>,
}

fn flag(value: Option<&str>) -> Result<bool, Error> {
    match value {
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        _ => Err(Error::invalid("expected 1 or 0")),
    }
}

/// Restricts processing or lifts the restriction (C37). Audited.
pub async fn set_restriction(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<ToggleForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let restricted = flag(form.restricted.as_deref())?;
    if state.store.set_processing_restricted(&user.id, restricted, state.config.clock.now_ms()).await? {
        let action = if restricted { "processing_restricted" } else { "processing_unrestricted" };
        state.store.audit(AuditEntry { actor_id: Some(&user.id), action, target_id: Some(&user.id), ..AuditEntry::default() }).await?;
    }
    // The page that confirms a restriction already carries no operator tag.
    let mut ctx = ctx.clone();
    if restricted {
        ctx.privacy.tags.clear();
    }
    saved(&state, &ctx, user).await
}

/// Opts in to marketing mail or out of it (C25). Audited.
pub async fn set_marketing(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<ToggleForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let opt_in = flag(form.opt_in.as_deref())?;
    set_marketing_audited(&state, &user.id, opt_in).await?;
    saved(&state, &ctx, user).await
}

async fn set_marketing_audited(state: &AppState, user_id: &str, opt_in: bool) -> Result<(), Error> {
    if state.store.set_marketing_opt_in(user_id, opt_in, state.config.clock.now_ms()).await? {
        let action = if opt_in { "marketing_opt_in" } else { "marketing_opt_out" };
        state.store.audit(AuditEntry { actor_id: Some(user_id), action, target_id: Some(user_id), ..AuditEntry::default() }).await?;
    }
    Ok(())
}

async fn saved(state: &AppState, ctx: &Ctx, user: &User) -> ApiResult<Response> {
    let settings = state.store.account_privacy(&user.id).await?;
    let notice = ctx.lang.t("privacy_settings.saved");
    Ok(page(ctx, StatusCode::OK, &ctx.lang.t("privacy_settings.title"), &settings_body(ctx, user, settings, Some(&notice))))
}

/// The key that signs unsubscribe links, shared by every node.
async fn unsubscribe_secret(state: &AppState) -> Result<Vec<u8>, Error> {
    let fresh: [u8; 32] = rand::random();
    state.store.server_secret("unsubscribe_link_hmac", fresh.to_vec()).await
}

fn signature(secret: &[u8], user_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    to_hex(ring::hmac::sign(&key, format!("unsubscribe:{user_id}").as_bytes()).as_ref())
}

/// The signed link that turns marketing off without signing in.
pub async fn unsubscribe_url(state: &AppState, user_id: &str) -> Result<String, Error> {
    let sig = signature(&unsubscribe_secret(state).await?, user_id);
    Ok(crate::auth::notices::link(state, &format!("/unsubscribe?u={user_id}&s={sig}")))
}

#[derive(Debug, Default, Deserialize)]
pub struct UnsubscribeQuery {
    #[serde(default)]
    pub u: String,
    #[serde(default)]
    pub s: String,
}

async fn verified_account(state: &AppState, q: &UnsubscribeQuery) -> Result<String, Error> {
    let valid = is_valid_id(&q.u) && tokens_match(&signature(&unsubscribe_secret(state).await?, &q.u), &q.s);
    if !valid {
        return Err(Error::new(ErrorCode::InvalidSignature, "this unsubscribe link is not valid"));
    }
    Ok(q.u.clone())
}

fn unsubscribe_body(ctx: &Ctx, q: &UnsubscribeQuery, done: bool) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    if done {
        return format!(
            r#"<section class="card narrow"><h1>{}</h1><p class="notice" role="status">{}</p></section>"#,
            t("unsubscribe.title"),
            t("unsubscribe.done")
        );
    }
    format!(
        r#"<section class="card narrow"><h1>{}</h1><p>{}</p>
<form method="post" action="/unsubscribe?u={}&amp;s={}"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button>{}</button></form></section>"#,
        t("unsubscribe.title"),
        t("unsubscribe.confirm"),
        esc(&q.u),
        esc(&q.s),
        t("unsubscribe.button"),
    )
}

/// GET shows a confirmation (mail scanners follow links; a GET must not
/// change anything).
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<UnsubscribeQuery>,
) -> ApiResult<Response> {
    verified_account(&state, &q).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("unsubscribe.title"), &unsubscribe_body(&ctx, &q, false)))
}

/// POST turns marketing off: from the confirmation page or straight from a
/// mail client's one-click button (RFC 8058). The signature is the
/// authorization, so neither a session nor a CSRF token is needed.
pub async fn unsubscribe(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<UnsubscribeQuery>) -> ApiResult<Response> {
    let user_id = verified_account(&state, &q).await?;
    match set_marketing_audited(&state, &user_id, false).await {
        Err(e) if e.code == ErrorCode::NotFound => {}
        other => other?,
    }
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("unsubscribe.title"), &unsubscribe_body(&ctx, &q, true)))
}

/// Queues one marketing message per account that opted in and did not
/// restrict processing, each with its own unsubscribe link. Returns how
/// many were queued.
pub async fn send_marketing(state: &AppState, subject: &str, body: &str) -> Result<usize, Error> {
    let recipients = state.store.marketing_recipients().await?;
    let now = state.config.clock.now_ms();
    for user in &recipients {
        let url = unsubscribe_url(state, &user.id).await?;
        let lang = crate::i18n::I18n::global().lang(user.locale.as_deref().unwrap_or("en"));
        let footer = lang.t("mail.marketing.footer").replace("{link}", &url);
        let mail = NewMail {
            user_id: Some(user.id.clone()),
            kind: "marketing".into(),
            to_addr: user.email.clone(),
            subject: subject.into(),
            body_text: format!("{body}\n\n{footer}"),
        };
        state.store.enqueue_marketing_mail(&mail, &url, now).await?;
    }
    Ok(recipients.len())
}

fn marketing_admin_body(ctx: &Ctx, notice: Option<&str>, error: Option<&Error>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{notice}{error}<p>{intro}</p>
<form method="post" action="/admin/marketing" class="stack"><input type="hidden" name="_csrf" value="{csrf}">
<label>{subject}<input name="subject" required maxlength="200"></label>
<label>{body}<textarea name="body" rows="8" required maxlength="20000"></textarea></label>
<button>{send}</button></form></section>"#,
        title = t("marketing_admin.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| crate::pages::error_box(ctx.lang, e)).unwrap_or_default(),
        intro = t("marketing_admin.intro"),
        csrf = esc(&ctx.csrf),
        subject = t("marketing_admin.subject"),
        body = t("marketing_admin.body"),
        send = t("marketing_admin.send"),
    )
}

pub async fn marketing_admin_page(ctx: Ctx) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    require_admin(user)?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("marketing_admin.title"), &marketing_admin_body(&ctx, None, None)))
}

#[derive(Debug, Deserialize)]
pub struct MarketingForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub body: String,
}

/// The operator's marketing send. Audited with the number queued.
pub async fn marketing_admin_send(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<MarketingForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    require_admin(user)?;
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let (subject, body) = (form.subject.trim(), form.body.trim());
        if subject.is_empty()
            || body.is_empty()
            || subject.chars().count() > 200
            || body.chars().count() > 20_000
            || subject.contains(['\r', '\n'])
        {
            return Err(Error::invalid("a subject (one line, up to 200 characters) and a body (up to 20000) are required"));
        }
        let queued = send_marketing(&state, subject, body).await?;
        let detail = format!("queued={queued}");
        state
            .store
            .audit(AuditEntry { actor_id: Some(&user.id), action: "marketing_sent", detail: Some(&detail), ..AuditEntry::default() })
            .await?;
        Ok(queued)
    };
    Ok(match attempt.await {
        Ok(queued) => {
            let notice = ctx.lang.t("marketing_admin.done").replace("{count}", &queued.to_string());
            page(&ctx, StatusCode::OK, &ctx.lang.t("marketing_admin.title"), &marketing_admin_body(&ctx, Some(&notice), None))
        }
        Err(e) => {
            page(&ctx, crate::pages::status_of(&e), &ctx.lang.t("marketing_admin.title"), &marketing_admin_body(&ctx, None, Some(&e)))
        }
    })
}
