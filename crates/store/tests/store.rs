//! The store's integration suite. Every case runs twice, on SQLite and on
//! PostgreSQL (`store_tests!` writes `NAME::sqlite` and `NAME::postgres`).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use domain::ids::new_id;
use domain::task::TaskStatus;
use domain::ErrorCode;
use store::{
    now_ms, Asset, GalleryFilter, GalleryItem, NewAsset, NewMail, NewSession, NewTask, NewUser, Store, Submitted, Task, TaskEvent, User,
};

store::store_tests!(
    users_create_and_look_up_by_id_and_email,
    users_duplicate_email_is_email_taken,
    c01_profile_round_trips,
    sessions_create_look_up_expire_and_delete,
    c06_another_tenant_cannot_read_list_or_touch_tasks_and_assets,
    c06_idempotency_keys_are_per_tenant,
    c08_history_lists_every_task_newest_first_with_keyset_pages,
    c08_each_task_timeline_shows_its_statuses_in_order,
    queue_claim_returns_oldest_queued_then_none,
    queue_heartbeat_only_by_the_lease_holder,
    queue_complete_by_a_worker_that_lost_the_lease_records_nothing,
    queue_cancel_of_running_task_stops_heartbeat_and_completion,
    queue_finished_tasks_are_not_cancelable,
    queue_fail_task_retries_then_fails_with_code,
    queue_requeue_expired_lease_then_attempts_exhausted,
    queue_concurrent_claimers_complete_every_task_exactly_once,
    queue_sweeper_never_undoes_a_completion,
    queue_failure_never_undoes_a_cancel,
    idempotency_same_key_same_body_replays_and_other_body_conflicts,
    idempotency_concurrent_submits_with_one_key_create_one_task,
    assets_output_with_thumbnail_gallery_family_and_delete,
    assets_gallery_pages_newest_first,
    assets_gallery_filters_by_kind_saving_and_day,
    share_links_one_per_image_the_owners_only_gone_with_the_image,
    outbox_due_retry_give_up_and_sent,
    migrate_is_idempotent,
);

// ---------------------------------------------------------------- helpers

async fn user(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser {
            email: email.to_string(),
            name: format!("Name of {email}"),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string()),
            locale: Some("en".to_string()),
        })
        .await
        .expect("create user")
}

fn new_task(owner: &User, prompt: &str) -> NewTask {
    NewTask {
        owner_id: owner.id.clone(),
        kind: "generate".to_string(),
        prompt: prompt.to_string(),
        params: r#"{"size":"1024x1024","quality":"standard","n":1}"#.to_string(),
        provider: Some("procedural".to_string()),
        model: Some("procedural-1".to_string()),
        cost: 0,
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
    }
}

/// Submits a task that must be new.
async fn submit(store: &Store, owner: &User, prompt: &str) -> Task {
    submit_new(store, new_task(owner, prompt)).await
}

async fn submit_new(store: &Store, new: NewTask) -> Task {
    match store.submit_task(new).await.expect("submit task") {
        Submitted::Created(task) => task,
        other => panic!("expected a new task, got {other:?}"),
    }
}

/// Claims and asserts which task came out of the queue.
async fn claim_expecting(store: &Store, worker: &str, lease_ms: i64, expected: &Task) -> Task {
    let claimed = store.claim_task(worker, lease_ms).await.expect("claim").expect("a queued task");
    assert_eq!(claimed.id, expected.id, "the claim must return the oldest queued task");
    claimed
}

fn asset(owner: &User, task_id: Option<&str>, kind: &str, parent_id: Option<&str>) -> NewAsset {
    let id = new_id();
    NewAsset {
        storage_key: format!("{}/{}/{id}.png", owner.id, kind),
        id,
        owner_id: owner.id.clone(),
        task_id: task_id.map(str::to_string),
        kind: kind.to_string(),
        parent_id: parent_id.map(str::to_string),
        content_type: "image/png".to_string(),
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string(),
        size_bytes: if kind == "thumbnail" { 1_234 } else { 98_765 },
        width: if kind == "thumbnail" { 256 } else { 1024 },
        height: if kind == "thumbnail" { 256 } else { 1024 },
        saved: false,
        expires_at: Some(now_ms() + 30 * 24 * 3600 * 1000),
    }
}

/// An output of `task` and its thumbnail, as a worker would record them.
fn output_with_thumbnail(owner: &User, task: &Task) -> (NewAsset, NewAsset) {
    let output = asset(owner, Some(&task.id), "output", None);
    let thumb = asset(owner, Some(&task.id), "thumbnail", Some(&output.id));
    (output, thumb)
}

fn code<T: Debug>(result: domain::Result<T>) -> ErrorCode {
    result.expect_err("expected an error").code
}

fn statuses(events: &[TaskEvent]) -> Vec<&str> {
    events.iter().map(|e| e.status.as_str()).collect()
}

fn assert_times_non_decreasing(events: &[TaskEvent]) {
    for pair in events.windows(2) {
        assert!(pair[0].at <= pair[1].at, "timeline goes back in time: {events:?}");
    }
}

/// Every page of a history, following the cursors.
async fn all_task_pages(store: &Store, owner: &User, limit: i64) -> Vec<Vec<Task>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_tasks(&owner.id, cursor.as_deref(), limit).await.expect("list tasks");
        pages.push(page.items);
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), pages.last().unwrap().last().map(|t| &t.id), "the cursor is the page's last id");
                cursor = Some(next);
            }
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

fn ids<'a>(items: impl IntoIterator<Item = &'a Task>) -> Vec<String> {
    items.into_iter().map(|t| t.id.clone()).collect()
}

// ---------------------------------------------------------------- users

async fn users_create_and_look_up_by_id_and_email(store: Store) {
    let before = now_ms();
    let alice = user(&store, "alice@example.test").await;
    assert_eq!(alice.email, "alice@example.test");
    assert_eq!(alice.name, "Name of alice@example.test");
    assert_eq!(alice.locale.as_deref(), Some("en"));
    assert_eq!(alice.role, "user");
    assert_eq!(alice.status, "active");
    assert!(alice.password_hash.as_deref().unwrap().starts_with("$argon2id$"));
    assert!(alice.created_at >= before && alice.created_at <= now_ms());
    assert_eq!(alice.updated_at, alice.created_at);
    assert_eq!(alice.age_confirmed_at, alice.created_at);
    assert!(domain::ids::is_valid_id(&alice.id), "{}", alice.id);

    let bob = user(&store, "bob@example.test").await;
    assert_ne!(alice.id, bob.id);

    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_email("alice@example.test").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_email("bob@example.test").await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(&new_id()).await.unwrap(), None);
    assert_eq!(store.user_by_email("nobody@example.test").await.unwrap(), None);
}

async fn users_duplicate_email_is_email_taken(store: Store) {
    let first = user(&store, "taken@example.test").await;
    let again = store
        .create_user(NewUser { email: "taken@example.test".to_string(), name: "Impostor".to_string(), password_hash: None, locale: None })
        .await;
    assert_eq!(code(again), ErrorCode::EmailTaken);
    // the first account is untouched
    assert_eq!(store.user_by_email("taken@example.test").await.unwrap(), Some(first));
    // and the store still works after the failed insert
    user(&store, "other@example.test").await;
}

