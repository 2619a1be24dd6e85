//! Prometheus text-format metrics: requests by route and status, request latency and the
//! batch sizes the compute threads ran. Hand-written (a few counters behind a mutex) rather
//! than a metrics crate: the format is simple and this keeps the dependency tree small.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative); one more than `bounds` for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len() + 1];
        Histogram {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

pub struct Metrics {
    /// (route pattern, status code) → count. Routes are patterns such as
    /// `/v2/models/{name}/infer`, so the label set stays bounded whatever clients send.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<Histogram>,
    batch_size: Mutex<Histogram>,
    refused_connections: AtomicU64,
}

impl Metrics {
    pub fn new(max_batch: usize) -> Self {
        let mut bounds = Vec::new();
        let mut b = 1;
        while b < max_batch {
            bounds.push(b as f64);
            b *= 2;
        }
        bounds.push(max_batch as f64);
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(LATENCY_BUCKETS.to_vec())),
            batch_size: Mutex::new(Histogram::new(bounds)),
            refused_connections: AtomicU64::new(0),
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        lock(&self.latency).observe(seconds);
    }

    pub fn observe_batch(&self, rows: usize) {
        lock(&self.batch_size).observe(rows as f64);
    }

    pub fn observe_refused_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "kiln_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered, by route and status code."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((route, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "{name}{{route=\"{}\",code=\"{code}\"}} {n}", escape(route));
        }
        lock(&self.latency).render(
            &mut out,
            "kiln_request_duration_seconds",
            "Time from receiving a request to answering it.",
        );
        lock(&self.batch_size).render(
            &mut out,
            "kiln_batch_size",
            "Samples per forward pass run by the compute threads.",
        );
        let name = "kiln_refused_connections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections closed at once because --max-connections were open.\n# TYPE {name} counter\n{name} {}",
            self.refused_connections.load(Ordering::Relaxed)
        );
        out
    }
}

/// A poisoned lock only means another thread panicked mid-update of a counter; the counts
/// are still worth serving.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counts_are_labelled() {
        let m = Metrics::new(8);
        m.observe_batch(1);
        m.observe_batch(3);
        m.observe_batch(8);
        m.observe_request("/v2", 200, 0.002);
        let text = m.render();
        for line in [
            "kiln_batch_size_bucket{le=\"1\"} 1",
            "kiln_batch_size_bucket{le=\"2\"} 1",
            "kiln_batch_size_bucket{le=\"4\"} 2",
            "kiln_batch_size_bucket{le=\"8\"} 3",
            "kiln_batch_size_bucket{le=\"+Inf\"} 3",
            "kiln_batch_size_sum 12",
            "kiln_requests_total{route=\"/v2\",code=\"200\"} 1",
            "kiln_request_duration_seconds_bucket{le=\"0.001\"} 0",
            "kiln_request_duration_seconds_bucket{le=\"0.0025\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }
}
