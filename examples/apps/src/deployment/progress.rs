//! What one deployment action (or the steady state) wants done now, derived from
//! the app's target definition and its instances as they are.
//!
//! Every decision here is a pure function of the current instances, so the caller
//! may ask again after every change (a status update, a health or readiness
//! result, a kill it issued) and gets the same answer until something changes:
//!
//! - an instance listed in [`Progress::kill`] is expected to get goal
//!   `Decommissioned` (and its task a kill) before the next call; from then on it is
//!   never listed again, never wanted, never healthy for the rules below, but it
//!   still occupies capacity until its task is terminal (or it was never launched);
//! - [`Progress::launch`] counts instances to *create* now; once created (goal
//!   Running, not launched yet) they count as started, so the next call asks for
//!   fewer. Relaunching an instance whose task ended stays the caller's (with
//!   backoff): such an instance keeps its goal and is still counted as started.

use std::cmp::Ordering;

use agora_sdk::proto as pb;

use super::plan::ActionKind;
use crate::model::app::KillSelection;
use crate::model::{AppDefinition, Timestamp};
use crate::state::{Goal, Instance};

/// What to do now for one app, and whether the action is finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Instance ids to decommission and kill, in kill order.
    pub kill: Vec<String>,
    /// New instances of the target definition to create now.
    pub launch: u32,
    /// The action has reached its end (for [`converge`]: nothing left to do).
    pub done: bool,
    /// Why the action is not done yet, as a sentence (None when done).
    pub waiting_for: Option<String>,
}

/// Where an instance's current task is, as far as deployments care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No task launched yet (or the instance waits for its relaunch slot).
    Unlaunched,
    /// The task ended; with goal Running the caller relaunches it.
    Terminal,
    /// Being killed; still holds its resources.
    Killing,
    /// The agent is out of reach: the task may or may not still run.
    Unreachable,
    Staging,
    Starting,
    Running,
}

fn phase(instance: &Instance) -> Phase {
    use pb::TaskState as S;
    match instance.state {
        None => Phase::Unlaunched,
        Some(raw) => match pb::TaskState::try_from(raw) {
            Ok(S::TaskStaging) => Phase::Staging,
            Ok(S::TaskStarting) => Phase::Starting,
            Ok(S::TaskRunning) => Phase::Running,
            Ok(S::TaskKilling) => Phase::Killing,
            // A lost task may come back (Mesos sends LOST for partitions to
            // frameworks that are not partition-aware), and a state this build
            // does not know cannot be assumed gone: both may still hold resources.
            Ok(S::TaskUnreachable | S::TaskLost) | Err(_) => Phase::Unreachable,
            Ok(
                S::TaskFinished
                | S::TaskFailed
                | S::TaskKilled
                | S::TaskError
                | S::TaskDropped
                | S::TaskGone
                | S::TaskGoneByOperator
                | S::TaskUnknown,
            ) => Phase::Terminal,
        },
    }
}

/// The task may still run and hold resources: it counts against capacity and a
/// decommissioned instance is not gone until this is false.
fn alive(instance: &Instance) -> bool {
    !matches!(phase(instance), Phase::Unlaunched | Phase::Terminal)
}

fn wanted(instance: &Instance) -> bool {
    instance.goal == Goal::Running
}

/// Healthy by the app's health checks: running and, when `checked`, reported
/// healthy. Without checks a running task is healthy.
fn healthy_under(instance: &Instance, checked: bool) -> bool {
    phase(instance) == Phase::Running && instance.healthy.unwrap_or(!checked)
}

/// An instance of an older definition counts as healthy when running and not
/// reported unhealthy (Marathon's `consideredHealthy`): whether its version had
/// health checks is not known here, and one whose checks have not reported yet
/// is treated as serving.
fn old_healthy(instance: &Instance) -> bool {
    phase(instance) == Phase::Running && instance.healthy != Some(false)
}

fn ready_under(instance: &Instance, target: &AppDefinition) -> bool {
    target.readiness_checks.is_empty() || instance.ready
}

/// Healthy and ready by the target's checks: what a deployment waits for.
fn serving(instance: &Instance, target: &AppDefinition) -> bool {
    healthy_under(instance, !target.health_checks.is_empty()) && ready_under(instance, target)
}

/// Runs the target's configuration: launched with the target's version, or with a
/// version between the target's last configuration change and the target (only
/// `instances` changed since).
fn runs_target(instance: &Instance, target: &AppDefinition) -> bool {
    if target.version == Some(instance.app_version) {
        return true;
    }
    match (&target.version_info, target.version) {
        (Some(info), Some(version)) => {
            info.last_config_change_at <= instance.app_version && instance.app_version <= version
        }
        _ => false,
    }
}

fn target_count(target: &AppDefinition) -> usize {
    usize::try_from(target.instances.max(0)).unwrap_or(usize::MAX)
}

