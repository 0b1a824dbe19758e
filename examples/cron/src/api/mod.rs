//! The REST API: Metronome's `/v1`, one file per endpoint family.
//!
//! Reads answer from the controller's latest [`Snapshot`](crate::controller::Snapshot)
//! without waiting on it; every change is a command the controller runs, persists
//! and answers. Errors are mapped to HTTP once, in [`error`].
//!
//! A standby instance answers `/ping`, `/info` and `/leader` itself and sends
//! everything else to the leader (307), or answers 503 while no leader is known.

pub mod error;

mod extract;
mod jobs;
mod misc;
mod render;
mod runs;
mod schedules;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::CronConfig;
use crate::controller::ControllerHandle;

pub use error::ApiError;

/// Everything the API needs: the controller and the facts `/info` shows.
#[derive(Clone)]
pub struct ApiContext {
    pub controller: ControllerHandle,
    pub info: ApiInfo,
}

/// This instance as `/info` and the leader redirect describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiInfo {
    /// The framework name.
    pub name: String,
    pub version: String,
    /// Where this instance's API listens (`host:port`), as other instances and
    /// clients reach it.
    pub http_address: String,
}

impl ApiInfo {
    /// The facts of an instance set up with `config` and listening on `http_address`.
    pub fn new(config: &CronConfig, http_address: SocketAddr) -> Self {
        ApiInfo {
            name: config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            http_address: http_address.to_string(),
        }
    }
}

/// The state every handler gets.
pub(crate) type Ctx = Arc<ApiContext>;

/// Every route of the API.
pub fn router(ctx: ApiContext) -> Router {
    let ctx: Ctx = Arc::new(ctx);
    let leader_only = Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/v1/jobs/{id}",
            get(jobs::get).put(jobs::replace).delete(jobs::delete),
        )
        .route(
            "/v1/jobs/{id}/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/v1/jobs/{id}/schedules/{sid}",
            get(schedules::get)
                .put(schedules::replace)
                .delete(schedules::delete),
        )
        .route("/v1/jobs/{id}/runs", get(runs::list).post(runs::start))
        .route("/v1/jobs/{id}/runs/{rid}", get(runs::get))
        .route("/v1/jobs/{id}/runs/{rid}/actions/stop", post(runs::stop))
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            leader_gate,
        ));
    Router::new()
        .route("/ping", get(misc::ping))
        .route("/info", get(misc::info))
        .route("/v1/info", get(misc::info))
        .route("/leader", get(misc::leader))
        .route("/v1/leader", get(misc::leader))
        .merge(leader_only)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(ctx)
}

/// Lets requests through on the leader; elsewhere redirects them to the leader, or
/// answers 503 while none is known (or while this instance, the elected leader, is
/// still loading its state and so cannot answer itself).
async fn leader_gate(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let snapshot = ctx.controller.snapshot();
    if snapshot.is_leader {
        return next.run(request).await;
    }
    let unavailable = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Leader is unknown");
    match snapshot.leader.as_deref() {
        Some(leader) if leader != ctx.info.http_address => {
            let target = request
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/");
            match HeaderValue::try_from(format!("http://{leader}{target}")) {
                Ok(location) => (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response(),
                Err(_) => unavailable().into_response(),
            }
        }
        _ => unavailable().into_response(),
    }
}
