//! DeAL with λ = 0 is beam search on log-probability: checked against a plain beam search
//! written here independently (one row at a time, the whole prefix recomputed every step),
//! on the f32 model so batched and single-row arithmetic agree to ~1e-4.

mod common;

use common::{engine_f32, keywords, run};
use deal_controllers::{Commit, SearchConfig};
use deal_backend::sampling::{log_softmax, top_k};
use deal_engine::Engine;

/// Plain beam search: `k` candidates per live beam, keep the best `b` by cumulative
/// log-probability (ties: earlier beam, then more likely token), finished beams carry over.
fn beam_search(e: &Engine, prompt: &str, b: usize, k: usize, max_tokens: usize) -> (Vec<u32>, f64) {
    let prompt = e.encode_prompt(prompt).unwrap();
    let mut beams: Vec<(Vec<u32>, f64, bool)> = vec![(Vec::new(), 0.0, false)];
    while beams.iter().any(|b| !b.2) {
        let mut next = Vec::new();
        for (tokens, lp, done) in &beams {
            if *done {
                next.push((tokens.clone(), *lp, true));
                continue;
            }
            let ids: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
            let (_, out) = e.prefill(&ids).unwrap();
            let logits = out.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
            let lsm = log_softmax(&logits);
            for (t, _) in top_k(&logits, k) {
                let l = lp + lsm[t as usize] as f64;
                if e.tokenizer().is_eog(t) {
                    next.push((tokens.clone(), l, true));
                } else {
                    let mut tk = tokens.clone();
                    tk.push(t);
                    let done = tk.len() >= max_tokens;
                    next.push((tk, l, done));
                }
            }
        }
        let mut idx: Vec<usize> = (0..next.len()).collect();
        idx.sort_by(|&x, &y| next[y].1.total_cmp(&next[x].1).then(x.cmp(&y)));
        beams = idx.into_iter().take(b).map(|i| next[i].clone()).collect();
    }
    let best = beams.iter().enumerate().max_by(|x, y| x.1 .1.total_cmp(&y.1 .1).then(y.0.cmp(&x.0))).unwrap().1;
    (best.0.clone(), best.1)
}

#[test]
fn lambda_zero_is_beam_search() {
    let e = engine_f32();
    let r = keywords(&["lighthouse"]);
    for (prompt, b, k, l) in [("The old lighthouse keeper", 2, 3, 3), ("Recipe for a simple soup:", 3, 4, 2), ("Once upon a time", 1, 2, 4)] {
        let max_tokens = 10;
        let (want, want_lp) = beam_search(e, prompt, b, k, max_tokens);
        let cfg = SearchConfig { max_tokens, k, beams: b, lookahead: l, lambda: 0.0, commit: Commit::Token, ..Default::default() };
        let (got, pieces) = run(e, "deal", &cfg, prompt, Some(&r));
        assert_eq!(got.tokens, want, "{prompt:?} b={b} k={k} l={l}: deal {:?}", got.text);
        assert_eq!(pieces.concat(), got.text);
        let text = e.tokenizer().decode(&want, true).unwrap();
        println!("{prompt:?} b={b} k={k} l={l}: {text:?} (log P {want_lp:.3}), {} passes", got.stats.forward_passes);
        // the lookahead ran (more passes than tokens) and was undone (same tokens as above)
        assert!(got.stats.forward_passes > got.tokens.len(), "{:?}", got.stats);
    }
}
