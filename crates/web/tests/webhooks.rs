//! Completion webhooks end to end: endpoints registered through the API and
//! the page, events sent by the deliverer to a real HTTP receiver on
//! loopback (allowed by the development switch), signatures checked with
//! the documented scheme, retries driven by moving the delivery clock, and
//! the URL rules checked at registration and again after DNS at delivery.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode};
use common::App;
use serde_json::{json, Value};
use store::testing::TestBackend;
use web::hooks::{Deliverer, HookConfig, Resolver};
use web::WebConfig;

const PUBLIC: &str = "93.184.216.34";

/// A DNS that answers what the test says, changeable at any time.
#[derive(Default, Clone)]
struct FakeDns(Arc<Mutex<HashMap<String, IpAddr>>>);

impl FakeDns {
    fn set(&self, host: &str, ip: &str) {
        self.0.lock().unwrap().insert(host.to_string(), ip.parse().unwrap());
    }
}

impl Resolver for FakeDns {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let found = self.0.lock().unwrap().get(host).copied();
        Box::pin(async move {
            found.map(|ip| vec![SocketAddr::new(ip, port)]).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
        })
    }
}

/// What the receiver saw: headers and the raw body of each request.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>);

impl Received {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn get(&self, i: usize) -> (HeaderMap, Vec<u8>) {
        self.0.lock().unwrap()[i].clone()
    }
}

