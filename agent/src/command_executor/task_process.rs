//! A task's process, started one of two ways:
//!
//! - **process**: from its `CommandInfo` in its own process group (so a kill reaches
//!   everything it spawned, and nothing else), with the sandbox as its working
//!   directory and its output appended to the sandbox's `stdout`/`stderr`.
//! - **oci**: as an OCI runtime container, the executor acting as its shim (as
//!   containerd-shim does): the executor becomes a child subreaper, writes the
//!   bundle (`<sandbox>/.container/<n>/`), has the runtime `create` the container
//!   with the sandbox's output files as its stdio and `start` it, then waits for the
//!   container's init (re-parented to the executor once the runtime exits) with
//!   waitpid, which gives its real exit status. Before the container is deleted its
//!   cgroup's OOM-kill counter is read, so a task the kernel killed for exceeding its
//!   memory is reported as such. Kill = a signal to the container's init (SIGKILL
//!   ends its whole pid namespace), as the runtime's `kill` would send it.
//!
//! A task runs under the runtime when it names an image or the DOCKER container
//! type, or when the agent's default containerizer is `oci`.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_proto as pb;
use agora_proto::task_status::Reason;
use tokio::io::unix::AsyncFd;

use super::env::{self, ExecutorEnv, OciEnv};
use crate::containerizer::{EXIT_POLL, pidfd_open, signal_name, try_wait};
use crate::oci::bundle::{self, BundleConfig, RootfsKind, TaskLimits};
use crate::oci::cgroups::{self, CgroupVersion};
use crate::oci::runtime::Runtime;
use crate::sandbox::{OutputPumps, TaskOutput};

/// Numbers the containers of this executor: `agora-<container id>-<n>`. The
/// executor is one process per executor run, so a process-wide counter is unique
/// within the run.
static NEXT_CONTAINER: AtomicUsize = AtomicUsize::new(0);

/// How long a task's output may take to be stored after its main process ended:
/// processes it left behind may keep its output pipes open indefinitely.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// A running task.
pub(super) struct TaskProcess {
    /// How it runs.
    inner: Inner,
    /// The pumps storing its stdout/stderr in the sandbox; `None` without a sandbox
    /// (output inherited) or once drained.
    output: Option<OutputPumps>,
    /// Builds COMMAND health checks that run where the task runs.
    checks: CheckCommands,
}

enum Inner {
    Process {
        child: tokio::process::Child,
        /// The process group: the task's pid, as group leader.
        group: i32,
    },
    Container(Box<Container>),
}

/// A task running as a runtime container.
struct Container {
    runtime: Runtime,
    /// The runtime's container id.
    id: String,
    /// The container's init on the host; our child once the runtime exited.
    pid: libc::pid_t,
    /// Readable once `pid` has ended; `None` where the kernel has no pidfds.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Set once `pid` was reaped.
    exited: Option<ExitStatus>,
    /// Deleting the container and unmounting its root, once it ended.
    cleanup: Option<tokio::task::JoinHandle<()>>,
    /// The container's cgroup path and the machine's layout.
    cgroup: String,
    cgroup_version: CgroupVersion,
    /// The memory limit the task asked for, in MiB.
    mem_mb: Option<f64>,
    /// Why the task ended, when a limit ended it (read before the container goes).
    limitation: Option<(Reason, String)>,
    /// The image's overlay root, unmounted after the container is deleted.
    overlay: Option<PathBuf>,
    /// The pumps of its stdout/stderr until `TaskProcess` takes them.
    output: Option<OutputPumps>,
}

/// Builds a COMMAND check's process for one task (cloneable into a checker).
#[derive(Clone)]
pub(super) enum CheckCommands {
    /// Like the task: on the host, in the sandbox, with its environment.
    Process {
        task: pb::CommandInfo,
        task_id: String,
        sandbox: Option<PathBuf>,
    },
    /// Inside the container (`exec`), with its environment and working directory.
    Container { runtime: Runtime, id: String },
}

