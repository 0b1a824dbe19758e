//! Agent maintenance: drain and reactivate (Mesos' DRAIN_AGENT and REACTIVATE_AGENT).
//!
//! Draining an agent, in order: the registry records it DRAINING with its deadline
//! (so a new leader carries on), its outstanding offers are rescinded, it makes no new
//! offers (`AgentEntry::available` is empty while it is under maintenance), and the
//! frameworks with tasks on it get AGENT_DRAINING. At the deadline the master kills
//! what still runs there, as for a framework's KILL; those KILLED updates carry
//! REASON_AGENT_DRAINING. Once nothing runs on it (no live task, no orphan being
//! killed) it is DRAINED, again recorded in the registry. Reactivating clears the
//! record and its resources are offered again.
//!
//! Only agents in [`MasterCore::draining_agents`] are looked at after each batch, so
//! maintenance costs nothing while no agent drains. An agent still due to re-register
//! after a master start, or unreachable, is never declared drained: the master does
//! not know what runs there.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use agora_core::ids::id_of;
use agora_core::limits;
use agora_core::task_state::is_terminal;
use agora_proto as pb;
use slog::{info, warn};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Status;

use super::roles::registry_status;
use super::{AgentEntry, MasterCore, Timer};
use crate::registry::RegistryOp;

/// Where an agent under maintenance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaintenanceMode {
    /// No new offers; tasks are left to end (or killed at the deadline).
    Draining,
    /// Nothing runs on it any more; still no offers until reactivated.
    Drained,
}

impl MaintenanceMode {
    /// The name the registry, `AgentSummary.status` and the CLI use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MaintenanceMode::Draining => "DRAINING",
            MaintenanceMode::Drained => "DRAINED",
        }
    }

    fn parse(mode: &str) -> Option<Self> {
        match mode {
            "DRAINING" => Some(MaintenanceMode::Draining),
            "DRAINED" => Some(MaintenanceMode::Drained),
            _ => None,
        }
    }
}

/// An agent's maintenance, kept on its `AgentEntry`.
#[derive(Clone, Debug)]
pub(crate) struct AgentMaintenance {
    pub mode: MaintenanceMode,
    /// Seconds since the epoch when what still runs is killed; `None` = no deadline.
    pub deadline: Option<f64>,
    /// The pending deadline timer's key; `None` once it fired, or without a deadline.
    timer: Option<(Instant, u64)>,
    /// The deadline passed: whatever still runs there, or is re-reported by the agent
    /// after a reconnection, is killed.
    pub deadline_passed: bool,
    /// (framework id, task id) of the tasks killed for the deadline: their KILLED
    /// updates get REASON_AGENT_DRAINING. Bounded by the tasks the agent held.
    killed: HashSet<(String, String)>,
}

impl AgentEntry {
    /// DRAINING or DRAINED while the agent is under maintenance, for
    /// `AgentSummary.status` (which otherwise says ACTIVE, DISCONNECTED, ...).
    // For view.rs' `agent_summary`, which another change is reworking.
    pub(crate) fn maintenance_status(&self) -> Option<&'static str> {
        self.maintenance.as_ref().map(|m| m.mode.as_str())
    }
}

/// The operator's maintenance commands (see [`super::Command::Maintenance`]).
pub(crate) enum MaintenanceCommand {
    Drain {
        request: pb::DrainAgentRequest,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Reactivate {
        request: pb::ReactivateAgentRequest,
        reply: oneshot::Sender<Result<(), Status>>,
    },
}

/// Checks a drain's deadline: unset, or 0 to a year from now.
pub(crate) fn drain_deadline(seconds: Option<f64>) -> Result<Option<Duration>, Status> {
    match seconds {
        None => Ok(None),
        Some(s) => {
            limits::seconds("deadline_seconds", s)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Ok(Some(Duration::from_secs_f64(s)))
        }
    }
}

fn agent_id_of(agent_id: &Option<pb::AgentId>) -> Result<String, Status> {
    let value = agent_id.as_ref().map(|a| a.value.as_str());
    limits::id("agent_id", value).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(value.unwrap_or_default().to_string())
}

fn record(agent_id: &str, mode: MaintenanceMode, deadline: Option<f64>) -> pb::MaintenanceRecord {
    pb::MaintenanceRecord {
        agent_id: agent_id.to_string(),
        mode: mode.as_str().to_string(),
        deadline: deadline.unwrap_or(0.0),
        // Stamped by the registry.
        since: 0.0,
    }
}

impl MasterCore {
    pub(super) async fn maintenance_command(&mut self, command: MaintenanceCommand) {
        match command {
            MaintenanceCommand::Drain { request, reply } => {
                let _ = reply.send(self.drain_agent(request).await);
            }
            MaintenanceCommand::Reactivate { request, reply } => {
                let _ = reply.send(self.reactivate_agent(request).await);
            }
        }
    }

