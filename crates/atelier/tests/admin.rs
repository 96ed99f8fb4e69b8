//! The first admin, made by `atelier admin create-user`, signs in to the
//! admin console of the real server.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Browser, Server};

fn create_user(data: &std::path::Path, args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["admin", "create-user"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("ATELIER_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run atelier");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c34_create_user_makes_the_first_admin_and_the_console_is_theirs_only() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = create_user(&data, &["Root@Example.org", "--role", "admin"], "root's long passphrase");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin root@example.org"));
    let out = create_user(&data, &["root@example.org"], "another long passphrase");
    assert!(!out.status.success(), "the email is taken");
    let out = create_user(&data, &["x@example.org", "--role", "owner"], "a long enough passphrase");
    assert!(String::from_utf8_lossy(&out.stderr).contains("role must be one of"));

    let server = Server::start(&data, &[]).await;
    let mut admin = Browser::new(&server);
    admin.get("/signin").await;
    let resp = admin.post_form("/signin", &[("email", "root@example.org"), ("password", "root's long passphrase")]).await;
    assert_eq!(resp.status().as_u16(), 303, "the created account is verified and signs in");
    let page = admin.get("/admin").await;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains(r#"href="/admin/users""#));
    let (code, audit) = admin.json(reqwest::Method::GET, "/api/v1/admin/audit?limit=20", None).await;
    assert_eq!(code, 200);
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"account_created") && actions.contains(&"role_changed"), "{actions:?}");

    let mut user = Browser::new(&server);
    user.sign_up("user@example.org", "user's long passphrase").await;
    assert_eq!(user.get("/admin").await.status().as_u16(), 404);
    server.stop().await;
}
