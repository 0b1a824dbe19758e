//! `/v2/apps`: list, create, bulk update; and `/v2/apps/{app_id}` with its
//! suffix routes (`/restart`, `/tasks[/{task_id}]`, `/versions[/{version}]`).
//!
//! App ids contain slashes, so everything under `/v2/apps/` arrives as one path
//! and is split here. When a path could name either an app or a suffix route of
//! its parent (an app called `/web/tasks`), the suffix route wins if the parent is
//! an app, as Marathon's routing does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::{Body, Params, PathArg};
use super::label_selector::LabelSelector;
use super::render::{AppEmbeds, app_json};
use super::{Ctx, app_tasks, deployment_response, versions};
use crate::error::AppsError;
use crate::model::app::VersionInfo;
use crate::model::{AppDefinition, PathId, RootGroup, Timestamp, ValidationErrors};

/// Computed fields a client may send back from a GET; never part of a definition.
const READ_ONLY_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "readinessCheckResults",
    "lastTaskFailure",
    "taskStats",
];

/// `GET /v2/apps?cmd=&id=&label=&embed=`.
pub(crate) async fn list(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    let selector = params
        .get("label")
        .map(LabelSelector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let cmd = params.get("cmd").map(str::to_lowercase);
    let id = params.get("id").map(str::to_lowercase);
    let embeds = AppEmbeds::list_default().with(&params.all("embed"));
    let snapshot = ctx.controller.snapshot();
    let apps: Vec<Value> = snapshot
        .root
        .apps
        .values()
        .filter(|app| {
            cmd.as_deref().is_none_or(|cmd| {
                app.cmd
                    .as_deref()
                    .is_some_and(|c| c.to_lowercase().contains(cmd))
            })
        })
        .filter(|app| {
            id.as_deref()
                .is_none_or(|id| app.id.as_str().to_lowercase().contains(id))
        })
        .filter(|app| selector.as_ref().is_none_or(|s| s.matches(&app.labels)))
        .map(|app| app_json(app, &snapshot, embeds))
        .collect();
    Ok(Json(json!({ "apps": apps })).into_response())
}

/// `POST /v2/apps`: 201 with the app as stored, `Location` and the deployment id;
/// 409 when the id is taken by an app or a group.
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    let app = AppDefinition::from_json(&body.0, &PathId::root())?;
    let id = app.id.clone();
    let stored = app.clone();
    let edit_id = id.clone();
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                ensure_free(root, &edit_id)?;
                let mut root = root.clone();
                root.apps.insert(edit_id, stored);
                Ok(root)
            }),
            Vec::new(),
            force,
        )
        .await?;
    // The controller stamps the version; show the stored definition when the
    // published state has it already, else this one with the same stamp.
    let snapshot = ctx.controller.snapshot();
    let created = match snapshot.root.apps.get(&id) {
        Some(stored) if stored.version == Some(deployment.version) => stored.clone(),
        _ => AppDefinition {
            version: Some(deployment.version),
            version_info: Some(VersionInfo {
                last_scaling_at: deployment.version,
                last_config_change_at: deployment.version,
            }),
            ..app
        },
    };
    let embeds = AppEmbeds {
        tasks: true,
        counts: true,
        deployments: true,
        ..AppEmbeds::default()
    };
    let mut json = app_json(&created, &snapshot, embeds);
    json["deployments"] = json!([{ "id": deployment.deployment_id }]);
    let mut response = (StatusCode::CREATED, Json(json)).into_response();
    set_deployment_headers(&mut response, &id, &deployment.deployment_id);
    Ok(response)
}

