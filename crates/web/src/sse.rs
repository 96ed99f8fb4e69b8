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

/// What the account stream still has to say about one task.
struct Seen {
    status: TaskStatus,
    progress: i64,
}

/// `GET /api/v1/events`: every task of the account as it changes
/// (`status`, then one `done` with the final task) and the preview frames
/// of the tasks that asked for them (`partial`). It opens with `ready`:
/// from then on nothing submitted is missed, so a page opens it before it
/// submits.
pub async fn account_events(State(state): State<AppState>, api: ApiUser) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Account {
        state: AppState,
        owner_id: String,
        signals: broadcast::Receiver<TaskSignal>,
        partials: broadcast::Receiver<std::sync::Arc<worker::PartialFrame>>,
        seen: std::collections::HashMap<String, Seen>,
        /// Tasks whose `done` was sent: later signals about them are echoes.
        finished: std::collections::HashSet<String>,
        started: bool,
    }
    let account = Account {
        signals: state.hub.subscribe(),
        partials: state.hub.subscribe_partials(),
        state,
        owner_id: api.user.id,
        seen: Default::default(),
        finished: Default::default(),
        started: false,
    };
    let events = stream::unfold(account, |mut a| async move {
        if !std::mem::replace(&mut a.started, true) {
            return Some((Ok(Event::default().event("ready").data("{}")), a));
        }
        loop {
            tokio::select! {
                // Frames first: a task's previews come before its result.
                biased;
                frame = a.partials.recv() => match frame {
                    Ok(f) if f.owner_id == a.owner_id => {
                        let data = json!({
                            "id": f.task_id, "image_index": f.image_index, "partial_index": f.partial_index,
                            "width": f.width, "height": f.height, "b64": f.b64,
                        });
                        return Some((Ok(Event::default().event("partial").data(data.to_string())), a));
                    }
                    // Previews are best effort: a lagged listener skips some.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                signal = a.signals.recv() => {
                    let task_id = match signal {
                        Ok(s) if s.owner_id == a.owner_id && !a.finished.contains(&s.task_id) => s.task_id,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    let Ok(task) = a.state.store.get_task(&a.owner_id, &task_id).await else { continue };
                    if task.status.is_terminal() {
                        a.seen.remove(&task.id);
                        a.finished.insert(task.id.clone());
                        let Ok(view) = task_view(&a.state, &task).await else { continue };
                        return Some((Ok(Event::default().event("done").json_data(view).unwrap_or_default()), a));
                    }
                    let now = Seen { status: task.status, progress: task.progress };
                    if a.seen.get(&task.id).is_some_and(|s| s.status == now.status && s.progress == now.progress) {
                        continue;
                    }
                    a.seen.insert(task.id.clone(), now);
                    let data = json!({ "id": task.id, "status": task.status.as_str(), "progress": task.progress });
                    return Some((Ok(Event::default().event("status").data(data.to_string())), a));
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
