//! Completion webhooks: endpoints registered on `/account/webhooks` or with
//! `/api/v1/webhooks` (sessions and API keys), or given once as
//! `webhook_url` on `POST /api/v1/tasks`. Each has a secret shown once;
//! events are signed with it (`Atelier-Signature: t=…,v1=…`) and sent from
//! the outbox by [`delivery::Deliverer`].

pub mod delivery;
pub mod target;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Error, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{NewWebhookEndpoint, User, WebhookDelivery, WebhookEndpoint};

use crate::api::{checked_id, JsonBody};
use crate::api_keys::fmt_time;
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, page_with, signed_in, CsrfOnly, FormBody};
use crate::AppState;

pub use delivery::{signature_header, Deliverer};
pub use target::{HookConfig, Resolver, SystemResolver};

/// Deliveries listed per endpoint (API and page).
const RECENT_DELIVERIES: i64 = 50;
const PAGE_DELIVERIES: usize = 10;

/// `whsec_` and 32 random alphanumerics.
pub fn new_secret() -> String {
    format!("whsec_{}", crate::api_keys::random_alnum(32))
}

fn endpoint_json(e: &WebhookEndpoint) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "include_prompt": e.include_prompt,
        "enabled": e.status == "enabled",
        "consecutive_failures": e.consecutive_failures,
        "disabled_at": e.disabled_at,
        "created_at": e.created_at,
    })
}

fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "id": d.id,
        "event": d.event,
        "task_id": d.task_id,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": (d.status == "pending").then_some(d.next_attempt_at),
        "response_status": d.response_status,
        "response_excerpt": d.response_excerpt,
        "error": d.last_error,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
    })
}

/// The host of a URL, for the audit trail (paths and queries may hold tokens).
fn host_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
}

/// Registers an endpoint after checking its URL; returns it with the secret,
/// which is never shown again.
pub async fn create_endpoint(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    user: &User,
    url: &str,
    include_prompt: bool,
) -> Result<(WebhookEndpoint, String), Error> {
    let config = &state.config.hooks;
    let url = target::check(url, config).await?;
    if state.store.list_webhook_endpoints(&user.id, false).await?.len() >= config.max_endpoints {
        return Err(Error::invalid(format!("an account may register at most {} webhook endpoints", config.max_endpoints)));
    }
    let secret = new_secret();
    let endpoint = state
        .store
        .create_webhook_endpoint(NewWebhookEndpoint { owner_id: &user.id, url: url.as_str(), secret: &secret, include_prompt })
        .await?;
    let host = host_of(&endpoint.url);
    crate::auth::audit(state, Some(&user.id), "webhook_created", Some(&endpoint.id), ip, Some(&host)).await;
    Ok((endpoint, secret))
}

pub async fn delete_endpoint(state: &AppState, ip: Option<std::net::IpAddr>, user: &User, id: &str) -> Result<(), Error> {
    let endpoint = state.store.get_webhook_endpoint(&user.id, id).await?;
    state.store.delete_webhook_endpoint(&user.id, id).await?;
    let host = host_of(&endpoint.url);
    crate::auth::audit(state, Some(&user.id), "webhook_deleted", Some(id), ip, Some(&host)).await;
    Ok(())
}

