//! Accounts beyond the first sign-in (issue 8): email verification, password
//! reset, sessions, password change, TOTP, throttling, email change, avatar
//! and the audit trail, end to end through the router on a real database.

mod common;

use std::net::SocketAddr;

use axum::http::{Method, StatusCode};
use common::{link_in, mail_to, token_of, wait_for_mail, App, Client, Resp};
use store::testing::TestBackend;
use web::auth::totp;
use web::{Clock, WebConfig};

const SQLITE: TestBackend = TestBackend::Sqlite;
const PW: &str = "a long enough passphrase";

/// An app whose sign-in clock the test moves.
async fn app_with_clock(backend: TestBackend) -> (App, Clock) {
    let clock = Clock::manual(store::now_ms());
    let app = App::with_config(backend, WebConfig { clock: clock.clone(), ..WebConfig::default() }).await;
    (app, clock)
}

async fn sign_in(client: &mut Client, email: &str, password: &str) -> Resp {
    client.post_form("/signin", &[("email", email), ("password", password)]).await
}

async fn account_status(client: &mut Client) -> StatusCode {
    client.api(Method::GET, "/api/v1/account", None, &[]).await.status
}

fn attr_after(html: &str, marker: &str) -> String {
    let at = html.find(marker).unwrap_or_else(|| panic!("{marker} not in page: {html}"));
    html[at + marker.len()..].split('"').next().unwrap().to_string()
}

fn error_code_of(resp: &Resp) -> String {
    attr_after(&resp.text(), r#"data-code=""#)
}

#[tokio::test]
async fn c24_sign_up_mails_a_verification_link_that_works_once_and_signs_in() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    let resp = client.sign_up("Vera", "vera@example.org", PW).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signup/sent".to_string()));
    assert!(!client.cookies.contains_key("atelier_session"), "not signed in before the address is confirmed");
    let mail = wait_for_mail(&app.state.store, "vera@example.org", "verify_email").await;
    assert_eq!(mail.subject, "Confirm your email address for Atelier");
    let user = app.state.store.user_by_email("vera@example.org").await.unwrap().unwrap();
    assert!(user.email_verified_at.is_none());

    // A correct password is not enough yet; a new link is sent.
    let resp = sign_in(&mut client, "vera@example.org", PW).await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::FORBIDDEN, "email_not_verified".to_string()));

    let link = link_in(&mail, "/verify-email?token=");
    // Opening the link (as mail scanners do) changes nothing.
    assert_eq!(client.get(&link).await.status, StatusCode::OK);
    assert_eq!(client.get(&link).await.status, StatusCode::OK);
    let resp = client.post_form("/verify-email", &[("token", &token_of(&link))]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/generate".to_string()));
    assert_eq!(account_status(&mut client).await, StatusCode::OK);
    assert!(app.state.store.user_by_id(&user.id).await.unwrap().unwrap().email_verified_at.is_some());

    let mut again = app.client();
    let resp = again.post_form("/verify-email", &[("token", &token_of(&link))]).await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::BAD_REQUEST, "invalid_token".to_string()), "a link works once");
    assert_eq!(again.get(&link).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(sign_in(&mut again, "vera@example.org", PW).await.status, StatusCode::SEE_OTHER);

    // The mail speaks the language the person signed up in.
    let mut french = app.client();
    french.get("/signin").await;
    let csrf = french.csrf();
    let body = common::form_encode(&[
        ("name", "Léa"),
        ("email", "lea@example.org"),
        ("password", PW),
        ("birth_date", "1990-02-03"),
        ("_csrf", &csrf),
    ]);
    french
        .send(Method::POST, "/signup", Some("application/x-www-form-urlencoded"), body.into_bytes(), &[("accept-language", "fr-FR")])
        .await;
    let mail = wait_for_mail(&app.state.store, "lea@example.org", "verify_email").await;
    assert_eq!(mail.subject, "Confirmez votre adresse e-mail pour Atelier");
    assert!(mail.body_text.starts_with("Bonjour Léa,"));
}

/// Status, redirect, cookies and body of a response: what a visitor sees
/// (each visitor's own CSRF token aside).
fn visible(resp: &Resp, client: &Client) -> (StatusCode, String, Vec<String>, String) {
    (resp.status, resp.location(), resp.set_cookies(), resp.text().replace(&client.csrf(), "CSRF"))
}

