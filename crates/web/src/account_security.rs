//! The security page (C04): sessions, password, two-factor sign-in, linked
//! providers, recent security activity; and the profile parts beyond name
//! and language (C01): email change, avatar.

use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use store::{NewAsset, Session, User};

use crate::api::{checked_id, QueryParams};
use crate::auth::{self, purpose, totp};
use crate::auth_pages::{with_retry_after, NoticeQuery, TokenForm, TokenQuery};
use crate::context::{ApiUser, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, CsrfOnly, FormBody};
use crate::AppState;

/// Largest avatar upload.
pub const AVATAR_MAX_BYTES: usize = 5 << 20;
/// Avatars are stored square at this side.
pub const AVATAR_SIDE: u32 = 256;

fn t(ctx: &Ctx, key: &str) -> String {
    esc(&ctx.lang.t(key))
}

#[allow(clippy::result_large_err)]
fn session_of(ctx: &Ctx) -> Result<(&User, &Session), Response> {
    match (signed_in(ctx), &ctx.session) {
        (Ok(user), Some(session)) => Ok((user, session)),
        (Err(redirect), _) => Err(redirect),
        (Ok(_), None) => Err(Redirect::to("/signin").into_response()),
    }
}

fn browser_label(ctx: &Ctx, user_agent: Option<&str>) -> String {
    let unknown = ctx.lang.t("security.unknown_browser");
    match auth::browser_family(user_agent) {
        (Some(b), Some(os)) => ctx.lang.t("security.browser_on").replace("{browser}", b).replace("{os}", os),
        (Some(b), None) => b.to_string(),
        (None, Some(os)) => format!("{unknown} ({os})"),
        (None, None) => unknown,
    }
}

/// What a result of an action on the security page shows.
enum Flash<'a> {
    None,
    Notice(String),
    Error(&'a Error),
    /// Recovery codes, shown once right after enabling TOTP.
    RecoveryCodes(Vec<String>),
}

