//! First-party analytics and request logs, reduced before anything is
//! stored (C22, C23): visitors become a keyed hash whose key changes daily,
//! addresses lose their host part, user agents shrink to a browser family.

use std::net::IpAddr;

use domain::ids::to_hex;
use domain::Result;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use store::{day_of, Store, DAY_MS};

use crate::PrivacyConfig;

/// The network an address belongs to: IPv4 /24, IPv6 /48 (an IPv4-mapped
/// IPv6 address counts as IPv4). The host part never reaches storage.
pub fn truncate_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate_ip(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{}/48", std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        },
    }
}

/// The browser family of a user agent: enough to know which browsers to
/// support, too little to fingerprint anyone.
pub fn browser_family(user_agent: Option<&str>) -> &'static str {
    let Some(ua) = user_agent.map(str::to_ascii_lowercase) else { return "unknown" };
    // Order matters: Edge and Opera also claim Chrome, Chrome claims Safari.
    const FAMILIES: &[(&[&str], &str)] = &[
        (&["bot", "crawler", "spider"], "bot"),
        (&["edg/", "edge/", "edga/", "edgios/"], "edge"),
        (&["opr/", "opera"], "opera"),
        (&["firefox/", "fxios/"], "firefox"),
        (&["chrome/", "crios/", "chromium/"], "chrome"),
        (&["safari/"], "safari"),
        (&["curl/", "wget/", "python", "okhttp", "go-http-client", "node"], "tool"),
    ];
    FAMILIES.iter().find(|(needles, _)| needles.iter().any(|n| ua.contains(n))).map_or("other", |(_, family)| family)
}

/// The pseudonymous id of a visitor on the day of `now_ms`: an HMAC of the
/// browser's analytics id under that day's key. The key is deleted when the
/// day is over, so ids cannot be linked across days or traced back.
pub async fn visitor_hash(store: &Store, analytics_id: &str, now_ms: i64) -> Result<String> {
    let fresh: [u8; 32] = rand::random();
    let key = store.analytics_key(day_of(now_ms), fresh.to_vec()).await?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(analytics_id.as_bytes());
    Ok(to_hex(&mac.finalize().into_bytes()[..16]))
}

/// Sweep step (C22): raw events of days older than the window are folded
/// into daily aggregates and deleted; keys of past days are discarded.
/// Returns the number of raw events folded.
pub async fn fold_expired(store: &Store, config: &PrivacyConfig, now_ms: i64) -> Result<usize> {
    store.discard_analytics_keys(day_of(now_ms)).await?;
    store.fold_analytics(day_of(now_ms - i64::from(config.analytics_raw_days) * DAY_MS)).await
}

/// Sweep step (C23): request log rows older than the window are deleted.
pub async fn delete_expired_request_logs(store: &Store, config: &PrivacyConfig, now_ms: i64) -> Result<usize> {
    store.delete_request_logs_before(now_ms - i64::from(config.request_log_days) * DAY_MS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c23_addresses_lose_their_host_part() {
        assert_eq!(truncate_ip("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(truncate_ip("2001:db8:abcd:12:1:2:3:4".parse().unwrap()), "2001:db8:abcd::/48");
        assert_eq!(truncate_ip("::ffff:198.51.100.9".parse().unwrap()), "198.51.100.0/24");
        assert_eq!(truncate_ip("::1".parse().unwrap()), "::/48");
    }

    #[test]
    fn c23_user_agents_shrink_to_a_browser_family() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        let edge = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0";
        let safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(browser_family(Some(chrome)), "chrome");
        assert_eq!(browser_family(Some(edge)), "edge");
        assert_eq!(browser_family(Some(safari)), "safari");
        assert_eq!(browser_family(Some(firefox)), "firefox");
        assert_eq!(browser_family(Some("Googlebot/2.1")), "bot");
        assert_eq!(browser_family(Some("curl/8.4.0")), "tool");
        assert_eq!(browser_family(Some("something else")), "other");
        assert_eq!(browser_family(None), "unknown");
    }
}
