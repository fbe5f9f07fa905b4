//! `deal bench load`: many HTTP clients against a running `deal serve` (or any
//! OpenAI-compatible server) for a fixed time. Each client sends chat completions one after
//! another, a share of them streaming (time to first token measured) and a share of the
//! streams dropped after the first token (a client that leaves). Reports throughput, latency
//! and TTFT percentiles, and every status and connection error by class.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What to send, how many at once, for how long.
#[derive(Debug, Clone)]
pub struct LoadBench {
    /// Base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// API key, if the server wants one.
    pub key: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients keep sending.
    pub duration: Duration,
    /// Tokens per request.
    pub max_tokens: usize,
    /// Share of requests that stream (0..=1).
    pub stream_share: f64,
    /// Share of streams dropped after their first token (0..=1).
    pub drop_share: f64,
    /// The request's `alignment` object (`None`: plain greedy).
    pub alignment: Option<Value>,
}

/// One finished request.
#[derive(Debug, Clone)]
struct Sample {
    status: Option<u16>,
    latency: f64,
    ttft: Option<f64>,
    tokens: usize,
    dropped: bool,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Clients and seconds.
    pub clients: usize,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Requests answered 200 (completed or dropped on purpose).
    pub ok: usize,
    /// Answers by status (`"200"`, `"429"`...); `"connection"` for transport errors.
    pub by_status: BTreeMap<String, usize>,
    /// Completed 200s per second.
    pub requests_per_s: f64,
    /// Generated tokens per second over all completed requests.
    pub tokens_per_s: f64,
    /// Latency of completed 200s, seconds: p50, p90, p99.
    pub latency: [f64; 3],
    /// Time to first token of streamed 200s, seconds: p50, p90, p99.
    pub ttft: [f64; 3],
    /// Latency of the 429s (how cheap a refusal is), seconds: p50, p99.
    pub refusal_latency: [f64; 2],
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Run the load and report.
pub fn run(cfg: &LoadBench) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(cfg.clients > 0 && cfg.max_tokens > 0, "clients and max_tokens must be > 0");
    anyhow::ensure!((0.0..=1.0).contains(&cfg.stream_share) && (0.0..=1.0).contains(&cfg.drop_share), "shares are in 0..=1");
    let start = Instant::now();
    let until = start + cfg.duration;
    let handles: Vec<_> = (0..cfg.clients)
        .map(|c| {
            let cfg = cfg.clone();
            std::thread::spawn(move || client(&cfg, c, until))
        })
        .collect();
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.join().map_err(|_| anyhow::anyhow!("a load client panicked"))?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut by_status = BTreeMap::new();
    for s in &samples {
        let k = s.status.map(|c| c.to_string()).unwrap_or_else(|| "connection".into());
        *by_status.entry(k).or_insert(0) += 1;
    }
    let done: Vec<&Sample> = samples.iter().filter(|s| s.status == Some(200) && !s.dropped).collect();
    let mut lat: Vec<f64> = done.iter().map(|s| s.latency).collect();
    lat.sort_by(f64::total_cmp);
    let mut ttft: Vec<f64> = samples.iter().filter(|s| s.status == Some(200)).filter_map(|s| s.ttft).collect();
    ttft.sort_by(f64::total_cmp);
    let mut refused: Vec<f64> = samples.iter().filter(|s| s.status == Some(429)).map(|s| s.latency).collect();
    refused.sort_by(f64::total_cmp);
    let p3 = |v: &[f64]| [percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.99)];
    Ok(LoadReport {
        clients: cfg.clients,
        seconds,
        ok: samples.iter().filter(|s| s.status == Some(200)).count(),
        by_status,
        requests_per_s: done.len() as f64 / seconds,
        tokens_per_s: done.iter().map(|s| s.tokens).sum::<usize>() as f64 / seconds,
        latency: p3(&lat),
        ttft: p3(&ttft),
        refusal_latency: [percentile(&refused, 0.5), percentile(&refused, 0.99)],
    })
}

/// One client: requests back to back until `until`; after a 429 it waits the server's
/// `Retry-After` hint scaled down (a well-behaved client backs off, briefly).
fn client(cfg: &LoadBench, c: usize, until: Instant) -> Vec<Sample> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(600))).build().into();
    let url = format!("{}/v1/chat/completions", cfg.url.trim_end_matches('/'));
    let mut out = Vec::new();
    let mut i = 0usize;
    while Instant::now() < until {
        // deterministic mix per client and request: shares hold exactly over many requests
        let slot = (c * 7919 + i * 104_729) % 1000;
        let stream = (slot as f64) < cfg.stream_share * 1000.0;
        let drop = stream && ((slot * 31 % 1000) as f64) < cfg.drop_share * 1000.0;
        let mut body = json!({
            "model": "deal",
            "messages": [{"role": "user", "content": format!("Client {c}, request {i}: tell me about the sea.")}],
            "max_tokens": cfg.max_tokens,
            "temperature": 0,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(a) = &cfg.alignment {
            body["alignment"] = a.clone();
        }
        i += 1;
        let t0 = Instant::now();
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(k) = &cfg.key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let resp = match req.send(body.to_string().as_bytes()) {
            Ok(r) => r,
            Err(_) => {
                out.push(Sample { status: None, latency: t0.elapsed().as_secs_f64(), ttft: None, tokens: 0, dropped: false });
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let mut sample = Sample { status: Some(status), latency: 0.0, ttft: None, tokens: 0, dropped: false };
        let mut resp = resp;
        if status == 200 && stream {
            let reader = BufReader::new(resp.body_mut().as_reader());
            for line in reader.lines() {
                let Ok(line) = line else {
                    sample.status = None;
                    break;
                };
                let Some(data) = line.strip_prefix("data: ") else { continue };
                if data == "[DONE]" {
                    break;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    sample.tokens = n as usize;
                }
                if v.get("error").is_some() {
                    sample.status = Some(500);
                    break;
                }
                if v["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
                    sample.ttft.get_or_insert(t0.elapsed().as_secs_f64());
                    if drop {
                        sample.dropped = true;
                        break;
                    }
                }
            }
        } else {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            if status == 200 {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                sample.tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
        }
        sample.latency = t0.elapsed().as_secs_f64();
        out.push(sample);
        if status == 429 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out
}
