//! Passwords, session tokens and the account services behind the forms.

use std::net::IpAddr;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use domain::account::{check_age, check_password, normalize_email, normalize_name, Date};
use domain::ids::to_hex;
use domain::{Error, ErrorCode, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::{NewMail, NewSession, NewUser, Session, Store, User};

use crate::AppState;

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
pub const PASSWORD_PARAMS: (u32, u32, u32) = (19_456, 2, 1);

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
async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| dummy_hash().to_string());
        let matches = PasswordHash::new(&stored).map(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok()).unwrap_or(false);
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

pub struct SignUp {
    pub name: String,
    pub email: String,
    pub password: String,
    pub birth_date: String,
    pub locale: Option<String>,
}

/// Creates the account after every rule passes; the date of birth is only
/// checked, never stored. A welcome notice goes to the outbox.
pub async fn sign_up(state: &AppState, form: SignUp, today: Date) -> Result<User> {
    let name = normalize_name(&form.name)?;
    let email = normalize_email(&form.email)?;
    check_password(&form.password)?;
    check_age(&form.birth_date, today, state.config.min_age)?;
    let password_hash = hash_password(form.password).await?;
    let user = state.store.create_user(NewUser { email, name, password_hash: Some(password_hash), locale: form.locale }).await?;
    let lang = crate::i18n::I18n::global().lang(user.locale.as_deref().unwrap_or("en"));
    state
        .store
        .enqueue_mail(NewMail {
            user_id: Some(user.id.clone()),
            kind: "welcome".into(),
            to_addr: user.email.clone(),
            subject: lang.t("mail.welcome.subject"),
            body_text: lang.t("mail.welcome.body").replace("{name}", &user.name),
        })
        .await?;
    tracing::info!(user = %user.id, "account created");
    Ok(user)
}

/// Checks credentials; every failure is the same `invalid_credentials`.
pub async fn authenticate(store: &Store, email: &str, password: &str) -> Result<User> {
    let invalid = || Error::new(ErrorCode::InvalidCredentials, "wrong email or password");
    let user = match normalize_email(email) {
        Ok(email) => store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let ok = verify_password(password.to_string(), user.as_ref().and_then(|u| u.password_hash.clone())).await;
    let user = user.filter(|_| ok).ok_or_else(invalid)?;
    if user.status != "active" {
        return Err(Error::new(ErrorCode::AccountSuspended, "this account is suspended"));
    }
    Ok(user)
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
}