impl CheckCommands {
    /// The check's process, not started.
    pub(super) fn command(&self, check: &pb::CommandInfo) -> tokio::process::Command {
        match self {
            Self::Process {
                task,
                task_id,
                sandbox,
            } => super::health::process_check_command(check, task, task_id, sandbox.as_deref()),
            Self::Container { runtime, id } => {
                let mut args: Vec<OsString> = Vec::new();
                for variable in check.environment.iter().flat_map(|e| &e.variables) {
                    args.push("--env".into());
                    args.push(format!("{}={}", variable.name, variable.value).into());
                }
                args.push(id.into());
                args.extend(command_args(check).into_iter().map(OsString::from));
                let mut command = runtime.exec_command(&args);
                command.stdin(Stdio::null());
                command
            }
        }
    }
}

/// `command` as a host process, not started: `/bin/sh -c value`, or `value` with
/// `arguments` as its argv (argv[0] included, as in Mesos).
pub(super) fn host_command(command: &pb::CommandInfo) -> tokio::process::Command {
    if command.shell {
        let mut process = tokio::process::Command::new("/bin/sh");
        process.arg("-c").arg(&command.value);
        return process;
    }
    let mut process = tokio::process::Command::new(&command.value);
    if let Some((argv0, rest)) = command.arguments.split_first() {
        process.arg0(argv0).args(rest);
    }
    process
}

/// argv for a command: `/bin/sh -c value`, or `value` and `arguments` after
/// `argv[0]` (an OCI process has no separate argv[0]).
fn command_args(command: &pb::CommandInfo) -> Vec<String> {
    if command.shell {
        return vec!["/bin/sh".into(), "-c".into(), command.value.clone()];
    }
    std::iter::once(command.value.clone())
        .chain(command.arguments.iter().skip(1).cloned())
        .collect()
}

fn failed(reason: Reason, message: impl Into<String>) -> (Reason, String) {
    (reason, message.into())
}

