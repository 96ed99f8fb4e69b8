//! Content rules (C40), reports and moderator actions (C41), the admin
//! console's access rules, and request rate limits (C18), through the router.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{wait_for_mail, App, Client, Resp};
use domain::ids::to_hex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::testing::TestBackend;
use web::{Cidr, ExternalModeration, ModerationConfig, WebConfig};

const RULES: &str = r#"
allow = ["zorblax free"]

[[category]]
name = "test_block"
action = "block"
terms = ["zorblax"]

[[category]]
name = "test_review"
action = "review"
patterns = ['\bgrim\w*lock\b']
"#;

fn config(retain: bool, external: Option<ExternalModeration>) -> WebConfig {
    let rules = Arc::new(web::parse_rules(RULES).unwrap());
    let billing = billing::BillingConfig { enabled: true, signup_grant: 10, ..Default::default() };
    WebConfig { billing, moderation: ModerationConfig { rules, external, retain_review_prompts: retain }, ..WebConfig::default() }
}

async fn key_of(client: &mut Client) -> String {
    let resp = client.api(Method::POST, "/api/v1/api-keys", Some(json!({ "name": "test" })), &[]).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    resp.json()["secret"].as_str().unwrap().to_string()
}

async fn with_key(app: &App, method: Method, path: &str, key: &str, body: Option<Value>) -> Resp {
    let auth = format!("Bearer {key}");
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    app.client().send(method, path, Some("application/json"), bytes, &[("authorization", &auth)]).await
}

async fn balance(client: &mut Client) -> Value {
    client.api(Method::GET, "/api/v1/billing", None, &[]).await.json()["balance"].clone()
}

fn png() -> Vec<u8> {
    imaging::encode_png(&imaging::RgbaImage::from_pixel(8, 8, imaging::Rgba([40, 90, 200, 255]))).unwrap().bytes
}

async fn upload(client: &mut Client) -> Resp {
    let csrf = client.csrf();
    client.send(Method::POST, "/api/v1/uploads", Some("image/png"), png(), &[("x-csrf-token", &csrf)]).await
}

#[tokio::test]
async fn c40_a_blocked_prompt_is_refused_on_every_surface_and_charges_nothing() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = App::with_config(backend, config(false, None)).await;
        let mut client = app.client();
        let user = client.signed_up("rules@example.org").await;
        let key = key_of(&mut client).await;
        assert_eq!(balance(&mut client).await, json!({"available": 10, "held": 0, "debt": 0}));
        let prompt = "A Zorblax, at dawn";

        // The web UI's generate form.
        let resp = client.post_form("/generate", &[("prompt", prompt), ("size", "1024x1024")]).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        assert!(resp.text().contains(r#"data-code="content_policy_violation""#), "{}", resp.text());
        // The native API names the category.
        let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": prompt})), &[]).await;
        assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "content_policy_violation".to_string()));
        assert!(resp.json()["error"]["message"].as_str().unwrap().contains("test_block"));
        // An image action with a prompt (an edit of an upload).
        let upload_id = upload(&mut client).await.json()["id"].as_str().unwrap().to_string();
        let resp = client.api(Method::POST, &format!("/api/v1/images/{upload_id}/edits"), Some(json!({"prompt": prompt})), &[]).await;
        assert_eq!(resp.error_code(), "content_policy_violation");
        // The Images API, in OpenAI's shape.
        let resp = with_key(&app, Method::POST, "/v1/images/generations", &key, Some(json!({"prompt": prompt}))).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        let error = &resp.json()["error"];
        assert_eq!((error["code"].as_str(), error["type"].as_str()), (Some("moderation_blocked"), Some("invalid_request_error")));
        assert!(error["message"].as_str().unwrap().contains("test_block"));

        assert_eq!(balance(&mut client).await, json!({"available": 10, "held": 0, "debt": 0}), "nothing charged");
        assert!(client.api(Method::GET, "/api/v1/tasks", None, &[]).await.json()["items"].as_array().unwrap().is_empty());
        let events = app.state.store.moderation_events(None, Some(&user), 50).await.unwrap();
        assert_eq!(events.len(), 4);
        let hash = to_hex(&Sha256::digest(prompt.as_bytes()));
        for e in &events {
            assert_eq!((e.rule_id.as_str(), e.status.as_str(), e.prompt.as_deref()), ("test_block/term/0", "blocked", None));
            assert_eq!(e.prompt_hash, hash);
        }

        // The allow-list and a review rule: both go through.
        client.submit(json!({"prompt": "a Zorblax-free meadow"})).await;
        client.submit(json!({"prompt": "the grimlock gate"})).await;
        let open = app.state.store.moderation_events(Some("open"), None, 10).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].category.as_str(), open[0].prompt.as_deref()), ("test_review", None), "text kept only with retention");
    }
}

