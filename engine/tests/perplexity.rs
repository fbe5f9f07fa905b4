//! `deal perplexity` against llama.cpp: on a text in the repo, deal's perplexity of the
//! default model is within 1% of what `llama-perplexity` reports for the same file, context
//! and chunk count (recorded in `fixtures/perplexity.json` with the command that made it).
//! This is the quality check of kernels and weight formats: the default, `compact` (Q6_K on
//! its kernel) and `stored` (candle's kernels) modes are each held to it.

mod common;

use deal_engine::model::{LoadOptions, WeightMode};
use deal_engine::perplexity::{perplexity, tokenize};
use deal_engine::{Engine, EngineOptions};

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perplexity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/data/perplexity-gpl3.txt")).unwrap()
}

fn check(e: &Engine, label: &str) {
    let f = fixture();
    let (ctx, chunks) = (f["ctx"].as_u64().unwrap() as usize, f["chunks"].as_u64().unwrap() as usize);
    let want = f["ppl"].as_f64().unwrap();
    let tokens = tokenize(e, &text()).unwrap();
    let mut seen = 0;
    let r = perplexity(e, &tokens, ctx, Some(chunks), &mut |done, total, p| {
        assert_eq!(total, chunks);
        assert!(p.is_finite() && p > 1.0);
        seen = done;
    })
    .unwrap();
    assert_eq!((seen, r.chunks, r.scored), (chunks, chunks, chunks * (ctx - 1 - ctx / 2)));
    let ratio = r.ppl / want;
    eprintln!("{label}: deal PPL {:.4} +/- {:.4}, llama.cpp {want:.4} (ratio {ratio:.4})", r.ppl, r.stderr);
    assert!((ratio - 1.0).abs() < 0.01, "{label}: PPL {:.4} vs llama.cpp's {want:.4}: off by more than 1%", r.ppl);
    // llama.cpp's running estimates, chunk by chunk, agree as closely
    if let Some(run) = f["running"].as_array() {
        for (i, (ours, theirs)) in r.running.iter().zip(run).enumerate() {
            let t = theirs.as_f64().unwrap();
            assert!((ours / t - 1.0).abs() < 0.02, "{label}: chunk {}: {ours:.4} vs {t:.4}", i + 1);
        }
    }
}

#[test]
fn perplexity_matches_llama_cpp_within_one_percent() {
    check(common::engine(), "requantize");
}

#[test]
fn perplexity_with_stored_weights_matches_llama_cpp_within_one_percent() {
    let path = deal_engine::setup::resolve_model(None).unwrap();
    let e = Engine::load(&path, &EngineOptions { load: LoadOptions { weights: WeightMode::Stored }, ..Default::default() }).unwrap();
    check(&e, "stored");
}

#[test]
fn perplexity_with_compact_weights_matches_llama_cpp_within_one_percent() {
    // the default: Q6_K on its own kernel too
    let path = deal_engine::setup::resolve_model(None).unwrap();
    let e = Engine::load(&path, &EngineOptions { load: LoadOptions { weights: WeightMode::Compact }, ..Default::default() }).unwrap();
    check(&e, "compact (default)");
}

#[test]
fn a_text_shorter_than_two_chunks_is_refused_clearly() {
    let e = common::engine();
    let tokens = tokenize(e, "A short text.").unwrap();
    let err = perplexity(e, &tokens, 512, None, &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(err.contains("at least 1024"), "{err}");
}
