//! Prometheus `/metrics` (text format 0.0.4): the process counters of the
//! `metrics` crate, and gauges read at scrape time from the store (tasks by
//! status, model and engine; queue depth and age; outbox backlog) and from
//! the engine router (in-flight calls, breaker state, call counts).
//!
//! Served on a listener of its own (`[metrics] listen`) and/or on the main
//! listener behind `Authorization: Bearer <metrics.token>`; off when
//! neither is configured. No label carries personal data: routes are
//! templates, models and engines are names from the configuration (any
//! other value a client sent is `other`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use domain::{Error, ErrorCode};
use metrics::Exposition;
use store::Store;

use crate::context::tokens_match;
use crate::error::ApiError;
use crate::AppState;

/// What a scrape reads, on any node kind (web or worker).
#[derive(Clone)]
pub struct MetricsSource {
    pub store: Store,
    pub engines: Arc<engines::Router>,
    /// Model and engine names label values may carry.
    known: Arc<BTreeSet<String>>,
    /// Required as `Authorization: Bearer …` when set.
    token: Option<String>,
}

impl MetricsSource {
    pub fn new(store: Store, engines: Arc<engines::Router>, token: Option<String>) -> MetricsSource {
        let mut known: BTreeSet<String> = engines.models().into_iter().collect();
        for h in engines.health() {
            known.insert(h.name);
            known.insert(h.model);
        }
        known.extend(crate::openai::MODELS.iter().map(|m| m.to_string()));
        MetricsSource { store, engines, known: Arc::new(known), token: token.filter(|t| !t.is_empty()) }
    }

    /// A configured name (or a comma-joined list of them) as it is; any
    /// other value, which a client may have chosen, as `other`.
    fn name_label(&self, value: Option<&str>) -> String {
        match value {
            None | Some("") => "none".into(),
            Some(v) if v.split(',').all(|part| self.known.contains(part)) => v.to_string(),
            Some(_) => "other".into(),
        }
    }

    /// The whole exposition as of now.
    pub async fn render(&self) -> Result<String, Error> {
        let now = store::now_ms();
        let age = |oldest: Option<i64>| oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        let mut out = Exposition::new();
        metrics::write_process_metrics(&mut out);

        // Several raw values may fold into one label set (`other`).
        let mut tasks: std::collections::BTreeMap<(String, String, String), i64> = Default::default();
        for row in self.store.task_counts().await? {
            *tasks.entry((row.status, self.name_label(row.model.as_deref()), self.name_label(row.provider.as_deref()))).or_default() +=
                row.count;
        }
        out.gauge(
            "atelier_tasks",
            "Tasks in the database, by status, model and engine.",
            tasks
                .into_iter()
                .map(|((status, model, engine), n)| (vec![("status", status), ("model", model), ("engine", engine)], n as f64)),
        );
        let queue = self.store.queue_backlog().await?;
        out.gauge("atelier_queue_depth", "Tasks waiting in the queue.", [(vec![], queue.count as f64)]);
        out.gauge("atelier_queue_oldest_age_seconds", "Age of the oldest queued task (0 when none).", [(vec![], age(queue.oldest_at))]);
        let outbox = self.store.outbox_backlog().await?;
        out.gauge("atelier_outbox_backlog", "Mail waiting in the outbox.", [(vec![], outbox.count as f64)]);
        out.gauge("atelier_outbox_oldest_age_seconds", "Age of the oldest mail waiting (0 when none).", [(vec![], age(outbox.oldest_at))]);

        let health = self.engines.health();
        let per = |f: &dyn Fn(&engines::ProviderHealth) -> f64| -> Vec<(Vec<(&'static str, String)>, f64)> {
            health.iter().map(|h| (vec![("provider", h.name.clone())], f(h))).collect()
        };
        out.gauge("atelier_provider_in_flight", "Engine calls in flight, by provider.", per(&|h| h.in_flight as f64));
        out.gauge("atelier_provider_waiting", "Engine calls waiting for a concurrency slot, by provider.", per(&|h| h.waiting as f64));
        out.gauge("atelier_provider_max_concurrency", "Concurrency cap, by provider.", per(&|h| h.max_concurrency as f64));
        out.gauge(
            "atelier_provider_consecutive_failures",
            "Failures since the last success, by provider.",
            per(&|h| f64::from(h.consecutive_failures)),
        );
        out.gauge(
            "atelier_provider_breaker_state",
            "Circuit breaker state, by provider: 1 for the current state (closed, open, half_open).",
            health.iter().flat_map(|h| {
                ["closed", "open", "half_open"]
                    .into_iter()
                    .map(|s| (vec![("provider", h.name.clone()), ("state", s.to_string())], f64::from(u8::from(h.state == s))))
            }),
        );
        out.counter(
            "atelier_provider_calls_total",
            "Engine calls finished by this process, by provider and result.",
            health.iter().flat_map(|h| {
                [("succeeded", h.succeeded), ("failed", h.failed)]
                    .into_iter()
                    .map(|(result, n)| (vec![("provider", h.name.clone()), ("result", result.to_string())], n as f64))
            }),
        );
        Ok(out.finish())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '));
        matches!(sent, Some((scheme, sent)) if scheme.eq_ignore_ascii_case("bearer") && tokens_match(sent.trim(), token))
    }

    async fn respond(&self, headers: &HeaderMap) -> Response {
        if !self.authorized(headers) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                ApiError(Error::new(ErrorCode::Unauthenticated, "a valid metrics token is required")),
            )
                .into_response();
        }
        match self.render().await {
            Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
            Err(e) => ApiError(e).into_response(),
        }
    }
}

/// `/metrics` on the main listener: only with `metrics.token` configured.
pub async fn scrape(State(state): State<AppState>, ctx: crate::context::Ctx, headers: HeaderMap) -> Response {
    let token = &state.config.metrics_token;
    if token.is_empty() {
        return crate::pages::not_found_page(&ctx);
    }
    MetricsSource::new(state.store.clone(), state.engines.clone(), Some(token.clone())).respond(&headers).await
}

/// The router of the metrics listener: `/metrics` only.
pub fn listener_router(source: MetricsSource) -> Router {
    Router::new()
        .route("/metrics", get(|State(source): State<MetricsSource>, headers: HeaderMap| async move { source.respond(&headers).await }))
        .with_state(source)
}

/// Counts every answered request under its route template (`unmatched`
/// for paths no route knows) and times it to the response head.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            request.method().as_str().to_string()
        }
        _ => "other".to_string(),
    };
    let began = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::HTTP_DURATION.observe(&[&route, &method], began.elapsed().as_secs_f64());
    metrics::HTTP_REQUESTS.inc(&[&route, &method, &status]);
    response
}
