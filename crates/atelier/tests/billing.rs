//! Credits and payments against the real binary: webhooks signed by the
//! official `stripe` Python library (and Creem's HMAC) sent over HTTP,
//! Stripe's and Creem's checkout APIs replaced by local servers speaking
//! their protocol, mail written by the outbox, and the database files
//! scanned for card numbers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{files_under, Browser, Server};
use serde_json::{json, Value};

const STRIPE_KEY: &str = "sk_test_atelier";
const STRIPE_WHSEC: &str = "whsec_atelier_test";
const CREEM_KEY: &str = "creem_test_key";
const CREEM_WHSEC: &str = "creem_whsec_test";

// ---------------------------------------------------------------- signing

fn sign(mode: &str, secret: &str, body: &str, timestamp: Option<i64>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../billing/tests/sign_webhook.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).arg(mode).arg(secret);
    if let Some(t) = timestamp {
        command.arg(t.to_string());
    }
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "signing failed (is Python's stripe library installed?): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn stripe_sig(body: &str) -> String {
    sign("stripe", STRIPE_WHSEC, body, None)
}

async fn post_webhook(base: &str, path: &str, header: (&str, &str), body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header(header.0, header.1)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn stripe_webhook(base: &str, body: &str, signature: &str) -> (u16, Value) {
    post_webhook(base, "/webhooks/stripe", ("stripe-signature", signature), body).await
}

// ---------------------------------------------------------------- providers

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, Value)>>>);

impl Recorded {
    fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
}

/// Stripe's API as far as Atelier uses it: form-encoded requests with a
/// bearer secret key, JSON answers, Stripe's error shape.
async fn fake_stripe() -> (String, Recorded) {
    async fn sessions(State(rec): State<Recorded>, headers: HeaderMap, body: String) -> axum::response::Response {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {STRIPE_KEY}")) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})),
            )
                .into_response();
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let mut rec = rec.0.lock().unwrap();
        let id = format!("cs_test_{}", rec.len() + 1);
        rec.push(("checkout".into(), serde_json::to_value(&form).unwrap()));
        Json(json!({"id": id, "object": "checkout.session", "mode": form["mode"], "url": format!("https://checkout.stripe.test/c/pay/{id}")})).into_response()
    }
    async fn portal(State(rec): State<Recorded>, body: String) -> Json<Value> {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        rec.0.lock().unwrap().push(("portal".into(), serde_json::to_value(&form).unwrap()));
        Json(json!({"id": "bps_1", "object": "billing_portal.session", "url": "https://billing.stripe.test/p/session/bps_1"}))
    }
    let rec = Recorded::default();
    let app = Router::new()
        .route("/v1/checkout/sessions", post(sessions))
        .route("/v1/billing_portal/sessions", post(portal))
        .with_state(rec.clone());
    (serve(app).await, rec)
}

