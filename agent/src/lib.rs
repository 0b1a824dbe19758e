//! The Agora agent: offers a machine's resources to the master and runs the tasks
//! the master sends it, each under an executor process that outlives the agent.
//!
//! An agent is one actor that owns all state, fed by three kinds of producers: the
//! master link (one `AgentLink.Attach` stream, reconnected with backoff), the
//! executor API (gRPC on the agent's own port, next to `/health` and `/metrics`),
//! and background tasks that launch, watch and destroy containers. Status updates
//! are checkpointed before they are forwarded and retried until acknowledged, so a
//! restarted agent (same `work_dir`) re-registers with its id, reattaches to the
//! executors that kept running and delivers what was pending.
//!
//! # Layout
//! - [`agent`]: [`Agent::start`] and [`AgentHandle`]: wiring, serving, shutdown.
//! - [`config`]: [`AgentConfig`], settings with Mesos' defaults.
//! - [`error`]: [`AgentError`], why an agent could not start.
//! - `actor`: the one owner of the agent's state; registration, task launch and
//!   kill, executor calls, container lifecycle, recovery from checkpoints.
//! - `master_link`: the connection to the master: registration, pings, backoff.
//! - `executor_api`: the `ExecutorApi` gRPC service, forwarding to the actor.
//! - `http`: the `/health`, `/metrics`, `/api/v1/containers` and `/api/v1/logs`
//!   routes.
//! - `metrics`: the Prometheus metrics.
//! - [`status_updates`]: reliable, ordered, checkpointed status-update streams.
//! - [`checkpoint`]: atomic files and checksummed append-only record logs.
//! - `journal`: group commit of the checkpoints off the actor, and the rule that
//!   nothing leaves the actor before what it depends on is durable.
//! - `meta`: what is checkpointed where under `work_dir`.
//! - `procfs`: process session and start time from /proc.
//! - [`sandbox`]: task output rotated by size, read back by logical offset; the
//!   executor runs found on disk.
//! - [`gc`]: garbage collection of finished sandboxes by age and disk use.
//! - [`usage`]: per-container cpu time and memory, with their limits.
//! - [`resource_detection`]: cpus, mem, disk, ports, and operator overrides.
//! - [`containerizer`]: the `Containerizer` trait and the `process` containerizer.
//! - [`command_executor`]: the built-in executor (`agora-executor`): the command
//!   executor for single tasks and the default executor for task groups, with
//!   health checks.
//! - [`oci`]: OCI bundles, the runtime CLI and cgroup readings for task containers.
//! - [`images`]: the local OCI image store: import, unpacked shared layers, resolve.

mod actor;
pub mod agent;
pub mod checkpoint;
pub mod command_executor;
pub mod config;
pub mod containerizer;
pub mod error;
mod executor_api;
pub mod gc;
mod http;
pub mod images;
mod journal;
mod master_link;
mod meta;
mod metrics;
pub mod oci;
mod procfs;
pub mod resource_detection;
pub mod sandbox;
pub mod status_updates;
pub mod usage;

pub use agent::{Agent, AgentHandle};
pub use config::{AgentConfig, RecoverMode};
pub use error::AgentError;
