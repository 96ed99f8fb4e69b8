//! `atelier sweep`, the retention sweeps run once for cron, through the real
//! binary: it removes expired unsaved outputs and accounts past their grace
//! period, and prints what it removed.

mod common;

use common::{atelier, files_under, Browser, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c31_c39_atelier_sweep_prints_what_it_removed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // No retention for unsaved outputs and no grace: everything below is due
    // as soon as it exists, so the sweep needs no clock to move.
    let env = [("ATELIER_TASKS_UNSAVED_RETENTION_DAYS", "0"), ("ATELIER_PRIVACY_DELETION_GRACE_DAYS", "0")];
    let server = Server::start(&data, &env).await;
    let mut maker = Browser::new(&server);
    maker.sign_up("maker@example.org", "maker's long passphrase").await;
    let (code, task) = maker.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "fleeting", "size": "256x256"}))).await;
    assert_eq!(code, 202, "{task}");
    maker.wait_for(task["id"].as_str().unwrap(), "succeeded").await;
    let mut leaving = Browser::new(&server);
    leaving.sign_up("leaving@example.org", "leaving's long passphrase").await;
    let resp = leaving.post_form("/account/delete", &[("current_password", "leaving's long passphrase"), ("mode", "grace")]).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    server.stop().await;
    assert_eq!(files_under(&data.join("objects")).len(), 2, "the output and its thumbnail");

    let out = atelier(&data, &["sweep"]);
    assert!(out.contains("accounts_purged: 1"), "{out}");
    assert!(out.contains("unsaved_outputs_deleted: 1"), "{out}");
    let left: Vec<String> = files_under(&data.join("objects")).iter().map(|f| f.display().to_string()).collect();
    assert!(left.iter().all(|f| f.contains("_tombstones")), "only the tombstone is left: {left:?}");

    let again: serde_json::Value = serde_json::from_str(atelier(&data, &["sweep", "--json"]).trim()).unwrap();
    assert_eq!(again["accounts_purged"], 0, "{again}");
    assert_eq!(again["unsaved_outputs_deleted"], 0, "{again}");
}
