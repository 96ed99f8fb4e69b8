//! Consent proofs, account privacy choices, analytics with daily keys,
//! request logs and policy versions. Every case runs on SQLite and
//! PostgreSQL.

use domain::ErrorCode;
use store::{
    day_of, now_ms, ConsentChoice, NewAnalyticsEvent, NewConsent, NewMail, NewRequestLog, NewUser, PolicyVersion, Store, User, DAY_MS,
};

store::store_tests!(
    c21_every_consent_choice_is_kept_as_proof,
    c37_c25_restriction_and_marketing_choices_decide_who_gets_marketing,
    c22_analytics_keys_rotate_and_old_days_fold_into_aggregates,
    c23_request_logs_are_swept_after_their_window,
    c43_material_versions_queue_notices_and_wait_for_acceptance,
    c25_marketing_mail_carries_its_unsubscribe_link,
);

async fn user(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser { email: email.to_string(), name: format!("Name of {email}"), password_hash: None, locale: None })
        .await
        .expect("create user")
}

async fn c21_every_consent_choice_is_kept_as_proof(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let all = ConsentChoice { analytics: true, preferences: true, marketing: true };
    let anonymous = store
        .record_consent(NewConsent {
            user_id: None,
            visitor_id: "visitor-1",
            choice: all,
            policy_version: "1",
            source: "banner",
            at: 1_000,
        })
        .await
        .unwrap();
    assert_eq!((anonymous.analytics, anonymous.marketing, anonymous.source.as_str()), (true, true, "banner"));
    let withdrawn = ConsentChoice::default();
    store
        .record_consent(NewConsent {
            user_id: Some(&ana.id),
            visitor_id: "visitor-1",
            choice: withdrawn,
            policy_version: "1",
            source: "settings",
            at: 2_000,
        })
        .await
        .unwrap();
    let of_visitor = store.consents_of_visitor("visitor-1").await.unwrap();
    assert_eq!(of_visitor.len(), 2, "the withdrawal is a new record, the first one stays as proof");
    assert_eq!((of_visitor[1].analytics, of_visitor[1].created_at), (false, 2_000));
    let of_ana = store.consents_of_user(&ana.id).await.unwrap();
    assert_eq!(of_ana.len(), 1, "only the choice made while signed in belongs to the account");
    assert_eq!((of_ana[0].user_id.as_deref(), of_ana[0].policy_version.as_str()), (Some(ana.id.as_str()), "1"));
    assert!(store.consents_of_visitor("visitor-2").await.unwrap().is_empty());
}

async fn c37_c25_restriction_and_marketing_choices_decide_who_gets_marketing(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let bo = user(&store, "bo@example.org").await;
    let cy = user(&store, "cy@example.org").await;
    let defaults = store.account_privacy(&ana.id).await.unwrap();
    assert!(!defaults.restricted && !defaults.marketing_opt_in, "marketing is off and processing unrestricted by default");
    assert!(store.marketing_recipients().await.unwrap().is_empty(), "nobody opted in");

    assert!(store.set_marketing_opt_in(&ana.id, true, 10).await.unwrap());
    assert!(!store.set_marketing_opt_in(&ana.id, true, 11).await.unwrap(), "no change the second time");
    assert!(store.set_marketing_opt_in(&bo.id, true, 10).await.unwrap());
    assert!(store.set_processing_restricted(&bo.id, true, 12).await.unwrap());
    let bo_privacy = store.account_privacy(&bo.id).await.unwrap();
    assert!(bo_privacy.restricted && bo_privacy.marketing_opt_in, "restricting keeps the opt-in as it was");

    let recipients: Vec<String> = store.marketing_recipients().await.unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(recipients, vec![ana.id.clone()], "restricted and never-opted accounts are left out");
    assert!(store.active_accounts().await.unwrap().iter().any(|u| u.id == cy.id));

    assert!(store.set_processing_restricted(&bo.id, false, 13).await.unwrap());
    assert_eq!(store.marketing_recipients().await.unwrap().len(), 2);
    assert_eq!(store.set_marketing_opt_in("0190a0a0-0000-7000-8000-000000000000", true, 1).await.unwrap_err().code, ErrorCode::NotFound);
}

