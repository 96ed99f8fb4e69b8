//! Stripe: hosted Checkout Sessions and the customer portal through Stripe's
//! HTTP API, and webhook verification and parsing.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where each v1
//! is HMAC-SHA256 over `"{t}.{raw body}"` with a signing secret. Several v1
//! values (and several secrets) may be valid at once during rotation.

use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use serde_json::Value;
use store::{BillingAction, BillingEvent, NewPayment, Store, SubscriptionState};

use crate::{constant_time_eq, hmac_sha256_hex, provider_error, summary, BillingConfig, CheckoutRequest, Product};

pub const PROVIDER: &str = "stripe";

fn bad_signature(why: &str) -> Error {
    Error::new(ErrorCode::InvalidSignature, format!("Stripe-Signature refused: {why}"))
}

/// Verifies `header` over the raw `payload` before anything parses it.
/// Returns the signed timestamp.
pub fn verify_signature(header: Option<&str>, payload: &[u8], secrets: &[&str], tolerance_s: i64, now_s: i64) -> Result<i64> {
    let header = header.ok_or_else(|| bad_signature("missing"))?;
    if secrets.is_empty() {
        return Err(bad_signature("no signing secret is configured"));
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => signatures.push(sig.to_ascii_lowercase()),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| bad_signature("no timestamp"))?;
    if signatures.is_empty() {
        return Err(bad_signature("no v1 signature"));
    }
    let t_text = t.to_string();
    let matched = secrets.iter().any(|secret| {
        let expected = hmac_sha256_hex(secret.as_bytes(), &[t_text.as_bytes(), b".", payload]);
        signatures.iter().any(|sig| constant_time_eq(sig.as_bytes(), expected.as_bytes()))
    });
    if !matched {
        return Err(bad_signature("no signature matches"));
    }
    if (now_s - t).abs() > tolerance_s {
        return Err(bad_signature("timestamp outside the tolerance"));
    }
    Ok(t)
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        // Expanded objects carry their id.
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Parses a verified event into what the store applies. Unknown event types
/// are recorded and otherwise ignored.
pub async fn parse_event(payload: &[u8], config: &BillingConfig, store: &Store) -> Result<BillingEvent> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| Error::new(ErrorCode::InvalidJson, e.to_string()))?;
    let event_id = s(&v["id"]).ok_or_else(|| Error::invalid("event without id"))?;
    let event_type = v["type"].as_str().unwrap_or_default().to_string();
    let event_at = v["created"].as_i64().map_or_else(store::now_ms, |t| t * 1000);
    let o = &v["data"]["object"];
    let meta = |o: &Value, k: &str| s(&o["metadata"][k]);
    let now = store::now_ms();

    let action = match event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let paid = o["payment_status"] == "paid" || event_type == "checkout.session.async_payment_succeeded";
            let user_id = meta(o, "user_id").or_else(|| s(&o["client_reference_id"]));
            let product = meta(o, "product").and_then(|k| config.product(&k));
            match (paid, user_id, product) {
                (true, Some(user_id), Some(product)) => {
                    let amount_minor = o["amount_total"].as_i64().unwrap_or(product.price_minor());
                    let currency = s(&o["currency"]).unwrap_or_else(|| config.currency.clone());
                    match product {
                        Product::Pack(pack) => BillingAction::Grant {
                            user_id,
                            credits: pack.credits,
                            source: "pack".into(),
                            reason: product.key(),
                            expires_at: (pack.valid_days > 0).then(|| now + i64::from(pack.valid_days) * 86_400_000),
                            payment: NewPayment {
                                provider: PROVIDER.into(),
                                reference: s(&o["id"]).unwrap_or_default(),
                                payment_ref: s(&o["payment_intent"]),
                                product: product.key(),
                                amount_minor,
                                currency,
                            },
                            subscription: None,
                            receipt: None,
                        },
                        Product::Plan(plan) => {
                            // The first period's invoice: `invoice.paid` reports the
                            // same purchase; both are keyed by the invoice id.
                            let invoice = s(&o["invoice"]).or_else(|| s(&o["id"])).unwrap_or_default();
                            BillingAction::Grant {
                                user_id: user_id.clone(),
                                credits: plan.monthly_credits,
                                source: "plan".into(),
                                reason: product.key(),
                                expires_at: Some(now + 31 * 86_400_000),
                                payment: NewPayment {
                                    provider: PROVIDER.into(),
                                    reference: invoice.clone(),
                                    payment_ref: Some(invoice),
                                    product: product.key(),
                                    amount_minor,
                                    currency,
                                },
                                subscription: s(&o["subscription"]).map(|external_id| SubscriptionState {
                                    provider: PROVIDER.into(),
                                    external_id,
                                    user_id: Some(user_id),
                                    plan: Some(plan.id.clone()),
                                    customer_id: s(&o["customer"]),
                                    status: "active".into(),
                                    current_period_end: None,
                                    event_at,
                                }),
                                receipt: None,
                            }
                        }
                    }
                }
                (true, _, _) => {
                    tracing::warn!(event = %event_id, "paid checkout without our account or product metadata; nothing granted");
                    BillingAction::Nothing
                }
                // Paid later (bank debits …): `async_payment_succeeded` grants.
                (false, _, _) => BillingAction::Nothing,
            }
        }
        "invoice.paid" => {
            let subscription_id = s(&o["subscription"]).or_else(|| s(&o["parent"]["subscription_details"]["subscription"]));
            let line = &o["lines"]["data"][0];
            let meta_of = |k: &str| {
                s(&o["parent"]["subscription_details"]["metadata"][k])
                    .or_else(|| s(&o["subscription_details"]["metadata"][k]))
                    .or_else(|| s(&line["metadata"][k]))
            };
            let mut user_id = meta_of("user_id");
            let mut product = meta_of("product").and_then(|k| config.product(&k));
            if let Some(sub) = &subscription_id {
                if user_id.is_none() || product.is_none() {
                    if let Some((owner, plan)) = store.subscription_owner(PROVIDER, sub).await? {
                        user_id = user_id.or(Some(owner));
                        product = product.or_else(|| config.product(&format!("plan:{plan}")));
                    }
                }
            }
            if product.is_none() {
                let price = s(&line["price"]["id"]).or_else(|| s(&line["pricing"]["price_details"]["price"])).unwrap_or_default();
                product = config.product_by_provider_id(PROVIDER, &price);
            }
            match (subscription_id, user_id, product) {
                (Some(sub), Some(user_id), Some(Product::Plan(plan))) => {
                    let period_end = line["period"]["end"].as_i64().or_else(|| o["period_end"].as_i64()).map(|t| t * 1000);
                    let invoice = s(&o["id"]).unwrap_or_default();
                    BillingAction::Grant {
                        user_id: user_id.clone(),
                        credits: plan.monthly_credits,
                        source: "plan".into(),
                        reason: format!("plan:{}", plan.id),
                        expires_at: Some(period_end.unwrap_or(now + 31 * 86_400_000)),
                        payment: NewPayment {
                            provider: PROVIDER.into(),
                            reference: invoice.clone(),
                            payment_ref: s(&o["payment_intent"]).or(Some(invoice)),
                            product: format!("plan:{}", plan.id),
                            amount_minor: o["amount_paid"].as_i64().unwrap_or(plan.price_minor),
                            currency: s(&o["currency"]).unwrap_or_else(|| config.currency.clone()),
                        },
                        subscription: Some(SubscriptionState {
                            provider: PROVIDER.into(),
                            external_id: sub,
                            user_id: Some(user_id),
                            plan: Some(plan.id.clone()),
                            customer_id: s(&o["customer"]),
                            status: "active".into(),
                            current_period_end: period_end,
                            event_at,
                        }),
                        receipt: None,
                    }
                }
                _ => {
                    tracing::warn!(event = %event_id, "paid invoice not tied to one of our plans; nothing granted");
                    BillingAction::Nothing
                }
            }
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            let status =
                if event_type == "customer.subscription.deleted" { "canceled".to_string() } else { s(&o["status"]).unwrap_or_default() };
            let period_end =
                o["current_period_end"].as_i64().or_else(|| o["items"]["data"][0]["current_period_end"].as_i64()).map(|t| t * 1000);
            let plan = meta(o, "product").and_then(|k| config.product(&k)).and_then(|p| match p {
                Product::Plan(plan) => Some(plan.id.clone()),
                Product::Pack(_) => None,
            });
            BillingAction::Subscription(SubscriptionState {
                provider: PROVIDER.into(),
                external_id: s(&o["id"]).unwrap_or_default(),
                user_id: meta(o, "user_id"),
                plan,
                customer_id: s(&o["customer"]),
                status,
                current_period_end: period_end,
                event_at,
            })
        }
        "charge.refunded" => match s(&o["payment_intent"]).or_else(|| s(&o["invoice"])) {
            Some(payment_ref) => BillingAction::TakeBack {
                provider: PROVIDER.into(),
                payment_ref,
                refunded_minor: if o["refunded"] == true { None } else { o["amount_refunded"].as_i64() },
                dispute: false,
            },
            None => BillingAction::Nothing,
        },
        "charge.dispute.created" => match s(&o["payment_intent"]).or_else(|| s(&o["charge"])) {
            Some(payment_ref) => BillingAction::TakeBack { provider: PROVIDER.into(), payment_ref, refunded_minor: None, dispute: true },
            None => BillingAction::Nothing,
        },
        _ => BillingAction::Nothing,
    };
    let summary = summary(&[
        ("type", Some(event_type.clone())),
        ("object", s(&o["id"])),
        ("mode", s(&o["mode"])),
        ("payment_status", s(&o["payment_status"])),
        ("status", s(&o["status"])),
        ("amount", o["amount_total"].as_i64().or(o["amount_paid"].as_i64()).or(o["amount"].as_i64()).map(|a| a.to_string())),
        ("amount_refunded", o["amount_refunded"].as_i64().map(|a| a.to_string())),
        ("currency", s(&o["currency"])),
        ("payment_intent", s(&o["payment_intent"])),
        ("invoice", s(&o["invoice"])),
        ("subscription", s(&o["subscription"])),
        ("customer", s(&o["customer"])),
        ("user_id", meta(o, "user_id").or_else(|| s(&o["client_reference_id"]))),
        ("product", meta(o, "product")),
    ]);
    Ok(BillingEvent { provider: PROVIDER.into(), event_id, event_type, summary, action })
}

