//! The OpenAI-compatible Images API through the router: error shapes and
//! params, streaming events, signed links on the public URL, the account
//! page's link to API keys. (The official SDK drives the real binary in
//! crates/atelier/tests/openai.rs.)

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use common::{App, Client, Resp};
use serde_json::{json, Value};
use store::testing::TestBackend;
use tokio::sync::watch;

const SQLITE: TestBackend = TestBackend::Sqlite;

/// An app whose worker runs in the background (the `/v1` calls wait for
/// their task), stopped when dropped.
struct Running {
    app: App,
    _stop: watch::Sender<bool>,
}

async fn running(config: web::WebConfig) -> Running {
    let app = App::with_config(SQLITE, config).await;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(Arc::clone(&app.worker).run(stopped));
    Running { app, _stop: stop }
}

/// A signed-up account and one of its API keys.
async fn account_with_key(app: &App, email: &str) -> (Client, String) {
    let mut client = app.client();
    client.signed_up(email).await;
    let resp = client.api(Method::POST, "/api/v1/api-keys", Some(json!({ "name": "test" })), &[]).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let secret = resp.json()["secret"].as_str().unwrap().to_string();
    (client, secret)
}

/// A request with only a bearer key (no cookies, no CSRF token).
async fn call(app: &App, method: Method, path: &str, key: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
    let auth = format!("Bearer {key}");
    app.client().send(method, path, content_type, body, &[("authorization", &auth)]).await
}

async fn generate(app: &App, key: &str, body: Value) -> Resp {
    call(app, Method::POST, "/v1/images/generations", key, Some("application/json"), serde_json::to_vec(&body).unwrap()).await
}

const BOUNDARY: &str = "atelier-test-boundary";

