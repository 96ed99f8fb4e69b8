use std::time::Duration;

use crate::{BoxFuture, Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer, VariationRequest};

/// Makes every call of `inner` take at least `min`, the way a remote
/// model's latency would. Used for demos, load tests and crash drills
/// (`engine.min_duration_ms`); zero adds nothing.
pub struct Paced<E> {
    pub inner: E,
    pub min: Duration,
}

impl<E: Engine> Paced<E> {
    fn hold<'a>(&'a self, work: BoxFuture<'a, domain::Result<Vec<EngineImage>>>) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        Box::pin(async move {
            let floor = tokio::time::sleep(self.min);
            let images = work.await?;
            floor.await;
            Ok(images)
        })
    }
}

impl<E: Engine> Engine for Paced<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn label(&self) -> &str {
        self.inner.label()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn generate<'a>(&'a self, req: &'a GenerateRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        self.hold(self.inner.generate(req, observer))
    }

    fn edit<'a>(&'a self, req: &'a EditRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        self.hold(self.inner.edit(req, observer))
    }

    fn variation<'a>(&'a self, req: &'a VariationRequest, observer: Observer) -> BoxFuture<'a, domain::Result<Vec<EngineImage>>> {
        self.hold(self.inner.variation(req, observer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProceduralEngine;

    #[tokio::test(start_paused = true)]
    async fn holds_the_result_for_at_least_the_minimum() {
        let engine = Paced { inner: ProceduralEngine, min: Duration::from_secs(30) };
        let req =
            GenerateRequest { prompt: "a lake".into(), width: 64, height: 64, style: "none".into(), seed: 1, n: 1, ..Default::default() };
        let started = tokio::time::Instant::now();
        let images = engine.generate(&req, Observer::silent()).await.unwrap();
        assert_eq!(images.len(), 1);
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert_eq!(engine.name(), "procedural");
        assert!(engine.capabilities().edit);
    }
}