async fn security_body(state: &AppState, ctx: &Ctx, user: &User, session: &Session, flash: Flash<'_>) -> Result<String, Error> {
    let sessions = state.store.sessions_of_user(&user.id).await?;
    let identities = state.store.identities_of_user(&user.id).await?;
    let totp_on = state.store.totp_of_user(&user.id).await?.is_some();
    let codes_left = if totp_on { state.store.recovery_codes_left(&user.id).await? } else { 0 };
    let activity = state.store.audit_entries(Some(&user.id), None, 10).await?.items;
    let csrf = esc(&ctx.csrf);
    let hidden = format!(r#"<input type="hidden" name="_csrf" value="{csrf}">"#);

    let flash = match flash {
        Flash::None => String::new(),
        Flash::Notice(n) => format!(r#"<p class="notice" role="status">{}</p>"#, esc(&n)),
        Flash::Error(e) => error_box(ctx.lang, e),
        Flash::RecoveryCodes(codes) => format!(
            r#"<div class="notice" role="status"><p>{}</p><ol class="codes">{}</ol></div>"#,
            t(ctx, "security.recovery_codes_intro"),
            codes.iter().map(|c| format!("<li><code>{}</code></li>", esc(c))).collect::<String>()
        ),
    };

    let rows: String = sessions
        .iter()
        .map(|s| {
            let action = if s.id == session.id {
                format!(r#"<span class="badge succeeded">{}</span>"#, t(ctx, "security.this_device"))
            } else {
                format!(
                    r#"<form method="post" action="/account/security/sessions/{id}/revoke">{hidden}<button class="secondary">{}</button></form>"#,
                    t(ctx, "security.revoke"),
                    id = esc(&s.id)
                )
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                esc(&browser_label(ctx, s.user_agent.as_deref())),
                esc(s.ip.as_deref().unwrap_or("—")),
                ctx.lang.time_html(s.created_at),
                ctx.lang.time_html(s.last_seen_at),
            )
        })
        .collect();
    let others = if sessions.len() > 1 {
        format!(
            r#"<form method="post" action="/account/security/sessions/revoke-others">{hidden}<button class="danger">{}</button></form>"#,
            t(ctx, "security.revoke_others")
        )
    } else {
        String::new()
    };

    let has_password = user.password_hash.is_some();
    let current_password = |label_key: &str| {
        if has_password {
            format!(
                r#"<label>{}<input name="current_password" type="password" autocomplete="current-password" required></label>"#,
                t(ctx, label_key)
            )
        } else {
            String::new()
        }
    };
    let password_form = format!(
        r#"<form method="post" action="/account/security/password" class="stack">{hidden}{current}
<label>{new_l}<input name="new_password" type="password" autocomplete="new-password" required minlength="8" maxlength="128"><small>{hint}</small></label>
<button>{submit}</button></form>"#,
        current = current_password("security.current_password"),
        new_l = t(ctx, "security.new_password"),
        hint = t(ctx, "security.password_hint"),
        submit = t(ctx, if has_password { "security.change_password" } else { "security.set_password" }),
    );

    let two_factor = if totp_on {
        format!(
            r#"<p><span class="badge succeeded">{on}</span> {left}</p>
<form method="post" action="/account/security/totp/disable" class="stack">{hidden}{current}
<label>{code_l}<input name="code" autocomplete="one-time-code" required maxlength="32"></label>
<button class="danger">{disable}</button></form>"#,
            on = t(ctx, "security.totp_on"),
            left = esc(&ctx.lang.t("security.codes_left").replace("{count}", &codes_left.to_string())),
            current = current_password("security.current_password"),
            code_l = t(ctx, "second_factor.code"),
            disable = t(ctx, "security.totp_disable"),
        )
    } else {
        format!(
            r#"<p>{off}</p><form method="post" action="/account/security/totp/setup">{hidden}<button>{setup}</button></form>"#,
            off = t(ctx, "security.totp_off"),
            setup = t(ctx, "security.totp_setup"),
        )
    };

    let linked: String = identities
        .iter()
        .map(|i| {
            let label = state.config.auth.provider_by_key(&i.provider).map_or(i.provider.clone(), |p| p.label.clone());
            format!(
                r#"<li><strong>{label}</strong> {email} <form method="post" action="/account/security/identities/{id}/unlink" class="inline">{hidden}<button class="link">{unlink}</button></form></li>"#,
                label = esc(&label),
                email = esc(i.email.as_deref().unwrap_or("")),
                id = esc(&i.id),
                unlink = t(ctx, "security.unlink"),
            )
        })
        .collect();
    let linkable: String = state
        .config
        .auth
        .providers
        .iter()
        .filter(|p| !identities.iter().any(|i| i.provider == p.key()))
        .map(|p| {
            format!(
                r#"<form method="post" action="/auth/{name}/start" class="inline">{hidden}<input type="hidden" name="link" value="1"><button class="secondary">{label}</button></form> "#,
                name = esc(&p.name),
                label = esc(&ctx.lang.t("security.link_with").replace("{provider}", &p.label)),
            )
        })
        .collect();
    let methods = format!(
        r#"<ul class="methods"><li><strong>{pw}</strong> {pw_state}</li>{linked}</ul><p>{linkable}</p>"#,
        pw = t(ctx, "signup.password"),
        pw_state = t(ctx, if has_password { "security.password_set" } else { "security.password_none" }),
    );

    let activity: String = activity
        .iter()
        .map(|a| {
            let key = format!("audit.{}", a.action);
            let label = ctx.lang.t(&key);
            let label = if label == key { a.action.clone() } else { label };
            format!("<li>{} {} <small>{}</small></li>", ctx.lang.time_html(a.at), esc(&label), esc(a.ip.as_deref().unwrap_or("")))
        })
        .collect();

    Ok(format!(
        r#"<section class="card security"><h1>{title}</h1>{flash}
<h2>{sessions_t}</h2><p>{sessions_lead}</p>
<div class="table-wrap"><table class="sessions"><thead><tr><th>{browser_h}</th><th>{ip_h}</th><th>{created_h}</th><th>{seen_h}</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>{others}
<h2>{password_t}</h2>{password_form}
<h2>{totp_t}</h2>{two_factor}
<h2>{methods_t}</h2>{methods}
<h2>{activity_t}</h2><ol class="timeline">{activity}</ol>
</section>"#,
        title = t(ctx, "security.title"),
        sessions_t = t(ctx, "security.sessions"),
        sessions_lead = t(ctx, "security.sessions_lead"),
        browser_h = t(ctx, "security.browser"),
        ip_h = t(ctx, "security.ip"),
        created_h = t(ctx, "security.created"),
        seen_h = t(ctx, "security.last_seen"),
        password_t = t(ctx, "security.password"),
        totp_t = t(ctx, "security.totp"),
        methods_t = t(ctx, "security.methods"),
        activity_t = t(ctx, "security.activity"),
    ))
}

async fn render(state: &AppState, ctx: &Ctx, status: StatusCode, flash: Flash<'_>) -> Response {
    let (user, session) = match session_of(ctx) {
        Ok(pair) => pair,
        Err(redirect) => return redirect,
    };
    // Re-read the account: an action may just have changed it.
    let fresh = state.store.user_by_id(&user.id).await.ok().flatten().unwrap_or_else(|| user.clone());
    let retry = match &flash {
        Flash::Error(e) => e.retry_after_secs.map(|s| (*e).clone().with_retry_after(s)),
        _ => None,
    };
    let response = match security_body(state, ctx, &fresh, session, flash).await {
        Ok(body) => page(ctx, status, &ctx.lang.t("security.title"), &body),
        Err(e) => ApiError(e).into_response(),
    };
    match retry {
        Some(e) => with_retry_after(response, &e),
        None => response,
    }
}

pub async fn security_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<NoticeQuery>) -> Response {
    let flash = match q.notice.as_deref() {
        Some("linked") => Flash::Notice(ctx.lang.t("security.notice_linked")),
        _ => Flash::None,
    };
    render(&state, &ctx, StatusCode::OK, flash).await
}

/// Runs a security action for the signed-in session and shows the page
/// again with its result.
async fn act<F, Fut>(state: &AppState, ctx: &Ctx, csrf: &str, notice_key: &str, action: F) -> Response
where
    F: FnOnce(User, Session) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let (user, session) = match session_of(ctx) {
        Ok((u, s)) => (u.clone(), s.clone()),
        Err(redirect) => return redirect,
    };
    let result = match check_csrf(ctx, csrf) {
        Ok(()) => action(user, session).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => render(state, ctx, StatusCode::OK, Flash::Notice(ctx.lang.t(notice_key))).await,
        Err(e) => render(state, ctx, status_of(&e), Flash::Error(&e)).await,
    }
}

pub async fn revoke_session(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<CsrfOnly>,
) -> Response {
    if ctx.session.as_ref().is_some_and(|s| s.id == id) {
        // Revoking this very session is signing out.
        return match check_csrf(&ctx, &form._csrf) {
            Ok(()) => {
                if let Some(user) = &ctx.user {
                    let _ = auth::revoke_session(&state, user, &id, ctx.ip).await;
                }
                Redirect::to("/signin").into_response()
            }
            Err(e) => render(&state, &ctx, status_of(&e), Flash::Error(&e)).await,
        };
    }
    let (ip, st) = (ctx.ip, state.clone());
    act(&state, &ctx, &form._csrf, "security.notice_revoked", |user, _| async move { auth::revoke_session(&st, &user, &id, ip).await })
        .await
}

pub async fn revoke_other_sessions(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CsrfOnly>) -> Response {
    let (ip, st) = (ctx.ip, state.clone());
    act(&state, &ctx, &form._csrf, "security.notice_revoked_others", |user, session| async move {
        auth::revoke_other_sessions(&st, &user, &session.id, ip).await.map(|_| ())
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub new_password: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn change_password(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<PasswordForm>) -> Response {
    let (ip, st) = (ctx.ip, state.clone());
    let PasswordForm { current_password, new_password, _csrf, .. } = form;
    act(&state, &ctx, &_csrf, "security.notice_password", |user, session| async move {
        auth::change_password(&st, &user, &session, &current_password, new_password, ip).await.map(|_| ())
    })
    .await
}

/// Shows a fresh secret as a QR code and text, and asks for a first code.
pub async fn totp_setup(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<CsrfOnly>) -> Response {
    let (user, _) = match session_of(&ctx) {
        Ok(pair) => pair,
        Err(redirect) => return redirect,
    };
    if let Err(e) = check_csrf(&ctx, &form._csrf) {
        return render(&state, &ctx, status_of(&e), Flash::Error(&e)).await;
    }
    totp_setup_page(&ctx, user, &totp::new_secret(), None)
}

fn totp_setup_page(ctx: &Ctx, user: &User, secret: &str, error: Option<&Error>) -> Response {
    let uri = totp::provisioning_uri("Atelier", &user.email, secret);
    let grouped: String = secret.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect::<Vec<_>>().join(" ");
    let body = format!(
        r#"<section class="card narrow"><h1>{title}</h1>{error}<p>{lead}</p>
<figure class="qr" aria-label="{qr_l}">{svg}</figure>
<p>{manual}<br><code class="secret">{grouped}</code></p>
<form method="post" action="/account/security/totp/enable" class="stack">
<input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="secret" value="{secret}">
<label>{code_l}<input name="code" autocomplete="one-time-code" inputmode="numeric" required maxlength="8"></label>
<button>{submit}</button></form><p><a href="/account/security">{back}</a></p></section>"#,
        title = t(ctx, "security.totp_setup_title"),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "security.totp_setup_lead"),
        qr_l = t(ctx, "security.totp_qr"),
        svg = totp::qr_svg(&uri),
        manual = t(ctx, "security.totp_manual"),
        grouped = esc(&grouped),
        csrf = esc(&ctx.csrf),
        secret = esc(secret),
        code_l = t(ctx, "second_factor.code"),
        submit = t(ctx, "security.totp_enable"),
        back = t(ctx, "auth.back"),
    );
    let status = error.map_or(StatusCode::OK, status_of);
    page(ctx, status, &ctx.lang.t("security.totp_setup_title"), &body)
}

#[derive(Debug, Default, Deserialize)]
pub struct TotpEnableForm {
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn totp_enable(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TotpEnableForm>) -> Response {
    let (user, _) = match session_of(&ctx) {
        Ok(pair) => pair,
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        auth::enable_totp(&state, user, &form.secret, &form.code, ctx.ip).await
    };
    match attempt.await {
        Ok(codes) => render(&state, &ctx, StatusCode::OK, Flash::RecoveryCodes(codes)).await,
        Err(e) if e.code == ErrorCode::InvalidCode => totp_setup_page(&ctx, user, &form.secret, Some(&e)),
        Err(e) => render(&state, &ctx, status_of(&e), Flash::Error(&e)).await,
    }
}

pub async fn totp_disable(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<PasswordForm>) -> Response {
    let (ip, st) = (ctx.ip, state.clone());
    let PasswordForm { current_password, code, _csrf, .. } = form;
    act(&state, &ctx, &_csrf, "security.notice_totp_disabled", |user, session| async move {
        auth::disable_totp(&st, &user, &session, &current_password, &code, ip).await
    })
    .await
}

pub async fn unlink_identity(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<CsrfOnly>,
) -> Response {
    let (ip, st) = (ctx.ip, state.clone());
    act(&state, &ctx, &form._csrf, "security.notice_unlinked", |user, _| async move { auth::unlink_identity(&st, &user, &id, ip).await })
        .await
}

// --------------------------------------------------------------- profile

/// The avatar and security links under the profile form of `/account`.
pub fn profile_extras(ctx: &Ctx, user: &User) -> String {
    let avatar = match &user.avatar_asset_id {
        Some(_) => format!(
            r#"<img class="avatar" src="/account/avatar?v={}" alt="{}" width="96" height="96">"#,
            user.updated_at,
            t(ctx, "profile.avatar")
        ),
        None => format!(
            r#"<span class="avatar empty" aria-hidden="true">{}</span>"#,
            esc(&user.name.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default())
        ),
    };
    format!(
        r#"<h2>{avatar_t}</h2><div class="avatar-row">{avatar}
<form method="post" action="/account/avatar" enctype="multipart/form-data" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{file_l}<input type="file" name="avatar" accept="image/png,image/jpeg,image/webp" required><small>{hint}</small></label>
<button class="secondary">{upload}</button></form></div>
<p><a class="button secondary" href="/account/security">{security}</a> <a class="button secondary" href="/account/api-keys">{api_keys}</a> <a class="button secondary" href="/account/webhooks">{webhooks}</a></p>"#,
        avatar_t = t(ctx, "profile.avatar"),
        csrf = esc(&ctx.csrf),
        file_l = t(ctx, "profile.avatar_file"),
        hint = t(ctx, "profile.avatar_hint"),
        upload = t(ctx, "profile.avatar_upload"),
        security = t(ctx, "security.title"),
        api_keys = t(ctx, "api_keys.title"),
        webhooks = t(ctx, "webhooks.title"),
    )
}

/// Stores a new avatar through the imaging pipeline: decoded within limits
/// (upright, every metadata field dropped by re-encoding from pixels),
/// center-cropped to a square and scaled to 256 px, then written like any
/// other object of the account. The previous avatar is deleted.
pub async fn upload_avatar(State(state): State<AppState>, ctx: Ctx, mut multipart: Multipart) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user.clone(),
        Err(redirect) => return redirect,
    };
    let attempt = async {
        let (mut csrf, mut bytes) = (String::new(), None);
        while let Some(field) = multipart.next_field().await.map_err(|_| Error::invalid("could not read the upload"))? {
            match field.name() {
                Some("_csrf") => csrf = field.text().await.map_err(|_| Error::invalid("bad form"))?,
                Some("avatar") => {
                    let data = field.bytes().await.map_err(|_| Error::new(ErrorCode::PayloadTooLarge, "the image is too large"))?;
                    if data.len() > AVATAR_MAX_BYTES {
                        return Err(Error::new(ErrorCode::PayloadTooLarge, "the image is too large"));
                    }
                    bytes = Some(data);
                }
                _ => {}
            }
        }
        check_csrf(&ctx, &csrf)?;
        let bytes = bytes.filter(|b| !b.is_empty()).ok_or_else(|| Error::invalid("choose an image"))?;
        let encoded =
            tokio::task::spawn_blocking(move || avatar_png(&bytes)).await.map_err(|_| Error::internal("avatar task failed"))??;
        set_avatar(&state, &user, encoded).await
    };
    match attempt.await {
        Ok(()) => Redirect::to("/account").into_response(),
        Err(e) => {
            let body = format!(
                r#"<section class="card narrow"><h1>{}</h1>{}<p><a href="/account">{}</a></p></section>"#,
                t(&ctx, "account.title"),
                error_box(ctx.lang, &e),
                t(&ctx, "auth.back")
            );
            page(&ctx, status_of(&e), &ctx.lang.t("account.title"), &body)
        }
    }
}

fn avatar_png(bytes: &[u8]) -> Result<imaging::Encoded, Error> {
    let limits = imaging::DecodeLimits::default();
    let decoded = imaging::decode(bytes, &limits)?;
    let img = decoded.image;
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let (ox, oy) = ((w - side) / 2, (h - side) / 2);
    let square = imaging::RgbaImage::from_fn(side, side, |x, y| *img.get_pixel(x + ox, y + oy));
    imaging::thumbnail_png(&square, AVATAR_SIDE)
}

async fn set_avatar(state: &AppState, user: &User, encoded: imaging::Encoded) -> Result<(), Error> {
    use sha2::Digest;
    let id = domain::ids::new_id();
    let asset = NewAsset {
        id: id.clone(),
        owner_id: user.id.clone(),
        task_id: None,
        kind: "avatar".into(),
        parent_id: None,
        storage_key: format!("{}/{id}.png", user.id),
        content_type: encoded.content_type.to_string(),
        sha256: domain::ids::to_hex(&sha2::Sha256::digest(&encoded.bytes)),
        size_bytes: encoded.bytes.len() as i64,
        width: i64::from(encoded.width),
        height: i64::from(encoded.height),
        saved: true,
        expires_at: None,
    };
    state.blobs.put(&asset.storage_key, encoded.bytes).await?;
    if let Err(e) = state.store.insert_asset(&asset).await {
        let _ = state.blobs.delete(&asset.storage_key).await;
        return Err(e);
    }
    state.store.set_avatar(&user.id, Some(&id)).await?;
    if let Some(old) = &user.avatar_asset_id {
        if let Err(e) = crate::api::delete_image(state, user, old).await {
            tracing::warn!(error = %e, "previous avatar not deleted");
        }
    }
    Ok(())
}

/// The signed-in account's avatar.
pub async fn avatar(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let user = ctx.user.as_ref().ok_or_else(|| Error::new(ErrorCode::Unauthenticated, "sign in first"))?;
    let id = user.avatar_asset_id.as_deref().ok_or_else(Error::not_found)?;
    let asset = state.store.get_asset(&user.id, id).await?;
    let bytes = state.blobs.get(&asset.storage_key).await?.ok_or_else(Error::not_found)?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub _csrf: String,
}

fn email_body(ctx: &Ctx, user: &User, form: &EmailForm, notice: Option<&str>, error: Option<&Error>) -> String {
    let password = if user.password_hash.is_some() {
        format!(
            r#"<label>{}<input name="current_password" type="password" autocomplete="current-password" required></label>"#,
            t(ctx, "security.current_password")
        )
    } else {
        String::new()
    };
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{notice}{error}<p>{lead}</p>
<form method="post" action="/account/email" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{current_l}<input type="email" value="{current}" readonly></label>
<label>{new_l}<input name="email" type="email" autocomplete="email" required value="{email}"></label>
{password}<button>{submit}</button></form><p><a href="/account">{back}</a></p></section>"#,
        title = t(ctx, "email_change.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        lead = t(ctx, "email_change.lead"),
        csrf = esc(&ctx.csrf),
        current_l = t(ctx, "email_change.current"),
        current = esc(&user.email),
        new_l = t(ctx, "email_change.new"),
        email = esc(&form.email),
        submit = t(ctx, "email_change.submit"),
        back = t(ctx, "auth.back"),
    )
}

pub async fn email_form(ctx: Ctx) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    page(&ctx, StatusCode::OK, &ctx.lang.t("email_change.title"), &email_body(&ctx, user, &EmailForm::default(), None, None))
}

pub async fn request_email_change(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<EmailForm>) -> Response {
    let (user, session) = match session_of(&ctx) {
        Ok(pair) => pair,
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        auth::request_email_change(&state, user, session, &form.email, &form.current_password, ctx.ip).await
    };
    match attempt.await {
        Ok(()) => {
            let notice = ctx.lang.t("email_change.sent").replace("{email}", form.email.trim());
            page(
                &ctx,
                StatusCode::OK,
                &ctx.lang.t("email_change.title"),
                &email_body(&ctx, user, &EmailForm::default(), Some(&notice), None),
            )
        }
        Err(e) => with_retry_after(
            page(&ctx, status_of(&e), &ctx.lang.t("email_change.title"), &email_body(&ctx, user, &form, None, Some(&e))),
            &e,
        ),
    }
}

pub async fn email_confirm_page(State(state): State<AppState>, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Response {
    let token = match auth::peek_token(&state, purpose::CHANGE_EMAIL, &q.token).await {
        Ok(token) => token,
        Err(e) => {
            return page(
                &ctx,
                status_of(&e),
                &ctx.lang.t("email_change.title"),
                &format!(r#"<section class="card narrow">{}</section>"#, error_box(ctx.lang, &e)),
            )
        }
    };
    let email = token
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|d| d["email"].as_str().map(str::to_string))
        .unwrap_or_default();
    let body = format!(
        r#"<section class="card narrow"><h1>{title}</h1><p>{text}</p>
<form method="post" action="/account/email/confirm"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="token" value="{token}"><button>{submit}</button></form></section>"#,
        title = t(&ctx, "email_change.confirm_title"),
        text = esc(&ctx.lang.t("email_change.confirm_text").replace("{email}", &email)),
        csrf = esc(&ctx.csrf),
        token = esc(&q.token),
        submit = t(&ctx, "email_change.confirm_submit"),
    );
    page(&ctx, StatusCode::OK, &ctx.lang.t("email_change.confirm_title"), &body)
}

pub async fn email_confirm(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<TokenForm>) -> Response {
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        auth::confirm_email_change(&state, &form.token, ctx.ip).await
    };
    match attempt.await {
        Ok(_) if ctx.user.is_some() => Redirect::to("/account").into_response(),
        Ok(_) => Redirect::to("/signin?notice=email_changed").into_response(),
        Err(e) => page(
            &ctx,
            status_of(&e),
            &ctx.lang.t("email_change.title"),
            &format!(r#"<section class="card narrow">{}</section>"#, error_box(ctx.lang, &e)),
        ),
    }
}

// ------------------------------------------------------------------- API

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub current: bool,
    pub browser: Option<&'static str>,
    pub os: Option<&'static str>,
    /// Truncated before it was stored.
    pub ip: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

/// `GET /api/v1/account/sessions`: the account's sessions, newest first.
pub async fn list_sessions(State(state): State<AppState>, ctx: Ctx, api: ApiUser) -> ApiResult<Json<Vec<SessionView>>> {
    let current = ctx.session.as_ref().map(|s| s.id.clone());
    let sessions = state.store.sessions_of_user(&api.user.id).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| {
                let (browser, os) = auth::browser_family(s.user_agent.as_deref());
                SessionView {
                    current: current.as_deref() == Some(s.id.as_str()),
                    browser,
                    os,
                    ip: s.ip,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                    expires_at: s.expires_at,
                    id: s.id,
                }
            })
            .collect(),
    ))
}

/// `DELETE /api/v1/account/sessions/{id}`: ends a session at once.
pub async fn delete_session(State(state): State<AppState>, ctx: Ctx, api: ApiUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    auth::revoke_session(&state, &api.user, checked_id(&id)?, ctx.ip).await?;
    Ok(StatusCode::NO_CONTENT)
}
