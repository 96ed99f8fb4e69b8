//! Task events across nodes on PostgreSQL: every hub event is also sent
//! with `NOTIFY`, and a listener connection hands other nodes' events to
//! this process's hub. So an SSE client on one web node sees the progress
//! of a task a worker on another node runs, and idle workers everywhere
//! wake when a task is queued. Events are hints (listeners re-read the
//! database and poll as a fallback), so a lost message only delays.
//!
//! Wire format, one `NOTIFY` each: `{node}|{message}|{part}|{parts}|{data}`,
//! where `data` is a slice of the event's JSON: partial frames are larger
//! than one `NOTIFY` may carry, so they go in several parts, sent in one
//! transaction and joined on arrival.

use std::collections::HashMap;
use std::time::Duration;

use domain::ids::new_id;
use store::{Heard, Store, MAX_NOTIFY_BYTES};
use tokio::sync::{mpsc, watch};

use crate::hub::{HubEvent, TaskHub};

pub const CHANNEL: &str = "atelier_events";

/// Room for the header in each `NOTIFY`.
const DATA_BYTES: usize = MAX_NOTIFY_BYTES - 200;
/// Messages being joined at once; older incomplete ones are dropped.
const MAX_PENDING: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// On PostgreSQL: starts the sender and the listener and returns the hub
/// to use everywhere in this process (it also sends to other nodes). On
/// SQLite: the hub as it is.
pub async fn connect(store: &Store, hub: TaskHub, shutdown: watch::Receiver<bool>) -> TaskHub {
    if store.kind() != store::BackendKind::Postgres {
        return hub;
    }
    let node = new_id();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(send_loop(store.clone(), node.clone(), rx));
    tokio::spawn(listen_loop(store.clone(), node, hub.clone(), shutdown));
    hub.with_remote(tx)
}

/// The `NOTIFY` payloads of one event.
fn encode(node: &str, message: u64, event: &HubEvent) -> Vec<String> {
    let json = serde_json::to_string(event).expect("hub events serialize");
    let mut parts = Vec::new();
    let mut rest = json.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(DATA_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(&rest[..end]);
        rest = &rest[end..];
    }
    let count = parts.len();
    parts.iter().enumerate().map(|(i, data)| format!("{node}|{message}|{i}|{count}|{data}")).collect()
}

async fn send_loop(store: Store, node: String, mut events: mpsc::UnboundedReceiver<HubEvent>) {
    let mut message = 0u64;
    while let Some(event) = events.recv().await {
        // Whatever queued up meanwhile goes in the same transaction.
        let mut payloads = Vec::new();
        let mut next = Some(event);
        while let Some(event) = next {
            message += 1;
            payloads.extend(encode(&node, message, &event));
            next = events.try_recv().ok();
        }
        if let Err(e) = store.notify(CHANNEL, &payloads).await {
            tracing::warn!(error = %e, "could not send task events to other nodes");
        }
    }
}

/// Joins the parts of messages from other nodes.
#[derive(Default)]
struct Joiner {
    node: String,
    pending: HashMap<(String, u64), Vec<Option<String>>>,
    order: Vec<(String, u64)>,
}

impl Joiner {
    fn take(&mut self, payload: &str) -> Option<HubEvent> {
        let mut fields = payload.splitn(5, '|');
        let (node, message, part, count, data) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        if node == self.node {
            return None;
        }
        let (message, part, count): (u64, usize, usize) = (message.parse().ok()?, part.parse().ok()?, count.parse().ok()?);
        if part >= count {
            return None;
        }
        if count == 1 {
            return serde_json::from_str(data).ok();
        }
        let key = (node.to_string(), message);
        if !self.pending.contains_key(&key) {
            if self.order.len() >= MAX_PENDING {
                let oldest = self.order.remove(0);
                self.pending.remove(&oldest);
            }
            self.order.push(key.clone());
        }
        let parts = self.pending.entry(key.clone()).or_insert_with(|| vec![None; count]);
        *parts.get_mut(part)? = Some(data.to_string());
        if parts.iter().any(Option::is_none) {
            return None;
        }
        let json: String = self.pending.remove(&key)?.into_iter().flatten().collect();
        self.order.retain(|k| k != &key);
        serde_json::from_str(&json).ok()
    }
}

async fn listen_loop(store: Store, node: String, hub: TaskHub, mut shutdown: watch::Receiver<bool>) {
    let mut joiner = Joiner { node, ..Joiner::default() };
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let mut listener = match store.listen(CHANNEL).await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "task event listener cannot connect");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Something may have been queued while nobody listened.
        hub.deliver(HubEvent::Wake);
        loop {
            let heard = tokio::select! {
                heard = listener.recv() => heard,
                _ = shutdown.changed() => return,
            };
            match heard {
                Ok(Heard::Message(payload)) => {
                    backoff = Duration::from_millis(100);
                    if let Some(event) = joiner.take(&payload) {
                        hub.deliver(event);
                    }
                }
                Ok(Heard::Reconnected) => {
                    tracing::info!("task event listener reconnected");
                    hub.deliver(HubEvent::Wake);
                }
                // A new connection after a pause.
                Err(_) => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{PartialFrame, TaskSignal};

    #[test]
    fn large_events_cross_in_parts_and_are_joined() {
        let frame = PartialFrame {
            task_id: "t".into(),
            owner_id: "o".into(),
            image_index: 1,
            partial_index: 2,
            width: 64,
            height: 64,
            b64: "QUJD".repeat(10_000),
        };
        let event = HubEvent::Partial(frame);
        let payloads = encode("node-a", 7, &event);
        assert!(payloads.len() > 4 && payloads.iter().all(|p| p.len() <= MAX_NOTIFY_BYTES));
        let mut joiner = Joiner { node: "node-b".into(), ..Joiner::default() };
        // Parts of a small message in between do not disturb the join.
        let small = HubEvent::Changed(TaskSignal { task_id: "t".into(), owner_id: "o".into() });
        let (last, first) = payloads.split_last().unwrap();
        for p in first {
            assert_eq!(joiner.take(p), None);
        }
        assert_eq!(joiner.take(&encode("node-c", 1, &small)[0]), Some(small));
        assert_eq!(joiner.take(last), Some(event.clone()));
        assert!(joiner.pending.is_empty() && joiner.order.is_empty());
        // A node ignores its own messages: it delivered them already.
        let mut own = Joiner { node: "node-a".into(), ..Joiner::default() };
        assert!(payloads.iter().all(|p| own.take(p).is_none()));
        assert_eq!(joiner.take("garbage"), None);
    }
}
