//! [`Instance`]: one wanted copy of an app, and the task that currently runs it.

use agora_sdk::proto as pb;
use serde::{Deserialize, Serialize};

use crate::model::{PathId, Timestamp};

/// What the framework wants of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    /// Keep it running: relaunch it when its task ends.
    Running,
    /// Kill its task and forget the instance once the task is terminal.
    Decommissioned,
}

/// An instance survives its tasks: when a task fails, the instance gets a new task
/// with the next incarnation (Marathon 1.8+: stable instance ids, task ids suffixed
/// `.1`, `.2`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `<app's safe name>.instance-<uuid>`; unique for ever.
    pub instance_id: String,
    pub app_id: PathId,
    /// The app version this instance runs (its definition's `version`).
    pub app_version: Timestamp,
    pub goal: Goal,
    /// Which task of this instance is current: the task id is
    /// `<instance_id>._app.<incarnation>`. 0 = never launched.
    pub incarnation: u32,
    /// Where the current task runs (None until launched).
    pub agent_id: Option<String>,
    pub host: Option<String>,
    /// Host ports of the current task, in port-definition order.
    pub ports: Vec<u64>,
    /// The last state the current task reported (None: not launched yet).
    pub state: Option<i32>,
    /// From the last status carrying health; None: no health checks or none run yet.
    pub healthy: Option<bool>,
    /// Readiness checks passed (true when the app has none).
    pub ready: bool,
    pub staged_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    /// Since when the task is TASK_UNREACHABLE (None when it is not).
    pub unreachable_since: Option<Timestamp>,
    /// The current task's last status message (why it failed, ...).
    #[serde(default)]
    pub message: String,
}

impl Instance {
    pub fn task_id(&self) -> String {
        format!("{}._app.{}", self.instance_id, self.incarnation)
    }

    pub fn task_state(&self) -> Option<pb::TaskState> {
        self.state.and_then(|s| pb::TaskState::try_from(s).ok())
    }
}
