//! Account deletion with grace, cancel and purge; support tickets; reports of
//! child accounts; keeping generated images. Through the router, on SQLite
//! and PostgreSQL; time moves by explicit sweep times, never by sleeping.

mod common;

use axum::http::{Method, StatusCode};
use common::{link_in, token_of, wait_for_mail, App, Client};
use serde_json::json;
use store::testing::{rows_mentioning, schema_columns, TestBackend};
use store::{BillingAction, BillingEvent, NewMail, NewPayment};
use web::WebConfig;

const PASSWORD: &str = "a long enough passphrase";
const BACKENDS: [TestBackend; 2] = [TestBackend::Sqlite, TestBackend::Postgres];

async fn app(backend: TestBackend) -> App {
    let billing = billing::BillingConfig { enabled: true, signup_grant: 1000, ..Default::default() };
    let limits = domain::params::Limits { max_n: 5, ..Default::default() };
    App::with_config(backend, WebConfig { billing, limits, ..WebConfig::default() }).await
}

/// A paid purchase of the account, as a verified webhook would record it
/// (the provider's references never contain the account id).
async fn purchase(app: &App, user_id: &str, email: &str) {
    let event = BillingEvent {
        provider: "stripe".into(),
        event_id: "evt_purchase".into(),
        event_type: "checkout.session.completed".into(),
        summary: r#"{"reference":"cs_1"}"#.into(),
        action: BillingAction::Grant {
            user_id: user_id.into(),
            credits: 100,
            source: "pack".into(),
            reason: "pack:starter".into(),
            expires_at: None,
            payment: NewPayment {
                provider: "stripe".into(),
                reference: "cs_purchase".into(),
                payment_ref: Some("pi_purchase".into()),
                product: "pack:starter".into(),
                amount_minor: 1000,
                currency: "usd".into(),
            },
            subscription: None,
            receipt: Some(NewMail {
                user_id: Some(user_id.into()),
                kind: "receipt".into(),
                to_addr: email.into(),
                subject: "Receipt".into(),
                body_text: "Thanks".into(),
            }),
        },
    };
    app.state.store.apply_billing_event(event).await.unwrap();
}

