//! The task runner: claims queued tasks with a lease, heartbeats while the
//! engine works, stores outputs and thumbnails, and completes the task only
//! if it still holds the lease, so each task's outputs are recorded once.
//! Also the sweeper that re-queues tasks whose worker died.

mod hub;
mod sweeper;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blobs::BlobStore;
use domain::ids::{new_id, to_hex};
use domain::params::GenerateParams;
use domain::{Error, ErrorCode, Result};
use engines::{Engine, GenerateRequest};
use sha2::{Digest, Sha256};
use store::{NewAsset, Store, Task};
use tokio::sync::{watch, Notify};

pub use hub::{TaskHub, TaskSignal};
pub use sweeper::{run_sweeper, sweep_once};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long a claim is valid without a heartbeat.
    pub lease_ms: i64,
    pub heartbeat_ms: u64,
    /// Tasks one process runs at once.
    pub concurrency: usize,
    /// Fallback poll when no wake-up arrives (other nodes' submits).
    pub poll_ms: u64,
    /// Unsaved outputs expire after this long (C39).
    pub unsaved_retention_ms: i64,
    pub thumbnail_side: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            concurrency: 2,
            poll_ms: 1_000,
            unsaved_retention_ms: 30 * 86_400_000,
            thumbnail_side: 384,
        }
    }
}

pub struct Worker {
    pub id: String,
    store: Store,
    blobs: Arc<dyn BlobStore>,
    engine: Arc<dyn Engine>,
    hub: TaskHub,
    config: WorkerConfig,
}

impl Worker {
    pub fn new(store: Store, blobs: Arc<dyn BlobStore>, engine: Arc<dyn Engine>, hub: TaskHub, config: WorkerConfig) -> Worker {
        Worker { id: format!("worker-{}", new_id()), store, blobs, engine, hub, config }
    }

    /// Runs `concurrency` claim loops until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let loops: Vec<_> = (0..self.config.concurrency.max(1))
            .map(|_| {
                let worker = self.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let wake = worker.hub.wake_handle();
                    while !*shutdown.borrow() {
                        match worker.run_one().await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "worker loop"),
                        }
                        tokio::select! {
                            _ = wake.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(worker.config.poll_ms)) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                })
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }

    /// Claims and runs one task. `Ok(false)` when the queue was empty.
    pub async fn run_one(&self) -> Result<bool> {
        let Some(task) = self.store.claim_task(&self.id, self.config.lease_ms).await? else {
            return Ok(false);
        };
        tracing::info!(task = %task.id, attempt = task.attempts, "task claimed");
        self.hub.changed(&task);
        let outcome = self.execute(&task).await;
        match outcome {
            Ok(Some(outputs)) => {
                let recorded = self.store.complete_task(&task.id, &self.id, &outputs).await;
                if !matches!(recorded, Ok(true)) {
                    // Canceled, or another attempt owns the task now: this
                    // attempt's objects must not outlive it.
                    self.discard(&outputs).await;
                }
                recorded?;
            }
            Ok(None) => tracing::info!(task = %task.id, "task no longer ours; work discarded"),
            Err(e) => {
                let retryable = matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal);
                tracing::warn!(task = %task.id, code = %e.code, "task failed");
                self.store.fail_task(&task.id, &self.id, e.code.as_str(), &e.message, retryable).await?;
            }
        }
        self.hub.changed(&task);
        Ok(true)
    }

    /// Generates and stores the outputs. `Ok(None)` when the task was
    /// canceled or its lease lost while working.
    async fn execute(&self, task: &Task) -> Result<Option<Vec<NewAsset>>> {
        let params: GenerateParams =
            serde_json::from_str(&task.params).map_err(|e| Error::new(ErrorCode::InvalidInput, format!("bad task parameters: {e}")))?;
        let request = GenerateRequest {
            prompt: task.prompt.clone(),
            width: params.size.width,
            height: params.size.height,
            style: params.style.clone(),
            seed: params.seed,
            n: params.n,
        };
        let progress = Arc::new(AtomicU8::new(0));
        let report = progress.clone();
        let lost = Arc::new(Notify::new());
        let heartbeat = {
            let (store, id, worker_id, lost, hub, task) =
                (self.store.clone(), task.id.clone(), self.id.clone(), lost.clone(), self.hub.clone(), task.clone());
            let (lease_ms, every) = (self.config.lease_ms, Duration::from_millis(self.config.heartbeat_ms));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let pct = i64::from(progress.load(Ordering::Relaxed));
                    match store.heartbeat_task(&id, &worker_id, lease_ms, pct).await {
                        Ok(true) => hub.changed(&task),
                        Ok(false) => {
                            lost.notify_one();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let work = async {
            let images = self.engine.generate(&request, Arc::new(move |p| report.store(p.min(99), Ordering::Relaxed))).await?;
            self.store_outputs(task, &images).await
        };
        let result = tokio::select! {
            r = work => r.map(Some),
            _ = lost.notified() => Ok(None),
        };
        heartbeat.abort();
        result
    }

    async fn store_outputs(&self, task: &Task, images: &[engines::EngineImage]) -> Result<Vec<NewAsset>> {
        let mut assets = Vec::with_capacity(images.len() * 2);
        let expires_at = store::now_ms() + self.config.unsaved_retention_ms;
        for image in images {
            let full = imaging::encode_png(&image.image)?;
            let thumb = imaging::thumbnail_png(&image.image, self.config.thumbnail_side)?;
            let output_id = new_id();
            for (encoded, kind, id, parent) in [(full, "output", output_id.clone(), None), (thumb, "thumbnail", new_id(), Some(output_id.clone()))] {
                let asset = NewAsset {
                    storage_key: format!("{}/{}.png", task.owner_id, id),
                    id,
                    owner_id: task.owner_id.clone(),
                    task_id: Some(task.id.clone()),
                    kind: kind.to_string(),
                    parent_id: parent,
                    content_type: encoded.content_type.to_string(),
                    sha256: to_hex(&Sha256::digest(&encoded.bytes)),
                    size_bytes: encoded.bytes.len() as i64,
                    width: i64::from(encoded.width),
                    height: i64::from(encoded.height),
                    saved: false,
                    expires_at: Some(expires_at),
                };
                if let Err(e) = self.blobs.put(&asset.storage_key, encoded.bytes).await {
                    self.discard(&assets).await;
                    return Err(e);
                }
                assets.push(asset);
            }
        }
        Ok(assets)
    }

    async fn discard(&self, assets: &[NewAsset]) {
        for asset in assets {
            if let Err(e) = self.blobs.delete(&asset.storage_key).await {
                tracing::error!(key = %asset.storage_key, error = %e, "could not discard an object");
            }
        }
    }
}
