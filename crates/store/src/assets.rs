use domain::{Error, Result};

use crate::{db_err, now_ms, with_pool, with_tx, Asset, GalleryItem, NewAsset, Page, Store, ASSET_COLUMNS};

/// Which gallery entries to list; every field left empty matches all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GalleryFilter {
    /// `output` or `upload`.
    pub kind: Option<&'static str>,
    /// Kept (or not) past the unsaved-output retention.
    pub saved: Option<bool>,
    /// Created at or after this time (epoch ms).
    pub from_ms: Option<i64>,
    /// Created before this time (epoch ms).
    pub until_ms: Option<i64>,
}

macro_rules! insert_asset {
    ($tx:expr, $asset:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO assets (id, owner_id, task_id, kind, parent_id, storage_key, content_type, sha256, size_bytes, width, height, \
             saved, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&$asset.id)
        .bind(&$asset.owner_id)
        .bind(&$asset.task_id)
        .bind(&$asset.kind)
        .bind(&$asset.parent_id)
        .bind(&$asset.storage_key)
        .bind(&$asset.content_type)
        .bind(&$asset.sha256)
        .bind($asset.size_bytes)
        .bind($asset.width)
        .bind($asset.height)
        .bind($asset.saved)
        .bind($asset.expires_at)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(db_err)?
    };
}
pub(crate) use insert_asset;

const GALLERY_SELECT: &str = "SELECT a.id, a.owner_id, a.task_id, a.kind, a.parent_id, a.storage_key, a.content_type, a.sha256, \
     a.size_bytes, a.width, a.height, a.saved, a.expires_at, a.created_at, \
     (SELECT t.id FROM assets t WHERE t.parent_id = a.id AND t.kind = 'thumbnail' ORDER BY t.id LIMIT 1) AS thumbnail_id \
     FROM assets a";

impl Store {
    pub async fn insert_asset(&self, asset: &NewAsset) -> Result<()> {
        with_tx!(self, tx => { insert_asset!(tx, asset, now_ms()); });
        Ok(())
    }

    pub async fn get_asset(&self, owner_id: &str, id: &str) -> Result<Asset> {
        let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1 AND owner_id = $2");
        let asset: Option<Asset> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await.map_err(db_err)?);
        asset.ok_or_else(Error::not_found)
    }

    /// The owner's generated images, newest first, each with its thumbnail.
    pub async fn list_gallery(&self, owner_id: &str, before: Option<&str>, limit: i64) -> Result<Page<GalleryItem>> {
        let outputs = GalleryFilter { kind: Some("output"), ..GalleryFilter::default() };
        self.browse_gallery(owner_id, &outputs, before, limit).await
    }

    /// The owner's uploads and outputs that pass `filter`, newest first
    /// (keyset pages on the id), each with its thumbnail.
    pub async fn browse_gallery(
        &self,
        owner_id: &str,
        filter: &GalleryFilter,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Page<GalleryItem>> {
        let sql = format!(
            "{GALLERY_SELECT} WHERE a.owner_id = $1 AND a.kind IN ('output', 'upload') AND ($2 IS NULL OR a.kind = $2) \
             AND ($3 IS NULL OR a.saved = $3) AND ($4 IS NULL OR a.created_at >= $4) AND ($5 IS NULL OR a.created_at < $5) \
             AND ($6 IS NULL OR a.id < $6) ORDER BY a.id DESC LIMIT $7"
        );
        let rows: Vec<GalleryItem> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(owner_id)
                .bind(filter.kind)
                .bind(filter.saved)
                .bind(filter.from_ms)
                .bind(filter.until_ms)
                .bind(before)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
                .map_err(db_err)?
        });
        Ok(Page::from_rows(rows, limit, |g| &g.asset.id))
    }

    /// The outputs of one task, in creation order.
    pub async fn task_outputs(&self, owner_id: &str, task_id: &str) -> Result<Vec<GalleryItem>> {
        let sql = format!("{GALLERY_SELECT} WHERE a.owner_id = $1 AND a.task_id = $2 AND a.kind = 'output' ORDER BY a.id");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(task_id).fetch_all(pool).await.map_err(db_err))
    }

    /// The asset and every asset derived from it (thumbnails): what a delete
    /// must remove from the blob store.
    pub async fn asset_family(&self, owner_id: &str, id: &str) -> Result<Vec<Asset>> {
        let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE owner_id = $1 AND (id = $2 OR parent_id = $2) ORDER BY id");
        let family: Vec<Asset> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(id).fetch_all(pool).await.map_err(db_err)?);
        if family.iter().any(|a| a.id == id) {
            Ok(family)
        } else {
            Err(Error::not_found())
        }
    }

    /// Deletes the asset row and its derived rows; `false` if it was not
    /// the owner's (or already gone).
    pub async fn delete_asset(&self, owner_id: &str, id: &str) -> Result<bool> {
        let n = with_tx!(self, tx => {
            sqlx::query("DELETE FROM assets WHERE owner_id = $1 AND parent_id = $2").bind(owner_id).bind(id).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("DELETE FROM assets WHERE owner_id = $1 AND id = $2").bind(owner_id).bind(id).execute(&mut *tx).await.map_err(db_err)?.rows_affected()
        });
        Ok(n > 0)
    }

    /// Marks an output as saved (kept past the unsaved-output retention) or not.
    pub async fn set_asset_saved(&self, owner_id: &str, id: &str, saved: bool) -> Result<Asset> {
        let sql = format!("UPDATE assets SET saved = $3 WHERE owner_id = $1 AND id = $2 RETURNING {ASSET_COLUMNS}");
        let asset: Option<Asset> =
            with_tx!(self, tx => sqlx::query_as(&sql).bind(owner_id).bind(id).bind(saved).fetch_optional(&mut *tx).await.map_err(db_err)?);
        asset.ok_or_else(Error::not_found)
    }
}
