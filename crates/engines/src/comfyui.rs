//! A ComfyUI server running an API-format workflow (exported with "Save
//! (API Format)") whose inputs carry placeholders: `{{prompt}}`, `{{seed}}`,
//! `{{width}}`, `{{height}}`, `{{n}}` (batch size) and, in the edit
//! workflow, `{{image}}` (the uploaded image) and `{{mask}}` (the same image
//! with the mask in its alpha, as `/upload/mask` makes it, for a
//! `LoadImage` node's MASK output).
//!
//! Protocol: inputs go up by `POST /upload/image` and `POST /upload/mask`;
//! `POST /prompt {"prompt", "client_id"}` queues the filled workflow and
//! answers a `prompt_id`; `GET /history/{prompt_id}` is polled until the run
//! is recorded, its `outputs` name the images, fetched by
//! `GET /view?filename&subfolder&type`. A dropped call sends
//! `POST /interrupt {"prompt_id"}`.

use std::time::Duration;

use domain::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::remote::{self, CancelOnDrop, Multipart, Secret};
use crate::template;
use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer};

pub struct ComfyUiEngine {
    name: String,
    base_url: String,
    api_key: Secret,
    workflow: Value,
    edit_workflow: Option<Value>,
    poll: Duration,
    client_id: String,
    client: reqwest::Client,
}

