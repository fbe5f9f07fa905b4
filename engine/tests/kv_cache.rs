//! The search KV cache on the real model: forked, extended, truncated and reordered rows must
//! give the logits a fresh prefill of the same tokens gives; batched ragged rows must pick the
//! same next token as the same rows run alone.

mod common;

use common::{argmax, engine, engine_f32, max_abs_diff, row};
use deal_engine::model::LogitsFor;
use deal_engine::Engine;

/// With f32 weights, a forked/truncated/reordered row and a fresh prefill of the same tokens
/// differ only by float summation order: observed max abs diff ~1e-5 on logits of magnitude
/// ~10-40. Any cache bug (wrong slot, wrong position, leaked row) gives differences >> 1.
const TOL: f32 = 1e-3;

fn fresh_last_logits_on(e: &Engine, tokens: &[u32]) -> Vec<f32> {
    let (_, out) = e.prefill(tokens).unwrap();
    row(out.logits.as_ref().unwrap(), 0)
}

fn fresh_last_logits(tokens: &[u32]) -> Vec<f32> {
    fresh_last_logits_on(engine_f32(), tokens)
}

#[test]
fn forked_extended_truncated_row_matches_fresh_prefill() {
    let e = engine_f32();
    let prompt = e.encode_prompt("The old lighthouse keeper climbed the stairs and").unwrap();
    let (mut cache, _) = e.prefill(&prompt).unwrap();
    cache.fork(3).unwrap();
    assert_eq!(cache.prefix_len(), prompt.len(), "fork shares the prompt as a prefix");

    // three different 4-token lookaheads in one batched pass
    let look: Vec<Vec<u32>> = vec![
        e.tokenizer().encode(" looked out at the", false).unwrap(),
        e.tokenizer().encode(" saw a ship", false).unwrap(),
        e.tokenizer().encode(" lit the lamp once more", false).unwrap(),
    ];
    let out = e.forward(&mut cache, &look, LogitsFor::Last).unwrap();
    let logits = out.logits.unwrap();
    for (r, l) in look.iter().enumerate() {
        let full: Vec<u32> = prompt.iter().chain(l).copied().collect();
        let fresh = fresh_last_logits(&full);
        let got = row(&logits, r);
        let d = max_abs_diff(&got, &fresh);
        assert!(d < TOL, "row {r}: batched ragged lookahead differs from fresh prefill by {d}");
        assert_eq!(argmax(&got), argmax(&fresh), "row {r}: top-1 differs");
    }

    // undo the lookahead of row 2 down to 2 tokens, then extend it differently
    cache.truncate(2, prompt.len() + 2).unwrap();
    assert_eq!(cache.row_len(2).unwrap(), prompt.len() + 2);
    let ext = e.tokenizer().encode(" again", false).unwrap();
    let steps: Vec<Vec<u32>> = vec![vec![], vec![], ext.clone()];
    let out = e.forward(&mut cache, &steps, LogitsFor::Last).unwrap();
    let full: Vec<u32> = prompt.iter().chain(&look[2][..2]).chain(&ext).copied().collect();
    let at = out.index_of(2).expect("row 2 was fed");
    let d = max_abs_diff(&row(out.logits.as_ref().unwrap(), at), &fresh_last_logits(&full));
    assert!(d < TOL, "truncated + re-extended row differs from fresh prefill by {d}");

    // rows 0 and 1 were untouched by the step they sat out
    let out = e.forward(&mut cache, &[vec![look[0][0]], vec![look[1][0]], vec![ext[0]]], LogitsFor::Last).unwrap();
    let full0: Vec<u32> = prompt.iter().chain(&look[0]).chain(&look[0][..1]).copied().collect();
    let d = max_abs_diff(&row(out.logits.as_ref().unwrap(), 0), &fresh_last_logits(&full0));
    assert!(d < TOL, "a row that sat out a step was disturbed: {d}");
}

