//! Image engines behind one object-safe trait. The built-in
//! [`ProceduralEngine`] works offline and is deterministic; provider adapters
//! and the router come later and implement the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use imaging::RgbaImage;

mod paced;
mod procedural;

pub use paced::Paced;
pub use procedural::{ProceduralEngine, MAX_N, MAX_SIDE};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called with a percentage in `0..=100`, non-decreasing; the last call is 100.
pub type ProgressFn = Arc<dyn Fn(u8) + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateRequest {
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    /// One of `domain::params::STYLES`.
    pub style: String,
    pub seed: u64,
    pub n: u32,
}

/// Raw pixels; the worker encodes and stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineImage {
    pub image: RgbaImage,
}

pub trait Engine: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// Returns exactly `req.n` images of `req.width` x `req.height`.
    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest,
        progress: ProgressFn,
    ) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>>;
}
