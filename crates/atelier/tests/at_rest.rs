//! Encryption at rest, crypto-shredding, backups and master-key rotation,
//! through the real binary and its commands.

mod common;

use common::{atelier, atelier_with, contains, files_under, open_store, png_size, Browser, Server};
use serde_json::json;
use store::testing::{test_db, TestBackend};

async fn generate(browser: &mut Browser, prompt: &str) -> (String, String) {
    let (code, task) = browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": prompt, "size": "256x256"}))).await;
    assert_eq!(code, 202, "{task}");
    let done = browser.wait_for(task["id"].as_str().unwrap(), "succeeded").await;
    (done["owner_id"].as_str().unwrap().to_string(), done["outputs"][0]["id"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c27_prompts_and_images_are_ciphertext_at_rest() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = Server::start(&data, &[]).await;
    let mut browser = Browser::new(&server);
    browser.sign_up("ines@example.org", "ines's long passphrase").await;
    let prompt = "violet lanterns over a secret garden";
    let (_, asset) = generate(&mut browser, prompt).await;
    let download = browser.get(&format!("/api/v1/assets/{asset}")).await.bytes().await.unwrap();
    assert_eq!(png_size(&download), (256, 256), "serving decrypts on the fly");
    server.stop().await;

    let objects = files_under(&data.join("objects"));
    assert_eq!(objects.len(), 2);
    for file in &objects {
        let bytes = std::fs::read(file).unwrap();
        assert!(bytes.starts_with(b"ATLB\x01\x00"), "sealed object format");
        assert!(!contains(&bytes, b"\x89PNG") && !contains(&bytes, b"IHDR"), "{} holds a readable PNG", file.display());
    }
    let mut sealed_prompt_seen = false;
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, prompt.as_bytes()), "the prompt is readable in {}", file.display());
        sealed_prompt_seen |= contains(&bytes, b"enc:v1:");
    }
    assert!(sealed_prompt_seen, "the prompt column holds the sealed value");
    let key = std::fs::metadata(data.join("master.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "master key file is owner-only");
}

/// Backup, purge, restore: on SQLite (`database_url` None) or PostgreSQL.
async fn restore_after_purge_keeps_the_account_deleted(database_url: Option<&str>) {
    let env: Vec<(&str, &str)> = database_url.map(|url| ("ATELIER_DATABASE_URL", url)).into_iter().collect();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let backup = root.path().join("backup");
    let server = Server::start(&data, &env).await;
    let mut gone = Browser::new(&server);
    gone.sign_up("gone@example.org", "gone's long passphrase").await;
    let (gone_id, _) = generate(&mut gone, "a house that will be forgotten").await;
    let mut kept = Browser::new(&server);
    kept.sign_up("kept@example.org", "kept's long passphrase").await;
    let (_, kept_asset) = generate(&mut kept, "a house that stays").await;

    let out = atelier_with(&data, &["backup", backup.to_str().unwrap()], &env);
    assert!(out.contains("backup written"), "{out}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["objects"].as_array().unwrap().len(), 4);
    // A copy of the account's objects that survives somewhere else.
    let stray: Vec<Vec<u8>> = files_under(&data.join("objects").join(&gone_id)).iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(stray.len(), 2);

    let out = atelier_with(&data, &["admin", "purge-account", "gone@example.org"], &env);
    assert!(out.contains("2 objects deleted"), "{out}");
    let (code, _) = gone.json(reqwest::Method::GET, "/api/v1/account", None).await;
    assert_eq!(code, 401, "the purged account's session ends at once");
    server.stop().await;

    let out = atelier_with(&data, &["restore", backup.to_str().unwrap()], &env);
    assert!(out.contains("accounts purged again: 1"), "{out}");

    let store = open_store(&data, database_url, &data.join("master.key")).await;
    assert!(store.user_by_email("gone@example.org").await.unwrap().is_none(), "the restore did not bring the account back");
    assert!(store.data_key(&gone_id).await.is_err(), "its data key is gone: the stray copy is unreadable");
    assert!(files_under(&data.join("objects").join(&gone_id)).is_empty());
    let kept_key = store.data_key(&store.user_by_email("kept@example.org").await.unwrap().unwrap().id).await.unwrap();
    for (i, sealed) in stray.iter().enumerate() {
        assert!(vault::decrypt_bytes(&kept_key, &format!("{gone_id}/{i}"), sealed).is_err());
    }
    let tombstones = store.tombstone_ids().await.unwrap();
    assert_eq!(tombstones, vec![privacy::tombstone_id(&gone_id)], "one pseudonymous tombstone");
    store.close().await;

    let server = Server::start(&data, &env).await;
    let mut kept = Browser::new(&server);
    kept.get("/signin").await;
    let resp = kept.post_form("/signin", &[("email", "kept@example.org"), ("password", "kept's long passphrase")]).await;
    assert_eq!(resp.status(), 303);
    let image = kept.get(&format!("/api/v1/assets/{kept_asset}")).await.bytes().await.unwrap();
    assert_eq!(png_size(&image), (256, 256), "other accounts are intact and readable");
    let mut gone = Browser::new(&server);
    gone.get("/signin").await;
    let resp = gone.post_form("/signin", &[("email", "gone@example.org"), ("password", "gone's long passphrase")]).await;
    assert_eq!(resp.status(), 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c29_c32_restore_after_purge_keeps_the_account_deleted_sqlite() {
    restore_after_purge_keeps_the_account_deleted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c29_c32_restore_after_purge_keeps_the_account_deleted_postgres() {
    let db = test_db(TestBackend::Postgres).await;
    db.store.close().await;
    restore_after_purge_keeps_the_account_deleted(Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_rewraps_every_key_and_the_old_key_can_go() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = Server::start(&data, &[]).await;
    let mut images = Vec::new();
    for who in ["ana", "ben"] {
        let mut browser = Browser::new(&server);
        browser.sign_up(&format!("{who}@example.org"), &format!("{who}'s long passphrase")).await;
        images.push((who, generate(&mut browser, &format!("{who}'s garden")).await.1));
    }
    server.stop().await;
    let old_key = root.path().join("old.key");
    std::fs::copy(data.join("master.key"), &old_key).unwrap();
    let objects_before: Vec<Vec<u8>> = files_under(&data.join("objects")).iter().map(|f| std::fs::read(f).unwrap()).collect();

    let out = atelier(&data, &["rotate-master-key"]);
    assert!(out.contains("re-wrapped 2 account keys"), "{out}");
    assert_ne!(std::fs::read(data.join("master.key")).unwrap(), std::fs::read(&old_key).unwrap());
    assert!(!data.join("master.key.new").exists());
    let objects_after: Vec<Vec<u8>> = files_under(&data.join("objects")).iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(objects_before, objects_after, "objects are not touched");

    let with_old = open_store(&data, None, &old_key).await;
    let ana = with_old.user_by_email("ana@example.org").await.unwrap().unwrap();
    assert!(with_old.data_key(&ana.id).await.is_err(), "the old master key no longer opens anything");
    with_old.close().await;
    std::fs::remove_file(&old_key).unwrap();

    let server = Server::start(&data, &[]).await;
    for (who, asset) in images {
        let mut browser = Browser::new(&server);
        browser.get("/signin").await;
        let resp = browser
            .post_form("/signin", &[("email", &format!("{who}@example.org")), ("password", &format!("{who}'s long passphrase"))])
            .await;
        assert_eq!(resp.status(), 303);
        let image = browser.get(&format!("/api/v1/assets/{asset}")).await.bytes().await.unwrap();
        assert_eq!(png_size(&image), (256, 256), "{who}'s image still downloads");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c34_security_and_admin_actions_land_in_the_audit_trail() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = Server::start(&data, &[]).await;
    let mut admin = Browser::new(&server);
    admin.sign_up("root@example.org", "root's long passphrase").await;
    let mut user = Browser::new(&server);
    user.sign_up("user@example.org", "user's long passphrase").await;
    let (code, _) = user.json(reqwest::Method::GET, "/api/v1/admin/audit", None).await;
    assert_eq!(code, 404, "non-admins do not see the admin API");

    atelier(&data, &["admin", "set-role", "root@example.org", "admin"]);
    atelier(&data, &["backup", root.path().join("b").to_str().unwrap()]);
    atelier(&data, &["admin", "purge-account", "user@example.org"]);
    let (code, page) = admin.json(reqwest::Method::GET, "/api/v1/admin/audit?limit=100", None).await;
    assert_eq!(code, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in ["role_changed", "backup_created", "account_purged"] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let role = items.iter().find(|e| e["action"] == "role_changed").unwrap();
    assert_eq!(role["detail"], "admin");
    assert!(role["at"].as_i64().unwrap() > 0);
    let cli = atelier(&data, &["admin", "audit", "--limit", "5"]);
    assert!(cli.lines().next().is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{cli}");
    server.stop().await;
}
