//! The REST API: Marathon's `/v2`, one file per endpoint family.
//!
//! Reads answer from the controller's latest [`Snapshot`](crate::controller::Snapshot)
//! without waiting on it; every change is a [`RootEdit`](crate::controller::RootEdit)
//! the controller runs, stamps, persists and deploys. Errors are mapped to HTTP once,
//! in [`error`].
//!
//! A standby instance answers `/ping`, `/v2/info` and `/v2/leader` itself and
//! sends everything else to the leader (307), or answers 503 while no leader is known.

pub mod error;

mod app_tasks;
mod apps;
mod deployments;
mod events;
mod extract;
mod groups;
mod info;
mod label_selector;
mod queue;
mod render;
mod tasks;
mod versions;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::config::AppsConfig;
use crate::controller::{ControllerHandle, DeploymentRef};

pub use error::ApiError;

/// The header carrying the id of the deployment a request started.
pub const DEPLOYMENT_ID_HEADER: &str = "Marathon-Deployment-Id";

/// Everything the API needs: the controller and the facts `/v2/info` shows.
#[derive(Clone)]
pub struct ApiContext {
    pub controller: ControllerHandle,
    pub info: ApiInfo,
}

/// This instance as `/v2/info` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiInfo {
    /// `name` in `/v2/info`: the framework name.
    pub name: String,
    pub version: String,
    /// Where this instance's API listens (`host:port`), as other instances and
    /// clients reach it.
    pub http_address: String,
    /// The masters this instance registers with (`host:port`).
    pub masters: Vec<String>,
    pub framework_name: String,
    pub role: String,
    pub failover_timeout: Duration,
    pub decline_offer_duration: Duration,
    pub max_versions: usize,
    pub max_running_deployments: usize,
}

impl ApiInfo {
    /// The facts of an instance set up with `config` and listening on `http_address`.
    pub fn new(config: &AppsConfig, http_address: SocketAddr) -> Self {
        ApiInfo {
            name: config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            http_address: http_address.to_string(),
            masters: config.masters.clone(),
            framework_name: config.name.clone(),
            role: config.role.clone(),
            failover_timeout: config.failover_timeout,
            decline_offer_duration: config.decline_offer_duration,
            max_versions: config.max_versions,
            max_running_deployments: config.max_running_deployments,
        }
    }
}

/// The state every handler gets.
pub(crate) type Ctx = Arc<ApiContext>;

/// Every route of the API.
pub fn router(ctx: ApiContext) -> Router {
    let ctx: Ctx = Arc::new(ctx);
    let leader_only = Router::new()
        .route(
            "/v2/apps",
            get(apps::list)
                .post(apps::create)
                .put(apps::put_many)
                .patch(apps::patch_many),
        )
        .route("/v2/apps/{*rest}", any(apps::dispatch))
        .route(
            "/v2/groups",
            get(groups::get_root)
                .post(groups::create_root)
                .put(groups::put_root)
                .patch(groups::patch_root)
                .delete(groups::delete_root),
        )
        .route(
            "/v2/groups/{*rest}",
            get(groups::get_one)
                .post(groups::create)
                .put(groups::put)
                .patch(groups::patch)
                .delete(groups::delete),
        )
        .route("/v2/deployments", get(deployments::list))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(deployments::cancel),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::kill))
        .route("/v2/queue", get(queue::list))
        .route("/v2/queue/{*rest}", any(queue::dispatch))
        .route("/v2/events", get(events::stream))
        .route("/metrics", get(info::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            leader_gate,
        ));
    Router::new()
        .route("/ping", get(info::ping))
        .route("/v2/info", get(info::info))
        .route("/v2/leader", get(info::leader).delete(info::abdicate))
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
                Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Leader is unknown")
                    .into_response(),
            }
        }
        _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Leader is unknown").into_response(),
    }
}

/// `{deploymentId, version}` with the `Marathon-Deployment-Id` header.
pub(crate) fn deployment_response(status: StatusCode, deployment: &DeploymentRef) -> Response {
    let mut response = (status, axum::Json(deployment)).into_response();
    if let Ok(id) = HeaderValue::try_from(deployment.deployment_id.as_str()) {
        response.headers_mut().insert(DEPLOYMENT_ID_HEADER, id);
    }
    response
}
