//! The official `openai` Python package (fetched with pip into the deal cache by the project's
//! own setup code, or pre-installed there by `.ci/run`) against a `deal serve` started here:
//! `tests/python/openai_client.py` (chat, streaming, `extra_body` alignment, errors),
//! `tests/python/openai_logprobs.py` (logprobs, echo, penalties, logit_bias),
//! `tests/python/openai_steering.py` (a weight of 1 steers at default settings; structured
//! outputs), then the
//! Python examples in `examples/python/` as smoke tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KEY: &str = "test-key";

/// Start `deal serve --port 0` and read the address it prints.
fn serve() -> (Serve, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deal"))
        .args(["serve", "--port", "0", "--api-key", KEY])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deal serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("deal serve exited before listening").expect("read stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().expect("address").to_string();
        }
    };
    // keep draining stderr so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (Serve(child), addr)
}

fn python(script: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let site = deal_engine::setup::ensure_pip_package("openai", "openai", "openai/__init__.py").expect("pip install openai");
    let py = std::env::var("DEAL_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(py).arg(script).args(args).env("PYTHONPATH", site).envs(envs.iter().copied()).output().expect("run python3")
}

#[test]
fn official_openai_client_works_against_deal_serve() {
    let (_server, addr) = serve();
    let out = python("tests/python/openai_client.py", &[&addr, KEY], &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_client.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    let out = python("tests/python/openai_logprobs.py", &[&addr, KEY], &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_logprobs.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    let concepts = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/data/keyword_concepts.txt");
    let out = python("tests/python/openai_steering.py", &[&addr, KEY, concepts], &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_steering.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprintln!("{}", stdout.trim());

    for example in ["examples/python/chat.py", "examples/python/stream.py", "examples/python/alignment.py"] {
        let out = python(example, &[], &[("DEAL_URL", &addr), ("DEAL_API_KEY", KEY)]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{example} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(!stdout.trim().is_empty(), "{example} printed nothing");
    }
}
