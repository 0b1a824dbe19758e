//! [`RootGroup`]: the whole desired state, every app and group, at one version.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::validation::Violations;
use super::{AppDefinition, ModelError, PathId, Timestamp, ValidationErrors, json};

/// A group's own settings; its apps and subgroups are found by id prefix in
/// [`RootGroup`]. Groups implied by an app id exist without a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDefinition {
    pub id: PathId,
    /// Groups or apps (absolute ids) deployed before everything in this group.
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub version: Timestamp,
}

/// Every app and explicitly created group, flat and keyed by id. The apps framework
/// stores it as the target of the current deployments; a deployment is the step
/// from one root to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootGroup {
    /// Invariant: every key equals its app's `id`; no app id is also a group id.
    pub apps: BTreeMap<PathId, AppDefinition>,
    /// Invariant: every key equals its group's `id`; never the root.
    pub groups: BTreeMap<PathId, GroupDefinition>,
    /// The version of the last change (None before the first).
    pub version: Option<Timestamp>,
}

/// A `/v2/groups` request body: a group with its apps and subgroups, ids relative
/// to the group they are in. Apps are kept as JSON until the group they belong to is
/// known (their ids resolve against it). Special bodies: only `version` is a
/// rollback ([`GroupUpdate::is_rollback`], handled by the caller); `scaleBy` scales
/// every app in the group.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupUpdate {
    /// Relative to the enclosing group (for the top level, to where the request is
    /// addressed); required for subgroups.
    #[serde(default)]
    pub id: Option<String>,
    /// The group's own apps; when given, they are all of them under `replace`.
    #[serde(default)]
    pub apps: Option<Vec<serde_json::Value>>,
    /// Direct subgroups; when given, they are all of them under `replace`.
    #[serde(default)]
    pub groups: Option<Vec<GroupUpdate>>,
    #[serde(default)]
    pub dependencies: Option<Vec<String>>,
    /// Roll the group back to this version.
    #[serde(default)]
    pub version: Option<Timestamp>,
    /// Multiply every app's instances by this factor (rounded up, as Marathon does).
    #[serde(default)]
    pub scale_by: Option<f64>,
    /// Accepted for compatibility; Agora has no group roles.
    #[serde(default)]
    pub enforce_role: Option<bool>,
}

impl GroupUpdate {
    /// Parses a request body: not JSON → [`ModelError::InvalidJson`]; wrong shape →
    /// [`ModelError::Invalid`] naming the path. Apps are checked on apply.
    pub fn from_json(body: &[u8]) -> Result<GroupUpdate, ModelError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ModelError::InvalidJson(e.to_string()))?;
        Ok(json::from_value(&value)?)
    }

    /// True for a body that asks to roll the group back to `version`.
    pub fn is_rollback(&self) -> bool {
        self.version.is_some()
    }

    /// The group this body names: its `id` resolved against `base`, or `base`.
    pub fn group_id(&self, base: &PathId) -> Result<PathId, ModelError> {
        match &self.id {
            None => Ok(base.clone()),
            Some(raw) => PathId::parse_relative(raw, base)
                .map_err(|e| ModelError::Invalid(ValidationErrors::one("/id", e))),
        }
    }
}

impl RootGroup {
    /// The root with `update` applied to `group` (an absolute id; the body's own
    /// top-level `id` is the caller's business, see [`GroupUpdate::group_id`]).
    ///
    /// - `scaleBy`: every app in the group gets `ceil(instances × scaleBy)`; nothing
    ///   else changes.
    /// - `replace` (PUT, and POST of a new group): given `apps` are the group's apps
    ///   (its other apps are removed), given `groups` its subgroups (others removed,
    ///   with everything in them), each applied the same way; what is not given stays.
    /// - otherwise (PATCH): given apps are added or replaced, given subgroups merged
    ///   the same way; nothing is removed.
    ///
    /// Apps get no version here (the controller stamps them); the group records
    /// touched get `version`. A rollback body (`version`) is refused: the caller
    /// handles it. The result is validated, apps and group rules alike.
    pub fn apply_group_update(
        &self,
        group: &PathId,
        update: GroupUpdate,
        version: Timestamp,
        replace: bool,
    ) -> Result<RootGroup, ModelError> {
        if let Some(target) = update.version {
            return Err(ValidationErrors::one(
                "/version",
                format!("a rollback to {target} is not a change of the group's content"),
            )
            .into());
        }
        let mut root = self.clone();
        root.version = Some(version);
        if let Some(factor) = update.scale_by {
            if !(factor.is_finite() && factor >= 0.0) {
                return Err(ValidationErrors::one(
                    "/scaleBy",
                    format!("got {factor}, expected 0.0 or more"),
                )
                .into());
            }
            for app in root.apps.values_mut().filter(|a| a.id.is_within(group)) {
                let scaled = (app.instances as f64 * factor).ceil();
                if scaled > f64::from(i32::MAX) {
                    return Err(ValidationErrors::one(
                        "/scaleBy",
                        format!("would give {} {scaled} instances", app.id),
                    )
                    .into());
                }
                app.instances = scaled as i64;
            }
        } else {
            let mut violations = Violations::default();
            root.apply_structure(group, update, version, replace, "", &mut violations);
            violations.into_result()?;
        }
        root.validate()?;
        Ok(root)
    }

