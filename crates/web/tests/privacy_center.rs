//! The privacy center: the data export (C35), rectification (C36) and
//! rights requests with Admin › Requests (C38), on both database backends,
//! driven through the router with a manual clock.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{Method, StatusCode};
use blobs::BlobStore;
use common::{wait_for_mail, App, Client};
use serde_json::{json, Value};
use store::testing::TestBackend;
use web::{Clock, WebConfig};

const DAY: i64 = 86_400_000;

async fn app(backend: TestBackend) -> (App, Clock) {
    let clock = Clock::manual(store::now_ms());
    let config = WebConfig { clock: clock.clone(), ..WebConfig::default() };
    (App::with_config(backend, config).await, clock)
}

/// Waits (up to 60 s) for the background build of the account's newest
/// export to end; returns it.
async fn finished_export(client: &mut Client) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = client.api(Method::GET, "/api/v1/privacy/exports", None, &[]).await.json();
        let newest = list["items"][0].clone();
        if matches!(newest["status"].as_str(), Some("ready" | "failed")) {
            return newest;
        }
        assert!(std::time::Instant::now() < deadline, "export not built: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every file of a ZIP, read back by Python's zipfile (an independent
/// reader that also checks each CRC).
fn unzip(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("export.zip");
    std::fs::write(&zip, archive).unwrap();
    let out_dir = dir.path().join("out");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nz.extractall(sys.argv[2])";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&zip).arg(&out_dir).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&out_dir, &out_dir, &mut files);
    files
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(files.get(name).unwrap_or_else(|| panic!("{name} missing"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// An account with content of every kind; returns its id and the prompts
/// of its tasks.
async fn populate(app: &App, client: &mut Client, tag: &str, images: usize) -> (String, Vec<String>) {
    let email = format!("{tag}@example.org");
    let id = client.signed_up(&email).await;
    let mut prompts = Vec::new();
    let mut left = images;
    while left > 0 {
        let n = left.min(4);
        let prompt = format!("{tag} secret prompt {}", prompts.len());
        client.submit(json!({"prompt": prompt, "size": "256x256", "n": n})).await;
        prompts.push(prompt);
        left -= n;
    }
    app.run_tasks().await;
    let newest = client.api(Method::GET, "/api/v1/gallery?limit=1", None, &[]).await.json()["items"][0]["id"].as_str().unwrap().to_string();
    let shared = client.api(Method::POST, &format!("/api/v1/images/{newest}/share"), None, &[]).await;
    assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text());
    let store = &app.state.store;
    store.adjust_credits(&id, 25, &format!("{tag} goodwill credits")).await.unwrap();
    store.create_ticket(&id, &format!("{tag} ticket subject"), &format!("{tag} ticket body")).await.unwrap();
    let key = client.api(Method::POST, "/api/v1/api-keys", Some(json!({"name": format!("{tag} key")})), &[]).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text());
    let filed = client
        .api(Method::POST, "/api/v1/privacy/requests", Some(json!({"kind": "portability", "details": format!("{tag} request")})), &[])
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text());
    store
        .record_consent(store::NewConsent {
            user_id: Some(&id),
            visitor_id: &format!("visitor-{tag}"),
            choice: store::ConsentChoice { analytics: true, preferences: false, marketing: false },
            policy_version: "2026-01",
            source: "settings",
            at: store::now_ms(),
        })
        .await
        .unwrap();
    (id, prompts)
}

async fn c35_export_holds_every_record_and_image_of_the_account_and_nothing_else(backend: TestBackend) {
    let (app, clock) = app(backend).await;
    let store = app.state.store.clone();
    let mut owner = app.client();
    let (owner_id, owner_prompts) = populate(&app, &mut owner, "owner", 50).await;
    let mut other = app.client();
    let (other_id, other_prompts) = populate(&app, &mut other, "other", 4).await;
    let api_key = owner.api(Method::POST, "/api/v1/api-keys", Some(json!({"name": "second"})), &[]).await.json();
    let api_secret = api_key["secret"].as_str().unwrap().to_string();

    let queued = owner.api(Method::POST, "/api/v1/privacy/exports", None, &[]).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text());
    // Asking again while it is built does not queue a second one.
    let again = owner.api(Method::POST, "/api/v1/privacy/exports", None, &[]).await.json();
    assert_eq!(again["id"], queued.json()["id"]);
    let export = finished_export(&mut owner).await;
    assert_eq!(export["status"], "ready", "{export}");
    let url = export["download_url"].as_str().unwrap().to_string();
    let mail = wait_for_mail(&store, "owner@example.org", "export_ready").await;
    assert!(mail.body_text.contains("/account/privacy"), "{}", mail.body_text);

    // The archive is stored sealed, in parts under the owner's prefix.
    let parts = app.objects.list_prefix(&format!("{owner_id}/exports/")).await.unwrap();
    assert!(!parts.is_empty());
    for key in &parts {
        let raw = app.objects.get(key).await.unwrap().unwrap();
        assert!(!raw.starts_with(b"PK"), "{key} is stored in the clear");
    }

    // Only the signed-in owner downloads it.
    assert_eq!(other.get(&url).await.status, StatusCode::NOT_FOUND);
    let mut anonymous = app.client();
    let resp = anonymous.get(&url).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signin".to_string()));
    let download = owner.get(&url).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.headers["content-type"], "application/zip");
    assert_eq!(download.body.len() as i64, export["size_bytes"].as_i64().unwrap());
    let files = unzip(&download.body);

    let readme = String::from_utf8(files["README.txt"].clone()).unwrap();
    for promise in ["Art. 15", "privacy@localhost", "7 days", "Where it comes from", "Who receives it"] {
        assert!(readme.contains(promise), "README lacks {promise:?}:\n{readme}");
    }
    for section in web_sections() {
        assert!(
            files.contains_key(section),
            "{section} missing; have {:?}",
            files.keys().filter(|k| !k.starts_with("images/")).collect::<Vec<_>>()
        );
    }
    let account = json_of(&files, "account.json");
    assert_eq!(account["profile"]["id"], owner_id.as_str());
    assert_eq!(account["profile"]["email"], "owner@example.org");
    assert!(account["profile"].get("password_hash").is_none());
    assert_eq!(account["password_set"], true);

    // Every task, with its decrypted prompt, parameters and timeline.
    let tasks = json_of(&files, "tasks.json");
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), owner_prompts.len());
    for prompt in &owner_prompts {
        let task = tasks.iter().find(|t| t["prompt"] == prompt.as_str()).unwrap_or_else(|| panic!("no task for {prompt}"));
        assert_eq!(task["params"]["size"], json!({"width": 256, "height": 256}), "{task}");
        assert!(task["timeline"].as_array().unwrap().iter().any(|e| e["status"] == "succeeded"), "{task}");
    }

    // Every asset, and every file byte for byte as stored.
    let mut stored = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.assets_of_user(&owner_id, after.as_deref(), 100).await.unwrap();
        stored.extend(page.items);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(stored.iter().filter(|a| a.kind == "output").count(), 50);
    let listed = json_of(&files, "assets.json");
    assert_eq!(listed.as_array().unwrap().len(), stored.len());
    let images: Vec<&String> = files.keys().filter(|k| k.starts_with("images/")).collect();
    assert_eq!(images.len(), stored.len());
    for asset in &stored {
        let entry = listed.as_array().unwrap().iter().find(|a| a["id"] == asset.id.as_str()).expect("asset listed");
        let name = entry["file"].as_str().unwrap();
        let plain = app.state.blobs.get(&asset.storage_key).await.unwrap().unwrap();
        assert!(files[name] == plain, "{name} differs from the stored image");
    }

    let text = |name: &str| String::from_utf8(files[name].clone()).unwrap();
    assert!(text("ledger.json").contains("owner goodwill credits"));
    assert_eq!(json_of(&files, "credits.json")["balance"]["available"], 25);
    assert!(text("support_tickets.json").contains("owner ticket body"));
    assert!(text("rights_requests.json").contains("owner request"));
    assert!(text("consents.json").contains("visitor-owner"));
    assert!(text("api_keys.json").contains("owner key") && text("api_keys.json").contains("second"));
    assert!(text("notices.json").contains("verify_email"));
    assert!(text("sessions.json").contains(&owner_id));
    assert!(text("audit.json").contains("export_requested"));
    let links = json_of(&files, "share_links.json");
    assert_eq!(links.as_array().unwrap().len(), 1);
    assert_eq!(links[0]["token"], store.share_links_of_user(&owner_id).await.unwrap()[0].token.as_str());

    // Nothing of the other account, and no secret, anywhere in the archive.
    let mut foreign =
        vec![other_id.clone(), "other@example.org".into(), "other ticket".into(), "other request".into(), "visitor-other".into()];
    foreign.extend(other_prompts);
    let mut other_assets = store.assets_of_user(&other_id, None, 1000).await.unwrap().items;
    assert!(!other_assets.is_empty());
    foreign.extend(other_assets.drain(..).map(|a| a.id));
    foreign.push(api_secret);
    foreign.extend(store.share_links_of_user(&other_id).await.unwrap().into_iter().map(|l| l.token));
    for (name, bytes) in &files {
        for needle in &foreign {
            assert!(!contains(bytes, needle), "{name} contains {needle:?}");
        }
    }

    // Past its days the link stops working, and the sweep deletes it.
    clock.advance_ms(7 * DAY + 1);
    assert_eq!(owner.get(&url).await.status, StatusCode::NOT_FOUND);
    let report = privacy::sweep::run_sweeps(&store, &app.objects, &app.state.config.privacy, clock.now_ms()).await.unwrap();
    assert_eq!(report.exports_deleted, 1);
    assert!(app.objects.list_prefix(&format!("{owner_id}/exports/")).await.unwrap().is_empty());
    assert_eq!(owner.api(Method::GET, "/api/v1/privacy/exports", None, &[]).await.json()["items"], json!([]));
}

