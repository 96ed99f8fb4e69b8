//! OpenAI's Images API, and any server that speaks it (`base_url`):
//! `POST {base}/images/generations` (JSON), `POST {base}/images/edits`
//! (multipart: `image[]` for GPT Image models, `image` for DALL·E 2, an
//! optional `mask` whose transparent pixels are painted) and
//! `POST {base}/images/variations` (DALL·E 2). Errors come as
//! `{"error":{"message","type","param","code"}}`; `moderation_blocked` and
//! `content_policy_violation` become our `content_policy_violation` (the
//! request's fault, not retried elsewhere), 429 carries `Retry-After`.

use domain::{Error, ErrorCode, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::remote::{self, Multipart, Secret};
use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer, VariationRequest};

pub struct OpenAiEngine {
    name: String,
    base_url: String,
    api_key: Secret,
    model: String,
    /// Sizes the model renders; requests are sent the nearest by aspect
    /// ratio and the result resized. Empty: the exact size is sent.
    sizes: Vec<(u32, u32)>,
    /// Sent as `quality` when set (`low`, `medium`, `high`, `standard`, `hd`).
    quality: Option<String>,
    client: reqwest::Client,
}

impl OpenAiEngine {
    /// `sizes` as `WxH` strings; empty takes the known list of OpenAI's own
    /// models, or none (exact sizes) for other model names.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Secret,
        model: &str,
        sizes: &[String],
        quality: Option<String>,
    ) -> Result<OpenAiEngine> {
        let sizes = if sizes.is_empty() { known_sizes(model) } else { sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>>>()? };
        Ok(OpenAiEngine {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            model: model.to_string(),
            sizes,
            quality,
            client: remote::client(),
        })
    }

    fn is_dalle(&self) -> bool {
        self.model.starts_with("dall-e")
    }

    fn size_for(&self, width: u32, height: u32) -> String {
        let (w, h) = nearest(&self.sizes, width, height);
        format!("{w}x{h}")
    }

    /// Fields common to all three calls.
    fn common(&self, n: u32, width: u32, height: u32, end_user: &Option<String>) -> Vec<(&'static str, Value)> {
        let mut fields = vec![("model", json!(self.model)), ("n", json!(n)), ("size", json!(self.size_for(width, height)))];
        if let Some(q) = &self.quality {
            fields.push(("quality", json!(q)));
        }
        // GPT Image models always answer in base64 and refuse the field.
        if self.is_dalle() {
            fields.push(("response_format", json!("b64_json")));
        }
        if let Some(user) = end_user {
            fields.push(("user", json!(user)));
        }
        fields
    }

    async fn call(&self, path: &str, body: Body, n: u32, width: u32, height: u32, observer: &Observer) -> Result<Vec<EngineImage>> {
        let request = self.client.post(remote::join(&self.base_url, path)).bearer_auth(self.api_key.expose());
        let request = match body {
            Body::Json(v) => request.json(&v),
            Body::Multipart(m) => m.attach(request),
        };
        let response = remote::send(&self.name, request).await?;
        let body = remote::checked(&self.name, response, error_message).await.map_err(moderation)?;
        let parsed: ImagesResponse = remote::json(&self.name, &body)?;
        observer.progress(90);
        if parsed.data.len() < n as usize {
            return Err(remote::unavailable(&self.name, &format!("returned {} images for n = {n}", parsed.data.len())));
        }
        let mut out = Vec::with_capacity(n as usize);
        for item in parsed.data.into_iter().take(n as usize) {
            let bytes = match (item.b64_json, item.url) {
                (Some(b), _) => remote::unb64(&self.name, &b)?,
                (None, Some(url)) => remote::fetch(&self.name, &self.client, &url, None).await?,
                (None, None) => return Err(remote::unavailable(&self.name, "returned an image without data")),
            };
            out.push(remote::decode_output(&self.name, bytes, width, height).await?);
        }
        observer.progress(100);
        Ok(out)
    }
}

enum Body {
    Json(Value),
    Multipart(Multipart),
}

#[derive(Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    data: Vec<ImageData>,
}

#[derive(Deserialize)]
struct ImageData {
    b64_json: Option<String>,
    url: Option<String>,
}

fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    Some(format!("{message} ({code})"))
}

/// A safety refusal is final for this prompt: say so plainly.
fn moderation(e: Error) -> Error {
    if e.message.contains("(moderation_blocked)") || e.message.contains("(content_policy_violation)") {
        Error::new(ErrorCode::ContentPolicyViolation, "the provider's safety system refused this request")
    } else {
        e
    }
}

pub(crate) fn parse_size(s: &str) -> Result<(u32, u32)> {
    s.split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
        .filter(|&(w, h): &(u32, u32)| w > 0 && h > 0)
        .ok_or_else(|| Error::invalid(format!("size {s:?} is not WIDTHxHEIGHT")))
}

