//! The task runner: claims queued tasks with a lease, heartbeats while the
//! engine works, stores outputs and thumbnails, and completes the task only
//! if it still holds the lease, so each task's outputs are recorded once.
//! Also the sweeper that re-queues tasks whose worker died.

pub mod fanout;
mod hub;
mod sweeper;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use blobs::BlobStore;
use domain::ids::{new_id, to_hex};
use domain::params::{EditParams, GenerateParams, Output, RestyleParams, UpscaleParams, VariationParams};
use domain::task::TaskKind;
use domain::{Error, ErrorCode, Result};
use engines::{EditRequest, Engine, EngineImage, GenerateRequest, Job, Observer, PartialImage, Router, Secret, VariationRequest};
use imaging::{DecodeLimits, RgbaImage};
use sha2::{Digest, Sha256};
use store::{NewAsset, Store, Task};
use tokio::sync::{watch, Notify};

pub use hub::{HubEvent, PartialFrame, TaskHub, TaskSignal};
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
    /// Long side of the WebP gallery thumbnails.
    pub thumbnail_side: u32,
    /// Limits for decoding stored source images (uploads, earlier outputs).
    pub decode_limits: DecodeLimits,
    /// Key of the per-account pseudonym providers may receive
    /// ([`engines::end_user_tag`]); `None`: they receive none.
    pub end_user_secret: Option<Secret>,
    /// After shutdown, how long running tasks may take to finish; then
    /// they are released to the queue for another worker.
    pub drain_ms: u64,
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
            decode_limits: DecodeLimits::default(),
            end_user_secret: None,
            drain_ms: 30_000,
        }
    }
}

pub struct Worker {
    pub id: String,
    store: Store,
    blobs: Arc<dyn BlobStore>,
    router: Arc<Router>,
    hub: TaskHub,
    config: WorkerConfig,
}

impl Worker {
    /// Every task on one engine.
    pub fn new(store: Store, blobs: Arc<dyn BlobStore>, engine: Arc<dyn Engine>, hub: TaskHub, config: WorkerConfig) -> Worker {
        Worker::with_router(store, blobs, Arc::new(Router::single(engine)), hub, config)
    }

    /// Tasks go to the providers the router picks for their model.
    pub fn with_router(store: Store, blobs: Arc<dyn BlobStore>, router: Arc<Router>, hub: TaskHub, config: WorkerConfig) -> Worker {
        Worker { id: format!("worker-{}", new_id()), store, blobs, router, hub, config }
    }

    /// Runs `concurrency` claim loops until `shutdown` turns true; then
    /// claims nothing more, lets running tasks finish for `drain_ms`, and
    /// releases those still making their images to the queue.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let (abort, aborted) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..self.config.concurrency.max(1) {
            let (worker, mut shutdown, aborted) = (self.clone(), shutdown.clone(), aborted.clone());
            loops.spawn(async move {
                let wake = worker.hub.wake_handle();
                while !*shutdown.borrow() {
                    match worker.claim_and_run(&aborted).await {
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
            });
        }
        // A dropped sender means shutdown too.
        let _ = shutdown.clone().wait_for(|stop| *stop).await;
        let drain = Duration::from_millis(self.config.drain_ms);
        if tokio::time::timeout(drain, async { while loops.join_next().await.is_some() {} }).await.is_err() {
            tracing::info!(worker = %self.id, "releasing unfinished tasks");
            let _ = abort.send(true);
            while loops.join_next().await.is_some() {}
        }
    }

    /// Claims and runs one task. `Ok(false)` when the queue was empty.
    pub async fn run_one(&self) -> Result<bool> {
        let (_keep, never) = watch::channel(false);
        self.claim_and_run(&never).await
    }