    fn known_agent(&self, agent_id: &str) -> Result<&AgentEntry, Status> {
        self.agents.get(agent_id).ok_or_else(|| {
            if self.gone_agents.contains(agent_id) {
                Status::failed_precondition(format!("agent '{agent_id}' was marked gone"))
            } else {
                Status::not_found(format!("agent '{agent_id}' is not known to this master"))
            }
        })
    }

    async fn drain_agent(&mut self, request: pb::DrainAgentRequest) -> Result<(), Status> {
        let agent_id = agent_id_of(&request.agent_id)?;
        let after = drain_deadline(request.deadline_seconds)?;
        let agent = self.known_agent(&agent_id)?;
        if agent
            .maintenance
            .as_ref()
            .is_some_and(|m| m.mode == MaintenanceMode::Drained)
        {
            // Nothing runs there any more: a deadline has nothing left to kill.
            return Ok(());
        }
        let deadline = after.map(|after| agora_core::time::now_secs() + after.as_secs_f64());
        self.registry
            .apply(RegistryOp::SetMaintenance(record(
                &agent_id,
                MaintenanceMode::Draining,
                deadline,
            )))
            .await
            .map_err(registry_status)?;
        info!(self.logger, "agent draining"; "agent_id" => &agent_id,
            "deadline_seconds" => ?request.deadline_seconds);
        self.start_draining(&agent_id, deadline, after);
        self.rescind_agent_offers(&agent_id);
        let frameworks = self.frameworks_with_live_tasks(&agent_id);
        for framework_id in frameworks {
            self.send_event(
                &framework_id,
                pb::event::Event::AgentDraining(pb::event::AgentDraining {
                    agent_id: Some(pb::AgentId {
                        value: agent_id.clone(),
                    }),
                    deadline: deadline.unwrap_or(0.0),
                }),
            );
        }
        // A deadline of 0 kills at once; an agent with nothing on it drains now.
        if after.is_some_and(|a| a.is_zero()) {
            self.drain_deadline_passed(&agent_id);
        }
        self.progress_drains();
        Ok(())
    }

