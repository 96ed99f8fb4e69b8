//! Consent, GPC, first-party analytics, request logs, restriction, marketing
//! mail and the policy, through the router like a browser (issue 9: C19–C23,
//! C25, C37, C42, C43). Time-dependent cases move a manual clock.

mod common;

use axum::http::{Method, StatusCode};
use common::{form_encode, App, Client};
use store::testing::TestBackend;
use web::{Clock, WebConfig};

const DAY: i64 = 86_400_000;
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";

fn visitor_id(client: &Client) -> String {
    client.cookies["atelier_consent"].split('.').next().unwrap().to_string()
}

async fn choose(client: &mut Client, choice: &str, source: &str) -> common::Resp {
    client.post_form("/consent", &[("choice", choice), ("source", source), ("back", "/signin")]).await
}

async fn raw_events(app: &App) -> i64 {
    app.state.store.analytics_raw_count().await.unwrap()
}

#[tokio::test]
async fn c19_c21_only_essential_cookies_until_the_visitor_chooses_and_each_choice_is_proven() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut client = app.client();
    let first = client.get("/").await;
    assert_eq!(first.status, StatusCode::OK);
    let names: Vec<String> = first.set_cookies().iter().map(|c| c.split('=').next().unwrap().to_string()).collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| ["atelier_csrf", "atelier_session", "atelier_consent"].contains(&n.as_str())),
        "{names:?}"
    );
    let page = first.text();
    assert!(page.contains(r#"class="consent-banner""#), "the banner asks first");
    // "Reject all" is the same element, with the same style, as "Accept all".
    assert!(page.contains(r#"<button class="consent-choice" name="choice" value="none">Reject all</button>"#), "{page}");
    assert!(page.contains(r#"<button class="consent-choice" name="choice" value="all">Accept all</button>"#));
    assert!(page.contains(r#"<a href="/consent">Cookie settings</a>"#), "the choice can be reopened from the footer");
    assert!(!page.contains("<script>") && !page.contains("googletagmanager"), "no inline script, no tracker");
    assert_eq!(raw_events(&app).await, 0);

    let accepted = choose(&mut client, "all", "banner").await;
    assert_eq!((accepted.status, accepted.location()), (StatusCode::SEE_OTHER, "/signin".to_string()));
    assert!(client.cookies.contains_key("atelier_aid"), "the analytics cookie only after consent");
    let proofs = app.state.store.consents_of_visitor(&visitor_id(&client)).await.unwrap();
    assert_eq!(proofs.len(), 1);
    let proof = &proofs[0];
    assert!(proof.analytics && proof.preferences && proof.marketing);
    assert_eq!((proof.source.as_str(), proof.policy_version.as_str(), proof.user_id.as_deref()), ("banner", "1", None));

    let before = raw_events(&app).await;
    let page = client.get("/signin").await.text();
    assert_eq!(raw_events(&app).await, before + 1, "a page view is counted with consent");
    assert!(!page.contains("consent-banner"), "no banner once chosen");

    // Withdrawing is as easy: one button on the settings page.
    let settings = client.get("/consent").await.text();
    assert!(settings.contains(r#"name="analytics" checked"#), "{settings}");
    let withdrawn = choose(&mut client, "none", "settings").await;
    assert_eq!(withdrawn.status, StatusCode::OK);
    assert!(!client.cookies.contains_key("atelier_aid"), "the analytics id goes with the consent");
    let after = raw_events(&app).await;
    client.get("/signin").await;
    client.get("/consent").await;
    assert_eq!(raw_events(&app).await, after, "nothing counted after withdrawal");
    let proofs = app.state.store.consents_of_visitor(&visitor_id(&client)).await.unwrap();
    assert_eq!(proofs.len(), 2, "both choices are kept as proof");
    assert!(!proofs[1].analytics && proofs[1].source == "settings");

    let bad = client.post_form("/consent", &[("choice", "maybe")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn c20_gpc_is_an_opt_out_that_a_later_visit_without_it_does_not_undo() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut client = app.client();
    let gpc = [("sec-gpc", "1")];
    let first = client.send(Method::GET, "/signin", None, Vec::new(), &gpc).await;
    let page = first.text();
    assert!(page.contains("opt-out signal honoured"), "{page}");
    assert!(!page.contains("consent-banner"), "the signal is the choice for analytics and marketing");
    let proofs = app.state.store.consents_of_visitor(&visitor_id(&client)).await.unwrap();
    assert_eq!(proofs.len(), 1);
    assert_eq!((proofs[0].source.as_str(), proofs[0].analytics, proofs[0].marketing), ("gpc", false, false));

    // Even an "Accept all" sent with the signal stores no analytics.
    let csrf = client.csrf();
    let body = form_encode(&[("choice", "all"), ("source", "settings"), ("_csrf", &csrf)]).into_bytes();
    client.send(Method::POST, "/consent", Some("application/x-www-form-urlencoded"), body, &gpc).await;
    client.send(Method::GET, "/signin", None, Vec::new(), &gpc).await;
    assert!(!client.cookies.contains_key("atelier_aid"));
    assert_eq!(raw_events(&app).await, 0);

    // Later, without the header: still opted out, still told so, no new record.
    let later = client.get("/signin").await.text();
    assert!(later.contains("opt-out signal honoured"));
    client.get("/consent").await;
    assert_eq!(raw_events(&app).await, 0, "absence of the signal is not consent");
    assert_eq!(app.state.store.consents_of_visitor(&visitor_id(&client)).await.unwrap().len(), 2);

    let well_known = client.get("/.well-known/gpc.json").await;
    assert_eq!(well_known.status, StatusCode::OK);
    assert_eq!(well_known.json()["gpc"], true);
}

fn clocked(start: i64) -> (WebConfig, Clock) {
    let clock = Clock::manual(start);
    (WebConfig { clock: clock.clone(), ..WebConfig::default() }, clock)
}

async fn sweep(app: &App, clock: &Clock) -> privacy::sweep::SweepReport {
    privacy::sweep::run_sweeps(&app.state.store, &app.objects, &app.state.config.privacy, clock.now_ms()).await.unwrap()
}

#[tokio::test]
async fn c22_raw_events_fold_into_daily_aggregates_after_the_window() {
    let start = 20_000 * DAY + 3_600_000;
    let (config, clock) = clocked(start);
    let app = App::with_config(TestBackend::Sqlite, config).await;
    let mut client = app.client();
    client.get("/").await;
    choose(&mut client, "all", "banner").await;
    client.get("/signin").await;
    client.get("/signin").await;
    let raw = raw_events(&app).await;
    assert!(raw >= 3, "{raw}");

    clock.advance_ms(29 * DAY);
    assert_eq!(sweep(&app, &clock).await.analytics_events_folded, 0, "29 days old: still raw");
    assert_eq!(raw_events(&app).await, raw);

    clock.advance_ms(2 * DAY);
    let report = sweep(&app, &clock).await;
    assert_eq!(report.analytics_events_folded as i64, raw);
    assert_eq!(raw_events(&app).await, 0, "raw events are gone");
    let daily = app.state.store.analytics_daily(0).await.unwrap();
    let signin = daily.iter().find(|d| d.kind == "page" && d.name == "/signin").expect("aggregate for /signin");
    assert_eq!((signin.day, signin.events, signin.visitors), (20_000, 2, 1), "two views, one pseudonymous visitor");
}

#[tokio::test]
async fn c23_request_logs_keep_truncated_addresses_and_are_swept() {
    let (config, clock) = clocked(20_000 * DAY);
    let app = App::with_config(TestBackend::Sqlite, config).await;
    let mut v4 = app.client();
    v4.peer = Some("203.0.113.77:5555".parse().unwrap());
    v4.send(Method::GET, "/signin", None, Vec::new(), &[("user-agent", FIREFOX)]).await;
    let mut v6 = app.client();
    v6.peer = Some("[2001:db8:abcd:12::1]:443".parse().unwrap());
    v6.get("/legal/privacy").await;

    let logs = app.state.store.request_logs(10).await.unwrap();
    let signin = logs.iter().find(|l| l.route == "/signin").unwrap();
    assert_eq!((signin.ip_prefix.as_deref(), signin.browser.as_str(), signin.status), (Some("203.0.113.0/24"), "firefox", 200));
    let policy = logs.iter().find(|l| l.route == "/legal/privacy").unwrap();
    assert_eq!(policy.ip_prefix.as_deref(), Some("2001:db8:abcd::/48"));
    assert!(logs.iter().all(|l| !format!("{l:?}").contains("203.0.113.77") && !format!("{l:?}").contains("12::1")));

    clock.advance_ms(31 * DAY);
    let report = sweep(&app, &clock).await;
    assert_eq!(report.request_logs_deleted, 2);
    assert!(app.state.store.request_logs(10).await.unwrap().is_empty());
}

async fn admin(app: &App) -> Client {
    let mut client = app.client();
    let id = client.signed_up("admin@example.org").await;
    app.state.store.set_role(&id, "admin").await.unwrap();
    client
}

async fn send_news(admin: &mut Client) {
    let resp = admin.post_form("/admin/marketing", &[("subject", "New styles"), ("body", "Try the new styles.")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

async fn marketing_to(app: &App, user_id: &str) -> Vec<store::Mail> {
    app.state.store.mail_of_user(user_id).await.unwrap().into_iter().filter(|m| m.kind == "marketing").collect()
}

#[tokio::test]
async fn c37_a_restricted_account_stores_no_analytics_and_gets_no_marketing() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut admin = admin(&app).await;
    let mut client = app.client();
    let id = client.signed_up("restricted@example.org").await;
    choose(&mut client, "all", "banner").await;
    client.post_form("/account/privacy/marketing", &[("opt_in", "1")]).await;
    let before = raw_events(&app).await;
    client.get("/gallery").await;
    assert_eq!(raw_events(&app).await, before + 1, "counted while not restricted");

    let resp = client.post_form("/account/privacy/restriction", &[("restricted", "1")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("Processing is restricted."));
    let audit = app.state.store.audit_entries(Some(&id), None, 50).await.unwrap();
    assert!(audit.items.iter().any(|e| e.action == "processing_restricted"), "the restriction is audited");

    let before = raw_events(&app).await;
    assert_eq!(client.get("/gallery").await.status, StatusCode::OK, "the account still works");
    assert_eq!(client.api(Method::GET, "/api/v1/account", None, &[]).await.status, StatusCode::OK);
    assert_eq!(raw_events(&app).await, before, "no analytics for a restricted account");
    send_news(&mut admin).await;
    assert!(marketing_to(&app, &id).await.is_empty(), "no marketing for a restricted account");

    client.post_form("/account/privacy/restriction", &[("restricted", "0")]).await;
    send_news(&mut admin).await;
    assert_eq!(marketing_to(&app, &id).await.len(), 1, "lifting the restriction restores the opt-in");
}

#[tokio::test]
async fn c25_marketing_reaches_only_opted_in_accounts_and_unsubscribes_in_one_click_without_sign_in() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut admin = admin(&app).await;
    let mut never = app.client();
    let never_id = never.signed_up("never@example.org").await;
    let mut fan = app.client();
    let fan_id = fan.signed_up("fan@example.org").await;
    assert!(fan.get("/account/privacy/settings").await.text().contains("You do not receive news by email."), "off by default");
    fan.post_form("/account/privacy/marketing", &[("opt_in", "1")]).await;

    send_news(&mut admin).await;
    assert!(marketing_to(&app, &never_id).await.is_empty(), "never opted in, never mailed");
    assert!(!app.state.store.mail_of_user(&never_id).await.unwrap().is_empty(), "service notices still go out");
    let mails = marketing_to(&app, &fan_id).await;
    assert_eq!(mails.len(), 1);
    let url = mails[0].unsubscribe_url.clone().expect("one-click unsubscribe link");
    assert!(mails[0].body_text.contains(&url), "the link is in the body too");
    let path = url.trim_start_matches("http://localhost:8080").to_string();

    // A stranger's browser: no session, no CSRF cookie.
    let mut anyone = app.client();
    let confirm = anyone.get(&path).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.text().contains("Unsubscribe"));
    assert!(app.state.store.account_privacy(&fan_id).await.unwrap().marketing_opt_in, "a GET changes nothing");
    let tampered =
        anyone.send(Method::POST, &path.replace("&s=", "&s=0"), Some("application/x-www-form-urlencoded"), Vec::new(), &[]).await;
    assert_eq!(tampered.status, StatusCode::BAD_REQUEST);
    assert!(app.state.store.account_privacy(&fan_id).await.unwrap().marketing_opt_in);

    let mut mail_client = app.client();
    let one_click =
        mail_client.send(Method::POST, &path, Some("application/x-www-form-urlencoded"), b"List-Unsubscribe=One-Click".to_vec(), &[]).await;
    assert_eq!(one_click.status, StatusCode::OK, "{}", one_click.text());
    assert!(!app.state.store.account_privacy(&fan_id).await.unwrap().marketing_opt_in, "the link flipped the preference");
    send_news(&mut admin).await;
    assert_eq!(marketing_to(&app, &fan_id).await.len(), 1, "nothing more after unsubscribing");
}

#[tokio::test]
async fn c42_the_policy_states_the_running_configuration() {
    let mut config = WebConfig::default();
    config.privacy.analytics_raw_days = 30;
    config.privacy.operator_name = "Studio Lumen SARL".into();
    let app = App::with_config(TestBackend::Sqlite, config.clone()).await;
    let page = app.client().get("/legal/privacy").await.text();
    assert!(page.contains("Studio Lumen SARL"));
    assert!(page.contains("Raw analytics events (only with your consent): 30 days"), "{page}");
    assert!(page.contains("Version 1, in effect since"));
    assert!(!page.contains("Stripe") && !page.contains("Email delivery"), "no processor that is not configured");

    config.privacy.analytics_raw_days = 12;
    config.privacy.request_log_days = 9;
    config.smtp_host = "smtp.mail.example".into();
    let changed = App::with_config(TestBackend::Sqlite, config).await;
    let page = changed.client().get("/legal/privacy").await.text();
    assert!(page.contains("Raw analytics events (only with your consent): 12 days"), "{page}");
    assert!(page.contains("Request logs, with the end of your IP address removed: 9 days."));
    assert!(page.contains("smtp.mail.example"));
    let cookies = changed.client().get("/legal/cookies").await;
    assert_eq!(cookies.status, StatusCode::OK);
    assert!(cookies.text().contains("atelier_aid"));
}

#[tokio::test]
async fn c43_a_material_version_mails_every_active_account_and_asks_until_accepted() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut admin = admin(&app).await;
    let mut ana = app.client();
    let ana_id = ana.signed_up("ana@example.org").await;
    let mut bo = app.client();
    let bo_id = bo.signed_up("bo@example.org").await;
    assert!(!ana.get("/gallery").await.text().contains("policy-banner"));

    let refused = ana.post_form("/admin/policy", &[("version", "2"), ("material", "on")]).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "admins only");
    let published = admin.post_form("/admin/policy", &[("version", "2"), ("summary", "Longer log retention."), ("material", "on")]).await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    assert!(published.text().contains("3 notices queued"), "{}", published.text());
    for id in [&ana_id, &bo_id] {
        let notices: Vec<_> = app.state.store.mail_of_user(id).await.unwrap().into_iter().filter(|m| m.kind == "policy_changed").collect();
        assert_eq!(notices.len(), 1, "one notice per active account");
        assert!(notices[0].body_text.contains("Longer log retention."));
    }
    let again = admin.post_form("/admin/policy", &[("version", "2"), ("material", "on")]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "a version is published once");

    let page = ana.get("/gallery").await.text();
    assert!(page.contains("policy-banner") && page.contains("version 2"), "{page}");
    assert!(ana.get("/generate").await.text().contains("policy-banner"), "the banner stays until accepted");
    let accepted = ana.post_form("/legal/accept", &[("version", "2"), ("back", "/gallery")]).await;
    assert_eq!((accepted.status, accepted.location()), (StatusCode::SEE_OTHER, "/gallery".to_string()));
    assert!(!ana.get("/gallery").await.text().contains("policy-banner"));
    assert!(bo.get("/gallery").await.text().contains("policy-banner"), "each account accepts for itself");
    let acceptances = app.state.store.policy_acceptances_of_user(&ana_id).await.unwrap();
    assert_eq!(acceptances.iter().map(|a| a.version.as_str()).collect::<Vec<_>>(), vec!["2"]);
    assert!(ana.get("/legal/privacy").await.text().contains("Version 2"));

    let minor = admin.post_form("/admin/policy", &[("version", "2.1"), ("summary", "Typo.")]).await;
    assert!(minor.text().contains("0 notices queued"));
    assert!(!ana.get("/gallery").await.text().contains("policy-banner"), "a minor version asks nothing");
    let audit = app.state.store.audit_entries(None, None, 50).await.unwrap();
    assert_eq!(audit.items.iter().filter(|e| e.action == "policy_published").count(), 2);
}
