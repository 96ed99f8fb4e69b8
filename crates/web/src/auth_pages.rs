//! Sign-up, sign-in (password, second factor, external providers), sign-out,
//! email verification and password reset pages.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use domain::account::Date;
use domain::{Error, ErrorCode};
use serde::Deserialize;

use crate::api::QueryParams;
use crate::auth::external::{self, CallbackParams, Outcome, FLOW_COOKIE, PENDING_COOKIE};
use crate::auth::{self, purpose, SignInStep, SignUp};
use crate::context::{cookie, set_cookie, Ctx, CSRF_COOKIE, SESSION_COOKIE};
use crate::error::ApiResult;
use crate::pages::{check_csrf, error_box, esc, page, status_of, CsrfOnly, FormBody};
use crate::AppState;

/// Holds the pending second-factor step between the two forms.
pub const SECOND_FACTOR_COOKIE: &str = "atelier_2fa";

fn t(ctx: &Ctx, key: &str) -> String {
    esc(&ctx.lang.t(key))
}

fn notice_box(text: &str) -> String {
    format!(r#"<p class="notice" role="status">{}</p>"#, esc(text))
}

/// A card with a title, a paragraph and optional extra HTML.
pub(crate) fn message(ctx: &Ctx, status: StatusCode, title_key: &str, text_key: &str, extra: &str) -> Response {
    let body = format!(r#"<section class="card narrow"><h1>{}</h1><p>{}</p>{extra}</section>"#, t(ctx, title_key), t(ctx, text_key));
    page(ctx, status, &ctx.lang.t(title_key), &body)
}

/// A failed link or step: the translated error and a way back.
pub(crate) fn error_page(ctx: &Ctx, error: &Error, back: &str) -> Response {
    let body = format!(
        r#"<section class="card narrow"><h1>{}</h1>{}<p><a href="{}">{}</a></p></section>"#,
        t(ctx, "auth.problem_title"),
        error_box(ctx.lang, error),
        esc(back),
        t(ctx, "auth.back")
    );
    with_retry_after(page(ctx, status_of(error), &ctx.lang.t("auth.problem_title"), &body), error)
}

/// `Retry-After` on throttled answers.
pub(crate) fn with_retry_after(mut response: Response, error: &Error) -> Response {
    if let Some(secs) = error.retry_after_secs {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn secure(state: &AppState) -> bool {
    state.config.https
}

pub(crate) fn clear_cookie(state: &AppState, response: &mut Response, name: &str) {
    response.headers_mut().append(header::SET_COOKIE, set_cookie(name, "", 0, true, secure(state)));
}

/// Sets the new session cookie (the old session, if any, is ended: the token
/// is rotated at every sign-in) and a fresh CSRF token, then redirects.
pub(crate) fn session_redirect(state: &AppState, ctx: &Ctx, token: &str, to: &str) -> Response {
    let secure = secure(state);
    if let Some(old) = &ctx.session_token {
        let (store, old_hash) = (state.store.clone(), auth::token_hash(old));
        tokio::spawn(async move { store.delete_session_by_token_hash(&old_hash).await });
    }
    let mut response = Redirect::to(to).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, token, state.config.session_ttl_ms / 1000, true, secure));
    h.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, &auth::new_token(), 30 * 86_400, true, secure));
    response
}

/// Where a passed first factor leads: a session, or the second-factor form.
fn after_first_factor(state: &AppState, ctx: &Ctx, step: SignInStep) -> Response {
    match step {
        SignInStep::Session(token) => session_redirect(state, ctx, &token, "/generate"),
        SignInStep::SecondFactor(token) => {
            let mut response = Redirect::to("/signin/2fa").into_response();
            let max_age = auth::SECOND_FACTOR_MS / 1000;
            response.headers_mut().append(header::SET_COOKIE, set_cookie(SECOND_FACTOR_COOKIE, &token, max_age, true, secure(state)));
            response
        }
    }
}

