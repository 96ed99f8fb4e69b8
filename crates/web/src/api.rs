//! The native JSON API under `/api/v1`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::ids::{is_valid_id, to_hex};
use domain::params::{parse_style, validate_n, validate_prompt, Background, GenerateParams, ImageSize, Output, OutputFormat};
use domain::task::TaskKind;
use domain::{Error, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use store::{GalleryItem, NewTask, Submitted, Task, TaskEvent, User};

use crate::context::ApiUser;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// JSON body extractor whose failures are our stable codes: unparsable →
/// `invalid_json`, wrong shape → `invalid_input`, too big → `payload_too_large`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError(Error::new(ErrorCode::PayloadTooLarge, "request body too large"))
            } else {
                ApiError(Error::new(ErrorCode::InvalidInput, "could not read the request body"))
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            let code = if e.is_data() { ErrorCode::InvalidInput } else { ErrorCode::InvalidJson };
            ApiError(Error::new(code, e.to_string()))
        })
    }
}

/// Query-string extractor whose failures are `invalid_input`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| ApiError(Error::invalid(e.body_text())))
    }
}

/// Ids that are not ours are answered like missing rows: never a database error.
pub fn checked_id(id: &str) -> ApiResult<&str> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError(Error::not_found()))
    }
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(_) => ApiError(Error::new(ErrorCode::Unavailable, "database unreachable")).into_response(),
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    pub prompt: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// A model name of the engine router (default: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A quality of the price list (default: `standard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Preview frames per image sent on the account's event stream (0–3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_images: Option<u32>,
    /// Where to POST this task's completion event (native API only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// The model names people may pick: the configured one, then every name
/// the engine router has a route for.
pub fn models(state: &AppState) -> Vec<String> {
    let mut names = vec![state.config.model.clone()];
    names.extend(state.engines.models().into_iter().filter(|m| *m != state.config.model));
    names
}

/// The qualities of the price list, `standard` first.
pub fn qualities(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = state.config.billing.prices.qualities.keys().cloned().collect();
    names.sort_by_key(|q| q != "standard");
    names
}

/// Validates, prices and queues a generate task for `user`; shared by the
/// API and the generate form.
pub async fn submit(state: &AppState, user: &User, request: SubmitTask, idempotency_key: Option<String>) -> Result<Submitted, Error> {
    let limits = state.config.limits;
    let prompt = validate_prompt(&request.prompt, &limits)?;
    let size = ImageSize::parse(request.size.as_deref().unwrap_or("auto"))?;
    let style = parse_style(request.style.as_deref().unwrap_or("none"))?;
    let n = validate_n(request.n.unwrap_or(1), &limits)?;
    if let Some(key) = &idempotency_key {
        if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters"));
        }
    }
    let model = match request.model.as_deref() {
        None => state.config.model.clone(),
        Some(m) => models(state)
            .into_iter()
            .find(|known| known == m)
            .ok_or_else(|| Error::invalid(format!("model must be one of {}", models(state).join(", "))))?,
    };
    let quality = request.quality.clone().unwrap_or_else(|| "standard".into());
    if !qualities(state).contains(&quality) {
        return Err(Error::invalid(format!("quality must be one of {}", qualities(state).join(", "))));
    }
    let partial_images = request.partial_images.unwrap_or(0);
    if partial_images > engines::MAX_PARTIAL_IMAGES {
        return Err(Error::invalid(format!("partial_images must be between 0 and {}", engines::MAX_PARTIAL_IMAGES)));
    }
    let request_hash = to_hex(&Sha256::digest(serde_json::to_vec(&request).unwrap_or_default()));
    let seed = request.seed.unwrap_or_else(rand::random);
    let params = GenerateParams {
        size,
        style,
        n,
        seed,
        output: Default::default(),
        partial_images,
        quality: request.quality.is_some().then(|| quality.clone()),
    };
    crate::moderation::screen_prompt(state, user, &prompt).await?;
    // The price, held from the balance inside the submit transaction.
    let cost = crate::billing::price_with(state, user, &model, &size.label(), &quality, n).await?;
    let submitted = state
        .store
        .submit_task(NewTask {
            owner_id: user.id.clone(),
            kind: TaskKind::Generate.as_str().into(),
            prompt,
            params: serde_json::to_string(&params).map_err(|e| Error::internal(e.to_string()))?,
            provider: Some(state.config.provider.clone()),
            model: Some(model),
            cost,
            max_attempts: state.config.max_attempts,
            idempotency_key,
            request_hash: Some(request_hash),
        })
        .await?;
    if let Submitted::Created(task) = &submitted {
        tracing::info!(task = %task.id, "task queued");
        if task.cost > 0 {
            crate::billing::after_charge(state, user).await;
        }
        state.hub.queued(task);
    }
    Ok(submitted)
}

