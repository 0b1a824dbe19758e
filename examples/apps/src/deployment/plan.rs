//! Deployment plans: the steps from one root group to the next, and the way back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::dependencies::{DependencyError, dependency_layers};
use crate::model::{AppDefinition, PathId, RootGroup};

/// What a deployment does to one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    /// The app is new. Like Marathon's `StartApplication(scaleTo = 0)` it launches
    /// nothing: the new app's instances are launched by the [`ActionKind::Scale`]
    /// in its dependency layer, so that new apps start in dependency order.
    Start,
    /// The app was removed: kill all its instances.
    Stop,
    /// Bring the app to its `instances` (a new app, or only `instances` changed).
    Scale,
    /// Replace every instance with one of the new definition, following the
    /// app's `upgradeStrategy`.
    Restart,
}

impl ActionKind {
    /// Marathon's name for the action, as `/v2/deployments` shows it.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Start => "StartApplication",
            ActionKind::Stop => "StopApplication",
            ActionKind::Scale => "ScaleApplication",
            ActionKind::Restart => "RestartApplication",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub app: PathId,
}

/// Actions that run together; a step starts when the one before it has finished.
/// Invariant (for plans from [`plan`]): never empty, at most one action per app,
/// sorted by app id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub actions: Vec<Action>,
}

/// True when `b` differs from `a` in anything but `instances`, `version` and
/// `version_info` — or in `version_info.last_config_change_at`, which is how a
/// restart of an unchanged definition is expressed. A definition without
/// `version_info` (never stored) has no config change time to compare.
pub fn config_changed(a: &AppDefinition, b: &AppDefinition) -> bool {
    let config_change =
        |app: &AppDefinition| app.version_info.as_ref().map(|v| v.last_config_change_at);
    if let (Some(x), Some(y)) = (config_change(a), config_change(b))
        && x != y
    {
        return true;
    }
    let mut aligned = b.clone();
    aligned.instances = a.instances;
    aligned.version = a.version;
    aligned.version_info = a.version_info.clone();
    *a != aligned
}

/// The steps that take the apps of `from` to those of `to` (Marathon's
/// `DeploymentPlan`):
/// 1. stop the removed apps — in reverse dependency order (per `from`) when
///    removed apps depend on each other, so that a dependent app is gone before
///    what it depends on; otherwise in one step;
/// 2. start the new apps (with no instances yet), all in one step;
/// 3. one step per dependency layer of `to`: a new app, or one whose `instances`
///    alone changed, is scaled; one whose configuration changed, or that is in
///    `restart`, is restarted; an unchanged app has no action.
///
/// Empty steps are dropped. Fails when `to`'s dependencies cannot be ordered.
pub fn plan(
    from: &RootGroup,
    to: &RootGroup,
    restart: &[PathId],
) -> Result<Vec<Step>, DependencyError> {
    let target_layers = dependency_layers(to)?;
    let restart: BTreeSet<&PathId> = restart.iter().collect();
    let mut steps = Vec::new();

    let removed: BTreeSet<&PathId> = from
        .apps
        .keys()
        .filter(|id| !to.apps.contains_key(*id))
        .collect();
    if !removed.is_empty() {
        // `from` was accepted, so it orders; should it somehow not, stopping
        // everything at once is still correct, only less polite.
        let source_layers =
            dependency_layers(from).unwrap_or_else(|_| vec![from.apps.keys().cloned().collect()]);
        for layer in source_layers.iter().rev() {
            steps.push(step(
                layer.iter().filter(|id| removed.contains(id)),
                ActionKind::Stop,
            ));
        }
    }

    steps.push(step(
        to.apps.keys().filter(|id| !from.apps.contains_key(*id)),
        ActionKind::Start,
    ));

    for layer in &target_layers {
        let actions = layer.iter().filter_map(|id| {
            let new = to.apps.get(id)?;
            let kind = match from.apps.get(id) {
                None => Some(ActionKind::Scale),
                Some(old) if restart.contains(id) || config_changed(old, new) => {
                    Some(ActionKind::Restart)
                }
                Some(old) if old.instances != new.instances => Some(ActionKind::Scale),
                Some(_) => None,
            }?;
            Some(Action {
                kind,
                app: id.clone(),
            })
        });
        steps.push(Step {
            actions: actions.collect(),
        });
    }

    steps.retain(|s| !s.actions.is_empty());
    Ok(steps)
}

fn step<'a>(apps: impl Iterator<Item = &'a PathId>, kind: ActionKind) -> Step {
    let mut actions: Vec<Action> = apps
        .map(|app| Action {
            kind,
            app: app.clone(),
        })
        .collect();
    actions.sort_by(|a, b| a.app.cmp(&b.app));
    Step { actions }
}