    fn apply_structure(
        &mut self,
        group: &PathId,
        update: GroupUpdate,
        version: Timestamp,
        replace: bool,
        path: &str,
        violations: &mut Violations,
    ) {
        if let Some(apps) = update.apps {
            let mut parsed = BTreeMap::new();
            for (index, value) in apps.into_iter().enumerate() {
                let app_path = format!("{path}/apps({index})");
                let app = match AppDefinition::normalized(value, group) {
                    Ok(app) => app,
                    Err(errors) => {
                        violations.nested(&app_path, errors);
                        continue;
                    }
                };
                if let Err(errors) = app.validate() {
                    violations.nested(&app_path, errors);
                }
                if app.id.parent() != *group {
                    violations.add(
                        format!("{app_path}/id"),
                        format!("Identifier is not child of '{group}'"),
                    );
                }
                if parsed.insert(app.id.clone(), app).is_some() {
                    violations.add(format!("{app_path}/id"), "is given twice");
                }
            }
            if replace {
                self.apps.retain(|id, _| id.parent() != *group);
            }
            self.apps.extend(parsed);
        }
        if let Some(groups) = update.groups {
            let mut named = BTreeSet::new();
            let mut children = Vec::new();
            for (index, child) in groups.into_iter().enumerate() {
                let child_path = format!("{path}/groups({index})");
                let id = match child
                    .id
                    .as_deref()
                    .map(|raw| PathId::parse_relative(raw, group))
                {
                    None => {
                        violations.add(format!("{child_path}/id"), "error.path.missing");
                        continue;
                    }
                    Some(Err(e)) => {
                        violations.add(format!("{child_path}/id"), e);
                        continue;
                    }
                    Some(Ok(id)) => id,
                };
                if id.parent() != *group || id.is_root() {
                    violations.add(
                        format!("{child_path}/id"),
                        format!("Identifier is not child of '{group}'"),
                    );
                    continue;
                }
                if !named.insert(id.clone()) {
                    violations.add(format!("{child_path}/id"), "is given twice");
                    continue;
                }
                children.push((id, child, child_path));
            }
            if replace {
                let removed: Vec<PathId> = self
                    .group_ids()
                    .into_iter()
                    .filter(|id| !id.is_root() && id.parent() == *group && !named.contains(id))
                    .collect();
                for id in removed {
                    self.remove_within(&id);
                }
            }
            for (id, child, child_path) in children {
                self.apply_structure(&id, child, version, replace, &child_path, violations);
            }
        }
        let dependencies = update.dependencies.map(|raw| {
            raw.iter()
                .enumerate()
                .filter_map(|(index, dependency)| {
                    PathId::parse_relative(dependency, group)
                        .map_err(|e| violations.add(format!("{path}/dependencies({index})"), e))
                        .ok()
                })
                .collect::<Vec<_>>()
        });
        if !group.is_root() {
            let record = self
                .groups
                .entry(group.clone())
                .or_insert_with(|| GroupDefinition {
                    id: group.clone(),
                    dependencies: Vec::new(),
                    version,
                });
            record.version = version;
            if let Some(dependencies) = dependencies {
                record.dependencies = dependencies;
            }
        }
    }