impl TaskProcess {
    /// Starts `task` under the runtime it asks for (see the module documentation).
    /// A failure comes with the reason to report.
    pub(super) async fn launch(
        task: &pb::TaskInfo,
        env: &ExecutorEnv,
    ) -> Result<Self, (Reason, String)> {
        let Some(command) = &task.command else {
            return Err(failed(Reason::TaskInvalid, "the task has no command"));
        };
        let task_id = task
            .task_id
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or_default();
        let ports = bundle::port_env(&bundle::task_ports(&task.resources));
        if !wants_container(task, env) {
            return Self::spawn_with(command, task_id, env.common.sandbox.as_deref(), &ports);
        }
        let (Some(oci), Some(container_id)) = (&env.containers.oci, &env.containers.container_id)
        else {
            return Err(failed(
                Reason::ContainerLaunchFailed,
                "this agent has no oci containerizer (start it with --containerizers process,oci) \
                 to run a task that names an image",
            ));
        };
        let Some(sandbox) = &env.common.sandbox else {
            return Err(failed(
                Reason::ContainerLaunchFailed,
                "the agent named no sandbox",
            ));
        };
        let n = NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed);
        let mut container =
            start_container(task, command, env, oci, container_id, sandbox, n, &ports).await?;
        Ok(Self {
            output: container.output.take(),
            checks: CheckCommands::Container {
                runtime: container.runtime.clone(),
                id: container.id.clone(),
            },
            inner: Inner::Container(Box::new(container)),
        })
    }

    /// Starts `command` as a plain process. A failure comes with the reason to
    /// report.
    #[cfg(test)]
    pub(super) fn spawn(
        command: &pb::CommandInfo,
        task_id: &str,
        sandbox: Option<&Path>,
    ) -> Result<Self, (Reason, String)> {
        Self::spawn_with(command, task_id, sandbox, &[])
    }

    fn spawn_with(
        command: &pb::CommandInfo,
        task_id: &str,
        sandbox: Option<&Path>,
        extra_env: &[(String, String)],
    ) -> Result<Self, (Reason, String)> {
        let mut process = host_command(command);
        process
            .env_remove(env::EXECUTOR_TOKEN)
            .env(env::TASK_ID, task_id)
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(environment) = &command.environment {
            for variable in &environment.variables {
                process.env(&variable.name, &variable.value);
            }
        }
        let mut output = None;
        if let Some(sandbox) = sandbox {
            let TaskOutput {
                stdout,
                stderr,
                pumps,
            } = open_output(sandbox, task_id)?;
            process
                .current_dir(sandbox)
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr));
            output = Some(pumps);
        }
        let shown = if command.shell {
            "/bin/sh"
        } else {
            command.value.as_str()
        };
        let child = process.spawn().map_err(|e| {
            let reason = if e.kind() == io::ErrorKind::NotFound {
                Reason::CommandNotFound
            } else {
                Reason::ContainerLaunchFailed
            };
            (reason, format!("Failed to launch command '{shown}': {e}"))
        })?;
        let group = child.id().map(|pid| pid as i32).ok_or((
            Reason::ContainerLaunchFailed,
            "the command exited before it could be watched".to_string(),
        ))?;
        // The write ends held by `process` close with it, so the pumps end with
        // the task's own holders.
        drop(process);
        Ok(Self {
            output,
            inner: Inner::Process { child, group },
            checks: CheckCommands::Process {
                task: command.clone(),
                task_id: task_id.to_string(),
                sandbox: sandbox.map(Path::to_path_buf),
            },
        })
    }

    /// Waits for the task's main process (a container's init) to end. Cancel-safe.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = match &mut self.inner {
            Inner::Process { child, .. } => child.wait().await,
            Inner::Container(container) => container.wait().await,
        }?;
        // Reported only once its output is stored, so a reader who sees the task
        // ended reads all of it.
        if let Some(pumps) = &mut self.output {
            let _ = tokio::time::timeout(OUTPUT_DRAIN_LIMIT, pumps.closed()).await;
            self.output = None;
        }
        Ok(status)
    }

    /// Signals the task's whole process group, or the container's init (SIGKILL
    /// ends everything in the container's pid namespace).
    pub(super) fn signal(&self, signal: i32) {
        match &self.inner {
            Inner::Process { group, .. } => {
                // SAFETY: killpg only sends a signal; a gone group yields ESRCH.
                unsafe { libc::killpg(*group, signal) };
            }
            Inner::Container(container) => {
                // What the runtime's `kill` does, without a runtime process per
                // signal (a thousand at once exhaust the machine's pids): the init
                // is our unreaped child, so its pid cannot name another process.
                if container.exited.is_none() {
                    // SAFETY: kill(2) only sends a signal.
                    unsafe { libc::kill(container.pid, signal) };
                }
            }
        }
    }

    /// Why the task ended when a limit ended it (OOM kill), once `wait` returned.
    pub(super) fn limitation(&self) -> Option<(Reason, String)> {
        match &self.inner {
            Inner::Process { .. } => None,
            Inner::Container(container) => container.limitation.clone(),
        }
    }

    /// Builds COMMAND checks that run where the task runs (`command(check)`), to hand
    /// to a health checker.
    pub(super) fn check_commands(&self) -> CheckCommands {
        self.checks.clone()
    }
}

/// Whether `task` runs under the OCI runtime.
fn wants_container(task: &pb::TaskInfo, env: &ExecutorEnv) -> bool {
    match &task.container {
        Some(container) => {
            let image = container.image.as_ref().is_some_and(|i| !i.name.is_empty());
            image
                || container.r#type == pb::container_info::Type::Docker as i32
                || env.containers.default_oci
        }
        None => env.containers.default_oci,
    }
}

/// The task's stdout and stderr: pipes whose pumps store them, rotated, in the
/// sandbox's `stdout`/`stderr` (with the policy the agent set in the environment).
fn open_output(sandbox: &Path, task_id: &str) -> Result<TaskOutput, (Reason, String)> {
    let launch_failed = |message: String| failed(Reason::ContainerLaunchFailed, message);
    let policy = crate::sandbox::output::policy_from_env().map_err(launch_failed)?;
    crate::sandbox::open_task_output(sandbox, task_id, policy)
        .map_err(|e| launch_failed(format!("cannot open the sandbox's stdout/stderr: {e}")))
}

