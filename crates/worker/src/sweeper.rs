use std::time::Duration;

use domain::Result;
use store::Store;
use tokio::sync::watch;

use crate::TaskHub;

/// One sweep: re-queue tasks whose worker died, drop expired sessions and
/// idle rate-limit buckets.
/// One node sweeps at a time; the others skip this round.
pub async fn sweep_once(store: &Store, hub: &TaskHub) -> Result<()> {
    let sweep = async {
        let requeued = store.requeue_expired().await?;
        if requeued > 0 {
            tracing::info!(requeued, "re-queued tasks with expired leases");
            hub.wake_workers();
        }
        let sessions = store.delete_expired_sessions(store::now_ms()).await?;
        // Rate-limit windows are at most a day: an older bucket is full again.
        let buckets = store.prune_rate_buckets(store::now_ms() - 86_400_000).await?;
        metrics::sweep_done("tasks", &[("tasks_requeued", requeued), ("sessions_expired", sessions), ("rate_buckets_pruned", buckets)]);
        Ok(())
    };
    store.exclusively("sweep", sweep).await.map(|_| ())
}

pub async fn run_sweeper(store: Store, hub: TaskHub, every: Duration, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Err(e) = sweep_once(&store, &hub).await {
            tracing::warn!(error = %e, "sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}