    /// Every group id: explicit ones and those implied by app ids, with all their
    /// ancestors, the root included.
    pub fn group_ids(&self) -> BTreeSet<PathId> {
        let mut ids = BTreeSet::from([PathId::root()]);
        let starts = self
            .groups
            .keys()
            .cloned()
            .chain(self.apps.keys().map(PathId::parent));
        for start in starts {
            let mut id = start;
            while ids.insert(id.clone()) {
                id = id.parent();
            }
        }
        ids
    }

    /// The root without `group` and everything in it (for the root: without any app
    /// or group). A group that does not exist is an error; callers answering 404
    /// check [`RootGroup::group_ids`] first.
    pub fn remove_group(&self, group: &PathId) -> Result<RootGroup, ModelError> {
        if !self.group_ids().contains(group) {
            return Err(
                ValidationErrors::one("/id", format!("Group '{group}' does not exist")).into(),
            );
        }
        let mut root = self.clone();
        root.remove_within(group);
        Ok(root)
    }

    /// The root without app `app`, or None when there is no such app.
    pub fn remove_app(&self, app: &PathId) -> Option<RootGroup> {
        let mut root = self.clone();
        root.apps.remove(app)?;
        Some(root)
    }

    fn remove_within(&mut self, group: &PathId) {
        self.apps.retain(|id, _| !id.is_within(group));
        self.groups.retain(|id, _| !id.is_within(group));
    }

    /// Marathon's group JSON: `{id, apps, groups, pods, dependencies, version}`, apps
    /// rendered by `render_app`; `apps` and `groups` only when embedded (subgroups
    /// then with the same embedding). None when there is no such group.
    pub fn to_group_json(
        &self,
        group: &PathId,
        render_app: &dyn Fn(&AppDefinition) -> serde_json::Value,
        embed_apps: bool,
        embed_groups: bool,
    ) -> Option<serde_json::Value> {
        let ids = self.group_ids();
        if !ids.contains(group) {
            return None;
        }
        Some(self.render_group(group, &ids, render_app, embed_apps, embed_groups))
    }

    fn render_group(
        &self,
        group: &PathId,
        ids: &BTreeSet<PathId>,
        render_app: &dyn Fn(&AppDefinition) -> serde_json::Value,
        embed_apps: bool,
        embed_groups: bool,
    ) -> serde_json::Value {
        let record = self.groups.get(group);
        let mut out = serde_json::Map::new();
        out.insert("id".into(), serde_json::json!(group));
        if embed_apps {
            let apps = self
                .apps
                .values()
                .filter(|app| app.id.parent() == *group)
                .map(render_app)
                .collect();
            out.insert("apps".into(), serde_json::Value::Array(apps));
        }
        if embed_groups {
            let groups = ids
                .iter()
                .filter(|id| !id.is_root() && id.parent() == *group)
                .map(|id| self.render_group(id, ids, render_app, embed_apps, embed_groups))
                .collect();
            out.insert("groups".into(), serde_json::Value::Array(groups));
        }
        out.insert("pods".into(), serde_json::json!([]));
        let dependencies = record.map(|r| r.dependencies.clone()).unwrap_or_default();
        out.insert("dependencies".into(), serde_json::json!(dependencies));
        let version = record.map(|r| r.version).or(self.version);
        out.insert("version".into(), serde_json::json!(version));
        serde_json::Value::Object(out)
    }

    /// Rules across apps and groups: no app id is also a group id, and every
    /// dependency names an existing app or group. (Dependency cycles are the
    /// deployment planner's to find.)
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut violations = Violations::default();
        let groups = self.group_ids();
        for id in self.apps.keys() {
            if groups.contains(id) {
                violations.add(
                    id.as_str(),
                    "Groups and Applications may not have the same identifier.",
                );
            }
        }
        let exists = |id: &PathId| self.apps.contains_key(id) || groups.contains(id);
        for app in self.apps.values() {
            for (index, dependency) in app.dependencies.iter().enumerate() {
                let known = PathId::parse(dependency).is_ok_and(|id| exists(&id));
                if !known {
                    violations.add(
                        format!("/apps({})/dependencies({index})", app.id),
                        format!("Dependency {dependency} does not name an existing app or group"),
                    );
                }
            }
        }
        for group in self.groups.values() {
            for (index, dependency) in group.dependencies.iter().enumerate() {
                if !exists(dependency) {
                    violations.add(
                        format!("/groups({})/dependencies({index})", group.id),
                        format!("Dependency {dependency} does not name an existing app or group"),
                    );
                }
            }
        }
        violations.into_result()
    }
}
