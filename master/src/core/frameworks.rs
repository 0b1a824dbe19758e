//! Framework lifecycle: subscribe, disconnect, failover timeout, teardown; and the
//! calls that only touch the framework's own offer state (decline, revive, suppress).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use agora_core::ids::id_opt;
use agora_core::{Resources, limits};
use agora_proto as pb;
use slog::{error, info, warn};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use super::{FrameworkConnection, FrameworkEntry, MasterCore, OUTBOUND_QUEUE, Timer};
use crate::registry::RegistryOp;

/// What a successful SUBSCRIBE hands back to the API layer: the event stream (its
/// first event, SUBSCRIBED, is already queued) and the ids that identify it.
pub(crate) struct SubscribeReply {
    pub events: mpsc::Receiver<Result<pb::Event, Status>>,
    pub framework_id: String,
    pub stream_id: String,
}

/// Mesos' rule for `Filters.refuse_seconds`: unset or negative means the default,
/// and anything above a year is a year.
pub(crate) fn refuse_duration(filters: Option<&pb::Filters>, default: Duration) -> Duration {
    match filters.and_then(|f| f.refuse_seconds) {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::from_secs_f64(s.min(limits::MAX_TIMEOUT_SECONDS))
        }
        Some(s) if s.is_infinite() && s > 0.0 => {
            Duration::from_secs_f64(limits::MAX_TIMEOUT_SECONDS)
        }
        _ => default,
    }
}

impl MasterCore {
    /// Rebuilds the registry's part of the state after a start.
    /// A registry that cannot be read is an error, never an empty start: serving from
    /// an empty registry would forget every agent and framework.
    pub(super) async fn recover(&mut self) -> Result<(), crate::registry::RegistryError> {
        let state = self.registry.load().await?;
        let now_wall = agora_core::time::now_secs();
        self.completed_frameworks = state
            .removed_frameworks
            .iter()
            .map(|r| r.framework_id.clone())
            .collect();
        self.recover_reservations(&state.reservations);
        let mut awaiting_agents = false;
        for registered in state.agents {
            let Some(info) = registered.info else {
                continue;
            };
            let Some(id) = id_opt(&info.id) else {
                continue;
            };
            use crate::registry::AgentStanding;
            match AgentStanding::try_from(registered.standing) {
                Ok(AgentStanding::Gone) => {
                    self.gone_agents.insert(id);
                }
                standing => {
                    let reachable = matches!(standing, Ok(AgentStanding::Admitted));
                    awaiting_agents |= reachable;
                    let total = self.with_reservations(
                        &id,
                        Resources::from_proto(&info.resources).unwrap_or_default(),
                    );
                    self.agents.insert(
                        id,
                        super::AgentEntry {
                            info,
                            total,
                            used: Resources::new(),
                            connection: None,
                            reachable,
                            awaiting_reregistration: reachable,
                            missed_pings: 0,
                            registered_time: registered.since,
                            tasks: Default::default(),
                            orphans: Default::default(),
                            pending_kills: Default::default(),
                            maintenance: None,
                        },
                    );
                }
            }
        }
        if awaiting_agents {
            let at = Instant::now() + self.timings.agent_reregister_timeout;
            self.set_timer(at, Timer::AgentReregisterDeadline);
        }
        for registered in state.frameworks {
            let Some(info) = registered.info else {
                continue;
            };
            let Some(id) = id_opt(&info.id) else {
                continue;
            };
            // A framework connected when the master stopped is disconnected from now.
            let since = if registered.disconnected_time > 0.0 {
                registered.disconnected_time
            } else {
                now_wall
            };
            let elapsed = (now_wall - since).max(0.0);
            let left = (info.failover_timeout - elapsed).max(0.0);
            let entry = new_framework_entry(info, registered.registered_time, since);
            self.frameworks.insert(id.clone(), entry);
            self.start_failover_timer(&id, Duration::from_secs_f64(left));
        }
        self.recover_roles(&state.weights, &state.quotas);
        self.recover_maintenance(&state.maintenance);
        self.recompute_cluster_total();
        info!(self.logger, "registry recovered";
            "agents" => self.agents.len(), "frameworks" => self.frameworks.len());
        Ok(())
    }

