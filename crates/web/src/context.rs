//! Per-request context: cookies, the signed-in user, the CSRF token and the
//! language, resolved once by a middleware and read by extractors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::{Error, ErrorCode};
use store::{Session, User};

use crate::auth::{new_token, token_hash};
use crate::error::ApiError;
use crate::i18n::{I18n, Lang};
use crate::AppState;

pub const SESSION_COOKIE: &str = "atelier_session";
pub const CSRF_COOKIE: &str = "atelier_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Clone)]
pub struct Ctx {
    pub user: Option<User>,
    /// The signed-in session (for the security page and re-authentication).
    pub session: Option<Session>,
    pub session_token: Option<String>,
    /// The double-submit token: the cookie's value, echoed in forms and the
    /// `X-CSRF-Token` header.
    pub csrf: String,
    pub lang: &'static Lang,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// Consent, GPC and policy-banner state, filled by `consent::track`.
    pub privacy: crate::consent::PrivacyCtx,
    /// `light` or `dark` when chosen; otherwise the system's.
    pub theme: Option<&'static str>,
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, http_only: bool, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age_secs}; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are URL-safe")
}

/// Resolves the context and makes sure the visitor has a CSRF cookie (an
/// essential cookie: it protects the sign-in form itself).
pub async fn attach(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let session_token = cookie(headers, SESSION_COOKIE).filter(|t| t.len() <= 64).map(str::to_string);
    let existing_csrf = cookie(headers, CSRF_COOKIE).filter(|t| t.len() == 43).map(str::to_string);
    let csrf = existing_csrf.clone().unwrap_or_else(new_token);
    let theme = crate::theme::chosen(headers);
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let accept_language = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = client_ip(peer, headers, &state.config.trusted_proxies);

    let signed_in = match &session_token {
        Some(token) => match state.store.session_by_token_hash(&token_hash(token), store::now_ms()).await {
            Ok(found) => found.filter(|(_, user)| user.status == "active"),
            Err(e) => return ApiError(e).into_response(),
        },
        None => None,
    };
    let (session, user) = match signed_in {
        Some((session, user)) => (Some(session), Some(user)),
        None => (None, None),
    };
    // "Last seen" for the sessions list, written at most once a minute.
    if let Some(s) = &session {
        let now = store::now_ms();
        if now - s.last_seen_at > 60_000 {
            if let Err(e) = state.store.touch_session(&s.id, now).await {
                tracing::warn!(error = %e, "session last-seen not updated");
            }
        }
    }
    let i18n = I18n::global();
    let lang = match user.as_ref().and_then(|u| u.locale.as_deref()) {
        Some(locale) => i18n.lang(locale),
        None => i18n.negotiate(&accept_language),
    };
    let session_token = session_token.filter(|_| user.is_some());
    request.extensions_mut().insert(Ctx {
        user,
        session,
        session_token,
        csrf: csrf.clone(),
        lang,
        ip,
        user_agent,
        privacy: Default::default(),
        theme,
    });

    let mut response = next.run(request).await;
    let csrf_prefix = format!("{CSRF_COOKIE}=");
    let handler_set_csrf = response.headers().get_all(header::SET_COOKIE).iter().any(|v| v.as_bytes().starts_with(csrf_prefix.as_bytes()));
    if existing_csrf.is_none() && !handler_set_csrf {
        response.headers_mut().append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, &csrf, 30 * 86_400, true, state.config.https));
    }
    response
}

/// An address block (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an IP address or CIDR block");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, net_len), (addr, addr_len)) = (bits(self.network), bits(ip.to_canonical()));
        if net_len != addr_len {
            return false;
        }
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        net & mask == addr & mask
    }
}

/// The client's address. Forwarding headers count only when the TCP peer is
/// a configured trusted proxy (anyone else could write them): then
/// `CF-Connecting-IP`, else the right-most `X-Forwarded-For` entry that is
/// not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let header_ip = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<IpAddr>().ok());
    if let Some(ip) = header_ip("cf-connecting-ip") {
        return Some(ip.to_canonical());
    }
    let hops: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A malformed entry ends the chain: nothing left of it can be trusted.
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| ApiError(Error::internal("request context missing")))
    }
}

/// Compares in constant time: the token must not leak through timing.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in user for the JSON API. State-changing methods must echo the
/// CSRF cookie in `X-CSRF-Token`: cookies ride along on cross-site requests,
/// custom headers do not.
pub struct ApiUser {
    pub user: User,
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // An API key (`Authorization: Bearer atl_…`) rides on no cookie, so
        // it needs no CSRF token; a revoked or unknown key is refused at once.
        if let Some(token) = crate::api_keys::bearer(parts) {
            let (_, user) = crate::api_keys::authenticate(state, token).await?;
            return Ok(ApiUser { user });
        }
        let ctx = Ctx::from_request_parts(parts, state).await?;
        let Some(user) = ctx.user.clone() else {
            return Err(ApiError(Error::new(ErrorCode::Unauthenticated, "sign in first")));
        };
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !tokens_match(sent, &ctx.csrf) {
                return Err(ApiError(Error::new(ErrorCode::CsrfFailed, "missing or wrong X-CSRF-Token header")));
            }
        }
        Ok(ApiUser { user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn c18_cidr_blocks_match_v4_v6_and_mapped_addresses() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy").is_err());
    }

    #[test]
    fn c18_forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(client_ip(Some(stranger), &xff, &trusted), Some(stranger), "spoofed header ignored");
        assert_eq!(client_ip(Some(proxy), &xff, &trusted), Some("198.51.100.7".parse().unwrap()), "right-most untrusted hop");
        let cf = headers(&[("cf-connecting-ip", "2001:db8::7"), ("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_ip(Some(proxy), &cf, &trusted), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &trusted), Some(proxy), "no header: the proxy itself");
        let junk = headers(&[("x-forwarded-for", "1.1.1.1, garbage")]);
        assert_eq!(client_ip(Some(proxy), &junk, &trusted), Some(proxy));
        assert_eq!(client_ip(None, &xff, &trusted), None);
    }
}
