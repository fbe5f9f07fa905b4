//! The web playground: one page, its script and its style, embedded in the binary at build
//! time (no npm step) and served at `/`, `/playground.js` and `/playground.css`. The page is
//! a client of the public API only (`GET /v1/models`, `GET /v1/heads`, streaming
//! `POST /v1/chat/completions` with `alignment`), so it is also a worked API example.
//!
//! The pages are public (they hold no data); the API calls they make carry the key the user
//! types in, like any client's. Responses forbid framing and allow scripts and styles from
//! this server only, so the page never runs inline or third-party code.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// The page.
pub const INDEX_HTML: &str = include_str!("../playground/index.html");
/// Its script (plain ES2020, no framework).
pub const SCRIPT_JS: &str = include_str!("../playground/playground.js");
/// Its style.
pub const STYLE_CSS: &str = include_str!("../playground/playground.css");

/// The playground's routes (merged into the router unless `ServerConfig::playground` is off).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/playground.js", get(|| async { asset(SCRIPT_JS, "text/javascript; charset=utf-8") }))
        .route("/playground.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
}

fn asset(body: &'static str, mime: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}
