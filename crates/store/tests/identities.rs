//! Sign-in state in the store: identities, single-use tokens, throttling
//! records, TOTP and session management. Every case runs on SQLite and
//! PostgreSQL.

use domain::ErrorCode;
use store::{now_ms, NewAuthToken, NewIdentity, NewSession, NewUser, Store, User};

store::store_tests!(
    c03_identities_link_once_and_never_leave_an_account_without_a_way_in,
    tokens_are_single_use_and_expire,
    tokens_of_a_purpose_can_be_voided,
    auth_failures_are_counted_per_bucket_and_swept,
    totp_steps_only_move_forward_and_recovery_codes_work_once,
    c04_sessions_are_revoked_one_by_one_or_all_but_one,
    c01_email_change_verifies_and_refuses_a_taken_address,
);

async fn user(store: &Store, email: &str, password: bool) -> User {
    store
        .create_user(NewUser {
            email: email.to_string(),
            name: format!("Name of {email}"),
            password_hash: password.then(|| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string()),
            locale: None,
        })
        .await
        .expect("create user")
}

fn identity(user: &User, provider: &str, subject: &str) -> NewIdentity {
    NewIdentity { user_id: user.id.clone(), provider: provider.into(), subject: subject.into(), email: Some(user.email.clone()) }
}

async fn c03_identities_link_once_and_never_leave_an_account_without_a_way_in(store: Store) {
    let ana = user(&store, "ana@example.org", false).await;
    let bo = user(&store, "bo@example.org", true).await;
    let google = store.link_identity(identity(&ana, "google", "g-1")).await.unwrap();
    assert_eq!(store.identity("google", "g-1").await.unwrap().unwrap().user_id, ana.id);
    assert!(store.identity("github", "g-1").await.unwrap().is_none(), "subjects are per provider");
    // The same provider account cannot be linked twice, to anyone.
    let again = store.link_identity(identity(&bo, "google", "g-1")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::IdentityInUse);

    // Ana has no password: her only identity cannot go.
    assert_eq!(store.unlink_identity(&ana.id, &google.id).await.unwrap_err().code, ErrorCode::LastSignInMethod);
    let github = store.link_identity(identity(&ana, "github", "42")).await.unwrap();
    assert_eq!(store.identities_of_user(&ana.id).await.unwrap().len(), 2);
    assert_eq!(store.unlink_identity(&ana.id, &google.id).await.unwrap().provider, "google");
    assert_eq!(store.unlink_identity(&ana.id, &github.id).await.unwrap_err().code, ErrorCode::LastSignInMethod);
    // Another account's identity is not found, not removed.
    assert_eq!(store.unlink_identity(&bo.id, &github.id).await.unwrap_err().code, ErrorCode::NotFound);
    // With a password, the last identity may go.
    let bo_gh = store.link_identity(identity(&bo, "github", "43")).await.unwrap();
    store.unlink_identity(&bo.id, &bo_gh.id).await.unwrap();
    assert!(store.identities_of_user(&bo.id).await.unwrap().is_empty());
}