/// The JSON files the README promises.
fn web_sections() -> Vec<&'static str> {
    let mut sections = privacy::export::SECTIONS.to_vec();
    sections.push("README.txt");
    sections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c35_export_holds_every_record_and_image_of_the_account_and_nothing_else_sqlite() {
    c35_export_holds_every_record_and_image_of_the_account_and_nothing_else(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c35_export_holds_every_record_and_image_of_the_account_and_nothing_else_postgres() {
    c35_export_holds_every_record_and_image_of_the_account_and_nothing_else(TestBackend::Postgres).await;
}

async fn c36_profile_corrections_apply_and_are_audited(backend: TestBackend) {
    let (app, _) = app(backend).await;
    let mut client = app.client();
    let id = client.signed_up("fix@example.org").await;
    let resp = client.api(Method::PATCH, "/api/v1/account", Some(json!({"name": "Corrected Name"})), &[]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(client.api(Method::GET, "/api/v1/account", None, &[]).await.json()["name"], "Corrected Name");
    let page = client.post_form("/account", &[("name", "Corrected Name"), ("locale", "fr")]).await;
    assert_eq!(page.status, StatusCode::OK);
    // Saving without a change records nothing.
    client.api(Method::PATCH, "/api/v1/account", Some(json!({"name": "Corrected Name"})), &[]).await;

    let trail = app.state.store.audit_entries(Some(&id), None, 50).await.unwrap().items;
    let fixes: Vec<(Option<&str>, Option<&str>)> =
        trail.iter().filter(|e| e.action == "profile_updated").map(|e| (e.actor_id.as_deref(), e.detail.as_deref())).collect();
    assert_eq!(fixes, vec![(Some(id.as_str()), Some("locale")), (Some(id.as_str()), Some("name"))]);
    assert!(trail.iter().all(|e| !e.detail.as_deref().unwrap_or("").contains("Corrected")), "values stay out of the trail");
    // The account page links to the privacy center.
    assert!(client.get("/account").await.text().contains(r#"href="/account/privacy""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c36_profile_corrections_apply_and_are_audited_sqlite() {
    c36_profile_corrections_apply_and_are_audited(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c36_profile_corrections_apply_and_are_audited_postgres() {
    c36_profile_corrections_apply_and_are_audited(TestBackend::Postgres).await;
}

async fn c38_requests_reach_admins_with_their_due_date_and_move_along(backend: TestBackend) {
    let (app, clock) = app(backend).await;
    let store = app.state.store.clone();
    let mut user = app.client();
    let user_id = user.signed_up("asker@example.org").await;
    let mut admin = app.client();
    let admin_id = admin.signed_up("admin@example.org").await;
    store.set_role(&admin_id, "admin").await.unwrap();

    // The privacy center links every right and files a request.
    let hub = user.get("/account/privacy").await;
    assert_eq!(hub.status, StatusCode::OK);
    for link in ["/account/privacy/settings", "/account/privacy/settings#marketing", "/account/delete", "/support", "#export", "#requests"]
    {
        assert!(hub.text().contains(&format!(r#"href="{link}""#)), "no link to {link}");
    }
    let received_at = clock.now_ms();
    let resp = user.post_form("/account/privacy/requests", &[("kind", "erasure"), ("details", "remove my old images")]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/account/privacy?notice=request#requests".to_string()));
    let bad = user.post_form("/account/privacy/requests", &[("kind", "everything")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Admins only: everyone else gets 404, pages and API alike.
    let listed = user.api(Method::GET, "/api/v1/admin/requests", None, &[]).await;
    assert_eq!(listed.status, StatusCode::NOT_FOUND);
    assert_eq!(user.get("/admin/requests").await.status, StatusCode::NOT_FOUND);
    let items = admin.api(Method::GET, "/api/v1/admin/requests", None, &[]).await.json()["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    let request = items[0].clone();
    let id = request["id"].as_str().unwrap().to_string();
    assert_eq!(
        (request["kind"].as_str(), request["status"].as_str(), request["channel"].as_str()),
        (Some("erasure"), Some("received"), Some("dashboard"))
    );
    assert_eq!(request["received_at"].as_i64().unwrap(), received_at);
    assert_eq!(request["due_at"].as_i64().unwrap(), received_at + 30 * DAY);
    let page = admin.get("/admin/requests").await.text();
    assert!(page.contains(&web::i18n::rfc3339(received_at + 30 * DAY)) && page.contains("asker@example.org"), "{page}");
    let status_path = format!("/api/v1/admin/requests/{id}/status");
    let resp = user.api(Method::POST, &status_path, Some(json!({"status": "in_progress"})), &[]).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(user.post_form(&format!("/admin/requests/{id}/status"), &[("status", "in_progress")]).await.status, StatusCode::NOT_FOUND);

    // received → in_progress → denied needs a reason → completed.
    let resp = admin.post_form(&format!("/admin/requests/{id}/status"), &[("status", "in_progress")]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/admin/requests".to_string()));
    let resp = admin.api(Method::POST, &status_path, Some(json!({"status": "denied"})), &[]).await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "invalid_input".to_string()));
    let done = admin.api(Method::POST, &status_path, Some(json!({"status": "completed", "reason": "images erased"})), &[]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["status"], "completed");
    let resp = admin.api(Method::POST, &status_path, Some(json!({"status": "in_progress"})), &[]).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "a closed request stays closed");

    // Each change is in the audit trail, and the user sees the outcome.
    let trail = store.audit_entries(Some(&user_id), None, 50).await.unwrap().items;
    let moves: Vec<String> = trail.iter().filter(|e| e.action == "rights_request_updated").filter_map(|e| e.detail.clone()).collect();
    assert_eq!(moves, vec![format!("erasure {id}: in_progress -> completed"), format!("erasure {id}: received -> in_progress")]);
    assert!(trail.iter().all(|e| e.action != "rights_request_updated" || e.actor_id.as_deref() == Some(admin_id.as_str())));
    let mine = user.api(Method::GET, "/api/v1/privacy/requests", None, &[]).await.json();
    assert_eq!((mine["items"][0]["status"].as_str(), mine["items"][0]["reason"].as_str()), (Some("completed"), Some("images erased")));
    assert!(user.get("/account/privacy").await.text().contains(r#"data-status="completed""#));

    // A request received by mail is logged by an admin, linked to the
    // account with that address; 31 days later it is overdue and listed first.
    let logged =
        admin.post_form("/admin/requests", &[("contact", "Asker@Example.org"), ("kind", "access"), ("details", "letter of 3 May")]).await;
    assert_eq!(logged.status, StatusCode::SEE_OTHER, "{}", logged.text());
    let stranger =
        admin.api(Method::POST, "/api/v1/admin/requests", Some(json!({"contact": "someone@example.net", "kind": "objection"})), &[]).await;
    assert_eq!(stranger.status, StatusCode::CREATED, "{}", stranger.text());
    assert_eq!(stranger.json()["user_id"], Value::Null);
    clock.advance_ms(31 * DAY);
    let items = admin.api(Method::GET, "/api/v1/admin/requests", None, &[]).await.json()["items"].clone();
    let summary: Vec<(String, String, bool)> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap().to_string(), r["channel"].as_str().unwrap().to_string(), r["overdue"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("access".into(), "email".into(), true),
            ("objection".into(), "email".into(), true),
            ("erasure".into(), "dashboard".into(), false)
        ]
    );
    assert!(admin.get("/admin/requests").await.text().contains(r#"data-overdue="1""#));
    let mine = user.api(Method::GET, "/api/v1/privacy/requests", None, &[]).await.json();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2, "the mailed request shows in the user's list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c38_requests_reach_admins_with_their_due_date_and_move_along_sqlite() {
    c38_requests_reach_admins_with_their_due_date_and_move_along(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c38_requests_reach_admins_with_their_due_date_and_move_along_postgres() {
    c38_requests_reach_admins_with_their_due_date_and_move_along(TestBackend::Postgres).await;
}
