//! Pixel actions on images people own: uploads (decoded with limits, turned
//! upright and re-encoded without metadata before anything is stored, C11),
//! and edit / variation / upscale / restyle tasks (C09), from the native API
//! and from the image page's buttons.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::ids::{new_id, to_hex};
use domain::params::{
    parse_restyle_style, parse_style, parse_upscale_factor, upscale_size, validate_n, validate_prompt, Background, EditParams, ImageSize,
    Output, OutputFormat, RestyleParams, UpscaleParams, VariationParams, FILTER_STYLES, SIZES, STYLES,
};
use domain::task::TaskKind;
use domain::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::{Asset, NewAsset, NewTask, Submitted, User};

use crate::api::{checked_id, task_view, JsonBody};
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, signed_in, FormBody};
use crate::AppState;

// ---------------------------------------------------------------- uploads

#[derive(Debug, Serialize)]
pub struct UploadView {
    pub id: String,
    pub url: String,
    pub thumbnail_url: String,
    pub content_type: String,
    pub width: i64,
    pub height: i64,
    pub size_bytes: i64,
}

/// The image bytes of an upload: a raw body, or the `image` (or `file`)
/// field of a multipart form. What the bytes are is decided by their magic
/// bytes later, never by a name or a declared content type.
async fn upload_bytes(request: Request, state: &AppState) -> Result<Bytes, Error> {
    let too_large = |status: StatusCode| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(ErrorCode::PayloadTooLarge, "request body too large")
        } else {
            Error::invalid("could not read the request body")
        }
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multipart {
        return Bytes::from_request(request, state).await.map_err(|r| too_large(r.status()));
    }
    let mut form = Multipart::from_request(request, state).await.map_err(|r| too_large(r.status()))?;
    while let Some(field) = form.next_field().await.map_err(|e| too_large(e.status()))? {
        if matches!(field.name(), Some("image") | Some("file")) {
            return field.bytes().await.map_err(|e| too_large(e.status()));
        }
    }
    Err(Error::invalid("the form has no image field"))
}

/// Sanitizes and stores an upload and its WebP thumbnail. Nothing is written
/// unless the image decoded within the limits.
pub async fn store_upload(state: &AppState, user: &User, bytes: Bytes) -> Result<Asset, Error> {
    if bytes.is_empty() {
        return Err(Error::new(ErrorCode::InvalidImage, "the upload is empty"));
    }
    let (limits, side) = (state.config.decode_limits, state.config.thumbnail_side);
    let (clean, thumb) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let clean = imaging::sanitize_upload(&bytes, &limits)?;
        let thumb = imaging::thumbnail(&clean.image, side)?;
        Ok((clean, thumb))
    })
    .await
    .map_err(|e| Error::internal(format!("upload processing failed: {e}")))??;
    crate::moderation::screen_upload(state, user, &clean.encoded.bytes, clean.encoded.content_type).await?;
    let id = new_id();
    let mut stored: Vec<NewAsset> = Vec::new();
    for (encoded, kind, asset_id, parent) in [(clean.encoded, "upload", id.clone(), None), (thumb, "thumbnail", new_id(), Some(id.clone()))]
    {
        let asset = NewAsset {
            storage_key: format!("{}/{}.{}", user.id, asset_id, encoded.format().extension()),
            id: asset_id,
            owner_id: user.id.clone(),
            task_id: None,
            kind: kind.into(),
            parent_id: parent,
            content_type: encoded.content_type.into(),
            sha256: to_hex(&Sha256::digest(&encoded.bytes)),
            size_bytes: encoded.bytes.len() as i64,
            width: i64::from(encoded.width),
            height: i64::from(encoded.height),
            saved: false,
            expires_at: None,
        };
        if let Err(e) = state.blobs.put(&asset.storage_key, encoded.bytes).await {
            discard(state, &stored).await;
            return Err(e);
        }
        stored.push(asset);
    }
    for (i, asset) in stored.iter().enumerate() {
        if let Err(e) = state.store.insert_asset(asset).await {
            if i > 0 {
                let _ = state.store.delete_asset(&user.id, &id).await;
            }
            discard(state, &stored).await;
            return Err(e);
        }
    }
    tracing::info!(asset = %id, from = clean.source_format.as_str(), orientation = clean.orientation, "upload stored");
    state.store.get_asset(&user.id, &id).await
}

async fn discard(state: &AppState, assets: &[NewAsset]) {
    for a in assets {
        if let Err(e) = state.blobs.delete(&a.storage_key).await {
            tracing::error!(key = %a.storage_key, error = %e, "could not discard an object");
        }
    }
}

