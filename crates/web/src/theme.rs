//! Light and dark themes. Without a choice the page follows the system
//! setting. A choice is a cookie kept for a year only with consent to
//! preference cookies; otherwise it lasts for the browser session (a setting
//! the person asked for, used only while they browse), and giving or
//! withdrawing that consent converts it.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use domain::Error;
use serde::Deserialize;

use crate::consent::local_path;
use crate::context::{cookie, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, FormBody};
use crate::AppState;

pub const THEME_COOKIE: &str = "atelier_theme";
const KEEP_DAYS: i64 = 365;

/// The chosen theme, `None` to follow the system.
pub fn chosen(headers: &HeaderMap) -> Option<&'static str> {
    match cookie(headers, THEME_COOKIE)? {
        "light" => Some("light"),
        "dark" => Some("dark"),
        _ => None,
    }
}

/// The cookie that keeps `theme`: a year with preference consent, the
/// browser session without; `None` removes it.
pub fn set_cookie(theme: Option<&str>, keep: bool, secure: bool) -> HeaderValue {
    let mut c = match theme {
        Some(theme) if keep => format!("{THEME_COOKIE}={theme}; Max-Age={}", KEEP_DAYS * 86_400),
        Some(theme) => format!("{THEME_COOKIE}={theme}"),
        None => format!("{THEME_COOKIE}=; Max-Age=0"),
    };
    c.push_str("; Path=/; SameSite=Lax; HttpOnly");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("theme names are cookie-safe")
}

/// The switch in every page's header: a form (works without JavaScript)
/// with one button per target theme; the stylesheet shows the one that
/// leads away from the theme in effect.
pub fn switch(ctx: &Ctx) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    format!(
        r#"<form method="post" action="/theme" class="theme-switch"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="back" value="{back}"><button class="ghost to-dark" name="theme" value="dark" title="{dark}" aria-label="{dark}"><span aria-hidden="true">☾</span></button><button class="ghost to-light" name="theme" value="light" title="{light}" aria-label="{light}"><span aria-hidden="true">☀</span></button></form>"#,
        csrf = esc(&ctx.csrf),
        back = esc(&ctx.privacy.path),
        dark = t("theme.to_dark"),
        light = t("theme.to_light"),
    )
}

#[derive(Debug, Deserialize)]
pub struct ThemeForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub theme: String,
    #[serde(default)]
    pub back: String,
}

pub async fn choose(
    axum::extract::State(state): axum::extract::State<AppState>,
    ctx: Ctx,
    FormBody(form): FormBody<ThemeForm>,
) -> ApiResult<Response> {
    check_csrf(&ctx, &form._csrf)?;
    let theme = match form.theme.as_str() {
        "light" => Some("light"),
        "dark" => Some("dark"),
        "system" => None,
        _ => return Err(Error::invalid("theme must be light, dark or system").into()),
    };
    let keep = ctx.privacy.choice.is_some_and(|c| c.preferences);
    let mut response = Redirect::to(local_path(&form.back)).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(theme, keep, state.config.https));
    Ok(response)
}
