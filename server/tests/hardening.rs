//! A server a hostile client can reach: what a request's head params may touch (URLs, files),
//! bounded work per request (limits, memory admission, deadlines, cancellation), slow and idle
//! connections, browsers (Content-Type, CORS), keys on `/metrics`, and a burst of 300 clients.
//! Each test talks HTTP to an in-process server on the real default model.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{error_of, request, TestServer};
use deal_server::ServerConfig;
use serde_json::{json, Value};

fn chat(extra: Value) -> Value {
    let mut b = json!({"model": "deal", "messages": [{"role": "user", "content": "Write about the sea."}], "max_tokens": 2, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// A local HTTP service that records the path of every request it gets: `/score` answers
/// scores, `/score/broken` a 500 with a secret page, `/redirect` a 302 to `/admin`, `/admin`
/// a secret page.
struct Service {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
}

const SECRET: &str = "secret-internal-admin-page";

impl Service {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((path, body)) = read_request(&mut conn) else { continue };
                seen.lock().unwrap().push(path.clone());
                let (status, location, reply) = match path.as_str() {
                    "/score" => {
                        let n = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["responses"].as_array().map(Vec::len)).unwrap_or(0);
                        ("200 OK", None, json!({"scores": vec![0.5; n]}).to_string())
                    }
                    "/redirect" => ("302 Found", Some("/admin"), String::new()),
                    "/score/broken" => ("500 Internal Server Error", None, SECRET.to_string()),
                    _ => ("200 OK", None, SECRET.to_string()),
                };
                let loc = location.map(|l| format!("Location: {l}\r\n")).unwrap_or_default();
                let _ = write!(conn, "HTTP/1.1 {status}\r\n{loc}Content-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
            }
        });
        Self { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// Read one request: its path and body.
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((path, buf[head_end..].to_vec()))
}

/// Send raw bytes, read the answer until the server closes (or 10 s pass).
fn raw(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn http_head(url: &str) -> Value {
    chat(json!({"alignment": {"controller": "best_of_n", "weights": {"http": 1}, "heads": {"http": {"url": url, "timeout_ms": 2000}}, "params": {"n": 2}}, "temperature": 1}))
}

#[test]
fn head_params_reach_only_what_the_operator_allowed() {
    let svc = Service::start();

    // by default a server's clients name no URL and no file
    let s = TestServer::start(ServerConfig::default());
    let (st, v) = s.post_json("/v1/chat/completions", &http_head(&svc.url("/score")));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--allow-http-head"), "{v}");
    let judge = |path: &str| chat(json!({"alignment": {"weights": {"judge": 1}, "heads": {"judge": {"rubric": "Is it polite?", "model": path}}}}));
    let mut messages = Vec::new();
    for path in ["/etc/passwd", "/nonexistent/a.gguf", "/etc", "../../etc/passwd"] {
        let (st, v) = s.post_json("/v1/chat/completions", &judge(path));
        assert_eq!(st, 400, "{path}: {v}");
        let m = v["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains("not available"), "{path}: {m}");
        assert!(!m.contains("magic") && !m.contains("root:") && !m.contains("does not exist") && !m.contains("No such"), "{path}: {m}");
        messages.push(m.replace(path, "PATH"));
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "a file that exists reads like one that does not: {messages:?}");
    let (st, v) = s.post_json("/v1/chat/completions", &chat(json!({"alignment": {"weights": {"probe": 1}, "heads": {"probe": {"path": "/etc/passwd"}}}})));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not available"), "{v}");
    drop(s);
    assert!(svc.hits().is_empty(), "the server reached out: {:?}", svc.hits());

    // an operator's prefixes: under them only, no redirects, no upstream bodies
    let mut access = deal_heads::Access::server();
    access.allow_http_prefix(&svc.url("/score")).unwrap();
    access.allow_http_prefix(&svc.url("/redirect")).unwrap();
    let s = TestServer::start(ServerConfig { access, ..Default::default() });
    let (st, v) = s.post_json("/v1/chat/completions", &http_head(&svc.url("/score")));
    assert_eq!(st, 200, "{v}");
    assert!(v["alignment"]["breakdown"].is_object() || v["alignment"].is_object(), "{v}");
    for bad in ["/admin", "/scoreboard", "/score/../admin", "/score/%2e%2e/admin", "/redirect/../admin"] {
        let (st, v) = s.post_json("/v1/chat/completions", &http_head(&svc.url(bad)));
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("not an endpoint this server allows"), "{v}");
    }
    let other_host = format!("http://localhost:{}/score", svc.addr.port());
    assert_eq!(s.post_json("/v1/chat/completions", &http_head(&other_host)).0, 400);
    let (st, v) = s.post_json("/v1/chat/completions", &http_head(&svc.url("/redirect")));
    assert_eq!(st, 502, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("redirect"), "{v}");
    let (st, v) = s.post_json("/v1/chat/completions", &http_head(&svc.url("/score/broken")));
    assert_eq!(st, 502, "{v}");
    assert!(!v.to_string().contains(SECRET), "the upstream page leaked: {v}");
    let hits = svc.hits();
    assert!(hits.iter().all(|p| p == "/score" || p == "/redirect" || p == "/score/broken"), "{hits:?}");
    assert!(hits.iter().any(|p| p == "/score"), "{hits:?}");
}

#[test]
fn work_per_request_is_bounded() {
    let s = TestServer::start(ServerConfig { max_kv_bytes: Some(256 << 20), ..Default::default() });
    // the issue's request: a lookahead of 1e11 held a worker forever; now it is refused
    let deal = |params: Value, max_tokens: u64| {
        chat(json!({"max_tokens": max_tokens, "alignment": {"controller": "deal", "weights": {"sentiment": 1}, "params": params}}))
    };
    let (st, v) = s.post_json("/v1/chat/completions", &deal(json!({"l": 100_000_000_000u64}), 1));
    assert_eq!(st, 400, "{v}");
    assert!(error_of(&v.to_string())["message"].as_str().unwrap().contains("lookahead"), "{v}");
    assert_eq!(s.post_json("/v1/chat/completions", &deal(json!({"l": 65}), 1)).0, 400);
    let (st, v) = s.post_json("/v1/chat/completions", &chat(json!({"max_tokens": 2, "alignment": {"controller": "blockwise", "weights": {"sentiment": 1}, "params": {"block_len": 100000}}})));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("at most"), "{v}");

    // memory admission: rows x tokens of KV over the server's limit is a 400 naming the field
    let (st, v) = s.post_json("/v1/chat/completions", &deal(json!({"k": 16, "beams": 4}), 2000));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");
    assert!(v["error"]["param"].as_str().unwrap().starts_with("alignment.params."), "{v}");
    let (st, v) = s.post_json("/v1/chat/completions", &chat(json!({"max_tokens": 2000, "temperature": 1, "alignment": {"controller": "best_of_n", "weights": {"sentiment": 1}, "params": {"n": 32}}})));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");

    // the largest allowed lookahead, dropped by its client, frees the worker at once
    let stream = s.open_stream("/v1/chat/completions", &json!({
        "model": "deal", "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 200, "temperature": 0, "stream": true,
        "alignment": {"controller": "deal", "weights": {"sentiment": 1}, "params": {"l": 64, "k": 8}}
    }));
    drop(stream);
    let freed = s.wait_idle(Duration::from_secs(5), "worker still busy after the client left");
    eprintln!("worker freed {freed:?} after the client dropped a lookahead-64 stream");
    assert_eq!(s.post_json("/v1/completions", &json!({"model": "deal", "prompt": "Hi", "max_tokens": 2})).0, 200);
}

#[test]
fn requests_past_the_deadline_get_504_and_free_the_worker() {
    let s = TestServer::start(ServerConfig { request_timeout: Duration::from_secs(2), ..Default::default() });
    let long = |stream: bool| {
        json!({"model": "deal", "prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": stream,
               "alignment": {"controller": "deal", "weights": {"sentiment": 1}, "params": {"l": 16, "k": 4}}})
    };
    let t = Instant::now();
    let (st, v) = s.post_json("/v1/completions", &long(false));
    assert_eq!(st, 504, "{v}");
    assert_eq!(v["error"]["type"], "timeout_error", "{v}");
    assert!(t.elapsed() < Duration::from_secs(6), "answered after {:?}", t.elapsed());

    let (st, text) = s.post("/v1/completions", long(true).to_string());
    assert_eq!(st, 200, "{text}");
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let err: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "request_timeout", "{text}");

    let t = Instant::now();
    while serde_json::from_str::<Value>(&s.get("/health").1).unwrap()["active"] != 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "the timed-out search kept running");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.metric("deal_timed_out_total") >= 2.0);
}