async fn c01_profile_round_trips(store: Store) {
    let alice = user(&store, "c01@example.test").await;
    let edited = store.update_profile(&alice.id, "Alice Liddell", Some("fr")).await.expect("update profile");
    assert_eq!(edited.id, alice.id);
    assert_eq!(edited.name, "Alice Liddell");
    assert_eq!(edited.locale.as_deref(), Some("fr"));
    assert_eq!(edited.email, alice.email);
    assert_eq!(edited.created_at, alice.created_at);
    assert!(edited.updated_at >= alice.updated_at);
    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), Some(edited.clone()));
    assert_eq!(store.user_by_email(&alice.email).await.unwrap(), Some(edited));

    let cleared = store.update_profile(&alice.id, "Alice", None).await.unwrap();
    assert_eq!(cleared.locale, None);
    assert_eq!(store.user_by_id(&alice.id).await.unwrap().unwrap().name, "Alice");

    assert_eq!(code(store.update_profile(&new_id(), "Ghost", None).await), ErrorCode::NotFound);
}

// ---------------------------------------------------------------- sessions

async fn sessions_create_look_up_expire_and_delete(store: Store) {
    let alice = user(&store, "sessions@example.test").await;
    let now = now_ms();
    let live = store
        .create_session(NewSession {
            user_id: alice.id.clone(),
            token_hash: "hash-live".to_string(),
            expires_at: now + 3_600_000,
            ip: Some("203.0.113.0".to_string()),
            user_agent: Some("test-agent/1".to_string()),
        })
        .await
        .expect("create session");
    assert_eq!(live.user_id, alice.id);
    assert_eq!(live.expires_at, now + 3_600_000);
    assert_eq!(live.ip.as_deref(), Some("203.0.113.0"));
    assert_eq!(live.user_agent.as_deref(), Some("test-agent/1"));
    assert_eq!(live.last_seen_at, live.created_at);

    let expired = store
        .create_session(NewSession {
            user_id: alice.id.clone(),
            token_hash: "hash-expired".to_string(),
            expires_at: now - 1,
            ip: None,
            user_agent: None,
        })
        .await
        .unwrap();

    let (found, owner) = store.session_by_token_hash("hash-live", now_ms()).await.unwrap().expect("live session");
    assert_eq!(found, live);
    assert_eq!(owner, alice);
    assert_eq!(store.session_by_token_hash("hash-unknown", now_ms()).await.unwrap(), None);
    assert_eq!(store.session_by_token_hash("hash-expired", now_ms()).await.unwrap(), None, "an expired session is not returned");
    // the same session counts as expired once `now` passes its expiry
    assert_eq!(store.session_by_token_hash("hash-live", live.expires_at).await.unwrap(), None);

    let mine: Vec<String> = store.sessions_of_user(&alice.id).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&live.id) && mine.contains(&expired.id));

    assert_eq!(store.delete_expired_sessions(now_ms()).await.unwrap(), 1);
    assert_eq!(store.sessions_of_user(&alice.id).await.unwrap(), vec![live.clone()]);

    assert!(store.delete_session_by_token_hash("hash-live").await.unwrap());
    assert!(!store.delete_session_by_token_hash("hash-live").await.unwrap(), "already gone");
    assert_eq!(store.session_by_token_hash("hash-live", now_ms()).await.unwrap(), None);
    assert!(store.sessions_of_user(&alice.id).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- C06 tenant isolation

async fn c06_another_tenant_cannot_read_list_or_touch_tasks_and_assets(store: Store) {
    let alice = user(&store, "alice.c06@example.test").await;
    let mallory = user(&store, "mallory.c06@example.test").await;

    // alice: one finished task with an output and its thumbnail, one still queued
    let done = submit(&store, &alice, "a private lighthouse").await;
    claim_expecting(&store, "w1", 60_000, &done).await;
    let (output, thumb) = output_with_thumbnail(&alice, &done);
    assert!(store.complete_task(&done.id, "w1", &[output.clone(), thumb.clone()]).await.unwrap());
    let waiting = submit(&store, &alice, "another private prompt").await;
    // mallory has one task of her own
    let hers = submit(&store, &mallory, "mallory's own").await;

    // read
    for id in [&done.id, &waiting.id] {
        assert_eq!(code(store.get_task(&mallory.id, id).await), ErrorCode::NotFound);
        assert!(store.task_events(&mallory.id, id).await.unwrap().is_empty());
        assert!(store.task_outputs(&mallory.id, id).await.unwrap().is_empty());
    }
    for id in [&output.id, &thumb.id] {
        assert_eq!(code(store.get_asset(&mallory.id, id).await), ErrorCode::NotFound);
        assert_eq!(code(store.asset_family(&mallory.id, id).await), ErrorCode::NotFound);
    }
    // a guessed id is answered the same way as another tenant's
    assert_eq!(code(store.get_task(&mallory.id, &new_id()).await), ErrorCode::NotFound);
    assert_eq!(code(store.get_asset(&mallory.id, &new_id()).await), ErrorCode::NotFound);

    // list
    let her_tasks = store.list_tasks(&mallory.id, None, 50).await.unwrap();
    assert_eq!(ids(&her_tasks.items), vec![hers.id.clone()]);
    assert_eq!(her_tasks.next_cursor, None);
    // a cursor taken from alice's ids does not leak alice's rows either
    let with_cursor = store.list_tasks(&mallory.id, Some("ffffffff-ffff-7fff-bfff-ffffffffffff"), 50).await.unwrap();
    assert_eq!(ids(&with_cursor.items), vec![hers.id.clone()]);
    assert!(store.list_gallery(&mallory.id, None, 50).await.unwrap().items.is_empty());
    assert_eq!(ids(&store.list_tasks(&alice.id, None, 50).await.unwrap().items), vec![waiting.id.clone(), done.id.clone()]);
    let alice_gallery = store.list_gallery(&alice.id, None, 50).await.unwrap().items;
    assert_eq!(alice_gallery.len(), 1);
    assert_eq!(alice_gallery[0].asset.id, output.id);

    // touch
    assert_eq!(code(store.cancel_task(&mallory.id, &waiting.id).await), ErrorCode::NotFound);
    assert_eq!(store.get_task(&alice.id, &waiting.id).await.unwrap().status, TaskStatus::Queued);
    assert_eq!(code(store.cancel_task(&mallory.id, &done.id).await), ErrorCode::NotFound, "not even not_cancelable");
    assert!(!store.delete_asset(&mallory.id, &output.id).await.unwrap());
    assert!(!store.delete_asset(&mallory.id, &thumb.id).await.unwrap());
    assert_eq!(code(store.set_asset_saved(&mallory.id, &output.id, true).await), ErrorCode::NotFound);

    // alice still has everything, unchanged
    let kept = store.get_asset(&alice.id, &output.id).await.expect("output still there");
    assert!(!kept.saved, "another tenant's set_asset_saved changed nothing");
    store.get_asset(&alice.id, &thumb.id).await.expect("thumbnail still there");
    assert_eq!(store.asset_family(&alice.id, &output.id).await.unwrap().len(), 2);
    assert_eq!(statuses(&store.task_events(&alice.id, &done.id).await.unwrap()), ["queued", "running", "succeeded"]);
    assert_eq!(statuses(&store.task_events(&alice.id, &waiting.id).await.unwrap()), ["queued"]);
}

async fn c06_idempotency_keys_are_per_tenant(store: Store) {
    let alice = user(&store, "alice.key@example.test").await;
    let mallory = user(&store, "mallory.key@example.test").await;
    let keyed = |owner: &User, hash: &str| NewTask {
        idempotency_key: Some("same-key".to_string()),
        request_hash: Some(hash.to_string()),
        ..new_task(owner, "keyed")
    };
    let first = submit_new(&store, keyed(&alice, "alice-hash")).await;
    // the same key from another tenant, with another body, is neither a
    // conflict nor a replay of alice's task: it is a new task of that tenant
    let other = submit_new(&store, keyed(&mallory, "mallory-hash")).await;
    assert_ne!(first.id, other.id);
    assert_eq!(other.owner_id, mallory.id);
    assert_eq!(other.prompt, "keyed");
    // each tenant's repeat replays their own task
    let again = store.submit_task(keyed(&mallory, "mallory-hash")).await.unwrap();
    assert_eq!(again, Submitted::Replayed(other.clone()));
    let again = store.submit_task(keyed(&alice, "alice-hash")).await.unwrap();
    assert_eq!(again, Submitted::Replayed(first.clone()));
    assert_eq!(code(store.submit_task(keyed(&mallory, "alice-hash")).await), ErrorCode::IdempotencyConflict);
    assert_eq!(ids(&store.list_tasks(&mallory.id, None, 10).await.unwrap().items), vec![other.id]);
    assert_eq!(ids(&store.list_tasks(&alice.id, None, 10).await.unwrap().items), vec![first.id]);
}

// ---------------------------------------------------------------- C08 history and timeline

async fn c08_history_lists_every_task_newest_first_with_keyset_pages(store: Store) {
    let alice = user(&store, "history@example.test").await;
    let bob = user(&store, "history.bob@example.test").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(submit(&store, &alice, &format!("prompt {i}")).await);
        // another tenant's rows interleave with alice's in the table
        submit(&store, &bob, &format!("bob {i}")).await;
    }
    let newest_first: Vec<String> = created.iter().rev().map(|t| t.id.clone()).collect();

    let pages = all_task_pages(&store, &alice, 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let listed: Vec<String> = pages.iter().flatten().map(|t| t.id.clone()).collect();
    assert_eq!(listed, newest_first, "every task once, newest first");
    for task in pages.iter().flatten() {
        assert_eq!(task.owner_id, alice.id);
        assert_eq!(task.status, TaskStatus::Queued);
    }
    let created_at: Vec<i64> = pages.iter().flatten().map(|t| t.created_at).collect();
    assert!(created_at.windows(2).all(|w| w[0] >= w[1]), "newest first by time too: {created_at:?}");

    // page sizes that divide evenly, or exceed the total, end without an empty page
    assert_eq!(all_task_pages(&store, &alice, 7).await.iter().map(Vec::len).collect::<Vec<_>>(), [7]);
    assert_eq!(all_task_pages(&store, &alice, 100).await.iter().map(Vec::len).collect::<Vec<_>>(), [7]);
    let singles = all_task_pages(&store, &alice, 1).await;
    assert_eq!(singles.len(), 7);
    assert_eq!(singles.iter().flatten().map(|t| t.id.clone()).collect::<Vec<_>>(), newest_first);
    // the history shows status changes
    let newest = &created[6];
    store.cancel_task(&alice.id, &newest.id).await.unwrap();
    let first_page = store.list_tasks(&alice.id, None, 3).await.unwrap();
    assert_eq!(first_page.items[0].id, newest.id);
    assert_eq!(first_page.items[0].status, TaskStatus::Canceled);
}

async fn c08_each_task_timeline_shows_its_statuses_in_order(store: Store) {
    let alice = user(&store, "timeline@example.test").await;

    let succeeded = submit(&store, &alice, "succeeds").await;
    claim_expecting(&store, "w1", 60_000, &succeeded).await;
    let (output, _) = output_with_thumbnail(&alice, &succeeded);
    assert!(store.complete_task(&succeeded.id, "w1", &[output]).await.unwrap());

    let failed = submit(&store, &alice, "fails").await;
    claim_expecting(&store, "w1", 60_000, &failed).await;
    assert!(store.fail_task(&failed.id, "w1", "content_blocked", "refused by the engine", false).await.unwrap());

    let canceled_running = submit(&store, &alice, "canceled while running").await;
    claim_expecting(&store, "w1", 60_000, &canceled_running).await;
    store.cancel_task(&alice.id, &canceled_running.id).await.unwrap();

    let canceled_queued = submit(&store, &alice, "canceled while queued").await;
    store.cancel_task(&alice.id, &canceled_queued.id).await.unwrap();

    let retried = submit(&store, &alice, "retried once").await;
    claim_expecting(&store, "w1", 60_000, &retried).await;
    assert!(store.fail_task(&retried.id, "w1", "provider_timeout", "took too long", true).await.unwrap());
    claim_expecting(&store, "w2", 60_000, &retried).await;
    assert!(store.complete_task(&retried.id, "w2", &[]).await.unwrap());

    let expected: [(&Task, TaskStatus, &[&str]); 5] = [
        (&succeeded, TaskStatus::Succeeded, &["queued", "running", "succeeded"]),
        (&failed, TaskStatus::Failed, &["queued", "running", "failed"]),
        (&canceled_running, TaskStatus::Canceled, &["queued", "running", "canceled"]),
        (&canceled_queued, TaskStatus::Canceled, &["queued", "canceled"]),
        (&retried, TaskStatus::Succeeded, &["queued", "running", "queued", "running", "succeeded"]),
    ];
    // the history lists every one of them, and each has its timeline
    let history = store.list_tasks(&alice.id, None, 50).await.unwrap();
    assert_eq!(history.items.len(), expected.len());
    assert_eq!(history.next_cursor, None);
    for (submitted, status, steps) in expected {
        let task = history.items.iter().find(|t| t.id == submitted.id).expect("listed in the history");
        assert_eq!(task.status, status, "{}", task.prompt);
        let events = store.task_events(&alice.id, &task.id).await.unwrap();
        assert_eq!(statuses(&events), steps, "{}", task.prompt);
        assert_times_non_decreasing(&events);
        assert_eq!(events[0].at, task.created_at, "queued at submit time");
        assert_eq!(Some(events.last().unwrap().at), task.finished_at, "the last step is the finish");
        assert!(task.finished_at.unwrap() >= task.created_at);
        let ran = steps.contains(&"running");
        assert_eq!(task.started_at.is_some(), ran, "{}", task.prompt);
        if ran {
            let first_run = events.iter().find(|e| e.status == "running").unwrap();
            assert_eq!(task.started_at, Some(first_run.at), "started at the first claim");
            assert_eq!(first_run.detail.as_deref(), Some("attempt 1"));
        }
        assert_eq!(task.attempts, steps.iter().filter(|s| **s == "running").count() as i64);
        assert_eq!(task.lease_owner, None, "a finished task holds no lease");
    }
    let failed_now = store.get_task(&alice.id, &failed.id).await.unwrap();
    assert_eq!(failed_now.error_code.as_deref(), Some("content_blocked"));
    assert_eq!(failed_now.error_message.as_deref(), Some("refused by the engine"));
    // a success after a retry keeps no stale error: the failure is in the timeline only
    let retried_now = store.get_task(&alice.id, &retried.id).await.unwrap();
    assert_eq!((retried_now.error_code, retried_now.error_message), (None, None));
    let retried_events = store.task_events(&alice.id, &retried.id).await.unwrap();
    assert_eq!(retried_events[2].detail.as_deref(), Some("provider_timeout: took too long"));
    let failed_events = store.task_events(&alice.id, &failed.id).await.unwrap();
    assert_eq!(failed_events[2].detail.as_deref(), Some("content_blocked: refused by the engine"));
}

// ---------------------------------------------------------------- the queue

async fn queue_claim_returns_oldest_queued_then_none(store: Store) {
    assert_eq!(store.claim_task("w1", 60_000).await.unwrap(), None, "empty queue");
    assert_eq!(store.queued_count().await.unwrap(), 0);

    let alice = user(&store, "queue@example.test").await;
    let bob = user(&store, "queue.bob@example.test").await;
    let t1 = submit(&store, &alice, "first").await;
    let t2 = submit(&store, &bob, "second").await;
    let t3 = submit(&store, &alice, "third").await;
    assert_eq!(store.queued_count().await.unwrap(), 3);

    let before = now_ms();
    let claimed = claim_expecting(&store, "w1", 60_000, &t1).await;
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.lease_owner.as_deref(), Some("w1"));
    let lease = claimed.lease_expires_at.expect("a lease");
    assert!(lease >= before + 60_000 && lease <= now_ms() + 60_000, "lease {lease}");
    assert!(claimed.started_at.is_some());
    assert_eq!(claimed.prompt, "first");
    assert_eq!(claimed.params, t1.params);
    assert_eq!(store.get_task(&alice.id, &t1.id).await.unwrap(), claimed);
    assert_eq!(store.queued_count().await.unwrap(), 2);

    // a claim takes tasks of any owner, oldest first
    claim_expecting(&store, "w2", 60_000, &t2).await;
    claim_expecting(&store, "w1", 60_000, &t3).await;
    assert_eq!(store.claim_task("w3", 60_000).await.unwrap(), None);
    assert_eq!(store.queued_count().await.unwrap(), 0);

    // a task queued later is claimable again
    let t4 = submit(&store, &bob, "fourth").await;
    claim_expecting(&store, "w3", 60_000, &t4).await;
}

