//! Custom executors: the [`Executor`] trait and the [`ExecutorDriver`] that connects
//! one to the agent that started it.
//!
//! A framework names its executor in a task's `ExecutorInfo` (type CUSTOM, with the
//! command that starts it). The agent starts that command in its own container with
//! an environment naming the agent's executor API, the executor's ids and a secret
//! token (see [`env`]), then hands it the tasks for that executor: all tasks of the
//! same framework with the same executor id go to the same running executor. The
//! executor runs them however it likes and reports on each with status updates.
//!
//! The driver does the protocol: it subscribes, calls the [`Executor`]'s callbacks as
//! events arrive, gives every status update a uuid and keeps it until the agent
//! acknowledges it (the agent checkpoints it first), resends what is unacknowledged
//! periodically and on re-subscription, and, when the agent goes away (it restarts),
//! keeps the executor running and re-subscribes with backoff for up to the agent's
//! recovery timeout, so a restarted agent finds its executors again, as Mesos'
//! executor driver does.
//!
//! ```no_run
//! use agora_sdk::executor::{Executor, ExecutorDriver, ExecutorHandle};
//! use agora_sdk::proto;
//!
//! /// Finishes every task at once.
//! struct Instant;
//!
//! impl Executor for Instant {
//!     async fn launch_task(&mut self, driver: &ExecutorHandle, task: proto::TaskInfo) {
//!         let _ = driver.send_status_update(proto::TaskStatus {
//!             task_id: task.task_id,
//!             state: proto::TaskState::TaskFinished as i32,
//!             ..Default::default()
//!         });
//!     }
//!
//!     async fn kill_task(&mut self, _: &ExecutorHandle, _: proto::TaskId, _: Option<proto::KillPolicy>) {}
//!
//!     async fn shutdown(&mut self, driver: &ExecutorHandle, _: std::time::Duration) {
//!         driver.stop();
//!     }
//! }
//!
//! # async fn example() -> Result<(), agora_sdk::executor::ExecutorError> {
//! let driver = ExecutorDriver::from_env(agora_sdk::stderr_logger(false))?;
//! driver.run(&mut Instant).await
//! # }
//! ```
//!
//! - [`env`](mod@env): the variables the agent sets, and [`ExecutorEnv`].
//! - `driver`: [`ExecutorDriver`]: subscription, event dispatch, reliable updates.
//! - `handle`: [`ExecutorHandle`]: what callbacks (and tasks they spawn) call.

mod driver;
pub mod env;
mod handle;

use std::future::Future;
use std::time::Duration;

use agora_core::limits::LimitError;
use agora_proto as pb;

pub use driver::ExecutorDriver;
pub use env::{EnvError, ExecutorEnv};
pub use handle::ExecutorHandle;

/// Why the executor driver (or one of its calls) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecutorError {
    /// A variable the agent sets is missing or cannot be used: the program was not
    /// started by an agent, or not by one that speaks this protocol.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The agent refused the subscription for good (unknown executor, bad token).
    #[error("the agent refused the executor: {0}")]
    Refused(String),
    /// The agent stayed unreachable for longer than the recovery timeout.
    #[error("the agent was unreachable for longer than {timeout:?}: {reason}")]
    AgentUnreachable { timeout: Duration, reason: String },
    /// The status update breaks a protocol limit or rule; it was not sent.
    #[error("invalid status update: {0}")]
    InvalidUpdate(String),
    /// The call was made after the driver ended.
    #[error("the executor driver has stopped")]
    Stopped,
}

impl From<LimitError> for ExecutorError {
    fn from(e: LimitError) -> Self {
        ExecutorError::InvalidUpdate(e.to_string())
    }
}

/// A custom executor. The driver calls one method at a time, in the order the agent
/// sent the events, and waits for it to return before reading the next; so state may
/// live in `self` without locks, but a callback must not block: start the task's
/// work (a process, a tokio task holding a clone of the handle) and return.
///
/// Implement the methods with `async fn`. Answer with `driver`: status updates for
/// the tasks, framework messages, and [`ExecutorHandle::stop`] when done.
pub trait Executor: Send {
    /// The agent accepted the subscription. Called again after every re-subscription
    /// (the agent restarted, or the connection broke), with the agent's current info.
    fn subscribed(
        &mut self,
        driver: &ExecutorHandle,
        info: pb::executor_event::Subscribed,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, info);
        async {}
    }

    /// Run a task. Report TASK_RUNNING once it runs, and a terminal state when it ends.
    fn launch_task(
        &mut self,
        driver: &ExecutorHandle,
        task: pb::TaskInfo,
    ) -> impl Future<Output = ()> + Send;

    /// Run a group of tasks that live and die together. The default launches each
    /// task on its own with [`Executor::launch_task`].
    fn launch_group(
        &mut self,
        driver: &ExecutorHandle,
        group: pb::TaskGroupInfo,
    ) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move {
            for task in group.tasks {
                self.launch_task(driver, task).await;
            }
        }
    }

    /// Kill a task: its terminal update (TASK_KILLED) says when it is gone. The
    /// policy's grace period, when set, is how long the task may take to stop.
    fn kill_task(
        &mut self,
        driver: &ExecutorHandle,
        task_id: pb::TaskId,
        kill_policy: Option<pb::KillPolicy>,
    ) -> impl Future<Output = ()> + Send;

    /// The agent checkpointed a status update (the driver stops resending it).
    fn acknowledged(
        &mut self,
        driver: &ExecutorHandle,
        task_id: pb::TaskId,
        uuid: Vec<u8>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, task_id, uuid);
        async {}
    }

    /// The scheduler sent this executor a message (at most once, as in Mesos).
    fn framework_message(
        &mut self,
        driver: &ExecutorHandle,
        data: Vec<u8>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, data);
        async {}
    }

    /// Kill every task within `grace`, report them, then [`ExecutorHandle::stop`].
    /// The agent destroys the executor's container if it is still there after the
    /// grace period and the agent's shutdown grace. The default just stops.
    fn shutdown(
        &mut self,
        driver: &ExecutorHandle,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send {
        let _ = grace;
        driver.stop();
        async {}
    }

    /// The agent reported an error.
    fn error(
        &mut self,
        driver: &ExecutorHandle,
        message: String,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, message);
        async {}
    }

    /// The connection to the agent broke; the driver is re-subscribing. Tasks keep
    /// running; updates sent meanwhile are delivered once the agent is back.
    fn disconnected(&mut self, driver: &ExecutorHandle) -> impl Future<Output = ()> + Send {
        let _ = driver;
        async {}
    }
}
