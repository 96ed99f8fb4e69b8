//! Signing in with an external provider, and what a returning identity
//! means for accounts.
//!
//! The flow: `start` makes a `state` (a single-use token whose row holds the
//! `nonce` and the PKCE verifier) and a browser-binding cookie, and sends
//! the browser to the provider. `callback` uses the state once, checks the
//! cookie, redeems the code (PKCE), checks the ID token (signature, iss,
//! aud, exp, nonce) or GitHub's answers, then:
//! - a known identity signs its account in (through TOTP if on);
//! - a link request from the security page links to the signed-in account;
//! - an unknown identity whose *verified* email belongs to an account is
//!   linked only once the owner proves control: by being signed in, or by
//!   the link mailed to that account's address;
//! - an unknown identity with a new verified email starts a sign-up, which
//!   still asks for the date of birth (C05) before creating the account.

use std::net::IpAddr;

use domain::account::{check_age, normalize_email, normalize_name, Date};
use domain::{Error, ErrorCode, Result};
use serde::{Deserialize, Serialize};
use store::{NewIdentity, NewUser, User};

use super::providers::{ExternalProfile, Provider};
use super::{
    audit, consume_token, first_factor_passed, issue_token, notices, peek_token, purpose, token_hash, SignInStep, CONFIRMATION_MS,
};
use crate::context::tokens_match;
use crate::AppState;

/// Binds a flow to the browser that started it.
pub const FLOW_COOKIE: &str = "atelier_oauth";
/// Holds a pending external sign-up between the callback and its form.
pub const PENDING_COOKIE: &str = "atelier_pending";
/// How long the provider round trip may take.
pub const FLOW_MS: i64 = 10 * 60_000;
pub const PENDING_SIGN_UP_MS: i64 = 30 * 60_000;

#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    provider: String,
    nonce: String,
    verifier: String,
    /// Hash of the browser-binding cookie.
    browser: String,
    redirect_uri: String,
}

/// An identity waiting for a link confirmation or a sign-up form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingIdentity {
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub name: Option<String>,
}

fn failed(message: &str) -> Error {
    tracing::warn!(reason = message, "external sign-in refused");
    Error::new(ErrorCode::ExternalSignInFailed, message)
}

fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a Provider> {
    state.config.auth.provider(name).ok_or_else(Error::not_found)
}

pub struct Started {
    /// The provider's authorization URL.
    pub location: String,
    /// The browser-binding cookie value.
    pub browser: String,
}

/// Starts a sign-in (or, with `linking`, a link to that signed-in account).
pub async fn start(state: &AppState, name: &str, linking: Option<&User>) -> Result<Started> {
    let provider = provider(state, name)?;
    let (nonce, verifier, browser) = (super::new_token(), super::new_token(), super::new_token());
    let redirect_uri = notices::link(state, &format!("/auth/{}/callback", provider.name));
    let flow = Flow {
        provider: provider.name.clone(),
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        browser: token_hash(&browser),
        redirect_uri: redirect_uri.clone(),
    };
    let flow = serde_json::to_value(&flow).map_err(|e| Error::internal(e.to_string()))?;
    let state_param = issue_token(state, purpose::OAUTH_STATE, linking.map(|u| u.id.as_str()), Some(flow), FLOW_MS).await?;
    let now = state.config.clock.now_ms();
    let location = state.config.auth.client.authorize_url(provider, &redirect_uri, &state_param, &nonce, &verifier, now).await?;
    Ok(Started { location, browser })
}

#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 9207: who issued the response (mix-up defence), when sent.
    pub iss: Option<String>,
}

pub enum Outcome {
    /// An account signed in (or is at its second-factor step).
    SignedIn(SignInStep),
    /// Linked to the signed-in account.
    Linked,
    /// The account owner was mailed a link to confirm.
    ConfirmByEmail,
    /// A new account: the pending sign-up token for its cookie.
    PendingSignUp(String),
}