#[tokio::test]
async fn c40_review_retention_keeps_the_prompt_for_moderators() {
    let app = App::with_config(TestBackend::Sqlite, config(true, None)).await;
    let mut client = app.client();
    client.signed_up("kept@example.org").await;
    client.submit(json!({"prompt": "grimlock at noon"})).await;
    let mut moderator = app.client();
    let id = moderator.signed_up("mod@example.org").await;
    app.state.store.set_role(&id, "moderator").await.unwrap();
    let page = moderator.get("/admin/moderation").await;
    assert!(page.text().contains("grimlock at noon"), "{}", page.text());
    let event = &moderator.api(Method::GET, "/api/v1/admin/moderation/events", None, &[]).await.json()["items"][0];
    let path = format!("/api/v1/admin/moderation/events/{}/reviewed", event["id"].as_str().unwrap());
    assert_eq!(moderator.api(Method::POST, &path, None, &[]).await.status, StatusCode::NO_CONTENT);
    assert!(app.state.store.moderation_events(Some("open"), None, 10).await.unwrap().is_empty());
}

/// A local server speaking OpenAI's `/v1/moderations`: text containing
/// "flagme" and every image are flagged as `violence`.
async fn moderation_server() -> String {
    async fn moderate(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        let flagged = match &body["input"] {
            Value::String(text) => text.contains("flagme"),
            Value::Array(parts) => parts.iter().any(|p| p["type"] == "image_url"),
            _ => false,
        };
        assert_eq!(body["model"], "omni-moderation-latest");
        axum::Json(json!({
            "id": "modr-1",
            "model": "omni-moderation-latest",
            "results": [{ "flagged": flagged, "categories": { "sexual": false, "violence": flagged }, "category_scores": {} }]
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/moderations", axum::routing::post(moderate));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn external(url: String, fail_open: bool) -> Option<ExternalModeration> {
    Some(ExternalModeration {
        url,
        api_key: Some("sk-test".into()),
        model: "omni-moderation-latest".into(),
        fail_open,
        timeout: std::time::Duration::from_secs(5),
    })
}

#[tokio::test]
async fn c40_the_external_moderation_endpoint_checks_prompts_and_uploads() {
    let app = App::with_config(TestBackend::Sqlite, config(false, external(moderation_server().await, false))).await;
    let mut client = app.client();
    let user = client.signed_up("ext@example.org").await;
    let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "please flagme"})), &[]).await;
    assert_eq!(resp.error_code(), "content_policy_violation");
    assert!(resp.json()["error"]["message"].as_str().unwrap().contains("violence"));
    client.submit(json!({"prompt": "a quiet harbour"})).await;
    let resp = upload(&mut client).await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "content_policy_violation".to_string()));
    assert!(app.object_files().is_empty(), "a refused upload stores nothing");
    let events = app.state.store.moderation_events(None, Some(&user), 10).await.unwrap();
    let mut seen: Vec<(String, String)> = events.iter().map(|e| (e.surface.clone(), e.rule_id.clone())).collect();
    seen.sort();
    assert_eq!(seen, [("prompt".to_string(), "external/violence".to_string()), ("upload".to_string(), "external/violence".to_string())]);
    assert_eq!(balance(&mut client).await["available"], 8, "only the allowed task was charged");

    // The endpoint down: fail-closed refuses, fail-open lets through.
    let down = "http://127.0.0.1:9/v1".to_string();
    for (fail_open, expected) in [(false, StatusCode::SERVICE_UNAVAILABLE), (true, StatusCode::ACCEPTED)] {
        let app = App::with_config(TestBackend::Sqlite, config(false, external(down.clone(), fail_open))).await;
        let mut client = app.client();
        client.signed_up("down@example.org").await;
        let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "a quiet harbour"})), &[]).await;
        assert_eq!(resp.status, expected, "fail_open = {fail_open}: {}", resp.text());
    }
}

