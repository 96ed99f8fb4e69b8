//! Provider adapters and the router end to end through tasks (store,
//! worker, blobs), against local servers that speak each provider's HTTP
//! protocol and record every request they get.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use blobs::{BlobStore, LocalDirStore};
use domain::task::TaskStatus;
use engines::{build_router, ProceduralEngine, ProviderConfig, RouteTarget, Router, Secret};
use imaging::{Rgba, RgbaImage};
use serde_json::{json, Value};
use store::testing::{test_db, TestBackend, TestDb};
use store::{NewAsset, NewGrant, NewTask, NewUser, Task, User};
use worker::{TaskHub, Worker, WorkerConfig};

// ---------------------------------------------------------------- fakes

/// One request as a fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: String,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self, method: &str, prefix: &str) -> usize {
        self.all().iter().filter(|s| s.method == method && s.path.starts_with(prefix)).count()
    }
    /// Waits (bounded) until the fake has seen such a request.
    async fn wait_for(&self, method: &str, prefix: &str) {
        for _ in 0..500 {
            if self.count(method, prefix) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {method} {prefix} reached the fake; saw {:?}", self.all().iter().map(|s| &s.path).collect::<Vec<_>>());
    }
}

async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let headers = parts.headers.iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?"))).collect();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    log.seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path, headers, body: bytes.to_vec() });
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Serves `app` on a free local port; returns its base URL and log.
async fn serve(app: axum::Router) -> (String, Log) {
    let log = Log::default();
    let app = app.layer(middleware::from_fn_with_state(log.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

/// What a fake does besides speaking its protocol.
#[derive(Clone, Default)]
struct Mode {
    /// Answer every call with this status (0 = work normally).
    fail: Arc<AtomicU16>,
    /// Never finish (hang, or keep a job running).
    hold: Arc<AtomicBool>,
    /// Extra time each image call takes, so calls overlap.
    delay_ms: u64,
    /// Multipart field names of edit uploads, in order.
    fields: Arc<Mutex<Vec<String>>>,
    /// JSON bodies of job submissions (workflows, payloads, inputs).
    jobs: Arc<Mutex<Vec<Value>>>,
    /// Image calls running now, and the most ever at once.
    busy: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Mode {
    async fn gate(&self) -> Option<Response> {
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let answer = self.gate_inner().await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    async fn gate_inner(&self) -> Option<Response> {
        if self.hold.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
        match self.fail.load(Ordering::SeqCst) {
            0 => None,
            code => Some(
                (
                    StatusCode::from_u16(code).unwrap(),
                    Json(json!({"error": {"message": "upstream trouble", "type": "server_error", "param": null, "code": null}})),
                )
                    .into_response(),
            ),
        }
    }
}

fn png_of(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let img = RgbaImage::from_pixel(width, height, Rgba([shade, 90, 200, 255]));
    imaging::encode_png(&img).unwrap().bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn fields_of(mut form: Multipart, mode: &Mode) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    while let Some(field) = form.next_field().await.unwrap() {
        let name = field.name().unwrap_or_default().to_string();
        mode.fields.lock().unwrap().push(name.clone());
        out.insert(name, field.bytes().await.unwrap().to_vec());
    }
    out
}

/// OpenAI's Images API (JSON generations, multipart edits).
async fn openai_fake(mode: Mode) -> (String, Log) {
    async fn images(n: u64) -> Response {
        // A different size than asked: the worker's output must still match the task.
        let data: Vec<Value> = (0..n).map(|i| json!({"b64_json": b64(&png_of(96, 64, i as u8 * 40))})).collect();
        Json(json!({"created": 1_700_000_000, "data": data, "usage": {"total_tokens": 10}})).into_response()
    }
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk-test-secret")
    }
    let generations = |State(mode): State<Mode>, headers: HeaderMap, Json(body): Json<Value>| async move {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if let Some(r) = mode.gate().await {
            return r;
        }
        mode.jobs.lock().unwrap().push(body.clone());
        assert!(body["prompt"].is_string() && body["size"].is_string(), "{body}");
        images(body["n"].as_u64().unwrap_or(1)).await
    };
    let edits = |State(mode): State<Mode>, headers: HeaderMap, form: Multipart| async move {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if let Some(r) = mode.gate().await {
            return r;
        }
        let fields = fields_of(form, &mode).await;
        assert!(fields.contains_key("image[]") && fields.contains_key("prompt"), "{:?}", fields.keys());
        if let Some(mask) = fields.get("mask") {
            let mask = imaging::decode(mask, &Default::default()).unwrap().image;
            let image = imaging::decode(&fields["image[]"], &Default::default()).unwrap().image;
            assert_eq!(mask.dimensions(), image.dimensions(), "OpenAI wants the mask at the image's size");
        }
        let n: u64 = String::from_utf8_lossy(&fields["n"]).parse().unwrap();
        images(n).await
    };
    let app =
        axum::Router::new().route("/v1/images/generations", post(generations)).route("/v1/images/edits", post(edits)).with_state(mode);
    serve(app).await
}

/// ComfyUI: uploads, /prompt, /history polling, /view, /interrupt.
async fn comfyui_fake(mode: Mode) -> (String, Log) {
    #[derive(Clone)]
    struct S {
        mode: Mode,
        polls: Arc<AtomicUsize>,
        batch: Arc<AtomicUsize>,
    }
    let upload = |State(s): State<S>, form: Multipart| async move {
        let fields = fields_of(form, &s.mode).await;
        assert!(fields.contains_key("image"));
        Json(json!({"name": "atelier-upload.png", "subfolder": "", "type": "input"}))
    };
    let upload_mask = |State(s): State<S>, form: Multipart| async move {
        let fields = fields_of(form, &s.mode).await;
        let original: Value = serde_json::from_slice(&fields["original_ref"]).unwrap();
        assert_eq!(original["filename"], "atelier-upload.png");
        Json(json!({"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}))
    };
    let prompt = |State(s): State<S>, Json(body): Json<Value>| async move {
        assert!(body["client_id"].is_string());
        let workflow = body["prompt"].clone();
        assert!(!workflow.to_string().contains("{{"), "unfilled placeholders: {workflow}");
        s.batch.store(workflow["5"]["inputs"]["batch_size"].as_u64().unwrap_or(1) as usize, Ordering::SeqCst);
        s.mode.jobs.lock().unwrap().push(workflow);
        Json(json!({"prompt_id": "0b4f-run", "number": 1, "node_errors": {}}))
    };
    let history = |State(s): State<S>, Path(id): Path<String>| async move {
        // The first poll finds the run still queued.
        if s.mode.hold.load(Ordering::SeqCst) || s.polls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Json(json!({}));
        }
        let images: Vec<Value> = (0..s.batch.load(Ordering::SeqCst))
            .map(|i| json!({"filename": format!("ComfyUI_{i:05}_.png"), "subfolder": "", "type": "output"}))
            .chain([json!({"filename": "preview.png", "subfolder": "", "type": "temp"})])
            .collect();
        Json(
            json!({ id: {"prompt": [], "outputs": {"9": {"images": images}}, "status": {"status_str": "success", "completed": true, "messages": []}}}),
        )
    };
    let view = |Query(q): Query<BTreeMap<String, String>>| async move {
        assert_eq!(q["type"], "output");
        ([("content-type", "image/png")], png_of(80, 80, 7))
    };
    let app = axum::Router::new()
        .route("/upload/image", post(upload))
        .route("/upload/mask", post(upload_mask))
        .route("/prompt", post(prompt))
        .route("/history/{id}", get(history))
        .route("/view", get(view))
        .route("/interrupt", post(|| async { StatusCode::OK }))
        .with_state(S { mode, polls: Arc::default(), batch: Arc::default() });
    serve(app).await
}

/// The AUTOMATIC1111 web UI API.
async fn automatic1111_fake(mode: Mode) -> (String, Log) {
    let images = |n: u64, w: u32, h: u32| {
        Json(json!({"images": (0..n).map(|_| b64(&png_of(w, h, 3))).collect::<Vec<_>>(), "parameters": {}, "info": "{}"}))
    };
    let txt2img = move |State(mode): State<Mode>, Json(body): Json<Value>| async move {
        if let Some(r) = mode.gate().await {
            return r;
        }
        mode.jobs.lock().unwrap().push(body.clone());
        images(body["batch_size"].as_u64().unwrap(), body["width"].as_u64().unwrap() as u32, body["height"].as_u64().unwrap() as u32)
            .into_response()
    };
    let img2img = move |State(mode): State<Mode>, Json(body): Json<Value>| async move {
        if let Some(r) = mode.gate().await {
            return r;
        }
        assert_eq!(body["init_images"].as_array().unwrap().len(), 1);
        mode.jobs.lock().unwrap().push(body.clone());
        images(body["batch_size"].as_u64().unwrap(), body["width"].as_u64().unwrap() as u32, body["height"].as_u64().unwrap() as u32)
            .into_response()
    };
    let app = axum::Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route(
            "/sdapi/v1/progress",
            get(|| async { Json(json!({"progress": 0.5, "eta_relative": 1.0, "state": {}, "current_image": null})) }),
        )
        .route("/sdapi/v1/interrupt", post(|| async { StatusCode::OK }))
        .with_state(mode);
    serve(app).await
}

/// Replicate's predictions API.
async fn replicate_fake(mode: Mode) -> (String, Log) {
    #[derive(Clone)]
    struct S {
        mode: Mode,
        base: Arc<Mutex<String>>,
        n: Arc<AtomicUsize>,
        canceled: Arc<AtomicBool>,
    }
    fn prediction(s: &S, status: &str) -> Value {
        let base = s.base.lock().unwrap().clone();
        let output: Vec<String> = (0..s.n.load(Ordering::SeqCst)).map(|i| format!("{base}/files/out-{i}.png")).collect();
        json!({
            "id": "rp1", "model": "acme/painter", "version": "v1", "status": status,
            "output": if status == "succeeded" { json!(output) } else { Value::Null },
            "error": null, "logs": "",
            "urls": {"get": format!("{base}/v1/predictions/rp1"), "cancel": format!("{base}/v1/predictions/rp1/cancel")}
        })
    }
    let create = |State(s): State<S>, Path((owner, name)): Path<(String, String)>, headers: HeaderMap, Json(body): Json<Value>| async move {
        assert_eq!((owner.as_str(), name.as_str()), ("acme", "painter"));
        assert_eq!(headers["authorization"], "Bearer r8-test-secret");
        assert!(headers["prefer"].to_str().unwrap().starts_with("wait"));
        s.n.store(body["input"]["num_outputs"].as_u64().unwrap_or(1) as usize, Ordering::SeqCst);
        s.mode.jobs.lock().unwrap().push(body["input"].clone());
        (StatusCode::CREATED, Json(prediction(&s, "starting")))
    };
    let status = |State(s): State<S>| async move {
        let state = if s.canceled.load(Ordering::SeqCst) {
            "canceled"
        } else if s.mode.hold.load(Ordering::SeqCst) {
            "processing"
        } else {
            "succeeded"
        };
        Json(prediction(&s, state))
    };
    let cancel = |State(s): State<S>| async move {
        s.canceled.store(true, Ordering::SeqCst);
        Json(prediction(&s, "canceled"))
    };
    let state = S { mode, base: Arc::default(), n: Arc::default(), canceled: Arc::default() };
    let app = axum::Router::new()
        .route("/v1/models/{owner}/{name}/predictions", post(create))
        .route("/v1/predictions/rp1", get(status))
        .route("/v1/predictions/rp1/cancel", post(cancel))
        .route("/files/{name}", get(|| async { ([("content-type", "image/png")], png_of(128, 128, 200)) }))
        .with_state(state.clone());
    let (url, log) = serve(app).await;
    *state.base.lock().unwrap() = url.clone();
    (url, log)
}

// ---------------------------------------------------------------- harness

struct Harness {
    db: TestDb,
    blobs: Arc<dyn BlobStore>,
    user: User,
    _dir: tempfile::TempDir,
}

const COST: i64 = 3;
const GRANT: i64 = 100;

async fn harness() -> Harness {
    let db = test_db(TestBackend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let blobs: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let user = db
        .store
        .create_user(NewUser { email: "alice.liddell@example.org".into(), name: "Alice Liddell".into(), password_hash: None, locale: None })
        .await
        .unwrap();
    let grant = NewGrant {
        user_id: user.id.clone(),
        amount: GRANT,
        source: "admin".into(),
        key: format!("test:{}", user.id),
        reason: "test".into(),
        expires_at: None,
    };
    db.store.grant_credits(grant).await.unwrap();
    Harness { db, blobs, user, _dir: dir }
}

fn provider(v: Value) -> ProviderConfig {
    serde_json::from_value(v).unwrap()
}

fn routes(model: &str, targets: &[&str]) -> BTreeMap<String, Vec<RouteTarget>> {
    BTreeMap::from([(model.to_string(), targets.iter().map(|p| RouteTarget { provider: p.to_string(), weight: 1 }).collect())])
}

fn router(providers: Vec<ProviderConfig>, routes: BTreeMap<String, Vec<RouteTarget>>) -> Router {
    let env = |k: &str| match k {
        "TEST_OPENAI_KEY" => Some("sk-test-secret".to_string()),
        "TEST_REPLICATE_TOKEN" => Some("r8-test-secret".to_string()),
        _ => None,
    };
    build_router(&providers, &routes, Arc::new(ProceduralEngine), &env).unwrap()
}

const TAG_SECRET: &str = "server-side pseudonym key";

impl Harness {
    fn worker(&self, router: Router, config: WorkerConfig) -> Arc<Worker> {
        let config = WorkerConfig { thumbnail_side: 64, end_user_secret: Some(Secret::new(TAG_SECRET)), ..config };
        Arc::new(Worker::with_router(self.db.store.clone(), self.blobs.clone(), Arc::new(router), TaskHub::default(), config))
    }

    async fn submit(&self, kind: &str, model: &str, params: String, max_attempts: i64) -> Task {
        let new = NewTask {
            owner_id: self.user.id.clone(),
            kind: kind.into(),
            prompt: "a lighthouse on a cliff at dusk".into(),
            params,
            provider: None,
            model: Some(model.into()),
            cost: COST,
            max_attempts,
            idempotency_key: None,
            request_hash: None,
        };
        self.db.store.submit_task(new).await.unwrap().task().clone()
    }

    async fn generate(&self, model: &str, n: u32) -> Task {
        let params = json!({"size": {"width": 256, "height": 192}, "style": "none", "n": n, "seed": 42});
        self.submit("generate", model, params.to_string(), 1).await
    }

    async fn upload(&self, image: &RgbaImage) -> String {
        let bytes = imaging::encode_png(image).unwrap().bytes;
        let id = domain::ids::new_id();
        let asset = NewAsset {
            storage_key: format!("{}/{id}.png", self.user.id),
            id: id.clone(),
            owner_id: self.user.id.clone(),
            task_id: None,
            kind: "upload".into(),
            parent_id: None,
            content_type: "image/png".into(),
            sha256: "0".repeat(64),
            size_bytes: bytes.len() as i64,
            width: i64::from(image.width()),
            height: i64::from(image.height()),
            saved: true,
            expires_at: None,
        };
        self.blobs.put(&asset.storage_key, bytes).await.unwrap();
        self.db.store.insert_asset(&asset).await.unwrap();
        id
    }

    /// An edit of a 128x96 image whose left half (transparent in the mask) is repainted.
    async fn edit(&self, model: &str) -> Task {
        let source = self.upload(&RgbaImage::from_pixel(128, 96, Rgba([10, 200, 30, 255]))).await;
        let mask = self.upload(&RgbaImage::from_fn(128, 96, |x, _| Rgba([0, 0, 0, if x < 64 { 0 } else { 255 }]))).await;
        let params = json!({"sources": [source], "mask": mask, "style": "none", "n": 1, "seed": 7});
        self.submit("edit", model, params.to_string(), 1).await
    }

    async fn task(&self, task: &Task) -> Task {
        self.db.store.get_task(&self.user.id, &task.id).await.unwrap()
    }

    async fn assert_succeeded(&self, task: &Task, images: usize, size: (i64, i64)) {
        let done = self.task(task).await;
        assert_eq!(done.status, TaskStatus::Succeeded, "{:?} {:?}", done.error_code, done.error_message);
        let outputs = self.db.store.task_outputs(&self.user.id, &task.id).await.unwrap();
        assert_eq!(outputs.len(), images);
        for item in outputs {
            assert_eq!((item.asset.width, item.asset.height), size);
        }
    }

    async fn available(&self) -> i64 {
        self.db.store.balance(&self.user.id).await.unwrap().available
    }

    /// C12/C44: nothing a provider received names the account.
    fn assert_no_identity(&self, log: &Log) {
        let all = log.all();
        assert!(!all.is_empty());
        let id_hex = self.user.id.replace('-', "");
        for seen in all {
            let text = format!("{} {}\n{}\n{}", seen.method, seen.path, seen.headers, String::from_utf8_lossy(&seen.body)).to_lowercase();
            for secret in ["alice.liddell@example.org", "alice liddell", "liddell", &self.user.id.to_lowercase(), &id_hex.to_lowercase()] {
                assert!(!text.contains(secret), "{} {} carried {secret:?}", seen.method, seen.path);
            }
        }
    }
}

// ---------------------------------------------------------------- adapters

#[tokio::test]
async fn c12_c44_openai_generates_and_edits_with_a_mask_through_a_task() {
    let h = harness().await;
    let mode = Mode::default();
    let (url, log) = openai_fake(mode.clone()).await;
    let oa = provider(
        json!({"name": "oa", "kind": "openai", "base_url": format!("{url}/v1"), "model": "gpt-image-1", "api_key_env": "TEST_OPENAI_KEY"}),
    );
    let worker = h.worker(router(vec![oa], routes("gpt-image-1", &["oa"])), WorkerConfig::default());

    let task = h.generate("gpt-image-1", 2).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 2, (256, 192)).await;
    let sent = mode.jobs.lock().unwrap()[0].clone();
    assert_eq!((sent["model"].as_str(), sent["size"].as_str(), sent["n"].as_u64()), (Some("gpt-image-1"), Some("1536x1024"), Some(2)));
    // The `user` field is the keyed pseudonym, not the account.
    assert_eq!(sent["user"], engines::end_user_tag(&Secret::new(TAG_SECRET), &h.user.id));

    let edit = h.edit("gpt-image-1").await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&edit, 1, (128, 96)).await;
    let fields = mode.fields.lock().unwrap().clone();
    assert!(fields.contains(&"image[]".to_string()) && fields.contains(&"mask".to_string()), "{fields:?}");
    assert_eq!(log.count("POST", "/v1/images/edits"), 1);
    h.assert_no_identity(&log);
    assert_eq!(h.available().await, GRANT - 2 * COST);
}

#[tokio::test]
async fn c12_c44_comfyui_generates_and_edits_with_a_mask_through_a_task() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let workflow = json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "steps": 20, "model": ["4", 0], "latent_image": ["5", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": "{{n}}"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}, detailed"}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
    });
    let edit_workflow = json!({
        "5": {"class_type": "RepeatLatentBatch", "inputs": {"amount": "{{n}}"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "{{mask}}"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
        "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}"}}
    });
    let (wf, ewf) = (dir.path().join("wf.json"), dir.path().join("edit.json"));
    std::fs::write(&wf, workflow.to_string()).unwrap();
    std::fs::write(&ewf, edit_workflow.to_string()).unwrap();
    let mode = Mode::default();
    let (url, log) = comfyui_fake(mode.clone()).await;
    let comfy = provider(json!({"name": "comfy", "kind": "comfyui", "base_url": url, "workflow": wf, "edit_workflow": ewf, "poll_ms": 5}));
    let worker = h.worker(router(vec![comfy], routes("*", &["comfy"])), WorkerConfig::default());

    let task = h.generate("sdxl", 2).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 2, (256, 192)).await;
    let sent = mode.jobs.lock().unwrap()[0].clone();
    assert_eq!(sent["5"]["inputs"], json!({"width": 256, "height": 192, "batch_size": 2}));
    assert_eq!(sent["6"]["inputs"]["text"], "a lighthouse on a cliff at dusk, detailed");
    assert_eq!(sent["3"]["inputs"]["seed"], 42);
    assert!(log.count("GET", "/history/0b4f-run") >= 2, "polled until recorded");
    assert_eq!(log.count("GET", "/view?filename=ComfyUI_0000"), 2, "temp previews are not fetched");

    let edit = h.edit("sdxl").await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&edit, 1, (128, 96)).await;
    assert_eq!(log.count("POST", "/upload/image"), 1);
    assert_eq!(log.count("POST", "/upload/mask"), 1);
    let sent = mode.jobs.lock().unwrap()[1].clone();
    assert_eq!(sent["11"]["inputs"]["image"], "atelier-upload.png");
    assert_eq!(sent["10"]["inputs"]["image"], "clipspace/clipspace-mask.png");
    h.assert_no_identity(&log);
}

