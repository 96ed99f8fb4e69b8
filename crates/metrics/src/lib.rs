//! Process-wide Prometheus metrics: the counters and histograms the other
//! crates update as things happen, and a writer of the text exposition
//! format 0.0.4. Gauges computed at scrape time (tasks, queue, outbox,
//! providers) are written by the caller through [`Exposition`].
//!
//! Label values are route templates, provider names, model names from the
//! configuration, status words and error codes: never an email, a name, an
//! id or a raw path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};

/// Requests answered, by matched route template, method and status.
pub static HTTP_REQUESTS: Counter = Counter::new(
    "atelier_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    &["route", "method", "status"],
);

/// Time to the response head, by route template and method.
pub static HTTP_DURATION: Histogram = Histogram::new(
    "atelier_http_request_duration_seconds",
    "Time from request to response head, by route template and method.",
    &["route", "method"],
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
);

/// Engine calls, by provider and result (`ok` or the error code).
pub static PROVIDER_DURATION: Histogram = Histogram::new(
    "atelier_provider_request_duration_seconds",
    "Duration of engine calls, by provider and result (ok or the error code).",
    &["provider", "result"],
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
);

/// Credits moved, by movement: `granted` (sign-up, packs, plans,
/// positive adjustments), `captured` (charged for a finished task),
/// `refunded`, `disputed`.
pub static CREDITS: Counter = Counter::new("atelier_credits_total", "Credits moved, by movement.", &["movement"]);

/// Completion-webhook delivery attempts, by result (`delivered`, `failed`,
/// `refused`, …): incremented by the webhook deliverer.
pub static WEBHOOK_DELIVERIES: Counter =
    Counter::new("atelier_webhook_deliveries_total", "Completion-webhook delivery attempts, by result.", &["result"]);

/// Sweep runs, by sweep.
pub static SWEEP_RUNS: Counter = Counter::new("atelier_sweep_runs_total", "Sweep runs completed, by sweep.", &["sweep"]);

/// Items each sweep removed or moved, by sweep and kind.
pub static SWEEP_ITEMS: Counter =
    Counter::new("atelier_sweep_items_total", "Items sweeps removed, expired or re-queued, by sweep and kind.", &["sweep", "kind"]);

/// Records one completed run of `sweep` and what it removed, by kind.
pub fn sweep_done(sweep: &str, items: &[(&str, u64)]) {
    SWEEP_RUNS.inc(&[sweep]);
    for (kind, n) in items {
        SWEEP_ITEMS.inc_by(&[sweep, kind], *n as f64);
    }
}

/// Every process-wide family, in exposition order.
pub fn write_process_metrics(out: &mut Exposition) {
    HTTP_REQUESTS.write(out);
    HTTP_DURATION.write(out);
    PROVIDER_DURATION.write(out);
    CREDITS.write(out);
    WEBHOOK_DELIVERIES.write(out);
    SWEEP_RUNS.write(out);
    SWEEP_ITEMS.write(out);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(labels: &[&str], values: &[&str]) -> Vec<String> {
    debug_assert_eq!(labels.len(), values.len(), "one value per label");
    values.iter().map(|v| v.to_string()).collect()
}

pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Counter {
        Counter { name, help, labels, series: Mutex::new(BTreeMap::new()) }
    }

    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1.0);
    }

    /// Adds `n` (counters only go up: a negative `n` is ignored).
    pub fn inc_by(&self, values: &[&str], n: f64) {
        if n >= 0.0 {
            *lock(&self.series).entry(key(self.labels, values)).or_insert(0.0) += n;
        }
    }

    /// The current value of one series (0 when never incremented).
    pub fn get(&self, values: &[&str]) -> f64 {
        lock(&self.series).get(&key(self.labels, values)).copied().unwrap_or(0.0)
    }

    pub fn write(&self, out: &mut Exposition) {
        out.header(self.name, "counter", self.help);
        for (values, n) in lock(&self.series).iter() {
            out.sample(self.name, &pairs(self.labels, values), *n);
        }
    }
}

struct Buckets {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Buckets>>,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str], bounds: &'static [f64]) -> Histogram {
        Histogram { name, help, labels, bounds, series: Mutex::new(BTreeMap::new()) }
    }

    pub fn observe(&self, values: &[&str], v: f64) {
        let mut series = lock(&self.series);
        let b =
            series.entry(key(self.labels, values)).or_insert_with(|| Buckets { counts: vec![0; self.bounds.len()], sum: 0.0, count: 0 });
        // Cumulative buckets are summed when written; here each value lands in one.
        if let Some(i) = self.bounds.iter().position(|bound| v <= *bound) {
            b.counts[i] += 1;
        }
        b.sum += v;
        b.count += 1;
    }

    /// Observations of one series so far.
    pub fn count(&self, values: &[&str]) -> u64 {
        lock(&self.series).get(&key(self.labels, values)).map_or(0, |b| b.count)
    }

    pub fn write(&self, out: &mut Exposition) {
        out.header(self.name, "histogram", self.help);
        let bucket = format!("{}_bucket", self.name);
        for (values, b) in lock(&self.series).iter() {
            let mut labels = pairs(self.labels, values);
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&b.counts) {
                cumulative += n;
                labels.push(("le", format_value(*bound)));
                out.sample(&bucket, &labels, cumulative as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf".into()));
            out.sample(&bucket, &labels, b.count as f64);
            labels.pop();
            out.sample(&format!("{}_sum", self.name), &labels, b.sum);
            out.sample(&format!("{}_count", self.name), &labels, b.count as f64);
        }
    }
}

fn pairs<'a>(names: &[&'a str], values: &[String]) -> Vec<(&'a str, String)> {
    names.iter().copied().zip(values.iter().cloned()).collect()
}

/// Integers without a fraction, special values as Prometheus spells them.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// One scrape's text: `# HELP`, `# TYPE` and sample lines.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A gauge family computed now: one sample per row.
    pub fn gauge<'a>(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>) {
        self.family(name, "gauge", help, rows);
    }

    /// A counter family whose values are kept elsewhere (a snapshot).
    pub fn counter<'a>(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>) {
        self.family(name, "counter", help, rows);
    }

    fn family<'a>(&mut self, name: &str, kind: &str, help: &str, rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>) {
        self.header(name, kind, help);
        for (labels, value) in rows {
            self.sample(name, &labels, value);
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_label_values_escaped() {
        static H: Histogram = Histogram::new("t_seconds", "A test.", &["route"], &[0.1, 1.0]);
        H.observe(&["/a"], 0.0625);
        H.observe(&["/a"], 0.5);
        H.observe(&["/a"], 7.0);
        let c = Counter::new("t_total", "Line one\nline two.", &["v"]);
        c.inc(&["say \"hi\"\\"]);
        c.inc_by(&["say \"hi\"\\"], 2.5);
        c.inc_by(&["say \"hi\"\\"], -9.0);
        let mut out = Exposition::new();
        H.write(&mut out);
        c.write(&mut out);
        out.gauge("t_gauge", "G.", [(vec![], 3.0)]);
        assert_eq!(
            out.finish(),
            "# HELP t_seconds A test.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\nt_seconds_bucket{route=\"/a\",le=\"1\"} 2\nt_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n\
             t_seconds_sum{route=\"/a\"} 7.5625\nt_seconds_count{route=\"/a\"} 3\n\
             # HELP t_total Line one\\nline two.\n# TYPE t_total counter\nt_total{v=\"say \\\"hi\\\"\\\\\"} 3.5\n\
             # HELP t_gauge G.\n# TYPE t_gauge gauge\nt_gauge 3\n"
        );
    }
}
