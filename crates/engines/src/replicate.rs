//! Replicate's predictions API: `POST /v1/models/{owner}/{name}/predictions`
//! (or `POST /v1/predictions` with a `version`) with `Prefer: wait=N`, then
//! `GET /v1/predictions/{id}` until `succeeded`, `failed` or `canceled`; the
//! `output` URL(s) are fetched. A dropped call sends
//! `POST /v1/predictions/{id}/cancel`.
//!
//! The model's `input` is a template (see `template`): images go as PNG data
//! URLs, the mask white-paints as most inpainting models take it.

use std::time::Duration;

use domain::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::remote::{self, CancelOnDrop, Secret};
use crate::template;
use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer};

pub struct ReplicateEngine {
    name: String,
    base_url: String,
    token: Secret,
    /// `owner/name` of an official model, or the `version` id.
    target: Target,
    input: Value,
    edit_input: Option<Value>,
    wait_secs: u32,
    poll: Duration,
    client: reqwest::Client,
}

pub enum Target {
    Model(String),
    Version(String),
}

/// The default input of text-to-image models (FLUX, SDXL and most others).
pub fn default_input() -> Value {
    json!({"prompt": "{{prompt}}", "seed": "{{seed}}", "width": "{{width}}", "height": "{{height}}", "num_outputs": "{{n}}", "output_format": "png"})
}

impl ReplicateEngine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        base_url: &str,
        token: Secret,
        target: Target,
        input: Value,
        edit_input: Option<Value>,
        wait_secs: u32,
        poll: Duration,
    ) -> Result<Self> {
        template::check(&format!("{name} input"), &input, &["prompt"])?;
        if let Some(e) = &edit_input {
            template::check(&format!("{name} edit input"), e, &["prompt", "image"])?;
        }
        Ok(ReplicateEngine {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            target,
            input,
            edit_input,
            wait_secs: wait_secs.clamp(1, 60),
            poll,
            client: remote::client(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(remote::join(&self.base_url, path)).bearer_auth(self.token.expose())
    }

    async fn prediction(&self, response: reqwest::Response) -> Result<Prediction> {
        let body = remote::checked(&self.name, response, error_message).await?;
        remote::json(&self.name, &body)
    }

    async fn run(&self, input: Value, n: u32, width: u32, height: u32, observer: &Observer) -> Result<Vec<EngineImage>> {
        let (path, body) = match &self.target {
            Target::Model(m) => (format!("/v1/models/{m}/predictions"), json!({"input": input})),
            Target::Version(v) => ("/v1/predictions".to_string(), json!({"version": v, "input": input})),
        };
        let request = self.post(&path).header("Prefer", format!("wait={}", self.wait_secs)).json(&body);
        let mut prediction = self.prediction(remote::send(&self.name, request).await?).await?;
        let guard = CancelOnDrop::new(&self.name, self.post(&format!("/v1/predictions/{}/cancel", prediction.id)));
        observer.progress(10);
        while matches!(prediction.status.as_str(), "starting" | "processing") {
            tokio::time::sleep(self.poll).await;
            let url = remote::join(&self.base_url, &format!("/v1/predictions/{}", prediction.id));
            let response = remote::send(&self.name, self.client.get(url).bearer_auth(self.token.expose())).await?;
            prediction = self.prediction(response).await?;
            if prediction.status == "processing" {
                observer.progress(50);
            }
        }
        guard.disarm();
        if prediction.status != "succeeded" {
            let why = prediction.error.map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string())).unwrap_or_default();
            return Err(remote::unavailable(&self.name, &format!("prediction {} {why}", prediction.status)));
        }
        let urls: Vec<String> = match prediction.output {
            Some(Value::String(u)) => vec![u],
            Some(Value::Array(items)) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        if urls.len() < n as usize {
            return Err(remote::unavailable(&self.name, &format!("returned {} images for n = {n}", urls.len())));
        }
        observer.progress(80);
        let mut out = Vec::with_capacity(n as usize);
        for url in urls.iter().take(n as usize) {
            // Files on the API's own host need the token; nobody else gets it.
            let auth = url.starts_with(&format!("{}/", self.base_url)).then_some(&self.token);
            let bytes = remote::fetch(&self.name, &self.client, url, auth).await?;
            out.push(remote::decode_output(&self.name, bytes, width, height).await?);
        }
        observer.progress(100);
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Prediction {
    id: String,
    status: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

fn error_message(v: &Value) -> Option<String> {
    v.get("detail").or_else(|| v.get("title")).and_then(Value::as_str).map(str::to_string)
}

fn data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", remote::b64(png))
}

fn vars(prompt: &str, seed: u64, width: u32, height: u32, n: u32) -> Vec<(&'static str, Value)> {
    template::vars(prompt, seed % (1 << 32), width, height, n)
}

impl Engine for ReplicateEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        match &self.target {
            Target::Model(m) | Target::Version(m) => m,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: self.edit_input.is_some(),
            variation: false,
            max_partial_images: 0,
            transparent_background: false,
            max_side: 2048,
            max_n: 4,
        }
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let input = template::fill(&self.input, &vars(&req.prompt, req.seed, req.width, req.height, req.n));
            self.run(input, req.n, req.width, req.height, &observer).await
        })
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let template =
                self.edit_input.as_ref().ok_or_else(|| Error::invalid(format!("the {} engine cannot edit images", self.name)))?;
            let (image, mask) = remote::edit_inputs(req)?;
            let mut vars = vars(&req.prompt, req.seed, req.width, req.height, req.n);
            vars.push(("image", json!(data_url(&remote::png(&image)?))));
            let mask = match mask {
                Some(m) => json!(data_url(&remote::png(&remote::white_paints(&m))?)),
                None => Value::Null,
            };
            vars.push(("mask", mask));
            self.run(template::fill(template, &vars), req.n, req.width, req.height, &observer).await
        })
    }
}
