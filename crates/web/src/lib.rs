//! The HTTP surface: native JSON API, server-rendered pages, sign-up and
//! sign-in, SSE task progress, ops probes. Nothing below this crate knows HTTP.

mod api;
mod api_keys;
mod auth;
mod billing;
mod context;
mod error;
pub mod i18n;
mod openai;
mod pages;
mod security;
mod sse;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use blobs::BlobStore;
use domain::params::Limits;
use store::Store;
use worker::TaskHub;

pub use auth::{hash_password, PASSWORD_PARAMS};
pub use error::ApiError;

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Set `Secure` on cookies (served over TLS or behind a TLS proxy).
    pub secure_cookies: bool,
    pub session_ttl_ms: i64,
    pub limits: Limits,
    pub min_age: u32,
    pub max_attempts: i64,
    pub body_limit_bytes: usize,
    /// Engine name and model recorded on tasks.
    pub provider: String,
    pub model: String,
    /// Credits, prices, packs and plans, payment providers (off by default).
    pub billing: ::billing::BillingConfig,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            secure_cookies: false,
            session_ttl_ms: 30 * 86_400_000,
            limits: Limits::default(),
            min_age: domain::account::MIN_AGE,
            max_attempts: 3,
            body_limit_bytes: 1 << 20,
            provider: "procedural".into(),
            model: "atelier-procedural-v0".into(),
            billing: ::billing::BillingConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub hub: TaskHub,
    pub config: Arc<WebConfig>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/tasks", post(api::submit_task).get(api::list_tasks))
        .route("/api/v1/tasks/{id}", get(api::get_task))
        .route("/api/v1/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/v1/tasks/{id}/events", get(sse::task_events))
        .route("/api/v1/assets/{id}", get(api::download_asset).delete(api::delete_asset))
        .route("/api/v1/account", get(api::get_account).patch(api::update_account))
        .route("/", get(pages::home))
        .route("/signup", get(pages::signup_form).post(pages::signup))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/generate", get(pages::generate_form).post(pages::generate))
        .route("/tasks/{id}", get(pages::task_page))
        .route("/gallery", get(pages::gallery))
        .route("/images/{id}", get(pages::image_page))
        .route("/images/{id}/delete", post(pages::delete_image_form))
        .route("/account", get(pages::account_page).post(pages::update_account))
        .route("/static/{file}", get(pages::static_file))
        .route("/billing", get(billing::billing_page))
        .route("/billing/checkout", post(billing::checkout_form))
        .route("/billing/portal", post(billing::portal_form))
        .route("/admin/credits", get(billing::admin_page).post(billing::admin_adjust_form))
        .route("/api/v1/billing", get(billing::api_billing))
        .route("/api/v1/billing/ledger", get(billing::api_ledger))
        .route("/api/v1/billing/payments", get(billing::api_payments))
        .route("/api/v1/billing/checkout", post(billing::api_checkout))
        .route("/api/v1/admin/credits", get(billing::api_admin_debts))
        .route("/api/v1/admin/credits/{account}", post(billing::api_admin_adjust))
        .route("/webhooks/stripe", post(webhooks::stripe_webhook))
        .route("/webhooks/creem", post(webhooks::creem_webhook))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/images/generations", post(openai::generations))
        .route("/v1/files/{id}", get(openai::download))
        .route("/v1/{*rest}", axum::routing::any(openai::not_found))
        .route("/account/api-keys", get(api_keys::keys_page).post(api_keys::create_form))
        .route("/account/api-keys/{id}/revoke", post(api_keys::revoke_form))
        .route("/api/v1/api-keys", get(api_keys::api_list).post(api_keys::api_create))
        .route("/api/v1/api-keys/{id}", axum::routing::delete(api_keys::api_revoke))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), context::attach))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}
