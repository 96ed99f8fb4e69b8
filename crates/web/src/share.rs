//! Public share links: off until the owner makes one for an image, one per
//! image, revocable at once. The link is a random 256-bit token; its page
//! shows that image and nothing about the account, with a report form.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64::Engine as _;
use domain::Error;
use serde::Deserialize;
use serde_json::json;
use store::ShareLink;

use crate::api::checked_id;
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::pages::{check_csrf, error_box, esc, page, signed_in, status_of, FormBody};
use crate::AppState;

/// Random bytes in a token (base64url: 43 characters).
const TOKEN_BYTES: usize = 32;

fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>())
}

/// Tokens we could have made; anything else is not looked up.
fn plausible(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn share_url(state: &AppState, token: &str) -> String {
    format!("{}/s/{token}", state.config.public_url.trim_end_matches('/'))
}

fn view(state: &AppState, link: &ShareLink) -> serde_json::Value {
    json!({ "url": share_url(state, &link.token), "token": link.token, "image_id": link.asset_id, "created_at": link.created_at })
}

/// `POST /api/v1/images/{id}/share`: 201 with a new link, 200 with the one
/// the image already has.
pub async fn api_create(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<Response> {
    let token = new_token();
    let link = state.store.create_share_link(&api.user.id, checked_id(&id)?, &token).await?;
    let status = if link.token == token { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&state, &link))).into_response())
}

/// `GET /api/v1/images/{id}/share`: the image's link, 404 when it has none.
pub async fn api_get(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    state.store.get_asset(&api.user.id, checked_id(&id)?).await?;
    let link = state.store.share_link_of(&api.user.id, &id).await?.ok_or_else(Error::not_found)?;
    Ok(Json(view(&state, &link)))
}

/// `DELETE /api/v1/images/{id}/share`: the link stops working at once.
pub async fn api_revoke(State(state): State<AppState>, api: ApiUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if state.store.delete_share_link(&api.user.id, checked_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found().into())
    }
}

#[derive(Debug, Deserialize)]
pub struct ShareForm {
    #[serde(default)]
    pub _csrf: String,
    /// `true` makes (or keeps) the link, `false` revokes it.
    #[serde(default)]
    pub shared: bool,
}

/// The image page's share switch.
pub async fn share_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<ShareForm>,
) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let id = checked_id(&id)?;
    if form.shared {
        state.store.create_share_link(&user.id, id, &new_token()).await?;
    } else {
        state.store.get_asset(&user.id, id).await?;
        state.store.delete_share_link(&user.id, id).await?;
    }
    Ok(Redirect::to(&format!("/images/{id}#share")).into_response())
}

/// The image page's share section: off by default, the link once made.
pub async fn share_html(state: &AppState, ctx: &Ctx, asset: &store::Asset) -> Result<String, Error> {
    if !matches!(asset.kind.as_str(), "output" | "upload") {
        return Ok(String::new());
    }
    let t = |k: &str| esc(&ctx.lang.t(k));
    let link = state.store.share_link_of(&asset.owner_id, &asset.id).await?;
    let (state_html, value, button, class) = match &link {
        Some(link) => (
            format!(
                r#"<p>{on}</p><input class="share-url" type="url" readonly value="{url}" aria-label="{label}" data-copy>"#,
                on = t("share.on"),
                url = esc(&share_url(state, &link.token)),
                label = t("share.link"),
            ),
            "false",
            t("share.revoke"),
            "danger",
        ),
        None => (format!(r#"<p class="hint">{}</p>"#, t("share.off")), "true", t("share.create"), "secondary"),
    };
    Ok(format!(
        r#"<div class="share" id="share"><h2>{title}</h2>{state_html}
<form method="post" action="/images/{id}/share"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="shared" value="{value}"><button class="{class}">{button}</button></form></div>"#,
        title = t("share.title"),
        id = asset.id,
        csrf = esc(&ctx.csrf),
    ))
}

fn shared_page(ctx: &Ctx, token: &str, asset: &store::Asset, notice: Option<&str>, error: Option<&Error>) -> String {
    let t = |k: &str| esc(&ctx.lang.t(k));
    format!(
        r#"<section class="card shared"><figure><img src="/s/{token}/image" alt="{alt}" width="{w}" height="{h}"></figure>
<p class="hint">{made}</p>
<details class="report"{open}><summary>{report}</summary>{notice}{error}
<form method="post" action="/s/{token}/report" class="stack"><input type="hidden" name="_csrf" value="{csrf}">
<label>{reason_l}<textarea name="reason" rows="3" required maxlength="1000"></textarea></label><button class="secondary">{send}</button></form></details></section>"#,
        alt = t("share.alt"),
        w = asset.width,
        h = asset.height,
        made = t("share.made_with"),
        open = if notice.is_some() || error.is_some() { " open" } else { "" },
        report = t("share.report"),
        notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default(),
        error = error.map(|e| error_box(ctx.lang, e)).unwrap_or_default(),
        csrf = esc(&ctx.csrf),
        reason_l = t("share.reason"),
        send = t("share.send"),
    )
}

async fn shared(state: &AppState, token: &str) -> Result<store::Asset, Error> {
    if !plausible(token) {
        return Err(Error::not_found());
    }
    state.store.shared_asset(token).await
}

/// `GET /s/{token}`: the shared image, to anyone with the link.
pub async fn shared_view(State(state): State<AppState>, ctx: Ctx, Path(token): Path<String>) -> ApiResult<Response> {
    let asset = shared(&state, &token).await?;
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("share.page_title"), &shared_page(&ctx, &token, &asset, None, None)))
}

/// `GET /s/{token}/image`: the shared image's bytes.
pub async fn shared_image(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let asset = shared(&state, &token).await?;
    let bytes = state.blobs.get(&asset.storage_key).await?.ok_or_else(Error::not_found)?;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&asset.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // A revoked link must stop working at once: no shared caches.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    pub _csrf: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /s/{token}/report`: anyone with the link reports the image to the
/// moderators (signed in or not).
pub async fn report(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(token): Path<String>,
    FormBody(form): FormBody<ReportForm>,
) -> ApiResult<Response> {
    let asset = shared(&state, &token).await?;
    let attempt = async {
        check_csrf(&ctx, &form._csrf)?;
        let reason = form.reason.trim();
        if reason.is_empty() || reason.chars().count() > 1000 {
            return Err(Error::invalid("give a reason of 1 to 1000 characters"));
        }
        let reporter = ctx.user.as_ref().map(|u| u.id.as_str());
        let report = state.store.create_report(reporter, &asset.id, reason).await?;
        tracing::info!(report = %report.id, "shared image reported");
        Ok(())
    };
    let title = ctx.lang.t("share.page_title");
    Ok(match attempt.await {
        Ok(()) => page(&ctx, StatusCode::OK, &title, &shared_page(&ctx, &token, &asset, Some(&ctx.lang.t("share.reported")), None)),
        Err(e) => page(&ctx, status_of(&e), &title, &shared_page(&ctx, &token, &asset, None, Some(&e))),
    })
}