fn set_deployment_headers(response: &mut Response, id: &PathId, deployment_id: &str) {
    if let Ok(location) = HeaderValue::try_from(format!("/v2/apps{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Ok(deployment) = HeaderValue::try_from(deployment_id) {
        response
            .headers_mut()
            .insert(super::DEPLOYMENT_ID_HEADER, deployment);
    }
}

/// An app may be created at `id` when no app or group has it and no app is
/// above it (an app cannot contain anything).
fn ensure_free(root: &RootGroup, id: &PathId) -> Result<(), AppsError> {
    if root.apps.contains_key(id) {
        return Err(AppsError::AlreadyExists(format!(
            "An app with id [{id}] already exists."
        )));
    }
    if root
        .group_ids()
        .into_iter()
        .any(|g| g.as_str() == id.as_str())
    {
        return Err(AppsError::AlreadyExists(format!(
            "A group with id [{id}] already exists."
        )));
    }
    let mut parent = id.parent();
    while !parent.is_root() {
        if root.apps.contains_key(&parent) {
            return Err(ValidationErrors::one(
                "/id",
                format!("{parent} is an app, and an app cannot contain {id}"),
            )
            .into());
        }
        parent = parent.parent();
    }
    Ok(())
}

/// `PUT /v2/apps?partialUpdate=`: create or update several apps in one deployment.
pub(crate) async fn put_many(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let partial = params.flag("partialUpdate", true)?;
    update_many(ctx, params, body, partial).await
}

/// `PATCH /v2/apps`: like `PUT` with `partialUpdate=true`.
pub(crate) async fn patch_many(
    State(ctx): State<Ctx>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    update_many(ctx, params, body, true).await
}

async fn update_many(
    ctx: Ctx,
    params: Params,
    body: Body,
    partial: bool,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    let Value::Array(items) = body.json()? else {
        return Err(AppsError::InvalidJson("expected an array of apps".into()).into());
    };
    let mut updates = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut update) = item else {
            return Err(AppsError::InvalidJson(format!("item {index} is not an object")).into());
        };
        let id = match update.get("id") {
            Some(Value::String(raw)) => PathId::parse(raw)
                .map_err(|e| ValidationErrors::one(format!("/({index})/id"), e))?,
            _ => {
                return Err(
                    ValidationErrors::one(format!("/({index})/id"), "error.path.missing").into(),
                );
            }
        };
        strip_read_only(&mut update);
        updates.push((id, update));
    }
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                let mut root = root.clone();
                for (id, update) in updates {
                    apply_update(&mut root, &id, update, partial)?;
                }
                Ok(root)
            }),
            Vec::new(),
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}

fn strip_read_only(update: &mut Map<String, Value>) {
    for field in READ_ONLY_FIELDS {
        update.remove(*field);
    }
}

/// Applies `update` to app `id` in `root`: merged onto the existing app's JSON
/// when `partial` (fields given replace fields stored), else taken as the whole
/// definition; an app that does not exist is created. In place, so a bulk update
/// of many apps copies the root once.
fn apply_update(
    root: &mut RootGroup,
    id: &PathId,
    mut update: Map<String, Value>,
    partial: bool,
) -> Result<(), AppsError> {
    let mut merged = match root.apps.get(id) {
        Some(existing) if partial => match serde_json::to_value(existing) {
            Ok(Value::Object(mut stored)) => {
                strip_read_only(&mut stored);
                stored.append(&mut update);
                stored
            }
            _ => update,
        },
        Some(_) => update,
        None => {
            ensure_free(root, id)?;
            update
        }
    };
    merged.insert("id".into(), Value::String(id.to_string()));
    let app = AppDefinition::from_value(Value::Object(merged), &PathId::root())?;
    root.apps.insert(id.clone(), app);
    Ok(())
}

