//! Synthetic models (`--synthetic`): the generated GGUF of a real shape loads in deal and runs
//! a finite forward pass, and llama.cpp (where built, as in CI) loads and runs the same file,
//! so benchmarks of the two engines read the very same bytes.

use std::process::Command;

use deal_engine::model::LogitsFor;
use deal_engine::synthetic;
use deal_engine::{Engine, EngineOptions};

#[test]
fn a_synthetic_model_loads_and_runs_in_deal_and_in_llama_cpp() {
    let shape = synthetic::find("llama:tiny").unwrap();
    let dir = std::env::temp_dir().join(format!("deal-synthetic-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    let mut last = (0, 0);
    synthetic::write(&shape, &path, &mut |d, t| last = (d, t)).unwrap();
    assert!(last.1 > 0 && last.0 == last.1, "progress ended at {last:?}");

    let e = Engine::load(&path, &EngineOptions::default()).unwrap();
    let cfg = e.model().config();
    assert_eq!((cfg.hidden_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim), (256, 2, 4, 2, 64));
    assert_eq!(cfg.vocab_size, 1024);
    let tokens = e.encode_prompt("hello world").unwrap();
    assert_eq!(tokens[0], 1, "BOS first");
    let mut cache = e.model().new_cache(1).unwrap();
    let out = e.forward(&mut cache, &[tokens], LogitsFor::Last).unwrap();
    let logits = out.logits.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(logits.len(), 1024);
    assert!(logits.iter().all(|l| l.is_finite()), "non-finite logits");
    let spread = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) - logits.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(spread > 0.0, "constant logits: the weights were not written");

    // llama.cpp's tools, where bench/llamacpp/build.sh put them (as deal-bench finds them)
    let bin = std::env::var_os("DEAL_LLAMACPP_BIN")
        .filter(|s| !s.is_empty())
        .map_or_else(|| deal_engine::setup::deal_home().join("llama.cpp").join("bin"), std::path::PathBuf::from);
    match Some(bin.join("llama-simple")).filter(|p| p.is_file()) {
        Some(exe) => {
            let out = Command::new(exe).arg("-m").arg(&path).args(["-n", "4", "hello"]).output().unwrap();
            assert!(out.status.success(), "llama.cpp could not run the synthetic model: {}", String::from_utf8_lossy(&out.stderr));
        }
        None => eprintln!("llama-simple not built (bench/llamacpp/build.sh): llama.cpp's side not checked"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
