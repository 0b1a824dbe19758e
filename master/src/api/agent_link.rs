//! The `AgentLink` service: one bidirectional stream per agent.

use std::time::Duration;

use agora_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ask;
use crate::core::{Command, OUTBOUND_QUEUE};
use crate::serving::LeaderGate;

/// How long an agent has to send its first message after opening the stream.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AgentLinkApi {
    /// The core while this master leads; a redirect to the leader otherwise.
    pub(crate) gate: LeaderGate,
}

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentLinkApi {
    type AttachStream = ReceiverStream<Result<pb::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        // Refuse a follower's agents before reading anything from them.
        let commands = self.gate.commands()?;
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None)) => {
                return Err(Status::invalid_argument(
                    "the stream ended before `register`",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no `register` within 30 s")),
        };
        let (sender, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let session = ask(&commands, |reply| Command::AgentAttach {
            first,
            sender,
            reply,
        })
        .await?;
        tokio::spawn(async move {
            // Malformed frames end the stream with an error; the agent reconnects.
            while let Ok(Some(message)) = inbound.message().await {
                let forwarded = commands
                    .send(Command::AgentMessage {
                        session: session.clone(),
                        message,
                    })
                    .await;
                if forwarded.is_err() {
                    return;
                }
            }
            let _ = commands.send(Command::AgentStreamClosed { session }).await;
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}
