//! Operator tags (issue 15): third-party scripts bound to a consent
//! category, through the router like a browser. Each page is read whole:
//! before consent nothing names the third party, after consent the script
//! element and the CSP sources appear, under GPC analytics and advertising
//! never do, a restricted account never gets any, the policies name them.

mod common;

use std::collections::BTreeMap;

use axum::http::{header, Method, StatusCode};
use common::{App, Client, Resp};
use store::testing::TestBackend;
use web::{OperatorTag, TagCategory, WebConfig};

const STATS: &str = "https://stats.example.net/js/script.js";
const STATS_HOST: &str = "stats.example.net";
const BEACON: &str = "https://collect.example.net";
const ADS: &str = "https://ads.example.org/tag.js";
const ADS_HOST: &str = "ads.example.org";
const FONTS: &str = "https://prefs.example.com/theme.js";

fn tag(name: &str, category: TagCategory, src: &str) -> OperatorTag {
    OperatorTag {
        name: name.into(),
        category,
        src: src.into(),
        connect: Vec::new(),
        data: BTreeMap::new(),
        purpose: String::new(),
        policy_url: String::new(),
    }
}

fn config() -> WebConfig {
    let stats = OperatorTag {
        connect: vec![BEACON.into()],
        data: BTreeMap::from([("domain".to_string(), "atelier.example.com".to_string())]),
        purpose: "Counts visits.".into(),
        policy_url: "https://stats.example.net/privacy".into(),
        ..tag("Example Stats", TagCategory::Analytics, STATS)
    };
    let ads = OperatorTag { policy_url: "https://ads.example.org/policy".into(), ..tag("Example Ads", TagCategory::Marketing, ADS) };
    WebConfig { tags: vec![stats, ads, tag("Theme Picker", TagCategory::Preferences, FONTS)], ..WebConfig::default() }
}

fn csp(resp: &Resp) -> String {
    resp.headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().to_string()
}

/// The directive's sources, e.g. `script-src` → `["'self'", "https://…"]`.
fn directive(resp: &Resp, name: &str) -> Vec<String> {
    csp(resp)
        .split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name} in {}", csp(resp)))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Nothing in the page or its headers refers to any third party.
fn untouched(resp: &Resp) {
    let page = resp.text();
    for host in [STATS_HOST, "collect.example.net", ADS_HOST, "prefs.example.com"] {
        assert!(!page.contains(host), "{host} in the page: {page}");
        assert!(!csp(resp).contains(host), "{host} in the CSP: {}", csp(resp));
    }
}

async fn gpc_get(client: &mut Client, path: &str) -> Resp {
    client.send(Method::GET, path, None, Vec::new(), &[("sec-gpc", "1")]).await
}

