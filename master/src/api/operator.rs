//! The `Operator` service: reads of the published snapshot, and the event stream.

use std::pin::Pin;
use std::sync::Arc;

use agora_proto as pb;
use tokio::sync::{broadcast, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct OperatorApi {
    pub(crate) view: watch::Receiver<Arc<pb::ClusterState>>,
    pub(crate) events: broadcast::Sender<pb::OperatorEvent>,
}

impl OperatorApi {
    fn state(&self) -> Arc<pb::ClusterState> {
        self.view.borrow().clone()
    }
}

pub(crate) fn health(state: &pb::ClusterState) -> pb::Health {
    pb::Health {
        healthy: true,
        leading: true,
        leader: state.master_info.clone(),
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
        Ok(Response::new(health(&self.state())))
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
        _: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        Err(Status::unimplemented(
            "draining agents is not supported by this master yet",
        ))
    }

    async fn reactivate_agent(
        &self,
        _: Request<pb::ReactivateAgentRequest>,
    ) -> Result<Response<pb::OperatorResponse>, Status> {
        Err(Status::unimplemented(
            "draining agents is not supported by this master yet",
        ))
    }
}
