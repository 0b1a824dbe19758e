//! ACCEPT: validate the offers and each operation, then launch what is valid.
//!
//! The checks follow Mesos: every offer must exist, belong to the caller, be unused
//! and lie on one agent, or the whole call is void (its tasks get TASK_DROPPED, or
//! TASK_LOST for frameworks that are not partition-aware, with REASON_INVALID_OFFERS).
//! Then each task on its own: a valid description, a task id not used by a live task,
//! resources that are valid and fit in what is left of the offers; a task that fails
//! gets TASK_ERROR and the others still launch. What is left over returns to the agent
//! and is filtered for this framework for `filters.refuse_seconds` (default 5 s).

use std::collections::HashSet;

use agora_core::ids::id_of;
use agora_core::{Resources, limits, task_state::is_terminal};
use agora_proto as pb;
use pb::task_status::Reason;
use tonic::Status;

use super::frameworks::refuse_duration;

/// One operation of an ACCEPT, in the order given.
enum Step {
    /// A task, and whether it came in a task group.
    Launch(Box<pb::TaskInfo>, bool),
    Reserve(Vec<pb::Resource>),
    Unreserve(Vec<pb::Resource>),
}
use super::{MasterCore, TaskEntry, master_status};

impl MasterCore {
    pub(super) fn accept(
        &mut self,
        framework_id: &str,
        accept: pb::call::Accept,
    ) -> Result<(), Status> {
        let invalid = |e: limits::LimitError| Status::invalid_argument(e.to_string());
        limits::count(
            "accept.offer_ids",
            accept.offer_ids.len(),
            limits::MAX_OFFER_IDS,
        )
        .map_err(invalid)?;
        limits::count(
            "accept.operations",
            accept.operations.len(),
            limits::MAX_OPERATIONS,
        )
        .map_err(invalid)?;
        if accept.offer_ids.is_empty() {
            return Err(Status::invalid_argument("accept.offer_ids is empty"));
        }
        // Operations run in order on what is left of the offers, so a RESERVE can be
        // followed by a LAUNCH on the reserved resources.
        let mut steps = Vec::new();
        for operation in &accept.operations {
            use pb::operation::Operation as Op;
            match &operation.operation {
                Some(Op::Launch(launch)) => {
                    limits::count(
                        "launch.task_infos",
                        launch.task_infos.len(),
                        limits::MAX_TASKS_PER_LAUNCH,
                    )
                    .map_err(invalid)?;
                    steps.extend(
                        launch
                            .task_infos
                            .iter()
                            .map(|t| Step::Launch(Box::new(t.clone()), false)),
                    );
                }
                Some(Op::LaunchGroup(group)) => {
                    let group_tasks = group
                        .task_group
                        .as_ref()
                        .map(|g| g.tasks.as_slice())
                        .unwrap_or_default();
                    limits::count(
                        "launch_group.task_group.tasks",
                        group_tasks.len(),
                        limits::MAX_TASK_GROUP,
                    )
                    .map_err(invalid)?;
                    steps.extend(
                        group_tasks
                            .iter()
                            .map(|t| Step::Launch(Box::new(t.clone()), true)),
                    );
                }
                Some(Op::Reserve(reserve)) => {
                    limits::count(
                        "reserve.resources",
                        reserve.resources.len(),
                        limits::MAX_RESOURCES,
                    )
                    .map_err(invalid)?;
                    steps.push(Step::Reserve(reserve.resources.clone()));
                }
                Some(Op::Unreserve(unreserve)) => {
                    limits::count(
                        "unreserve.resources",
                        unreserve.resources.len(),
                        limits::MAX_RESOURCES,
                    )
                    .map_err(invalid)?;
                    steps.push(Step::Unreserve(unreserve.resources.clone()));
                }
                None => {
                    return Err(Status::invalid_argument(
                        "accept.operations has an empty operation",
                    ));
                }
            }
        }

        if let Err(problem) = self.check_offers(framework_id, &accept.offer_ids) {
            // Return the offers that were valid; the call launches nothing.
            for offer_id in &accept.offer_ids {
                let owned = self
                    .offers
                    .get(&offer_id.value)
                    .is_some_and(|o| o.framework_id == framework_id);
                if owned {
                    self.offers.take(&offer_id.value);
                }
            }
            self.metrics.invalid_calls.inc();
            let state = self.visible_state(framework_id, pb::TaskState::TaskDropped);
            let tasks = steps.into_iter().filter_map(|step| match step {
                Step::Launch(task, _) => Some(*task),
                Step::Reserve(_) | Step::Unreserve(_) => None,
            });
            for task in tasks {
                let task_id = task.task_id.map(|t| t.value).unwrap_or_default();
                let status = master_status(&task_id, "", state, Reason::InvalidOffers, &problem);
                self.send_event(
                    framework_id,
                    pb::event::Event::Update(pb::event::Update {
                        status: Some(status),
                    }),
                );
            }
            self.allocation_needed = true;
            return Ok(());
        }

        let mut remaining = Resources::new();
        let mut agent_id = String::new();
        let mut offer_role = String::new();
        for offer_id in &accept.offer_ids {
            if let Some(offer) = self.offers.take(&offer_id.value) {
                remaining.add(&offer.resources);
                agent_id = offer.agent_id;
                offer_role = offer.role;
            }
        }
        let mut launched = HashSet::new();
        for step in steps {
            let (task, in_group) = match step {
                Step::Launch(task, in_group) => (*task, in_group),
                Step::Reserve(resources) => {
                    let done = self.reserve(
                        framework_id,
                        &agent_id,
                        &offer_role,
                        &resources,
                        &mut remaining,
                    );
                    self.operation_outcome(framework_id, &agent_id, "RESERVE", done);
                    continue;
                }
                Step::Unreserve(resources) => {
                    let done = self.unreserve(framework_id, &agent_id, &resources, &mut remaining);
                    self.operation_outcome(framework_id, &agent_id, "UNRESERVE", done);
                    continue;
                }
            };
            if in_group {
                let task_id = task.task_id.map(|t| t.value).unwrap_or_default();
                self.task_error(
                    framework_id,
                    &task_id,
                    &agent_id,
                    Reason::TaskGroupInvalid,
                    "task groups (LAUNCH_GROUP) are not supported by this master yet".into(),
                );
                continue;
            }
            self.launch_task(
                framework_id,
                &agent_id,
                &offer_role,
                task,
                &mut remaining,
                &mut launched,
            );
        }
        if !remaining.is_empty() {
            let refuse = refuse_duration(accept.filters.as_ref(), self.timings.default_refuse);
            self.add_filter(framework_id, &agent_id, &offer_role, refuse, remaining);
        }
        self.allocation_needed = true;
        self.view_dirty = true;
        Ok(())
    }

