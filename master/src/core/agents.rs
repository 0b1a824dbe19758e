//! Agent lifecycle: register, re-register, pings, disconnect, unreachable.

use std::collections::{HashMap, HashSet};

use agora_core::ids::{id_of, id_opt};
use agora_core::{Resources, limits};
use agora_proto as pb;
use pb::agent_message::Message as FromAgent;
use pb::master_message::Message as ToAgent;
use slog::{info, warn};
use tonic::Status;

use super::{
    AgentConnection, AgentEntry, AgentSender, AgentSession, MasterCore, TaskEntry, master_status,
};
use crate::registry::RegistryOp;

impl MasterCore {
    pub(super) async fn agent_attach(
        &mut self,
        first: pb::AgentMessage,
        sender: AgentSender,
    ) -> Result<AgentSession, Status> {
        let result = match first.message {
            Some(FromAgent::Register(register)) => self.register_agent(register, sender).await,
            Some(FromAgent::Reregister(reregister)) => {
                self.reregister_agent(reregister, sender).await
            }
            _ => Err(Status::invalid_argument(
                "the first message on an agent stream must be `register` or `reregister`",
            )),
        };
        if result.is_err() {
            self.metrics.invalid_agent_messages.inc();
        }
        result
    }

    fn validated_agent_info(
        info: Option<pb::AgentInfo>,
    ) -> Result<(pb::AgentInfo, Resources), Status> {
        let info = info.ok_or_else(|| Status::invalid_argument("agent_info is required"))?;
        limits::agent_info(&info).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let total = Resources::from_proto(&info.resources)
            .map_err(|e| Status::invalid_argument(format!("agent_info.resources: {e}")))?;
        Ok((info, total))
    }

    async fn register_agent(
        &mut self,
        register: pb::agent_message::Register,
        sender: AgentSender,
    ) -> Result<AgentSession, Status> {
        let (mut info, total) = Self::validated_agent_info(register.agent_info)?;
        self.agent_seq += 1;
        let agent_id = format!(
            "{}-S{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12],
            self.agent_seq
        );
        info.id = Some(pb::AgentId {
            value: agent_id.clone(),
        });
        self.registry
            .apply(RegistryOp::AdmitAgent(info.clone()))
            .await
            .map_err(|e| Status::unavailable(format!("registry write failed: {e}")))?;
        info!(self.logger, "agent registered";
            "agent_id" => &agent_id, "hostname" => &info.hostname, "resources" => %total);
        let session = self.connect_agent(info, total, sender);
        Ok(session)
    }

