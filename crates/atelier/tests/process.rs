//! The real binary, started as a user would start it: first start on an
//! empty data dir, the whole journey over HTTP, and a crash (SIGKILL) in the
//! middle of a task.

mod common;

use std::time::{Duration, Instant};

use common::{files_under, png_size, Browser, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_c30_first_start_journey_keeps_no_password_and_deletes_from_disk() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("fresh").join("data");
    let server = Server::start(&data, &[]).await;
    assert!(data.join("atelier.db").exists(), "first start creates the data dir and database");
    let password = "Opal-Kestrel-Lantern-93";
    let mut browser = Browser::new(&server);
    browser.sign_up("noor@example.org", password).await;

    let (code, task) =
        browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "tea house in the rain", "size": "1536x1024"}))).await;
    assert_eq!(code, 202, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    // Live status: the event stream runs until the task is done.
    let events = browser.get(&format!("/api/v1/tasks/{id}/events")).await.text().await.unwrap();
    assert!(events.contains("event: done"), "{events}");
    let done = browser.wait_for(&id, "succeeded").await;
    let asset = done["outputs"][0]["id"].as_str().unwrap().to_string();
    let gallery = browser.get("/gallery").await.text().await.unwrap();
    assert!(gallery.contains(&format!("/images/{asset}")), "the image is in the gallery");

    let download = browser.get(&format!("/api/v1/assets/{asset}?download=1")).await;
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(png_size(&download.bytes().await.unwrap()), (1536, 1024));

    let objects = data.join("objects");
    assert_eq!(files_under(&objects).len(), 2, "the image and its thumbnail");
    let (code, _) = browser.json(reqwest::Method::DELETE, &format!("/api/v1/assets/{asset}"), None).await;
    assert_eq!(code, 204);
    assert!(files_under(&objects).is_empty(), "deleted from the data dir at once");

    // The welcome mail is written to data/mail by the outbox sender.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        if let Some(file) = files_under(&data.join("mail")).into_iter().find(|f| f.extension().is_some_and(|e| e == "eml")) {
            break std::fs::read_to_string(file).unwrap();
        }
        assert!(Instant::now() < deadline, "no mail written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(mail.contains("noor@example.org"));

    let mut server = server;
    let _ = std::process::Command::new("kill").arg("-TERM").arg(server.child.id().unwrap().to_string()).status();
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await.expect("stops on SIGTERM").unwrap();
    assert!(status.success(), "clean exit: {status}");

    // The password is nowhere: not in any file of the data dir (database,
    // WAL, mail), not in the log.
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(password.len()).any(|w| w == password.as_bytes()), "password found in {}", file.display());
    }
    let logs = server.logs();
    assert!(logs.contains("account created"), "the log is captured: {logs}");
    assert!(!logs.contains(password), "password in the log");
    let store = store::Store::connect(&format!("sqlite://{}", data.join("atelier.db").display()), 2).await.unwrap();
    let user = store.user_by_email("noor@example.org").await.unwrap().unwrap();
    assert!(user.password_hash.unwrap().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c08_task_running_at_sigkill_completes_exactly_once_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let slow = [
        ("ATELIER_ENGINE_MIN_DURATION_MS", "30000"),
        ("ATELIER_TASKS_LEASE_SECONDS", "2"),
        ("ATELIER_TASKS_HEARTBEAT_SECONDS", "1"),
        ("ATELIER_TASKS_SWEEP_INTERVAL_SECONDS", "1"),
    ];
    let mut server = Server::start(&data, &slow).await;
    let mut browser = Browser::new(&server);
    browser.sign_up("crash@example.org", "crash test passphrase").await;
    let (code, task) =
        browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "storm over the harbour", "size": "512x512"}))).await;
    assert_eq!(code, 202);
    let id = task["id"].as_str().unwrap().to_string();
    browser.wait_for(&id, "running").await;
    server.child.kill().await.unwrap(); // SIGKILL: no cleanup of any kind
    let _ = server.child.wait().await;

    let fast =
        [("ATELIER_TASKS_LEASE_SECONDS", "2"), ("ATELIER_TASKS_HEARTBEAT_SECONDS", "1"), ("ATELIER_TASKS_SWEEP_INTERVAL_SECONDS", "1")];
    let server = Server::start(&data, &fast).await;
    browser.base = server.url.clone();
    let done = browser.wait_for(&id, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    let statuses: Vec<&str> = done["timeline"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "running", "queued", "running", "succeeded"], "{done}");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 1, "outputs recorded once");
    assert_eq!(files_under(&data.join("objects")).len(), 2, "one image and one thumbnail, no orphans");
    let (_, history) = browser.json(reqwest::Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 1);
    drop(server);
}
