//! [`Metrics`]: counters, gauges and latency histograms, written as Prometheus text at
//! `GET /metrics`. Lock-free atomics; the handlers and workers update them directly.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use deal_controllers::SearchStats;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A Prometheus histogram over [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics hold integers).
    sum_us: AtomicU64,
}

impl Histogram {
    /// Record one observation of `secs` seconds.
    pub fn observe(&self, secs: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt tokens prefilled.
    pub prompt_tokens: AtomicU64,
    /// Tokens returned to clients.
    pub completion_tokens: AtomicU64,
    /// Tokens generated in any search row (lookaheads, discarded samples included).
    pub tokens_generated: AtomicU64,
    /// Rows evaluated, summed over all forward passes.
    pub search_rows: AtomicU64,
    /// Decode forward passes.
    pub forward_passes: AtomicU64,
    /// Searches finished (one per choice).
    pub searches: AtomicU64,
    /// Searches cancelled (or jobs dropped from the queue) because the client went away.
    pub cancelled: AtomicU64,
    /// Requests ended by the server's deadline (`--request-timeout`).
    pub timed_out: AtomicU64,
    /// Latency of completion requests, seconds.
    pub request_latency: Histogram,
    /// Time to the first streamed token, seconds.
    pub time_to_first_token: Histogram,
    /// Time a job waited in the queue for a worker, seconds.
    pub queue_wait: Histogram,
}

impl Metrics {
    /// Count a response.
    pub fn record_response(&self, route: &str, status: u16, secs: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
        if route.starts_with("/v1/") && route.ends_with("completions") {
            self.request_latency.observe(secs);
        }
    }

    /// Count a finished search.
    pub fn record_search(&self, s: &SearchStats) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens.fetch_add(s.prompt_tokens as u64, Ordering::Relaxed);
        self.completion_tokens.fetch_add(s.tokens_committed as u64, Ordering::Relaxed);
        self.tokens_generated.fetch_add(s.tokens_generated as u64, Ordering::Relaxed);
        self.search_rows.fetch_add(s.rows_evaluated as u64, Ordering::Relaxed);
        self.forward_passes.fetch_add(s.forward_passes as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, queued: usize, active: usize, queue_capacity: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP deal_requests_total HTTP responses by route and status.\n# TYPE deal_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(out, "deal_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut out, "deal_queue_depth", "Requests waiting for an engine worker.", queued);
        gauge(&mut out, "deal_queue_capacity", "Queue size; beyond it requests get 429.", queue_capacity);
        gauge(&mut out, "deal_active_searches", "Searches running now.", active);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter(&mut out, "deal_searches_total", "Searches finished (one per choice).", &self.searches);
        counter(&mut out, "deal_cancelled_total", "Searches cancelled because the client went away.", &self.cancelled);
        counter(&mut out, "deal_timed_out_total", "Requests ended by the server's request timeout.", &self.timed_out);
        counter(&mut out, "deal_prompt_tokens_total", "Prompt tokens prefilled.", &self.prompt_tokens);
        counter(&mut out, "deal_completion_tokens_total", "Tokens returned to clients.", &self.completion_tokens);
        counter(&mut out, "deal_generated_tokens_total", "Tokens generated in any search row.", &self.tokens_generated);
        counter(&mut out, "deal_search_rows_total", "Rows evaluated over all forward passes.", &self.search_rows);
        counter(&mut out, "deal_forward_passes_total", "Decode forward passes.", &self.forward_passes);
        self.request_latency.write(&mut out, "deal_request_duration_seconds", "Completion request latency.");
        self.time_to_first_token.write(&mut out, "deal_time_to_first_token_seconds", "Time to the first streamed token.");
        self.queue_wait.write(&mut out, "deal_queue_wait_seconds", "Time a request waited for a worker.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(0.02);
        h.observe(3.0);
        let mut s = String::new();
        h.write(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.01\"} 0"));
        assert!(s.contains("x_bucket{le=\"0.025\"} 1"));
        assert!(s.contains("x_bucket{le=\"5\"} 2"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(s.contains("x_count 2"));
        assert!(s.contains("x_sum 3.02"));
    }
}
