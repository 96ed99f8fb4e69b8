//! C03: signing in with OpenID Connect, against a real provider process
//! (npm `oidc-provider`, started per test from tests/oidc/provider.mjs;
//! `npm ci --prefix crates/web/tests/oidc` installs it), and against a
//! local provider that signs whatever ID token a case needs (another key,
//! another audience, a replayed nonce …), which a correct provider never
//! would.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{link_in, mail_to, token_of, wait_for_mail, App, Client, Resp};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::testing::TestBackend;
use tokio::io::{AsyncBufReadExt, BufReader};
use web::{Provider, WebConfig};

const SQLITE: TestBackend = TestBackend::Sqlite;
const SECRET: &str = "atelier-test-secret";

// ------------------------------------------------------ the real provider

struct OidcProcess {
    _child: tokio::process::Child,
    issuer: String,
}

async fn start_provider(name: &str) -> OidcProcess {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "the OIDC provider is not installed: run `npm ci --prefix crates/web/tests/oidc` (Node 20+)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("CLIENT_ID", "atelier")
        .env("CLIENT_SECRET", SECRET)
        .env("REDIRECT_URIS", format!("http://localhost:8080/auth/{name}/callback"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the OIDC provider process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(issuer) = line.strip_prefix("ISSUER ") {
                return issuer.to_string();
            }
        }
        panic!("the OIDC provider exited before listening");
    })
    .await
    .expect("the OIDC provider starts");
    // Keep reading: the provider logs notices, and a closed pipe would kill it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    OidcProcess { _child: child, issuer }
}

/// The browser's side at the provider: its own cookies, no auto-redirects.
struct ProviderBrowser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    issuer: String,
}

