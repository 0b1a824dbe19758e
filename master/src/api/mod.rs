//! The gRPC services: thin adapters that turn requests into core commands.

pub mod agent_link;
pub mod operator;
pub mod scheduler;
pub mod state_store;

use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::core::Command;

/// Sends a command to the core and waits for its answer.
pub(crate) async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, Status>>) -> Command,
) -> Result<T, Status> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(make(reply))
        .await
        .map_err(|_| Status::unavailable("the master is shutting down"))?;
    answer
        .await
        .map_err(|_| Status::unavailable("the master is shutting down"))?
}
