//! C28: transport security headers and cookie flags.

mod common;

use axum::http::StatusCode;
use common::App;
use store::testing::TestBackend;
use web::WebConfig;

#[tokio::test]
async fn c28_behind_https_cookies_are_secure_and_hsts_is_sent() {
    let app = App::with_config(TestBackend::Sqlite, WebConfig { https: true, ..WebConfig::default() }).await;
    let mut client = app.client();
    let resp = client.get("/signin").await;
    assert_eq!(resp.headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
    assert!(resp.set_cookies().iter().all(|c| c.contains("; Secure")), "{:?}", resp.set_cookies());
    let resp = client.verified_sign_up("tls@example.org", "a long enough passphrase").await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let session = resp.set_cookies().into_iter().find(|c| c.starts_with("atelier_session=")).unwrap();
    assert!(session.contains("; Secure") && session.contains("HttpOnly") && session.contains("SameSite=Lax"));
    for path in ["/", "/api/v1/tasks", "/static/app.js", "/healthz"] {
        let resp = client.get(path).await;
        for header in
            ["strict-transport-security", "content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"]
        {
            assert!(resp.headers.contains_key(header), "{path} lacks {header}");
        }
    }
    assert_eq!(client.get("/gallery").await.headers["cache-control"], "no-store", "private pages are not cached");
    let resp = client.post_form("/signout", &[]).await;
    assert!(resp.headers["clear-site-data"].to_str().unwrap().contains("cache"));
}

#[tokio::test]
async fn c28_plain_http_sends_no_hsts_and_no_secure_flag() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut client = app.client();
    let resp = client.get("/signin").await;
    assert!(!resp.headers.contains_key("strict-transport-security"));
    assert!(resp.set_cookies().iter().all(|c| !c.contains("Secure")));
}
