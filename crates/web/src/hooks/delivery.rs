//! Sends the outbox: claims due deliveries, builds each event from the task
//! as it is now (fresh signed links), signs it, POSTs it to the checked and
//! pinned address without following redirects, and records the answer.
//! Failures are retried with exponential backoff until the retry window
//! closes; an endpoint failing too often in a row is disabled and its owner
//! told by mail and on the page.

use std::sync::Arc;
use std::time::Duration;

use domain::{Error, Result};
use serde_json::json;
use store::{DueDelivery, Store, WebhookAttempt};
use tokio::sync::watch;

use super::target::{self, HookConfig};

/// Deliveries claimed per round (sent concurrently).
const BATCH: i64 = 16;
/// Bytes of the receiver's answer kept for its owner to read.
pub const EXCERPT_BYTES: usize = 512;
/// First retry delay; doubled after each failed attempt up to [`MAX_BACKOFF_MS`].
const BASE_BACKOFF_MS: i64 = 60_000;
const MAX_BACKOFF_MS: i64 = 2 * 3_600_000;

/// Delay before the next attempt after `attempts` failed ones (≥ 1):
/// 1 min, 2 min, 4 min, … capped at 2 h.
pub fn backoff_ms(attempts: i64) -> i64 {
    let shift = (attempts - 1).clamp(0, 30) as u32;
    BASE_BACKOFF_MS.saturating_mul(1i64 << shift).min(MAX_BACKOFF_MS)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", domain::ids::to_hex(ring::hmac::sign(&key, &signed).as_ref()))
}

pub struct Deliverer {
    store: Store,
    config: HookConfig,
    /// Base of the signed image links in events.
    public_url: String,
}

impl Deliverer {
    pub fn new(store: Store, config: HookConfig, public_url: String) -> Deliverer {
        Deliverer { store, config, public_url }
    }

    /// Makes every attempt due at `now` (milliseconds; tests move it instead
    /// of waiting out the backoff). Returns how many were delivered.
    pub async fn deliver_due(&self, now: i64) -> Result<usize> {
        let lease_ms = self.config.timeout_ms as i64 + 60_000;
        let mut delivered = 0;
        loop {
            let batch = self.store.claim_webhook_deliveries(now, lease_ms, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            let outcomes = futures_util::future::join_all(batch.iter().map(|due| self.attempt(due, now))).await;
            for (due, attempt) in batch.iter().zip(outcomes) {
                delivered += usize::from(attempt.delivered);
                tracing::info!(
                    delivery = %due.delivery.id,
                    endpoint = %due.delivery.endpoint_id,
                    status = ?attempt.response_status,
                    delivered = attempt.delivered,
                    retry = attempt.retry_at.is_some(),
                    "webhook attempt"
                );
                if let Some(endpoint) = self.store.record_webhook_attempt(due, &attempt, now, self.config.max_failures).await? {
                    self.tell_owner(&endpoint).await;
                }
            }
            if !full {
                return Ok(delivered);
            }
        }
    }

    async fn attempt(&self, due: &DueDelivery, now: i64) -> WebhookAttempt {
        let mut attempt = match self.send(due, now).await {
            Ok((status, excerpt)) => WebhookAttempt {
                delivered: (200..300).contains(&status),
                response_status: Some(i64::from(status)),
                response_excerpt: Some(excerpt),
                error: (!(200..300).contains(&status)).then(|| {
                    if (300..400).contains(&status) {
                        format!("HTTP {status} (redirects are not followed)")
                    } else {
                        format!("HTTP {status}")
                    }
                }),
                retry_at: None,
            },
            Err(e) => WebhookAttempt { error: Some(e.message), ..WebhookAttempt::default() },
        };
        if !attempt.delivered {
            let next = now + backoff_ms(due.delivery.attempts + 1);
            attempt.retry_at = (next <= due.delivery.created_at + self.config.retry_window_ms).then_some(next);
        }
        attempt
    }

    /// One POST. The address is resolved and checked now and the connection
    /// pinned to it; the answer's status and its first bytes come back.
    async fn send(&self, due: &DueDelivery, now: i64) -> Result<(u16, String)> {
        let url = target::parse(&due.url, &self.config)?;
        let addrs = target::resolve(&url, &self.config).await?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .user_agent(concat!("Atelier-Webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(url::Host::Domain(name)) = url.host() {
            client = client.resolve_to_addrs(name, &addrs);
        }
        let client = client.build().map_err(|e| Error::internal(format!("webhook client: {e}")))?;
        let body = self.event_body(due, now).await?;
        let unreachable = |e: reqwest::Error| Error::new(domain::ErrorCode::Unavailable, format!("webhook request failed: {e}"));
        let mut response = client
            .post(url)
            .header("content-type", "application/json")
            .header("atelier-signature", signature_header(&due.secret, now / 1000, &body))
            .header("atelier-event", &due.delivery.event)
            .header("atelier-delivery", &due.delivery.id)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let mut head = Vec::new();
        while head.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                // The status is the answer; a body cut short changes nothing.
                Ok(None) | Err(_) => break,
            }
        }
        head.truncate(EXCERPT_BYTES);
        let excerpt = String::from_utf8_lossy(&head).chars().filter(|c| !c.is_control() || *c == '\n').collect();
        Ok((status, excerpt))
    }

