//! Per-user API keys: created on `/account/api-keys` (or `POST /api/v1/api-keys`),
//! shown once, stored as SHA-256, revocable. `Authorization: Bearer atl_…`
//! authenticates the OpenAI-compatible `/v1` surface and the native API;
//! bearer requests carry no cookie, so they need no CSRF token.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::ids::to_hex;
use domain::{Error, ErrorCode};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use store::{ApiKey, AuditEntry, NewApiKey, User};

use crate::api::{checked_id, JsonBody};
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::i18n::Lang;
use crate::pages::{check_csrf, esc, page_with, signed_in, CsrfOnly, FormBody};
use crate::AppState;

pub const KEY_PREFIX: &str = "atl_";
/// The scope every key gets today: image generation and the native API.
pub const DEFAULT_SCOPES: &str = "images";

pub fn secret_hash(secret: &str) -> String {
    to_hex(&Sha256::digest(secret.as_bytes()))
}

/// `n` random ASCII letters and digits, for secrets.
pub(crate) fn random_alnum(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
}

/// `atl_` and 40 random alphanumerics; the visible prefix is its first 12 characters.
fn new_secret() -> String {
    format!("{KEY_PREFIX}{}", random_alnum(40))
}

/// The bearer token of a request, if it sent one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolves a bearer key to its live key and active owner; anything else
/// (unknown, revoked, malformed) is `unauthenticated`.
pub async fn authenticate(state: &AppState, token: &str) -> Result<(ApiKey, User), Error> {
    let bad = || Error::new(ErrorCode::Unauthenticated, "Incorrect API key provided.");
    if !token.starts_with(KEY_PREFIX) || token.len() > 128 {
        return Err(bad());
    }
    state.store.api_key_by_hash(&secret_hash(token)).await?.ok_or_else(bad)
}

/// A request authenticated by an API key (the `/v1` surface).
pub struct ApiKeyUser {
    pub user: User,
    pub key: ApiKey,
}

impl FromRequestParts<AppState> for ApiKeyUser {
    type Rejection = crate::openai::OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(crate::openai::OpenAiError::from(Error::new(
                ErrorCode::Unauthenticated,
                "You didn't provide an API key. Send it as `Authorization: Bearer atl_…`.",
            )));
        };
        let (key, user) = authenticate(state, token).await?;
        Ok(ApiKeyUser { user, key })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
}

fn check_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::invalid("the key name must be 1 to 100 characters"));
    }
    Ok(name.to_string())
}

/// Creates a key; returns it with the secret, which is never shown again.
pub async fn create_key(state: &AppState, ctx_ip: Option<&str>, user: &User, name: &str) -> Result<(ApiKey, String), Error> {
    let name = check_name(name)?;
    let secret = new_secret();
    let prefix = &secret[..KEY_PREFIX.len() + 8];
    let key = state
        .store
        .create_api_key(NewApiKey { owner_id: &user.id, name: &name, prefix, secret_hash: &secret_hash(&secret), scopes: DEFAULT_SCOPES })
        .await?;
    state
        .store
        .audit(AuditEntry {
            actor_id: Some(&user.id),
            action: "api_key_created",
            target_id: Some(&key.id),
            ip: ctx_ip,
            detail: Some(prefix),
        })
        .await?;
    Ok((key, secret))
}

pub async fn revoke_key(state: &AppState, ctx_ip: Option<&str>, user: &User, id: &str) -> Result<ApiKey, Error> {
    let key = state.store.revoke_api_key(&user.id, id).await?;
    state
        .store
        .audit(AuditEntry {
            actor_id: Some(&user.id),
            action: "api_key_revoked",
            target_id: Some(&key.id),
            ip: ctx_ip,
            detail: Some(&key.prefix),
        })
        .await?;
    Ok(key)
}

fn ip_of(ctx: &Ctx) -> Option<String> {
    ctx.ip.map(crate::auth::truncate_ip)
}

pub async fn api_list(State(state): State<AppState>, api: ApiUser) -> ApiResult<Json<serde_json::Value>> {
    let keys = state.store.list_api_keys(&api.user.id).await?;
    Ok(Json(json!({ "items": keys })))
}

