//! The HTTP layer: axum routes, API-key check, body limit, metrics, and the completion
//! handlers. Handlers only parse ([`crate::request`]), queue ([`crate::worker`]) and format
//! ([`crate::response`]); the search runs on the worker threads.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deal_controllers::Outcome;
use deal_driver::Event as DriverEvent;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

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
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Bearer-token check (when the server has `--api-key`).
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.config.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Count every response by route and status.
async fn record(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics.record_response(&route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
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
    json!({"id": st.served[0], "object": "model", "created": st.created, "owned_by": "deal"})
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
        .map(|k| json!({"name": k.name, "description": k.description, "needs_reward": k.needs_reward}))
        .collect();
    let defaults = serde_json::to_value(deal_controllers::SearchConfig::default()).unwrap_or_default();
    Json(json!({"object": "list", "data": heads, "controllers": controllers, "params": defaults}))
}

async fn chat(st: State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(st, Endpoint::Chat, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn text(st: State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(st, Endpoint::Completion, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// Sets the job's cancel flag when dropped: the handler (or its stream) went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn complete(State(st): State<Arc<AppState>>, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.config.max_body_bytes)
        } else {
            ApiError::bad_request(format!("could not read the request body: {}", r.body_text()))
        }
    })?;
    // templating and tokenizing a long prompt is CPU work: keep it off the async threads
    let st2 = st.clone();
    let req = tokio::task::spawn_blocking(move || request::parse(&body, endpoint, &st2.driver, &st2.served))
        .await
        .map_err(|_| ApiError::internal("request parsing failed unexpectedly"))??;
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let t0 = Instant::now();
    st.worker.submit(Job { request: req.clone(), cancel, events: tx, enqueued: t0 })?;
    let meta = ResponseMeta::new(endpoint, &st.served[0]);
    if req.stream {
        stream(st, meta, req, rx, guard, t0).await
    } else {
        collect(meta, req, rx, guard).await
    }
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
    t0: Instant,
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
            Some(Ok(DriverEvent::Text { index, text })) => {
                if !self.first_token {
                    self.first_token = true;
                    self.st.metrics.time_to_first_token.observe(self.t0.elapsed().as_secs_f64());
                }
                self.pending.push_back(sse_json(&response::text_chunk(&self.meta, index, &text, false)));
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
) -> Result<Response, ApiError> {
    // wait until the search starts, so that a failure before it (e.g. a reward head that
    // cannot load) is still an HTTP error rather than an error event
    let first = rx.recv().await;
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
        t0,
        _guard: guard,
    };
    if s.req.endpoint == Endpoint::Chat {
        for i in 0..want {
            s.pending.push_back(sse_json(&response::text_chunk(&s.meta, i, "", true)));
        }
    }
    s.on_event(first);
    let events = futures_util::stream::unfold(s, |mut s| async move {
        while s.pending.is_empty() && !s.finished {
            let ev = s.rx.recv().await;
            s.on_event(ev);
        }
        let ev = s.pending.pop_front()?;
        Some((Ok::<_, Infallible>(ev), s))
    });
    Ok(Sse::new(events).into_response())
}
