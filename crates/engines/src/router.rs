//! The router: per model name, a list of providers with weights. Each call
//! goes to the least busy healthy provider (in-flight calls per unit of
//! weight, then calls started per unit of weight, so idle traffic spreads by
//! weight); a retryable failure (unavailable, timeout, 5xx, 429) moves the
//! call to another provider of the route, within the same task attempt, so
//! the task's one credit hold is never touched. Each provider has a
//! concurrency cap, a timeout and a circuit breaker: after
//! `breaker_failures` consecutive failures it is skipped for
//! `breaker_cooldown`, then one call probes it (half-open); success closes
//! it, failure opens it again. A 429's `Retry-After` keeps the provider out
//! of rotation for that long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{Error, ErrorCode, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::{Capabilities, EditRequest, Engine, EngineImage, GenerateRequest, Observer, VariationRequest};

/// The route every model name without its own route takes.
pub const ANY_MODEL: &str = "*";

/// Milliseconds since the epoch; tests move a manual one.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

/// A provider's price row: credits per image. `*` matches anything; the
/// first matching row wins, so list specific rows first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    #[serde(default = "any")]
    pub model: String,
    #[serde(default = "any")]
    pub size: String,
    #[serde(default = "any")]
    pub quality: String,
    pub credits: i64,
}

fn any() -> String {
    ANY_MODEL.to_string()
}

impl Cost {
    fn matches(&self, model: &str, size: &str, quality: &str) -> bool {
        [(&self.model, model), (&self.size, size), (&self.quality, quality)].iter().all(|(want, got)| *want == ANY_MODEL || want == got)
    }
}

/// One provider as the router runs it.
pub struct Provider {
    pub engine: Arc<dyn Engine>,
    /// Adapter kind, shown in the health snapshot (`openai`, `comfyui` …).
    pub kind: String,
    pub max_concurrency: usize,
    /// `None`: no limit (the built-in engine).
    pub timeout: Option<Duration>,
    /// Consecutive failures that open the breaker; 0 = never.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub costs: Vec<Cost>,
}

impl Provider {
    /// No cap, no timeout, no breaker: the built-in engine.
    pub fn local(engine: Arc<dyn Engine>) -> Provider {
        Provider {
            engine,
            kind: "procedural".into(),
            max_concurrency: Semaphore::MAX_PERMITS,
            timeout: None,
            breaker_failures: 0,
            breaker_cooldown: Duration::ZERO,
            costs: Vec::new(),
        }
    }
}

/// A route's entry: a provider by name and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub provider: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// What a task asks of an engine.
#[derive(Debug, Clone, Copy)]
pub enum Job<'a> {
    Generate(&'a GenerateRequest),
    Edit(&'a EditRequest),
    Variation(&'a VariationRequest),
}

impl Job<'_> {
    fn supported(&self, c: &Capabilities) -> bool {
        match self {
            Job::Generate(_) => true,
            Job::Edit(_) => c.edit,
            Job::Variation(_) => c.variation,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Job::Generate(_) => "generate images",
            Job::Edit(_) => "edit images",
            Job::Variation(_) => "make variations",
        }
    }
}

/// The images and who made them.
#[derive(Debug)]
pub struct Routed {
    pub images: Vec<EngineImage>,
    pub provider: String,
    pub model: String,
}

/// A provider's state for admins and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderHealth {
    pub name: String,
    pub kind: String,
    pub model: String,
    /// `closed` (healthy), `open` (skipped until `open_until_ms`) or
    /// `half_open` (the next call probes it).
    pub state: &'static str,
    pub open_until_ms: Option<i64>,
    /// Out of rotation until then after a 429's `Retry-After`.
    pub rate_limited_until_ms: Option<i64>,
    pub in_flight: usize,
    pub waiting: usize,
    pub max_concurrency: usize,
    pub consecutive_failures: u32,
    pub succeeded: u64,
    pub failed: u64,
    /// The code of the last failure (never its text: no secrets, no prompts).
    pub last_error: Option<String>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    waiting: usize,
    started: u64,
    succeeded: u64,
    failed: u64,
    consecutive_failures: u32,
    opened_at: Option<i64>,
    probing: bool,
    rate_limited_until: i64,
    last_error: Option<ErrorCode>,
}