    /// An invalid RESERVE or UNRESERVE is dropped, as Mesos does without operation
    /// feedback; the offers' resources it named stay unreserved (or reserved).
    fn operation_outcome(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        operation: &str,
        outcome: Result<(), String>,
    ) {
        match outcome {
            Ok(()) => slog::info!(self.logger, "offer operation applied";
                "operation" => operation, "framework_id" => framework_id, "agent_id" => agent_id),
            Err(problem) => {
                self.metrics.invalid_calls.inc();
                slog::warn!(self.logger, "offer operation dropped";
                    "operation" => operation, "framework_id" => framework_id,
                    "agent_id" => agent_id, "problem" => &problem);
            }
        }
    }

    /// All offers exist, are this framework's, are distinct and lie on one agent.
    fn check_offers(&self, framework_id: &str, offer_ids: &[pb::OfferId]) -> Result<(), String> {
        let mut seen = HashSet::new();
        let mut agent: Option<&str> = None;
        for offer_id in offer_ids {
            let id = offer_id.value.as_str();
            if !seen.insert(id) {
                return Err(format!("offer '{id}' is listed twice"));
            }
            let Some(offer) = self.offers.get(id) else {
                return Err(format!(
                    "offer '{id}' is no longer valid (unknown, already used, declined or rescinded)"
                ));
            };
            if offer.framework_id != framework_id {
                return Err(format!("offer '{id}' was not made to this framework"));
            }
            match agent {
                None => agent = Some(offer.agent_id.as_str()),
                Some(a) if a != offer.agent_id => {
                    return Err("offers of several agents cannot be combined in one ACCEPT".into());
                }
                Some(_) => {}
            }
        }
        if let Some(agent_id) = agent {
            let usable = self
                .agents
                .get(agent_id)
                .is_some_and(|a| a.reachable && a.connection.is_some());
            if !usable {
                return Err(format!("agent '{agent_id}' of the offers is disconnected"));
            }
        }
        Ok(())
    }