/// Every app a plan touches, sorted, each once: the apps its deployment locks.
pub fn affected_apps(steps: &[Step]) -> Vec<PathId> {
    steps
        .iter()
        .flat_map(|s| s.actions.iter().map(|a| a.app.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// True when two deployments touch a common app (so they cannot run together).
pub fn conflicts(a_affected: &[PathId], b_affected: &[PathId]) -> bool {
    let a: BTreeSet<&PathId> = a_affected.iter().collect();
    b_affected.iter().any(|id| a.contains(id))
}

/// The root to deploy to roll back the deployment `original → target`, given the
/// root as it is now (`current`, which may hold other deployments' changes too):
/// Marathon's `DeploymentPlanReverter`.
///
/// Each app the deployment changed (its definition differs between `original`
/// and `target`) or names in `affected` gets its `original` definition back, or
/// is removed when it did not exist in `original`. Groups: one the deployment
/// removed is restored; one it changed gets the dependencies it lost back and
/// loses those it gained (keeping any a concurrent change added); one it created
/// is removed if nothing is left in it and nobody changed it, otherwise only the
/// dependencies it came with are removed. The root's `version` is left for the
/// caller to stamp.
pub fn revert(
    original: &RootGroup,
    target: &RootGroup,
    current: &RootGroup,
    affected: &[PathId],
) -> RootGroup {
    let mut result = current.clone();

    let changed: BTreeSet<&PathId> = original
        .apps
        .keys()
        .chain(target.apps.keys())
        .filter(|id| original.apps.get(*id) != target.apps.get(*id))
        .chain(affected.iter())
        .collect();
    for id in changed {
        match original.apps.get(id) {
            Some(app) => {
                result.apps.insert(id.clone(), app.clone());
            }
            None => {
                result.apps.remove(id);
            }
        }
    }

    // Innermost groups first, so that a parent created by the deployment is seen
    // empty once its created children are gone.
    let group_ids: BTreeSet<&PathId> = original.groups.keys().chain(target.groups.keys()).collect();
    for id in group_ids.into_iter().rev() {
        match (original.groups.get(id), target.groups.get(id)) {
            (Some(old), None) => match result.groups.get_mut(id) {
                Some(now) => {
                    for dep in &old.dependencies {
                        if !now.dependencies.contains(dep) {
                            now.dependencies.push(dep.clone());
                        }
                    }
                }
                None => {
                    result.groups.insert(id.clone(), old.clone());
                }
            },
            (Some(old), Some(new)) => match result.groups.get_mut(id) {
                Some(now) => {
                    now.dependencies
                        .retain(|d| old.dependencies.contains(d) || !new.dependencies.contains(d));
                    for dep in &old.dependencies {
                        if !new.dependencies.contains(dep) && !now.dependencies.contains(dep) {
                            now.dependencies.push(dep.clone());
                        }
                    }
                }
                None => {
                    result.groups.insert(id.clone(), old.clone());
                }
            },
            (None, Some(new)) => {
                let holds_anything = result.apps.keys().any(|a| a.is_within(id))
                    || result.groups.keys().any(|g| g != id && g.is_within(id));
                if let Some(now) = result.groups.get_mut(id) {
                    if !holds_anything && now.dependencies == new.dependencies {
                        result.groups.remove(id);
                    } else {
                        now.dependencies.retain(|d| !new.dependencies.contains(d));
                    }
                }
            }
            (None, None) => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::{app, group, root};
    use crate::model::Timestamp;
    use crate::model::app::VersionInfo;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    /// Steps as `[["StopApplication /a", ...], ...]`.
    fn shape(steps: &[Step]) -> Vec<Vec<String>> {
        steps
            .iter()
            .map(|s| {
                s.actions
                    .iter()
                    .map(|a| format!("{} {}", a.kind.name(), a.app))
                    .collect()
            })
            .collect()
    }

    fn with_instances(mut a: AppDefinition, n: i64) -> AppDefinition {
        a.instances = n;
        a
    }

    fn stamped(mut a: AppDefinition, version: i64, config_change: i64) -> AppDefinition {
        a.version = Some(Timestamp::from_millis(version));
        a.version_info = Some(VersionInfo {
            last_scaling_at: Timestamp::from_millis(version),
            last_config_change_at: Timestamp::from_millis(config_change),
        });
        a
    }

    #[test]
    fn config_changed_ignores_instances_and_versions() {
        let a = stamped(app("/a", &[]), 1, 1);
        let scaled = stamped(with_instances(a.clone(), 5), 2, 1);
        assert!(!config_changed(&a, &scaled));
        assert!(!config_changed(&a, &a));

        let mut cmd = scaled.clone();
        cmd.cmd = Some("other".into());
        assert!(config_changed(&a, &cmd));

        let mut env = a.clone();
        env.env.insert("K".into(), "V".into());
        assert!(config_changed(&a, &env));

        // A restart: same definition, a newer config change time.
        let restarted = stamped(a.clone(), 3, 3);
        assert!(config_changed(&a, &restarted));

        // Unstamped definitions have no config change time to compare.
        let mut unstamped = a.clone();
        unstamped.version_info = None;
        unstamped.version = None;
        assert!(!config_changed(&a, &unstamped));
        assert!(!config_changed(&unstamped, &a));
    }

    #[test]
    fn action_names_are_marathons() {
        assert_eq!(ActionKind::Start.name(), "StartApplication");
        assert_eq!(ActionKind::Stop.name(), "StopApplication");
        assert_eq!(ActionKind::Scale.name(), "ScaleApplication");
        assert_eq!(ActionKind::Restart.name(), "RestartApplication");
    }

    #[test]
    fn new_apps_start_then_scale_in_dependency_order() {
        let from = RootGroup::default();
        let to = root(
            vec![app("/db", &[]), app("/web", &["db"]), app("/cache", &[])],
            vec![],
        );
        let steps = plan(&from, &to, &[]).unwrap();
        assert_eq!(
            shape(&steps),
            vec![
                vec![
                    "StartApplication /cache",
                    "StartApplication /db",
                    "StartApplication /web"
                ],
                vec!["ScaleApplication /cache", "ScaleApplication /db"],
                vec!["ScaleApplication /web"],
            ]
        );
    }

    #[test]
    fn removed_apps_stop_dependents_first() {
        let from = root(
            vec![
                app("/db", &[]),
                app("/web", &["db"]),
                app("/other", &[]),
                app("/kept", &[]),
            ],
            vec![],
        );
        let to = root(vec![app("/kept", &[])], vec![]);
        assert_eq!(
            shape(&plan(&from, &to, &[]).unwrap()),
            vec![
                vec!["StopApplication /web"],
                vec!["StopApplication /db", "StopApplication /other"],
            ]
        );

        // Without dependencies between them, all stop in one step.
        let from = root(vec![app("/a", &[]), app("/b", &[])], vec![]);
        assert_eq!(
            shape(&plan(&from, &RootGroup::default(), &[]).unwrap()),
            vec![vec!["StopApplication /a", "StopApplication /b"]]
        );
    }

    #[test]
    fn changes_become_scale_restart_or_nothing() {
        let base = stamped(app("/same", &[]), 1, 1);
        let from = root(
            vec![
                base.clone(),
                stamped(app("/scaled", &[]), 1, 1),
                stamped(app("/changed", &[]), 1, 1),
                stamped(app("/both", &[]), 1, 1),
                stamped(app("/restarted", &[]), 1, 1),
                stamped(app("/version-only", &[]), 1, 1),
                stamped(app("/gone", &[]), 1, 1),
            ],
            vec![],
        );
        let mut changed = stamped(app("/changed", &[]), 2, 2);
        changed.mem = 256.0;
        let mut both = stamped(with_instances(app("/both", &[]), 3), 2, 2);
        both.cpus = 0.5;
        let to = root(
            vec![
                base,
                stamped(with_instances(app("/scaled", &[]), 4), 2, 1),
                changed,
                both,
                stamped(app("/restarted", &[]), 1, 1),
                stamped(app("/version-only", &[]), 2, 1),
                stamped(app("/new", &[]), 2, 2),
            ],
            vec![],
        );
        let steps = plan(&from, &to, &[p("/restarted"), p("/new"), p("/not-there")]).unwrap();
        assert_eq!(
            shape(&steps),
            vec![
                vec!["StopApplication /gone"],
                vec!["StartApplication /new"],
                vec![
                    "RestartApplication /both",
                    "RestartApplication /changed",
                    "ScaleApplication /new",
                    "RestartApplication /restarted",
                    "ScaleApplication /scaled",
                ],
            ]
        );
        assert_eq!(
            affected_apps(&steps),
            vec![
                p("/both"),
                p("/changed"),
                p("/gone"),
                p("/new"),
                p("/restarted"),
                p("/scaled")
            ]
        );
    }

    #[test]
    fn an_unchanged_root_plans_nothing() {
        let r = root(vec![app("/a", &["b"]), app("/b", &[])], vec![]);
        assert!(plan(&r, &r, &[]).unwrap().is_empty());
    }

    #[test]
    fn upgrades_follow_the_targets_dependencies() {
        let from = root(vec![app("/db", &[]), app("/web", &[])], vec![]);
        let mut db = app("/db", &[]);
        db.cmd = Some("db v2".into());
        let mut web = app("/web", &["db"]);
        web.cmd = Some("web v2".into());
        let to = root(vec![db, web], vec![]);
        assert_eq!(
            shape(&plan(&from, &to, &[]).unwrap()),
            vec![
                vec!["RestartApplication /db"],
                vec!["RestartApplication /web"]
            ]
        );
    }

    #[test]
    fn plans_refuse_a_cyclic_target() {
        let to = root(vec![app("/a", &["b"]), app("/b", &["a"])], vec![]);
        assert!(matches!(
            plan(&RootGroup::default(), &to, &[]),
            Err(DependencyError::Cycle { .. })
        ));
    }

    #[test]
    fn conflicts_mean_a_shared_app() {
        assert!(conflicts(&[p("/a"), p("/b")], &[p("/c"), p("/b")]));
        assert!(!conflicts(&[p("/a")], &[p("/b")]));
        assert!(!conflicts(&[], &[p("/b")]));
    }

    #[test]
    fn revert_restores_changed_apps_and_removes_created_ones() {
        let original = root(
            vec![
                app("/changed", &[]),
                app("/removed", &[]),
                app("/untouched", &[]),
            ],
            vec![],
        );
        let mut changed = app("/changed", &[]);
        changed.cmd = Some("v2".into());
        let target = root(
            vec![
                changed.clone(),
                app("/created", &[]),
                app("/untouched", &[]),
            ],
            vec![],
        );
        // Meanwhile another deployment added /other and scaled /untouched.
        let mut current = target.clone();
        current.apps.insert(p("/other"), app("/other", &[]));
        current
            .apps
            .insert(p("/untouched"), with_instances(app("/untouched", &[]), 7));

        let reverted = revert(
            &original,
            &target,
            &current,
            &[p("/changed"), p("/created"), p("/removed")],
        );
        assert_eq!(
            reverted.apps.keys().cloned().collect::<Vec<_>>(),
            vec![p("/changed"), p("/other"), p("/removed"), p("/untouched")]
        );
        assert_eq!(reverted.apps[&p("/changed")], original.apps[&p("/changed")]);
        assert_eq!(reverted.apps[&p("/untouched")].instances, 7);
        assert_eq!(reverted.version, current.version);

        // Reverting with nothing concurrent gives the original apps back.
        let plain = revert(
            &original,
            &target,
            &target,
            &affected_apps(&plan(&original, &target, &[]).unwrap()),
        );
        assert_eq!(plain.apps, original.apps);
    }

    #[test]
    fn revert_covers_affected_apps_with_unchanged_definitions() {
        // A restart requested through `restart` without a new definition.
        let original = root(vec![app("/r", &[])], vec![]);
        let mut current = original.clone();
        current
            .apps
            .insert(p("/r"), with_instances(app("/r", &[]), 3));
        let reverted = revert(&original, &original, &current, &[p("/r")]);
        assert_eq!(reverted.apps[&p("/r")].instances, 1);
        let untouched = revert(&original, &original, &current, &[]);
        assert_eq!(untouched.apps[&p("/r")].instances, 3);
    }

    #[test]
    fn revert_restores_groups() {
        let original = root(
            vec![app("/g/a", &[]), app("/db", &[]), app("/cache", &[])],
            vec![group("/g", &["/db"]), group("/old", &["/db"])],
        );
        let target = root(
            vec![
                app("/g/a", &[]),
                app("/db", &[]),
                app("/cache", &[]),
                app("/new/b", &[]),
            ],
            vec![
                group("/g", &["/cache"]),
                group("/new", &["/db"]),
                group("/new/inner", &[]),
            ],
        );
        let reverted = revert(&original, &target, &target, &[p("/new/b")]);
        assert!(!reverted.apps.contains_key(&p("/new/b")));
        assert_eq!(reverted.groups, original.groups);

        // A created group that something else filled stays, without the
        // dependencies the deployment gave it.
        let mut current = target.clone();
        current.apps.insert(p("/new/c"), app("/new/c", &[]));
        let reverted = revert(&original, &target, &current, &[p("/new/b")]);
        assert_eq!(
            reverted.groups[&p("/new")].dependencies,
            Vec::<PathId>::new()
        );
        assert!(reverted.apps.contains_key(&p("/new/c")));

        // A dependency added concurrently to a changed group survives.
        let mut current = target.clone();
        if let Some(g) = current.groups.get_mut(&p("/g")) {
            g.dependencies.push(p("/other"));
        }
        let reverted = revert(&original, &target, &current, &[]);
        assert_eq!(
            reverted.groups[&p("/g")].dependencies,
            vec![p("/other"), p("/db")]
        );
    }
}
