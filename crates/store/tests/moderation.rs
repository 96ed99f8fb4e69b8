//! Moderation and fair scheduling in the store, on SQLite and PostgreSQL.

use domain::ids::new_id;
use domain::task::TaskStatus;
use store::{now_ms, NewAsset, NewGrant, NewModerationEvent, NewSession, NewTask, NewUser, Scheduling, Store, Submitted, Task, User};

store::store_tests!(
    c40_moderation_events_keep_the_prompt_text_only_when_asked,
    c41_reports_name_the_owner_and_unknown_images_are_not_found,
    c41_suspension_ends_sessions_cancels_tasks_and_releases_holds,
    c41_admin_search_finds_accounts_with_balance_and_last_seen,
    fair_claims_interleave_accounts,
    fair_claims_respect_the_per_account_cap,
);

async fn user(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser { email: email.into(), name: format!("Name of {email}"), password_hash: None, locale: Some("en".into()) })
        .await
        .unwrap()
}

async fn submit(store: &Store, owner: &User, cost: i64) -> Task {
    let new = NewTask {
        owner_id: owner.id.clone(),
        kind: "generate".into(),
        prompt: "a lighthouse".into(),
        params: "{}".into(),
        provider: Some("procedural".into()),
        model: Some("procedural-1".into()),
        cost,
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
    };
    match store.submit_task(new).await.unwrap() {
        Submitted::Created(t) => t,
        other => panic!("{other:?}"),
    }
}

fn event(user: &User, action: &str, prompt: Option<&str>) -> NewModerationEvent {
    NewModerationEvent {
        user_id: user.id.clone(),
        surface: "prompt".into(),
        category: "violence".into(),
        rule_id: "violence/term/0".into(),
        action: action.into(),
        prompt_hash: "ab".repeat(32),
        prompt: prompt.map(str::to_string),
    }
}

async fn c40_moderation_events_keep_the_prompt_text_only_when_asked(store: Store) {
    let u = user(&store, "m@example.org").await;
    let blocked = store.record_moderation_event(event(&u, "block", None)).await.unwrap();
    assert_eq!((blocked.status.as_str(), blocked.prompt.as_deref()), ("blocked", None));
    let review = store.record_moderation_event(event(&u, "review", Some("gore on a plate"))).await.unwrap();
    assert_eq!(review.status, "open");
    // The kept text is sealed at rest and opened for moderators.
    let open = store.moderation_events(Some("open"), None, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].prompt.as_deref(), Some("gore on a plate"));
    let mine = store.moderation_events(None, Some(&u.id), 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    let moderator = user(&store, "mod@example.org").await;
    store.mark_moderation_event_reviewed(&review.id, &moderator.id).await.unwrap();
    assert!(store.moderation_events(Some("open"), None, 10).await.unwrap().is_empty());
    assert!(store.mark_moderation_event_reviewed(&review.id, &moderator.id).await.is_err(), "reviewed once");
}

async fn c41_reports_name_the_owner_and_unknown_images_are_not_found(store: Store) {
    let owner = user(&store, "owner@example.org").await;
    let reporter = user(&store, "reporter@example.org").await;
    let asset_id = new_id();
    store
        .insert_asset(&NewAsset {
            id: asset_id.clone(),
            owner_id: owner.id.clone(),
            task_id: None,
            kind: "upload".into(),
            parent_id: None,
            storage_key: format!("{}/{asset_id}.png", owner.id),
            content_type: "image/png".into(),
            sha256: "00".repeat(32),
            size_bytes: 10,
            width: 1,
            height: 1,
            saved: false,
            expires_at: None,
        })
        .await
        .unwrap();
    let report = store.create_report(Some(reporter.id.as_str()), &asset_id, "not ok").await.unwrap();
    assert_eq!((report.owner_id.as_str(), report.status.as_str()), (owner.id.as_str(), "open"));
    assert_eq!(store.create_report(Some(reporter.id.as_str()), &new_id(), "x").await.unwrap_err().code, domain::ErrorCode::NotFound);
    let resolved = store.resolve_report(&report.id, &reporter.id, "authorities", Some("case 42")).await.unwrap();
    assert_eq!((resolved.status.as_str(), resolved.reference.as_deref()), ("resolved", Some("case 42")));
    assert!(store.reports(Some("open"), 10).await.unwrap().is_empty());
    // The reporter may leave; the report stays.
    store.delete_account(&reporter.id, &new_id()).await.unwrap();
    assert_eq!(store.report(&report.id).await.unwrap().reporter_id, None);
}

