//! Contracts every controller keeps on the real model: same seed → same output, streamed
//! pieces add up to the text, limits and stop strings, cancellation within one step, typed
//! config errors.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{engine, keywords, run};
use deal_controllers::{Commit, ControlError, Request, SearchConfig};
use deal_backend::FinishReason;

const PROMPT: &str = "The old lighthouse keeper";

fn cfg() -> SearchConfig {
    SearchConfig {
        max_tokens: 12,
        seed: 3,
        temperature: 0.9,
        k: 3,
        beams: 2,
        lookahead: 2,
        n: 4,
        blocks: 3,
        block_len: 3,
        prune_every: 3,
        lambda: 2.0,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_output_and_streams_add_up() {
    let e = engine();
    let r = keywords(&["light", "sea"]);
    for name in deal_controllers::Registry::builtin().names() {
        let (a, pieces) = run(e, name, &cfg(), PROMPT, Some(&r));
        let (b, _) = run(e, name, &cfg(), PROMPT, Some(&r));
        assert_eq!(a.tokens, b.tokens, "{name}: same seed, different output");
        assert_eq!(pieces.concat(), a.text, "{name}: streamed pieces differ from the text");
        assert!(a.tokens.len() <= 12, "{name}: {} tokens > max_tokens", a.tokens.len());
        assert!(a.stats.forward_passes > 0 && a.stats.tokens_committed == a.tokens.len(), "{name}: {:?}", a.stats);
        let bd = a.breakdown.expect("breakdown");
        assert_eq!(bd.heads[0].head, "keywords");
        println!("{name:>11}: {:?} reward {:.3} {:?}", a.text, bd.value, a.stats);
    }
    // sampling depends on the seed
    let texts: Vec<String> =
        (0..4).map(|seed| run(e, "sample", &SearchConfig { seed, ..cfg() }, PROMPT, None).0.text).collect();
    assert!(texts.iter().any(|t| *t != texts[0]), "4 seeds gave one text: {texts:?}");
}

#[test]
fn stop_strings_end_every_controller() {
    let e = engine();
    let r = keywords(&["light"]);
    let c = SearchConfig { stop: vec![" the".into(), ",".into(), ".".into()], max_tokens: 24, ..cfg() };
    for name in deal_controllers::Registry::builtin().names() {
        let (o, pieces) = run(e, name, &c, PROMPT, Some(&r));
        assert!(!o.text.contains(" the") && !o.text.contains(',') && !o.text.contains('.'), "{name}: {:?}", o.text);
        assert_eq!(pieces.concat(), o.text, "{name}");
        if o.tokens.len() < 24 {
            assert_eq!(o.finish, FinishReason::Stop, "{name}: {:?}", o.text);
        }
    }
}

#[test]
fn cancellation_stops_within_one_step() {
    let e = engine();
    let r = keywords(&["light"]);
    // b = 1: every DeAL step commits one token after l = 3 passes
    let c = SearchConfig { beams: 1, lookahead: 3, max_tokens: 16, commit: Commit::Token, ..cfg() };
    let req = Request::new(e, PROMPT).with_reward(&r);
    let mut calls = 0;
    let out = deal_controllers::Registry::builtin().search("deal", &c, &req, &mut |_| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(out.finish, FinishReason::Cancelled);
    assert_eq!(calls, 1);
    assert_eq!(out.stats.forward_passes, 3, "callback cancel: {:?}", out.stats);
    assert!(!out.text.is_empty() && out.tokens.len() <= 1);

    // the flag, set from the callback: the next forward pass does not run
    let flag = AtomicBool::new(false);
    let req = Request::new(e, PROMPT).with_reward(&r).with_cancel(&flag);
    let out = deal_controllers::Registry::builtin().search("deal", &c, &req, &mut |_| {
        flag.store(true, Ordering::Relaxed);
        true
    })
    .unwrap();
    assert_eq!(out.finish, FinishReason::Cancelled);
    assert_eq!(out.stats.forward_passes, 3, "flag cancel: {:?}", out.stats);

    // a flag set before the start: nothing but the prefill runs, for every controller
    flag.store(true, Ordering::Relaxed);
    for name in deal_controllers::Registry::builtin().names() {
        let out = deal_controllers::Registry::builtin().search(name, &cfg(), &req, &mut |_| true).unwrap();
        assert_eq!(out.finish, FinishReason::Cancelled, "{name}");
        assert_eq!(out.stats.forward_passes, 0, "{name}");
    }
}

#[test]
fn lead_commit_saves_passes_and_streams_the_same_way() {
    let e = engine();
    let r = keywords(&["light", "sea"]);
    let token = SearchConfig { max_tokens: 16, commit: Commit::Token, ..cfg() };
    let lead = SearchConfig { commit: Commit::Lead { margin: 0.0, min_prob: 0.0 }, ..token.clone() };
    let (a, _) = run(e, "deal", &token, PROMPT, Some(&r));
    let (b, pieces) = run(e, "deal", &lead, PROMPT, Some(&r));
    assert_eq!(pieces.concat(), b.text);
    let per = |o: &deal_controllers::Outcome| o.stats.forward_passes as f64 / o.tokens.len().max(1) as f64;
    println!("token: {:?} {:.2} passes/token; lead(0): {:?} {:.2} passes/token", a.text, per(&a), b.text, per(&b));
    assert!(per(&b) < per(&a), "lead commit did not save passes: {:?} vs {:?}", b.stats, a.stats);
    // min_prob: only confident lookahead tokens are accepted. At 1.0 none is (a greedy token
    // of probability exactly 1 aside), so each step commits one token, as many passes per
    // token as the paper's rule; in between, in between.
    let strict = SearchConfig { commit: Commit::Lead { margin: 0.0, min_prob: 1.0 }, ..token.clone() };
    let some = SearchConfig { commit: Commit::Lead { margin: 0.0, min_prob: 0.5 }, ..token.clone() };
    let (c, pieces) = run(e, "deal", &strict, PROMPT, Some(&r));
    assert_eq!(pieces.concat(), c.text);
    let (d, _) = run(e, "deal", &some, PROMPT, Some(&r));
    println!("lead(0, p=1): {:.2} passes/token; lead(0, p=0.5): {:.2}", per(&c), per(&d));
    assert!(per(&c) >= per(&a) * 0.9, "min_prob 1 accepted lookahead tokens: {:?} vs {:?}", c.stats, a.stats);
    assert!(per(&d) > per(&b) && per(&d) < per(&c), "min_prob 0.5 not between: {:.2} / {:.2} / {:.2}", per(&b), per(&d), per(&c));
}

#[test]
fn configs_are_checked_at_the_edge() {
    let e = engine();
    let r = keywords(&["light"]);
    let req = Request::new(e, PROMPT).with_reward(&r);
    let err = |name: &str, c: SearchConfig| deal_controllers::Registry::builtin().search(name, &c, &req, &mut |_| true).unwrap_err();
    match err("deal", SearchConfig { k: 0, ..cfg() }) {
        ControlError::BadConfig { field: "k", .. } => {}
        other => panic!("k = 0: {other}"),
    }
    match err("best_of_n", SearchConfig { temperature: 0.0, ..cfg() }) {
        ControlError::BadConfig { field: "temperature", .. } => {}
        other => panic!("temperature 0: {other}"),
    }
    match err("early_prune", SearchConfig { prune_fraction: 1.0, ..cfg() }) {
        ControlError::BadConfig { field: "prune_fraction", .. } => {}
        other => panic!("prune_fraction 1: {other}"),
    }
    let e2 = err("beam", cfg());
    assert!(e2.to_string().contains("deal") && e2.to_string().contains("best_of_n"), "{e2}");
    let bare = Request::new(e, PROMPT);
    match deal_controllers::Registry::builtin().search("deal", &cfg(), &bare, &mut |_| true).unwrap_err() {
        ControlError::NeedsReward("deal") => {}
        other => panic!("no reward: {other}"),
    }
    assert!(SearchConfig::from_json(r#"{"k": 2, "bogus": 1}"#).unwrap_err().to_string().contains("bogus"));
    let c = SearchConfig::from_json(r#"{"k": 2, "commit": {"mode": "lead", "margin": 1.5}}"#).unwrap();
    assert_eq!(c.commit, Commit::Lead { margin: 1.5, min_prob: 0.0 });
    let c = SearchConfig::from_json(r#"{"commit": {"mode": "lead", "margin": 0, "min_prob": 0.8}}"#).unwrap();
    assert_eq!(c.commit, Commit::Lead { margin: 0.0, min_prob: 0.8 });
    match err("deal", SearchConfig { commit: Commit::Lead { margin: 0.0, min_prob: 1.5 }, ..cfg() }) {
        ControlError::BadConfig { field: "commit.min_prob", .. } => {}
        other => panic!("min_prob 1.5: {other}"),
    }
}
