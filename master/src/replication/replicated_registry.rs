//! The registry, replicated: every op is a raft proposal acknowledged once a majority
//! has committed it; a load is a linearizable read.

use agora_proto as pb;

use super::node::ReplicaHandle;
use crate::registry::{Registry, RegistryError, RegistryFuture, RegistryOp, RegistryState};

pub struct ReplicatedRegistry {
    pub replica: ReplicaHandle,
}

impl Registry for ReplicatedRegistry {
    fn load(&self) -> RegistryFuture<'_, RegistryState> {
        Box::pin(async move {
            self.replica
                .read(|state| state.registry.clone())
                .await
                .map_err(|e| RegistryError::Replication(e.to_string()))
        })
    }

    fn apply(&self, op: RegistryOp) -> RegistryFuture<'_, ()> {
        Box::pin(async move {
            // Ops that carry a time (a disconnection, say) keep it, so the registry
            // records what the core already reported.
            let result = self
                .replica
                .propose_at(
                    pb::replicated_command::Command::Registry(op.to_command()),
                    op.time(),
                )
                .await
                .map_err(|e| RegistryError::Replication(e.to_string()))?;
            match result.result {
                Some(pb::command_result::Result::Rejected(reason)) => {
                    Err(RegistryError::Rejected(reason))
                }
                _ => Ok(()),
            }
        })
    }
}
