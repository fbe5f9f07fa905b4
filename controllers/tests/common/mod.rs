//! Shared helpers for the controller tests: the real default model (loaded once per test
//! binary), reward specs and a one-call search.
#![allow(dead_code)]

use std::sync::OnceLock;

use deal_controllers::{Outcome, Request, SearchConfig};
use deal_heads::HeadContext;
use deal_engine::model::{LoadOptions, WeightMode};
use deal_heads::reward::{RewardSpec, WeightedReward};
use deal_engine::{Engine, EngineOptions};

fn load(weights: WeightMode) -> Engine {
    let path = deal_engine::setup::resolve_model(None)
        .unwrap_or_else(|e| panic!("the default model is needed for this test: {e} (run `cargo run -- setup`)"));
    let opts = EngineOptions { load: LoadOptions { weights }, ..Default::default() };
    Engine::load(&path, &opts).expect("load model")
}

/// The default model under `--weights requantize`.
///
/// The measured bars of the model-dependent tests (search quality, steering swings, schema
/// outputs) were set on these numerics; the default `compact` weights move near-ties (its Q6_K
/// matrices are exact where `requantize` rounds them to Q8_0), and the server's tests, the
/// perplexity test and the llama.cpp parity tests run the default.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| load(WeightMode::Requantize))
}

/// The default model with f32 weights (batched and single-row arithmetic agree to ~1e-4).
pub fn engine_f32() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| load(WeightMode::F32))
}

/// A reward from its JSON spec, with no policy model in the head context.
pub fn reward(spec: serde_json::Value) -> WeightedReward {
    RewardSpec::from_value(spec).unwrap().build(&deal_heads::Registry::with_builtin(), &HeadContext::new()).unwrap()
}

/// A keyword-coverage reward for `words` (soft coverage as the heuristic).
pub fn keywords(words: &[&str]) -> WeightedReward {
    reward(serde_json::json!({"weights": {"keywords": 1.0}, "heads": {"keywords": {"words": words}}}))
}

/// Run controller `name` to the end, collecting the streamed pieces.
pub fn run(e: &Engine, name: &str, cfg: &SearchConfig, prompt: &str, r: Option<&WeightedReward>) -> (Outcome, Vec<String>) {
    let mut pieces = Vec::new();
    let mut req = Request::new(e, prompt);
    req.reward = r;
    let out = deal_controllers::Registry::builtin().search(name, cfg, &req, &mut |p| {
        pieces.push(p.text.to_string());
        true
    })
    .unwrap_or_else(|err| panic!("{name} on {prompt:?}: {err}"));
    (out, pieces)
}

/// Detail `key` of head `head` in an outcome's breakdown.
pub fn detail(o: &Outcome, head: &str, key: &str) -> f32 {
    let b = o.breakdown.as_ref().expect("breakdown");
    let h = b.heads.iter().find(|h| h.head == head).unwrap_or_else(|| panic!("no head {head}"));
    *h.details.get(key).unwrap_or_else(|| panic!("no detail {key} in {:?}", h.details))
}

/// Normalised score of head `head` in an outcome's breakdown.
pub fn normalized(o: &Outcome, head: &str) -> f64 {
    let b = o.breakdown.as_ref().expect("breakdown");
    b.heads.iter().find(|h| h.head == head).unwrap_or_else(|| panic!("no head {head}")).normalized as f64
}

/// Spearman rank correlation (average ranks for ties).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// The keyword concept sets (shared with `deal bench search`).
pub fn concept_sets() -> Vec<Vec<&'static str>> {
    include_str!("../../../bench/data/keyword_concepts.txt")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The CommonGen-style prompt for a concept set (one worked example, then the set).
pub fn concept_prompt(words: &[&str]) -> String {
    format!(
        "Write a sentence using the words: apple, tree, red.\nSentence: The red apple fell from the tree.\n\n\
         Write a sentence using the words: {}.\nSentence:",
        words.join(", ")
    )
}