struct Slot {
    provider: Provider,
    permits: Semaphore,
    state: Mutex<State>,
}

enum Availability {
    Closed,
    HalfOpen,
    Out,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn availability(&self, s: &State, now: i64) -> Availability {
        if s.rate_limited_until > now {
            return Availability::Out;
        }
        match s.opened_at {
            None => Availability::Closed,
            Some(at) if now < at + self.provider.breaker_cooldown.as_millis() as i64 => Availability::Out,
            Some(_) if s.probing => Availability::Out,
            Some(_) => Availability::HalfOpen,
        }
    }
}

/// Holds a provider's in-flight count (and its half-open probe) for one
/// attempt; dropping it unresolved (a canceled task) frees both.
struct Attempt<'a> {
    index: usize,
    slot: &'a Slot,
    probe: bool,
    running: bool,
}

impl Attempt<'_> {
    fn start(&mut self) {
        let mut s = self.slot.state();
        s.waiting -= 1;
        s.in_flight += 1;
        s.started += 1;
        self.running = true;
    }

    fn finish(self, now: i64, outcome: Result<(), &Error>) {
        let breaker_failures = self.slot.provider.breaker_failures;
        let mut s = self.slot.state();
        match outcome {
            Ok(()) => {
                s.succeeded += 1;
                s.consecutive_failures = 0;
                s.opened_at = None;
            }
            Err(e) if e.code == ErrorCode::RateLimited => {
                s.failed += 1;
                s.last_error = Some(e.code);
                s.rate_limited_until = now + 1000 * e.retry_after_secs.unwrap_or(1) as i64;
            }
            Err(e) => {
                s.failed += 1;
                s.last_error = Some(e.code);
                s.consecutive_failures += 1;
                if self.probe || (breaker_failures > 0 && s.consecutive_failures >= breaker_failures) {
                    s.opened_at = Some(now);
                }
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut s = self.slot.state();
        if self.running {
            s.in_flight -= 1;
        } else {
            s.waiting -= 1;
        }
        if self.probe {
            // Finished (its outcome recorded) or abandoned: either way the
            // next call may probe.
            s.probing = false;
        }
    }
}

pub struct Router {
    slots: Vec<Slot>,
    /// Model name → (slot index, weight).
    routes: BTreeMap<String, Vec<(usize, u32)>>,
    clock: Clock,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|s| s.provider.engine.name()).collect();
        f.debug_struct("Router").field("providers", &names).field("models", &self.routes.keys().collect::<Vec<_>>()).finish()
    }
}

/// Failures another provider may not share.
pub fn is_retryable(e: &Error) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::RateLimited)
}

impl Router {
    /// Every model name to one engine, without cap, timeout or breaker.
    pub fn single(engine: Arc<dyn Engine>) -> Router {
        let slot = Slot { permits: Semaphore::new(Semaphore::MAX_PERMITS), state: Mutex::default(), provider: Provider::local(engine) };
        Router { slots: vec![slot], routes: BTreeMap::from([(ANY_MODEL.to_string(), vec![(0, 1)])]), clock: system_clock() }
    }

