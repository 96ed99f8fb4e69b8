//! The purge and the tombstone replay, on both database backends.

use std::sync::Arc;

use blobs::{BlobStore, Encrypted, LocalDirStore};
use store::{NewTask, NewUser, Store};

async fn account_with_objects(store: &Store, objects: &Arc<dyn BlobStore>, email: &str) -> String {
    let user = store.create_user(NewUser { email: email.into(), name: "P".into(), password_hash: None, locale: None }).await.unwrap();
    let sealed = Encrypted::new(objects.clone(), Arc::new(store.clone()));
    for i in 0..3 {
        sealed.put(&format!("{}/{i}.png", user.id), vec![i; 100]).await.unwrap();
    }
    store
        .submit_task(NewTask {
            owner_id: user.id.clone(),
            kind: "generate".into(),
            prompt: "private words".into(),
            params: "{}".into(),
            provider: None,
            model: None,
            cost: 0,
            max_attempts: 1,
            idempotency_key: None,
            request_hash: None,
        })
        .await
        .unwrap();
    user.id
}

async fn c29_purge_removes_rows_objects_and_key_and_replay_repeats_it(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn BlobStore> = Arc::new(LocalDirStore::new(dir.path()).unwrap());
    let gone = account_with_objects(&store, &objects, "gone@example.org").await;
    let kept = account_with_objects(&store, &objects, "kept@example.org").await;

    let report = privacy::purge_account(&store, objects.as_ref(), &gone, None).await.unwrap();
    assert_eq!(report.objects_deleted, 3);
    assert!(store.user_by_id(&gone).await.unwrap().is_none());
    assert!(store.data_key(&gone).await.is_err(), "key destroyed");
    assert!(objects.list_prefix(&format!("{gone}/")).await.unwrap().is_empty());
    assert_eq!(store.list_tasks(&gone, None, 10).await.unwrap().items.len(), 0);
    assert_eq!(store.tombstone_ids().await.unwrap(), vec![privacy::tombstone_id(&gone)]);
    assert!(privacy::tombstones(objects.as_ref()).await.unwrap().contains(&privacy::tombstone_id(&gone)));
    assert!(!privacy::tombstone_id(&gone).contains(&gone), "pseudonymous");
    // Idempotent, and the other account is untouched.
    let again = privacy::purge_account(&store, objects.as_ref(), &gone, None).await.unwrap();
    assert_eq!((again.rows_deleted, again.objects_deleted), (false, 0));
    assert_eq!(objects.list_prefix(&format!("{kept}/")).await.unwrap().len(), 3);
    assert_eq!(store.list_tasks(&kept, None, 10).await.unwrap().items[0].prompt, "private words");
    assert_eq!(privacy::replay_tombstones(&store, objects.as_ref()).await.unwrap(), 0, "nothing left to replay");
}

store::store_tests!(c29_purge_removes_rows_objects_and_key_and_replay_repeats_it);
