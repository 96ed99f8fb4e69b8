//! Keeping generated images (C39): unsaved outputs are deleted by the sweep
//! once their retention ends; saving one keeps it while the account lives.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::Asset;

use crate::api::checked_id;
use crate::context::Ctx;
use crate::error::ApiResult;
use crate::pages::{check_csrf, esc, signed_in, FormBody};
use crate::AppState;

/// The image page's retention notice and its save / unsave button.
pub fn save_toggle_html(ctx: &Ctx, asset: &Asset) -> String {
    if asset.kind != "output" {
        return String::new();
    }
    let t = |k: &str| esc(&ctx.lang.t(k));
    let (notice, value, button) = match (asset.saved, asset.expires_at) {
        (true, _) => (t("retention.saved"), "false", t("retention.unsave")),
        (false, Some(at)) => (esc(&ctx.lang.t("retention.expires").replace("{date}", &ctx.lang.date(at))), "true", t("retention.save")),
        (false, None) => (String::new(), "true", t("retention.save")),
    };
    format!(
        r#"<div class="retention" id="retention"><p class="hint">{notice}</p>
<form method="post" action="/images/{id}/save"><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="saved" value="{value}"><button class="secondary">{button}</button></form></div>"#,
        id = asset.id,
        csrf = esc(&ctx.csrf),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    pub saved: bool,
    /// `gallery`: back to the gallery (its one-click save) instead of the image.
    #[serde(default)]
    pub back: Option<String>,
    #[serde(default)]
    pub _csrf: String,
}

pub async fn save_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    FormBody(form): FormBody<SaveForm>,
) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&ctx, &form._csrf)?;
    let asset = state.store.set_asset_saved(&user.id, checked_id(&id)?, form.saved).await?;
    if form.back.as_deref() == Some("gallery") {
        return Ok(Redirect::to("/gallery").into_response());
    }
    Ok(Redirect::to(&format!("/images/{}", asset.id)).into_response())
}