async fn c41_suspension_ends_sessions_cancels_tasks_and_releases_holds(store: Store) {
    let u = user(&store, "s@example.org").await;
    store
        .grant_credits(NewGrant {
            user_id: u.id.clone(),
            amount: 10,
            source: "test".into(),
            key: format!("test:{}", new_id()),
            reason: "test".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    let (a, b) = (submit(&store, &u, 2).await, submit(&store, &u, 3).await);
    let running = store.claim_task("w", 60_000).await.unwrap().unwrap();
    assert_eq!(running.id, a.id);
    store
        .create_session(NewSession {
            user_id: u.id.clone(),
            token_hash: "h".repeat(64),
            expires_at: now_ms() + 60_000,
            ip: None,
            user_agent: None,
        })
        .await
        .unwrap();
    assert_eq!(store.balance(&u.id).await.unwrap().held, 5);

    let s = store.suspend_account(&u.id).await.unwrap();
    assert_eq!((s.sessions_ended, s.tasks_canceled), (1, 2));
    assert_eq!(store.user_by_id(&u.id).await.unwrap().unwrap().status, "suspended");
    assert!(store.sessions_of_user(&u.id).await.unwrap().is_empty());
    for id in [&a.id, &b.id] {
        assert_eq!(store.get_task(&u.id, id).await.unwrap().status, TaskStatus::Canceled);
    }
    let balance = store.balance(&u.id).await.unwrap();
    assert_eq!((balance.available, balance.held), (10, 0), "holds released");
    assert!(!store.heartbeat_task(&a.id, "w", 60_000, 50).await.unwrap(), "the worker stops");

    store.reinstate_account(&u.id).await.unwrap();
    assert_eq!(store.user_by_id(&u.id).await.unwrap().unwrap().status, "active");
    assert!(store.reinstate_account(&u.id).await.is_err(), "only a suspended account is reinstated");
    assert!(store.suspend_account(&new_id()).await.is_err());
}

async fn c41_admin_search_finds_accounts_with_balance_and_last_seen(store: Store) {
    let a = user(&store, "Alice.Liddell@example.org").await;
    let _b = user(&store, "bob@example.org").await;
    let found = store.search_users("alice", 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].user.id.as_str(), found[0].available, found[0].last_seen_at), (a.id.as_str(), 0, None));
    assert_eq!(store.search_users(&a.id, 10).await.unwrap().len(), 1, "by id");
    assert_eq!(store.search_users("", 10).await.unwrap().len(), 2);
    assert!(store.search_users("%", 10).await.unwrap().is_empty(), "wildcards are literal");
    submit(&store, &a, 0).await;
    let stats = store.task_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].status.as_str(), stats[0].model.as_deref(), stats[0].count), ("queued", Some("procedural-1"), 1));
    assert_eq!(store.asset_count(&a.id).await.unwrap(), 0);
}

async fn fair_claims_interleave_accounts(store: Store) {
    let a = user(&store, "a@example.org").await;
    let b = user(&store, "b@example.org").await;
    for _ in 0..200 {
        submit(&store, &a, 0).await;
    }
    let b_task = submit(&store, &b, 0).await;
    // One worker running tasks one at a time: B's single task is not stuck
    // behind A's 200.
    let mut order = Vec::new();
    for _ in 0..10 {
        let t = store.claim_task("w", 60_000).await.unwrap().unwrap();
        assert!(store.complete_task(&t.id, "w", &[]).await.unwrap());
        order.push(t.owner_id.clone());
    }
    // A's oldest first (both accounts unserved), then B: served least recently.
    let b_at = order.iter().position(|o| *o == b.id).expect("B's task ran among the first ten");
    assert_eq!(b_at, 1, "B's task started second, long before A's 10th");
    assert_eq!(store.get_task(&b.id, &b_task.id).await.unwrap().status, TaskStatus::Succeeded);
}

async fn fair_claims_respect_the_per_account_cap(store: Store) {
    let store = store.with_scheduling(Scheduling { max_running_per_account: 2 });
    let a = user(&store, "a@example.org").await;
    let b = user(&store, "b@example.org").await;
    for _ in 0..5 {
        submit(&store, &a, 0).await;
    }
    let first = store.claim_task("w", 60_000).await.unwrap().unwrap();
    let second = store.claim_task("w", 60_000).await.unwrap().unwrap();
    assert_eq!((first.owner_id.as_str(), second.owner_id.as_str()), (a.id.as_str(), a.id.as_str()));
    assert_eq!(store.claim_task("w", 60_000).await.unwrap(), None, "A is at its cap");
    let b_task = submit(&store, &b, 0).await;
    assert_eq!(store.claim_task("w", 60_000).await.unwrap().unwrap().id, b_task.id);
    assert!(store.complete_task(&first.id, "w", &[]).await.unwrap());
    assert_eq!(store.claim_task("w", 60_000).await.unwrap().unwrap().owner_id, a.id, "a slot opened");
}
