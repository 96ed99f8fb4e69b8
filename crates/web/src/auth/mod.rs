//! Accounts and sign-in: passwords, sessions, email verification, password
//! reset, the TOTP second factor, throttling, security notices and the
//! audit trail (C34). External providers live in `external`/`providers`.
//! Pages and the API call these services; nothing here renders HTML.

pub mod clock;
pub mod external;
pub mod jwt;
pub mod notices;
pub mod providers;
pub mod throttle;
pub mod totp;

use std::net::IpAddr;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use domain::account::{check_age, check_password, normalize_email, normalize_name, Date};
use domain::ids::to_hex;
use domain::{Error, ErrorCode, Result};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use store::{AuditEntry, NewAuthToken, NewSession, NewUser, Session, User};

use crate::AppState;
use clock::Clock;
use providers::{Provider, ProviderClient};

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
pub const PASSWORD_PARAMS: (u32, u32, u32) = (19_456, 2, 1);

/// Token purposes (`auth_tokens.purpose`).
pub mod purpose {
    pub const VERIFY_EMAIL: &str = "verify_email";
    pub const RESET_PASSWORD: &str = "reset_password";
    pub const CHANGE_EMAIL: &str = "change_email";
    pub const LINK_IDENTITY: &str = "link_identity";
    pub const EXTERNAL_SIGN_UP: &str = "external_sign_up";
    pub const SECOND_FACTOR: &str = "second_factor";
    pub const OAUTH_STATE: &str = "oauth_state";
}

/// How long a signed-in session counts as "just authenticated" for
/// sensitive changes on an account without a password.
pub const REAUTH_WINDOW_MS: i64 = 10 * 60_000;
/// How long the second-factor step may take after the first factor.
pub const SECOND_FACTOR_MS: i64 = 5 * 60_000;
/// Identity-link and email-change confirmations.
pub const CONFIRMATION_MS: i64 = 24 * 3_600_000;
/// The same notice to one account at most this often per hour (mail bombing).
pub const NOTICES_PER_HOUR: usize = 3;

/// Sign-in settings beyond sessions: providers, throttling, token lifetimes.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Google, GitHub and generic OIDC providers; empty = passwords only.
    pub providers: Vec<Provider>,
    pub throttle: throttle::Policy,
    /// Password reset links expire after this (at most 30 minutes).
    pub password_reset_ms: i64,
    pub email_verification_ms: i64,
    pub client: ProviderClient,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            providers: Vec::new(),
            throttle: throttle::Policy::default(),
            password_reset_ms: 30 * 60_000,
            email_verification_ms: 48 * 3_600_000,
            client: ProviderClient::default(),
        }
    }
}

impl AuthConfig {
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The provider behind an `identities.provider` key.
    pub fn provider_by_key(&self, key: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.key() == key)
    }
}

fn argon2() -> Argon2<'static> {
    let (m, t, p) = PASSWORD_PARAMS;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(m, t, p, None).expect("valid argon2 parameters"))
}

/// Hashes off the async runtime: a hash takes tens of milliseconds of CPU.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| Error::internal("password hashing failed"))
    })
    .await
    .map_err(|_| Error::internal("password hashing task failed"))?
}

/// Verifies against `hash`, or against a dummy hash when the account does
/// not exist, so response time does not reveal which emails are registered.
pub(crate) async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| dummy_hash().to_string());
        let matches =
            PasswordHash::new(&stored).map(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok()).unwrap_or(false);
        known && matches
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2().hash_password(new_token().as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

/// A new random 256-bit token, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Only the hash of a session token is stored: a leaked table opens no session.
pub fn token_hash(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// IPv4 to its /24, IPv6 to its /48, before anything stores it.
pub fn truncate_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::", s[0], s[1], s[2])
        }
    }
}

fn clock(state: &AppState) -> &Clock {
    &state.config.clock
}

/// Records a security action (C34) with the truncated IP. Best effort: the
/// action is already done, so a failed write is logged, not returned.
pub async fn audit(state: &AppState, actor: Option<&str>, action: &str, target: Option<&str>, ip: Option<IpAddr>, detail: Option<&str>) {
    let ip = ip.map(truncate_ip);
    let entry = AuditEntry { actor_id: actor, action, target_id: target, ip: ip.as_deref(), detail };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(action, error = %e, "audit entry not written");
    }
}