fn as_launch(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The order in which surplus instances are killed (Marathon's
/// `ScalingProposition`): instances that run nothing (not launched, ended, already
/// being killed) first — dropping them costs nothing — then Unreachable, Staging,
/// Starting, Running. Ties go by `kill_selection`: `YOUNGEST_FIRST` kills the
/// latest staged (Staging) or started (Starting, Running) first; an instance
/// without that time goes first; the instance id breaks remaining ties.
pub fn kill_order(selection: KillSelection, instances: &mut [&Instance]) {
    fn weight(p: Phase) -> u8 {
        match p {
            Phase::Unlaunched | Phase::Terminal | Phase::Killing => 0,
            Phase::Unreachable => 1,
            Phase::Staging => 2,
            Phase::Starting => 3,
            Phase::Running => 4,
        }
    }
    fn since(i: &Instance) -> Option<Timestamp> {
        match phase(i) {
            Phase::Staging => i.staged_at,
            _ => i.started_at.or(i.staged_at),
        }
    }
    instances.sort_by(|a, b| {
        weight(phase(a))
            .cmp(&weight(phase(b)))
            .then_with(|| match (since(a), since(b)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => match selection {
                    KillSelection::YoungestFirst => y.cmp(&x),
                    KillSelection::OldestFirst => x.cmp(&y),
                },
            })
            .then_with(|| a.instance_id.cmp(&b.instance_id))
    });
}

/// What `kind` wants done now for the app `target`, given all its instances
/// (any version, any goal). See the module documentation for how the caller acts
/// on the answer.
///
/// - [`ActionKind::Start`]: nothing; done at once (see its documentation).
/// - [`ActionKind::Scale`]: instances with goal Running are brought to
///   `target.instances` (for a daemon app the caller passes the count it decided);
///   surplus is killed in [`kill_order`]. Done when exactly that many are running,
///   healthy (when the app has health checks) and ready (when it has readiness
///   checks), and no decommissioned instance is still alive.
/// - [`ActionKind::Restart`]: the rolling replace (see [`RestartStrategy`]).
/// - [`ActionKind::Stop`]: every instance is killed; done when none is alive.
pub fn advance(kind: ActionKind, target: &AppDefinition, instances: &[Instance]) -> Progress {
    match kind {
        ActionKind::Start => Progress {
            done: true,
            ..Progress::default()
        },
        ActionKind::Scale => scale(target, instances),
        ActionKind::Restart => restart(target, instances),
        ActionKind::Stop => stop(instances),
    }
}

/// Between deployments: keep `target.instances` instances with goal Running —
/// create the missing ones, kill the surplus in [`kill_order`]. Health and
/// readiness are not looked at (the caller relaunches failed tasks with backoff).
/// `done` means there is nothing to do.
pub fn converge(target: &AppDefinition, instances: &[Instance]) -> Progress {
    let (kill, launch) = rebalance(target, instances);
    let done = kill.is_empty() && launch == 0;
    let waiting_for = (!done).then(|| {
        if launch > 0 {
            format!("{launch} instance(s) missing")
        } else {
            format!("{} surplus instance(s)", kill.len())
        }
    });
    Progress {
        kill,
        launch: as_launch(launch),
        done,
        waiting_for,
    }
}

/// The instances to kill and the number to create so that exactly
/// `target.instances` have goal Running.
fn rebalance(target: &AppDefinition, instances: &[Instance]) -> (Vec<String>, usize) {
    let n = target_count(target);
    let mut running: Vec<&Instance> = instances.iter().filter(|i| wanted(i)).collect();
    if running.len() > n {
        kill_order(target.kill_selection, &mut running);
        let surplus = running.len() - n;
        let kill = running[..surplus]
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();
        (kill, 0)
    } else {
        (Vec::new(), n - running.len())
    }
}

fn scale(target: &AppDefinition, instances: &[Instance]) -> Progress {
    let n = target_count(target);
    let (kill, launch) = rebalance(target, instances);
    let wanted_count = instances.iter().filter(|i| wanted(i)).count();
    let serving_count = instances
        .iter()
        .filter(|i| wanted(i) && serving(i, target))
        .count();
    let dying = instances.iter().filter(|i| !wanted(i) && alive(i)).count();
    let done =
        kill.is_empty() && launch == 0 && wanted_count == n && serving_count == n && dying == 0;
    let waiting_for = (!done).then(|| {
        let mut parts = vec![format!(
            "{serving_count} of {n} instances {}",
            serving_word(target)
        )];
        if dying + kill.len() > 0 {
            parts.push(format!(
                "{} instance(s) still being killed",
                dying + kill.len()
            ));
        }
        parts.join("; ")
    });
    Progress {
        kill,
        launch: as_launch(launch),
        done,
        waiting_for,
    }
}

fn serving_word(target: &AppDefinition) -> &'static str {
    match (
        target.health_checks.is_empty(),
        target.readiness_checks.is_empty(),
    ) {
        (true, true) => "running",
        (false, true) => "healthy",
        (true, false) => "ready",
        (false, false) => "healthy and ready",
    }
}

fn stop(instances: &[Instance]) -> Progress {
    let mut to_kill: Vec<&Instance> = instances.iter().filter(|i| wanted(i)).collect();
    kill_order(Default::default(), &mut to_kill);
    let alive_count = instances.iter().filter(|i| alive(i)).count();
    let done = to_kill.is_empty() && alive_count == 0;
    Progress {
        kill: to_kill.iter().map(|i| i.instance_id.clone()).collect(),
        launch: 0,
        done,
        waiting_for: (!done).then(|| format!("{alive_count} instance(s) still being killed")),
    }
}

/// The limits of a rolling replace (Marathon's `computeRestartStrategy`), for
/// `n = target.instances`:
/// - `min_healthy = ceil(n × minimumHealthCapacity)`: a kill never takes the count
///   of healthy instances with goal Running (old, or new and ready) below it;
/// - `max_capacity = floor(n × (1 + maximumOverCapacity))`: instances that may be
///   alive at once, old and new, including those being killed; plus one when
///   `min_healthy == max_capacity <= healthy` (otherwise no room to start a
///   single new instance without going below `min_healthy`).
///
/// Both products are rounded as decimal arithmetic would (`10 × 0.3` is 3, not the
/// 3.0000000000000004 that would ceil to 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartStrategy {
    pub min_healthy: usize,
    pub max_capacity: usize,
}