    async fn reregister_agent(
        &mut self,
        reregister: pb::agent_message::Reregister,
        sender: AgentSender,
    ) -> Result<AgentSession, Status> {
        let (info, total) = Self::validated_agent_info(reregister.agent_info)?;
        let agent_id = id_opt(&info.id)
            .ok_or_else(|| Status::invalid_argument("reregister needs agent_info.id"))?;
        limits::count(
            "reregister.tasks",
            reregister.tasks.len(),
            limits::MAX_REREGISTER_TASKS,
        )
        .and_then(|_| limits::count("reregister.frameworks", reregister.frameworks.len(), 10_000))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.gone_agents.contains(&agent_id) {
            return Err(Status::permission_denied(format!(
                "agent '{agent_id}' was marked gone and cannot come back; register as a new agent"
            )));
        }
        // After a failover every agent re-registers at once; one that the registry
        // already admits with the same info needs no write (and no raft round trip).
        let already_admitted = self
            .agents
            .get(&agent_id)
            .is_some_and(|known| known.reachable && known.info == info);
        if !already_admitted {
            self.registry
                .apply(RegistryOp::AdmitAgent(info.clone()))
                .await
                .map_err(|e| Status::unavailable(format!("registry write failed: {e}")))?;
        }
        info!(self.logger, "agent re-registered";
            "agent_id" => &agent_id, "tasks" => reregister.tasks.len());
        let session = self.connect_agent(info, total, sender);

        // Reconcile the master's task map with what the agent runs.
        let mut reported = HashSet::new();
        let mut shutdown = HashSet::new();
        for report in reregister.tasks {
            let Some(framework_id) = id_opt(&report.framework_id) else {
                continue;
            };
            let Some(task) = report.task else { continue };
            let task_id = id_of(&task.task_id);
            if limits::id("task_id", Some(&task_id)).is_err()
                || limits::id("framework_id", Some(&framework_id)).is_err()
            {
                self.agent_error(
                    &agent_id,
                    format!("re-registered task '{task_id}' has an invalid id"),
                );
                continue;
            }
            if self.is_completed_framework(&framework_id) {
                shutdown.insert(framework_id);
                continue;
            }
            if !self.frameworks.contains_key(&framework_id) {
                let info = reregister
                    .frameworks
                    .iter()
                    .find(|f| {
                        f.id.as_ref().map(|i| i.value.as_str()) == Some(framework_id.as_str())
                    })
                    .cloned();
                self.recover_framework_from_agent(&framework_id, info);
            }
            let state = pb::TaskState::try_from(report.state).unwrap_or(pb::TaskState::TaskUnknown);
            let resources = Resources::from_proto(&task.resources).unwrap_or_default();
            let placed_elsewhere = self
                .frameworks
                .get(&framework_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| t.agent_id != agent_id);
            if placed_elsewhere {
                // The framework relaunched this task id elsewhere while this agent was
                // away: this copy must not run beside it.
                self.kill_orphan(&agent_id, &framework_id, &task_id, resources, state);
                continue;
            }
            reported.insert((framework_id.clone(), task_id.clone()));
            let known = self
                .frameworks
                .get(&framework_id)
                .is_some_and(|f| f.tasks.contains_key(&task_id));
            if !known {
                let role = self.role_of_reported_task(&framework_id, &resources);
                let entry = TaskEntry {
                    info: task,
                    framework_id: framework_id.clone(),
                    agent_id: agent_id.clone(),
                    state: pb::TaskState::TaskStaging,
                    latest_status: None,
                    resources,
                    role,
                    terminal_uuid: None,
                };
                self.insert_task(entry);
            }
            self.set_task_state(&framework_id, &task_id, state, report.latest_status);
        }
        // Kills that waited for this agent.
        let pending = self
            .agents
            .get_mut(&agent_id)
            .map(|a| std::mem::take(&mut a.pending_kills))
            .unwrap_or_default();
        for ((framework_id, task_id), kill_policy) in pending {
            let live = self
                .frameworks
                .get(&framework_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| {
                    t.agent_id == agent_id && !agora_core::task_state::is_terminal(t.state)
                });
            if live {
                self.send_kill(&agent_id, &framework_id, &task_id, kill_policy);
            }
        }
        for framework_id in shutdown {
            self.send_to_agent(
                &agent_id,
                ToAgent::ShutdownFramework(pb::master_message::ShutdownFramework {
                    framework_id: Some(pb::FrameworkId {
                        value: framework_id,
                    }),
                }),
            );
        }
        // Tasks the master placed on this agent that the agent does not know were lost
        // with the old connection (e.g. a launch in flight when it broke).
        let missing: Vec<(String, String)> = self
            .agents
            .get(&agent_id)
            .map(|a| a.tasks.difference(&reported).cloned().collect())
            .unwrap_or_default();
        for (framework_id, task_id) in missing {
            let terminal = self
                .frameworks
                .get(&framework_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_none_or(|t| agora_core::task_state::is_terminal(t.state));
            if terminal {
                continue;
            }
            let status = master_status(
                &task_id,
                &agent_id,
                pb::TaskState::TaskLost,
                pb::task_status::Reason::AgentRestarted,
                "the agent re-registered without this task",
            );
            self.master_generated_update(&framework_id, status);
        }
        self.drain_reregistered(&agent_id);
        Ok(session)
    }

    /// Installs a connection for an agent (new or returning) and greets it.
    fn connect_agent(
        &mut self,
        info: pb::AgentInfo,
        total: Resources,
        sender: AgentSender,
    ) -> AgentSession {
        let agent_id = id_of(&info.id);
        let total = self.with_reservations(&agent_id, total);
        self.agent_epoch += 1;
        let epoch = self.agent_epoch;
        let now = agora_core::time::now_secs();
        let connection = AgentConnection { sender, epoch };
        let entry = self
            .agents
            .entry(agent_id.clone())
            .or_insert_with(|| AgentEntry {
                info: info.clone(),
                total: total.clone(),
                used: Resources::new(),
                connection: None,
                reachable: true,
                awaiting_reregistration: false,
                missed_pings: 0,
                registered_time: now,
                tasks: HashSet::new(),
                orphans: HashMap::new(),
                pending_kills: HashMap::new(),
                maintenance: None,
            });
        entry.info = info;
        entry.total = total;
        entry.connection = Some(connection);
        entry.reachable = true;
        entry.awaiting_reregistration = false;
        entry.missed_pings = 0;
        // Outstanding offers were made against the old view of this agent.
        self.rescind_agent_offers(&agent_id);
        self.send_to_agent(
            &agent_id,
            ToAgent::Registered(pb::master_message::Registered {
                agent_id: Some(pb::AgentId {
                    value: agent_id.clone(),
                }),
                master_info: Some(self.master_info.clone()),
                ping_interval_seconds: self.timings.agent_ping_interval.as_secs_f64(),
            }),
        );
        self.recompute_cluster_total();
        self.emit_agent_added(&agent_id);
        self.allocation_needed = true;
        self.view_dirty = true;
        AgentSession { agent_id, epoch }
    }

    pub(super) async fn agent_message(&mut self, session: AgentSession, message: pb::AgentMessage) {
        let current = self
            .agents
            .get(&session.agent_id)
            .and_then(|a| a.connection.as_ref())
            .is_some_and(|c| c.epoch == session.epoch);
        if !current {
            return;
        }
        let agent_id = session.agent_id;
        match message.message {
            Some(FromAgent::Pong(_)) => {
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.missed_pings = 0;
                }
            }
            Some(FromAgent::StatusUpdate(mut update)) => {
                self.note_drain_kill(&agent_id, &mut update);
                self.status_update(&agent_id, update)
            }
            Some(FromAgent::ExecutorExited(exited)) => {
                let Some(framework_id) = id_opt(&exited.framework_id) else {
                    self.agent_error(&agent_id, "executor_exited needs framework_id".into());
                    return;
                };
                self.send_event(
                    &framework_id,
                    pb::event::Event::Failure(pb::event::Failure {
                        agent_id: Some(pb::AgentId {
                            value: agent_id.clone(),
                        }),
                        executor_id: exited.executor_id,
                        status: exited.status,
                    }),
                );
            }
            Some(FromAgent::FrameworkMessage(message)) => {
                let Some(framework_id) = id_opt(&message.framework_id) else {
                    self.agent_error(&agent_id, "framework_message needs framework_id".into());
                    return;
                };
                if let Err(e) = limits::bytes(
                    "framework_message.data",
                    message.data.len(),
                    limits::MAX_MESSAGE_DATA_BYTES,
                ) {
                    self.agent_error(&agent_id, e.to_string());
                    return;
                }
                self.send_event(
                    &framework_id,
                    pb::event::Event::Message(pb::event::Message {
                        agent_id: Some(pb::AgentId { value: agent_id }),
                        executor_id: message.executor_id,
                        data: message.data,
                    }),
                );
            }
            Some(FromAgent::UpdateResources(update)) => {
                match Resources::from_proto(&update.total) {
                    Ok(total) => {
                        if let Some(agent) = self.agents.get_mut(&agent_id) {
                            agent.info.resources = update.total;
                            agent.total = total;
                        }
                        self.recompute_cluster_total();
                        self.rescind_agent_offers(&agent_id);
                        self.allocation_needed = true;
                        self.view_dirty = true;
                    }
                    Err(e) => self.agent_error(&agent_id, format!("update_resources: {e}")),
                }
            }
            Some(FromAgent::Register(_)) | Some(FromAgent::Reregister(_)) => {
                self.agent_error(&agent_id, "already registered on this stream".into())
            }
            None => self.agent_error(&agent_id, "empty message".into()),
        }
    }