fn known_sizes(model: &str) -> Vec<(u32, u32)> {
    match model {
        "dall-e-2" => vec![(256, 256), (512, 512), (1024, 1024)],
        "dall-e-3" => vec![(1024, 1024), (1792, 1024), (1024, 1792)],
        m if m.starts_with("gpt-image") => vec![(1024, 1024), (1536, 1024), (1024, 1536)],
        _ => Vec::new(),
    }
}

/// The listed size closest in aspect ratio, then in area; the exact size
/// when the list is empty.
fn nearest(sizes: &[(u32, u32)], width: u32, height: u32) -> (u32, u32) {
    let ratio = |w: u32, h: u32| (f64::from(w) / f64::from(h)).ln();
    let area = |w: u32, h: u32| (f64::from(w) * f64::from(h)).ln();
    sizes
        .iter()
        .copied()
        .min_by(|a, b| {
            let key = |(w, h): (u32, u32)| ((ratio(w, h) - ratio(width, height)).abs(), (area(w, h) - area(width, height)).abs());
            key(*a).partial_cmp(&key(*b)).unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or((width, height))
}

impl Engine for OpenAiEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: self.model != "dall-e-3",
            variation: self.model == "dall-e-2",
            max_partial_images: 0,
            transparent_background: self.model.starts_with("gpt-image"),
            max_side: 4096,
            max_n: 10,
        }
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let mut body: serde_json::Map<String, Value> =
                self.common(req.n, req.width, req.height, &req.end_user).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            body.insert("prompt".into(), json!(req.prompt));
            if req.background == crate::Background::Transparent && !self.is_dalle() {
                body.insert("background".into(), json!("transparent"));
                body.insert("output_format".into(), json!("png"));
            }
            self.call("/images/generations", Body::Json(Value::Object(body)), req.n, req.width, req.height, &observer).await
        })
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let (image, mask) = remote::edit_inputs(req)?;
            let mut form = Multipart::new().text("prompt", &req.prompt);
            for (k, v) in self.common(req.n, req.width, req.height, &req.end_user) {
                form = form.text(k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()).as_str());
            }
            // The image sent is the task's, at the size asked; references follow it.
            let image_field = if self.is_dalle() { "image" } else { "image[]" };
            form = form.png(image_field, "image.png", &remote::png(&image)?);
            if !self.is_dalle() {
                for (i, extra) in req.images.iter().skip(1).enumerate() {
                    form = form.png("image[]", &format!("reference-{i}.png"), &remote::png(extra)?);
                }
            }
            if let Some(mask) = &mask {
                form = form.png("mask", "mask.png", &remote::png(mask)?);
            }
            self.call("/images/edits", Body::Multipart(form), req.n, req.width, req.height, &observer).await
        })
    }

    fn variation<'a>(&'a self, req: &'a VariationRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            if !self.capabilities().variation {
                return Err(Error::invalid(format!("the {} engine cannot make variations", self.name)));
            }
            let mut form = Multipart::new();
            for (k, v) in self.common(req.n, req.width, req.height, &req.end_user) {
                form = form.text(k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()).as_str());
            }
            form = form.png("image", "image.png", &remote::png(&req.image)?);
            self.call("/images/variations", Body::Multipart(form), req.n, req.width, req.height, &observer).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_go_to_the_nearest_the_model_renders() {
        let gpt = known_sizes("gpt-image-1");
        assert_eq!(nearest(&gpt, 512, 512), (1024, 1024));
        assert_eq!(nearest(&gpt, 1280, 720), (1536, 1024));
        assert_eq!(nearest(&gpt, 768, 1344), (1024, 1536));
        assert_eq!(nearest(&known_sizes("dall-e-2"), 300, 300), (256, 256));
        assert_eq!(nearest(&known_sizes("my-sdxl"), 832, 1216), (832, 1216));
        assert!(parse_size("12x").is_err());
    }

    #[test]
    fn safety_refusals_are_the_requests_fault_with_a_stable_message() {
        let e = remote::status_error(
            "oa",
            reqwest::StatusCode::BAD_REQUEST,
            None,
            error_message(
                &json!({"error": {"message": "Your request was rejected by the safety system.", "type": "image_generation_user_error", "param": null, "code": "moderation_blocked"}}),
            ),
        );
        let e = moderation(e);
        assert_eq!(e.code, ErrorCode::ContentPolicyViolation);
        assert!(!crate::is_retryable(&e), "another provider would refuse it too");
    }

    #[test]
    fn the_api_key_never_prints() {
        let engine = OpenAiEngine::new("oa", "http://x", Secret::new("sk-live-123"), "gpt-image-1", &[], None).unwrap();
        assert!(!format!("{:?}", engine.api_key).contains("sk-live"));
    }
}
