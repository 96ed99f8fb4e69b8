//! Request rate limits (C18): token buckets per client IP, per account and
//! per API key, for four classes of routes (sign-in, sign-up, submit, the
//! rest of the APIs). A request over a limit gets 429 `rate_limited` with
//! `Retry-After` (in OpenAI's shape under `/v1`). The client IP is the one
//! `context` resolved, so a trusted proxy's clients get buckets of their own.
//!
//! Buckets live in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::ids::to_hex;
use domain::rate::Bucket;
use domain::{Error, ErrorCode};
use sha2::{Digest, Sha256};

use crate::context::Ctx;
use crate::error::ApiError;
use crate::AppState;

/// One class's limits: each is the bucket's size, refilled evenly over
/// `window_secs`; 0 turns that bucket off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_ip: u32,
    pub per_account: u32,
    pub per_key: u32,
    pub window_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub enabled: bool,
    pub sign_in: Limit,
    pub sign_up: Limit,
    pub submit: Limit,
    pub api: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            enabled: true,
            sign_in: Limit { per_ip: 10, per_account: 0, per_key: 0, window_secs: 60 },
            sign_up: Limit { per_ip: 20, per_account: 0, per_key: 0, window_secs: 3600 },
            submit: Limit { per_ip: 120, per_account: 60, per_key: 60, window_secs: 60 },
            api: Limit { per_ip: 1200, per_account: 600, per_key: 600, window_secs: 60 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    SignIn,
    SignUp,
    Submit,
    Api,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::SignIn => "sign_in",
            Class::SignUp => "sign_up",
            Class::Submit => "submit",
            Class::Api => "api",
        }
    }
}

/// Which class a request counts against; `None` for pages and assets.
fn classify(method: &Method, path: &str) -> Option<Class> {
    let post = method == Method::POST;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (post, segments.as_slice()) {
        (true, ["signin"] | ["signin", "2fa"]) => Some(Class::SignIn),
        (true, ["signup"] | ["signup", "complete"]) => Some(Class::SignUp),
        (true, ["generate"] | ["api", "v1", "tasks"] | ["api", "v1", "uploads"] | ["v1", "images", _])
        | (true, ["api", "v1", "images", _, _] | ["images", _, "upscale" | "restyle"]) => Some(Class::Submit),
        (_, ["api", ..] | ["v1", ..]) => Some(Class::Api),
        _ => None,
    }
}

/// Buckets by `class:scope:id`. Full buckets are dropped now and then, so
/// memory follows the active clients.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

const PRUNE_AT: usize = 50_000;

impl Limiter {
    /// Takes a token from the bucket, or says how many seconds until one is
    /// there.
    fn take(&self, key: String, size: u32, window_secs: u32, now_ms: i64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| !b.is_full_at(size, window_secs, now_ms));
        }
        let bucket = buckets.entry(key).or_insert(Bucket::full(size, window_secs, now_ms));
        let (after, taken) = bucket.take(size, window_secs, now_ms);
        *bucket = after;
        taken
    }
}

/// The middleware: runs after `context::attach`, which resolved the client
/// IP and the signed-in account.
pub async fn limit(State((state, limiter)): State<(AppState, Arc<Limiter>)>, request: Request, next: Next) -> Response {
    let limits = &state.config.rate_limits;
    let Some(class) = limits.enabled.then(|| classify(request.method(), request.uri().path())).flatten() else {
        return next.run(request).await;
    };
    let limit = match class {
        Class::SignIn => limits.sign_in,
        Class::SignUp => limits.sign_up,
        Class::Submit => limits.submit,
        Class::Api => limits.api,
    };
    let ctx = request.extensions().get::<Ctx>();
    let ip = ctx.and_then(|c| c.ip).map(|ip| ip.to_string());
    // Buckets are named by hashes: a bearer key stays out of memory dumps, and
    // no shared bucket row names an account (an account's purge leaves none behind).
    let hashed = |v: &str| to_hex(&Sha256::digest(v.as_bytes()))[..32].to_string();
    let account = ctx.and_then(|c| c.user.as_ref()).map(|u| hashed(&u.id));
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| hashed(token.trim()));
    let now = state.config.clock.now_ms();
    let scopes = [("ip", ip, limit.per_ip), ("account", account, limit.per_account), ("key", key, limit.per_key)];
    for (scope, id, size) in scopes {
        let Some(id) = id.filter(|_| size > 0) else { continue };
        let bucket = format!("{}:{scope}:{id}", class.name());
        // Several nodes on PostgreSQL share their buckets through it; a
        // database error lets the request through rather than refusing everyone.
        let taken = if state.store.is_postgres() {
            state.store.take_rate_token(&bucket, size, limit.window_secs, now).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "rate limit bucket unavailable");
                Ok(())
            })
        } else {
            limiter.take(bucket, size, limit.window_secs, now)
        };
        if let Err(retry_after) = taken {
            tracing::info!(class = class.name(), scope, "rate limited");
            return too_many(request.uri().path(), retry_after);
        }
    }
    next.run(request).await
}

fn too_many(path: &str, retry_after: u64) -> Response {
    let error =
        Error::new(ErrorCode::RateLimited, format!("too many requests; try again in {retry_after} seconds")).with_retry_after(retry_after);
    let mut response =
        if path.starts_with("/v1/") { crate::openai::OpenAiError::from(error).into_response() } else { ApiError(error).into_response() };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c18_buckets_refill_evenly_over_the_window() {
        let limiter = Limiter::default();
        let t0 = 1_000_000;
        for _ in 0..10 {
            assert_eq!(limiter.take("k".into(), 10, 60, t0), Ok(()));
        }
        // Empty: one token comes back every 6 s.
        assert_eq!(limiter.take("k".into(), 10, 60, t0), Err(6));
        assert_eq!(limiter.take("k".into(), 10, 60, t0 + 3_000), Err(3));
        assert_eq!(limiter.take("k".into(), 10, 60, t0 + 6_000), Ok(()));
        assert_eq!(limiter.take("other".into(), 10, 60, t0), Ok(()), "buckets are separate");
    }

    #[test]
    fn c18_routes_fall_into_their_classes() {
        assert_eq!(classify(&Method::POST, "/signin"), Some(Class::SignIn));
        assert_eq!(classify(&Method::GET, "/signin"), None);
        assert_eq!(classify(&Method::POST, "/signup"), Some(Class::SignUp));
        assert_eq!(classify(&Method::POST, "/api/v1/tasks"), Some(Class::Submit));
        assert_eq!(classify(&Method::POST, "/v1/images/generations"), Some(Class::Submit));
        assert_eq!(classify(&Method::POST, "/images/abc/upscale"), Some(Class::Submit));
        assert_eq!(classify(&Method::POST, "/api/v1/images/abc/edits"), Some(Class::Submit));
        assert_eq!(classify(&Method::GET, "/api/v1/tasks"), Some(Class::Api));
        assert_eq!(classify(&Method::GET, "/v1/models"), Some(Class::Api));
        assert_eq!(classify(&Method::GET, "/gallery"), None);
    }
}
