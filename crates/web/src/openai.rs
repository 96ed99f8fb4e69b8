//! The OpenAI-compatible Images API under `/v1`: `POST /v1/images/generations`,
//! `GET /v1/models` and expiring signed download links (`GET /v1/files/{id}`).
//! Authenticated by API keys; errors in OpenAI's shape
//! `{"error":{"message","type","param","code"}}`. Every call is a task of the
//! key's owner (history, gallery, billing, `Idempotency-Key`); the request
//! waits for the worker to finish it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use domain::ids::to_hex;
use domain::params::{Background, GenerateParams, ImageSize, Output, OutputFormat, SIZES};
use domain::task::{TaskKind, TaskStatus};
use domain::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use store::{NewTask, Submitted, Task, User};

use crate::api_keys::ApiKeyUser;
use crate::AppState;

/// Longest prompt the Images API takes (characters).
pub const PROMPT_MAX_CHARS: usize = 32_000;
pub const MAX_N: i64 = 10;
/// Lifetime of a `url` response's signed link.
pub const LINK_TTL_SECS: i64 = 3600;
/// OpenAI's model names, listed by `/v1/models` when a `*` route serves
/// any model name.
pub const MODELS: &[&str] = &["gpt-image-2", "gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini", "dall-e-3", "dall-e-2"];
const DEFAULT_MODEL: &str = "gpt-image-2";
const ENGINE_HEADER: &str = "x-atelier-engine";

/// An error as OpenAI's clients expect it, with the offending parameter.
#[derive(Debug)]
pub struct OpenAiError {
    pub error: Error,
    pub param: Option<&'static str>,
}

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        OpenAiError { error, param: None }
    }
}

fn bad(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError { error: Error::invalid(message), param: Some(param) }
}

/// The one mapping from our stable codes to OpenAI's error `type` (the
/// status comes from [`ErrorCode::http_status`], the `code` is ours).
pub fn error_type(code: ErrorCode) -> &'static str {
    match code.http_status() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if code == ErrorCode::Internal { "internal error".to_string() } else { self.error.message };
        let api_code = match code {
            ErrorCode::Unauthenticated => "invalid_api_key",
            other => other.as_str(),
        };
        let body = json!({ "error": { "message": message, "type": error_type(code), "param": self.param, "code": api_code } });
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.error.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

type OaResult<T> = Result<T, OpenAiError>;

/// Unknown `/v1` paths, answered in the same shape.
pub async fn not_found() -> OpenAiError {
    OpenAiError { error: Error::new(ErrorCode::NotFound, "Unknown request URL."), param: None }
}

fn engine_header(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&state.config.provider).unwrap_or(HeaderValue::from_static("unknown"))
}