    /// The event as JSON: the task's outcome, cost, timeline and outputs with
    /// signed links; its prompt only when the endpoint asks for it.
    pub async fn event_body(&self, due: &DueDelivery, now: i64) -> Result<Vec<u8>> {
        let d = &due.delivery;
        let task = self.store.get_task(&d.owner_id, &d.task_id).await?;
        let mut outputs = Vec::new();
        for item in self.store.task_outputs(&d.owner_id, &d.task_id).await? {
            let (url, expires) = crate::openai::signed_link(&self.store, &self.public_url, &item.asset.id, now).await?;
            outputs.push(json!({
                "id": item.asset.id,
                "url": url,
                "url_expires_at": expires,
                "content_type": item.asset.content_type,
                "width": item.asset.width,
                "height": item.asset.height,
            }));
        }
        let mut task_json = json!({
            "id": task.id,
            "kind": task.kind,
            "status": task.status.as_str(),
            "model": task.model,
            "cost": task.cost,
            "error_code": task.error_code,
            "error_message": task.error_message,
            "created_at": task.created_at,
            "started_at": task.started_at,
            "finished_at": task.finished_at,
            "timeline": self.store.task_events(&d.owner_id, &d.task_id).await?,
            "outputs": outputs,
        });
        if due.include_prompt {
            task_json["prompt"] = json!(task.prompt);
        }
        let event = json!({ "id": d.id, "type": d.event, "created_at": d.created_at, "task": task_json });
        serde_json::to_vec(&event).map_err(|e| Error::internal(e.to_string()))
    }

    /// Mails the owner that an endpoint was disabled (the page shows it too).
    async fn tell_owner(&self, endpoint: &store::WebhookEndpoint) {
        let told = async {
            let user = self.store.user_by_id(&endpoint.owner_id).await?.ok_or_else(Error::not_found)?;
            let link = format!("{}/account/webhooks", self.public_url.trim_end_matches('/'));
            let failures = endpoint.consecutive_failures.to_string();
            let vars =
                [("name", user.name.as_str()), ("url", endpoint.url.as_str()), ("failures", failures.as_str()), ("link", link.as_str())];
            crate::auth::notices::queue_to(&self.store, Some(&user.id), &user.email, user.locale.as_deref(), "webhook_disabled", &vars)
                .await
        };
        if let Err(e) = told.await {
            tracing::error!(endpoint = %endpoint.id, error = %e, "webhook disabled notice not queued");
        }
    }
}

/// Delivers due events every `every` until `shutdown` turns true.
pub async fn run(deliverer: Arc<Deliverer>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Err(e) = deliverer.deliver_due(store::now_ms()).await {
            tracing::warn!(error = %e, "webhook round failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_and_caps_at_two_hours() {
        assert_eq!(backoff_ms(1), 60_000);
        assert_eq!(backoff_ms(2), 120_000);
        assert_eq!(backoff_ms(3), 240_000);
        assert_eq!(backoff_ms(50), MAX_BACKOFF_MS);
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Expected value from `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            signature_header("whsec_test", 1700000000, b"{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