async fn queue_heartbeat_only_by_the_lease_holder(store: Store) {
    let alice = user(&store, "heartbeat@example.test").await;
    let task = submit(&store, &alice, "beat").await;
    // not running yet: nobody may heartbeat it
    assert!(!store.heartbeat_task(&task.id, "w1", 60_000, 10).await.unwrap());
    let claimed = claim_expecting(&store, "w1", 1_000, &task).await;

    assert!(store.heartbeat_task(&task.id, "w1", 120_000, 40).await.unwrap());
    let beaten = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(beaten.progress, 40);
    assert!(beaten.lease_expires_at.unwrap() > claimed.lease_expires_at.unwrap() + 100_000, "lease extended");
    assert_eq!(beaten.lease_owner.as_deref(), Some("w1"));

    assert!(!store.heartbeat_task(&task.id, "w2", 120_000, 90).await.unwrap(), "another worker");
    assert!(!store.heartbeat_task(&new_id(), "w1", 120_000, 90).await.unwrap(), "unknown task");
    let after = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(after.progress, 40, "a refused heartbeat changes nothing");
    assert_eq!(after.lease_expires_at, beaten.lease_expires_at);

    assert!(store.heartbeat_task(&task.id, "w1", 120_000, 250).await.unwrap());
    assert_eq!(store.get_task(&alice.id, &task.id).await.unwrap().progress, 100, "progress is clamped");
    // heartbeats leave no timeline steps
    assert_eq!(statuses(&store.task_events(&alice.id, &task.id).await.unwrap()), ["queued", "running"]);
}