    /// Checks that names are unique, every route names known providers with
    /// weights of at least 1, and caps are at least 1.
    pub fn new(providers: Vec<Provider>, routes: &BTreeMap<String, Vec<RouteTarget>>) -> Result<Router> {
        let mut slots: Vec<Slot> = Vec::with_capacity(providers.len());
        for provider in providers {
            let name = provider.engine.name().to_string();
            if slots.iter().any(|s| s.provider.engine.name() == name) {
                return Err(Error::invalid(format!("two providers are named {name:?}")));
            }
            if provider.max_concurrency == 0 {
                return Err(Error::invalid(format!("provider {name}: max_concurrency must be at least 1")));
            }
            let permits = Semaphore::new(provider.max_concurrency.min(Semaphore::MAX_PERMITS));
            slots.push(Slot { provider, permits, state: Mutex::default() });
        }
        if routes.is_empty() {
            return Err(Error::invalid("no routes: route at least one model name (or \"*\") to a provider"));
        }
        let mut table = BTreeMap::new();
        for (model, targets) in routes {
            if targets.is_empty() {
                return Err(Error::invalid(format!("the route of {model:?} lists no provider")));
            }
            let mut entries = Vec::with_capacity(targets.len());
            for t in targets {
                let index = slots
                    .iter()
                    .position(|s| s.provider.engine.name() == t.provider)
                    .ok_or_else(|| Error::invalid(format!("the route of {model:?} names an unknown provider {:?}", t.provider)))?;
                if t.weight == 0 {
                    return Err(Error::invalid(format!("the route of {model:?}: weights are at least 1")));
                }
                entries.push((index, t.weight));
            }
            table.insert(model.clone(), entries);
        }
        Ok(Router { slots, routes: table, clock: system_clock() })
    }

    pub fn with_clock(mut self, clock: Clock) -> Router {
        self.clock = clock;
        self
    }

    /// Model names with a route of their own.
    pub fn models(&self) -> Vec<String> {
        self.routes.keys().filter(|m| *m != ANY_MODEL).cloned().collect()
    }

    /// Whether model names without a route of their own are served.
    pub fn serves_any_model(&self) -> bool {
        self.routes.contains_key(ANY_MODEL)
    }

    /// Provider names of a model's route, in order.
    pub fn route(&self, model: &str) -> Vec<String> {
        self.entries(model).iter().map(|(i, _)| self.slots[*i].provider.engine.name().to_string()).collect()
    }