/// Issues a single-use token of `purpose`; returns the token (only its hash
/// is stored).
pub async fn issue_token(
    state: &AppState,
    purpose: &str,
    user_id: Option<&str>,
    data: Option<serde_json::Value>,
    ttl_ms: i64,
) -> Result<String> {
    let token = new_token();
    let now = clock(state).now_ms();
    state
        .store
        .create_auth_token(
            NewAuthToken {
                purpose: purpose.to_string(),
                token_hash: token_hash(&token),
                user_id: user_id.map(str::to_string),
                data: data.map(|d| d.to_string()),
                expires_at: now + ttl_ms,
            },
            now,
        )
        .await?;
    Ok(token)
}

pub fn invalid_token() -> Error {
    Error::new(ErrorCode::InvalidToken, "this link is invalid, used or expired")
}

/// Uses a token once; `invalid_token` if it is unknown, used or expired.
pub async fn consume_token(state: &AppState, purpose: &str, token: &str) -> Result<store::AuthToken> {
    if token.is_empty() || token.len() > 64 {
        return Err(invalid_token());
    }
    state.store.consume_auth_token(purpose, &token_hash(token), clock(state).now_ms()).await?.ok_or_else(invalid_token)
}

/// Reads a usable token without using it (confirmation pages).
pub async fn peek_token(state: &AppState, purpose: &str, token: &str) -> Result<store::AuthToken> {
    if token.is_empty() || token.len() > 64 {
        return Err(invalid_token());
    }
    state.store.peek_auth_token(purpose, &token_hash(token), clock(state).now_ms()).await?.ok_or_else(invalid_token)
}

async fn token_user(state: &AppState, token: &store::AuthToken) -> Result<User> {
    let id = token.user_id.as_deref().ok_or_else(invalid_token)?;
    state.store.user_by_id(id).await?.filter(|u| u.status == "active").ok_or_else(invalid_token)
}

/// At most [`NOTICES_PER_HOUR`] notices of one kind per account and hour:
/// records the sending and says whether it may go.
async fn notice_allowed(state: &AppState, kind: &str, user_id: &str) -> Result<bool> {
    let now = clock(state).now_ms();
    let bucket = format!("notice:{kind}:{user_id}");
    let recent = state.store.auth_failures_since(&bucket, now - throttle::WINDOW_MS).await?;
    if recent.len() >= NOTICES_PER_HOUR {
        tracing::info!(user = %user_id, kind, "notice suppressed (too many this hour)");
        return Ok(false);
    }
    state.store.record_auth_failure(&bucket, now).await?;
    Ok(true)
}

// ------------------------------------------------------------------ sign-up

pub struct SignUp {
    pub name: String,
    pub email: String,
    pub password: String,
    pub birth_date: String,
    pub locale: Option<String>,
}

/// Sign-up without account enumeration. Every rule is checked first (their
/// errors do not depend on who is registered) and the password is hashed in
/// every case; then the answer is the same "check your email" whether the
/// address is new or taken:
/// - new: the account is created unverified and a verification link mailed
///   (the link signs the person in);
/// - taken: the owner is mailed instead (a sign-in and a reset link, or a
///   fresh verification link if they never verified), nothing else changes.
///
/// That mail work runs after the response, so its duration does not tell
/// the cases apart either. The date of birth is only checked, never stored.
pub async fn sign_up(state: &AppState, form: SignUp, today: Date) -> Result<()> {
    let name = normalize_name(&form.name)?;
    let email = normalize_email(&form.email)?;
    check_password(&form.password)?;
    check_age(&form.birth_date, today, state.config.min_age)?;
    let password_hash = hash_password(form.password).await?;
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = sign_up_mail(&state, NewUser { email, name, password_hash: Some(password_hash), locale: form.locale }).await {
            tracing::error!(error = %e, "sign-up not completed");
        }
    });
    Ok(())
}