pub async fn submit_task(
    State(state): State<AppState>,
    api: ApiUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitTask>,
) -> ApiResult<Response> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| Error::invalid("Idempotency-Key must be ASCII"))?;
    // Checked before anything is queued: a refused URL leaves no task.
    let webhook_url = match body.webhook_url.as_deref() {
        Some(url) => Some(crate::hooks::target::check(url, &state.config.hooks).await?),
        None => None,
    };
    let submitted = submit(&state, &api.user, body, key).await?;
    let mut view = serde_json::to_value(task_view(&state, submitted.task()).await?).map_err(|e| Error::internal(e.to_string()))?;
    let status = match (&submitted, webhook_url) {
        (Submitted::Created(task), Some(url)) => {
            view["webhook"] = crate::hooks::attach_to_task(&state, &api.user, &task.id, &url).await?;
            StatusCode::ACCEPTED
        }
        (Submitted::Created(_), None) => StatusCode::ACCEPTED,
        (Submitted::Replayed(_), _) => StatusCode::OK,
    };
    Ok((status, Json(view)).into_response())
}

#[derive(Debug, Serialize)]
pub struct OutputView {
    pub id: String,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub content_type: String,
    pub width: i64,
    pub height: i64,
    pub saved: bool,
    pub expires_at: Option<i64>,
}

