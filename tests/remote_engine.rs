//! deal as a stateless controller over a remote engine: llama.cpp's `llama-server` (built by
//! `bench/llamacpp/build.sh` from the PyPI `llama-cpp-python` sdist) serves the default model,
//! `deal serve --engine URL` steers it. Nothing is mocked. One test, in stages, so that one
//! engine process serves them all (`.ci/run` builds llama-server once and caches it):
//!
//! 1. greedy through deal gives llama-server's own greedy text;
//! 2. DeAL with the keywords head through the engine beats greedy's hard coverage by ≥ 0.25;
//! 3. two deal replicas over one engine answer a seeded sampled request identically;
//! 4. killing the engine mid-request gives the client an error (502/504) within the engine
//!    timeout; deal keeps serving, and serves again once the engine is back.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn llama_server_bin() -> PathBuf {
    let bin = deal_engine::setup::deal_home().join("llama.cpp").join("bin").join("llama-server");
    assert!(bin.is_file(), "{} is missing: run bench/llamacpp/build.sh (.ci/run does)", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http(url: &str, body: Option<&Value>, timeout: Duration) -> Result<(u16, Value), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
    let mut resp = match body {
        Some(b) => agent.post(url).header("Content-Type", "application/json").send(b.to_string().as_bytes()),
        None => agent.get(url).call(),
    }
    .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// `llama-server` on the default model at `port`, ready (its `/health` is 200).
fn start_engine(port: u16) -> Proc {
    let model = deal_engine::setup::ensure_default_model().expect("default model");
    let child = Command::new(llama_server_bin())
        .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-np", "8", "-c", "8192", "-t", "2", "--seed", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-server");
    let p = Proc(child);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if let Ok((200, _)) = http(&format!("http://127.0.0.1:{port}/health"), None, Duration::from_secs(2)) {
            return p;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("llama-server did not become ready on port {port}");
}

/// `deal serve --engine` over the engine at `port`; returns the process and its base URL.
fn start_deal(port: u16) -> (Proc, String) {
    spawn_deal(&["serve", "--port", "0", "--engine", &format!("http://127.0.0.1:{port}"), "--engine-timeout", "5"])
}

/// Run `deal ARGS` (a `serve`) and wait for the address it listens on.
fn spawn_deal(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deal"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deal serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("deal serve exited before listening").expect("stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (Proc(child), addr)
}

fn completion(base: &str, body: Value) -> (u16, Value) {
    http(&format!("{base}/v1/completions"), Some(&body), Duration::from_secs(300)).expect("request")
}

fn text(v: &Value) -> String {
    v["choices"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {v}")).to_string()
}

const PROMPTS: [&str; 16] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "def fibonacci(n):",
    "My favourite season is autumn because",
    "The recipe calls for two eggs,",
    "In 1969, astronauts",
    "The best way to learn a language is",
    "Dear customer, we are sorry that",
    "Water boils at",
    "The most important invention of the 20th century was",
    "To make a cup of tea, first",
    "The cat sat on the",
    "Scientists have discovered that",
    "The main difference between a virus and a bacterium is",
    "In the year 2050, cities will",
];

fn concept_sets() -> Vec<Vec<&'static str>> {
    include_str!("../bench/data/keyword_concepts.txt").lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|w| !w.is_empty()).collect()
}

fn concept_prompt(words: &[&str]) -> String {
    format!(
        "Write a sentence using the words: apple, tree, red.\nSentence: The red apple fell from the tree.\n\n\
         Write a sentence using the words: {}.\nSentence:",
        words.join(", ")
    )
}

/// Whether every word appears (the keywords head's hard coverage, lemmatised).
fn hard(words: &[&str], response: &str) -> f64 {
    let reg = deal_heads::Registry::with_builtin();
    let head = reg.get("keywords").unwrap().build(&json!({ "words": words }), &deal_heads::HeadContext::new()).unwrap();
    let d = head.score_with_details(&[deal_heads::Candidate::new("", response)]).unwrap();
    d[0].1.iter().find(|(k, _)| *k == "hard").map(|(_, v)| *v as f64).unwrap_or_else(|| panic!("no hard detail in {:?}", d[0].1))
}