    pub(super) async fn subscribe(
        &mut self,
        request: pb::SubscribeRequest,
    ) -> Result<SubscribeReply, Status> {
        let Some(mut info) = request.framework_info else {
            self.metrics.invalid_calls.inc();
            return Err(Status::invalid_argument("SUBSCRIBE needs framework_info"));
        };
        if let Err(e) = limits::framework_info(&info).and_then(|_| {
            limits::count(
                "suppressed_roles",
                request.suppressed_roles.len(),
                limits::MAX_ROLES,
            )
        }) {
            self.metrics.invalid_calls.inc();
            return Err(Status::invalid_argument(e.to_string()));
        }
        if info.name.trim().is_empty() {
            self.metrics.invalid_calls.inc();
            return Err(Status::invalid_argument("framework_info.name is required"));
        }
        let requested_id = id_opt(&info.id);
        if let Some(id) = &requested_id
            && self.is_completed_framework(id)
        {
            return Err(Status::permission_denied(format!(
                "framework '{id}' was removed (torn down, or its failover timeout expired); \
                 subscribe without an id to start anew"
            )));
        }
        let is_new = requested_id
            .as_ref()
            .is_none_or(|id| !self.frameworks.contains_key(id));
        if is_new && self.frameworks.len() >= limits::MAX_FRAMEWORKS {
            return Err(Status::resource_exhausted(format!(
                "the master already holds {} frameworks; tear some down first",
                limits::MAX_FRAMEWORKS
            )));
        }
        let framework_id = requested_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        info.id = Some(pb::FrameworkId {
            value: framework_id.clone(),
        });
        let now = agora_core::time::now_secs();
        self.registry
            .apply(RegistryOp::PutFramework {
                info: info.clone(),
                time: now,
            })
            .await
            .map_err(|e| Status::unavailable(format!("registry write failed: {e}")))?;

        let (sender, events) = mpsc::channel(OUTBOUND_QUEUE);
        let stream_id = uuid::Uuid::new_v4().to_string();
        let subscribed = pb::Event {
            event: Some(pb::event::Event::Subscribed(pb::event::Subscribed {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.clone(),
                }),
                heartbeat_interval_seconds: self.timings.framework_heartbeat_interval.as_secs_f64(),
                master_info: Some(self.master_info.clone()),
                stream_id: stream_id.clone(),
            })),
        };
        // The queue is new and empty, so this cannot fail.
        let _ = sender.try_send(Ok(subscribed));
        let connection = FrameworkConnection {
            sender,
            stream_id: stream_id.clone(),
        };
        let roles = subscribed_roles(&info);
        let suppressed: std::collections::BTreeSet<String> = request
            .suppressed_roles
            .iter()
            .filter(|r| roles.contains(r))
            .cloned()
            .collect();
        match self.frameworks.get_mut(&framework_id) {
            Some(existing) => {
                // A failed-over scheduler: the old stream is told and closed.
                if let Some(old) = existing.connection.take() {
                    let _ = old.sender.try_send(Ok(pb::Event {
                        event: Some(pb::event::Event::Error(pb::event::Error {
                            message:
                                "framework failed over: a newer subscription replaced this one"
                                    .into(),
                        })),
                    }));
                }
                existing.roles = roles;
                existing.info = info;
                // Offers made to the old subscription go back to the pool; the new
                // one gets fresh offers (Mesos rescinds them on failover).
                for offer_id in self.offers.ids_for_framework(&framework_id) {
                    self.offers.take(&offer_id);
                }
                existing.connection = Some(connection);
                existing.epoch += 1;
                existing.disconnected_time = 0.0;
                existing.suppressed_roles = suppressed;
                existing.filters.clear();
                if let Some(key) = existing.failover_timer.take() {
                    self.timers.remove(&key);
                }
                info!(self.logger, "framework re-subscribed"; "framework_id" => &framework_id);
            }
            None => {
                let mut entry = new_framework_entry(info, now, 0.0);
                entry.connection = Some(connection);
                entry.suppressed_roles = suppressed;
                info!(self.logger, "framework subscribed";
                    "framework_id" => &framework_id, "name" => &entry.info.name);
                self.frameworks.insert(framework_id.clone(), entry);
            }
        }
        self.emit_framework_added(&framework_id);
        self.allocation_needed = true;
        self.view_dirty = true;
        Ok(SubscribeReply {
            events,
            framework_id,
            stream_id,
        })
    }

    pub(super) async fn framework_stream_closed(&mut self, framework_id: &str, stream_id: &str) {
        self.framework_disconnected_now(framework_id, stream_id);
        self.flush_deferred_registry_ops().await;
    }

    /// Marks a framework disconnected if `stream_id` is its live subscription: its
    /// offers are withdrawn and its failover timeout starts.
    pub(crate) fn framework_disconnected_now(&mut self, framework_id: &str, stream_id: &str) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if fw.connection.as_ref().map(|c| c.stream_id.as_str()) != Some(stream_id) {
            return;
        }
        fw.connection = None;
        fw.epoch += 1;
        let now = agora_core::time::now_secs();
        fw.disconnected_time = now;
        let timeout = Duration::from_secs_f64(fw.info.failover_timeout.max(0.0));
        info!(self.logger, "framework disconnected";
            "framework_id" => framework_id, "failover_timeout_s" => timeout.as_secs_f64());
        for offer_id in self.offers.ids_for_framework(framework_id) {
            self.offers.take(&offer_id);
        }
        self.start_failover_timer(framework_id, timeout);
        self.deferred_registry_ops
            .push(RegistryOp::FrameworkDisconnected {
                framework_id: framework_id.to_string(),
                time: now,
            });
        self.allocation_needed = true;
        self.view_dirty = true;
    }

    pub(super) async fn failover_timeout_expired(&mut self, framework_id: &str, epoch: u64) {
        let current = self
            .frameworks
            .get(framework_id)
            .is_some_and(|f| f.epoch == epoch && f.connection.is_none());
        if current {
            warn!(self.logger, "framework failover timeout expired; removing it and killing its tasks";
                "framework_id" => framework_id);
            self.remove_framework(framework_id).await;
        }
    }

    pub(super) async fn teardown(&mut self, framework_id: &str) -> Result<(), Status> {
        info!(self.logger, "framework teardown"; "framework_id" => framework_id);
        self.remove_framework(framework_id).await;
        Ok(())
    }

    /// Removes a framework for good: its agents shut its executors down, its resources
    /// return, and late updates for it are acknowledged on its behalf.
    pub(crate) async fn remove_framework(&mut self, framework_id: &str) {
        self.cancel_failover_timer(framework_id);
        let Some(fw) = self.frameworks.remove(framework_id) else {
            return;
        };
        for offer_id in self.offers.ids_for_framework(framework_id) {
            self.offers.take(&offer_id);
        }
        let mut agents_with_tasks = std::collections::HashSet::new();
        for task in fw.tasks.values() {
            agents_with_tasks.insert(task.agent_id.clone());
            if let Some(agent) = self.agents.get_mut(&task.agent_id) {
                agent
                    .tasks
                    .remove(&(framework_id.to_string(), task.info_task_id()));
                if !agora_core::task_state::is_terminal(task.state) {
                    agent.used.sub_saturating(&task.resources);
                }
            }
        }
        for agent_id in agents_with_tasks {
            self.send_to_agent(
                &agent_id,
                pb::master_message::Message::ShutdownFramework(
                    pb::master_message::ShutdownFramework {
                        framework_id: fw.info.id.clone(),
                    },
                ),
            );
        }
        self.remember_completed_framework(framework_id);
        if let Err(e) = self
            .registry
            .apply(RegistryOp::RemoveFramework {
                framework_id: framework_id.to_string(),
                time: agora_core::time::now_secs(),
            })
            .await
        {
            error!(self.logger, "registry write failed while removing a framework";
                "framework_id" => framework_id, "error" => %e);
        }
        let _ = self.operator_events.send(pb::OperatorEvent {
            event: Some(pb::operator_event::Event::FrameworkRemoved(
                pb::operator_event::FrameworkRemoved {
                    framework_id: fw.info.id.clone(),
                },
            )),
        });
        // Dropping `fw` drops its event sender, which ends its stream.
        self.allocation_needed = true;
        self.view_dirty = true;
    }

    pub(super) fn decline(
        &mut self,
        framework_id: &str,
        decline: pb::call::Decline,
    ) -> Result<(), Status> {
        limits::count(
            "decline.offer_ids",
            decline.offer_ids.len(),
            limits::MAX_OFFER_IDS,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let refuse = refuse_duration(decline.filters.as_ref(), self.timings.default_refuse);
        for offer_id in &decline.offer_ids {
            let owned = self
                .offers
                .get(&offer_id.value)
                .is_some_and(|o| o.framework_id == framework_id);
            // Unknown offers are ignored, as Mesos does: they may have been rescinded.
            if owned && let Some(offer) = self.offers.take(&offer_id.value) {
                self.add_filter(
                    framework_id,
                    &offer.agent_id,
                    &offer.role,
                    refuse,
                    offer.resources,
                );
            }
        }
        self.allocation_needed = true;
        self.view_dirty = true;
        Ok(())
    }

    /// Keeps `refused` resources of the agent from the framework for `refuse`.
    pub(crate) fn add_filter(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        refuse: Duration,
        refused: Resources,
    ) {
        if refuse.is_zero() {
            return;
        }
        let until = Instant::now() + refuse;
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.filters
                .insert((agent_id.to_string(), role.to_string()), (until, refused));
        }
        self.set_timer(until, Timer::FilterExpired);
    }

    /// REVIVE: the named roles (every role when none is named) get offers again, and
    /// their decline filters are dropped.
    pub(super) fn revive(&mut self, framework_id: &str, roles: &[String]) -> Result<(), Status> {
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            let named = |role: &str| roles.is_empty() || roles.iter().any(|r| r == role);
            fw.suppressed_roles.retain(|role| !named(role));
            fw.filters.retain(|(_, role), _| !named(role));
        }
        self.allocation_needed = true;
        Ok(())
    }

    /// SUPPRESS: the named roles (every role when none is named) get no offers until
    /// REVIVE; roles the framework did not subscribe to are ignored.
    pub(super) fn suppress(&mut self, framework_id: &str, roles: &[String]) -> Result<(), Status> {
        limits::count("suppress.roles", roles.len(), limits::MAX_ROLES)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            let named: Vec<String> = fw
                .roles
                .iter()
                .filter(|role| roles.is_empty() || roles.contains(role))
                .cloned()
                .collect();
            fw.suppressed_roles.extend(named);
        }
        Ok(())
    }

    /// Applies registry writes queued by code that could not wait for them.
    pub(crate) async fn flush_deferred_registry_ops(&mut self) {
        for op in std::mem::take(&mut self.deferred_registry_ops) {
            if let Err(e) = self.registry.apply(op).await {
                error!(self.logger, "registry write failed"; "error" => %e);
            }
        }
    }
}

