//! Prometheus text-format metrics: requests by route and status, request latency, the
//! batch sizes the compute threads ran and, for language models, tokens generated, time to
//! the first token, time between tokens, and sequences decoding and waiting. Hand-written (a few counters behind a mutex) rather
//! than a metrics crate: the format is simple and this keeps the dependency tree small.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    generated_tokens: AtomicU64,
    time_to_first_token: Mutex<Histogram>,
    inter_token_latency: Mutex<Histogram>,
    /// Per language model, by name.
    decoders: Mutex<BTreeMap<String, Arc<DecoderLoad>>>,
}

/// One language model's scheduler load, read by `/metrics` as gauges.
#[derive(Default)]
pub struct DecoderLoad {
    /// Sequences in the batched decoding loop.
    pub active: AtomicUsize,
    /// Requests accepted and waiting for a place in the loop.
    pub queued: AtomicUsize,
}

const INTER_TOKEN_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
];

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
            generated_tokens: AtomicU64::new(0),
            time_to_first_token: Mutex::new(Histogram::new(LATENCY_BUCKETS.to_vec())),
            inter_token_latency: Mutex::new(Histogram::new(INTER_TOKEN_BUCKETS.to_vec())),
            decoders: Mutex::new(BTreeMap::new()),
        }
    }

    /// The gauges of a language model's scheduler, registered under its name.
    pub fn decoder_load(&self, model: &str) -> Arc<DecoderLoad> {
        lock(&self.decoders).entry(model.to_string()).or_default().clone()
    }

    /// A token drawn for a sequence: `since` is the time from the request's arrival (its
    /// first token) or from the sequence's previous token.
    pub fn observe_token(&self, first: bool, since: f64) {
        self.generated_tokens.fetch_add(1, Ordering::Relaxed);
        let histogram = if first {
            &self.time_to_first_token
        } else {
            &self.inter_token_latency
        };
        lock(histogram).observe(since);
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
        self.render_generation(&mut out);
        out
    }

    fn render_generation(&self, out: &mut String) {
        let name = "kiln_generated_tokens_total";
        let _ = writeln!(
            out,
            "# HELP {name} Tokens generated by the language models.\n# TYPE {name} counter\n{name} {}",
            self.generated_tokens.load(Ordering::Relaxed)
        );
        lock(&self.time_to_first_token).render(
            out,
            "kiln_time_to_first_token_seconds",
            "Time from receiving a generation request to drawing its first token.",
        );
        lock(&self.inter_token_latency).render(
            out,
            "kiln_inter_token_latency_seconds",
            "Time between consecutive tokens of one sequence.",
        );
        let decoders = lock(&self.decoders);
        for (name, help, gauge) in [
            (
                "kiln_active_sequences",
                "Sequences in a language model's batched decoding loop.",
                (|d: &DecoderLoad| d.active.load(Ordering::Relaxed)) as fn(&DecoderLoad) -> usize,
            ),
            (
                "kiln_queued_sequences",
                "Generation requests waiting for a place in the decoding loop.",
                |d: &DecoderLoad| d.queued.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (model, load) in decoders.iter() {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), gauge(load));
            }
        }
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

    #[test]
    fn generation_is_counted_and_each_language_model_has_its_gauges() {
        let m = Metrics::new(8);
        m.observe_token(true, 0.02);
        m.observe_token(false, 0.0015);
        m.observe_token(false, 0.0015);
        m.decoder_load("gpt").active.store(3, Ordering::Relaxed);
        m.decoder_load("gpt").queued.store(2, Ordering::Relaxed);
        let text = m.render();
        for line in [
            "kiln_generated_tokens_total 3",
            "kiln_time_to_first_token_seconds_bucket{le=\"0.01\"} 0",
            "kiln_time_to_first_token_seconds_bucket{le=\"0.025\"} 1",
            "kiln_inter_token_latency_seconds_bucket{le=\"0.002\"} 2",
            "kiln_inter_token_latency_seconds_count 2",
            "kiln_active_sequences{model=\"gpt\"} 3",
            "kiln_queued_sequences{model=\"gpt\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }
}
