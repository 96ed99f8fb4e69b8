//! Completion webhooks in the store: the outbox rows a task's end writes,
//! claims shared by several nodes, failure counting, tenancy and purge.
//! Every case runs on SQLite and PostgreSQL.

use domain::ErrorCode;
use store::{now_ms, NewTask, NewUser, NewWebhookEndpoint, Store, Submitted, User, WebhookAttempt, WebhookEndpoint};

store::store_tests!(
    every_way_a_task_ends_queues_one_delivery_per_enabled_endpoint,
    claims_are_exclusive_until_their_lease_runs_out,
    failures_in_a_row_disable_an_endpoint_and_a_success_resets_the_count,
    c06_endpoints_of_another_account_are_not_found,
    one_off_endpoint_of_an_ended_task_still_gets_its_event,
    c27_secrets_are_sealed_and_c29_purge_removes_endpoints_and_deliveries,
);

async fn user(store: &Store, email: &str) -> User {
    store.create_user(NewUser { email: email.into(), name: "Hook Owner".into(), password_hash: None, locale: None }).await.unwrap()
}

async fn task(store: &Store, owner: &User) -> String {
    let new = NewTask {
        owner_id: owner.id.clone(),
        kind: "generate".into(),
        prompt: "a lighthouse".into(),
        params: r#"{"size":"256x256","n":1}"#.into(),
        provider: None,
        model: None,
        cost: 0,
        max_attempts: 1,
        idempotency_key: None,
        request_hash: None,
    };
    let Submitted::Created(task) = store.submit_task(new).await.unwrap() else { panic!("a new task") };
    task.id
}

async fn endpoint(store: &Store, owner: &User, url: &str) -> WebhookEndpoint {
    store
        .create_webhook_endpoint(NewWebhookEndpoint { owner_id: &owner.id, url, secret: "whsec_test", include_prompt: false })
        .await
        .unwrap()
}

/// (task, event) of every delivery of the account, oldest first.
async fn events(store: &Store, owner: &User) -> Vec<(String, String, String)> {
    let mut all: Vec<_> =
        store.webhook_deliveries_of_user(&owner.id).await.unwrap().into_iter().map(|d| (d.endpoint_id, d.task_id, d.event)).collect();
    all.sort();
    all
}

fn failed(retry_at: Option<i64>) -> WebhookAttempt {
    WebhookAttempt { response_status: Some(500), error: Some("HTTP 500".into()), retry_at, ..WebhookAttempt::default() }
}

async fn every_way_a_task_ends_queues_one_delivery_per_enabled_endpoint(store: Store) {
    let owner = user(&store, "ends@example.org").await;
    let other = user(&store, "other@example.org").await;
    let on = endpoint(&store, &owner, "https://a.example/hook").await;
    let off = endpoint(&store, &owner, "https://b.example/hook").await;
    store.update_webhook_endpoint(&owner.id, &off.id, Some(false), None).await.unwrap();
    endpoint(&store, &other, "https://c.example/hook").await;

    let succeeded = task(&store, &owner).await;
    let failed_task = task(&store, &owner).await;
    let canceled = task(&store, &owner).await;
    let expired = task(&store, &owner).await;
    let queued = task(&store, &owner).await;
    // Claims go oldest first: the first claimed is `succeeded`, and so on.
    assert_eq!(store.claim_task("w1", 30_000).await.unwrap().unwrap().id, succeeded);
    assert!(events(&store, &owner).await.is_empty(), "running is not an end");
    assert!(store.complete_task(&succeeded, "w1", &[]).await.unwrap());
    assert_eq!(store.claim_task("w1", 30_000).await.unwrap().unwrap().id, failed_task);
    assert!(store.fail_task(&failed_task, "w1", "engine_error", "boom", false).await.unwrap());
    store.cancel_task(&owner.id, &canceled).await.unwrap();
    // A worker that died: its lease is already over.
    assert_eq!(store.claim_task("w2", -1).await.unwrap().unwrap().id, expired);
    assert_eq!(store.requeue_expired().await.unwrap(), 1, "the only attempt ran out");

    let mut want = vec![
        (on.id.clone(), succeeded.clone(), "task.succeeded".to_string()),
        (on.id.clone(), failed_task, "task.failed".to_string()),
        (on.id.clone(), canceled, "task.canceled".to_string()),
        (on.id.clone(), expired, "task.failed".to_string()),
    ];
    want.sort();
    assert_eq!(events(&store, &owner).await, want, "one per end, only to the enabled endpoint");
    assert!(store.get_task(&owner.id, &queued).await.is_ok());
    assert!(events(&store, &other).await.is_empty(), "nothing reaches another account's endpoint");
}