#[tokio::test]
async fn c12_c44_automatic1111_generates_and_inpaints_one_request_at_a_time() {
    let h = harness().await;
    let mode = Mode { delay_ms: 30, ..Mode::default() };
    let (url, log) = automatic1111_fake(mode.clone()).await;
    let sd = provider(json!({
        "name": "sd", "kind": "automatic1111", "base_url": url, "max_concurrency": 4, "poll_ms": 5,
        "settings": {"steps": 12, "sampler_name": "Euler a", "denoising_strength": 0.8}
    }));
    let worker = h.worker(router(vec![sd], routes("*", &["sd"])), WorkerConfig::default());

    let tasks = [h.generate("sd15", 1).await, h.generate("sd15", 1).await, h.generate("sd15", 2).await];
    let runs: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn({
                let worker = worker.clone();
                async move { worker.run_one().await.unwrap() }
            })
        })
        .collect();
    for r in runs {
        assert!(r.await.unwrap());
    }
    for (task, n) in tasks.iter().zip([1, 1, 2]) {
        h.assert_succeeded(task, n, (256, 192)).await;
    }
    let image_calls: Vec<_> = log.all().into_iter().filter(|s| s.path.contains("2img")).collect();
    assert_eq!(image_calls.len(), 3);
    assert_eq!(mode.jobs.lock().unwrap()[0]["steps"], 12, "configured settings are merged in");

    let edit = h.edit("sd15").await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&edit, 1, (128, 96)).await;
    let sent = mode.jobs.lock().unwrap().last().unwrap().clone();
    let mask = base64::engine::general_purpose::STANDARD.decode(sent["mask"].as_str().unwrap()).unwrap();
    let mask = imaging::decode(&mask, &Default::default()).unwrap().image;
    assert_eq!(mask.get_pixel(10, 10).0[..3], [255, 255, 255], "white paints");
    assert_eq!(mask.get_pixel(100, 10).0[..3], [0, 0, 0], "black keeps");
    assert_eq!(sent["inpainting_mask_invert"], 0);
    h.assert_no_identity(&log);
    assert_eq!(mode.peak.load(Ordering::SeqCst), 1, "the server never had two jobs at once");
    assert!(log.count("GET", "/sdapi/v1/progress?skip_current_image=true") > 0, "progress was polled");
}