/// Stripe's HTTP API (its base URL is configurable: tests point it at a
/// local server speaking the same protocol).
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub id: String,
    pub url: String,
}

impl StripeClient {
    pub fn new(config: &BillingConfig) -> StripeClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        StripeClient { http, base: config.stripe_api_base.trim_end_matches('/').to_string(), secret_key: config.stripe_secret_key.clone() }
    }

    async fn post_form(&self, path: &str, form: &[(String, String)]) -> Result<Value> {
        let body =
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter().map(|(k, v)| (k.as_str(), v.as_str()))).finish();
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| provider_error(PROVIDER, e))?;
        let status = response.status();
        let json: Value = response.json().await.map_err(|e| provider_error(PROVIDER, e))?;
        if !status.is_success() {
            return Err(provider_error(PROVIDER, format!("{status}: {}", json["error"]["message"].as_str().unwrap_or("no message"))));
        }
        Ok(json)
    }

    /// A hosted Checkout Session: payment mode for packs, subscription mode
    /// for plans. The account id rides in `client_reference_id` and metadata
    /// (on the subscription too, so renewals carry it); nothing else about
    /// the person is sent.
    pub async fn create_checkout(&self, request: &CheckoutRequest<'_>, currency: &str) -> Result<Checkout> {
        let product = &request.product;
        let mut form: Vec<(String, String)> = vec![
            ("mode".into(), if matches!(product, Product::Plan(_)) { "subscription" } else { "payment" }.into()),
            ("success_url".into(), request.success_url.clone()),
            ("cancel_url".into(), request.cancel_url.clone()),
            ("client_reference_id".into(), request.user_id.into()),
            ("metadata[user_id]".into(), request.user_id.into()),
            ("metadata[product]".into(), product.key()),
            ("line_items[0][quantity]".into(), "1".into()),
        ];
        if product.stripe_price().is_empty() {
            form.push(("line_items[0][price_data][currency]".into(), currency.to_ascii_lowercase()));
            form.push(("line_items[0][price_data][unit_amount]".into(), product.price_minor().to_string()));
            form.push(("line_items[0][price_data][product_data][name]".into(), product.name().into()));
            if matches!(product, Product::Plan(_)) {
                form.push(("line_items[0][price_data][recurring][interval]".into(), "month".into()));
            }
        } else {
            form.push(("line_items[0][price]".into(), product.stripe_price().into()));
        }
        match product {
            Product::Plan(_) => {
                form.push(("subscription_data[metadata][user_id]".into(), request.user_id.into()));
                form.push(("subscription_data[metadata][product]".into(), product.key()));
            }
            Product::Pack(_) => {
                form.push(("payment_intent_data[metadata][user_id]".into(), request.user_id.into()));
                form.push(("payment_intent_data[metadata][product]".into(), product.key()));
            }
        }
        if let Some(customer) = &request.customer_id {
            form.push(("customer".into(), customer.clone()));
        }
        let json = self.post_form("/v1/checkout/sessions", &form).await?;
        match (s(&json["id"]), s(&json["url"])) {
            (Some(id), Some(url)) if url.starts_with("https://") || url.starts_with("http://") => Ok(Checkout { id, url }),
            _ => Err(provider_error(PROVIDER, "checkout session without id or url")),
        }
    }

    /// A customer portal session for managing the subscription.
    pub async fn create_portal(&self, customer_id: &str, return_url: &str) -> Result<String> {
        let form = vec![("customer".to_string(), customer_id.to_string()), ("return_url".to_string(), return_url.to_string())];
        let json = self.post_form("/v1/billing_portal/sessions", &form).await?;
        s(&json["url"]).ok_or_else(|| provider_error(PROVIDER, "portal session without url"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", hmac_sha256_hex(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]))
    }

    #[test]
    fn c14_signature_rules() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let good = sign("whsec_a", now, body);
        assert_eq!(verify_signature(Some(&good), body, &["whsec_a"], 300, now).unwrap(), now);
        // Rotation: any configured secret, any of several v1 values.
        let rotated = format!("{},v1=00ff,{}", sign("whsec_old", now, body), &sign("whsec_new", now, body)["t=1700000000,".len()..]);
        assert!(verify_signature(Some(&rotated), body, &["whsec_new"], 300, now).is_ok());
        assert!(verify_signature(Some(&good), body, &["whsec_b", "whsec_a"], 300, now).is_ok());
        let refused = |h: Option<&str>, b: &[u8], t: i64| verify_signature(h, b, &["whsec_a"], 300, t).unwrap_err().code;
        assert_eq!(refused(Some(&good), br#"{"id":"evt_2"}"#, now), ErrorCode::InvalidSignature, "body altered");
        assert_eq!(refused(Some(&good), body, now + 301), ErrorCode::InvalidSignature, "stale");
        assert_eq!(refused(Some(&sign("whsec_x", now, body)), body, now), ErrorCode::InvalidSignature, "forged");
        assert_eq!(refused(None, body, now), ErrorCode::InvalidSignature);
        assert_eq!(refused(Some("v1=abc"), body, now), ErrorCode::InvalidSignature);
        assert_eq!(refused(Some(&format!("t={now}")), body, now), ErrorCode::InvalidSignature);
        assert!(verify_signature(Some(&good), body, &[], 300, now).is_err(), "no secret, no trust");
    }
}