pub async fn api_create(State(state): State<AppState>, ctx: Ctx, api: ApiUser, JsonBody(body): JsonBody<CreateKey>) -> ApiResult<Response> {
    let (key, secret) = create_key(&state, ip_of(&ctx).as_deref(), &api.user, &body.name).await?;
    let mut view = serde_json::to_value(&key).map_err(|e| Error::internal(e.to_string()))?;
    view["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn api_revoke(State(state): State<AppState>, ctx: Ctx, api: ApiUser, Path(id): Path<String>) -> ApiResult<Json<ApiKey>> {
    Ok(Json(revoke_key(&state, ip_of(&ctx).as_deref(), &api.user, checked_id(&id)?).await?))
}

pub(crate) fn fmt_time(lang: &Lang, ms: Option<i64>) -> String {
    ms.map(|at| lang.time_html(at)).unwrap_or_else(|| "—".into())
}

async fn keys_body(state: &AppState, ctx: &Ctx, user: &User, created: Option<&str>, error: Option<&Error>) -> Result<String, Error> {
    let lang = ctx.lang;
    let keys = state.store.list_api_keys(&user.id).await?;
    let mut html = String::new();
    if let Some(e) = error {
        html.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&lang.t(&e.code.message_key()))));
    }
    if let Some(secret) = created {
        html.push_str(&format!(
            "<div class=\"notice\" role=\"status\"><p>{}</p><p><code id=\"new-api-key\">{}</code></p></div>",
            esc(&lang.t("api_keys.shown_once")),
            esc(secret)
        ));
    }
    html.push_str(&format!(
        "<form method=\"post\" action=\"/account/api-keys\"><input type=\"hidden\" name=\"_csrf\" value=\"{}\">\
         <label>{} <input name=\"name\" required maxlength=\"100\"></label> <button type=\"submit\">{}</button></form>",
        esc(&ctx.csrf),
        esc(&lang.t("api_keys.name")),
        esc(&lang.t("api_keys.create"))
    ));
    html.push_str(&format!(
        "<div class=\"table-wrap\"><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
        esc(&lang.t("api_keys.name")),
        esc(&lang.t("api_keys.prefix")),
        esc(&lang.t("api_keys.scopes")),
        esc(&lang.t("api_keys.created")),
        esc(&lang.t("api_keys.last_used"))
    ));
    for key in &keys {
        let action = if key.revoked_at.is_some() {
            esc(&lang.t("api_keys.revoked"))
        } else {
            format!(
                "<form method=\"post\" action=\"/account/api-keys/{}/revoke\"><input type=\"hidden\" name=\"_csrf\" value=\"{}\"><button type=\"submit\">{}</button></form>",
                esc(&key.id),
                esc(&ctx.csrf),
                esc(&lang.t("api_keys.revoke"))
            )
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td><code>{}…</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&key.name),
            esc(&key.prefix),
            esc(&key.scopes),
            fmt_time(lang, Some(key.created_at)),
            fmt_time(lang, key.last_used_at),
            action
        ));
    }
    html.push_str("</tbody></table></div>");
    Ok(html)
}

async fn render(state: &AppState, ctx: &Ctx, user: &User, created: Option<&str>, error: Option<&Error>) -> Response {
    page_with(ctx, "api_keys.title", error, keys_body(state, ctx, user, created, error).await)
}

pub async fn keys_page(State(state): State<AppState>, ctx: Ctx) -> Response {
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
    pub name: String,
}

pub async fn create_form(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CreateForm>) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        create_key(&state, ip_of(&ctx).as_deref(), &user, &form.name).await
    };
    match attempt.await {
        Ok((_, secret)) => render(&state, &ctx, &user, Some(&secret), None).await,
        Err(e) => render(&state, &ctx, &user, None, Some(&e)).await,
    }
}

pub async fn revoke_form(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, FormBody(form): FormBody<CsrfOnly>) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        revoke_key(&state, ip_of(&ctx).as_deref(), &user, checked_id(&id).map_err(|e| e.0)?).await
    };
    match attempt.await {
        Ok(_) => render(&state, &ctx, &user, None, None).await,
        Err(e) => render(&state, &ctx, &user, None, Some(&e)).await,
    }
}
