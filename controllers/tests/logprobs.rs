//! Logprobs, penalties and logit bias on the real default model: every controller reports
//! the model's log-probabilities of the tokens it committed (equal to a teacher-forced pass
//! over prompt + response, not search scores), streamed pieces carry the same values, and
//! the OpenAI penalties and `logit_bias` change outputs in the direction they promise while
//! the reported logprobs stay the model's.

mod common;

use std::collections::HashSet;

use common::{engine, engine_f32, keywords};
use deal_engine::Engine;
use deal_backend::{Backend, TokenLogprob};
use deal_controllers::{Outcome, Request, SearchConfig};
use deal_heads::reward::WeightedReward;

const PROMPT: &str = "Words: dog, ball, park\nSentence:";

/// Decode-step and multi-position passes of the quantized kernels round differently.
const QUANTIZED_TOLERANCE: f32 = 0.35;
/// With f32 weights only float rounding is left.
const F32_TOLERANCE: f32 = 5e-3;

fn search(name: &str, cfg: &SearchConfig, r: Option<&WeightedReward>, top: usize) -> (Outcome, Vec<TokenLogprob>) {
    search_on(engine(), name, cfg, r, top)
}

fn search_on(e: &Engine, name: &str, cfg: &SearchConfig, r: Option<&WeightedReward>, top: usize) -> (Outcome, Vec<TokenLogprob>) {
    let mut req = Request::new(e, PROMPT).with_logprobs(top);
    req.reward = r;
    let mut streamed = Vec::new();
    let out = deal_controllers::Registry::builtin()
        .search(name, cfg, &req, &mut |p| {
            streamed.extend_from_slice(p.logprobs);
            true
        })
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    (out, streamed)
}

/// The teacher-forced log-probabilities of `response` after the prompt.
fn forced(e: &Engine, response: &[u32], top: usize) -> Vec<TokenLogprob> {
    let mut all = e.encode_prompt(PROMPT).unwrap();
    let n = all.len();
    all.extend_from_slice(response);
    e.prompt_logprobs(&all, top).unwrap().into_iter().skip(n).map(|l| l.unwrap()).collect()
}

fn check_against_forced(name: &str, out: &Outcome, top: usize) {
    check_on(engine(), QUANTIZED_TOLERANCE, name, out, top)
}

fn check_on(e: &Engine, tolerance: f32, name: &str, out: &Outcome, top: usize) {
    assert!(!out.tokens.is_empty(), "{name}: empty response");
    assert_eq!(out.logprobs.len(), out.tokens.len(), "{name}: one logprob per token");
    let want = forced(e, &out.tokens, top);
    for (i, (got, want)) in out.logprobs.iter().zip(&want).enumerate() {
        assert_eq!(got.token, out.tokens[i], "{name}: token {i}");
        assert!(
            (got.logprob - want.logprob).abs() < tolerance,
            "{name}: token {i}: reported {} but a teacher-forced pass gives {}",
            got.logprob,
            want.logprob
        );
        assert_eq!(got.top.len(), top, "{name}: {top} alternatives");
        if top == 0 {
            continue;
        }
        assert!(got.top.windows(2).all(|w| w[0].1 >= w[1].1), "{name}: alternatives best first: {:?}", got.top);
        assert!(got.top[0].1 >= got.logprob - 1e-6, "{name}: the best alternative is at least the chosen token");
        if tolerance == F32_TOLERANCE {
            assert_eq!(got.top[0].0, want.top[0].0, "{name}: token {i}: best alternative");
        }
    }
}

#[test]
fn with_f32_weights_the_reported_logprobs_equal_a_teacher_forced_pass() {
    let r = keywords(&["dog", "ball", "park"]);
    let cfg = SearchConfig { max_tokens: 8, lambda: 8.0, n: 3, seed: 5, ..Default::default() };
    for name in ["greedy", "deal", "best_of_n"] {
        let reward = (name != "greedy").then_some(&r);
        let (out, _) = search_on(engine_f32(), name, &cfg, reward, 2);
        check_on(engine_f32(), F32_TOLERANCE, name, &out, 2);
    }
}

#[test]
fn every_controller_reports_the_models_logprobs_of_what_it_committed() {
    let r = keywords(&["dog", "ball", "park"]);
    let cfg = SearchConfig { max_tokens: 10, lambda: 8.0, n: 3, blocks: 2, block_len: 3, seed: 5, ..Default::default() };
    for name in ["greedy", "sample", "deal", "args", "blockwise", "best_of_n", "early_prune"] {
        let reward = (name != "greedy" && name != "sample").then_some(&r);
        let (out, streamed) = search(name, &cfg, reward, 3);
        check_against_forced(name, &out, 3);
        assert_eq!(streamed, out.logprobs, "{name}: the streamed pieces carry the same logprobs");
        if name == "greedy" {
            for l in &out.logprobs {
                assert_eq!(l.token, l.top[0].0, "greedy picks the best token");
            }
        }
    }
}

#[test]
fn penalties_reduce_repetition_and_logprobs_stay_the_models() {
    let greedy = SearchConfig { max_tokens: 32, ..Default::default() };
    let (plain, _) = search("greedy", &greedy, None, 1);
    let penalised = SearchConfig { frequency_penalty: 2.0, presence_penalty: 2.0, ..greedy.clone() };
    let (pen, _) = search("greedy", &penalised, None, 1);
    let repeats = |t: &[u32]| t.len() - t.iter().collect::<HashSet<_>>().len();
    assert!(
        repeats(&pen.tokens) < repeats(&plain.tokens),
        "penalties should repeat fewer tokens: {} vs {} ({:?} vs {:?})",
        repeats(&pen.tokens),
        repeats(&plain.tokens),
        pen.text,
        plain.text
    );
    // reported values are the model's, not the penalised ones
    check_against_forced("greedy+penalties", &pen, 1);
    // a positive presence penalty may pick a token that is not the model's favourite
    assert!(pen.logprobs.iter().any(|l| l.token != l.top[0].0), "the penalty changed some choice");
}

#[test]
fn logit_bias_bans_and_forces_tokens_in_every_controller() {
    let r = keywords(&["dog", "ball", "park"]);
    let base = SearchConfig { max_tokens: 8, lambda: 8.0, ..Default::default() };
    for name in ["greedy", "deal", "args"] {
        let reward = (name != "greedy").then_some(&r);
        let (plain, _) = search(name, &base, reward, 0);
        let first = plain.tokens[0];
        let mut ban = base.clone();
        ban.logit_bias.insert(first, -100.0);
        let (banned, _) = search(name, &ban, reward, 0);
        assert!(!banned.tokens.contains(&first), "{name}: banned token {first} appeared: {:?}", banned.text);
        check_against_forced(&format!("{name}+ban"), &banned, 0);
        // +100 on one token: every step takes it
        let forced_id = engine().encode_prompt(" park").unwrap().last().copied().unwrap();
        let mut force = base.clone();
        force.logit_bias.insert(forced_id, 100.0);
        let (all, _) = search(name, &force, reward, 0);
        assert!(all.tokens.iter().all(|&t| t == forced_id), "{name}: +100 should force token {forced_id}: {:?}", all.text);
    }
}