async fn queue_complete_by_a_worker_that_lost_the_lease_records_nothing(store: Store) {
    let alice = user(&store, "lease@example.test").await;
    let task = submit(&store, &alice, "slow worker").await;
    claim_expecting(&store, "w-slow", -1_000, &task).await;
    assert_eq!(store.requeue_expired().await.unwrap(), 1);
    let second = claim_expecting(&store, "w-fast", 60_000, &task).await;
    assert_eq!(second.attempts, 2);

    // the first worker comes back with its result: it is discarded
    let (late, late_thumb) = output_with_thumbnail(&alice, &task);
    assert!(!store.complete_task(&task.id, "w-slow", &[late.clone(), late_thumb.clone()]).await.unwrap());
    assert!(!store.fail_task(&task.id, "w-slow", "engine_error", "late", false).await.unwrap());
    assert!(!store.heartbeat_task(&task.id, "w-slow", 60_000, 50).await.unwrap());
    assert!(store.task_outputs(&alice.id, &task.id).await.unwrap().is_empty());
    assert_eq!(code(store.get_asset(&alice.id, &late.id).await), ErrorCode::NotFound);
    assert_eq!(code(store.get_asset(&alice.id, &late_thumb.id).await), ErrorCode::NotFound);
    let running = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.lease_owner.as_deref(), Some("w-fast"));

    // the holder completes, once
    let (output, thumb) = output_with_thumbnail(&alice, &task);
    assert!(store.complete_task(&task.id, "w-fast", &[output.clone(), thumb.clone()]).await.unwrap());
    assert!(!store.complete_task(&task.id, "w-fast", &[asset(&alice, Some(&task.id), "output", None)]).await.unwrap());
    let outputs = store.task_outputs(&alice.id, &task.id).await.unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].asset.id, output.id);
    assert_eq!(outputs[0].thumbnail_id.as_deref(), Some(thumb.id.as_str()));
    let done = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.progress, 100);
    assert_eq!(statuses(&store.task_events(&alice.id, &task.id).await.unwrap()), ["queued", "running", "queued", "running", "succeeded"]);
}

async fn queue_cancel_of_running_task_stops_heartbeat_and_completion(store: Store) {
    let alice = user(&store, "cancel@example.test").await;
    let task = submit(&store, &alice, "canceled mid-run").await;
    claim_expecting(&store, "w1", 60_000, &task).await;
    assert!(store.heartbeat_task(&task.id, "w1", 60_000, 30).await.unwrap());

    let canceled = store.cancel_task(&alice.id, &task.id).await.expect("cancel a running task");
    assert_eq!(canceled.status, TaskStatus::Canceled);
    assert!(canceled.finished_at.is_some());
    assert_eq!(canceled.lease_owner, None);

    assert!(!store.heartbeat_task(&task.id, "w1", 60_000, 60).await.unwrap(), "the worker learns to stop");
    let (output, _) = output_with_thumbnail(&alice, &task);
    assert!(!store.complete_task(&task.id, "w1", std::slice::from_ref(&output)).await.unwrap());
    assert!(!store.fail_task(&task.id, "w1", "engine_error", "x", true).await.unwrap());
    assert_eq!(code(store.get_asset(&alice.id, &output.id).await), ErrorCode::NotFound);
    assert_eq!(store.get_task(&alice.id, &task.id).await.unwrap().status, TaskStatus::Canceled);
    assert_eq!(store.claim_task("w2", 60_000).await.unwrap(), None, "a canceled task is never claimed");
    assert_eq!(store.requeue_expired().await.unwrap(), 0);
    assert_eq!(statuses(&store.task_events(&alice.id, &task.id).await.unwrap()), ["queued", "running", "canceled"]);
}