#[test]
fn slow_and_idle_connections_are_cut_and_the_connection_limit_answers_503() {
    let s = TestServer::start(ServerConfig { header_timeout: Duration::from_secs(1), max_connections: 6, ..Default::default() });
    // slowloris: four clients sending their headers a byte every 200 ms
    let loris: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let t = Instant::now();
                for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
                    if c.write_all(&[*b]).is_err() {
                        break;
                    }
                    let mut one = [0u8; 512];
                    match c.read(&mut one) {
                        Ok(0) => break, // closed
                        Ok(_) => break, // answered (408) and closed next
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    if t.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                }
                t.elapsed()
            })
        })
        .collect();
    // meanwhile others are served
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.get("/health").0, 200);
    for h in loris {
        let held = h.join().unwrap();
        assert!(held < Duration::from_secs(4), "a byte-a-second client held its connection {held:?}");
    }

    // six idle connections fill the server: the seventh gets a 503, then they are cut
    let idle: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(s.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let busy = raw(s.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.contains("Retry-After") && busy.contains("too many open connections"), "{busy}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.get("/health").0, 200, "idle connections were not cut");
    drop(idle);
}

#[test]
fn browsers_cannot_post_forms_and_cors_is_opt_in() {
    let s = TestServer::start(ServerConfig { cors_origins: vec!["http://app.example".into()], ..Default::default() });
    let body = r#"{"model":"deal","prompt":"Hi","max_tokens":1}"#;
    for ct in ["Content-Type: text/plain\r\n", "Content-Type: application/x-www-form-urlencoded\r\n", ""] {
        let resp = raw(
            s.addr,
            &format!("POST /v1/completions HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        );
        assert!(resp.starts_with("HTTP/1.1 415"), "{ct:?}: {resp}");
        assert!(resp.contains("application/json"), "{resp}");
    }
    let ok = raw(
        s.addr,
        &format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("x-request-id: req-"), "{ok}");

    let preflight = |origin: &str| {
        raw(
            s.addr,
            &format!("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"),
        )
        .to_ascii_lowercase()
    };
    let allowed = preflight("http://app.example");
    assert!(allowed.starts_with("http/1.1 204") && allowed.contains("access-control-allow-origin: http://app.example"), "{allowed}");
    let other = preflight("http://evil.example");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
}

#[test]
fn metrics_need_the_key_unless_made_public() {
    let s = TestServer::start(ServerConfig { api_key: Some("k3y".into()), ..Default::default() });
    let url = format!("{}/metrics", s.base);
    assert_eq!(request(&url, None, None).0, 401);
    assert_eq!(request(&url, None, Some("k3x")).0, 401);
    assert_eq!(request(&url, None, Some("k3y")).0, 200);
    assert_eq!(request(&format!("{}/health", s.base), None, None).0, 200, "health stays open for load balancers");
    drop(s);
    let s = TestServer::start(ServerConfig { api_key: Some("k3y".into()), public_metrics: true, ..Default::default() });
    assert_eq!(request(&format!("{}/metrics", s.base), None, None).0, 200);
    assert_eq!(request(&format!("{}/v1/models", s.base), None, None).0, 401);
}

/// Resident memory of this process, bytes.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kb << 10
}

/// One client: plain (i % 3 == 0), streamed to the end (1) or dropped after the first
/// event (2). Returns the status; a connection error panics the thread.
fn load_client(base: &str, i: usize) -> (u16, String) {
    let stream = i % 3 != 0;
    let body = json!({"model": "deal", "prompt": format!("Count {i}:"), "max_tokens": 3, "temperature": 0, "stream": stream}).to_string();
    if !stream {
        return request(&format!("{base}/v1/completions"), Some(body.as_bytes()), None);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(300))).build().into();
    let mut resp = agent.post(&format!("{base}/v1/completions")).header("Content-Type", "application/json").send(body.as_bytes()).expect("connection error");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, resp.body_mut().read_to_string().unwrap_or_default());
    }
    let mut reader = std::io::BufReader::new(resp.body_mut().as_reader());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).expect("stream cut");
        assert!(n > 0, "stream ended without [DONE]: {seen}");
        seen.push_str(&line);
        if line.starts_with("data: ") && i % 3 == 2 {
            return (200, seen); // the client leaves
        }
        if line.trim() == "data: [DONE]" {
            assert!(!seen.contains("\"error\""), "{seen}");
            return (200, seen);
        }
    }
}