async fn c22_analytics_keys_rotate_and_old_days_fold_into_aggregates(store: Store) {
    let day = 20_000;
    let key = store.analytics_key(day, vec![1; 32]).await.unwrap();
    assert_eq!(key, vec![1; 32]);
    assert_eq!(store.analytics_key(day, vec![2; 32]).await.unwrap(), key, "one key per day");
    let next = store.analytics_key(day + 1, vec![3; 32]).await.unwrap();
    assert_eq!(next, vec![3; 32]);
    assert_eq!(store.analytics_key(day, vec![4; 32]).await.unwrap(), vec![4; 32], "yesterday's key is gone for good");
    assert_eq!(store.discard_analytics_keys(day + 1).await.unwrap(), 1);

    let at = day * DAY_MS + 3_600_000;
    for (at, visitor, name) in
        [(at, "v1", "/gallery"), (at + 1, "v1", "/gallery"), (at + 2, "v2", "/gallery"), (at + DAY_MS, "v3", "/generate")]
    {
        store.record_analytics_event(NewAnalyticsEvent { at, visitor, kind: "page", name }).await.unwrap();
    }
    assert_eq!(store.analytics_raw_count().await.unwrap(), 4);
    assert_eq!(store.fold_analytics(day).await.unwrap(), 0, "nothing before the cutoff day");
    assert_eq!(store.fold_analytics(day + 1).await.unwrap(), 3, "the whole first day folds at once");
    assert_eq!(store.analytics_raw_count().await.unwrap(), 1, "the younger day stays raw");
    let daily = store.analytics_daily(day).await.unwrap();
    assert_eq!(daily.len(), 1);
    assert_eq!((daily[0].day, daily[0].name.as_str(), daily[0].events, daily[0].visitors), (day, "/gallery", 3, 2));
    assert_eq!(store.fold_analytics(day + 2).await.unwrap(), 1);
    assert_eq!(store.analytics_daily(day).await.unwrap().len(), 2);
    assert_eq!(store.analytics_raw_count().await.unwrap(), 0);
}

async fn c23_request_logs_are_swept_after_their_window(store: Store) {
    for (at, route) in [(1_000, "/old"), (5_000, "/new")] {
        store
            .record_request(NewRequestLog { at, method: "GET", route, status: 200, ip_prefix: Some("203.0.113.0/24"), browser: "firefox" })
            .await
            .unwrap();
    }
    assert_eq!(store.request_logs(10).await.unwrap().len(), 2);
    assert_eq!(store.delete_request_logs_before(2_000).await.unwrap(), 1);
    let left = store.request_logs(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].route.as_str(), left[0].ip_prefix.as_deref(), left[0].status), ("/new", Some("203.0.113.0/24"), 200));
}

fn version(label: &str, material: bool, published_at: i64) -> PolicyVersion {
    PolicyVersion { version: label.into(), material, summary: format!("summary of {label}"), effective_at: published_at, published_at }
}

fn notice(user: &User) -> NewMail {
    NewMail {
        user_id: Some(user.id.clone()),
        kind: "policy_changed".into(),
        to_addr: user.email.clone(),
        subject: "Policy".into(),
        body_text: "changed".into(),
    }
}

async fn c43_material_versions_queue_notices_and_wait_for_acceptance(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let first = store.ensure_policy(&version("1", false, 1_000)).await.unwrap();
    assert_eq!(first.version, "1");
    assert_eq!(store.ensure_policy(&version("other", false, 2_000)).await.unwrap().version, "1", "only a fresh install gets one");
    assert_eq!(store.pending_material_policy(&ana.id).await.unwrap(), None, "nothing material since the account exists");

    let later = now_ms() + 60_000;
    store.publish_policy(&version("2", true, later), &[notice(&ana)]).await.unwrap();
    assert_eq!(store.current_policy().await.unwrap().unwrap().version, "2");
    assert_eq!(store.mail_of_user(&ana.id).await.unwrap().len(), 1);
    let dup = store.publish_policy(&version("2", true, later + 1), &[notice(&ana)]).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::InvalidInput);
    assert_eq!(store.mail_of_user(&ana.id).await.unwrap().len(), 1, "a refused publication queues nothing");

    assert_eq!(store.pending_material_policy(&ana.id).await.unwrap().map(|v| v.version), Some("2".to_string()));
    assert_eq!(store.accept_policy(&ana.id, "nope", later).await.unwrap_err().code, ErrorCode::NotFound);
    store.accept_policy(&ana.id, "2", later + 5).await.unwrap();
    store.accept_policy(&ana.id, "2", later + 9).await.unwrap();
    assert_eq!(store.pending_material_policy(&ana.id).await.unwrap(), None);
    let accepted = store.policy_acceptances_of_user(&ana.id).await.unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!((accepted[0].version.as_str(), accepted[0].accepted_at), ("2", later + 5), "the first acceptance counts");
    assert_eq!(store.policy_versions().await.unwrap().len(), 2);
    assert_eq!(day_of(later), later.div_euclid(DAY_MS));
}

async fn c25_marketing_mail_carries_its_unsubscribe_link(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let mail = NewMail { kind: "marketing".into(), ..notice(&ana) };
    let id = store.enqueue_marketing_mail(&mail, "http://localhost/unsubscribe?u=x&s=y", 7).await.unwrap();
    let stored = store.mail_by_id(&id).await.unwrap().unwrap();
    assert_eq!(stored.unsubscribe_url.as_deref(), Some("http://localhost/unsubscribe?u=x&s=y"));
    assert_eq!((stored.kind.as_str(), stored.status.as_str()), ("marketing", "pending"));
}