/// `POST /api/v1/uploads`: raw image bytes or a multipart `image` field.
pub async fn upload(State(state): State<AppState>, api: ApiUser, request: Request) -> ApiResult<Response> {
    let bytes = upload_bytes(request, &state).await?;
    let asset = store_upload(&state, &api.user, bytes).await?;
    let thumb = state.store.asset_family(&api.user.id, &asset.id).await?.into_iter().find(|a| a.kind == "thumbnail");
    let view = UploadView {
        url: format!("/api/v1/assets/{}", asset.id),
        thumbnail_url: thumb.map(|t| format!("/api/v1/assets/{}", t.id)).unwrap_or_default(),
        id: asset.id,
        content_type: asset.content_type,
        width: asset.width,
        height: asset.height,
        size_bytes: asset.size_bytes,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

// ---------------------------------------------------------------- tasks

/// A source image: the user's upload or output (never a thumbnail).
async fn source(state: &AppState, user: &User, id: &str) -> Result<Asset, Error> {
    let asset = state.store.get_asset(&user.id, checked_id(id).map_err(|e| e.0)?).await?;
    if !matches!(asset.kind.as_str(), "upload" | "output") {
        return Err(Error::not_found());
    }
    Ok(asset)
}

fn output_of(format: Option<&str>, compression: Option<u32>, background: Option<&str>) -> Result<Output, Error> {
    let format = format.map(OutputFormat::parse).transpose()?.unwrap_or_default();
    let background = background.map(Background::parse).transpose()?.unwrap_or_default();
    Output::new(format, compression, background)
}

/// Queues a task of `kind` (the same path as a generate: idempotency key,
/// price held in the submit transaction, hub wake-up).
#[allow(clippy::too_many_arguments)]
async fn queue(
    state: &AppState,
    user: &User,
    kind: TaskKind,
    prompt: String,
    params: String,
    price_size: &str,
    n: u32,
    request_hash: String,
    idempotency_key: Option<String>,
) -> Result<Submitted, Error> {
    if let Some(key) = &idempotency_key {
        if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters"));
        }
    }
    if !prompt.is_empty() {
        crate::moderation::screen_prompt(state, user, &prompt).await?;
    }
    let cost = crate::billing::price_of(state, user, price_size, n).await?;
    let submitted = state
        .store
        .submit_task(NewTask {
            owner_id: user.id.clone(),
            kind: kind.as_str().into(),
            prompt,
            params,
            provider: Some(state.config.provider.clone()),
            model: Some(state.config.model.clone()),
            cost,
            max_attempts: state.config.max_attempts,
            idempotency_key,
            request_hash: Some(request_hash),
        })
        .await?;
    if let Submitted::Created(task) = &submitted {
        tracing::info!(task = %task.id, kind = kind.as_str(), "task queued");
        if task.cost > 0 {
            crate::billing::after_charge(state, user).await;
        }
        state.hub.queued(task);
    }
    Ok(submitted)
}

/// The size label used for pricing: the output size when it is one of the
/// sizes on the price list, else one standard 1024x1024 image.
pub(crate) fn price_label(w: u32, h: u32) -> String {
    if SIZES.contains(&(w, h)) {
        format!("{w}x{h}")
    } else {
        "1024x1024".into()
    }
}

fn hash_of(kind: TaskKind, source: &str, body: &impl Serialize) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str());
    h.update([0]);
    h.update(source);
    h.update([0]);
    h.update(serde_json::to_vec(body).unwrap_or_default());
    to_hex(&h.finalize())
}