    /// Kills a copy of a task that runs on `agent_id` while the framework's task of
    /// that id is elsewhere; its resources stay charged until it ends.
    pub(crate) fn kill_orphan(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        task_id: &str,
        resources: Resources,
        state: pb::TaskState,
    ) {
        warn!(self.logger, "agent runs a task the framework has elsewhere; killing this copy";
            "agent_id" => agent_id, "framework_id" => framework_id, "task_id" => task_id);
        if agora_core::task_state::is_terminal(state) {
            return;
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used.add(&resources);
            agent
                .orphans
                .insert((framework_id.to_string(), task_id.to_string()), resources);
        }
        self.send_kill(agent_id, framework_id, task_id, None);
    }

    /// Sends KillTask; if the agent is away, keeps it to resend on re-registration.
    pub(crate) fn send_kill(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        task_id: &str,
        kill_policy: Option<pb::KillPolicy>,
    ) {
        let sent = self.send_to_agent(
            agent_id,
            ToAgent::KillTask(pb::master_message::KillTask {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.to_string(),
                }),
                task_id: Some(pb::TaskId {
                    value: task_id.to_string(),
                }),
                kill_policy,
            }),
        );
        if !sent && let Some(agent) = self.agents.get_mut(agent_id) {
            agent
                .pending_kills
                .insert((framework_id.to_string(), task_id.to_string()), kill_policy);
        }
    }

    /// Tells an agent that a message of its was dropped, and counts it.
    pub(crate) fn agent_error(&mut self, agent_id: &str, message: String) {
        warn!(self.logger, "bad message from agent"; "agent_id" => agent_id, "error" => &message);
        self.metrics.invalid_agent_messages.inc();
        self.send_to_agent(
            agent_id,
            ToAgent::Error(pb::master_message::Error { message }),
        );
    }

    pub(super) fn agent_stream_closed(&mut self, session: &AgentSession) {
        let Some(agent) = self.agents.get_mut(&session.agent_id) else {
            return;
        };
        if agent.connection.as_ref().map(|c| c.epoch) != Some(session.epoch) {
            return;
        }
        agent.connection = None;
        info!(self.logger, "agent disconnected; it is unreachable unless it returns within the ping timeout";
            "agent_id" => &session.agent_id);
        self.rescind_agent_offers(&session.agent_id);
        self.allocation_needed = true;
        self.view_dirty = true;
    }

    /// Withdraws every outstanding offer of an agent's resources.
    pub(crate) fn rescind_agent_offers(&mut self, agent_id: &str) {
        for offer_id in self.offers.ids_for_agent(agent_id) {
            self.rescind_offer(&offer_id);
        }
    }

    /// Withdraws one offer, if still outstanding, and tells its framework.
    pub(crate) fn rescind_offer(&mut self, offer_id: &str) {
        if let Some(offer) = self.offers.take(offer_id) {
            self.send_event(
                &offer.framework_id,
                pb::event::Event::Rescind(pb::event::Rescind {
                    offer_id: Some(pb::OfferId {
                        value: offer_id.to_string(),
                    }),
                }),
            );
            self.allocation_needed = true;
            self.view_dirty = true;
        }
    }

    /// One ping round: agents that missed too many pings become unreachable.
    pub(super) async fn ping_agents(&mut self) {
        self.ping_seq += 1;
        let seq = self.ping_seq;
        let max = self.timings.max_missed_pings;
        let mut timed_out = Vec::new();
        let mut to_ping = Vec::new();
        for (id, agent) in self.agents.iter_mut() {
            if !agent.reachable || agent.awaiting_reregistration {
                continue;
            }
            if agent.missed_pings >= max {
                timed_out.push(id.clone());
                continue;
            }
            agent.missed_pings += 1;
            if agent.connection.is_some() {
                to_ping.push(id.clone());
            }
        }
        for id in to_ping {
            self.send_to_agent(&id, ToAgent::Ping(pb::master_message::Ping { seq }));
        }
        for id in timed_out {
            let reason = format!("agent missed {max} pings");
            self.mark_unreachable(&id, &reason);
        }
        self.flush_deferred_registry_ops().await;
    }

    /// Agents known from the registry that did not come back in time are unreachable.
    pub(super) async fn reregister_deadline_passed(&mut self) {
        let late: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.awaiting_reregistration && a.reachable)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            self.mark_unreachable(&id, "agent did not re-register after the master started");
        }
        self.flush_deferred_registry_ops().await;
    }

    /// Marks an agent unreachable and tells frameworks about its tasks: UNREACHABLE to
    /// partition-aware frameworks, LOST to the others (as Mesos does).
    pub(crate) fn mark_unreachable(&mut self, agent_id: &str, why: &str) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        agent.reachable = false;
        agent.connection = None;
        let tasks: Vec<(String, String)> = agent.tasks.iter().cloned().collect();
        warn!(self.logger, "agent unreachable"; "agent_id" => agent_id, "why" => why, "tasks" => tasks.len());
        self.metrics.agents_marked_unreachable.inc();
        self.rescind_agent_offers(agent_id);
        self.deferred_registry_ops
            .push(RegistryOp::MarkAgentUnreachable {
                agent_id: agent_id.to_string(),
                time: agora_core::time::now_secs(),
            });
        for (framework_id, task_id) in tasks {
            let Some(fw) = self.frameworks.get(&framework_id) else {
                continue;
            };
            let terminal = fw
                .tasks
                .get(&task_id)
                .is_none_or(|t| agora_core::task_state::is_terminal(t.state));
            if terminal {
                continue;
            }
            let state = self.visible_state(&framework_id, pb::TaskState::TaskUnreachable);
            let mut status = master_status(
                &task_id,
                agent_id,
                state,
                pb::task_status::Reason::AgentUnreachable,
                format!("agent {agent_id} is unreachable: {why}"),
            );
            status.unreachable_time = agora_core::time::now_secs();
            self.master_generated_update(&framework_id, status);
        }
        let _ = self.operator_events.send(pb::OperatorEvent {
            event: Some(pb::operator_event::Event::AgentRemoved(
                pb::operator_event::AgentRemoved {
                    agent_id: Some(pb::AgentId {
                        value: agent_id.to_string(),
                    }),
                },
            )),
        });
        self.recompute_cluster_total();
        self.allocation_needed = true;
        self.view_dirty = true;
    }
}