impl From<&GalleryItem> for OutputView {
    fn from(g: &GalleryItem) -> Self {
        OutputView {
            url: format!("/api/v1/assets/{}", g.asset.id),
            thumbnail_url: g.thumbnail_id.as_ref().map(|t| format!("/api/v1/assets/{t}")),
            id: g.asset.id.clone(),
            content_type: g.asset.content_type.clone(),
            width: g.asset.width,
            height: g.asset.height,
            saved: g.asset.saved,
            expires_at: g.asset.expires_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    pub params: serde_json::Value,
    pub outputs: Vec<OutputView>,
    pub timeline: Vec<TaskEvent>,
}

pub async fn task_view(state: &AppState, task: &Task) -> Result<TaskView, Error> {
    let outputs = state.store.task_outputs(&task.owner_id, &task.id).await?;
    let timeline = state.store.task_events(&task.owner_id, &task.id).await?;
    Ok(TaskView {
        params: serde_json::from_str(&task.params).unwrap_or(serde_json::Value::Null),
        task: task.clone(),
        outputs: outputs.iter().map(OutputView::from).collect(),
        timeline,
    })
}

pub async fn get_task(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<Json<TaskView>> {
    let task = state.store.get_task(&api.user.id, checked_id(&id)?).await?;
    Ok(Json(task_view(&state, &task).await?))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub before: Option<String>,
    pub limit: Option<i64>,
}

impl PageQuery {
    pub fn checked(&self) -> ApiResult<(Option<&str>, i64)> {
        let before =
            self.before.as_deref().filter(|b| !b.is_empty()).map(checked_id).transpose().map_err(|_| Error::invalid("bad cursor"))?;
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError(Error::invalid("limit must be between 1 and 100")));
        }
        Ok((before, limit))
    }
}

pub async fn list_tasks(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let (before, limit) = query.checked()?;
    let page = state.store.list_tasks(&api.user.id, before, limit).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for task in &page.items {
        items.push(task_view(&state, task).await?);
    }
    Ok(Json(json!({ "items": items, "next_cursor": page.next_cursor })))
}

pub async fn cancel_task(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<Json<TaskView>> {
    let task = state.store.cancel_task(&api.user.id, checked_id(&id)?).await?;
    state.hub.changed(&task);
    Ok(Json(task_view(&state, &task).await?))
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    pub download: Option<String>,
    /// `png`, `jpeg` or `webp`: converted on the fly when the image is
    /// stored in another format.
    pub format: Option<String>,
}

/// JPEG and WebP quality of converted downloads.
const CONVERT_QUALITY: u32 = 92;

/// The stored bytes as `format`; the same bytes when it is the stored one.
async fn converted(state: &AppState, bytes: Vec<u8>, stored: &str, format: OutputFormat) -> Result<(Vec<u8>, &'static str), Error> {
    if OutputFormat::from_content_type(stored) == Some(format) {
        return Ok((bytes, format.content_type()));
    }
    let limits = state.config.decode_limits;
    let output = Output::new(format, Some(CONVERT_QUALITY), Background::Auto)?;
    let encoded = tokio::task::spawn_blocking(move || imaging::decode(&bytes, &limits).and_then(|d| imaging::encode(&d.image, &output)))
        .await
        .map_err(|e| Error::internal(format!("conversion failed: {e}")))??;
    Ok((encoded.bytes, format.content_type()))
}

pub async fn download_asset(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DownloadQuery>,
) -> ApiResult<Response> {
    let format = q.format.as_deref().map(OutputFormat::parse).transpose()?;
    let asset = state.store.get_asset(&api.user.id, checked_id(&id)?).await?;
    let bytes = state.blobs.get(&asset.storage_key).await?.ok_or_else(|| {
        tracing::error!(asset = %asset.id, "object missing from the blob store");
        Error::not_found()
    })?;
    let (bytes, content_type) = match format {
        Some(format) => {
            let (bytes, content_type) = converted(&state, bytes, &asset.content_type, format).await?;
            (bytes, content_type.to_string())
        }
        None => (bytes, asset.content_type.clone()),
    };
    let extension = OutputFormat::from_content_type(&content_type).unwrap_or_default().extension();
    let disposition = if q.download.is_some() { "attachment" } else { "inline" };
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("{disposition}; filename=\"atelier-{}.{extension}\"", asset.id)).expect("ids are ASCII"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

/// Deletes an image and everything derived from it, objects first: once this
/// returns, the bytes are gone from storage (C30). Both steps are idempotent,
/// so a failure half-way is finished by retrying.
pub async fn delete_image(state: &AppState, user: &User, id: &str) -> Result<(), Error> {
    let family = state.store.asset_family(&user.id, id).await?;
    for asset in &family {
        state.blobs.delete(&asset.storage_key).await?;
    }
    state.store.delete_asset(&user.id, id).await?;
    tracing::info!(asset = %id, objects = family.len(), "image deleted");
    Ok(())
}

pub async fn delete_asset(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete_image(&state, &api.user, checked_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub locale: Option<String>,
    pub created_at: i64,
    pub email_verified: bool,
    /// The profile picture (`GET`, signed in), if one was uploaded.
    pub avatar_url: Option<String>,
}

impl From<&User> for AccountView {
    fn from(u: &User) -> Self {
        AccountView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            locale: u.locale.clone(),
            created_at: u.created_at,
            email_verified: u.email_verified_at.is_some(),
            avatar_url: u.avatar_asset_id.as_ref().map(|_| "/account/avatar".to_string()),
        }
    }
}

pub async fn get_account(api: ApiUser) -> Json<AccountView> {
    Json(AccountView::from(&api.user))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub locale: Option<String>,
}

/// Applies a profile edit (C01); an unknown language is refused, an empty
/// one clears the preference.
pub async fn apply_account_update(state: &AppState, user: &User, update: AccountUpdate) -> Result<User, Error> {
    let name = domain::account::normalize_name(update.name.as_deref().unwrap_or(&user.name))?;
    let locale = match update.locale.as_deref() {
        None => user.locale.clone(),
        Some("") => None,
        Some(code) => {
            let lang = crate::i18n::I18n::global()
                .langs()
                .iter()
                .find(|l| l.code == code)
                .ok_or_else(|| Error::invalid("unsupported language"))?;
            Some(lang.code.to_string())
        }
    };
    let updated = state.store.update_profile(&user.id, &name, locale.as_deref()).await?;
    // Rectification (C36) is audited: which fields changed, never their values.
    let changed: Vec<&str> = [("name", user.name != updated.name), ("locale", user.locale != updated.locale)]
        .into_iter()
        .filter_map(|(field, changed)| changed.then_some(field))
        .collect();
    if !changed.is_empty() {
        crate::auth::audit(state, Some(&user.id), "profile_updated", Some(&user.id), None, Some(&changed.join(","))).await;
    }
    Ok(updated)
}

pub async fn update_account(
    State(state): State<AppState>,
    api: ApiUser,
    JsonBody(update): JsonBody<AccountUpdate>,
) -> ApiResult<Json<AccountView>> {
    let user = apply_account_update(&state, &api.user, update).await?;
    Ok(Json(AccountView::from(&user)))
}
