//! A Stable Diffusion web UI server started with `--api` (AUTOMATIC1111 and
//! its forks): `POST /sdapi/v1/txt2img`, `POST /sdapi/v1/img2img` (with
//! `init_images` and a `mask`, white = paint), progress from
//! `GET /sdapi/v1/progress`, and `POST /sdapi/v1/interrupt` when a call is
//! dropped. These servers run one job at a time, so this adapter sends one
//! request at a time per server whatever the router's cap.

use std::time::Duration;

use domain::Result;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::remote::{self, CancelOnDrop, Secret};
use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer};

pub struct Automatic1111Engine {
    name: String,
    base_url: String,
    /// `user:password` for servers started with `--api-auth`.
    credentials: Secret,
    /// Merged into every payload (steps, cfg_scale, sampler_name,
    /// denoising_strength, negative_prompt, override_settings …).
    settings: serde_json::Map<String, Value>,
    poll: Duration,
    /// The checkpoint named in `override_settings.sd_model_checkpoint`.
    model: String,
    one_at_a_time: Mutex<()>,
    client: reqwest::Client,
}

impl Automatic1111Engine {
    pub fn new(name: &str, base_url: &str, credentials: Secret, settings: serde_json::Map<String, Value>, poll: Duration) -> Self {
        let model = settings.get("override_settings").and_then(|o| o.get("sd_model_checkpoint")).and_then(Value::as_str);
        Automatic1111Engine {
            model: model.unwrap_or("stable-diffusion").to_string(),
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            credentials,
            settings,
            poll,
            one_at_a_time: Mutex::new(()),
            client: remote::client(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, remote::join(&self.base_url, path));
        match self.credentials.expose().split_once(':') {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn call(
        &self,
        path: &str,
        mut payload: serde_json::Map<String, Value>,
        n: u32,
        width: u32,
        height: u32,
        observer: &Observer,
    ) -> Result<Vec<EngineImage>> {
        for (k, v) in &self.settings {
            payload.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let _turn = self.one_at_a_time.lock().await;
        let guard = CancelOnDrop::new(&self.name, self.request(reqwest::Method::POST, "/sdapi/v1/interrupt"));
        let work = async {
            let response = remote::send(&self.name, self.request(reqwest::Method::POST, path).json(&Value::Object(payload))).await?;
            remote::checked(&self.name, response, error_message).await
        };
        let progress = async {
            loop {
                tokio::time::sleep(self.poll).await;
                let request = self.request(reqwest::Method::GET, "/sdapi/v1/progress").query(&[("skip_current_image", "true")]);
                if let Ok(response) = request.send().await {
                    if let Ok(p) = response.json::<Progress>().await {
                        observer.progress((p.progress.clamp(0.0, 1.0) * 90.0) as u8);
                    }
                }
            }
        };
        let body = tokio::select! {
            body = work => body?,
            never = progress => never,
        };
        guard.disarm();
        let parsed: Images = remote::json(&self.name, &body)?;
        if parsed.images.len() < n as usize {
            return Err(remote::unavailable(&self.name, &format!("returned {} images for n = {n}", parsed.images.len())));
        }
        let mut out = Vec::with_capacity(n as usize);
        for b in parsed.images.iter().take(n as usize) {
            out.push(remote::decode_output(&self.name, remote::unb64(&self.name, b)?, width, height).await?);
        }
        observer.progress(100);
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Images {
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Deserialize)]
struct Progress {
    #[serde(default)]
    progress: f64,
}

fn error_message(v: &Value) -> Option<String> {
    ["detail", "error", "errors"].iter().find_map(|k| v.get(*k)).map(|d| d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string()))
}

fn base(prompt: &str, seed: u64, width: u32, height: u32, n: u32) -> serde_json::Map<String, Value> {
    // The web UI's seed is a signed 32-bit-safe integer in practice; -1 means random.
    let payload = json!({"prompt": prompt, "seed": seed % (1 << 31), "width": width, "height": height, "batch_size": n, "n_iter": 1, "send_images": true, "save_images": false});
    match payload {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

impl Engine for Automatic1111Engine {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { edit: true, variation: false, max_partial_images: 0, transparent_background: false, max_side: 2048, max_n: 8 }
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let payload = base(&req.prompt, req.seed, req.width, req.height, req.n);
            self.call("/sdapi/v1/txt2img", payload, req.n, req.width, req.height, &observer).await
        })
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let (image, mask) = remote::edit_inputs(req)?;
            let mut payload = base(&req.prompt, req.seed, req.width, req.height, req.n);
            payload.insert("init_images".into(), json!([remote::b64(&remote::png(&image)?)]));
            if let Some(mask) = mask {
                payload.insert("mask".into(), json!(remote::b64(&remote::png(&remote::white_paints(&mask))?)));
                payload.insert("inpainting_mask_invert".into(), json!(0));
                // Keep what is outside the mask exactly (no blur across it).
                payload.insert("mask_blur".into(), json!(0));
                payload.insert("inpainting_fill".into(), json!(1));
            }
            self.call("/sdapi/v1/img2img", payload, req.n, req.width, req.height, &observer).await
        })
    }
}
