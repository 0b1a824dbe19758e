//! OCI containers for tasks: what the `oci` containerizer and the executors that run
//! tasks under it share.
//!
//! - [`bundle`]: the runtime configuration (`config.json`) of one task's bundle,
//!   generated with the `oci-spec` crate: namespaces, cgroup limits, mounts (host
//!   rootfs read-only or an image's overlay), env, args, user, volumes.
//! - [`runtime`]: the OCI runtime binary (runc, crun, youki) driven through its CLI:
//!   create, start, kill, delete, exec, list.
//! - [`cgroups`]: a container's cgroup read back: OOM kills, cpu time, memory, limits;
//!   cgroup v1 and v2.
//!
//! Every runc container of an executor run is named `agora-<agent container id>-<n>`
//! (`n` = the task's index within its executor), so the agent can find and remove
//! all of them when the executor itself is gone.

pub mod bundle;
pub mod cgroups;
pub mod runtime;

/// Parent of every container's cgroup (`/agora/<runc container id>`).
pub const CGROUP_PARENT: &str = "agora";

/// The runtime's name for task `index` of the executor run `container_id`.
pub fn runtime_container_id(container_id: &str, index: usize) -> String {
    format!("{}{index}", runtime_container_prefix(container_id))
}

/// What every runtime container id of the executor run `container_id` starts with.
pub fn runtime_container_prefix(container_id: &str) -> String {
    format!("agora-{container_id}-")
}

/// The cgroup path given to the runtime for a container (relative to each
/// hierarchy's root).
pub fn cgroup_path(runtime_container_id: &str) -> String {
    format!("/{CGROUP_PARENT}/{runtime_container_id}")
}
