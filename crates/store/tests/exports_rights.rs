//! Data export jobs (C35) and rights requests (C38) in the store, on SQLite
//! and PostgreSQL.

use domain::rights::RIGHTS_DUE_MS;
use domain::ErrorCode;
use store::{NewRightsRequest, NewUser, Store, User};

store::store_tests!(
    c35_one_export_at_a_time_claimed_once_and_taken_over_after_a_crash,
    c35_finished_exports_expire_and_belong_to_their_owner,
    c38_requests_are_due_in_30_days_and_move_along_one_path,
    c38_admins_see_overdue_requests_first,
);

async fn user(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser { email: email.into(), name: "Someone".into(), password_hash: None, locale: None })
        .await
        .expect("create user")
}

const T0: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

async fn c35_one_export_at_a_time_claimed_once_and_taken_over_after_a_crash(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let (first, created) = store.request_export(&ana.id, T0).await.unwrap();
    assert!(created);
    assert_eq!(first.status, "pending");
    // Asking again while it waits returns the same export.
    let (again, created) = store.request_export(&ana.id, T0 + 1).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);

    let claimed = store.claim_export(T0, 60_000).await.unwrap().expect("a pending export");
    assert_eq!((claimed.id.as_str(), claimed.status.as_str()), (first.id.as_str(), "running"));
    // Nobody else gets it while the lease holds...
    assert!(store.claim_export(T0 + 59_000, 60_000).await.unwrap().is_none());
    assert!(store.renew_export_lease(&first.id, T0 + 120_000).await.unwrap());
    assert!(store.claim_export(T0 + 90_000, 60_000).await.unwrap().is_none());
    // ...and once it lapses (the builder died) another node takes it over.
    let taken = store.claim_export(T0 + 120_001, 60_000).await.unwrap().expect("a stalled export");
    assert_eq!(taken.id, first.id);
    // Still one in progress: no second export is queued.
    assert!(!store.request_export(&ana.id, T0 + 2).await.unwrap().1);

    let done = store.finish_export(&first.id, 3, 12_345, T0 + 130_000, T0 + 7 * DAY).await.unwrap().expect("finished");
    assert_eq!((done.status.as_str(), done.parts, done.size_bytes, done.expires_at), ("ready", 3, 12_345, Some(T0 + 7 * DAY)));
    assert!(!store.renew_export_lease(&first.id, T0 + 200_000).await.unwrap(), "a finished export has no lease");
    // Now a new one may be asked for.
    let (second, created) = store.request_export(&ana.id, T0 + 3).await.unwrap();
    assert!(created && second.id != first.id);
    let running = store.claim_export(T0 + 3, 60_000).await.unwrap().unwrap();
    store.fail_export(&running.id, "internal", T0 + 4, T0 + 7 * DAY).await.unwrap();
    let failed = store.export_of_user(&ana.id, &running.id).await.unwrap();
    assert_eq!((failed.status.as_str(), failed.error.as_deref()), ("failed", Some("internal")));
}

async fn c35_finished_exports_expire_and_belong_to_their_owner(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let bo = user(&store, "bo@example.org").await;
    let (export, _) = store.request_export(&ana.id, T0).await.unwrap();
    assert_eq!(export.part_key(2), format!("{}/exports/{}/00002", ana.id, export.id));
    assert!(export.part_key(0).starts_with(&export.parts_prefix()));
    store.claim_export(T0, 60_000).await.unwrap().unwrap();
    store.finish_export(&export.id, 1, 10, T0, T0 + 7 * DAY).await.unwrap().unwrap();

    assert_eq!(store.export_of_user(&bo.id, &export.id).await.unwrap_err().code, ErrorCode::NotFound);
    assert!(store.exports_of_user(&bo.id).await.unwrap().is_empty());
    assert_eq!(store.exports_of_user(&ana.id).await.unwrap().len(), 1);

    assert!(store.expired_exports(T0 + 7 * DAY - 1, 10).await.unwrap().is_empty());
    let expired = store.expired_exports(T0 + 7 * DAY, 10).await.unwrap();
    assert_eq!(expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec![export.id.as_str()]);
    assert!(store.delete_export(&export.id).await.unwrap());
    assert!(store.exports_of_user(&ana.id).await.unwrap().is_empty());

    // A pending export never expires: it has not been built yet.
    store.request_export(&bo.id, T0).await.unwrap();
    assert!(store.expired_exports(i64::MAX, 10).await.unwrap().is_empty());
}