/// Where a path under `/v2/apps/` leads.
#[derive(Debug, PartialEq)]
enum AppRoute<'a> {
    App(&'a str),
    /// `{group}/*`: every app in the group, transitively.
    Transitive(&'a str),
    Restart(&'a str),
    Tasks(&'a str),
    Task(&'a str, &'a str),
    Versions(&'a str),
    Version(&'a str, &'a str),
}

fn route<'a>(method: &Method, rest: &'a str, root: &RootGroup) -> Option<AppRoute<'a>> {
    let rest = rest.trim_end_matches('/');
    let is_app = |raw: &str| {
        PathId::parse(raw)
            .ok()
            .is_some_and(|id| root.apps.contains_key(&id))
    };
    // A suffix route applies unless the whole path is an app and its prefix is not.
    let suffix = |prefix: &str| is_app(prefix) || !is_app(rest);
    let split = |marker: &str| {
        rest.rsplit_once(marker)
            .filter(|(prefix, tail)| !prefix.is_empty() && !tail.is_empty() && !tail.contains('/'))
    };
    if *method == Method::POST {
        return rest.strip_suffix("/restart").map(AppRoute::Restart);
    }
    if *method == Method::PUT || *method == Method::PATCH {
        return Some(AppRoute::App(rest));
    }
    if *method == Method::GET {
        if rest == "*" {
            return Some(AppRoute::Transitive(""));
        }
        if let Some(group) = rest.strip_suffix("/*") {
            return Some(AppRoute::Transitive(group));
        }
        if let Some(prefix) = rest.strip_suffix("/tasks").filter(|p| suffix(p)) {
            return Some(AppRoute::Tasks(prefix));
        }
        if let Some(prefix) = rest.strip_suffix("/versions").filter(|p| suffix(p)) {
            return Some(AppRoute::Versions(prefix));
        }
        if let Some((prefix, version)) = split("/versions/").filter(|(p, _)| suffix(p)) {
            return Some(AppRoute::Version(prefix, version));
        }
        return Some(AppRoute::App(rest));
    }
    if *method == Method::DELETE {
        if let Some(prefix) = rest.strip_suffix("/tasks").filter(|p| suffix(p)) {
            return Some(AppRoute::Tasks(prefix));
        }
        if let Some((prefix, task)) = split("/tasks/").filter(|(p, _)| suffix(p)) {
            return Some(AppRoute::Task(prefix, task));
        }
        return Some(AppRoute::App(rest));
    }
    None
}

/// Parses an app id from the URL; one that cannot be an id names no app.
pub(crate) fn app_id(raw: &str) -> Result<PathId, ApiError> {
    match PathId::parse(raw) {
        Ok(id) if !id.is_root() => Ok(id),
        _ => Err(ApiError::unknown_app(&format!(
            "/{}",
            raw.trim_start_matches('/')
        ))),
    }
}

/// Everything under `/v2/apps/`.
pub(crate) async fn dispatch(
    State(ctx): State<Ctx>,
    method: Method,
    PathArg(rest): PathArg<String>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    let Some(target) = route(&method, &rest, &snapshot.root) else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        ));
    };
    match target {
        AppRoute::App(raw) if method == Method::GET => show(&ctx, &app_id(raw)?, &params),
        AppRoute::App(raw) if method == Method::DELETE => delete(&ctx, app_id(raw)?, &params).await,
        AppRoute::App(raw) => {
            let id = PathId::parse(raw)
                .ok()
                .filter(|id| !id.is_root())
                .ok_or_else(|| ValidationErrors::one("/id", format!("{raw:?} is not an app id")))
                .map_err(AppsError::from)?;
            let partial = method == Method::PATCH || params.flag("partialUpdate", true)?;
            replace(&ctx, id, &params, &body, partial).await
        }
        AppRoute::Transitive(raw) => transitive(&ctx, raw, &params),
        AppRoute::Restart(raw) => restart(&ctx, app_id(raw)?, &params).await,
        AppRoute::Tasks(raw) if method == Method::GET => app_tasks::list(&ctx, &app_id(raw)?),
        AppRoute::Tasks(raw) => app_tasks::kill_all(&ctx, &app_id(raw)?, &params).await,
        AppRoute::Task(raw, task) => app_tasks::kill_one(&ctx, &app_id(raw)?, task, &params).await,
        AppRoute::Versions(raw) => versions::list(&ctx, &app_id(raw)?),
        AppRoute::Version(raw, version) => versions::get(&ctx, app_id(raw)?, version).await,
    }
}

/// `GET /v2/apps/{id}`: `{"app": ...}` with tasks, counts, deployments, last failure.
fn show(ctx: &Ctx, id: &PathId, params: &Params) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    let app = snapshot
        .root
        .apps
        .get(id)
        .ok_or_else(|| ApiError::unknown_app(id))?;
    let embeds = AppEmbeds::single_default().with(&params.all("embed"));
    Ok(Json(json!({ "app": app_json(app, &snapshot, embeds) })).into_response())
}

/// `GET /v2/apps/{group}/*`: `{"*": [...]}`, every app in the group.
fn transitive(ctx: &Ctx, raw: &str, params: &Params) -> Result<Response, ApiError> {
    let group = PathId::parse(raw).map_err(|_| ApiError::unknown_group(&raw))?;
    let snapshot = ctx.controller.snapshot();
    let embeds = AppEmbeds::single_default().with(&params.all("embed"));
    let apps: Vec<Value> = snapshot
        .root
        .apps
        .values()
        .filter(|app| app.id.is_within(&group))
        .map(|app| app_json(app, &snapshot, embeds))
        .collect();
    Ok(Json(json!({ "*": apps })).into_response())
}