async fn signed_in(app: &App, email: &str) -> Client {
    let mut client = app.client();
    let resp = client.post_form("/signin", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
    client
}

async fn account_status(client: &mut Client) -> StatusCode {
    client.api(Method::GET, "/api/v1/account", None, &[]).await.status
}

async fn with_key(app: &App, key: &str) -> StatusCode {
    let auth = format!("Bearer {key}");
    app.client().send(Method::GET, "/api/v1/account", None, Vec::new(), &[("authorization", &auth)]).await.status
}

async fn request_deletion(client: &mut Client) -> String {
    let resp = client.post_form("/account/delete", &[("current_password", PASSWORD), ("mode", "grace")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert!(resp.text().contains("will be purged on"), "{}", resp.text());
    resp.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c29_c31_c33_deletion_with_grace_cancel_and_purge_leaves_nothing_of_the_account() {
    for backend in BACKENDS {
        let app = app(backend).await;
        let store = app.state.store.clone();
        let email = "leaving@example.org";
        let mut browser = app.client();
        let id = browser.signed_up(email).await;
        // A second account alongside stays untouched throughout.
        let mut other = app.client();
        let other_id = other.signed_up("staying@example.org").await;
        other.submit(json!({"prompt": "a quiet harbour", "size": "256x256"})).await;

        for i in 0..10 {
            browser.submit(json!({"prompt": format!("private lighthouse {i}"), "size": "256x256", "n": 5})).await;
        }
        app.run_tasks().await;
        let gallery = store.list_gallery(&id, None, 100).await.unwrap();
        assert_eq!(gallery.items.len(), 50, "50 images");
        purchase(&app, &id, email).await;
        let ticket = browser.post_form("/support", &[("subject", "Billing question"), ("body", "my private words")]).await;
        assert_eq!(ticket.status, StatusCode::SEE_OTHER, "{}", ticket.text());
        let key = browser.api(Method::POST, "/api/v1/api-keys", Some(json!({"name": "cli"})), &[]).await.json()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let shared = browser.api(Method::POST, &format!("/api/v1/images/{}/share", gallery.items[0].asset.id), None, &[]).await.json();
        let share_page = format!("/s/{}", shared["token"].as_str().unwrap());
        assert_eq!(app.client().get(&share_page).await.status, StatusCode::OK);
        let mut laptop = signed_in(&app, email).await;
        assert_eq!(with_key(&app, &key).await, StatusCode::OK);
        assert!(!store.ledger_entries(&id, None, 10).await.unwrap().items.is_empty());

        // A wrong password changes nothing.
        let wrong = browser.post_form("/account/delete", &[("current_password", "not my password"), ("mode", "grace")]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text());
        assert_eq!(account_status(&mut browser).await, StatusCode::OK);

        // Request: every session and the API key stop working at once.
        request_deletion(&mut browser).await;
        assert_eq!(account_status(&mut browser).await, StatusCode::UNAUTHORIZED);
        assert_eq!(account_status(&mut laptop).await, StatusCode::UNAUTHORIZED);
        assert_eq!(with_key(&app, &key).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.client().get(&share_page).await.status, StatusCode::NOT_FOUND, "no public link while the account is disabled");
        assert!(store.sessions_of_user(&id).await.unwrap().is_empty());
        let refused = app.client().post_form("/signin", &[("email", email), ("password", PASSWORD)]).await;
        assert_ne!(refused.status, StatusCode::SEE_OTHER, "a disabled account cannot sign in");

        // The mailed link restores everything, without a session; once.
        let link = link_in(&wait_for_mail(&store, email, "account_deletion").await, "/account/delete/cancel?token=");
        let mut visitor = app.client();
        assert_eq!(visitor.get(&link).await.status, StatusCode::OK);
        assert_eq!(store.user_by_id(&id).await.unwrap().unwrap().status, "deletion_pending", "a GET changes nothing");
        let canceled = visitor.post_form("/account/delete/cancel", &[("token", &token_of(&link))]).await;
        assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.text());
        let again = visitor.post_form("/account/delete/cancel", &[("token", &token_of(&link))]).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "the link works once");
        let mut browser = signed_in(&app, email).await;
        assert_eq!(account_status(&mut browser).await, StatusCode::OK);
        assert_eq!(with_key(&app, &key).await, StatusCode::OK);
        assert_eq!(store.list_gallery(&id, None, 100).await.unwrap().items.len(), 50, "nothing lost");
        assert_eq!(store.tickets_of_user(&id).await.unwrap()[0].body, "my private words");
        let sweep = privacy::sweep::run_sweeps(
            &store,
            app.state.objects.as_ref(),
            &app.state.config.privacy,
            store::now_ms() + app.state.config.privacy.deletion_grace_ms() + 86_400_000,
        );
        assert_eq!(sweep.await.unwrap().accounts_purged, 0, "a canceled deletion is never purged");

        // Request again, and let the grace period pass.
        request_deletion(&mut browser).await;
        let grace = app.state.config.privacy.deletion_grace_ms();
        let early =
            privacy::sweep::run_sweeps(&store, app.state.objects.as_ref(), &app.state.config.privacy, store::now_ms() + grace - 60_000);
        assert_eq!(early.await.unwrap().accounts_purged, 0, "not before the grace period ends");
        let report = privacy::sweep::run_sweeps(&store, app.state.objects.as_ref(), &app.state.config.privacy, store::now_ms() + grace + 1)
            .await
            .unwrap();
        assert_eq!(report.accounts_purged, 1);

        // No row of the account in any table, checked column by column of
        // the schema the database reports; nor its email anywhere.
        let tables: std::collections::BTreeSet<String> = schema_columns(&store).await.into_iter().map(|(t, _)| t).collect();
        for expected in [
            "users",
            "sessions",
            "tasks",
            "task_events",
            "assets",
            "share_links",
            "ledger",
            "payments",
            "support_tickets",
            "audit_log",
            "outbox",
        ] {
            assert!(tables.contains(expected), "{expected} is in the schema");
        }
        assert_eq!(rows_mentioning(&store, &id).await, vec![], "rows naming the account");
        assert_eq!(rows_mentioning(&store, email).await, vec![], "rows holding its email");
        assert_eq!(rows_mentioning(&store, shared["token"].as_str().unwrap()).await, vec![], "its public link");
        assert_eq!(app.client().get(&share_page).await.status, StatusCode::NOT_FOUND);
        assert!(app.state.objects.list_prefix(&format!("{id}/")).await.unwrap().is_empty(), "no object under its prefix");
        assert!(store.data_key(&id).await.is_err(), "data key destroyed");
        assert_eq!(store.tombstone_ids().await.unwrap(), vec![privacy::tombstone_id(&id)], "exactly one tombstone");
        let payments = store.payments(10).await.unwrap();
        assert_eq!(payments.len(), 1, "the payment is kept");
        assert_eq!((payments[0].user_id.as_deref(), payments[0].amount_minor), (None, 1000), "without the account link");
        // Nothing of the other account went.
        assert_eq!(account_status(&mut other).await, StatusCode::OK);
        assert_eq!(store.list_gallery(&other_id, None, 10).await.unwrap().items.len(), 1);
        assert!(!rows_mentioning(&store, &other_id).await.is_empty());
    }
}

#[tokio::test]
async fn c29_delete_now_purges_at_once() {
    for backend in BACKENDS {
        let app = app(backend).await;
        let mut client = app.client();
        let id = client.signed_up("now@example.org").await;
        client.submit(json!({"prompt": "gone soon", "size": "256x256"})).await;
        app.run_tasks().await;
        let page = client.get("/account/delete").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text().contains(r#"name="current_password""#), "{}", page.text());
        let resp = client.post_form("/account/delete", &[("current_password", PASSWORD), ("mode", "now")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert!(resp.set_cookies().iter().any(|c| c.starts_with("atelier_session=;")), "{:?}", resp.set_cookies());
        let store = &app.state.store;
        assert!(store.user_by_id(&id).await.unwrap().is_none());
        assert_eq!(rows_mentioning(store, &id).await, vec![]);
        assert!(app.state.objects.list_prefix(&format!("{id}/")).await.unwrap().is_empty());
        assert_eq!(store.tombstone_ids().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn c26_tickets_are_listed_sealed_at_rest_and_deleted_with_the_account() {
    for backend in BACKENDS {
        let app = app(backend).await;
        let mut client = app.client();
        let id = client.signed_up("help@example.org").await;
        let empty = client.post_form("/support", &[("subject", "Hello"), ("body", "   ")]).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.text());
        assert!(empty.text().contains(r#"data-code="invalid_input""#));
        let sent = client.post_form("/support", &[("subject", "Upscaling"), ("body", "the 4K button <b>hangs</b>")]).await;
        assert_eq!((sent.status, sent.location()), (StatusCode::SEE_OTHER, "/support?notice=sent".to_string()));
        let page = client.get("/support?notice=sent").await.text();
        assert!(page.contains("Upscaling") && page.contains("the 4K button &lt;b&gt;hangs&lt;/b&gt;"), "{page}");
        assert!(page.contains("your message was received"), "{page}");
        // Listed for the export, and sealed in the table.
        let tickets = app.state.store.tickets_of_user(&id).await.unwrap();
        assert_eq!(tickets.len(), 1);
        assert!(rows_mentioning(&app.state.store, "hangs").await.is_empty(), "the body is encrypted at rest");
        // Another account sees none of it.
        let mut other = app.client();
        other.signed_up("other@example.org").await;
        assert!(!other.get("/support").await.text().contains("Upscaling"));
        // Signed out: to the sign-in page.
        assert_eq!(app.client().get("/support").await.location(), "/signin");

        privacy::purge_account(&app.state.store, app.state.objects.as_ref(), &id, None).await.unwrap();
        assert!(app.state.store.tickets_of_user(&id).await.unwrap().is_empty());
        assert!(rows_mentioning(&app.state.store, "Upscaling").await.is_empty(), "deleted with the account");
    }
}

#[tokio::test]
async fn c05_child_report_confirmed_by_an_admin_purges_without_grace() {
    for backend in BACKENDS {
        let app = app(backend).await;
        let store = app.state.store.clone();
        let mut child = app.client();
        let child_id = child.signed_up("kid@example.org").await;
        child.submit(json!({"prompt": "my drawing", "size": "256x256"})).await;
        app.run_tasks().await;
        let mut spared = app.client();
        let spared_id = spared.signed_up("adult@example.org").await;
        let mut admin = app.client();
        let admin_id = admin.signed_up("admin@example.org").await;
        store.set_role(&admin_id, "admin").await.unwrap();

        // Anyone may report, signed out, by email or by id; an unknown
        // account gets the same answer and stores nothing.
        let mut visitor = app.client();
        assert_eq!(visitor.get("/report-child").await.status, StatusCode::OK);
        for account in ["KID@example.org", spared_id.as_str(), "nobody@example.org"] {
            let resp = visitor.post_form("/report-child", &[("account", account), ("details", "says they are in 5th grade")]).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
            assert!(resp.text().contains("Report received"));
        }
        let missing = visitor.post_form("/report-child", &[("account", "kid@example.org"), ("details", "")]).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        let reports = store.child_reports(10).await.unwrap();
        assert_eq!(reports.len(), 2);

        // Only admins see the review page; to anyone else it does not exist.
        assert_eq!(visitor.get("/admin/child-reports").await.status, StatusCode::NOT_FOUND);
        assert_eq!(spared.get("/admin/child-reports").await.status, StatusCode::NOT_FOUND);
        let kid_report = reports.iter().find(|r| r.account_id == child_id).unwrap().id.clone();
        let adult_report = reports.iter().find(|r| r.account_id == spared_id).unwrap().id.clone();
        let refused = spared.post_form(&format!("/admin/child-reports/{kid_report}/confirm"), &[]).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND);
        assert!(store.user_by_id(&child_id).await.unwrap().is_some());
        let page = admin.get("/admin/child-reports").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text().contains("kid@example.org") && page.text().contains("5th grade"), "{}", page.text());

        let confirmed = admin.post_form(&format!("/admin/child-reports/{kid_report}/confirm"), &[]).await;
        assert_eq!(confirmed.location(), "/admin/child-reports?notice=confirmed", "{}", confirmed.text());
        assert!(store.user_by_id(&child_id).await.unwrap().is_none(), "purged at once, no grace");
        assert_eq!(rows_mentioning(&store, &child_id).await, vec![]);
        assert!(app.state.objects.list_prefix(&format!("{child_id}/")).await.unwrap().is_empty());
        assert_eq!(account_status(&mut child).await, StatusCode::UNAUTHORIZED);
        let trail = store.audit_entries(None, None, 50).await.unwrap().items;
        let tombstone = privacy::tombstone_id(&child_id);
        assert!(trail.iter().any(|e| e.action == "child_report_confirmed"
            && e.actor_id.as_deref() == Some(admin_id.as_str())
            && e.target_id.as_deref() == Some(tombstone.as_str())));

        let dismissed = admin.post_form(&format!("/admin/child-reports/{adult_report}/dismiss"), &[]).await;
        assert_eq!(dismissed.location(), "/admin/child-reports?notice=dismissed");
        let report = store.child_report(&adult_report).await.unwrap();
        assert_eq!((report.status.as_str(), report.reviewed_by.as_deref()), ("dismissed", Some(admin_id.as_str())));
        assert_eq!(account_status(&mut spared).await, StatusCode::OK, "a dismissed report leaves the account alone");
        let twice = admin.post_form(&format!("/admin/child-reports/{adult_report}/confirm"), &[]).await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST, "a reviewed report is not reviewed again");
        assert!(store.user_by_id(&spared_id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn c39_the_image_page_shows_the_expiry_and_saving_keeps_the_image() {
    let app = app(TestBackend::Sqlite).await;
    let mut client = app.client();
    let id = client.signed_up("keeper@example.org").await;
    client.submit(json!({"prompt": "keep me", "size": "256x256"})).await;
    app.run_tasks().await;
    let image = app.state.store.list_gallery(&id, None, 1).await.unwrap().items[0].asset.clone();
    let page = client.get(&format!("/images/{}", image.id)).await.text();
    assert!(page.contains("Unsaved images are deleted on"), "{page}");
    assert!(page.contains(r#"name="saved" value="true""#), "{page}");

    let saved = client.post_form(&format!("/images/{}/save", image.id), &[("saved", "true")]).await;
    assert_eq!(saved.location(), format!("/images/{}", image.id));
    let page = client.get(&format!("/images/{}", image.id)).await.text();
    assert!(page.contains("kept as long as your account exists") && page.contains(r#"name="saved" value="false""#), "{page}");
    let expiry = image.expires_at.unwrap();
    let report = privacy::sweep::run_sweeps(&app.state.store, app.state.objects.as_ref(), &app.state.config.privacy, expiry + 86_400_000);
    assert_eq!(report.await.unwrap().unsaved_outputs_deleted, 0);
    assert_eq!(client.get(&format!("/images/{}", image.id)).await.status, StatusCode::OK, "a saved image stays");

    // Another account cannot save it.
    let mut other = app.client();
    other.signed_up("other@example.org").await;
    assert_eq!(other.post_form(&format!("/images/{}/save", image.id), &[("saved", "false")]).await.status, StatusCode::NOT_FOUND);
}
