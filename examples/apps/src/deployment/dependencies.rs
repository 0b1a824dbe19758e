//! The dependency graph of a root group's apps, and its layers: apps that can be
//! deployed together because everything they depend on is in an earlier layer.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{PathId, RootGroup};

/// A dependency that names neither an app nor a group with apps in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnknownDependency {
    /// The app or group that declares the dependency.
    pub declared_by: PathId,
    /// The dependency as written (app dependencies are relative to the app's group).
    pub dependency: String,
}

/// Why a root group's apps cannot be ordered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// Apps that depend on themselves through other apps. Sorted, each once.
    #[error("dependency cycle between {}", list(apps))]
    Cycle { apps: Vec<PathId> },
    /// Dependencies naming nothing that exists. Sorted.
    #[error("unknown dependencies: {}", unknown_list(dependencies))]
    Unknown {
        dependencies: Vec<UnknownDependency>,
    },
}

fn list(apps: &[PathId]) -> String {
    apps.iter()
        .map(PathId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_list(dependencies: &[UnknownDependency]) -> String {
    dependencies
        .iter()
        .map(|d| format!("{:?} (declared by {})", d.dependency, d.declared_by))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every app's direct dependencies (app ids, never itself), keyed by app id.
///
/// An app depends on what its own `dependencies` name (relative to the app's group)
/// and on what the `dependencies` of every group enclosing it name. A name is an
/// app, or a group standing for every app under it (an explicit group without apps
/// stands for none). An app that ends up depending on itself — a group depending on
/// one of its own members — has that edge dropped: it cannot wait for itself, and
/// its siblings still wait for it.
pub fn dependency_graph(
    root: &RootGroup,
) -> Result<BTreeMap<PathId, BTreeSet<PathId>>, DependencyError> {
    let mut unknown = BTreeSet::new();
    let mut graph = BTreeMap::new();
    for (id, app) in &root.apps {
        let mut deps = BTreeSet::new();
        let base = id.parent();
        for raw in &app.dependencies {
            let resolved = PathId::parse_relative(raw, &base)
                .ok()
                .and_then(|dep| members(root, &dep));
            match resolved {
                Some(apps) => deps.extend(apps),
                None => {
                    unknown.insert(UnknownDependency {
                        declared_by: id.clone(),
                        dependency: raw.clone(),
                    });
                }
            }
        }
        for group in root.groups.values().filter(|g| id.is_within(&g.id)) {
            for dep in &group.dependencies {
                deps.extend(members(root, dep).into_iter().flatten());
            }
        }
        deps.remove(id);
        graph.insert(id.clone(), deps);
    }
    // Checked apart from the apps: a group without apps may still name nothing.
    for group in root.groups.values() {
        for dep in &group.dependencies {
            if members(root, dep).is_none() {
                unknown.insert(UnknownDependency {
                    declared_by: group.id.clone(),
                    dependency: dep.to_string(),
                });
            }
        }
    }
    if unknown.is_empty() {
        Ok(graph)
    } else {
        Err(DependencyError::Unknown {
            dependencies: unknown.into_iter().collect(),
        })
    }
}

/// The apps `id` stands for: the app itself, or every app under the group `id`
/// (explicit or implied by app ids). None when nothing has that id.
fn members(root: &RootGroup, id: &PathId) -> Option<Vec<PathId>> {
    if root.apps.contains_key(id) {
        return Some(vec![id.clone()]);
    }
    let under: Vec<PathId> = root
        .apps
        .keys()
        .filter(|app| app.is_within(id))
        .cloned()
        .collect();
    if under.is_empty() && !root.groups.contains_key(id) && !id.is_root() {
        None
    } else {
        Some(under)
    }
}

/// The root group's apps in deployment order: layer `k` holds the apps whose
/// longest chain of dependencies has `k + 1` apps (Marathon's grouping by longest
/// path), so everything an app depends on lies in an earlier layer. Apps within a
/// layer are sorted by id; empty roots give no layers.
pub fn dependency_layers(root: &RootGroup) -> Result<Vec<Vec<PathId>>, DependencyError> {
    let graph = dependency_graph(root)?;
    layers_of(&graph)
}

/// Layers of a graph of app → direct dependencies (see [`dependency_layers`]).
pub(crate) fn layers_of(
    graph: &BTreeMap<PathId, BTreeSet<PathId>>,
) -> Result<Vec<Vec<PathId>>, DependencyError> {
    // Kahn's algorithm, peeling apps whose dependencies all have a depth already.
    let mut waiting_on: BTreeMap<&PathId, usize> = graph
        .iter()
        .map(|(id, deps)| (id, deps.iter().filter(|d| graph.contains_key(*d)).count()))
        .collect();
    let mut dependents: BTreeMap<&PathId, Vec<&PathId>> = BTreeMap::new();
    for (id, deps) in graph {
        for dep in deps.iter().filter(|d| graph.contains_key(*d)) {
            dependents.entry(dep).or_default().push(id);
        }
    }
    let mut depth: BTreeMap<&PathId, usize> = BTreeMap::new();
    let mut ready: Vec<&PathId> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    while let Some(id) = ready.pop() {
        let own = graph
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|dep| depth.get(dep))
            .max()
            .map_or(1, |d| d + 1);
        depth.insert(id, own);
        for dependent in dependents.get(id).into_iter().flatten() {
            if let Some(n) = waiting_on.get_mut(dependent) {
                *n -= 1;
                if *n == 0 {
                    ready.push(dependent);
                }
            }
        }
    }
    if depth.len() < graph.len() {
        return Err(DependencyError::Cycle {
            apps: apps_on_cycles(graph),
        });
    }
    let mut layers: Vec<Vec<PathId>> = Vec::new();
    for (id, d) in depth {
        if layers.len() < d {
            layers.resize_with(d, Vec::new);
        }
        layers[d - 1].push(id.clone());
    }
    for layer in &mut layers {
        layer.sort();
    }
    Ok(layers)
}

/// Apps in a strongly connected component of more than one app (self edges are
/// never in the graph), found with Kosaraju's algorithm, iteratively so that a
/// long chain of apps cannot overflow the stack.
fn apps_on_cycles(graph: &BTreeMap<PathId, BTreeSet<PathId>>) -> Vec<PathId> {
    let ids: Vec<&PathId> = graph.keys().collect();
    let index: BTreeMap<&PathId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let forward: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| {
            graph[*id]
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let mut backward = vec![Vec::new(); ids.len()];
    for (from, tos) in forward.iter().enumerate() {
        for &to in tos {
            backward[to].push(from);
        }
    }

    // First pass: vertices in order of finishing.
    let mut visited = vec![false; ids.len()];
    let mut finished = Vec::with_capacity(ids.len());
    for start in 0..ids.len() {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((v, next)) = stack.pop() {
            if let Some(&w) = forward[v].get(next) {
                stack.push((v, next + 1));
                if !visited[w] {
                    visited[w] = true;
                    stack.push((w, 0));
                }
            } else {
                finished.push(v);
            }
        }
    }

    // Second pass on the reversed graph, in reverse finishing order.
    let mut component = vec![usize::MAX; ids.len()];
    let mut sizes = Vec::new();
    for &start in finished.iter().rev() {
        if component[start] != usize::MAX {
            continue;
        }
        let c = sizes.len();
        sizes.push(0usize);
        component[start] = c;
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            sizes[c] += 1;
            for &w in &backward[v] {
                if component[w] == usize::MAX {
                    component[w] = c;
                    stack.push(w);
                }
            }
        }
    }
    ids.iter()
        .enumerate()
        .filter(|(i, _)| sizes[component[*i]] > 1)
        .map(|(_, id)| (*id).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::{app, group, root};

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    fn layers(r: &RootGroup) -> Vec<Vec<String>> {
        dependency_layers(r)
            .unwrap()
            .iter()
            .map(|l| l.iter().map(PathId::to_string).collect())
            .collect()
    }

    #[test]
    fn independent_apps_form_one_layer() {
        let r = root(vec![app("/a", &[]), app("/b", &[])], vec![]);
        assert_eq!(layers(&r), vec![vec!["/a", "/b"]]);
        assert!(dependency_layers(&RootGroup::default()).unwrap().is_empty());
    }

    #[test]
    fn layers_follow_the_longest_dependency_path() {
        // web → api → db, and web → db directly: web's longest chain is 3 apps.
        let r = root(
            vec![
                app("/prod/db", &[]),
                app("/prod/api", &["db"]),
                app("/prod/web", &["api", "/prod/db"]),
                app("/prod/cache", &[]),
                app("/prod/worker", &["db"]),
            ],
            vec![],
        );
        assert_eq!(
            layers(&r),
            vec![
                vec!["/prod/cache", "/prod/db"],
                vec!["/prod/api", "/prod/worker"],
                vec!["/prod/web"],
            ]
        );
    }

    #[test]
    fn relative_ids_resolve_against_the_apps_group() {
        let r = root(
            vec![
                app("/a/b/web", &["../db", "./cache"]),
                app("/a/db", &[]),
                app("/a/b/cache", &[]),
            ],
            vec![],
        );
        let graph = dependency_graph(&r).unwrap();
        assert_eq!(
            graph[&p("/a/b/web")],
            [p("/a/b/cache"), p("/a/db")].into_iter().collect()
        );
    }

    #[test]
    fn a_group_dependency_stands_for_every_app_under_it() {
        let r = root(
            vec![
                app("/data/db", &[]),
                app("/data/cache/redis", &[]),
                app("/front/web", &["/data"]),
            ],
            vec![],
        );
        assert_eq!(
            layers(&r),
            vec![vec!["/data/cache/redis", "/data/db"], vec!["/front/web"]]
        );
    }

    #[test]
    fn enclosing_group_dependencies_apply_to_every_app_inside() {
        let r = root(
            vec![
                app("/db", &[]),
                app("/svc/a", &[]),
                app("/svc/inner/b", &[]),
                app("/other", &[]),
            ],
            vec![group("/svc", &["/db"]), group("/svc/inner", &["/svc/a"])],
        );
        assert_eq!(
            layers(&r),
            vec![vec!["/db", "/other"], vec!["/svc/a"], vec!["/svc/inner/b"]]
        );
        let graph = dependency_graph(&r).unwrap();
        assert_eq!(
            graph[&p("/svc/inner/b")],
            [p("/db"), p("/svc/a")].into_iter().collect()
        );
        assert_eq!(graph[&p("/svc/a")], [p("/db")].into_iter().collect());
        assert!(graph[&p("/other")].is_empty());
    }

    #[test]
    fn a_group_depending_on_its_own_member_orders_the_siblings() {
        let r = root(
            vec![app("/prod/db", &[]), app("/prod/web", &[])],
            vec![group("/prod", &["/prod/db"])],
        );
        assert_eq!(layers(&r), vec![vec!["/prod/db"], vec!["/prod/web"]]);
    }

    #[test]
    fn an_empty_explicit_group_is_a_known_dependency() {
        let r = root(vec![app("/web", &["/empty"])], vec![group("/empty", &[])]);
        assert_eq!(layers(&r), vec![vec!["/web"]]);
    }

    #[test]
    fn cycles_are_named() {
        let r = root(
            vec![
                app("/a", &["b"]),
                app("/b", &["c"]),
                app("/c", &["a"]),
                app("/d", &["a"]),
                app("/e", &[]),
            ],
            vec![],
        );
        let err = dependency_layers(&r).unwrap_err();
        assert_eq!(
            err,
            DependencyError::Cycle {
                apps: vec![p("/a"), p("/b"), p("/c")]
            }
        );
        assert_eq!(err.to_string(), "dependency cycle between /a, /b, /c");
    }

    #[test]
    fn cycles_through_groups_are_named() {
        let r = root(
            vec![app("/x/a", &[]), app("/y/b", &[])],
            vec![group("/x", &["/y"]), group("/y", &["/x"])],
        );
        assert_eq!(
            dependency_layers(&r).unwrap_err(),
            DependencyError::Cycle {
                apps: vec![p("/x/a"), p("/y/b")]
            }
        );
    }

    #[test]
    fn unknown_dependencies_are_named() {
        let r = root(
            vec![
                app("/prod/web", &["db", "/nowhere/x", "BAD!"]),
                app("/db", &[]),
            ],
            vec![group("/g", &["/missing"])],
        );
        let err = dependency_layers(&r).unwrap_err();
        let DependencyError::Unknown { dependencies } = &err else {
            panic!("{err:?}")
        };
        let named: Vec<(&str, &str)> = dependencies
            .iter()
            .map(|d| (d.declared_by.as_str(), d.dependency.as_str()))
            .collect();
        assert_eq!(
            named,
            vec![
                ("/g", "/missing"),
                ("/prod/web", "/nowhere/x"),
                ("/prod/web", "BAD!"),
                ("/prod/web", "db"),
            ]
        );
        assert!(err.to_string().contains("\"db\" (declared by /prod/web)"));
    }

    #[test]
    fn a_long_chain_neither_overflows_nor_loses_order() {
        let n = 5000;
        let apps = (0..n)
            .map(|i| {
                let dep = format!("/a{}", i + 1);
                if i + 1 < n {
                    app(&format!("/a{i}"), &[dep.as_str()])
                } else {
                    app(&format!("/a{i}"), &[])
                }
            })
            .collect();
        let r = root(apps, vec![]);
        let l = dependency_layers(&r).unwrap();
        assert_eq!(l.len(), n);
        assert_eq!(l[0], vec![p(&format!("/a{}", n - 1))]);
        assert_eq!(l[n - 1], vec![p("/a0")]);

        // Close the chain into one cycle of all of them.
        let mut cyclic = r.clone();
        if let Some(last) = cyclic.apps.get_mut(&p(&format!("/a{}", n - 1))) {
            last.dependencies = vec!["/a0".to_string()];
        }
        let DependencyError::Cycle { apps } = dependency_layers(&cyclic).unwrap_err() else {
            panic!("expected a cycle")
        };
        assert_eq!(apps.len(), n);
    }
}