#[tokio::test]
async fn c41_report_remove_suspend_and_reinstate() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = App::with_config(backend, config(false, None)).await;
        let mut owner = app.client();
        let owner_id = owner.signed_up("owner@example.org").await;
        let key = key_of(&mut owner).await;
        let task = owner.submit(json!({"prompt": "a red kite"})).await;
        app.run_tasks().await;
        let view = owner.api(Method::GET, &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()), None, &[]).await.json();
        let asset = view["outputs"][0]["id"].as_str().unwrap().to_string();
        let files_of = |app: &App| app.object_files().into_iter().filter(|p| p.to_string_lossy().contains(&asset)).count();
        assert_eq!(files_of(&app), 1);

        let mut reporter = app.client();
        reporter.signed_up("reporter@example.org").await;
        let resp = reporter.api(Method::POST, "/api/v1/reports", Some(json!({"asset_id": asset, "reason": "not mine to see"})), &[]).await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
        let report = resp.json()["id"].as_str().unwrap().to_string();
        let resp = reporter.api(Method::POST, "/api/v1/reports", Some(json!({"asset_id": asset, "reason": ""})), &[]).await;
        assert_eq!(resp.error_code(), "invalid_input");

        let mut moderator = app.client();
        let moderator_id = moderator.signed_up("mod@example.org").await;
        app.state.store.set_role(&moderator_id, "moderator").await.unwrap();
        assert!(moderator.get("/admin/moderation").await.text().contains(&report));
        let image = moderator.get(&format!("/admin/reports/{report}/image")).await;
        assert_eq!((image.status, image.headers["content-type"].to_str().unwrap()), (StatusCode::OK, "image/png"));

        let act = |action: &str| json!({ "action": action });
        let path = format!("/api/v1/admin/reports/{report}/actions");
        let resp = moderator.api(Method::POST, &path, Some(act("remove")), &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(files_of(&app), 0, "the object is gone from the blob store");
        assert_eq!(owner.get(&format!("/api/v1/assets/{asset}")).await.status, StatusCode::NOT_FOUND);
        wait_for_mail(&app.state.store, "owner@example.org", "content_removed").await;

        // Two queued tasks hold 4 credits; a suspension cancels and releases them.
        owner.submit(json!({"prompt": "one"})).await;
        owner.submit(json!({"prompt": "two"})).await;
        assert_eq!(balance(&mut owner).await, json!({"available": 4, "held": 4, "debt": 0}));
        let resp = moderator.api(Method::POST, &path, Some(act("suspend")), &[]).await;
        assert_eq!(resp.json()["suspension"], json!({"sessions_ended": 1, "tasks_canceled": 2}));
        assert_eq!(owner.api(Method::GET, "/api/v1/account", None, &[]).await.status, StatusCode::UNAUTHORIZED, "session ended");
        assert_eq!(with_key(&app, Method::GET, "/v1/models", &key, None).await.status, StatusCode::UNAUTHORIZED, "API key refused");
        let mut again = app.client();
        let resp = again.post_form("/signin", &[("email", "owner@example.org"), ("password", "a long enough passphrase")]).await;
        assert_ne!(resp.status, StatusCode::SEE_OTHER, "cannot sign in");
        let b = app.state.store.balance(&owner_id).await.unwrap();
        assert_eq!((b.available, b.held), (8, 0), "holds released");

        let resp = moderator.api(Method::POST, &path, Some(act("reinstate")), &[]).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(with_key(&app, Method::GET, "/v1/models", &key, None).await.status, StatusCode::OK);
        let resp = again.post_form("/signin", &[("email", "owner@example.org"), ("password", "a long enough passphrase")]).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());

        let resp = moderator.api(Method::POST, &path, Some(act("authorities")), &[]).await;
        assert_eq!(resp.error_code(), "invalid_input", "a reference is required");
        let resp = moderator.api(Method::POST, &path, Some(json!({"action": "authorities", "reference": "NCMEC 1234"})), &[]).await;
        assert_eq!(resp.status, StatusCode::OK);

        let audit = app.state.store.audit_entries(Some(&owner_id), None, 100).await.unwrap().items;
        let by_moderator: Vec<&str> =
            audit.iter().filter(|e| e.actor_id.as_deref() == Some(moderator_id.as_str())).map(|e| e.action.as_str()).rev().collect();
        assert_eq!(
            by_moderator,
            [
                "reported_image_viewed",
                "report_remove",
                "account_suspended",
                "report_suspend",
                "account_reinstated",
                "report_reinstate",
                "report_authorities"
            ]
        );
        assert!(audit.iter().any(|e| e.detail.as_deref() == Some(&format!("report {report}: NCMEC 1234"))));
    }
}

