//! `/v2/deployments`: running deployments, and cancelling one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Params, PathArg};
use super::{Ctx, deployment_response};
use crate::error::AppsError;

/// `GET /v2/deployments`: a JSON array of Marathon's deployment objects.
///
/// Agora's `waitingFor` (why a current action cannot finish) is shown with
/// `embed=waitingFor` only: Marathon's clients build actions from a fixed set of
/// keys and fail on any other.
pub(crate) async fn list(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    let waiting_for = params.all("embed").contains(&"waitingFor");
    let snapshot = ctx.controller.snapshot();
    let mut deployments = Vec::with_capacity(snapshot.deployments.len());
    for deployment in &snapshot.deployments {
        let mut json = serde_json::to_value(deployment)
            .map_err(|e| AppsError::Unavailable(format!("cannot show a deployment: {e}")))?;
        if !waiting_for && let Some(Value::Array(actions)) = json.get_mut("currentActions") {
            for action in actions.iter_mut().filter_map(Value::as_object_mut) {
                action.remove("waitingFor");
            }
        }
        deployments.push(json);
    }
    Ok(Json(deployments).into_response())
}

/// `DELETE /v2/deployments/{id}`: roll back (200 with the rollback deployment) or,
/// with `force=true`, just stop it (202).
pub(crate) async fn cancel(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    if !ctx
        .controller
        .snapshot()
        .deployments
        .iter()
        .any(|d| d.id == id)
    {
        return Err(AppsError::NotFound(format!("DeploymentPlan {id} does not exist")).into());
    }
    match ctx.controller.cancel_deployment(id, force).await? {
        Some(rollback) => Ok(deployment_response(StatusCode::OK, &rollback)),
        None => Ok(StatusCode::ACCEPTED.into_response()),
    }
}
