//! The `Operator` service: reads of the published snapshot, the event stream, and
//! the master group's membership. Every master answers reads (a follower's snapshot
//! holds itself and the group, and names the leader); membership changes go to the
//! leader.
//!
//! Quotas, weights, roles and agent maintenance are the core's (`core/roles.rs`,
//! `core/maintenance.rs`): only the leader answers them, through its `LeaderGate`,
//! and the core validates every request before it writes the registry.

use std::pin::Pin;
use std::sync::Arc;

use agora_proto as pb;
use tokio::sync::{broadcast, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::ask;
use crate::core::{ClusterView, Command, MaintenanceCommand, RolesCommand};
use crate::replication::MemberChange;
use crate::serving::LeaderGate;

pub struct OperatorApi {
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) group: watch::Receiver<pb::MasterGroup>,
    pub(crate) events: broadcast::Sender<pb::OperatorEvent>,
    pub(crate) gate: LeaderGate,
}

impl OperatorApi {
    fn state(&self) -> Arc<pb::ClusterState> {
        with_group(&self.view, &self.group)
    }
}

/// The published snapshot with the current group view in it.
pub(crate) fn with_group(
    view: &watch::Receiver<Arc<ClusterView>>,
    group: &watch::Receiver<pb::MasterGroup>,
) -> Arc<pb::ClusterState> {
    // Clone the handle out first: the snapshot is assembled without holding the
    // watch's lock.
    let snapshot = view.borrow().clone();
    let group = group.borrow().clone();
    Arc::new(snapshot.state_with_group(group))
}

/// Whether this master is healthy and who leads.
pub(crate) fn health(gate: &LeaderGate, group: &pb::MasterGroup) -> pb::Health {
    let leadership = gate.replica.leadership().borrow().clone();
    let leader = (leadership.leader_id != 0).then(|| pb::MasterInfo {
        id: leadership.leader_id.to_string(),
        address: leadership.leader_address.clone().unwrap_or_default(),
        ..Default::default()
    });
    pb::Health {
        healthy: leadership.stopped.is_none() && leadership.leader_id != 0,
        leading: leadership.serving,
        leader,
        group: Some(group.clone()),
    }
}

#[tonic::async_trait]
impl pb::operator_server::Operator for OperatorApi {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::OperatorEvent, Status>> + Send>>;

    async fn get_state(
        &self,
        _: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::ClusterState>, Status> {
        Ok(Response::new((*self.state()).clone()))
    }

    async fn get_agents(
        &self,
        _: Request<pb::GetAgentsRequest>,
    ) -> Result<Response<pb::GetAgentsResponse>, Status> {
        Ok(Response::new(pb::GetAgentsResponse {
            agents: self.state().agents.clone(),
        }))
    }

    async fn get_frameworks(
        &self,
        _: Request<pb::GetFrameworksRequest>,
    ) -> Result<Response<pb::GetFrameworksResponse>, Status> {
        Ok(Response::new(pb::GetFrameworksResponse {
            frameworks: self.state().frameworks.clone(),
        }))
    }

    async fn get_tasks(
        &self,
        _: Request<pb::GetTasksRequest>,
    ) -> Result<Response<pb::GetTasksResponse>, Status> {
        let state = self.state();
        Ok(Response::new(pb::GetTasksResponse {
            tasks: state.tasks.clone(),
            completed_tasks: state.completed_tasks.clone(),
        }))
    }

    async fn get_health(
        &self,
        _: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::Health>, Status> {
        Ok(Response::new(health(&self.gate, &self.group.borrow())))
    }

    async fn subscribe(
        &self,
        _: Request<pb::OperatorSubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Subscribe before taking the snapshot so no event falls between them.
        let receiver = self.events.subscribe();
        let snapshot = pb::OperatorEvent {
            event: Some(pb::operator_event::Event::Snapshot((*self.state()).clone())),
        };
        let events = tokio_stream::wrappers::BroadcastStream::new(receiver).map(|item| {
            item.map_err(|_| {
                Status::data_loss(
                    "this subscriber fell behind the master's events; subscribe again",
                )
            })
        });
        let stream = tokio_stream::once(Ok(snapshot)).chain(events);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn drain_agent(
        &self,
        request: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        let request = request.into_inner();
        ask(&self.gate.commands()?, |reply| {
            Command::Maintenance(MaintenanceCommand::Drain { request, reply })
        })
        .await?;
        Ok(Response::new(pb::OperatorResponse {}))
    }

    async fn reactivate_agent(
        &self,
        request: Request<pb::ReactivateAgentRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        let request = request.into_inner();
        ask(&self.gate.commands()?, |reply| {
            Command::Maintenance(MaintenanceCommand::Reactivate { request, reply })
        })
        .await?;
        Ok(Response::new(pb::OperatorResponse {}))
    }

    async fn set_quota(
        &self,
        request: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        let quota = request
            .into_inner()
            .quota
            .ok_or_else(|| Status::invalid_argument("quota: is required"))?;
        ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::SetQuota { quota, reply })
        })
        .await?;
        Ok(Response::new(pb::OperatorResponse {}))
    }