impl ProviderBrowser {
    fn new(issuer: &str) -> ProviderBrowser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        ProviderBrowser { http, cookies: BTreeMap::new(), issuer: issuer.to_string() }
    }

    /// Who signs in at the provider next.
    async fn login_as(&self, sub: &str, email: &str, email_verified: bool, name: &str) {
        let body = json!({ "sub": sub, "email": email, "email_verified": email_verified, "name": name });
        let resp = self.http.post(format!("{}/test/login", self.issuer)).json(&body).send().await.unwrap();
        assert!(resp.status().is_success());
    }

    /// Follows the provider's redirects from the authorization URL until it
    /// sends the browser back to Atelier; returns that path and query.
    async fn authorize(&mut self, authorize_url: &str) -> String {
        let mut url = authorize_url.to_string();
        for _ in 0..12 {
            let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let resp = self.http.get(&url).header("cookie", cookie).send().await.unwrap();
            for set in resp.headers().get_all("set-cookie") {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                let (k, v) = pair.split_once('=').unwrap();
                self.cookies.insert(k.to_string(), v.to_string());
            }
            let status = resp.status();
            let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_string());
            let Some(location) = location.filter(|_| status.is_redirection()) else {
                panic!("the provider answered {status}: {}", resp.text().await.unwrap_or_default());
            };
            let next = if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location };
            if let Some(path) = next.strip_prefix("http://localhost:8080") {
                return path.to_string();
            }
            url = next;
        }
        panic!("too many redirects at the provider");
    }
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn with_param(path: &str, name: &str, value: &str) -> String {
    let (base, query) = path.split_once('?').unwrap();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.to_string(), if k == name { value.to_string() } else { v.into_owned() }))
        .collect();
    format!("{base}?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

/// Starts "continue with …" and returns the provider's authorization URL.
async fn start(client: &mut Client, name: &str) -> String {
    let resp = client.post_form(&format!("/auth/{name}/start"), &[]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
    assert!(client.cookies.contains_key("atelier_oauth"), "the flow is bound to this browser");
    resp.location()
}

fn error_code(resp: &Resp) -> String {
    let text = resp.text();
    text.split(r#"data-code=""#)
        .nth(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .unwrap_or_else(|| format!("no error in {} {text}", resp.status))
}

async fn app_with(providers: Vec<Provider>) -> App {
    let mut config = WebConfig::default();
    config.auth.providers = providers;
    App::with_config(SQLITE, config).await
}

async fn identities(app: &App, email: &str) -> Vec<store::Identity> {
    match app.state.store.user_by_email(email).await.unwrap() {
        Some(user) => app.state.store.identities_of_user(&user.id).await.unwrap(),
        None => Vec::new(),
    }
}

#[tokio::test]
async fn c03_oidc_sign_in_against_a_real_provider_creates_the_account_then_finds_it() {
    let idp = start_provider("test").await;
    let app = app_with(vec![Provider::oidc("test", "Test ID", &idp.issuer, "atelier", SECRET)]).await;
    let mut at_idp = ProviderBrowser::new(&idp.issuer);
    at_idp.login_as("sub-ana", "ana@example.org", true, "Ana Lima").await;

    let mut browser = app.client();
    assert!(browser.get("/signin").await.text().contains("Continue with Test ID"));
    let authorize = start(&mut browser, "test").await;
    assert!(authorize.starts_with(&format!("{}/auth?", idp.issuer)), "{authorize}");
    assert_eq!(query_param(&authorize, "code_challenge_method"), "S256");
    assert_eq!(query_param(&authorize, "code_challenge").len(), 43);
    assert_eq!(query_param(&authorize, "nonce").len(), 43);
    assert_eq!(query_param(&authorize, "redirect_uri"), "http://localhost:8080/auth/test/callback");
    let callback = at_idp.authorize(&authorize).await;
    assert!(callback.starts_with("/auth/test/callback?code="), "{callback}");

    // A new person: the account waits for the age check (C05).
    let resp = browser.get(&callback).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signup/complete".to_string()), "{}", resp.text());
    assert!(!browser.cookies.contains_key("atelier_session"));
    let form = browser.get("/signup/complete").await.text();
    assert!(form.contains("ana@example.org") && form.contains(r#"value="Ana Lima""#) && form.contains("Test ID"), "{form}");
    let resp = browser.post_form("/signup/complete", &[("name", "Ana Lima"), ("birth_date", "2020-01-01")]).await;
    assert_eq!(error_code(&resp), "age_requirement_not_met");
    assert!(app.state.store.user_by_email("ana@example.org").await.unwrap().is_none());
    let resp = browser.post_form("/signup/complete", &[("name", "Ana Lima"), ("birth_date", "1991-06-30")]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/generate".to_string()), "{}", resp.text());
    let account = browser.api(axum::http::Method::GET, "/api/v1/account", None, &[]).await.json();
    let user = app.state.store.user_by_email("ana@example.org").await.unwrap().unwrap();
    assert_eq!(account["id"], user.id.as_str());
    assert!(user.email_verified_at.is_some() && user.password_hash.is_none());
    let linked = identities(&app, "ana@example.org").await;
    assert_eq!((linked.len(), linked[0].provider.as_str(), linked[0].subject.as_str()), (1, "oidc:test", "sub-ana"));

    // The second sign-in finds the same account, straight to a session.
    let mut later = app.client();
    let authorize = start(&mut later, "test").await;
    let callback = at_idp.authorize(&authorize).await;
    let resp = later.get(&callback).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/generate".to_string()), "{}", resp.text());
    let again = later.api(axum::http::Method::GET, "/api/v1/account", None, &[]).await.json();
    assert_eq!(again["id"], user.id.as_str());
    let trail: Vec<(String, Option<String>)> =
        app.state.store.audit_entries(Some(&user.id), None, 20).await.unwrap().items.into_iter().map(|e| (e.action, e.detail)).collect();
    assert!(trail.contains(&("sign_in".to_string(), Some("oidc:test".to_string()))), "{trail:?}");
    assert!(trail.iter().any(|(a, _)| a == "identity_linked") && trail.iter().any(|(a, _)| a == "account_created"));
}

#[tokio::test]
async fn c03_oidc_state_is_single_use_and_bound_to_the_browser_that_started() {
    let idp = start_provider("test").await;
    let app = app_with(vec![Provider::oidc("test", "Test ID", &idp.issuer, "atelier", SECRET)]).await;
    let mut at_idp = ProviderBrowser::new(&idp.issuer);
    at_idp.login_as("sub-sam", "sam@example.org", true, "Sam").await;

    let mut browser = app.client();
    let callback = at_idp.authorize(&start(&mut browser, "test").await).await;
    let state = query_param(&callback, "state");
    // A wrong state finds no flow.
    let resp = browser.get(&with_param(&callback, "state", &format!("{state}x"))).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::BAD_REQUEST, "external_sign_in_failed".to_string()));
    // Another browser with the genuine callback (a login CSRF): refused,
    // and the flow is used up.
    let mut other = app.client();
    let resp = other.get(&callback).await;
    assert_eq!(error_code(&resp), "external_sign_in_failed");
    let resp = browser.get(&callback).await;
    assert_eq!(error_code(&resp), "external_sign_in_failed", "a state works once");
    assert!(app.state.store.identity("oidc:test", "sub-sam").await.unwrap().is_none());

    // A fresh flow works once; its replay is refused.
    let mut browser = app.client();
    let callback = at_idp.authorize(&start(&mut browser, "test").await).await;
    assert_eq!(browser.get(&callback).await.location(), "/signup/complete");
    let mut replay = app.client();
    replay.cookies.insert("atelier_oauth".into(), browser.cookies.get("atelier_oauth").cloned().unwrap_or_else(|| "gone".into()));
    assert_eq!(error_code(&replay.get(&callback).await), "external_sign_in_failed");
    // A provider error, and a response naming another issuer.
    let mut denied = app.client();
    let authorize = start(&mut denied, "test").await;
    let resp = denied.get(&format!("/auth/test/callback?error=access_denied&state={}", query_param(&authorize, "state"))).await;
    assert_eq!(error_code(&resp), "external_sign_in_failed");
    let mut mixed = app.client();
    let callback = at_idp.authorize(&start(&mut mixed, "test").await).await;
    assert_eq!(error_code(&mixed.get(&with_param(&callback, "iss", "https://evil.example")).await), "external_sign_in_failed");
    assert!(!browser.cookies.contains_key("atelier_session") && !other.cookies.contains_key("atelier_session"));
}

#[tokio::test]
async fn c03_oidc_links_to_an_existing_account_only_once_its_owner_confirms_by_email() {
    let idp = start_provider("test").await;
    let app = app_with(vec![Provider::oidc("test", "Test ID", &idp.issuer, "atelier", SECRET)]).await;
    let bob = app.client().signed_up("bob@example.org").await;
    let mut at_idp = ProviderBrowser::new(&idp.issuer);

    // An unverified email at the provider links nothing and mails nothing.
    at_idp.login_as("sub-mallory", "bob@example.org", false, "Not Bob").await;
    let mut mallory = app.client();
    let callback = at_idp.authorize(&start(&mut mallory, "test").await).await;
    let resp = mallory.get(&callback).await;
    assert_eq!((resp.status, error_code(&resp)), (StatusCode::FORBIDDEN, "email_not_verified".to_string()));
    assert!(identities(&app, "bob@example.org").await.is_empty());

    // A verified one: the owner must confirm from their mailbox first.
    let mut at_idp = ProviderBrowser::new(&idp.issuer);
    at_idp.login_as("sub-bob", "bob@example.org", true, "Bob").await;
    let mut browser = app.client();
    let callback = at_idp.authorize(&start(&mut browser, "test").await).await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("Confirm by email") && !browser.cookies.contains_key("atelier_session"));
    assert!(identities(&app, "bob@example.org").await.is_empty(), "nothing linked yet");
    let mails = mail_to(&app.state.store, "bob@example.org").await;
    assert_eq!(mails.iter().filter(|m| m.kind == "link_identity").count(), 1, "only the verified sign-in asked");
    let link = link_in(&wait_for_mail(&app.state.store, "bob@example.org", "link_identity").await, "/auth/link?token=");
    assert!(browser.get(&link).await.text().contains("Link Test ID to your Atelier account?"));
    let resp = browser.post_form("/auth/link", &[("token", &token_of(&link))]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/generate".to_string()));
    let account = browser.api(axum::http::Method::GET, "/api/v1/account", None, &[]).await.json();
    assert_eq!(account["id"], bob.as_str());
    assert_eq!(identities(&app, "bob@example.org").await.len(), 1);
    wait_for_mail(&app.state.store, "bob@example.org", "identity_linked").await;
    assert_eq!(error_code(&browser.post_form("/auth/link", &[("token", &token_of(&link))]).await), "invalid_token");
}

// ------------------------------------------- a provider that signs anything

struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        SigningKey { kid: kid.into(), pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap() }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
    }

    fn sign(&self, header: Value, claims: &Value) -> String {
        let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.pair.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}), claims)
    }
}

