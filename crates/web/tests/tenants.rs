//! C06: one account's content is invisible to every other account, on both
//! database backends: every content endpoint answers 404 and changes nothing.

mod common;

use axum::http::{Method, StatusCode};
use common::App;
use serde_json::json;
use store::testing::TestBackend;

async fn c06_every_content_endpoint_is_404_to_another_account(backend: TestBackend) {
    let app = App::new(backend).await;
    let mut owner = app.client();
    owner.signed_up("owner@example.org").await;
    let mut intruder = app.client();
    intruder.signed_up("intruder@example.org").await;

    let done = owner.submit(json!({"prompt": "private sketch", "size": "256x256"})).await;
    let queued = owner.submit(json!({"prompt": "still waiting", "size": "256x256"})).await;
    let done_id = done["id"].as_str().unwrap().to_string();
    let queued_id = queued["id"].as_str().unwrap().to_string();
    // Run only the first task; the second stays queued (cancelable).
    assert!(app.worker.run_one().await.unwrap());
    let view = owner.api(Method::GET, &format!("/api/v1/tasks/{done_id}"), None, &[]).await.json();
    let asset = view["outputs"][0]["id"].as_str().unwrap().to_string();
    let thumb = view["outputs"][0]["thumbnail_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let files_before = app.object_files();

    let api_calls = [
        (Method::GET, format!("/api/v1/tasks/{done_id}")),
        (Method::GET, format!("/api/v1/tasks/{queued_id}")),
        (Method::POST, format!("/api/v1/tasks/{queued_id}/cancel")),
        (Method::GET, format!("/api/v1/tasks/{done_id}/events")),
        (Method::GET, format!("/api/v1/assets/{asset}")),
        (Method::GET, format!("/api/v1/assets/{thumb}")),
        (Method::DELETE, format!("/api/v1/assets/{asset}")),
        (Method::DELETE, format!("/api/v1/assets/{thumb}")),
    ];
    for (method, path) in &api_calls {
        let resp = intruder.api(method.clone(), path, None, &[]).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{method} {path}: {}", resp.text());
        assert_eq!(resp.json(), json!({"error": {"code": "not_found", "message": "not found"}}), "{method} {path}");
    }
    for path in [format!("/tasks/{done_id}"), format!("/images/{asset}")] {
        assert_eq!(intruder.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let resp = intruder.post_form(&format!("/images/{asset}/delete"), &[]).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);

    // Lists show nothing of the owner's.
    let list = intruder.api(Method::GET, "/api/v1/tasks", None, &[]).await.json();
    assert_eq!(list["items"], json!([]));
    let gallery = intruder.get("/gallery").await.text();
    assert!(!gallery.contains(&asset) && !gallery.contains(&thumb));

    // And nothing changed for the owner.
    assert_eq!(app.object_files(), files_before);
    let still = owner.api(Method::GET, &format!("/api/v1/tasks/{queued_id}"), None, &[]).await.json();
    assert_eq!(still["status"], "queued");
    assert_eq!(owner.get(&format!("/api/v1/assets/{asset}")).await.status, StatusCode::OK);
    assert_eq!(owner.get(&format!("/api/v1/assets/{thumb}")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c06_every_content_endpoint_is_404_to_another_account_sqlite() {
    c06_every_content_endpoint_is_404_to_another_account(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c06_every_content_endpoint_is_404_to_another_account_postgres() {
    c06_every_content_endpoint_is_404_to_another_account(TestBackend::Postgres).await;
}