/// The provider sent the browser back.
pub async fn callback(
    state: &AppState,
    name: &str,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
    signed_in: Option<&User>,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<Outcome> {
    let provider = provider(state, name)?;
    // The state is used up first, whatever happens next: a replayed or
    // tampered callback finds nothing.
    let flow_token = consume_token(state, purpose::OAUTH_STATE, params.state.as_deref().unwrap_or(""))
        .await
        .map_err(|_| failed("unknown, used or expired state"))?;
    let flow: Flow = flow_token.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).ok_or_else(|| failed("bad flow record"))?;
    if flow.provider != provider.name {
        return Err(failed("state belongs to another provider"));
    }
    if !browser_cookie.is_some_and(|c| tokens_match(&token_hash(c), &flow.browser)) {
        return Err(failed("state was not issued to this browser"));
    }
    if let (Some(iss), super::providers::ProviderKind::Oidc { issuer }) = (&params.iss, &provider.kind) {
        if iss.trim_end_matches('/') != issuer {
            return Err(failed("the response names another issuer"));
        }
    }
    if let Some(error) = &params.error {
        tracing::info!(provider = %provider.name, error = %error.chars().take(64).collect::<String>(), "provider refused the sign-in");
        return Err(failed("the provider did not sign you in"));
    }
    let code = params.code.as_deref().filter(|c| !c.is_empty() && c.len() <= 2048).ok_or_else(|| failed("no authorization code"))?;
    let now = state.config.clock.now_ms();
    let profile = state.config.auth.client.exchange(provider, code, &flow.redirect_uri, &flow.verifier, &flow.nonce, now).await?;

    if let Some(linking) = &flow_token.user_id {
        let user = signed_in.filter(|u| &u.id == linking).ok_or_else(|| failed("sign in to the account you are linking first"))?;
        link(state, user, provider, &profile, ip).await?;
        return Ok(Outcome::Linked);
    }
    if let Some(identity) = state.store.identity(&profile.provider, &profile.subject).await? {
        let user = state.store.user_by_id(&identity.user_id).await?.ok_or_else(Error::not_found)?;
        if user.status != "active" {
            return Err(Error::new(ErrorCode::AccountSuspended, "this account is suspended"));
        }
        state.store.touch_identity(&identity.id, store::now_ms()).await?;
        return Ok(Outcome::SignedIn(first_factor_passed(state, &user, &profile.provider, ip, user_agent).await?));
    }
    // A new identity: only a verified email may link to or found an account.
    let email = match (&profile.email, profile.email_verified) {
        (Some(email), true) => normalize_email(email).map_err(|_| failed("the provider's email is not usable"))?,
        _ => return Err(Error::new(ErrorCode::EmailNotVerified, "the provider account has no verified email address")),
    };
    let pending = PendingIdentity {
        provider: profile.provider.clone(),
        subject: profile.subject.clone(),
        email: email.clone(),
        name: profile.name.clone(),
    };
    if let Some(owner) = state.store.user_by_email(&email).await? {
        if signed_in.is_some_and(|u| u.id == owner.id) {
            link(state, &owner, provider, &profile, ip).await?;
            return Ok(Outcome::Linked);
        }
        if owner.status == "active" && super::notice_allowed(state, "link_identity", &owner.id).await? {
            let data = serde_json::to_value(&pending).map_err(|e| Error::internal(e.to_string()))?;
            let token = issue_token(state, purpose::LINK_IDENTITY, Some(&owner.id), Some(data), CONFIRMATION_MS).await?;
            let link = notices::link(state, &format!("/auth/link?token={token}"));
            notices::send(state, &owner, "link_identity", &[("provider", &provider.label), ("link", &link)]).await?;
        }
        return Ok(Outcome::ConfirmByEmail);
    }
    let data = serde_json::to_value(&pending).map_err(|e| Error::internal(e.to_string()))?;
    let token = issue_token(state, purpose::EXTERNAL_SIGN_UP, None, Some(data), PENDING_SIGN_UP_MS).await?;
    Ok(Outcome::PendingSignUp(token))
}