pub async fn list_models(State(state): State<AppState>, key: ApiKeyUser) -> OaResult<Response> {
    let _ = key;
    // Every routed name; a `*` route serves OpenAI's names too.
    let routes = &state.config.models;
    let mut listed: Vec<(&str, String)> = Vec::new();
    for (model, providers) in routes {
        if model == "*" {
            let named = |id: &&str| !routes.iter().any(|(m, _)| m == id);
            listed.extend(MODELS.iter().filter(named).map(|id| (*id, providers.join(","))));
        } else {
            listed.push((model, providers.join(",")));
        }
    }
    let data: Vec<_> = listed
        .iter()
        .map(|(id, engine)| json!({ "id": id, "object": "model", "created": 0, "owned_by": "atelier", "engine": engine }))
        .collect();
    let routing: serde_json::Map<String, serde_json::Value> = routes.iter().map(|(m, p)| (m.clone(), json!(p.join(",")))).collect();
    let mut response = Json(json!({ "object": "list", "data": data, "routing": routing })).into_response();
    response.headers_mut().insert(ENGINE_HEADER, engine_header(&state));
    Ok(response)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct GenerationRequest {
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub background: Option<String>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub output_compression: Option<i64>,
    #[serde(default)]
    pub moderation: Option<String>,
    #[serde(default)]
    pub response_format: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub partial_images: Option<i64>,
    #[serde(default)]
    pub input_fidelity: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// `size` as the Images API documents it: `auto`, the fixed sizes, and for
/// gpt-image-2 any `WxH` with both sides multiples of 16, aspect ratio
/// between 1:3 and 3:1, at most 3840x2160.
pub fn parse_size(size: &str, model: &str) -> OaResult<ImageSize> {
    if size == "auto" {
        return Ok(ImageSize { width: 1024, height: 1024 });
    }
    let Some((w, h)) = size.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))) else {
        return Err(bad("size", format!("Invalid size '{size}': expected auto or WIDTHxHEIGHT.")));
    };
    if SIZES.contains(&(w, h)) {
        return Ok(ImageSize { width: w, height: h });
    }
    if model != "gpt-image-2" {
        return Err(bad("size", format!("Invalid size '{size}' for {model}: supported are auto, 1024x1024, 1536x1024, 1024x1536.")));
    }
    let (long, short) = (w.max(h), w.min(h));
    if w == 0 || h == 0 || w % 16 != 0 || h % 16 != 0 {
        return Err(bad("size", format!("Invalid size '{size}': both sides must be positive multiples of 16.")));
    }
    if long > 3 * short {
        return Err(bad("size", format!("Invalid size '{size}': the aspect ratio must be between 1:3 and 3:1.")));
    }
    if long > 3840 || short > 2160 {
        return Err(bad("size", format!("Invalid size '{size}': at most 3840x2160.")));
    }
    Ok(ImageSize { width: w, height: h })
}

/// What a validated request asks for.
struct Plan {
    model: String,
    prompt: String,
    n: u32,
    size: ImageSize,
    quality: String,
    output: Output,
    url: bool,
    stream: bool,
}

fn one_of(param: &'static str, value: Option<&str>, allowed: &[&str], default: &str) -> OaResult<String> {
    let v = value.unwrap_or(default);
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(bad(param, format!("Invalid value for '{param}': '{v}'. Supported values are: {}.", allowed.join(", "))))
    }
}

fn plan(req: &GenerationRequest) -> OaResult<Plan> {
    let model = req.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_string());
    if model.is_empty() || model.len() > 100 {
        return Err(bad("model", "Invalid model."));
    }
    let prompt = req.prompt.trim();
    if prompt.is_empty() {
        return Err(bad("prompt", "The prompt must not be empty."));
    }
    let chars = prompt.chars().count();
    if chars > PROMPT_MAX_CHARS {
        return Err(OpenAiError {
            error: Error::new(ErrorCode::PromptTooLong, format!("The prompt has {chars} characters; the limit is {PROMPT_MAX_CHARS}.")),
            param: Some("prompt"),
        });
    }
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(bad("n", format!("Invalid 'n': {n}. It must be between 1 and {MAX_N}.")));
    }
    let size = parse_size(req.size.as_deref().unwrap_or("auto"), &model)?;
    let quality = one_of("quality", req.quality.as_deref(), &["auto", "low", "medium", "high", "standard", "hd"], "auto")?;
    let format = one_of("output_format", req.output_format.as_deref(), &["png", "jpeg", "webp"], "png")?;
    let format = OutputFormat::parse(&format).map_err(|e| OpenAiError { error: e, param: Some("output_format") })?;
    let background = one_of("background", req.background.as_deref(), &["auto", "transparent", "opaque"], "auto")?;
    let background = Background::parse(&background).map_err(|e| OpenAiError { error: e, param: Some("background") })?;
    if let Some(c) = req.output_compression {
        if !(0..=100).contains(&c) {
            return Err(bad("output_compression", format!("Invalid 'output_compression': {c}. It must be between 0 and 100.")));
        }
        if format == OutputFormat::Png && c != 100 {
            return Err(bad("output_compression", "output_compression is only supported for the jpeg and webp output formats."));
        }
    }
    if background == Background::Transparent && format == OutputFormat::Jpeg {
        return Err(bad("background", "A transparent background needs output_format png or webp."));
    }
    let output = Output::new(format, req.output_compression.map(|c| c as u32), background)
        .map_err(|e| OpenAiError { error: e, param: Some("background") })?;
    one_of("moderation", req.moderation.as_deref(), &["auto", "low"], "auto")?;
    if let Some(f) = &req.input_fidelity {
        one_of("input_fidelity", Some(f), &["low", "high"], "low")?;
    }
    let response_format = one_of("response_format", req.response_format.as_deref(), &["b64_json", "url"], "b64_json")?;
    let partial = req.partial_images.unwrap_or(0);
    if !(0..=3).contains(&partial) {
        return Err(bad("partial_images", "partial_images must be between 0 and 3."));
    }
    Ok(Plan {
        model,
        prompt: prompt.to_string(),
        n: n as u32,
        size,
        quality,
        output,
        url: response_format == "url",
        stream: req.stream.unwrap_or(false),
    })
}

