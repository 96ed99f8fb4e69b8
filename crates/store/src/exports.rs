//! Data export jobs (C35). The archive itself lives in the object store;
//! these rows say whose it is, how far its build got and when it goes.

use domain::ids::new_id;
use domain::{Error, Result};
use serde::Serialize;

use crate::{db_err, with_pool, with_tx, Asset, Page, Store, ASSET_COLUMNS};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Export {
    pub id: String,
    pub user_id: String,
    /// pending, running, ready or failed.
    pub status: String,
    /// How many objects the archive was written in.
    pub parts: i64,
    pub size_bytes: i64,
    #[serde(skip)]
    pub lease_expires_at: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// When the archive (ready or not) is deleted.
    pub expires_at: Option<i64>,
}

const EXPORT_COLUMNS: &str = "id, user_id, status, parts, size_bytes, lease_expires_at, error, created_at, finished_at, expires_at";

impl Export {
    /// Where part `n` of the archive is stored: under the account's prefix,
    /// so the purge removes it with everything else.
    pub fn part_key(&self, n: i64) -> String {
        format!("{}/{}{n:05}", self.user_id, self.parts_prefix_in_account())
    }

    /// The prefix of every part of this archive.
    pub fn parts_prefix(&self) -> String {
        format!("{}/{}", self.user_id, self.parts_prefix_in_account())
    }

    fn parts_prefix_in_account(&self) -> String {
        format!("exports/{}/", self.id)
    }
}

impl Store {
    /// Queues an export for the account, unless one is already waiting or
    /// being built: then that one is returned (`false`: nothing new queued).
    pub async fn request_export(&self, user_id: &str, now: i64) -> Result<(Export, bool)> {
        let select = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE user_id = $1 AND status IN ('pending', 'running') LIMIT 1");
        let insert =
            format!("INSERT INTO exports (id, user_id, status, created_at) VALUES ($1, $2, 'pending', $3) RETURNING {EXPORT_COLUMNS}");
        // One write transaction: two quick requests cannot both queue.
        Ok(with_tx!(self, tx => {
            let running: Option<Export> = sqlx::query_as(&select).bind(user_id).fetch_optional(&mut *tx).await.map_err(db_err)?;
            match running {
                Some(export) => (export, false),
                None => (sqlx::query_as(&insert).bind(new_id()).bind(user_id).bind(now).fetch_one(&mut *tx).await.map_err(db_err)?, true),
            }
        }))
    }

    /// Takes the oldest export waiting to be built, or one whose builder
    /// stopped renewing its lease (a crash), and leases it until
    /// `now + lease_ms`.
    pub async fn claim_export(&self, now: i64, lease_ms: i64) -> Result<Option<Export>> {
        let pick = "SELECT id FROM exports WHERE status = 'pending' OR (status = 'running' AND lease_expires_at < $1) ORDER BY id LIMIT 1";
        let claim = format!(
            "UPDATE exports SET status = 'running', lease_expires_at = $2 WHERE id = $1 \
             AND (status = 'pending' OR (status = 'running' AND lease_expires_at < $3)) RETURNING {EXPORT_COLUMNS}"
        );
        Ok(with_tx!(self, tx => {
            let id: Option<String> = sqlx::query_scalar(pick).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?;
            match id {
                Some(id) => sqlx::query_as(&claim).bind(&id).bind(now + lease_ms).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?,
                None => None,
            }
        }))
    }

    /// Keeps a running build's lease; `false` if the export is no longer
    /// running (deleted with its account, or taken over).
    pub async fn renew_export_lease(&self, id: &str, until: i64) -> Result<bool> {
        let n = with_tx!(self, tx => sqlx::query("UPDATE exports SET lease_expires_at = $2 WHERE id = $1 AND status = 'running'")
            .bind(id)
            .bind(until)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected());
        Ok(n > 0)
    }

    /// Marks a build done: `parts` objects, `size_bytes` in all, kept until
    /// `expires_at`.
    pub async fn finish_export(&self, id: &str, parts: i64, size_bytes: i64, now: i64, expires_at: i64) -> Result<Option<Export>> {
        let sql = format!(
            "UPDATE exports SET status = 'ready', parts = $2, size_bytes = $3, finished_at = $4, expires_at = $5, lease_expires_at = NULL \
             WHERE id = $1 AND status = 'running' RETURNING {EXPORT_COLUMNS}"
        );
        Ok(with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(id)
            .bind(parts)
            .bind(size_bytes)
            .bind(now)
            .bind(expires_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?))
    }

    /// Marks a build failed; whatever parts it wrote are swept at
    /// `expires_at`.
    pub async fn fail_export(&self, id: &str, error: &str, now: i64, expires_at: i64) -> Result<()> {
        with_tx!(self, tx => {
            sqlx::query(
                "UPDATE exports SET status = 'failed', error = $2, finished_at = $3, expires_at = $4, lease_expires_at = NULL \
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(error)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    /// The account's exports, newest first.
    pub async fn exports_of_user(&self, user_id: &str) -> Result<Vec<Export>> {
        let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE user_id = $1 ORDER BY id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await.map_err(db_err))
    }

    /// One of the account's exports; another account's is `not_found`.
    pub async fn export_of_user(&self, user_id: &str, id: &str) -> Result<Export> {
        let sql = format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id = $1 AND user_id = $2");
        let found: Option<Export> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(user_id).fetch_optional(pool).await.map_err(db_err)?);
        found.ok_or_else(Error::not_found)
    }

    /// Finished exports (ready or failed) whose time is up, oldest first.
    pub async fn expired_exports(&self, now: i64, limit: i64) -> Result<Vec<Export>> {
        let sql = format!(
            "SELECT {EXPORT_COLUMNS} FROM exports WHERE status IN ('ready', 'failed') AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(pool).await.map_err(db_err))
    }

    pub async fn delete_export(&self, id: &str) -> Result<bool> {
        let n = with_tx!(self, tx => sqlx::query("DELETE FROM exports WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(db_err)?.rows_affected());
        Ok(n > 0)
    }

    /// Every asset of the account (uploads, outputs, thumbnails), oldest
    /// first, a page at a time: `after` is the last id of the previous page.
    pub async fn assets_of_user(&self, owner_id: &str, after: Option<&str>, limit: i64) -> Result<Page<Asset>> {
        let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE owner_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        let rows: Vec<Asset> = with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(after).bind(limit + 1).fetch_all(pool).await.map_err(db_err)?);
        Ok(Page::from_rows(rows, limit, |a| &a.id))
    }
}
