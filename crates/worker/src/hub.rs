use std::sync::Arc;

use store::Task;
use tokio::sync::{broadcast, Notify};

/// A task's state may have changed; listeners re-read it from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSignal {
    pub task_id: String,
    pub owner_id: String,
}

/// In-process fan-out of task changes (for SSE) and of queue wake-ups (for
/// idle workers). Listeners treat signals as hints and always re-read the
/// database, so a missed signal only delays an update until the next poll.
#[derive(Clone)]
pub struct TaskHub {
    changes: broadcast::Sender<TaskSignal>,
    wake: Arc<Notify>,
}

impl Default for TaskHub {
    fn default() -> Self {
        TaskHub { changes: broadcast::channel(1024).0, wake: Arc::new(Notify::new()) }
    }
}

impl TaskHub {
    pub fn changed(&self, task: &Task) {
        let _ = self.changes.send(TaskSignal { task_id: task.id.clone(), owner_id: task.owner_id.clone() });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskSignal> {
        self.changes.subscribe()
    }

    /// A task was queued: wake idle workers.
    pub fn queued(&self, task: &Task) {
        self.changed(task);
        self.wake.notify_waiters();
    }

    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn wake_workers(&self) {
        self.wake.notify_waiters();
    }
}
