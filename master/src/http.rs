//! The master's HTTP endpoints, served on the gRPC port: `/health`, `/metrics`,
//! `/api/v1/state` and a small web UI at `/`.

use std::sync::Arc;

use agora_proto as pb;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics::MasterMetrics;
use crate::serving::LeaderGate;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub view: watch::Receiver<Arc<pb::ClusterState>>,
    pub group: watch::Receiver<pb::MasterGroup>,
    pub metrics: Arc<MasterMetrics>,
    pub gate: LeaderGate,
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
    let group = state.group.borrow().clone();
    json(&crate::api::operator::health(&state.gate, &group))
}

/// The leader answers; a follower redirects to it (307 keeps the method), or says
/// that no leader is known.
async fn cluster_state(State(state): State<HttpState>, uri: Uri) -> Response {
    if state.gate.commands().is_err() {
        return redirect_to_leader(&state.gate, &uri);
    }
    json(&*crate::api::operator::with_group(
        &state.view,
        &state.group,
    ))
}

fn redirect_to_leader(gate: &LeaderGate, uri: &Uri) -> Response {
    let leadership = gate.replica.leadership().borrow().clone();
    match leadership.leader_address {
        Some(leader) if leadership.leader_id != gate.replica.id() => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("http://{leader}{path}"))],
                format!("this master does not lead; the leader is {leader}\n"),
            )
                .into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "no master leads right now; retry shortly\n",
        )
            .into_response(),
    }
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
