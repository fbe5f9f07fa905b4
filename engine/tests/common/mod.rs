//! Shared helpers for tests that run the real default model.
#![allow(dead_code)]

use std::sync::OnceLock;

use deal_engine::model::{LoadOptions, WeightMode};
use deal_engine::{Engine, EngineOptions};

fn load(weights: WeightMode) -> Engine {
    let path = deal_engine::setup::resolve_model(None)
        .unwrap_or_else(|e| panic!("the default model is needed for this test: {e} (run `cargo run -- setup`)"));
    let opts = EngineOptions { load: LoadOptions { weights }, ..Default::default() };
    Engine::load(&path, &opts).expect("load model")
}

/// The default model (or `$DEAL_MODEL`) under `--weights requantize`; loaded once per test binary.
///
/// The measured bars of the model-dependent tests (search quality, steering swings, schema
/// outputs) were set on these numerics; the default `compact` weights move near-ties (its Q6_K
/// matrices are exact where `requantize` rounds them to Q8_0), and the server's tests, the
/// perplexity test and the llama.cpp parity tests run the default.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| load(WeightMode::Requantize))
}

/// The same model with f32 weights: exact arithmetic, so cache mechanics can be checked to
/// ~1e-4 (quantized matmuls round activations, which amplifies float-order noise).
pub fn engine_f32() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| load(WeightMode::F32))
}

/// Row `r` of a `[rows, vocab]` logits tensor as a Vec.
pub fn row(logits: &candle_core::Tensor, r: usize) -> Vec<f32> {
    logits.get(r).unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    deal_backend::sampling::argmax(v)
}
