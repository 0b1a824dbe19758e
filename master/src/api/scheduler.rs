//! The `Scheduler` service: SUBSCRIBE and every framework call.

use std::pin::Pin;
use std::task::{Context, Poll};

use agora_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ask;
use crate::core::Command;
use crate::serving::LeaderGate;

pub struct SchedulerApi {
    /// The core while this master leads; a redirect to the leader otherwise.
    pub(crate) gate: LeaderGate,
}

/// A framework's event stream. Dropping it (the client went away) tells the core, so
/// the framework's failover timeout starts at once rather than at the next send.
pub struct SubscriptionStream {
    inner: ReceiverStream<Result<pb::Event, Status>>,
    commands: mpsc::Sender<Command>,
    framework_id: String,
    stream_id: String,
}

impl Stream for SubscriptionStream {
    type Item = Result<pb::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        let closed = Command::FrameworkStreamClosed {
            framework_id: std::mem::take(&mut self.framework_id),
            stream_id: std::mem::take(&mut self.stream_id),
        };
        // The notice must not be lost to a full queue: wait for room off this thread.
        if let Err(mpsc::error::TrySendError::Full(closed)) = self.commands.try_send(closed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let commands = self.commands.clone();
            runtime.spawn(async move {
                let _ = commands.send(closed).await;
            });
        }
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    type SubscribeStream = SubscriptionStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let commands = self.gate.commands()?;
        let reply = ask(&commands, |reply| Command::Subscribe { request, reply }).await?;
        Ok(Response::new(SubscriptionStream {
            inner: ReceiverStream::new(reply.events),
            commands,
            framework_id: reply.framework_id,
            stream_id: reply.stream_id,
        }))
    }

    async fn call(&self, request: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let call = request.into_inner();
        ask(&self.gate.commands()?, |reply| Command::Call {
            call,
            reply,
        })
        .await?;
        Ok(Response::new(pb::CallResponse {}))
    }
}
