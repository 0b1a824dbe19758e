//! `/v1/jobs/{id}/runs`: active runs, start a run now, one run (active or from the
//! history), stop a run.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Ctx;
use super::error::ApiError;
use super::extract::PathArg;
use super::render;

/// `GET /v1/jobs/{id}/runs`: the runs not finished yet (finished ones are in
/// `embed=history`).
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    if !snapshot.jobs.contains_key(&id) {
        return Err(ApiError::unknown_job(&id));
    }
    let runs: Vec<Value> = snapshot
        .active_runs
        .get(&id)
        .map(|runs| runs.iter().map(|run| render::run(run)).collect())
        .unwrap_or_default();
    Ok(Json(runs).into_response())
}

/// `POST /v1/jobs/{id}/runs`: 201 with the new run. A body (Metronome's later
/// run overrides) is not read.
pub(crate) async fn start(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
) -> Result<Response, ApiError> {
    let run = ctx.controller.start_run(id).await?;
    Ok((StatusCode::CREATED, Json(render::run(&run))).into_response())
}

/// `GET /v1/jobs/{id}/runs/{rid}`: an active run, or a finished one still in the
/// history.
pub(crate) async fn get(
    State(ctx): State<Ctx>,
    PathArg((id, rid)): PathArg<(String, String)>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    if !snapshot.jobs.contains_key(&id) {
        return Err(ApiError::unknown_job(&id));
    }
    let active = snapshot.active_runs.get(&id).into_iter().flatten();
    let finished = snapshot.history.get(&id).into_iter().flat_map(|history| {
        history
            .successful_finished_runs
            .iter()
            .chain(&history.failed_finished_runs)
    });
    let run = active
        .chain(finished)
        .find(|run| run.id == rid)
        .ok_or_else(|| ApiError::unknown_run(&rid))?;
    Ok(Json(render::run(run)).into_response())
}

/// `POST /v1/jobs/{id}/runs/{rid}/actions/stop`: 200 with the run as the stop
/// left it.
pub(crate) async fn stop(
    State(ctx): State<Ctx>,
    PathArg((id, rid)): PathArg<(String, String)>,
) -> Result<Response, ApiError> {
    let run = ctx.controller.stop_run(id, rid).await?;
    Ok(Json(render::run(&run)).into_response())
}