impl FrameworkEntry {
    /// What its live tasks hold, by the role they were allocated to. A framework of one
    /// role (the common case) needs no walk over its tasks.
    pub(crate) fn used_by_role(&self) -> BTreeMap<String, Resources> {
        let mut by_role = BTreeMap::new();
        if let [role] = self.roles.as_slice() {
            if !self.used.is_empty() {
                by_role.insert(role.clone(), self.used.clone());
            }
            return by_role;
        }
        for task in self.tasks.values() {
            if !agora_core::task_state::is_terminal(task.state) {
                by_role
                    .entry(task.role.clone())
                    .or_insert_with(Resources::new)
                    .add(&task.resources);
            }
        }
        by_role
    }
}

impl MasterCore {
    /// The role a task an agent reports was allocated to: the reserved role of its
    /// resources if the framework has it, else the framework's first role.
    pub(super) fn role_of_reported_task(
        &self,
        framework_id: &str,
        resources: &Resources,
    ) -> String {
        let roles = self
            .frameworks
            .get(framework_id)
            .map(|f| f.roles.clone())
            .unwrap_or_default();
        resources
            .iter()
            .map(|(key, _)| key.role.as_str())
            .find(|role| roles.iter().any(|r| r == role))
            .map(str::to_string)
            .or_else(|| roles.first().cloned())
            .unwrap_or_else(|| agora_core::resources::UNRESERVED_ROLE.to_string())
    }
}