fn token(purpose: &str, hash: &str, user: Option<&User>, expires_at: i64) -> NewAuthToken {
    NewAuthToken {
        purpose: purpose.into(),
        token_hash: hash.into(),
        user_id: user.map(|u| u.id.clone()),
        data: Some(r#"{"k":1}"#.into()),
        expires_at,
    }
}

async fn tokens_are_single_use_and_expire(store: Store) {
    let ana = user(&store, "ana@example.org", true).await;
    let now = now_ms();
    store.create_auth_token(token("reset_password", "h1", Some(&ana), now + 60_000), now).await.unwrap();
    store.create_auth_token(token("reset_password", "h2", Some(&ana), now + 60_000), now).await.unwrap();
    assert!(store.consume_auth_token("verify_email", "h1", now).await.unwrap().is_none(), "purpose must match");
    assert!(store.peek_auth_token("reset_password", "h1", now).await.unwrap().is_some());
    let used = store.consume_auth_token("reset_password", "h1", now).await.unwrap().unwrap();
    assert_eq!((used.user_id.as_deref(), used.data.as_deref()), (Some(ana.id.as_str()), Some(r#"{"k":1}"#)));
    assert!(store.consume_auth_token("reset_password", "h1", now).await.unwrap().is_none(), "once only");
    assert!(store.peek_auth_token("reset_password", "h1", now).await.unwrap().is_none());
    assert!(store.consume_auth_token("reset_password", "h2", now + 60_000).await.unwrap().is_none(), "expired");

    // Concurrent uses: exactly one wins.
    store.create_auth_token(token("verify_email", "h3", Some(&ana), now + 60_000), now).await.unwrap();
    let uses = futures_join(&store, "h3", now).await;
    assert_eq!(uses, 1);

    // Expired tokens are swept.
    assert!(store.sweep_auth_records(now + 120_000).await.unwrap() >= 2);
}

async fn futures_join(store: &Store, hash: &str, now: i64) -> usize {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (store, hash) = (store.clone(), hash.to_string());
        handles.push(tokio::spawn(async move { store.consume_auth_token("verify_email", &hash, now).await.unwrap().is_some() }));
    }
    let mut won = 0;
    for h in handles {
        won += usize::from(h.await.unwrap());
    }
    won
}

async fn tokens_of_a_purpose_can_be_voided(store: Store) {
    let ana = user(&store, "ana@example.org", true).await;
    let now = now_ms();
    store.create_auth_token(token("reset_password", "a", Some(&ana), now + 60_000), now).await.unwrap();
    store.create_auth_token(token("reset_password", "b", Some(&ana), now + 60_000), now).await.unwrap();
    store.create_auth_token(token("verify_email", "c", Some(&ana), now + 60_000), now).await.unwrap();
    assert_eq!(store.void_auth_tokens(&ana.id, "reset_password", now).await.unwrap(), 2);
    assert!(store.consume_auth_token("reset_password", "b", now).await.unwrap().is_none());
    assert!(store.consume_auth_token("verify_email", "c", now).await.unwrap().is_some());
}

async fn auth_failures_are_counted_per_bucket_and_swept(store: Store) {
    let now = now_ms();
    for i in 0..3 {
        store.record_auth_failure("acct:x", now - 1000 * i).await.unwrap();
    }
    store.record_auth_failure("ip:203.0.113.0", now).await.unwrap();
    store.record_auth_failure("acct:x", now - 2 * 3_600_000).await.unwrap();
    let recent = store.auth_failures_since("acct:x", now - 3_600_000).await.unwrap();
    assert_eq!(recent, vec![now - 2000, now - 1000, now], "the last hour, oldest first");
    store.clear_auth_failures("acct:x").await.unwrap();
    assert!(store.auth_failures_since("acct:x", 0).await.unwrap().is_empty());
    assert_eq!(store.auth_failures_since("ip:203.0.113.0", 0).await.unwrap().len(), 1, "other buckets untouched");
    store.sweep_auth_records(now + store::AUTH_FAILURE_RETENTION_MS + 1).await.unwrap();
    assert!(store.auth_failures_since("ip:203.0.113.0", 0).await.unwrap().is_empty());
}

async fn totp_steps_only_move_forward_and_recovery_codes_work_once(store: Store) {
    let ana = user(&store, "ana@example.org", true).await;
    assert!(store.totp_of_user(&ana.id).await.unwrap().is_none());
    let hashes = vec!["r1".to_string(), "r2".to_string()];
    store.enable_totp(&ana.id, "JBSWY3DPEHPK3PXP", 100, &hashes, now_ms()).await.unwrap();
    let record = store.totp_of_user(&ana.id).await.unwrap().unwrap();
    assert_eq!((record.secret.as_str(), record.last_step), ("JBSWY3DPEHPK3PXP", 100));
    assert!(!store.advance_totp_step(&ana.id, 100).await.unwrap(), "the enrolment code's step is spent");
    assert!(store.advance_totp_step(&ana.id, 101).await.unwrap());
    assert!(!store.advance_totp_step(&ana.id, 101).await.unwrap(), "a code works once");
    assert!(!store.advance_totp_step(&ana.id, 99).await.unwrap());
    assert_eq!(store.recovery_codes_left(&ana.id).await.unwrap(), 2);
    assert!(store.use_recovery_code(&ana.id, "r1", now_ms()).await.unwrap());
    assert!(!store.use_recovery_code(&ana.id, "r1", now_ms()).await.unwrap());
    assert!(!store.use_recovery_code(&ana.id, "nope", now_ms()).await.unwrap());
    assert_eq!(store.recovery_codes_left(&ana.id).await.unwrap(), 1);
    assert!(store.disable_totp(&ana.id).await.unwrap());
    assert!(store.totp_of_user(&ana.id).await.unwrap().is_none());
    assert_eq!(store.recovery_codes_left(&ana.id).await.unwrap(), 0);
}

async fn c04_sessions_are_revoked_one_by_one_or_all_but_one(store: Store) {
    let ana = user(&store, "ana@example.org", true).await;
    let bo = user(&store, "bo@example.org", true).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = store
            .create_session(NewSession {
                user_id: ana.id.clone(),
                token_hash: format!("t{i}"),
                expires_at: now_ms() + 60_000,
                ip: None,
                user_agent: None,
            })
            .await
            .unwrap();
        ids.push(s.id);
    }
    let bos = store
        .create_session(NewSession {
            user_id: bo.id.clone(),
            token_hash: "tb".into(),
            expires_at: now_ms() + 60_000,
            ip: None,
            user_agent: None,
        })
        .await
        .unwrap();
    assert!(!store.delete_user_session(&ana.id, &bos.id).await.unwrap(), "not another account's session");
    assert!(store.delete_user_session(&ana.id, &ids[0]).await.unwrap());
    assert!(store.session_by_token_hash("t0", now_ms()).await.unwrap().is_none());
    assert_eq!(store.delete_user_sessions(&ana.id, Some(&ids[2])).await.unwrap(), 1);
    assert!(store.session_by_token_hash("t1", now_ms()).await.unwrap().is_none());
    assert!(store.session_by_token_hash("t2", now_ms()).await.unwrap().is_some());
    let when = now_ms() + 5000;
    store.touch_session(&ids[2], when).await.unwrap();
    assert_eq!(store.sessions_of_user(&ana.id).await.unwrap()[0].last_seen_at, when);
    assert_eq!(store.delete_user_sessions(&ana.id, None).await.unwrap(), 1);
    assert!(store.session_by_token_hash("tb", now_ms()).await.unwrap().is_some(), "the other account keeps its session");
}

async fn c01_email_change_verifies_and_refuses_a_taken_address(store: Store) {
    let ana = user(&store, "ana@example.org", true).await;
    user(&store, "bo@example.org", true).await;
    assert!(ana.email_verified_at.is_none());
    store.mark_email_verified(&ana.id, 1000).await.unwrap();
    store.mark_email_verified(&ana.id, 2000).await.unwrap();
    assert_eq!(store.user_by_id(&ana.id).await.unwrap().unwrap().email_verified_at, Some(1000), "the first verification is kept");
    assert_eq!(store.change_email(&ana.id, "bo@example.org", 3000).await.unwrap_err().code, ErrorCode::EmailTaken);
    let changed = store.change_email(&ana.id, "ana.new@example.org", 3000).await.unwrap();
    assert_eq!((changed.email.as_str(), changed.email_verified_at), ("ana.new@example.org", Some(3000)));
    assert!(store.user_by_email("ana@example.org").await.unwrap().is_none());
    store.set_password_hash(&ana.id, None).await.unwrap();
    assert!(store.user_by_id(&ana.id).await.unwrap().unwrap().password_hash.is_none());
}