async fn queue_finished_tasks_are_not_cancelable(store: Store) {
    let alice = user(&store, "notcancelable@example.test").await;
    let ok = submit(&store, &alice, "succeeds").await;
    claim_expecting(&store, "w1", 60_000, &ok).await;
    assert!(store.complete_task(&ok.id, "w1", &[]).await.unwrap());
    assert_eq!(code(store.cancel_task(&alice.id, &ok.id).await), ErrorCode::TaskNotCancelable);
    assert_eq!(store.get_task(&alice.id, &ok.id).await.unwrap().status, TaskStatus::Succeeded);

    let bad = submit(&store, &alice, "fails").await;
    claim_expecting(&store, "w1", 60_000, &bad).await;
    assert!(store.fail_task(&bad.id, "w1", "engine_error", "boom", false).await.unwrap());
    assert_eq!(code(store.cancel_task(&alice.id, &bad.id).await), ErrorCode::TaskNotCancelable);

    let twice = submit(&store, &alice, "canceled twice").await;
    store.cancel_task(&alice.id, &twice.id).await.unwrap();
    assert_eq!(code(store.cancel_task(&alice.id, &twice.id).await), ErrorCode::TaskNotCancelable);
    assert_eq!(statuses(&store.task_events(&alice.id, &twice.id).await.unwrap()), ["queued", "canceled"]);
    assert_eq!(statuses(&store.task_events(&alice.id, &ok.id).await.unwrap()), ["queued", "running", "succeeded"]);
}

async fn queue_fail_task_retries_then_fails_with_code(store: Store) {
    let alice = user(&store, "retry@example.test").await;
    let task = submit(&store, &alice, "flaky provider").await; // max_attempts 3
    claim_expecting(&store, "w1", 60_000, &task).await;
    assert!(!store.fail_task(&task.id, "w2", "provider_error", "not mine", true).await.unwrap(), "not the holder");

    assert!(store.fail_task(&task.id, "w1", "provider_error", "502 from upstream", true).await.unwrap());
    let requeued = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Queued);
    assert_eq!(requeued.attempts, 1);
    assert_eq!(requeued.lease_owner, None);
    assert_eq!(requeued.lease_expires_at, None);
    assert_eq!(requeued.finished_at, None);
    assert_eq!(requeued.error_code.as_deref(), Some("provider_error"), "the last error is kept while retrying");
    assert_eq!(store.queued_count().await.unwrap(), 1);

    let again = claim_expecting(&store, "w2", 60_000, &task).await;
    assert_eq!(again.attempts, 2);
    assert!(store.fail_task(&task.id, "w2", "content_blocked", "the engine refused", false).await.unwrap());
    let failed = store.get_task(&alice.id, &task.id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "non-retryable fails at once, attempts left or not");
    assert_eq!(failed.error_code.as_deref(), Some("content_blocked"));
    assert_eq!(failed.error_message.as_deref(), Some("the engine refused"));
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.lease_owner, None);
    assert_eq!(store.claim_task("w3", 60_000).await.unwrap(), None);
    assert_eq!(statuses(&store.task_events(&alice.id, &task.id).await.unwrap()), ["queued", "running", "queued", "running", "failed"]);

    // a task canceled while waiting for its retry is canceled, not failed
    let waiting = submit(&store, &alice, "canceled between attempts").await;
    claim_expecting(&store, "w1", 60_000, &waiting).await;
    assert!(store.fail_task(&waiting.id, "w1", "provider_error", "502", true).await.unwrap());
    let canceled = store.cancel_task(&alice.id, &waiting.id).await.unwrap();
    assert_eq!(canceled.status, TaskStatus::Canceled);
    assert_eq!((canceled.error_code, canceled.error_message), (None, None));
    assert_eq!(statuses(&store.task_events(&alice.id, &waiting.id).await.unwrap()), ["queued", "running", "queued", "canceled"]);

    // a retryable failure on the last attempt fails too
    let last = submit_new(&store, NewTask { max_attempts: 1, ..new_task(&alice, "one shot") }).await;
    claim_expecting(&store, "w1", 60_000, &last).await;
    assert!(store.fail_task(&last.id, "w1", "provider_error", "503", true).await.unwrap());
    let last = store.get_task(&alice.id, &last.id).await.unwrap();
    assert_eq!(last.status, TaskStatus::Failed);
    assert_eq!(last.error_code.as_deref(), Some("provider_error"));
    assert_eq!(last.attempts, 1);
}

async fn queue_requeue_expired_lease_then_attempts_exhausted(store: Store) {
    let alice = user(&store, "expiry@example.test").await;
    let dying = submit_new(&store, NewTask { max_attempts: 2, ..new_task(&alice, "worker dies") }).await;
    let healthy = submit(&store, &alice, "worker lives").await;
    assert_eq!(store.requeue_expired().await.unwrap(), 0, "nothing running");

    claim_expecting(&store, "w-dead", -1_000, &dying).await;
    claim_expecting(&store, "w-live", 60_000, &healthy).await;
    assert_eq!(store.requeue_expired().await.unwrap(), 1, "only the expired lease moves");
    let requeued = store.get_task(&alice.id, &dying.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Queued);
    assert_eq!(requeued.attempts, 1);
    assert_eq!(requeued.lease_owner, None);
    assert_eq!(requeued.error_code, None);
    assert_eq!(store.get_task(&alice.id, &healthy.id).await.unwrap().status, TaskStatus::Running);
    assert!(!store.heartbeat_task(&dying.id, "w-dead", 60_000, 10).await.unwrap(), "the dead worker lost it");
    assert_eq!(store.requeue_expired().await.unwrap(), 0, "a sweep moves a task once");

    let second = claim_expecting(&store, "w-dead-too", -1_000, &dying).await;
    assert_eq!(second.attempts, 2);
    assert_eq!(store.requeue_expired().await.unwrap(), 1);
    let exhausted = store.get_task(&alice.id, &dying.id).await.unwrap();
    assert_eq!(exhausted.status, TaskStatus::Failed);
    assert_eq!(exhausted.error_code.as_deref(), Some("attempts_exhausted"));
    assert_eq!(exhausted.attempts, 2);
    assert!(exhausted.finished_at.is_some());
    assert_eq!(exhausted.lease_owner, None);
    assert_eq!(store.requeue_expired().await.unwrap(), 0);
    assert_eq!(store.claim_task("w", 60_000).await.unwrap(), None, "a failed task is not claimed again");
    let events = store.task_events(&alice.id, &dying.id).await.unwrap();
    assert_eq!(statuses(&events), ["queued", "running", "queued", "running", "failed"]);
    assert_eq!(events[2].detail.as_deref(), Some("lease expired"));
    assert_times_non_decreasing(&events);
    assert!(store.complete_task(&healthy.id, "w-live", &[]).await.unwrap());
}

