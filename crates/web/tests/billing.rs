//! Credits through the router: prices shown before generating, the hold
//! and capture in the history, admin adjustments in the audit trail.

mod common;

use axum::http::{Method, StatusCode};
use common::App;
use serde_json::json;
use store::testing::TestBackend;
use web::WebConfig;

async fn app(backend: TestBackend) -> App {
    let billing = billing::BillingConfig { enabled: true, signup_grant: 10, low_balance_threshold: 3, ..Default::default() };
    App::with_config(backend, WebConfig { billing, ..WebConfig::default() }).await
}

#[tokio::test]
async fn c13_prices_are_shown_and_the_history_matches_the_tasks() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = app(backend).await;
        let mut client = app.client();
        let user = client.signed_up("ledger@example.org").await;
        let page = client.get("/generate").await.text();
        assert!(page.contains(r#"data-size="1536x1024" data-credits="3""#), "{page}");

        let ok = client.submit(json!({"prompt": "harbour at dawn", "size": "1024x1024"})).await;
        assert_eq!(ok["cost"], 2);
        let canceled = client.submit(json!({"prompt": "harbour at dusk", "size": "1536x1024"})).await;
        let id = canceled["id"].as_str().unwrap();
        assert_eq!(client.api(Method::POST, &format!("/api/v1/tasks/{id}/cancel"), None, &[]).await.status, StatusCode::OK);
        app.run_tasks().await;

        let billing = client.api(Method::GET, "/api/v1/billing", None, &[]).await.json();
        assert_eq!(billing["balance"], json!({"available": 8, "held": 0, "debt": 0}));
        let ledger = client.api(Method::GET, "/api/v1/billing/ledger", None, &[]).await.json();
        let rows: Vec<(String, i64, String)> = ledger["items"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|e| {
                (e["kind"].as_str().unwrap().to_string(), e["amount"].as_i64().unwrap(), e["reference"].as_str().unwrap_or("").to_string())
            })
            .collect();
        let ok_id = ok["id"].as_str().unwrap().to_string();
        assert_eq!(
            rows,
            vec![
                ("grant".to_string(), 10, format!("signup:{user}")),
                ("hold".to_string(), -2, ok_id.clone()),
                ("hold".to_string(), -3, id.to_string()),
                ("release".to_string(), 3, id.to_string()),
                ("capture".to_string(), 0, ok_id),
            ],
            "every task's charge in the history, in order"
        );
        assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), 8, "the balance is the sum of the ledger");

        // The billing page in another language shows the same balance.
        client.api(Method::PATCH, "/api/v1/account", Some(json!({"locale": "fr"})), &[]).await;
        let page = client.get("/billing").await.text();
        assert!(page.contains("Crédits et facturation") && page.contains(r#"<dd id="balance-available">8</dd>"#), "{page}");
    }
}

#[tokio::test]
async fn c18_c40_refused_requests_are_not_charged() {
    let app = app(TestBackend::Sqlite).await;
    let mut client = app.client();
    client.signed_up("few@example.org").await;
    // 10 credits: five 1024x1024 images, not six.
    for i in 0..5 {
        client.submit(json!({"prompt": format!("tile {i}"), "size": "1024x1024"})).await;
    }
    let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "one more", "size": "1024x1024"})), &[]).await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::PAYMENT_REQUIRED, "insufficient_credits".to_string()));
    // Invalid input is refused before any hold.
    let resp = client.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "x", "size": "999x999"})), &[]).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let billing = client.api(Method::GET, "/api/v1/billing", None, &[]).await.json();
    assert_eq!(billing["balance"], json!({"available": 0, "held": 10, "debt": 0}));
    // The low-balance notice went out once, below 3 credits.
    let user = app.state.store.user_by_email("few@example.org").await.unwrap().unwrap();
    let notices = app.state.store.mail_of_user(&user.id).await.unwrap().into_iter().filter(|m| m.kind == "low_balance").count();
    assert_eq!(notices, 1);
}

#[tokio::test]
async fn c34_admin_credit_adjustments_need_a_reason_and_are_audited() {
    let app = app(TestBackend::Sqlite).await;
    let mut admin = app.client();
    let admin_id = admin.signed_up("admin@example.org").await;
    let mut member = app.client();
    let member_id = member.signed_up("member@example.org").await;
    // The member's first look at billing gives the sign-up credits (10).
    assert_eq!(member.api(Method::GET, "/api/v1/billing", None, &[]).await.json()["balance"]["available"], 10);
    // Not an admin: the page and the API do not exist.
    assert_eq!(member.get("/admin/credits").await.status, StatusCode::NOT_FOUND);
    let resp =
        member.api(Method::POST, &format!("/api/v1/admin/credits/{member_id}"), Some(json!({"amount": 100, "reason": "me"})), &[]).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);

    app.state.store.set_role(&admin_id, "admin").await.unwrap();
    let resp = admin.post_form("/admin/credits", &[("account", "member@example.org"), ("amount", "25"), ("reason", "")]).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "a reason is required");
    let resp = admin
        .post_form("/admin/credits", &[("account", "member@example.org"), ("amount", "25"), ("reason", "goodwill after an outage")])
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let resp = admin
        .api(Method::POST, &format!("/api/v1/admin/credits/{member_id}"), Some(json!({"amount": -40, "reason": "chargeback"})), &[])
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    // 10 + 25 - 40: the 5 missing become a debt the member and admins see.
    assert_eq!(resp.json()["balance"], json!({"available": 0, "held": 0, "debt": 5}));
    let debts = admin.api(Method::GET, "/api/v1/admin/credits", None, &[]).await.json();
    assert_eq!(debts["items"], json!([{"account": member_id, "debt": 5}]));
    assert!(admin.get("/admin/credits").await.text().contains("member@example.org"));
    let resp = member.api(Method::POST, "/api/v1/tasks", Some(json!({"prompt": "blocked"})), &[]).await;
    assert_eq!(resp.error_code(), "account_in_debt");

    let audit = app.state.store.audit_entries(Some(&member_id), None, 50).await.unwrap().items;
    let adjustments: Vec<_> = audit.iter().filter(|e| e.action == "credits_adjusted").collect();
    assert_eq!(adjustments.len(), 2);
    assert!(adjustments.iter().all(|e| e.actor_id.as_deref() == Some(admin_id.as_str())));
    assert!(adjustments.iter().any(|e| e.detail.as_deref() == Some("+25: goodwill after an outage")));
    assert!(adjustments.iter().any(|e| e.detail.as_deref() == Some("-40: chargeback")));
    let ledger = member.api(Method::GET, "/api/v1/billing/ledger", None, &[]).await.json();
    assert_eq!(ledger["items"][0]["kind"], "adjustment");
}