#[test]
fn select_reorders_and_duplicates_rows() {
    let e = engine_f32();
    let prompt = e.encode_prompt("Once upon a time").unwrap();
    let (mut cache, _) = e.prefill(&prompt).unwrap();
    cache.fork(3).unwrap();
    let conts: Vec<Vec<u32>> = [" there", " in a", " a small"].iter().map(|s| e.tokenizer().encode(s, false).unwrap()).collect();
    e.forward(&mut cache, &conts, LogitsFor::Last).unwrap();
    // keep rows 2, 0, 0 (beam pruning with a duplicated beam)
    cache.select(&[2, 0, 0]).unwrap();
    assert_eq!(cache.rows(), 3);
    let next = e.tokenizer().encode(" village", false).unwrap();
    let out = e.forward(&mut cache, &vec![next.clone(); 3], LogitsFor::Last).unwrap();
    let l = out.logits.unwrap();
    for (r, src) in [(0usize, 2usize), (1, 0), (2, 0)] {
        let full: Vec<u32> = prompt.iter().chain(&conts[src]).chain(&next).copied().collect();
        let d = max_abs_diff(&row(&l, r), &fresh_last_logits(&full));
        assert!(d < TOL, "row {r} (from {src}) differs by {d}");
    }
    assert!(cache.select(&[5]).is_err(), "out-of-range row is an error");
    assert!(cache.select(&[]).is_err(), "empty selection is an error");
}

#[test]
fn all_position_logits_score_a_continuation_in_one_pass() {
    let e = engine_f32();
    let prompt = e.encode_prompt("Water boils at").unwrap();
    let cont = e.tokenizer().encode(" one hundred degrees", false).unwrap();
    let (mut cache, _) = e.prefill(&prompt).unwrap();
    let out = e.forward(&mut cache, std::slice::from_ref(&cont), LogitsFor::All).unwrap();
    let all = out.logits.unwrap(); // [1, t, vocab]
    assert_eq!(all.dims()[1], cont.len());
    for i in 0..cont.len() {
        let full: Vec<u32> = prompt.iter().chain(&cont[..=i]).copied().collect();
        let got = all.get(0).unwrap().get(i).unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&got, &fresh_last_logits(&full));
        assert!(d < TOL, "position {i}: {d}");
    }
}

#[test]
fn fork_shares_the_prefix_and_deep_clone_is_independent() {
    let e = engine();
    let prompt = e.encode_prompt(&"A long shared prompt about the sea and its ships. ".repeat(8)).unwrap();
    let (mut one, _) = e.prefill(&prompt).unwrap();
    let single = one.memory_bytes();
    one.fork(16).unwrap();
    let tok = e.tokenizer().encode(" The", false).unwrap();
    e.forward(&mut one, &vec![tok.clone(); 16], LogitsFor::Last).unwrap();
    assert!(
        one.memory_bytes() < 4 * single,
        "16 forked rows should share the prompt: {} bytes vs {} for one row",
        one.memory_bytes(),
        single
    );
    // a deep clone can be extended without touching the original
    let mut copy = one.deep_clone().unwrap();
    let a = e.forward(&mut copy, &vec![tok.clone(); 16], LogitsFor::Last).unwrap();
    let b = e.forward(&mut one, &vec![tok.clone(); 16], LogitsFor::Last).unwrap();
    let d = max_abs_diff(&row(a.logits.as_ref().unwrap(), 3), &row(b.logits.as_ref().unwrap(), 3));
    assert!(d < 1e-4, "clone and original diverged: {d}");
    assert!(one.truncate(0, prompt.len() - 1).is_err(), "cannot cut into the shared prefix");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let e = engine();
    let (mut cache, _) = e.prefill(&[2, 818]).unwrap();
    assert!(e.forward(&mut cache, &[vec![u32::MAX]], LogitsFor::Last).is_err());
    assert!(e.forward(&mut cache, &[vec![1], vec![2]], LogitsFor::Last).is_err(), "row count mismatch");
    assert!(e.forward(&mut cache, &[vec![]], LogitsFor::Last).is_err(), "no tokens");
    assert!(e.prefill(&[]).is_err());
    // the cache is still usable after the errors
    let out = e.forward(&mut cache, &[vec![5279]], LogitsFor::Last).unwrap();
    assert!(out.logits.is_some());
}

