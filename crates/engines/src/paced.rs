use std::time::Duration;

use crate::{BoxFuture, Engine, EngineImage, GenerateRequest, ProgressFn};

/// Makes every generation of `inner` take at least `min`, the way a remote
/// model's latency would. Used for demos, load tests and crash drills
/// (`engine.min_duration_ms`); zero adds nothing.
pub struct Paced<E> {
    pub inner: E,
    pub min: Duration,
}

impl<E: Engine> Engine for Paced<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, progress: ProgressFn) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let floor = tokio::time::sleep(self.min);
            let images = self.inner.generate(req, progress).await?;
            floor.await;
            Ok(images)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProceduralEngine;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn holds_the_result_for_at_least_the_minimum() {
        let engine = Paced { inner: ProceduralEngine, min: Duration::from_secs(30) };
        let req = GenerateRequest { prompt: "a lake".into(), width: 64, height: 64, style: "none".into(), seed: 1, n: 1 };
        let started = tokio::time::Instant::now();
        let images = engine.generate(&req, Arc::new(|_| {})).await.unwrap();
        assert_eq!(images.len(), 1);
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert_eq!(engine.name(), "procedural");
    }
}
