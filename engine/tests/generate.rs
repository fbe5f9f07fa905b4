//! Plain generation on the real model: seeds, sampling filters, stop strings, limits,
//! cancellation and streaming.

mod common;

use common::engine;
use deal_backend::sampling::SamplingParams;
use deal_engine::{FinishReason, GenerateParams};

fn run(prompt: &str, params: &GenerateParams) -> (String, Vec<String>, FinishReason) {
    let e = engine();
    let mut pieces = Vec::new();
    let g = e
        .generate(&e.encode_prompt(prompt).unwrap(), params, &mut |p| {
            pieces.push(p.to_string());
            true
        })
        .unwrap();
    (g.text, pieces, g.finish_reason)
}

fn sampled(seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens: 24,
        sampling: SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.95, seed, ..Default::default() },
        stop: vec![],
    }
}

#[test]
fn same_seed_same_text_other_seed_other_text() {
    let a = run("Once upon a time", &sampled(7)).0;
    let b = run("Once upon a time", &sampled(7)).0;
    assert_eq!(a, b, "same seed must reproduce the text");
    let others: Vec<String> = (8..11).map(|s| run("Once upon a time", &sampled(s)).0).collect();
    assert!(others.iter().any(|o| *o != a), "three other seeds all gave the same text: {a:?}");
}

#[test]
fn streamed_pieces_add_up_to_the_text_and_max_tokens_is_respected() {
    let p = GenerateParams { max_tokens: 12, ..Default::default() };
    let (text, pieces, finish) = run("The capital of France is", &p);
    assert_eq!(pieces.concat(), text);
    assert!(pieces.len() > 1, "text should stream in several pieces");
    assert_eq!(finish, FinishReason::Length);
    let n = engine().tokenizer().encode(&text, false).unwrap().len();
    assert!(n <= 13, "{n} tokens for max_tokens 12: {text:?}");
}

#[test]
fn stop_string_ends_generation_and_is_not_emitted() {
    // greedy continuation of this prompt is " the capital of the country of France. It is ..."
    let full = run("The capital of France is", &GenerateParams { max_tokens: 24, ..Default::default() }).0;
    assert!(full.contains(". "), "expected a sentence end in {full:?}");
    let p = GenerateParams { max_tokens: 24, stop: vec![". ".into()], ..Default::default() };
    let (text, pieces, finish) = run("The capital of France is", &p);
    assert_eq!(finish, FinishReason::Stop);
    assert!(!text.contains(". "), "stop string leaked: {text:?}");
    assert_eq!(text, full[..full.find(". ").unwrap()]);
    assert_eq!(pieces.concat(), text);
}

#[test]
fn callback_returning_false_cancels_after_that_piece() {
    let e = engine();
    let mut calls = 0;
    let g = e
        .generate(&e.encode_prompt("Once upon a time").unwrap(), &GenerateParams { max_tokens: 64, ..Default::default() }, &mut |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Cancelled);
    assert_eq!(calls, 3);
    assert!(g.tokens.len() < 10, "cancellation took {} tokens", g.tokens.len());
}

#[test]
fn repetition_penalty_breaks_the_greedy_loop() {
    // plain greedy repeats itself ("It is the capital of ..." again and again): count the
    // words that repeat an earlier one
    let repeats = |t: &str| {
        let words: Vec<String> = t.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).collect();
        let distinct: std::collections::HashSet<&String> = words.iter().collect();
        words.len() - distinct.len()
    };
    let plain = run("The capital of France is", &GenerateParams { max_tokens: 48, ..Default::default() }).0;
    assert!(repeats(&plain) >= 10, "expected a repetitive greedy text, got {plain:?}");
    let sampling = SamplingParams { repetition_penalty: 1.5, ..Default::default() };
    let pen = run("The capital of France is", &GenerateParams { max_tokens: 48, sampling, stop: vec![] }).0;
    eprintln!("repeated words: plain {} ({plain:?}), penalised {} ({pen:?})", repeats(&plain), repeats(&pen));
    assert!(
        repeats(&pen) * 2 <= repeats(&plain),
        "penalty did not halve repetition: {} vs {} repeated words in {pen:?}",
        repeats(&pen),
        repeats(&plain)
    );
}

#[test]
fn invalid_sampling_and_empty_prompt_are_errors() {
    let e = engine();
    let bad = GenerateParams { sampling: SamplingParams { top_p: 1.5, ..Default::default() }, ..Default::default() };
    let err = e.generate(&[2, 818], &bad, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
    assert!(e.generate(&[], &GenerateParams::default(), &mut |_| true).is_err());
    let too_long = vec![818u32; e.model().config().context_length + 1];
    let err = e.generate(&too_long, &GenerateParams::default(), &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
