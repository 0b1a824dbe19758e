//! `/v2/tasks`: every app's tasks, and killing tasks by id.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Ctx;
use super::app_tasks::{kill_flags, kill_response};
use super::error::ApiError;
use super::extract::{Body, Params};
use super::render::{has_task, state_name, task_json};
use crate::error::AppsError;

/// `GET /v2/tasks?status=running&status[]=staging`: `{"tasks": [...]}`. The
/// status names are the task states without `TASK_`, in any case; unknown
/// names match nothing, as in Marathon.
pub(crate) async fn list(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    let statuses: Vec<String> = params
        .all("status")
        .into_iter()
        .chain(params.all("status[]"))
        .map(|s| format!("TASK_{}", s.to_ascii_uppercase()))
        .collect();
    let snapshot = ctx.controller.snapshot();
    let tasks: Vec<Value> = snapshot
        .instances
        .iter()
        .flat_map(|(app_id, instances)| {
            let app = snapshot.root.apps.get(app_id);
            instances
                .iter()
                .filter(|i| has_task(i))
                .filter(|i| statuses.is_empty() || statuses.iter().any(|s| s == state_name(i)))
                .map(move |i| task_json(i, app))
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

/// `POST /v2/tasks/delete?scale=&wipe=&force=` with `{"ids": [...]}`: kills the
/// tasks (unknown ids are ignored) or, with `scale`, lowers their apps' instances.
pub(crate) async fn kill(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let (scale, force) = kill_flags(&params)?;
    let ids: Vec<String> = match body.json()?.get("ids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| AppsError::InvalidJson("ids must be strings".into()))?,
        _ => {
            return Err(AppsError::InvalidJson("expected {\"ids\": [...]}".into()).into());
        }
    };
    let outcome = ctx.controller.kill_tasks(ids, scale, force).await?;
    kill_response(&ctx, outcome, false)
}
