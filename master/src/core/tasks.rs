//! Tasks after launch: status updates from agents, acknowledgements from frameworks,
//! KILL, RECONCILE and framework → executor messages.

use agora_core::ids::{id_of, id_opt};
use agora_core::{limits, task_state::is_terminal};
use agora_proto as pb;
use pb::master_message::Message as ToAgent;
use pb::task_status::Reason;
use tonic::Status;

use super::{COMPLETED_TASKS_PER_FRAMEWORK, MasterCore, TaskEntry, master_status};
use crate::registry::RegistryOp;

fn invalid(e: limits::LimitError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// An acknowledgement names an agent and a task, and the 16-byte uuid of an update.
fn check_acknowledgement(ack: &pb::call::Acknowledge) -> Result<(), Status> {
    let agent_id = ack.agent_id.as_ref().map(|a| a.value.as_str());
    let task_id = ack.task_id.as_ref().map(|t| t.value.as_str());
    limits::id("acknowledge.agent_id", agent_id).map_err(invalid)?;
    limits::id("acknowledge.task_id", task_id).map_err(invalid)?;
    if ack.uuid.len() != 16 {
        return Err(Status::invalid_argument(
            "acknowledge.uuid must be the 16-byte uuid of the update",
        ));
    }
    Ok(())
}

impl MasterCore {
    /// Adds a task to the maps and charges its resources while it is not terminal.
    pub(crate) fn insert_task(&mut self, entry: TaskEntry) {
        let task_id = entry.info_task_id();
        let key = (entry.framework_id.clone(), task_id.clone());
        let counts = !is_terminal(entry.state);
        if let Some(agent) = self.agents.get_mut(&entry.agent_id) {
            agent.tasks.insert(key);
            if counts {
                agent.used.add(&entry.resources);
            }
        }
        self.emit_task(&entry, true);
        self.view_cache
            .task_changed(&entry.framework_id, &task_id, &entry.agent_id);
        if let Some(fw) = self.frameworks.get_mut(&entry.framework_id) {
            if counts {
                fw.used.add(&entry.resources);
            }
            fw.tasks.insert(task_id, entry);
        }
        self.view_dirty = true;
    }

    /// Moves a task to `state`, returning its resources when it becomes terminal (and
    /// charging them again if an agent brings a LOST task back).
    pub(crate) fn set_task_state(
        &mut self,
        framework_id: &str,
        task_id: &str,
        state: pb::TaskState,
        latest_status: Option<pb::TaskStatus>,
    ) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = fw.tasks.get_mut(task_id) else {
            return;
        };
        let was_terminal = is_terminal(task.state);
        task.state = state;
        if let Some(status) = latest_status {
            task.latest_status = Some(status);
        }
        let now_terminal = is_terminal(state);
        let agent = self.agents.get_mut(&task.agent_id);
        if !was_terminal && now_terminal {
            fw.used.sub_saturating(&task.resources);
            if let Some(agent) = agent {
                agent.used.sub_saturating(&task.resources);
            }
            self.allocation_needed = true;
        } else if was_terminal && !now_terminal {
            fw.used.add(&task.resources);
            if let Some(agent) = agent {
                agent.used.add(&task.resources);
            }
        }
        self.view_cache
            .task_changed(framework_id, task_id, &task.agent_id);
        // Built only for operator subscribers: a task is large, and this runs for
        // every status update.
        let event =
            (self.operator_events.receiver_count() > 0).then(|| super::view::task_summary(task));
        if let Some(summary) = event {
            self.emit_task_summary(summary, false);
        }
        self.view_dirty = true;
    }

    /// Moves a task out of the live maps into the framework's completed list.
    pub(crate) fn retire_task(&mut self, framework_id: &str, task_id: &str) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = fw.tasks.remove(task_id) else {
            return;
        };
        if !is_terminal(task.state) {
            fw.used.sub_saturating(&task.resources);
            if let Some(agent) = self.agents.get_mut(&task.agent_id) {
                agent.used.sub_saturating(&task.resources);
            }
        }
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent
                .tasks
                .remove(&(framework_id.to_string(), task_id.to_string()));
        }
        self.view_cache.task_retired(&task);
        fw.completed.push_back(task);
        while fw.completed.len() > COMPLETED_TASKS_PER_FRAMEWORK {
            fw.completed.pop_front();
        }
        self.view_dirty = true;
    }

    /// Records and delivers a status the master made itself. It carries no uuid, so no
    /// acknowledgement will come: a terminal one retires the task once delivered. If
    /// the framework is away, the task stays (terminal) so that its reconciliation
    /// reports it; the reconciliation then retires it.
    pub(crate) fn master_generated_update(&mut self, framework_id: &str, status: pb::TaskStatus) {
        let task_id = id_of(&status.task_id);
        let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::TaskUnknown);
        self.set_task_state(framework_id, &task_id, state, Some(status.clone()));
        let delivered = self.send_event(
            framework_id,
            pb::event::Event::Update(pb::event::Update {
                status: Some(status),
            }),
        );
        if delivered && is_terminal(state) {
            self.retire_task(framework_id, &task_id);
        }
    }

    /// A status update from an agent: record the task's newest state and forward the
    /// update; the framework's ACKNOWLEDGE travels back to the agent.
    pub(crate) fn status_update(&mut self, agent_id: &str, update: pb::StatusUpdate) {
        let Some(framework_id) = id_opt(&update.framework_id) else {
            self.agent_error(agent_id, "status_update needs framework_id".into());
            return;
        };
        let Some(mut status) = update.status else {
            self.agent_error(agent_id, "status_update needs status".into());
            return;
        };
        if let Err(e) = limits::id("framework_id", Some(&framework_id))
            .and_then(|_| limits::task_status(&status))
        {
            self.agent_error(agent_id, format!("status_update: {e}"));
            return;
        }
        if status.uuid.len() != 16 {
            self.agent_error(
                agent_id,
                "status_update: status.uuid must be 16 bytes".into(),
            );
            return;
        }
        let task_id = id_of(&status.task_id);
        status.agent_id = Some(pb::AgentId {
            value: agent_id.to_string(),
        });
        self.metrics.status_updates.inc();

        if self.orphan_update(agent_id, &framework_id, &task_id, &status) {
            return;
        }
        if !self.frameworks.contains_key(&framework_id) {
            // Nobody will acknowledge it: do so on the framework's behalf so the agent
            // stops retrying, and tell the agent if the framework never existed.
            if !self.is_completed_framework(&framework_id) {
                self.agent_error(
                    agent_id,
                    format!("status update for unknown framework '{framework_id}'; acknowledged and dropped"),
                );
            }
            self.send_to_agent(
                agent_id,
                ToAgent::Acknowledge(pb::master_message::Acknowledge {
                    framework_id: update.framework_id,
                    task_id: status.task_id,
                    uuid: status.uuid,
                }),
            );
            return;
        }
        let known = self
            .frameworks
            .get(&framework_id)
            .is_some_and(|f| f.tasks.contains_key(&task_id));
        if !known {
            // The agent is the source of truth; the framework decides what to do with a
            // task it may have forgotten (e.g. KILL it). The agent is told.
            self.agent_error(
                agent_id,
                format!("status update for task '{task_id}' that the master does not know; forwarded to framework '{framework_id}'"),
            );
        } else {
            // STAGING (0) is never a state an agent reports, so 0 means "not given".
            let latest_raw = if update.latest_state == 0 {
                status.state
            } else {
                update.latest_state
            };
            let latest = pb::TaskState::try_from(latest_raw).unwrap_or(pb::TaskState::TaskUnknown);
            self.set_task_state(&framework_id, &task_id, latest, Some(status.clone()));
            if agora_core::task_state::is_terminal_raw(status.state)
                && let Some(task) = self
                    .frameworks
                    .get_mut(&framework_id)
                    .and_then(|f| f.tasks.get_mut(&task_id))
            {
                task.terminal_uuid = Some(status.uuid.clone());
            }
        }
        self.send_event(
            &framework_id,
            pb::event::Event::Update(pb::event::Update {
                status: Some(status),
            }),
        );
    }

    /// Updates from a copy of a task that must not run (see `kill_orphan`) are
    /// acknowledged on the framework's behalf and not forwarded; its end releases its
    /// resources. Returns whether the update was such a copy's.
    fn orphan_update(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        task_id: &str,
        status: &pb::TaskStatus,
    ) -> bool {
        let key = (framework_id.to_string(), task_id.to_string());
        let orphan = self
            .agents
            .get(agent_id)
            .is_some_and(|a| a.orphans.contains_key(&key));
        let elsewhere = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tasks.get(task_id))
            .is_some_and(|t| t.agent_id != agent_id);
        if !orphan && !elsewhere {
            return false;
        }
        let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::TaskUnknown);
        // An orphan's resources are charged to its agent while it runs.
        self.view_cache.agent_changed(agent_id);
        if !orphan {
            self.kill_orphan(
                agent_id,
                framework_id,
                task_id,
                agora_core::Resources::new(),
                state,
            );
        }
        if is_terminal(state)
            && let Some(agent) = self.agents.get_mut(agent_id)
            && let Some(resources) = agent.orphans.remove(&key)
        {
            agent.used.sub_saturating(&resources);
            self.allocation_needed = true;
            self.view_dirty = true;
        }
        self.send_to_agent(
            agent_id,
            ToAgent::Acknowledge(pb::master_message::Acknowledge {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.to_string(),
                }),
                task_id: status.task_id.clone(),
                uuid: status.uuid.clone(),
            }),
        );
        true
    }

    pub(super) fn acknowledge(
        &mut self,
        framework_id: &str,
        ack: pb::call::Acknowledge,
    ) -> Result<(), Status> {
        check_acknowledgement(&ack)?;
        let agent_id = id_of(&ack.agent_id);
        let task_id = id_of(&ack.task_id);
        if !self.agents.contains_key(&agent_id) {
            return Err(Status::not_found(format!(
                "agent '{agent_id}' is not known to the master"
            )));
        }
        self.send_to_agent(
            &agent_id,
            ToAgent::Acknowledge(pb::master_message::Acknowledge {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.to_string(),
                }),
                task_id: ack.task_id.clone(),
                uuid: ack.uuid.clone(),
            }),
        );
        let retires = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tasks.get(&task_id))
            .is_some_and(|t| t.terminal_uuid.as_deref() == Some(ack.uuid.as_slice()));
        if retires {
            self.retire_task(framework_id, &task_id);
        }
        Ok(())
    }

    /// ACKNOWLEDGE_MANY: each acknowledgement handled as ACKNOWLEDGE would. A
    /// malformed one refuses the whole call before any is applied; those naming an
    /// agent the master does not know are skipped and named in the answer.
    pub(super) fn acknowledge_many(
        &mut self,
        framework_id: &str,
        many: pb::call::AcknowledgeMany,
    ) -> Result<(), Status> {
        let acks = many.acknowledgements;
        limits::count(
            "acknowledge_many.acknowledgements",
            acks.len(),
            limits::MAX_ACKNOWLEDGEMENTS,
        )
        .map_err(invalid)?;
        for ack in &acks {
            check_acknowledgement(ack)?;
        }
        let mut unknown_agents = Vec::new();
        for ack in acks {
            if let Err(status) = self.acknowledge(framework_id, ack) {
                unknown_agents.push(status.message().to_string());
            }
        }
        match unknown_agents.first() {
            None => Ok(()),
            Some(first) => Err(Status::not_found(format!(
                "{} of the acknowledgements were skipped: {first}",
                unknown_agents.len()
            ))),
        }
    }

    pub(super) fn kill(&mut self, framework_id: &str, kill: pb::call::Kill) -> Result<(), Status> {
        let task_id = kill.task_id.as_ref().map(|t| t.value.as_str());
        limits::id("kill.task_id", task_id).map_err(invalid)?;
        let task_id = task_id.unwrap_or_default().to_string();
        let task = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| (t.agent_id.clone(), t.state));
        match task {
            Some((agent_id, state)) if !is_terminal(state) => {
                // Kept and resent if the agent is away, as Mesos does.
                self.send_kill(&agent_id, framework_id, &task_id, kill.kill_policy);
            }
            Some(_) => {}
            None => {
                // Mesos answers a kill of an unknown task with a LOST update.
                let state = self.visible_state(framework_id, pb::TaskState::TaskUnknown);
                let agent = kill.agent_id.map(|a| a.value).unwrap_or_default();
                let status = master_status(
                    &task_id,
                    &agent,
                    state,
                    Reason::TaskUnknown,
                    "kill of a task the master does not know",
                );
                self.send_event(
                    framework_id,
                    pb::event::Event::Update(pb::event::Update {
                        status: Some(status),
                    }),
                );
            }
        }
        Ok(())
    }

    pub(super) fn reconcile(
        &mut self,
        framework_id: &str,
        reconcile: pb::call::Reconcile,
    ) -> Result<(), Status> {
        limits::count(
            "reconcile.tasks",
            reconcile.tasks.len(),
            limits::MAX_RECONCILE_TASKS,
        )
        .map_err(invalid)?;
        for t in &reconcile.tasks {
            limits::id(
                "reconcile.tasks.task_id",
                t.task_id.as_ref().map(|t| t.value.as_str()),
            )
            .map_err(invalid)?;
        }
        let Some(fw) = self.frameworks.get(framework_id) else {
            return Ok(());
        };
        let partition_aware = fw.is_partition_aware();
        let mut statuses = Vec::new();
        let reconciled = |task: &TaskEntry| {
            let mut status = task.latest_status.clone().unwrap_or_else(|| {
                master_status(
                    &task.info_task_id(),
                    &task.agent_id,
                    task.state,
                    Reason::Reconciliation,
                    "",
                )
            });
            status.state = task.state as i32;
            status.uuid.clear();
            status.reason = Reason::Reconciliation as i32;
            status.source = pb::task_status::Source::Master as i32;
            status.timestamp = agora_core::time::now_secs();
            status.agent_id = Some(pb::AgentId {
                value: task.agent_id.clone(),
            });
            status
        };
        if reconcile.tasks.is_empty() {
            statuses.extend(fw.tasks.values().map(reconciled));
        } else {
            for wanted in &reconcile.tasks {
                let task_id = id_of(&wanted.task_id);
                if let Some(task) = fw.tasks.get(&task_id) {
                    statuses.push(reconciled(task));
                    continue;
                }
                if let Some(task) = fw
                    .completed
                    .iter()
                    .rev()
                    .find(|t| t.info_task_id() == task_id)
                {
                    statuses.push(reconciled(task));
                    continue;
                }
                let agent_id = id_of(&wanted.agent_id);
                let (state, why) = match self.agents.get(&agent_id) {
                    // After a master restart, an agent that has not re-registered yet
                    // may well run the task: say nothing until it does or its
                    // deadline passes (Mesos does the same).
                    Some(agent) if agent.awaiting_reregistration => continue,
                    Some(agent) if agent.reachable => {
                        (pb::TaskState::TaskGone, "the agent does not run this task")
                    }
                    Some(_) => (
                        pb::TaskState::TaskUnreachable,
                        "the task's agent is unreachable",
                    ),
                    None => (
                        pb::TaskState::TaskUnknown,
                        "the master knows neither the task nor its agent",
                    ),
                };
                let state = if partition_aware {
                    state
                } else {
                    pb::TaskState::TaskLost
                };
                statuses.push(master_status(
                    &task_id,
                    &agent_id,
                    state,
                    Reason::Reconciliation,
                    why,
                ));
            }
        }
        let mut delivered_terminal = Vec::new();
        for status in statuses {
            let task_id = id_opt(&status.task_id);
            let terminal = agora_core::task_state::is_terminal_raw(status.state);
            let delivered = self.send_event(
                framework_id,
                pb::event::Event::Update(pb::event::Update {
                    status: Some(status),
                }),
            );
            if delivered && terminal {
                delivered_terminal.extend(task_id);
            }
        }
        // Terminal states the master made while the framework was away were kept for
        // this: now that it knows, they retire. (Those from agents retire on their
        // acknowledgement.)
        for task_id in delivered_terminal {
            let awaits_no_ack = self
                .frameworks
                .get(framework_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| is_terminal(t.state) && t.terminal_uuid.is_none());
            if awaits_no_ack {
                self.retire_task(framework_id, &task_id);
            }
        }
        Ok(())
    }

    pub(super) fn framework_message(
        &mut self,
        framework_id: &str,
        message: pb::call::Message,
    ) -> Result<(), Status> {
        let agent_id = id_opt(&message.agent_id);
        limits::id("message.agent_id", agent_id.as_deref()).map_err(invalid)?;
        limits::id(
            "message.executor_id",
            message.executor_id.as_ref().map(|e| e.value.as_str()),
        )
        .map_err(invalid)?;
        limits::bytes(
            "message.data",
            message.data.len(),
            limits::MAX_MESSAGE_DATA_BYTES,
        )
        .map_err(invalid)?;
        // Messages are unreliable, as in Mesos: dropped when the agent is away.
        self.send_to_agent(
            &agent_id.unwrap_or_default(),
            ToAgent::FrameworkMessage(pb::master_message::FrameworkMessage {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.to_string(),
                }),
                executor_id: message.executor_id,
                data: message.data,
            }),
        );
        Ok(())
    }

    /// A framework the master learns of from an agent's re-registration (the master
    /// restarted and lost it, or never knew it): it is disconnected until it
    /// re-subscribes, and its failover timeout runs.
    pub(crate) fn recover_framework_from_agent(
        &mut self,
        framework_id: &str,
        info: Option<pb::FrameworkInfo>,
    ) {
        let mut info = info.unwrap_or_else(|| pb::FrameworkInfo {
            name: "(recovered from an agent)".into(),
            ..Default::default()
        });
        if limits::framework_info(&info).is_err() {
            info = pb::FrameworkInfo {
                name: "(recovered from an agent)".into(),
                ..Default::default()
            };
        }
        info.id = Some(pb::FrameworkId {
            value: framework_id.to_string(),
        });
        let now = agora_core::time::now_secs();
        let timeout = std::time::Duration::from_secs_f64(info.failover_timeout.max(0.0));
        let entry = super::frameworks::recovered_framework(info.clone(), now);
        self.frameworks.insert(framework_id.to_string(), entry);
        self.deferred_registry_ops
            .push(RegistryOp::PutFramework { info, time: now });
        self.deferred_registry_ops
            .push(RegistryOp::FrameworkDisconnected {
                framework_id: framework_id.to_string(),
                time: now,
            });
        self.start_failover_timer(framework_id, timeout);
    }
}
