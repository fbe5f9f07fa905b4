//! Faults stay with the request that has them: a forward pass that panics while merged with
//! other requests' rows fails only the request that caused it (the scheduler undoes the pass
//! and reruns each call alone; the others get exactly their solo text), a reward head that
//! panics fails only its request with a 500 carrying a request id, and the server, its
//! workers and its head caches keep working. Faults are injected with the engine's test-only
//! `fault-injection` feature and a head that panics on a marker word.

mod common;

use std::time::Duration;

use common::{error_of, request, TestServer};
use deal_server::ServerConfig;
use serde_json::{json, Value};

/// A head that panics when a candidate contains "KABOOM" in its prompt, else scores 0.5.
struct Boom;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl deal_heads::RewardHead for Boom {
    const NAME: &'static str = "boom";
    const DESCRIPTION: &'static str = "panics on prompts that say KABOOM (a fault for tests)";
    const PARAMS: &'static [deal_heads::ParamInfo] = &[];
    const EXAMPLE: &'static str = "{}";
    type Params = NoParams;

    fn build(_p: NoParams, _ctx: &std::sync::Arc<deal_heads::HeadContext>) -> deal_heads::Result<Self> {
        Ok(Boom)
    }

    fn scale(&self) -> deal_heads::Scale {
        deal_heads::Scale::UNIT
    }

    fn score(&self, cands: &[deal_heads::Candidate]) -> deal_heads::Result<Vec<f32>> {
        if cands.iter().any(|c| c.prompt.contains("KABOOM")) {
            panic!("the boom head was asked to fail");
        }
        Ok(vec![0.5; cands.len()])
    }
}

/// A head whose model "loads" through [`deal_heads::HeadContext::shared`] like the judge's
/// and MiniLM's do: the load takes `load_ms`, and panics the first time for a `key` whose
/// `panic_first` is set.
struct Loader {
    ctx: std::sync::Arc<deal_heads::HeadContext>,
    p: LoaderParams,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoaderParams {
    key: String,
    #[serde(default)]
    panic_first: bool,
    #[serde(default)]
    load_ms: u64,
}

/// Keys whose load has panicked once.
static PANICKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl deal_heads::RewardHead for Loader {
    const NAME: &'static str = "loader";
    const DESCRIPTION: &'static str = "loads a fake model through the head context (a fault for tests)";
    const PARAMS: &'static [deal_heads::ParamInfo] = &[
        deal_heads::ParamInfo { name: "key", ty: "string", default: "required", doc: "which model" },
        deal_heads::ParamInfo { name: "panic_first", ty: "bool", default: "false", doc: "the first load panics" },
        deal_heads::ParamInfo { name: "load_ms", ty: "number", default: "0", doc: "how long a load takes" },
    ];
    const EXAMPLE: &'static str = "{\"key\": \"m\"}";
    type Params = LoaderParams;

    fn build(p: LoaderParams, ctx: &std::sync::Arc<deal_heads::HeadContext>) -> deal_heads::Result<Self> {
        Ok(Loader { ctx: ctx.clone(), p })
    }

    fn scale(&self) -> deal_heads::Scale {
        deal_heads::Scale::UNIT
    }

    fn score(&self, cands: &[deal_heads::Candidate]) -> deal_heads::Result<Vec<f32>> {
        let model = self.ctx.shared::<f32>(&self.p.key, || {
            std::thread::sleep(Duration::from_millis(self.p.load_ms));
            let mut seen = PANICKED.lock().unwrap_or_else(|p| p.into_inner());
            if self.p.panic_first && !seen.contains(&self.p.key) {
                seen.push(self.p.key.clone());
                drop(seen);
                panic!("the loader head's model failed to load");
            }
            Ok(0.25)
        })?;
        Ok(vec![*model; cands.len()])
    }
}

fn server() -> TestServer {
    let mut heads = deal_heads::Registry::with_builtin();
    heads.register::<Boom>();
    heads.register::<Loader>();
    let e = common::engine();
    let driver = deal_driver::Driver::new(
        e.clone(),
        deal_driver::Registries::new(heads, deal_controllers::Registry::builtin()),
        deal_heads::HeadContext::with_policy(e),
    );
    TestServer::start_with(driver, ServerConfig { parallel: 4, ..Default::default() })
}