/// `PUT`/`PATCH /v2/apps/{id}`: update (merged when `partial`), create when absent
/// (201), or roll back when the body is only `{"version": ...}`.
async fn replace(
    ctx: &Ctx,
    id: PathId,
    params: &Params,
    body: &Body,
    partial: bool,
) -> Result<Response, ApiError> {
    let force = params.force()?;
    let Value::Object(mut update) = body.json()? else {
        return Err(AppsError::InvalidJson("expected an app object".into()).into());
    };
    if let Some(Value::String(raw)) = update.get("id")
        && PathId::parse(raw).ok().as_ref() != Some(&id)
    {
        return Err(AppsError::from(ValidationErrors::one(
            "/id",
            format!("the id {raw:?} in the body does not match the app {id} in the URL"),
        ))
        .into());
    }
    update.remove("id");
    if update.len() == 1
        && let Some(version) = update.get("version")
    {
        let version = version
            .as_str()
            .and_then(|raw| Timestamp::parse(raw).ok())
            .ok_or_else(|| {
                AppsError::from(ValidationErrors::one(
                    "/version",
                    "expected an ISO 8601 instant",
                ))
            })?;
        return rollback(ctx, id, version, force).await;
    }
    strip_read_only(&mut update);
    let created = Arc::new(AtomicBool::new(false));
    let created_in_edit = created.clone();
    let edit_id = id.clone();
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                created_in_edit.store(!root.apps.contains_key(&edit_id), Ordering::Relaxed);
                let mut root = root.clone();
                apply_update(&mut root, &edit_id, update, partial)?;
                Ok(root)
            }),
            Vec::new(),
            force,
        )
        .await?;
    if created.load(Ordering::Relaxed) {
        let mut response = (StatusCode::CREATED, Json(&deployment)).into_response();
        set_deployment_headers(&mut response, &id, &deployment.deployment_id);
        Ok(response)
    } else {
        Ok(deployment_response(StatusCode::OK, &deployment))
    }
}

/// Deploys a stored version of an app again.
async fn rollback(
    ctx: &Ctx,
    id: PathId,
    version: Timestamp,
    force: bool,
) -> Result<Response, ApiError> {
    let old = ctx.controller.get_version(id.clone(), version).await?;
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                if !root.apps.contains_key(&id) {
                    ensure_free(root, &id)?;
                }
                let mut root = root.clone();
                root.apps.insert(id, old);
                Ok(root)
            }),
            Vec::new(),
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}

/// `DELETE /v2/apps/{id}`.
async fn delete(ctx: &Ctx, id: PathId, params: &Params) -> Result<Response, ApiError> {
    let force = params.force()?;
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                root.remove_app(&id)
                    .ok_or_else(|| AppsError::NotFound(format!("App '{id}' does not exist")))
            }),
            Vec::new(),
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}

/// `POST /v2/apps/{id}/restart`: replace every instance, definition unchanged.
async fn restart(ctx: &Ctx, id: PathId, params: &Params) -> Result<Response, ApiError> {
    let force = params.force()?;
    let edit_id = id.clone();
    let deployment = ctx
        .controller
        .deploy(
            Box::new(move |root, _version| {
                if root.apps.contains_key(&edit_id) {
                    Ok(root.clone())
                } else {
                    Err(AppsError::NotFound(format!(
                        "App '{edit_id}' does not exist"
                    )))
                }
            }),
            vec![id],
            force,
        )
        .await?;
    Ok(deployment_response(StatusCode::OK, &deployment))
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn root_with(ids: &[&str]) -> RootGroup {
        let mut root = RootGroup::default();
        for id in ids {
            let app =
                AppDefinition::from_value(json!({"id": id, "cmd": "sleep 1"}), &PathId::root())
                    .unwrap();
            root.apps.insert(app.id.clone(), app);
        }
        root
    }

    #[test]
    fn suffixes_split_off_app_ids_with_slashes() {
        let root = root_with(&["/prod/web"]);
        let get = Method::GET;
        let delete = Method::DELETE;
        assert_eq!(
            route(&get, "prod/web", &root),
            Some(AppRoute::App("prod/web"))
        );
        assert_eq!(
            route(&get, "prod/web/versions/2020-01-01T00:00:00.000Z", &root),
            Some(AppRoute::Version("prod/web", "2020-01-01T00:00:00.000Z"))
        );
        assert_eq!(
            route(&get, "prod/*", &root),
            Some(AppRoute::Transitive("prod"))
        );
        // App ids never end in a reserved word, so a suffix always means the suffix.
        assert_eq!(
            route(&get, "prod/web/tasks", &root),
            Some(AppRoute::Tasks("prod/web"))
        );
        // Neither exists: the suffix route answers (404 for `/nope`).
        assert_eq!(
            route(&get, "nope/tasks", &root),
            Some(AppRoute::Tasks("nope"))
        );
        assert_eq!(
            route(&delete, "prod/web/tasks/t.1", &root),
            Some(AppRoute::Task("prod/web", "t.1"))
        );
        assert_eq!(
            route(&Method::POST, "prod/web/restart", &root),
            Some(AppRoute::Restart("prod/web"))
        );
        assert_eq!(route(&Method::POST, "prod/web", &root), None);
        assert_eq!(
            route(&Method::PUT, "prod/web/restart", &root),
            Some(AppRoute::App("prod/web/restart"))
        );
    }
}
