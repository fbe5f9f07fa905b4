//! The `deal` binary end to end: generate streams text, info describes the model, bad input
//! gives one error line and a non-zero exit.

use std::process::Command;

fn deal(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deal")).args(args).output().expect("run deal");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn generate_streams_a_greedy_completion() {
    let (ok, out, err) = deal(&["generate", "-p", "The capital of France is", "-n", "8", "--quiet"]);
    assert!(ok, "{err}");
    assert!(out.contains("capital"), "unexpected completion {out:?}");
}

#[test]
fn info_describes_the_default_model() {
    let (ok, out, err) = deal(&["info"]);
    assert!(ok, "{err}");
    for want in ["gemma3", "context length  32768", "sliding window  512", "Q8_0"] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn bad_input_is_one_error_line_and_failure() {
    for args in [
        vec!["generate", "-m", "/nonexistent.gguf", "-p", "x"],
        vec!["generate", "-p", "x", "--top-p", "7"],
        vec!["generate", "-p", "x", "--device", "tpu"],
    ] {
        let (ok, _, err) = deal(&args);
        assert!(!ok, "{args:?} should fail");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one error line, got {err:?}");
        assert!(lines[0].starts_with("error: "), "{err}");
    }
}

#[test]
fn generate_with_a_controller_reports_the_breakdown() {
    let (ok, out, err) = deal(&[
        "generate", "-p", "Write a sentence using the words: dog, park, ball.", "-n", "12",
        "--controller", "deal", "-W", "keywords=1", "--head", r#"keywords={"words":["dog","park","ball"]}"#,
        "--params", r#"{"k":3,"beams":2,"lookahead":2,"lambda":15}"#,
    ]);
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty());
    assert!(err.contains("\"head\":\"keywords\"") && err.contains("forward_passes"), "{err}");
    // a reward without a controller, and an unknown controller, are one-line errors
    for args in [
        vec!["generate", "-p", "x", "-W", "keywords=1"],
        vec!["generate", "-p", "x", "--controller", "nosuch", "-n", "2"],
    ] {
        let (ok, _, err) = deal(&args);
        assert!(!ok && err.trim().lines().count() == 1 && err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn generate_with_a_json_schema_or_regex_is_constrained() {
    let dir = std::env::temp_dir().join(format!("deal-cli-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("colour.json");
    std::fs::write(&schema, r#"{"type": "object", "properties": {"colour": {"enum": ["red", "green"]}}, "required": ["colour"]}"#).unwrap();
    let (ok, out, err) = deal(&["generate", "-p", "A colour as JSON:\n", "-n", "24", "--json-schema", schema.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(v["colour"] == "red" || v["colour"] == "green", "{v}");
    let (ok, out, err) = deal(&["generate", "-p", "Year:", "-n", "8", "--regex", " [12][0-9]{3}", "--quiet"]);
    assert!(ok, "{err}");
    let t = out.trim();
    assert!(t.len() == 4 && t.chars().all(|c| c.is_ascii_digit()), "{out:?}");
    std::fs::write(&schema, "not json").unwrap();
    let (ok, _, err) = deal(&["generate", "-p", "x", "--json-schema", schema.to_str().unwrap()]);
    assert!(!ok && err.contains("not JSON"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_sweep_writes_its_json_and_plots_and_refuses_bad_settings() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-eval-sweep");
    let _ = std::fs::remove_dir_all(&dir);
    let out_dir = dir.to_str().unwrap();
    let (ok, out, err) = deal(&[
        "eval", "sweep", "--heads", "sentiment,length", "--head", r#"length={"target": 4}"#, "--grid", "2", "--limit", "1", "-n", "6",
        "--no-references", "--params", r#"{"k": 2, "beams": 1, "lookahead": 1}"#, "--out", out_dir,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| sentiment=1.00 length=0.00 |") && out.contains("hypervolume"), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(report["points"].as_array().unwrap().len(), 2);
    assert_eq!(report["complete"], true);
    assert!(std::fs::read(dir.join("sweep.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(std::fs::read_to_string(dir.join("sweep.svg")).unwrap().contains("<svg"));
    // the plots drawn again from the JSON alone
    let stem = dir.join("again");
    let (ok, _, err) = deal(&["eval", "plot", dir.join("sweep.json").to_str().unwrap(), "--out", stem.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read(dir.join("again.png")).unwrap().starts_with(b"\x89PNG"));

    for args in [
        vec!["eval", "sweep", "--heads", "sentiment", "--out", out_dir],
        vec!["eval", "sweep", "--heads", "sentiment,length", "--grid", "1", "--out", out_dir],
        vec!["eval", "sweep", "--heads", "sentiment,nosuchhead", "--limit", "1", "--out", out_dir],
        vec!["eval", "compare", "-W", "sentiment=abc", "--out", out_dir],
        vec!["eval", "keywords", "--controllers", "greedy,nosuch", "--limit", "1", "--out", out_dir],
        vec!["eval", "plot", "/nonexistent.json"],
    ] {
        let (ok, _, err) = deal(&args);
        assert!(!ok, "{args:?} should fail");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one error line, got {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn bench_all_writes_a_report_with_every_part_and_its_command() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-all").join("REPORT.md");
    let _ = std::fs::remove_file(&out);
    let (ok, _, err) = deal(&["bench", "all", "--quick", "--no-peer", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let report = std::fs::read_to_string(&out).unwrap();
    for want in ["# deal benchmark report", "**Machine**", "## Model", "## Decode", "## Search", "## Heads", "## Concurrency", "deal bench decode --steps 8", "deal bench search", "deal heads bench", "vs greedy"] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    assert!(!report.contains("**Failed**"), "{report}");
}