#[tokio::test]
async fn sign_up_and_reset_answers_are_identical_for_existing_and_unknown_emails() {
    let app = App::new(SQLITE).await;
    app.client().signed_up("known@example.org").await;

    let (mut a, mut b) = (app.client(), app.client());
    a.get("/signin").await;
    b.get("/signin").await;
    let known = a.sign_up("Someone", "known@example.org", "some other passphrase").await;
    let unknown = b.sign_up("Someone", "unknown@example.org", "some other passphrase").await;
    assert_eq!(visible(&known, &a), visible(&unknown, &b));
    let (sent_a, sent_b) = (a.get("/signup/sent").await, b.get("/signup/sent").await);
    assert_eq!(visible(&sent_a, &a), visible(&sent_b, &b));

    let known = a.post_form("/reset-password", &[("email", "known@example.org")]).await;
    let unknown = b.post_form("/reset-password", &[("email", "nobody@example.org")]).await;
    assert_eq!(visible(&known, &a), visible(&unknown, &b));
    assert_eq!(known.location(), "/reset-password/sent");

    // Behind the identical answers: the owner is mailed, nobody else.
    wait_for_mail(&app.state.store, "known@example.org", "sign_up_existing").await;
    wait_for_mail(&app.state.store, "known@example.org", "password_reset").await;
    wait_for_mail(&app.state.store, "unknown@example.org", "verify_email").await;
    assert!(mail_to(&app.state.store, "nobody@example.org").await.is_empty());
    let owner = app.state.store.user_by_email("known@example.org").await.unwrap().unwrap();
    assert!(verify_password_still(&app, "known@example.org", PW).await, "the taken account is unchanged: {}", owner.id);
}

async fn verify_password_still(app: &App, email: &str, password: &str) -> bool {
    sign_in(&mut app.client(), email, password).await.status == StatusCode::SEE_OTHER
}

#[tokio::test]
async fn c04_password_reset_link_works_once_within_30_minutes_and_ends_every_session() {
    let (app, clock) = app_with_clock(SQLITE).await;
    let mut first = app.client();
    first.signed_up("reset@example.org").await;
    let mut second = app.client();
    assert_eq!(sign_in(&mut second, "reset@example.org", PW).await.status, StatusCode::SEE_OTHER);

    let mut visitor = app.client();
    visitor.post_form("/reset-password", &[("email", "reset@example.org")]).await;
    let mail = wait_for_mail(&app.state.store, "reset@example.org", "password_reset").await;
    assert!(mail.body_text.contains("30 minutes"), "{}", mail.body_text);
    let link = link_in(&mail, "/reset-password?token=");
    assert!(visitor.get(&link).await.text().contains(r#"name="password""#));
    clock.advance_ms(31 * 60_000);
    let resp = visitor.post_form("/reset-password", &[("token", &token_of(&link)), ("password", "a brand new passphrase")]).await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::BAD_REQUEST, "invalid_token".to_string()), "expired after 30 minutes");

    visitor.post_form("/reset-password", &[("email", "reset@example.org")]).await;
    let fresh = loop {
        let mail = wait_for_mail(&app.state.store, "reset@example.org", "password_reset").await;
        let fresh = link_in(&mail, "/reset-password?token=");
        if fresh != link {
            break fresh;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let resp = visitor.post_form("/reset-password", &[("token", &token_of(&fresh)), ("password", "short")]).await;
    assert_eq!(error_code_of(&resp), "password_too_short", "a rule error keeps the link usable");
    let resp = visitor.post_form("/reset-password", &[("token", &token_of(&fresh)), ("password", "a brand new passphrase")]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signin?notice=password_reset".to_string()));
    assert_eq!(account_status(&mut first).await, StatusCode::UNAUTHORIZED, "every session ended");
    assert_eq!(account_status(&mut second).await, StatusCode::UNAUTHORIZED);
    let resp = visitor.post_form("/reset-password", &[("token", &token_of(&fresh)), ("password", "yet another passphrase")]).await;
    assert_eq!(error_code_of(&resp), "invalid_token", "a link works once");
    assert_eq!(sign_in(&mut app.client(), "reset@example.org", PW).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&mut app.client(), "reset@example.org", "a brand new passphrase").await.status, StatusCode::SEE_OTHER);
    wait_for_mail(&app.state.store, "reset@example.org", "password_changed").await;
}

async fn session_ids(client: &mut Client) -> Vec<(String, bool)> {
    let list = client.api(Method::GET, "/api/v1/account/sessions", None, &[]).await.json();
    list.as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().to_string(), s["current"].as_bool().unwrap())).collect()
}

