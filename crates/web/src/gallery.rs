//! The gallery: uploads and outputs newest first in keyset pages (the page,
//! and `GET /api/v1/gallery` for infinite scroll), filters, multi-select
//! delete and one-click save of images the retention sweep would delete.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::account::Date;
use domain::time::format_utc;
use domain::Error;
use serde::{Deserialize, Serialize};
use store::{GalleryFilter, GalleryItem};

use crate::api::{checked_id, delete_image, QueryParams};
use crate::context::{ApiUser, Ctx};
use crate::error::ApiResult;
use crate::i18n::Lang;
use crate::pages::{check_csrf, esc, page, signed_in};
use crate::AppState;

/// Tiles per page.
const PAGE: i64 = 24;
/// Most images one multi-select delete removes.
const MAX_BULK: usize = 100;

/// `show=` values, in the order the filter lists them.
const SHOWS: &[&str] = &["all", "outputs", "uploads", "saved", "unsaved"];

#[derive(Debug, Default, Deserialize)]
pub struct GalleryQuery {
    pub before: Option<String>,
    pub limit: Option<i64>,
    /// `all`, `outputs`, `uploads`, `saved` or `unsaved` (outputs only).
    pub show: Option<String>,
    /// First day shown, `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Last day shown, `YYYY-MM-DD` (UTC), inclusive.
    pub to: Option<String>,
}

/// A checked query: the filter, cursor and page size.
struct Browse<'a> {
    filter: GalleryFilter,
    before: Option<&'a str>,
    limit: i64,
}

fn day(field: &str, value: Option<&str>) -> Result<Option<Date>, Error> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Date::parse(v).map(Some).map_err(|_| Error::invalid(format!("{field} must be a date like 2026-04-30"))),
    }
}

