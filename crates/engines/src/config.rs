//! Providers and routes as written in the config file
//! (`[[engine.providers]]`, `[engine.routes]`), and building the router
//! from them. Secrets come from the file or, better, from the environment
//! variable named by `api_key_env`; `Debug` never prints them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::automatic1111::Automatic1111Engine;
use crate::comfyui::ComfyUiEngine;
use crate::openai::OpenAiEngine;
use crate::remote::Secret;
use crate::replicate::{self, ReplicateEngine};
use crate::router::{Cost, Provider, RouteTarget, Router};
use crate::Engine;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique; recorded on tasks and shown in the health snapshot.
    pub name: String,
    /// `openai` (and OpenAI-compatible servers), `comfyui`, `automatic1111`,
    /// `replicate`, or `procedural` (the built-in engine).
    pub kind: String,
    #[serde(default)]
    pub base_url: String,
    /// Prefer `api_key_env`. For automatic1111: `user:password`.
    #[serde(default)]
    pub api_key: String,
    /// Name of an environment variable holding the key.
    #[serde(default)]
    pub api_key_env: String,
    /// openai: the model sent; replicate: `owner/name` of the model.
    #[serde(default)]
    pub model: String,
    /// replicate: a version id instead of `model`.
    #[serde(default)]
    pub version: String,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// comfyui, automatic1111, replicate: how often a running job is polled.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// openai: sizes the model renders (`WxH`); empty: OpenAI's list for its
    /// models, the exact size for others.
    #[serde(default)]
    pub sizes: Vec<String>,
    /// openai: `quality` sent with every request; empty: not sent.
    #[serde(default)]
    pub quality: String,
    /// comfyui: API-format workflow files.
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub edit_workflow: String,
    /// automatic1111: merged into every payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Map<String, Value>>,
    /// replicate: the prediction input templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_input: Option<Value>,
    /// replicate: `Prefer: wait=N` (1–60).
    #[serde(default = "default_wait_seconds")]
    pub wait_seconds: u32,
    /// Credits per image, first matching row wins.
    #[serde(default)]
    pub costs: Vec<Cost>,
}

fn default_concurrency() -> u32 {
    4
}
fn default_timeout_ms() -> u64 {
    180_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    30_000
}
fn default_poll_ms() -> u64 {
    500
}
fn default_wait_seconds() -> u32 {
    60
}

/// Hand-written so the key never reaches a log.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &Secret::new(self.api_key.clone()))
            .field("api_key_env", &self.api_key_env)
            .field("model", &self.model)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Auth {
    Bearer,
    /// AUTOMATIC1111's `--api-auth user:password`.
    Basic,
}

/// A transport error's cause, without the URL reqwest puts in its text.
fn without_url(e: &reqwest::Error) -> String {
    let mut cause = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(source) = std::error::Error::source(e) {
        cause = format!("{cause}: {source}");
    }
    cause
}

impl ProviderConfig {
    fn secret(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
        if self.api_key_env.is_empty() {
            return Ok(Secret::new(self.api_key.clone()));
        }
        env(&self.api_key_env)
            .map(Secret::new)
            .ok_or_else(|| format!("provider {}: the environment variable {} is not set", self.name, self.api_key_env))
    }

