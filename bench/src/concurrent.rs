//! Concurrent searches: `clients` searches (one thread each, as `deal serve` runs concurrent
//! requests) at the same time, against the same searches one after another. At the same time
//! their forward calls merge into shared passes (`runtime/src/model/batcher.rs`); the ratio of
//! aggregate committed tokens per second is the gain of that merging.

use std::time::Instant;

use deal_controllers::{Request, SearchConfig};
use deal_engine::Engine;

use crate::search::{concepts, keyword_reward, prompt};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct ConcurrentBench {
    /// Searches run at once.
    pub clients: usize,
    /// Tokens per search.
    pub max_tokens: usize,
}

/// One controller's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConcurrentPoint {
    /// Controller label.
    pub controller: String,
    /// Aggregate committed tokens per second, searches one after another.
    pub sequential_tok_s: f64,
    /// Aggregate committed tokens per second, all searches at once.
    pub concurrent_tok_s: f64,
    /// concurrent / sequential.
    pub speedup: f64,
    /// Mean forward calls served per pass while concurrent.
    pub calls_per_pass: f64,
}

fn run_one(engine: &Engine, name: &str, cfg: &SearchConfig, i: usize) -> anyhow::Result<usize> {
    let sets = concepts();
    let words = &sets[i % sets.len()];
    let reward = keyword_reward(words)?;
    let p = prompt(words);
    let out = deal_controllers::Registry::builtin().search(name, cfg, &Request::new(engine, &p).with_reward(&reward), &mut |_| true)?;
    Ok(out.tokens.len())
}

/// Seconds per decode step of `clients` single-row caches (different prompts): one merged
/// pass ([`deal_engine::model::Model::forward_many`]) against one pass per cache.
pub fn pass_cost(engine: &Engine, clients: usize, steps: usize) -> anyhow::Result<(f64, f64)> {
    use deal_engine::model::{ForwardJob, LogitsFor};
    let sets = concepts();
    let mut caches = Vec::new();
    for i in 0..clients {
        let (cache, _) = engine.prefill(&engine.encode_prompt(&prompt(&sets[i % sets.len()]))?)?;
        caches.push(cache);
    }
    let tokens = vec![vec![1000u32]];
    let m = engine.model();
    let t = Instant::now();
    for _ in 0..steps {
        let mut jobs: Vec<ForwardJob<'_>> =
            caches.iter_mut().map(|c| ForwardJob { cache: c, tokens: &tokens, want: LogitsFor::Last }).collect();
        for r in m.forward_many(&mut jobs) {
            r?;
        }
    }
    let merged = t.elapsed().as_secs_f64() / steps as f64;
    let t = Instant::now();
    for _ in 0..steps {
        for c in caches.iter_mut() {
            m.forward(c, &tokens, LogitsFor::Last)?;
        }
    }
    let separate = t.elapsed().as_secs_f64() / steps as f64;
    Ok((merged, separate))
}

/// Run the benchmark for `greedy` and `deal` at the search defaults (k=5, b=1, l=2, the
/// pipelined commit rule).
pub fn run(engine: &Engine, b: &ConcurrentBench) -> anyhow::Result<Vec<ConcurrentPoint>> {
    // no stop string: every search decodes its full `max_tokens` (prefill is a small share)
    let base = SearchConfig { max_tokens: b.max_tokens, ..Default::default() };
    let variants = [
        ("greedy", "greedy", base.clone()),
        ("deal (defaults)", "deal", SearchConfig { lambda: 5.0, ..base.clone() }),
    ];
    let mut points = Vec::new();
    for (label, name, cfg) in variants {
        run_one(engine, name, &cfg, 0)?; // warm-up
        let t = Instant::now();
        let mut seq_tokens = 0;
        for i in 0..b.clients {
            seq_tokens += run_one(engine, name, &cfg, i)?;
        }
        let seq = seq_tokens as f64 / t.elapsed().as_secs_f64();

        let before = engine.scheduler_stats();
        let t = Instant::now();
        let conc_tokens: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..b.clients).map(|i| s.spawn({
                let cfg = cfg.clone();
                move || run_one(engine, name, &cfg, i)
            })).collect();
            handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a search thread panicked"))?).sum::<anyhow::Result<usize>>()
        })?;
        let conc = conc_tokens as f64 / t.elapsed().as_secs_f64();
        let after = engine.scheduler_stats();
        let calls_per_pass = (after.jobs - before.jobs) as f64 / (after.passes - before.passes).max(1) as f64;
        points.push(ConcurrentPoint {
            controller: label.to_string(),
            sequential_tok_s: seq,
            concurrent_tok_s: conc,
            speedup: conc / seq,
            calls_per_pass,
        });
    }
    Ok(points)
}
