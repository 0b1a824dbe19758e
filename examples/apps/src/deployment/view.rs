//! A deployment as `/v2/deployments` shows it.

use std::collections::BTreeMap;

use super::plan::{Step, affected_apps};
use crate::controller::{ActionView, CurrentAction, DeploymentView, StepView};
use crate::model::{PathId, Timestamp};

/// Marathon's JSON for a running deployment. `current_step` is the 0-based index
/// of the step being executed (shown 1-based, as Marathon counts; a plan without
/// steps shows 0 of 0). `waiting` holds, per app of the current step, why its
/// action is not done yet (see [`super::Progress::waiting_for`]).
pub fn view(
    id: &str,
    version: Timestamp,
    steps: &[Step],
    current_step: usize,
    waiting: &BTreeMap<PathId, String>,
) -> DeploymentView {
    let index = current_step.min(steps.len().saturating_sub(1));
    let current_actions = steps
        .get(index)
        .map(|step| {
            step.actions
                .iter()
                .map(|a| CurrentAction {
                    action: a.kind.name().to_string(),
                    app: a.app.clone(),
                    readiness_check_results: Vec::new(),
                    waiting_for: waiting.get(&a.app).cloned(),
                })
                .collect()
        })
        .unwrap_or_default();
    DeploymentView {
        id: id.to_string(),
        version,
        affected_apps: affected_apps(steps),
        affected_pods: Vec::new(),
        steps: steps
            .iter()
            .map(|s| StepView {
                actions: s
                    .actions
                    .iter()
                    .map(|a| ActionView {
                        action: a.kind.name().to_string(),
                        app: a.app.clone(),
                    })
                    .collect(),
            })
            .collect(),
        current_actions,
        current_step: if steps.is_empty() { 0 } else { index + 1 },
        total_steps: steps.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::plan::{Action, ActionKind};

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    #[test]
    fn renders_marathons_shape() {
        let steps = vec![
            Step {
                actions: vec![Action {
                    kind: ActionKind::Start,
                    app: p("/web"),
                }],
            },
            Step {
                actions: vec![
                    Action {
                        kind: ActionKind::Scale,
                        app: p("/db"),
                    },
                    Action {
                        kind: ActionKind::Restart,
                        app: p("/api"),
                    },
                ],
            },
        ];
        let waiting = BTreeMap::from([(p("/db"), "1 of 2 instances running".to_string())]);
        let v = view("d-1", Timestamp::from_millis(0), &steps, 1, &waiting);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({
                "id": "d-1",
                "version": "1970-01-01T00:00:00.000Z",
                "affectedApps": ["/api", "/db", "/web"],
                "affectedPods": [],
                "steps": [
                    {"actions": [{"action": "StartApplication", "app": "/web"}]},
                    {"actions": [
                        {"action": "ScaleApplication", "app": "/db"},
                        {"action": "RestartApplication", "app": "/api"}
                    ]}
                ],
                "currentActions": [
                    {"action": "ScaleApplication", "app": "/db", "readinessCheckResults": [],
                     "waitingFor": "1 of 2 instances running"},
                    {"action": "RestartApplication", "app": "/api", "readinessCheckResults": []}
                ],
                "currentStep": 2,
                "totalSteps": 2
            })
        );

        let first = view(
            "d-1",
            Timestamp::from_millis(0),
            &steps,
            0,
            &BTreeMap::new(),
        );
        assert_eq!(first.current_step, 1);
        assert_eq!(first.current_actions.len(), 1);
        // Past the end: the last step stays current.
        assert_eq!(
            view("d", Timestamp::from_millis(0), &steps, 9, &waiting).current_step,
            2
        );
        let empty = view("d", Timestamp::from_millis(0), &[], 0, &waiting);
        assert_eq!((empty.current_step, empty.total_steps), (0, 0));
        assert!(empty.current_actions.is_empty());
    }
}
