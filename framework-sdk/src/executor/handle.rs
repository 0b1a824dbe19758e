//! [`ExecutorHandle`]: the calls an executor makes, from its callbacks or from tasks
//! it spawned. Calls are queued to the driver, which sends them in order.

use std::path::Path;
use std::sync::{Arc, Mutex};

use agora_core::limits;
use agora_proto as pb;
use tokio::sync::{mpsc, watch};

use super::{ExecutorEnv, ExecutorError};

/// What a handle asks of its driver.
pub(super) enum Call {
    /// A complete status update (uuid, timestamp, ids filled in).
    Update(Box<pb::TaskStatus>),
    /// A message for the scheduler.
    Message(Vec<u8>),
}

/// Shared between the driver and every clone of its handle.
struct Shared {
    /// What the agent set; fixed.
    env: ExecutorEnv,
    /// From the latest SUBSCRIBED; `None` before the first.
    agent_id: Mutex<Option<pb::AgentId>>,
    /// Feeds the driver's loop; closed when the driver ends.
    calls: mpsc::UnboundedSender<Call>,
    /// Set once by [`ExecutorHandle::stop`].
    stop: watch::Sender<bool>,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct ExecutorHandle {
    shared: Arc<Shared>,
}

impl ExecutorHandle {
    pub(super) fn new(env: ExecutorEnv, calls: mpsc::UnboundedSender<Call>) -> Self {
        Self {
            shared: Arc::new(Shared {
                env,
                agent_id: Mutex::new(None),
                calls,
                stop: watch::Sender::new(false),
            }),
        }
    }

    pub(super) fn set_agent_id(&self, agent_id: Option<pb::AgentId>) {
        *self
            .shared
            .agent_id
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = agent_id;
    }

    pub(super) fn stop_requested(&self) -> watch::Receiver<bool> {
        self.shared.stop.subscribe()
    }

    /// This executor's id.
    pub fn executor_id(&self) -> &str {
        &self.shared.env.executor_id
    }

    /// Its framework's id.
    pub fn framework_id(&self) -> &str {
        &self.shared.env.framework_id
    }

    /// Its sandbox (working directory), when the agent named one.
    pub fn sandbox(&self) -> Option<&Path> {
        self.shared.env.sandbox.as_deref()
    }

    /// The agent's id, once subscribed.
    pub fn agent_id(&self) -> Option<pb::AgentId> {
        self.shared
            .agent_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a status update reliably: the driver fills in a fresh uuid, the time
    /// (unless set), the source and the executor and agent ids, and resends it until
    /// the agent acknowledges it. Updates of one task reach the scheduler in the
    /// order they were sent. Fails at once if the update is invalid (no task id,
    /// TASK_STAGING, over a limit) or the driver has stopped.
    pub fn send_status_update(&self, mut status: pb::TaskStatus) -> Result<(), ExecutorError> {
        if status.state == pb::TaskState::TaskStaging as i32 {
            return Err(ExecutorError::InvalidUpdate(
                "executors must not send TASK_STAGING".into(),
            ));
        }
        status.uuid = new_uuid();
        if !status.timestamp.is_finite() || status.timestamp <= 0.0 {
            status.timestamp = agora_core::time::now_secs();
        }
        status.source = pb::task_status::Source::Executor as i32;
        status.executor_id = Some(pb::ExecutorId {
            value: self.shared.env.executor_id.clone(),
        });
        status.agent_id = self.agent_id();
        limits::task_status(&status)?;
        self.shared
            .calls
            .send(Call::Update(Box::new(status)))
            .map_err(|_| ExecutorError::Stopped)
    }

    /// Sends `data` to the scheduler (at most once: a message sent while the agent is
    /// away is delivered after re-subscription, one the agent loses is gone).
    pub fn send_framework_message(&self, data: Vec<u8>) -> Result<(), ExecutorError> {
        limits::bytes("data", data.len(), limits::MAX_MESSAGE_DATA_BYTES)?;
        self.shared
            .calls
            .send(Call::Message(data))
            .map_err(|_| ExecutorError::Stopped)
    }

    /// Ends the driver once every update sent so far is acknowledged (so no terminal
    /// update is lost when the executor exits right after).
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// 16 random bytes (a version-4 uuid).
fn new_uuid() -> Vec<u8> {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        // Every RandomState gets distinct SipHash keys (random per thread, then
        // advanced on every call), so the hashes differ and cannot be guessed.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_differ() {
        assert_ne!(new_uuid(), new_uuid());
        assert_eq!(new_uuid().len(), 16);
    }
}
