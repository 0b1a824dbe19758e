//! The `oci` containerizer with a real runtime: a real `agora agent` process, its
//! real executors and real runc containers. Tests that need runc fail under CI (env
//! `CI`) when it is missing and are skipped elsewhere.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use agora_agent::oci::cgroups;
use agora_agent::oci::runtime::{Runtime, resolve_binary};
use agora_proto as pb;
use agora_tests::requirements::require_runc;
use agora_tests::{
    ClusterBuilder, TestCluster, TestFramework, eventually, kill_executor_sessions, launch,
    node_bin, parent_pid, process_alive, refuse, shell_task, within,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const AGENT_RESOURCES: &str = "cpus:4;mem:4096;disk:10000;ports:[31000-31010]";

/// An `agora agent` process with the oci containerizer. Dropping it SIGKILLs the
/// agent and removes every executor, container and mount it left.
struct OciAgent {
    child: Option<tokio::process::Child>,
    work_dir: PathBuf,
    /// Flags to start it again the same way.
    args: Vec<String>,
    runtime: Runtime,
}

impl OciAgent {
    async fn start(cluster: &TestCluster, name: &str, extra: &[&str]) -> Self {
        let work_dir = cluster.data_dir().join(name);
        // A fixed port for the agent's life, restarts included: its executors keep
        // the address they were given and re-subscribe to the restarted agent there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            cluster.master_addr.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--resources".into(),
            AGENT_RESOURCES.into(),
            "--containerizers".into(),
            "process,oci".into(),
            "--image-store".into(),
            cluster.data_dir().join("images").display().to_string(),
            "--kill-grace".into(),
            "1s".into(),
            // Mesos' 2 s is too close on a machine running every test at once.
            "--executor-reregistration-timeout".into(),
            "30s".into(),
            "--log-level".into(),
            "info".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let runtime = Runtime::new(
            resolve_binary(Path::new("runc")).expect("runc"),
            work_dir.join("runc"),
        );
        let mut agent = Self {
            child: None,
            work_dir,
            args,
            runtime,
        };
        agent.spawn().await;
        agent
    }

    /// Starts the agent process and waits until it registered.
    async fn spawn(&mut self) {
        let mut child = tokio::process::Command::new(node_bin!())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent process starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        // AGORA_TEST_LOG=1 shows the agent's log with the test's output.
        let show = std::env::var_os("AGORA_TEST_LOG").is_some();
        within("the agent to register", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("readable output")
                    .expect("the agent runs until it registered");
                if show {
                    eprintln!("agent: {line}");
                }
                if line.contains("registered") {
                    break;
                }
            }
        })
        .await;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if show {
                    eprintln!("agent: {line}");
                }
            }
        });
        self.child = Some(child);
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            drop(child);
        }
    }

    /// The runtime containers of this agent.
    fn containers(&self) -> Vec<String> {
        self.runtime.list().unwrap_or_default()
    }

    /// The one container running `task_id`'s... the newest container, waited for.
    async fn container_of_task(&self, before: &[String]) -> String {
        let mut found = None;
        eventually("the task's container to exist", || {
            found = self.containers().into_iter().find(|c| !before.contains(c));
            found.is_some()
        })
        .await;
        found.unwrap_or_default()
    }
}

impl Drop for OciAgent {
    fn drop(&mut self) {
        self.sigkill();
        kill_executor_sessions(&self.work_dir);
        for id in self.containers() {
            let _ = self.runtime.delete_force_blocking(&id);
        }
        let marker = self
            .work_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(marker) = marker {
            for mount in agora_agent::oci::bundle::mounts_under(&marker) {
                let _ = agora_agent::oci::bundle::unmount(&mount);
            }
        }
    }
}