#[derive(Default)]
struct Scripted {
    /// code → (PKCE challenge, ID token to return)
    codes: HashMap<String, (String, String)>,
    /// Token requests whose verifier matched the challenge.
    pkce_ok: usize,
}

struct LocalProvider {
    issuer: String,
    key: SigningKey,
    script: Arc<Mutex<Scripted>>,
}

async fn start_local_provider() -> LocalProvider {
    use axum::extract::State;
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let key = SigningKey::generate("good");
    let script: Arc<Mutex<Scripted>> = Arc::default();
    let discovery = json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"), "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"), "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    let jwks = json!({ "keys": [key.jwk()] });
    let router = axum::Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(discovery) }))
        .route("/jwks", get(move || async move { axum::Json(jwks) }))
        .route(
            "/token",
            post(
                |State(script): State<Arc<Mutex<Scripted>>>,
                 headers: axum::http::HeaderMap,
                 axum::Form(form): axum::Form<HashMap<String, String>>| async move {
                    let basic = format!("Basic {}", STANDARD.encode(format!("atelier:{SECRET}")));
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})));
                    }
                    let mut script = script.lock().unwrap();
                    let Some((challenge, id_token)) = script.codes.remove(form.get("code").map(String::as_str).unwrap_or("")) else {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                    };
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": "PKCE"})));
                    }
                    script.pkce_ok += 1;
                    (
                        StatusCode::OK,
                        axum::Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token})),
                    )
                },
            ),
        )
        .with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    LocalProvider { issuer, key, script }
}

