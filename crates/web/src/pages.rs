//! Server-rendered pages. Every string a person reads comes from the
//! translation files; scripts are external files (the CSP forbids inline).

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use domain::params::{GenerateParams, OutputFormat};
use domain::task::TaskStatus;
use domain::time::format_utc;
use domain::{Error, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use store::{Task, TaskEvent, User};

use crate::api::{apply_account_update, checked_id, delete_image, AccountUpdate};
use crate::context::{tokens_match, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::i18n::{I18n, Lang};
use crate::AppState;

/// Escapes text for HTML element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A header link, marked as the current page when the path is under it.
fn nav_link(ctx: &Ctx, href: &str, key: &str) -> String {
    let path = ctx.privacy.path.as_str();
    let current = path == href || path.strip_prefix(href).is_some_and(|rest| rest.starts_with('/'));
    format!(r#"<a href="{href}"{}>{}</a>"#, if current { r#" aria-current="page""# } else { "" }, esc(&ctx.lang.t(key)))
}

/// The frame of every page: header with navigation and theme switch,
/// banners, the page, the footer, and the confirm dialog and toast region
/// that `ui.js` drives.
fn layout(ctx: &Ctx, title: &str, body: &str) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let nav = match &ctx.user {
        Some(user) => {
            let staff =
                if matches!(user.role.as_str(), "admin" | "moderator") { nav_link(ctx, "/admin", "nav.admin") } else { String::new() };
            format!(
                r#"{}{}{}{}{staff}<form method="post" action="/signout" class="inline"><input type="hidden" name="_csrf" value="{}"><button class="link">{}</button></form>"#,
                nav_link(ctx, "/generate", "nav.generate"),
                nav_link(ctx, "/gallery", "nav.gallery"),
                nav_link(ctx, "/billing", "nav.billing"),
                nav_link(ctx, "/account", "nav.account"),
                esc(&ctx.csrf),
                t("nav.signout")
            )
        }
        None => format!(r#"{}<a class="button" href="/signup">{}</a>"#, nav_link(ctx, "/signin", "nav.signin"), t("nav.signup")),
    };
    format!(
        r##"<!doctype html>
<html lang="{lang}"{theme}>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · Atelier</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script type="module" src="/static/ui.js"></script>
<script type="module" src="/static/app.js"></script>
{tags}</head>
<body>
<a class="skip" href="#main">{skip}</a>
<header class="top"><a class="brand" href="/">Atelier</a><nav aria-label="{nav_label}">{nav}</nav>{switch}</header>
{banners}<main id="main">
{body}
</main>
<footer><span>{footer}</span>{legal}</footer>
<div class="toasts" id="toasts" role="status" aria-live="polite"></div>
<dialog id="confirm-dialog" aria-labelledby="confirm-text"><form method="dialog" class="stack"><p id="confirm-text"></p><p class="dialog-actions"><button value="cancel" class="secondary">{cancel}</button> <button value="ok" class="danger">{confirm}</button></p></form></dialog>
</body>
</html>"##,
        lang = ctx.lang.code,
        theme = ctx.theme.map(|t| format!(r#" data-theme="{t}""#)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        title = esc(title),
        skip = t("nav.skip"),
        nav_label = t("nav.label"),
        switch = crate::theme::switch(ctx),
        footer = t("footer.tagline"),
        banners = crate::consent::banners(ctx),
        legal = crate::consent::footer(ctx),
        tags = crate::tags::Injected::elements(&ctx.privacy),
        cancel = t("dialog.cancel"),
        confirm = t("dialog.confirm"),
    )
}

pub(crate) fn page(ctx: &Ctx, status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = (status, Html(layout(ctx, title, body))).into_response();
    let injected = crate::tags::Injected::for_visitor(&ctx.privacy);
    if !injected.is_empty() {
        response.extensions_mut().insert(injected);
    }
    response
}

/// A page whose body was built by `body`, answered with the status of the
/// form error it shows (if any); a failure building it is an API error.
pub(crate) fn page_with(ctx: &Ctx, title_key: &str, error: Option<&Error>, body: Result<String, Error>) -> Response {
    match body {
        Ok(body) => page(ctx, error.map_or(StatusCode::OK, status_of), &ctx.lang.t(title_key), &body),
        Err(e) => ApiError(e).into_response(),
    }
}

pub(crate) fn error_box(lang: &Lang, error: &Error) -> String {
    format!(r#"<p class="error" role="alert" data-code="{}">{}</p>"#, error.code.as_str(), esc(&lang.t(&error.code.message_key())))
}

pub(crate) fn status_of(error: &Error) -> StatusCode {
    StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Form extractor whose failures are `invalid_input`.
pub struct FormBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FormBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Form::<T>::from_request(req, state).await.map(|Form(v)| FormBody(v)).map_err(|e| ApiError(Error::invalid(e.body_text())))
    }
}

pub(crate) fn check_csrf(ctx: &Ctx, sent: &str) -> Result<(), Error> {
    if tokens_match(sent, &ctx.csrf) {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::CsrfFailed, "the form expired; please try again"))
    }
}

pub(crate) fn signed_in(ctx: &Ctx) -> Result<&User, Response> {
    ctx.user.as_ref().ok_or_else(|| Redirect::to("/signin").into_response())
}

/// The page for anything that does not exist (or must look as if it did not).
pub fn not_found_page(ctx: &Ctx) -> Response {
    let body = format!(
        r#"<section class="card narrow"><h1>{}</h1><p><a class="button" href="/">{}</a></p></section>"#,
        esc(&ctx.lang.t("notfound.title")),
        esc(&ctx.lang.t("notfound.home"))
    );
    page(ctx, StatusCode::NOT_FOUND, &ctx.lang.t("notfound.title"), &body)
}

pub async fn home(ctx: Ctx) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/generate").into_response();
    }
    let t = |k: &str| esc(&ctx.lang.t(k));
    let body = format!(
        r#"<section class="hero"><h1>{}</h1><p>{}</p><p class="actions"><a class="button" href="/signup">{}</a> <a class="button secondary" href="/signin">{}</a></p>
<ul class="promises"><li>{}</li><li>{}</li><li>{}</li></ul></section>"#,
        t("home.title"),
        t("home.lead"),
        t("nav.signup"),
        t("nav.signin"),
        t("home.promise_private"),
        t("home.promise_delete"),
        t("home.promise_offline"),
    );
    page(&ctx, StatusCode::OK, &ctx.lang.t("home.title"), &body)
}

// Sign-up, sign-in and sign-out pages live in `auth_pages.rs`.

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub _csrf: String,
}