#[tokio::test]
async fn c12_c44_replicate_generates_and_edits_with_a_mask_through_a_task() {
    let h = harness().await;
    let mode = Mode::default();
    let (url, log) = replicate_fake(mode.clone()).await;
    let rep = provider(json!({
        "name": "rep", "kind": "replicate", "base_url": url, "model": "acme/painter", "api_key_env": "TEST_REPLICATE_TOKEN",
        "wait_seconds": 5, "poll_ms": 5,
        "edit_input": {"prompt": "{{prompt}}", "image": "{{image}}", "mask": "{{mask}}", "num_outputs": "{{n}}", "seed": "{{seed}}"}
    }));
    let worker = h.worker(router(vec![rep], routes("*", &["rep"])), WorkerConfig::default());

    let task = h.generate("flux", 2).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 2, (256, 192)).await;
    let input = mode.jobs.lock().unwrap()[0].clone();
    assert_eq!(
        input,
        json!({"prompt": "a lighthouse on a cliff at dusk", "seed": 42, "width": 256, "height": 192, "num_outputs": 2, "output_format": "png"})
    );
    assert_eq!(log.count("GET", "/files/"), 2);

    let edit = h.edit("flux").await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&edit, 1, (128, 96)).await;
    let input = mode.jobs.lock().unwrap()[1].clone();
    assert!(input["image"].as_str().unwrap().starts_with("data:image/png;base64,"));
    assert!(input["mask"].as_str().unwrap().starts_with("data:image/png;base64,"));
    h.assert_no_identity(&log);
}