fn to_json(p: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(p).map_err(|e| Error::internal(e.to_string()))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpscaleBody {
    #[serde(default)]
    pub factor: Option<u32>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub output_compression: Option<u32>,
}

pub async fn submit_upscale(state: &AppState, user: &User, id: &str, body: UpscaleBody, key: Option<String>) -> Result<Submitted, Error> {
    let src = source(state, user, id).await?;
    let factor = parse_upscale_factor(body.factor.unwrap_or(4))?;
    // Refused now, not in the worker, when the image is already 4K.
    upscale_size((src.width as u32, src.height as u32), factor)?;
    let output = output_of(body.output_format.as_deref(), body.output_compression, None)?;
    let params = UpscaleParams { source: src.id.clone(), factor, output };
    let hash = hash_of(TaskKind::Upscale, &src.id, &body);
    queue(state, user, TaskKind::Upscale, String::new(), to_json(&params)?, "1024x1024", 1, hash, key).await
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestyleBody {
    pub style: String,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub output_compression: Option<u32>,
}

pub async fn submit_restyle(state: &AppState, user: &User, id: &str, body: RestyleBody, key: Option<String>) -> Result<Submitted, Error> {
    let src = source(state, user, id).await?;
    let style = parse_restyle_style(&body.style)?;
    let output = output_of(body.output_format.as_deref(), body.output_compression, None)?;
    let params = RestyleParams { source: src.id.clone(), style, output };
    let hash = hash_of(TaskKind::Restyle, &src.id, &body);
    queue(state, user, TaskKind::Restyle, String::new(), to_json(&params)?, "1024x1024", 1, hash, key).await
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariationBody {
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub output_compression: Option<u32>,
}

pub async fn submit_variation(
    state: &AppState,
    user: &User,
    id: &str,
    body: VariationBody,
    key: Option<String>,
) -> Result<Submitted, Error> {
    let order = VariationOrder {
        source: id.to_string(),
        size: body.size.as_deref().map(ImageSize::parse).transpose()?,
        n: validate_n(body.n.unwrap_or(1), &state.config.limits)?,
        seed: body.seed.unwrap_or_else(rand::random),
        output: output_of(body.output_format.as_deref(), body.output_compression, None)?,
    };
    queue_variation(state, user, order, hash_of(TaskKind::Variation, id, &body), key).await
}

/// A variation whose values are already checked (by the native API's
/// configured limits or by the Images API's own rules).
pub struct VariationOrder {
    pub source: String,
    pub size: Option<ImageSize>,
    pub n: u32,
    pub seed: u64,
    pub output: Output,
}

/// Queues a checked variation of one of `user`'s images.
pub async fn queue_variation(
    state: &AppState,
    user: &User,
    order: VariationOrder,
    request_hash: String,
    key: Option<String>,
) -> Result<Submitted, Error> {
    let src = source(state, user, &order.source).await?;
    let (w, h) = order.size.map(|s| (s.width, s.height)).unwrap_or((src.width as u32, src.height as u32));
    if w.max(h) > ENGINE_MAX_SIDE {
        return Err(Error::invalid(format!("variations are limited to {ENGINE_MAX_SIDE} pixels on the long side; pick a size")));
    }
    let VariationOrder { size, n, seed, output, .. } = order;
    let params = VariationParams { source: src.id, size, n, seed, output };
    queue(state, user, TaskKind::Variation, String::new(), to_json(&params)?, &price_label(w, h), n, request_hash, key).await
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    pub prompt: String,
    /// An uploaded mask: alpha 0 marks the area to repaint.
    #[serde(default)]
    pub mask: Option<String>,
    /// Further images (uploads or outputs) the edit may draw on.
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub output_compression: Option<u32>,
    #[serde(default)]
    pub background: Option<String>,
    /// Preview frames per image sent on the account's event stream (0–3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_images: Option<u32>,
}

pub async fn submit_edit(state: &AppState, user: &User, id: &str, body: EditBody, key: Option<String>) -> Result<Submitted, Error> {
    let order = EditOrder {
        source: id.to_string(),
        references: body.references.clone(),
        mask: body.mask.clone(),
        prompt: validate_prompt(&body.prompt, &state.config.limits)?,
        size: body.size.as_deref().map(ImageSize::parse).transpose()?,
        style: parse_style(body.style.as_deref().unwrap_or("none"))?,
        n: validate_n(body.n.unwrap_or(1), &state.config.limits)?,
        seed: body.seed.unwrap_or_else(rand::random),
        output: output_of(body.output_format.as_deref(), body.output_compression, body.background.as_deref())?,
        partial_images: match body.partial_images.unwrap_or(0) {
            n if n <= engines::MAX_PARTIAL_IMAGES => n,
            _ => return Err(Error::invalid(format!("partial_images must be between 0 and {}", engines::MAX_PARTIAL_IMAGES))),
        },
    };
    queue_edit(state, user, order, hash_of(TaskKind::Edit, id, &body), key).await
}

/// An edit whose values are already checked (by the native API's
/// configured limits or by the Images API's own rules); the images are
/// looked up among `user`'s when it is queued.
pub struct EditOrder {
    pub source: String,
    pub references: Vec<String>,
    pub mask: Option<String>,
    pub prompt: String,
    pub size: Option<ImageSize>,
    pub style: String,
    pub n: u32,
    pub seed: u64,
    pub output: Output,
    /// Preview frames to stream per image (Images API streaming).
    pub partial_images: u32,
}

/// Queues a checked edit of `user`'s images.
pub async fn queue_edit(
    state: &AppState,
    user: &User,
    order: EditOrder,
    request_hash: String,
    key: Option<String>,
) -> Result<Submitted, Error> {
    let src = source(state, user, &order.source).await?;
    if order.references.len() > 15 {
        return Err(Error::invalid("at most 15 reference images"));
    }
    let mut sources = vec![src.id.clone()];
    for r in &order.references {
        sources.push(source(state, user, r).await?.id);
    }
    let mask = match &order.mask {
        Some(m) => Some(source(state, user, m).await?.id),
        None => None,
    };
    let (w, h) = order.size.map(|s| (s.width, s.height)).unwrap_or((src.width as u32, src.height as u32));
    if w.max(h) > ENGINE_MAX_SIDE {
        return Err(Error::invalid(format!("edits are limited to {ENGINE_MAX_SIDE} pixels on the long side; pick a size")));
    }
    let EditOrder { prompt, size, style, n, seed, output, partial_images, .. } = order;
    let params = EditParams { sources, mask, size, style, n, seed, output, partial_images };
    queue(state, user, TaskKind::Edit, prompt, to_json(&params)?, &price_label(w, h), n, request_hash, key).await
}

/// The largest side an edit or a variation may produce (what the engines
/// render; an upload may be larger and then needs an explicit size).
const ENGINE_MAX_SIDE: u32 = 4096;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| Error::invalid("Idempotency-Key must be ASCII"))
}

async fn respond(state: &AppState, submitted: Submitted) -> ApiResult<Response> {
    let status = match submitted {
        Submitted::Created(_) => StatusCode::ACCEPTED,
        Submitted::Replayed(_) => StatusCode::OK,
    };
    let view = task_view(state, submitted.task()).await?;
    Ok((status, Json(view)).into_response())
}

pub async fn api_upscale(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<UpscaleBody>,
) -> ApiResult<Response> {
    let submitted = submit_upscale(&state, &api.user, &id, body, idempotency_key(&headers)?).await?;
    respond(&state, submitted).await
}

pub async fn api_restyle(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RestyleBody>,
) -> ApiResult<Response> {
    let submitted = submit_restyle(&state, &api.user, &id, body, idempotency_key(&headers)?).await?;
    respond(&state, submitted).await
}

pub async fn api_variation(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VariationBody>,
) -> ApiResult<Response> {
    let submitted = submit_variation(&state, &api.user, &id, body, idempotency_key(&headers)?).await?;
    respond(&state, submitted).await
}

pub async fn api_edit(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EditBody>,
) -> ApiResult<Response> {
    let submitted = submit_edit(&state, &api.user, &id, body, idempotency_key(&headers)?).await?;
    respond(&state, submitted).await
}

// ---------------------------------------------------------------- pages

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub style: Option<String>,
}

