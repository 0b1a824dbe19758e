//! `/v2/apps/{app_id}/versions[/{version}]`: an app's stored versions.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Ctx;
use super::error::ApiError;
use crate::model::{PathId, Timestamp};

/// `GET /v2/apps/{id}/versions`: `{"versions": [...]}`, newest first (the one to
/// roll back to is usually second).
pub(crate) fn list(ctx: &Ctx, id: &PathId) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    let mut versions: Vec<Timestamp> = match snapshot.versions.get(id) {
        Some(versions) => versions.clone(),
        None => match snapshot.root.apps.get(id) {
            Some(app) => app.version.into_iter().collect(),
            None => return Err(ApiError::unknown_app(id)),
        },
    };
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.dedup();
    Ok(Json(json!({ "versions": versions })).into_response())
}

/// `GET /v2/apps/{id}/versions/{version}`: the definition as it was stored then.
pub(crate) async fn get(ctx: &Ctx, id: PathId, raw: &str) -> Result<Response, ApiError> {
    let version = Timestamp::parse(raw).map_err(ApiError::bad_request)?;
    let app = ctx.controller.get_version(id, version).await?;
    Ok(Json(app).into_response())
}
