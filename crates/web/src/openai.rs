//! The OpenAI-compatible Images API under `/v1`: `POST /v1/images/generations`,
//! `/v1/images/edits`, `/v1/images/variations`, `GET /v1/models` and expiring
//! signed download links (`GET /v1/files/{id}`). Authenticated by API keys;
//! errors in OpenAI's shape `{"error":{"message","type","param","code"}}`.
//! Every call is a task of the key's owner (history, gallery, billing,
//! `Idempotency-Key`); the request waits for the worker to finish it, or with
//! `stream: true` answers with server-sent events: the task's partial frames
//! as they are made, then the finished images.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
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
use tokio::sync::broadcast;
use worker::{PartialFrame, TaskSignal};

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

/// Names `param` on the invalid-input errors of a step (other errors, such
/// as a missing credit or a conflict, are not about one parameter).
fn about(param: &'static str) -> impl Fn(Error) -> OpenAiError {
    move |error| OpenAiError { param: (error.code == ErrorCode::InvalidInput).then_some(param), error }
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

impl OpenAiError {
    /// `{"error":{…}}`, the body of an error response and of a stream's
    /// `error` event.
    fn body(&self) -> serde_json::Value {
        let code = self.error.code;
        let message = if code == ErrorCode::Internal { "internal error" } else { self.error.message.as_str() };
        let api_code = match code {
            ErrorCode::Unauthenticated => "invalid_api_key",
            ErrorCode::ContentPolicyViolation => "moderation_blocked",
            other => other.as_str(),
        };
        json!({ "error": { "message": message, "type": error_type(code), "param": self.param, "code": api_code } })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
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
            let unrouted = MODELS.iter().copied().filter(|id| !routes.iter().any(|(m, _)| m.as_str() == *id));
            listed.extend(unrouted.map(|id| (id, providers.join(","))));
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
    /// Preview frames per image; only when streaming (nobody sees them otherwise).
    partial_images: u32,
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
    let stream = req.stream.unwrap_or(false);
    Ok(Plan {
        model,
        prompt: prompt.to_string(),
        n: n as u32,
        size,
        quality,
        output,
        url: response_format == "url",
        stream,
        partial_images: if stream { partial as u32 } else { 0 },
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

/// How long a request waits for its task before giving up (the task goes on
/// and shows in the history).
const WAIT_LIMIT: Duration = Duration::from_secs(600);

fn too_long() -> Error {
    Error::new(ErrorCode::Unavailable, "the image is taking too long; it will appear in your history")
}

/// The hub subscriptions of one request, taken before its task is queued so
/// that no change and no partial frame of the task is missed.
struct Listeners {
    signals: broadcast::Receiver<TaskSignal>,
    partials: broadcast::Receiver<Arc<PartialFrame>>,
}

impl Listeners {
    fn new(state: &AppState) -> Listeners {
        Listeners { signals: state.hub.subscribe(), partials: state.hub.subscribe_partials() }
    }
}

/// Waits until the task is finished (the worker runs it), reading the store
/// on every hub signal and at least once a second.
async fn wait_for(state: &AppState, owner_id: &str, task_id: &str, signals: &mut broadcast::Receiver<TaskSignal>) -> Result<Task, Error> {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let task = state.store.get_task(owner_id, task_id).await?;
        if task.status.is_terminal() {
            return Ok(task);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(too_long());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), crate::sse::next_signal_for(signals, task_id)).await;
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
async fn link_secret(store: &store::Store) -> Result<Vec<u8>, Error> {
    static SECRET: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    SECRET
        .get_or_try_init(|| async {
            let fresh: [u8; 32] = rand::random();
            store.server_secret("download_link_hmac", fresh.to_vec()).await
        })
        .await
        .cloned()
}

fn sign(secret: &[u8], asset_id: &str, expires: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    to_hex(ring::hmac::sign(&key, format!("{asset_id}.{expires}").as_bytes()).as_ref())
}

/// A link to `asset_id` valid for [`LINK_TTL_SECS`], on the configured
/// public URL: never on the request's Host header, which a client (or
/// anything between it and us) can set to send the link elsewhere.
pub async fn signed_url(state: &AppState, asset_id: &str) -> Result<String, Error> {
    signed_link(&state.store, &state.config.public_url, asset_id, store::now_ms()).await.map(|(url, _)| url)
}

/// A signed link to `asset_id` valid from `now_ms` for [`LINK_TTL_SECS`],
/// and when it expires (Unix seconds).
pub async fn signed_link(store: &store::Store, public_url: &str, asset_id: &str, now_ms: i64) -> Result<(String, i64), Error> {
    let expires = now_ms / 1000 + LINK_TTL_SECS;
    let sig = sign(&link_secret(store).await?, asset_id, expires);
    Ok((format!("{}/v1/files/{asset_id}?expires={expires}&sig={sig}", public_url.trim_end_matches('/')), expires))
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
    let expected = sign(&link_secret(&state.store).await?, &id, expires);
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
    let params = GenerateParams {
        size: plan.size,
        style: "none".into(),
        n: plan.n,
        seed: rand::random(),
        output: plan.output,
        partial_images: plan.partial_images,
        quality: None,
    };
    crate::moderation::screen_prompt(state, user, &plan.prompt).await?;
    let cost = crate::billing::price_of(state, user, &crate::actions::price_label(plan.size.width, plan.size.height), plan.n).await?;
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

impl Plan {
    /// The background the images have (`auto` resolved).
    fn background(&self) -> &'static str {
        match self.output.background {
            Background::Transparent => "transparent",
            _ => "opaque",
        }
    }

    /// The quality the images were made at (`auto` resolved).
    fn quality(&self) -> &str {
        if self.quality == "auto" {
            "medium"
        } else {
            self.quality.as_str()
        }
    }

    /// Token usage in OpenAI's terms, estimated from the prompt and pixels.
    fn usage(&self) -> serde_json::Value {
        let input_tokens = (self.prompt.chars().count() as i64 / 4).max(1);
        let output_tokens = i64::from(self.size.width) * i64::from(self.size.height) / 1024 * i64::from(self.n) / 4;
        json!({
            "input_tokens": input_tokens,
            "input_tokens_details": { "text_tokens": input_tokens, "image_tokens": 0 },
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        })
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The response body for a finished task.
async fn images_response(state: &AppState, task: &Task, plan: &Plan) -> OaResult<serde_json::Value> {
    let outputs = state.store.task_outputs(&task.owner_id, &task.id).await?;
    let mut data = Vec::with_capacity(outputs.len());
    for item in &outputs {
        if plan.url {
            data.push(json!({ "url": signed_url(state, &item.asset.id).await?, "revised_prompt": null }));
        } else {
            let bytes = state.blobs.get(&item.asset.storage_key).await?.ok_or_else(Error::not_found)?;
            data.push(json!({ "b64_json": base64_of(&bytes) }));
        }
    }
    Ok(json!({
        "created": task.created_at / 1000,
        "data": data,
        "background": plan.background(),
        "output_format": plan.output.format.as_str(),
        "quality": plan.quality(),
        "size": plan.size.label(),
        "usage": plan.usage(),
    }))
}

/// Which events a stream is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Generation,
    Edit,
}

impl StreamKind {
    fn event(self, what: &str) -> String {
        let prefix = match self {
            StreamKind::Generation => "image_generation",
            StreamKind::Edit => "image_edit",
        };
        format!("{prefix}.{what}")
    }
}

/// A streamed answer: `<kind>.partial_image` events as the worker makes
/// frames, then one `<kind>.completed` event per image; an `error` event
/// (which the openai SDK raises as `APIError`) if the task fails.
struct Stream {
    state: AppState,
    owner_id: String,
    task_id: String,
    kind: StreamKind,
    plan: Plan,
    listeners: Listeners,
    deadline: tokio::time::Instant,
    ready: VecDeque<Event>,
    /// Read the task on the next turn (at the start, then on every signal
    /// and every second).
    check: bool,
    done: bool,
}

/// What woke a stream up.
enum Wake {
    Frame(Arc<PartialFrame>),
    Check,
    Nothing,
}

fn sse_event(name: String, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl Stream {
    fn partial_event(&self, frame: &PartialFrame) -> Event {
        let data = json!({
            "type": self.kind.event("partial_image"),
            "b64_json": frame.b64,
            "partial_image_index": frame.partial_index,
            "background": self.plan.background(),
            "output_format": self.plan.output.format.as_str(),
            "quality": self.plan.quality(),
            "size": format!("{}x{}", frame.width, frame.height),
            "created_at": store::now_ms() / 1000,
        });
        sse_event(self.kind.event("partial_image"), &data)
    }

    /// Ends the stream with an `error` event.
    fn fail(&mut self, error: OpenAiError) {
        self.ready.push_back(sse_event("error".into(), &error.body()));
        self.done = true;
    }

    /// The `completed` events of a finished task.
    async fn completed(&self, task: &Task) -> OaResult<Vec<Event>> {
        finished(task)?;
        let mut events = Vec::new();
        for item in self.state.store.task_outputs(&task.owner_id, &task.id).await? {
            let bytes = self.state.blobs.get(&item.asset.storage_key).await?.ok_or_else(Error::not_found)?;
            let data = json!({
                "type": self.kind.event("completed"),
                "b64_json": base64_of(&bytes),
                "background": self.plan.background(),
                "output_format": self.plan.output.format.as_str(),
                "quality": self.plan.quality(),
                "size": format!("{}x{}", item.asset.width, item.asset.height),
                "created_at": store::now_ms() / 1000,
                "usage": self.plan.usage(),
            });
            events.push(sse_event(self.kind.event("completed"), &data));
        }
        Ok(events)
    }

    /// Reads the task; once it is finished, queues the frames still in
    /// flight, then its images (or its error), and ends the stream.
    async fn look(&mut self) {
        let task = match self.state.store.get_task(&self.owner_id, &self.task_id).await {
            Ok(task) if task.status.is_terminal() => task,
            Ok(_) if tokio::time::Instant::now() <= self.deadline => return,
            Ok(_) => return self.fail(too_long().into()),
            Err(e) => return self.fail(e.into()),
        };
        loop {
            match self.listeners.partials.try_recv() {
                Ok(frame) if frame.task_id == self.task_id => {
                    let event = self.partial_event(&frame);
                    self.ready.push_back(event);
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        match self.completed(&task).await {
            Ok(events) => {
                self.ready.extend(events);
                self.done = true;
            }
            Err(e) => self.fail(e),
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if std::mem::take(&mut self.check) {
                self.look().await;
                continue;
            }
            let task_id = self.task_id.as_str();
            let wake = tokio::select! {
                frame = self.listeners.partials.recv() => match frame {
                    Ok(frame) if frame.task_id == task_id => Wake::Frame(frame),
                    // A lagged listener lost frames; previews are best effort.
                    _ => Wake::Nothing,
                },
                _ = crate::sse::next_signal_for(&mut self.listeners.signals, task_id) => Wake::Check,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Wake::Check,
            };
            match wake {
                Wake::Frame(frame) => return Some(self.partial_event(&frame)),
                Wake::Check => self.check = true,
                Wake::Nothing => {}
            }
        }
    }
}

pub async fn generations(State(state): State<AppState>, key: ApiKeyUser, headers: HeaderMap, body: Bytes) -> OaResult<Response> {
    let request: GenerationRequest = parse_json(&body)?;
    tracing::debug!(key = %key.key.prefix, "images api generation");
    let plan = plan(&request)?;
    let idempotency = idempotency_key(&headers)?;
    let request_hash = to_hex(&Sha256::digest(serde_json::to_vec(&request).unwrap_or_default()));
    let listeners = Listeners::new(&state);
    let submitted = submit(&state, &key.user, &plan, request_hash, idempotency).await?;
    answer(state, &key.user, submitted, plan, StreamKind::Generation, listeners).await
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
    /// The whole form's fingerprint, image bytes included: a repeated
    /// Idempotency-Key with other content is a conflict, not a replay.
    fn fingerprint(&self, kind: TaskKind) -> String {
        let mut h = Sha256::new();
        h.update(kind.as_str());
        for image in &self.images {
            h.update(b"\0image");
            h.update(Sha256::digest(image));
        }
        if let Some(mask) = &self.mask {
            h.update(b"\0mask");
            h.update(Sha256::digest(mask));
        }
        h.update(serde_json::to_vec(&self.fields).unwrap_or_default());
        to_hex(&h.finalize())
    }

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
            stream: self
                .fields
                .get("stream")
                .map(|v| match v.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad("stream", "'stream' must be true or false.")),
                })
                .transpose()?,
            partial_images: self.int("partial_images")?,
            input_fidelity: text("input_fidelity"),
            style: None,
            user: text("user"),
        })
    }
}

/// The answer to a submitted task: once it is done, its images in one JSON
/// body, or with `stream` the events as they come.
async fn answer(
    state: AppState,
    user: &User,
    submitted: Submitted,
    mut plan: Plan,
    kind: StreamKind,
    mut listeners: Listeners,
) -> OaResult<Response> {
    let task_id = submitted.task().id.clone();
    let mut response = if plan.stream {
        let stream = Stream {
            state: state.clone(),
            owner_id: user.id.clone(),
            task_id: task_id.clone(),
            kind,
            plan,
            listeners,
            deadline: tokio::time::Instant::now() + WAIT_LIMIT,
            ready: VecDeque::new(),
            check: true,
            done: false,
        };
        let events = futures_util::stream::unfold(stream, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    } else {
        let task = wait_for(&state, &user.id, &task_id, &mut listeners.signals).await?;
        finished(&task)?;
        // Edits and variations without a size take their source's.
        if let Some(first) = state.store.task_outputs(&user.id, &task.id).await?.first() {
            plan.size = ImageSize { width: first.asset.width as u32, height: first.asset.height as u32 };
        }
        Json(images_response(&state, &task, &plan).await?).into_response()
    };
    let h = response.headers_mut();
    h.insert(ENGINE_HEADER, engine_header(&state));
    h.insert("x-atelier-task", HeaderValue::from_str(&task_id).expect("ids are ASCII"));
    if matches!(submitted, Submitted::Replayed(_)) {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The size an edit or variation asked for; `auto` (or none) keeps the
/// source image's.
fn explicit_size(req: &GenerationRequest, plan: &Plan) -> Option<ImageSize> {
    req.size.as_deref().filter(|s| *s != "auto").map(|_| plan.size)
}

/// `POST /v1/images/edits`: the first image is edited where the mask (or
/// its own alpha) is transparent; further images are references. Checked
/// by the Images API's rules (n up to 10, prompts up to 32000 characters,
/// free gpt-image-2 sizes), not the web UI's configured limits.
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
    let order = crate::actions::EditOrder {
        source: ids[0].clone(),
        references: ids[1..].to_vec(),
        mask,
        prompt: plan.prompt.clone(),
        size: explicit_size(&req, &plan),
        style: "none".into(),
        n: plan.n,
        seed: rand::random(),
        output: plan.output,
        partial_images: plan.partial_images,
    };
    let listeners = Listeners::new(&state);
    let submitted =
        crate::actions::queue_edit(&state, &key.user, order, form.fingerprint(TaskKind::Edit), idempotency).await.map_err(about("size"))?;
    answer(state, &key.user, submitted, plan, StreamKind::Edit, listeners).await
}

/// `POST /v1/images/variations`: variations of one image (no streaming, as
/// with OpenAI).
pub async fn variations(
    State(state): State<AppState>,
    key: ApiKeyUser,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> OaResult<Response> {
    let form = read_form(&state, request).await?;
    let req = form.request("variation".into())?;
    let plan = plan(&req)?;
    if plan.stream {
        return Err(bad("stream", "Variations cannot be streamed."));
    }
    let idempotency = idempotency_key(&headers)?;
    let id = crate::actions::store_upload(&state, &key.user, form.images[0].clone())
        .await
        .map_err(|e| OpenAiError { error: e, param: Some("image") })?
        .id;
    let order = crate::actions::VariationOrder {
        source: id,
        size: explicit_size(&req, &plan),
        n: plan.n,
        seed: rand::random(),
        output: plan.output,
    };
    let listeners = Listeners::new(&state);
    let submitted = crate::actions::queue_variation(&state, &key.user, order, form.fingerprint(TaskKind::Variation), idempotency)
        .await
        .map_err(about("size"))?;
    answer(state, &key.user, submitted, plan, StreamKind::Generation, listeners).await
}

/// `GET /openapi.json`: the OpenAI-compatible surface and API keys,
/// written by hand (no generator, no CDN assets).
pub async fn openapi() -> Json<serde_json::Value> {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let images = json!({ "$ref": "#/components/schemas/ImagesResponse" });
    let events = json!({ "type": "string", "description": "With stream: `image_generation.partial_image` (`image_edit.partial_image` for edits) events \
        carrying partial_image_index, b64_json, background, output_format, quality, size and created_at, then one `image_generation.completed` \
        (`image_edit.completed`) event per image, which adds usage; an `error` event {error:{…}} if the task fails" });
    let errors = |streams: bool, extra: &[(&str, &str)]| {
        let mut m = serde_json::Map::new();
        let mut content = json!({ "application/json": { "schema": images } });
        if streams {
            content["text/event-stream"] = json!({ "schema": events });
        }
        m.insert("200".into(), json!({ "description": "The finished images", "content": content }));
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
        "stream": { "type": "boolean", "default": false, "description": "Answer with server-sent events (generations and edits)" },
        "partial_images": { "type": "integer", "minimum": 0, "maximum": 3, "default": 0, "description": "Preview frames per image while streaming" },
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
                "responses": errors(true, &[("409", "Idempotency-Key reused with a different body")]) } },
            "/v1/images/edits": { "post": {
                "summary": "Edit images",
                "parameters": [idempotency],
                "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["prompt"], "properties": multipart_fields } } } },
                "responses": errors(true, &[("413", "An image over the size limits")]) } },
            "/v1/images/variations": { "post": {
                "summary": "Variations of an image",
                "parameters": [idempotency],
                "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["image"], "properties": multipart_fields } } } },
                "responses": errors(false, &[("413", "An image over the size limits")]) } },
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
                "responses": { "200": { "description": "The revoked key" }, "404": { "description": "Not one of the account's keys" } } } },
            "/api/v1/webhooks": {
                "get": { "summary": "The account's completion webhook endpoints", "responses": { "200": { "description": "{items: Endpoint[]}" } } },
                "post": { "summary": "Register an endpoint (its signing secret is shown once)",
                    "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["url"],
                        "properties": { "url": { "type": "string", "format": "uri" }, "include_prompt": { "type": "boolean" } } } } } },
                    "responses": { "201": { "description": "The endpoint with its secret" },
                        "400": { "description": "webhook_url_not_allowed: not https, or not a public address" } } } },
            "/api/v1/webhooks/{id}": {
                "get": { "summary": "An endpoint with its latest deliveries",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": { "200": { "description": "The endpoint and {deliveries}" }, "404": { "description": "Not one of the account's endpoints" } } },
                "patch": { "summary": "Enable, disable, include the prompt or not",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "requestBody": { "content": { "application/json": { "schema": { "type": "object",
                        "properties": { "enabled": { "type": "boolean" }, "include_prompt": { "type": "boolean" } } } } } },
                    "responses": { "200": { "description": "The endpoint" }, "404": { "description": "Not one of the account's endpoints" } } },
                "delete": { "summary": "Delete an endpoint and its deliveries",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": { "204": { "description": "Deleted" }, "404": { "description": "Not one of the account's endpoints" } } } }
        }
    }))
}