async fn sign_up_mail(state: &AppState, new: NewUser) -> Result<()> {
    let existing = match state.store.user_by_email(&new.email).await? {
        Some(user) => user,
        None => match state.store.create_user(new.clone()).await {
            Ok(user) => {
                tracing::info!(user = %user.id, "account created");
                audit(state, Some(&user.id), "account_created", Some(&user.id), None, Some("password")).await;
                crate::admin::after_sign_up(state, &user).await?;
                return send_verification(state, &user).await;
            }
            // Taken between the lookup and the insert: treat as taken.
            Err(e) if e.code == ErrorCode::EmailTaken => {
                state.store.user_by_email(&new.email).await?.ok_or_else(|| Error::internal("account vanished"))?
            }
            Err(e) => return Err(e),
        },
    };
    if existing.status != "active" || !notice_allowed(state, "sign_up_existing", &existing.id).await? {
        return Ok(());
    }
    if existing.email_verified_at.is_none() {
        return send_verification(state, &existing).await;
    }
    let reset = issue_token(state, purpose::RESET_PASSWORD, Some(&existing.id), None, state.config.auth.password_reset_ms).await?;
    let reset_link = notices::link(state, &format!("/reset-password?token={reset}"));
    let signin_link = notices::link(state, "/signin");
    let minutes = (state.config.auth.password_reset_ms / 60_000).to_string();
    notices::send(state, &existing, "sign_up_existing", &[("signin_link", &signin_link), ("link", &reset_link), ("minutes", &minutes)])
        .await
}

/// Mails a verification link to the account's address.
pub async fn send_verification(state: &AppState, user: &User) -> Result<()> {
    let token = issue_token(state, purpose::VERIFY_EMAIL, Some(&user.id), None, state.config.auth.email_verification_ms).await?;
    let link = notices::link(state, &format!("/verify-email?token={token}"));
    let hours = (state.config.auth.email_verification_ms / 3_600_000).to_string();
    notices::send(state, user, "verify_email", &[("link", &link), ("hours", &hours)]).await
}

/// Uses a verification link: the address is verified and the person may be
/// signed in (through the second factor if the account has one).
pub async fn verify_email(state: &AppState, token: &str, ip: Option<IpAddr>) -> Result<User> {
    let token = consume_token(state, purpose::VERIFY_EMAIL, token).await?;
    let user = token_user(state, &token).await?;
    state.store.mark_email_verified(&user.id, clock(state).now_ms()).await?;
    audit(state, Some(&user.id), "email_verified", Some(&user.id), ip, None).await;
    Ok(state.store.user_by_id(&user.id).await?.unwrap_or(user))
}

// ------------------------------------------------------------------ sign-in

/// Checks an email and password, throttled per account and network. Every
/// credential failure is the same `invalid_credentials`; suspension and a
/// missing verification are only told after a correct password.
pub async fn password_sign_in(state: &AppState, email: &str, password: &str, ip: Option<IpAddr>) -> Result<User> {
    let now = clock(state).now_ms();
    let normalized = normalize_email(email).ok();
    let bucket = throttle::account_bucket(normalized.as_deref().unwrap_or(email.trim()));
    let ip_bucket = ip.map(truncate_ip);
    let policy = state.config.auth.throttle;
    throttle::check(&state.store, &policy, &bucket, ip_bucket.as_deref(), now).await?;
    let user = match &normalized {
        Some(email) => state.store.user_by_email(email).await?,
        None => None,
    };
    let ok = verify_password(password.to_string(), user.as_ref().and_then(|u| u.password_hash.clone())).await;
    let target = user.as_ref().map(|u| u.id.clone());
    let Some(user) = user.filter(|_| ok) else {
        throttle::record_failure(&state.store, &bucket, ip_bucket.as_deref(), now).await?;
        audit(state, None, "sign_in_failed", target.as_deref(), ip, Some("password")).await;
        return Err(Error::new(ErrorCode::InvalidCredentials, "wrong email or password"));
    };
    if user.status != "active" {
        return Err(Error::new(ErrorCode::AccountSuspended, "this account is suspended"));
    }
    if user.email_verified_at.is_none() {
        if notice_allowed(state, "verify_email", &user.id).await? {
            send_verification(state, &user).await?;
        }
        return Err(Error::new(ErrorCode::EmailNotVerified, "confirm your email address first; a new link is on its way"));
    }
    Ok(user)
}