    async fn remove_quota(
        &self,
        request: Request<pb::RemoveQuotaRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        let role = request.into_inner().role;
        ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::RemoveQuota { role, reply })
        })
        .await?;
        Ok(Response::new(pb::OperatorResponse {}))
    }

    async fn get_quotas(
        &self,
        _: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        let quotas = ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::GetQuotas { reply })
        })
        .await?;
        Ok(Response::new(pb::GetQuotasResponse { quotas }))
    }

    async fn set_weights(
        &self,
        request: Request<pb::SetWeightsRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        let weights = request.into_inner().weights;
        ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::SetWeights { weights, reply })
        })
        .await?;
        Ok(Response::new(pb::OperatorResponse {}))
    }

    async fn get_weights(
        &self,
        _: Request<pb::GetWeightsRequest>,
    ) -> Result<Response<pb::GetWeightsResponse>, Status> {
        let weights = ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::GetWeights { reply })
        })
        .await?;
        Ok(Response::new(pb::GetWeightsResponse { weights }))
    }

    async fn get_roles(
        &self,
        _: Request<pb::GetRolesRequest>,
    ) -> Result<Response<pb::GetRolesResponse>, Status> {
        let roles = ask(&self.gate.commands()?, |reply| {
            Command::Roles(RolesCommand::GetRoles { reply })
        })
        .await?;
        Ok(Response::new(pb::GetRolesResponse { roles }))
    }

    async fn add_master(
        &self,
        request: Request<pb::AddMasterRequest>,
    ) -> Result<Response<pb::MasterGroup>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(Status::invalid_argument("id: a raft id is not 0"));
        }
        check_address(&request.address)?;
        self.gate.commands()?;
        let group = self.gate.replica.group().await?;
        if group.members.iter().any(|m| m.id == request.id) {
            return Err(Status::already_exists(format!(
                "master {} is already a member of the group",
                request.id
            )));
        }
        self.gate
            .replica
            .change_members(MemberChange::Add {
                id: request.id,
                address: request.address,
            })
            .await?;
        Ok(Response::new(self.gate.replica.group().await?))
    }

    async fn remove_master(
        &self,
        request: Request<pb::RemoveMasterRequest>,
    ) -> Result<Response<pb::MasterGroup>, Status> {
        let id = request.into_inner().id;
        // Only the leader's view of the membership is current.
        self.gate.commands()?;
        let group = self.gate.replica.group().await?;
        if !group.members.iter().any(|m| m.id == id) {
            return Err(Status::not_found(format!(
                "master {id} is not a member of the group"
            )));
        }
        if group.members.len() == 1 {
            return Err(Status::failed_precondition(
                "the last master of a group cannot be removed",
            ));
        }
        self.gate
            .replica
            .change_members(MemberChange::Remove { id })
            .await?;
        Ok(Response::new(self.gate.replica.group().await?))
    }

    async fn get_master_group(
        &self,
        _: Request<pb::GetMasterGroupRequest>,
    ) -> Result<Response<pb::MasterGroup>, Status> {
        Ok(Response::new(self.gate.replica.group().await?))
    }
}

/// A master address is "host:port", at most 255 bytes.
fn check_address(address: &str) -> Result<(), Status> {
    let valid = address.len() <= 255
        && address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "address: {address:?} is not host:port (at most 255 bytes)"
        )))
    }
}
