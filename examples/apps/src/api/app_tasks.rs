//! `/v2/apps/{app_id}/tasks[/{task_id}]`: an app's tasks, and killing them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::Params;
use super::render::{has_task, task_json};
use super::{Ctx, deployment_response};
use crate::controller::KillOutcome;
use crate::model::PathId;
use crate::state::Instance;

/// `GET /v2/apps/{id}/tasks`: `{"tasks": [...]}`.
pub(crate) fn list(ctx: &Ctx, id: &PathId) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    let app = snapshot
        .root
        .apps
        .get(id)
        .ok_or_else(|| ApiError::unknown_app(id))?;
    let tasks: Vec<Value> = snapshot
        .instances
        .get(id)
        .into_iter()
        .flat_map(|list| list.iter())
        .filter(|i| has_task(i))
        .map(|i| task_json(i, Some(app)))
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

/// `scale` and `wipe` from the query; Marathon refuses both at once.
pub(crate) fn kill_flags(params: &Params) -> Result<(bool, bool), ApiError> {
    let scale = params.flag("scale", false)?;
    let force = params.force()?;
    // No persistent volumes: `wipe` is a plain kill, but still exclusive with `scale`.
    if scale && params.flag("wipe", false)? {
        return Err(ApiError::bad_request(
            "You cannot use scale and wipe at the same time.",
        ));
    }
    Ok((scale, force))
}

/// What a kill answers: the killed tasks (under `key`, a list or one task) or,
/// with `scale`, the deployment that lowered `instances`.
pub(crate) fn kill_response(
    ctx: &Ctx,
    outcome: KillOutcome,
    one: bool,
) -> Result<Response, ApiError> {
    match outcome {
        KillOutcome::Scaled(deployment) => Ok(deployment_response(StatusCode::OK, &deployment)),
        KillOutcome::Killed(instances) => {
            let snapshot = ctx.controller.snapshot();
            let tasks: Vec<Value> = instances
                .iter()
                .map(|i| task_json(i, snapshot.root.apps.get(&i.app_id)))
                .collect();
            if one {
                let task = tasks.into_iter().next().unwrap_or(Value::Null);
                Ok(Json(json!({ "task": task })).into_response())
            } else {
                Ok(Json(json!({ "tasks": tasks })).into_response())
            }
        }
    }
}

/// `DELETE /v2/apps/{id}/tasks?host=&scale=&wipe=&force=`.
pub(crate) async fn kill_all(
    ctx: &Ctx,
    id: &PathId,
    params: &Params,
) -> Result<Response, ApiError> {
    let (scale, force) = kill_flags(params)?;
    let host = params.get("host");
    let task_ids: Vec<String> = {
        let snapshot = ctx.controller.snapshot();
        if !snapshot.root.apps.contains_key(id) {
            return Err(ApiError::unknown_app(id));
        }
        snapshot
            .instances
            .get(id)
            .into_iter()
            .flat_map(|list| list.iter())
            .filter(|i| has_task(i))
            .filter(|i| host.is_none_or(|h| i.host.as_deref() == Some(h)))
            .map(Instance::task_id)
            .collect()
    };
    if task_ids.is_empty() {
        return Ok(Json(json!({ "tasks": [] })).into_response());
    }
    let outcome = ctx.controller.kill_tasks(task_ids, scale, force).await?;
    kill_response(ctx, outcome, false)
}

/// `DELETE /v2/apps/{id}/tasks/{task_id}?scale=&wipe=&force=`.
pub(crate) async fn kill_one(
    ctx: &Ctx,
    id: &PathId,
    task_id: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let (scale, force) = kill_flags(params)?;
    {
        let snapshot = ctx.controller.snapshot();
        if !snapshot.root.apps.contains_key(id) {
            return Err(ApiError::unknown_app(id));
        }
        let known = snapshot
            .instances
            .get(id)
            .into_iter()
            .flat_map(|list| list.iter())
            .any(|i| has_task(i) && i.task_id() == task_id);
        if !known {
            return Err(crate::error::AppsError::NotFound(format!(
                "Task '{task_id}' does not exist"
            ))
            .into());
        }
    }
    let outcome = ctx
        .controller
        .kill_tasks(vec![task_id.to_string()], scale, force)
        .await?;
    kill_response(ctx, outcome, true)
}