impl ComfyUiEngine {
    /// `api_key`, when set, goes as a bearer token (for servers behind an
    /// authenticating proxy). The workflows are checked for placeholders.
    pub fn new(name: &str, base_url: &str, api_key: Secret, workflow: Value, edit_workflow: Option<Value>, poll: Duration) -> Result<Self> {
        template::check(&format!("{name} workflow"), &workflow, &["prompt"])?;
        if let Some(w) = &edit_workflow {
            template::check(&format!("{name} edit workflow"), w, &["prompt", "image"])?;
        }
        Ok(ComfyUiEngine {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            workflow,
            edit_workflow,
            poll,
            client_id: domain::ids::new_id(),
            client: remote::client(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.client.post(remote::join(&self.base_url, path)))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.api_key.is_empty() {
            request
        } else {
            request.bearer_auth(self.api_key.expose())
        }
    }

    async fn upload(&self, path: &str, form: Multipart) -> Result<FileRef> {
        let response = remote::send(&self.name, form.attach(self.post(path))).await?;
        let body = remote::checked(&self.name, response, error_message).await?;
        let uploaded: Uploaded = remote::json(&self.name, &body)?;
        Ok(FileRef { filename: uploaded.name, subfolder: uploaded.subfolder, kind: uploaded.kind })
    }

    /// Queues the filled workflow, waits for its outputs and fetches `n` images.
    async fn run(&self, workflow: Value, n: u32, width: u32, height: u32, observer: &Observer) -> Result<Vec<EngineImage>> {
        let response =
            remote::send(&self.name, self.post("/prompt").json(&json!({"prompt": workflow, "client_id": self.client_id}))).await?;
        let body = remote::checked(&self.name, response, error_message).await?;
        let queued: Queued = remote::json(&self.name, &body)?;
        let guard = CancelOnDrop::new(&self.name, self.post("/interrupt").json(&json!({"prompt_id": queued.prompt_id})));
        observer.progress(5);
        let files = loop {
            let url = remote::join(&self.base_url, &format!("/history/{}", queued.prompt_id));
            let response = remote::send(&self.name, self.authed(self.client.get(url))).await?;
            let body = remote::checked(&self.name, response, error_message).await?;
            let history: serde_json::Map<String, Value> = remote::json(&self.name, &body)?;
            if let Some(run) = history.get(&queued.prompt_id) {
                break finished(&self.name, run)?;
            }
            tokio::time::sleep(self.poll).await;
        };
        guard.disarm();
        if files.len() < n as usize {
            return Err(remote::unavailable(&self.name, &format!("the workflow made {} images for n = {n}", files.len())));
        }
        observer.progress(80);
        let mut out = Vec::with_capacity(n as usize);
        for file in files.into_iter().take(n as usize) {
            let request = self.authed(self.client.get(remote::join(&self.base_url, "/view")).query(&[
                ("filename", file.filename.as_str()),
                ("subfolder", file.subfolder.as_str()),
                ("type", file.kind.as_str()),
            ]));
            let response = remote::send(&self.name, request).await?;
            let bytes = remote::checked(&self.name, response, error_message).await?;
            out.push(remote::decode_output(&self.name, bytes, width, height).await?);
        }
        observer.progress(100);
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Queued {
    prompt_id: String,
}

#[derive(Deserialize)]
struct Uploaded {
    name: String,
    #[serde(default)]
    subfolder: String,
    #[serde(default = "input", rename = "type")]
    kind: String,
}

fn input() -> String {
    "input".into()
}

#[derive(Debug, Clone, Deserialize)]
struct FileRef {
    filename: String,
    #[serde(default)]
    subfolder: String,
    #[serde(rename = "type")]
    kind: String,
}

fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(e.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| e.to_string()))
}

/// The saved images of a recorded run (previews of type `temp` are left
/// out), in node order; a run that errored is the provider's failure.
fn finished(provider: &str, run: &Value) -> Result<Vec<FileRef>> {
    let status = run.pointer("/status/status_str").and_then(Value::as_str).unwrap_or("success");
    if status != "success" {
        return Err(remote::unavailable(provider, &format!("the workflow ended with status {status}")));
    }
    let mut nodes: Vec<(&String, &Value)> = run.get("outputs").and_then(Value::as_object).map(|o| o.iter().collect()).unwrap_or_default();
    nodes.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(u64::MAX));
    let mut files = Vec::new();
    for (_, node) in nodes {
        for image in node.get("images").and_then(Value::as_array).into_iter().flatten() {
            if let Ok(file) = serde_json::from_value::<FileRef>(image.clone()) {
                if file.kind == "output" {
                    files.push(file);
                }
            }
        }
    }
    Ok(files)
}

fn vars(prompt: &str, seed: u64, width: u32, height: u32, n: u32) -> Vec<(&'static str, Value)> {
    // ComfyUI seeds are at most 2^64 - 1 but many nodes take 53 bits safely.
    template::vars(prompt, seed & ((1 << 53) - 1), width, height, n)
}

impl Engine for ComfyUiEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        "comfyui-workflow"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: self.edit_workflow.is_some(),
            variation: false,
            max_partial_images: 0,
            transparent_background: false,
            max_side: 4096,
            max_n: 8,
        }
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let workflow = template::fill(&self.workflow, &vars(&req.prompt, req.seed, req.width, req.height, req.n));
            self.run(workflow, req.n, req.width, req.height, &observer).await
        })
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let template =
                self.edit_workflow.as_ref().ok_or_else(|| Error::invalid(format!("the {} engine cannot edit images", self.name)))?;
            let (image, mask) = remote::edit_inputs(req)?;
            let file = format!("atelier-{}.png", domain::ids::new_id());
            let form = Multipart::new().png("image", &file, &remote::png(&image)?).text("type", "input").text("overwrite", "true");
            let uploaded = self.upload("/upload/image", form).await?;
            let masked = match mask {
                Some(mask) => {
                    let original = json!({"filename": uploaded.filename, "subfolder": uploaded.subfolder, "type": uploaded.kind});
                    let form = Multipart::new()
                        .png("image", &format!("mask-{file}"), &remote::png(&mask)?)
                        .text("type", "input")
                        .text("overwrite", "true")
                        .text("original_ref", &original.to_string());
                    self.upload("/upload/mask", form).await?
                }
                None => uploaded.clone(),
            };
            let path = |f: &FileRef| if f.subfolder.is_empty() { f.filename.clone() } else { format!("{}/{}", f.subfolder, f.filename) };
            let mut vars = vars(&req.prompt, req.seed, req.width, req.height, req.n);
            vars.push(("image", json!(path(&uploaded))));
            vars.push(("mask", json!(path(&masked))));
            self.run(template::fill(template, &vars), req.n, req.width, req.height, &observer).await
        })
    }
}
