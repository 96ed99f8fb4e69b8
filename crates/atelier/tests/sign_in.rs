//! C03 through the real binary: an OpenID Connect provider configured in
//! atelier.toml, a real provider process (npm `oidc-provider`, installed by
//! `npm ci --prefix crates/web/tests/oidc`), links in mails made from the
//! address the server listens on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Browser, Server};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn start_provider(port: u16, redirect_uri: &str) -> tokio::process::Child {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests/oidc");
    assert!(dir.join("node_modules/oidc-provider").exists(), "run `npm ci --prefix crates/web/tests/oidc` (Node 20+) first");
    let mut child = tokio::process::Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("CLIENT_ID", "atelier")
        .env("CLIENT_SECRET", "binary-test-secret")
        .env("REDIRECT_URIS", redirect_uri)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the OIDC provider");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("ISSUER ") {
                return;
            }
        }
        panic!("the OIDC provider exited");
    })
    .await
    .expect("the OIDC provider starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Follows the provider's redirects until it sends the browser back to
/// `back_to`; returns that URL.
async fn at_provider(issuer: &str, authorize: &str, back_to: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut cookies = BTreeMap::new();
    let mut url = authorize.to_string();
    for _ in 0..12 {
        let cookie = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let resp = http.get(&url).header("cookie", cookie).send().await.unwrap();
        for set in resp.headers().get_all("set-cookie") {
            let (k, v) = set.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap();
            cookies.insert(k.to_string(), v.to_string());
        }
        let location =
            resp.headers().get("location").unwrap_or_else(|| panic!("provider answered {}", resp.status())).to_str().unwrap().to_string();
        let next = if location.starts_with('/') { format!("{issuer}{location}") } else { location };
        if next.starts_with(back_to) {
            return next;
        }
        url = next;
    }
    panic!("too many redirects at the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_oidc_provider_from_the_config_file_signs_a_new_person_up_through_the_binary() {
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = root.path().join("atelier.toml");
    std::fs::write(
        &config,
        format!("[[auth.oidc]]\nname = \"corp\"\nlabel = \"Corp SSO\"\nissuer = \"{issuer}\"\nclient_id = \"atelier\"\nclient_secret = \"binary-test-secret\"\n"),
    )
    .unwrap();
    let server = Server::start(&root.path().join("data"), &[("ATELIER_CONFIG", config.to_str().unwrap())]).await;
    // Discovery is lazy: the provider may start after Atelier, once the
    // redirect URI (made from the listening address) is known.
    let callback = format!("{}/auth/corp/callback", server.url);
    let _provider = start_provider(port, &callback).await;
    let http = reqwest::Client::new();
    let login = serde_json::json!({"sub": "corp-42", "email": "kim@corp.example", "email_verified": true, "name": "Kim Park"});
    assert!(http.post(format!("{issuer}/test/login")).json(&login).send().await.unwrap().status().is_success());

    let mut browser = Browser::new(&server);
    let page = browser.get("/signin").await.text().await.unwrap();
    assert!(page.contains("Continue with Corp SSO"), "{page}");
    let resp = browser.post_form("/auth/corp/start", &[]).await;
    assert_eq!(resp.status(), 303);
    let authorize = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.contains(&format!("redirect_uri={}", url_encode(&callback))), "{authorize} vs {callback}");
    let back = at_provider(&issuer, &authorize, &callback).await;
    let resp = browser.get(back.trim_start_matches(&server.url)).await;
    assert_eq!(resp.headers()["location"], "/signup/complete");
    let resp = browser.post_form("/signup/complete", &[("name", "Kim Park"), ("birth_date", "1993-09-12")]).await;
    assert_eq!(resp.headers()["location"], "/generate");
    let (status, account) = browser.json(reqwest::Method::GET, "/api/v1/account", None).await;
    assert_eq!((status, account["email"].as_str()), (200, Some("kim@corp.example")));
    server.stop().await;
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c04_password_reset_through_the_binary_links_to_the_listening_address_and_ends_sessions() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(&root.path().join("data"), &[]).await;
    let mut first = Browser::new(&server);
    first.sign_up("rae@example.org", "the first passphrase").await;

    let mut other = Browser::new(&server);
    other.get("/reset-password").await;
    let resp = other.post_form("/reset-password", &[("email", "rae@example.org")]).await;
    assert_eq!(resp.headers()["location"], "/reset-password/sent");
    let token = other.mailed_token("rae@example.org", "password_reset", "/reset-password").await;
    let store = common::open_store(&server.data_dir, None, &server.data_dir.join("master.key")).await;
    let user = store.user_by_email("rae@example.org").await.unwrap().unwrap();
    let mail = store.mail_of_user(&user.id).await.unwrap().into_iter().find(|m| m.kind == "password_reset").unwrap();
    assert!(
        mail.body_text.contains(&format!("{}/reset-password?token={token}", server.url)),
        "links use the listening address {}: {} (token {token})",
        server.url,
        mail.body_text
    );
    store.close().await;
    let resp = other.post_form("/reset-password", &[("token", &token), ("password", "the second passphrase")]).await;
    assert_eq!(resp.headers()["location"], "/signin?notice=password_reset");
    let (status, _) = first.json(reqwest::Method::GET, "/api/v1/account", None).await;
    assert_eq!(status, 401, "the reset ended the other session");
    let resp = other.post_form("/signin", &[("email", "rae@example.org"), ("password", "the second passphrase")]).await;
    assert_eq!(resp.headers()["location"], "/generate");
    server.stop().await;
}