/// Writes the bundle and has the runtime create and start the container.
#[allow(clippy::too_many_arguments)]
async fn start_container(
    task: &pb::TaskInfo,
    command: &pb::CommandInfo,
    env: &ExecutorEnv,
    oci: &OciEnv,
    container_id: &str,
    sandbox: &Path,
    n: usize,
    ports: &[(String, String)],
) -> Result<Container, (Reason, String)> {
    let launch_failed = |message: String| failed(Reason::ContainerLaunchFailed, message);
    // The container's init is re-parented to us when the runtime exits, so that we
    // can reap it and learn its exit status.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(launch_failed(format!(
            "cannot become the containers' subreaper: {}",
            io::Error::last_os_error()
        )));
    }
    let runtime = Runtime::new(oci.runtime.clone(), oci.state_root.clone());
    let id = crate::oci::runtime_container_id(container_id, n);
    let bundle_dir = sandbox.join(bundle::BUNDLES_DIR).join(n.to_string());
    let rootfs = bundle_dir.join("rootfs");
    std::fs::create_dir_all(&bundle_dir)
        .map_err(|e| launch_failed(format!("cannot create {}: {e}", bundle_dir.display())))?;
    let container_info = task.container.clone().unwrap_or_default();
    let image_name = container_info
        .image
        .as_ref()
        .map(|i| i.name.clone())
        .filter(|n| !n.is_empty());

    // The root filesystem: the image's overlay, or the host's, read-only.
    let (rootfs_kind, image_config, overlay) = match &image_name {
        Some(name) => {
            let resolved = crate::images::ImageStore::open(&oci.image_store)
                .and_then(|store| store.resolve(name))
                .map_err(|e| launch_failed(format!("cannot use image '{name}': {e}")))?;
            bundle::mount_overlay(
                &resolved.layers,
                &bundle_dir.join("upper"),
                &bundle_dir.join("work"),
                &rootfs,
            )
            .map_err(|e| launch_failed(format!("cannot use image '{name}': {e}")))?;
            (
                RootfsKind::Image,
                Some(resolved.config),
                Some(rootfs.clone()),
            )
        }
        None => {
            let binds =
                bundle::prepare_host_rootfs(&rootfs).map_err(|e| launch_failed(e.to_string()))?;
            (RootfsKind::Host { binds }, None, None)
        }
    };
    let unmount_on_error = |error: (Reason, String)| {
        if let Some(overlay) = &overlay {
            let _ = bundle::unmount(overlay);
        }
        error
    };

    let container_sandbox = match rootfs_kind {
        RootfsKind::Image => PathBuf::from(bundle::CONTAINER_SANDBOX),
        RootfsKind::Host { .. } => sandbox.to_path_buf(),
    };
    let volumes = bundle::check_volumes(
        &container_info.volumes,
        &oci.allowed_volume_paths,
        sandbox,
        &container_sandbox,
    )
    .map_err(|e| unmount_on_error(launch_failed(e.to_string())))?;

    let passwd = rootfs.join("etc/passwd");
    let passwd = if overlay.is_some() {
        passwd.as_path()
    } else {
        Path::new("/etc/passwd")
    };
    let user = Some(command.user.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| {
            image_config
                .as_ref()
                .and_then(|c| c.user.clone())
                .filter(|u| !u.is_empty())
        });
    let (uid, gid) = match user {
        Some(user) => bundle::lookup_user(passwd, &user)
            .map_err(|e| unmount_on_error(launch_failed(e.to_string())))?,
        None => (0, 0),
    };

    let args = if !command.shell && command.value.is_empty() {
        // No program named: the image's entrypoint and command, as Docker runs it.
        let config = image_config.clone().unwrap_or_default();
        let rest = if command.arguments.is_empty() {
            config.cmd.clone()
        } else {
            command.arguments.clone()
        };
        config.entrypoint.iter().cloned().chain(rest).collect()
    } else {
        command_args(command)
    };
    if args.is_empty() {
        return Err(unmount_on_error(failed(
            Reason::TaskInvalid,
            "the task names no command and its image none either",
        )));
    }

    // Variables: the image's, then Agora's and Mesos', then the task's own.
    let container_sandbox_text = container_sandbox.display().to_string();
    let mut variables: Vec<(String, String)> = match &image_config {
        Some(config) => config
            .env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        None => vec![(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| bundle::DEFAULT_PATH.into()),
        )],
    };
    if !variables.iter().any(|(k, _)| k == "PATH") {
        variables.push(("PATH".into(), bundle::DEFAULT_PATH.into()));
    }
    let task_id = task
        .task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    variables.extend([
        (env::TASK_ID.to_string(), task_id),
        (
            env::FRAMEWORK_ID.to_string(),
            env.common.framework_id.clone(),
        ),
        (env::EXECUTOR_ID.to_string(), env.common.executor_id.clone()),
        (env::SANDBOX.to_string(), container_sandbox_text.clone()),
        (
            env::MESOS_SANDBOX.to_string(),
            container_sandbox_text.clone(),
        ),
    ]);
    variables.extend(ports.iter().cloned());
    for variable in command.environment.iter().flat_map(|e| &e.variables) {
        variables.push((variable.name.clone(), variable.value.clone()));
    }
    // Later entries win.
    let mut seen = std::collections::HashSet::new();
    let mut deduplicated: Vec<String> = variables
        .iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    deduplicated.reverse();

    let limits = TaskLimits::from_resources(&task.resources, oci.pids_limit);
    let cgroup = crate::oci::cgroup_path(&id);
    let config = BundleConfig {
        rootfs: rootfs.clone(),
        rootfs_kind,
        sandbox: sandbox.to_path_buf(),
        args,
        env: deduplicated,
        cwd: container_sandbox_text,
        uid,
        gid,
        hostname: Some(container_info.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(crate::config::local_hostname),
        limits,
        cgroups_path: cgroup.clone(),
        volumes,
    };
    let spec = bundle::spec(&config).map_err(|e| unmount_on_error(launch_failed(e.to_string())))?;
    bundle::write(&bundle_dir, &spec)
        .map_err(|e| unmount_on_error(launch_failed(e.to_string())))?;

    let TaskOutput {
        stdout,
        stderr,
        pumps,
    } = open_output(sandbox, &task_id_of(task)).map_err(unmount_on_error)?;
    let (stdout, stderr) = (File::from(stdout), File::from(stderr));
    // Deleting retries with sleeps: off the async workers, so the executor's other
    // tasks and its agent connection are not held up meanwhile.
    let cleanup_failed_start = async |runtime: &Runtime, id: &str| {
        let (runtime, id, overlay) = (runtime.clone(), id.to_string(), overlay.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let _ = runtime.delete_force_blocking(&id);
            if let Some(overlay) = &overlay {
                let _ = bundle::unmount(overlay);
            }
        })
        .await;
    };
    let pid = match runtime.create(&id, &bundle_dir, stdout, stderr).await {
        Ok(pid) => pid,
        Err(e) => {
            cleanup_failed_start(&runtime, &id).await;
            return Err(launch_failed(format!("cannot start the container: {e}")));
        }
    };
    // Anything but a real pid (0 or -1 would make kill(2) signal a whole process
    // group or every process) is a failed start.
    let Some(pid) = libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 1) else {
        cleanup_failed_start(&runtime, &id).await;
        return Err(launch_failed(format!(
            "cannot start the container: the runtime reported init pid {pid}"
        )));
    };
    // The pidfd is opened before `start`, so a program that ends at once still
    // leaves a zombie for it to refer to.
    let pidfd = pidfd_open(pid).ok().flatten();
    if let Err(e) = runtime.start(&id).await {
        cleanup_failed_start(&runtime, &id).await;
        // The init is our child now; reap it.
        let _ = try_wait(pid);
        return Err(launch_failed(format!("cannot start the container: {e}")));
    }
    Ok(Container {
        runtime,
        id,
        pid,
        pidfd,
        exited: None,
        cleanup: None,
        cgroup,
        cgroup_version: cgroups::version(),
        mem_mb: limits.mem_mb,
        limitation: None,
        overlay,
        output: Some(pumps),
    })
}

