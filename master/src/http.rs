//! The master's HTTP endpoints, served on the gRPC port: `/health`, `/metrics`,
//! `/api/v1/state` and a small web UI at `/`.
//!
//! `/api/v1/state` is the published snapshot as JSON. It is assembled from
//! renderings cached in the snapshot's pieces (see `core/view.rs`), on a blocking
//! thread so that a large first rendering never holds up an async worker, and sent
//! piece by piece without being copied into one buffer. While someone reads it, new
//! snapshots are rendered in the background soon after they are published (at most
//! every [`WARM_EVERY`]), so that a read finds most of its JSON ready and renders
//! only what changed since.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto as pb;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::ClusterView;
use crate::metrics::MasterMetrics;
use crate::serving::LeaderGate;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub group: watch::Receiver<pb::MasterGroup>,
    pub metrics: Arc<MasterMetrics>,
    pub gate: LeaderGate,
}

/// Background rendering runs at most this often...
const WARM_EVERY: Duration = Duration::from_millis(100);
/// ...and only while the state was read within this long.
const WARM_FOR: Duration = Duration::from_secs(10);

/// When `/api/v1/state` was last read.
struct Readers {
    /// The reference point of `last_read_ms`.
    since: Instant,
    /// Milliseconds after `since` of the latest read; 0 before the first.
    last_read_ms: AtomicU64,
}

impl Readers {
    fn note_read(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.last_read_ms.store(now.max(1), Ordering::Relaxed);
    }

    fn recently_read(&self) -> bool {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        last > 0
            && self.since.elapsed().as_millis() as u64
                <= last.saturating_add(WARM_FOR.as_millis() as u64)
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    http: HttpState,
    readers: Arc<Readers>,
}

/// The routes. Starts the background rendering task, which ends when the core's
/// view sender is dropped.
pub(crate) fn router(state: HttpState) -> Router {
    let readers = Arc::new(Readers {
        since: Instant::now(),
        last_read_ms: AtomicU64::new(0),
    });
    tokio::spawn(keep_warm(state.view.clone(), readers.clone()));
    Router::new()
        .route("/", get(ui))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/state", get(cluster_state))
        .with_state(Served {
            http: state,
            readers,
        })
}

/// Renders each new snapshot soon after it is published while the state is being
/// read; see the module documentation.
async fn keep_warm(mut view: watch::Receiver<Arc<ClusterView>>, readers: Arc<Readers>) {
    while view.changed().await.is_ok() {
        if !readers.recently_read() {
            continue;
        }
        let snapshot = view.borrow_and_update().clone();
        if tokio::task::spawn_blocking(move || snapshot.render())
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(WARM_EVERY).await;
    }
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

async fn health(State(Served { http: state, .. }): State<Served>) -> Response {
    let group = state.group.borrow().clone();
    json(&crate::api::operator::health(&state.gate, &group))
}

/// The leader answers; a follower redirects to it (307 keeps the method), or says
/// that no leader is known.
async fn cluster_state(State(served): State<Served>, uri: Uri) -> Response {
    let state = served.http;
    if state.gate.commands().is_err() {
        return redirect_to_leader(&state.gate, &uri);
    }
    served.readers.note_read();
    let snapshot = state.view.borrow().clone();
    let group = state.group.borrow().clone();
    let parts = match tokio::task::spawn_blocking(move || snapshot.json_parts(&group)).await {
        Ok(parts) => parts,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot render state: {e}"),
            )
                .into_response();
        }
    };
    let length: usize = parts.iter().map(Bytes::len).sum();
    let body = Body::from_stream(tokio_stream::iter(
        parts.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response()
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

async fn metrics(State(Served { http: state, .. }): State<Served>) -> Response {
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