#[test]
fn three_hundred_clients_at_once_get_answers_or_429s() {
    let s = TestServer::start(ServerConfig { parallel: 2, queue: 16, ..Default::default() });
    let base = s.base.clone();
    // warm (the first request pays one-off allocations), then measure what the burst adds
    assert_eq!(load_client(&base, 1).0, 200);
    let rss0 = rss();
    let t = Instant::now();
    let clients: Vec<_> = (0..300)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || load_client(&base, i))
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients {
        let (st, text) = c.join().expect("a client saw a connection error or a broken stream");
        if st != 200 {
            assert_eq!(st, 429, "{text}");
            error_of(&text);
        }
        *statuses.entry(st).or_insert(0) += 1;
    }
    let grown = rss().saturating_sub(rss0);
    eprintln!("300 clients (plain, streamed, dropped) in {:?}: {statuses:?}; RSS grew {} MB", t.elapsed(), grown >> 20);
    assert!(statuses.get(&200).copied().unwrap_or(0) >= 18, "{statuses:?}");
    assert!(grown < 512 << 20, "the burst grew memory by {} MB", grown >> 20);
    s.wait_idle(Duration::from_secs(5), "work left after the burst");
    assert_eq!(load_client(&base, 0).0, 200);
}

#[test]
fn a_client_that_leaves_during_a_long_prefill_frees_its_worker() {
    let s = TestServer::start(ServerConfig::default());
    // about 7000 prompt tokens: tens of seconds of prefill here, 256 tokens per chunk
    let long = "The cat sat on the mat. ".repeat(1000);
    let stream = s.open_stream("/v1/chat/completions", &json!({
        "model": "deal", "messages": [{"role": "user", "content": long}], "max_tokens": 4, "temperature": 0, "stream": true,
    }));
    std::thread::sleep(Duration::from_millis(2000));
    let active = || serde_json::from_str::<Value>(&s.get("/health").1).unwrap()["active"].as_u64().unwrap();
    assert_eq!(active(), 1, "the prefill should still be running");
    drop(stream);
    let t = Instant::now();
    while active() != 0 {
        assert!(t.elapsed() < Duration::from_secs(4), "the prefill kept its worker {:?} after the client left", t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("worker freed {:?} after the client left during a long prefill", t.elapsed());
    assert_eq!(s.post_json("/v1/completions", &json!({"model": "deal", "prompt": "Hi", "max_tokens": 2})).0, 200);
}