fn task_id_of(task: &pb::TaskInfo) -> String {
    task.task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default()
}

impl Container {
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.exited.is_none() {
            let status = loop {
                if let Some(status) = try_wait(self.pid)? {
                    break status;
                }
                match &self.pidfd {
                    Some(pidfd) => {
                        let mut ready = pidfd.readable().await?;
                        // Stays readable for good once the process ended.
                        ready.retain_ready();
                    }
                    None => tokio::time::sleep(EXIT_POLL).await,
                }
            };
            self.ended(ExitStatus::from_raw(status));
        }
        if let Some(cleanup) = &mut self.cleanup {
            let _ = cleanup.await;
            self.cleanup = None;
        }
        self.exited
            .ok_or_else(|| io::Error::other("the container's exit was not recorded"))
    }

    /// Records the exit, reads the OOM counter while the cgroup still exists, and
    /// starts removing the container.
    fn ended(&mut self, status: ExitStatus) {
        self.exited = Some(status);
        let oom_kills = cgroups::oom_kills(self.cgroup_version, &self.cgroup).unwrap_or(0);
        if oom_kills > 0 {
            let limit = self
                .mem_mb
                .map_or("its".to_string(), |mb| format!("its {mb} MB"));
            self.limitation = Some((
                Reason::ContainerLimitationMemory,
                format!(
                    "Memory limit exceeded: the task used more than {limit} memory limit \
                     and the kernel OOM-killed it"
                ),
            ));
        }
        let runtime = self.runtime.clone();
        let id = self.id.clone();
        let overlay = self.overlay.clone();
        self.cleanup = Some(tokio::task::spawn_blocking(move || {
            let _ = runtime.delete_force_blocking(&id);
            if let Some(overlay) = overlay {
                let _ = bundle::unmount(&overlay);
            }
        }));
    }
}