// ---------------------------------------------------------------- router

#[tokio::test]
async fn c12_failover_completes_on_b_charges_once_and_a_breaker_opens_then_recovers() {
    let h = harness().await;
    let (mode_a, mode_b) = (Mode::default(), Mode::default());
    mode_a.fail.store(500, Ordering::SeqCst);
    let ((url_a, log_a), (url_b, log_b)) = (openai_fake(mode_a.clone()).await, openai_fake(mode_b.clone()).await);
    let cfg = |name: &str, url: &str| {
        provider(json!({
            "name": name, "kind": "openai", "base_url": format!("{url}/v1"), "model": "gpt-image-1", "api_key_env": "TEST_OPENAI_KEY",
            "breaker_failures": 2, "breaker_cooldown_ms": 60_000
        }))
    };
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let router = router(vec![cfg("a", &url_a), cfg("b", &url_b)], routes("gpt-image-1", &["a", "b"]))
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let router = Arc::new(router);
    let worker =
        Arc::new(Worker::with_router(h.db.store.clone(), h.blobs.clone(), router.clone(), TaskHub::default(), WorkerConfig::default()));
    let state = |name: &str| router.health().into_iter().find(|p| p.name == name).unwrap();

    for round in 1..=2 {
        let task = h.generate("gpt-image-1", 1).await;
        assert!(worker.run_one().await.unwrap());
        h.assert_succeeded(&task, 1, (256, 192)).await;
        assert_eq!(h.task(&task).await.attempts, 1, "failover happens within the attempt");
        assert_eq!(log_a.count("POST", "/v1/images/generations"), round);
        assert_eq!(log_b.count("POST", "/v1/images/generations"), round);
    }
    assert_eq!(h.available().await, GRANT - 2 * COST, "each task charged once");
    let a = state("a");
    assert_eq!((a.state, a.consecutive_failures, a.failed, a.last_error.as_deref()), ("open", 2, 2, Some("unavailable")));

    // Open: A is skipped without a request.
    let task = h.generate("gpt-image-1", 1).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 1, (256, 192)).await;
    assert_eq!(log_a.count("POST", "/v1/images/generations"), 2);

    // A is healthy again; after the cool-down one call probes it and closes the breaker.
    mode_a.fail.store(0, Ordering::SeqCst);
    now.fetch_add(59_000, Ordering::SeqCst);
    assert_eq!(state("a").state, "open");
    now.fetch_add(1_001, Ordering::SeqCst);
    assert_eq!(state("a").state, "half_open");
    let task = h.generate("gpt-image-1", 1).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 1, (256, 192)).await;
    assert_eq!(log_a.count("POST", "/v1/images/generations"), 3);
    let a = state("a");
    assert_eq!((a.state, a.consecutive_failures, a.succeeded), ("closed", 0, 1));
    assert_eq!(h.available().await, GRANT - 4 * COST);
    assert_eq!(router.health().iter().map(|p| p.in_flight).sum::<usize>(), 0);
}