/// Batched ragged rows pick the same next token as each row run alone: strictly with f32
/// weights; on the quantized model (as deal runs it) wherever the alone run's top-1 leads by
/// more than the quantization noise. Quantized matmuls round activations to 8 bits, so float
/// order noise between schedules is amplified to a few tenths of a logit (observed max ~1.4).
#[test]
fn batched_rows_pick_the_same_top1_as_alone() {
    const QUANT_NOISE: f32 = 2.0;
    for (e, strict) in [(engine_f32(), true), (engine(), false)] {
        let prompt = e.encode_prompt("My favourite thing about the summer is").unwrap();
        let conts: Vec<Vec<u32>> = [" the", " going to the beach", " long evenings with", " that", ""]
            .iter()
            .map(|s| e.tokenizer().encode(s, false).unwrap())
            .collect();
        let (mut cache, first) = e.prefill(&prompt).unwrap();
        let first = row(first.logits.as_ref().unwrap(), 0);
        cache.fork(conts.len()).unwrap();
        // the last row brings no token this step: the pass leaves it out (or, where it runs
        // it, its logits are junk) and it is not compared
        let out = e.forward(&mut cache, &conts, LogitsFor::Last).unwrap();
        let l = out.logits.as_ref().unwrap();
        let mut worst = 0f32;
        for (r, c) in conts.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
            let full: Vec<u32> = prompt.iter().chain(c).copied().collect();
            let alone = fresh_last_logits_on(e, &full);
            let got = row(l, out.index_of(r).unwrap());
            worst = worst.max(max_abs_diff(&got, &alone));
            let top = deal_backend::sampling::top_k(&alone, 2);
            if strict || top[0].1 - top[1].1 > QUANT_NOISE {
                assert_eq!(argmax(&got), argmax(&alone), "row {r} (strict={strict}): batched top-1 differs from alone");
            }
        }
        let bound = if strict { TOL } else { QUANT_NOISE };
        assert!(worst < bound, "strict={strict}: batched vs alone max abs logit diff {worst}");
        eprintln!("batched vs alone (f32 weights: {strict}): max abs logit diff {worst:.5}");
        // the waiting row can continue and still matches its own fresh prefill's top-1
        let out = e.forward(&mut cache, &vec![vec![argmax(&first)]; conts.len()], LogitsFor::Last).unwrap();
        let full: Vec<u32> = prompt.iter().copied().chain([argmax(&first)]).collect();
        let alone = fresh_last_logits_on(e, &full);
        let d = max_abs_diff(&row(out.logits.as_ref().unwrap(), 4), &alone);
        assert!(d < bound, "a row that waited a step differs by {d}");
    }
}

/// Rows that bring no token are left out of a decode pass (no projection, MLP or output-layer
/// work for them): the rows that are fed get bit for bit what they get when every row is
/// fed, and the rows that sat out continue bit for bit as if they had not.
#[test]
fn rows_without_tokens_are_left_out_and_change_nothing() {
    let e = engine();
    let prompt = e.encode_prompt("The old lighthouse keeper").unwrap();
    let (mut cache, _) = e.prefill(&prompt).unwrap();
    cache.fork(4).unwrap();
    let first: Vec<Vec<u32>> = [" looked", " saw a", " lit", " ran"].iter().map(|s| e.tokenizer().encode(s, false).unwrap()).collect();
    e.forward(&mut cache, &first, LogitsFor::Last).unwrap();
    let before = cache.deep_clone().unwrap();

    // rows 0 and 2 sit out a ragged step
    let mut some_cache = cache.deep_clone().unwrap();
    let step: Vec<Vec<u32>> = vec![vec![], vec![9876, 5], vec![], vec![321]];
    let some = e.forward(&mut some_cache, &step, LogitsFor::Last).unwrap();
    assert_eq!(some.rows, [1, 3], "only the fed rows ran");
    assert_eq!(some.logits.as_ref().unwrap().dims()[0], 2);
    assert_eq!(some.hidden.dims()[0], 2);
    assert_eq!((some.index_of(1), some.index_of(2), some.index_of(3)), (Some(0), None, Some(1)));

    // the same step with every row fed
    let all_step: Vec<Vec<u32>> = vec![vec![7, 8], step[1].clone(), vec![11], step[3].clone()];
    let all = e.forward(&mut cache, &all_step, LogitsFor::Last).unwrap();
    assert_eq!(all.rows, [0, 1, 2, 3]);
    let hidden = |o: &deal_engine::model::ForwardOutput, i: usize| o.hidden.get(i).unwrap().to_vec1::<f32>().unwrap();
    for (i, r) in [(0, 1), (1, 3)] {
        assert_eq!(row(some.logits.as_ref().unwrap(), i), row(all.logits.as_ref().unwrap(), r), "cache row {r}: logits");
        assert_eq!(hidden(&some, i), hidden(&all, r), "cache row {r}: hidden state");
    }

    // the rows that sat out continue exactly as from the cache before the step
    let next: Vec<Vec<u32>> = vec![vec![42], vec![43], vec![44], vec![45]];
    let mut before = before;
    let want = e.forward(&mut before, &next, LogitsFor::Last).unwrap();
    let got = e.forward(&mut some_cache, &next, LogitsFor::Last).unwrap();
    for r in [0, 2] {
        assert_eq!(row(got.logits.as_ref().unwrap(), r), row(want.logits.as_ref().unwrap(), r), "row {r} after sitting out");
    }
}