/// A real HTTP server on 127.0.0.1 answering the scripted statuses in turn
/// (then 200), each with a short body.
async fn receiver(script: &[u16]) -> (SocketAddr, Received) {
    let received = Received::default();
    let script = Arc::new(Mutex::new(script.to_vec()));
    let seen = received.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (seen, script) = (seen.clone(), script.clone());
        async move {
            seen.0.lock().unwrap().push((headers, body.to_vec()));
            let mut script = script.lock().unwrap();
            let status = if script.is_empty() { 200 } else { script.remove(0) };
            (StatusCode::from_u16(status).unwrap(), format!("answer {status}"))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

fn config(hooks: HookConfig) -> WebConfig {
    WebConfig { hooks, ..WebConfig::default() }
}

fn dev_hooks() -> HookConfig {
    HookConfig { allow_loopback: true, ..HookConfig::default() }
}

fn deliverer(app: &App) -> Deliverer {
    Deliverer::new(app.state.store.clone(), app.state.config.hooks.clone(), app.state.config.public_url.clone())
}

/// Checks `Atelier-Signature` as the README tells receivers to: HMAC-SHA256
/// of `"{t}.{raw body}"` under the endpoint's secret, compared with `v1`.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = headers.get("atelier-signature").unwrap().to_str().unwrap();
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{}.", t.expect("t=")).into_bytes();
    signed.extend_from_slice(body);
    let expected: String = ring::hmac::sign(&key, &signed).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    v1.iter().any(|sig| *sig == expected)
}

/// Runs the README's Python `verify` snippet on a received request.
fn readme_snippet_verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("### Completion webhooks").expect("README section")..];
    let code = section.split("```python\n").nth(1).and_then(|rest| rest.split("```").next()).expect("python snippet");
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let script = format!("{code}\nimport sys\nprint(verify(sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read()))\n");
    let header = headers.get("atelier-signature").unwrap().to_str().unwrap();
    let out =
        std::process::Command::new("python3").arg("-c").arg(script).arg(secret).arg(header).arg(&body_file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

async fn register(client: &mut common::Client, url: &str, include_prompt: bool) -> Value {
    let resp = client.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": url, "include_prompt": include_prompt})), &[]).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    resp.json()
}

async fn a_signed_event_reaches_the_endpoint_once_and_verifies(backend: TestBackend) {
    let app = App::with_config(backend, config(dev_hooks())).await;
    let (addr, received) = receiver(&[]).await;
    let mut client = app.client();
    client.signed_up("hooked@example.org").await;
    let endpoint = register(&mut client, &format!("http://{addr}/atelier"), false).await;
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let listed = client.api(Method::GET, "/api/v1/webhooks", None, &[]).await.json();
    assert_eq!(listed["items"][0]["id"], endpoint["id"]);
    assert!(listed["items"][0].get("secret").is_none(), "the secret is shown once");

    let prompt = "a secret lighthouse at dusk";
    let task = client.submit(json!({"prompt": prompt, "size": "256x256"})).await;
    let task_id = task["id"].as_str().unwrap();
    let deliverer = deliverer(&app);
    assert_eq!(deliverer.deliver_due(store::now_ms()).await.unwrap(), 0, "nothing until the task ends");
    assert_eq!(app.run_tasks().await, 1);
    assert_eq!(deliverer.deliver_due(store::now_ms()).await.unwrap(), 1);
    assert_eq!(received.count(), 1);

    let (headers, body) = received.get(0);
    assert!(verify(&secret, &headers, &body), "signature checks with the documented scheme");
    assert!(!verify("whsec_wrong", &headers, &body));
    assert!(readme_snippet_verifies(&secret, &headers, &body), "the README's snippet accepts it");
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert!(!readme_snippet_verifies(&secret, &headers, &tampered), "and refuses a changed body");
    assert_eq!(headers.get("atelier-event").unwrap(), "task.succeeded");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "task.succeeded");
    assert_eq!(headers.get("atelier-delivery").unwrap().to_str().unwrap(), event["id"].as_str().unwrap());
    assert_eq!(event["task"]["id"], task_id);
    assert_eq!(event["task"]["status"], "succeeded");
    assert_eq!(event["task"]["cost"], 0);
    let steps: Vec<&str> = event["task"]["timeline"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(steps, ["queued", "running", "succeeded"]);
    assert!(event["task"].get("prompt").is_none(), "no prompt unless ticked");
    assert!(!String::from_utf8_lossy(&body).contains("lighthouse"), "the prompt appears nowhere in the event");
    let outputs = event["task"]["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    let view = client.api(Method::GET, &format!("/api/v1/tasks/{task_id}"), None, &[]).await.json();
    assert_eq!(outputs[0]["id"], view["outputs"][0]["id"]);
    // The link is signed, expiring, on the public URL, and downloads the image without a session.
    let url = outputs[0]["url"].as_str().unwrap();
    assert!(outputs[0]["url_expires_at"].as_i64().unwrap() > store::now_ms() / 1000);
    let path = url.strip_prefix(&app.state.config.public_url).unwrap();
    let image = app.client().get(path).await;
    assert_eq!(image.status, StatusCode::OK);
    assert_eq!(image.headers.get("content-type").unwrap(), "image/png");

    // Delivered once: later rounds send nothing more.
    assert_eq!(deliverer.deliver_due(store::now_ms() + 86_400_000).await.unwrap(), 0);
    assert_eq!(received.count(), 1);
    let detail = client.api(Method::GET, &format!("/api/v1/webhooks/{}", endpoint["id"].as_str().unwrap()), None, &[]).await.json();
    let delivery = &detail["deliveries"][0];
    assert_eq!((delivery["status"].as_str(), delivery["attempts"].as_i64()), (Some("delivered"), Some(1)));
    assert_eq!((delivery["response_status"].as_i64(), delivery["response_excerpt"].as_str()), (Some(200), Some("answer 200")));
    assert_eq!(delivery["task_id"], task_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_reaches_the_endpoint_once_and_verifies_sqlite() {
    a_signed_event_reaches_the_endpoint_once_and_verifies(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_reaches_the_endpoint_once_and_verifies_postgres() {
    a_signed_event_reaches_the_endpoint_once_and_verifies(TestBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_try_with_the_prompt_it_asked_for() {
    let app = App::with_config(TestBackend::Sqlite, config(dev_hooks())).await;
    let (addr, received) = receiver(&[500, 503]).await;
    let mut client = app.client();
    client.signed_up("retry@example.org").await;
    let endpoint = register(&mut client, &format!("http://{addr}/hook"), true).await;
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    client.submit(json!({"prompt": "harbour in the fog", "size": "256x256"})).await;
    app.run_tasks().await;

    // The delivery clock is moved by hand: no real waiting for the backoff.
    let deliverer = deliverer(&app);
    let t0 = store::now_ms();
    assert_eq!(deliverer.deliver_due(t0).await.unwrap(), 0);
    assert_eq!(received.count(), 1, "first try: 500");
    assert_eq!(deliverer.deliver_due(t0 + 59_000).await.unwrap(), 0);
    assert_eq!(received.count(), 1, "not retried before its backoff");
    assert_eq!(deliverer.deliver_due(t0 + 60_000).await.unwrap(), 0);
    assert_eq!(received.count(), 2, "second try after a minute: 503");
    assert_eq!(deliverer.deliver_due(t0 + 60_000 + 119_000).await.unwrap(), 0);
    assert_eq!(received.count(), 2, "the backoff doubled");
    assert_eq!(deliverer.deliver_due(t0 + 60_000 + 120_000).await.unwrap(), 1);
    assert_eq!(received.count(), 3, "third try: delivered");
    assert_eq!(deliverer.deliver_due(t0 + 86_400_000).await.unwrap(), 0);
    assert_eq!(received.count(), 3);

    let ids: Vec<Value> = (0..3).map(|i| serde_json::from_slice::<Value>(&received.get(i).1).unwrap()["id"].clone()).collect::<Vec<_>>();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event, retried under its id");
    let (headers, body) = received.get(2);
    assert!(verify(&secret, &headers, &body));
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["task"]["prompt"], "harbour in the fog", "ticked: the prompt is included");
    let detail = client.api(Method::GET, &format!("/api/v1/webhooks/{}", endpoint["id"].as_str().unwrap()), None, &[]).await.json();
    assert_eq!(detail["deliveries"][0]["status"], "delivered");
    assert_eq!(detail["deliveries"][0]["attempts"], 3);
    assert_eq!(detail["consecutive_failures"], 0);
    // The page shows the deliveries and what the receiver answered.
    let page = client.get("/account/webhooks").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(&format!("http://{addr}/hook")) && page.text().contains("answer 200"), "{}", page.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_plain_http_urls_are_refused_at_registration() {
    let dns = FakeDns::default();
    dns.set("intranet.example.test", "192.168.1.10");
    dns.set("metadata.example.test", "169.254.169.254");
    dns.set("public.example.test", PUBLIC);
    let hooks = HookConfig { resolver: Arc::new(dns), ..HookConfig::default() };
    let app = App::with_config(TestBackend::Sqlite, config(hooks)).await;
    let mut client = app.client();
    client.signed_up("strict@example.org").await;
    for url in [
        "https://10.0.0.5/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://intranet.example.test/hook",
        "https://metadata.example.test/",
        "http://public.example.test/hook",
        "https://unknown.example.test/hook",
    ] {
        let resp = client.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": url})), &[]).await;
        assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "webhook_url_not_allowed".to_string()), "{url}");
        // The same rules hold for a task's own webhook_url, and nothing is queued.
        let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "x", "webhook_url": url})), &[]).await;
        assert_eq!(resp.error_code(), "webhook_url_not_allowed", "{url}");
    }
    let resp = client.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": "not a url"})), &[]).await;
    assert_eq!(resp.error_code(), "invalid_input");
    let resp = client.api(Method::POST, "/api/v1/webhooks", Some(json!({"url": "https://public.example.test/", "colour": 1})), &[]).await;
    assert_eq!(resp.error_code(), "invalid_input");
    assert_eq!(client.api(Method::GET, "/api/v1/webhooks", None, &[]).await.json()["items"], json!([]));
    assert_eq!(client.api(Method::GET, "/api/v1/tasks", None, &[]).await.json()["items"], json!([]));
    // The page form says why, in the visitor's language.
    let page = client.post_form("/account/webhooks", &[("url", "https://intranet.example.test/hook")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text().contains("The webhook URL is not allowed"), "{}", page.text());
    // A public name over https is fine.
    let page = client.post_form("/account/webhooks", &[("url", "https://public.example.test/hook"), ("include_prompt", "1")]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("id=\"new-webhook-secret\">whsec_"), "the secret is shown once");
    let items = client.api(Method::GET, "/api/v1/webhooks", None, &[]).await.json()["items"].clone();
    assert_eq!((items[0]["url"].as_str(), items[0]["include_prompt"].as_bool()), (Some("https://public.example.test/hook"), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_answer_changed_after_registration_is_refused_at_delivery() {
    // Something listens on loopback; the event must never reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let dns = FakeDns::default();
    dns.set("hooks.example.test", PUBLIC);
    let hooks = HookConfig { resolver: Arc::new(dns.clone()), ..HookConfig::default() };
    let app = App::with_config(TestBackend::Sqlite, config(hooks)).await;
    let mut client = app.client();
    client.signed_up("rebind@example.org").await;
    let endpoint = register(&mut client, &format!("https://hooks.example.test:{port}/hook"), false).await;
    client.submit(json!({"prompt": "rebinding", "size": "256x256"})).await;
    app.run_tasks().await;

    dns.set("hooks.example.test", "127.0.0.1");
    let deliverer = deliverer(&app);
    assert_eq!(deliverer.deliver_due(store::now_ms()).await.unwrap(), 0);
    dns.set("hooks.example.test", "10.1.2.3");
    assert_eq!(deliverer.deliver_due(store::now_ms() + 60_000).await.unwrap(), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
    let detail = client.api(Method::GET, &format!("/api/v1/webhooks/{}", endpoint["id"].as_str().unwrap()), None, &[]).await.json();
    let delivery = &detail["deliveries"][0];
    assert_eq!((delivery["status"].as_str(), delivery["attempts"].as_i64()), (Some("pending"), Some(2)), "{detail}");
    assert!(delivery["error"].as_str().unwrap().contains("10.1.2.3"), "{delivery}");
    assert_eq!(delivery["response_status"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_given_with_a_task_gets_that_task_signed_with_its_own_secret() {
    let app = App::with_config(TestBackend::Sqlite, config(dev_hooks())).await;
    let (addr, received) = receiver(&[]).await;
    let mut client = app.client();
    client.signed_up("oneoff@example.org").await;
    let task = client.submit(json!({"prompt": "one-off", "size": "256x256", "webhook_url": format!("http://{addr}/once")})).await;
    let secret = task["webhook"]["secret"].as_str().unwrap().to_string();
    client.submit(json!({"prompt": "no hook", "size": "256x256"})).await;
    assert_eq!(app.run_tasks().await, 2);
    assert_eq!(deliverer(&app).deliver_due(store::now_ms()).await.unwrap(), 1);
    assert_eq!(received.count(), 1, "only the task that asked");
    let (headers, body) = received.get(0);
    assert!(verify(&secret, &headers, &body));
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["task"]["id"], task["id"]);
    assert!(event["task"].get("prompt").is_none());
    assert_eq!(client.api(Method::GET, "/api/v1/webhooks", None, &[]).await.json()["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_again_and_again_is_disabled_with_a_notice() {
    let hooks = HookConfig { max_failures: 2, ..dev_hooks() };
    let app = App::with_config(TestBackend::Sqlite, config(hooks)).await;
    let (addr, received) = receiver(&[500, 500, 500, 500]).await;
    let mut client = app.client();
    client.signed_up("flaky@example.org").await;
    let endpoint = register(&mut client, &format!("http://{addr}/down"), false).await;
    let id = endpoint["id"].as_str().unwrap().to_string();
    client.submit(json!({"prompt": "a", "size": "256x256"})).await;
    app.run_tasks().await;
    let deliverer = deliverer(&app);
    let t0 = store::now_ms();
    deliverer.deliver_due(t0).await.unwrap();
    deliverer.deliver_due(t0 + 60_000).await.unwrap();
    assert_eq!(received.count(), 2);
    let detail = client.api(Method::GET, &format!("/api/v1/webhooks/{id}"), None, &[]).await.json();
    assert_eq!((detail["enabled"].as_bool(), detail["consecutive_failures"].as_i64()), (Some(false), Some(2)));
    let mail = common::wait_for_mail(&app.state.store, "flaky@example.org", "webhook_disabled").await;
    assert!(mail.body_text.contains(&format!("http://{addr}/down")) && mail.body_text.contains("/account/webhooks"), "{}", mail.body_text);
    let page = client.get("/account/webhooks").await.text();
    assert!(page.contains("was disabled after 2 failed deliveries in a row"), "{page}");
    // Disabled: nothing more is sent.
    deliverer.deliver_due(t0 + 86_400_000).await.unwrap();
    assert_eq!(received.count(), 2);

    // Its owner turns it back on: the pending event goes out again.
    let resp = client.api(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(json!({"enabled": true})), &[]).await;
    assert_eq!((resp.json()["enabled"].as_bool(), resp.json()["consecutive_failures"].as_i64()), (Some(true), Some(0)));
    deliverer.deliver_due(t0 + 3 * 60_000).await.unwrap();
    assert_eq!(received.count(), 3);
    // Retries stop once the 24 h window after the task's end has passed.
    deliverer.deliver_due(t0 + 25 * 3_600_000).await.unwrap();
    assert_eq!(received.count(), 4);
    let detail = client.api(Method::GET, &format!("/api/v1/webhooks/{id}"), None, &[]).await.json();
    assert_eq!((detail["deliveries"][0]["status"].as_str(), detail["deliveries"][0]["attempts"].as_i64()), (Some("failed"), Some(4)));
}

async fn c06_webhook_endpoints_are_404_to_another_account(backend: TestBackend) {
    let app = App::new(backend).await;
    let mut owner = app.client();
    owner.signed_up("owner-hooks@example.org").await;
    let mut intruder = app.client();
    intruder.signed_up("intruder-hooks@example.org").await;
    // A literal public address: registered without a DNS lookup, never contacted here.
    let endpoint = register(&mut owner, &format!("https://{PUBLIC}/hook"), false).await;
    let id = endpoint["id"].as_str().unwrap();
    let key = intruder.api(Method::POST, "/api/v1/api-keys", Some(json!({"name": "k"})), &[]).await.json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {key}");
    let mut by_key = app.client();
    for (who, headers) in [(&mut intruder, vec![]), (&mut by_key, vec![("authorization", bearer.as_str())])] {
        for (method, body) in [(Method::GET, None), (Method::PATCH, Some(json!({"enabled": false}))), (Method::DELETE, None)] {
            let resp = who.api(method.clone(), &format!("/api/v1/webhooks/{id}"), body, &headers).await;
            assert_eq!((resp.status, resp.error_code()), (StatusCode::NOT_FOUND, "not_found".to_string()), "{method}");
        }
        assert_eq!(who.api(Method::GET, "/api/v1/webhooks", None, &headers).await.json()["items"], json!([]));
    }
    let page = intruder.post_form(&format!("/account/webhooks/{id}/delete"), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let mine = owner.api(Method::GET, &format!("/api/v1/webhooks/{id}"), None, &[]).await.json();
    assert_eq!(mine["enabled"], true, "untouched");
    let resp = owner.api(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, &[]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert_eq!(owner.api(Method::GET, "/api/v1/webhooks", None, &[]).await.json()["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c06_webhook_endpoints_are_404_to_another_account_sqlite() {
    c06_webhook_endpoints_are_404_to_another_account(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c06_webhook_endpoints_are_404_to_another_account_postgres() {
    c06_webhook_endpoints_are_404_to_another_account(TestBackend::Postgres).await;
}
