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
    /// A task of a LAUNCH.
    Launch(Box<pb::TaskInfo>),
    /// The executor and tasks of a LAUNCH_GROUP.
    LaunchGroup(Box<pb::ExecutorInfo>, Vec<pb::TaskInfo>),
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
                            .map(|t| Step::Launch(Box::new(t.clone()))),
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
                    steps.push(Step::LaunchGroup(
                        Box::new(group.executor.clone().unwrap_or_default()),
                        group_tasks.to_vec(),
                    ));
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
            let tasks = steps.into_iter().flat_map(|step| match step {
                Step::Launch(task) => vec![*task],
                Step::LaunchGroup(_, tasks) => tasks,
                Step::Reserve(_) | Step::Unreserve(_) => Vec::new(),
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
            let task = match step {
                Step::Launch(task) => *task,
                Step::LaunchGroup(executor, tasks) => {
                    self.launch_group(
                        framework_id,
                        &agent_id,
                        &offer_role,
                        *executor,
                        tasks,
                        &mut remaining,
                        &mut launched,
                    );
                    continue;
                }
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
        let resources = match self.check_task(framework_id, agent_id, &task, remaining, launched) {
            Ok(resources) => resources,
            Err(problem) => {
                self.task_error(
                    framework_id,
                    &task_id,
                    agent_id,
                    Reason::TaskInvalid,
                    problem,
                );
                return;
            }
        };
        task.agent_id = Some(pb::AgentId {
            value: agent_id.to_string(),
        });
        self.record_launch(framework_id, agent_id, offer_role, &task, resources);
        let framework_info = self.frameworks.get(framework_id).map(|f| f.info.clone());
        let sent = self.send_to_agent(
            agent_id,
            pb::master_message::Message::RunTask(pb::master_message::RunTask {
                framework_info,
                task: Some(task),
            }),
        );
        if !sent {
            self.launch_not_delivered(framework_id, agent_id, &[task_id]);
        }
    }

    /// Validates a task group as a whole (Mesos: one invalid task makes every task
    /// of the group TASK_ERROR with REASON_TASK_GROUP_INVALID) and launches it on
    /// the agent's default executor. The executor's resources must fit too; they
    /// are charged with the group's first task.
    #[allow(clippy::too_many_arguments)]
    fn launch_group(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        offer_role: &str,
        mut executor: pb::ExecutorInfo,
        mut tasks: Vec<pb::TaskInfo>,
        remaining: &mut Resources,
        launched: &mut HashSet<String>,
    ) {
        let mut trial_remaining = remaining.clone();
        let mut trial_launched = launched.clone();
        let mut charged = Vec::with_capacity(tasks.len());
        let checked = self
            .check_group_executor(framework_id, &executor, &tasks, &mut trial_remaining)
            .and_then(|executor_resources| {
                for task in &tasks {
                    let resources = self
                        .check_task(
                            framework_id,
                            agent_id,
                            task,
                            &mut trial_remaining,
                            &mut trial_launched,
                        )
                        .map_err(|problem| format!("task '{}': {problem}", id_of(&task.task_id)))?;
                    charged.push(resources);
                }
                if let Some(first) = charged.first_mut() {
                    first.add(&executor_resources);
                }
                Ok(())
            });
        if let Err(problem) = checked {
            for task in &tasks {
                self.task_error(
                    framework_id,
                    &id_of(&task.task_id),
                    agent_id,
                    Reason::TaskGroupInvalid,
                    format!("invalid task group: {problem}"),
                );
            }
            return;
        }
        *remaining = trial_remaining;
        *launched = trial_launched;
        executor.r#type = pb::executor_info::Type::Default as i32;
        executor.framework_id = Some(pb::FrameworkId {
            value: framework_id.to_string(),
        });
        for (task, resources) in tasks.iter_mut().zip(charged) {
            task.agent_id = Some(pb::AgentId {
                value: agent_id.to_string(),
            });
            self.record_launch(framework_id, agent_id, offer_role, task, resources);
        }
        let task_ids: Vec<String> = tasks.iter().map(|t| id_of(&t.task_id)).collect();
        let framework_info = self.frameworks.get(framework_id).map(|f| f.info.clone());
        let sent = self.send_to_agent(
            agent_id,
            pb::master_message::Message::RunTaskGroup(pb::master_message::RunTaskGroup {
                framework_info,
                executor: Some(executor),
                task_group: Some(pb::TaskGroupInfo { tasks }),
            }),
        );
        if !sent {
            self.launch_not_delivered(framework_id, agent_id, &task_ids);
        }
    }

    /// The executor of a task group: a DEFAULT executor with an id, no command (it
    /// is the agent's own) and resources that fit; returns those resources.
    fn check_group_executor(
        &self,
        framework_id: &str,
        executor: &pb::ExecutorInfo,
        tasks: &[pb::TaskInfo],
        remaining: &mut Resources,
    ) -> Result<Resources, String> {
        if tasks.is_empty() {
            return Err("it has no tasks".into());
        }
        limits::id(
            "executor.executor_id",
            executor.executor_id.as_ref().map(|e| e.value.as_str()),
        )
        .map_err(|e| e.to_string())?;
        match pb::executor_info::Type::try_from(executor.r#type) {
            Ok(pb::executor_info::Type::Default | pb::executor_info::Type::Unknown) => {}
            _ => return Err("executor.type must be DEFAULT for a task group".into()),
        }
        if executor.command.is_some() {
            return Err(
                "the default executor is the agent's own; leave executor.command unset".into(),
            );
        }
        if let Some(named) = &executor.framework_id
            && named.value != framework_id
        {
            return Err(format!(
                "executor.framework_id '{}' is not this framework",
                named.value
            ));
        }
        if let Some(task) = tasks.iter().find(|t| t.executor.is_some()) {
            return Err(format!(
                "task '{}' names an executor; the tasks of a group run under the group's executor",
                id_of(&task.task_id)
            ));
        }
        limits::count(
            "executor.resources",
            executor.resources.len(),
            limits::MAX_RESOURCES,
        )
        .map_err(|e| e.to_string())?;
        let resources = Resources::from_proto(&executor.resources)
            .map_err(|e| format!("executor.resources: {e}"))?;
        remaining.checked_sub(&resources).map_err(|e| {
            format!("the executor uses more resources than offered ({e}): it asks for {resources}, the offers have {remaining} left")
        })?;
        Ok(resources)
    }

    /// Checks one task against what is left of the offers; on success takes its
    /// resources from `remaining` and its id into `launched`, and returns them.
    fn check_task(
        &self,
        framework_id: &str,
        agent_id: &str,
        task: &pb::TaskInfo,
        remaining: &mut Resources,
        launched: &mut HashSet<String>,
    ) -> Result<Resources, String> {
        let task_id = id_of(&task.task_id);
        limits::task_info(task).map_err(|e| e.to_string())?;
        let existing = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| t.state);
        if launched.contains(&task_id) || existing.is_some_and(|s| !is_terminal(s)) {
            return Err(format!(
                "task id '{task_id}' is already used by a live task of this framework"
            ));
        }
        if existing.is_some() {
            // The agent still holds the old task until its end is acknowledged; a new
            // launch under the same id would be confused with it.
            return Err(format!(
                "task id '{task_id}' ended but its terminal update is not acknowledged yet; \
                 acknowledge it (or reconcile) before reusing the id"
            ));
        }
        if let Some(given) = task.agent_id.as_ref().map(|a| a.value.as_str())
            && !given.is_empty()
            && given != agent_id
        {
            return Err(format!(
                "task names agent '{given}' but the offer is of agent '{agent_id}'"
            ));
        }
        let resources = match Resources::from_proto(&task.resources) {
            Ok(r) if r.is_empty() => return Err("a task must use some resources".into()),
            Ok(r) => r,
            Err(e) => return Err(format!("task_info.resources: {e}")),
        };
        if let Err(e) = remaining.checked_sub(&resources) {
            return Err(format!(
                "task uses more resources than offered ({e}): it asks for {resources}, the offers have {remaining} left"
            ));
        }
        launched.insert(task_id);
        Ok(resources)
    }

    /// Records a checked task as launched (TASK_STAGING), charging `resources`.
    fn record_launch(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        offer_role: &str,
        task: &pb::TaskInfo,
        resources: Resources,
    ) {
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
    }

    /// The launch of `task_ids` could not be sent: the agent disconnected.
    fn launch_not_delivered(&mut self, framework_id: &str, agent_id: &str, task_ids: &[String]) {
        let state = self.visible_state(framework_id, pb::TaskState::TaskDropped);
        for task_id in task_ids {
            let status = master_status(
                task_id,
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