/// The image page's task buttons.
enum Button {
    Upscale,
    Restyle,
    Variation,
}

/// Queues a button's task for the signed-in owner and shows its task page.
async fn press(state: AppState, ctx: Ctx, id: String, form: ActionForm, button: Button) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let submitted = match button {
        Button::Upscale => submit_upscale(&state, user, &id, UpscaleBody::default(), None).await?,
        Button::Restyle => {
            let body = RestyleBody { style: form.style.unwrap_or_default(), ..Default::default() };
            submit_restyle(&state, user, &id, body, None).await?
        }
        Button::Variation => submit_variation(&state, user, &id, VariationBody::default(), None).await?,
    };
    Ok(Redirect::to(&format!("/tasks/{}", submitted.task().id)).into_response())
}

/// "Upscale to 4K".
pub async fn upscale_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    press(state, ctx, id, form, Button::Upscale).await
}

/// "Restyle" with the chosen style.
pub async fn restyle_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    press(state, ctx, id, form, Button::Restyle).await
}

/// "Variations".
pub async fn variation_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActionForm>,
) -> ApiResult<Response> {
    press(state, ctx, id, form, Button::Variation).await
}

/// The action forms shown on an image's page.
pub fn image_actions_html(ctx: &Ctx, asset: &Asset) -> String {
    if !matches!(asset.kind.as_str(), "output" | "upload") {
        return String::new();
    }
    let t = |k: &str| esc(&ctx.lang.t(k));
    let csrf = esc(&ctx.csrf);
    let upscale = if upscale_size((asset.width as u32, asset.height as u32), 4).is_ok() {
        format!(
            r#"<form method="post" action="/images/{id}/upscale" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><button>{label}</button></form>"#,
            id = asset.id,
            label = t("image.upscale"),
        )
    } else {
        String::new()
    };
    // Filter styles first: they are what "restyle" usually means.
    let options: String = FILTER_STYLES
        .iter()
        .chain(STYLES.iter().filter(|s| **s != "none" && !FILTER_STYLES.contains(s)))
        .map(|s| format!(r#"<option value="{s}">{}</option>"#, t(&format!("style.{s}"))))
        .collect();
    format!(
        r#"<div class="actions">{upscale}<form method="post" action="/images/{id}/variations" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><button class="secondary">{variations}</button></form> <a class="button secondary" href="/generate?source={id}">{edit}</a>
<form method="post" action="/images/{id}/restyle" class="inline"><input type="hidden" name="_csrf" value="{csrf}"><label>{style_t} <select name="style">{options}</select></label> <button>{restyle}</button></form></div>"#,
        id = asset.id,
        variations = t("image.variations"),
        edit = t("image.edit"),
        style_t = t("generate.style"),
        restyle = t("image.restyle"),
    )
}
