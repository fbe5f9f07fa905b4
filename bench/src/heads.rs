//! Reward-head cost: each head scoring one batch of candidates (the policy's own
//! continuations, with token ids and hidden states as the search has them), next to one
//! decode step of as many forked rows measured in the same run (as in [`crate::decode`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use deal_heads::{Candidate, HeadContext, Registry};
use deal_engine::model::LogitsFor;
use deal_heads::reward::RewardSpec;
use deal_backend::sampling::{Sampler, SamplingParams};
use deal_engine::Engine;
use serde_json::json;

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct HeadsBench {
    pub prompt: String,
    /// Candidates per batch = rows of the decode step.
    pub candidates: usize,
    /// Tokens generated per candidate.
    pub tokens: usize,
    /// Timed repetitions (median reported).
    pub iters: usize,
    /// Skip heads that run a model (relevance, judge, probe without hidden state).
    pub cheap_only: bool,
}

impl Default for HeadsBench {
    fn default() -> Self {
        Self {
            prompt: "The old lighthouse keeper climbed the stairs and".into(),
            candidates: 16,
            tokens: 48,
            iters: 20,
            cheap_only: false,
        }
    }
}

/// One measured head (or combination).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadCost {
    pub head: String,
    /// Median milliseconds to score the whole batch.
    pub ms: f64,
}

/// Results of [`run`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadsReport {
    pub candidates: usize,
    pub tokens: usize,
    /// Median milliseconds of one decode step of `candidates` rows.
    pub decode_step_ms: f64,
    pub heads: Vec<HeadCost>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Generate the candidates (timing each decode step), then time every head on them.
pub fn run(engine: Arc<Engine>, cfg: &HeadsBench) -> anyhow::Result<HeadsReport> {
    let b = cfg.candidates;
    let prompt_ids = engine.encode_prompt(&cfg.prompt)?;
    let (mut cache, out) = engine.prefill(&prompt_ids)?;
    cache.fork(b)?;
    let first = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?.get(0)?.to_vec1::<f32>()?;
    let mut logits = vec![first; b];
    let mut samplers = (0..b)
        .map(|r| Sampler::new(SamplingParams { temperature: 0.9, top_k: 100, top_p: 0.95, seed: r as u64, ..Default::default() }))
        .collect::<deal_backend::Result<Vec<_>>>()?;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut hidden: Vec<Vec<f32>> = vec![Vec::new(); b];
    let mut step_ms = Vec::new();
    for step in 0..cfg.tokens {
        let mut next = Vec::with_capacity(b);
        for r in 0..b {
            // end-of-generation tokens are replaced by the next best so every row keeps going
            let mut t = samplers[r].sample(&logits[r], &tokens[r])?;
            if engine.tokenizer().is_eog(t) {
                logits[r][t as usize] = f32::NEG_INFINITY;
                t = deal_backend::sampling::argmax(&logits[r]);
            }
            tokens[r].push(t);
            next.push(vec![t]);
        }
        let t0 = Instant::now();
        let out = engine.forward(&mut cache, &next, LogitsFor::Last)?;
        let l = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?.to_vec2::<f32>()?;
        if step >= 4 {
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        logits = l;
        hidden = out.hidden.to_vec2::<f32>()?;
    }
    let decode_step_ms = median(step_ms);
    let cands: Vec<Candidate> = (0..b)
        .map(|r| {
            let text = engine.tokenizer().decode(&tokens[r], true)?;
            Ok(Candidate::new(cfg.prompt.clone(), text).with_tokens(tokens[r].clone()).partial(true).with_hidden(hidden[r].clone()))
        })
        .collect::<deal_heads::Result<_>>()?;
    let no_hidden: Vec<Candidate> = cands.iter().map(|c| Candidate { hidden: None, ..c.clone() }).collect();

    let url = spawn_reward_server()?;
    let ctx = HeadContext::with_policy(engine.clone());
    let mut specs: Vec<(&str, serde_json::Value, bool)> = vec![
        ("keywords", json!({"keywords": {"words": ["light", "sea", "keeper", "storm", "night"]}}), true),
        ("length", json!({"length": {"target": 40}}), true),
        ("format (regex)", json!({"format": {"must": ["\\.\\s*$"], "must_not": ["(?i)as an ai", "https?://"]}}), true),
        ("format (json+schema)", json!({"format": {"schema": {"type": "object", "required": ["a"]}}}), true),
        ("sentiment", json!({"sentiment": {}}), true),
        ("lexicon", json!({"lexicon": {}}), true),
        ("repetition", json!({"repetition": {}}), true),
        ("probe", json!({"probe": {}}), true),
        ("http (local server)", json!({"http": {"url": url}}), true),
    ];
    if !cfg.cheap_only {
        specs.push(("probe (no hidden)", json!({"probe": {}}), false));
        specs.push(("relevance", json!({"relevance": {}}), true));
        specs.push(("judge", json!({"judge": {"rubric": "is polite"}}), true));
    }
    let mut heads = Vec::new();
    let mut cheap_weights = serde_json::Map::new();
    let mut cheap_params = serde_json::Map::new();
    for (label, params, with_hidden) in &specs {
        let (name, p) = params.as_object().and_then(|o| o.iter().next()).ok_or_else(|| anyhow::anyhow!("spec"))?;
        let head = Registry::with_builtin().get(name)?.build(p, &ctx)?;
        let batch = if *with_hidden { &cands } else { &no_hidden };
        head.score(batch)?; // warm-up: loads models, fills caches
        let times: Vec<f64> = (0..cfg.iters)
            .map(|_| {
                let t = Instant::now();
                head.score(batch).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<deal_heads::Result<_>>()?;
        heads.push(HeadCost { head: label.to_string(), ms: median(times) });
        if ["keywords", "length", "format", "lexicon", "repetition", "probe"].contains(&name.as_str()) && !label.contains("json") {
            cheap_weights.insert(name.clone(), json!(1.0));
            cheap_params.insert(name.clone(), p.clone());
        }
    }
    // all cheap heads in one weighted reward, breakdowns included
    let spec = RewardSpec::from_value(json!({"weights": cheap_weights, "heads": cheap_params}))?;
    let reward = spec.build(&Registry::with_builtin(), &ctx)?;
    reward.score(&cands)?;
    let times: Vec<f64> = (0..cfg.iters)
        .map(|_| {
            let t = Instant::now();
            reward.score(&cands).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<deal_heads::Result<_>>()?;
    heads.push(HeadCost { head: "all cheap (weighted)".into(), ms: median(times) });
    Ok(HeadsReport { candidates: b, tokens: cfg.tokens, decode_step_ms, heads })
}

/// A reward server on 127.0.0.1 answering every POST with zeros (measures the client side).
fn spawn_reward_server() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/score", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream);
        }
    });
    Ok(url)
}

fn answer(stream: std::net::TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["responses"].as_array().map(Vec::len))
        .unwrap_or(0);
    let text = json!({ "scores": vec![0.0; n] }).to_string();
    let mut s = stream;
    write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len())
}
