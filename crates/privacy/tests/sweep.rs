//! The retention sweeps on both database backends, with an explicit clock.

use std::sync::Arc;

use blobs::{BlobStore, LocalDirStore};
use domain::ids::new_id;
use privacy::sweep::run_sweeps;
use privacy::PrivacyConfig;
use store::{NewAsset, NewUser, Store};

const DAY: i64 = 86_400_000;
const RETENTION: i64 = 30 * DAY;

async fn user(store: &Store, email: &str) -> String {
    store.create_user(NewUser { email: email.into(), name: "S".into(), password_hash: None, locale: None }).await.unwrap().id
}

/// An output made `age_days` before `now` (so expiring 30 days after it
/// was made, as the worker sets it) with its thumbnail, both stored.
async fn output(store: &Store, objects: &dyn BlobStore, owner: &str, now: i64, age_days: i64, saved: bool) -> (String, [String; 2]) {
    let (id, thumb) = (new_id(), new_id());
    let keys = [format!("{owner}/{id}.png"), format!("{owner}/{thumb}.webp")];
    for (asset_id, kind, parent, key) in [(&id, "output", None, &keys[0]), (&thumb, "thumbnail", Some(id.clone()), &keys[1])] {
        objects.put(key, vec![1; 10]).await.unwrap();
        store
            .insert_asset(&NewAsset {
                id: asset_id.clone(),
                owner_id: owner.to_string(),
                task_id: None,
                kind: kind.into(),
                parent_id: parent,
                storage_key: key.clone(),
                content_type: "image/png".into(),
                sha256: "0".repeat(64),
                size_bytes: 10,
                width: 1,
                height: 1,
                saved,
                expires_at: Some(now - age_days * DAY + RETENTION),
            })
            .await
            .unwrap();
    }
    (id, keys)
}

async fn c39_sweep_deletes_unsaved_outputs_past_retention_only(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let owner = user(&store, "gallery@example.org").await;
    let now = store::now_ms();
    let (old, old_keys) = output(&store, objects.as_ref(), &owner, now, 31, false).await;
    let (saved, saved_keys) = output(&store, objects.as_ref(), &owner, now, 31, true).await;
    let (young, young_keys) = output(&store, objects.as_ref(), &owner, now, 29, false).await;

    let report = run_sweeps(&store, objects.as_ref(), &PrivacyConfig::default(), now).await.unwrap();
    assert_eq!(report.unsaved_outputs_deleted, 1);
    assert!(store.get_asset(&owner, &old).await.is_err(), "the 31-day-old unsaved output is gone");
    for key in &old_keys {
        assert!(!objects.exists(key).await.unwrap(), "{key}: object and thumbnail deleted");
    }
    assert!(store.asset_family(&owner, &old).await.is_err(), "its thumbnail row too");
    for (id, keys) in [(&saved, &saved_keys), (&young, &young_keys)] {
        assert_eq!(store.asset_family(&owner, id).await.unwrap().len(), 2);
        for key in keys {
            assert!(objects.exists(key).await.unwrap(), "{key} kept");
        }
    }

    // Two days later the young one has expired too; unsaving the saved one
    // hands it back to the sweep.
    store.set_asset_saved(&owner, &saved, false).await.unwrap();
    let report = run_sweeps(&store, objects.as_ref(), &PrivacyConfig::default(), now + 2 * DAY).await.unwrap();
    assert_eq!(report.unsaved_outputs_deleted, 2);
    assert!(objects.list_prefix(&format!("{owner}/")).await.unwrap().is_empty());
    assert!(store.user_by_id(&owner).await.unwrap().is_some(), "the account itself stays");
}

async fn c31_sweep_purges_accounts_only_after_their_grace(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let config = PrivacyConfig::default();
    let leaving = user(&store, "leaving@example.org").await;
    let staying = user(&store, "staying@example.org").await;
    let now = store::now_ms();
    output(&store, objects.as_ref(), &leaving, now, 0, true).await;
    let purge_after = now + config.deletion_grace_ms();
    assert_eq!(store.request_account_deletion(&leaving, now, purge_after).await.unwrap(), Some(0));
    assert_eq!(store.request_account_deletion(&leaving, now, purge_after).await.unwrap(), None, "already pending");
    assert_eq!(store.user_by_id(&leaving).await.unwrap().unwrap().status, store::DELETION_PENDING);

    let report = run_sweeps(&store, objects.as_ref(), &config, purge_after - 1).await.unwrap();
    assert_eq!(report.accounts_purged, 0, "still within the grace period");
    assert!(store.user_by_id(&leaving).await.unwrap().is_some());

    let report = run_sweeps(&store, objects.as_ref(), &config, purge_after + 1).await.unwrap();
    assert_eq!(report.accounts_purged, 1);
    assert!(store.user_by_id(&leaving).await.unwrap().is_none());
    assert!(objects.list_prefix(&format!("{leaving}/")).await.unwrap().is_empty());
    assert_eq!(store.tombstone_ids().await.unwrap(), vec![privacy::tombstone_id(&leaving)]);
    assert_eq!(store.user_by_id(&staying).await.unwrap().unwrap().status, "active");
    let report = run_sweeps(&store, objects.as_ref(), &config, purge_after + 1).await.unwrap();
    assert_eq!(report.accounts_purged, 0, "nothing left to purge");
}

async fn c31_cancel_restores_the_account_as_it_was(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let owner = user(&store, "undecided@example.org").await;
    let now = store::now_ms();
    let (image, _) = output(&store, objects.as_ref(), &owner, now, 0, true).await;
    store.request_account_deletion(&owner, now, now + DAY).await.unwrap();
    assert!(store.pending_deletion(&owner).await.unwrap().is_some());
    assert!(store.cancel_account_deletion(&owner).await.unwrap());
    assert!(!store.cancel_account_deletion(&owner).await.unwrap(), "nothing left to cancel");
    assert!(store.pending_deletion(&owner).await.unwrap().is_none());
    assert_eq!(store.user_by_id(&owner).await.unwrap().unwrap().status, "active");
    let report = run_sweeps(&store, objects.as_ref(), &PrivacyConfig::default(), now + 2 * DAY).await.unwrap();
    assert_eq!(report.accounts_purged, 0);
    assert_eq!(store.asset_family(&owner, &image).await.unwrap().len(), 2);
}

store::store_tests!(
    c39_sweep_deletes_unsaved_outputs_past_retention_only,
    c31_sweep_purges_accounts_only_after_their_grace,
    c31_cancel_restores_the_account_as_it_was
);