impl GalleryQuery {
    fn checked(&self) -> Result<Browse<'_>, Error> {
        let (kind, saved) = match self.show.as_deref().unwrap_or("all") {
            "all" | "" => (None, None),
            "outputs" => (Some("output"), None),
            "uploads" => (Some("upload"), None),
            "saved" => (Some("output"), Some(true)),
            "unsaved" => (Some("output"), Some(false)),
            _ => return Err(Error::invalid(format!("show must be one of {}", SHOWS.join(", ")))),
        };
        let from = day("from", self.from.as_deref())?;
        let to = day("to", self.to.as_deref())?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(Error::invalid("from must not be after to"));
            }
        }
        let before = match self.before.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => Some(checked_id(b).map_err(|_| Error::invalid("bad cursor"))?),
            None => None,
        };
        let limit = self.limit.unwrap_or(PAGE);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit must be between 1 and 100"));
        }
        let filter = GalleryFilter { kind, saved, from_ms: from.map(|d| d.epoch_ms()), until_ms: to.map(|d| d.epoch_ms() + 86_400_000) };
        Ok(Browse { filter, before, limit })
    }

    /// The filter part of the query string, for "older" links.
    fn filter_query(&self) -> String {
        [("show", &self.show), ("from", &self.from), ("to", &self.to)]
            .iter()
            .filter_map(|(k, v)| {
                v.as_deref()
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("&{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct GalleryEntry {
    pub id: String,
    /// `output` or `upload`.
    pub kind: String,
    pub url: String,
    pub thumbnail_url: String,
    pub width: i64,
    pub height: i64,
    pub saved: bool,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub task_id: Option<String>,
}

impl From<&GalleryItem> for GalleryEntry {
    fn from(g: &GalleryItem) -> Self {
        let thumb = g.thumbnail_id.as_deref().unwrap_or(&g.asset.id);
        GalleryEntry {
            id: g.asset.id.clone(),
            kind: g.asset.kind.clone(),
            url: format!("/api/v1/assets/{}", g.asset.id),
            thumbnail_url: format!("/api/v1/assets/{thumb}"),
            width: g.asset.width,
            height: g.asset.height,
            saved: g.asset.saved,
            expires_at: g.asset.expires_at,
            created_at: g.asset.created_at,
            task_id: g.asset.task_id.clone(),
        }
    }
}

/// `GET /api/v1/gallery`: one keyset page, `{items, next_cursor}`.
pub async fn api_gallery(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(query): QueryParams<GalleryQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let browse = query.checked()?;
    let page = state.store.browse_gallery(&api.user.id, &browse.filter, browse.before, browse.limit).await?;
    let items: Vec<GalleryEntry> = page.items.iter().map(GalleryEntry::from).collect();
    Ok(Json(serde_json::json!({ "items": items, "next_cursor": page.next_cursor })))
}

/// One tile. `gallery.js` fills the `<template>` made from the same
/// markup for the pages it appends.
fn tile(lang: &Lang, csrf: &str, e: &GalleryEntry) -> String {
    let t = |k: &str| esc(&lang.t(k));
    let keep = match (e.kind.as_str(), e.saved, e.expires_at) {
        ("output", false, Some(at)) => format!(
            r#"<form method="post" action="/images/{id}/save" class="tile-save" data-save><input type="hidden" name="_csrf" value="{csrf}"><input type="hidden" name="saved" value="true"><input type="hidden" name="back" value="gallery"><small class="expires">{until}</small> <button class="secondary small">{save}</button></form>"#,
            id = e.id,
            csrf = esc(csrf),
            until = esc(&lang.t("gallery.expires").replace("{date}", &format_utc(at)[..10])),
            save = t("gallery.save"),
        ),
        ("output", true, _) => format!(r#"<small class="kept">{}</small>"#, t("gallery.saved")),
        _ => format!(r#"<small class="kind">{}</small>"#, t("gallery.upload")),
    };
    format!(
        r#"<li class="tile" data-id="{id}"><input type="checkbox" name="ids" value="{id}" form="bulk" aria-label="{select}"><a href="/images/{id}"><img src="{thumb}" alt="{alt}" width="{w}" height="{h}" loading="lazy"></a>{keep}</li>"#,
        id = e.id,
        select = t("gallery.select"),
        thumb = esc(&e.thumbnail_url),
        alt = esc(&lang.t("gallery.alt").replace("{date}", &format_utc(e.created_at))),
        w = e.width,
        h = e.height,
    )
}

pub async fn gallery(State(state): State<AppState>, ctx: Ctx, QueryParams(query): QueryParams<GalleryQuery>) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let browse = query.checked()?;
    let items = state.store.browse_gallery(&user.id, &browse.filter, browse.before, browse.limit).await?;
    let t = |k: &str| esc(&ctx.lang.t(k));
    let entries: Vec<GalleryEntry> = items.items.iter().map(GalleryEntry::from).collect();
    let cells: String = entries.iter().map(|e| tile(ctx.lang, &ctx.csrf, e)).collect();
    let filtered = query.filter_query();
    let content = if cells.is_empty() && browse.before.is_none() && filtered.is_empty() {
        format!(r#"<div class="empty"><p>{}</p><a class="button" href="/generate">{}</a></div>"#, t("gallery.empty"), t("nav.generate"))
    } else if cells.is_empty() {
        format!(r#"<div class="empty"><p>{}</p></div>"#, t("gallery.none_match"))
    } else {
        format!(r#"<ul class="grid gallery" id="gallery-grid">{cells}</ul>"#)
    };
    let more = items
        .next_cursor
        .map(|c| {
            format!(
                r#"<p class="pager"><a class="button secondary" id="gallery-more" href="/gallery?before={c}{filtered}" data-api="/api/v1/gallery?limit={PAGE}{filtered}" data-cursor="{c}">{older}</a></p>"#,
                c = esc(&c),
                filtered = esc(&filtered),
                older = t("gallery.older"),
            )
        })
        .unwrap_or_default();
    let show = query.show.as_deref().unwrap_or("all");
    let show_options: String = SHOWS
        .iter()
        .map(|s| {
            format!(r#"<option value="{s}"{}>{}</option>"#, if *s == show { " selected" } else { "" }, t(&format!("gallery.show_{s}")))
        })
        .collect();
    let template = tile(
        ctx.lang,
        &ctx.csrf,
        &GalleryEntry {
            id: "{id}".into(),
            kind: "output".into(),
            url: String::new(),
            thumbnail_url: "{thumb}".into(),
            width: 0,
            height: 0,
            saved: false,
            expires_at: Some(0),
            created_at: 0,
            task_id: None,
        },
    );
    let body = format!(
        r#"<section class="gallery-page"><h1>{title}</h1>
<p class="notice retention-notice">{notice}</p>
<form method="get" action="/gallery" class="filters row">
<label>{show_l}<select name="show">{show_options}</select></label>
<label>{from_l}<input type="date" name="from" value="{from}"></label>
<label>{to_l}<input type="date" name="to" value="{to}"></label>
<button class="secondary">{apply}</button></form>
<form method="post" action="/gallery/delete" id="bulk" class="bulk" data-confirm="{confirm}"><input type="hidden" name="_csrf" value="{csrf}"><button class="danger">{delete}</button></form>
{content}{more}
<template id="tile-template" data-expires="{expires_t}" data-saved="{saved_t}" data-upload="{upload_t}" data-alt="{alt_t}">{template}</template>
</section>"#,
        title = t("gallery.title"),
        notice = esc(&ctx.lang.t("gallery.retention").replace("{days}", &state.config.unsaved_retention_days.to_string())),
        show_l = t("gallery.show"),
        from_l = t("gallery.from"),
        from = esc(query.from.as_deref().unwrap_or("")),
        to_l = t("gallery.to"),
        to = esc(query.to.as_deref().unwrap_or("")),
        apply = t("gallery.apply"),
        confirm = t("gallery.delete_confirm"),
        csrf = esc(&ctx.csrf),
        delete = t("gallery.delete_selected"),
        expires_t = t("gallery.expires"),
        saved_t = t("gallery.saved"),
        upload_t = t("gallery.upload"),
        alt_t = t("gallery.alt"),
    );
    Ok(page(&ctx, StatusCode::OK, &ctx.lang.t("gallery.title"), &body))
}

/// `POST /gallery/delete`: the checked images (`ids`, repeated), each
/// deleted with its files at once (C30). Ids not the account's are skipped
/// like missing ones.
pub async fn delete_selected(State(state): State<AppState>, ctx: Ctx, body: Bytes) -> ApiResult<Response> {
    let user = match signed_in(&ctx) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let mut csrf = String::new();
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "_csrf" => csrf = v.into_owned(),
            "ids" => ids.push(v.into_owned()),
            _ => {}
        }
    }
    check_csrf(&ctx, &csrf)?;
    if ids.len() > MAX_BULK {
        return Err(Error::invalid(format!("select at most {MAX_BULK} images at a time")).into());
    }
    for id in &ids {
        let id = checked_id(id)?;
        match delete_image(&state, user, id).await {
            Ok(()) => {}
            Err(e) if e.code == domain::ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Redirect::to("/gallery").into_response())
}