/// Host pids in a container's cgroup.
fn container_pids(id: &str) -> Vec<i32> {
    let path = agora_agent::oci::cgroup_path(id);
    let dir = match cgroups::version() {
        cgroups::CgroupVersion::V2 => format!("/sys/fs/cgroup{path}"),
        cgroups::CgroupVersion::V1 => format!("/sys/fs/cgroup/pids{path}"),
    };
    std::fs::read_to_string(Path::new(&dir).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Launches `tasks(agent id)` on the first offer and declines the rest.
async fn launch_on_offer(
    fw: &mut TestFramework,
    tasks: impl Fn(&pb::AgentId) -> Vec<pb::TaskInfo>,
) {
    let offers = fw.next_offers().await;
    let mut offers = offers.into_iter();
    let first = offers.next().expect("an offer");
    let agent = first.agent_id.clone().unwrap_or_default();
    fw.handle
        .accept(
            vec![first.id.clone().unwrap_or_default()],
            vec![launch(tasks(&agent))],
            Some(refuse(0.0)),
        )
        .await
        .expect("ACCEPT");
    for offer in offers {
        let _ = fw
            .handle
            .decline(vec![offer.id.unwrap_or_default()], Some(refuse(0.0)))
            .await;
    }
}

fn with_container(mut task: pb::TaskInfo, container: pb::ContainerInfo) -> pb::TaskInfo {
    task.container = Some(container);
    task
}

fn docker() -> pb::ContainerInfo {
    pb::ContainerInfo {
        r#type: pb::container_info::Type::Docker as i32,
        ..Default::default()
    }
}

fn image(name: &str) -> pb::ContainerInfo {
    pb::ContainerInfo {
        r#type: pb::container_info::Type::Docker as i32,
        image: Some(pb::container_info::Image { name: name.into() }),
        ..Default::default()
    }
}

async fn start() -> (TestCluster, TestFramework) {
    let cluster = ClusterBuilder::new(node_bin!()).agents(0).start().await;
    let fw = TestFramework::start(&cluster.master_addr, TestFramework::info("oci", 3600.0)).await;
    (cluster, fw)
}

/// [`start`] with a busybox image imported into the store the agents use, or `None`
/// when the test is skipped (no runc or busybox).
async fn start_with_busybox() -> Option<(TestCluster, TestFramework)> {
    if require_runc().is_none() || agora_tests::images::require_busybox().is_none() {
        return None;
    }
    let (cluster, fw) = start().await;
    let layout = agora_tests::images::busybox_layout(cluster.data_dir()).expect("a busybox layout");
    agora_agent::images::ImageStore::open(&cluster.data_dir().join("images"))
        .and_then(|store| store.import(&layout, Some("busybox")))
        .expect("the image imports");
    Some((cluster, fw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_gets_the_limits_namespaces_env_and_volumes_it_asked_for() {
    if require_runc().is_none() {
        return;
    }
    let (cluster, mut fw) = start().await;
    let shared = cluster.data_dir().join("shared");
    std::fs::create_dir_all(&shared).expect("the shared directory");
    let agent = OciAgent::start(
        &cluster,
        "agent-limits",
        &[
            "--allowed-volume-paths",
            &shared.display().to_string(),
            "--container-pids-limit",
            "77",
        ],
    )
    .await;

    // pid 1 of its own pid namespace; ports, sandbox and its own env; the host's
    // root read-only, its cgroups too (no way out of the limits); the bundles
    // (whose config.json every `exec` reads) out of reach; the volume writable.
    let script = "{ echo pid=$$; echo ports=$PORT0,$PORT1/$PORTS; echo sandbox=$MESOS_SANDBOX; \
                  echo greeting=$GREETING; touch /usr/agora-probe 2>/dev/null && echo root=rw || echo root=ro; \
                  if [ -d /sys/fs/cgroup/pids ]; then c=/sys/fs/cgroup/pids; else c=/sys/fs/cgroup; fi; \
                  mkdir $c/agora-escape-probe 2>/dev/null && echo cgroups=rw || echo cgroups=ro; \
                  ls $MESOS_SANDBOX/.container/*/config.json $PWD/.container/*/config.json >/dev/null 2>&1 \
                    && echo bundles=visible || echo bundles=hidden; \
                  touch $MESOS_SANDBOX/probe && echo sandbox=rw; } > /shared/report; exec sleep 1000";
    launch_on_offer(&mut fw, |agent_id| {
        let mut task = shell_task(
            "limited",
            agent_id,
            script,
            "cpus:0.5;mem:64;ports:[31003-31004]",
        );
        task.command.as_mut().expect("a command").environment = Some(pb::Environment {
            variables: vec![pb::environment::Variable {
                name: "GREETING".into(),
                value: "hello".into(),
            }],
        });
        // Runs inside the container: there, pid 1 is the task's `sleep`.
        task.health_check = Some(pb::HealthCheck {
            r#type: pb::health_check::Type::Command as i32,
            delay_seconds: 0.01,
            interval_seconds: 0.2,
            timeout_seconds: 10.0,
            consecutive_failures: 1000,
            command: Some(pb::CommandInfo {
                shell: true,
                value: "grep -q sleep /proc/1/cmdline".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut container = docker();
        container.volumes.push(pb::Volume {
            host_path: shared.display().to_string(),
            container_path: "/shared".into(),
            mode: pb::volume::Mode::Rw as i32,
        });
        vec![with_container(task, container)]
    })
    .await;
    fw.wait_for_state("limited", pb::TaskState::TaskRunning)
        .await;
    let id = agent.container_of_task(&[]).await;

    let limits = cgroups::limits(cgroups::version(), &agora_agent::oci::cgroup_path(&id))
        .expect("the container's cgroup is readable");
    assert_eq!(limits.cpu_quota_us, Some(50_000), "{limits:?}");
    assert_eq!(limits.cpu_period_us, Some(100_000), "{limits:?}");
    if cgroups::version() == cgroups::CgroupVersion::V1 {
        assert_eq!(limits.cpu_shares, Some(512), "{limits:?}");
    } else {
        assert!(limits.cpu_weight.is_some(), "{limits:?}");
    }
    assert_eq!(limits.memory_limit_bytes, Some(64 << 20), "{limits:?}");
    assert_eq!(limits.pids_max, Some(77), "{limits:?}");

    let report_path = shared.join("report");
    let mut report = String::new();
    eventually("the task's report", || {
        report = std::fs::read_to_string(&report_path).unwrap_or_default();
        report.lines().count() >= 8
    })
    .await;
    for leftover in ["pids/agora-escape-probe", "agora-escape-probe"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(leftover));
    }
    assert!(report.contains("pid=1\n"), "{report}");
    assert!(
        report.contains("ports=31003,31004/31003,31004\n"),
        "{report}"
    );
    assert!(report.contains("greeting=hello\n"), "{report}");
    assert!(report.contains("root=ro\n"), "{report}");
    assert!(report.contains("sandbox=rw\n"), "{report}");
    assert!(report.contains("cgroups=ro\n"), "{report}");
    assert!(report.contains("bundles=hidden\n"), "{report}");
    assert!(!Path::new("/usr/agora-probe").exists());
    fw.wait_for("the task to be reported healthy", |seen| match seen {
        agora_tests::Seen::Update(s)
            if s.task_id.as_ref().is_some_and(|t| t.value == "limited")
                && s.healthy == Some(true) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    fw.handle
        .kill(
            pb::TaskId {
                value: "limited".into(),
            },
            None,
        )
        .await
        .expect("KILL");
    fw.wait_for_state("limited", pb::TaskState::TaskKilled)
        .await;
    eventually("the container to be deleted", || {
        !agent.containers().contains(&id)
    })
    .await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_memory_is_oom_killed_and_reported() {
    if require_runc().is_none() {
        return;
    }
    let (cluster, mut fw) = start().await;
    let agent = OciAgent::start(&cluster, "agent-oom", &[]).await;
    launch_on_offer(&mut fw, |agent_id| {
        vec![with_container(
            shell_task(
                "hog",
                agent_id,
                "x=a; while true; do x=$x$x; done",
                "cpus:0.5;mem:32",
            ),
            docker(),
        )]
    })
    .await;
    let status = fw.wait_for_terminal("hog").await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    assert_eq!(
        status.reason(),
        pb::task_status::Reason::ContainerLimitationMemory,
        "{status:?}"
    );
    assert!(
        status.message.contains("Memory limit exceeded"),
        "{status:?}"
    );
    assert!(status.message.contains("32 MB"), "{status:?}");
    eventually("the container to be deleted", || {
        agent.containers().is_empty()
    })
    .await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_task_runs_in_its_image_with_the_sandbox_mounted() {
    let Some((cluster, mut fw)) = start_with_busybox().await else {
        return;
    };
    let agent = OciAgent::start(&cluster, "agent-image", &[]).await;
    // The image's own /etc/passwd (the host's has more), a writable root, and the
    // sandbox at Mesos' path.
    let script = "cat /etc/passwd | wc -l > $MESOS_SANDBOX/out 2>&1 || cat /etc/passwd > $MESOS_SANDBOX/out; \
                  echo made > /made-here && echo $MESOS_SANDBOX >> $MESOS_SANDBOX/out; exit 3";
    launch_on_offer(&mut fw, |agent_id| {
        vec![with_container(
            shell_task("boxed", agent_id, script, "cpus:0.2;mem:64"),
            image("busybox"),
        )]
    })
    .await;
    let status = fw.wait_for_terminal("boxed").await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    assert_eq!(status.exit_code, Some(3), "{status:?}");
    let out = find_sandbox_file(&agent.work_dir, "out").expect("the task's output file");
    assert!(out.contains("/mnt/mesos/sandbox"), "{out}");
    assert!(
        out.contains("root:x:0:0") || out.trim_start().starts_with('2'),
        "the image's passwd: {out}"
    );
    eventually("the overlay to be unmounted", || {
        agora_agent::oci::bundle::mounts_under("agent-image").is_empty()
    })
    .await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}

/// The content of `name` in the first executor sandbox under `work_dir` that has it.
fn find_sandbox_file(work_dir: &Path, name: &str) -> Option<String> {
    let mut stack = vec![work_dir.join("frameworks")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".container") {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                return std::fs::read_to_string(path).ok();
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_requests_fail_with_a_reason_that_names_them() {
    if require_runc().is_none() {
        return;
    }
    let (cluster, mut fw) = start().await;
    let agent = OciAgent::start(&cluster, "agent-bad", &[]).await;
    launch_on_offer(&mut fw, |agent_id| {
        let mut missing_program = shell_task("no-program", agent_id, "", "cpus:0.1;mem:32");
        missing_program.command = Some(pb::CommandInfo {
            value: "/nonexistent/agora-program".into(),
            ..Default::default()
        });
        let mut volume = docker();
        volume.volumes.push(pb::Volume {
            host_path: "/etc".into(),
            container_path: "/host-etc".into(),
            mode: pb::volume::Mode::Ro as i32,
        });
        vec![
            with_container(
                shell_task("no-image", agent_id, "true", "cpus:0.1;mem:32"),
                image("no-such-image"),
            ),
            with_container(missing_program, docker()),
            with_container(
                shell_task("bad-volume", agent_id, "true", "cpus:0.1;mem:32"),
                volume,
            ),
        ]
    })
    .await;
    for (task, named) in [
        ("no-image", "no-such-image"),
        ("no-program", "/nonexistent/agora-program"),
        ("bad-volume", "/etc"),
    ] {
        let status = fw.wait_for_terminal(task).await;
        assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
        assert_eq!(
            status.reason(),
            pb::task_status::Reason::ContainerLaunchFailed,
            "{status:?}"
        );
        assert!(status.message.contains(named), "{task}: {status:?}");
    }
    eventually("no container left", || agent.containers().is_empty()).await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_runtime_is_missing_does_not_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = tokio::process::Command::new(node_bin!())
        .args([
            "agent",
            "--master",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--containerizers",
            "process,oci",
            "--oci-runtime",
            "/nonexistent/runc",
        ])
        .arg("--work-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output();
    let output = within("the agent to refuse to start", output)
        .await
        .expect("the agent runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/runc"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_tasks_survive_sigkill_of_their_agent_and_dead_ones_are_cleaned_up() {
    if require_runc().is_none() {
        return;
    }
    let (cluster, mut fw) = start().await;
    let mut agent = OciAgent::start(&cluster, "agent-recovery", &[]).await;
    launch_on_offer(&mut fw, |agent_id| {
        vec![with_container(
            shell_task("survivor", agent_id, "exec sleep 1000", "cpus:0.1;mem:32"),
            docker(),
        )]
    })
    .await;
    fw.wait_for_state("survivor", pb::TaskState::TaskRunning)
        .await;
    let survivor = agent.container_of_task(&[]).await;
    launch_on_offer(&mut fw, |agent_id| {
        vec![with_container(
            shell_task("orphan", agent_id, "exec sleep 1000", "cpus:0.1;mem:32"),
            docker(),
        )]
    })
    .await;
    fw.wait_for_state("orphan", pb::TaskState::TaskRunning)
        .await;
    let orphan = agent
        .container_of_task(std::slice::from_ref(&survivor))
        .await;
    let mut survivor_pid = None;
    let mut orphan_pid = None;
    eventually("both containers' processes", || {
        survivor_pid = container_pids(&survivor).first().copied();
        orphan_pid = container_pids(&orphan).first().copied();
        survivor_pid.is_some() && orphan_pid.is_some()
    })
    .await;
    let (survivor_pid, orphan_pid) = (survivor_pid.unwrap_or(-1), orphan_pid.unwrap_or(-1));
    // The executor is the containers' subreaper, so their parent.
    let orphan_executor = parent_pid(orphan_pid).expect("the orphan's executor");

    agent.sigkill();
    // While the agent is down, one executor dies; its container lives on.
    // SAFETY: kill(2) on an executor this test's agent started.
    unsafe { libc::kill(orphan_executor, libc::SIGKILL) };
    eventually("the orphan's executor to die", || {
        !process_alive(orphan_executor)
    })
    .await;
    assert!(
        process_alive(survivor_pid),
        "the container outlived its agent"
    );
    assert!(
        process_alive(orphan_pid),
        "the container outlived its executor"
    );

    agent.spawn().await;
    let status = fw.wait_for_terminal("orphan").await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    eventually("the orphaned container to be removed", || {
        !agent.containers().contains(&orphan) && !process_alive(orphan_pid)
    })
    .await;
    assert!(
        process_alive(survivor_pid),
        "the reattached task still runs"
    );

    // The survivor's executor is reattached: a kill reaches the container.
    fw.handle
        .kill(
            pb::TaskId {
                value: "survivor".into(),
            },
            None,
        )
        .await
        .expect("KILL");
    let killed = fw
        .wait_for_state("survivor", pb::TaskState::TaskKilled)
        .await;
    assert_eq!(
        killed.source(),
        pb::task_status::Source::Executor,
        "the reattached executor itself killed its container: {killed:?}"
    );
    eventually("the survivor's container to be removed", || {
        !agent.containers().contains(&survivor) && !process_alive(survivor_pid)
    })
    .await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_the_oci_containerizer_fails_image_tasks() {
    // The cluster's own agents run the `process` containerizer only.
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("oci", 3600.0)).await;
    launch_on_offer(&mut fw, |agent_id| {
        vec![with_container(
            shell_task("imaged", agent_id, "true", "cpus:0.1;mem:32"),
            image("busybox"),
        )]
    })
    .await;
    let status = fw.wait_for_terminal("imaged").await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    assert_eq!(
        status.reason(),
        pb::task_status::Reason::ContainerLaunchFailed,
        "{status:?}"
    );
    assert!(status.message.contains("oci containerizer"), "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_uris_are_in_the_container_sandbox() {
    let Some((cluster, mut fw)) = start_with_busybox().await else {
        return;
    };
    let greeting = cluster.data_dir().join("greeting.txt");
    std::fs::write(&greeting, "hello container\n").expect("write the file");
    let agent = OciAgent::start(&cluster, "agent-fetch", &[]).await;
    let fetching = |task: pb::TaskInfo| {
        let mut task = task;
        if let Some(command) = &mut task.command {
            command.uris.push(pb::command_info::Uri {
                value: format!("file://{}", greeting.display()),
                ..Default::default()
            });
        }
        task
    };
    let check = "[ \"$(cat /mnt/mesos/sandbox/greeting.txt)\" = 'hello container' ] \
                 && [ \"$(cat greeting.txt)\" = 'hello container' ]";
    launch_on_offer(&mut fw, |agent_id| {
        vec![
            with_container(
                fetching(shell_task("in-image", agent_id, check, "cpus:0.2;mem:64")),
                image("busybox"),
            ),
            with_container(
                fetching(shell_task("host-root", agent_id, check, "cpus:0.2;mem:64")),
                docker(),
            ),
        ]
    })
    .await;
    for task in ["in-image", "host-root"] {
        let status = fw.wait_for_terminal(task).await;
        assert_eq!(status.state(), pb::TaskState::TaskFinished, "{status:?}");
    }
    eventually("the overlay to be unmounted", || {
        agora_agent::oci::bundle::mounts_under("agent-fetch").is_empty()
    })
    .await;
    drop(agent);
    fw.stop().await;
    cluster.shutdown().await;
}
