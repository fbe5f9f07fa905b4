//! `deal chat` driven by piped stdin (scriptable): replies stream to stdout, `/weights`
//! changes the breakdown that `/scores` prints, bad commands are reported and the session
//! goes on.

use std::io::Write;
use std::process::{Command, Stdio};

fn chat(script: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deal"))
        .args(["chat", "-n", "12"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run deal chat");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write script");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `/scores` table rows: head -> (weight, contribution).
fn scores(block: &str) -> Vec<(String, f64, f64)> {
    block
        .lines()
        .skip_while(|l| !l.starts_with("head "))
        .skip(1)
        .take_while(|l| !l.starts_with("total"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[3].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect()
}

#[test]
fn weights_change_the_breakdown_and_scores_prints_it() {
    let script = "\
Write a happy sentence about dogs.
/scores
/head length {\"target\": 8}
/weights sentiment=1 length=0.5
/controller deal k=3 l=2
Write a happy sentence about dogs.
/scores
/weights sentiment=0 length=2
Write a happy sentence about dogs.
/scores
/weights nonsense=1
/controller nonsense
/controller deal commit=token
/bogus
/reset
/help
";
    let (ok, out, err) = chat(script);
    assert!(ok, "{err}");
    assert!(err.contains("has no chat template (a base model)") && err.contains("-m path/to/instruct.gguf"), "the base-model note: {err}");
    let blocks: Vec<&str> = out.split("search: ").collect();
    assert_eq!(blocks.len(), 4, "three /scores outputs expected:\n{out}");
    assert!(blocks[0].contains("not scored"), "greedy reply without weights:\n{}", blocks[0]);
    let first = scores(blocks[1]);
    let second = scores(blocks[2]);
    assert_eq!(first.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(), ["length", "sentiment"], "{out}");
    let w = |s: &[(String, f64, f64)], h: &str| s.iter().find(|x| x.0 == h).map(|x| (x.1, x.2)).unwrap();
    assert_eq!(w(&first, "sentiment").0, 1.0);
    assert_eq!(w(&first, "length").0, 0.5);
    assert_eq!(w(&second, "sentiment"), (0.0, 0.0), "a zero weight contributes nothing");
    assert_eq!(w(&second, "length").0, 2.0);
    // the REPL's interactive default commit rule, then the paper's
    assert!(out.contains(r#""commit":{"mode":"lead","margin":0.5,"min_prob":0.0}"#), "{out}");
    assert!(out.contains(r#""commit":{"mode":"token"}"#), "{out}");
    assert!(out.contains("error: unknown reward head `nonsense`"), "{out}");
    assert!(out.contains("error: unknown controller `nonsense`"), "{out}");
    assert!(out.contains("error: unknown command /bogus"), "{out}");
    assert!(out.contains("(conversation cleared)") && out.contains("/weights h=w"), "{out}");
}
