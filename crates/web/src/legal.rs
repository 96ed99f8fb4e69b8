//! The privacy and cookie policies (C42), rendered from the translation
//! templates with the running configuration: what the pages say about
//! retention, processors and contacts is what this deployment does. New
//! versions are published by an admin; a material one is mailed to every
//! active account and shown as a banner until accepted (C43).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::Error;
use serde::Deserialize;
use store::{AuditEntry, NewMail, PolicyVersion};

use crate::admin::require_admin;
use crate::context::Ctx;
use crate::error::ApiResult;
use crate::i18n::{I18n, Lang};
use crate::pages::{check_csrf, esc, page, signed_in, FormBody};
use crate::AppState;

/// The current version; a fresh install publishes version 1 on first use.
pub async fn current_policy(state: &AppState) -> Result<PolicyVersion, Error> {
    let now = state.config.clock.now_ms();
    let initial = PolicyVersion { version: "1".into(), material: false, summary: String::new(), effective_at: now, published_at: now };
    state.store.ensure_policy(&initial).await
}

fn fill(lang: &Lang, key: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(lang.t(key), |text, (k, v)| text.replace(&format!("{{{k}}}"), v))
}

/// The third parties this deployment hands data to, as configured now.
fn processors(state: &AppState, lang: &Lang) -> Vec<String> {
    let config = &state.config;
    let mut out = Vec::new();
    if config.billing.enabled && !config.billing.stripe_secret_key.is_empty() {
        out.push(lang.t("legal.processor_stripe"));
    }
    if config.billing.enabled && !config.billing.creem_api_key.is_empty() {
        out.push(lang.t("legal.processor_creem"));
    }
    if config.provider == "procedural" {
        out.push(lang.t("legal.processor_engine_local"));
    } else {
        out.push(fill(lang, "legal.processor_engine", &[("name", format!("{} ({})", config.provider, config.model))]));
    }
    if !config.smtp_host.is_empty() {
        out.push(fill(lang, "legal.processor_smtp", &[("host", config.smtp_host.clone())]));
    }
    out
}

