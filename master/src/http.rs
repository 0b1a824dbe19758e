//! The master's HTTP endpoints, served on the gRPC port: `/health`, `/metrics`,
//! `/api/v1/state` and a small web UI at `/`.

use std::sync::Arc;

use agora_proto as pb;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics::MasterMetrics;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub view: watch::Receiver<Arc<pb::ClusterState>>,
    pub metrics: Arc<MasterMetrics>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/state", get(cluster_state))
        .with_state(state)
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render state: {e}"),
        )
            .into_response(),
    }
}

async fn health(State(state): State<HttpState>) -> Response {
    let view = state.view.borrow().clone();
    json(&crate::api::operator::health(&view))
}

async fn cluster_state(State(state): State<HttpState>) -> Response {
    let view = state.view.borrow().clone();
    json(&*view)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("ui.html"))
}
