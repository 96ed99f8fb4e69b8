//! Image engines behind one object-safe, provider-neutral trait. The
//! built-in [`ProceduralEngine`] works offline and is deterministic; provider
//! adapters and the router implement the same trait.
//!
//! Three operations: [`Engine::generate`] (text to image), [`Engine::edit`]
//! (images plus an optional mask: where the mask, or without one the first
//! image's own alpha, is fully transparent the engine paints new content;
//! every other pixel comes back unchanged) and [`Engine::variation`] (new
//! images in the palette and composition family of one image). An engine
//! that lacks one says so in [`Engine::capabilities`] and the default method
//! refuses with `invalid_input`. Upscale and restyle are imaging operations,
//! not engine calls.
//!
//! Streaming: the [`Observer`] passed to every call receives progress
//! percentages and, when the request asks for `partial_images > 0` and the
//! observer has a sink, that many partial frames per image before the final
//! one (as OpenAI's `image_generation.partial_image` events).
//!
//! Cancel: dropping a call's future cancels it. Adapters of remote
//! providers then tell the provider to stop (ComfyUI `/interrupt`,
//! Replicate's cancel, the web UI's interrupt).
//!
//! Remote providers ([`OpenAiEngine`], [`ComfyUiEngine`],
//! [`Automatic1111Engine`], [`ReplicateEngine`]) receive only the prompt,
//! the parameters and the task's own images, plus at most
//! [`GenerateRequest::end_user`], a keyed hash of the account (C12, C44).
//! Their outputs go through `imaging::decode` (limits, metadata dropped)
//! and are resized to the size asked, nothing drawn on them. The
//! [`Router`] spreads calls over providers per model name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use domain::params::Background;
pub use imaging::RgbaImage;

mod automatic1111;
mod comfyui;
mod config;
mod lexicon;
mod openai;
mod paced;
mod procedural;
mod remote;
mod replicate;
mod router;
mod template;

pub use automatic1111::Automatic1111Engine;
pub use comfyui::ComfyUiEngine;
pub use config::{build_router, ProviderConfig};
pub use lexicon::{read as read_prompt, Reading, Subject, Time};
pub use openai::OpenAiEngine;
pub use paced::Paced;
pub use procedural::{ProceduralEngine, LABEL, MAX_N, MAX_PARTIAL_IMAGES, MAX_SIDE, MODEL};
pub use remote::Secret;
pub use replicate::{ReplicateEngine, Target as ReplicateTarget};
pub use router::{is_retryable, system_clock, Clock, Cost, Job, Provider, ProviderHealth, RouteTarget, Routed, Router, ANY_MODEL};

/// The pseudonym a provider may receive for an account (OpenAI's `user`
/// field, for its abuse monitoring): HMAC-SHA256 of the account id under a
/// server secret, hex. Stable per account, unlinkable to it without the
/// secret, and never the id, email or name itself.
pub fn end_user_tag(secret: &Secret, account_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(account_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called with a percentage in `0..=100`, non-decreasing; the last call is 100.
pub type ProgressFn = Arc<dyn Fn(u8) + Send + Sync>;

/// Receives partial frames while an image is being made.
pub type PartialFn = Arc<dyn Fn(PartialImage) + Send + Sync>;

/// A preview of image `index` (0-based within the request's `n`); the
/// `partial_index`-th of the request's `partial_images`, same size as the
/// final image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialImage {
    pub index: u32,
    pub partial_index: u32,
    pub image: RgbaImage,
}

/// Where an engine reports while it works.
#[derive(Clone)]
pub struct Observer {
    pub progress: ProgressFn,
    pub partial: Option<PartialFn>,
}

impl Observer {
    pub fn new(progress: ProgressFn) -> Observer {
        Observer { progress, partial: None }
    }
    /// Reports nothing.
    pub fn silent() -> Observer {
        Observer::new(Arc::new(|_| {}))
    }
    pub fn with_partials(mut self, sink: PartialFn) -> Observer {
        self.partial = Some(sink);
        self
    }
    pub fn progress(&self, pct: u8) {
        (self.progress)(pct.min(100));
    }
    pub fn partial(&self, frame: PartialImage) {
        if let Some(sink) = &self.partial {
            sink(frame);
        }
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer::silent()
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("partial", &self.partial.is_some()).finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateRequest {
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    /// One of `domain::params::STYLES`; remote engines take it as a hint.
    pub style: String,
    pub seed: u64,
    pub n: u32,
    pub background: Background,
    /// Partial frames to stream per image before the final one (0–3).
    pub partial_images: u32,
    /// The account's [`end_user_tag`], when the operator enables it.
    pub end_user: Option<String>,
}

/// An edit. `images[0]` is edited; further images are references. The mask
/// (or, without one, `images[0]`'s alpha) marks with alpha 0 the area to
/// paint; it is resized to the image if its size differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditRequest {
    pub prompt: String,
    pub images: Vec<RgbaImage>,
    pub mask: Option<RgbaImage>,
    /// Output size; the image is resized to it first.
    pub width: u32,
    pub height: u32,
    pub style: String,
    pub seed: u64,
    pub n: u32,
    pub background: Background,
    pub partial_images: u32,
    pub end_user: Option<String>,
}

/// Variations of one image: same palette and composition family, new seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariationRequest {
    pub image: RgbaImage,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub n: u32,
    pub partial_images: u32,
    pub end_user: Option<String>,
}

/// Raw pixels; the worker encodes and stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineImage {
    pub image: RgbaImage,
}

/// What an engine can do; callers check before asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub edit: bool,
    pub variation: bool,
    /// Most partial frames per image it can stream (0 = none).
    pub max_partial_images: u32,
    pub transparent_background: bool,
    pub max_side: u32,
    pub max_n: u32,
}

impl Default for Capabilities {
    /// Text to image only.
    fn default() -> Self {
        Capabilities { edit: false, variation: false, max_partial_images: 0, transparent_background: false, max_side: 1536, max_n: 1 }
    }
}

fn unsupported<'a>(engine: &str, what: &str) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
    let err = domain::Error::invalid(format!("the {engine} engine cannot {what}"));
    Box::pin(async move { Err(err) })
}

pub trait Engine: Send + Sync + 'static {
    /// Stable identifier recorded on tasks (`procedural`, `openai`, …).
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// What people are shown, e.g. "built-in procedural engine".
    fn label(&self) -> &str {
        self.name()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// Returns exactly `req.n` images of `req.width` x `req.height`.
    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>>;
    /// Returns exactly `req.n` images of `req.width` x `req.height`.
    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        let _ = (req, observer);
        unsupported(self.name(), "edit images")
    }
    /// Returns exactly `req.n` images of `req.width` x `req.height`.
    fn variation<'a>(&'a self, req: &'a VariationRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        let _ = (req, observer);
        unsupported(self.name(), "make variations")
    }
}
