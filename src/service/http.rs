//! The service's HTTP endpoints: `/healthz` (alive), `/readyz` (repository reachable and the RPO objective
//! met), `/metrics` (Prometheus) and `/status` (JSON). `/metrics` and `/status` require the bearer token of
//! `[service] token_file` when one is set, compared in constant time. Every answer carries headers that keep
//! browsers from sniffing, framing or caching it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await {
        tracing::error!("the HTTP server failed: {e}");
    }
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let reasons = shared.status().repository.unready_reasons(Utc::now());
    let code = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(json!({ "ready": reasons.is_empty(), "reasons": reasons }))).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = authorize(&shared, &headers) {
        return refused;
    }
    let counters = shared.counters().clone();
    let status = shared.status().clone();
    let text = super::metrics::render(&status, &counters, Utc::now());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = authorize(&shared, &headers) {
        return refused;
    }
    let now = Utc::now();
    let status = shared.status().clone();
    let reasons = status.repository.unready_reasons(now);
    let rpo_age = status.repository.rpo_age_seconds(now);
    let mut status = json!(status);
    // A process-wide counter kept by the lock module, read as of now.
    status["lock_wait_seconds_total"] = json!(crate::repo::lock::total_wait().as_secs_f64());
    axum::Json(json!({
        "now": now,
        "ready": reasons.is_empty(),
        "unready_reasons": reasons,
        "rpo_age_seconds": rpo_age,
        "open_incidents": shared.incidents.open(),
        "status": status,
    }))
    .into_response()
}

/// `None` when the request may go on; otherwise the 401 to send.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.token.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        return None;
    }
    Some(
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is required\n")
            .into_response(),
    )
}

/// Compares without an early exit (`subtle`), so the time taken says nothing about how much of a guess was right.
/// (The length is not secret: tokens have a fixed, documented length.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
    }
}