/// The "continue with …" buttons of the configured providers.
fn provider_buttons(state: &AppState, ctx: &Ctx, link: bool) -> String {
    state
        .config
        .auth
        .providers
        .iter()
        .map(|p| {
            format!(
                r#"<form method="post" action="/auth/{name}/start"><input type="hidden" name="_csrf" value="{csrf}">{link}<button class="secondary wide">{label}</button></form>"#,
                name = esc(&p.name),
                csrf = esc(&ctx.csrf),
                link = if link { r#"<input type="hidden" name="link" value="1">"# } else { "" },
                label = esc(&ctx.lang.t(if link { "security.link_with" } else { "auth.continue_with" }).replace("{provider}", &p.label)),
            )
        })
        .collect()
}

fn providers_block(state: &AppState, ctx: &Ctx) -> String {
    if state.config.auth.providers.is_empty() {
        return String::new();
    }
    format!(r#"<div class="providers"><p class="or">{}</p>{}</div>"#, t(ctx, "auth.or"), provider_buttons(state, ctx, false))
}

// ------------------------------------------------------------------ sign-up

#[derive(Debug, Default, Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub _csrf: String,
}

fn signup_body(state: &AppState, ctx: &Ctx, form: &SignUpForm, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}
<form method="post" action="/signup" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{name_l}<input name="name" autocomplete="name" required maxlength="100" value="{name}"></label>
<label>{email_l}<input name="email" type="email" autocomplete="email" required value="{email}"></label>
<label>{password_l}<input name="password" type="password" autocomplete="new-password" required minlength="8" maxlength="128"><small>{password_h}</small></label>
<label>{birth_l}<input name="birth_date" type="date" required value="{birth}"><small>{birth_h}</small></label>
<button>{submit}</button>
</form>{providers}<p>{have} <a href="/signin">{signin}</a></p></section>"#,
        title = t(ctx, "signup.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        name_l = t(ctx, "signup.name"),
        name = esc(&form.name),
        email_l = t(ctx, "signup.email"),
        email = esc(&form.email),
        password_l = t(ctx, "signup.password"),
        password_h = t(ctx, "signup.password_hint"),
        birth_l = t(ctx, "signup.birth_date"),
        birth = esc(&form.birth_date),
        birth_h = t(ctx, "signup.birth_date_hint"),
        submit = t(ctx, "signup.submit"),
        providers = providers_block(state, ctx),
        have = t(ctx, "signup.have_account"),
        signin = t(ctx, "nav.signin"),
    )
}

pub async fn signup_form(State(state): State<AppState>, ctx: Ctx) -> Response {
    page(&ctx, StatusCode::OK, &ctx.lang.t("signup.title"), &signup_body(&state, &ctx, &SignUpForm::default(), None))
}

/// Rule errors are specific; past them the answer is always the same
/// redirect to "check your email", taken address or not (see `auth::sign_up`).
pub async fn signup(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<SignUpForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let today = Date::from_epoch_ms(state.config.clock.now_ms());
        let request = SignUp {
            name: form.name.clone(),
            email: form.email.clone(),
            password: form.password.clone(),
            birth_date: form.birth_date.clone(),
            locale: Some(ctx.lang.code.to_string()),
        };
        auth::sign_up(&state, request, today).await
    };
    match attempt.await {
        Ok(()) => Redirect::to("/signup/sent").into_response(),
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("signup.title"), &signup_body(&state, &ctx, &form, Some(&e))),
    }
}

pub async fn signup_sent(ctx: Ctx) -> Response {
    message(&ctx, StatusCode::OK, "auth.signup_sent_title", "auth.signup_sent_text", "")
}

// ------------------------------------------------------------------ sign-in

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub _csrf: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

fn signin_body(state: &AppState, ctx: &Ctx, email: &str, notice: Option<&str>, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{notice}{error}
<form method="post" action="/signin" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{email_l}<input name="email" type="email" autocomplete="email" required value="{email}"></label>
<label>{password_l}<input name="password" type="password" autocomplete="current-password" required></label>
<button>{submit}</button>
</form><p><a href="/reset-password">{forgot}</a></p>{providers}<p>{new} <a href="/signup">{signup}</a></p></section>"#,
        title = t(ctx, "signin.title"),
        notice = notice.map(notice_box).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        email_l = t(ctx, "signup.email"),
        email = esc(email),
        password_l = t(ctx, "signup.password"),
        submit = t(ctx, "signin.submit"),
        forgot = t(ctx, "auth.forgot"),
        providers = providers_block(state, ctx),
        new = t(ctx, "signin.no_account"),
        signup = t(ctx, "nav.signup"),
    )
}

pub async fn signin_form(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<NoticeQuery>) -> Response {
    let notice = match q.notice.as_deref() {
        Some("password_reset") => Some(ctx.lang.t("auth.notice_password_reset")),
        Some("email_changed") => Some(ctx.lang.t("auth.notice_email_changed")),
        _ => None,
    };
    page(&ctx, StatusCode::OK, &ctx.lang.t("signin.title"), &signin_body(&state, &ctx, "", notice.as_deref(), None))
}