fn idempotency_key(headers: &HeaderMap) -> OaResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| bad("Idempotency-Key", "Idempotency-Key must be ASCII."))?;
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad("Idempotency-Key", "Idempotency-Key must be 1 to 255 visible ASCII characters."));
    }
    Ok(Some(key.to_string()))
}

/// Waits until the task is finished (the worker runs it), reading the store
/// on every hub signal and at least once a second.
async fn wait_for(state: &AppState, owner_id: &str, task_id: &str) -> Result<Task, Error> {
    let mut signals = state.hub.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let task = state.store.get_task(owner_id, task_id).await?;
        if task.status.is_terminal() {
            return Ok(task);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::new(ErrorCode::Unavailable, "the image is taking too long; it will appear in your history"));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match signals.recv().await {
                    Ok(s) if s.task_id == task_id => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

fn finished(task: &Task) -> OaResult<()> {
    match task.status {
        TaskStatus::Succeeded => Ok(()),
        TaskStatus::Canceled => Err(Error::new(ErrorCode::Unavailable, "the task was canceled").into()),
        _ => {
            let code = task
                .error_code
                .as_deref()
                .and_then(|c| ErrorCode::ALL.iter().copied().find(|k| k.as_str() == c))
                .unwrap_or(ErrorCode::Unavailable);
            Err(Error::new(code, task.error_message.clone().unwrap_or_else(|| "the image could not be generated".into())).into())
        }
    }
}

/// The key that signs download links, kept in the database so every node
/// agrees and links survive restarts.
async fn link_secret(state: &AppState) -> Result<Vec<u8>, Error> {
    static SECRET: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    SECRET
        .get_or_try_init(|| async {
            let fresh: [u8; 32] = rand::random();
            state.store.server_secret("download_link_hmac", fresh.to_vec()).await
        })
        .await
        .cloned()
}

fn sign(secret: &[u8], asset_id: &str, expires: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    to_hex(ring::hmac::sign(&key, format!("{asset_id}.{expires}").as_bytes()).as_ref())
}

/// A link to `asset_id` valid for [`LINK_TTL_SECS`]. `base` is where the
/// caller reached us (the link goes back only to that caller).
pub async fn signed_url(state: &AppState, base: &str, asset_id: &str) -> Result<String, Error> {
    let expires = store::now_ms() / 1000 + LINK_TTL_SECS;
    let sig = sign(&link_secret(state).await?, asset_id, expires);
    Ok(format!("{}/v1/files/{asset_id}?expires={expires}&sig={sig}", base.trim_end_matches('/')))
}

/// The origin the API caller used: the request's Host (with the configured
/// scheme), falling back to the configured public URL.
fn caller_base(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)));
    match host {
        Some(host) => format!("{}://{host}", if state.config.https { "https" } else { "http" }),
        None => state.config.public_url.clone(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    pub expires: Option<i64>,
    pub sig: Option<String>,
}

/// `GET /v1/files/{id}?expires=…&sig=…`: downloads without a session while
/// the signature is valid and unexpired; otherwise 404 or 403.
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LinkQuery>,
) -> OaResult<Response> {
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return Err(Error::new(ErrorCode::Forbidden, "this link is not signed").into());
    };
    let expected = sign(&link_secret(&state).await?, &id, expires);
    if !crate::context::tokens_match(&expected, &sig) {
        return Err(Error::new(ErrorCode::Forbidden, "invalid link signature").into());
    }
    if expires < store::now_ms() / 1000 {
        return Err(Error::new(ErrorCode::Forbidden, "this link has expired").into());
    }
    let asset = state.store.asset_for_signed_link(crate::api::checked_id(&id).map_err(|e| e.0)?).await?;
    let bytes = state.blobs.get(&asset.storage_key).await?.ok_or_else(Error::not_found)?;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&asset.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> OaResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { ErrorCode::InvalidInput } else { ErrorCode::InvalidJson };
        OpenAiError { error: Error::new(code, e.to_string()), param: None }
    })
}