/// Status names for the live updater, as `data-l-*` attributes.
pub(crate) fn status_labels(lang: &Lang) -> String {
    ["queued", "running", "succeeded", "failed", "canceled"]
        .iter()
        .map(|s| format!(r#" data-l-{s}="{}""#, esc(&lang.t(&format!("status.{s}")))))
        .collect()
}

fn timeline_html(lang: &Lang, events: &[TaskEvent]) -> String {
    let items: String = events
        .iter()
        .map(|e| {
            format!(
                r#"<li><time>{}</time> <span class="badge {}">{}</span></li>"#,
                esc(&format_utc(e.at)),
                esc(&e.status),
                esc(&lang.t(&format!("status.{}", e.status)))
            )
        })
        .collect();
    format!(r#"<ol class="timeline">{items}</ol>"#)
}

fn params_html(lang: &Lang, task: &Task) -> String {
    let t = |k: &str| esc(&lang.t(k));
    match serde_json::from_str::<GenerateParams>(&task.params) {
        Ok(p) => format!(
            r#"<dl class="params"><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>"#,
            t("generate.size"),
            esc(&p.size.label()),
            t("generate.style"),
            esc(&lang.t(&format!("style.{}", p.style))),
            t("task.seed"),
            p.seed,
            t("task.model"),
            esc(task.model.as_deref().unwrap_or("")),
        ),
        Err(_) => String::new(),
    }
}

pub async fn task_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let task = state.store.get_task(&user.id, checked_id(&id)?).await?;
    let events = state.store.task_events(&user.id, &task.id).await?;
    let outputs = state.store.task_outputs(&user.id, &task.id).await?;
    let t = |k: &str| esc(&ctx.lang.t(k));
    let thumbs: String = outputs
        .iter()
        .map(|o| {
            format!(
                r#"<a href="/images/{id}"><img src="/api/v1/assets/{thumb}" alt="{alt}" width="{w}" height="{h}" loading="lazy"></a>"#,
                id = o.asset.id,
                thumb = o.thumbnail_id.as_deref().unwrap_or(&o.asset.id),
                alt = esc(&task.prompt),
                w = o.asset.width,
                h = o.asset.height,
            )
        })
        .collect();
    let error = task
        .error_code
        .as_ref()
        .filter(|_| task.status == TaskStatus::Failed)
        .map(|c| format!(r#"<p class="error" data-code="{}">{}</p>"#, esc(c), t("task.failed")))
        .unwrap_or_default();
    let live = if task.status.is_terminal() { String::new() } else { format!(r#" data-watch="{}"{}"#, task.id, status_labels(ctx.lang)) };
    let body = format!(
        r#"<section class="card" id="task"{live}><h1>{title}</h1>
<p class="status"><span class="badge {status}">{status_t}</span></p><progress max="100" value="{progress}"></progress>{error}
<blockquote class="prompt">{prompt}</blockquote>{params}
<h2>{outputs_t}</h2><div class="grid results">{thumbs}</div>
<h2>{timeline_t}</h2>{timeline}</section>"#,
        title = t("task.title"),
        status = task.status.as_str(),
        status_t = t(&format!("status.{}", task.status.as_str())),
        progress = task.progress,
        prompt = esc(&task.prompt),
        params = params_html(ctx.lang, &task),
        outputs_t = t("task.outputs"),
        timeline_t = t("task.timeline"),
        timeline = timeline_html(ctx.lang, &events),
    );
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("task.title"), &body))
}

pub async fn image_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let asset = state.store.get_asset(&user.id, checked_id(&id)?).await?;
    let task = match &asset.task_id {
        Some(task_id) => Some(state.store.get_task(&user.id, task_id).await?),
        None => None,
    };
    let events = match &task {
        Some(task) => state.store.task_events(&user.id, &task.id).await?,
        None => Vec::new(),
    };
    let share = crate::share::share_html(&state, &ctx, &asset).await?;
    let t = |k: &str| esc(&ctx.lang.t(k));
    let prompt = task.as_ref().map(|t| t.prompt.as_str()).unwrap_or("");
    let body = format!(
        r#"<section class="card detail"><figure><img src="/api/v1/assets/{id}" alt="{alt}" width="{w}" height="{h}"></figure>
<div class="meta"><h1>{title}</h1><blockquote class="prompt">{prompt}</blockquote>{params}
<dl class="params"><dt>{dims_t}</dt><dd>{w} × {h}</dd><dt>{created_t}</dt><dd>{created} UTC</dd></dl>
<p class="actions downloads"><span>{download}</span>{downloads}</p>
{retention}{actions}{share}
<form method="post" action="/images/{id}/delete" data-confirm="{confirm}"><input type="hidden" name="_csrf" value="{csrf}"><button class="danger">{delete}</button></form>
<h2>{timeline_t}</h2>{timeline}</div></section>"#,
        id = asset.id,
        alt = esc(prompt),
        w = asset.width,
        h = asset.height,
        title = t("image.title"),
        prompt = esc(prompt),
        params = task.as_ref().map(|task| params_html(ctx.lang, task)).unwrap_or_default(),
        dims_t = t("image.dimensions"),
        created_t = t("image.created"),
        created = esc(&format_utc(asset.created_at)),
        download = t("image.download"),
        downloads = download_links(&asset),
        retention = crate::retention::save_toggle_html(&ctx, &asset),
        actions = crate::actions::image_actions_html(&ctx, &asset),
        confirm = t("image.delete_confirm"),
        csrf = esc(&ctx.csrf),
        delete = t("image.delete"),
        timeline_t = t("task.timeline"),
        timeline = timeline_html(ctx.lang, &events),
    );
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("image.title"), &body))
}

/// One download link per format; the stored one first, the others converted.
fn download_links(asset: &store::Asset) -> String {
    let stored = OutputFormat::from_content_type(&asset.content_type).unwrap_or_default();
    std::iter::once(stored)
        .chain([OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp].into_iter().filter(|f| *f != stored))
        .map(|f| {
            format!(
                r#" <a class="button{class}" href="/api/v1/assets/{id}?download=1&amp;format={name}" download>{label}</a>"#,
                class = if f == stored { "" } else { " secondary" },
                id = asset.id,
                name = f.as_str(),
                label = f.as_str().to_uppercase(),
            )
        })
        .collect()
}

pub async fn delete_image_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<CsrfOnly>,
) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    delete_image(&state, user, checked_id(&id)?).await?;
    Ok(Redirect::to("/gallery").into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub locale: String,
    #[serde(default)]
    pub _csrf: String,
}

