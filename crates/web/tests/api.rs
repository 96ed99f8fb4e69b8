//! The native API and pages, end to end through the router, on a real
//! database and blob directory.

mod common;

use axum::http::{Method, StatusCode};
use common::App;
use serde_json::json;
use store::testing::TestBackend;

const SQLITE: TestBackend = TestBackend::Sqlite;

#[tokio::test]
async fn c05_sign_up_below_thirteen_is_refused_with_a_clear_error() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    let today = domain::account::Date::from_epoch_ms(store::now_ms());
    let twelve = format!("{}-01-01", today.year - 12);
    let resp = client
        .post_form(
            "/signup",
            &[("name", "Kid"), ("email", "kid@example.org"), ("password", "a long enough passphrase"), ("birth_date", &twelve)],
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.text().contains(r#"data-code="age_requirement_not_met""#), "{}", resp.text());
    assert!(resp.text().contains("at least 13 years old"));
    assert!(app.state.store.user_by_email("kid@example.org").await.unwrap().is_none());
    assert!(!client.cookies.contains_key("atelier_session"));

    let thirty = format!("{}-01-01", today.year - 30);
    let resp = client
        .post_form(
            "/signup",
            &[("name", "Adult"), ("email", "adult@example.org"), ("password", "a long enough passphrase"), ("birth_date", &thirty)],
        )
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_up_errors_are_specific_and_write_nothing() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    let cases = [
        (("Ann", "ann@example.org", "short", "1990-01-01"), "password_too_short"),
        (("Ann", "not-an-email", "a long enough passphrase", "1990-01-01"), "invalid_email"),
        (("Ann", "ann@example.org", "a long enough passphrase", "1990-13-45"), "invalid_input"),
        (("", "ann@example.org", "a long enough passphrase", "1990-01-01"), "invalid_input"),
    ];
    for ((name, email, password, birth), code) in cases {
        let resp = client.post_form("/signup", &[("name", name), ("email", email), ("password", password), ("birth_date", birth)]).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{code}");
        assert!(resp.text().contains(&format!(r#"data-code="{code}""#)), "{code}: {}", resp.text());
    }
    assert!(app.state.store.user_by_email("ann@example.org").await.unwrap().is_none());
    let id = client.signed_up("ann@example.org").await;
    // A taken address is not an error: the answer is the one a new address
    // gets (no account enumeration), the account stays as it was and its
    // owner is told by mail instead.
    let mut other = app.client();
    let resp = other.sign_up("Ann Again", "ANN@example.org", "another passphrase").await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signup/sent".to_string()));
    assert!(!other.cookies.contains_key("atelier_session"));
    let mail = common::wait_for_mail(&app.state.store, "ann@example.org", "sign_up_existing").await;
    assert!(mail.body_text.contains("/reset-password?token="), "{}", mail.body_text);
    let ann = app.state.store.user_by_email("ann@example.org").await.unwrap().unwrap();
    assert_eq!((ann.id, ann.name), (id, "Test Person".to_string()));
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.get("/signin").await;
    let body = common::form_encode(&[
        ("name", "A"),
        ("email", "a@example.org"),
        ("password", "long enough pw"),
        ("birth_date", "1990-01-01"),
        ("_csrf", "forged"),
    ]);
    let resp = client.send(Method::POST, "/signup", Some("application/x-www-form-urlencoded"), body.into_bytes(), &[]).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.text().contains(r#"data-code="csrf_failed""#));
    assert!(app.state.store.user_by_email("a@example.org").await.unwrap().is_none());

    client.signed_up("b@example.org").await;
    let resp = client.send(Method::POST, "/api/v1/tasks", Some("application/json"), br#"{"prompt":"x"}"#.to_vec(), &[]).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.error_code(), "csrf_failed");
    assert_eq!(app.state.store.queued_count().await.unwrap(), 0);
}

#[tokio::test]
async fn sessions_are_http_only_rotated_at_sign_in_and_end_at_sign_out() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    let resp = client.verified_sign_up("sam@example.org", "sam's long passphrase").await;
    let cookie = resp.set_cookies().into_iter().find(|c| c.starts_with("atelier_session=")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
    let first = client.cookies["atelier_session"].clone();
    assert!(first.len() >= 22, "at least 128 bits");

    let resp = client.post_form("/signin", &[("email", "sam@example.org"), ("password", "wrong password!")]).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.text().contains(r#"data-code="invalid_credentials""#));
    let resp = client.post_form("/signin", &[("email", "nobody@example.org"), ("password", "wrong password!")]).await;
    assert!(resp.text().contains(r#"data-code="invalid_credentials""#), "same answer for unknown accounts");

    let resp = client.post_form("/signin", &[("email", "SAM@example.org"), ("password", "sam's long passphrase")]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let second = client.cookies["atelier_session"].clone();
    assert_ne!(first, second, "a new token at every sign-in");
    // The old token no longer opens a session.
    let mut stale = app.client();
    stale.cookies.insert("atelier_session".into(), first);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(stale.api(Method::GET, "/api/v1/account", None, &[]).await.error_code(), "unauthenticated");
    assert_eq!(client.api(Method::GET, "/api/v1/account", None, &[]).await.status, StatusCode::OK);

    let resp = client.post_form("/signout", &[]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert!(resp.headers.contains_key("clear-site-data"));
    let mut replay = app.client();
    replay.cookies.insert("atelier_session".into(), second);
    assert_eq!(replay.api(Method::GET, "/api/v1/account", None, &[]).await.error_code(), "unauthenticated");
}

#[tokio::test]
async fn c01_profile_edits_round_trip_and_change_the_language() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("lea@example.org").await;
    let resp = client.api(Method::PATCH, "/api/v1/account", Some(json!({"name": "Léa Martin", "locale": "fr"})), &[]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let account = client.api(Method::GET, "/api/v1/account", None, &[]).await.json();
    assert_eq!(account["name"], "Léa Martin");
    assert_eq!(account["locale"], "fr");
    let page = client.get("/generate").await.text();
    assert!(page.contains(r#"<html lang="fr">"#), "the account's language wins over the browser's");
    let resp = client.api(Method::PATCH, "/api/v1/account", Some(json!({"locale": "klingon"})), &[]).await;
    assert_eq!(resp.error_code(), "invalid_input");
    let resp = client.post_form("/account", &[("name", "Léa M."), ("locale", "zh-Hant")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains(r#"<html lang="zh-Hant">"#));
    assert_eq!(client.api(Method::GET, "/api/v1/account", None, &[]).await.json()["name"], "Léa M.");
}

#[tokio::test]
async fn pages_speak_the_browser_language_when_no_account_says_otherwise() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    for (accept, lang, phrase) in
        [("fr-FR,fr;q=0.9", "fr", "Créer"), ("zh-CN", "zh-Hans", "注册"), ("zh-TW", "zh-Hant", "註冊"), ("de", "en", "Create account")]
    {
        let resp = client.send(Method::GET, "/signup", None, Vec::new(), &[("accept-language", accept)]).await;
        let html = resp.text();
        assert!(html.contains(&format!(r#"<html lang="{lang}">"#)), "{accept}");
        assert!(html.contains(phrase), "{accept}: {phrase}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_stable_code_and_never_a_server_error() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("eve@example.org").await;
    let csrf = client.csrf();
    let raw = |body: &'static [u8]| (body.to_vec(), csrf.clone());
    let cases: Vec<(Vec<u8>, &str, StatusCode)> = vec![
        (raw(b"{not json").0, "invalid_json", StatusCode::BAD_REQUEST),
        (raw(b"").0, "invalid_json", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": 5}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "x", "colour": "red"}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "   "}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "x", "size": "999x999"}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "x", "style": "cubism"}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "x", "n": 0}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (raw(br#"{"prompt": "x", "n": -1}"#).0, "invalid_input", StatusCode::BAD_REQUEST),
        (format!(r#"{{"prompt": "{}"}}"#, "a".repeat(4001)).into_bytes(), "prompt_too_long", StatusCode::BAD_REQUEST),
        (format!(r#"{{"prompt": "{}"}}"#, "a".repeat(2 << 20)).into_bytes(), "payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (body, code, status) in cases {
        let resp = client.send(Method::POST, "/api/v1/tasks", Some("application/json"), body, &[("x-csrf-token", &csrf)]).await;
        assert_eq!((resp.status, resp.error_code()), (status, code.to_string()));
        assert!(resp.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(app.state.store.queued_count().await.unwrap(), 0, "nothing half-written");

    for (method, path, status, code) in [
        (Method::GET, "/api/v1/tasks/not-an-id", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/tasks/0192d3a8-0000-7000-8000-000000000000", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/assets/..%2F..%2Fetc%2Fpasswd", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/nothing-here", StatusCode::NOT_FOUND, "not_found"),
        (Method::PUT, "/api/v1/tasks", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::GET, "/api/v1/tasks?limit=0", StatusCode::BAD_REQUEST, "invalid_input"),
        (Method::GET, "/api/v1/tasks?limit=abc", StatusCode::BAD_REQUEST, "invalid_input"),
        (Method::GET, "/api/v1/tasks?before=zzz", StatusCode::BAD_REQUEST, "invalid_input"),
    ] {
        let resp = client.api(method.clone(), path, None, &[]).await;
        assert_eq!((resp.status, resp.error_code()), (status, code.to_string()), "{method} {path}");
    }
    let mut anonymous = app.client();
    let resp = anonymous.api(Method::GET, "/api/v1/tasks", None, &[]).await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::UNAUTHORIZED, "unauthenticated".to_string()));
}

#[tokio::test]
async fn idempotency_key_returns_the_first_task() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("ida@example.org").await;
    let body = json!({"prompt": "a red kite over dunes", "size": "256x256"});
    let first = client.api(Method::POST, "/api/v1/tasks", Some(body.clone()), &[("idempotency-key", "k-1")]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = client.api(Method::POST, "/api/v1/tasks", Some(body), &[("idempotency-key", "k-1")]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(first.json()["id"], again.json()["id"]);
    let other = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "something else"})), &[("idempotency-key", "k-1")]).await;
    assert_eq!((other.status, other.error_code()), (StatusCode::CONFLICT, "idempotency_conflict".to_string()));
    assert_eq!(app.state.store.queued_count().await.unwrap(), 1);
}

/// Decodes a PNG and returns its pixels and size.
fn decode(png: &[u8]) -> imaging::RgbaImage {
    imaging::decode_png(png).expect("a valid PNG")
}

#[tokio::test]
async fn c10_downloaded_output_is_exactly_what_the_engine_rendered() {
    use engines::{Engine, GenerateRequest, ProceduralEngine};
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("pix@example.org").await;
    let task = client.submit(json!({"prompt": "lighthouse at dusk", "size": "512x512", "style": "sunset", "seed": 42})).await;
    assert_eq!(app.run_tasks().await, 1);
    let done = client.api(Method::GET, &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()), None, &[]).await.json();
    assert_eq!(done["status"], "succeeded");
    let url = done["outputs"][0]["url"].as_str().unwrap().to_string();
    let resp = client.get(&url).await;
    assert_eq!(resp.headers["content-type"], "image/png");
    let served = decode(&resp.body);
    let request = GenerateRequest {
        prompt: "lighthouse at dusk".into(),
        width: 512,
        height: 512,
        style: "sunset".into(),
        seed: 42,
        n: 1,
        ..Default::default()
    };
    let rendered = ProceduralEngine.generate(&request, engines::Observer::silent()).await.unwrap();
    assert_eq!(served.dimensions(), (512, 512));
    assert!(served == rendered[0].image, "stored pixels differ from the engine's: something was added");
}

#[tokio::test]
async fn c30_deleting_an_image_removes_its_objects_from_disk_at_once() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("del@example.org").await;
    let task = client.submit(json!({"prompt": "three pears", "size": "256x256", "n": 2})).await;
    app.run_tasks().await;
    let done = client.api(Method::GET, &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()), None, &[]).await.json();
    let outputs = done["outputs"].as_array().unwrap().clone();
    assert_eq!(outputs.len(), 2);
    assert_eq!(app.object_files().len(), 4, "two outputs and two thumbnails on disk");
    let id = outputs[0]["id"].as_str().unwrap();
    let thumb = outputs[0]["thumbnail_url"].as_str().unwrap().to_string();
    let keys: Vec<_> =
        app.state.store.asset_family(&done["owner_id"].as_str().unwrap(), id).await.unwrap().into_iter().map(|a| a.storage_key).collect();
    assert_eq!(keys.len(), 2);

    let resp = client.api(Method::DELETE, &format!("/api/v1/assets/{id}"), None, &[]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    for key in &keys {
        assert!(!app.objects.path_of(key).unwrap().exists(), "{key} still on disk");
    }
    assert_eq!(app.object_files().len(), 2, "the other image is untouched");
    assert_eq!(client.get(&format!("/api/v1/assets/{id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get(&thumb).await.status, StatusCode::NOT_FOUND);
    let again = client.api(Method::DELETE, &format!("/api/v1/assets/{id}"), None, &[]).await;
    assert_eq!(again.error_code(), "not_found");

    // The page's delete form does the same.
    let other = outputs[1]["id"].as_str().unwrap();
    let resp = client.post_form(&format!("/images/{other}/delete"), &[]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/gallery".to_string()));
    assert!(app.object_files().is_empty());
}

#[tokio::test]
async fn c08_history_pages_newest_first_with_timelines() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("hist@example.org").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.submit(json!({"prompt": format!("study {i}"), "size": "256x256"})).await["id"].as_str().unwrap().to_string());
    }
    let canceled = client.api(Method::POST, &format!("/api/v1/tasks/{}/cancel", ids[4]), None, &[]).await;
    assert_eq!(canceled.json()["status"], "canceled");
    let twice = client.api(Method::POST, &format!("/api/v1/tasks/{}/cancel", ids[4]), None, &[]).await;
    assert_eq!((twice.status, twice.error_code()), (StatusCode::CONFLICT, "task_not_cancelable".to_string()));
    app.run_tasks().await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/tasks?limit=2".to_string();
    loop {
        let page = client.api(Method::GET, &path, None, &[]).await.json();
        for item in page["items"].as_array().unwrap() {
            let statuses: Vec<_> = item["timeline"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_string()).collect();
            let expected = if item["id"] == ids[4].as_str() { vec!["queued", "canceled"] } else { vec!["queued", "running", "succeeded"] };
            assert_eq!(statuses, expected);
            assert!(item["created_at"].as_i64().unwrap() <= item["finished_at"].as_i64().unwrap());
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/tasks?limit=2&before={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every task once, newest first");
}

#[tokio::test]
async fn task_events_stream_ends_with_the_finished_task() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("sse@example.org").await;
    let task = client.submit(json!({"prompt": "fireflies", "size": "256x256"})).await;
    let id = task["id"].as_str().unwrap().to_string();
    let worker = app.worker.clone();
    let runner = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        worker.run_one().await.unwrap()
    });
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.get(&format!("/api/v1/tasks/{id}/events")))
        .await
        .expect("stream ends");
    assert!(runner.await.unwrap());
    assert_eq!(resp.headers["content-type"], "text/event-stream");
    let text = resp.text();
    assert!(text.starts_with("event: status\ndata: {"), "{text}");
    assert!(text.contains(r#""status":"queued""#));
    let done = text.split("event: done\ndata: ").nth(1).expect("a done event").lines().next().unwrap();
    let done: serde_json::Value = serde_json::from_str(done).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_pages_walk_a_new_user_from_sign_up_to_gallery() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    assert!(client.get("/").await.text().contains(r#"href="/signup""#));
    assert_eq!(client.get("/gallery").await.location(), "/signin");
    client.signed_up("walk@example.org").await;
    let gallery = client.get("/gallery").await.text();
    assert!(gallery.contains(r#"class="empty""#));
    let form = client.get("/generate").await.text();
    assert!(form.contains(r#"name="prompt""#) && form.contains(r#"value="1536x1024""#) && form.contains(r#"value="noir""#));
    let resp = client.post_form("/generate", &[("prompt", "a <b>bold</b> fox"), ("size", "256x256"), ("style", "forest")]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let task_page = resp.location();
    let queued = client.get(&task_page).await.text();
    assert!(queued.contains("data-watch="), "a live page while queued");
    assert!(queued.contains("a &lt;b&gt;bold&lt;/b&gt; fox") && !queued.contains("<b>bold</b>"), "prompts are escaped");
    app.run_tasks().await;
    let finished = client.get(&task_page).await.text();
    assert!(!finished.contains("data-watch=") && finished.contains(r#"class="badge succeeded""#));
    let gallery = client.get("/gallery").await.text();
    let image_link = gallery.split(r#"href="/images/"#).nth(1).expect("one tile").split('"').next().unwrap().to_string();
    let detail = client.get(&format!("/images/{image_link}")).await.text();
    assert!(detail.contains("?download=1") && detail.contains("a &lt;b&gt;bold&lt;/b&gt; fox") && detail.contains("256 × 256"));
    let download = client.get(&format!("/api/v1/assets/{image_link}?download=1")).await;
    assert!(download.headers["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"atelier-"));
    assert_eq!(decode(&download.body).dimensions(), (256, 256));
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    for path in ["/", "/signin", "/api/v1/tasks", "/healthz", "/static/app.css", "/nope"] {
        let resp = client.get(path).await;
        assert_eq!(resp.headers["x-content-type-options"], "nosniff", "{path}");
        let csp = resp.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{path}");
    }
    assert_eq!(client.get("/api/v1/tasks").await.headers["cache-control"], "no-store");
    let html = client.get("/signin").await.text();
    let inline_handler = html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.chars().take_while(char::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(!html.contains("<script>") && !inline_handler, "no inline script or handlers");
}

#[tokio::test]
async fn ops_probes_answer() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    assert_eq!(client.get("/healthz").await.json()["status"], "ok");
    assert_eq!(client.get("/readyz").await.json()["status"], "ready");
    app.state.store.close().await;
    let resp = client.get("/readyz").await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable".to_string()));
}