async fn submit(state: &AppState, user: &User, plan: &Plan, request_hash: String, key: Option<String>) -> OaResult<Submitted> {
    let params = GenerateParams { size: plan.size, style: "none".into(), n: plan.n, seed: rand::random(), output: plan.output };
    let cost = crate::billing::price_of(state, user, &plan.size.label(), plan.n).await?;
    let submitted = state
        .store
        .submit_task(NewTask {
            owner_id: user.id.clone(),
            kind: TaskKind::Generate.as_str().into(),
            prompt: plan.prompt.clone(),
            params: serde_json::to_string(&params).map_err(|e| Error::internal(e.to_string()))?,
            provider: Some(state.config.provider.clone()),
            model: Some(plan.model.clone()),
            cost,
            max_attempts: state.config.max_attempts,
            idempotency_key: key,
            request_hash: Some(request_hash),
        })
        .await?;
    if let Submitted::Created(task) = &submitted {
        tracing::info!(task = %task.id, model = %plan.model, "images api task queued");
        if task.cost > 0 {
            crate::billing::after_charge(state, user).await;
        }
        state.hub.queued(task);
    }
    Ok(submitted)
}

/// The response body for a finished task.
async fn images_response(state: &AppState, base: &str, task: &Task, plan: &Plan) -> OaResult<serde_json::Value> {
    let outputs = state.store.task_outputs(&task.owner_id, &task.id).await?;
    let mut data = Vec::with_capacity(outputs.len());
    for item in &outputs {
        if plan.url {
            data.push(json!({ "url": signed_url(state, base, &item.asset.id).await?, "revised_prompt": null }));
        } else {
            let bytes = state.blobs.get(&item.asset.storage_key).await?.ok_or_else(Error::not_found)?;
            data.push(json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(&bytes) }));
        }
    }
    let background = match plan.output.background {
        Background::Transparent => "transparent",
        _ => "opaque",
    };
    let quality = if plan.quality == "auto" { "medium" } else { plan.quality.as_str() };
    let input_tokens = (plan.prompt.chars().count() as i64 / 4).max(1);
    let output_tokens = i64::from(plan.size.width) * i64::from(plan.size.height) / 1024 * i64::from(plan.n) / 4;
    Ok(json!({
        "created": task.created_at / 1000,
        "data": data,
        "background": background,
        "output_format": plan.output.format.as_str(),
        "quality": quality,
        "size": plan.size.label(),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": { "text_tokens": input_tokens, "image_tokens": 0 },
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }))
}

