//! The generate page: prompt, size, quality, style presets with previews,
//! n, model, the price before submitting; with `generate.js`, reference
//! images (drop or paste), the mask painter (`mask.js`) for edits and live
//! progress with preview frames. Without scripts the form still queues a
//! generation and shows the task page.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use domain::params::{Background, SIZES, STYLES};
use domain::Error;
use engines::{Engine, GenerateRequest, Observer, ProceduralEngine};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::api::{checked_id, models, qualities, submit, QueryParams, SubmitTask};
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::i18n::Lang;
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_labels, status_of, FormBody};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct GenerateForm {
    #[serde(default)]
    pub prompt: String,
    pub size: Option<String>,
    pub style: Option<String>,
    pub quality: Option<String>,
    pub model: Option<String>,
    pub n: Option<u32>,
    #[serde(default)]
    pub _csrf: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct GenerateQuery {
    /// An image of the account to edit (the image page's "Edit with mask").
    pub source: Option<String>,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The size picker: one radio per size, drawn at its aspect ratio.
fn size_picker(lang: &Lang, selected: &str) -> String {
    SIZES
        .iter()
        .map(|(w, h)| {
            let value = format!("{w}x{h}");
            let g = gcd(*w, *h);
            format!(
                r#"<label class="choice size-choice"><input type="radio" name="size" value="{value}"{checked}><span class="aspect" data-aspect="{aw}x{ah}"></span><span>{ratio} · {w}×{h}</span></label>"#,
                checked = if value == selected { " checked" } else { "" },
                aw = w / g,
                ah = h / g,
                ratio = esc(&lang.t("generate.aspect").replace("{w}", &(w / g).to_string()).replace("{h}", &(h / g).to_string())),
            )
        })
        .collect()
}

/// The style presets, each with its preview (rendered by the built-in engine).
fn style_picker(lang: &Lang, selected: &str) -> String {
    STYLES
        .iter()
        .map(|s| {
            format!(
                r#"<label class="choice style-choice"><input type="radio" name="style" value="{s}"{checked}><img src="/static/styles/{s}.png" alt="" width="{side}" height="{side}" loading="lazy"><span>{label}</span></label>"#,
                checked = if *s == selected { " checked" } else { "" },
                side = PREVIEW_SIDE,
                label = esc(&lang.t(&format!("style.{s}"))),
            )
        })
        .collect()
}

fn select(values: &[String], selected: &str, label: impl Fn(&str) -> String) -> String {
    values
        .iter()
        .map(|v| format!(r#"<option value="{}"{}>{}</option>"#, esc(v), if v == selected { " selected" } else { "" }, esc(&label(v))))
        .collect()
}

/// Credits per image by model, size and quality, for the live price; empty
/// with billing off (everything is free).
fn price_table(state: &AppState) -> String {
    let billing = &state.config.billing;
    if !billing.enabled {
        return String::new();
    }
    let table: serde_json::Map<String, serde_json::Value> = models(state)
        .into_iter()
        .map(|model| {
            let sizes: serde_json::Map<String, serde_json::Value> = SIZES
                .iter()
                .map(|(w, h)| {
                    let size = format!("{w}x{h}");
                    let by_quality: serde_json::Map<String, serde_json::Value> = qualities(state)
                        .into_iter()
                        .filter_map(|q| billing.price(&model, &size, &q, 1).ok().map(|c| (q, json!(c))))
                        .collect();
                    (size, json!(by_quality))
                })
                .collect();
            (model, json!(sizes))
        })
        .collect();
    serde_json::Value::Object(table).to_string()
}

/// Every error message of the page's language, by code, for the script.
fn error_messages(lang: &Lang) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        lang.keys().filter_map(|k| k.strip_prefix("error.").map(|code| (code.to_string(), json!(lang.t(k))))).collect();
    serde_json::Value::Object(map).to_string()
}

/// The reference area's starting image: the one the image page sent here.
async fn source_attrs(state: &AppState, ctx: &Ctx, source: Option<&str>) -> Result<String, Error> {
    let (Some(user), Some(id)) = (&ctx.user, source) else { return Ok(String::new()) };
    let asset = state.store.get_asset(&user.id, checked_id(id).map_err(|e| e.0)?).await?;
    if !matches!(asset.kind.as_str(), "output" | "upload") {
        return Err(Error::not_found());
    }
    Ok(format!(r#" data-source="{}" data-source-width="{}" data-source-height="{}""#, asset.id, asset.width, asset.height))
}

fn generate_body(ctx: &Ctx, state: &AppState, form: &GenerateForm, source: &str, error: Option<&Error>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let quality_label = |q: &str| {
        let key = format!("quality.{q}");
        let text = ctx.lang.t(&key);
        if text == key {
            q.to_string()
        } else {
            text
        }
    };
    format!(
        r#"<section class="card generate"><h1>{title}</h1>{error}
<form method="post" action="/generate" class="stack" id="generate-form" data-prices="{prices}" data-model="{default_model}" data-errors="{errors}">
<input type="hidden" name="_csrf" value="{csrf}">
<div class="references" id="references" hidden data-remove="{remove}"{source}>
<div class="dropzone" id="dropzone" tabindex="0" role="button" aria-describedby="drop-hint"><p id="drop-hint">{drop}</p>
<label class="button secondary">{choose}<input type="file" id="reference-file" accept="image/png,image/jpeg,image/webp" multiple class="visually-hidden"></label></div>
<ul class="reference-list" id="reference-list" aria-label="{refs_l}"></ul>
<p class="hint" id="edit-hint" hidden>{edit_hint}</p>
<div class="mask-painter" id="mask-painter" hidden>
<div class="mask-stage"><img id="mask-image" alt="{mask_alt}"><canvas id="mask-canvas" aria-label="{mask_l}"></canvas></div>
<div class="mask-tools" role="toolbar" aria-label="{mask_l}">
<label class="choice"><input type="radio" name="mask-tool" value="brush" checked> {brush}</label>
<label class="choice"><input type="radio" name="mask-tool" value="eraser"> {eraser}</label>
<label>{brush_size} <input type="range" id="mask-size" min="4" max="160" value="48"></label>
<button type="button" class="secondary" id="mask-undo">{undo}</button>
<button type="button" class="secondary" id="mask-clear">{clear}</button>
</div></div></div>
<label>{prompt_l}<textarea name="prompt" rows="4" required maxlength="{max}" data-counter="prompt-count">{prompt}</textarea>
<small class="counter"><span id="prompt-count">0</span> / {max}</small></label>
<fieldset class="sizes" id="size-picker"><legend>{size_l}</legend>{sizes}</fieldset>
<div class="row">
<label>{quality_l}<select name="quality">{quality_o}</select></label>
<label>{n_l}<input type="number" name="n" min="1" max="{max_n}" value="{n}" inputmode="numeric"></label>
<label>{model_l}<select name="model">{model_o}</select></label>
</div>
<fieldset class="styles"><legend>{style_l}</legend><div class="style-grid">{styles}</div></fieldset>
{price_note}<p class="price" id="price" aria-live="polite" hidden data-template="{price_t}" data-free="{free_t}"></p>
<button id="generate-submit">{submit}</button>
</form>
<div id="live" class="live" aria-live="polite" hidden{labels} data-open="{open_t}" data-preview="{preview_t}"></div>
</section>"#,
        title = t("generate.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        prices = esc(&price_table(state)),
        default_model = esc(&state.config.model),
        errors = esc(&error_messages(ctx.lang)),
        csrf = esc(&ctx.csrf),
        drop = t("generate.drop"),
        remove = t("generate.remove"),
        choose = t("generate.choose"),
        refs_l = t("generate.references"),
        edit_hint = t("generate.edit_hint"),
        mask_alt = t("generate.mask_image"),
        mask_l = t("generate.mask"),
        brush = t("generate.brush"),
        eraser = t("generate.eraser"),
        brush_size = t("generate.brush_size"),
        undo = t("generate.undo"),
        clear = t("generate.clear"),
        prompt_l = t("generate.prompt"),
        max = state.config.limits.prompt_max_chars,
        prompt = esc(&form.prompt),
        size_l = t("generate.size"),
        sizes = size_picker(ctx.lang, form.size.as_deref().unwrap_or("1024x1024")),
        quality_l = t("generate.quality"),
        quality_o = select(&qualities(state), form.quality.as_deref().unwrap_or("standard"), quality_label),
        n_l = t("generate.n"),
        max_n = state.config.limits.max_n,
        n = form.n.unwrap_or(1),
        model_l = t("generate.model"),
        model_o = select(&models(state), form.model.as_deref().unwrap_or(&state.config.model), str::to_string),
        style_l = t("generate.style"),
        styles = style_picker(ctx.lang, form.style.as_deref().unwrap_or("none")),
        price_note = crate::billing::price_note(ctx, state),
        price_t = t("generate.price"),
        free_t = t("generate.free"),
        submit = t("generate.submit"),
        labels = status_labels(ctx.lang),
        open_t = t("task.open"),
        preview_t = t("generate.preview"),
    )
}

pub async fn generate_form(State(state): State<AppState>, ctx: Ctx, QueryParams(query): QueryParams<GenerateQuery>) -> ApiResult<Response> {
    if let Err(redirect) = signed_in(&ctx) {
        return Ok(redirect);
    }
    let source = source_attrs(&state, &ctx, query.source.as_deref()).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("generate.title"), &generate_body(&ctx, &state, &GenerateForm::default(), &source, None)))
}

/// The no-script path of the generate page: queue, then show the task page.
pub async fn generate(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<GenerateForm>) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let request = SubmitTask {
            prompt: form.prompt.clone(),
            size: form.size.clone(),
            style: form.style.clone(),
            n: form.n,
            seed: None,
            model: form.model.clone(),
            quality: form.quality.clone(),
            partial_images: None,
            webhook_url: None,
        };
        submit(&state, user, request, None).await
    };
    match attempt.await {
        Ok(submitted) => Redirect::to(&format!("/tasks/{}", submitted.task().id)).into_response(),
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("generate.title"), &generate_body(&ctx, &state, &form, "", Some(&e))),
    }
}

/// Side of the style previews, in pixels.
const PREVIEW_SIDE: u32 = 96;

/// The style previews: one scene rendered by the built-in engine in every
/// style, once per process, as PNG.
async fn previews() -> &'static [(&'static str, Vec<u8>)] {
    static PREVIEWS: OnceCell<Vec<(&'static str, Vec<u8>)>> = OnceCell::const_new();
    PREVIEWS
        .get_or_init(|| async {
            let mut out = Vec::with_capacity(STYLES.len());
            for style in STYLES {
                let request = GenerateRequest {
                    prompt: "a lighthouse on a hill by the sea at dusk".into(),
                    width: PREVIEW_SIDE,
                    height: PREVIEW_SIDE,
                    style: style.to_string(),
                    seed: 7,
                    n: 1,
                    background: Background::Opaque,
                    partial_images: 0,
                    end_user: None,
                };
                let rendered = ProceduralEngine.generate(&request, Observer::default()).await;
                match rendered.and_then(|images| images.into_iter().next().ok_or_else(|| Error::internal("no image")).map(|i| i.image)) {
                    Ok(image) => match imaging::encode_png(&image) {
                        Ok(encoded) => out.push((*style, encoded.bytes)),
                        Err(e) => tracing::warn!(style, error = %e, "style preview not encoded"),
                    },
                    Err(e) => tracing::warn!(style, error = %e, "style preview not rendered"),
                }
            }
            out
        })
        .await
}

/// `GET /static/styles/{style}.png`.
pub async fn style_preview(Path(file): Path<String>) -> Response {
    let style = file.strip_suffix(".png").unwrap_or("");
    match previews().await.iter().find(|(s, _)| *s == style) {
        Some((_, png)) => {
            ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "public, max-age=86400")], png.clone()).into_response()
        }
        None => ApiError(Error::not_found()).into_response(),
    }
}
