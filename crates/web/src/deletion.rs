//! "Delete my account" (C29, C31). After re-authentication the account is
//! disabled at once (every session ends, API keys stop working: both refuse
//! any status but `active`) and purged by the sweep once the grace period
//! has passed; a single-use link mailed to the owner restores it until then,
//! without signing in. "Delete now" purges at once.
//!
//! Re-authentication is the one of the security page: the current password,
//! or for an account without one (external sign-in only) a session opened
//! in the last ten minutes.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::time::format_utc;
use domain::{Error, ErrorCode, Result};
use serde::Deserialize;
use store::{Session, User};

use crate::api::QueryParams;
use crate::auth::{self, notices, REAUTH_WINDOW_MS};
use crate::auth_pages::{clear_cookie, error_page, message, TokenForm, TokenQuery};
use crate::context::{Ctx, SESSION_COOKIE};
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, FormBody};
use crate::AppState;

/// Token purpose of the cancel link (`auth_tokens.purpose`).
pub const CANCEL_DELETION: &str = "cancel_deletion";

fn t(ctx: &Ctx, key: &str) -> String {
    esc(&ctx.lang.t(key))
}

/// Disables the account and schedules its purge after the configured grace
/// period; mails the cancel link. Returns when the purge is due.
pub async fn request_deletion(state: &AppState, user: &User, session: &Session, password: &str, ip: Option<IpAddr>) -> Result<i64> {
    auth::reauthenticate(state, user, session.created_at, password, ip).await?;
    let grace_ms = state.config.privacy.deletion_grace_ms();
    let now = state.config.clock.now_ms();
    let purge_after = now + grace_ms;
    let ended = state
        .store
        .request_account_deletion(&user.id, now, purge_after)
        .await?
        .ok_or_else(|| Error::new(ErrorCode::AccountSuspended, "this account cannot be deleted while it is not active"))?;
    auth::audit(state, Some(&user.id), "account_deletion_requested", Some(&user.id), ip, Some(&format!("sessions_ended={ended}"))).await;
    // The account is already disabled; a lost notice is logged, and the
    // operator can still restore the account until the purge.
    let sent = async {
        let token = auth::issue_token(state, CANCEL_DELETION, Some(&user.id), None, grace_ms).await?;
        let link = notices::link(state, &format!("/account/delete/cancel?token={token}"));
        let days = state.config.privacy.deletion_grace_days.to_string();
        notices::send(state, user, "account_deletion", &[("link", &link), ("date", &format_utc(purge_after)), ("days", &days)]).await
    };
    if let Err(e) = sent.await {
        tracing::error!(user = %user.id, error = %e, "deletion notice not queued");
    }
    Ok(purge_after)
}

/// Purges the account at once, after re-authentication.
pub async fn delete_now(state: &AppState, user: &User, session: &Session, password: &str, ip: Option<IpAddr>) -> Result<()> {
    auth::reauthenticate(state, user, session.created_at, password, ip).await?;
    // Written before the purge, which files it under the tombstone id.
    auth::audit(state, Some(&user.id), "account_deletion_requested", Some(&user.id), ip, Some("now")).await;
    privacy::purge_account(&state.store, state.objects.as_ref(), &user.id, None).await?;
    Ok(())
}

/// Uses a cancel link: the account is active again, exactly as it was.
pub async fn cancel_deletion(state: &AppState, token: &str, ip: Option<IpAddr>) -> Result<String> {
    let token = auth::consume_token(state, CANCEL_DELETION, token).await?;
    let user_id = token.user_id.ok_or_else(auth::invalid_token)?;
    if !state.store.cancel_account_deletion(&user_id).await? {
        return Err(auth::invalid_token());
    }
    auth::audit(state, Some(&user_id), "account_deletion_canceled", Some(&user_id), ip, None).await;
    Ok(user_id)
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    pub current_password: String,
    /// `grace` (default) or `now`.
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub _csrf: String,
}

