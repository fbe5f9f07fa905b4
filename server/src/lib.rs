#![warn(missing_docs)]
//! # deal-server
//!
//! deal's OpenAI-compatible HTTP endpoint (`deal serve`), built like text-generation-inference's
//! router: a thin axum layer over a bounded queue and engine worker threads.
//!
//! - [`request`]: the edge: request bodies → typed, validated [`request::GenerationRequest`]s;
//! - [`worker`]: the bounded job queue (429 when full) and the threads that run searches;
//! - [`response`]: OpenAI response and streaming-chunk shapes, plus deal's `alignment` object;
//! - [`routes`]: the axum router, API-key check, body limit and the handlers;
//! - [`metrics`]: Prometheus counters and histograms (`GET /metrics`);
//! - [`error`]: [`ApiError`], OpenAI's error JSON with the right HTTP status.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /v1/heads`, `GET /health`, `GET /metrics`. Steering goes in the request's extra
//! `alignment` object (the official clients send it with `extra_body`).

pub mod error;
pub mod metrics;
pub mod request;
pub mod response;
pub mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::ApiError;
use deal_driver::Driver;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (default `127.0.0.1`).
    pub host: String,
    /// TCP port to bind (default 8080; 0 picks any free port).
    pub port: u16,
    /// Required `Authorization: Bearer` key for `/v1/*`, when set.
    pub api_key: Option<String>,
    /// Largest request body, bytes (beyond: 413).
    pub max_body_bytes: usize,
    /// Requests that may wait for a worker (beyond: 429).
    pub queue: usize,
    /// Searches run at once (they take turns at the forward pass).
    pub parallel: usize,
    /// Extra names `model` may take besides the served model's id.
    pub aliases: Vec<String>,
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
        }
    }
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
}

impl AppState {
    /// Start the worker threads for `driver`.
    pub fn new(driver: Driver, config: ServerConfig) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::default());
        let worker = worker::Worker::spawn(driver.clone(), metrics.clone(), config.parallel, config.queue);
        let mut served = vec![driver.backend().model_id()];
        served.extend(config.aliases.iter().cloned());
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Arc::new(Self { driver, worker, metrics, config, served, created })
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
        let app = routes::router(AppState::new(driver, config));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
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