pub async fn signin(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<SignInForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let user = auth::password_sign_in(&state, &form.email, &form.password, ctx.ip).await?;
        auth::first_factor_passed(&state, &user, "password", ctx.ip, ctx.user_agent.clone()).await
    };
    match attempt.await {
        Ok(step) => after_first_factor(&state, &ctx, step),
        Err(e) => {
            tracing::info!(code = %e.code, "sign-in refused");
            let response = page(&ctx, status_of(&e), &ctx.lang.t("signin.title"), &signin_body(&state, &ctx, &form.email, None, Some(&e)));
            with_retry_after(response, &e)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub _csrf: String,
}

fn second_factor_body(ctx: &Ctx, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<form method="post" action="/signin/2fa" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{code_l}<input name="code" autocomplete="one-time-code" required maxlength="32" autofocus><small>{hint}</small></label>
<button>{submit}</button>
</form></section>"#,
        title = t(ctx, "second_factor.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "second_factor.lead"),
        csrf = esc(&ctx.csrf),
        code_l = t(ctx, "second_factor.code"),
        hint = t(ctx, "second_factor.hint"),
        submit = t(ctx, "second_factor.submit"),
    )
}

pub async fn second_factor_form(ctx: Ctx, headers: axum::http::HeaderMap) -> Response {
    if cookie(&headers, SECOND_FACTOR_COOKIE).is_none() {
        return Redirect::to("/signin").into_response();
    }
    page(&ctx, StatusCode::OK, &ctx.lang.t("second_factor.title"), &second_factor_body(&ctx, None))
}

pub async fn second_factor(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    FormBody(form): FormBody<CodeForm>,
) -> Response {
    let pending = cookie(&headers, SECOND_FACTOR_COOKIE).unwrap_or("").to_string();
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        auth::second_factor(&state, &pending, &form.code, ctx.ip, ctx.user_agent.clone()).await
    };
    match attempt.await {
        Ok((token, _)) => {
            let mut response = session_redirect(&state, &ctx, &token, "/generate");
            clear_cookie(&state, &mut response, SECOND_FACTOR_COOKIE);
            response
        }
        Err(e) if e.code == ErrorCode::InvalidToken => error_page(&ctx, &e, "/signin"),
        Err(e) => with_retry_after(page(&ctx, status_of(&e), &ctx.lang.t("second_factor.title"), &second_factor_body(&ctx, Some(&e))), &e),
    }
}

pub async fn signout(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CsrfOnly>) -> ApiResult<Response> {
    check_csrf(&ctx, &form._csrf)?;
    if let Some(token) = &ctx.session_token {
        state.store.delete_session_by_token_hash(&auth::token_hash(token)).await?;
        if let Some(user) = &ctx.user {
            auth::audit(&state, Some(&user.id), "sign_out", Some(&user.id), ctx.ip, None).await;
        }
    }
    let mut response = Redirect::to("/").into_response();
    clear_cookie(&state, &mut response, SESSION_COOKIE);
    response.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cache\", \"storage\""));
    Ok(response)
}

// ------------------------------------------------------- links from mails

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub _csrf: String,
}

/// A confirmation page: a link from a mail does nothing on GET (mail
/// scanners fetch links), only its button does.
fn confirm_page(ctx: &Ctx, action: &str, token: &str, title_key: &str, text: &str, button_key: &str) -> Response {
    let body = format!(
        r#"<section class="card narrow"><h1>{title}</h1><p>{text}</p>
<form method="post" action="{action}"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="token" value="{token}"><button>{button}</button></form></section>"#,
        title = t(ctx, title_key),
        text = esc(text),
        action = esc(action),
        csrf = esc(&ctx.csrf),
        token = esc(token),
        button = t(ctx, button_key),
    );
    page(ctx, StatusCode::OK, &ctx.lang.t(title_key), &body)
}

pub async fn verify_email_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Response {
    match auth::peek_token(&state, purpose::VERIFY_EMAIL, &q.token).await {
        Ok(_) => confirm_page(&ctx, "/verify-email", &q.token, "verify.title", &ctx.lang.t("verify.text"), "verify.submit"),
        Err(e) => error_page(&ctx, &e, "/signin"),
    }
}

pub async fn verify_email(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TokenForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let user = auth::verify_email(&state, &form.token, ctx.ip).await?;
        auth::first_factor_passed(&state, &user, "email_link", ctx.ip, ctx.user_agent.clone()).await
    };
    match attempt.await {
        Ok(step) => after_first_factor(&state, &ctx, step),
        Err(e) => error_page(&ctx, &e, "/signin"),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub _csrf: String,
}