fn delete_body(state: &AppState, ctx: &Ctx, user: &User, error: Option<&Error>) -> String {
    let days = state.config.privacy.deletion_grace_days.to_string();
    let proof = if user.password_hash.is_some() {
        format!(
            r#"<label>{}<input name="current_password" type="password" autocomplete="current-password" required></label>"#,
            t(ctx, "security.current_password")
        )
    } else {
        let minutes = (REAUTH_WINDOW_MS / 60_000).to_string();
        format!(r#"<p class="hint">{}</p>"#, esc(&ctx.lang.t("deletion.fresh_sign_in").replace("{minutes}", &minutes)))
    };
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<ul><li>{what}</li><li>{grace}</li><li>{kept}</li></ul>
<form method="post" action="/account/delete" class="stack" id="delete-account">
<input type="hidden" name="_csrf" value="{csrf}">{proof}
<button name="mode" value="grace" class="danger">{submit}</button>
<button name="mode" value="now" class="danger secondary" data-confirm="{now_confirm}">{now}</button>
</form><p><a href="/account">{back}</a></p></section>"#,
        title = t(ctx, "deletion.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "deletion.lead"),
        what = t(ctx, "deletion.what"),
        grace = esc(&ctx.lang.t("deletion.grace").replace("{days}", &days)),
        kept = t(ctx, "deletion.kept"),
        csrf = esc(&ctx.csrf),
        submit = esc(&ctx.lang.t("deletion.submit").replace("{days}", &days)),
        now_confirm = t(ctx, "deletion.now_confirm"),
        now = t(ctx, "deletion.now"),
        back = t(ctx, "auth.back"),
    )
}

pub async fn delete_form(State(state): State<AppState>, ctx: Ctx) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    page(&ctx, StatusCode::OK, &ctx.lang.t("deletion.title"), &delete_body(&state, &ctx, user, None))
}

pub async fn delete_account(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<DeleteForm>) -> Response {
    let (Some(user), Some(session)) = (&ctx.user, &ctx.session) else {
        return Redirect::to("/signin").into_response();
    };
    let now = form.mode == "now";
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        if now {
            delete_now(&state, user, session, &form.current_password, ctx.ip).await.map(|()| None)
        } else {
            request_deletion(&state, user, session, &form.current_password, ctx.ip).await.map(Some)
        }
    };
    match attempt.await {
        Ok(purge_after) => {
            // The session is gone with the account's status: render as a visitor.
            let ctx = Ctx { user: None, session: None, session_token: None, ..ctx.clone() };
            let mut response = match purge_after {
                Some(at) => {
                    let text = ctx.lang.t("deletion.scheduled").replace("{date}", &ctx.lang.datetime(at));
                    let body = format!(
                        r#"<section class="card narrow"><h1>{}</h1><p>{}</p></section>"#,
                        t(&ctx, "deletion.scheduled_title"),
                        esc(&text)
                    );
                    page(&ctx, StatusCode::OK, &ctx.lang.t("deletion.scheduled_title"), &body)
                }
                None => message(&ctx, StatusCode::OK, "deletion.deleted_title", "deletion.deleted", ""),
            };
            clear_cookie(&state, &mut response, SESSION_COOKIE);
            response
        }
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("deletion.title"), &delete_body(&state, &ctx, user, Some(&e))),
    }
}

/// The cancel link's page: a GET changes nothing (mail scanners fetch
/// links), the button does.
pub async fn cancel_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Response {
    if let Err(e) = auth::peek_token(&state, CANCEL_DELETION, &q.token).await {
        return error_page(&ctx, &e, "/");
    }
    let form = format!(
        r#"<form method="post" action="/account/delete/cancel"><input type="hidden" name="_csrf" value="{}"><input type="hidden" name="token" value="{}"><button>{}</button></form>"#,
        esc(&ctx.csrf),
        esc(&q.token),
        t(&ctx, "deletion.cancel_submit"),
    );
    message(&ctx, StatusCode::OK, "deletion.cancel_title", "deletion.cancel_text", &form)
}

pub async fn cancel(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TokenForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        cancel_deletion(&state, &form.token, ctx.ip).await
    };
    match attempt.await {
        Ok(_) => {
            let link = format!(r#"<p><a class="button" href="/signin">{}</a></p>"#, t(&ctx, "nav.signin"));
            message(&ctx, StatusCode::OK, "deletion.canceled_title", "deletion.canceled", &link)
        }
        Err(e) => error_page(&ctx, &e, "/"),
    }
}
