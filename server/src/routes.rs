//! The HTTP layer: axum routes, API-key check (constant time; `/metrics` too unless
//! `public_metrics`), `Content-Type: application/json` on POSTs (so a web page cannot post
//! a "simple" cross-site request), CORS only for listed origins, request ids
//! (`x-request-id`, quoted in 5xx messages and the log), metrics, and the completion
//! handlers. Handlers read the body under a deadline, turn floods into cheap 429s before any
//! parsing, parse ([`crate::request`]), check the KV-cache estimate, queue
//! ([`crate::worker`]) and format ([`crate::response`]) under the request's deadline; the
//! search runs on the worker threads.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deal_controllers::Outcome;
use deal_driver::Event as DriverEvent;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant as Deadline;

use crate::error::ApiError;
use crate::request::{self, Endpoint, GenerationRequest};
use crate::response::{self, ResponseMeta};
use crate::worker::{Event, Job};
use crate::AppState;

/// The router of a server.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(text))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/heads", get(heads))
        .route_layer(middleware::from_fn_with_state(state.clone(), json_only))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let metrics_route = if state.config.public_metrics {
        metrics_route
    } else {
        metrics_route.route_layer(middleware::from_fn_with_state(state.clone(), auth))
    };
    let page = if state.config.playground { crate::playground::routes() } else { Router::new() };
    Router::new()
        .merge(v1)
        .merge(metrics_route)
        .merge(page)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Equal keys, compared in time that does not depend on where they differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = given.len() ^ key.len();
    for (i, k) in key.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ k);
    }
    diff == 0
}

/// Bearer-token check (when the server has `--api-key`).
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.config.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_key(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// POSTs must say their body is JSON: a browser sends `application/json` cross-site only
/// after a CORS preflight, which this server answers only for `cors_origins`.
async fn json_only(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return ApiError::unsupported_media_type().into_response();
        }
    }
    next.run(req).await
}

/// CORS for the listed origins only: preflights get the allowed methods and headers, and
/// responses to those origins carry `Access-Control-Allow-Origin`. Others get no CORS
/// headers, so browsers keep other sites' pages from reading the API.
async fn cors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let allowed = origin.filter(|o| st.config.cors_origins.iter().any(|a| a == o || a == "*"));
    let Some(origin) = allowed else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    resp
}

