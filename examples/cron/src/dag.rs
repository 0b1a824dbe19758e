//! Dependencies between jobs: a DAG, cycles refused. Pure.
//!
//! A job lists the ids of the jobs it depends on (its parents). [`check`] refuses
//! a set of jobs that names a job that does not exist or whose dependencies loop;
//! [`order`] lists jobs parents first; [`dependents`] finds the children to look at
//! when a run finishes; [`ready`] says whether a dependent job may run now.
//!
//! Readiness follows Metronome and Chronos: a dependent job runs once all of its
//! parents have succeeded since its own last run, so each round of parent
//! successes starts it once. A parent whose latest run failed blocks it, with the
//! parent named, until that parent succeeds again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

/// Why a set of job dependencies was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("job `{job}` depends on `{dependency}`, which does not exist")]
    UnknownDependency { job: String, dependency: String },
    /// `path` starts and ends with the same job: `["a", "b", "a"]`.
    #[error("jobs depend on each other in a cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
}

/// Refuses unknown dependency ids and cycles. `jobs` maps each job id to the ids
/// it depends on.
pub fn check(jobs: &BTreeMap<String, Vec<String>>) -> Result<(), DagError> {
    order(jobs).map(|_| ())
}

/// Every job, each after all of its parents; among jobs free to go next, by id, so
/// the order is deterministic. Fails as [`check`] does.
pub fn order(jobs: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, DagError> {
    for (job, parents) in jobs {
        if let Some(dependency) = parents.iter().find(|p| !jobs.contains_key(*p)) {
            return Err(DagError::UnknownDependency {
                job: job.clone(),
                dependency: dependency.clone(),
            });
        }
    }
    // Kahn's algorithm: count each job's distinct parents still to be placed.
    let mut waiting: BTreeMap<&str, usize> = jobs
        .iter()
        .map(|(job, parents)| {
            let distinct: BTreeSet<&String> = parents.iter().collect();
            (job.as_str(), distinct.len())
        })
        .collect();
    let children = children_of(jobs);
    let mut free: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(job, _)| *job)
        .collect();
    let mut ordered = Vec::with_capacity(jobs.len());
    while let Some(job) = free.pop_first() {
        ordered.push(job.to_string());
        for child in children.get(job).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(child) {
                *n -= 1;
                if *n == 0 {
                    free.insert(child);
                }
            }
        }
    }
    if ordered.len() < jobs.len() {
        let placed: BTreeSet<&str> = ordered.iter().map(String::as_str).collect();
        let path = find_cycle(jobs, &placed).unwrap_or_default();
        return Err(DagError::Cycle { path });
    }
    Ok(ordered)
}

/// The jobs that depend directly on `id`, by id.
pub fn dependents<'a>(jobs: &'a BTreeMap<String, Vec<String>>, id: &str) -> Vec<&'a str> {
    jobs.iter()
        .filter(|(_, parents)| parents.iter().any(|p| p == id))
        .map(|(job, _)| job.as_str())
        .collect()
}

/// For each job, the distinct jobs that depend on it.
fn children_of(jobs: &BTreeMap<String, Vec<String>>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (job, parents) in jobs {
        for parent in parents {
            children
                .entry(parent.as_str())
                .or_default()
                .insert(job.as_str());
        }
    }
    children
}

/// A cycle among the jobs not in `placed` (every one of them is on or behind a
/// cycle), as a path that returns to its first job. Iterative, so a long chain of
/// dependencies cannot overflow the stack.
fn find_cycle(
    jobs: &BTreeMap<String, Vec<String>>,
    placed: &BTreeSet<&str>,
) -> Option<Vec<String>> {
    let start = jobs.keys().find(|j| !placed.contains(j.as_str()))?;
    // Follow any unplaced parent: each unplaced job has one, because it is waiting
    // on a parent that was never placed. Walking parents must revisit a job.
    let mut path: Vec<&str> = vec![start.as_str()];
    let mut seen: BTreeMap<&str, usize> = BTreeMap::from([(start.as_str(), 0)]);
    loop {
        let current = *path.last()?;
        let next = jobs
            .get(current)?
            .iter()
            .find(|p| !placed.contains(p.as_str()))?;
        if let Some(&at) = seen.get(next.as_str()) {
            // The cycle is the part of the walk from `next` on; present it in the
            // direction of dependency ("a -> b": a depends on b).
            let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.clone());
            return Some(cycle);
        }
        seen.insert(next.as_str(), path.len());
        path.push(next.as_str());
    }
}