/// Every configured operator tag: who, for what, under which consent
/// category, with a link to its own policy.
fn third_parties(state: &AppState, lang: &Lang) -> String {
    let tags = &state.config.tags;
    if tags.is_empty() {
        return String::new();
    }
    let items: String = tags
        .iter()
        .map(|tag| {
            let line = fill(lang, "legal.tag_item", &[("name", tag.name.clone()), ("category", lang.t(tag.category.label_key()))]);
            let purpose = if tag.purpose.is_empty() { String::new() } else { format!(" {}", esc(&tag.purpose)) };
            let policy = if tag.policy_url.is_empty() {
                String::new()
            } else {
                format!(r#" <a href="{}" rel="noopener noreferrer">{}</a>"#, esc(&tag.policy_url), esc(&lang.t("legal.tag_policy")))
            };
            format!(r#"<li class="third-party">{}{purpose}{policy}</li>"#, esc(&line))
        })
        .collect();
    format!(
        r#"<h2 id="third-parties">{}</h2><p>{}</p><ul>{items}</ul>"#,
        esc(&lang.t("legal.tags_title")),
        esc(&lang.t("legal.tags_rules"))
    )
}

fn list(items: &[String]) -> String {
    let items: String = items.iter().map(|i| format!("<li>{}</li>", esc(i))).collect();
    format!("<ul>{items}</ul>")
}

fn header(ctx: &Ctx, title_key: &str, policy: &PolicyVersion) -> String {
    let version_line =
        fill(ctx.lang, "legal.version_line", &[("version", policy.version.clone()), ("date", ctx.lang.date(policy.effective_at))]);
    format!(r#"<h1>{}</h1><p class="meta" data-version="{}">{}</p>"#, esc(&ctx.lang.t(title_key)), esc(&policy.version), esc(&version_line))
}

pub async fn privacy_policy(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let policy = current_policy(&state).await?;
    let p = &state.config.privacy;
    let lang = ctx.lang;
    let days = |d: u32| vec![("days", d.to_string())];
    let contact = p.operator_contact.clone();
    let dpo = if p.dpo_contact.is_empty() { contact.clone() } else { p.dpo_contact.clone() };
    let retention = [
        fill(lang, "legal.retention_unsaved", &days(state.config.unsaved_retention_days)),
        fill(lang, "legal.retention_analytics", &days(p.analytics_raw_days)),
        fill(lang, "legal.retention_logs", &days(p.request_log_days)),
        fill(lang, "legal.retention_deletion", &days(p.deletion_grace_days.min(privacy::MAX_DELETION_GRACE_DAYS))),
        fill(lang, "legal.retention_exports", &days(p.export_days)),
    ];
    let t = |k: &str| esc(&lang.t(k));
    let body = format!(
        r#"<article class="card legal" id="privacy-policy">{header}
<p>{who}</p>
<h2>{collect_t}</h2><p>{collect}</p>
<h2 id="retention">{retention_t}</h2>{retention}
<h2 id="processors">{processors_t}</h2>{processors}{third_parties}
<h2>{rights_t}</h2><p>{rights}</p><p>{gpc}</p></article>"#,
        header = header(&ctx, "legal.privacy_title", &policy),
        who = esc(&fill(lang, "legal.who", &[("operator", p.operator_name.clone()), ("contact", contact.clone()), ("dpo", dpo)])),
        collect_t = t("legal.collect_title"),
        collect = t("legal.collect"),
        retention_t = t("legal.retention_title"),
        retention = list(&retention),
        processors_t = t("legal.processors_title"),
        processors = list(&processors(&state, lang)),
        third_parties = third_parties(&state, lang),
        rights_t = t("legal.rights_title"),
        rights = esc(&fill(lang, "legal.rights", &[("contact", contact)])),
        gpc = t("legal.gpc"),
    );
    Ok(page(&ctx, StatusCode::OK, &lang.t("legal.privacy_title"), &body))
}

pub async fn cookie_policy(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let policy = current_policy(&state).await?;
    let lang = ctx.lang;
    let session_days = (state.config.session_ttl_ms / 86_400_000).to_string();
    let essential =
        [fill(lang, "legal.cookie_session", &[("days", session_days)]), lang.t("legal.cookie_csrf"), lang.t("legal.cookie_consent")];
    let t = |k: &str| esc(&lang.t(k));
    let body = format!(
        r#"<article class="card legal" id="cookie-policy">{header}<p>{intro}</p>
<h2>{essential_t}</h2>{essential}<h2>{analytics_t}</h2>{analytics}{third_parties}<p>{none}</p><p><a href="/consent">{change}</a></p></article>"#,
        header = header(&ctx, "legal.cookies_title", &policy),
        intro = t("legal.cookies_intro"),
        essential_t = t("legal.cookies_essential"),
        essential = list(&essential),
        analytics_t = t("consent.analytics"),
        analytics = list(&[lang.t("legal.cookie_analytics")]),
        third_parties = third_parties(&state, lang),
        none = if state.config.tags.is_empty() { t("legal.cookies_none") } else { String::new() },
        change = t("consent.footer_settings"),
    );
    Ok(page(&ctx, StatusCode::OK, &lang.t("legal.cookies_title"), &body))
}

#[derive(Debug, Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub back: String,
}

/// The banner's "I have read it": records the acceptance (C43).
pub async fn accept(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<AcceptForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    state.store.accept_policy(&user.id, &form.version, state.config.clock.now_ms()).await?;
    Ok(Redirect::to(crate::consent::local_path(&form.back)).into_response())
}

fn admin_body(ctx: &Ctx, versions: &[PolicyVersion], notice: Option<&str>, error: Option<&Error>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let rows: String = versions
        .iter()
        .map(|v| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.version),
                if v.material { "✓" } else { "" },
                ctx.lang.time_html(v.published_at),
                esc(&v.summary)
            )
        })
        .collect();
    format!(
        r#"<section class="card"><h1>{title}</h1>{notice}{error}
<div class="table-wrap"><table><thead><tr><th>{version_t}</th><th>{material_t}</th><th>{published_t}</th><th>{summary_t}</th></tr></thead><tbody>{rows}</tbody></table></div>
<form method="post" action="/admin/policy" class="stack"><input type="hidden" name="_csrf" value="{csrf}">
<label>{version_t}<input name="version" required maxlength="40"></label>
<label>{summary_t}<textarea name="summary" rows="3" maxlength="2000"></textarea></label>
<label class="check"><input type="checkbox" name="material"> {material_l}</label>
<button>{publish}</button></form></section>"#,
        title = t("legal.admin_title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| crate::pages::error_box(ctx.lang, e)).unwrap_or_default(),
        version_t = t("legal.admin_version"),
        material_t = t("legal.admin_material_col"),
        published_t = t("legal.admin_published_col"),
        summary_t = t("legal.admin_summary"),
        csrf = esc(&ctx.csrf),
        material_l = t("legal.admin_material"),
        publish = t("legal.admin_publish"),
    )
}