/// A request's id: in the `x-request-id` header of its response, in the message of a
/// server-side error and in the log line that reports it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn next_request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(rand::random::<u32>);
    format!("req-{boot:08x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Give every request an id, and count every response by route and status.
async fn record(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let id = next_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let t0 = Instant::now();
    let mut resp = next.run(req).await;
    st.metrics.record_response(&route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::no_route(req.method().as_str(), req.uri().path())
}

async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "ok", "model": st.served[0], "queued": st.worker.queued(), "active": st.worker.active()}))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = st.metrics.render(st.worker.queued(), st.worker.active(), st.config.queue);
    for c in st.driver.backend().counters() {
        text.push_str(&format!("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", c.name, c.help, c.value));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

fn model_object(st: &AppState) -> Value {
    let b = st.driver.backend();
    json!({
        "id": st.served[0], "object": "model", "created": st.created, "owned_by": "deal",
        // deal's extension: whether chat requests go through the model's own template (a base
        // model has none and gets deal's plain fallback), and the longest row in tokens
        "chat_template": b.has_chat_template(),
        "context_length": b.context_length(),
    })
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn model(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if st.served.contains(&id) {
        Ok(Json(model_object(&st)))
    } else {
        Err(ApiError::model_not_found(&id, &st.served[0]))
    }
}

/// The reward heads (params, scale, example) and the controllers.
async fn heads(State(st): State<Arc<AppState>>) -> Json<Value> {
    let registries = st.driver.registries();
    let heads: Vec<Value> = registries
        .heads
        .kinds()
        .iter()
        .map(|k| {
            let mut v = k.describe();
            v["score_range"] = json!([0.0, 1.0]);
            v["weight_range"] = json!("any finite number; negative asks for less");
            v
        })
        .collect();
    let controllers: Vec<Value> = registries
        .controllers
        .kinds()
        .iter()
        .map(|k| json!({"name": k.name, "description": k.description, "needs_reward": k.needs_reward, "params": k.params}))
        .collect();
    let defaults = serde_json::to_value(deal_controllers::SearchConfig::default()).unwrap_or_default();
    Json(json!({
        "object": "list",
        "data": heads,
        "controllers": controllers,
        "params": defaults,
        "weights": deal_controllers::config::WEIGHT_MEANING,
    }))
}

async fn chat(st: State<Arc<AppState>>, Extension(id): Extension<RequestId>, body: Body) -> Response {
    complete(st, Endpoint::Chat, body).await.unwrap_or_else(|e| e.with_request_id(&id.0).into_response())
}

async fn text(st: State<Arc<AppState>>, Extension(id): Extension<RequestId>, body: Body) -> Response {
    complete(st, Endpoint::Completion, body).await.unwrap_or_else(|e| e.with_request_id(&id.0).into_response())
}

/// Sets the job's cancel flag when dropped: the handler (or its stream) went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Read the body: at most `max_body_bytes` (413), within `body_timeout` (408). A body over
/// the limit is read on and discarded (nothing is kept) up to [`DRAIN_FACTOR`] times the
/// limit, so that a client still sending it gets the 413 instead of a broken pipe (the
/// "lingering close" of nginx); beyond that the connection is dropped.
async fn read_body(st: &AppState, body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limit = st.config.max_body_bytes;
    let drain = limit.saturating_mul(DRAIN_FACTOR).max(limit);
    let read = async {
        let mut body = body;
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if seen > drain {
                break;
            }
        }
        if seen > limit {
            return Err(ApiError::too_large(limit));
        }
        Ok(Bytes::from(kept))
    };
    match tokio::time::timeout(st.config.body_timeout, read).await {
        Err(_) => Err(ApiError::body_timeout(st.config.body_timeout)),
        Ok(r) => r,
    }
}

/// A body over the limit is drained up to this many times the limit before the 413.
const DRAIN_FACTOR: usize = 4;

/// Longest a request waits for a parsing slot before it is answered 429.
const PARSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn complete(State(st): State<Arc<AppState>>, endpoint: Endpoint, body: Body) -> Result<Response, ApiError> {
    let deadline = Deadline::now() + st.config.request_timeout;
    let body = read_body(&st, body).await?;
    // a flood gets cheap 429s: no parsing or tokenizing when the queue is full; parsing
    // runs a few requests at a time (the others wait their turn, at most PARSE_WAIT)
    if st.worker.is_full() {
        return Err(ApiError::queue_full(st.config.queue));
    }
    let parse_slot = match tokio::time::timeout(PARSE_WAIT, st.parsing.clone().acquire_owned()).await {
        Ok(Ok(slot)) if !st.worker.is_full() => slot,
        _ => return Err(ApiError::queue_full(st.config.queue)),
    };
    // templating and tokenizing a long prompt is CPU work: keep it off the async threads
    let st2 = st.clone();
    let req = tokio::task::spawn_blocking(move || {
        let req = request::parse(&body, endpoint, &st2.driver, &st2.served)?;
        if let Some(est) = st2.driver.kv_estimate(&req.job).map_err(ApiError::from)? {
            let limit = st2.config.kv_limit();
            if est.bytes > limit {
                let param = if est.field == "max_tokens" { "max_tokens".to_string() } else { format!("alignment.params.{}", est.field) };
                return Err(ApiError::too_much_memory(&param, est.bytes, limit, est.rows));
            }
        }
        Ok(req)
    })
    .await
    .map_err(|_| ApiError::internal("request parsing failed unexpectedly"))??;
    drop(parse_slot);
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let t0 = Instant::now();
    st.worker.submit(Job { request: req.clone(), cancel, events: tx, enqueued: t0 })?;
    let meta = ResponseMeta::new(endpoint, &st.served[0], st.driver.backend().clone());
    if req.stream {
        stream(st, meta, req, rx, guard, t0, deadline).await
    } else {
        match tokio::time::timeout_at(deadline, collect(meta, req, rx, guard)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(&st)),
        }
    }
}

/// A request past its deadline: counted, and the 504 to send.
fn timed_out(st: &AppState) -> ApiError {
    st.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
    ApiError::request_timeout(st.config.request_timeout)
}

/// Wait for every choice, then answer with the whole response.
async fn collect(
    meta: ResponseMeta,
    req: GenerationRequest,
    mut rx: UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let want = req.job.prompts.len() * req.job.n;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; want];
    let mut done = 0;
    while done < want {
        match rx.recv().await {
            Some(Ok(DriverEvent::Done { index, outcome })) => {
                if let Some(slot) = outcomes.get_mut(index) {
                    *slot = Some(*outcome);
                    done += 1;
                }
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(DriverEvent::Started | DriverEvent::Text { .. })) => {}
            None => return Err(ApiError::internal("the engine worker stopped before finishing the request")),
        }
    }
    let outcomes: Vec<&Outcome> = outcomes.iter().flatten().collect();
    Ok(Json(response::completion(&meta, &req, &outcomes)).into_response())
}