#[tokio::test]
async fn c04_a_revoked_session_stops_working_at_once() {
    let app = App::new(SQLITE).await;
    let mut laptop = app.client();
    laptop.signed_up("sessions@example.org").await;
    let mut phone = app.client();
    phone.peer = Some("203.0.113.77:5555".parse().unwrap());
    phone.get("/signin").await;
    let csrf = phone.csrf();
    let body = common::form_encode(&[("email", "sessions@example.org"), ("password", PW), ("_csrf", &csrf)]);
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let resp =
        phone.send(Method::POST, "/signin", Some("application/x-www-form-urlencoded"), body.into_bytes(), &[("user-agent", ua)]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);

    let sessions = session_ids(&mut laptop).await;
    assert_eq!(sessions.len(), 2);
    let phone_id = sessions.iter().find(|(_, current)| !current).unwrap().0.clone();
    let page = laptop.get("/account/security").await.text();
    assert!(page.contains("Firefox on Linux") && page.contains("203.0.113.0") && !page.contains("203.0.113.77"), "{page}");

    // Another account cannot end it.
    let mut stranger = app.client();
    stranger.signed_up("stranger@example.org").await;
    assert_eq!(
        stranger.api(Method::DELETE, &format!("/api/v1/account/sessions/{phone_id}"), None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(account_status(&mut phone).await, StatusCode::OK);

    let resp = laptop.api(Method::DELETE, &format!("/api/v1/account/sessions/{phone_id}"), None, &[]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert_eq!(account_status(&mut phone).await, StatusCode::UNAUTHORIZED, "ended on its next request");
    assert_eq!(account_status(&mut laptop).await, StatusCode::OK);

    // From the page: one session, then every other one.
    assert_eq!(sign_in(&mut phone, "sessions@example.org", PW).await.status, StatusCode::SEE_OTHER);
    let phone_id = session_ids(&mut phone).await.into_iter().find(|(_, c)| *c).unwrap().0;
    let resp = laptop.post_form(&format!("/account/security/sessions/{phone_id}/revoke"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(account_status(&mut phone).await, StatusCode::UNAUTHORIZED);
    let mut tablet = app.client();
    assert_eq!(sign_in(&mut tablet, "sessions@example.org", PW).await.status, StatusCode::SEE_OTHER);
    assert_eq!(sign_in(&mut phone, "sessions@example.org", PW).await.status, StatusCode::SEE_OTHER);
    let resp = laptop.post_form("/account/security/sessions/revoke-others", &[]).await;
    assert!(resp.text().contains("Every other session is signed out."));
    assert_eq!(account_status(&mut phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(account_status(&mut tablet).await, StatusCode::UNAUTHORIZED);
    assert_eq!(session_ids(&mut laptop).await.len(), 1);
}

#[tokio::test]
async fn c04_changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let app = App::new(SQLITE).await;
    let mut mine = app.client();
    mine.signed_up("change@example.org").await;
    let mut other = app.client();
    assert_eq!(sign_in(&mut other, "change@example.org", PW).await.status, StatusCode::SEE_OTHER);

    let resp = mine
        .post_form("/account/security/password", &[("current_password", "not my password"), ("new_password", "the next passphrase")])
        .await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::UNAUTHORIZED, "invalid_credentials".to_string()));
    assert_eq!(account_status(&mut other).await, StatusCode::OK);
    let resp = mine.post_form("/account/security/password", &[("current_password", PW), ("new_password", "the next passphrase")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("Your password is changed."));
    assert_eq!(account_status(&mut other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(account_status(&mut mine).await, StatusCode::OK, "this session stays");
    assert_eq!(sign_in(&mut app.client(), "change@example.org", "the next passphrase").await.status, StatusCode::SEE_OTHER);
    let mail = wait_for_mail(&app.state.store, "change@example.org", "password_changed").await;
    assert_eq!(mail.subject, "Your Atelier password was changed");
}

fn code_for(secret: &str, clock: &Clock) -> String {
    totp::code_at(&totp::base32_decode(secret).unwrap(), totp::step_of(clock.now_ms()))
}

async fn to_second_factor(app: &App, email: &str) -> Client {
    let mut client = app.client();
    let resp = sign_in(&mut client, email, PW).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/signin/2fa".to_string()), "{}", resp.text());
    assert!(client.cookies.contains_key("atelier_2fa") && !client.cookies.contains_key("atelier_session"));
    client
}

#[tokio::test]
async fn c04_totp_enrolment_sign_in_with_a_code_and_a_recovery_code_that_works_once() {
    let (app, clock) = app_with_clock(SQLITE).await;
    let mut owner = app.client();
    let id = owner.signed_up("totp@example.org").await;
    let setup = owner.post_form("/account/security/totp/setup", &[]).await.text();
    assert!(setup.contains(r#"<svg role="img""#) && !setup.contains("<script>"), "an inline QR code, no inline script");
    let secret = attr_after(&setup, r#"name="secret" value=""#);
    let resp = owner.post_form("/account/security/totp/enable", &[("secret", &secret), ("code", "000000")]).await;
    assert_eq!(error_code_of(&resp), "invalid_code");
    let resp = owner.post_form("/account/security/totp/enable", &[("secret", &secret), ("code", &code_for(&secret, &clock))]).await;
    assert_eq!(resp.status, StatusCode::OK);
    let page = resp.text();
    let codes: Vec<String> = page.split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10, "{page}");
    wait_for_mail(&app.state.store, "totp@example.org", "totp_enabled").await;

    // Password alone now leads to the second step.
    let mut client = to_second_factor(&app, "totp@example.org").await;
    let resp = client.post_form("/signin/2fa", &[("code", "123456")]).await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::UNAUTHORIZED, "invalid_code".to_string()));
    let resp = client.post_form("/signin/2fa", &[("code", &code_for(&secret, &clock))]).await;
    assert_eq!(error_code_of(&resp), "invalid_code", "the enrolment code's time step is used up");
    clock.advance_ms(30_000);
    let code = code_for(&secret, &clock);
    let resp = client.post_form("/signin/2fa", &[("code", &code)]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/generate".to_string()));
    assert_eq!(account_status(&mut client).await, StatusCode::OK);
    assert!(!client.cookies.contains_key("atelier_2fa"));
    let mut replay = to_second_factor(&app, "totp@example.org").await;
    assert_eq!(error_code_of(&replay.post_form("/signin/2fa", &[("code", &code)]).await), "invalid_code", "a code works once");

    // A recovery code, once.
    let resp = replay.post_form("/signin/2fa", &[("code", &codes[3].to_uppercase())]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(account_status(&mut replay).await, StatusCode::OK);
    let mail = wait_for_mail(&app.state.store, "totp@example.org", "recovery_code_used").await;
    assert!(mail.body_text.contains("9 recovery codes are left"), "{}", mail.body_text);
    let mut again = to_second_factor(&app, "totp@example.org").await;
    assert_eq!(error_code_of(&again.post_form("/signin/2fa", &[("code", &codes[3])]).await), "invalid_code");
    let actions: Vec<String> =
        app.state.store.audit_entries(Some(&id), None, 100).await.unwrap().items.into_iter().map(|a| a.action).collect();
    assert!(actions.contains(&"recovery_code_used".to_string()) && actions.contains(&"totp_enabled".to_string()));

    // Turning it off needs the password and a code.
    let resp = owner.post_form("/account/security/totp/disable", &[("current_password", "wrong password!"), ("code", &codes[0])]).await;
    assert_eq!(error_code_of(&resp), "invalid_credentials");
    let resp = owner.post_form("/account/security/totp/disable", &[("current_password", PW), ("code", "999999")]).await;
    assert_eq!(error_code_of(&resp), "invalid_code");
    let resp = owner.post_form("/account/security/totp/disable", &[("current_password", PW), ("code", &codes[0])]).await;
    assert_eq!(resp.status, StatusCode::OK);
    wait_for_mail(&app.state.store, "totp@example.org", "totp_disabled").await;
    assert_eq!(sign_in(&mut app.client(), "totp@example.org", PW).await.location(), "/generate");
}

#[tokio::test]
async fn c04_one_hundred_failed_sign_ins_in_an_hour_lock_the_account_even_for_the_right_password() {
    let (app, clock) = app_with_clock(SQLITE).await;
    let id = app.client().signed_up("locked@example.org").await;
    let mut attacker = app.client();
    let start = clock.now_ms();
    for i in 0..100 {
        clock.advance_ms(31_000); // past the growing delays, which top out at 30 s
        let resp = sign_in(&mut attacker, "locked@example.org", &format!("guess number {i}")).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "attempt {i}: {}", resp.text());
    }
    assert!(clock.now_ms() - start < 3_600_000, "all within the hour");
    clock.advance_ms(31_000);
    let resp = sign_in(&mut attacker, "locked@example.org", "guess number 100").await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts".to_string()));
    let retry: i64 = resp.headers["retry-after"].to_str().unwrap().parse().unwrap();
    let expected = (start + 31_000 + 3_600_000 - clock.now_ms()) / 1000;
    assert!((expected - 1..=expected + 1).contains(&retry), "Retry-After {retry}, expected about {expected}");
    let mut owner = app.client();
    let resp = sign_in(&mut owner, "locked@example.org", PW).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "the right password is refused during the lockout");
    assert!(resp.headers.contains_key("retry-after"));

    let failed = app
        .state
        .store
        .audit_entries(Some(&id), None, 200)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|a| a.action == "sign_in_failed")
        .count();
    assert_eq!(failed, 100, "each failure is audited, refusals during the lockout check nothing");

    clock.advance_ms(retry * 1000 + 1000);
    assert_eq!(sign_in(&mut owner, "locked@example.org", PW).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn failed_sign_ins_get_growing_delays_for_known_and_unknown_emails_alike() {
    let (app, clock) = app_with_clock(SQLITE).await;
    app.client().signed_up("slow@example.org").await;
    for email in ["slow@example.org", "ghost@example.org"] {
        let mut client = app.client();
        for _ in 0..5 {
            assert_eq!(sign_in(&mut client, email, "wrong password").await.status, StatusCode::UNAUTHORIZED);
        }
        let resp = sign_in(&mut client, email, "wrong password").await;
        assert_eq!((resp.status, resp.headers["retry-after"].to_str().unwrap()), (StatusCode::TOO_MANY_REQUESTS, "1"), "{email}");
        clock.advance_ms(1_000);
        assert_eq!(sign_in(&mut client, email, "wrong password").await.status, StatusCode::UNAUTHORIZED);
        let resp = sign_in(&mut client, email, "wrong password").await;
        assert_eq!(resp.headers["retry-after"].to_str().unwrap(), "2", "the delay doubles");
    }
    clock.advance_ms(2_000);
    assert_eq!(sign_in(&mut app.client(), "slow@example.org", PW).await.status, StatusCode::SEE_OTHER);
    let mut fresh = app.client();
    assert_eq!(
        sign_in(&mut fresh, "slow@example.org", "wrong password").await.status,
        StatusCode::UNAUTHORIZED,
        "a full sign-in clears the record"
    );
}

#[tokio::test]
async fn c34_security_actions_are_audited_with_actor_time_and_truncated_ip() {
    let (app, clock) = app_with_clock(SQLITE).await;
    let peer: SocketAddr = "198.51.100.23:40000".parse().unwrap();
    let mut me = app.client();
    me.peer = Some(peer);
    let id = me.signed_up("audit@example.org").await;
    let mut other = app.client();
    other.peer = Some(peer);
    sign_in(&mut other, "audit@example.org", "wrong password").await;
    sign_in(&mut other, "audit@example.org", PW).await;
    me.post_form("/account/security/sessions/revoke-others", &[]).await;
    sign_in(&mut other, "audit@example.org", PW).await;
    let other_id = session_ids(&mut other).await.into_iter().find(|(_, c)| *c).unwrap().0;
    me.post_form(&format!("/account/security/sessions/{other_id}/revoke"), &[]).await;
    me.post_form("/account/security/password", &[("current_password", PW), ("new_password", "second passphrase")]).await;
    let secret = attr_after(&me.post_form("/account/security/totp/setup", &[]).await.text(), r#"name="secret" value=""#);
    me.post_form("/account/security/totp/enable", &[("secret", &secret), ("code", &code_for(&secret, &clock))]).await;
    clock.advance_ms(30_000);
    me.post_form("/account/security/totp/disable", &[("current_password", "second passphrase"), ("code", &code_for(&secret, &clock))])
        .await;
    me.post_form("/account/email", &[("email", "audit.new@example.org"), ("current_password", "second passphrase")]).await;
    let link = link_in(&wait_for_mail(&app.state.store, "audit.new@example.org", "email_change").await, "/account/email/confirm?token=");
    me.post_form("/account/email/confirm", &[("token", &token_of(&link))]).await;
    other.post_form("/reset-password", &[("email", "audit.new@example.org")]).await;
    let link = link_in(&wait_for_mail(&app.state.store, "audit.new@example.org", "password_reset").await, "/reset-password?token=");
    other.post_form("/reset-password", &[("token", &token_of(&link)), ("password", "third passphrase")]).await;
    sign_in(&mut me, "audit.new@example.org", "third passphrase").await;
    me.post_form("/signout", &[]).await;

    let entries = app.state.store.audit_entries(Some(&id), None, 100).await.unwrap().items;
    for action in [
        "account_created",
        "email_verified",
        "sign_in",
        "sign_in_failed",
        "sign_out_everywhere",
        "session_revoked",
        "password_changed",
        "totp_enabled",
        "totp_disabled",
        "email_changed",
        "password_reset",
        "sign_out",
    ] {
        let entry = entries.iter().find(|e| e.action == action).unwrap_or_else(|| panic!("no {action} in {entries:#?}"));
        assert!(entry.at > 0, "{action} has a time");
        if action != "sign_in_failed" && action != "account_created" {
            assert_eq!(entry.actor_id.as_deref(), Some(id.as_str()), "{action} has its actor");
            assert_eq!(entry.ip.as_deref(), Some("198.51.100.0"), "{action}: the IP is truncated");
        }
    }
    let failed = entries.iter().find(|e| e.action == "sign_in_failed").unwrap();
    assert_eq!((failed.target_id.as_deref(), failed.ip.as_deref()), (Some(id.as_str()), Some("198.51.100.0")));
    assert!(entries.iter().all(|e| e.detail.as_deref().is_none_or(|d| !d.contains("passphrase"))), "no secret in details");
    // The owner sees the trail on the security page.
    sign_in(&mut me, "audit.new@example.org", "third passphrase").await;
    assert!(me.get("/account/security").await.text().contains("Two-factor sign-in turned on"));
}

#[tokio::test]
async fn c01_email_change_needs_the_password_and_a_confirmation_from_the_new_address() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    let id = client.signed_up("old@example.org").await;
    app.client().signed_up("taken@example.org").await;
    let resp = client.post_form("/account/email", &[("email", "new@example.org"), ("current_password", "not it at all")]).await;
    assert_eq!(error_code_of(&resp), "invalid_credentials");
    assert!(mail_to(&app.state.store, "new@example.org").await.is_empty());
    let resp = client.post_form("/account/email", &[("email", "New@Example.org"), ("current_password", PW)]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("A confirmation link is on its way"));
    assert_eq!(
        client.api(Method::GET, "/api/v1/account", None, &[]).await.json()["email"],
        "old@example.org",
        "nothing changes before the confirmation"
    );
    let mail = wait_for_mail(&app.state.store, "new@example.org", "email_change").await;
    let link = link_in(&mail, "/account/email/confirm?token=");
    assert!(client.get(&link).await.text().contains("new@example.org"));
    let resp = client.post_form("/account/email/confirm", &[("token", &token_of(&link))]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/account".to_string()));
    assert_eq!(client.api(Method::GET, "/api/v1/account", None, &[]).await.json()["email"], "new@example.org");
    wait_for_mail(&app.state.store, "old@example.org", "email_changed").await;
    assert_eq!(sign_in(&mut app.client(), "new@example.org", PW).await.status, StatusCode::SEE_OTHER);
    assert!(app.state.store.audit_entries(Some(&id), None, 50).await.unwrap().items.iter().any(|e| e.action == "email_changed"));

    // A taken address fails at the confirmation, changing nothing.
    client.post_form("/account/email", &[("email", "taken@example.org"), ("current_password", PW)]).await;
    let link = link_in(&wait_for_mail(&app.state.store, "taken@example.org", "email_change").await, "/account/email/confirm?token=");
    let resp = client.post_form("/account/email/confirm", &[("token", &token_of(&link))]).await;
    assert_eq!((resp.status, error_code_of(&resp)), (StatusCode::CONFLICT, "email_taken".to_string()));
}

fn multipart(csrf: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----atelier-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n").as_bytes());
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"me.png\"\r\nContent-Type: image/png\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn c01_avatar_upload_is_cropped_square_and_served_only_to_its_owner() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("face@example.org").await;
    let mut img = imaging::RgbaImage::new(600, 400);
    for (x, _, p) in img.enumerate_pixels_mut() {
        *p = if x < 100 || x >= 500 { imaging::Rgba([255, 0, 0, 255]) } else { imaging::Rgba([0, 0, 255, 255]) };
    }
    let png = imaging::encode_png(&img).unwrap().bytes;
    let (ct, body) = multipart(&client.csrf(), &png);
    let resp = client.send(Method::POST, "/account/avatar", Some(&ct), body, &[]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/account".to_string()), "{}", resp.text());
    let avatar = client.get("/account/avatar").await;
    assert_eq!(avatar.headers["content-type"], "image/png");
    let stored = imaging::decode_png(&avatar.body).unwrap();
    assert_eq!(stored.dimensions(), (256, 256));
    assert_eq!(stored.get_pixel(128, 128).0, [0, 0, 255, 255], "the centre square was kept");
    assert!(client.get("/account").await.text().contains(r#"class="avatar""#));
    let account = client.api(Method::GET, "/api/v1/account", None, &[]).await.json();
    assert_eq!((account["avatar_url"].as_str(), account["email_verified"].as_bool()), (Some("/account/avatar"), Some(true)));
    assert_eq!(app.object_files().len(), 1);

    // A new one replaces the old one, in storage too.
    let (ct, body) = multipart(&client.csrf(), &png);
    client.send(Method::POST, "/account/avatar", Some(&ct), body, &[]).await;
    assert_eq!(app.object_files().len(), 1);

    let mut stranger = app.client();
    assert_eq!(stranger.get("/account/avatar").await.status, StatusCode::UNAUTHORIZED);
    stranger.signed_up("other@example.org").await;
    assert_eq!(stranger.get("/account/avatar").await.status, StatusCode::NOT_FOUND);

    let (ct, body) = multipart(&client.csrf(), b"not an image at all");
    let resp = client.send(Method::POST, "/account/avatar", Some(&ct), body, &[]).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let (ct, body) = multipart("forged", &png);
    assert_eq!(client.send(Method::POST, "/account/avatar", Some(&ct), body, &[]).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn failed_sign_ins_are_also_limited_per_network_whatever_the_account() {
    let mut config = WebConfig::default();
    config.auth.throttle.ip_per_hour = 3;
    let app = App::with_config(SQLITE, config).await;
    app.client().signed_up("net@example.org").await;
    let mut guesser = app.client();
    guesser.peer = Some("203.0.113.9:1000".parse().unwrap());
    for email in ["a@example.org", "b@example.org", "c@example.org"] {
        assert_eq!(sign_in(&mut guesser, email, "wrong password").await.status, StatusCode::UNAUTHORIZED);
    }
    // The same /24, another address and account, the right password: refused.
    let mut neighbour = app.client();
    neighbour.peer = Some("203.0.113.200:2000".parse().unwrap());
    let resp = sign_in(&mut neighbour, "net@example.org", PW).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers.contains_key("retry-after"));
    // Another network is not affected.
    let mut elsewhere = app.client();
    elsewhere.peer = Some("198.51.100.7:3000".parse().unwrap());
    assert_eq!(sign_in(&mut elsewhere, "net@example.org", PW).await.status, StatusCode::SEE_OTHER);
}