    /// Puts the agent into DRAINING in the core (the registry already says so) and
    /// (re)arms its deadline; kills already sent stay remembered.
    fn start_draining(&mut self, agent_id: &str, deadline: Option<f64>, after: Option<Duration>) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let previous = agent.maintenance.take();
        if let Some(key) = previous.as_ref().and_then(|m| m.timer) {
            self.timers.remove(&key);
        }
        let timer = after.map(|after| {
            self.set_timer(
                Instant::now() + after,
                Timer::DrainDeadline {
                    agent_id: agent_id.to_string(),
                },
            )
        });
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.maintenance = Some(AgentMaintenance {
                mode: MaintenanceMode::Draining,
                deadline,
                timer,
                deadline_passed: false,
                killed: previous.map(|m| m.killed).unwrap_or_default(),
            });
        }
        self.draining_agents.insert(agent_id.to_string());
        self.allocation_needed = true;
        self.view_dirty = true;
    }

    async fn reactivate_agent(
        &mut self,
        request: pb::ReactivateAgentRequest,
    ) -> Result<(), Status> {
        let agent_id = agent_id_of(&request.agent_id)?;
        if self.known_agent(&agent_id)?.maintenance.is_none() {
            return Err(Status::failed_precondition(format!(
                "agent '{agent_id}' is not draining or drained"
            )));
        }
        self.registry
            .apply(RegistryOp::ClearMaintenance {
                agent_id: agent_id.clone(),
            })
            .await
            .map_err(registry_status)?;
        info!(self.logger, "agent reactivated"; "agent_id" => &agent_id);
        let previous = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.maintenance.take());
        if let Some(key) = previous.and_then(|m| m.timer) {
            self.timers.remove(&key);
        }
        self.draining_agents.remove(&agent_id);
        self.allocation_needed = true;
        self.view_dirty = true;
        Ok(())
    }

    /// Loads maintenance records from the registry after a start. Deadlines are wall
    /// clock times, so one that passed while no master led fires at once; its kills
    /// reach the tasks the agent re-reports when it comes back.
    pub(super) fn recover_maintenance(
        &mut self,
        records: &std::collections::BTreeMap<String, pb::MaintenanceRecord>,
    ) {
        let now = agora_core::time::now_secs();
        for (agent_id, record) in records {
            let Some(mode) = MaintenanceMode::parse(&record.mode) else {
                warn!(self.logger, "a maintenance record has an unknown mode; ignoring it";
                    "agent_id" => agent_id, "mode" => &record.mode);
                continue;
            };
            if !self.agents.contains_key(agent_id) {
                continue;
            }
            let deadline = (record.deadline > 0.0).then_some(record.deadline);
            match mode {
                MaintenanceMode::Draining => {
                    let after = deadline.map(|d| {
                        Duration::from_secs_f64((d - now).clamp(0.0, limits::MAX_TIMEOUT_SECONDS))
                    });
                    self.start_draining(agent_id, deadline, after);
                }
                MaintenanceMode::Drained => {
                    if let Some(agent) = self.agents.get_mut(agent_id) {
                        agent.maintenance = Some(AgentMaintenance {
                            mode,
                            deadline,
                            timer: None,
                            deadline_passed: true,
                            killed: HashSet::new(),
                        });
                    }
                }
            }
        }
    }

    /// The deadline came: kill whatever still runs on the agent.
    pub(super) fn drain_deadline_passed(&mut self, agent_id: &str) {
        let Some(maintenance) = self
            .agents
            .get_mut(agent_id)
            .and_then(|a| a.maintenance.as_mut())
        else {
            return;
        };
        if maintenance.mode != MaintenanceMode::Draining {
            return;
        }
        if let Some(key) = maintenance.timer.take() {
            self.timers.remove(&key);
        }
        maintenance.deadline_passed = true;
        let killed = self.kill_for_drain(agent_id);
        info!(self.logger, "drain deadline passed; killing what still runs";
            "agent_id" => agent_id, "tasks" => killed);
    }

    /// Kills every live task of the agent (kept and resent if the agent is away).
    /// Returns how many.
    fn kill_for_drain(&mut self, agent_id: &str) -> usize {
        let live = self.live_tasks(agent_id);
        if let Some(maintenance) = self
            .agents
            .get_mut(agent_id)
            .and_then(|a| a.maintenance.as_mut())
        {
            maintenance.killed.extend(live.iter().cloned());
        }
        for (framework_id, task_id) in &live {
            self.send_kill(agent_id, framework_id, task_id, None);
        }
        live.len()
    }

    /// (framework id, task id) of the agent's tasks that are not terminal.
    fn live_tasks(&self, agent_id: &str) -> Vec<(String, String)> {
        let Some(agent) = self.agents.get(agent_id) else {
            return Vec::new();
        };
        let mut live: Vec<(String, String)> = agent
            .tasks
            .iter()
            .filter(|(framework_id, task_id)| {
                self.frameworks
                    .get(framework_id)
                    .and_then(|f| f.tasks.get(task_id))
                    .is_some_and(|t| !is_terminal(t.state))
            })
            .cloned()
            .collect();
        live.sort_unstable();
        live
    }

    fn frameworks_with_live_tasks(&self, agent_id: &str) -> BTreeSet<String> {
        self.live_tasks(agent_id)
            .into_iter()
            .map(|(framework_id, _)| framework_id)
            .collect()
    }

    /// Marks DRAINED every draining agent on which nothing runs any more. Cheap when
    /// no agent drains; called after every batch of commands.
    pub(super) fn progress_drains(&mut self) {
        if self.draining_agents.is_empty() {
            return;
        }
        let mut drained = Vec::new();
        let mut forgotten = Vec::new();
        for agent_id in &self.draining_agents {
            let Some(agent) = self.agents.get(agent_id) else {
                forgotten.push(agent_id.clone());
                continue;
            };
            let draining = agent
                .maintenance
                .as_ref()
                .is_some_and(|m| m.mode == MaintenanceMode::Draining);
            if !draining {
                forgotten.push(agent_id.clone());
                continue;
            }
            // Only an agent the master hears from can be known to run nothing.
            let known = agent.reachable && !agent.awaiting_reregistration;
            if known && agent.orphans.is_empty() && self.live_tasks(agent_id).is_empty() {
                drained.push(agent_id.clone());
            }
        }
        for agent_id in forgotten {
            self.draining_agents.remove(&agent_id);
        }
        for agent_id in drained {
            self.draining_agents.remove(&agent_id);
            let Some(maintenance) = self
                .agents
                .get_mut(&agent_id)
                .and_then(|a| a.maintenance.as_mut())
            else {
                continue;
            };
            maintenance.mode = MaintenanceMode::Drained;
            let deadline = maintenance.deadline;
            if let Some(key) = maintenance.timer.take() {
                self.timers.remove(&key);
            }
            // The core already treats it as drained; should the write fail, the next
            // leader finds it DRAINING and declares it drained again.
            self.deferred_registry_ops
                .push(RegistryOp::SetMaintenance(record(
                    &agent_id,
                    MaintenanceMode::Drained,
                    deadline,
                )));
            info!(self.logger, "agent drained"; "agent_id" => &agent_id);
            self.view_dirty = true;
        }
    }

    /// After an agent under maintenance re-registered: what it re-reported is killed
    /// if its deadline passed or it was drained (nothing may run on a drained agent;
    /// it drains again).
    pub(super) fn drain_reregistered(&mut self, agent_id: &str) {
        let Some(maintenance) = self
            .agents
            .get(agent_id)
            .and_then(|a| a.maintenance.as_ref())
        else {
            return;
        };
        let (mode, deadline, passed) = (
            maintenance.mode,
            maintenance.deadline,
            maintenance.deadline_passed,
        );
        if !(passed || mode == MaintenanceMode::Drained) {
            return;
        }
        let killed = self.kill_for_drain(agent_id);
        if killed > 0 && mode == MaintenanceMode::Drained {
            warn!(self.logger, "a drained agent came back with tasks; killing them";
                "agent_id" => agent_id, "tasks" => killed);
            if let Some(maintenance) = self
                .agents
                .get_mut(agent_id)
                .and_then(|a| a.maintenance.as_mut())
            {
                maintenance.mode = MaintenanceMode::Draining;
            }
            self.draining_agents.insert(agent_id.to_string());
            self.deferred_registry_ops
                .push(RegistryOp::SetMaintenance(record(
                    agent_id,
                    MaintenanceMode::Draining,
                    deadline,
                )));
            self.view_dirty = true;
        }
    }

    /// Gives the KILLED update of a task killed for a drain deadline its reason.
    pub(super) fn note_drain_kill(&mut self, agent_id: &str, update: &mut pb::StatusUpdate) {
        let Some(maintenance) = self
            .agents
            .get(agent_id)
            .and_then(|a| a.maintenance.as_ref())
        else {
            return;
        };
        if maintenance.killed.is_empty() {
            return;
        }
        let Some(status) = update.status.as_mut() else {
            return;
        };
        let key = (id_of(&update.framework_id), id_of(&status.task_id));
        if status.state == pb::TaskState::TaskKilled as i32
            && status.reason == pb::task_status::Reason::Unspecified as i32
            && maintenance.killed.contains(&key)
        {
            status.reason = pb::task_status::Reason::AgentDraining as i32;
            if status.message.is_empty() {
                status.message = format!("killed: agent {agent_id} reached its drain deadline");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_checked() {
        assert_eq!(drain_deadline(None).unwrap(), None);
        assert_eq!(
            drain_deadline(Some(600.0)).unwrap(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(drain_deadline(Some(0.0)).unwrap(), Some(Duration::ZERO));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            let status = drain_deadline(Some(bad)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().starts_with("deadline_seconds"),
                "{status:?}"
            );
        }
    }

    #[test]
    fn agent_ids_are_checked() {
        assert_eq!(
            agent_id_of(&Some(pb::AgentId {
                value: "a-S1".into()
            }))
            .unwrap(),
            "a-S1"
        );
        for bad in [
            None,
            Some(pb::AgentId {
                value: String::new(),
            }),
            Some(pb::AgentId {
                value: "a/b".into(),
            }),
        ] {
            let status = agent_id_of(&bad).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with("agent_id"), "{status:?}");
        }
    }

    #[test]
    fn modes_round_trip_through_their_names() {
        for mode in [MaintenanceMode::Draining, MaintenanceMode::Drained] {
            assert_eq!(MaintenanceMode::parse(mode.as_str()), Some(mode));
            assert!(limits::MAINTENANCE_MODES.contains(&mode.as_str()));
        }
        assert_eq!(MaintenanceMode::parse("UP"), None);
    }
}