/// A multipart form as the openai SDK sends it.
fn multipart(files: &[(&str, &[u8])], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.png\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    for (name, value) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn form(app: &App, path: &str, key: &str, files: &[(&str, &[u8])], fields: &[(&str, &str)]) -> Resp {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    call(app, Method::POST, path, key, Some(&ct), multipart(files, fields)).await
}

fn png(w: u32, h: u32) -> Vec<u8> {
    imaging::encode_png(&imaging::RgbaImage::from_pixel(w, h, imaging::Rgba([40, 90, 200, 255]))).unwrap().bytes
}

/// Asserts OpenAI's error shape and returns `(status, type, param, code)`.
fn openai_error(resp: &Resp) -> (u16, String, Option<String>, String) {
    let body = resp.json();
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let text = |v: &Value| v.as_str().map(str::to_string);
    (resp.status.as_u16(), text(&e["type"]).unwrap(), text(&e["param"]), text(&e["code"]).unwrap())
}

/// The events of a server-sent event stream: `(event, data)`.
fn sse_events(resp: &Resp) -> Vec<(String, Value)> {
    let ct = resp.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/event-stream"), "{ct}: {}", resp.text());
    resp.text()
        .split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some((event?, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

fn decoded(b64: &Value) -> imaging::RgbaImage {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
    imaging::decode(&bytes, &imaging::DecodeLimits::default()).unwrap().image
}

#[tokio::test]
async fn v1_errors_have_openai_shape_status_and_param() {
    let app = App::new(SQLITE).await;
    let (_alice, key) = account_with_key(&app, "alice@example.org").await;

    // No key, an unknown key, a malformed header: 401 invalid_api_key.
    let resp = app.client().send(Method::GET, "/v1/models", None, Vec::new(), &[]).await;
    assert_eq!(openai_error(&resp), (401, "authentication_error".into(), None, "invalid_api_key".into()));
    for bad in ["atl_nope", "", "sk-something"] {
        let resp = call(&app, Method::GET, "/v1/models", bad, None, Vec::new()).await;
        assert_eq!(openai_error(&resp), (401, "authentication_error".into(), None, "invalid_api_key".into()), "{bad}");
    }
    // A session cookie is not an API key.
    let mut browser = app.client();
    browser.signed_up("browser@example.org").await;
    let resp = browser.get("/v1/models").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);

    // Unknown paths and bodies that are not JSON, in the same shape.
    let resp = call(&app, Method::GET, "/v1/images/nothing-here", &key, None, Vec::new()).await;
    assert_eq!(openai_error(&resp).0, 404);
    assert_eq!(openai_error(&resp).1, "not_found_error");
    let resp = call(&app, Method::POST, "/v1/images/generations", &key, Some("application/json"), b"{not json".to_vec()).await;
    assert_eq!(openai_error(&resp).0, 400);

    // Each bad parameter names itself; nothing is queued.
    let long = "a".repeat(32_001);
    for (body, param, code) in [
        (json!({ "prompt": "x", "n": 11 }), "n", "invalid_input"),
        (json!({ "prompt": "x", "n": 0 }), "n", "invalid_input"),
        (json!({ "prompt": long, }), "prompt", "prompt_too_long"),
        (json!({ "prompt": "  " }), "prompt", "invalid_input"),
        (json!({ "prompt": "x", "size": "1000x1000" }), "size", "invalid_input"),
        (json!({ "prompt": "x", "size": "3000x800" }), "size", "invalid_input"),
        (json!({ "prompt": "x", "size": "4000x1008" }), "size", "invalid_input"),
        (json!({ "prompt": "x", "size": "1280x720", "model": "dall-e-3" }), "size", "invalid_input"),
        (json!({ "prompt": "x", "output_format": "jpeg", "output_compression": 101 }), "output_compression", "invalid_input"),
        (json!({ "prompt": "x", "output_compression": 50 }), "output_compression", "invalid_input"),
        (json!({ "prompt": "x", "background": "transparent", "output_format": "jpeg" }), "background", "invalid_input"),
        (json!({ "prompt": "x", "quality": "ultra" }), "quality", "invalid_input"),
        (json!({ "prompt": "x", "stream": true, "partial_images": 4 }), "partial_images", "invalid_input"),
        (json!({ "prompt": "x", "response_format": "gif" }), "response_format", "invalid_input"),
    ] {
        let resp = generate(&app, &key, body.clone()).await;
        assert_eq!(openai_error(&resp), (400, "invalid_request_error".into(), Some(param.into()), code.into()), "{body}");
    }

    // Edits and variations: the same rules (not the web UI's n and prompt
    // limits), their own params.
    let image = png(64, 64);
    let edits: Vec<(Vec<(&str, &str)>, &str, &str)> = vec![
        (vec![("prompt", "x"), ("n", "11")], "n", "invalid_input"),
        (vec![("prompt", long.as_str())], "prompt", "prompt_too_long"),
        (vec![("prompt", "x"), ("size", "1000x1000")], "size", "invalid_input"),
        (vec![("prompt", "x"), ("size", "3840x2176")], "size", "invalid_input"),
        (vec![("prompt", "x"), ("n", "two")], "n", "invalid_input"),
        (vec![("prompt", "x"), ("stream", "yes")], "stream", "invalid_input"),
        (vec![("prompt", "x"), ("stream", "true"), ("partial_images", "-1")], "partial_images", "invalid_input"),
    ];
    for (fields, param, code) in edits {
        let resp = form(&app, "/v1/images/edits", &key, &[("image", &image)], &fields).await;
        assert_eq!(openai_error(&resp), (400, "invalid_request_error".into(), Some(param.into()), code.into()), "{fields:?}");
    }
    let resp = form(&app, "/v1/images/edits", &key, &[], &[("prompt", "x")]).await;
    assert_eq!(openai_error(&resp).2.as_deref(), Some("image"));
    let resp = form(&app, "/v1/images/edits", &key, &[("image", b"not an image")], &[("prompt", "x")]).await;
    assert_eq!(openai_error(&resp).2.as_deref(), Some("image"));
    let resp = form(&app, "/v1/images/edits", &key, &[("image", &image), ("mask", b"GIF89a")], &[("prompt", "x")]).await;
    assert_eq!(openai_error(&resp).2.as_deref(), Some("mask"));
    for (fields, param) in [(vec![("n", "11")], "n"), (vec![("stream", "true")], "stream"), (vec![("size", "1000x1000")], "size")] {
        let resp = form(&app, "/v1/images/variations", &key, &[("image", &image)], &fields).await;
        assert_eq!(openai_error(&resp), (400, "invalid_request_error".into(), Some(param.into()), "invalid_input".into()), "{fields:?}");
    }
    assert_eq!(app.run_tasks().await, 0, "no refused request was queued");
}

#[tokio::test]
async fn v1_other_accounts_and_revoked_keys_see_nothing() {
    let run = running(web::WebConfig::default()).await;
    let app = &run.app;
    let (mut alice, key) = account_with_key(app, "alice@example.org").await;
    let (_bob, bob_key) = account_with_key(app, "bob@example.org").await;

    let resp = generate(app, &key, json!({ "prompt": "a lighthouse", "size": "256x256" })).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let task = resp.headers.get("x-atelier-task").unwrap().to_str().unwrap().to_string();
    let asset =
        alice.api(Method::GET, &format!("/api/v1/tasks/{task}"), None, &[]).await.json()["outputs"][0]["id"].as_str().unwrap().to_string();

    // Another account's key: not found, never forbidden (nothing leaks).
    for path in [format!("/api/v1/tasks/{task}"), format!("/api/v1/assets/{asset}")] {
        assert_eq!(call(app, Method::GET, &path, &key, None, Vec::new()).await.status, StatusCode::OK, "{path}");
        let resp = call(app, Method::GET, &path, &bob_key, None, Vec::new()).await;
        assert_eq!((resp.status, resp.error_code()), (StatusCode::NOT_FOUND, "not_found".to_string()), "{path}");
    }
    // Nor can it reuse the owner's Idempotency-Key to read the result.
    let replay = |k: &str| {
        let auth = format!("Bearer {k}");
        let body = serde_json::to_vec(&json!({ "prompt": "a lighthouse", "size": "256x256" })).unwrap();
        async move {
            app.client()
                .send(
                    Method::POST,
                    "/v1/images/generations",
                    Some("application/json"),
                    body,
                    &[("authorization", &auth), ("idempotency-key", "k-1")],
                )
                .await
        }
    };
    let first = replay(&key).await;
    let theirs = replay(&bob_key).await;
    assert_ne!(first.headers.get("x-atelier-task"), theirs.headers.get("x-atelier-task"));
    // A repeat with another body under the same key is a conflict.
    let auth = format!("Bearer {key}");
    let resp = app
        .client()
        .send(
            Method::POST,
            "/v1/images/generations",
            Some("application/json"),
            serde_json::to_vec(&json!({ "prompt": "something else" })).unwrap(),
            &[("authorization", &auth), ("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(openai_error(&resp).0, 409);
    assert_eq!(openai_error(&resp).1, "conflict_error");

    // A revoked key fails at once.
    let keys = alice.api(Method::GET, "/api/v1/api-keys", None, &[]).await.json();
    let id = keys["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(alice.api(Method::DELETE, &format!("/api/v1/api-keys/{id}"), None, &[]).await.status, StatusCode::OK);
    let resp = generate(app, &key, json!({ "prompt": "x" })).await;
    assert_eq!(openai_error(&resp), (401, "authentication_error".into(), None, "invalid_api_key".into()));
}

#[tokio::test]
async fn v1_signed_links_are_built_on_the_public_url_whatever_the_host_header() {
    let run = running(web::WebConfig::default()).await;
    let app = &run.app;
    let public = app.state.config.public_url.clone();
    let (_alice, key) = account_with_key(app, "alice@example.org").await;
    let auth = format!("Bearer {key}");
    let body = serde_json::to_vec(&json!({ "prompt": "a harbour", "size": "256x256", "response_format": "url" })).unwrap();
    let resp = app
        .client()
        .send(
            Method::POST,
            "/v1/images/generations",
            Some("application/json"),
            body,
            &[("authorization", &auth), ("host", "attacker.example"), ("x-forwarded-host", "attacker.example")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let url = resp.json()["data"][0]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{public}/v1/files/")), "{url}");
    assert!(!url.contains("attacker"), "{url}");
    // The link works without a key or session.
    let path = url.trim_start_matches(&public);
    let resp = app.client().get(path).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers.get("content-type").unwrap(), "image/png");
}

#[tokio::test]
async fn v1_streaming_sends_partial_images_then_one_completed_event() {
    let run = running(web::WebConfig::default()).await;
    let app = &run.app;
    let (mut alice, key) = account_with_key(app, "alice@example.org").await;

    let resp = generate(
        app,
        &key,
        json!({ "prompt": "a valley at dawn", "size": "320x192", "stream": true, "partial_images": 2, "quality": "low" }),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let events = sse_events(&resp);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"], "{names:?}");
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!((data["size"].as_str(), data["output_format"].as_str()), (Some("320x192"), Some("png")));
        assert_eq!((data["quality"].as_str(), data["background"].as_str()), (Some("low"), Some("opaque")));
        assert!(data["created_at"].as_i64().unwrap() > 1_600_000_000);
        assert_eq!(decoded(&data["b64_json"]).dimensions(), (320, 192));
        if i < 2 {
            assert_eq!(data["partial_image_index"], i);
            assert!(data.get("usage").is_none());
        } else {
            assert!(data["usage"]["total_tokens"].as_i64().unwrap() > 0, "{data}");
        }
    }
    // The final image is the stored output; the previews are not stored.
    let task = resp.headers.get("x-atelier-task").unwrap().to_str().unwrap().to_string();
    let view = alice.api(Method::GET, &format!("/api/v1/tasks/{task}"), None, &[]).await.json();
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["outputs"].as_array().unwrap().len(), 1, "{view}");

    // Edits stream as image_edit.*, at the source's size.
    let image = png(96, 64);
    let resp =
        form(app, "/v1/images/edits", &key, &[("image", &image)], &[("prompt", "a red kite"), ("stream", "true"), ("partial_images", "1")])
            .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let events = sse_events(&resp);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["image_edit.partial_image", "image_edit.completed"]);
    assert_eq!(events[1].1["size"], "96x64");
    assert_eq!(decoded(&events[1].1["b64_json"]).dimensions(), (96, 64));

    // stream without partial images: one completed event.
    let resp = generate(app, &key, json!({ "prompt": "a pier", "size": "256x256", "stream": true })).await;
    let names: Vec<String> = sse_events(&resp).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["image_generation.completed"]);
}

#[tokio::test]
async fn v1_edits_and_variations_take_openai_limits_not_the_web_ui_ones() {
    let run = running(web::WebConfig::default()).await;
    let app = &run.app;
    let (_alice, key) = account_with_key(app, "alice@example.org").await;
    assert!(app.state.config.limits.max_n < 6 && app.state.config.limits.prompt_max_chars < 5000);
    let image = png(64, 64);
    let prompt = "a quiet harbour ".repeat(400);
    let resp = form(
        app,
        "/v1/images/edits",
        &key,
        &[("image", &image), ("image[]", &image)],
        &[("prompt", prompt.as_str()), ("n", "6"), ("size", "320x192")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 6);
    assert_eq!(body["size"], "320x192");
    assert_eq!(decoded(&body["data"][5]["b64_json"]).dimensions(), (320, 192));

    let resp = form(app, "/v1/images/variations", &key, &[("image", &image)], &[("n", "5"), ("size", "144x432")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["data"].as_array().unwrap().len(), 5);
    assert_eq!(resp.json()["size"], "144x432");
}

#[tokio::test]
async fn account_page_links_to_api_keys() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("alice@example.org").await;
    let page = client.get("/account").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(r#"href="/account/api-keys""#), "{}", page.text());
    assert_eq!(client.get("/account/api-keys").await.status, StatusCode::OK);
}
