//! Decode throughput: one prompt prefilled once, forked into `b` rows that decode in lockstep
//! (one forward pass per step for all rows), timed over `n` steps.

use std::time::Instant;

use deal_engine::model::LogitsFor;
use deal_backend::sampling::{argmax, top_k};
use deal_engine::Engine;

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct DecodeBench {
    /// Prompt length in tokens (synthetic prompt of ordinary text).
    pub prompt_tokens: usize,
    /// Decode steps timed per batch size.
    pub steps: usize,
    /// Batch sizes (rows decoding in lockstep).
    pub batches: Vec<usize>,
    /// Untimed warm-up steps before each measurement.
    pub warmup: usize,
}

impl Default for DecodeBench {
    fn default() -> Self {
        Self { prompt_tokens: 32, steps: 64, batches: vec![1, 4, 8, 16], warmup: 4 }
    }
}

/// One measured batch size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodePoint {
    pub batch: usize,
    /// Aggregate generated tokens per second over all rows.
    pub tok_per_s: f64,
    /// KV cache bytes at the end of the run.
    pub kv_bytes: usize,
}

/// Ordinary English text the benchmark prompts are cut from.
pub const PROMPT_TEXT: &str = "The history of the lighthouse is a story of people who kept a light burning for \
                ships they would never meet. Every evening the keeper climbed the stairs, cleaned \
                the lens, trimmed the wick and watched the sea until morning came again. ";

/// Prompt of roughly `n` tokens cut from ordinary English text.
pub fn synthetic_prompt(engine: &Engine, n: usize) -> anyhow::Result<Vec<u32>> {
    let mut ids = engine.encode_prompt(&PROMPT_TEXT.repeat(1 + n / 40))?;
    ids.truncate(n.max(1));
    Ok(ids)
}

/// Prefill [`PROMPT_TEXT`] and decode one token (what "load to first token" times after the
/// load); returns that token.
pub fn first_token(engine: &Engine) -> anyhow::Result<u32> {
    let prompt = engine.encode_prompt(PROMPT_TEXT)?;
    let (_, out) = engine.prefill(&prompt)?;
    let logits = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?.get(0)?.to_vec1::<f32>()?;
    Ok(argmax(&logits))
}

/// Prefill tok/s of an `n`-token prompt (the best of `reps` runs on fresh caches, after one
/// untimed run).
pub fn prefill_speed(engine: &Engine, n: usize, reps: usize) -> anyhow::Result<f64> {
    let prompt = synthetic_prompt(engine, n)?;
    engine.prefill(&prompt)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        engine.prefill(&prompt)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(prompt.len() as f64 / best)
}

/// Run the decode benchmark on `engine`.
pub fn run(engine: &Engine, cfg: &DecodeBench) -> anyhow::Result<Vec<DecodePoint>> {
    let prompt = synthetic_prompt(engine, cfg.prompt_tokens)?;
    let model = engine.model();
    let mut points = Vec::new();
    for &b in &cfg.batches {
        let (mut cache, out) = engine.prefill(&prompt)?;
        let logits = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?.get(0)?.to_vec1::<f32>()?;
        // distinct rows: row r starts from the r-th most likely token, then decodes greedily
        let firsts = top_k(&logits, b);
        if b > 1 {
            cache.fork(b)?;
        }
        let mut next: Vec<Vec<u32>> = (0..b).map(|r| vec![firsts[r % firsts.len()].0]).collect();
        let mut timed = 0.0;
        for step in 0..cfg.warmup + cfg.steps {
            let t = Instant::now();
            let out = model.forward(&mut cache, &next, LogitsFor::Last)?;
            let logits = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?.to_vec2::<f32>()?;
            next = logits.iter().map(|row| vec![argmax(row)]).collect();
            if step >= cfg.warmup {
                timed += t.elapsed().as_secs_f64();
            }
        }
        points.push(DecodePoint { batch: b, tok_per_s: (b * cfg.steps) as f64 / timed, kv_bytes: cache.memory_bytes() });
    }
    Ok(points)
}
