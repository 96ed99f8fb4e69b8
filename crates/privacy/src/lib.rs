//! The privacy promises that act on whole accounts: the purge (C29) with its
//! tombstone, the tombstone replay that keeps a restored backup from bringing
//! a purged account back (C32), and the retention sweeps.

pub mod analytics;
mod config;
pub mod export;
pub mod sweep;
mod zip;

pub use config::{PrivacyConfig, MAX_DELETION_GRACE_DAYS};

use std::collections::HashSet;

use blobs::BlobStore;
use domain::ids::to_hex;
use domain::{Error, Result};
use sha2::{Digest, Sha256};
use store::{AuditEntry, Store};

/// Tombstones live in the object store, beside the objects and outside the
/// database, so restoring a database backup cannot roll them back.
const TOMBSTONE_PREFIX: &str = "_tombstones/";

/// A purged account's pseudonymous id: a hash of its random account id,
/// which says nothing about the person and matches the account in an old
/// backup.
pub fn tombstone_id(user_id: &str) -> String {
    to_hex(&Sha256::digest(format!("atelier-tombstone:{user_id}")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub rows_deleted: bool,
    pub objects_deleted: usize,
}

/// Purges an account: tombstone first (so a crash part-way is finished by
/// the next replay), then the rows and the wrapped data key (from here on
/// any surviving copy is unreadable), then every object under the account's
/// prefix, verified by listing. Idempotent.
///
/// `objects` is the raw store (deleting needs no key).
pub async fn purge_account(store: &Store, objects: &dyn BlobStore, user_id: &str, actor_id: Option<&str>) -> Result<PurgeReport> {
    if !domain::ids::is_valid_id(user_id) {
        return Err(Error::not_found());
    }
    let tombstone = tombstone_id(user_id);
    objects.put(&format!("{TOMBSTONE_PREFIX}{tombstone}"), store::now_ms().to_string().into_bytes()).await?;
    let rows_deleted = store.delete_account(user_id, &tombstone).await?;
    let prefix = format!("{user_id}/");
    let keys = objects.list_prefix(&prefix).await?;
    for key in &keys {
        objects.delete(key).await?;
    }
    let left = objects.list_prefix(&prefix).await?;
    if !left.is_empty() {
        return Err(Error::internal(format!("{} objects survived the purge", left.len())));
    }
    store.audit(AuditEntry { actor_id, action: "account_purged", target_id: Some(&tombstone), ..AuditEntry::default() }).await?;
    tracing::info!(tombstone = %tombstone, objects = keys.len(), "account purged");
    Ok(PurgeReport { rows_deleted, objects_deleted: keys.len() })
}

pub async fn tombstones(objects: &dyn BlobStore) -> Result<HashSet<String>> {
    Ok(objects
        .list_prefix(TOMBSTONE_PREFIX)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(TOMBSTONE_PREFIX).map(str::to_string))
        .collect())
}

/// Purges again every account of the database that has a tombstone: run
/// after a restore. Returns how many accounts it removed.
pub async fn replay_tombstones(store: &Store, objects: &dyn BlobStore) -> Result<usize> {
    let dead = tombstones(objects).await?;
    let mut removed = 0;
    for user_id in store.all_user_ids().await? {
        if dead.contains(&tombstone_id(&user_id)) {
            purge_account(store, objects, &user_id, None).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
