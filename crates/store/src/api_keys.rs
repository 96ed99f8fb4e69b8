//! Per-user API keys: the secret is shown once and stored as its SHA-256;
//! revoked keys stop working at once (every request reads the row).

use domain::ids::new_id;
use domain::{Error, Result};
use serde::Serialize;

use crate::{db_err, now_ms, with_pool, with_tx, Asset, Store, User, ASSET_COLUMNS};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub prefix: String,
    /// Space-separated scopes, e.g. `images`.
    pub scopes: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const KEY_COLUMNS: &str = "id, owner_id, name, prefix, scopes, created_at, last_used_at, revoked_at";

pub struct NewApiKey<'a> {
    pub owner_id: &'a str,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a str,
    pub scopes: &'a str,
}

impl Store {
    pub async fn create_api_key(&self, new: NewApiKey<'_>) -> Result<ApiKey> {
        let sql = format!(
            "INSERT INTO api_keys (id, owner_id, name, prefix, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
        );
        let id = new_id();
        let now = now_ms();
        Ok(with_tx!(self, tx => sqlx::query_as(&sql)
            .bind(&id)
            .bind(new.owner_id)
            .bind(new.name)
            .bind(new.prefix)
            .bind(new.secret_hash)
            .bind(new.scopes)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?))
    }

    /// The owner's keys, newest first, revoked ones included.
    pub async fn list_api_keys(&self, owner_id: &str) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE owner_id = $1 ORDER BY id DESC");
        with_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).fetch_all(pool).await.map_err(db_err))
    }

    /// Revokes one of the owner's keys; another account's key is `not_found`.
    pub async fn revoke_api_key(&self, owner_id: &str, id: &str) -> Result<ApiKey> {
        let sql =
            format!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE owner_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}");
        let now = now_ms();
        let key: Option<ApiKey> =
            with_tx!(self, tx => sqlx::query_as(&sql).bind(owner_id).bind(id).bind(now).fetch_optional(&mut *tx).await.map_err(db_err)?);
        key.ok_or_else(Error::not_found)
    }

    /// The live key with this secret hash and its active owner; records the
    /// use (at most once a minute).
    pub async fn api_key_by_hash(&self, secret_hash: &str) -> Result<Option<(ApiKey, User)>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL");
        let key: Option<ApiKey> =
            with_pool!(self, pool => sqlx::query_as(&sql).bind(secret_hash).fetch_optional(pool).await.map_err(db_err)?);
        let Some(key) = key else { return Ok(None) };
        let Some(user) = self.user_by_id(&key.owner_id).await?.filter(|u| u.status == "active") else { return Ok(None) };
        let now = now_ms();
        if key.last_used_at.is_none_or(|t| now - t > 60_000) {
            with_tx!(self, tx => { sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").bind(&key.id).bind(now).execute(&mut *tx).await.map_err(db_err)?; });
        }
        Ok(Some((key, user)))
    }

    /// A named server secret, created from `fresh` the first time it is asked for.
    pub async fn server_secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
        with_tx!(self, tx => { sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?; });
        with_pool!(self, pool => sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(pool).await.map_err(db_err))
    }

    /// An asset by id alone, for links whose signature is the authorization
    /// (the expiring `/v1/files` download links).
    pub async fn asset_for_signed_link(&self, id: &str) -> Result<Asset> {
        let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1");
        let asset: Option<Asset> = with_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await.map_err(db_err)?);
        asset.ok_or_else(Error::not_found)
    }
}
