//! The OpenAI-compatible Images API against the real binary, driven by the
//! official `openai` Python package (installed by .ci/run), plus API keys
//! created in the account page: shown once, bearer-only, revocable at once.

mod common;

use std::time::Duration;

use common::{Browser, Server};
use serde_json::{json, Value};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openai_images.py");

async fn create_key(browser: &mut Browser, name: &str) -> String {
    let (status, key) = browser.json(reqwest::Method::POST, "/api/v1/api-keys", Some(json!({ "name": name }))).await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("atl_") && secret.starts_with(key["prefix"].as_str().unwrap()), "{key}");
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_generates_with_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let mut alice = Browser::new(&server);
    alice.sign_up("alice@example.com", "correct horse battery").await;
    let mut bob = Browser::new(&server);
    bob.sign_up("bob@example.com", "correct horse battery").await;

    // The page creates a key and shows it once; the list shows only the prefix.
    let page = alice.post_form("/account/api-keys", &[("name", "laptop")]).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let shown = html.split("id=\"new-api-key\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert!(shown.starts_with("atl_"), "{html}");
    let again = alice.get("/account/api-keys").await.text().await.unwrap();
    assert!(!again.contains(&shown) && again.contains(&shown[..12]), "the secret is shown only once");

    let key = create_key(&mut alice, "sdk").await;
    let other = create_key(&mut bob, "bob's").await;

    let run = tokio::process::Command::new("python3").arg(FIXTURE).arg(&server.url).arg(&key).arg(&other).output();
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the SDK script finishes").expect("python3 runs");
    assert!(
        output.status.success(),
        "openai SDK script failed (is Python's openai package installed?):\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.logs().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    // Every API call is a task in the owner's history; the repeated
    // Idempotency-Key made only one.
    let (_, tasks) = alice.json(reqwest::Method::GET, "/api/v1/tasks?limit=100", None).await;
    let items = tasks["items"].as_array().unwrap();
    // b64, url, one idempotent task, two edit inputs, the edit, two
    // streamed (a generation and an edit), the variation.
    assert_eq!(items.len(), 9, "{tasks}");
    for id in out["tasks"].as_array().unwrap() {
        assert!(items.iter().any(|t| &t["id"] == id), "{id} is in the history");
    }
    let idem = out["idempotent_task"].as_str().unwrap();
    assert_eq!(items.iter().filter(|t| t["id"] == idem).count(), 1);
    let b64_task = items.iter().find(|t| t["id"] == out["b64_task"]).unwrap();
    assert_eq!(b64_task["model"], "gpt-image-2");
    let asset = b64_task["outputs"][0]["id"].as_str().unwrap().to_string();

    // Native endpoints take the bearer key (no CSRF token); another
    // account's key gets 404, a bad one 401.
    let http = reqwest::Client::new();
    let get = |bearer: &str| http.get(format!("{}/api/v1/assets/{asset}", server.url)).bearer_auth(bearer.to_string()).send();
    assert_eq!(get(&key).await.unwrap().status(), 200);
    assert_eq!(get(&other).await.unwrap().status(), 404);
    assert_eq!(get("atl_nope").await.unwrap().status(), 401);
    let task_of_other = http.get(format!("{}/api/v1/tasks/{idem}", server.url)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(task_of_other.status(), 404);

    // Revoked → 401 at once, in OpenAI's error shape on /v1.
    let (_, keys) = alice.json(reqwest::Method::GET, "/api/v1/api-keys", None).await;
    let sdk = keys["items"].as_array().unwrap().iter().find(|k| k["name"] == "sdk").unwrap().clone();
    assert!(sdk["last_used_at"].as_i64().is_some(), "{sdk}");
    assert!(sdk.get("secret").is_none() && sdk.get("secret_hash").is_none());
    let (status, _) = alice.json(reqwest::Method::DELETE, &format!("/api/v1/api-keys/{}", sdk["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200);
    let models = http.get(format!("{}/v1/models", server.url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(models.status(), 401);
    let body: Value = models.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(get(&key).await.unwrap().status(), 401);

    // The OpenAPI document describes the surface, without a session.
    let spec: Value = http.get(format!("{}/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in ["/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models", "/api/v1/api-keys"] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }

    // Both key events are in the audit trail.
    let store = common::open_store(&server.data_dir, None, &server.data_dir.join("master.key")).await;
    let user = store.user_by_email("alice@example.com").await.unwrap().unwrap();
    let trail = store.audit_entries(Some(&user.id), None, 100).await.unwrap();
    let actions: Vec<_> = trail.items.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"api_key_created") && actions.contains(&"api_key_revoked"), "{actions:?}");
    store.close().await;
}
