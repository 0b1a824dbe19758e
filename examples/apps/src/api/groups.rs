//! `/v2/groups[/{group_id}]`: the tree of groups and apps. The model builds and
//! changes the tree ([`RootGroup`]'s group functions); this file maps HTTP onto
//! them: `POST` creates (409 when the group exists), `PUT` applies a group update
//! replacing what it names, `PATCH` merges, `DELETE` removes a group and its apps.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Body, Params, PathArg};
use super::render::{AppEmbeds, app_json};
use super::{Ctx, deployment_response};
use crate::error::AppsError;
use crate::model::{GroupUpdate, PathId, RootGroup, ValidationErrors};

fn group_id(raw: &str) -> Result<PathId, ApiError> {
    PathId::parse(raw).map_err(|_| ApiError::unknown_group(&format!("/{raw}")))
}

fn has_group(root: &RootGroup, id: &PathId) -> bool {
    root.group_ids()
        .into_iter()
        .any(|g| g.as_str() == id.as_str())
}

pub(crate) async fn get_root(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    show(&ctx, &PathId::root(), &params)
}

pub(crate) async fn get_one(
    State(ctx): State<Ctx>,
    PathArg(rest): PathArg<String>,
    params: Params,
) -> Result<Response, ApiError> {
    show(&ctx, &group_id(&rest)?, &params)
}

/// A group's JSON. `embed=group.groups` / `group.apps` choose what is nested (both
/// when neither is given); `group.apps.<x>` adds app embeds such as tasks.
fn show(ctx: &Ctx, id: &PathId, params: &Params) -> Result<Response, ApiError> {
    let embeds = params.all("embed");
    let (app_embeds, group_embeds): (Vec<&str>, Vec<&str>) =
        embeds.iter().partition(|e| e.starts_with("group.apps."));
    let (embed_apps, embed_groups) = if group_embeds.is_empty() {
        (true, true)
    } else {
        (
            group_embeds.contains(&"group.apps"),
            group_embeds.contains(&"group.groups"),
        )
    };
    let app_embeds = AppEmbeds::default().with(&app_embeds);
    let snapshot = ctx.controller.snapshot();
    let render = |app: &crate::model::AppDefinition| app_json(app, &snapshot, app_embeds);
    snapshot
        .root
        .to_group_json(id, &render, embed_apps, embed_groups)
        .map(|json| Json(json).into_response())
        .ok_or_else(|| ApiError::unknown_group(id))
}

pub(crate) async fn create_root(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    create_in(&ctx, PathId::root(), &params, &body).await
}

pub(crate) async fn create(
    State(ctx): State<Ctx>,
    PathArg(rest): PathArg<String>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    create_in(&ctx, group_id(&rest)?, &params, &body).await
}

/// `POST`: the body's `id` is relative to the group in the URL.
async fn create_in(
    ctx: &Ctx,
    base: PathId,
    params: &Params,
    body: &Body,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    let update = GroupUpdate::from_json(&body.0)?;
    let target = match body.json()?.get("id") {
        Some(Value::String(raw)) => PathId::parse_relative(raw, &base)
            .map_err(|e| AppsError::from(ValidationErrors::one("/id", e)))?,
        _ => base.clone(),
    };
    if target.is_root() {
        return Err(AppsError::from(ValidationErrors::one(
            "/id",
            "the root group exists already; use PUT to change it",
        ))
        .into());
    }
    let edit_target = target.clone();
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, version| {
                if has_group(root, &edit_target) || root.apps.contains_key(&edit_target) {
                    return Err(AppsError::AlreadyExists(format!(
                        "Group {edit_target} is already created. Use PUT to change this group."
                    )));
                }
                Ok(root.apply_group_update(&edit_target, update, version, true)?)
            }),
            Vec::new(),
            force,
        )
        .await?;
    let mut response = (StatusCode::CREATED, Json(&deployment)).into_response();
    if let Ok(location) = HeaderValue::try_from(format!("/v2/groups{target}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Ok(id) = HeaderValue::try_from(deployment.deployment_id.as_str()) {
        response
            .headers_mut()
            .insert(super::DEPLOYMENT_ID_HEADER, id);
    }
    Ok(response)
}

pub(crate) async fn put_root(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    update(&ctx, PathId::root(), &params, &body, true).await
}

pub(crate) async fn put(
    State(ctx): State<Ctx>,
    PathArg(rest): PathArg<String>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    update(&ctx, group_id(&rest)?, &params, &body, true).await
}

pub(crate) async fn patch_root(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    update(&ctx, PathId::root(), &params, &body, false).await
}

pub(crate) async fn patch(
    State(ctx): State<Ctx>,
    PathArg(rest): PathArg<String>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    update(&ctx, group_id(&rest)?, &params, &body, false).await
}

/// `PUT` (`replace`) or `PATCH`: apply a group update, creating the group if needed.
async fn update(
    ctx: &Ctx,
    group: PathId,
    params: &Params,
    body: &Body,
    replace: bool,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    if params.flag("dryRun", false)? {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "dryRun is not supported: deploy, then inspect /v2/deployments",
        ));
    }
    let update = GroupUpdate::from_json(&body.0)?;
    if update.is_rollback() {
        // Only apps' versions are kept; a group has no history to go back to.
        return Err(AppsError::from(ValidationErrors::one(
            "/version",
            "groups keep no versions; roll back apps with PUT /v2/apps/{id} {\"version\": ...}",
        ))
        .into());
    }
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, version| {
                Ok(root.apply_group_update(&group, update, version, replace)?)
            }),
            Vec::new(),
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}

pub(crate) async fn delete_root(
    State(ctx): State<Ctx>,
    params: Params,
) -> Result<Response, ApiError> {
    remove(&ctx, PathId::root(), &params).await
}

pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    PathArg(rest): PathArg<String>,
    params: Params,
) -> Result<Response, ApiError> {
    remove(&ctx, group_id(&rest)?, &params).await
}

/// `DELETE`: the group, its subgroups and all their apps.
async fn remove(ctx: &Ctx, group: PathId, params: &Params) -> Result<Response, ApiError> {
    let force = params.force()?;
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                if !has_group(root, &group) {
                    return Err(AppsError::NotFound(format!(
                        "Group '{group}' does not exist"
                    )));
                }
                Ok(root.remove_group(&group)?)
            }),
            Vec::new(),
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}
