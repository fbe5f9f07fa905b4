//! `deal heads` and `deal train-probe` end to end: the listing, scoring with a weight vector,
//! and request errors as one line with a non-zero exit.

use std::process::Command;

fn deal(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deal")).args(args).output().expect("run deal");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn heads_lists_every_head_with_its_params() {
    let (ok, out, err) = deal(&["heads"]);
    assert!(ok, "{err}");
    for want in ["keywords", "length", "format", "sentiment", "lexicon", "repetition", "relevance", "judge", "probe", "http", "tolerance", "timeout_ms"] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (ok, out, err) = deal(&["heads", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 10);
    assert_eq!(v[1]["name"], "length");
    assert_eq!(v[1]["params"][0]["name"], "target");
}

#[test]
fn heads_score_prints_a_ranked_breakdown() {
    let (ok, out, err) = deal(&[
        "heads", "score", "--no-model", "-W", "sentiment=1 repetition=0.5", "--head", "keywords={\"words\": [\"beach\"]}",
        "-p", "Tell me about your day.",
        "-r", "The damn dog barked and the damn dog barked and the damn dog barked.",
        "-r", "I had a wonderful, relaxing day at the beach!",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["rank"], 2);
    assert_eq!(v[1]["rank"], 1);
    let heads: Vec<&str> = v[1]["heads"].as_array().unwrap().iter().map(|h| h["head"].as_str().unwrap()).collect();
    assert_eq!(heads, ["keywords", "repetition", "sentiment"]);
    assert_eq!(v[1]["heads"][0]["raw"], 1.0);
    assert_eq!(v[1]["heads"][0]["weight"], 0.0);
}

#[test]
fn bad_reward_requests_are_one_error_line_and_failure() {
    for (args, want) in [
        (vec!["heads", "score", "--no-model", "-W", "sentimnt=1", "-r", "x"], "available: keywords"),
        (vec!["heads", "score", "--no-model", "--head", "length={\"targt\": 3}", "-W", "length=1", "-r", "x"], "valid: target, unit, tolerance"),
        (vec!["heads", "score", "--no-model", "--spec", "{\"weights\": {\"sentiment\": 1}, \"combine\": \"max\"}", "-r", "x"], "logsigmoid"),
        (vec!["train-probe", "--data", "/nonexistent.jsonl", "-m", "/nonexistent.gguf"], "does not exist"),
    ] {
        let (ok, _, err) = deal(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.starts_with("error: ") && err.trim().lines().count() == 1 && err.contains(want), "{args:?}: {err:?}");
    }
}