pub async fn generations(State(state): State<AppState>, key: ApiKeyUser, headers: HeaderMap, body: Bytes) -> OaResult<Response> {
    let request: GenerationRequest = parse_json(&body)?;
    tracing::debug!(key = %key.key.prefix, "images api generation");
    let plan = plan(&request)?;
    if plan.stream {
        return Err(bad("stream", "Streaming is not available on this server yet."));
    }
    let idempotency = idempotency_key(&headers)?;
    let request_hash = to_hex(&Sha256::digest(serde_json::to_vec(&request).unwrap_or_default()));
    let submitted = submit(&state, &key.user, &plan, request_hash, idempotency).await?;
    let task = wait_for(&state, &key.user.id, &submitted.task().id).await?;
    finished(&task)?;
    let body = images_response(&state, &caller_base(&state, &headers), &task, &plan).await?;
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert(ENGINE_HEADER, engine_header(&state));
    h.insert("x-atelier-task", HeaderValue::from_str(&task.id).expect("ids are ASCII"));
    if matches!(submitted, Submitted::Replayed(_)) {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The fields of an `/v1/images/edits` or `/variations` multipart form.
#[derive(Default)]
struct ImageForm {
    images: Vec<Bytes>,
    mask: Option<Bytes>,
    fields: std::collections::BTreeMap<String, String>,
}

async fn read_form(state: &AppState, request: axum::extract::Request) -> OaResult<ImageForm> {
    use axum::extract::FromRequest;
    let too_large = |status: StatusCode| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(ErrorCode::PayloadTooLarge, "request body too large")
        } else {
            Error::invalid("could not read the multipart form")
        }
    };
    let mut multipart =
        axum::extract::Multipart::from_request(request, state).await.map_err(|r| OpenAiError::from(too_large(r.status())))?;
    let mut form = ImageForm::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| OpenAiError::from(too_large(e.status())))? {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| OpenAiError::from(too_large(e.status())))?;
        match name.as_str() {
            "image" | "image[]" => form.images.push(bytes),
            "mask" => form.mask = Some(bytes),
            _ => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad("form", format!("the field {name} is not text")))?;
                form.fields.insert(name, text);
            }
        }
    }
    if form.images.is_empty() {
        return Err(bad("image", "An image is required."));
    }
    if form.images.len() > 16 {
        return Err(bad("image", "At most 16 images."));
    }
    Ok(form)
}

impl ImageForm {
    fn int(&self, name: &'static str) -> OaResult<Option<i64>> {
        self.fields.get(name).map(|v| v.trim().parse::<i64>().map_err(|_| bad(name, format!("'{name}' must be an integer.")))).transpose()
    }

    /// The form as a generation request, validated by the same rules.
    fn request(&self, prompt: String) -> OaResult<GenerationRequest> {
        let text = |k: &str| self.fields.get(k).cloned();
        Ok(GenerationRequest {
            prompt,
            model: text("model"),
            n: self.int("n")?,
            size: text("size"),
            quality: text("quality"),
            background: text("background"),
            output_format: text("output_format"),
            output_compression: self.int("output_compression")?,
            moderation: None,
            response_format: text("response_format"),
            stream: text("stream").map(|s| s == "true"),
            partial_images: self.int("partial_images")?,
            input_fidelity: text("input_fidelity"),
            style: None,
            user: text("user"),
        })
    }
}