/// Slack for float products of small counts and fractions given in decimal.
const ROUNDING_SLACK: f64 = 1e-9;

impl RestartStrategy {
    /// `healthy`: instances with goal Running that count as healthy now.
    pub fn compute(target: &AppDefinition, healthy: usize) -> RestartStrategy {
        let n = target_count(target) as f64;
        let fraction = |x: f64, default: f64| {
            if x.is_finite() {
                x.clamp(0.0, 1.0)
            } else {
                default
            }
        };
        let strategy = &target.upgrade_strategy;
        let min_health = fraction(strategy.minimum_health_capacity, 1.0);
        let over = fraction(strategy.maximum_over_capacity, 1.0);
        // Float → usize saturates; counts are far below 2^52 so this is exact.
        let min_healthy = (n * min_health - ROUNDING_SLACK).ceil().max(0.0) as usize;
        let mut max_capacity = (n * (1.0 + over) + ROUNDING_SLACK).floor().max(0.0) as usize;
        if min_healthy == max_capacity && max_capacity <= healthy && max_capacity > 0 {
            max_capacity += 1;
        }
        RestartStrategy {
            min_healthy,
            max_capacity,
        }
    }
}

/// The rolling replace (Marathon's `TaskReplaceActor`), restated over the current
/// instances. "Old" are instances not running the target's configuration.
///
/// 1. Old instances with goal Running that are not healthy (not launched, ended,
///    staging, unreachable, reported unhealthy) are killed at once: they serve
///    nothing, so killing them never lowers the healthy count, and it frees room.
/// 2. Healthy old instances are killed while the healthy count stays at or above
///    `min_healthy` after the kill. The healthy count is old healthy instances
///    plus new ones that are healthy *and* ready, all with goal Running. At the
///    start this is Marathon's "kill `healthy − minHealthy` immediately"; later,
///    each new instance that becomes healthy and ready allows one more old kill.
/// 3. New instances are created up to `min(n − started, max_capacity − alive old
///    − started − alive decommissioned new)`, where `started` counts new instances
///    with goal Running in any phase: an old instance frees its slot only when its
///    task is terminal.
/// 4. Surplus new instances (more than `n` with goal Running) are killed in
///    [`kill_order`].
///
/// Done when `n` new instances are healthy and ready, there is no surplus, and
/// no old or decommissioned instance is alive.
fn restart(target: &AppDefinition, instances: &[Instance]) -> Progress {
    let n = target_count(target);
    let checked = !target.health_checks.is_empty();
    let (new, old): (Vec<&Instance>, Vec<&Instance>) =
        instances.iter().partition(|i| runs_target(i, target));

    let new_started: Vec<&Instance> = new.iter().copied().filter(|i| wanted(i)).collect();
    let new_serving = new_started.iter().filter(|i| serving(i, target)).count();
    let new_healthy = new_started
        .iter()
        .filter(|i| healthy_under(i, checked))
        .count();
    let old_wanted: Vec<&Instance> = old.iter().copied().filter(|i| wanted(i)).collect();
    let (old_healthy_now, old_unhealthy): (Vec<&Instance>, Vec<&Instance>) =
        old_wanted.iter().partition(|i| old_healthy(i));

    let strategy = RestartStrategy::compute(target, old_healthy_now.len() + new_healthy);

    let mut kill: Vec<String> = Vec::new();
    let mut unhealthy = old_unhealthy;
    kill_order(target.kill_selection, &mut unhealthy);
    kill.extend(unhealthy.iter().map(|i| i.instance_id.clone()));

    // Surplus new instances go first (non-running ones before running ones), so
    // that the old kills below only count the new instances that stay.
    let surplus = new_started.len().saturating_sub(n);
    let mut by_kill_order = new_started.clone();
    kill_order(target.kill_selection, &mut by_kill_order);
    let (extra, staying) = by_kill_order.split_at(surplus);
    kill.extend(extra.iter().map(|i| i.instance_id.clone()));
    let new_serving_staying = staying.iter().filter(|i| serving(i, target)).count();

    let counted_healthy = old_healthy_now.len() + new_serving_staying;
    let may_kill = counted_healthy.saturating_sub(strategy.min_healthy);
    let mut healthy_old = old_healthy_now;
    kill_order(target.kill_selection, &mut healthy_old);
    let killed_healthy = may_kill.min(healthy_old.len());
    kill.extend(
        healthy_old[..killed_healthy]
            .iter()
            .map(|i| i.instance_id.clone()),
    );
    // Old instances left with goal Running after this round's kills, each alive.
    let old_still_wanted = healthy_old.len() - killed_healthy;

    let old_alive = old.iter().filter(|i| alive(i)).count();
    let new_dying = new.iter().filter(|i| !wanted(i) && alive(i)).count();
    let occupied = old_alive + new_started.len() + new_dying;
    let launch = n
        .saturating_sub(new_started.len())
        .min(strategy.max_capacity.saturating_sub(occupied));

    let done = kill.is_empty()
        && launch == 0
        && new_started.len() == n
        && new_serving == n
        && old_alive == 0
        && old_wanted.is_empty()
        && new_dying == 0;
    let waiting_for = (!done).then(|| {
        let mut parts = vec![format!(
            "{new_serving} of {n} new instances {}",
            serving_word(target)
        )];
        let old_left = old_alive.max(old_still_wanted);
        if old_left > 0 {
            parts.push(format!("{old_left} old instance(s) still alive"));
        }
        parts.join("; ")
    });
    Progress {
        kill,
        launch: as_launch(launch),
        done,
        waiting_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::{app, instance};
    use crate::model::app::{HealthCheck, ReadinessCheck, UpgradeStrategy, VersionInfo};
    use pb::TaskState as S;

    const OLD: i64 = 1_000;
    const NEW: i64 = 2_000;

    fn target(n: i64, min_health: f64, over: f64) -> AppDefinition {
        let mut a = app("/web", &[]);
        a.instances = n;
        a.version = Some(Timestamp::from_millis(NEW));
        a.version_info = Some(VersionInfo {
            last_scaling_at: Timestamp::from_millis(NEW),
            last_config_change_at: Timestamp::from_millis(NEW),
        });
        a.upgrade_strategy = UpgradeStrategy {
            minimum_health_capacity: min_health,
            maximum_over_capacity: over,
        };
        a
    }

    fn with_health_checks(mut a: AppDefinition) -> AppDefinition {
        let check: HealthCheck = serde_json::from_value(serde_json::json!({})).unwrap();
        a.health_checks = vec![check];
        a
    }

    fn with_readiness(mut a: AppDefinition) -> AppDefinition {
        let check: ReadinessCheck = serde_json::from_value(serde_json::json!({})).unwrap();
        a.readiness_checks = vec![check];
        a
    }

    fn inst(name: &str, t: &AppDefinition, version: i64, state: Option<S>, at: i64) -> Instance {
        instance(name, t, Timestamp::from_millis(version), state, at)
    }

    fn ids(p: &Progress) -> Vec<&str> {
        p.kill
            .iter()
            .map(|k| k.rsplit('-').next().unwrap_or(k))
            .collect()
    }

    #[test]
    fn strategy_follows_marathon() {
        let s = |n, m, o, healthy| RestartStrategy::compute(&target(n, m, o), healthy);
        assert_eq!(
            s(4, 1.0, 1.0, 4),
            RestartStrategy {
                min_healthy: 4,
                max_capacity: 8
            }
        );
        assert_eq!(
            s(4, 0.5, 0.0, 4),
            RestartStrategy {
                min_healthy: 2,
                max_capacity: 4
            }
        );
        // Docs example: 3 × 0.7 → 3 kept.
        assert_eq!(s(3, 0.7, 0.0, 3).min_healthy, 3);
        // min == max <= healthy: one over capacity allowed.
        assert_eq!(
            s(4, 1.0, 0.0, 4),
            RestartStrategy {
                min_healthy: 4,
                max_capacity: 5
            }
        );
        assert_eq!(
            s(4, 1.0, 0.0, 3),
            RestartStrategy {
                min_healthy: 4,
                max_capacity: 4
            }
        );
        // Decimal rounding: 10 × 0.3 = 3, 100 × 1.15 = 115.
        assert_eq!(s(10, 0.3, 0.0, 0).min_healthy, 3);
        assert_eq!(s(100, 0.0, 0.15, 0).max_capacity, 115);
        assert_eq!(
            s(0, 1.0, 1.0, 0),
            RestartStrategy {
                min_healthy: 0,
                max_capacity: 0
            }
        );
    }

    #[test]
    fn start_does_nothing_and_is_done() {
        let t = target(3, 1.0, 1.0);
        let p = advance(ActionKind::Start, &t, &[]);
        assert_eq!(
            p,
            Progress {
                done: true,
                ..Progress::default()
            }
        );
    }

    #[test]
    fn scale_up_launches_the_missing_and_waits_for_them() {
        let t = target(3, 1.0, 1.0);
        let mut instances = vec![inst("a", &t, OLD, Some(S::TaskRunning), 1)];
        let p = advance(ActionKind::Scale, &t, &instances);
        assert_eq!((p.launch, p.kill.len(), p.done), (2, 0, false));
        assert_eq!(p.waiting_for.as_deref(), Some("1 of 3 instances running"));

        // Created, not launched yet: nothing more to launch, still waiting.
        instances.push(inst("b", &t, NEW, None, 0));
        instances.push(inst("c", &t, NEW, Some(S::TaskStaging), 2));
        let p = advance(ActionKind::Scale, &t, &instances);
        assert_eq!((p.launch, p.done), (0, false));

        instances[1] = inst("b", &t, NEW, Some(S::TaskRunning), 3);
        instances[2] = inst("c", &t, NEW, Some(S::TaskRunning), 4);
        let p = advance(ActionKind::Scale, &t, &instances);
        assert!(p.done, "{p:?}");
        assert_eq!(p.waiting_for, None);
    }

    #[test]
    fn scale_waits_for_health_and_readiness() {
        let t = with_readiness(with_health_checks(target(1, 1.0, 1.0)));
        let mut i = inst("a", &t, NEW, Some(S::TaskRunning), 1);
        // No health result yet: not healthy when the app has checks.
        assert!(!advance(ActionKind::Scale, &t, std::slice::from_ref(&i)).done);
        i.ready = false;
        assert!(!advance(ActionKind::Scale, &t, std::slice::from_ref(&i)).done);
        i.healthy = Some(true);
        let p = advance(ActionKind::Scale, &t, &[i.clone()]);
        assert!(!p.done);
        assert_eq!(
            p.waiting_for.as_deref(),
            Some("0 of 1 instances healthy and ready")
        );
        i.ready = true;
        assert!(advance(ActionKind::Scale, &t, &[i]).done);
    }

    #[test]
    fn scale_down_kills_in_scaling_proposition_order() {
        let t = target(1, 1.0, 1.0);
        let mut unreachable = inst("unreachable", &t, OLD, Some(S::TaskUnreachable), 50);
        unreachable.started_at = Some(Timestamp::from_millis(50));
        let instances = vec![
            inst("running-old", &t, OLD, Some(S::TaskRunning), 10),
            inst("running-young", &t, OLD, Some(S::TaskRunning), 20),
            inst("starting", &t, OLD, Some(S::TaskStarting), 5),
            inst("staging-old", &t, OLD, Some(S::TaskStaging), 30),
            inst("staging-young", &t, OLD, Some(S::TaskStaging), 40),
            unreachable,
            inst("queued", &t, OLD, None, 0),
        ];
        let p = advance(ActionKind::Scale, &t, &instances);
        assert_eq!(
            ids(&p),
            vec!["queued", "unreachable", "young", "old", "starting", "young"]
        );
        assert_eq!(
            p.kill.last().map(String::as_str),
            Some("web.instance-running-young")
        );
        assert_eq!(p.launch, 0);
        assert!(!p.done);

        let mut oldest_first = t.clone();
        oldest_first.kill_selection = KillSelection::OldestFirst;
        let p = advance(ActionKind::Scale, &oldest_first, &instances);
        assert_eq!(
            p.kill,
            vec![
                "web.instance-queued",
                "web.instance-unreachable",
                "web.instance-staging-old",
                "web.instance-staging-young",
                "web.instance-starting",
                "web.instance-running-old",
            ]
        );
    }

    #[test]
    fn scale_is_done_only_when_decommissioned_instances_are_gone() {
        let t = target(1, 1.0, 1.0);
        let mut dying = inst("dying", &t, OLD, Some(S::TaskKilling), 1);
        dying.goal = Goal::Decommissioned;
        let kept = inst("kept", &t, OLD, Some(S::TaskRunning), 2);
        let p = advance(ActionKind::Scale, &t, &[dying.clone(), kept.clone()]);
        assert!(
            p.kill.is_empty(),
            "already decommissioned: not killed again"
        );
        assert!(!p.done);
        assert_eq!(
            p.waiting_for.as_deref(),
            Some("1 of 1 instances running; 1 instance(s) still being killed")
        );
        dying.state = Some(S::TaskKilled as i32);
        assert!(advance(ActionKind::Scale, &t, &[dying, kept]).done);
    }

    #[test]
    fn converge_keeps_the_count_and_ignores_health() {
        let t = with_health_checks(target(2, 1.0, 1.0));
        let mut sick = inst("sick", &t, OLD, Some(S::TaskRunning), 1);
        sick.healthy = Some(false);
        let failed = inst("failed", &t, OLD, Some(S::TaskFailed), 2);
        let p = converge(&t, &[sick.clone(), failed.clone()]);
        assert_eq!(
            p,
            Progress {
                done: true,
                ..Progress::default()
            }
        );

        let p = converge(&t, &[sick.clone()]);
        assert_eq!((p.launch, p.done), (1, false));

        let extra = inst("extra", &t, OLD, Some(S::TaskStaging), 3);
        let p = converge(&t, &[sick, failed, extra]);
        assert_eq!(p.kill, vec!["web.instance-failed"]);
        assert_eq!(p.launch, 0);
    }

    #[test]
    fn stop_kills_everything_and_waits_until_none_is_alive() {
        let t = target(2, 1.0, 1.0);
        let mut dying = inst("dying", &t, OLD, Some(S::TaskRunning), 1);
        dying.goal = Goal::Decommissioned;
        let instances = vec![
            inst("a", &t, OLD, Some(S::TaskRunning), 2),
            inst("b", &t, NEW, None, 0),
            dying.clone(),
        ];
        let p = advance(ActionKind::Stop, &t, &instances);
        assert_eq!(p.kill, vec!["web.instance-b", "web.instance-a"]);
        assert!(!p.done);

        let mut all_decommissioned = instances.clone();
        for i in &mut all_decommissioned {
            i.goal = Goal::Decommissioned;
        }
        let p = advance(ActionKind::Stop, &t, &all_decommissioned);
        assert!(p.kill.is_empty());
        assert_eq!(
            p.waiting_for.as_deref(),
            Some("2 instance(s) still being killed")
        );

        dying.state = Some(S::TaskKilled as i32);
        let mut b = instances[1].clone();
        b.goal = Goal::Decommissioned;
        assert!(advance(ActionKind::Stop, &t, &[dying, b]).done);
        assert!(advance(ActionKind::Stop, &t, &[]).done);
    }

    #[test]
    fn restart_with_defaults_starts_a_full_new_set_first() {
        let t = target(3, 1.0, 1.0);
        let old: Vec<Instance> = (0..3)
            .map(|k| inst(&format!("o{k}"), &t, OLD, Some(S::TaskRunning), k))
            .collect();
        let p = advance(ActionKind::Restart, &t, &old);
        assert_eq!((p.kill.len(), p.launch, p.done), (0, 3, false));
        assert_eq!(
            p.waiting_for.as_deref(),
            Some("0 of 3 new instances running; 3 old instance(s) still alive")
        );

        // One new instance up: one old may go.
        let mut now = old.clone();
        now.push(inst("n0", &t, NEW, Some(S::TaskRunning), 10));
        now.push(inst("n1", &t, NEW, Some(S::TaskStaging), 11));
        now.push(inst("n2", &t, NEW, None, 0));
        let p = advance(ActionKind::Restart, &t, &now);
        assert_eq!((p.kill.len(), p.launch), (1, 0));
        assert_eq!(p.kill, vec!["web.instance-o2"], "youngest first");
    }

    #[test]
    fn restart_with_half_capacity_kills_down_to_min_healthy_first() {
        let t = target(4, 0.5, 0.0);
        let old: Vec<Instance> = (0..4)
            .map(|k| inst(&format!("o{k}"), &t, OLD, Some(S::TaskRunning), k))
            .collect();
        let p = advance(ActionKind::Restart, &t, &old);
        assert_eq!(p.kill.len(), 2);
        assert_eq!(p.launch, 0, "the killed ones still hold capacity");

        let mut now = old.clone();
        for i in &mut now {
            if p.kill.contains(&i.instance_id) {
                i.goal = Goal::Decommissioned;
            }
        }
        // Idempotent: asking again kills and launches nothing more.
        let again = advance(ActionKind::Restart, &t, &now);
        assert_eq!((again.kill.len(), again.launch, again.done), (0, 0, false));
        for i in &mut now {
            if i.goal == Goal::Decommissioned {
                i.state = Some(S::TaskKilled as i32);
            }
        }
        assert_eq!(advance(ActionKind::Restart, &t, &now).launch, 2);
    }

    #[test]
    fn restart_kills_unhealthy_old_instances_first() {
        let t = with_health_checks(target(3, 1.0, 0.0));
        let mut sick = inst("sick", &t, OLD, Some(S::TaskRunning), 1);
        sick.healthy = Some(false);
        let fine: Vec<Instance> = (0..2)
            .map(|k| {
                let mut i = inst(&format!("ok{k}"), &t, OLD, Some(S::TaskRunning), 2 + k);
                i.healthy = Some(true);
                i
            })
            .collect();
        let mut all = fine.clone();
        all.push(sick);
        all.push(inst("queued-old", &t, OLD, None, 0));
        let p = advance(ActionKind::Restart, &t, &all);
        assert_eq!(p.kill, vec!["web.instance-queued-old", "web.instance-sick"]);
        // min == max == 3 > 2 healthy: no extra slot; the sick one still holds one.
        assert_eq!(p.launch, 0);
    }

    #[test]
    fn restart_plus_one_rule_makes_progress_at_full_capacity() {
        let t = target(2, 1.0, 0.0);
        let old: Vec<Instance> = (0..2)
            .map(|k| inst(&format!("o{k}"), &t, OLD, Some(S::TaskRunning), k))
            .collect();
        let p = advance(ActionKind::Restart, &t, &old);
        assert_eq!((p.kill.len(), p.launch), (0, 1));
    }

    #[test]
    fn restart_waits_for_readiness_before_killing_old() {
        let t = with_readiness(target(1, 1.0, 0.0));
        let mut new = inst("n", &t, NEW, Some(S::TaskRunning), 5);
        new.ready = false;
        let old = inst("o", &t, OLD, Some(S::TaskRunning), 1);
        let p = advance(ActionKind::Restart, &t, &[old.clone(), new.clone()]);
        assert!(p.kill.is_empty());
        new.ready = true;
        let p = advance(ActionKind::Restart, &t, &[old, new]);
        assert_eq!(p.kill, vec!["web.instance-o"]);
    }

    #[test]
    fn restart_after_a_scale_only_change_keeps_matching_instances() {
        // Launched at 1500, config changed at 1200, scaled at 2000: already new.
        let mut t = target(1, 1.0, 1.0);
        t.version_info = Some(VersionInfo {
            last_scaling_at: Timestamp::from_millis(NEW),
            last_config_change_at: Timestamp::from_millis(1_200),
        });
        let current = inst("c", &t, 1_500, Some(S::TaskRunning), 1);
        assert!(advance(ActionKind::Restart, &t, &[current]).done);
        // Newer than the target (a rolled-back deployment's instance): old.
        let newer = inst("x", &t, 3_000, Some(S::TaskRunning), 1);
        let p = advance(ActionKind::Restart, &t, &[newer]);
        assert_eq!(p.launch, 1);
        let older = inst("y", &t, 1_100, Some(S::TaskRunning), 1);
        assert!(!advance(ActionKind::Restart, &t, &[older]).done);
    }

    #[test]
    fn restart_to_zero_kills_all_and_ends() {
        let t = target(0, 1.0, 1.0);
        let old = inst("o", &t, OLD, Some(S::TaskRunning), 1);
        let p = advance(ActionKind::Restart, &t, std::slice::from_ref(&old));
        assert_eq!((p.kill.len(), p.launch, p.done), (1, 0, false));
        let mut gone = old;
        gone.goal = Goal::Decommissioned;
        gone.state = Some(S::TaskKilled as i32);
        assert!(advance(ActionKind::Restart, &t, &[gone]).done);
    }

    #[test]
    fn restart_kills_surplus_new_instances() {
        let t = target(1, 1.0, 1.0);
        let a = inst("a", &t, NEW, Some(S::TaskRunning), 1);
        let b = inst("b", &t, NEW, Some(S::TaskStaging), 2);
        let p = advance(ActionKind::Restart, &t, &[a, b]);
        assert_eq!(p.kill, vec!["web.instance-b"]);
        assert!(!p.done);
    }

    // ---- Simulation of a rolling replace -----------------------------------

    /// An event the world may produce next.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        /// A created instance is launched (staging).
        Launch(usize),
        /// A staging instance reports running.
        Run(usize),
        /// A running new instance passes its health check.
        Heal(usize),
        /// A running new instance passes its readiness check.
        Ready(usize),
        /// A decommissioned instance's task ends.
        Die(usize),
        /// A wanted instance's task fails on its own.
        Crash(usize),
    }

    struct World {
        target: AppDefinition,
        instances: Vec<Instance>,
        next_id: usize,
        clock: i64,
        /// Crashes the world may still produce.
        crashes_left: usize,
        /// Some task has crashed: the healthy floor no longer holds.
        crashed: bool,
    }

    impl World {
        fn new(target: AppDefinition, old: usize, crashes: usize) -> World {
            let mut world = World {
                target,
                instances: Vec::new(),
                next_id: 0,
                clock: 0,
                crashes_left: crashes,
                crashed: false,
            };
            for _ in 0..old {
                let mut i = world.make(OLD);
                i.state = Some(S::TaskRunning as i32);
                i.healthy = world.checked().then_some(true);
                i.started_at = Some(Timestamp::from_millis(world.clock));
                world.instances.push(i);
            }
            world
        }

        fn checked(&self) -> bool {
            !self.target.health_checks.is_empty()
        }

        fn make(&mut self, version: i64) -> Instance {
            self.next_id += 1;
            self.clock += 1;
            let mut i = inst(
                &format!("{:03}", self.next_id),
                &self.target,
                version,
                None,
                self.clock,
            );
            i.ready = self.target.readiness_checks.is_empty();
            i
        }

        /// Applies what `advance` asked for, as the caller would.
        fn apply(&mut self, p: &Progress) {
            for id in &p.kill {
                let i = self
                    .instances
                    .iter_mut()
                    .find(|i| &i.instance_id == id)
                    .expect("kill names a known instance");
                assert_eq!(i.goal, Goal::Running, "killed twice: {id}");
                i.goal = Goal::Decommissioned;
            }
            // A decommissioned instance that never launched is simply forgotten.
            self.instances
                .retain(|i| i.goal == Goal::Running || alive(i));
            for _ in 0..p.launch {
                let i = self.make(NEW);
                self.instances.push(i);
            }
        }

        fn possible(&self) -> Vec<Event> {
            let mut events = Vec::new();
            for (k, i) in self.instances.iter().enumerate() {
                if self.crashes_left > 0
                    && i.goal == Goal::Running
                    && matches!(phase(i), Phase::Staging | Phase::Running)
                {
                    events.push(Event::Crash(k));
                }
                match (phase(i), i.goal) {
                    (Phase::Unlaunched | Phase::Terminal, Goal::Running) => {
                        events.push(Event::Launch(k))
                    }
                    (Phase::Staging, Goal::Running) => events.push(Event::Run(k)),
                    (Phase::Running, Goal::Running) => {
                        if self.checked() && i.healthy != Some(true) {
                            events.push(Event::Heal(k));
                        }
                        if !i.ready {
                            events.push(Event::Ready(k));
                        }
                    }
                    (p, Goal::Decommissioned) if p != Phase::Terminal => events.push(Event::Die(k)),
                    _ => {}
                }
            }
            events
        }

        fn happen(&mut self, event: Event) {
            self.clock += 1;
            let now = Timestamp::from_millis(self.clock);
            match event {
                Event::Launch(k) => {
                    let fresh = self.target.readiness_checks.is_empty();
                    let i = &mut self.instances[k];
                    i.state = Some(S::TaskStaging as i32);
                    i.incarnation += 1;
                    i.staged_at = Some(now);
                    i.started_at = None;
                    i.healthy = None;
                    i.ready = fresh;
                }
                Event::Run(k) => {
                    let i = &mut self.instances[k];
                    i.state = Some(S::TaskRunning as i32);
                    i.started_at = Some(now);
                }
                Event::Heal(k) => self.instances[k].healthy = Some(true),
                Event::Ready(k) => self.instances[k].ready = true,
                Event::Die(k) => self.instances[k].state = Some(S::TaskKilled as i32),
                Event::Crash(k) => {
                    let i = &mut self.instances[k];
                    i.state = Some(S::TaskFailed as i32);
                    i.healthy = None;
                    self.crashes_left -= 1;
                    self.crashed = true;
                }
            }
            // Terminal decommissioned instances are expunged.
            self.instances
                .retain(|i| i.goal == Goal::Running || alive(i));
        }

        fn healthy_wanted(&self) -> usize {
            let checked = self.checked();
            self.instances
                .iter()
                .filter(|i| {
                    i.goal == Goal::Running
                        && if i.app_version == Timestamp::from_millis(OLD) {
                            old_healthy(i)
                        } else {
                            healthy_under(i, checked)
                        }
                })
                .count()
        }

        fn alive_count(&self) -> usize {
            self.instances.iter().filter(|i| alive(i)).count()
        }
    }

    /// Runs a restart of `old` instances to completion, choosing each next event
    /// with `choose(number of possible events)`, with up to `crashes` tasks failing
    /// on their own along the way (failed tasks are relaunched, as the caller
    /// would); asserts the invariants after every change.
    fn simulate(
        target: AppDefinition,
        old: usize,
        crashes: usize,
        mut choose: impl FnMut(usize) -> usize,
    ) {
        let n = target_count(&target);
        let mut world = World::new(target, old, crashes);
        let initially_healthy = world.healthy_wanted();
        // The +1 rule may apply whenever its condition holds; more old instances
        // than the capacity may exist from the start.
        let limit = RestartStrategy::compute(&world.target, 0);
        let plus_one = usize::from(limit.min_healthy == limit.max_capacity);
        let ceiling = (limit.max_capacity + plus_one).max(old);
        let floor = limit.min_healthy.min(initially_healthy);
        let check = |world: &World, when: &str| {
            assert!(
                world.crashed || world.healthy_wanted() >= floor,
                "{when}: {} healthy < {floor}: {:#?}",
                world.healthy_wanted(),
                world.instances
            );
            assert!(
                world.alive_count() <= ceiling,
                "{when}: {} alive > {ceiling}",
                world.alive_count()
            );
        };
        let mut steps = 0;
        loop {
            let p = advance(ActionKind::Restart, &world.target, &world.instances);
            // Idempotent: the same instances give the same answer.
            assert_eq!(
                p,
                advance(ActionKind::Restart, &world.target, &world.instances)
            );
            if p.done {
                assert!(p.kill.is_empty() && p.launch == 0);
                break;
            }
            world.apply(&p);
            check(&world, "after apply");
            let again = advance(ActionKind::Restart, &world.target, &world.instances);
            assert!(
                again.kill.is_empty() && again.launch == 0,
                "not idempotent: {again:?}"
            );
            let events = world.possible();
            assert!(
                !events.is_empty(),
                "stuck: {p:?} with {:#?}",
                world.instances
            );
            world.happen(events[choose(events.len())]);
            check(&world, "after event");
            steps += 1;
            assert!(steps < 10_000, "does not terminate");
        }
        let new = Timestamp::from_millis(NEW);
        assert_eq!(world.instances.len(), n);
        assert!(world.instances.iter().all(|i| i.app_version == new
            && i.goal == Goal::Running
            && phase(i) == Phase::Running));
    }

    #[test]
    fn simulated_restarts_keep_min_healthy_and_terminate() {
        for (min_health, over) in [(0.5, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0), (0.75, 0.25)] {
            for checks in [false, true] {
                for order in 0..4 {
                    let mut t = target(4, min_health, over);
                    if checks {
                        t = with_readiness(with_health_checks(t));
                    }
                    let mut seed = 17u64 + order;
                    simulate(t, 4, 0, |n| match order {
                        0 => 0,
                        1 => n - 1,
                        _ => {
                            seed = seed
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            ((seed >> 33) % n as u64) as usize
                        }
                    });
                }
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn rolling_replace_invariants(
                n in 0i64..10,
                old in 0usize..10,
                min_health in prop_oneof![Just(0.0), Just(0.5), Just(1.0), 0.0f64..=1.0],
                over in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
                checks in any::<bool>(),
                readiness in any::<bool>(),
                choices in proptest::collection::vec(any::<prop::sample::Index>(), 0..400),
            ) {
                let mut t = target(n, min_health, over);
                if checks { t = with_health_checks(t); }
                if readiness { t = with_readiness(t); }
                let mut k = 0;
                simulate(t, old, 0, |len| {
                    k += 1;
                    choices.get(k).map_or(0, |c| c.index(len))
                });
            }

            /// Tasks failing on their own (old or new) may break the healthy floor,
            /// but never the capacity, idempotence or the end.
            #[test]
            fn rolling_replace_survives_crashes(
                n in 0i64..10,
                old in 0usize..10,
                min_health in 0.0f64..=1.0,
                over in 0.0f64..=1.0,
                checks in any::<bool>(),
                crashes in 0usize..6,
                choices in proptest::collection::vec(any::<prop::sample::Index>(), 0..400),
            ) {
                let mut t = target(n, min_health, over);
                if checks { t = with_health_checks(t); }
                let mut k = 0;
                simulate(t, old, crashes, |len| {
                    k += 1;
                    choices.get(k).map_or(0, |c| c.index(len))
                });
            }
        }
    }
}