async fn queue_concurrent_claimers_complete_every_task_exactly_once(store: Store) {
    const TASKS: usize = 20;
    const WORKERS: usize = 8;
    let alice = user(&store, "concurrent@example.test").await;
    let mut submitted = HashSet::new();
    for i in 0..TASKS {
        submitted.insert(submit(&store, &alice, &format!("job {i}")).await.id);
    }

    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        let owner = alice.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut done = Vec::new();
            loop {
                match store.claim_task(&worker, 60_000).await.expect("claim") {
                    Some(task) => {
                        assert_eq!(task.lease_owner.as_deref(), Some(worker.as_str()));
                        assert!(store.heartbeat_task(&task.id, &worker, 60_000, 50).await.unwrap(), "lease stolen");
                        let output = asset(&owner, Some(&task.id), "output", None);
                        assert!(store.complete_task(&task.id, &worker, &[output]).await.unwrap(), "completion refused");
                        done.push(task.id);
                    }
                    // PostgreSQL's SKIP LOCKED may see nothing while others hold rows: stop only when none is queued
                    None if store.queued_count().await.unwrap() == 0 => return done,
                    None => tokio::task::yield_now().await,
                }
            }
        }));
    }
    let mut completed_by: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for (w, handle) in handles.into_iter().enumerate() {
        for id in handle.await.expect("worker panicked") {
            total += 1;
            assert!(completed_by.insert(id.clone(), w).is_none(), "task {id} completed twice");
        }
    }
    assert_eq!(total, TASKS);
    assert_eq!(completed_by.keys().cloned().collect::<HashSet<_>>(), submitted);

    let history = store.list_tasks(&alice.id, None, 100).await.unwrap().items;
    assert_eq!(history.len(), TASKS);
    for task in &history {
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert_eq!(task.attempts, 1, "claimed once");
        let events = store.task_events(&alice.id, &task.id).await.unwrap();
        let running = events.iter().filter(|e| e.status == "running").count() as i64;
        assert_eq!(running, task.attempts, "one running step per attempt");
        assert_eq!(statuses(&events), ["queued", "running", "succeeded"]);
        assert_eq!(store.task_outputs(&alice.id, &task.id).await.unwrap().len(), 1, "outputs recorded once");
    }
    assert_eq!(store.list_gallery(&alice.id, None, 100).await.unwrap().items.len(), TASKS);
    assert_eq!(store.queued_count().await.unwrap(), 0);
}

/// A sweeper and a late worker race for a task whose lease ran out: exactly
/// one of them wins, and the loser's write changes nothing.
async fn queue_sweeper_never_undoes_a_completion(store: Store) {
    let alice = user(&store, "sweeprace@example.test").await;
    for i in 0..40 {
        let task = submit(&store, &alice, &format!("race {i}")).await;
        claim_expecting(&store, "w-late", -1, &task).await;
        let output = asset(&alice, Some(&task.id), "output", None);
        let (completed, moved) = tokio::join!(
            {
                let store = store.clone();
                let id = task.id.clone();
                tokio::spawn(async move { store.complete_task(&id, "w-late", &[output]).await.unwrap() })
            },
            {
                let store = store.clone();
                tokio::spawn(async move { store.requeue_expired().await.unwrap() })
            },
        );
        let (completed, moved) = (completed.unwrap(), moved.unwrap());
        let now = store.get_task(&alice.id, &task.id).await.unwrap();
        let events = statuses(&store.task_events(&alice.id, &task.id).await.unwrap()).join(",");
        if completed {
            assert_eq!(moved, 0, "iteration {i}: completed and requeued");
            assert_eq!(now.status, TaskStatus::Succeeded, "iteration {i}: a completion was undone: {events}");
            assert_eq!(events, "queued,running,succeeded");
        } else {
            assert_eq!(moved, 1, "iteration {i}: neither won");
            assert_eq!(now.status, TaskStatus::Queued, "iteration {i}");
            assert_eq!(events, "queued,running,queued");
            assert!(store.task_outputs(&alice.id, &task.id).await.unwrap().is_empty());
            store.cancel_task(&alice.id, &task.id).await.unwrap();
        }
    }
}

/// A cancel and a retryable failure race: the task must end canceled.
async fn queue_failure_never_undoes_a_cancel(store: Store) {
    let alice = user(&store, "cancelrace@example.test").await;
    for i in 0..40 {
        let task = submit(&store, &alice, &format!("race {i}")).await;
        claim_expecting(&store, "w1", 60_000, &task).await;
        let (canceled, failed) = tokio::join!(
            {
                let store = store.clone();
                let (owner, id) = (alice.id.clone(), task.id.clone());
                tokio::spawn(async move { store.cancel_task(&owner, &id).await })
            },
            {
                let store = store.clone();
                let id = task.id.clone();
                tokio::spawn(async move { store.fail_task(&id, "w1", "provider_error", "502", true).await.unwrap() })
            },
        );
        let canceled = canceled.unwrap().expect("queued and running tasks are cancelable");
        assert_eq!(canceled.status, TaskStatus::Canceled);
        let failed = failed.unwrap();
        let now = store.get_task(&alice.id, &task.id).await.unwrap();
        let events = statuses(&store.task_events(&alice.id, &task.id).await.unwrap()).join(",");
        assert_eq!(now.status, TaskStatus::Canceled, "iteration {i}: a cancel was undone: {events}");
        if failed {
            assert_eq!(events, "queued,running,queued,canceled");
        } else {
            assert_eq!(events, "queued,running,canceled");
        }
    }
    assert_eq!(store.queued_count().await.unwrap(), 0);
}

// ---------------------------------------------------------------- idempotency

async fn idempotency_same_key_same_body_replays_and_other_body_conflicts(store: Store) {
    let alice = user(&store, "idem@example.test").await;
    let keyed = |hash: &str| NewTask {
        idempotency_key: Some("key-1".to_string()),
        request_hash: Some(hash.to_string()),
        ..new_task(&alice, "a cat")
    };
    let first = submit_new(&store, keyed("hash-a")).await;
    let replay = store.submit_task(keyed("hash-a")).await.unwrap();
    assert_eq!(replay, Submitted::Replayed(first.clone()));
    assert_eq!(replay.task().id, first.id);
    assert_eq!(code(store.submit_task(keyed("hash-b")).await), ErrorCode::IdempotencyConflict);

    // a replay after the task moved on returns its current state, not a new task
    claim_expecting(&store, "w1", 60_000, &first).await;
    let later = store.submit_task(keyed("hash-a")).await.unwrap();
    assert!(matches!(&later, Submitted::Replayed(t) if t.id == first.id && t.status == TaskStatus::Running), "{later:?}");

    let history = store.list_tasks(&alice.id, None, 50).await.unwrap().items;
    assert_eq!(ids(&history), vec![first.id.clone()], "one row for the key");
    assert_eq!(statuses(&store.task_events(&alice.id, &first.id).await.unwrap()), ["queued", "running"]);

    // another key, or no key, is a new task each time
    let other = submit_new(&store, NewTask { idempotency_key: Some("key-2".to_string()), ..keyed("hash-a") }).await;
    let plain1 = submit(&store, &alice, "a cat").await;
    let plain2 = submit(&store, &alice, "a cat").await;
    let all: HashSet<String> = [&first.id, &other.id, &plain1.id, &plain2.id].into_iter().cloned().collect();
    assert_eq!(all.len(), 4);
    assert_eq!(store.list_tasks(&alice.id, None, 50).await.unwrap().items.len(), 4);
}