fn account_body(ctx: &Ctx, user: &User, notice: Option<&str>, error: Option<&Error>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    let mut langs = vec![String::new()];
    langs.extend(I18n::global().langs().iter().map(|l| l.code.to_string()));
    let lang_options: String = langs
        .iter()
        .map(|code| {
            let label = if code.is_empty() { ctx.lang.t("account.language_auto") } else { ctx.lang.t(&format!("language.{code}")) };
            let selected = user.locale.as_deref().unwrap_or("") == code;
            format!(r#"<option value="{}"{}>{}</option>"#, esc(code), if selected { " selected" } else { "" }, esc(&label))
        })
        .collect();
    format!(
        r#"<section class="card narrow"><h1>{title}</h1>{notice}{error}
<form method="post" action="/account" class="stack">
<input type="hidden" name="_csrf" value="{csrf}">
<label>{name_l}<input name="name" required maxlength="100" value="{name}"></label>
<label>{email_l}<input type="email" value="{email}" readonly><small><a href="/account/email">{email_change}</a></small></label>
<label>{lang_l}<select name="locale">{lang_options}</select></label>
<button>{save}</button>
</form>{extras}<p><a class="button secondary" href="/account/privacy">{privacy}</a></p></section>"#,
        title = t("account.title"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        name_l = t("signup.name"),
        name = esc(&user.name),
        email_l = t("signup.email"),
        email = esc(&user.email),
        lang_l = t("account.language"),
        save = t("account.save"),
        email_change = t("profile.email_change"),
        extras = crate::account_security::profile_extras(ctx, user),
        privacy = t("privacy_center.title"),
    )
}

pub async fn account_page(ctx: Ctx) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    page(&ctx, StatusCode::OK, &ctx.lang.t("account.title"), &account_body(&ctx, user, None, None))
}

pub async fn update_account(State(state): State<AppState>, ctx: Ctx, FormBody(form): FormBody<AccountForm>) -> Response {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        apply_account_update(&state, user, AccountUpdate { name: Some(form.name.clone()), locale: Some(form.locale.clone()) }).await
    };
    match attempt.await {
        Ok(updated) => {
            let mut ctx = ctx.clone();
            ctx.lang = updated.locale.as_deref().map_or(ctx.lang, |l| I18n::global().lang(l));
            let notice = ctx.lang.t("account.saved");
            ctx.user = Some(updated.clone());
            page(&ctx, StatusCode::OK, &ctx.lang.t("account.title"), &account_body(&ctx, &updated, Some(&notice), None))
        }
        Err(e) => page(&ctx, status_of(&e), &ctx.lang.t("account.title"), &account_body(&ctx, user, None, Some(&e))),
    }
}

const APP_CSS: &str = include_str!("../static/app.css");
const APP_JS: &str = include_str!("../static/app.js");
const GENERATE_JS: &str = include_str!("../static/generate.js");
const MASK_JS: &str = include_str!("../static/mask.js");
const GALLERY_JS: &str = include_str!("../static/gallery.js");
const UI_JS: &str = include_str!("../static/ui.js");

pub async fn static_file(Path(file): Path<String>) -> Response {
    const JS: &str = "text/javascript; charset=utf-8";
    let (body, content_type) = match file.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, JS),
        "generate.js" => (GENERATE_JS, JS),
        "mask.js" => (MASK_JS, JS),
        "gallery.js" => (GALLERY_JS, JS),
        "ui.js" => (UI_JS, JS),
        _ => return ApiError(Error::not_found()).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}