async fn claims_are_exclusive_until_their_lease_runs_out(store: Store) {
    let owner = user(&store, "claims@example.org").await;
    endpoint(&store, &owner, "https://a.example/hook").await;
    for _ in 0..6 {
        let id = task(&store, &owner).await;
        store.cancel_task(&owner.id, &id).await.unwrap();
    }
    let now = now_ms() + 1;
    // Two nodes claim at once: together they get each delivery exactly once.
    let (a, b) = tokio::join!(store.claim_webhook_deliveries(now, 60_000, 4), store.claim_webhook_deliveries(now, 60_000, 4));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a.iter().chain(&b).map(|d| d.delivery.id.clone()).collect();
    assert_eq!(ids.len(), 6, "{} + {}", a.len(), b.len());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "no delivery claimed twice");
    assert_eq!(a[0].secret, "whsec_test", "the claim opens the sealed secret");
    assert!(store.claim_webhook_deliveries(now, 60_000, 10).await.unwrap().is_empty(), "held by their leases");

    // A node that died: its lease runs out and another takes the row; the
    // dead claim can no longer record anything.
    let later = now + 60_001;
    let again = store.claim_webhook_deliveries(later, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 6);
    let stale = &a[0];
    let fresh = again.iter().find(|d| d.delivery.id == stale.delivery.id).unwrap();
    let ok = WebhookAttempt { delivered: true, response_status: Some(200), ..WebhookAttempt::default() };
    store.record_webhook_attempt(stale, &ok, later, 5).await.unwrap();
    let row = store.webhook_deliveries_of_user(&owner.id).await.unwrap().into_iter().find(|d| d.id == stale.delivery.id).unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0), "a lost claim records nothing");
    store.record_webhook_attempt(fresh, &ok, later, 5).await.unwrap();
    let row = store.webhook_deliveries_of_user(&owner.id).await.unwrap().into_iter().find(|d| d.id == stale.delivery.id).unwrap();
    assert_eq!((row.status.as_str(), row.attempts, row.response_status, row.finished_at), ("delivered", 1, Some(200), Some(later)));
}

async fn failures_in_a_row_disable_an_endpoint_and_a_success_resets_the_count(store: Store) {
    let owner = user(&store, "fails@example.org").await;
    let hook = endpoint(&store, &owner, "https://a.example/hook").await;
    for _ in 0..3 {
        let id = task(&store, &owner).await;
        store.cancel_task(&owner.id, &id).await.unwrap();
    }
    let now = now_ms() + 1;
    let due = store.claim_webhook_deliveries(now, 60_000, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    // fail, succeed, fail: never two in a row.
    assert_eq!(store.record_webhook_attempt(&due[0], &failed(Some(now + 60_000)), now, 2).await.unwrap(), None);
    let ok = WebhookAttempt { delivered: true, response_status: Some(204), ..WebhookAttempt::default() };
    assert_eq!(store.record_webhook_attempt(&due[1], &ok, now, 2).await.unwrap(), None);
    assert_eq!(store.get_webhook_endpoint(&owner.id, &hook.id).await.unwrap().consecutive_failures, 0);
    assert_eq!(store.record_webhook_attempt(&due[2], &failed(None), now, 2).await.unwrap(), None);
    let rows = store.webhook_deliveries(&owner.id, &hook.id, 10).await.unwrap();
    let failed_row = rows.iter().find(|d| d.id == due[2].delivery.id).unwrap();
    assert_eq!((failed_row.status.as_str(), failed_row.last_error.as_deref()), ("failed", Some("HTTP 500")), "no retry left");

    // The retried one fails again: two in a row disables the endpoint.
    let retry = store.claim_webhook_deliveries(now + 60_000, 60_000, 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].delivery.attempts, 1);
    let disabled = store.record_webhook_attempt(&retry[0], &failed(Some(now + 180_000)), now + 60_000, 2).await.unwrap().unwrap();
    assert_eq!((disabled.id.as_str(), disabled.status.as_str(), disabled.consecutive_failures), (hook.id.as_str(), "disabled", 2));
    assert!(store.claim_webhook_deliveries(now + 999_999, 60_000, 10).await.unwrap().is_empty(), "a disabled endpoint gets nothing");
    let again = store.update_webhook_endpoint(&owner.id, &hook.id, Some(true), Some(true)).await.unwrap();
    assert_eq!((again.status.as_str(), again.consecutive_failures, again.disabled_at, again.include_prompt), ("enabled", 0, None, true));
    assert_eq!(store.claim_webhook_deliveries(now + 999_999, 60_000, 10).await.unwrap().len(), 1, "the pending one goes out again");
}