/// The one-off endpoint of a submitted task (`webhook_url`): its secret,
/// shown once in the submit answer, signs that task's event.
pub async fn attach_to_task(state: &AppState, user: &User, task_id: &str, url: &url::Url) -> Result<Value, Error> {
    let secret = new_secret();
    let endpoint = state.store.create_task_webhook(&user.id, task_id, url.as_str(), &secret).await?;
    Ok(json!({ "id": endpoint.id, "url": endpoint.url, "secret": secret }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub url: String,
    #[serde(default)]
    pub include_prompt: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub enabled: Option<bool>,
    pub include_prompt: Option<bool>,
}

pub async fn api_list(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<Value>> {
    let endpoints = state.store.list_webhook_endpoints(&api.user.id, false).await?;
    Ok(Json(json!({ "items": endpoints.iter().map(endpoint_json).collect::<Vec<_>>() })))
}

pub async fn api_create(
    State(state): State<AppState>,
    ctx: Ctx,
    api: ApiUser,
    JsonBody(body): JsonBody<CreateEndpoint>,
) -> ApiResult<Response> {
    let (endpoint, secret) = create_endpoint(&state, ctx.ip, &api.user, &body.url, body.include_prompt).await?;
    let mut view = endpoint_json(&endpoint);
    view["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One endpoint with its latest deliveries and what the receiver answered.
pub async fn api_get(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let endpoint = state.store.get_webhook_endpoint(&api.user.id, checked_id(&id)?).await?;
    let deliveries = state.store.webhook_deliveries(&api.user.id, &endpoint.id, RECENT_DELIVERIES).await?;
    let mut view = endpoint_json(&endpoint);
    view["deliveries"] = deliveries.iter().map(delivery_json).collect();
    Ok(Json(view))
}

pub async fn api_update(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateEndpoint>,
) -> ApiResult<Json<Value>> {
    let endpoint = state.store.update_webhook_endpoint(&api.user.id, checked_id(&id)?, body.enabled, body.include_prompt).await?;
    Ok(Json(endpoint_json(&endpoint)))
}

pub async fn api_delete(State(state): State<AppState>, ctx: Ctx, api: ApiUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete_endpoint(&state, ctx.ip, &api.user, checked_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn page_body(state: &AppState, ctx: &Ctx, user: &User, created: Option<&str>, error: Option<&Error>) -> Result<String, Error> {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let csrf = esc(&ctx.csrf);
    let endpoints = state.store.list_webhook_endpoints(&user.id, false).await?;
    let mut html = format!("<p>{}</p>", t("webhooks.lead"));
    if let Some(e) = error {
        html.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&ctx.lang.t(&e.code.message_key()))));
    }
    if let Some(secret) = created {
        html.push_str(&format!(
            "<div class=\"notice\" role=\"status\"><p>{}</p><p><code id=\"new-webhook-secret\">{}</code></p></div>",
            t("webhooks.shown_once"),
            esc(secret)
        ));
    }
    for endpoint in endpoints.iter().filter(|e| e.status == "disabled" && e.consecutive_failures > 0) {
        html.push_str(&format!(
            "<div class=\"notice error\" role=\"alert\"><p>{}</p></div>",
            esc(&ctx
                .lang
                .t("webhooks.disabled_notice")
                .replace("{url}", &endpoint.url)
                .replace("{failures}", &endpoint.consecutive_failures.to_string()))
        ));
    }
    html.push_str(&format!(
        "<form method=\"post\" action=\"/account/webhooks\" class=\"stack\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\">\
         <label>{} <input name=\"url\" type=\"url\" required maxlength=\"{}\" placeholder=\"https://\"></label>\
         <label><input type=\"checkbox\" name=\"include_prompt\" value=\"1\"> {}</label><button type=\"submit\">{}</button></form>",
        t("webhooks.url"),
        target::MAX_URL_LEN,
        t("webhooks.include_prompt"),
        t("webhooks.create")
    ));
    for endpoint in &endpoints {
        let enabled = endpoint.status == "enabled";
        html.push_str(&format!(
            "<section class=\"card\"><h2><code>{}</code></h2><p>{} · {}</p>\
             <form method=\"post\" action=\"/account/webhooks/{id}/toggle\" class=\"inline\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\"><button class=\"secondary\">{}</button></form> \
             <form method=\"post\" action=\"/account/webhooks/{id}/delete\" class=\"inline\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\"><button class=\"secondary\">{}</button></form>",
            esc(&endpoint.url),
            t(if enabled { "webhooks.enabled" } else { "webhooks.disabled" }),
            t(if endpoint.include_prompt { "webhooks.with_prompt" } else { "webhooks.without_prompt" }),
            t(if enabled { "webhooks.disable" } else { "webhooks.enable" }),
            t("webhooks.delete"),
            id = esc(&endpoint.id),
        ));
        let deliveries = state.store.webhook_deliveries(&user.id, &endpoint.id, PAGE_DELIVERIES as i64).await?;
        if deliveries.is_empty() {
            html.push_str(&format!("<p>{}</p>", t("webhooks.no_deliveries")));
        } else {
            html.push_str(&format!(
                "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                t("webhooks.when"),
                t("webhooks.event"),
                t("webhooks.status"),
                t("webhooks.attempts"),
                t("webhooks.response"),
                t("webhooks.answer")
            ));
            for d in &deliveries {
                let response = d.response_status.map(|s| s.to_string()).or_else(|| d.last_error.clone()).unwrap_or_else(|| "—".into());
                html.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    fmt_time(ctx.lang, Some(d.created_at)),
                    esc(&d.event),
                    t(&format!("webhooks.delivery_{}", d.status)),
                    d.attempts,
                    esc(&response),
                    esc(d.response_excerpt.as_deref().unwrap_or(""))
                ));
            }
            html.push_str("</tbody></table>");
        }
        html.push_str("</section>");
    }
    Ok(html)
}

async fn render(state: &AppState, ctx: &Ctx, user: &User, created: Option<&str>, error: Option<&Error>) -> Response {
    page_with(ctx, "webhooks.title", error, page_body(state, ctx, user, created, error).await)
}

pub async fn webhooks_page(State(state): State<AppState>, ctx: Ctx) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    render(&state, &ctx, &user, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub include_prompt: Option<String>,
}

pub async fn create_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CreateForm>) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        create_endpoint(&state, ctx.ip, &user, &form.url, form.include_prompt.is_some()).await
    };
    match attempt.await {
        Ok((_, secret)) => render(&state, &ctx, &user, Some(&secret), None).await,
        Err(e) => render(&state, &ctx, &user, None, Some(&e)).await,
    }
}

/// `toggle` (enable or disable) or `delete` one endpoint from the page.
pub async fn endpoint_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, action)): Path<(String, String)>,
    FormBody(form): FormBody<CsrfOnly>,
) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let id = checked_id(&id).map_err(|e| e.0)?;
        match action.as_str() {
            "toggle" => {
                let endpoint = state.store.get_webhook_endpoint(&user.id, id).await?;
                state.store.update_webhook_endpoint(&user.id, id, Some(endpoint.status != "enabled"), None).await.map(|_| ())
            }
            "delete" => delete_endpoint(&state, ctx.ip, &user, id).await,
            _ => Err(Error::new(ErrorCode::NotFound, "not found")),
        }
    };
    match attempt.await {
        Ok(()) => render(&state, &ctx, &user, None, None).await,
        Err(e) => render(&state, &ctx, &user, None, Some(&e)).await,
    }
}
