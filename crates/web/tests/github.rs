//! C03: signing in with GitHub (plain OAuth2 plus its REST API), against a
//! local server speaking GitHub's endpoints as documented: the token
//! exchange answers JSON only when asked with `Accept: application/json`
//! (form-encoded otherwise) and reports a bad code as 200 with an `error`;
//! `/user` and `/user/emails` need the bearer token and a User-Agent.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{wait_for_mail, App, Client, Resp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::testing::TestBackend;
use web::{Provider, WebConfig};

const SQLITE: TestBackend = TestBackend::Sqlite;

#[derive(Clone)]
struct GitHubUser {
    user: Value,
    emails: Value,
}

#[derive(Default)]
struct Script {
    /// code → (PKCE challenge, who signs in)
    codes: HashMap<String, (String, GitHubUser)>,
    tokens: HashMap<String, GitHubUser>,
}

type Shared = Arc<Mutex<Script>>;

async fn access_token(
    State(script): State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> axum::response::Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut script = script.lock().unwrap();
    let answer = match script.codes.remove(&field("code")) {
        None => json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
        Some(_) if (field("client_id"), field("client_secret")) != ("gh-client".into(), "gh-secret".into()) => {
            json!({"error": "incorrect_client_credentials"})
        }
        Some((challenge, _)) if URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes())) != challenge => {
            json!({"error": "bad_verification_code", "error_description": "PKCE verification failed"})
        }
        Some(_) if field("redirect_uri") != "http://localhost:8080/auth/github/callback" => json!({"error": "redirect_uri_mismatch"}),
        Some((_, who)) => {
            let token = format!("gho_{}", script.tokens.len() + 1);
            script.tokens.insert(token.clone(), who);
            json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})
        }
    };
    if headers.get("accept").and_then(|v| v.to_str().ok()) == Some("application/json") {
        axum::Json(answer).into_response()
    } else {
        let form: Vec<(String, String)> =
            answer.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect();
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish().into_response()
    }
}

fn caller(script: &Shared, headers: &HeaderMap) -> Result<GitHubUser, axum::response::Response> {
    if !headers.contains_key("user-agent") {
        return Err((
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        )
            .into_response());
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    script
        .lock()
        .unwrap()
        .tokens
        .get(token)
        .cloned()
        .ok_or_else(|| (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"}))).into_response())
}

struct FakeGitHub {
    base: String,
    script: Shared,
}

async fn start_github() -> FakeGitHub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let script: Shared = Arc::default();
    let router = axum::Router::new()
        .route("/login/oauth/access_token", post(access_token))
        .route(
            "/user",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                caller(&s, &h).map(|who| axum::Json(who.user).into_response()).unwrap_or_else(|e| e)
            }),
        )
        .route(
            "/user/emails",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                caller(&s, &h).map(|who| axum::Json(who.emails).into_response()).unwrap_or_else(|e| e)
            }),
        )
        .with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    FakeGitHub { base, script }
}