async fn c06_endpoints_of_another_account_are_not_found(store: Store) {
    let owner = user(&store, "mine@example.org").await;
    let intruder = user(&store, "theirs@example.org").await;
    let hook = endpoint(&store, &owner, "https://a.example/hook").await;
    let code = |r: domain::Result<()>| r.unwrap_err().code;
    assert_eq!(code(store.get_webhook_endpoint(&intruder.id, &hook.id).await.map(|_| ())), ErrorCode::NotFound);
    assert_eq!(code(store.update_webhook_endpoint(&intruder.id, &hook.id, Some(false), None).await.map(|_| ())), ErrorCode::NotFound);
    assert_eq!(code(store.delete_webhook_endpoint(&intruder.id, &hook.id).await), ErrorCode::NotFound);
    assert!(store.list_webhook_endpoints(&intruder.id, false).await.unwrap().is_empty());
    assert!(store.webhook_deliveries(&intruder.id, &hook.id, 10).await.unwrap().is_empty());
    let mine = store.get_webhook_endpoint(&owner.id, &hook.id).await.unwrap();
    assert_eq!(mine.status, "enabled", "untouched");
    // Nor can a one-off endpoint hang off another account's task.
    let task_id = task(&store, &owner).await;
    let e = store.create_task_webhook(&intruder.id, &task_id, "https://x.example/", "whsec_x").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    store.delete_webhook_endpoint(&owner.id, &hook.id).await.unwrap();
    assert_eq!(code(store.get_webhook_endpoint(&owner.id, &hook.id).await.map(|_| ())), ErrorCode::NotFound);
}

async fn one_off_endpoint_of_an_ended_task_still_gets_its_event(store: Store) {
    let owner = user(&store, "oneoff@example.org").await;
    let running = task(&store, &owner).await;
    let ended = task(&store, &owner).await;
    store.cancel_task(&owner.id, &ended).await.unwrap();
    // Registered after the task ended (it raced the submit answer): queued at once.
    let late = store.create_task_webhook(&owner.id, &ended, "https://late.example/", "whsec_late").await.unwrap();
    let early = store.create_task_webhook(&owner.id, &running, "https://early.example/", "whsec_early").await.unwrap();
    assert_eq!(events(&store, &owner).await, vec![(late.id.clone(), ended.clone(), "task.canceled".to_string())]);
    store.cancel_task(&owner.id, &running).await.unwrap();
    let mut want = vec![(late.id.clone(), ended, "task.canceled".to_string()), (early.id.clone(), running, "task.canceled".to_string())];
    want.sort();
    assert_eq!(events(&store, &owner).await, want, "each one-off endpoint hears only its own task");
    assert!(store.list_webhook_endpoints(&owner.id, false).await.unwrap().is_empty(), "one-off endpoints are not listed as registered");
    assert_eq!(store.list_webhook_endpoints(&owner.id, true).await.unwrap().len(), 2, "but they are part of the account's data");
}

async fn c27_secrets_are_sealed_and_c29_purge_removes_endpoints_and_deliveries(store: Store) {
    let owner = user(&store, "purge@example.org").await;
    let secret = "whsec_SealedAtRest0123456789abcdef";
    store
        .create_webhook_endpoint(NewWebhookEndpoint { owner_id: &owner.id, url: "https://a.example/", secret, include_prompt: true })
        .await
        .unwrap();
    let id = task(&store, &owner).await;
    store.cancel_task(&owner.id, &id).await.unwrap();
    assert!(store::testing::rows_mentioning(&store, secret).await.is_empty(), "the secret is stored sealed");
    assert_eq!(store.claim_webhook_deliveries(now_ms() + 1, 1, 1).await.unwrap()[0].secret, secret);

    assert!(store.delete_account(&owner.id, "tombstone-1").await.unwrap());
    assert!(store.list_webhook_endpoints(&owner.id, true).await.unwrap().is_empty());
    assert!(store.webhook_deliveries_of_user(&owner.id).await.unwrap().is_empty());
    assert!(store::testing::rows_mentioning(&store, &owner.id).await.is_empty(), "no row names the purged account");
}