async fn idempotency_concurrent_submits_with_one_key_create_one_task(store: Store) {
    let alice = user(&store, "idem.race@example.test").await;
    let mut handles = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let new = NewTask {
            idempotency_key: Some("race-key".to_string()),
            request_hash: Some("race-hash".to_string()),
            ..new_task(&alice, "one of ten")
        };
        handles.push(tokio::spawn(async move { store.submit_task(new).await }));
    }
    let mut created = Vec::new();
    let mut replayed = Vec::new();
    for handle in handles {
        match handle.await.unwrap().expect("every submit succeeds") {
            Submitted::Created(t) => created.push(t),
            Submitted::Replayed(t) => replayed.push(t),
        }
    }
    assert_eq!(created.len(), 1, "exactly one submit creates the task");
    assert_eq!(replayed.len(), 9);
    let id = &created[0].id;
    assert!(replayed.iter().all(|t| &t.id == id), "every replay returns the first task");
    let history = store.list_tasks(&alice.id, None, 50).await.unwrap().items;
    assert_eq!(ids(&history), vec![id.clone()]);
    assert_eq!(store.queued_count().await.unwrap(), 1);
    assert_eq!(statuses(&store.task_events(&alice.id, id).await.unwrap()), ["queued"]);
}

// ---------------------------------------------------------------- assets

async fn assets_output_with_thumbnail_gallery_family_and_delete(store: Store) {
    let alice = user(&store, "assets@example.test").await;
    let task = submit(&store, &alice, "a harbour at dusk").await;
    claim_expecting(&store, "w1", 60_000, &task).await;
    assert!(store.complete_task(&task.id, "w1", &[]).await.unwrap());
    // outputs may also be recorded one by one
    let (output, thumb) = output_with_thumbnail(&alice, &task);
    let before = now_ms();
    store.insert_asset(&output).await.unwrap();
    store.insert_asset(&thumb).await.unwrap();
    let upload = asset(&alice, None, "upload", None);
    store.insert_asset(&upload).await.unwrap();

    let stored = store.get_asset(&alice.id, &output.id).await.unwrap();
    let expected = Asset {
        id: output.id.clone(),
        owner_id: alice.id.clone(),
        task_id: Some(task.id.clone()),
        kind: "output".to_string(),
        parent_id: None,
        storage_key: output.storage_key.clone(),
        content_type: "image/png".to_string(),
        sha256: output.sha256.clone(),
        size_bytes: 98_765,
        width: 1024,
        height: 1024,
        saved: false,
        expires_at: output.expires_at,
        created_at: stored.created_at,
    };
    assert_eq!(stored, expected);
    assert!(stored.created_at >= before && stored.created_at <= now_ms());
    let stored_thumb = store.get_asset(&alice.id, &thumb.id).await.unwrap();
    assert_eq!(stored_thumb.parent_id.as_deref(), Some(output.id.as_str()));
    assert_eq!(stored_thumb.kind, "thumbnail");

    let gallery = store.list_gallery(&alice.id, None, 10).await.unwrap();
    assert_eq!(gallery.items, vec![GalleryItem { asset: expected.clone(), thumbnail_id: Some(thumb.id.clone()) }]);
    assert_eq!(gallery.next_cursor, None, "thumbnails and uploads are not gallery entries");
    assert_eq!(store.task_outputs(&alice.id, &task.id).await.unwrap(), gallery.items);

    let family: Vec<String> = store.asset_family(&alice.id, &output.id).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(family.len(), 2);
    assert!(family.contains(&output.id) && family.contains(&thumb.id));
    let thumb_family = store.asset_family(&alice.id, &thumb.id).await.unwrap();
    assert_eq!(thumb_family, vec![stored_thumb], "a thumbnail's family is itself");

    let saved = store.set_asset_saved(&alice.id, &output.id, true).await.unwrap();
    assert!(saved.saved);
    assert!(store.get_asset(&alice.id, &output.id).await.unwrap().saved);
    assert!(store.list_gallery(&alice.id, None, 10).await.unwrap().items[0].asset.saved);
    assert!(!store.set_asset_saved(&alice.id, &output.id, false).await.unwrap().saved);
    assert_eq!(code(store.set_asset_saved(&alice.id, &new_id(), true).await), ErrorCode::NotFound);

    assert!(store.delete_asset(&alice.id, &output.id).await.unwrap());
    for id in [&output.id, &thumb.id] {
        assert_eq!(code(store.get_asset(&alice.id, id).await), ErrorCode::NotFound, "both rows are gone");
    }
    assert_eq!(code(store.asset_family(&alice.id, &output.id).await), ErrorCode::NotFound);
    assert!(store.list_gallery(&alice.id, None, 10).await.unwrap().items.is_empty());
    assert!(store.task_outputs(&alice.id, &task.id).await.unwrap().is_empty());
    assert!(!store.delete_asset(&alice.id, &output.id).await.unwrap(), "already gone");
    // the task and the unrelated upload stay
    assert_eq!(store.get_task(&alice.id, &task.id).await.unwrap().status, TaskStatus::Succeeded);
    store.get_asset(&alice.id, &upload.id).await.expect("upload untouched");
}

