//! `/ping`, `/info` and `/leader`, answered by every instance, leader or not.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Ctx;
use super::error::ApiError;

/// `GET /ping`: `pong`, as text.
pub(crate) async fn ping() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "pong",
    )
        .into_response()
}

/// `GET /info` (and `/v1/info`): Metronome's `{version, libVersion}`.
pub(crate) async fn info(State(ctx): State<Ctx>) -> Response {
    Json(json!({
        "version": ctx.info.version,
        "libVersion": ctx.info.version,
    }))
    .into_response()
}

/// `GET /leader` (and `/v1/leader`): `{"leader": "host:port"}`, this instance's own
/// address when it leads; 404 when no leader is known.
pub(crate) async fn leader(State(ctx): State<Ctx>) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    let leader = if snapshot.is_leader {
        Some(
            snapshot
                .leader
                .clone()
                .unwrap_or_else(|| ctx.info.http_address.clone()),
        )
    } else {
        snapshot.leader.clone()
    };
    match leader {
        Some(leader) => Ok(Json(json!({ "leader": leader })).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "There is no leader")),
    }
}