    /// Like [`Worker::run_one`]; when `abort` turns true while the engine
    /// works, the task goes back to the queue without counting an attempt.
    async fn claim_and_run(&self, abort: &watch::Receiver<bool>) -> Result<bool> {
        let Some(task) = self.store.claim_task(&self.id, self.config.lease_ms).await? else {
            return Ok(false);
        };
        tracing::info!(task = %task.id, attempt = task.attempts, "task claimed");
        self.hub.changed(&task);
        let outcome = self.execute(&task, abort.clone()).await;
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
            Ok(None) if *abort.borrow() => {
                if self.store.release_task(&task.id, &self.id).await? {
                    tracing::info!(task = %task.id, "task released to the queue");
                    self.hub.wake_workers();
                }
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

    /// Runs the task's kind and stores the outputs. `Ok(None)` when the task
    /// was canceled or its lease lost while working, or `abort` turned true
    /// before the images were made (stores already begun are finished, so
    /// no object is left half-recorded).
    async fn execute(&self, task: &Task, mut abort: watch::Receiver<bool>) -> Result<Option<Vec<NewAsset>>> {
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
        let observer = Observer::new(Arc::new(move |p| report.store(p.min(99), Ordering::Relaxed)));
        let work = async {
            let (images, output) = tokio::select! {
                produced = self.produce(task, observer) => produced?,
                Ok(_) = abort.wait_for(|stop| *stop) => return Ok(None),
            };
            self.store_outputs(task, &images, &output).await.map(Some)
        };
        let result = tokio::select! {
            r = work => r,
            _ = lost.notified() => Ok(None),
        };
        heartbeat.abort();
        result
    }

    /// The pixels a task asks for, and how to encode them.
    async fn produce(&self, task: &Task, observer: Observer) -> Result<(Vec<EngineImage>, Output)> {
        fn params<T: serde::de::DeserializeOwned>(task: &Task) -> Result<T> {
            serde_json::from_str(&task.params).map_err(|e| Error::new(ErrorCode::InvalidInput, format!("bad task parameters: {e}")))
        }
        match TaskKind::parse(&task.kind)? {
            TaskKind::Generate => {
                let p: GenerateParams = params(task)?;
                let observer = self.with_partials(observer, task, p.partial_images, p.output);
                let request = GenerateRequest {
                    prompt: task.prompt.clone(),
                    width: p.size.width,
                    height: p.size.height,
                    style: p.style.clone(),
                    seed: p.seed,
                    n: p.n,
                    background: p.output.background,
                    partial_images: p.partial_images,
                    end_user: self.end_user(task),
                };
                Ok((self.route(task, Job::Generate(&request), observer).await?, p.output))
            }
            TaskKind::Edit => {
                let p: EditParams = params(task)?;
                let observer = self.with_partials(observer, task, p.partial_images, p.output);
                let mut images = Vec::with_capacity(p.sources.len());
                for id in &p.sources {
                    images.push(self.load_image(task, id).await?);
                }
                let mask = match &p.mask {
                    Some(id) => Some(self.load_image(task, id).await?),
                    None => None,
                };
                let first = images.first().ok_or_else(|| Error::invalid("an edit needs an image"))?;
                let (width, height) = p.size.map(|s| (s.width, s.height)).unwrap_or(first.dimensions());
                let request = EditRequest {
                    prompt: task.prompt.clone(),
                    images,
                    mask,
                    width,
                    height,
                    style: p.style.clone(),
                    seed: p.seed,
                    n: p.n,
                    background: p.output.background,
                    partial_images: p.partial_images,
                    end_user: self.end_user(task),
                };
                Ok((self.route(task, Job::Edit(&request), observer).await?, p.output))
            }
            TaskKind::Variation => {
                let p: VariationParams = params(task)?;
                let image = self.load_image(task, &p.source).await?;
                let (width, height) = p.size.map(|s| (s.width, s.height)).unwrap_or(image.dimensions());
                let request =
                    VariationRequest { image, width, height, seed: p.seed, n: p.n, partial_images: 0, end_user: self.end_user(task) };
                Ok((self.route(task, Job::Variation(&request), observer).await?, p.output))
            }
            TaskKind::Upscale => {
                let p: UpscaleParams = params(task)?;
                let image = self.load_image(task, &p.source).await?;
                let (w, h) = domain::params::upscale_size(image.dimensions(), p.factor)?;
                let image = blocking(move || imaging::upscale(&image, w, h)).await?;
                observer.progress(100);
                Ok((vec![EngineImage { image }], p.output))
            }
            TaskKind::Restyle => {
                let p: RestyleParams = params(task)?;
                let image = self.load_image(task, &p.source).await?;
                let (style, seed) = (p.style.clone(), task_seed(&task.id));
                let image = blocking(move || imaging::styles::apply(&style, &image, seed)).await?;
                observer.progress(100);
                Ok((vec![EngineImage { image }], p.output))
            }
        }
    }

    /// Runs a job on the task's model route. Failover happens inside the
    /// router, within this attempt, so the task's one hold is all it costs.
    async fn route(&self, task: &Task, job: Job<'_>, observer: Observer) -> Result<Vec<EngineImage>> {
        let model = task.model.as_deref().unwrap_or(engines::ANY_MODEL);
        let routed = self.router.run(model, job, observer).await?;
        tracing::info!(task = %task.id, provider = %routed.provider, model = %routed.model, "engine finished");
        Ok(routed.images)
    }

    fn end_user(&self, task: &Task) -> Option<String> {
        self.config.end_user_secret.as_ref().map(|secret| engines::end_user_tag(secret, &task.owner_id))
    }

    /// When the task asks for partial frames: each one the engine makes is
    /// encoded like the output and published on the hub (never stored).
    fn with_partials(&self, observer: Observer, task: &Task, partial_images: u32, output: Output) -> Observer {
        if partial_images == 0 {
            return observer;
        }
        let (hub, task_id, owner_id) = (self.hub.clone(), task.id.clone(), task.owner_id.clone());
        // Engines call the sink from their blocking render threads.
        observer.with_partials(Arc::new(move |frame: PartialImage| match imaging::encode(&frame.image, &output) {
            Ok(encoded) => hub.partial(PartialFrame {
                task_id: task_id.clone(),
                owner_id: owner_id.clone(),
                image_index: frame.index,
                partial_index: frame.partial_index,
                width: encoded.width,
                height: encoded.height,
                b64: base64::engine::general_purpose::STANDARD.encode(&encoded.bytes),
            }),
            Err(e) => tracing::warn!(task = %task_id, error = %e, "a partial frame could not be encoded"),
        }))
    }

    /// A source image of the task's owner (an upload or an earlier output),
    /// decoded with the configured limits.
    async fn load_image(&self, task: &Task, asset_id: &str) -> Result<RgbaImage> {
        let asset = self.store.get_asset(&task.owner_id, asset_id).await?;
        let bytes = self.blobs.get(&asset.storage_key).await?.ok_or_else(|| Error::new(ErrorCode::NotFound, "the source image is gone"))?;
        let limits = self.config.decode_limits;
        blocking(move || imaging::decode(&bytes, &limits).map(|d| d.image)).await
    }

    async fn store_outputs(&self, task: &Task, images: &[EngineImage], output: &Output) -> Result<Vec<NewAsset>> {
        let mut assets = Vec::with_capacity(images.len() * 2);
        let expires_at = store::now_ms() + self.config.unsaved_retention_ms;
        for image in images {
            let (img, output, side) = (image.image.clone(), *output, self.config.thumbnail_side);
            let (full, thumb) = blocking(move || Ok((imaging::encode(&img, &output)?, imaging::thumbnail(&img, side)?))).await?;
            let output_id = new_id();
            for (encoded, kind, id, parent) in
                [(full, "output", output_id.clone(), None), (thumb, "thumbnail", new_id(), Some(output_id.clone()))]
            {
                let asset = NewAsset {
                    storage_key: format!("{}/{}.{}", task.owner_id, id, encoded.format().extension()),
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

/// Runs CPU-heavy pixel work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("image work failed: {e}")))?
}

/// A stable seed for a task's textures (restyle paper and grain).
fn task_seed(task_id: &str) -> u64 {
    u64::from_le_bytes(Sha256::digest(task_id.as_bytes())[..8].try_into().expect("8 bytes"))
}
