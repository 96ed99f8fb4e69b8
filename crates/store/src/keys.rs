//! Account data keys: generated at sign-up, stored only wrapped by the
//! master key, unwrapped on demand and cached briefly in memory. Deleting the
//! row (purge) is crypto-shredding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use domain::{Error, Result};
use vault::{DataKey, MasterKey};

use crate::{db_err, now_ms, with_pool, with_tx, Store};

/// How long an unwrapped key stays in memory. Bounded so a key destroyed by
/// a purge on one node is gone from every node's memory soon after.
const CACHE_TTL: Duration = Duration::from_secs(300);

pub(crate) struct Vault {
    master: RwLock<Arc<dyn MasterKey>>,
    cache: Mutex<HashMap<String, (Arc<DataKey>, Instant)>>,
}

impl Vault {
    fn master(&self) -> Arc<dyn MasterKey> {
        self.master.read().expect("master key lock").clone()
    }

    fn forget(&self, user_id: Option<&str>) {
        let mut cache = self.cache.lock().expect("key cache lock");
        match user_id {
            Some(id) => {
                cache.remove(id);
            }
            None => cache.clear(),
        }
    }
}

impl Store {
    /// Attaches the master key; every account key is wrapped by it.
    pub fn with_master_key(mut self, master: Arc<dyn MasterKey>) -> Store {
        self.vault = Some(Arc::new(Vault { master: RwLock::new(master), cache: Mutex::new(HashMap::new()) }));
        self
    }

    fn vault(&self) -> Result<&Vault> {
        self.vault.as_deref().ok_or_else(|| Error::internal("no master key configured"))
    }

    pub fn master_key_id(&self) -> Result<String> {
        Ok(self.vault()?.master().id().to_string())
    }

    /// A new account's data key, wrapped, ready to insert with the account.
    pub(crate) fn new_wrapped_key(&self, user_id: &str) -> Result<(Vec<u8>, String)> {
        let master = self.vault()?.master();
        Ok((master.wrap(&DataKey::generate(), user_id)?, master.id().to_string()))
    }

    /// The account's data key. Missing after a purge: its data is unreadable.
    pub async fn data_key(&self, user_id: &str) -> Result<Arc<DataKey>> {
        let vault = self.vault()?;
        if let Some((key, at)) = vault.cache.lock().expect("key cache lock").get(user_id) {
            if at.elapsed() < CACHE_TTL {
                return Ok(key.clone());
            }
        }
        let row: Option<(Vec<u8>, String)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT wrapped_key, master_key_id FROM account_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)?
        });
        let (wrapped, key_id) = row.ok_or_else(|| Error::not_found())?;
        let master = vault.master();
        if key_id != master.id() {
            return Err(Error::internal(format!("data key wrapped by master key {key_id}, which is not loaded")));
        }
        let key = Arc::new(master.unwrap(&wrapped, user_id)?);
        vault.cache.lock().expect("key cache lock").insert(user_id.to_string(), (key.clone(), Instant::now()));
        Ok(key)
    }

    pub(crate) fn forget_data_key(&self, user_id: &str) {
        if let Some(vault) = &self.vault {
            vault.forget(Some(user_id));
        }
    }

    /// Re-wraps every account key under `new_master` in one transaction,
    /// without touching any object; afterwards only `new_master` is needed.
    pub async fn rewrap_all_keys(&self, new_master: Arc<dyn MasterKey>) -> Result<usize> {
        let vault = self.vault()?;
        let old = vault.master();
        let now = now_ms();
        let count = with_tx!(self, tx => {
            let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as("SELECT user_id, wrapped_key, master_key_id FROM account_keys")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            for (user_id, wrapped, key_id) in &rows {
                let key = if key_id == new_master.id() {
                    new_master.unwrap(wrapped, user_id)?
                } else if key_id == old.id() {
                    old.unwrap(wrapped, user_id)?
                } else {
                    return Err(Error::internal(format!("account key of {user_id} is wrapped by unknown master key {key_id}")));
                };
                sqlx::query("UPDATE account_keys SET wrapped_key = $2, master_key_id = $3, rewrapped_at = $4 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(new_master.wrap(&key, user_id)?)
                    .bind(new_master.id())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            rows.len()
        });
        *vault.master.write().expect("master key lock") = new_master;
        vault.forget(None);
        Ok(count)
    }

    /// Seals free text the user wrote, bound to its table, column and row.
    pub(crate) async fn seal(&self, owner_id: &str, place: &str, plaintext: &str) -> Result<String> {
        let key = self.data_key(owner_id).await?;
        Ok(vault::seal_text(&key, place, plaintext))
    }

    pub(crate) async fn open(&self, owner_id: &str, place: &str, sealed: &str) -> Result<String> {
        let key = self.data_key(owner_id).await?;
        vault::open_text(&key, place, sealed)
    }
}

impl vault::DataKeys for Store {
    fn data_key<'a>(&'a self, owner_id: &'a str) -> vault::BoxFuture<'a, Result<Arc<DataKey>>> {
        Box::pin(Store::data_key(self, owner_id))
    }
}

impl Store {
    /// A consistent copy of the SQLite database at `path` (`VACUUM INTO`),
    /// taken while the server runs.
    pub async fn snapshot_sqlite(&self, path: &std::path::Path) -> Result<()> {
        match &self.backend {
            crate::Backend::Sqlite { read, .. } => {
                sqlx::query("VACUUM INTO $1").bind(path.to_string_lossy().as_ref()).execute(read).await.map_err(db_err)?;
                Ok(())
            }
            crate::Backend::Postgres(_) => Err(Error::invalid("PostgreSQL backups are taken with pg_dump")),
        }
    }
}
