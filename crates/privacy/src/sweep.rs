//! The retention sweeps (C22, C23, C31, C39): one pass deletes what has
//! outlived its window and reports how much. `serve` runs it on a schedule,
//! `atelier sweep` once (for cron). Every step takes the time as an argument
//! so tests move a clock instead of sleeping.

use blobs::BlobStore;
use domain::Result;
use serde::Serialize;
use store::Store;

use crate::PrivacyConfig;

/// What one sweep removed, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub accounts_purged: usize,
    pub unsaved_outputs_deleted: usize,
    pub exports_deleted: usize,
    pub analytics_events_folded: usize,
    pub request_logs_deleted: usize,
}

/// Runs every retention step once, as of `now_ms`. `objects` is the raw
/// object store (deleting needs no key).
pub async fn run_sweeps(store: &Store, objects: &dyn BlobStore, config: &PrivacyConfig, now_ms: i64) -> Result<SweepReport> {
    let _ = config;
    let report = SweepReport {
        accounts_purged: purge_due_accounts(store, objects, now_ms).await?,
        unsaved_outputs_deleted: delete_expired_outputs(store, objects, now_ms).await?,
        analytics_events_folded: crate::analytics::fold_expired(store, config, now_ms).await?,
        request_logs_deleted: crate::analytics::delete_expired_request_logs(store, config, now_ms).await?,
        exports_deleted: crate::export::sweep_expired_exports(store, objects, now_ms).await?,
        ..SweepReport::default()
    };
    tracing::info!(
        accounts_purged = report.accounts_purged,
        unsaved_outputs_deleted = report.unsaved_outputs_deleted,
        exports_deleted = report.exports_deleted,
        analytics_events_folded = report.analytics_events_folded,
        request_logs_deleted = report.request_logs_deleted,
        "privacy sweep done"
    );
    let n = |v: usize| v as u64;
    metrics::sweep_done(
        "privacy",
        &[
            ("accounts_purged", n(report.accounts_purged)),
            ("unsaved_outputs_deleted", n(report.unsaved_outputs_deleted)),
            ("exports_deleted", n(report.exports_deleted)),
            ("analytics_events_folded", n(report.analytics_events_folded)),
            ("request_logs_deleted", n(report.request_logs_deleted)),
        ],
    );
    Ok(report)
}

/// Runs [`run_sweeps`] now and then every `every` until `shutdown` turns
/// true; a failed run is logged and retried at the next tick.
pub async fn run_scheduled(
    store: Store,
    objects: std::sync::Arc<dyn BlobStore>,
    config: PrivacyConfig,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        // One node sweeps at a time; the others skip this round.
        if let Err(e) = store.exclusively("privacy_sweep", run_sweeps(&store, objects.as_ref(), &config, store::now_ms())).await {
            tracing::warn!(error = %e, "privacy sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Purges every account whose deletion grace period ended by `now_ms` (C31).
async fn purge_due_accounts(store: &Store, objects: &dyn BlobStore, now_ms: i64) -> Result<usize> {
    let due = store.deletions_due(now_ms).await?;
    for user_id in &due {
        crate::purge_account(store, objects, user_id, None).await?;
    }
    Ok(due.len())
}

/// Outputs listed per round of the unsaved-output sweep.
const OUTPUT_BATCH: i64 = 500;

/// Hard-deletes unsaved outputs past their retention (C39): rows first,
/// only if still unsaved (the owner may save one meanwhile), then the
/// objects of the output and its thumbnails.
async fn delete_expired_outputs(store: &Store, objects: &dyn BlobStore, now_ms: i64) -> Result<usize> {
    let mut deleted = 0;
    loop {
        let batch = store.expired_unsaved_outputs(now_ms, OUTPUT_BATCH).await?;
        for asset in &batch {
            let keys = store.delete_expired_output(&asset.owner_id, &asset.id, now_ms).await?;
            for key in &keys {
                objects.delete(key).await?;
            }
            deleted += usize::from(!keys.is_empty());
        }
        if (batch.len() as i64) < OUTPUT_BATCH {
            return Ok(deleted);
        }
    }
}
