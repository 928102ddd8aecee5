//! The gateway: HTTP and WebSocket in, calls on `natter_core::Core` out. It translates; the core
//! decides. A WebSocket command and its REST twin call the same `Core` method.

pub mod error;
pub mod limits;
pub mod openapi;
pub mod rest;
pub mod web;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use natter_core::Core;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sessions::Hub;

/// Everything a request handler may need.
pub struct AppState {
    pub core: Arc<Core>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub limiters: limits::Limiters,
    /// The effective limit on open WebSocket connections.
    pub connections_max: usize,
    /// Connections admitted (upgrading or open); the limit is checked against it.
    pub connections_admitted: AtomicUsize,
    pub shutting_down: AtomicBool,
}

/// The whole HTTP surface of a node.
pub fn router(state: Arc<AppState>) -> Router {
    let body_bytes_max = state.config.limits.frame_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/ws", get(ws::upgrade))
        .merge(rest::routes())
        .merge(web::routes())
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

async fn healthz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    if app.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(app.core.store().stats()),
    )
}