pub async fn admin_page(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    require_admin(user)?;
    current_policy(&state).await?;
    let versions = state.store.policy_versions().await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("legal.admin_title"), &admin_body(&ctx, &versions, None, None)))
}

#[derive(Debug, Deserialize)]
pub struct PublishForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub summary: String,
    pub material: Option<String>,
}

/// Publishes a version. A material one queues one notice per active
/// account in the same transaction (C43). Audited.
pub async fn publish(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<PublishForm>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    require_admin(user)?;
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let label = form.version.trim();
        if label.is_empty() || label.len() > 40 || label.chars().any(char::is_control) {
            return Err(Error::invalid("the version label must be 1 to 40 printable characters"));
        }
        if form.summary.chars().count() > 2000 {
            return Err(Error::invalid("the summary is limited to 2000 characters"));
        }
        current_policy(&state).await?;
        let now = state.config.clock.now_ms();
        let version = PolicyVersion {
            version: label.to_string(),
            material: form.material.is_some(),
            summary: form.summary.trim().to_string(),
            effective_at: now,
            published_at: now,
        };
        let notices = if version.material { policy_notices(&state, &version).await? } else { Vec::new() };
        state.store.publish_policy(&version, &notices).await?;
        let detail = format!("version={} material={} notices={}", version.version, version.material, notices.len());
        state
            .store
            .audit(AuditEntry { actor_id: Some(&user.id), action: "policy_published", detail: Some(&detail), ..AuditEntry::default() })
            .await?;
        Ok(notices.len())
    };
    let result = attempt.await;
    let versions = state.store.policy_versions().await?;
    let body = match &result {
        Ok(count) => {
            let notice = ctx.lang.t("legal.admin_done").replace("{count}", &count.to_string());
            admin_body(&ctx, &versions, Some(&notice), None)
        }
        Err(e) => admin_body(&ctx, &versions, None, Some(e)),
    };
    let status = result.as_ref().map_or_else(crate::pages::status_of, |_| StatusCode::OK);
    Ok(page(&ctx, status, &ctx.lang.t("legal.admin_title"), &body))
}

/// One `policy_changed` notice per active account, in its language.
async fn policy_notices(state: &AppState, version: &PolicyVersion) -> Result<Vec<NewMail>, Error> {
    let link = crate::auth::notices::link(state, "/legal/privacy");
    Ok(state
        .store
        .active_accounts()
        .await?
        .into_iter()
        .map(|user| {
            let lang = I18n::global().lang(user.locale.as_deref().unwrap_or("en"));
            let vars = [
                ("name", user.name.clone()),
                ("version", version.version.clone()),
                ("summary", version.summary.clone()),
                ("link", link.clone()),
            ];
            NewMail {
                user_id: Some(user.id.clone()),
                kind: "policy_changed".into(),
                to_addr: user.email.clone(),
                subject: fill(lang, "mail.policy_changed.subject", &vars),
                body_text: fill(lang, "mail.policy_changed.body", &vars),
            }
        })
        .collect())
}