#[tokio::test]
async fn c41_admins_act_on_accounts_and_roles_and_closing_purges() {
    let app = App::with_config(TestBackend::Sqlite, config(false, None)).await;
    let mut admin = app.client();
    let admin_id = admin.signed_up("admin@example.org").await;
    app.state.store.set_role(&admin_id, "admin").await.unwrap();
    let mut member = app.client();
    let member_id = member.signed_up("member@example.org").await;
    member.submit(json!({"prompt": "a heron"})).await;
    app.run_tasks().await;

    let found = admin.api(Method::GET, "/api/v1/admin/users?q=MEMBER", None, &[]).await.json();
    assert_eq!(found["items"][0]["user"]["id"], member_id.as_str());
    assert_eq!(found["items"][0]["available"], 8);
    let detail = admin.api(Method::GET, &format!("/api/v1/admin/users/{member_id}"), None, &[]).await.json();
    assert_eq!((detail["assets"].as_i64(), detail["tasks"][0]["status"].as_str()), (Some(1), Some("succeeded")));
    assert!(detail["tasks"][0].get("prompt").is_none(), "prompts stay out of the console");
    let page = admin.get(&format!("/admin/users/{member_id}")).await.text();
    assert!(page.contains("member@example.org") && page.contains(r#"action="/admin/credits""#), "{page}");
    let stats = admin.api(Method::GET, "/api/v1/admin/stats", None, &[]).await.json();
    assert_eq!(stats["tasks"], json!([{"status": "succeeded", "model": "atelier-procedural-v0", "count": 1}]));
    let provider = &stats["providers"][0];
    assert_eq!(
        (provider["state"].as_str(), provider["succeeded"].as_u64(), provider["in_flight"].as_u64()),
        (Some("closed"), Some(1), Some(0))
    );
    assert!(admin.get("/admin").await.text().contains(r#"class="stats providers""#));
    assert!(admin.get("/admin").await.text().contains(r#"href="/admin/requests""#));

    let resp = admin.api(Method::POST, &format!("/api/v1/admin/users/{member_id}/role"), Some(json!({"role": "moderator"})), &[]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let audit = app.state.store.audit_entries(Some(&member_id), None, 50).await.unwrap().items;
    assert!(audit.iter().any(|e| e.action == "role_changed" && e.detail.as_deref() == Some("user -> moderator")));
    let resp = admin.api(Method::POST, &format!("/api/v1/admin/users/{admin_id}/suspend"), Some(json!({})), &[]).await;
    assert_eq!(resp.error_code(), "forbidden", "not on one's own account");

    let resp = admin.post_form(&format!("/admin/users/{member_id}/action"), &[("action", "close")]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/admin/users".to_string()));
    assert!(app.state.store.user_by_id(&member_id).await.unwrap().is_none());
    assert!(app.object_files().iter().all(|p| !p.to_string_lossy().contains(&member_id)), "objects purged");
}

/// Every admin page and admin API route, with a method.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin"),
    ("GET", "/admin/users"),
    ("GET", "/admin/users/{user}"),
    ("POST", "/admin/users/{user}/action"),
    ("GET", "/admin/moderation"),
    ("GET", "/admin/reports/{report}/image"),
    ("POST", "/admin/reports/{report}/action"),
    ("POST", "/admin/moderation/events/{event}/reviewed"),
    ("GET", "/admin/credits"),
    ("POST", "/admin/credits"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/users/{user}"),
    ("POST", "/api/v1/admin/users/{user}/role"),
    ("POST", "/api/v1/admin/users/{user}/suspend"),
    ("POST", "/api/v1/admin/users/{user}/reinstate"),
    ("POST", "/api/v1/admin/users/{user}/close"),
    ("POST", "/api/v1/admin/users/{user}/reset-2fa"),
    ("GET", "/api/v1/admin/stats"),
    ("GET", "/api/v1/admin/reports"),
    ("GET", "/api/v1/admin/reports/{report}/image"),
    ("POST", "/api/v1/admin/reports/{report}/actions"),
    ("GET", "/api/v1/admin/moderation/events"),
    ("POST", "/api/v1/admin/moderation/events/{event}/reviewed"),
    ("GET", "/api/v1/admin/credits"),
    ("POST", "/api/v1/admin/credits/{user}"),
];

/// Routes moderators may use.
const MODERATOR_ROUTES: &[&str] = &[
    "/admin",
    "/admin/moderation",
    "/admin/reports/{report}/image",
    "/admin/reports/{report}/action",
    "/admin/moderation/events/{event}/reviewed",
    "/api/v1/admin/reports",
    "/api/v1/admin/reports/{report}/image",
    "/api/v1/admin/reports/{report}/actions",
    "/api/v1/admin/moderation/events",
    "/api/v1/admin/moderation/events/{event}/reviewed",
];

async fn call(client: &mut Client, method: &str, path: &str) -> Resp {
    if method == "GET" {
        client.get(path).await
    } else if path.starts_with("/api/") {
        client.api(Method::POST, path, Some(json!({"action": "dismiss", "role": "admin", "amount": 5, "reason": "x"})), &[]).await
    } else {
        client.post_form(path, &[("action", "dismiss"), ("account", "x"), ("amount", "5"), ("reason", "x")]).await
    }
}

#[tokio::test]
async fn c41_non_admins_get_404_on_every_admin_route() {
    let app = App::with_config(TestBackend::Sqlite, config(true, None)).await;
    let mut owner = app.client();
    let owner_id = owner.signed_up("owner@example.org").await;
    let asset = upload(&mut owner).await.json()["id"].as_str().unwrap().to_string();
    owner.submit(json!({"prompt": "grimlock"})).await;
    let report = app.state.store.create_report(Some(owner_id.as_str()), &asset, "test").await.unwrap().id;
    let event = app.state.store.moderation_events(Some("open"), None, 1).await.unwrap()[0].id.clone();
    let fill = |p: &str| p.replace("{user}", &owner_id).replace("{report}", &report).replace("{event}", &event);

    let mut member = app.client();
    member.signed_up("member@example.org").await;
    let mut moderator = app.client();
    let moderator_id = moderator.signed_up("mod@example.org").await;
    app.state.store.set_role(&moderator_id, "moderator").await.unwrap();
    let mut anonymous = app.client();
    anonymous.get("/signin").await;

    for (method, route) in ADMIN_ROUTES {
        let path = fill(route);
        for (who, client) in [("member", &mut member), ("anonymous", &mut anonymous)] {
            let resp = call(client, method, &path).await;
            assert_eq!(resp.status, StatusCode::NOT_FOUND, "{who} {method} {path}: {}", resp.text());
        }
        if !MODERATOR_ROUTES.contains(route) {
            let resp = call(&mut moderator, method, &path).await;
            assert_eq!(resp.status, StatusCode::NOT_FOUND, "moderator {method} {path}: {}", resp.text());
        }
    }
    for route in MODERATOR_ROUTES.iter().filter(|r| ADMIN_ROUTES.contains(&("GET", **r))) {
        let path = fill(route);
        assert_eq!(moderator.get(&path).await.status, StatusCode::OK, "moderator GET {path}");
    }
    // Nothing was changed by the refused calls.
    assert_eq!(app.state.store.user_by_id(&owner_id).await.unwrap().unwrap().status, "active");
    assert_eq!(app.state.store.report(&report).await.unwrap().status, "open");
}

fn peer(ip: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.parse().unwrap(), 40_000))
}

async fn sign_in_from(client: &mut Client, n: usize, forwarded: Option<&str>) -> Resp {
    if client.csrf().is_empty() {
        client.get("/signin").await;
    }
    let csrf = client.csrf();
    let body = common::form_encode(&[("email", &format!("nobody{n}@example.org")), ("password", "wrong password"), ("_csrf", &csrf)]);
    let headers: Vec<(&str, &str)> = forwarded.map(|f| vec![("x-forwarded-for", f)]).unwrap_or_default();
    client.send(Method::POST, "/signin", Some("application/x-www-form-urlencoded"), body.into_bytes(), &headers).await
}

#[tokio::test]
async fn c18_the_eleventh_sign_in_from_one_ip_is_rate_limited() {
    // In memory on SQLite (one node), in the database on PostgreSQL (shared by every node).
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let clock = web::Clock::manual(1_700_000_000_000);
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let app = App::with_config(backend, WebConfig { clock: clock.clone(), trusted_proxies: trusted, ..WebConfig::default() }).await;

        let mut client = app.client();
        client.peer = peer("203.0.113.7");
        for n in 0..10 {
            assert_eq!(sign_in_from(&mut client, n, None).await.status, StatusCode::UNAUTHORIZED, "attempt {n}");
        }
        let resp = sign_in_from(&mut client, 10, None).await;
        assert_eq!((resp.status, resp.error_code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_string()));
        assert_eq!(resp.headers["retry-after"], "6", "one attempt back every 6 s");
        let mut other = app.client();
        other.peer = peer("203.0.113.8");
        assert_eq!(sign_in_from(&mut other, 0, None).await.status, StatusCode::UNAUTHORIZED, "another IP has its own bucket");
        clock.advance_ms(6_000);
        assert_eq!(sign_in_from(&mut client, 11, None).await.status, StatusCode::UNAUTHORIZED, "refilled");

        // A spoofed header from an untrusted peer changes nothing.
        let mut spoofer = app.client();
        spoofer.peer = peer("198.51.100.9");
        for n in 0..10 {
            let fake = format!("192.0.2.{n}");
            assert_eq!(sign_in_from(&mut spoofer, n, Some(&fake)).await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(sign_in_from(&mut spoofer, 10, Some("192.0.2.200")).await.status, StatusCode::TOO_MANY_REQUESTS);

        // Behind the trusted proxy, two clients have two buckets.
        let mut proxy = app.client();
        proxy.peer = peer("10.0.0.2");
        for n in 0..10 {
            assert_eq!(sign_in_from(&mut proxy, n, Some("198.51.100.1")).await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(sign_in_from(&mut proxy, 10, Some("198.51.100.1")).await.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(sign_in_from(&mut proxy, 11, Some("198.51.100.2")).await.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn c18_api_keys_have_their_own_bucket_with_openai_shaped_refusals() {
    let mut limits = web::RateLimits::default();
    limits.api.per_key = 2;
    let app = App::with_config(TestBackend::Sqlite, WebConfig { rate_limits: limits, ..WebConfig::default() }).await;
    let mut client = app.client();
    client.signed_up("keys@example.org").await;
    let (first, second) = (key_of(&mut client).await, key_of(&mut client).await);
    for _ in 0..2 {
        assert_eq!(with_key(&app, Method::GET, "/v1/models", &first, None).await.status, StatusCode::OK);
    }
    let resp = with_key(&app, Method::GET, "/v1/models", &first, None).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    let error = &resp.json()["error"];
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("rate_limit_error"), Some("rate_limited")));
    assert!(resp.headers.contains_key("retry-after"));
    assert_eq!(with_key(&app, Method::GET, "/v1/models", &second, None).await.status, StatusCode::OK);
}
