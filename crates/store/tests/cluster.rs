//! What several nodes share besides tables: releasing a task at shutdown
//! and NOTIFY between connections. Every case runs on SQLite and PostgreSQL.

use std::time::Duration;

use domain::task::TaskStatus;
use store::{Heard, NewTask, NewUser, Store, Submitted};

store::store_tests!(
    released_task_goes_back_to_the_queue_without_counting_the_attempt,
    notify_reaches_listeners_on_postgres_only,
    exclusive_work_runs_on_one_node_at_a_time,
    c18_rate_buckets_are_shared_by_every_connection,
);

async fn queued_task(store: &Store) -> (String, String) {
    let user = store
        .create_user(NewUser { email: "node@example.org".into(), name: "Node".into(), password_hash: None, locale: None })
        .await
        .unwrap();
    let new = NewTask {
        owner_id: user.id.clone(),
        kind: "generate".into(),
        prompt: "a lighthouse".into(),
        params: r#"{"size":"256x256","n":1}"#.into(),
        provider: None,
        model: None,
        cost: 0,
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
    };
    let Submitted::Created(task) = store.submit_task(new).await.unwrap() else { panic!("a new task") };
    (user.id, task.id)
}

async fn released_task_goes_back_to_the_queue_without_counting_the_attempt(store: Store) {
    let (owner, id) = queued_task(&store).await;
    let claimed = store.claim_task("w1", 30_000).await.unwrap().unwrap();
    assert_eq!((claimed.id.as_str(), claimed.attempts), (id.as_str(), 1));
    assert!(!store.release_task(&id, "w2").await.unwrap(), "only the lease holder releases");
    assert!(store.release_task(&id, "w1").await.unwrap());
    let task = store.get_task(&owner, &id).await.unwrap();
    assert_eq!((task.status, task.attempts), (TaskStatus::Queued, 0));
    assert!(!store.heartbeat_task(&id, "w1", 30_000, 50).await.unwrap(), "the old lease is gone");
    let events = store.task_events(&owner, &id).await.unwrap();
    assert_eq!(events.last().unwrap().detail.as_deref(), Some("released: its worker stopped"));
    // Another worker takes it as a first attempt.
    let again = store.claim_task("w2", 30_000).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (id.as_str(), 1));
    assert!(!store.release_task(&id, "w1").await.unwrap());
}

async fn notify_reaches_listeners_on_postgres_only(store: Store) {
    let Some(mut listener) = store.listen("atelier_test").await.unwrap() else {
        assert_eq!(store.kind(), store::BackendKind::Sqlite);
        store.notify("atelier_test", &["ignored".into()]).await.unwrap();
        return;
    };
    store.notify("atelier_test", &["one".into(), "two".into()]).await.unwrap();
    for expected in ["one", "two"] {
        let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.unwrap().unwrap();
        assert_eq!(heard, Heard::Message(expected.into()));
    }
    let too_big = "x".repeat(store::MAX_NOTIFY_BYTES + 1);
    assert!(store.notify("atelier_test", &[too_big]).await.is_err());
}

async fn exclusive_work_runs_on_one_node_at_a_time(store: Store) {
    let (entered, inside) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .exclusively("sweep", async {
                    entered.send(()).unwrap();
                    released.await.unwrap();
                    Ok(1)
                })
                .await
        })
    };
    inside.await.unwrap();
    let second = store.exclusively("sweep", async { Ok(2) }).await.unwrap();
    let other_name = store.exclusively("another", async { Ok(3) }).await.unwrap();
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), Some(1));
    match store.kind() {
        store::BackendKind::Postgres => assert_eq!(second, None, "another node holds the sweep"),
        store::BackendKind::Sqlite => assert_eq!(second, Some(2), "one process: nothing to exclude"),
    }
    assert_eq!(other_name, Some(3), "locks are per name");
    assert_eq!(store.exclusively("sweep", async { Ok(4) }).await.unwrap(), Some(4), "free again once done");
}

async fn c18_rate_buckets_are_shared_by_every_connection(store: Store) {
    let t0 = 1_000_000;
    // 20 takes at once on a bucket of 10 (per 60 s): exactly 10 pass, whichever connection runs them.
    let takes: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_rate_token("sign_in:ip:192.0.2.0", 10, 60, t0).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for take in takes {
        results.push(take.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    assert!(results.iter().filter_map(|r| r.err()).all(|secs| secs == 6), "{results:?}");
    assert_eq!(store.take_rate_token("sign_in:ip:192.0.2.0", 10, 60, t0 + 6_000).await.unwrap(), Ok(()), "one token back after 6 s");
    assert_eq!(store.take_rate_token("sign_in:ip:198.51.100.0", 10, 60, t0).await.unwrap(), Ok(()), "buckets are separate");
    assert_eq!(store.prune_rate_buckets(t0 + 1).await.unwrap(), 1);
}
