use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::tags::Injected;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";

/// The policy of a page that carries operator tags: their script origins in
/// `script-src`, the origins they report to in `connect-src` and `img-src`.
fn csp_with(tags: &Injected) -> String {
    let scripts = tags.scripts.join(" ");
    let mut others: Vec<&str> = tags.scripts.iter().chain(&tags.connect).map(String::as_str).collect();
    others.sort_unstable();
    others.dedup();
    let others = others.join(" ");
    format!(
        "default-src 'self'; script-src 'self' {scripts}; style-src 'self'; img-src 'self' data: blob: {others}; connect-src 'self' {others}; \
         form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
    )
}

/// Security headers on every response. Responses carry personal data unless
/// they are static files or probes, so they are not cached by default.
pub async fn headers(State(state): State<crate::AppState>, request: Request, next: Next) -> Response {
    let cacheable = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let csp = match response.extensions().get::<Injected>().map(csp_with).and_then(|p| HeaderValue::from_str(&p).ok()) {
        Some(policy) => policy,
        None => HeaderValue::from_static(CSP),
    };
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    if state.config.https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    if !cacheable && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
