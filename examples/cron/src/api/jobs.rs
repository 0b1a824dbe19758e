//! `/v1/jobs` and `/v1/jobs/{id}`: list, create (schedules may be inlined), get
//! (with embeds), replace, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Ctx;
use super::error::ApiError;
use super::extract::{Body, Params, PathArg};
use super::render::{self, Embeds};
use crate::model::JobSpec;

/// `GET /v1/jobs?embed=...`: every job, by id.
pub(crate) async fn list(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    let embeds = Embeds::from_params(&params)?;
    let snapshot = ctx.controller.snapshot();
    let jobs: Vec<Value> = snapshot
        .jobs
        .values()
        .map(|job| render::job_info(job, &snapshot, embeds))
        .collect();
    Ok(Json(jobs).into_response())
}

/// `POST /v1/jobs`: 201 with the job (its schedules, if inlined, are created with
/// it and shown by `embed=schedules`); 409 when the id is taken.
pub(crate) async fn create(State(ctx): State<Ctx>, Body(body): Body) -> Result<Response, ApiError> {
    let (job, schedules) = JobSpec::from_json(&body)?;
    let created = ctx.controller.put_job(job, schedules, true).await?;
    Ok((StatusCode::CREATED, Json(render::job(&created))).into_response())
}

/// `GET /v1/jobs/{id}?embed=...`.
pub(crate) async fn get(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let embeds = Embeds::from_params(&params)?;
    let snapshot = ctx.controller.snapshot();
    let job = snapshot
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::unknown_job(&id))?;
    Ok(Json(render::job_info(job, &snapshot, embeds)).into_response())
}

/// `PUT /v1/jobs/{id}`: replaces the job (the body's `id` may be left out). Its
/// schedules are kept, as Metronome keeps them, unless the body gives
/// `schedules`, which then replace them.
pub(crate) async fn replace(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (job, schedules) = JobSpec::from_json_with_id(&body, &id)?;
    let replaced = ctx.controller.put_job(job, schedules, false).await?;
    Ok(Json(render::job(&replaced)).into_response())
}

/// `DELETE /v1/jobs/{id}?stopCurrentJobRuns=true|false`: 200 with the deleted
/// job; 409 while runs are active unless `stopCurrentJobRuns` (which stops them).
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let stop = params.flag("stopCurrentJobRuns", false)?;
    let deleted = ctx.controller.delete_job(id, stop).await?;
    Ok(Json(render::job(&deleted)).into_response())
}