    fn entries(&self, model: &str) -> &[(usize, u32)] {
        self.routes.get(model).or_else(|| self.routes.get(ANY_MODEL)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Credits per image at `provider` for this model, size and quality,
    /// from its cost table; `None` when no row matches.
    pub fn cost(&self, provider: &str, model: &str, size: &str, quality: &str) -> Option<i64> {
        let slot = self.slots.iter().find(|s| s.provider.engine.name() == provider)?;
        slot.provider.costs.iter().find(|c| c.matches(model, size, quality)).map(|c| c.credits)
    }

    /// Every provider's cost table, by provider name.
    pub fn costs(&self) -> BTreeMap<String, Vec<Cost>> {
        self.slots.iter().map(|s| (s.provider.engine.name().to_string(), s.provider.costs.clone())).collect()
    }

    pub fn health(&self) -> Vec<ProviderHealth> {
        let now = (self.clock)();
        self.slots
            .iter()
            .map(|slot| {
                let s = slot.state();
                let cooldown = slot.provider.breaker_cooldown.as_millis() as i64;
                let state = match (s.opened_at, slot.availability(&s, now)) {
                    (None, _) => "closed",
                    (Some(at), _) if now < at + cooldown => "open",
                    _ => "half_open",
                };
                ProviderHealth {
                    name: slot.provider.engine.name().to_string(),
                    kind: slot.provider.kind.clone(),
                    model: slot.provider.engine.model().to_string(),
                    state,
                    open_until_ms: s.opened_at.map(|at| at + cooldown),
                    rate_limited_until_ms: (s.rate_limited_until > now).then_some(s.rate_limited_until),
                    in_flight: s.in_flight,
                    waiting: s.waiting,
                    max_concurrency: slot.provider.max_concurrency,
                    consecutive_failures: s.consecutive_failures,
                    succeeded: s.succeeded,
                    failed: s.failed,
                    last_error: s.last_error.map(|c| c.as_str().to_string()),
                }
            })
            .collect()
    }

    /// Picks the next provider of the route not yet tried, registering the
    /// attempt (as waiting) under the state lock.
    fn pick(&self, entries: &[(usize, u32)], tried: &[usize], job: &Job<'_>) -> std::result::Result<Attempt<'_>, bool> {
        let now = (self.clock)();
        let mut supported = false;
        let mut best: Option<(usize, u32, bool, u64, u64)> = None;
        for &(index, weight) in entries {
            let slot = &self.slots[index];
            if !job.supported(&slot.provider.engine.capabilities()) {
                continue;
            }
            supported = true;
            if tried.contains(&index) {
                continue;
            }
            let s = slot.state();
            let half_open = match slot.availability(&s, now) {
                Availability::Out => continue,
                Availability::Closed => false,
                Availability::HalfOpen => true,
            };
            let (load, started) = ((s.in_flight + s.waiting) as u64 + 1, s.started);
            let better = match best {
                None => true,
                // A due probe goes first: it is how a provider comes back.
                Some((_, _, best_probe, _, _)) if half_open != best_probe => half_open,
                Some((_, w, _, l, st)) => {
                    let (a, b) = (load * u64::from(w), l * u64::from(weight));
                    a < b || (a == b && started * u64::from(w) < st * u64::from(weight))
                }
            };
            if better {
                best = Some((index, weight, half_open, load, started));
            }
        }
        let (index, _, probe, _, _) = best.ok_or(supported)?;
        let slot = &self.slots[index];
        let mut s = slot.state();
        s.waiting += 1;
        if probe {
            s.probing = true;
        }
        Ok(Attempt { index, slot, probe, running: false })
    }

    /// Runs the job on the model's route, failing over on retryable errors.
    pub async fn run(&self, model: &str, job: Job<'_>, observer: Observer) -> Result<Routed> {
        let entries = self.entries(model);
        if entries.is_empty() {
            return Err(Error::invalid(format!("no provider serves the model {model:?}")));
        }
        let mut tried = Vec::new();
        let mut last: Option<Error> = None;
        loop {
            let mut attempt = match self.pick(entries, &tried, &job) {
                Ok(a) => a,
                Err(false) => return Err(Error::invalid(format!("no provider of the model {model:?} can {}", job.what()))),
                Err(true) => {
                    let e = last
                        .unwrap_or_else(|| Error::new(ErrorCode::Unavailable, format!("no provider of the model {model:?} is available")));
                    // Rate limits and outages alike: the task may be retried later.
                    let retry = e.retry_after_secs;
                    let mut out = Error::new(ErrorCode::Unavailable, e.message);
                    out.retry_after_secs = retry;
                    return Err(out);
                }
            };
            tried.push(attempt.index);
            let slot = attempt.slot;
            let permit = slot.permits.acquire().await.map_err(|_| Error::internal("provider closed"))?;
            attempt.start();
            let began = std::time::Instant::now();
            let provider = &slot.provider;
            let call = call(provider.engine.as_ref(), job, observer.clone());
            let result = match provider.timeout {
                Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorCode::Unavailable,
                        format!("provider {} did not answer within {} ms", provider.engine.name(), limit.as_millis()),
                    ))
                }),
                None => call.await,
            };
            drop(permit);
            let outcome = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
            metrics::PROVIDER_DURATION.observe(&[provider.engine.name(), outcome], began.elapsed().as_secs_f64());
            let now = (self.clock)();
            match result {
                Ok(images) => {
                    let routed =
                        Routed { images, provider: provider.engine.name().to_string(), model: provider.engine.model().to_string() };
                    attempt.finish(now, Ok(()));
                    return Ok(routed);
                }
                Err(e) if is_retryable(&e) => {
                    tracing::warn!(provider = %provider.engine.name(), code = %e.code, "provider attempt failed; trying another");
                    attempt.finish(now, Err(&e));
                    last = Some(e);
                }
                Err(e) => {
                    // The provider answered: it is up; the request was at fault.
                    attempt.finish(now, Ok(()));
                    return Err(e);
                }
            }
        }
    }
}

fn call<'a>(engine: &'a dyn Engine, job: Job<'a>, observer: Observer) -> crate::BoxFuture<'a, Result<Vec<EngineImage>>> {
    match job {
        Job::Generate(r) => engine.generate(r, observer),
        Job::Edit(r) => engine.edit(r, observer),
        Job::Variation(r) => engine.variation(r, observer),
    }
}
