//! The OpenAI-compatible endpoint on the real default model: shapes, streaming, alignment,
//! errors, 32 concurrent requests, 429 on a full queue, and a dropped stream freeing the
//! engine.

mod common;

use std::time::Duration;

use common::{error_of, request, TestServer};
use deal_server::ServerConfig;
use serde_json::{json, Value};

fn chat_body(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": "deal", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn discovery_endpoints() {
    let s = TestServer::start(ServerConfig::default());
    let (st, body) = s.get("/v1/models");
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "gemma-3-270m-q4_k_m");
    assert_eq!(s.get("/v1/models/deal").0, 200);
    let (st, body) = s.get("/v1/models/nope");
    assert_eq!(st, 404);
    assert_eq!(error_of(&body)["code"], "model_not_found");

    let (st, body) = s.get("/v1/heads");
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    for h in ["keywords", "length", "sentiment", "relevance", "judge"] {
        assert!(names.contains(&h), "{names:?}");
    }
    let length = v["data"].as_array().unwrap().iter().find(|h| h["name"] == "length").unwrap();
    assert!(length["params"].as_array().unwrap().iter().any(|p| p["name"] == "target"));
    assert_eq!(length["score_range"], json!([0.0, 1.0]));
    assert!(v["controllers"].as_array().unwrap().iter().any(|c| c["name"] == "deal" && c["needs_reward"] == true));

    let (st, body) = s.get("/health");
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["status"].clone()), (200, json!("ok")));
    let (st, body) = s.get("/metrics");
    assert_eq!(st, 200);
    for m in ["deal_requests_total{route=\"/v1/models\",status=\"200\"} 1", "deal_queue_depth 0", "deal_request_duration_seconds_bucket"] {
        assert!(body.contains(m), "{m} missing from\n{body}");
    }
}

#[test]
fn chat_and_completion_shapes_and_determinism() {
    let s = TestServer::start(ServerConfig::default());
    let (st, v) = s.post_json("/v1/chat/completions", &chat_body("Name three colours.", json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gemma-3-270m-q4_k_m");
    let c = &v["choices"][0];
    assert_eq!((c["index"].clone(), c["message"]["role"].clone()), (json!(0), json!("assistant")));
    assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
    let u = &v["usage"];
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));
    assert!(u["completion_tokens"].as_u64().unwrap() <= 8);
    assert!(v.get("alignment").is_none(), "plain decoding has no alignment object");
    // greedy is deterministic
    let (_, v2) = s.post_json("/v1/chat/completions", &chat_body("Name three colours.", json!({})));
    assert_eq!(v["choices"][0]["message"]["content"], v2["choices"][0]["message"]["content"]);

    // completions: two prompts x n=2 sampled choices, seeded
    let body = json!({"model": "deal", "prompt": ["The sea is", "My dog"], "n": 2, "max_tokens": 6, "temperature": 0.9, "seed": 7});
    let (st, a) = s.post_json("/v1/completions", &body);
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["object"], "text_completion");
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(c["text"].is_string());
    }
    let (_, b) = s.post_json("/v1/completions", &body);
    assert_eq!(a["choices"], b["choices"], "same seed, same output");
    // max_completion_tokens is honoured like max_tokens
    let (_, v) = s.post_json(
        "/v1/completions",
        &json!({"model": "deal", "prompt": "One, two, three,", "max_completion_tokens": 3, "temperature": 0}),
    );
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // stop strings end the text before them
    let (_, v) = s.post_json(
        "/v1/completions",
        &json!({"model": "deal", "prompt": "One, two, three, four,", "max_tokens": 12, "temperature": 0, "stop": [","]}),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(!v["choices"][0]["text"].as_str().unwrap().contains(','), "{v}");
}

/// Parse an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ").map(str::to_string)).collect()
}

