//! The `oci` containerizer: executors run on the host exactly as under the `process`
//! containerizer (own session, survive the agent), and run their tasks as OCI
//! runtime containers themselves (see `command_executor::task_process`). This
//! containerizer tells them how (runtime binary, state root, image store, volume
//! allowlist, pids limit, which runtime is the default) through their environment,
//! and cleans up after them: destroying an executor run also force-deletes every
//! runtime container `agora-<container id>-*` and unmounts what its tasks left
//! mounted (image overlays), which matters when the executor died without doing it.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use slog::{Logger, debug, warn};

use super::process::ProcessContainerizer;
use super::{
    BoxFuture, ContainerId, Containerizer, ContainerizerError, LaunchSpec, Launched, Termination,
};
use crate::command_executor::env as names;
use crate::oci::runtime::{Runtime, RuntimeError, resolve_binary};
use crate::oci::{bundle, runtime_container_prefix};

/// The `oci` containerizer's settings.
#[derive(Clone, Debug)]
pub struct OciSettings {
    /// The runtime binary as configured: a path, or a name looked up on `PATH`.
    pub runtime: PathBuf,
    /// The runtime's state directory (`--root`); created on start.
    pub state_root: PathBuf,
    /// The image store directory.
    pub image_store: PathBuf,
    /// Host directories volumes may come from, besides the sandbox.
    pub allowed_volume_paths: Vec<PathBuf>,
    /// Pids limit of each container; at least 1.
    pub pids_limit: u64,
    /// Tasks that name no image nor container type run under the runtime too.
    pub default_oci: bool,
}

/// See the module documentation.
pub struct OciContainerizer {
    /// Starts, watches and kills the executors themselves.
    process: ProcessContainerizer,
    /// The resolved runtime and its state directory.
    runtime: Runtime,
    /// As configured, with the runtime resolved to an absolute path.
    settings: OciSettings,
    logger: Logger,
}

impl OciContainerizer {
    /// Finds the runtime binary (a clear error when it is missing) and creates the
    /// state directory.
    pub fn new(mut settings: OciSettings, logger: Logger) -> Result<Self, ContainerizerError> {
        let binary = resolve_binary(&settings.runtime).map_err(|e| ContainerizerError::Io {
            context: "the oci containerizer".into(),
            source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        })?;
        settings.runtime = binary.clone();
        settings.pids_limit = settings.pids_limit.max(1);
        std::fs::create_dir_all(&settings.state_root).map_err(|source| ContainerizerError::Io {
            context: format!("creating {}", settings.state_root.display()),
            source,
        })?;
        Ok(Self {
            process: ProcessContainerizer::new(logger.clone()),
            runtime: Runtime::new(binary, settings.state_root.clone()),
            settings,
            logger,
        })
    }

    /// The variables that let the executor of `container_id` run containers.
    fn executor_env(&self, container_id: &ContainerId) -> Vec<(OsString, OsString)> {
        let s = &self.settings;
        let allowed = std::env::join_paths(&s.allowed_volume_paths).unwrap_or_default();
        vec![
            (names::CONTAINER_ID.into(), container_id.0.clone().into()),
            (
                names::DEFAULT_CONTAINERIZER.into(),
                if s.default_oci { "oci" } else { "process" }.into(),
            ),
            (names::OCI_RUNTIME.into(), s.runtime.clone().into()),
            (names::OCI_STATE_ROOT.into(), s.state_root.clone().into()),
            (names::IMAGE_STORE.into(), s.image_store.clone().into()),
            (names::ALLOWED_VOLUME_PATHS.into(), allowed),
            (
                names::CONTAINER_PIDS_LIMIT.into(),
                s.pids_limit.to_string().into(),
            ),
        ]
    }
}

/// Force-deletes every runtime container of `container_id` and unmounts what its
/// tasks left mounted. Returns how many containers were deleted.
fn remove_leftovers(runtime: &Runtime, container_id: &ContainerId) -> Result<usize, RuntimeError> {
    let prefix = runtime_container_prefix(&container_id.0);
    let mut deleted = 0;
    for id in runtime.list()? {
        if id.starts_with(&prefix) {
            runtime.delete_force_blocking(&id)?;
            deleted += 1;
        }
    }
    // Overlay roots live in the run's sandbox, whose path has the container id as
    // one component.
    for mount in bundle::mounts_under(&container_id.0) {
        bundle::unmount(&mount).map_err(|source| RuntimeError::Io {
            context: format!("unmounting {}", mount.display()),
            source,
        })?;
    }
    Ok(deleted)
}

impl Containerizer for OciContainerizer {
    fn name(&self) -> &'static str {
        "oci"
    }

    fn launch(&self, mut spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerizerError>> {
        spec.env.extend(self.executor_env(&spec.container_id));
        // The executor runs on the host; the image is its tasks' business.
        spec.container = None;
        self.process.launch(spec)
    }

    fn recover(&self, container_id: &ContainerId, pid: u32) -> BoxFuture<'static, Termination> {
        self.process.recover(container_id, pid)
    }

    fn destroy(&self, container_id: &ContainerId) -> BoxFuture<'_, Result<(), ContainerizerError>> {
        let container_id = container_id.clone();
        Box::pin(async move {
            self.process.destroy(&container_id).await?;
            let runtime = self.runtime.clone();
            let id = container_id.clone();
            let removed = tokio::task::spawn_blocking(move || remove_leftovers(&runtime, &id))
                .await
                .map_err(|e| ContainerizerError::Io {
                    context: format!("destroying container {container_id}"),
                    source: io::Error::other(e),
                })?;
            match removed {
                Ok(0) => {}
                Ok(deleted) => {
                    debug!(self.logger, "runtime containers removed";
                        "container" => %container_id, "deleted" => deleted)
                }
                Err(e) => {
                    warn!(self.logger, "cannot remove the runtime containers";
                        "container" => %container_id, "error" => %e);
                    return Err(ContainerizerError::Io {
                        context: format!("destroying container {container_id}"),
                        source: io::Error::other(e.to_string()),
                    });
                }
            }
            Ok(())
        })
    }
}
