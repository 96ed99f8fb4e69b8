//! The HTTP surface: native JSON API, server-rendered pages, sign-up and
//! sign-in, SSE task progress, ops probes. Nothing below this crate knows HTTP.

mod account_security;
mod actions;
mod admin;
mod api;
mod api_keys;
pub mod auth;
mod auth_pages;
mod billing;
mod consent;
mod context;
mod deletion;
mod error;
mod gallery;
mod generate;
pub mod hooks;
pub mod i18n;
mod legal;
mod moderation;
mod openai;
mod pages;
mod privacy_center;
mod privacy_settings;
mod prometheus;
mod ratelimit;
mod retention;
mod rights_admin;
mod security;
mod share;
mod sse;
mod support;
mod tags;
mod theme;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use blobs::BlobStore;
use domain::params::Limits;
use store::Store;
use worker::TaskHub;

pub use auth::clock::Clock;
pub use auth::providers::Provider;
pub use auth::{hash_password, AuthConfig, PASSWORD_PARAMS};
pub use context::Cidr;
pub use error::ApiError;
pub use moderation::{built_in_rules, parse_rules, ExternalModeration, ModerationConfig};
pub use prometheus::{listener_router as metrics_listener_router, MetricsSource};
pub use ratelimit::{Limit, RateLimits};
pub use tags::{OperatorTag, TagCategory};

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Reached over HTTPS (directly or through a TLS-terminating proxy):
    /// cookies are `Secure` and responses carry HSTS.
    pub https: bool,
    pub session_ttl_ms: i64,
    pub limits: Limits,
    pub min_age: u32,
    pub max_attempts: i64,
    pub body_limit_bytes: usize,
    /// Engine name and model recorded on tasks.
    pub provider: String,
    pub model: String,
    /// Routed model names (`*`: any other name) and their providers, as
    /// `/v1/models` lists them.
    pub models: Vec<(String, Vec<String>)>,
    /// Base URL people reach Atelier at, for links in mails and OAuth
    /// redirect URIs (never taken from a request's Host header).
    pub public_url: String,
    /// Sign-in providers, throttling, token lifetimes.
    pub auth: AuthConfig,
    /// Time source of sign-in rules; tests move a manual clock.
    pub clock: Clock,
    /// Credits, prices, packs and plans, payment providers (off by default).
    pub billing: ::billing::BillingConfig,
    /// Limits for uploaded images (bytes, sides, pixels), checked before decoding.
    pub decode_limits: imaging::DecodeLimits,
    /// Long side of upload thumbnails.
    pub thumbnail_side: u32,
    /// Content rules and the external moderation endpoint (C40).
    pub moderation: ModerationConfig,
    /// Token buckets per IP, account and API key (C18).
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` / `CF-Connecting-IP` name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// The first account to sign up on an empty instance becomes an admin.
    pub first_sign_up_is_admin: bool,
    /// Retention windows, grace periods and policy contacts.
    pub privacy: ::privacy::PrivacyConfig,
    /// Days an unsaved output is kept, as the policy states it.
    pub unsaved_retention_days: u32,
    /// The SMTP relay mail goes through (empty: none), named in the policy.
    pub smtp_host: String,
    /// Third-party scripts loaded with consent (`[[tags]]`), named in the policy.
    pub tags: Vec<OperatorTag>,
    /// Bearer token of `/metrics` on this listener; empty: not served here.
    pub metrics_token: String,
    /// Completion webhooks: where they may go, retries, the resolver.
    pub hooks: hooks::HookConfig,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            https: false,
            session_ttl_ms: 30 * 86_400_000,
            limits: Limits::default(),
            min_age: domain::account::MIN_AGE,
            max_attempts: 3,
            body_limit_bytes: 1 << 20,
            provider: "procedural".into(),
            model: "atelier-procedural-v0".into(),
            models: vec![("*".into(), vec!["procedural".into()])],
            public_url: "http://localhost:8080".into(),
            auth: AuthConfig::default(),
            clock: Clock::system(),
            billing: ::billing::BillingConfig::default(),
            decode_limits: imaging::DecodeLimits::default(),
            thumbnail_side: 384,
            moderation: ModerationConfig::default(),
            rate_limits: RateLimits::default(),
            trusted_proxies: Vec::new(),
            first_sign_up_is_admin: false,
            privacy: ::privacy::PrivacyConfig::default(),
            unsaved_retention_days: 30,
            smtp_host: String::new(),
            tags: Vec::new(),
            metrics_token: String::new(),
            hooks: hooks::HookConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Objects, sealed with their owner's data key on the way in.
    pub blobs: Arc<dyn BlobStore>,
    /// The same objects as stored (ciphertext): what a purge lists and
    /// deletes, and where tombstones live.
    pub objects: Arc<dyn BlobStore>,
    pub hub: TaskHub,
    /// The engine router the workers of this node use; admins see its health.
    pub engines: Arc<engines::Router>,
    pub config: Arc<WebConfig>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    // Uploads may be as large as the image byte limit (plus multipart framing);
    // a body over it is refused before it is read in full.
    let upload_body_limit = usize::try_from(state.config.decode_limits.max_bytes).unwrap_or(usize::MAX).saturating_add(64 << 10);
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(prometheus::scrape))
        .route("/api/v1/tasks", post(api::submit_task).get(api::list_tasks))
        .route("/api/v1/tasks/{id}", get(api::get_task))
        .route("/api/v1/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/v1/tasks/{id}/events", get(sse::task_events))
        .route("/api/v1/assets/{id}", get(api::download_asset).delete(api::delete_asset))
        .route("/api/v1/account", get(api::get_account).patch(api::update_account))
        .route("/api/v1/admin/audit", get(admin::audit_log))
        .route("/api/v1/admin/users", get(admin::api_users))
        .route("/api/v1/admin/users/{id}", get(admin::api_user))
        .route("/api/v1/admin/users/{id}/role", post(admin::api_set_role))
        .route("/api/v1/admin/users/{id}/{action}", post(admin::api_user_action))
        .route("/api/v1/admin/stats", get(admin::api_stats))
        .route("/api/v1/admin/reports", get(admin::api_reports))
        .route("/api/v1/admin/reports/{id}/image", get(admin::api_report_image))
        .route("/api/v1/admin/reports/{id}/actions", post(admin::api_report_action))
        .route("/api/v1/admin/moderation/events", get(admin::api_moderation_events))
        .route("/api/v1/admin/moderation/events/{id}/reviewed", post(admin::api_event_reviewed))
        .route("/api/v1/reports", post(admin::create_report))
        .route("/admin", get(admin::dashboard))
        .route("/admin/users", get(admin::users_page))
        .route("/admin/users/{id}", get(admin::user_page))
        .route("/admin/users/{id}/action", post(admin::user_action_form))
        .route("/admin/moderation", get(admin::moderation_page))
        .route("/admin/reports/{id}/image", get(admin::report_image_page))
        .route("/admin/reports/{id}/action", post(admin::report_action_form))
        .route("/admin/moderation/events/{id}/reviewed", post(admin::event_reviewed_form))
        .route("/", get(pages::home))
        .route("/api/v1/account/sessions", get(account_security::list_sessions))
        .route("/api/v1/account/sessions/{id}", axum::routing::delete(account_security::delete_session))
        .route("/signup", get(auth_pages::signup_form).post(auth_pages::signup))
        .route("/signup/sent", get(auth_pages::signup_sent))
        .route("/signup/complete", get(auth_pages::complete_signup_form).post(auth_pages::complete_signup))
        .route("/signin", get(auth_pages::signin_form).post(auth_pages::signin))
        .route("/signin/2fa", get(auth_pages::second_factor_form).post(auth_pages::second_factor))
        .route("/signout", post(auth_pages::signout))
        .route("/verify-email", get(auth_pages::verify_email_page).post(auth_pages::verify_email))
        .route("/reset-password", get(auth_pages::reset_page).post(auth_pages::reset))
        .route("/reset-password/sent", get(auth_pages::reset_sent))
        .route("/auth/link", get(auth_pages::link_page).post(auth_pages::confirm_link))
        .route("/auth/{provider}/start", post(auth_pages::external_start))
        .route("/auth/{provider}/callback", get(auth_pages::external_callback))
        .route("/account/security", get(account_security::security_page))
        .route("/account/security/sessions/revoke-others", post(account_security::revoke_other_sessions))
        .route("/account/security/sessions/{id}/revoke", post(account_security::revoke_session))
        .route("/account/security/password", post(account_security::change_password))
        .route("/account/security/totp/setup", post(account_security::totp_setup))
        .route("/account/security/totp/enable", post(account_security::totp_enable))
        .route("/account/security/totp/disable", post(account_security::totp_disable))
        .route("/account/security/identities/{id}/unlink", post(account_security::unlink_identity))
        .route("/account/email", get(account_security::email_form).post(account_security::request_email_change))
        .route("/account/email/confirm", get(account_security::email_confirm_page).post(account_security::email_confirm))
        .route(
            "/account/avatar",
            get(account_security::avatar)
                .post(account_security::upload_avatar)
                .layer(DefaultBodyLimit::max(account_security::AVATAR_MAX_BYTES + (64 << 10))),
        )
        .route("/generate", get(generate::generate_form).post(generate::generate))
        .route("/static/styles/{file}", get(generate::style_preview))
        .route("/tasks/{id}", get(pages::task_page))
        .route("/api/v1/events", get(sse::account_events))
        .route("/gallery", get(gallery::gallery))
        .route("/gallery/delete", post(gallery::delete_selected))
        .route("/api/v1/gallery", get(gallery::api_gallery))
        .route("/images/{id}/variations", post(actions::variation_form))
        .route("/images/{id}/share", post(share::share_form))
        .route("/api/v1/images/{id}/share", get(share::api_get).post(share::api_create).delete(share::api_revoke))
        .route("/s/{token}", get(share::shared_view))
        .route("/s/{token}/image", get(share::shared_image))
        .route("/s/{token}/report", post(share::report))
        .route("/images/{id}", get(pages::image_page))
        .route("/images/{id}/delete", post(pages::delete_image_form))
        .route("/images/{id}/save", post(retention::save_form))
        .route("/account/delete", get(deletion::delete_form).post(deletion::delete_account))
        .route("/account/delete/cancel", get(deletion::cancel_page).post(deletion::cancel))
        .route("/support", get(support::support_page).post(support::create_ticket))
        .route("/report-child", get(support::report_form).post(support::report_child))
        .route("/admin/child-reports", get(support::admin_reports))
        .route("/admin/child-reports/{id}/confirm", post(support::confirm_report))
        .route("/admin/child-reports/{id}/dismiss", post(support::dismiss_report))
        .route("/images/{id}/upscale", post(actions::upscale_form))
        .route("/images/{id}/restyle", post(actions::restyle_form))
        .route("/api/v1/uploads", post(actions::upload).layer(DefaultBodyLimit::max(upload_body_limit)))
        .route("/api/v1/images/{id}/upscale", post(actions::api_upscale))
        .route("/api/v1/images/{id}/restyle", post(actions::api_restyle))
        .route("/api/v1/images/{id}/variations", post(actions::api_variation))
        .route("/api/v1/images/{id}/edits", post(actions::api_edit))
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
        .route("/openapi.json", get(openai::openapi))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/images/generations", post(openai::generations))
        .route("/v1/images/edits", post(openai::edits).layer(DefaultBodyLimit::max(upload_body_limit.saturating_mul(18))))
        .route("/v1/images/variations", post(openai::variations).layer(DefaultBodyLimit::max(upload_body_limit.saturating_mul(2))))
        .route("/v1/files/{id}", get(openai::download))
        .route("/v1/{*rest}", axum::routing::any(openai::not_found))
        .route("/account/api-keys", get(api_keys::keys_page).post(api_keys::create_form))
        .route("/account/api-keys/{id}/revoke", post(api_keys::revoke_form))
        .route("/api/v1/api-keys", get(api_keys::api_list).post(api_keys::api_create))
        .route("/api/v1/api-keys/{id}", axum::routing::delete(api_keys::api_revoke))
        .route("/account/webhooks", get(hooks::webhooks_page).post(hooks::create_form))
        .route("/account/webhooks/{id}/{action}", post(hooks::endpoint_form))
        .route("/api/v1/webhooks", get(hooks::api_list).post(hooks::api_create))
        .route("/api/v1/webhooks/{id}", get(hooks::api_get).patch(hooks::api_update).delete(hooks::api_delete))
        .route("/account/privacy", get(privacy_center::hub))
        .route("/account/privacy/export", post(privacy_center::export_form))
        .route("/account/privacy/exports/{id}/download", get(privacy_center::download_export))
        .route("/account/privacy/requests", post(privacy_center::request_form))
        .route("/api/v1/privacy/exports", get(privacy_center::api_exports).post(privacy_center::api_request_export))
        .route("/api/v1/privacy/requests", get(privacy_center::api_requests).post(privacy_center::api_file_request))
        .route("/admin/requests", get(rights_admin::admin_page).post(rights_admin::log_form))
        .route("/admin/requests/{id}/status", post(rights_admin::status_form))
        .route("/api/v1/admin/requests", get(rights_admin::api_list).post(rights_admin::api_log))
        .route("/api/v1/admin/requests/{id}/status", post(rights_admin::api_status))
        .route("/.well-known/gpc.json", get(consent::gpc_json))
        .route("/consent", get(consent::settings_page).post(consent::choose))
        .route("/theme", post(theme::choose))
        .route("/legal/privacy", get(legal::privacy_policy))
        .route("/legal/cookies", get(legal::cookie_policy))
        .route("/legal/accept", post(legal::accept))
        .route("/admin/policy", get(legal::admin_page).post(legal::publish))
        .route("/admin/marketing", get(privacy_settings::marketing_admin_page).post(privacy_settings::marketing_admin_send))
        .route("/account/privacy/settings", get(privacy_settings::settings_page))
        .route("/account/privacy/restriction", post(privacy_settings::set_restriction))
        .route("/account/privacy/marketing", post(privacy_settings::set_marketing))
        .route("/unsubscribe", get(privacy_settings::unsubscribe_page).post(privacy_settings::unsubscribe))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside `attach`: limits read the client IP and account it resolved.
        .layer(axum::middleware::from_fn_with_state((state.clone(), Arc::new(ratelimit::Limiter::default())), ratelimit::limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), consent::track))
        .layer(axum::middleware::from_fn_with_state(state.clone(), context::attach))
        .layer(axum::middleware::from_fn_with_state(state.clone(), security::headers))
        .layer(axum::middleware::from_fn(prometheus::track))
        .with_state(state)
}