#[test]
fn streaming_gives_the_same_text_in_openai_chunks() {
    let s = TestServer::start(ServerConfig::default());
    let plain = chat_body("Write a sentence about the sea.", json!({"max_tokens": 12}));
    let (_, whole) = s.post_json("/v1/chat/completions", &plain);
    let streamed = chat_body("Write a sentence about the sea.", json!({"max_tokens": 12, "stream": true, "stream_options": {"include_usage": true}}));
    let (st, body) = s.post("/v1/chat/completions", streamed.to_string());
    assert_eq!(st, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut finish = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        if let Some(ch) = c["choices"].as_array().unwrap().first() {
            text.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            if !ch["finish_reason"].is_null() {
                finish = Some(ch["finish_reason"].clone());
            }
        }
    }
    assert!(chunks.len() >= 4, "the text arrives in several chunks: {}", chunks.len());
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(finish, Some(whole["choices"][0]["finish_reason"].clone()));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"], whole["usage"]);
}

#[test]
fn alignment_breakdown_reflects_the_weights() {
    let s = TestServer::start(ServerConfig::default());
    let prompt = "Write a sentence using the words: dog, park, ball.";
    let run = |weights: Value| {
        let body = chat_body(
            prompt,
            json!({"max_tokens": 16, "alignment": {
                "controller": "deal", "weights": weights,
                "heads": {"keywords": {"words": ["dog", "park", "ball"]}, "length": {"target": 12}},
                "params": {"k": 3, "l": 2, "beams": 2, "lambda": 4.0}}}),
        );
        let (st, v) = s.post_json("/v1/chat/completions", &body);
        assert_eq!(st, 200, "{v}");
        v
    };
    let a = run(json!({"keywords": 1.0}));
    let b = run(json!({"keywords": 1.0, "length": 0.5}));
    let c = run(json!({"keywords": 0.0, "length": 2.0}));
    for v in [&a, &b, &c] {
        let al = &v["alignment"];
        assert_eq!(al["controller"], "deal");
        assert!(al["stats"]["forward_passes"].as_u64().unwrap() > 0);
        assert!(al["stats"]["rows_evaluated"].as_u64().unwrap() > al["stats"]["forward_passes"].as_u64().unwrap());
        let heads = al["heads"].as_array().unwrap();
        let mut sum = 0.0;
        for h in heads {
            let (w, n, contrib) = (h["weight"].as_f64().unwrap(), h["normalized"].as_f64().unwrap(), h["contribution"].as_f64().unwrap());
            assert!((contrib - w * n).abs() < 1e-6, "{h}");
            sum += contrib;
        }
        assert!((sum - al["total"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(v["choices"][0]["alignment"], *al);
    }
    let weight = |v: &Value, head: &str| {
        v["alignment"]["heads"].as_array().unwrap().iter().find(|h| h["head"] == head).map(|h| h["weight"].as_f64().unwrap())
    };
    assert_eq!(weight(&a, "keywords"), Some(1.0));
    assert_eq!(weight(&b, "length"), Some(0.5));
    assert_eq!(weight(&c, "length"), Some(2.0));
    assert_eq!(weight(&c, "keywords"), Some(0.0));
    // the keyword weight steers: with it, at least as many of the words as without
    let coverage = |v: &Value| {
        v["alignment"]["heads"].as_array().unwrap().iter().find(|h| h["head"] == "keywords").unwrap()["normalized"].as_f64().unwrap()
    };
    assert!(coverage(&a) >= coverage(&c), "keywords weight 1: {}, weight 0: {}", coverage(&a), coverage(&c));
}

#[test]
fn invalid_requests_get_openai_errors() {
    let key = "sekrit";
    let s = TestServer::start(ServerConfig { api_key: Some(key.into()), max_body_bytes: 64 * 1024, ..Default::default() });
    let url = format!("{}/v1/chat/completions", s.base);
    let post = |body: &Value| request(&url, Some(body.to_string().as_bytes()), Some(key));
    let ok = chat_body("Hi", json!({"max_tokens": 2}));

    let (st, body) = request(&url, Some(ok.to_string().as_bytes()), None);
    assert_eq!(st, 401);
    assert_eq!(error_of(&body)["type"], "authentication_error");
    assert_eq!(request(&url, Some(ok.to_string().as_bytes()), Some("wrong")).0, 401);
    assert_eq!(post(&ok).0, 200);
    assert_eq!(s.get("/health").0, 200, "health needs no key");

    let cases: Vec<(Value, u16, &str)> = vec![
        (chat_body("Hi", json!({"alignment": {"weights": {"nonsense": 1}}})), 400, "alignment.weights"),
        (chat_body("Hi", json!({"alignment": {"controller": "magic", "weights": {"length": 1}}})), 400, "alignment.controller"),
        (chat_body("Hi", json!({"alignment": {"weights": {"length": 1}, "heads": {"length": {"target": "long"}}}})), 400, "alignment.heads.length"),
        (chat_body("Hi", json!({"alignment": {"controller": "deal"}})), 400, "alignment.weights"),
        (chat_body("Hi", json!({"alignment": {"weights": {"sentiment": 1}, "params": {"k": 0}}})), 400, "alignment.params.k"),
        (chat_body("Hi", json!({"model": "gpt-4"})), 404, "model"),
        (chat_body("Hi", json!({"max_tokens": 1_000_000})), 400, "max_tokens"),
        (chat_body("Hi", json!({"max_tokens": 0})), 400, "max_tokens"),
        (chat_body("Hi", json!({"temperature": 3})), 400, "temperature"),
        (chat_body("Hi", json!({"n": 0})), 400, "n"),
        (chat_body("Hi", json!({"logprobs": true, "top_logprobs": 21})), 400, "top_logprobs"),
        (chat_body("Hi", json!({"logit_bias": {"99999999": 5}})), 400, "logit_bias"),
        (chat_body("Hi", json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})), 400, "response_format.json_schema.schema"),
        (chat_body("Hi", json!({"tools": [{"type": "function"}]})), 400, "tools"),
        (chat_body("Hi", json!({"stop": [1, 2]})), 400, "stop"),
        (json!({"model": "deal", "messages": []}), 400, "messages"),
        (json!({"model": "deal", "messages": [{"role": "tool", "content": "x"}]}), 400, "messages[0].role"),
        (json!({"messages": [{"role": "user", "content": "x"}]}), 400, "model"),
    ];
    for (body, status, param) in cases {
        let (st, text) = post(&body);
        assert_eq!(st, status, "{body} -> {text}");
        assert_eq!(error_of(&text)["param"], param, "{body} -> {text}");
    }
    // max_tokens beyond the context names the limit
    let (_, text) = post(&chat_body("Hi", json!({"max_tokens": 1_000_000})));
    assert_eq!(error_of(&text)["code"], "context_length_exceeded");
    // a prompt longer than the context (32k tokens) -> 400, below the body limit of a bigger server
    let big = TestServer::start(ServerConfig { max_body_bytes: 1 << 20, ..Default::default() });
    let long = "word ".repeat(40_000);
    let (st, text) = big.post("/v1/completions", json!({"model": "deal", "prompt": long, "max_tokens": 1}).to_string());
    assert_eq!(st, 400, "{text}");
    assert_eq!(error_of(&text)["code"], "context_length_exceeded");
    // body over the limit -> 413
    let (st, text) = request(&url, Some(json!({"model": "deal", "prompt": "x".repeat(100_000)}).to_string().as_bytes()), Some(key));
    assert_eq!(st, 413);
    error_of(&text);
    // not JSON -> 400
    let (st, text) = request(&url, Some(b"{not json"), Some(key));
    assert_eq!(st, 400);
    error_of(&text);
    assert_eq!(s.get("/nowhere").0, 404);
}

#[test]
fn thirty_two_concurrent_requests_all_succeed() {
    let s = TestServer::start(ServerConfig { parallel: 4, queue: 64, ..Default::default() });
    let url = format!("{}/v1/chat/completions", s.base);
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = chat_body(&format!("Tell me a fact about the number {i}."), json!({"max_tokens": 4}));
                request(&url, Some(body.to_string().as_bytes()), None)
            })
        })
        .collect();
    for h in handles {
        let (st, body) = h.join().unwrap();
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }
    assert!(s.metric("deal_searches_total") >= 32.0);
}