#[tokio::test]
async fn c12_concurrency_cap_of_two_holds_across_ten_tasks() {
    let h = harness().await;
    let mode = Mode { delay_ms: 40, ..Mode::default() };
    let (url, log) = openai_fake(mode.clone()).await;
    let a = provider(
        json!({"name": "a", "kind": "openai", "base_url": format!("{url}/v1"), "model": "gpt-image-1", "api_key_env": "TEST_OPENAI_KEY", "max_concurrency": 2}),
    );
    let worker = h.worker(router(vec![a], routes("*", &["a"])), WorkerConfig { concurrency: 10, ..WorkerConfig::default() });
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(h.generate("gpt-image-1", 1).await);
    }
    let runs: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn({
                let worker = worker.clone();
                async move { worker.run_one().await.unwrap() }
            })
        })
        .collect();
    for r in runs {
        assert!(r.await.unwrap());
    }
    for task in &tasks {
        h.assert_succeeded(task, 1, (256, 192)).await;
    }
    assert_eq!(log.count("POST", "/v1/images/generations"), 10);
    assert_eq!(mode.peak.load(Ordering::SeqCst), 2, "the fake never saw more than 2 at once");
}

#[tokio::test]
async fn c12_a_hanging_provider_times_out_and_the_task_completes_elsewhere_or_fails_with_the_hold_released() {
    let h = harness().await;
    let hang = Mode::default();
    hang.hold.store(true, Ordering::SeqCst);
    let ((url_a, log_a), (url_b, log_b)) = (openai_fake(hang).await, openai_fake(Mode::default()).await);
    let cfg = |name: &str, url: &str| {
        provider(
            json!({"name": name, "kind": "openai", "base_url": format!("{url}/v1"), "model": "gpt-image-1", "api_key_env": "TEST_OPENAI_KEY", "timeout_ms": 150}),
        )
    };
    let worker = h.worker(router(vec![cfg("a", &url_a), cfg("b", &url_b)], routes("*", &["a", "b"])), WorkerConfig::default());
    let task = h.generate("gpt-image-1", 1).await;
    assert!(worker.run_one().await.unwrap());
    h.assert_succeeded(&task, 1, (256, 192)).await;
    assert_eq!((log_a.count("POST", "/v1"), log_b.count("POST", "/v1")), (1, 1));
    assert_eq!(h.available().await, GRANT - COST);

    // Only the hanging provider: the attempt fails cleanly and the hold goes back.
    let alone = h.worker(router(vec![cfg("a", &url_a)], routes("*", &["a"])), WorkerConfig::default());
    let task = h.generate("gpt-image-1", 1).await;
    assert_eq!(h.available().await, GRANT - 2 * COST, "held at submit");
    assert!(alone.run_one().await.unwrap());
    let failed = h.task(&task).await;
    assert_eq!((failed.status, failed.error_code.as_deref()), (TaskStatus::Failed, Some("unavailable")));
    assert!(failed.error_message.unwrap().contains("150 ms"));
    assert_eq!(h.available().await, GRANT - COST, "the hold was released");
}

