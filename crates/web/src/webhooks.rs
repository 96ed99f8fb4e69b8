//! `/webhooks/stripe` and `/webhooks/creem`: the raw body is verified
//! against the provider's signature before any JSON parsing, then parsed
//! into an event the store records and applies exactly once (C14). A forged,
//! stale or altered delivery is `400 invalid_signature` and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use billing::{creem, stripe};
use domain::Error;
use serde_json::json;
use store::{BillingAction, BillingEvent, EventOutcome};

use crate::error::ApiResult;
use crate::AppState;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn stripe_webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<serde_json::Value>> {
    let config = &state.config.billing;
    if !config.enabled {
        return Err(Error::not_found().into());
    }
    let now_s = store::now_ms() / 1000;
    stripe::verify_signature(
        header(&headers, "stripe-signature"),
        &body,
        &config.stripe_webhook_secrets(),
        config.stripe_tolerance_seconds,
        now_s,
    )?;
    let event = stripe::parse_event(&body, config, &state.store).await?;
    apply(&state, event).await
}

pub async fn creem_webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<serde_json::Value>> {
    let config = &state.config.billing;
    if !config.enabled {
        return Err(Error::not_found().into());
    }
    creem::verify_signature(header(&headers, "creem-signature"), &body, &config.creem_webhook_secret)?;
    let event = creem::parse_event(&body, config, &state.store).await?;
    apply(&state, event).await
}

/// Adds the buyer's receipt to a grant, applies the event, answers fast.
async fn apply(state: &AppState, mut event: BillingEvent) -> ApiResult<Json<serde_json::Value>> {
    if let BillingAction::Grant { user_id, credits, expires_at, payment, receipt, .. } = &mut event.action {
        if let Some(user) = state.store.user_by_id(user_id).await? {
            *receipt = Some(crate::billing::receipt_mail(state, &user, payment, *credits, *expires_at));
        }
    }
    let (provider, event_id, event_type) = (event.provider.clone(), event.event_id.clone(), event.event_type.clone());
    let outcome = state.store.apply_billing_event(event).await?;
    tracing::info!(provider, event = %event_id, kind = %event_type, ?outcome, "webhook processed");
    let label = match &outcome {
        EventOutcome::Duplicate => "duplicate",
        EventOutcome::Granted { .. } => "granted",
        EventOutcome::AlreadyGranted => "already_granted",
        EventOutcome::RefundedBeforeGrant => "refunded_before_grant",
        EventOutcome::NoAccount => "no_account",
        EventOutcome::TakenBack { .. } => "taken_back",
        EventOutcome::Recorded => "recorded",
    };
    Ok(Json(json!({ "received": true, "outcome": label })))
}