#[test]
fn full_queue_answers_429_and_a_dropped_stream_frees_the_engine() {
    // one worker, one queue slot
    let s = TestServer::start(ServerConfig { parallel: 1, queue: 1, ..Default::default() });
    // A: a long search, streamed; holds the only worker
    let long = json!({"model": "deal", "prompt": "Once upon a time", "max_tokens": 2000, "stream": true,
        "alignment": {"weights": {"sentiment": 1}, "params": {"k": 4, "l": 4, "beams": 2}}});
    let a = s.open_stream("/v1/completions", &long);
    // B: waits in the queue
    let url = format!("{}/v1/completions", s.base);
    let b = std::thread::spawn(move || {
        request(&url, Some(json!({"model": "deal", "prompt": "Hello", "max_tokens": 3, "temperature": 0}).to_string().as_bytes()), None)
    });
    let mut waited = 0;
    while s.metric("deal_queue_depth") < 1.0 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 2400, "B never reached the queue");
    }
    // C: no room -> 429 with Retry-After and an OpenAI error body
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(&format!("{}/v1/completions", s.base))
        .header("Content-Type", "application/json")
        .send(json!({"model": "deal", "prompt": "Hi", "max_tokens": 1}).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body = resp.body_mut().read_to_string().unwrap();
    assert_eq!(error_of(&body)["type"], "rate_limit_error");

    // drop A: its search is cancelled within a step, and B (queued behind it) is served
    drop(a);
    let (st, body) = b.join().unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(s.metric("deal_cancelled_total") >= 1.0);
    let generated = s.metric("deal_completion_tokens_total");
    assert!(generated < 1000.0, "the dropped search stopped early ({generated} tokens committed in all)");
    assert_eq!(s.get("/health").0, 200);
}

