//! The AVX2 paths of the packed kernels on the real default model: with `DEAL_KERNELS=avx2`
//! (read once per process, so this test binary holds this one test) the default weights run on
//! the AVX2 kernels, and the perplexity of the repo text is within 1% of llama.cpp's, as
//! `perplexity.rs` checks for the default path. (The kernels' own tests assert that the AVX2
//! and AVX-512 paths give the same bits.)

use deal_engine::kernels::{isa, Isa};
use deal_engine::perplexity::{perplexity, tokenize};
use deal_engine::{Engine, EngineOptions};

#[test]
fn the_default_model_on_the_avx2_kernels_matches_llama_cpp() {
    if !Isa::Avx2.supported() {
        eprintln!("no AVX2 on this CPU: its kernels not exercised");
        return;
    }
    std::env::set_var("DEAL_KERNELS", "avx2");
    assert_eq!(isa(), Some(Isa::Avx2), "DEAL_KERNELS=avx2 picks the AVX2 path");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perplexity.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/data/perplexity-gpl3.txt")).unwrap();
    let path = deal_engine::setup::resolve_model(None).unwrap();
    let e = Engine::load(&path, &EngineOptions::default()).unwrap();
    let (ctx, chunks) = (fixture["ctx"].as_u64().unwrap() as usize, fixture["chunks"].as_u64().unwrap() as usize);
    let r = perplexity(&e, &tokenize(&e, &text).unwrap(), ctx, Some(chunks), &mut |_, _, _| {}).unwrap();
    let want = fixture["ppl"].as_f64().unwrap();
    eprintln!("AVX2 kernels: deal PPL {:.4}, llama.cpp {want:.4}", r.ppl);
    assert!((r.ppl / want - 1.0).abs() < 0.01, "PPL {:.4} on the AVX2 kernels vs llama.cpp's {want:.4}", r.ppl);
}
