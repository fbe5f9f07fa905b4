//! The pipelined lookahead (`Commit::Pipeline`) on the real default model: it makes the
//! paper rule's choices (same tokens, same logprobs, same streamed text) for several
//! k / b / l / row budgets, with λ = 0 it is still beam search, it needs far fewer passes
//! per committed token, and a cancelled search stops within a pass.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{concept_prompt as prompt, concept_sets as sets, engine, keywords, run};
use deal_backend::FinishReason;
use deal_controllers::{Commit, Request, SearchConfig};

fn token_rule(k: usize, beams: usize, lookahead: usize) -> SearchConfig {
    SearchConfig { max_tokens: 16, stop: vec!["\n".into()], k, beams, lookahead, lambda: 12.0, commit: Commit::Token, ..Default::default() }
}

fn passes_per_token(o: &deal_controllers::Outcome) -> f64 {
    o.stats.forward_passes as f64 / o.tokens.len().max(1) as f64
}

#[test]
fn pipelined_lookahead_makes_the_paper_rules_choices_in_fewer_passes() {
    let e = engine();
    // (k, b, l, row budget): one beam with two or l steps in flight, two beams, the
    // smallest budget (only the step being decided), the widest lookahead
    let cases = [(4, 1, 3, 8), (4, 1, 3, 14), (3, 2, 2, 8), (4, 1, 4, 1), (2, 1, 6, 20)];
    let sets = sets();
    let mut slow = Vec::new();
    for (k, b, l, rows) in cases {
        let token = token_rule(k, b, l);
        let pipe = SearchConfig { commit: Commit::Pipeline { rows: Some(rows) }, ..token.clone() };
        let (mut token_passes, mut pipe_passes) = (0.0, 0.0);
        for words in sets.iter().take(6) {
            let r = keywords(words);
            let p = prompt(words);
            let req = Request::new(e, &p).with_reward(&r).with_logprobs(2);
            let reg = deal_controllers::Registry::builtin();
            let a = reg.search("deal", &token, &req, &mut |_| true).unwrap();
            let mut pieces = Vec::new();
            let c = reg
                .search("deal", &pipe, &req, &mut |piece| {
                    pieces.push(piece.text.to_string());
                    true
                })
                .unwrap();
            assert_eq!(a.tokens, c.tokens, "k={k} b={b} l={l} rows={rows} {words:?}: {:?} vs {:?}", a.text, c.text);
            assert_eq!(a.text, c.text);
            assert_eq!(pieces.concat(), c.text, "streamed pieces differ from the text");
            assert_eq!(a.finish, c.finish);
            let lps = |o: &deal_controllers::Outcome| o.logprobs.iter().map(|t| (t.token, t.logprob)).collect::<Vec<_>>();
            assert_eq!(lps(&a), lps(&c), "logprobs differ");
            assert_eq!(c.logprobs.len(), c.tokens.len());
            token_passes += passes_per_token(&a);
            pipe_passes += passes_per_token(&c);
        }
        println!("k={k} b={b} l={l} rows={rows}: passes/token token rule {:.2}, pipelined {:.2}", token_passes / 6.0, pipe_passes / 6.0);
        if rows >= 1 + b * (1 + (k - 1) * 2) {
            // two or more steps in flight: well under the paper rule's l + 1 passes a step
            if pipe_passes >= 0.6 * token_passes { slow.push(format!("k={k} b={b} l={l} rows={rows}: {pipe_passes:.2} vs {token_passes:.2}")); }
        } else {
            assert!(pipe_passes <= token_passes + 1e-9, "k={k} b={b} l={l} rows={rows}: {pipe_passes:.2} vs {token_passes:.2}");
        }
    }
    assert!(slow.is_empty(), "{slow:?}");
}

#[test]
fn pipelined_lookahead_at_lambda_zero_is_beam_search() {
    let e = engine();
    let r = keywords(&["dog", "frisbee", "park"]);
    let p = prompt(&["dog", "frisbee", "park"]);
    let token = SearchConfig { lambda: 0.0, ..token_rule(3, 2, 3) };
    let pipe = SearchConfig { commit: Commit::Pipeline { rows: Some(12) }, ..token.clone() };
    let (a, _) = run(e, "deal", &token, &p, Some(&r));
    let (c, _) = run(e, "deal", &pipe, &p, Some(&r));
    assert_eq!(a.tokens, c.tokens);
    // and beam search with λ = 0 does not depend on the lookahead
    let short = SearchConfig { lookahead: 1, ..pipe.clone() };
    let (d, _) = run(e, "deal", &short, &p, Some(&r));
    assert_eq!(a.tokens, d.tokens);
}

#[test]
fn pipelined_lookahead_stops_when_cancelled() {
    let e = engine();
    let r = keywords(&["light", "sea"]);
    let cfg = SearchConfig { max_tokens: 40, commit: Commit::Pipeline { rows: Some(8) }, ..token_rule(4, 1, 3) };
    let flag = AtomicBool::new(false);
    let req = Request::new(e, "The old lighthouse keeper").with_reward(&r).with_cancel(&flag);
    let mut pieces = 0;
    let out = deal_controllers::Registry::builtin()
        .search("deal", &cfg, &req, &mut |_| {
            pieces += 1;
            flag.store(true, Ordering::SeqCst);
            true
        })
        .unwrap();
    assert_eq!(out.finish, FinishReason::Cancelled);
    assert!(pieces >= 1);
    assert!(out.tokens.len() < 40, "ran on after the cancel: {:?}", out.text);
}

#[test]
fn pipeline_row_budget_is_checked() {
    let cfg = SearchConfig { commit: Commit::Pipeline { rows: Some(0) }, ..Default::default() };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("commit.rows"), "{err}");
    let parsed = SearchConfig::from_json(r#"{"commit": {"mode": "pipeline"}}"#).unwrap();
    assert_eq!(parsed.commit, Commit::Pipeline { rows: None });
    // the default commit rule is the pipeline with its automatic budget
    assert_eq!(SearchConfig::default().commit, Commit::Pipeline { rows: None });
}