/// The roles a framework subscribes to, duplicates dropped; `*` when it names none.
pub(super) fn subscribed_roles(info: &pb::FrameworkInfo) -> Vec<String> {
    let mut roles: Vec<String> = Vec::with_capacity(info.roles.len().max(1));
    for role in &info.roles {
        let role = if role.is_empty() {
            agora_core::resources::UNRESERVED_ROLE
        } else {
            role.as_str()
        };
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_string());
        }
    }
    if roles.is_empty() {
        roles.push(agora_core::resources::UNRESERVED_ROLE.to_string());
    }
    roles
}

/// A framework known only from an agent's report, disconnected since `now`.
pub(super) fn recovered_framework(info: pb::FrameworkInfo, now: f64) -> FrameworkEntry {
    new_framework_entry(info, now, now)
}

fn new_framework_entry(
    info: pb::FrameworkInfo,
    registered_time: f64,
    disconnected_time: f64,
) -> FrameworkEntry {
    FrameworkEntry {
        roles: subscribed_roles(&info),
        info,
        connection: None,
        epoch: 0,
        failover_timer: None,
        suppressed_roles: Default::default(),
        filters: HashMap::new(),
        registered_time,
        disconnected_time,
        tasks: HashMap::new(),
        completed: VecDeque::new(),
        used: Resources::new(),
    }
}