/// `(exit code, message)` for a finished command, in Mesos' words.
pub(super) fn describe_exit(status: &ExitStatus) -> (Option<i32>, String) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("Command exited with status {code}")),
        (None, Some(signal)) => (
            None,
            format!("Command terminated with signal {}", signal_name(signal)),
        ),
        (None, None) => (None, "Command ended".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(value: &str) -> pb::CommandInfo {
        pb::CommandInfo {
            shell: true,
            value: value.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_described() {
        let mut p = TaskProcess::spawn(&shell("exit 3"), "t", None).unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(
            describe_exit(&status),
            (Some(3), "Command exited with status 3".into())
        );

        let mut p = TaskProcess::spawn(&shell("sleep 100"), "t", None).unwrap();
        p.signal(libc::SIGTERM);
        let status = p.wait().await.unwrap();
        assert_eq!(
            describe_exit(&status).1,
            "Command terminated with signal SIGTERM"
        );
    }

    #[tokio::test]
    async fn argv_and_environment_reach_the_task() {
        let dir = std::env::temp_dir().join(format!("agora-task-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let command = pb::CommandInfo {
            shell: false,
            value: "/bin/sh".into(),
            arguments: vec![
                "sh".into(),
                "-c".into(),
                "echo $0 $1 $GREETING $AGORA_TASK_ID".into(),
                "zero".into(),
                "one".into(),
            ],
            environment: Some(pb::Environment {
                variables: vec![pb::environment::Variable {
                    name: "GREETING".into(),
                    value: "hello".into(),
                }],
            }),
            ..Default::default()
        };
        let mut p = TaskProcess::spawn(&command, "task-7", Some(&dir)).unwrap();
        assert!(p.wait().await.unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout")).unwrap(),
            "zero one hello task-7\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_command_not_found() {
        let command = pb::CommandInfo {
            value: "/nonexistent/agora-program".into(),
            ..Default::default()
        };
        let Err((reason, message)) = TaskProcess::spawn(&command, "t", None) else {
            panic!("spawning a missing program fails");
        };
        assert_eq!(reason, Reason::CommandNotFound);
        assert!(message.contains("/nonexistent/agora-program"), "{message}");
    }

    #[test]
    fn oci_commands_have_no_separate_argv0() {
        let command = pb::CommandInfo {
            value: "/bin/echo".into(),
            arguments: vec!["echo".into(), "a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(command_args(&command), vec!["/bin/echo", "a", "b"]);
        assert_eq!(command_args(&shell("x")), vec!["/bin/sh", "-c", "x"]);
    }
}