/// Submits a generate task, lets the worker start it, cancels it, and
/// returns once the worker has let go.
async fn cancel_midway(h: &Harness, router: Router, started: (&Log, &str, &str)) {
    let worker = h.worker(router, WorkerConfig { heartbeat_ms: 20, ..WorkerConfig::default() });
    let task = h.generate("any", 1).await;
    let run = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_one().await.unwrap() }
    });
    started.0.wait_for(started.1, started.2).await;
    h.db.store.cancel_task(&h.user.id, &task.id).await.unwrap();
    assert!(run.await.unwrap());
    assert_eq!(h.task(&task).await.status, TaskStatus::Canceled);
    assert_eq!(h.available().await, GRANT, "a canceled task costs nothing");
}

#[tokio::test]
async fn c12_cancel_reaches_comfyui_interrupt_and_replicate_cancel() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.json");
    std::fs::write(&wf, json!({"6": {"inputs": {"text": "{{prompt}}"}}}).to_string()).unwrap();
    let mode = Mode::default();
    mode.hold.store(true, Ordering::SeqCst);
    let (url, log) = comfyui_fake(mode.clone()).await;
    let comfy = provider(json!({"name": "comfy", "kind": "comfyui", "base_url": url, "workflow": wf, "poll_ms": 5}));
    cancel_midway(&h, router(vec![comfy], routes("*", &["comfy"])), (&log, "GET", "/history/")).await;
    log.wait_for("POST", "/interrupt").await;
    let interrupt = log.all().into_iter().find(|s| s.path == "/interrupt").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&interrupt.body).unwrap(), json!({"prompt_id": "0b4f-run"}));

    let (url, log) = replicate_fake(mode).await;
    let rep = provider(
        json!({"name": "rep", "kind": "replicate", "base_url": url, "model": "acme/painter", "api_key_env": "TEST_REPLICATE_TOKEN", "poll_ms": 5}),
    );
    cancel_midway(&h, router(vec![rep], routes("*", &["rep"])), (&log, "GET", "/v1/predictions/rp1")).await;
    log.wait_for("POST", "/v1/predictions/rp1/cancel").await;
    let cancel = log.all().into_iter().find(|s| s.path.ends_with("/cancel")).unwrap();
    assert!(cancel.headers.contains("authorization: Bearer r8-test-secret"));
    h.assert_no_identity(&log);
}

#[test]
fn c44_provider_secrets_stay_out_of_debug_output() {
    let p = provider(json!({"name": "oa", "kind": "openai", "model": "gpt-image-1", "api_key": "sk-in-file-123"}));
    assert!(!format!("{p:?}").contains("sk-in-file-123"));
    let config = WorkerConfig { end_user_secret: Some(Secret::new("tag-key-456")), ..WorkerConfig::default() };
    assert!(!format!("{config:?}").contains("tag-key-456"));
}