#[tokio::test]
async fn tags_load_only_after_consent_to_their_category_and_the_csp_allows_exactly_their_hosts() {
    let app = App::with_config(TestBackend::Sqlite, config()).await;
    let mut client = app.client();
    let before = client.get("/").await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(before.text().contains("consent-banner"));
    untouched(&before);
    untouched(&client.get("/signin").await);

    // Analytics only: the analytics tag, not the advertising or preference one.
    let resp = client.post_form("/consent", &[("choice", "custom"), ("analytics", "on"), ("source", "settings")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    let page = client.get("/signin").await;
    let text = page.text();
    assert!(
        text.contains(r#"<script async src="https://stats.example.net/js/script.js" data-domain="atelier.example.com"></script>"#),
        "{text}"
    );
    assert!(!text.contains(ADS_HOST) && !text.contains("prefs.example.com"), "{text}");
    assert_eq!(directive(&page, "script-src"), ["'self'", "https://stats.example.net"]);
    assert_eq!(directive(&page, "connect-src"), ["'self'", BEACON, "https://stats.example.net"]);
    assert!(directive(&page, "img-src").contains(&BEACON.to_string()));
    assert!(!csp(&page).contains(ADS_HOST));
    // Responses that carry no tag keep the strict policy.
    for path in ["/static/app.js", "/api/v1/account", "/healthz"] {
        untouched(&client.get(path).await);
    }

    // Everything: every tag, each host in the policy of the page.
    client.post_form("/consent", &[("choice", "all"), ("source", "banner"), ("back", "/")]).await;
    let page = client.get("/signin").await;
    let text = page.text();
    assert!(text.contains(STATS) && text.contains(ADS) && text.contains(FONTS), "{text}");
    assert_eq!(
        directive(&page, "script-src"),
        ["'self'", "https://ads.example.org", "https://prefs.example.com", "https://stats.example.net"]
    );
    assert!(!text.contains("<script>"), "never an inline script");

    // Withdrawn: gone again at once.
    client.post_form("/consent", &[("choice", "none"), ("source", "settings")]).await;
    untouched(&client.get("/signin").await);
}

#[tokio::test]
async fn with_gpc_analytics_and_advertising_tags_never_load_even_after_accept_all() {
    let app = App::with_config(TestBackend::Sqlite, config()).await;
    let mut client = app.client();
    untouched(&gpc_get(&mut client, "/").await);
    let csrf = client.csrf();
    let accepted = client
        .send(
            Method::POST,
            "/consent",
            Some("application/x-www-form-urlencoded"),
            common::form_encode(&[("_csrf", csrf.as_str()), ("choice", "all"), ("source", "settings")]).into_bytes(),
            &[("sec-gpc", "1")],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK);
    for resp in [accepted, gpc_get(&mut client, "/signin").await, gpc_get(&mut client, "/legal/cookies").await] {
        let text = resp.text();
        assert!(!text.contains(STATS) && !text.contains(ADS), "{text}");
        assert!(!csp(&resp).contains(STATS_HOST) && !csp(&resp).contains(ADS_HOST), "{}", csp(&resp));
        assert!(text.contains(FONTS), "GPC leaves the preferences category as chosen");
    }
    // The signal is remembered: a later request without it still gets none.
    let later = client.get("/signin").await;
    assert!(!later.text().contains(STATS) && !later.text().contains(ADS));
}

#[tokio::test]
async fn a_restricted_account_gets_no_tags_whatever_it_consented_to() {
    let app = App::with_config(TestBackend::Sqlite, config()).await;
    let mut client = app.client();
    client.signed_up("tagged@example.org").await;
    client.post_form("/consent", &[("choice", "all"), ("source", "banner"), ("back", "/")]).await;
    assert!(client.get("/gallery").await.text().contains(STATS), "loaded with consent while not restricted");

    let resp = client.post_form("/account/privacy/restriction", &[("restricted", "1")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    untouched(&resp);
    untouched(&client.get("/gallery").await);
    untouched(&client.get("/account").await);

    client.post_form("/account/privacy/restriction", &[("restricted", "0")]).await;
    assert!(client.get("/gallery").await.text().contains(STATS), "lifting the restriction restores the consented tags");
}

#[tokio::test]
async fn the_policies_name_every_configured_third_party() {
    let app = App::with_config(TestBackend::Sqlite, config()).await;
    let mut client = app.client();
    let privacy = client.get("/legal/privacy").await;
    assert_eq!(privacy.status, StatusCode::OK);
    let text = privacy.text();
    assert!(text.contains(r#"<h2 id="third-parties">"#), "{text}");
    for line in [
        r#"<li class="third-party">Example Stats (analytics). Counts visits. <a href="https://stats.example.net/privacy" rel="noopener noreferrer">Their privacy policy</a></li>"#,
        r#"<li class="third-party">Example Ads (marketing and advertising). <a href="https://ads.example.org/policy" rel="noopener noreferrer">Their privacy policy</a></li>"#,
        r#"<li class="third-party">Theme Picker (preferences).</li>"#,
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(!text.contains("<script async"), "naming a third party loads nothing");
    let cookies = client.get("/legal/cookies").await.text();
    assert!(cookies.contains("Example Stats") && cookies.contains("Example Ads") && cookies.contains("Theme Picker"));
    assert!(!cookies.contains("No preference or marketing cookies are set today."), "not true with tags configured");

    // Without tags the policy has no such section.
    let plain = App::new(TestBackend::Sqlite).await;
    assert!(!plain.client().get("/legal/privacy").await.text().contains("third-parties"));
}

#[test]
fn tags_are_checked_at_start() {
    assert!(tag("A", TagCategory::Analytics, STATS).validate().is_ok());
    for (bad, needle) in [
        (tag("A", TagCategory::Analytics, "http://stats.example.net/s.js"), "https"),
        (tag("A", TagCategory::Analytics, "javascript:alert(1)"), "https"),
        (tag("A", TagCategory::Analytics, "https://user:pw@stats.example.net/s.js"), "credentials"),
        (tag(" ", TagCategory::Analytics, STATS), "name"),
        (OperatorTag { connect: vec!["https://x.example; script-src *".into()], ..tag("A", TagCategory::Analytics, STATS) }, "connect"),
        (OperatorTag { data: BTreeMap::from([("on\"load".into(), "x".into())]), ..tag("A", TagCategory::Analytics, STATS) }, "data"),
    ] {
        let e = bad.validate().unwrap_err();
        assert!(e.contains(needle), "{e}");
    }
    let ads: OperatorTag = serde_json::from_value(serde_json::json!({ "name": "A", "src": ADS, "category": "ads" })).unwrap();
    assert_eq!(ads.category, TagCategory::Marketing, "`ads` names the marketing category");
}
