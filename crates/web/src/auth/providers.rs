//! External sign-in providers: Google and any OpenID Connect provider (by
//! issuer, from its discovery document), and GitHub (plain OAuth2 plus its
//! REST API). This module speaks the protocols; `external.rs` decides what a
//! returning identity means for accounts.
//!
//! Every provider call goes through one client that follows no redirects
//! (a provider, or anyone on the path, cannot bounce our requests to
//! internal addresses), with short timeouts and a response size cap.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use domain::{Error, ErrorCode, Result};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jwt::{self, JwkSet};

/// Largest provider response read (discovery, keys, tokens, user info).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Discovery documents and key sets are fetched again after this long.
const METADATA_TTL_MS: i64 = 3_600_000;
/// An unknown `kid` triggers a key refetch at most this often.
const KEY_REFETCH_MS: i64 = 60_000;
/// Allowed clock difference with the provider for `exp`/`iat`.
const CLOCK_SKEW_SECS: i64 = 120;

#[derive(Clone)]
pub enum ProviderKind {
    /// OpenID Connect: endpoints and keys from `{issuer}/.well-known/openid-configuration`.
    Oidc { issuer: String },
    /// GitHub's OAuth apps: configurable base URLs (GitHub Enterprise, tests).
    GitHub { authorize_url: String, token_url: String, api_url: String },
}

#[derive(Clone)]
pub struct Provider {
    /// URL slug: `google`, `github` or the configured name of an OIDC provider.
    pub name: String,
    /// Shown on buttons and in mails.
    pub label: String,
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: String,
}

/// Hand-written so the client secret never reaches a log.
impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ProviderKind::Oidc { issuer } => format!("oidc {issuer}"),
            ProviderKind::GitHub { api_url, .. } => format!("github {api_url}"),
        };
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl Provider {
    pub fn google(client_id: &str, client_secret: &str) -> Provider {
        Provider::oidc("google", "Google", GOOGLE_ISSUER, client_id, client_secret)
    }

    pub fn oidc(name: &str, label: &str, issuer: &str, client_id: &str, client_secret: &str) -> Provider {
        Provider {
            name: name.to_string(),
            label: label.to_string(),
            kind: ProviderKind::Oidc { issuer: issuer.trim_end_matches('/').to_string() },
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
        }
    }

    pub fn github(client_id: &str, client_secret: &str, authorize_url: &str, token_url: &str, api_url: &str) -> Provider {
        Provider {
            name: "github".into(),
            label: "GitHub".into(),
            kind: ProviderKind::GitHub {
                authorize_url: authorize_url.to_string(),
                token_url: token_url.to_string(),
                api_url: api_url.trim_end_matches('/').to_string(),
            },
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
        }
    }

    /// The `identities.provider` value: `google`, `github`, `oidc:<name>`.
    pub fn key(&self) -> String {
        match (&self.kind, self.name.as_str()) {
            (ProviderKind::GitHub { .. }, _) => "github".into(),
            (ProviderKind::Oidc { issuer }, "google") if issuer == GOOGLE_ISSUER => "google".into(),
            (_, name) => format!("oidc:{name}"),
        }
    }
}

/// Is `name` usable as a provider slug in URLs?
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What a provider tells us about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalProfile {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OidcMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

struct Cached {
    fetched_at: i64,
    keys_fetched_at: i64,
    metadata: Arc<OidcMetadata>,
    keys: Arc<JwkSet>,
}

/// The HTTP client and the per-issuer metadata cache.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl Default for ProviderClient {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("Atelier/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        ProviderClient { http, cache: Arc::default() }
    }
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderClient")
    }
}

fn failed(message: impl Into<String>) -> Error {
    let message = message.into();
    tracing::warn!(reason = %message, "external sign-in refused");
    Error::new(ErrorCode::ExternalSignInFailed, message)
}

fn unreachable(e: impl fmt::Display) -> Error {
    tracing::warn!(error = %e, "identity provider unreachable");
    Error::new(ErrorCode::Unavailable, "the sign-in provider could not be reached")
}

/// PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn with_query(base: &str, params: &[(&str, &str)]) -> Result<String> {
    let mut url = url::Url::parse(base).map_err(|_| failed(format!("bad provider URL {base}")))?;
    url.query_pairs_mut().extend_pairs(params);
    Ok(url.into())
}

/// RFC 6749 2.3.1: client credentials are form-encoded before Basic.
fn basic_auth(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", enc(id), enc(secret))))
}

fn claim_str<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `email_verified` as a boolean; some providers send the string "true".
fn claim_true(claims: &Value, name: &str) -> bool {
    match claims.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

impl ProviderClient {
    async fn read_json(&self, response: reqwest::Response) -> Result<(u16, Value)> {
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n as usize > MAX_RESPONSE_BYTES) {
            return Err(failed("provider response too large"));
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(failed("provider response too large"));
        }
        let value =
            serde_json::from_slice(&bytes).map_err(|_| failed(format!("provider answered {status} with something other than JSON")))?;
        Ok((status, value))
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<(u16, Value)> {
        let mut request = self.http.get(url).header("accept", "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(unreachable)?;
        self.read_json(response).await
    }

    /// The provider's metadata and keys, from cache when fresh. With
    /// `want_kid` not in the cached keys, the keys are fetched again (key
    /// rotation), at most once a minute.
    async fn oidc_metadata(&self, issuer: &str, now: i64, want_kid: Option<&str>) -> Result<(Arc<OidcMetadata>, Arc<JwkSet>)> {
        {
            let cache = self.cache.lock().expect("cache lock");
            if let Some(c) = cache.get(issuer) {
                let fresh = now - c.fetched_at < METADATA_TTL_MS;
                let keys_ok = want_kid.is_none_or(|kid| c.keys.has_kid(kid)) || now - c.keys_fetched_at < KEY_REFETCH_MS;
                if fresh && keys_ok {
                    return Ok((c.metadata.clone(), c.keys.clone()));
                }
            }
        }
        let (status, doc) = self.get_json(&format!("{issuer}/.well-known/openid-configuration"), None).await?;
        if status != 200 {
            return Err(failed(format!("discovery answered {status}")));
        }
        let metadata: OidcMetadata = serde_json::from_value(doc).map_err(|e| failed(format!("bad discovery document: {e}")))?;
        // OIDC Discovery 4.3: the document must name exactly the issuer we asked.
        if metadata.issuer.trim_end_matches('/') != issuer {
            return Err(failed(format!("discovery names issuer {:?}, expected {issuer:?}", metadata.issuer)));
        }
        let (status, keys) = self.get_json(&metadata.jwks_uri, None).await?;
        if status != 200 {
            return Err(failed(format!("key set answered {status}")));
        }
        let keys: JwkSet = serde_json::from_value(keys).map_err(|e| failed(format!("bad key set: {e}")))?;
        let (metadata, keys) = (Arc::new(metadata), Arc::new(keys));
        self.cache
            .lock()
            .expect("cache lock")
            .insert(issuer.to_string(), Cached { fetched_at: now, keys_fetched_at: now, metadata: metadata.clone(), keys: keys.clone() });
        Ok((metadata, keys))
    }

    /// Where to send the browser to sign in.
    pub async fn authorize_url(
        &self,
        provider: &Provider,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
        now: i64,
    ) -> Result<String> {
        let challenge = pkce_challenge(verifier);
        match &provider.kind {
            ProviderKind::Oidc { issuer } => {
                let (metadata, _) = self.oidc_metadata(issuer, now, None).await?;
                with_query(
                    &metadata.authorization_endpoint,
                    &[
                        ("response_type", "code"),
                        ("client_id", &provider.client_id),
                        ("redirect_uri", redirect_uri),
                        ("scope", "openid email profile"),
                        ("state", state),
                        ("nonce", nonce),
                        ("code_challenge", &challenge),
                        ("code_challenge_method", "S256"),
                    ],
                )
            }
            ProviderKind::GitHub { authorize_url, .. } => with_query(
                authorize_url,
                &[
                    ("client_id", &provider.client_id),
                    ("redirect_uri", redirect_uri),
                    ("scope", "read:user user:email"),
                    ("state", state),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("allow_signup", "true"),
                ],
            ),
        }
    }

    /// Redeems an authorization code and returns who signed in, after every
    /// check of the ID token (OIDC) or the API answers (GitHub).
    pub async fn exchange(
        &self,
        provider: &Provider,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<ExternalProfile> {
        match &provider.kind {
            ProviderKind::Oidc { issuer } => self.exchange_oidc(provider, issuer, code, redirect_uri, verifier, nonce, now).await,
            ProviderKind::GitHub { token_url, api_url, .. } => {
                self.exchange_github(provider, token_url, api_url, code, redirect_uri, verifier).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange_oidc(
        &self,
        provider: &Provider,
        issuer: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<ExternalProfile> {
        let (metadata, _) = self.oidc_metadata(issuer, now, None).await?;
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .header("accept", "application/json")
            .header("authorization", basic_auth(&provider.client_id, &provider.client_secret))
            .form(&[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri), ("code_verifier", verifier)])
            .send()
            .await
            .map_err(unreachable)?;
        let (status, body) = self.read_json(response).await?;
        if status != 200 {
            return Err(failed(format!("token endpoint answered {status}: {}", claim_str(&body, "error").unwrap_or("?"))));
        }
        let id_token = claim_str(&body, "id_token").ok_or_else(|| failed("no ID token in the token response"))?;
        let kid = jwt::token_kid(id_token);
        let (metadata, keys) = self.oidc_metadata(issuer, now, kid.as_deref()).await?;
        let claims = jwt::verify(id_token, &keys).map_err(|e| failed(format!("ID token: {e}")))?;
        check_id_token_claims(&claims, &metadata.issuer, &provider.client_id, nonce, now)?;
        let subject =
            claim_str(&claims, "sub").filter(|s| s.len() <= 255).ok_or_else(|| failed("ID token without a usable sub"))?.to_string();
        let mut profile = ExternalProfile {
            provider: provider.key(),
            email: claim_str(&claims, "email").map(str::to_string),
            email_verified: claim_true(&claims, "email_verified"),
            name: claim_str(&claims, "name").map(str::to_string),
            subject,
        };
        // Providers may keep scope claims out of the ID token (OIDC Core
        // 5.4): then ask the UserInfo endpoint, whose `sub` must match.
        if profile.email.is_none() {
            if let (Some(endpoint), Some(access_token)) = (metadata.userinfo_endpoint.as_deref(), claim_str(&body, "access_token")) {
                let (status, info) = self.get_json(endpoint, Some(access_token)).await?;
                if status == 200 && claim_str(&info, "sub") == Some(profile.subject.as_str()) {
                    profile.email = claim_str(&info, "email").map(str::to_string);
                    profile.email_verified = claim_true(&info, "email_verified");
                    profile.name = profile.name.or_else(|| claim_str(&info, "name").map(str::to_string));
                }
            }
        }
        Ok(profile)
    }

    async fn exchange_github(
        &self,
        provider: &Provider,
        token_url: &str,
        api_url: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<ExternalProfile> {
        let response = self
            .http
            .post(token_url)
            .header("accept", "application/json")
            .form(&[
                ("client_id", provider.client_id.as_str()),
                ("client_secret", provider.client_secret.as_str()),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let (status, body) = self.read_json(response).await?;
        // GitHub reports a bad code as 200 with an `error` field.
        let access_token = match claim_str(&body, "access_token") {
            Some(t) if status == 200 => t.to_string(),
            _ => return Err(failed(format!("GitHub token exchange answered {status}: {}", claim_str(&body, "error").unwrap_or("?")))),
        };
        let github = |path: &str| {
            self.http
                .get(format!("{api_url}{path}"))
                .bearer_auth(&access_token)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
        };
        let (status, user) = self.read_json(github("/user").send().await.map_err(unreachable)?).await?;
        if status != 200 {
            return Err(failed(format!("GitHub /user answered {status}")));
        }
        // The numeric id is the stable key; logins can be renamed.
        let subject = user.get("id").and_then(Value::as_u64).ok_or_else(|| failed("GitHub user without a numeric id"))?.to_string();
        let name = claim_str(&user, "name").or_else(|| claim_str(&user, "login")).map(str::to_string);
        let (status, emails) = self.read_json(github("/user/emails").send().await.map_err(unreachable)?).await?;
        if status != 200 {
            return Err(failed(format!("GitHub /user/emails answered {status}")));
        }
        let primary = emails.as_array().and_then(|list| list.iter().find(|e| e.get("primary").and_then(Value::as_bool) == Some(true)));
        Ok(ExternalProfile {
            provider: provider.key(),
            subject,
            email: primary.and_then(|e| claim_str(e, "email")).map(str::to_string),
            email_verified: primary.is_some_and(|e| e.get("verified").and_then(Value::as_bool) == Some(true)),
            name,
        })
    }
}

/// OIDC Core 3.1.3.7: issuer, audience (and authorized party), expiry,
/// issue time and the nonce bound to this browser's flow.
pub fn check_id_token_claims(claims: &Value, issuer: &str, client_id: &str, nonce: &str, now_ms: i64) -> Result<()> {
    if claim_str(claims, "iss") != Some(issuer) {
        return Err(failed(format!("ID token issuer {:?} is not {issuer:?}", claims.get("iss"))));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(failed("ID token is for another client (aud)"));
    }
    let azp = claim_str(claims, "azp");
    if (audiences.len() > 1 && azp.is_none()) || azp.is_some_and(|a| a != client_id) {
        return Err(failed("ID token authorized party (azp) is not this client"));
    }
    let now = now_ms / 1000;
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| failed("ID token without exp"))?;
    if now > exp + CLOCK_SKEW_SECS {
        return Err(failed("ID token expired"));
    }
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| failed("ID token without iat"))?;
    if iat > now + CLOCK_SKEW_SECS {
        return Err(failed("ID token issued in the future"));
    }
    let sent = claim_str(claims, "nonce").unwrap_or("");
    if !crate::context::tokens_match(sent, nonce) {
        return Err(failed("ID token nonce does not match this sign-in"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_token_claims_are_checked() {
        let now = 1_800_000_000_000;
        let base =
            json!({"iss": "https://id.example", "aud": "atelier", "exp": 1_800_000_300, "iat": 1_800_000_000, "nonce": "n1", "sub": "s"});
        let ok = |v: &Value| check_id_token_claims(v, "https://id.example", "atelier", "n1", now);
        assert!(ok(&base).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        for bad in [
            with("iss", json!("https://evil.example")),
            with("aud", json!("someone-else")),
            with("aud", json!(["atelier", "other"])),
            with("azp", json!("other")),
            with("exp", json!(1_799_999_000)),
            with("iat", json!(1_800_001_000)),
            with("nonce", json!("n0")),
        ] {
            assert_eq!(ok(&bad).unwrap_err().code, ErrorCode::ExternalSignInFailed, "{bad}");
        }
        assert!(ok(&with("aud", json!(["other", "atelier"]))
            .as_object()
            .cloned()
            .map(|mut m| {
                m.insert("azp".into(), json!("atelier"));
                Value::Object(m)
            })
            .unwrap())
        .is_ok());
        let mut no_nonce = base.clone();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert!(ok(&no_nonce).is_err());
    }

    #[test]
    fn pkce_s256_matches_rfc7636_example() {
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn provider_keys_and_names() {
        assert_eq!(Provider::google("id", "s").key(), "google");
        assert_eq!(Provider::oidc("corp", "Corp", "https://sso.example/", "id", "s").key(), "oidc:corp");
        assert_eq!(Provider::github("id", "s", "a", "t", "https://api.github.com/").key(), "github");
        assert!(valid_name("corp-sso") && !valid_name("Corp") && !valid_name("") && !valid_name("a/b"));
        assert!(!format!("{:?}", Provider::google("id", "top-secret")).contains("top-secret"));
    }
}
