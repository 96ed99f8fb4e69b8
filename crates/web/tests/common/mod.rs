//! A real app over a real database and a real blob directory, driven through
//! the router like a browser would: cookies, CSRF tokens, forms and JSON.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use blobs::LocalDirStore;
use engines::ProceduralEngine;
use store::testing::{test_db, TestBackend, TestDb};
use tower::ServiceExt;
use web::{AppState, WebConfig};
use worker::{TaskHub, Worker, WorkerConfig};

pub struct App {
    pub router: Router,
    pub state: AppState,
    pub worker: Arc<Worker>,
    pub objects: LocalDirStore,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl App {
    pub async fn new(backend: TestBackend) -> App {
        App::with_config(backend, WebConfig::default()).await
    }

    pub async fn with_config(backend: TestBackend, config: WebConfig) -> App {
        let db = test_db(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let objects = LocalDirStore::new(dir.path().join("objects")).unwrap();
        let blobs: Arc<dyn blobs::BlobStore> = Arc::new(blobs::Encrypted::new(Arc::new(objects.clone()), Arc::new(db.store.clone())));
        let hub = TaskHub::default();
        let worker_config = WorkerConfig { thumbnail_side: 128, ..WorkerConfig::default() };
        let engines = Arc::new(engines::Router::single(Arc::new(ProceduralEngine)));
        let worker = Arc::new(Worker::with_router(db.store.clone(), blobs.clone(), engines.clone(), hub.clone(), worker_config));
        let state = AppState { store: db.store.clone(), blobs, objects: Arc::new(objects.clone()), hub, engines, config: Arc::new(config) };
        App { router: web::router(state.clone()), state, worker, objects, _db: db, _dir: dir }
    }

    /// Runs queued tasks until the queue is empty.
    pub async fn run_tasks(&self) -> usize {
        let mut n = 0;
        while self.worker.run_one().await.unwrap() {
            n += 1;
        }
        n
    }

    pub fn client(&self) -> Client {
        Client { router: self.router.clone(), cookies: BTreeMap::new(), bearer: None, store: self.state.store.clone(), peer: None }
    }

    pub fn object_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.objects.root(), &mut out);
        out.sort();
        out
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The stable error code of a JSON error response.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.text())).to_string()
    }
    pub fn location(&self) -> String {
        self.headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
}

pub struct Client {
    router: Router,
    pub cookies: BTreeMap<String, String>,
    pub bearer: Option<String>,
    /// To read the mail the app queued (verification and reset links).
    pub store: store::Store,
    /// The peer address the app sees, as `ConnectInfo` would give it.
    pub peer: Option<std::net::SocketAddr>,
}

/// Waits (up to 10 s: some mail is queued after the response) for a queued
/// message of `kind` to `to`, newest first.
pub async fn wait_for_mail(store: &store::Store, to: &str, kind: &str) -> store::Mail {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut found: Vec<store::Mail> =
            store.due_mail(i64::MAX, 10_000).await.unwrap().into_iter().filter(|m| m.to_addr == to && m.kind == kind).collect();
        if let Some(mail) = found.pop() {
            return mail;
        }
        assert!(std::time::Instant::now() < deadline, "no {kind} mail to {to}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every queued message to `to` (after giving background work a moment).
pub async fn mail_to(store: &store::Store, to: &str) -> Vec<store::Mail> {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    store.due_mail(i64::MAX, 10_000).await.unwrap().into_iter().filter(|m| m.to_addr == to).collect()
}

/// The path and query of the first link in a mail that starts with `prefix`
/// (links are absolute, on the configured public URL).
pub fn link_in(mail: &store::Mail, prefix: &str) -> String {
    let at =
        mail.body_text.find(&format!("http://localhost:8080{prefix}")).unwrap_or_else(|| panic!("no {prefix} link in {}", mail.body_text));
    let url = mail.body_text[at..].split_whitespace().next().unwrap();
    url.trim_start_matches("http://localhost:8080").to_string()
}

/// The `token` query parameter of a link path.
pub fn token_of(path: &str) -> String {
    path.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string()
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

impl Client {
    pub async fn send(&mut self, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>, headers: &[(&str, &str)]) -> Resp {
        let mut request = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(peer) = self.peer {
            request = request.extension(axum::extract::ConnectInfo(peer));
        }
        let response = self.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    /// Starts a GET and hands back the response unread (event streams).
    pub async fn open(&self, path: &str) -> axum::response::Response {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let request = Request::builder().uri(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap();
        self.router.clone().oneshot(request).await.unwrap()
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None, Vec::new(), &[]).await
    }

    pub fn csrf(&self) -> String {
        self.cookies.get("atelier_csrf").cloned().unwrap_or_default()
    }

    /// Posts a form the way a browser would, with the page's CSRF token.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        if self.csrf().is_empty() {
            self.get("/signin").await;
        }
        let csrf = self.csrf();
        let mut all = fields.to_vec();
        all.push(("_csrf", &csrf));
        self.send(Method::POST, path, Some("application/x-www-form-urlencoded"), form_encode(&all).into_bytes(), &[]).await
    }

    pub async fn api(&mut self, method: Method, path: &str, json: Option<serde_json::Value>, headers: &[(&str, &str)]) -> Resp {
        let csrf = self.csrf();
        let mut all = headers.to_vec();
        all.push(("x-csrf-token", &csrf));
        let body = json.map(|j| serde_json::to_vec(&j).unwrap()).unwrap_or_default();
        self.send(method, path, Some("application/json"), body, &all).await
    }

    pub async fn sign_up(&mut self, name: &str, email: &str, password: &str) -> Resp {
        self.post_form("/signup", &[("name", name), ("email", email), ("password", password), ("birth_date", "1990-05-17")]).await
    }

    /// Signs up, follows the verification link mailed to `email` and
    /// returns the account id (signed in).
    pub async fn signed_up(&mut self, email: &str) -> String {
        let resp = self.verified_sign_up(email, "a long enough passphrase").await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
        self.api(Method::GET, "/api/v1/account", None, &[]).await.json()["id"].as_str().unwrap().to_string()
    }

    /// Signs up and confirms the address; returns the confirmation's
    /// response, the one that sets the session cookie.
    pub async fn verified_sign_up(&mut self, email: &str, password: &str) -> Resp {
        let resp = self.sign_up("Test Person", email, password).await;
        assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signup/sent".to_string()), "{}", resp.text());
        self.verify_email(email).await
    }

    /// Follows the newest verification link mailed to `email`: the link's
    /// page, then its confirmation button.
    pub async fn verify_email(&mut self, email: &str) -> Resp {
        let mail = wait_for_mail(&self.store, &email.to_lowercase(), "verify_email").await;
        let link = link_in(&mail, "/verify-email?token=");
        let page = self.get(&link).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        self.post_form("/verify-email", &[("token", &token_of(&link))]).await
    }

    /// Queues a task and returns its JSON.
    pub async fn submit(&mut self, body: serde_json::Value) -> serde_json::Value {
        let resp = self.api(Method::POST, "/api/v1/tasks", Some(body), &[]).await;
        assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text());
        resp.json()
    }
}