async fn app_with_github(github: &FakeGitHub) -> App {
    let mut config = WebConfig::default();
    let base = &github.base;
    config.auth.providers = vec![Provider::github(
        "gh-client",
        "gh-secret",
        &format!("{base}/login/oauth/authorize"),
        &format!("{base}/login/oauth/access_token"),
        base,
    )];
    App::with_config(SQLITE, config).await
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn octocat(id: u64, login: &str, emails: Value) -> GitHubUser {
    GitHubUser { user: json!({"id": id, "login": login, "name": null, "email": null}), emails }
}

fn primary(email: &str, verified: bool) -> Value {
    json!([{"email": email, "primary": true, "verified": verified, "visibility": "private"},
           {"email": "noreply@users.example.org", "primary": false, "verified": true, "visibility": null}])
}

/// GitHub's round trip for `who`, started from `client` (a sign-in, or a
/// link when `link`); returns Atelier's answer to the callback.
async fn round_trip(github: &FakeGitHub, client: &mut Client, who: GitHubUser, link: bool) -> Resp {
    let fields: &[(&str, &str)] = if link { &[("link", "1")] } else { &[] };
    let resp = client.post_form("/auth/github/start", fields).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
    let authorize = resp.location();
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", github.base)));
    assert_eq!(query_param(&authorize, "client_id"), "gh-client");
    assert_eq!(query_param(&authorize, "code_challenge_method"), "S256");
    let code = format!("gh-code-{}", query_param(&authorize, "state"));
    github.script.lock().unwrap().codes.insert(code.clone(), (query_param(&authorize, "code_challenge"), who));
    client.get(&format!("/auth/github/callback?code={code}&state={}", query_param(&authorize, "state"))).await
}

fn error_code(resp: &Resp) -> String {
    let text = resp.text();
    text.split(r#"data-code=""#)
        .nth(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .unwrap_or_else(|| format!("no error in {} {text}", resp.status))
}

#[tokio::test]
async fn c03_github_sign_in_creates_an_account_then_finds_it_by_numeric_id() {
    let github = start_github().await;
    let app = app_with_github(&github).await;
    let mut browser = app.client();
    assert!(browser.get("/signin").await.text().contains("Continue with GitHub"));
    let resp = round_trip(&github, &mut browser, octocat(583231, "octocat", primary("octo@example.org", true)), false).await;
    assert_eq!(resp.location(), "/signup/complete", "{}", resp.text());
    assert!(browser.get("/signup/complete").await.text().contains(r#"value="octocat""#), "the login stands in for a missing name");
    let resp = browser.post_form("/signup/complete", &[("name", "Octo Cat"), ("birth_date", "1985-10-01")]).await;
    assert_eq!(resp.location(), "/generate");
    let identity = app.state.store.identity("github", "583231").await.unwrap().unwrap();
    assert_eq!(identity.email.as_deref(), Some("octo@example.org"));

    // Renamed, with another primary email: still the same person.
    let mut later = app.client();
    let resp = round_trip(&github, &mut later, octocat(583231, "octo-renamed", primary("new-octo@example.org", true)), false).await;
    assert_eq!(resp.location(), "/generate");
    let account = later.api(Method::GET, "/api/v1/account", None, &[]).await.json();
    assert_eq!((account["id"].as_str().unwrap(), account["email"].as_str().unwrap()), (identity.user_id.as_str(), "octo@example.org"));
    assert!(app.state.store.user_by_email("new-octo@example.org").await.unwrap().is_none());

    // A code GitHub does not know is refused.
    let mut bad = app.client();
    let resp = bad.post_form("/auth/github/start", &[]).await;
    let state = query_param(&resp.location(), "state");
    let resp = bad.get(&format!("/auth/github/callback?code=made-up&state={state}")).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::BAD_REQUEST, "external_sign_in_failed".to_string()));
}

#[tokio::test]
async fn c03_github_unverified_primary_email_is_not_linked() {
    let github = start_github().await;
    let app = app_with_github(&github).await;
    app.client().signed_up("alice@example.org").await;
    let mut intruder = app.client();
    let resp = round_trip(&github, &mut intruder, octocat(1001, "not-alice", primary("alice@example.org", false)), false).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::FORBIDDEN, "email_not_verified".to_string()));
    assert!(!intruder.cookies.contains_key("atelier_session") && !intruder.cookies.contains_key("atelier_pending"));
    assert!(app.state.store.identity("github", "1001").await.unwrap().is_none());
    let mails = common::mail_to(&app.state.store, "alice@example.org").await;
    assert!(mails.iter().all(|m| m.kind != "link_identity"), "the owner is not even asked");
    assert!(app.state.store.user_by_email("noreply@users.example.org").await.unwrap().is_none(), "a secondary email is never used");
}

#[tokio::test]
async fn c34_linking_and_unlinking_providers_is_audited_notified_and_never_removes_the_last_way_in() {
    let github = start_github().await;
    let app = app_with_github(&github).await;
    let mut carol = app.client();
    carol.peer = Some("192.0.2.200:1234".parse::<SocketAddr>().unwrap());
    let carol_id = carol.signed_up("carol@example.org").await;
    let page = carol.get("/account/security").await.text();
    assert!(page.contains("Link GitHub"));
    // Signed in: the link needs no email match.
    let resp = round_trip(&github, &mut carol, octocat(2002, "carol-gh", primary("carol.elsewhere@example.org", true)), true).await;
    assert_eq!(resp.location(), "/account/security?notice=linked", "{}", resp.text());
    let identity = app.state.store.identity("github", "2002").await.unwrap().unwrap();
    assert_eq!(identity.user_id, carol_id);
    let mail = wait_for_mail(&app.state.store, "carol@example.org", "identity_linked").await;
    assert_eq!(mail.subject, "GitHub was linked to your Atelier account");

    // The same GitHub account cannot be linked to someone else.
    let mut dan = app.client();
    dan.signed_up("dan@example.org").await;
    let resp = round_trip(&github, &mut dan, octocat(2002, "carol-gh", primary("carol.elsewhere@example.org", true)), true).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::CONFLICT, "identity_in_use".to_string()));

    let resp = carol.post_form(&format!("/account/security/identities/{}/unlink", identity.id), &[]).await;
    assert!(resp.text().contains("The sign-in method is unlinked."));
    wait_for_mail(&app.state.store, "carol@example.org", "identity_unlinked").await;
    let trail = app.state.store.audit_entries(Some(&carol_id), None, 50).await.unwrap().items;
    for action in ["identity_linked", "identity_unlinked"] {
        let entry = trail.iter().find(|e| e.action == action).unwrap();
        assert_eq!(
            (entry.actor_id.as_deref(), entry.ip.as_deref(), entry.detail.as_deref()),
            (Some(carol_id.as_str()), Some("192.0.2.0"), Some("github"))
        );
    }

    // An account made with GitHub has no password: its only identity stays
    // until it has another way in.
    let mut erin = app.client();
    round_trip(&github, &mut erin, octocat(3003, "erin", primary("erin@example.org", true)), false).await;
    erin.post_form("/signup/complete", &[("name", "Erin"), ("birth_date", "1979-04-04")]).await;
    let only = app.state.store.identity("github", "3003").await.unwrap().unwrap();
    let resp = erin.post_form(&format!("/account/security/identities/{}/unlink", only.id), &[]).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::CONFLICT, "last_sign_in_method".to_string()));
    // A fresh session may set a password without one to confirm.
    let resp = erin.post_form("/account/security/password", &[("new_password", "erin's own passphrase")]).await;
    assert!(resp.text().contains("Your password is changed."), "{}", resp.text());
    let resp = erin.post_form(&format!("/account/security/identities/{}/unlink", only.id), &[]).await;
    assert!(resp.text().contains("The sign-in method is unlinked."));
    let mut again = app.client();
    assert_eq!(
        again.post_form("/signin", &[("email", "erin@example.org"), ("password", "erin's own passphrase")]).await.location(),
        "/generate"
    );
}