/// What follows a successful first factor.
pub enum SignInStep {
    /// Signed in: the new session token for the cookie.
    Session(String),
    /// The account has a second factor: the pending-step token for its cookie.
    SecondFactor(String),
}

/// After a first factor (`method`: `password`, `email_link`, a provider
/// key): the second-factor step if the account has TOTP, else a session.
pub async fn first_factor_passed(
    state: &AppState,
    user: &User,
    method: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<SignInStep> {
    if state.store.totp_of_user(&user.id).await?.is_some() {
        let token = issue_token(state, purpose::SECOND_FACTOR, Some(&user.id), Some(json!({ "method": method })), SECOND_FACTOR_MS).await?;
        return Ok(SignInStep::SecondFactor(token));
    }
    let (token, _) = finish_sign_in(state, user, method, ip, user_agent).await?;
    Ok(SignInStep::Session(token))
}

/// Signs in for good: clears the account's failed attempts, opens a
/// session, records `sign_in`.
pub async fn finish_sign_in(
    state: &AppState,
    user: &User,
    method: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<(String, Session)> {
    throttle::clear(&state.store, &throttle::account_bucket(&user.email)).await?;
    let started = start_session(state, user, ip, user_agent).await?;
    audit(state, Some(&user.id), "sign_in", Some(&user.id), ip, Some(method)).await;
    Ok(started)
}

/// The second factor: a current TOTP code or an unused recovery code, for
/// the account of a pending-step token. Failures count toward the account's
/// throttle like wrong passwords (so 10^6 codes cannot be tried).
pub async fn second_factor(
    state: &AppState,
    pending: &str,
    code: &str,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<(String, Session)> {
    let now = clock(state).now_ms();
    let token = peek_token(state, purpose::SECOND_FACTOR, pending).await?;
    let user = token_user(state, &token).await?;
    let bucket = throttle::account_bucket(&user.email);
    let ip_bucket = ip.map(truncate_ip);
    throttle::check(&state.store, &state.config.auth.throttle, &bucket, ip_bucket.as_deref(), now).await?;
    let first: String = token
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|d| d["method"].as_str().map(str::to_string))
        .unwrap_or_default();
    let second = match check_second_factor(state, &user, code).await? {
        Some(second) => second,
        None => {
            throttle::record_failure(&state.store, &bucket, ip_bucket.as_deref(), now).await?;
            audit(state, None, "sign_in_failed", Some(&user.id), ip, Some("second_factor")).await;
            return Err(Error::new(ErrorCode::InvalidCode, "wrong or expired code"));
        }
    };
    consume_token(state, purpose::SECOND_FACTOR, pending).await?;
    if second == "recovery_code" {
        audit(state, Some(&user.id), "recovery_code_used", Some(&user.id), ip, None).await;
        let left = state.store.recovery_codes_left(&user.id).await?.to_string();
        notices::send_quietly(state, &user, "recovery_code_used", &[("left", &left)]).await;
    }
    finish_sign_in(state, &user, &format!("{first}+{second}"), ip, user_agent).await
}

/// Accepts a TOTP code (once per time step) or a recovery code (once);
/// `Some("totp" | "recovery_code")` when one passed.
async fn check_second_factor(state: &AppState, user: &User, code: &str) -> Result<Option<&'static str>> {
    let Some(record) = state.store.totp_of_user(&user.id).await? else {
        return Ok(None);
    };
    if totp::looks_like_totp(code) {
        return Ok(match totp::verify(&record.secret, code, clock(state).now_ms()) {
            Some(step) if state.store.advance_totp_step(&user.id, step).await? => Some("totp"),
            _ => None,
        });
    }
    let used =
        !code.trim().is_empty() && state.store.use_recovery_code(&user.id, &totp::recovery_code_hash(code), clock(state).now_ms()).await?;
    Ok(used.then_some("recovery_code"))
}

/// Opens a new session; the caller sets the cookie with the returned token.
pub async fn start_session(state: &AppState, user: &User, ip: Option<IpAddr>, user_agent: Option<String>) -> Result<(String, Session)> {
    let token = new_token();
    let session = state
        .store
        .create_session(NewSession {
            user_id: user.id.clone(),
            token_hash: token_hash(&token),
            expires_at: store::now_ms() + state.config.session_ttl_ms,
            ip: ip.map(truncate_ip),
            user_agent: user_agent.map(|ua| ua.chars().take(200).collect()),
        })
        .await?;
    tracing::info!(user = %user.id, "signed in");
    Ok((token, session))
}

// ---------------------------------------------------------- password reset

/// Mails a reset link if an active account has this address. The answer is
/// the same either way and the lookup and mail run after the response, so
/// neither content nor timing tells whether the address is registered.
pub async fn request_password_reset(state: &AppState, email: &str) -> Result<()> {
    let email = normalize_email(email)?;
    let state = state.clone();
    tokio::spawn(async move {
        let attempt = async {
            let Some(user) = state.store.user_by_email(&email).await?.filter(|u| u.status == "active") else { return Ok(()) };
            if !notice_allowed(&state, "password_reset", &user.id).await? {
                return Ok(());
            }
            let token = issue_token(&state, purpose::RESET_PASSWORD, Some(&user.id), None, state.config.auth.password_reset_ms).await?;
            let link = notices::link(&state, &format!("/reset-password?token={token}"));
            let minutes = (state.config.auth.password_reset_ms / 60_000).to_string();
            notices::send(&state, &user, "password_reset", &[("link", &link), ("minutes", &minutes)]).await
        };
        if let Err(e) = attempt.await {
            tracing::error!(error = %e, "password reset mail not queued");
        }
    });
    Ok(())
}

/// Sets a new password from a reset link. Every session of the account
/// ends (whoever had the old password is out), other reset links die, the
/// failed-attempt record is cleared and the address counts as verified.
pub async fn reset_password(state: &AppState, token: &str, password: String, ip: Option<IpAddr>) -> Result<User> {
    check_password(&password)?;
    let hash = hash_password(password).await?;
    let token = consume_token(state, purpose::RESET_PASSWORD, token).await?;
    let user = token_user(state, &token).await?;
    let now = clock(state).now_ms();
    state.store.set_password_hash(&user.id, Some(&hash)).await?;
    state.store.void_auth_tokens(&user.id, purpose::RESET_PASSWORD, now).await?;
    let ended = state.store.delete_user_sessions(&user.id, None).await?;
    state.store.mark_email_verified(&user.id, now).await?;
    throttle::clear(&state.store, &throttle::account_bucket(&user.email)).await?;
    audit(state, Some(&user.id), "password_reset", Some(&user.id), ip, Some(&format!("sessions_ended={ended}"))).await;
    notices::send_quietly(state, &user, "password_changed", &[]).await;
    Ok(user)
}

// ------------------------------------------------ settings of a signed-in user

/// Proof of presence for sensitive changes: the current password when the
/// account has one (a wrong one counts as a failed sign-in), otherwise a
/// session opened within the last [`REAUTH_WINDOW_MS`].
pub async fn reauthenticate(state: &AppState, user: &User, session_created_at: i64, password: &str, ip: Option<IpAddr>) -> Result<()> {
    match &user.password_hash {
        Some(hash) => {
            let now = clock(state).now_ms();
            let bucket = throttle::account_bucket(&user.email);
            let ip_bucket = ip.map(truncate_ip);
            throttle::check(&state.store, &state.config.auth.throttle, &bucket, ip_bucket.as_deref(), now).await?;
            if !verify_password(password.to_string(), Some(hash.clone())).await {
                throttle::record_failure(&state.store, &bucket, ip_bucket.as_deref(), now).await?;
                audit(state, Some(&user.id), "sign_in_failed", Some(&user.id), ip, Some("reauthentication")).await;
                return Err(Error::new(ErrorCode::InvalidCredentials, "wrong password"));
            }
            Ok(())
        }
        None if store::now_ms() - session_created_at <= REAUTH_WINDOW_MS => Ok(()),
        None => Err(Error::new(ErrorCode::ReauthenticationRequired, "sign out and sign in again to make this change")),
    }
}

/// Changes (or, for an account without one, sets) the password; every
/// other session ends.
pub async fn change_password(
    state: &AppState,
    user: &User,
    session: &Session,
    current: &str,
    new: String,
    ip: Option<IpAddr>,
) -> Result<u64> {
    check_password(&new)?;
    reauthenticate(state, user, session.created_at, current, ip).await?;
    let hash = hash_password(new).await?;
    state.store.set_password_hash(&user.id, Some(&hash)).await?;
    state.store.void_auth_tokens(&user.id, purpose::RESET_PASSWORD, clock(state).now_ms()).await?;
    let ended = state.store.delete_user_sessions(&user.id, Some(&session.id)).await?;
    audit(state, Some(&user.id), "password_changed", Some(&user.id), ip, Some(&format!("sessions_ended={ended}"))).await;
    notices::send_quietly(state, user, "password_changed", &[]).await;
    Ok(ended)
}

/// Starts an email change: after re-authentication, a confirmation link
/// goes to the new address; nothing changes until it is used.
pub async fn request_email_change(
    state: &AppState,
    user: &User,
    session: &Session,
    new_email: &str,
    password: &str,
    ip: Option<IpAddr>,
) -> Result<()> {
    let email = normalize_email(new_email)?;
    reauthenticate(state, user, session.created_at, password, ip).await?;
    if email == user.email {
        return Err(Error::invalid("this is already the account's email"));
    }
    if !notice_allowed(state, "email_change", &user.id).await? {
        return Err(Error::new(ErrorCode::TooManyAttempts, "too many email changes this hour").with_retry_after(3600));
    }
    let token = issue_token(state, purpose::CHANGE_EMAIL, Some(&user.id), Some(json!({ "email": email })), CONFIRMATION_MS).await?;
    let link = notices::link(state, &format!("/account/email/confirm?token={token}"));
    notices::send_to(
        state,
        Some(&user.id),
        &email,
        user.locale.as_deref(),
        "email_change",
        &[("name", &user.name), ("link", &link), ("email", &email)],
    )
    .await
}

/// Uses an email-change link: the new address replaces the old one (which
/// is told), and counts as verified.
pub async fn confirm_email_change(state: &AppState, token: &str, ip: Option<IpAddr>) -> Result<User> {
    let token = consume_token(state, purpose::CHANGE_EMAIL, token).await?;
    let user = token_user(state, &token).await?;
    let email = token
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|d| d["email"].as_str().map(str::to_string))
        .ok_or_else(invalid_token)?;
    let updated = state.store.change_email(&user.id, &email, clock(state).now_ms()).await?;
    audit(state, Some(&user.id), "email_changed", Some(&user.id), ip, None).await;
    if let Err(e) = notices::send_to(
        state,
        Some(&user.id),
        &user.email,
        user.locale.as_deref(),
        "email_changed",
        &[("name", &user.name), ("email", &email)],
    )
    .await
    {
        tracing::error!(error = %e, "email change notice not queued");
    }
    Ok(updated)
}