/// Creem's checkout API: JSON with an `x-api-key` header.
async fn fake_creem() -> (String, Recorded) {
    async fn checkouts(State(rec): State<Recorded>, headers: HeaderMap, Json(body): Json<Value>) -> axum::response::Response {
        if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(CREEM_KEY) {
            return (StatusCode::FORBIDDEN, Json(json!({"statusCode": 403, "message": ["Forbidden"]}))).into_response();
        }
        let mut rec = rec.0.lock().unwrap();
        let id = format!("ch_test_{}", rec.len() + 1);
        rec.push(("checkout".into(), body.clone()));
        Json(json!({"id": id, "object": "checkout", "product": body["product_id"], "status": "pending", "checkout_url": format!("https://creem.test/checkout/{id}")})).into_response()
    }
    let rec = Recorded::default();
    (serve(Router::new().route("/v1/checkouts", post(checkouts)).with_state(rec.clone())).await, rec)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config_file(dir: &Path, signup_grant: i64, threshold: i64) -> std::path::PathBuf {
    let path = dir.join("atelier.toml");
    std::fs::write(
        &path,
        format!(
            r#"[billing]
enabled = true
signup_grant = {signup_grant}
low_balance_threshold = {threshold}

[[billing.packs]]
id = "starter"
name = "Starter"
credits = 100
price_minor = 500
valid_days = 365
creem_product = "prod_starter"

[[billing.packs]]
id = "studio"
name = "Studio"
credits = 500
price_minor = 2000

[[billing.plans]]
id = "pro"
name = "Pro"
monthly_credits = 300
price_minor = 1200
creem_product = "prod_pro"
"#
        ),
    )
    .unwrap();
    path
}

async fn start(root: &Path, signup_grant: i64, threshold: i64) -> (Server, Recorded, Recorded) {
    let (stripe, stripe_rec) = fake_stripe().await;
    let (creem, creem_rec) = fake_creem().await;
    let config = config_file(root, signup_grant, threshold);
    let server = Server::start(
        &root.join("data"),
        &[
            ("ATELIER_CONFIG", config.to_str().unwrap()),
            ("ATELIER_BILLING_STRIPE_SECRET_KEY", STRIPE_KEY),
            ("ATELIER_BILLING_STRIPE_WEBHOOK_SECRET", &format!("whsec_old_rotated,{STRIPE_WHSEC}")),
            ("ATELIER_BILLING_STRIPE_API_BASE", &stripe),
            ("ATELIER_BILLING_CREEM_API_KEY", CREEM_KEY),
            ("ATELIER_BILLING_CREEM_WEBHOOK_SECRET", CREEM_WHSEC),
            ("ATELIER_BILLING_CREEM_API_BASE", &creem),
        ],
    )
    .await;
    (server, stripe_rec, creem_rec)
}

async fn account_id(browser: &mut Browser) -> String {
    browser.json(reqwest::Method::GET, "/api/v1/account", None).await.1["id"].as_str().unwrap().to_string()
}

/// Signs up and, when the address must be confirmed first, follows the
/// link mailed to it (read from the written `.eml`). Returns the account id.
async fn signed_up(browser: &mut Browser, data: &Path, email: &str) -> String {
    browser.get("/signup").await;
    let resp = browser
        .post_form("/signup", &[("name", "Noor"), ("email", email), ("password", "Opal-Kestrel-Lantern-93"), ("birth_date", "1988-03-09")])
        .await;
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    if !browser.cookies.contains_key("atelier_session") {
        let deadline = Instant::now() + Duration::from_secs(20);
        let token = loop {
            let found = files_under(&data.join("mail")).into_iter().filter(|f| f.extension().is_some_and(|e| e == "eml")).find_map(|f| {
                // Undo quoted-printable soft breaks and escapes.
                let text = std::fs::read_to_string(f).unwrap().replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
                if !text.contains(email) {
                    return None;
                }
                let at = text.find("/verify-email?token=")? + "/verify-email?token=".len();
                Some(text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect::<String>())
            });
            if let Some(token) = found {
                break token;
            }
            assert!(Instant::now() < deadline, "no verification mail for {email}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        browser.get(&format!("/verify-email?token={token}")).await;
        let resp = browser.post_form("/verify-email", &[("token", &token)]).await;
        assert!(browser.cookies.contains_key("atelier_session"), "verified: {}", resp.status());
    }
    account_id(browser).await
}

async fn balance(browser: &mut Browser) -> (i64, i64, i64) {
    let (code, b) = browser.json(reqwest::Method::GET, "/api/v1/billing", None).await;
    assert_eq!(code, 200, "{b}");
    (b["balance"]["available"].as_i64().unwrap(), b["balance"]["held"].as_i64().unwrap(), b["balance"]["debt"].as_i64().unwrap())
}

/// Written mail (the outbox sender runs every second): subjects of `.eml` files.
async fn mails_with_subject(data: &Path, subject: &str, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<String> = files_under(&data.join("mail"))
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "eml"))
            .map(|f| std::fs::read_to_string(f).unwrap())
            .filter(|m| m.contains(&format!("Subject: {subject}")))
            .collect();
        if found.len() >= expected || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn checkout_completed(event_id: &str, session: &str, user: &str, product: &str, extra: Value) -> String {
    let mut object = json!({
        "id": session, "object": "checkout.session", "mode": if product.starts_with("plan:") { "subscription" } else { "payment" },
        "payment_status": "paid", "status": "complete", "client_reference_id": user,
        "metadata": {"user_id": user, "product": product}, "amount_total": 500, "currency": "usd",
        "payment_intent": format!("pi_{session}"), "customer": "cus_test_1",
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    json!({"id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": store::now_ms() / 1000, "type": "checkout.session.completed", "livemode": false, "data": {"object": object}}).to_string()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_c17_stripe_checkout_and_webhooks_signed_by_the_stripe_library_grant_once_with_receipts() {
    let root = tempfile::tempdir().unwrap();
    let (server, stripe, _) = start(root.path(), 20, 5).await;
    let mut browser = Browser::new(&server);
    let user = signed_up(&mut browser, &root.path().join("data"), "buyer@example.org").await;
    assert_eq!(balance(&mut browser).await, (20, 0, 0), "the sign-up grant");

    // Buy: a hosted Checkout Session through Stripe's API.
    let resp = browser.post_form("/billing/checkout", &[("product", "pack:starter"), ("provider", "stripe")]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "https://checkout.stripe.test/c/pay/cs_test_1");
    let (_, form) = stripe.all()[0].clone();
    assert_eq!(form["mode"], "payment");
    assert_eq!(form["client_reference_id"], user.as_str());
    assert_eq!(form["metadata[user_id]"], user.as_str());
    assert_eq!(form["metadata[product]"], "pack:starter");
    assert_eq!(form["line_items[0][price_data][unit_amount]"], "500");
    assert!(!form.to_string().contains("buyer@example.org"), "no email leaves for Stripe: {form}");

    // Forged, stale and altered deliveries: 400, nothing granted.
    let body = checkout_completed("evt_pack_1", "cs_test_1", &user, "pack:starter", json!({}));
    let forged = sign("stripe", "whsec_someone_else", &body, None);
    let stale = sign("stripe", STRIPE_WHSEC, &body, Some(store::now_ms() / 1000 - 301));
    let good = stripe_sig(&body);
    let altered = body.replace("\"amount_total\":500", "\"amount_total\":5");
    for (b, sig) in [(&body, forged.as_str()), (&body, stale.as_str()), (&altered, good.as_str()), (&body, "t=1,v1=00")] {
        let (code, err) = stripe_webhook(&server.url, b, sig).await;
        assert_eq!(code, 400, "{err}");
        assert_eq!(err["error"]["code"], "invalid_signature");
    }
    assert_eq!(post_webhook(&server.url, "/webhooks/stripe", ("x-nothing", "1"), &body).await.0, 400, "no signature");
    assert_eq!(balance(&mut browser).await.0, 20);

    // The same event 50 times: one grant.
    let mut outcomes = HashMap::new();
    for _ in 0..50 {
        let (code, ack) = stripe_webhook(&server.url, &body, &good).await;
        assert_eq!(code, 200, "{ack}");
        *outcomes.entry(ack["outcome"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(outcomes.get("granted"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("duplicate"), Some(&49));
    // The same purchase reported by another event type: no second grant.
    let async_body = checkout_completed("evt_pack_2", "cs_test_1", &user, "pack:starter", json!({}))
        .replace("checkout.session.completed", "checkout.session.async_payment_succeeded");
    let (code, ack) = stripe_webhook(&server.url, &async_body, &stripe_sig(&async_body)).await;
    assert_eq!((code, ack["outcome"].as_str()), (200, Some("already_granted")));
    assert_eq!(balance(&mut browser).await.0, 120);

    // An unpaid checkout grants nothing until its async payment succeeds.
    let unpaid =
        checkout_completed("evt_unpaid", "cs_test_9", &user, "pack:studio", json!({"payment_status": "unpaid", "amount_total": 2000}));
    assert_eq!(stripe_webhook(&server.url, &unpaid, &stripe_sig(&unpaid)).await.1["outcome"], "recorded");
    assert_eq!(balance(&mut browser).await.0, 120);

    // A subscription: checkout and its first invoice report one grant; a renewal grants again.
    let period_end = store::now_ms() / 1000 + 30 * 86_400;
    let sub_checkout = checkout_completed(
        "evt_sub_1",
        "cs_test_2",
        &user,
        "plan:pro",
        json!({"invoice": "in_first", "subscription": "sub_1", "amount_total": 1200}),
    );
    let invoice = |event: &str, id: &str| {
        json!({"id": event, "object": "event", "type": "invoice.paid", "created": store::now_ms() / 1000, "data": {"object": {
            "id": id, "object": "invoice", "status": "paid", "amount_paid": 1200, "currency": "usd", "customer": "cus_test_1",
            "billing_reason": "subscription_cycle",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1", "metadata": {"user_id": user, "product": "plan:pro"}}},
            "lines": {"object": "list", "data": [{"id": "il_1", "period": {"start": store::now_ms() / 1000, "end": period_end}}]}
        }}})
        .to_string()
    };
    for b in [sub_checkout.clone(), invoice("evt_inv_1", "in_first"), sub_checkout.clone()] {
        assert_eq!(stripe_webhook(&server.url, &b, &stripe_sig(&b)).await.0, 200);
    }
    assert_eq!(balance(&mut browser).await.0, 420, "one grant for the first period");
    let renewal = invoice("evt_inv_2", "in_second");
    assert_eq!(stripe_webhook(&server.url, &renewal, &stripe_sig(&renewal)).await.1["outcome"], "granted");
    assert_eq!(balance(&mut browser).await.0, 720);
    let page = browser.get("/billing").await.text().await.unwrap();
    assert!(page.contains(r#"data-status="active""#), "subscription state shown");
    // The customer portal link for the subscription.
    let resp = browser.post_form("/billing/portal", &[]).await;
    assert_eq!(resp.headers()["location"], "https://billing.stripe.test/p/session/bps_1");
    assert_eq!(stripe.all().last().unwrap().1["customer"], "cus_test_1");
    let canceled = json!({"id": "evt_sub_del", "type": "customer.subscription.deleted", "created": store::now_ms() / 1000 + 5, "data": {"object": {"id": "sub_1", "object": "subscription", "status": "canceled", "customer": "cus_test_1", "metadata": {"user_id": user, "product": "plan:pro"}}}}).to_string();
    assert_eq!(stripe_webhook(&server.url, &canceled, &stripe_sig(&canceled)).await.0, 200);
    let page = browser.get("/billing").await.text().await.unwrap();
    assert!(page.contains(r#"data-status="canceled""#), "{page}");

    // Ledger history and balance agree (C13); receipts were mailed (C17).
    let (_, ledger) = browser.json(reqwest::Method::GET, "/api/v1/billing/ledger?limit=100", None).await;
    let sum: i64 = ledger["items"].as_array().unwrap().iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 720);
    let receipts = mails_with_subject(&root.path().join("data"), "Your Atelier receipt", 3).await;
    assert_eq!(receipts.len(), 3, "pack, first period, renewal: one receipt each");
    assert!(receipts.iter().any(|m| m.contains("Starter") && m.contains("5.00 USD")), "{receipts:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_a_card_number_in_a_webhook_is_processed_and_never_persisted() {
    let root = tempfile::tempdir().unwrap();
    let (server, _, _) = start(root.path(), 0, 0).await;
    let mut browser = Browser::new(&server);
    let user = signed_up(&mut browser, &root.path().join("data"), "card@example.org").await;
    let card = "4242424242424242";
    let body = checkout_completed(
        "evt_card_1",
        "cs_card",
        &user,
        "pack:starter",
        json!({
            "customer_details": {"name": format!("Card {card}"), "email": "card@example.org"},
            "payment_method_details": {"card": {"number": card, "exp_month": 12, "cvc": "123"}},
            "custom_fields": [{"key": "note", "text": {"value": "4242 4242 4242 4242"}}],
            "metadata": {"user_id": user, "product": "pack:starter", "note": card},
        }),
    );
    let (code, ack) = stripe_webhook(&server.url, &body, &stripe_sig(&body)).await;
    assert_eq!((code, ack["outcome"].as_str()), (200, Some("granted")), "{ack}");
    assert_eq!(balance(&mut browser).await.0, 100);
    let creem = json!({"id": "evt_creem_card", "eventType": "checkout.completed", "created_at": store::now_ms(), "object": {
        "id": "ch_card", "object": "checkout", "order": {"id": "ord_card", "amount": 500, "currency": "USD", "status": "paid"},
        "product": {"id": "prod_starter"}, "customer": {"id": "cust_1", "email": "card@example.org", "name": card},
        "metadata": {"user_id": user, "product": "pack:starter", "card": "4242-4242-4242-4242"}}})
    .to_string();
    let (code, _) =
        post_webhook(&server.url, "/webhooks/creem", ("creem-signature", &sign("creem", CREEM_WHSEC, &creem, None)), &creem).await;
    assert_eq!(code, 200);
    assert_eq!(balance(&mut browser).await.0, 200);
    mails_with_subject(&root.path().join("data"), "Your Atelier receipt", 2).await;
    server.stop().await;
    // No file of the data dir (database, WAL, mail) holds the digits.
    let data = root.path().join("data");
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [card, "4242 4242 4242 4242", "4242-4242-4242-4242"] {
            assert!(!common::contains(&bytes, needle.as_bytes()), "{needle} persisted in {}", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c16_c17_refund_after_partial_spend_leaves_a_debt_that_blocks_tasks_and_low_balance_notice_once() {
    let root = tempfile::tempdir().unwrap();
    let (server, _, _) = start(root.path(), 0, 95).await;
    let mut browser = Browser::new(&server);
    let user = signed_up(&mut browser, &root.path().join("data"), "spender@example.org").await;

    // Without credits: a clear error, nothing queued.
    let (code, err) = browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "a kite", "size": "256x256"}))).await;
    assert_eq!((code, err["error"]["code"].as_str()), (402, Some("insufficient_credits")), "{err}");
    let generate = browser.get("/generate").await.text().await.unwrap();
    assert!(generate.contains(r#"data-size="1024x1024" data-credits="2""#), "prices on the generate page: {generate}");

    let buy = checkout_completed("evt_buy", "cs_buy", &user, "pack:starter", json!({}));
    assert_eq!(stripe_webhook(&server.url, &buy, &stripe_sig(&buy)).await.1["outcome"], "granted");
    // Spend 6 of the 100: three 1024x1024 images at 2 credits.
    let mut ids = Vec::new();
    for i in 0..3 {
        let (code, task) = browser
            .json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": format!("lantern {i}"), "size": "1024x1024"})))
            .await;
        assert_eq!(code, 202, "{task}");
        assert_eq!(task["cost"], 2);
        ids.push(task["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        browser.wait_for(id, "succeeded").await;
    }
    assert_eq!(balance(&mut browser).await, (94, 0, 0));
    // Crossing 95 queued exactly one notice, not one per task.
    assert_eq!(mails_with_subject(&root.path().join("data"), "Your Atelier credits are running low", 1).await.len(), 1);

    // Refund: the 94 unused credits go, the 6 spent become a debt.
    let refund = json!({"id": "evt_refund", "type": "charge.refunded", "created": store::now_ms() / 1000, "data": {"object": {
        "id": "ch_1", "object": "charge", "payment_intent": "pi_cs_buy", "amount": 500, "amount_refunded": 500, "refunded": true, "currency": "usd"}}}).to_string();
    assert_eq!(stripe_webhook(&server.url, &refund, &stripe_sig(&refund)).await.1["outcome"], "taken_back");
    assert_eq!(balance(&mut browser).await, (0, 0, 6));
    let (code, err) = browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "after refund"}))).await;
    assert_eq!((code, err["error"]["code"].as_str()), (402, Some("account_in_debt")));
    let page = browser.get("/billing").await.text().await.unwrap();
    assert!(page.contains(r#"data-code="account_in_debt""#) && page.contains("owing 6 credits"), "the owner sees the debt");
    let resp = browser.post_form("/generate", &[("prompt", "after refund"), ("size", "256x256")]).await;
    assert_eq!(resp.status(), 402);
    assert!(resp.text().await.unwrap().contains("New images are paused"));

    // A new purchase settles the debt first.
    let buy2 = checkout_completed("evt_buy2", "cs_buy2", &user, "pack:studio", json!({"amount_total": 2000}));
    stripe_webhook(&server.url, &buy2, &stripe_sig(&buy2)).await;
    assert_eq!(balance(&mut browser).await, (494, 0, 0));
    let (code, _) = browser.json(reqwest::Method::POST, "/api/v1/tasks", Some(json!({"prompt": "settled", "size": "256x256"}))).await;
    assert_eq!(code, 202);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_creem_checkout_and_verified_webhooks_grant_once() {
    let root = tempfile::tempdir().unwrap();
    let (server, _, creem) = start(root.path(), 0, 0).await;
    let mut browser = Browser::new(&server);
    let user = signed_up(&mut browser, &root.path().join("data"), "creem@example.org").await;

    let resp = browser.post_form("/billing/checkout", &[("product", "pack:starter"), ("provider", "creem")]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "https://creem.test/checkout/ch_test_1");
    let (_, sent) = creem.all()[0].clone();
    assert_eq!(sent["product_id"], "prod_starter");
    assert_eq!(sent["metadata"]["user_id"], user.as_str());
    assert!(sent["success_url"].as_str().unwrap().ends_with("/billing?checkout=success"));
    // Studio has no Creem product: not offered there.
    let resp = browser.post_form("/billing/checkout", &[("product", "pack:studio"), ("provider", "creem")]).await;
    assert_eq!(resp.status(), 400);

    let creem_hook = |body: &str, sig: &str| {
        let (base, body, sig) = (server.url.clone(), body.to_string(), sig.to_string());
        async move { post_webhook(&base, "/webhooks/creem", ("creem-signature", &sig), &body).await }
    };
    let completed = json!({"id": "evt_c1", "eventType": "checkout.completed", "created_at": store::now_ms(), "object": {
        "id": "ch_test_1", "object": "checkout", "request_id": "r1",
        "order": {"id": "ord_1", "customer": "cust_1", "product": "prod_starter", "amount": 500, "currency": "USD", "status": "paid", "type": "onetime"},
        "product": {"id": "prod_starter", "price": 500, "currency": "USD", "billing_type": "onetime"},
        "customer": {"id": "cust_1"}, "status": "completed", "metadata": {"user_id": user, "product": "pack:starter"}}}).to_string();
    let sig = sign("creem", CREEM_WHSEC, &completed, None);
    let (code, err) = creem_hook(&completed, &sign("creem", "forged", &completed, None)).await;
    assert_eq!((code, err["error"]["code"].as_str()), (400, Some("invalid_signature")));
    let (code, _) = creem_hook(&completed.replace("\"amount\":500", "\"amount\":1"), &sig).await;
    assert_eq!(code, 400, "altered body");
    for i in 0..20 {
        let (code, ack) = creem_hook(&completed, &sig).await;
        assert_eq!(code, 200);
        assert_eq!(ack["outcome"], if i == 0 { "granted" } else { "duplicate" });
    }
    assert_eq!(balance(&mut browser).await.0, 100);

    // A plan: the checkout ties the subscription; each paid period grants once.
    let plan_checkout = json!({"id": "evt_c2", "eventType": "checkout.completed", "created_at": store::now_ms(), "object": {
        "id": "ch_test_2", "order": {"id": "ord_2", "amount": 1200, "currency": "USD", "status": "paid", "type": "recurring"},
        "product": {"id": "prod_pro"}, "subscription": {"id": "sub_c1", "status": "active", "metadata": {"user_id": user, "product": "plan:pro"}},
        "customer": {"id": "cust_1"}, "metadata": {"user_id": user, "product": "plan:pro"}}}).to_string();
    assert_eq!(creem_hook(&plan_checkout, &sign("creem", CREEM_WHSEC, &plan_checkout, None)).await.0, 200);
    let paid = |event: &str, txn: &str| {
        json!({"id": event, "eventType": "subscription.paid", "created_at": store::now_ms(), "object": {
            "id": "sub_c1", "object": "subscription", "product": {"id": "prod_pro", "price": 1200, "currency": "USD"}, "customer": {"id": "cust_1"},
            "status": "active", "last_transaction_id": txn, "current_period_start_date": "2026-01-01T00:00:00.000Z",
            "current_period_end_date": "2099-02-01T00:00:00.000Z"}})
        .to_string()
    };
    for (event, txn) in [("evt_p1", "tran_1"), ("evt_p1b", "tran_1"), ("evt_p2", "tran_2")] {
        let b = paid(event, txn);
        assert_eq!(creem_hook(&b, &sign("creem", CREEM_WHSEC, &b, None)).await.0, 200);
    }
    assert_eq!(balance(&mut browser).await.0, 700, "two periods, even without metadata on the subscription events");
    // A refund of the pack takes its credits back.
    let refund = json!({"id": "evt_r1", "eventType": "refund.created", "created_at": store::now_ms(), "object": {
        "id": "ref_1", "object": "refund", "status": "succeeded", "refund_amount": 500, "refund_currency": "USD",
        "order": {"id": "ord_1"}, "checkout": {"id": "ch_test_1"}}})
    .to_string();
    assert_eq!(creem_hook(&refund, &sign("creem", CREEM_WHSEC, &refund, None)).await.1["outcome"], "taken_back");
    assert_eq!(balance(&mut browser).await.0, 600);
    let canceled = json!({"id": "evt_x", "eventType": "subscription.canceled", "created_at": store::now_ms() + 1000, "object": {"id": "sub_c1", "status": "canceled"}}).to_string();
    assert_eq!(creem_hook(&canceled, &sign("creem", CREEM_WHSEC, &canceled, None)).await.0, 200);
    assert!(browser.get("/billing").await.text().await.unwrap().contains(r#"data-status="canceled""#));
    server.stop().await;
}