/// The two tests run one after the other: on two cores, a deal engine beside llama-server
/// slowed it past the engine timeout.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn deal_steers_llama_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let engine = start_engine(port);
    let (_deal, base) = start_deal(port);
    let lurl = format!("http://127.0.0.1:{port}");

    // 1. greedy parity: deal's greedy over the engine is the engine's greedy
    let mut same = 0;
    for p in PROMPTS {
        let (s, ours) = completion(&base, json!({"model": "deal", "prompt": p, "max_tokens": 24, "temperature": 0}));
        assert_eq!(s, 200, "{ours}");
        let (s, theirs) = completion(&lurl, json!({"prompt": p, "max_tokens": 24, "temperature": 0}));
        assert_eq!(s, 200, "{theirs}");
        let (a, b) = (text(&ours), text(&theirs));
        println!("{p:?}\n  deal:  {a:?}\n  llama: {b:?}");
        same += usize::from(a == b);
    }
    // measured 12 of 16 (2026-12-03): llama.cpp is not batch-invariant, so its own greedy
    // drifts from the same greedy asked 64 tokens per call after a dozen tokens on some prompts
    assert!(same >= 10, "deal's greedy matched llama-server's on {same} of {} prompts", PROMPTS.len());

    // 2. DeAL through the engine steers like the local engine does
    let sets = concept_sets();
    let (mut g, mut d) = (0.0, 0.0);
    for words in &sets {
        let p = concept_prompt(words);
        let common = json!({"model": "deal", "prompt": p, "max_tokens": 16, "stop": ["\n"], "temperature": 0});
        let (s, greedy) = completion(&base, common.clone());
        assert_eq!(s, 200, "{greedy}");
        let mut steered = common.clone();
        steered["alignment"] = json!({"controller": "deal", "weights": {"keywords": 1.0}, "heads": {"keywords": {"words": words}},
                                      "params": {"k": 4, "beams": 2, "l": 4, "lambda": 15}});
        let (s, deal) = completion(&base, steered);
        assert_eq!(s, 200, "{deal}");
        let (gt, dt) = (text(&greedy), text(&deal));
        g += hard(words, &gt);
        d += hard(words, &dt);
        println!("{words:?}\n  greedy: {gt:?}\n  deal:   {dt:?}");
    }
    let n = sets.len() as f64;
    println!("hard coverage over the engine: greedy {:.3}, deal {:.3}", g / n, d / n);
    assert!(d / n >= g / n + 0.25, "deal {:.3} does not beat greedy {:.3} by 0.25 through the engine", d / n, g / n);

    // 3. replicas are stateless: the same seeded request, the same answer
    let (_deal2, base2) = start_deal(port);
    let seeded = json!({"model": "deal", "prompt": PROMPTS[1], "max_tokens": 16, "temperature": 0.9, "seed": 7,
                        "alignment": {"controller": "best_of_n", "weights": {"sentiment": 1.0}, "params": {"n": 4, "temperature": 0.9}}});
    let (s1, a) = completion(&base, seeded.clone());
    let (s2, b) = completion(&base2, seeded);
    assert_eq!((s1, s2), (200, 200), "{a} {b}");
    assert_eq!(text(&a), text(&b), "two replicas answered the same seeded request differently");

    // 4. the engine dies mid-request: an error within the timeout, deal stays up, then recovers
    let long = json!({"model": "deal", "prompt": PROMPTS[2], "max_tokens": 200,
                      "alignment": {"controller": "deal", "weights": {"length": 1.0}, "heads": {"length": {"target": 150}}}});
    let base_c = base.clone();
    let t0 = Instant::now();
    let pending = std::thread::spawn(move || completion(&base_c, long));
    std::thread::sleep(Duration::from_millis(1500));
    drop(engine);
    let (status, body) = pending.join().unwrap();
    let took = t0.elapsed();
    assert!(matches!(status, 502 | 504), "killed engine: HTTP {status} {body}");
    assert!(took < Duration::from_secs(30), "the error took {took:?}");
    let (s, h) = http(&format!("{base}/health"), None, Duration::from_secs(5)).unwrap();
    assert_eq!(s, 200, "{h}");
    let (s, e) = completion(&base, json!({"model": "deal", "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0}));
    assert!(matches!(s, 502 | 504), "engine down: HTTP {s} {e}");
    let _engine = start_engine(port);
    let (s, ok) = completion(&base, json!({"model": "deal", "prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}));
    assert_eq!(s, 200, "after the engine came back: {ok}");
    assert!(!text(&ok).is_empty());
}

/// `deal serve` on the local engine (no `--engine`): its base URL.
fn start_local_deal() -> (Proc, String) {
    spawn_deal(&["serve", "--port", "0"])
}

/// deal is itself an engine a remote deal can steer: token-id prompts, top-N logprobs with
/// `return_tokens_as_token_ids`. A front deal over an engine deal gives the engine's greedy
/// text, and DeAL through it steers.
#[test]
fn deal_serves_as_the_engine_of_another_deal() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_engine, engine_url) = start_local_deal();
    let port: u16 = engine_url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("engine port");
    let (_front, base) = start_deal(port);
    // 1. the front's greedy is the engine's greedy (deal's kernels are batch-invariant)
    let mut same = 0;
    for p in &PROMPTS[..6] {
        let body = json!({"model": "deal", "prompt": p, "max_tokens": 24, "temperature": 0});
        let (s, ours) = completion(&base, body.clone());
        assert_eq!(s, 200, "{ours}");
        let (s, theirs) = completion(&engine_url, body);
        assert_eq!(s, 200, "{theirs}");
        let (a, b) = (text(&ours), text(&theirs));
        println!("{p:?}\n  front:  {a:?}\n  engine: {b:?}");
        // the first token always agrees; after it a near-tie can flip: the engine prefills the
        // front's pending token with the prompt, and deal's quantized kernels round a
        // many-position pass and a one-token step differently (docs/interfaces.md). Measured
        // under the default `compact` weights (2026-12-06): "Once upon a time, in a small
        // village, there lived a" continues " man" after one-token steps (as in f32) and
        // " family" after one many-position pass; with Q5_0 on its own kernel, "The recipe
        // calls for two eggs, but" continues " I'm" (as in f32 and under `requantize`) or
        // " I’ve", so the 2nd word can already differ.
        let head = |t: &str| t.split_whitespace().take(1).map(str::to_string).collect::<Vec<String>>();
        assert_eq!(head(&a), head(&b), "{p:?}");
        same += usize::from(a == b);
    }
    // measured 5 of 6 (2026-12-03; and under the default `compact` weights, 2026-12-06,
    // before and after the Q5_0 kernel)
    assert!(same >= 4, "the front's greedy matched the engine's on {same} of 6 prompts");
    // 2. the engine answers token-id prompts with id-named logprobs
    let (s, v) = completion(&engine_url, json!({"model": "deal", "prompt": [[2, 818, 5279]], "max_tokens": 2, "temperature": 0,
                                                 "logprobs": 3, "return_tokens_as_token_ids": true}));
    assert_eq!(s, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert!(lp["tokens"][0].as_str().is_some_and(|t| t.starts_with("token_id:")), "{lp}");
    assert_eq!(lp["top_logprobs"][0].as_object().map(|o| o.len()), Some(3), "{lp}");
    // 3. DeAL with default settings through the engine steers
    let sets = concept_sets();
    let (mut g, mut d) = (0.0, 0.0);
    for words in &sets[..8] {
        let common = json!({"model": "deal", "prompt": concept_prompt(words), "max_tokens": 16, "stop": ["\n"], "temperature": 0});
        let (s, greedy) = completion(&base, common.clone());
        assert_eq!(s, 200, "{greedy}");
        let mut steered = common;
        steered["alignment"] = json!({"weights": {"keywords": 1.0}, "heads": {"keywords": {"words": words}}});
        let (s, deal) = completion(&base, steered);
        assert_eq!(s, 200, "{deal}");
        g += hard(words, &text(&greedy));
        d += hard(words, &text(&deal));
    }
    println!("hard coverage through an engine deal: greedy {:.3}, deal {:.3}", g / 8.0, d / 8.0);
    assert!(d / 8.0 >= g / 8.0 + 0.25, "deal {d} vs greedy {g} over 8 sets");
}