/// Turns on TOTP with a secret the user's app has, proven by one current
/// code; returns the recovery codes (shown once, stored hashed).
pub async fn enable_totp(state: &AppState, user: &User, secret: &str, code: &str, ip: Option<IpAddr>) -> Result<Vec<String>> {
    if totp::base32_decode(secret).is_none_or(|b| b.len() != 20) {
        return Err(Error::invalid("bad secret"));
    }
    if state.store.totp_of_user(&user.id).await?.is_some() {
        return Err(Error::invalid("two-factor sign-in is already on"));
    }
    let now = clock(state).now_ms();
    let step = totp::verify(secret, code, now).ok_or_else(|| Error::new(ErrorCode::InvalidCode, "wrong or expired code"))?;
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_code_hash(c)).collect();
    state.store.enable_totp(&user.id, secret, step, &hashes, now).await?;
    audit(state, Some(&user.id), "totp_enabled", Some(&user.id), ip, None).await;
    notices::send_quietly(state, user, "totp_enabled", &[]).await;
    Ok(codes)
}

/// Turns TOTP off after re-authentication and a current code (or a
/// recovery code).
pub async fn disable_totp(state: &AppState, user: &User, session: &Session, password: &str, code: &str, ip: Option<IpAddr>) -> Result<()> {
    reauthenticate(state, user, session.created_at, password, ip).await?;
    if state.store.totp_of_user(&user.id).await?.is_none() {
        return Ok(());
    }
    if check_second_factor(state, user, code).await?.is_none() {
        let bucket = throttle::account_bucket(&user.email);
        throttle::record_failure(&state.store, &bucket, ip.map(truncate_ip).as_deref(), clock(state).now_ms()).await?;
        return Err(Error::new(ErrorCode::InvalidCode, "wrong or expired code"));
    }
    state.store.disable_totp(&user.id).await?;
    audit(state, Some(&user.id), "totp_disabled", Some(&user.id), ip, None).await;
    notices::send_quietly(state, user, "totp_disabled", &[]).await;
    Ok(())
}