/// A head that only a program registers (not built in): the share of words starting with `z`.
struct Zeds;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl deal_heads::RewardHead for Zeds {
    const NAME: &'static str = "zeds";
    const DESCRIPTION: &'static str = "share of words starting with z";
    const PARAMS: &'static [deal_heads::ParamInfo] = &[];
    const EXAMPLE: &'static str = "{}";
    type Params = NoParams;

    fn build(_p: NoParams, _ctx: &std::sync::Arc<deal_heads::HeadContext>) -> deal_heads::Result<Self> {
        Ok(Zeds)
    }

    fn scale(&self) -> deal_heads::Scale {
        deal_heads::Scale::UNIT
    }

    fn score(&self, cands: &[deal_heads::Candidate]) -> deal_heads::Result<Vec<f32>> {
        Ok(cands
            .iter()
            .map(|c| {
                let w: Vec<&str> = c.response.split_whitespace().collect();
                w.iter().filter(|x| x.to_lowercase().starts_with('z')).count() as f32 / w.len().max(1) as f32
            })
            .collect())
    }
}

#[test]
fn registries_are_passed_in_so_a_custom_head_is_served() {
    let mut heads = deal_heads::Registry::with_builtin();
    heads.register::<Zeds>();
    let e = common::engine();
    let driver = deal_driver::Driver::new(
        e.clone(),
        deal_driver::Registries::new(heads, deal_controllers::Registry::builtin()),
        deal_heads::HeadContext::with_policy(e),
    );
    let s = TestServer::start_with(driver, ServerConfig::default());
    let (st, body) = s.get("/v1/heads");
    assert_eq!(st, 200);
    assert!(body.contains("\"zeds\""), "the custom head is listed: {body}");
    let body = chat_body("Name an animal.", json!({"max_tokens": 6, "alignment": {"controller": "deal", "weights": {"zeds": 1.0}, "params": {"k": 3, "l": 2}}}));
    let (st, v) = s.post_json("/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["alignment"]["heads"][0]["head"], "zeds", "{v}");
    // the built-in server, with the built-in registries, does not know it
    let plain = TestServer::start(ServerConfig::default());
    let (st, v) = plain.post_json("/v1/chat/completions", &body);
    assert_eq!(st, 400, "{v}");
}