fn reset_request_body(ctx: &Ctx, email: &str, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<form method="post" action="/reset-password" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{email_l}<input name="email" type="email" autocomplete="email" required value="{email}"></label>
<button>{submit}</button>
</form><p><a href="/signin">{back}</a></p></section>"#,
        title = t(ctx, "reset.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "reset.lead"),
        csrf = esc(&ctx.csrf),
        email_l = t(ctx, "signup.email"),
        email = esc(email),
        submit = t(ctx, "reset.submit"),
        back = t(ctx, "auth.back"),
    )
}

fn reset_new_body(ctx: &Ctx, token: &str, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}
<form method="post" action="/reset-password" class="stack">
<input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="token" value="{token}">
<label>{password_l}<input name="password" type="password" autocomplete="new-password" required minlength="8" maxlength="128"><small>{hint}</small></label>
<button>{submit}</button>
</form></section>"#,
        title = t(ctx, "reset.new_title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        token = esc(token),
        password_l = t(ctx, "reset.new_password"),
        hint = t(ctx, "reset.new_hint"),
        submit = t(ctx, "reset.new_submit"),
    )
}

/// Without a token: ask for the email. With one (from the mail): ask for
/// the new password.
pub async fn reset_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Response {
    if q.token.is_empty() {
        return page(&ctx, StatusCode::OK, &ctx.lang.t("reset.title"), &reset_request_body(&ctx, "", None));
    }
    match auth::peek_token(&state, purpose::RESET_PASSWORD, &q.token).await {
        Ok(_) => page(&ctx, StatusCode::OK, &ctx.lang.t("reset.new_title"), &reset_new_body(&ctx, &q.token, None)),
        Err(e) => error_page(&ctx, &e, "/reset-password"),
    }
}

pub async fn reset(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<ResetForm>) -> Response {
    if let Err(e) = check_csrf(&ctx, &form._csrf) {
        return error_page(&ctx, &e, "/reset-password");
    }
    if form.token.is_empty() {
        return match auth::request_password_reset(&state, &form.email).await {
            Ok(()) => Redirect::to("/reset-password/sent").into_response(),
            Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("reset.title"), &reset_request_body(&ctx, &form.email, Some(&e))),
        };
    }
    match auth::reset_password(&state, &form.token, form.password.clone(), ctx.ip).await {
        Ok(_) => {
            // Every session of the account ended, this browser's too.
            let mut response = Redirect::to("/signin?notice=password_reset").into_response();
            clear_cookie(&state, &mut response, SESSION_COOKIE);
            response
        }
        Err(e) if e.code == ErrorCode::InvalidToken => error_page(&ctx, &e, "/reset-password"),
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("reset.new_title"), &reset_new_body(&ctx, &form.token, Some(&e))),
    }
}

pub async fn reset_sent(ctx: Ctx) -> Response {
    message(&ctx, StatusCode::OK, "reset.sent_title", "reset.sent_text", "")
}

// ------------------------------------------------------ external providers

#[derive(Debug, Default, Deserialize)]
pub struct StartForm {
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn external_start(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    FormBody(form): FormBody<StartForm>,
) -> Response {
    let linking = form.link.is_some();
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let user =
            if linking { Some(ctx.user.as_ref().ok_or_else(|| Error::new(ErrorCode::Unauthenticated, "sign in first"))?) } else { None };
        external::start(&state, &name, user).await
    };
    match attempt.await {
        Ok(started) => {
            let mut response = Redirect::to(&started.location).into_response();
            let max_age = external::FLOW_MS / 1000;
            response.headers_mut().append(header::SET_COOKIE, set_cookie(FLOW_COOKIE, &started.browser, max_age, true, secure(&state)));
            response
        }
        Err(e) => error_page(&ctx, &e, if linking { "/account/security" } else { "/signin" }),
    }
}

