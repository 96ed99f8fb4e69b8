use std::sync::Arc;

use serde::{Deserialize, Serialize};
use store::Task;
use tokio::sync::{broadcast, mpsc, Notify};

/// A task's state may have changed; listeners re-read it from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSignal {
    pub task_id: String,
    pub owner_id: String,
}

/// A preview of an image while a task makes it, encoded like the task's
/// output. Not stored anywhere: only listeners subscribed while the task
/// runs (a streaming API request) see it. Serializable so the fan-out can
/// cross nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialFrame {
    pub task_id: String,
    pub owner_id: String,
    /// Which of the task's `n` images (0-based).
    pub image_index: u32,
    /// Which of that image's partial frames (0-based).
    pub partial_index: u32,
    pub width: u32,
    pub height: u32,
    /// The encoded frame, base64 (standard alphabet, padded).
    pub b64: String,
}

/// In-process fan-out of task changes (for SSE), of partial frames and of
/// queue wake-ups (for idle workers). Listeners treat signals as hints and
/// always re-read the database, so a missed signal only delays an update
/// until the next poll; a missed partial frame is simply not shown.
#[derive(Clone)]
pub struct TaskHub {
    changes: broadcast::Sender<TaskSignal>,
    partials: broadcast::Sender<Arc<PartialFrame>>,
    wake: Arc<Notify>,
    /// Where events also go to reach other nodes ([`crate::fanout`]);
    /// `None`: this process only.
    remote: Option<mpsc::UnboundedSender<HubEvent>>,
}

/// One event, as it crosses nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HubEvent {
    Changed(TaskSignal),
    Partial(PartialFrame),
    /// Work was queued or re-queued.
    Wake,
}

impl Default for TaskHub {
    fn default() -> Self {
        TaskHub { changes: broadcast::channel(1024).0, partials: broadcast::channel(64).0, wake: Arc::new(Notify::new()), remote: None }
    }
}

impl TaskHub {
    pub fn changed(&self, task: &Task) {
        self.publish(HubEvent::Changed(TaskSignal { task_id: task.id.clone(), owner_id: task.owner_id.clone() }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskSignal> {
        self.changes.subscribe()
    }

    pub fn partial(&self, frame: PartialFrame) {
        self.publish(HubEvent::Partial(frame));
    }

    /// Partial frames of every task from now on; subscribe before the task
    /// is queued to see all of its frames.
    pub fn subscribe_partials(&self) -> broadcast::Receiver<Arc<PartialFrame>> {
        self.partials.subscribe()
    }

    /// A task was queued: wake idle workers.
    pub fn queued(&self, task: &Task) {
        self.changed(task);
        self.wake_workers();
    }

    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn wake_workers(&self) {
        self.publish(HubEvent::Wake);
    }

    /// The same hub, also sending every event to `remote`.
    pub fn with_remote(&self, remote: mpsc::UnboundedSender<HubEvent>) -> TaskHub {
        TaskHub { remote: Some(remote), ..self.clone() }
    }

    fn publish(&self, event: HubEvent) {
        if let Some(remote) = &self.remote {
            let _ = remote.send(event.clone());
        }
        self.deliver(event);
    }

    /// Hands an event to this process's listeners only (one that came from
    /// another node).
    pub fn deliver(&self, event: HubEvent) {
        match event {
            HubEvent::Changed(signal) => {
                let _ = self.changes.send(signal);
            }
            HubEvent::Partial(frame) => {
                let _ = self.partials.send(Arc::new(frame));
            }
            HubEvent::Wake => self.wake.notify_waiters(),
        }
    }
}