    /// Validates one task against what is left of the offers, and launches it.
    fn launch_task(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        offer_role: &str,
        mut task: pb::TaskInfo,
        remaining: &mut Resources,
        launched: &mut HashSet<String>,
    ) {
        let task_id = id_of(&task.task_id);
        if let Err(e) = limits::task_info(&task) {
            self.task_error(
                framework_id,
                &task_id,
                agent_id,
                Reason::TaskInvalid,
                e.to_string(),
            );
            return;
        }
        let existing = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| t.state);
        if launched.contains(&task_id) || existing.is_some_and(|s| !is_terminal(s)) {
            self.task_error(
                framework_id,
                &task_id,
                agent_id,
                Reason::TaskInvalid,
                format!("task id '{task_id}' is already used by a live task of this framework"),
            );
            return;
        }
        if existing.is_some() {
            // The agent still holds the old task until its end is acknowledged; a new
            // launch under the same id would be confused with it.
            self.task_error(
                framework_id,
                &task_id,
                agent_id,
                Reason::TaskInvalid,
                format!(
                    "task id '{task_id}' ended but its terminal update is not acknowledged yet; \
                     acknowledge it (or reconcile) before reusing the id"
                ),
            );
            return;
        }
        if let Some(given) = task.agent_id.as_ref().map(|a| a.value.as_str())
            && !given.is_empty()
            && given != agent_id
        {
            self.task_error(
                framework_id,
                &task_id,
                agent_id,
                Reason::TaskInvalid,
                format!("task names agent '{given}' but the offer is of agent '{agent_id}'"),
            );
            return;
        }
        let resources = match Resources::from_proto(&task.resources) {
            Ok(r) if r.is_empty() => {
                self.task_error(
                    framework_id,
                    &task_id,
                    agent_id,
                    Reason::TaskInvalid,
                    "a task must use some resources".into(),
                );
                return;
            }
            Ok(r) => r,
            Err(e) => {
                self.task_error(
                    framework_id,
                    &task_id,
                    agent_id,
                    Reason::TaskInvalid,
                    format!("task_info.resources: {e}"),
                );
                return;
            }
        };
        if let Err(e) = remaining.checked_sub(&resources) {
            self.task_error(
                framework_id,
                &task_id,
                agent_id,
                Reason::TaskInvalid,
                format!("task uses more resources than offered ({e}): it asks for {resources}, the offers have {remaining} left"),
            );
            return;
        }
        task.agent_id = Some(pb::AgentId {
            value: agent_id.to_string(),
        });
        launched.insert(task_id.clone());
        let framework_info = self.frameworks.get(framework_id).map(|f| f.info.clone());
        self.insert_task(TaskEntry {
            info: task.clone(),
            framework_id: framework_id.to_string(),
            agent_id: agent_id.to_string(),
            state: pb::TaskState::TaskStaging,
            latest_status: None,
            resources,
            role: offer_role.to_string(),
            terminal_uuid: None,
        });
        self.metrics.tasks_launched.inc();
        let sent = self.send_to_agent(
            agent_id,
            pb::master_message::Message::RunTask(pb::master_message::RunTask {
                framework_info,
                task: Some(task),
            }),
        );
        if !sent {
            let state = self.visible_state(framework_id, pb::TaskState::TaskDropped);
            let status = master_status(
                &task_id,
                agent_id,
                state,
                Reason::AgentDisconnected,
                "the agent disconnected before the launch reached it",
            );
            self.master_generated_update(framework_id, status);
        }
    }

    /// Reports TASK_ERROR for a task that was never launched.
    fn task_error(
        &mut self,
        framework_id: &str,
        task_id: &str,
        agent_id: &str,
        reason: Reason,
        message: String,
    ) {
        self.metrics.invalid_calls.inc();
        let status = master_status(task_id, agent_id, pb::TaskState::TaskError, reason, message);
        self.send_event(
            framework_id,
            pb::event::Event::Update(pb::event::Update {
                status: Some(status),
            }),
        );
    }
}