fn completion(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": "deal", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn a_panicking_pass_or_head_fails_only_its_own_request() {
    let s = server();
    let url = format!("{}/v1/completions", s.base);
    let good = ["The river flows", "My grandmother used to say", "In the morning the market"];
    // each good prompt's text alone, for reference (the engine is batch-invariant: merged
    // passes give bit-identical logits, so these must match under load too)
    let solo: Vec<String> = good
        .iter()
        .map(|p| {
            let (st, v) = s.post_json("/v1/completions", &completion(p, 24));
            assert_eq!(st, 200, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();

    // arm a token that only the faulty prompt holds
    let e = common::engine();
    let marker = e.tokenizer().encode(" Zanzibarian", false).unwrap();
    let poison = *marker.last().unwrap();
    for p in good {
        assert!(!e.tokenizer().encode(p, true).unwrap().contains(&poison));
    }
    deal_engine::fault::arm(poison);

    let stats0 = e.scheduler_stats();
    let goods: Vec<_> = good
        .iter()
        .map(|p| {
            let (url, body) = (url.clone(), completion(p, 24).to_string());
            std::thread::spawn(move || request(&url, Some(body.as_bytes()), None))
        })
        .collect();
    // the faulty requests arrive while the good ones decode, so their prefills share passes
    let mut bad = Vec::new();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let body = completion(&format!("Tell me about the{} Zanzibarian coast", " very".repeat(i)), 4).to_string();
        bad.push(request(&url, Some(body.as_bytes()), None));
    }
    for (st, text) in &bad {
        assert_eq!(*st, 500, "{text}");
        let err = error_of(text);
        assert_eq!(err["type"], "server_error", "{text}");
        assert!(err["message"].as_str().unwrap().contains("request id req-"), "{text}");
    }
    for (i, h) in goods.into_iter().enumerate() {
        let (st, text) = h.join().unwrap();
        assert_eq!(st, 200, "a good request failed with the faulty one: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["choices"][0]["text"].as_str().unwrap(), solo[i], "a good request's text changed when a merged pass failed");
    }
    deal_engine::fault::disarm();
    let stats = e.scheduler_stats();
    let (passes, jobs) = (stats.passes - stats0.passes, stats.jobs - stats0.jobs);
    eprintln!("{jobs} forward calls in {passes} passes while the faults were injected");
    assert!(jobs > passes, "no pass was shared ({jobs} calls, {passes} passes): the test did not merge requests");

    // a panicking head: 500 with a request id, alone; the head still works for others
    let steer = |prompt: &str| {
        json!({"model": "deal", "prompt": prompt, "max_tokens": 4, "temperature": 0,
               "alignment": {"controller": "deal", "weights": {"boom": 1}, "params": {"k": 2, "l": 2}}})
    };
    let (st, v) = s.post_json("/v1/completions", &steer("KABOOM, said the"));
    assert_eq!(st, 500, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("request id"), "{v}");
    let (st, v) = s.post_json("/v1/completions", &steer("The quiet lake"));
    assert_eq!(st, 200, "{v}");

    // nothing stuck (a worker counts itself free just after its answer is sent), and the
    // faulty prompt works once the fault is gone
    s.wait_idle(Duration::from_secs(2), "a worker stayed busy after the faults");
    let (st, v) = s.post_json("/v1/completions", &completion("Tell me about the Zanzibarian coast", 4));
    assert_eq!(st, 200, "{v}");
}

fn loading(key: &str, panic_first: bool, load_ms: u64) -> Value {
    json!({"model": "deal", "prompt": "The old lighthouse", "max_tokens": 3, "temperature": 0,
           "alignment": {"controller": "deal", "weights": {"loader": 1},
                         "heads": {"loader": {"key": key, "panic_first": panic_first, "load_ms": load_ms}},
                         "params": {"k": 2, "l": 1}}})
}

#[test]
fn a_head_model_that_panics_while_loading_fails_one_request_and_loads_again() {
    let s = server();
    let (st, v) = s.post_json("/v1/completions", &loading("flaky", true, 0));
    assert_eq!(st, 500, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("failed to load") && msg.contains("request id"), "{v}");
    // the head is not poisoned: the next request loads the model and scores with it
    let (st, v) = s.post_json("/v1/completions", &loading("flaky", true, 0));
    assert_eq!(st, 200, "{v}");
    let head = &v["choices"][0]["alignment"]["heads"][0];
    assert_eq!((head["head"].as_str(), head["raw"].as_f64()), (Some("loader"), Some(0.25)), "{v}");
    // the worker counts itself free just after its answer is sent
    s.wait_idle(Duration::from_secs(2), "a worker stayed busy");
}

#[test]
fn a_request_waiting_for_a_head_model_to_load_is_freed_when_its_client_leaves() {
    let s = server();
    let url = format!("{}/v1/completions", s.base);
    // the first request loads the model for 8 s
    let body = loading("slow", false, 8000).to_string();
    let first = std::thread::spawn(move || request(&url, Some(body.as_bytes()), None));
    std::thread::sleep(Duration::from_millis(1500));
    // a second one waits for that load; its client gives up after a second
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    let body = loading("slow", false, 8000).to_string();
    use std::io::Write;
    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let active = |s: &TestServer| serde_json::from_str::<Value>(&s.get("/health").1).unwrap()["active"].as_u64().unwrap();
    assert_eq!(active(&s), 2, "both requests should be running");
    drop(c);
    let t = std::time::Instant::now();
    while active(&s) > 1 {
        assert!(t.elapsed() < Duration::from_secs(3), "the waiting request kept its worker {:?} after its client left", t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("waiting request freed {:?} after its client left", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3));
    let (st, text) = first.join().unwrap();
    assert_eq!(st, 200, "{text}");
}