/// What a parent job's history says: the instants its latest successful and its
/// latest failed runs finished (Metronome's `lastSuccessAt`, `lastFailureAt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentRuns {
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
}

impl ParentRuns {
    /// Whether the parent's latest finished run failed.
    fn failed_last(&self) -> bool {
        match (self.last_failure, self.last_success) {
            (Some(failure), Some(success)) => failure > success,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Whether a dependent job may run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every parent has succeeded since the job last started (or it never started
    /// and every parent has succeeded once).
    Ready,
    /// These parents have not succeeded since the job last started.
    Waiting { on: Vec<String> },
    /// These parents' latest runs failed; the job waits until they succeed again.
    Blocked { failed: Vec<String> },
}

/// Whether a job with these `parents` may run: Ready when each parent's latest
/// success is later than `own_last_start` (strictly: a success at the very instant
/// the job started counts for that run, not the next one), Blocked when any
/// parent's latest run failed, else Waiting. A job without parents is always
/// Ready. `runs` gives each parent's history. Parents are reported in the order
/// given, each once.
pub fn ready(
    parents: &[String],
    runs: &impl Fn(&str) -> ParentRuns,
    own_last_start: Option<DateTime<Utc>>,
) -> Readiness {
    let mut waiting = Vec::new();
    let mut failed = Vec::new();
    let mut seen = BTreeSet::new();
    for parent in parents.iter().filter(|p| seen.insert(p.as_str())) {
        let history = runs(parent);
        if history.failed_last() {
            failed.push(parent.clone());
            continue;
        }
        let fresh = match (history.last_success, own_last_start) {
            (Some(success), Some(start)) => success > start,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fresh {
            waiting.push(parent.clone());
        }
    }
    if !failed.is_empty() {
        Readiness::Blocked { failed }
    } else if !waiting.is_empty() {
        Readiness::Waiting { on: waiting }
    } else {
        Readiness::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn jobs(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(job, parents)| {
                (
                    job.to_string(),
                    parents.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect()
    }

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_dag_passes_and_is_ordered_parents_first() {
        let jobs = jobs(&[
            ("report", &["load", "clean"]),
            ("load", &["extract"]),
            ("clean", &["extract", "extract"]),
            ("extract", &[]),
            ("alone", &[]),
        ]);
        check(&jobs).unwrap();
        assert_eq!(
            order(&jobs).unwrap(),
            names(&["alone", "extract", "clean", "load", "report"])
        );
    }

    #[test]
    fn an_unknown_dependency_is_named_with_its_job() {
        let jobs = jobs(&[("a", &["b"]), ("b", &["ghost"])]);
        let error = check(&jobs).unwrap_err();
        assert_eq!(
            error,
            DagError::UnknownDependency {
                job: "b".into(),
                dependency: "ghost".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "job `b` depends on `ghost`, which does not exist"
        );
    }

    #[test]
    fn a_two_job_cycle_is_named() {
        let jobs = jobs(&[("a", &["b"]), ("b", &["a"])]);
        let error = check(&jobs).unwrap_err();
        assert_eq!(
            error.to_string(),
            "jobs depend on each other in a cycle: a -> b -> a"
        );
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let jobs = jobs(&[("a", &["a"])]);
        assert_eq!(
            check(&jobs).unwrap_err(),
            DagError::Cycle {
                path: names(&["a", "a"])
            }
        );
    }

    #[test]
    fn a_cycle_behind_a_tail_is_reported_without_the_tail() {
        // x depends on the cycle b -> c -> d -> b but is not part of it.
        let jobs = jobs(&[
            ("a", &[]),
            ("b", &["c"]),
            ("c", &["d"]),
            ("d", &["b", "a"]),
            ("x", &["b"]),
        ]);
        let DagError::Cycle { path } = check(&jobs).unwrap_err() else {
            panic!("expected a cycle");
        };
        assert_eq!(path, names(&["b", "c", "d", "b"]));
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 100_000;
        let mut jobs: BTreeMap<String, Vec<String>> = (0..n)
            .map(|i| (format!("j{i:06}"), vec![format!("j{:06}", i + 1)]))
            .collect();
        jobs.insert(format!("j{n:06}"), vec![]);
        let ordered = order(&jobs).unwrap();
        assert_eq!(ordered.first().map(String::as_str), Some("j100000"));
        assert_eq!(ordered.last().map(String::as_str), Some("j000000"));
        // Closing the chain into a loop is found without recursion too.
        jobs.insert(format!("j{n:06}"), vec!["j000000".into()]);
        let DagError::Cycle { path } = check(&jobs).unwrap_err() else {
            panic!("expected a cycle");
        };
        assert_eq!(path.len(), n + 2);
    }

    #[test]
    fn dependents_lists_direct_children() {
        let jobs = jobs(&[("a", &[]), ("b", &["a"]), ("c", &["b", "a"]), ("d", &["c"])]);
        assert_eq!(dependents(&jobs, "a"), vec!["b", "c"]);
        assert_eq!(dependents(&jobs, "d"), Vec::<&str>::new());
    }

    fn history(table: Vec<(&'static str, ParentRuns)>) -> impl Fn(&str) -> ParentRuns {
        move |id| {
            table
                .iter()
                .find(|(p, _)| *p == id)
                .map(|(_, r)| *r)
                .unwrap_or_default()
        }
    }

    fn ok(hour: u32) -> ParentRuns {
        ParentRuns {
            last_success: Some(at(hour)),
            last_failure: None,
        }
    }

    #[test]
    fn ready_once_every_parent_succeeded_since_the_last_start() {
        let parents = names(&["a", "b"]);
        let runs = history(vec![("a", ok(3)), ("b", ok(5))]);
        assert_eq!(ready(&parents, &runs, None), Readiness::Ready);
        assert_eq!(ready(&parents, &runs, Some(at(2))), Readiness::Ready);
        // Started at 4: b's success at 5 is new, a's at 3 is not.
        assert_eq!(
            ready(&parents, &runs, Some(at(4))),
            Readiness::Waiting { on: names(&["a"]) }
        );
        // A success at the very instant of the start belonged to that run.
        assert_eq!(
            ready(&parents, &runs, Some(at(5))),
            Readiness::Waiting {
                on: names(&["a", "b"])
            }
        );
    }

    #[test]
    fn a_parent_that_never_ran_is_waited_on() {
        let parents = names(&["a", "never", "a"]);
        let runs = history(vec![("a", ok(3))]);
        assert_eq!(
            ready(&parents, &runs, None),
            Readiness::Waiting {
                on: names(&["never"])
            }
        );
    }

    #[test]
    fn a_failed_latest_run_blocks_until_the_parent_succeeds_again() {
        let parents = names(&["a", "b"]);
        let failed_after_success = ParentRuns {
            last_success: Some(at(1)),
            last_failure: Some(at(2)),
        };
        let runs = history(vec![("a", failed_after_success), ("b", ok(3))]);
        assert_eq!(
            ready(&parents, &runs, None),
            Readiness::Blocked {
                failed: names(&["a"])
            }
        );
        // A failure that a later success superseded blocks nothing.
        let recovered = ParentRuns {
            last_success: Some(at(4)),
            last_failure: Some(at(2)),
        };
        let runs = history(vec![("a", recovered), ("b", ok(3))]);
        assert_eq!(ready(&parents, &runs, Some(at(0))), Readiness::Ready);
        // Only failures: blocked too.
        let only_failed = ParentRuns {
            last_success: None,
            last_failure: Some(at(2)),
        };
        let runs = history(vec![("a", only_failed), ("b", only_failed)]);
        assert_eq!(
            ready(&parents, &runs, None),
            Readiness::Blocked {
                failed: names(&["a", "b"])
            }
        );
    }

    #[test]
    fn a_job_without_parents_is_ready() {
        let runs = history(vec![]);
        assert_eq!(ready(&[], &runs, Some(at(1))), Readiness::Ready);
    }
}
