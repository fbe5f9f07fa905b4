//! Test harness: the default model loaded once per test binary, servers started in-process on
//! free ports, and a blocking HTTP client that returns any status as a value.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deal_engine::{Engine, EngineOptions};
use deal_server::{Server, ServerConfig};
use serde_json::Value;

pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = deal_engine::setup::ensure_default_model().expect("default model");
        Arc::new(Engine::load(path, &EngineOptions::default()).expect("load"))
    })
    .clone()
}

/// A server on its own tokio runtime, stopped when dropped.
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    server: Option<Server>,
}

impl TestServer {
    pub fn start(cfg: ServerConfig) -> Self {
        let e = engine();
        let driver = deal_driver::Driver::new(e.clone(), deal_driver::Registries::builtin(), deal_heads::HeadContext::with_policy(e));
        Self::start_with(driver, cfg)
    }

    /// A server over any driver (another backend, other registries).
    pub fn start_with(driver: deal_driver::Driver, cfg: ServerConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start(driver, ServerConfig { port: 0, ..cfg })).unwrap();
        let addr = server.addr;
        Self { base: format!("http://{addr}"), addr, rt: Some(rt), server: Some(server) }
    }

    pub fn post(&self, path: &str, body: impl AsRef<[u8]>) -> (u16, String) {
        request(&format!("{}{path}", self.base), Some(body.as_ref()), None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, text) = self.post(path, body.to_string());
        (s, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        request(&format!("{}{path}", self.base), None, None)
    }

    /// Poll `/health` until no request is active or queued; how long that took. Panics,
    /// saying `what`, when it takes longer than `within`.
    pub fn wait_idle(&self, within: Duration, what: &str) -> Duration {
        let t = std::time::Instant::now();
        loop {
            let h: Value = serde_json::from_str(&self.get("/health").1).unwrap();
            if (h["active"].as_u64(), h["queued"].as_u64()) == (Some(0), Some(0)) {
                return t.elapsed();
            }
            assert!(t.elapsed() < within, "{what}: still busy after {:?}: {h}", t.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Open a streaming request on a raw socket and read until the first `data:` event.
    pub fn open_stream(&self, path: &str, body: &Value) -> TcpStream {
        let body = body.to_string();
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("data:") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "stream closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
        s
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let (Some(rt), Some(server)) = (self.rt.take(), self.server.take()) {
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
            });
            rt.shutdown_background();
        }
    }
}

/// POST (with a body) or GET; any status comes back as a value.
pub fn request(url: &str, body: Option<&[u8]>, key: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let resp = match body {
        Some(b) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.send(b)
        }
        None => {
            let mut r = agent.get(url);
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.call()
        }
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

/// The `error` object of an OpenAI error body (panics when the body is not one).
pub fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    let err = v.get("error").cloned().unwrap_or_else(|| panic!("no `error` object: {body}"));
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(err["type"].is_string(), "{body}");
    assert!(err.get("param").is_some() && err.get("code").is_some(), "{body}");
    err
}
