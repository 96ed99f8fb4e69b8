//! `GET /api/v1/tasks/{id}/events`: the task's status and progress as
//! server-sent events, ending with a `done` event carrying the final task.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use domain::task::TaskStatus;
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast;
use worker::TaskSignal;

use crate::api::{checked_id, task_view};
use crate::context::ApiUser;
use crate::error::ApiResult;
use crate::AppState;

struct Watch {
    state: AppState,
    owner_id: String,
    task_id: String,
    signals: broadcast::Receiver<TaskSignal>,
    last: Option<(TaskStatus, i64)>,
    done: bool,
}

/// Waits for a signal about this task. Signals are hints (the database is the
/// truth), so a lagged receiver simply re-reads.
pub(crate) async fn next_signal_for(signals: &mut broadcast::Receiver<TaskSignal>, task_id: &str) {
    loop {
        match signals.recv().await {
            Ok(signal) if signal.task_id == task_id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

pub async fn task_events(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let task_id = checked_id(&id)?.to_string();
    state.store.get_task(&api.user.id, &task_id).await?;
    let watch = Watch { signals: state.hub.subscribe(), state, owner_id: api.user.id, task_id, last: None, done: false };
    let events = stream::unfold(watch, |mut w| async move {
        if w.done {
            return None;
        }
        loop {
            let task = w.state.store.get_task(&w.owner_id, &w.task_id).await.ok()?;
            let seen = (task.status, task.progress);
            if w.last != Some(seen) {
                w.last = Some(seen);
                let event = if task.status.is_terminal() {
                    w.done = true;
                    let view = task_view(&w.state, &task).await.ok()?;
                    Event::default().event("done").json_data(view)
                } else {
                    Event::default()
                        .event("status")
                        .json_data(json!({ "id": task.id, "status": task.status.as_str(), "progress": task.progress }))
                };
                return Some((Ok(event.unwrap_or_default()), w));
            }
            tokio::select! {
                _ = next_signal_for(&mut w.signals, &w.task_id) => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