/// State of one SSE response.
struct Streaming {
    st: Arc<AppState>,
    meta: ResponseMeta,
    req: GenerationRequest,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<SseEvent>,
    outcomes: Vec<Option<Outcome>>,
    done: usize,
    finished: bool,
    first_token: bool,
    /// Characters of each choice's text streamed so far (`text_offset` of logprobs).
    streamed: Vec<usize>,
    t0: Instant,
    deadline: Deadline,
    _guard: CancelOnDrop,
}

fn sse_json(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl Streaming {
    /// End the stream with an error event, then `[DONE]` (clients wait for it).
    fn fail(&mut self, e: &ApiError) {
        self.pending.push_back(sse_json(&e.body()));
        self.pending.push_back(SseEvent::default().data("[DONE]"));
        self.finished = true;
    }

    /// Turn one worker event into SSE events (queued in `pending`; `finished` once the
    /// stream is over).
    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Ok(DriverEvent::Started)) => {}
            Some(Ok(DriverEvent::Text { index, text, logprobs })) => {
                if !self.first_token {
                    self.first_token = true;
                    self.st.metrics.time_to_first_token.observe(self.t0.elapsed().as_secs_f64());
                }
                let at = self.streamed.get(index).copied().unwrap_or(0);
                let lp = self.req.job.logprobs.map(|_| (&logprobs[..], at));
                self.pending.push_back(sse_json(&response::text_chunk(&self.meta, index, &text, false, lp, self.req.token_ids)));
                if let Some(n) = self.streamed.get_mut(index) {
                    *n += text.chars().count();
                }
            }
            Some(Ok(DriverEvent::Done { index, outcome })) => {
                self.pending.push_back(sse_json(&response::final_chunk(&self.meta, &self.req, index, &outcome)));
                if let Some(slot) = self.outcomes.get_mut(index) {
                    *slot = Some(*outcome);
                    self.done += 1;
                }
                if self.done == self.outcomes.len() {
                    if self.req.include_usage {
                        let outs: Vec<&Outcome> = self.outcomes.iter().flatten().collect();
                        self.pending.push_back(sse_json(&response::usage_chunk(&self.meta, &self.req, &outs)));
                    }
                    self.pending.push_back(SseEvent::default().data("[DONE]"));
                    self.finished = true;
                }
            }
            Some(Err(e)) => self.fail(&e),
            None => self.fail(&ApiError::internal("the engine worker stopped before finishing the request")),
        }
    }
}

/// Answer with server-sent events: committed text as soon as the search commits it.
async fn stream(
    st: Arc<AppState>,
    meta: ResponseMeta,
    req: GenerationRequest,
    mut rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    t0: Instant,
    deadline: Deadline,
) -> Result<Response, ApiError> {
    // wait until the search starts, so that a failure before it (e.g. a reward head that
    // cannot load) is still an HTTP error rather than an error event
    let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(first) => first,
        Err(_) => return Err(timed_out(&st)),
    };
    if let Some(Err(e)) = first {
        return Err(e);
    }
    let want = req.job.prompts.len() * req.job.n;
    let mut s = Streaming {
        st,
        meta,
        req,
        rx,
        pending: VecDeque::new(),
        outcomes: vec![None; want],
        done: 0,
        finished: false,
        first_token: false,
        streamed: vec![0; want],
        t0,
        deadline,
        _guard: guard,
    };
    if s.req.endpoint == Endpoint::Chat {
        for i in 0..want {
            s.pending.push_back(sse_json(&response::text_chunk(&s.meta, i, "", true, None, false)));
        }
    }
    s.on_event(first);
    let events = futures_util::stream::unfold(s, |mut s| async move {
        while s.pending.is_empty() && !s.finished {
            match tokio::time::timeout_at(s.deadline, s.rx.recv()).await {
                Ok(ev) => s.on_event(ev),
                Err(_) => {
                    let e = timed_out(&s.st);
                    s.fail(&e);
                }
            }
        }
        let ev = s.pending.pop_front()?;
        Some((Ok::<_, Infallible>(ev), s))
    });
    Ok(Sse::new(events).into_response())
}
