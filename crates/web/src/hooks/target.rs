//! Where webhooks may go. A URL is checked when it is registered and again
//! at every delivery, after DNS resolution: the connection is then pinned to
//! the addresses just checked, so a name that resolves elsewhere later (DNS
//! rebinding) cannot reach an internal service.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use domain::{Error, ErrorCode};
use url::{Host, Url};

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Name resolution, behind a trait so tests can answer what they need.
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The system's resolver.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let host = host.to_string();
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Webhook rules set by the operator.
#[derive(Clone)]
pub struct HookConfig {
    /// Development: loopback targets are allowed, over `http` too.
    pub allow_loopback: bool,
    /// Private, link-local and other non-public targets are allowed (over https).
    pub allow_private: bool,
    /// Failed attempts in a row after which an endpoint is disabled.
    pub max_failures: i64,
    /// How long an event is retried after the task ended.
    pub retry_window_ms: i64,
    /// Per attempt: connecting, sending and reading the answer.
    pub timeout_ms: u64,
    /// Endpoints one account may register.
    pub max_endpoints: usize,
    pub resolver: Arc<dyn Resolver>,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            allow_loopback: false,
            allow_private: false,
            max_failures: 20,
            retry_window_ms: 24 * 3_600_000,
            timeout_ms: 10_000,
            max_endpoints: 10,
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookConfig")
            .field("allow_loopback", &self.allow_loopback)
            .field("allow_private", &self.allow_private)
            .field("max_failures", &self.max_failures)
            .field("retry_window_ms", &self.retry_window_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_endpoints", &self.max_endpoints)
            .finish_non_exhaustive()
    }
}

fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::WebhookUrlNotAllowed, message)
}

/// The URL's form: https (or http when loopback is allowed, checked once
/// resolved), a host, no credentials, no fragment.
pub fn parse(raw: &str, config: &HookConfig) -> Result<Url, Error> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL_LEN {
        return Err(Error::invalid(format!("the webhook URL must be 1 to {MAX_URL_LEN} characters")));
    }
    let url = Url::parse(raw).map_err(|e| Error::invalid(format!("the webhook URL is not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if config.allow_loopback => {}
        _ => return Err(refused("webhook URLs must use https")),
    }
    if url.host().is_none() {
        return Err(Error::invalid("the webhook URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid("the webhook URL must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(Error::invalid("the webhook URL must not have a fragment"));
    }
    Ok(url)
}

/// Resolves the URL's host and checks every address; a name with any
/// refused address is refused (a resolver may rotate between them).
pub async fn resolve(url: &Url, config: &HookConfig) -> Result<Vec<SocketAddr>, Error> {
    let port = url.port_or_known_default().ok_or_else(|| Error::invalid("the webhook URL has no port"))?;
    let addrs = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => {
            config.resolver.resolve(name, port).await.map_err(|e| refused(format!("the webhook host could not be resolved: {e}")))?
        }
        None => return Err(Error::invalid("the webhook URL has no host")),
    };
    if addrs.is_empty() {
        return Err(refused("the webhook host has no address"));
    }
    for addr in &addrs {
        let ip = addr.ip();
        let allowed = match class(ip) {
            Class::Public => url.scheme() == "https",
            Class::Loopback => config.allow_loopback || (config.allow_private && url.scheme() == "https"),
            Class::Internal => config.allow_private && url.scheme() == "https",
        };
        if !allowed {
            return Err(refused(format!("webhooks may not be sent to {ip} over {}", url.scheme())));
        }
    }
    Ok(addrs)
}

/// Registration: the form, then the addresses the name has now.
pub async fn check(raw: &str, config: &HookConfig) -> Result<Url, Error> {
    let url = parse(raw, config)?;
    resolve(&url, config).await?;
    Ok(url)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    /// Private, link-local, unspecified, multicast, shared, reserved or
    /// documentation space: never the open internet.
    Internal,
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return Class::Loopback;
    }
    let internal = a == 0
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19));
    if internal {
        Class::Internal
    } else {
        Class::Public
    }
}

fn class_v6(ip: Ipv6Addr) -> Class {
    if ip.is_loopback() {
        return Class::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return class_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return class_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return class_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    let internal = ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || s[..6] == [0, 0, 0, 0, 0, 0]; // IPv4-compatible
    if internal {
        Class::Internal
    } else {
        Class::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"] {
            assert_eq!(class(public.parse().unwrap()), Class::Public, "{public}");
        }
        for lo in ["127.0.0.1", "127.8.9.10", "::1"] {
            assert_eq!(class(lo.parse().unwrap()), Class::Loopback, "{lo}");
        }
        for internal in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2002:a00:1::",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert_ne!(class(internal.parse().unwrap()), Class::Public, "{internal}");
        }
    }

    #[test]
    fn parse_wants_https_and_a_plain_host() {
        let strict = HookConfig::default();
        assert!(parse("https://hooks.example.com/atelier?x=1", &strict).is_ok());
        assert_eq!(parse("http://hooks.example.com/", &strict).unwrap_err().code, ErrorCode::WebhookUrlNotAllowed);
        assert_eq!(parse("ftp://hooks.example.com/", &strict).unwrap_err().code, ErrorCode::WebhookUrlNotAllowed);
        assert_eq!(parse("https://user:pw@hooks.example.com/", &strict).unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(parse("not a url", &strict).unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(parse(&format!("https://a.example/{}", "x".repeat(MAX_URL_LEN)), &strict).unwrap_err().code, ErrorCode::InvalidInput);
        let dev = HookConfig { allow_loopback: true, ..HookConfig::default() };
        assert!(parse("http://127.0.0.1:9000/", &dev).is_ok());
    }

    #[tokio::test]
    async fn literal_addresses_follow_the_operator_switches() {
        let strict = HookConfig::default();
        let refused = |r: Result<Vec<SocketAddr>, Error>| r.unwrap_err().code == ErrorCode::WebhookUrlNotAllowed;
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(refused(resolve(&url("https://127.0.0.1/"), &strict).await));
        assert!(refused(resolve(&url("https://[::1]/"), &strict).await));
        assert!(refused(resolve(&url("https://10.0.0.8/"), &strict).await));
        assert!(refused(resolve(&url("https://169.254.169.254/latest/meta-data"), &strict).await));
        assert_eq!(resolve(&url("https://93.184.216.34:8443/"), &strict).await.unwrap(), vec!["93.184.216.34:8443".parse().unwrap()]);
        let dev = HookConfig { allow_loopback: true, ..HookConfig::default() };
        assert!(resolve(&url("http://127.0.0.1:9000/"), &dev).await.is_ok());
        assert!(refused(resolve(&url("http://10.0.0.8/"), &dev).await), "the dev switch opens loopback only");
        assert!(refused(resolve(&url("http://93.184.216.34/"), &dev).await), "plain http only to loopback");
        let private = HookConfig { allow_private: true, ..HookConfig::default() };
        assert!(resolve(&url("https://10.0.0.8/"), &private).await.is_ok());
        assert!(refused(resolve(&url("http://10.0.0.8/"), &private).await), "still https only");
    }
}
