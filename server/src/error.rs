//! [`ApiError`]: every failure the server reports, as OpenAI's error JSON
//! (`{"error": {"message", "type", "param", "code"}}`) with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Message for the user (OpenAI's `message`).
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`, `upstream_error`.
    pub kind: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// OpenAI's machine-readable `code`, when there is one: `invalid_api_key`, `model_not_found`,
    /// `rate_limit_exceeded`.
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None }
    }

    /// 400: a field is missing, of the wrong type or out of range.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    /// 400 without a specific field (unparsable body...).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid or missing API key: send `Authorization: Bearer <key>`",
            )
        }
    }

    /// 404: unknown model.
    pub fn model_not_found(name: &str, served: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("the model `{name}` does not exist; this server serves `{served}` (see GET /v1/models)"),
            )
        }
    }

    /// 404: unknown route.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no route for {method} {path}"))
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this route")
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the server's limit of {limit} bytes"),
        )
    }

    /// 429: the queue is full.
    pub fn queue_full(capacity: usize) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("the server is busy ({capacity} requests queued); retry shortly"),
            )
        }
    }

    /// 502: an external reward server failed.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// 504: an upstream engine did not answer in time.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", message)
    }

    /// 408: the client did not send its body in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("the request body did not arrive within {} s", limit.as_secs_f64()),
        )
    }

    /// 415: a POST without `Content-Type: application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "send the request body as JSON with `Content-Type: application/json`",
        )
    }

    /// 400: the request's KV-cache estimate is over the server's per-request limit.
    pub fn too_much_memory(param: &str, estimate: usize, limit: usize, rows: usize) -> Self {
        let mb = |b: usize| b as f64 / (1 << 20) as f64;
        Self {
            code: Some("request_too_large"),
            ..Self::invalid(
                param,
                format!(
                    "this request would hold about {:.0} MB of KV cache ({rows} rows); this server allows {:.0} MB per request: \
                     lower `{}` or `max_tokens`",
                    mb(estimate),
                    mb(limit),
                    param.rsplit('.').next().unwrap_or(param),
                ),
            )
        }
    }

    /// 504: the request ran past the server's deadline (`--request-timeout`).
    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self {
            code: Some("request_timeout"),
            ..Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                format!("the request ran longer than this server's limit of {} s (--request-timeout)", limit.as_secs_f64()),
            )
        }
    }

    /// For a server-side fault (5xx but not upstream): add the request id to the message
    /// (and log the error under it), so an operator can find it.
    pub fn with_request_id(mut self, id: &str) -> Self {
        if self.status.is_server_error() && self.kind == "server_error" {
            tracing::error!(request_id = id, "{}", self.message);
            self.message = format!("{} (request id {id})", self.message);
        }
        self
    }

    /// The same error with a machine-readable `code` (e.g. the missing capability).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 500: a bug or an engine failure (never caused by the request's content).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 503: the engine is gone (shutting down).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Inner { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A search error as the client should see it: bad input stays a 400 (a missing backend
/// capability too, naming it), an upstream engine's or reward server's failure is a 502 (a
/// timeout 504), anything else is the server's fault.
impl From<deal_controllers::ControlError> for ApiError {
    fn from(e: deal_controllers::ControlError) -> Self {
        use deal_backend::Error as B;
        use deal_controllers::ControlError as C;
        use deal_heads::reward::RewardError as R;
        use deal_heads::Error as H;
        let backend = |b: &B| match b {
            B::InvalidArgument(_) | B::Tokenizer(_) => ApiError::bad_request(e.to_string()),
            B::Unsupported { capability, .. } => ApiError::invalid("alignment", e.to_string()).with_code(capability),
            B::Upstream { .. } => ApiError::upstream(e.to_string()),
            B::Timeout(_) => ApiError::upstream_timeout(e.to_string()),
            B::Engine(_) => ApiError::internal(e.to_string()),
            // the client left, the deadline passed or the server is stopping: whoever is
            // still listening learns the work was dropped
            B::Cancelled => ApiError::unavailable(e.to_string()),
        };
        let upstream = |timeout: bool| if timeout { ApiError::upstream_timeout(e.to_string()) } else { ApiError::upstream(e.to_string()) };
        match &e {
            C::BadConfig { field, .. } => ApiError::invalid(format!("alignment.params.{field}"), e.to_string()),
            C::UnknownController { .. } => ApiError::invalid("alignment.controller", e.to_string()),
            C::NeedsReward(_) => ApiError::invalid("alignment.weights", e.to_string()),
            C::Backend(b) => backend(b),
            C::Heads(H::Backend(b)) => backend(b),
            C::Heads(H::InvalidArgument(_)) => ApiError::bad_request(e.to_string()),
            C::Heads(H::Upstream { timeout, .. }) => upstream(*timeout),
            C::Heads(H::Reward(R::Head { source, .. })) => match source.as_ref() {
                H::Backend(b) => backend(b),
                H::Upstream { timeout, .. } => upstream(*timeout),
                H::InvalidArgument(_) => ApiError::bad_request(e.to_string()),
                _ => ApiError::internal(e.to_string()),
            },
            C::Heads(H::Reward(R::WrongCount { .. } | R::NotFinite { .. })) => ApiError::internal(e.to_string()),
            C::Heads(H::Reward(_)) => ApiError::invalid("alignment", e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}
