//! The snapshot readers see (operator API, `/api/v1/state`, the CLI) and the operator
//! event stream. Built by the core after a batch of changes and published through a
//! watch channel, so a large query never waits on, or stalls, the core.

use std::sync::Arc;

use agora_core::ids::id_opt;
use agora_proto as pb;

use super::{AgentEntry, FrameworkEntry, MasterCore, TaskEntry};

pub(crate) fn task_summary(task: &TaskEntry) -> pb::TaskSummary {
    pb::TaskSummary {
        name: task.info.name.clone(),
        task_id: task.info.task_id.clone(),
        framework_id: Some(pb::FrameworkId {
            value: task.framework_id.clone(),
        }),
        agent_id: Some(pb::AgentId {
            value: task.agent_id.clone(),
        }),
        state: task.state as i32,
        resources: task.resources.to_proto(),
        // Status data is the framework's business and can be large; views omit it.
        latest_status: task.latest_status.clone().map(|mut s| {
            s.data.clear();
            s
        }),
    }
}

impl MasterCore {
    fn agent_summary(&self, agent: &AgentEntry) -> pb::AgentSummary {
        let status = if !agent.reachable {
            "UNREACHABLE"
        } else if let Some(mode) = agent.maintenance_status() {
            mode
        } else if agent.connection.is_some() {
            "ACTIVE"
        } else {
            "DISCONNECTED"
        };
        pb::AgentSummary {
            agent_info: Some(agent.info.clone()),
            status: status.into(),
            total: agent.total.to_proto(),
            used: agent.used.to_proto(),
            offered: self
                .offers
                .offered_on_agent(agent.id())
                .map(|r| r.to_proto())
                .unwrap_or_default(),
            registered_time: agent.registered_time,
        }
    }

    fn framework_summary(&self, fw: &FrameworkEntry) -> pb::FrameworkSummary {
        pb::FrameworkSummary {
            framework_info: Some(fw.info.clone()),
            connected: fw.connection.is_some(),
            used: fw.used.to_proto(),
            offered: self
                .offers
                .offered_to_framework(fw.id())
                .map(|r| r.to_proto())
                .unwrap_or_default(),
            active_tasks: fw
                .tasks
                .values()
                .filter(|t| !agora_core::task_state::is_terminal(t.state))
                .count() as u32,
            registered_time: fw.registered_time,
            disconnected_time: fw.disconnected_time,
        }
    }

    pub(crate) fn cluster_state(&self) -> pb::ClusterState {
        let mut agents: Vec<pb::AgentSummary> = self
            .agents
            .values()
            .map(|a| self.agent_summary(a))
            .collect();
        agents.sort_by(|a, b| {
            a.agent_info
                .as_ref()
                .map(|i| &i.hostname)
                .cmp(&b.agent_info.as_ref().map(|i| &i.hostname))
        });
        let mut frameworks: Vec<pb::FrameworkSummary> = self
            .frameworks
            .values()
            .map(|f| self.framework_summary(f))
            .collect();
        frameworks.sort_by(|a, b| a.registered_time.total_cmp(&b.registered_time));
        let mut tasks = Vec::new();
        let mut completed_tasks = Vec::new();
        for fw in self.frameworks.values() {
            tasks.extend(fw.tasks.values().map(task_summary));
            completed_tasks.extend(fw.completed.iter().map(task_summary));
        }
        let key = |t: &pb::TaskSummary| (id_opt(&t.framework_id), id_opt(&t.task_id));
        tasks.sort_by_key(key);
        completed_tasks.sort_by_key(key);
        pb::ClusterState {
            master_info: Some(self.master_info.clone()),
            agents,
            frameworks,
            tasks,
            completed_tasks,
            group: None,
        }
    }

    pub(crate) fn publish_view(&mut self) {
        let state = self.cluster_state();
        self.metrics.observe(&state, self.offers.len());
        self.view.send_replace(Arc::new(state));
    }

    pub(super) fn emit_task(&self, task: &TaskEntry, added: bool) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        let summary = Some(task_summary(task));
        let event = if added {
            pb::operator_event::Event::TaskAdded(pb::operator_event::TaskAdded { task: summary })
        } else {
            pb::operator_event::Event::TaskUpdated(pb::operator_event::TaskUpdated {
                task: summary,
            })
        };
        let _ = self
            .operator_events
            .send(pb::OperatorEvent { event: Some(event) });
    }

    pub(super) fn emit_framework_added(&self, framework_id: &str) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        if let Some(fw) = self.frameworks.get(framework_id) {
            let framework = Some(self.framework_summary(fw));
            let _ = self.operator_events.send(pb::OperatorEvent {
                event: Some(pb::operator_event::Event::FrameworkAdded(
                    pb::operator_event::FrameworkAdded { framework },
                )),
            });
        }
    }

    pub(super) fn emit_agent_added(&self, agent_id: &str) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        if let Some(agent) = self.agents.get(agent_id) {
            let agent = Some(self.agent_summary(agent));
            let _ = self.operator_events.send(pb::OperatorEvent {
                event: Some(pb::operator_event::Event::AgentAdded(
                    pb::operator_event::AgentAdded { agent },
                )),
            });
        }
    }
}
