//! Structured-output cost: building the grammar compiler for the model's vocabulary,
//! compiling schemas, the token mask per row per token (llguidance's mask plus applying it
//! to the logits), and greedy / DeAL wall time per token with the constraint against
//! without, interleaved on the same prompts.

use std::time::Instant;

use deal_backend::{Backend, TokenDist};
use deal_controllers::grammar::{GrammarCompiler, GrammarSpec};
use deal_controllers::{Request, SearchConfig};
use deal_heads::reward::RewardSpec;
use deal_heads::HeadContext;
use serde_json::json;

/// One schema's numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrammarPoint {
    pub schema: &'static str,
    pub compile_ms: f64,
    /// Mean µs to mask one row's distribution for one token (the llguidance mask and
    /// applying it to the vocabulary's logits).
    pub mask_us: f64,
    pub tokens: usize,
    /// Constrained over unconstrained wall time per committed token.
    pub greedy_ratio: f64,
    pub deal_ratio: f64,
}

/// The schemas measured.
pub fn schemas() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    vec![
        ("enum", "A colour as JSON.\n", json!({"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]})),
        ("person", "Describe a person as JSON.\n", json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]})),
        ("nested", "A weather report as JSON.\n", json!({"type": "object", "properties": {"sky": {"enum": ["sunny", "cloudy", "rainy"]}, "temperature": {"type": "integer", "minimum": -30, "maximum": 45}, "wind": {"type": "object", "properties": {"speed": {"type": "integer", "minimum": 0, "maximum": 200}, "gusts": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 300}, "maxItems": 3}}, "required": ["speed", "gusts"]}}, "required": ["sky", "temperature", "wind"]})),
    ]
}

/// The compiler build time (ms) and one point per schema.
pub fn run(backend: &dyn Backend, rounds: usize) -> anyhow::Result<(f64, Vec<GrammarPoint>)> {
    let t = Instant::now();
    let compiler = GrammarCompiler::new(backend.codec())?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let registry = deal_controllers::Registry::builtin();
    let reward = RewardSpec::from_value(json!({"weights": {"length": 1.0}, "heads": {"length": {"target": 30}}}))?
        .build(&deal_heads::Registry::with_builtin(), &HeadContext::new())?;
    let mut points = Vec::new();
    for (name, prompt, schema) in schemas() {
        let t = Instant::now();
        let g = compiler.compile(&GrammarSpec::JsonSchema { schema, strict: true })?;
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let cfg = SearchConfig { max_tokens: 48, ..Default::default() };
        // wall time per token, constrained and not, interleaved
        let mut secs = [[0f64; 2]; 2];
        let mut toks = [[0usize; 2]; 2];
        let mut tokens = Vec::new();
        for _ in 0..rounds.max(1) {
            for (c, controller) in ["greedy", "deal"].into_iter().enumerate() {
                for constrained in [false, true] {
                    let mut req = Request::new(backend, prompt).with_reward(&reward);
                    if constrained {
                        req = req.with_grammar(&g);
                    }
                    let out = registry.search(controller, &cfg, &req, &mut |_| true)?;
                    secs[c][constrained as usize] += out.stats.wall_secs - out.stats.prefill_secs;
                    toks[c][constrained as usize] += out.tokens.len();
                    if constrained && c == 0 {
                        tokens = out.tokens.clone();
                    }
                }
            }
        }
        let per = |c: usize, k: usize| secs[c][k] / toks[c][k].max(1) as f64;
        // the mask alone, replayed along the constrained greedy output
        let dist = TokenDist::from_logits(vec![0.0; backend.codec().vocab_size()]);
        let mut row = g.start();
        let t = Instant::now();
        for &tok in &tokens {
            std::hint::black_box(row.mask(&dist));
            row.consume(tok)?;
        }
        let mask_us = t.elapsed().as_secs_f64() * 1e6 / tokens.len().max(1) as f64;
        points.push(GrammarPoint {
            schema: name,
            compile_ms,
            mask_us,
            tokens: tokens.len(),
            greedy_ratio: per(0, 1) / per(0, 0),
            deal_ratio: per(1, 1) / per(1, 0),
        });
    }
    Ok((build_ms, points))
}
