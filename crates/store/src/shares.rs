//! Public share links: one per image, made only by the image's owner, gone
//! when revoked or when the image or the account goes (foreign keys cascade).

use domain::{Error, Result};
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, Asset, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ShareLink {
    pub token: String,
    pub owner_id: String,
    pub asset_id: String,
    pub created_at: i64,
}

const SHARE_COLUMNS: &str = "token, owner_id, asset_id, created_at";

impl Store {
    /// The image's link: `token` becomes it unless the image already has
    /// one. `not_found` unless the image is one of the owner's uploads or
    /// outputs.
    pub async fn create_share_link(&self, owner_id: &str, asset_id: &str, token: &str) -> Result<ShareLink> {
        let sql = format!("SELECT {SHARE_COLUMNS} FROM share_links WHERE owner_id = $1 AND asset_id = $2");
        let link: Option<ShareLink> = with_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO share_links (token, owner_id, asset_id, created_at) \
                 SELECT $1, owner_id, id, $4 FROM assets WHERE id = $3 AND owner_id = $2 AND kind IN ('upload', 'output') \
                 ON CONFLICT (asset_id) DO NOTHING",
            )
            .bind(token)
            .bind(owner_id)
            .bind(asset_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            sqlx::query_as(&sql).bind(owner_id).bind(asset_id).fetch_optional(&mut *tx).await.map_err(db_err)?
        });
        link.ok_or_else(Error::not_found)
    }

    pub async fn share_link_of(&self, owner_id: &str, asset_id: &str) -> Result<Option<ShareLink>> {
        let sql = format!("SELECT {SHARE_COLUMNS} FROM share_links WHERE owner_id = $1 AND asset_id = $2");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(asset_id).fetch_optional(pool).await.map_err(db_err))
    }

    /// Revokes the image's link; `false` if it had none.
    pub async fn delete_share_link(&self, owner_id: &str, asset_id: &str) -> Result<bool> {
        let n = with_tx!(self, tx => {
            sqlx::query("DELETE FROM share_links WHERE owner_id = $1 AND asset_id = $2")
                .bind(owner_id)
                .bind(asset_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// The image a link shows; `not_found` for any token that is not a live
    /// link, and while its account is suspended or awaiting deletion.
    pub async fn shared_asset(&self, token: &str) -> Result<Asset> {
        let columns = crate::ASSET_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {columns} FROM share_links s JOIN assets a ON a.id = s.asset_id JOIN users u ON u.id = s.owner_id \
             WHERE s.token = $1 AND u.status = 'active'"
        );
        let asset: Option<Asset> = with_pool!(self, pool => sqlx::query_as(&sql).bind(token).fetch_optional(pool).await.map_err(db_err)?);
        asset.ok_or_else(Error::not_found)
    }

    /// Every link of an account, for its data export.
    pub async fn share_links_of_user(&self, owner_id: &str) -> Result<Vec<ShareLink>> {
        let sql = format!("SELECT {SHARE_COLUMNS} FROM share_links WHERE owner_id = $1 ORDER BY created_at, token");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).fetch_all(pool).await.map_err(db_err))
    }
}