/// Ends one session of the account (possibly the current one).
pub async fn revoke_session(state: &AppState, user: &User, session_id: &str, ip: Option<IpAddr>) -> Result<()> {
    if !state.store.delete_user_session(&user.id, session_id).await? {
        return Err(Error::not_found());
    }
    audit(state, Some(&user.id), "session_revoked", Some(&user.id), ip, Some(session_id)).await;
    Ok(())
}

/// Ends every session of the account but `keep`.
pub async fn revoke_other_sessions(state: &AppState, user: &User, keep: &str, ip: Option<IpAddr>) -> Result<u64> {
    let ended = state.store.delete_user_sessions(&user.id, Some(keep)).await?;
    audit(state, Some(&user.id), "sign_out_everywhere", Some(&user.id), ip, Some(&format!("sessions_ended={ended}"))).await;
    Ok(ended)
}

/// Unlinks a provider, never the last way to sign in.
pub async fn unlink_identity(state: &AppState, user: &User, identity_id: &str, ip: Option<IpAddr>) -> Result<()> {
    let identity = state.store.unlink_identity(&user.id, identity_id).await?;
    let label = state.config.auth.provider_by_key(&identity.provider).map_or(identity.provider.clone(), |p| p.label.clone());
    audit(state, Some(&user.id), "identity_unlinked", Some(&user.id), ip, Some(&identity.provider)).await;
    notices::send_quietly(state, user, "identity_unlinked", &[("provider", &label)]).await;
    Ok(())
}