    fn base_url(&self, default: &str) -> Result<String, String> {
        let url = if self.base_url.is_empty() { default } else { &self.base_url };
        if url.is_empty() {
            return Err(format!("provider {}: base_url is required", self.name));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("provider {}: base_url must start with http:// or https://", self.name));
        }
        Ok(url.to_string())
    }

    /// One cheap authenticated call that shows the provider answers with
    /// these credentials (for `atelier doctor`); `Ok` describes what
    /// answered. Nothing is generated and nothing is charged.
    pub async fn probe(&self, env: &dyn Fn(&str) -> Option<String>, timeout: Duration) -> Result<String, String> {
        let (url, auth) = match self.kind.as_str() {
            "procedural" => return Ok("built-in engine".into()),
            "openai" => (format!("{}/models", self.base_url("https://api.openai.com/v1")?.trim_end_matches('/')), Auth::Bearer),
            "comfyui" => (format!("{}/system_stats", self.base_url("")?.trim_end_matches('/')), Auth::Bearer),
            "automatic1111" => (format!("{}/sdapi/v1/sd-models", self.base_url("")?.trim_end_matches('/')), Auth::Basic),
            "replicate" => (format!("{}/v1/account", self.base_url("https://api.replicate.com")?.trim_end_matches('/')), Auth::Bearer),
            other => return Err(format!("unknown kind {other:?}")),
        };
        let secret = self.secret(env)?;
        let client =
            reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
        let mut request = client.get(&url);
        if !secret.is_empty() {
            request = match (auth, secret.expose().split_once(':')) {
                (Auth::Basic, Some((user, password))) => request.basic_auth(user, Some(password)),
                _ => request.bearer_auth(secret.expose()),
            };
        }
        // The URL is the operator's own configuration; the key never appears.
        let response = request.send().await.map_err(|e| format!("GET {url}: {}", without_url(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(format!("GET {url}: {status}"))
        } else if matches!(status.as_u16(), 401 | 403) {
            Err(format!("GET {url}: {status}: the credentials were refused"))
        } else {
            Err(format!("GET {url}: {status}"))
        }
    }

    fn engine(&self, builtin: &Arc<dyn Engine>, env: &dyn Fn(&str) -> Option<String>) -> Result<Arc<dyn Engine>, String> {
        let name = self.name.as_str();
        let poll = Duration::from_millis(self.poll_ms.max(1));
        let err = |e: domain::Error| format!("provider {name}: {}", e.message);
        let engine: Arc<dyn Engine> = match self.kind.as_str() {
            "procedural" => return Ok(builtin.clone()),
            "openai" => {
                if self.model.is_empty() {
                    return Err(format!("provider {name}: model is required (e.g. gpt-image-1)"));
                }
                let quality = (!self.quality.is_empty()).then(|| self.quality.clone());
                Arc::new(
                    OpenAiEngine::new(
                        name,
                        &self.base_url("https://api.openai.com/v1")?,
                        self.secret(env)?,
                        &self.model,
                        &self.sizes,
                        quality,
                    )
                    .map_err(err)?,
                )
            }
            "comfyui" => {
                let workflow = read_json(name, &self.workflow)?.ok_or_else(|| format!("provider {name}: workflow (a file) is required"))?;
                let edit = read_json(name, &self.edit_workflow)?;
                Arc::new(ComfyUiEngine::new(name, &self.base_url("")?, self.secret(env)?, workflow, edit, poll).map_err(err)?)
            }
            "automatic1111" => {
                let settings = self.settings.clone().unwrap_or_default();
                Arc::new(Automatic1111Engine::new(name, &self.base_url("")?, self.secret(env)?, settings, poll))
            }
            "replicate" => {
                let target = match (self.model.is_empty(), self.version.is_empty()) {
                    (false, true) => replicate::Target::Model(self.model.clone()),
                    (true, false) => replicate::Target::Version(self.version.clone()),
                    _ => return Err(format!("provider {name}: set exactly one of model (owner/name) and version")),
                };
                let input = self.input.clone().unwrap_or_else(replicate::default_input);
                Arc::new(
                    ReplicateEngine::new(
                        name,
                        &self.base_url("https://api.replicate.com")?,
                        self.secret(env)?,
                        target,
                        input,
                        self.edit_input.clone(),
                        self.wait_seconds,
                        poll,
                    )
                    .map_err(err)?,
                )
            }
            other => {
                return Err(format!("provider {name}: unknown kind {other:?} (openai, comfyui, automatic1111, replicate, procedural)"))
            }
        };
        Ok(engine)
    }
}

fn read_json(provider: &str, path: &str) -> Result<Option<Value>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("provider {provider}: cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map(Some).map_err(|e| format!("provider {provider}: {path} is not JSON: {e}"))
}

/// The router of a configuration. No providers: every model goes to
/// `builtin`. A `procedural` provider is `builtin` under its own name in
/// the routes (its caps and breaker apply as configured).
pub fn build_router(
    providers: &[ProviderConfig],
    routes: &BTreeMap<String, Vec<RouteTarget>>,
    builtin: Arc<dyn Engine>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Router, String> {
    if providers.is_empty() {
        if !routes.is_empty() {
            return Err("engine.routes name providers but no [[engine.providers]] are configured".into());
        }
        return Ok(Router::single(builtin));
    }
    let mut built = Vec::with_capacity(providers.len());
    for p in providers {
        let engine = p.engine(&builtin, env)?;
        let engine: Arc<dyn Engine> =
            if p.kind == "procedural" { Arc::new(Renamed { name: p.name.clone(), inner: engine }) } else { engine };
        built.push(Provider {
            engine,
            kind: p.kind.clone(),
            max_concurrency: p.max_concurrency as usize,
            timeout: Some(Duration::from_millis(p.timeout_ms.max(1))),
            breaker_failures: p.breaker_failures,
            breaker_cooldown: Duration::from_millis(p.breaker_cooldown_ms),
            costs: p.costs.clone(),
        });
    }
    Router::new(built, routes).map_err(|e| e.message)
}

/// The built-in engine under a configured provider name.
struct Renamed {
    name: String,
    inner: Arc<dyn Engine>,
}

impl Engine for Renamed {
    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn capabilities(&self) -> crate::Capabilities {
        self.inner.capabilities()
    }
    fn generate<'a>(
        &'a self,
        req: &'a crate::GenerateRequest,
        o: crate::Observer,
    ) -> crate::BoxFuture<'a, domain::Result<Vec<crate::EngineImage>>> {
        self.inner.generate(req, o)
    }
    fn edit<'a>(
        &'a self,
        req: &'a crate::EditRequest,
        o: crate::Observer,
    ) -> crate::BoxFuture<'a, domain::Result<Vec<crate::EngineImage>>> {
        self.inner.edit(req, o)
    }
    fn variation<'a>(
        &'a self,
        req: &'a crate::VariationRequest,
        o: crate::Observer,
    ) -> crate::BoxFuture<'a, domain::Result<Vec<crate::EngineImage>>> {
        self.inner.variation(req, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProceduralEngine;

    #[test]
    fn keys_come_from_the_environment_and_never_print() {
        let p: ProviderConfig = serde_json::from_value(serde_json::json!({
            "name": "oa", "kind": "openai", "model": "gpt-image-1", "api_key_env": "OA_KEY", "api_key": "sk-in-file"
        }))
        .unwrap();
        assert!(!format!("{p:?}").contains("sk-in-file"));
        let routes = BTreeMap::from([("*".to_string(), vec![RouteTarget { provider: "oa".into(), weight: 1 }])]);
        let missing = build_router(std::slice::from_ref(&p), &routes, Arc::new(ProceduralEngine), &|_| None).unwrap_err();
        assert!(missing.contains("OA_KEY"), "{missing}");
        let router = build_router(&[p], &routes, Arc::new(ProceduralEngine), &|k| (k == "OA_KEY").then(|| "sk-env".to_string())).unwrap();
        assert_eq!(router.route("gpt-image-1"), ["oa"]);
        assert!(!format!("{router:?}").contains("sk-env"));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let builtin: Arc<dyn Engine> = Arc::new(ProceduralEngine);
        let p = |v: serde_json::Value| -> ProviderConfig { serde_json::from_value(v).unwrap() };
        let route = |name: &str| BTreeMap::from([("*".to_string(), vec![RouteTarget { provider: name.into(), weight: 1 }])]);
        let cases = [
            (p(serde_json::json!({"name": "x", "kind": "midjourney"})), route("x"), "unknown kind"),
            (p(serde_json::json!({"name": "x", "kind": "comfyui", "base_url": "http://h"})), route("x"), "workflow"),
            (p(serde_json::json!({"name": "x", "kind": "automatic1111"})), route("x"), "base_url"),
            (p(serde_json::json!({"name": "x", "kind": "replicate"})), route("x"), "exactly one"),
            (p(serde_json::json!({"name": "x", "kind": "procedural"})), route("y"), "unknown provider"),
            (p(serde_json::json!({"name": "x", "kind": "procedural", "max_concurrency": 0})), route("x"), "max_concurrency"),
        ];
        for (provider, routes, why) in cases {
            let e = build_router(&[provider], &routes, builtin.clone(), &|_| None).unwrap_err();
            assert!(e.contains(why), "{e} should mention {why}");
        }
        let single = build_router(&[], &BTreeMap::new(), builtin, &|_| None).unwrap();
        assert!(single.serves_any_model());
        assert_eq!(single.route("anything"), ["procedural"]);
    }
}
