//! Creem: hosted checkout through `POST /v1/checkouts` (`x-api-key`), and
//! webhooks signed with `creem-signature: hex(HMAC-SHA256(secret, raw body))`.
//! There is no timestamp in the signature: the event id, stored under a
//! unique key, is what stops a replay.

use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use serde_json::{json, Value};
use store::{BillingAction, BillingEvent, NewPayment, Store, SubscriptionState};

use crate::stripe::Checkout;
use crate::{constant_time_eq, hmac_sha256_hex, parse_rfc3339, provider_error, summary, BillingConfig, CheckoutRequest, Product};

pub const PROVIDER: &str = "creem";

pub fn verify_signature(header: Option<&str>, payload: &[u8], secret: &str) -> Result<()> {
    let refused = |why: &str| Error::new(ErrorCode::InvalidSignature, format!("creem-signature refused: {why}"));
    let sent = header.ok_or_else(|| refused("missing"))?.trim().to_ascii_lowercase();
    if secret.is_empty() {
        return Err(refused("no signing secret is configured"));
    }
    let expected = hmac_sha256_hex(secret.as_bytes(), &[payload]);
    if constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refused("no match"))
    }
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

pub async fn parse_event(payload: &[u8], config: &BillingConfig, store: &Store) -> Result<BillingEvent> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| Error::new(ErrorCode::InvalidJson, e.to_string()))?;
    let event_id = s(&v["id"]).ok_or_else(|| Error::invalid("event without id"))?;
    let event_type = v["eventType"].as_str().unwrap_or_default().to_string();
    let event_at = v["created_at"].as_i64().unwrap_or_else(store::now_ms);
    let o = &v["object"];
    let meta = |k: &str| s(&o["metadata"][k]);
    let now = store::now_ms();
    let product_of = |o: &Value| {
        meta("product")
            .and_then(|k| config.product(&k))
            .or_else(|| config.product_by_provider_id(PROVIDER, &s(&o["product"]).unwrap_or_default()))
    };

    let action = match event_type.as_str() {
        "checkout.completed" => {
            let order = &o["order"];
            let paid = order["status"].as_str().is_none_or(|st| st == "paid");
            match (paid, meta("user_id"), product_of(o)) {
                (true, Some(user_id), Some(Product::Pack(pack))) => {
                    let order_id = s(order).unwrap_or_else(|| s(&o["id"]).unwrap_or_default());
                    BillingAction::Grant {
                        user_id,
                        credits: pack.credits,
                        source: "pack".into(),
                        reason: format!("pack:{}", pack.id),
                        expires_at: (pack.valid_days > 0).then(|| now + i64::from(pack.valid_days) * 86_400_000),
                        payment: NewPayment {
                            provider: PROVIDER.into(),
                            reference: order_id.clone(),
                            payment_ref: Some(order_id),
                            product: format!("pack:{}", pack.id),
                            amount_minor: order["amount"].as_i64().unwrap_or(pack.price_minor),
                            currency: s(&order["currency"]).map(|c| c.to_ascii_lowercase()).unwrap_or_else(|| config.currency.clone()),
                        },
                        subscription: None,
                        receipt: None,
                    }
                }
                // A plan's credits come with `subscription.paid`, once per
                // period; the checkout only ties the subscription to the account.
                (true, Some(user_id), Some(Product::Plan(plan))) => match s(&o["subscription"]) {
                    Some(external_id) => BillingAction::Subscription(SubscriptionState {
                        provider: PROVIDER.into(),
                        external_id,
                        user_id: Some(user_id),
                        plan: Some(plan.id.clone()),
                        customer_id: s(&o["customer"]),
                        status: "active".into(),
                        current_period_end: None,
                        event_at,
                    }),
                    None => BillingAction::Nothing,
                },
                _ => BillingAction::Nothing,
            }
        }
        "subscription.paid" => {
            let sub_id = s(&o["id"]).unwrap_or_default();
            let mut user_id = meta("user_id");
            let mut product = product_of(o);
            if user_id.is_none() || product.is_none() {
                if let Some((owner, plan)) = store.subscription_owner(PROVIDER, &sub_id).await? {
                    user_id = user_id.or(Some(owner));
                    product = product.or_else(|| config.product(&format!("plan:{plan}")));
                }
            }
            match (user_id, product) {
                (Some(user_id), Some(Product::Plan(plan))) => {
                    let period_end = o["current_period_end_date"].as_str().and_then(parse_rfc3339);
                    let transaction = s(&o["last_transaction_id"]).or_else(|| s(&o["last_transaction"]));
                    let reference = transaction
                        .clone()
                        .unwrap_or_else(|| format!("{sub_id}:{}", o["current_period_start_date"].as_str().unwrap_or_default()));
                    let amount =
                        o["last_transaction"]["amount"].as_i64().or_else(|| o["product"]["price"].as_i64()).unwrap_or(plan.price_minor);
                    BillingAction::Grant {
                        user_id: user_id.clone(),
                        credits: plan.monthly_credits,
                        source: "plan".into(),
                        reason: format!("plan:{}", plan.id),
                        expires_at: Some(period_end.unwrap_or(now + 31 * 86_400_000)),
                        payment: NewPayment {
                            provider: PROVIDER.into(),
                            reference: reference.clone(),
                            payment_ref: s(&o["last_transaction"]["order"]).or(Some(reference)),
                            product: format!("plan:{}", plan.id),
                            amount_minor: amount,
                            currency: s(&o["product"]["currency"])
                                .map(|c| c.to_ascii_lowercase())
                                .unwrap_or_else(|| config.currency.clone()),
                        },
                        subscription: Some(SubscriptionState {
                            provider: PROVIDER.into(),
                            external_id: sub_id,
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
                    tracing::warn!(event = %event_id, "paid subscription not tied to one of our plans; nothing granted");
                    BillingAction::Nothing
                }
            }
        }
        "subscription.canceled" | "subscription.expired" | "subscription.active" | "subscription.update" | "subscription.past_due" => {
            let status = match event_type.as_str() {
                "subscription.canceled" => "canceled".to_string(),
                "subscription.expired" => "expired".to_string(),
                _ => s(&o["status"]).unwrap_or_else(|| "active".into()),
            };
            BillingAction::Subscription(SubscriptionState {
                provider: PROVIDER.into(),
                external_id: s(&o["id"]).unwrap_or_default(),
                user_id: meta("user_id"),
                plan: product_of(o).and_then(|p| match p {
                    Product::Plan(plan) => Some(plan.id.clone()),
                    Product::Pack(_) => None,
                }),
                customer_id: s(&o["customer"]),
                status,
                current_period_end: o["current_period_end_date"].as_str().and_then(parse_rfc3339),
                event_at,
            })
        }
        "refund.created" | "dispute.created" => {
            let order = s(&o["order"]).or_else(|| s(&o["transaction"]["order"])).or_else(|| s(&o["checkout"]["order"]));
            match order {
                Some(payment_ref) => BillingAction::TakeBack {
                    provider: PROVIDER.into(),
                    payment_ref,
                    refunded_minor: if event_type == "refund.created" { o["refund_amount"].as_i64() } else { None },
                    dispute: event_type == "dispute.created",
                },
                None => BillingAction::Nothing,
            }
        }
        _ => BillingAction::Nothing,
    };
    let summary = summary(&[
        ("type", Some(event_type.clone())),
        ("object", s(&o["id"])),
        ("order", s(&o["order"])),
        ("status", s(&o["status"]).or_else(|| s(&o["order"]["status"]))),
        ("amount", o["order"]["amount"].as_i64().or(o["refund_amount"].as_i64()).map(|a| a.to_string())),
        ("subscription", s(&o["subscription"])),
        ("transaction", s(&o["last_transaction_id"])),
        ("user_id", meta("user_id")),
        ("product", meta("product")),
    ]);
    Ok(BillingEvent { provider: PROVIDER.into(), event_id, event_type, summary, action })
}

#[derive(Clone)]
pub struct CreemClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl CreemClient {
    pub fn new(config: &BillingConfig) -> CreemClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        CreemClient { http, base: config.creem_api_base.trim_end_matches('/').to_string(), api_key: config.creem_api_key.clone() }
    }

    /// A hosted checkout for a product that exists in Creem; the account id
    /// rides in metadata (copied to the subscription), nothing else.
    pub async fn create_checkout(&self, request: &CheckoutRequest<'_>) -> Result<Checkout> {
        let product_id = request.product.creem_product();
        if product_id.is_empty() {
            return Err(Error::invalid("this product is not sold through Creem"));
        }
        let body = json!({
            "product_id": product_id,
            "request_id": domain::ids::new_id(),
            "success_url": request.success_url,
            "metadata": { "user_id": request.user_id, "product": request.product.key() },
        });
        let response = self
            .http
            .post(format!("{}/v1/checkouts", self.base))
            .header("x-api-key", &self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| provider_error(PROVIDER, e))?;
        let status = response.status();
        let json: Value = response.json().await.map_err(|e| provider_error(PROVIDER, e))?;
        if !status.is_success() {
            return Err(provider_error(PROVIDER, format!("{status}: {}", json["message"])));
        }
        match (s(&json["id"]), s(&json["checkout_url"])) {
            (Some(id), Some(url)) if url.starts_with("https://") || url.starts_with("http://") => Ok(Checkout { id, url }),
            _ => Err(provider_error(PROVIDER, "checkout without id or checkout_url")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c14_creem_signature_is_hmac_of_the_raw_body() {
        let body = br#"{"id":"evt_1","eventType":"checkout.completed"}"#;
        let sig = hmac_sha256_hex(b"creem_whsec", &[body]);
        assert!(verify_signature(Some(&sig), body, "creem_whsec").is_ok());
        assert!(verify_signature(Some(&sig.to_uppercase()), body, "creem_whsec").is_ok());
        assert_eq!(verify_signature(Some(&sig), b"{}", "creem_whsec").unwrap_err().code, ErrorCode::InvalidSignature);
        assert!(verify_signature(Some(&sig), body, "other").is_err());
        assert!(verify_signature(None, body, "creem_whsec").is_err());
        assert!(verify_signature(Some(&sig), body, "").is_err());
    }
}