/// "Firefox on Linux" from a User-Agent, for the sessions list.
pub fn browser_family(user_agent: Option<&str>) -> (Option<&'static str>, Option<&'static str>) {
    let ua = user_agent.unwrap_or("");
    let browser = if ua.contains("Edg/") {
        Some("Edge")
    } else if ua.contains("OPR/") || ua.contains("Opera") {
        Some("Opera")
    } else if ua.contains("Firefox/") {
        Some("Firefox")
    } else if ua.contains("Chrome/") || ua.contains("Chromium/") || ua.contains("CriOS/") {
        Some("Chrome")
    } else if ua.contains("Safari/") {
        Some("Safari")
    } else if ua.starts_with("curl/") {
        Some("curl")
    } else {
        None
    };
    let os = if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("Linux")
    } else {
        None
    };
    (browser, os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_truncated() {
        assert_eq!(truncate_ip("203.0.113.77".parse().unwrap()), "203.0.113.0");
        assert_eq!(truncate_ip("2001:db8:abcd:12::1".parse().unwrap()), "2001:db8:abcd::");
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }

    #[tokio::test]
    async fn c02_password_hash_is_argon2id_at_owasp_parameters() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse battery".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong".into(), Some(hash)).await);
        assert!(!verify_password("anything".into(), None).await);
    }

    #[test]
    fn browser_families() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(browser_family(Some(firefox)), (Some("Firefox"), Some("Linux")));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0";
        assert_eq!(browser_family(Some(edge)), (Some("Edge"), Some("Windows")));
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_family(Some(safari)), (Some("Safari"), Some("iOS")));
        assert_eq!(browser_family(None), (None, None));
    }
}