pub async fn external_callback(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    QueryParams(params): QueryParams<CallbackParams>,
) -> Response {
    let browser = cookie(&headers, FLOW_COOKIE).map(str::to_string);
    let outcome = external::callback(&state, &name, &params, browser.as_deref(), ctx.user.as_ref(), ctx.ip, ctx.user_agent.clone()).await;
    let mut response = match outcome {
        Ok(Outcome::SignedIn(step)) => after_first_factor(&state, &ctx, step),
        Ok(Outcome::Linked) => Redirect::to("/account/security?notice=linked").into_response(),
        Ok(Outcome::ConfirmByEmail) => message(&ctx, StatusCode::OK, "link.sent_title", "link.sent_text", ""),
        Ok(Outcome::PendingSignUp(token)) => {
            let mut response = Redirect::to("/signup/complete").into_response();
            let max_age = external::PENDING_SIGN_UP_MS / 1000;
            response.headers_mut().append(header::SET_COOKIE, set_cookie(PENDING_COOKIE, &token, max_age, true, secure(&state)));
            response
        }
        Err(e) => error_page(&ctx, &e, if ctx.user.is_some() { "/account/security" } else { "/signin" }),
    };
    clear_cookie(&state, &mut response, FLOW_COOKIE);
    response
}

#[derive(Debug, Default, Deserialize)]
pub struct CompleteForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub _csrf: String,
}

fn complete_body(ctx: &Ctx, provider: &str, email: &str, form: &CompleteForm, error: Option<&Error>) -> String {
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<form method="post" action="/signup/complete" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{email_l}<input type="email" value="{email}" readonly></label>
<label>{name_l}<input name="name" autocomplete="name" required maxlength="100" value="{name}"></label>
<label>{birth_l}<input name="birth_date" type="date" required value="{birth}"><small>{birth_h}</small></label>
<button>{submit}</button>
</form></section>"#,
        title = t(ctx, "signup.title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = esc(&ctx.lang.t("auth.complete_lead").replace("{provider}", provider)),
        csrf = esc(&ctx.csrf),
        email_l = t(ctx, "signup.email"),
        email = esc(email),
        name_l = t(ctx, "signup.name"),
        name = esc(&form.name),
        birth_l = t(ctx, "signup.birth_date"),
        birth = esc(&form.birth_date),
        birth_h = t(ctx, "signup.birth_date_hint"),
        submit = t(ctx, "signup.submit"),
    )
}

pub async fn complete_signup_form(State(state): State<AppState>, ctx: Ctx, headers: axum::http::HeaderMap) -> Response {
    let token = cookie(&headers, PENDING_COOKIE).unwrap_or("");
    match external::pending(&state, purpose::EXTERNAL_SIGN_UP, token).await {
        Ok((label, pending)) => {
            let form = CompleteForm { name: pending.name.clone().unwrap_or_default(), ..CompleteForm::default() };
            page(&ctx, StatusCode::OK, &ctx.lang.t("signup.title"), &complete_body(&ctx, &label, &pending.email, &form, None))
        }
        Err(e) => error_page(&ctx, &e, "/signup"),
    }
}

pub async fn complete_signup(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    FormBody(form): FormBody<CompleteForm>,
) -> Response {
    let token = cookie(&headers, PENDING_COOKIE).unwrap_or("").to_string();
    let pending = match external::pending(&state, purpose::EXTERNAL_SIGN_UP, &token).await {
        Ok(p) => p,
        Err(e) => return error_page(&ctx, &e, "/signup"),
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let today = Date::from_epoch_ms(state.config.clock.now_ms());
        external::complete_sign_up(
            &state,
            &token,
            &form.name,
            &form.birth_date,
            today,
            Some(ctx.lang.code.to_string()),
            ctx.ip,
            ctx.user_agent.clone(),
        )
        .await
    };
    match attempt.await {
        Ok(step) => {
            let mut response = after_first_factor(&state, &ctx, step);
            clear_cookie(&state, &mut response, PENDING_COOKIE);
            response
        }
        Err(e) => {
            page(&ctx, status_of(&e), &ctx.lang.t("signup.title"), &complete_body(&ctx, &pending.0, &pending.1.email, &form, Some(&e)))
        }
    }
}

pub async fn link_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Response {
    match external::pending(&state, purpose::LINK_IDENTITY, &q.token).await {
        Ok((label, _)) => {
            let text = ctx.lang.t("link.text").replace("{provider}", &label);
            confirm_page(&ctx, "/auth/link", &q.token, "link.title", &text, "link.submit")
        }
        Err(e) => error_page(&ctx, &e, "/signin"),
    }
}

pub async fn confirm_link(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TokenForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        external::confirm_link(&state, &form.token, ctx.ip, ctx.user_agent.clone()).await
    };
    match attempt.await {
        Ok(step) => after_first_factor(&state, &ctx, step),
        Err(e) => error_page(&ctx, &e, "/signin"),
    }
}