async fn finish(state: &AppState, headers: &HeaderMap, user: &User, submitted: Submitted, mut plan: Plan) -> OaResult<Response> {
    let task = wait_for(state, &user.id, &submitted.task().id).await?;
    finished(&task)?;
    if let Some(first) = state.store.task_outputs(&user.id, &task.id).await?.first() {
        plan.size = ImageSize { width: first.asset.width as u32, height: first.asset.height as u32 };
    }
    let body = images_response(state, &caller_base(state, headers), &task, &plan).await?;
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert(ENGINE_HEADER, engine_header(state));
    h.insert("x-atelier-task", HeaderValue::from_str(&task.id).expect("ids are ASCII"));
    if matches!(submitted, Submitted::Replayed(_)) {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn explicit_size(size: Option<&str>) -> Option<String> {
    size.filter(|s| *s != "auto").map(str::to_string)
}

/// `POST /v1/images/edits`: the first image is edited where the mask (or
/// its own alpha) is transparent; further images are references.
pub async fn edits(
    State(state): State<AppState>,
    key: ApiKeyUser,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> OaResult<Response> {
    let form = read_form(&state, request).await?;
    let prompt = form.fields.get("prompt").cloned().unwrap_or_default();
    let req = form.request(prompt)?;
    let plan = plan(&req)?;
    if plan.stream {
        return Err(bad("stream", "Streaming is not available on this server yet."));
    }
    let idempotency = idempotency_key(&headers)?;
    let mut ids = Vec::with_capacity(form.images.len());
    for image in &form.images {
        ids.push(
            crate::actions::store_upload(&state, &key.user, image.clone())
                .await
                .map_err(|e| OpenAiError { error: e, param: Some("image") })?
                .id,
        );
    }
    let mask = match &form.mask {
        Some(m) => Some(
            crate::actions::store_upload(&state, &key.user, m.clone()).await.map_err(|e| OpenAiError { error: e, param: Some("mask") })?.id,
        ),
        None => None,
    };
    let body = crate::actions::EditBody {
        prompt: plan.prompt.clone(),
        mask,
        references: ids[1..].to_vec(),
        size: explicit_size(req.size.as_deref()),
        style: None,
        n: Some(plan.n),
        seed: None,
        output_format: Some(plan.output.format.as_str().into()),
        output_compression: req.output_compression.map(|c| c as u32),
        background: req.background.clone(),
    };
    let submitted = crate::actions::submit_edit(&state, &key.user, &ids[0], body, idempotency).await?;
    finish(&state, &headers, &key.user, submitted, plan).await
}

/// `POST /v1/images/variations`: variations of one image.
pub async fn variations(
    State(state): State<AppState>,
    key: ApiKeyUser,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> OaResult<Response> {
    let form = read_form(&state, request).await?;
    let req = form.request("variation".into())?;
    let plan = plan(&req)?;
    let idempotency = idempotency_key(&headers)?;
    let id = crate::actions::store_upload(&state, &key.user, form.images[0].clone())
        .await
        .map_err(|e| OpenAiError { error: e, param: Some("image") })?
        .id;
    let body = crate::actions::VariationBody {
        n: Some(plan.n),
        seed: None,
        size: explicit_size(req.size.as_deref()),
        output_format: Some(plan.output.format.as_str().into()),
        output_compression: req.output_compression.map(|c| c as u32),
    };
    let submitted = crate::actions::submit_variation(&state, &key.user, &id, body, idempotency).await?;
    finish(&state, &headers, &key.user, submitted, plan).await
}

/// `GET /openapi.json`: the OpenAI-compatible surface and API keys,
/// written by hand (no generator, no CDN assets).
pub async fn openapi() -> Json<serde_json::Value> {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let images = json!({ "$ref": "#/components/schemas/ImagesResponse" });
    let errors = |extra: &[(&str, &str)]| {
        let mut m = serde_json::Map::new();
        m.insert("200".into(), json!({ "description": "The finished images", "content": { "application/json": { "schema": images } } }));
        for (code, what) in
            [("400", "Invalid parameter (see error.param)"), ("401", "Missing, unknown or revoked API key"), ("402", "Not enough credits")]
                .iter()
                .chain(extra.iter())
        {
            m.insert((*code).into(), json!({ "description": what, "content": { "application/json": { "schema": error } } }));
        }
        serde_json::Value::Object(m)
    };
    let image_fields = json!({
        "model": { "type": "string", "default": DEFAULT_MODEL },
        "prompt": { "type": "string", "maxLength": PROMPT_MAX_CHARS },
        "n": { "type": "integer", "minimum": 1, "maximum": MAX_N, "default": 1 },
        "size": { "type": "string", "description": "auto, 1024x1024, 1536x1024, 1024x1536; for gpt-image-2 any WxH with sides multiples of 16, aspect 1:3 to 3:1, at most 3840x2160" },
        "quality": { "type": "string", "enum": ["auto", "low", "medium", "high", "standard", "hd"] },
        "background": { "type": "string", "enum": ["auto", "transparent", "opaque"], "description": "transparent needs png or webp" },
        "output_format": { "type": "string", "enum": ["png", "jpeg", "webp"] },
        "output_compression": { "type": "integer", "minimum": 0, "maximum": 100, "description": "jpeg and webp only" },
        "moderation": { "type": "string", "enum": ["auto", "low"] },
        "response_format": { "type": "string", "enum": ["b64_json", "url"], "description": "url: an expiring signed link" },
        "input_fidelity": { "type": "string", "enum": ["low", "high"] },
        "user": { "type": "string" }
    });
    let idempotency = json!({ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 255 },
        "description": "A repeat with the same key returns the first result and creates no second task" });
    let mut multipart_fields = image_fields.clone();
    multipart_fields["image"] = json!({ "type": "string", "format": "binary" });
    multipart_fields["image[]"] = json!({ "type": "array", "maxItems": 16, "items": { "type": "string", "format": "binary" } });
    multipart_fields["mask"] = json!({ "type": "string", "format": "binary", "description": "PNG; alpha 0 marks the area to edit" });
    Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "Atelier API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "OpenAI-compatible Images API (bearer API keys) and API key management." },
        "components": {
            "securitySchemes": { "apiKey": { "type": "http", "scheme": "bearer", "description": "An Atelier API key, atl_…" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "message": { "type": "string" }, "type": { "type": "string" }, "param": { "type": ["string", "null"] }, "code": { "type": "string" } } } } },
                "ImagesResponse": { "type": "object", "properties": {
                    "created": { "type": "integer" },
                    "data": { "type": "array", "items": { "type": "object", "properties": { "b64_json": { "type": "string" }, "url": { "type": "string" } } } },
                    "background": { "type": "string" }, "output_format": { "type": "string" }, "quality": { "type": "string" }, "size": { "type": "string" },
                    "usage": { "type": "object" } } },
                "ApiKey": { "type": "object", "properties": {
                    "id": { "type": "string" }, "name": { "type": "string" }, "prefix": { "type": "string" }, "scopes": { "type": "string" },
                    "created_at": { "type": "integer" }, "last_used_at": { "type": ["integer", "null"] }, "revoked_at": { "type": ["integer", "null"] },
                    "secret": { "type": "string", "description": "Only in the creation response" } } }
            }
        },
        "security": [{ "apiKey": [] }],
        "paths": {
            "/v1/images/generations": { "post": {
                "summary": "Generate images (a task; answered when it is done)",
                "parameters": [idempotency],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["prompt"], "properties": image_fields } } } },
                "responses": errors(&[("409", "Idempotency-Key reused with a different body")]) } },
            "/v1/images/edits": { "post": {
                "summary": "Edit images",
                "parameters": [idempotency],
                "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["prompt"], "properties": multipart_fields } } } },
                "responses": errors(&[("413", "An image over the size limits")]) } },
            "/v1/images/variations": { "post": {
                "summary": "Variations of an image",
                "parameters": [idempotency],
                "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["image"], "properties": multipart_fields } } } },
                "responses": errors(&[("413", "An image over the size limits")]) } },
            "/v1/models": { "get": { "summary": "The image models this deployment routes",
                "responses": { "200": { "description": "A list of models" }, "401": { "description": "Bad key", "content": { "application/json": { "schema": error } } } } } },
            "/v1/files/{id}": { "get": { "summary": "Download through an expiring signed link", "security": [],
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "expires", "in": "query", "required": true, "schema": { "type": "integer" } },
                    { "name": "sig", "in": "query", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "The image bytes" }, "403": { "description": "Bad or expired signature" } } } },
            "/api/v1/api-keys": {
                "get": { "summary": "The account's API keys", "responses": { "200": { "description": "{items: ApiKey[]}" } } },
                "post": { "summary": "Create a key (its secret is shown once)",
                    "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string", "maxLength": 100 } } } } } },
                    "responses": { "201": { "description": "The key with its secret", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ApiKey" } } } } } } },
            "/api/v1/api-keys/{id}": { "delete": { "summary": "Revoke a key at once",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "The revoked key" }, "404": { "description": "Not one of the account's keys" } } } }
        }
    }))
}
