#![warn(missing_docs)]
//! # deal-server
//!
//! deal's OpenAI-compatible HTTP endpoint (`deal serve`), built like text-generation-inference's
//! router: a thin axum layer over a bounded queue and engine worker threads.
//!
//! - [`request`]: the edge: request bodies → typed, validated [`request::GenerationRequest`]s;
//! - [`worker`]: the bounded job queue (429 when full) and the threads that run searches;
//! - [`response`]: OpenAI response and streaming-chunk shapes, plus deal's `alignment` object;
//! - [`routes`]: the axum router, API-key check, Content-Type check, CORS, body limit and
//!   read timeout, request ids, deadlines, and the handlers;
//! - [`listener`]: the accept loop: a connection limit and a header read timeout;
//! - [`metrics`]: Prometheus counters and histograms (`GET /metrics`);
//! - [`error`]: [`ApiError`], OpenAI's error JSON with the right HTTP status;
//! - [`playground`]: the web playground's static page, script and style, embedded in the
//!   binary and served at `/` (it calls only the public API).
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /v1/heads`, `GET /health`, `GET /metrics`, and the playground at `GET /`. Steering goes in the request's extra
//! `alignment` object (the official clients send it with `extra_body`).

pub mod error;
pub mod listener;
pub mod metrics;
pub mod playground;
pub mod request;
pub mod response;
pub mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
use deal_driver::Driver;

/// Settings of a server. `Default` is safe to expose behind a key: bounded work, no head
/// params reaching the network or files ([`deal_heads::Access::server`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (default `127.0.0.1`).
    pub host: String,
    /// TCP port to bind (default 8080; 0 picks any free port).
    pub port: u16,
    /// Required `Authorization: Bearer` key for `/v1/*` (and `/metrics`), when set.
    pub api_key: Option<String>,
    /// Largest request body, bytes (beyond: 413).
    pub max_body_bytes: usize,
    /// Requests that may wait for a worker (beyond: 429).
    pub queue: usize,
    /// Searches run at once (they take turns at the forward pass).
    pub parallel: usize,
    /// Extra names `model` may take besides the served model's id.
    pub aliases: Vec<String>,
    /// Longest a request may run, queue wait included (then: 504 `request_timeout`).
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (then the connection closes).
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body (then: 408).
    pub body_timeout: Duration,
    /// Open connections at most (beyond: 503 and close).
    pub max_connections: usize,
    /// Largest KV-cache estimate of one request, bytes (beyond: 400 naming the field);
    /// `None`: half the machine's memory shared by the `parallel` searches.
    pub max_kv_bytes: Option<usize>,
    /// Serve `/metrics` without the API key.
    pub public_metrics: bool,
    /// Origins browsers may call the API from (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Serve the web playground at `/` (static pages that call the public API).
    pub playground: bool,
    /// What request head params may reach (URLs, model files, fetching assets).
    pub access: deal_heads::Access,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_body_bytes: 1 << 20,
            queue: 64,
            parallel: 4,
            aliases: vec!["deal".into()],
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_kv_bytes: None,
            public_metrics: false,
            cors_origins: Vec::new(),
            playground: true,
            access: deal_heads::Access::server(),
        }
    }
}

impl ServerConfig {
    /// The per-request KV limit in force.
    pub fn kv_limit(&self) -> usize {
        self.max_kv_bytes.unwrap_or_else(|| {
            let total = total_memory_bytes().unwrap_or(8 << 30);
            total / 2 / self.parallel.max(1)
        })
    }
}

/// Physical memory of the machine (Linux `/proc/meminfo`), if known.
pub fn total_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// What every handler shares.
pub struct AppState {
    /// The backend and registries every request runs with.
    pub driver: Driver,
    /// The job queue and the threads that run searches.
    pub worker: worker::Worker,
    /// Counters reported at `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The settings the server was started with.
    pub config: ServerConfig,
    /// Names `model` may take; the first is the served id.
    pub served: Vec<String>,
    /// When the server started, Unix seconds (the model's `created` in `/v1/models`).
    pub created: u64,
    /// Requests being parsed and tokenized at once (beyond: 429, before any parsing).
    pub parsing: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Start the worker threads for `driver` (its heads restricted to `config.access`).
    pub fn new(driver: Driver, config: ServerConfig) -> Arc<Self> {
        let driver = driver.with_head_access(config.access.clone());
        let metrics = Arc::new(metrics::Metrics::default());
        let worker = worker::Worker::spawn(driver.clone(), metrics.clone(), config.parallel, config.queue);
        let mut served = vec![driver.backend().model_id()];
        served.extend(config.aliases.iter().cloned());
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let parsing = Arc::new(tokio::sync::Semaphore::new((2 * config.parallel).max(4)));
        // the grammar compiler (a trie of the vocabulary) is built off the request path; a
        // structured-output request that comes first waits for it
        if driver.backend().capabilities().cheap_steps {
            let d = driver.clone();
            std::thread::spawn(move || d.warm_grammars());
        }
        Arc::new(Self { driver, worker, metrics, config, served, created, parsing })
    }
}

/// A running server.
pub struct Server {
    /// The address bound (with the actual port when `port` was 0).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Bind `config.host:config.port` (port 0: any free port) and serve `driver` (a backend
    /// with its heads and controllers registries) in the background on the current tokio
    /// runtime.
    pub async fn start(driver: Driver, config: ServerConfig) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && config.api_key.is_none() {
            tracing::warn!("listening on {addr} without an API key: anyone who can reach it can use it (set --api-key)");
            eprintln!("deal serve: warning: {addr} is reachable from other machines and no --api-key is set");
        }
        let limits = listener::Limits { max_connections: config.max_connections, header_timeout: config.header_timeout };
        let app = routes::router(AppState::new(driver, config));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listener::serve(listener, app, limits, async move {
            let _ = rx.await;
        }));
        Ok(Server { addr, shutdown: Some(tx), task })
    }

    /// Serve until the process gets Ctrl-C (or the server fails).
    pub async fn run_until_ctrl_c(mut self) -> std::io::Result<()> {
        tokio::select! {
            r = &mut self.task => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            _ = tokio::signal::ctrl_c() => {}
        }
        self.stop().await
    }

    /// Stop accepting requests and wait for open connections to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}