async fn assets_gallery_pages_newest_first(store: Store) {
    let alice = user(&store, "gallery@example.test").await;
    let bob = user(&store, "gallery.bob@example.test").await;
    let mut outputs = Vec::new();
    for _ in 0..5 {
        let output = asset(&alice, None, "output", None);
        store.insert_asset(&output).await.unwrap();
        store.insert_asset(&asset(&alice, None, "thumbnail", Some(&output.id))).await.unwrap();
        store.insert_asset(&asset(&bob, None, "output", None)).await.unwrap();
        outputs.push(output.id);
    }
    outputs.reverse();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_gallery(&alice.id, cursor.as_deref(), 2).await.unwrap();
        sizes.push(page.items.len());
        assert!(page.items.iter().all(|g| g.asset.owner_id == alice.id && g.thumbnail_id.is_some()));
        seen.extend(page.items.iter().map(|g| g.asset.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, outputs);
}

async fn assets_gallery_filters_by_kind_saving_and_day(store: Store) {
    let alice = user(&store, "filters@example.test").await;
    let (kept, dropped, upload) =
        (asset(&alice, None, "output", None), asset(&alice, None, "output", None), asset(&alice, None, "upload", None));
    for a in [&kept, &dropped, &upload] {
        store.insert_asset(a).await.unwrap();
    }
    store.insert_asset(&asset(&alice, None, "thumbnail", Some(&kept.id))).await.unwrap();
    store.set_asset_saved(&alice.id, &kept.id, true).await.unwrap();
    let ids = |page: store::Page<GalleryItem>| page.items.into_iter().map(|g| g.asset.id).collect::<Vec<_>>();
    let browse = |filter: GalleryFilter| {
        let store = store.clone();
        let owner = alice.id.clone();
        async move { store.browse_gallery(&owner, &filter, None, 10).await.unwrap() }
    };
    assert_eq!(ids(browse(GalleryFilter::default()).await).len(), 3, "uploads and outputs, never thumbnails");
    assert_eq!(ids(browse(GalleryFilter { kind: Some("upload"), ..Default::default() }).await), vec![upload.id.clone()]);
    assert_eq!(ids(browse(GalleryFilter { kind: Some("output"), saved: Some(true), ..Default::default() }).await), vec![kept.id.clone()]);
    assert_eq!(
        ids(browse(GalleryFilter { kind: Some("output"), saved: Some(false), ..Default::default() }).await),
        vec![dropped.id.clone()]
    );
    let now = now_ms();
    assert_eq!(
        ids(browse(GalleryFilter { from_ms: Some(now - 60_000), until_ms: Some(now + 60_000), ..Default::default() }).await).len(),
        3
    );
    assert!(ids(browse(GalleryFilter { from_ms: Some(now + 60_000), ..Default::default() }).await).is_empty());
    assert!(ids(browse(GalleryFilter { until_ms: Some(now - 60_000), ..Default::default() }).await).is_empty());
    assert_eq!(ids(store.list_gallery(&alice.id, None, 10).await.unwrap()).len(), 2, "the outputs-only listing is unchanged");
}

async fn share_links_one_per_image_the_owners_only_gone_with_the_image(store: Store) {
    let alice = user(&store, "share@example.test").await;
    let bob = user(&store, "share.bob@example.test").await;
    let image = asset(&alice, None, "output", None);
    let thumb = asset(&alice, None, "thumbnail", Some(&image.id));
    store.insert_asset(&image).await.unwrap();
    store.insert_asset(&thumb).await.unwrap();

    assert_eq!(store.share_link_of(&alice.id, &image.id).await.unwrap(), None, "off by default");
    assert_eq!(code(store.create_share_link(&bob.id, &image.id, "bobs-token").await), ErrorCode::NotFound);
    assert_eq!(code(store.create_share_link(&alice.id, &thumb.id, "thumb-token").await), ErrorCode::NotFound, "only uploads and outputs");
    let link = store.create_share_link(&alice.id, &image.id, "first-token").await.unwrap();
    assert_eq!((link.token.as_str(), link.asset_id.as_str()), ("first-token", image.id.as_str()));
    assert_eq!(store.create_share_link(&alice.id, &image.id, "second-token").await.unwrap(), link, "one link per image");
    assert_eq!(store.shared_asset("first-token").await.unwrap().id, image.id);
    assert_eq!(code(store.shared_asset("second-token").await), ErrorCode::NotFound);
    assert!(!store.delete_share_link(&bob.id, &image.id).await.unwrap(), "someone else cannot revoke it");
    assert!(store.delete_share_link(&alice.id, &image.id).await.unwrap());
    assert_eq!(code(store.shared_asset("first-token").await), ErrorCode::NotFound);

    store.create_share_link(&alice.id, &image.id, "third-token").await.unwrap();
    assert_eq!(store.share_links_of_user(&alice.id).await.unwrap().len(), 1);
    assert!(store.share_links_of_user(&bob.id).await.unwrap().is_empty());
    assert!(store.delete_asset(&alice.id, &image.id).await.unwrap());
    assert_eq!(code(store.shared_asset("third-token").await), ErrorCode::NotFound);
    assert!(store.share_links_of_user(&alice.id).await.unwrap().is_empty(), "the link went with its image");
}

// ---------------------------------------------------------------- outbox

async fn outbox_due_retry_give_up_and_sent(store: Store) {
    let alice = user(&store, "mail@example.test").await;
    let mail = |user_id: Option<&str>, kind: &str| NewMail {
        user_id: user_id.map(str::to_string),
        kind: kind.to_string(),
        to_addr: "mail@example.test".to_string(),
        subject: format!("About {kind}"),
        body_text: format!("Body of {kind}"),
    };
    let verify = store.enqueue_mail(mail(Some(&alice.id), "verify_email")).await.unwrap();
    let notice = store.enqueue_mail(mail(None, "policy_change")).await.unwrap();
    let now = now_ms();

    let due = store.due_mail(now, 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![verify.clone(), notice.clone()], "oldest first");
    assert_eq!(due[0].user_id.as_deref(), Some(alice.id.as_str()));
    assert_eq!(due[0].subject, "About verify_email");
    assert_eq!(due[0].body_text, "Body of verify_email");
    assert_eq!(due[0].status, "pending");
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[1].user_id, None);
    assert_eq!(store.due_mail(now, 1).await.unwrap().len(), 1, "limit");
    assert!(store.due_mail(due[0].created_at - 1, 10).await.unwrap().is_empty(), "not due before it was queued");

    // a failed attempt with a retry time is not due until then
    let retry_at = now + 60_000;
    store.mark_mail_failed(&verify, "421 try later", Some(retry_at)).await.unwrap();
    let retrying = store.mail_by_id(&verify).await.unwrap().unwrap();
    assert_eq!(retrying.status, "pending");
    assert_eq!(retrying.attempts, 1);
    assert_eq!(retrying.next_attempt_at, retry_at);
    assert_eq!(retrying.last_error.as_deref(), Some("421 try later"));
    let due_now: Vec<String> = store.due_mail(now_ms(), 10).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(due_now, vec![notice.clone()]);
    let due_later: Vec<String> = store.due_mail(retry_at, 10).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(due_later, vec![notice.clone(), verify.clone()], "ordered by next attempt");

    // given up: failed, never due again
    store.mark_mail_failed(&verify, "550 no such user", None).await.unwrap();
    let given_up = store.mail_by_id(&verify).await.unwrap().unwrap();
    assert_eq!(given_up.status, "failed");
    assert_eq!(given_up.attempts, 2);
    assert_eq!(given_up.last_error.as_deref(), Some("550 no such user"));
    assert_eq!(given_up.sent_at, None);
    assert!(!store.due_mail(i64::MAX / 2, 10).await.unwrap().iter().any(|m| m.id == verify));

    store.mark_mail_sent(&notice).await.unwrap();
    let sent = store.mail_by_id(&notice).await.unwrap().unwrap();
    assert_eq!(sent.status, "sent");
    assert_eq!(sent.attempts, 1);
    assert!(sent.sent_at.unwrap() >= now);
    assert_eq!(sent.last_error, None);
    assert!(store.due_mail(i64::MAX / 2, 10).await.unwrap().is_empty());

    assert_eq!(store.mail_of_user(&alice.id).await.unwrap(), vec![given_up]);
    assert_eq!(store.mail_by_id(&new_id()).await.unwrap(), None);
}

// ---------------------------------------------------------------- migrations

async fn migrate_is_idempotent(store: Store) {
    // the fixture has migrated already
    assert_eq!(store.migrate().await.unwrap(), 0);
    let alice = user(&store, "migrate@example.test").await;
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), Some(alice), "data survives a re-run");
    store.ping().await.unwrap();
}