/// Links an identity to `user`: idempotent for the same account,
/// `identity_in_use` for another. Audited and notified.
async fn link(state: &AppState, user: &User, provider: &Provider, profile: &ExternalProfile, ip: Option<IpAddr>) -> Result<()> {
    if let Some(existing) = state.store.identity(&profile.provider, &profile.subject).await? {
        return if existing.user_id == user.id {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::IdentityInUse, "this provider account is already linked to another account"))
        };
    }
    state
        .store
        .link_identity(NewIdentity {
            user_id: user.id.clone(),
            provider: profile.provider.clone(),
            subject: profile.subject.clone(),
            email: profile.email.clone(),
        })
        .await?;
    audit(state, Some(&user.id), "identity_linked", Some(&user.id), ip, Some(&profile.provider)).await;
    notices::send_quietly(state, user, "identity_linked", &[("provider", &provider.label)]).await;
    Ok(())
}

fn pending_of(token: &store::AuthToken) -> Result<PendingIdentity> {
    token.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).ok_or_else(super::invalid_token)
}

/// The provider label and email of a pending link or sign-up (for pages).
pub async fn pending(state: &AppState, purpose: &str, token: &str) -> Result<(String, PendingIdentity)> {
    let pending = pending_of(&peek_token(state, purpose, token).await?)?;
    let label = state.config.auth.provider_by_key(&pending.provider).map_or(pending.provider.clone(), |p| p.label.clone());
    Ok((label, pending))
}

/// The owner confirmed by email: link, then sign in. An account whose email
/// was never verified loses its password and sessions here: whoever set
/// them had not proven they own the address, and the person confirming now
/// has (they can set a password again from the security page).
pub async fn confirm_link(state: &AppState, token: &str, ip: Option<IpAddr>, user_agent: Option<String>) -> Result<SignInStep> {
    let token = consume_token(state, purpose::LINK_IDENTITY, token).await?;
    let pending = pending_of(&token)?;
    let user = state
        .store
        .user_by_id(token.user_id.as_deref().unwrap_or(""))
        .await?
        .filter(|u| u.status == "active")
        .ok_or_else(super::invalid_token)?;
    let provider = state.config.auth.provider_by_key(&pending.provider).ok_or_else(super::invalid_token)?.clone();
    if user.email_verified_at.is_none() {
        state.store.set_password_hash(&user.id, None).await?;
        state.store.delete_user_sessions(&user.id, None).await?;
        state.store.mark_email_verified(&user.id, state.config.clock.now_ms()).await?;
    }
    let profile = ExternalProfile {
        provider: pending.provider,
        subject: pending.subject,
        email: Some(pending.email),
        email_verified: true,
        name: pending.name,
    };
    link(state, &user, &provider, &profile, ip).await?;
    first_factor_passed(state, &user, &profile.provider, ip, user_agent).await
}

/// Creates the account of a pending external sign-up once the form's rules
/// pass (name, age), links the identity and signs in.
#[allow(clippy::too_many_arguments)]
pub async fn complete_sign_up(
    state: &AppState,
    token: &str,
    name: &str,
    birth_date: &str,
    today: Date,
    locale: Option<String>,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<SignInStep> {
    let name = normalize_name(name)?;
    check_age(birth_date, today, state.config.min_age)?;
    let pending = pending_of(&consume_token(state, purpose::EXTERNAL_SIGN_UP, token).await?)?;
    if state.store.identity(&pending.provider, &pending.subject).await?.is_some() {
        return Err(Error::new(ErrorCode::IdentityInUse, "this provider account is already linked to an account"));
    }
    let user = state.store.create_user(NewUser { email: pending.email.clone(), name, password_hash: None, locale }).await?;
    state.store.mark_email_verified(&user.id, state.config.clock.now_ms()).await?;
    // A concurrent sign-up of the same identity could win the insert; this
    // account then has a verified email and no way in but a reset, which is
    // still only its mailbox owner's.
    state
        .store
        .link_identity(NewIdentity {
            user_id: user.id.clone(),
            provider: pending.provider.clone(),
            subject: pending.subject.clone(),
            email: Some(pending.email.clone()),
        })
        .await?;
    tracing::info!(user = %user.id, "account created");
    audit(state, Some(&user.id), "account_created", Some(&user.id), ip, Some(&pending.provider)).await;
    audit(state, Some(&user.id), "identity_linked", Some(&user.id), ip, Some(&pending.provider)).await;
    notices::send_quietly(state, &user, "welcome", &[]).await;
    first_factor_passed(state, &user, &pending.provider, ip, user_agent).await
}
