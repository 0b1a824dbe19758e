//! `/v1/jobs/{id}/schedules` and `/v1/jobs/{id}/schedules/{sid}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Ctx;
use super::error::ApiError;
use super::extract::{Body, PathArg};
use super::render;
use crate::model::ScheduleSpec;

/// `GET /v1/jobs/{id}/schedules`.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    if !snapshot.jobs.contains_key(&id) {
        return Err(ApiError::unknown_job(&id));
    }
    let schedules: Vec<Value> = snapshot
        .schedules
        .get(&id)
        .map(|list| list.iter().map(render::schedule).collect())
        .unwrap_or_default();
    Ok(Json(schedules).into_response())
}

/// `POST /v1/jobs/{id}/schedules`: 201 with the schedule; 409 when its id is taken.
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    PathArg(id): PathArg<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let schedule = ScheduleSpec::from_json(&body)?;
    let created = ctx.controller.put_schedule(id, schedule, true).await?;
    Ok((StatusCode::CREATED, Json(render::schedule(&created))).into_response())
}

/// `GET /v1/jobs/{id}/schedules/{sid}`.
pub(crate) async fn get(
    State(ctx): State<Ctx>,
    PathArg((id, sid)): PathArg<(String, String)>,
) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    if !snapshot.jobs.contains_key(&id) {
        return Err(ApiError::unknown_job(&id));
    }
    let schedule = snapshot
        .schedules
        .get(&id)
        .and_then(|list| list.iter().find(|s| s.id == sid))
        .ok_or_else(|| ApiError::unknown_schedule(&sid))?;
    Ok(Json(render::schedule(schedule)).into_response())
}

/// `PUT /v1/jobs/{id}/schedules/{sid}`: replaces the schedule (the body's `id` may
/// be left out; another one is a 422).
pub(crate) async fn replace(
    State(ctx): State<Ctx>,
    PathArg((id, sid)): PathArg<(String, String)>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let schedule = ScheduleSpec::from_json_with_id(&body, &sid)?;
    let replaced = ctx.controller.put_schedule(id, schedule, false).await?;
    Ok(Json(render::schedule(&replaced)).into_response())
}

/// `DELETE /v1/jobs/{id}/schedules/{sid}`: 200 with no body, as Metronome answers.
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    PathArg((id, sid)): PathArg<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.controller.delete_schedule(id, sid).await?;
    Ok(StatusCode::OK.into_response())
}
