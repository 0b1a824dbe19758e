//! The `ExecutorApi` gRPC service executors call on the agent's port. Each call is
//! handed to the actor, which authenticates it (executor id + token) and answers.

use agora_proto as pb;
use agora_proto::executor_api_server::ExecutorApi;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::actor::Command;

/// See the module documentation.
pub(crate) struct ExecutorApiService {
    /// Every call becomes a command with a reply channel.
    pub actor: mpsc::Sender<Command>,
}

impl ExecutorApiService {
    /// Sends a command carrying a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Status>>) -> Command,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(make(reply))
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?
    }
}

#[tonic::async_trait]
impl ExecutorApi for ExecutorApiService {
    type SubscribeStream = ReceiverStream<Result<pb::ExecutorEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::ExecutorSubscribe>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let events = self
            .ask(|reply| Command::Subscribe { request, reply })
            .await?;
        Ok(Response::new(ReceiverStream::new(events)))
    }

    async fn update(
        &self,
        request: Request<pb::ExecutorUpdate>,
    ) -> Result<Response<pb::ExecutorCallResponse>, Status> {
        let request = request.into_inner();
        self.ask(|reply| Command::Update { request, reply }).await?;
        Ok(Response::new(pb::ExecutorCallResponse {}))
    }

    async fn message(
        &self,
        request: Request<pb::ExecutorMessage>,
    ) -> Result<Response<pb::ExecutorCallResponse>, Status> {
        let request = request.into_inner();
        self.ask(|reply| Command::Message { request, reply })
            .await?;
        Ok(Response::new(pb::ExecutorCallResponse {}))
    }
}