fn now_secs() -> i64 {
    store::now_ms() / 1000
}

/// One flow against the local provider, whose token endpoint answers with
/// `id_token(nonce of this flow)`; returns the callback's answer, the
/// flow's nonce and the browser.
async fn flow(app: &App, idp: &LocalProvider, id_token: impl FnOnce(&str) -> String) -> (Resp, String, Client) {
    static CODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut browser = app.client();
    let authorize = start(&mut browser, "local").await;
    let (state, nonce, challenge) =
        (query_param(&authorize, "state"), query_param(&authorize, "nonce"), query_param(&authorize, "code_challenge"));
    let code = format!("code-{}", CODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    idp.script.lock().unwrap().codes.insert(code.clone(), (challenge, id_token(&nonce)));
    let resp = browser.get(&format!("/auth/local/callback?code={code}&state={state}")).await;
    (resp, nonce, browser)
}

#[tokio::test]
async fn c03_id_tokens_from_another_key_for_another_audience_or_with_a_replayed_nonce_are_refused() {
    let idp = start_local_provider().await;
    let app = app_with(vec![Provider::oidc("local", "Local ID", &idp.issuer, "atelier", SECRET)]).await;
    let claims = |nonce: &str, sub: &str| {
        json!({"iss": idp.issuer, "aud": "atelier", "sub": sub, "exp": now_secs() + 300, "iat": now_secs(),
               "nonce": nonce, "email": format!("{sub}@example.org"), "email_verified": true, "name": sub})
    };

    // The baseline: a correct token is accepted, after the provider checked
    // the PKCE verifier against the challenge.
    let (resp, first_nonce, _) = flow(&app, &idp, |nonce| idp.key.token(&claims(nonce, "alice"))).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signup/complete".to_string()), "{}", resp.text());
    assert_eq!(idp.script.lock().unwrap().pkce_ok, 1);

    let forger = SigningKey::generate("good"); // the same kid, another key
    let with = |nonce: &str, sub: &str, field: &str, value: Value| {
        let mut c = claims(nonce, sub);
        c[field] = value;
        idp.key.token(&c)
    };
    let results = vec![
        ("signed by another key", flow(&app, &idp, |n| forger.token(&claims(n, "mallory1"))).await),
        ("for another audience", flow(&app, &idp, |n| with(n, "mallory2", "aud", json!("someone-else"))).await),
        ("with a replayed nonce", flow(&app, &idp, |_| idp.key.token(&claims(&first_nonce, "mallory3"))).await),
        ("from another issuer", flow(&app, &idp, |n| with(n, "mallory4", "iss", json!("https://accounts.google.com"))).await),
        ("expired", flow(&app, &idp, |n| with(n, "mallory5", "exp", json!(now_secs() - 3600))).await),
        (
            "unsigned (alg none)",
            flow(&app, &idp, |n| {
                format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims(n, "mallory6").to_string()))
            })
            .await,
        ),
    ];
    for (case, (resp, _, browser)) in results {
        assert_eq!((resp.status, error_code(&resp)), (StatusCode::BAD_REQUEST, "external_sign_in_failed".to_string()), "a token {case}");
        assert!(!browser.cookies.contains_key("atelier_session") && !browser.cookies.contains_key("atelier_pending"), "{case}");
    }
    for n in 1..=6 {
        assert!(app.state.store.identity("oidc:local", &format!("mallory{n}")).await.unwrap().is_none());
    }
    // A token endpoint that got a wrong PKCE verifier would have answered
    // invalid_grant: every request so far carried the right one.
    assert_eq!(idp.script.lock().unwrap().pkce_ok, 7);
}