fn dashboard(user: &User, kind: &str, at: i64) -> NewRightsRequest {
    NewRightsRequest {
        user_id: Some(user.id.clone()),
        contact: None,
        kind: kind.into(),
        channel: "dashboard".into(),
        details: "  please  ".into(),
        logged_by: None,
        received_at: at,
    }
}

async fn c38_requests_are_due_in_30_days_and_move_along_one_path(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let request = store.file_rights_request(dashboard(&ana, "erasure", T0)).await.unwrap();
    assert_eq!((request.status.as_str(), request.due_at, request.details.as_str()), ("received", T0 + RIGHTS_DUE_MS, "please"));
    assert_eq!(RIGHTS_DUE_MS, 30 * DAY);

    for bad in [dashboard(&ana, "everything", T0), NewRightsRequest { user_id: None, ..dashboard(&ana, "access", T0) }] {
        assert_eq!(store.file_rights_request(bad).await.unwrap_err().code, ErrorCode::InvalidInput);
    }

    let err = store.set_rights_request_status(&request.id, "completed", None, T0 + 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "received cannot jump to completed");
    let (before, after) = store.set_rights_request_status(&request.id, "in_progress", None, T0 + 2).await.unwrap();
    assert_eq!((before.status.as_str(), after.status.as_str(), after.closed_at), ("received", "in_progress", None));
    let err = store.set_rights_request_status(&request.id, "denied", Some(" "), T0 + 3).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "a denial needs a reason");
    let (_, denied) = store.set_rights_request_status(&request.id, "denied", Some("identity not confirmed"), T0 + 4).await.unwrap();
    assert_eq!(
        (denied.status.as_str(), denied.reason.as_deref(), denied.closed_at),
        ("denied", Some("identity not confirmed"), Some(T0 + 4))
    );
    assert_eq!(store.set_rights_request_status(&request.id, "in_progress", None, T0 + 5).await.unwrap_err().code, ErrorCode::InvalidInput);
    assert_eq!(store.set_rights_request_status(&ana.id, "in_progress", None, T0).await.unwrap_err().code, ErrorCode::NotFound);

    // Mailed requests without an account keep the sender's address.
    let mailed = store
        .file_rights_request(NewRightsRequest {
            user_id: None,
            contact: Some("someone@example.net".into()),
            channel: "email".into(),
            ..dashboard(&ana, "access", T0)
        })
        .await
        .unwrap();
    assert_eq!((mailed.user_id, mailed.contact.as_deref()), (None, Some("someone@example.net")));
    assert_eq!(store.rights_requests_of_user(&ana.id).await.unwrap().len(), 1);
}

async fn c38_admins_see_overdue_requests_first(store: Store) {
    let ana = user(&store, "ana@example.org").await;
    let closed = store.file_rights_request(dashboard(&ana, "access", T0 - 40 * DAY)).await.unwrap();
    store.set_rights_request_status(&closed.id, "in_progress", None, T0 - 39 * DAY).await.unwrap();
    store.set_rights_request_status(&closed.id, "completed", None, T0 - 38 * DAY).await.unwrap();
    let fresh = store.file_rights_request(dashboard(&ana, "objection", T0)).await.unwrap();
    let late = store.file_rights_request(dashboard(&ana, "erasure", T0 - 31 * DAY)).await.unwrap();
    let soon = store.file_rights_request(dashboard(&ana, "portability", T0 - 25 * DAY)).await.unwrap();
    let order: Vec<String> = store.all_rights_requests(T0, 100).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(order, vec![late.id, soon.id, fresh.id, closed.id]);
}
