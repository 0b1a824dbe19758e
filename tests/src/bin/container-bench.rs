//! `container-bench`: what running tasks as OCI containers costs, against plain runc.
//! Prints figures; asserts nothing about timing. Needs root, runc and a static
//! busybox.
//!
//! ```text
//! cargo build --profile executor -p agora-agent --bin agora-executor
//! cargo run --release -p agora-tests --bin container-bench -- --tasks 1000
//! ```
//!
//! With `agora-executor` built (the `executor` profile's, else the release one), the
//! agent runs that (`--launcher-dir`), as a production agent would; otherwise this
//! binary as `agora executor`.
//!
//! What it does:
//! 1. Builds a busybox OCI image layout ([`agora_tests::images::busybox_layout`]) and
//!    imports it into an image store.
//! 2. Starts a master in this process and one `agora agent` process (this binary
//!    started again as `agora`) with `--containerizers oci,process`, the store, and
//!    `--agent-resources` (`cpus:1000;mem:1000000;disk:1000000`).
//! 3. A framework launches `--tasks` (1000) tasks of `sleep 3600` from the busybox
//!    image (cpus 0.01, mem 16, kill grace 0) in one ACCEPT, and measures the time
//!    from the ACCEPT until every task is RUNNING; then the executors' memory per
//!    task (RSS, its private part and PSS, summed over every executor process, from
//!    /proc); then kills every task and
//!    measures the time until every one is KILLED and no runtime container is left.
//! 4. The floor: the same number of containers with plain `runc run -d` from a shell
//!    loop, bundles prepared beforehand (the image's unpacked layer as a read-only
//!    root, the same cgroup limits), and `runc delete -f` in a shell loop.
//! 5. The cpu share: one more task, `cpus` 0.5, busy-looping; its cgroup's cpu time
//!    over `--cpu-seconds` (3) seconds of wall time, as a fraction of one cpu.
//!
//! Flags: `--tasks N --agent-resources R --cpu-seconds N --log-level LEVEL` (the
//! agent's, default `warn`).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use agora_agent::oci::cgroups;
use agora_agent::oci::runtime::{Runtime, resolve_binary};
use agora_proto as pb;
use agora_sdk::{OfferResources, TaskBuilder};
use agora_tests::{ClusterBuilder, Seen, TestFramework, kill_executor_sessions, launch, refuse};

/// Set on the agent process this binary starts: it runs `agora` instead.
const RUN_AS_AGORA: &str = "AGORA_CONTAINER_BENCH_RUN_AS_AGORA";
/// Longest wait for any one phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(1800);
/// Per-task resources of the sleep tasks.
const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 16.0;

const USAGE: &str = "usage: container-bench [--tasks N] [--agent-resources R] \
                     [--cpu-seconds N] [--log-level LEVEL]";

struct Options {
    tasks: usize,
    agent_resources: String,
    cpu_seconds: u64,
    log_level: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            tasks: 1000,
            agent_resources: "cpus:1000;mem:1000000;disk:1000000;ports:[31000-31000]".into(),
            cpu_seconds: 3,
            log_level: "warn".into(),
        };
        while let Some((flag, value)) = agora_tests::bench::next_flag(&mut args, USAGE)? {
            let count = || {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{flag}: '{value}' is not a positive whole number"))
            };
            match flag.as_str() {
                "--tasks" => options.tasks = count()?,
                "--cpu-seconds" => options.cpu_seconds = count()? as u64,
                "--agent-resources" => options.agent_resources = value.clone(),
                "--log-level" => options.log_level = value.clone(),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    agora_tests::bench::main("container-bench", RUN_AS_AGORA, Options::parse, run)
}

/// Removes the agent's leftovers whatever happens.
struct Cleanup {
    agent: Option<tokio::process::Child>,
    work_dir: PathBuf,
    runtimes: Vec<Runtime>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.start_kill();
        }
        kill_executor_sessions(&self.work_dir);
        for runtime in &self.runtimes {
            for id in runtime.list().unwrap_or_default() {
                let _ = runtime.delete_force_blocking(&id);
            }
        }
        if let Some(marker) = self.work_dir.file_name().and_then(|n| n.to_str()) {
            for mount in agora_agent::oci::bundle::mounts_under(marker) {
                let _ = agora_agent::oci::bundle::unmount(&mount);
            }
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("containers need root".into());
    }
    let runc = resolve_binary(Path::new("runc")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    // Mesos' timings: a loaded machine must not make the master drop the agent.
    let cluster = ClusterBuilder::new(exe.clone())
        .agents(0)
        .timings(agora_master::CoreTimings::default())
        .start()
        .await;
    let dir = cluster.data_dir().to_path_buf();
    let store_dir = dir.join("images");
    let layout = agora_tests::images::busybox_layout(&dir).map_err(|e| e.to_string())?;
    let store = agora_agent::images::ImageStore::open(&store_dir).map_err(|e| e.to_string())?;
    store
        .import(&layout, Some("busybox"))
        .map_err(|e| e.to_string())?;
    let image = store.resolve("busybox").map_err(|e| e.to_string())?;

    let work_dir = dir.join("agent-bench");
    let mut cleanup = Cleanup {
        agent: None,
        work_dir: work_dir.clone(),
        runtimes: vec![
            Runtime::new(runc.clone(), work_dir.join("runc")),
            Runtime::new(runc.clone(), dir.join("raw-runc")),
        ],
    };
    // The dedicated executor binary when it was built next to this one (as
    // `agora agent --launcher-dir` runs it in production); else `agora executor`.
    // The `executor` profile's build (smaller) first, then the release one.
    let launcher_dir = exe.parent().and_then(|dir| {
        [dir.join("../executor"), dir.to_path_buf()]
            .into_iter()
            .find(|candidate| candidate.join("agora-executor").is_file())
    });
    match &launcher_dir {
        Some(dir) => println!("executors: {}/agora-executor", dir.display()),
        None => println!(
            "executors: this binary as `agora executor` (build the smaller agora-executor \
             with `cargo build --profile executor -p agora-agent --bin agora-executor`)"
        ),
    }
    let launcher_args: Vec<std::ffi::OsString> = match &launcher_dir {
        Some(dir) => vec!["--launcher-dir".into(), dir.clone().into_os_string()],
        None => Vec::new(),
    };
    let agent = tokio::process::Command::new(&exe)
        .env(RUN_AS_AGORA, "1")
        .args([
            "agent",
            "--master",
            &cluster.master_addr,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--work-dir")
        .arg(&work_dir)
        .args(["--resources", &options.agent_resources])
        .args(["--containerizers", "oci,process", "--kill-grace", "0s"])
        .args(["--executor-registration-timeout", "10m"])
        .arg("--image-store")
        .arg(&store_dir)
        .args(["--log-level", &options.log_level])
        .args(&launcher_args)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    cleanup.agent = Some(agent);

    let n = options.tasks;
    println!("container-bench: {n} containers of `sleep 3600` from the busybox image, one agent");
    let mut fw = TestFramework::start(
        &cluster.master_addr,
        TestFramework::info("container-bench", 3600.0),
    )
    .await;

    // Launch.
    let sleep = |i: usize| {
        TaskBuilder::new(format!("sleep-{i}"))
            .exec("/bin/sleep", vec!["sleep".into(), "3600".into()])
            .cpus(TASK_CPUS)
            .mem(TASK_MEM)
    };
    let launched_at = launch_tasks(&mut fw, (0..n).map(sleep).collect()).await?;
    let mut running = 0;
    phase("every task RUNNING", async {
        while running < n {
            let status = next_update(&mut fw).await;
            match status.state() {
                pb::TaskState::TaskRunning => running += 1,
                state if agora_core::task_state::is_terminal(state) => {
                    return Err(format!(
                        "task {:?} ended: {} {}",
                        status.task_id,
                        state.as_str_name(),
                        status.message
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    })
    .await?;
    let launch_time = launched_at.elapsed();
    let memory = executor_memory(&work_dir);
    println!(
        "agora:    {n} RUNNING in {:.2} s ({:.1} tasks/s)",
        launch_time.as_secs_f64(),
        n as f64 / launch_time.as_secs_f64()
    );
    let per_task = |kib: u64| kib as f64 / 1024.0 / n as f64;
    println!(
        "agora:    executor memory per task: RSS {:.2} MiB, of it private (RssAnon) {:.2} MiB; \
         PSS {:.2} MiB ({} executors)",
        per_task(memory.rss),
        per_task(memory.anon),
        per_task(memory.pss),
        memory.processes
    );

    // Destroy.
    let agent_runtime = cleanup.runtimes[0].clone();
    let killed_at = Instant::now();
    for i in 0..n {
        fw.handle
            .kill(
                pb::TaskId {
                    value: format!("sleep-{i}"),
                },
                None,
            )
            .await
            .map_err(|e| format!("KILL: {e}"))?;
    }
    let mut ended = 0;
    phase("every task KILLED", async {
        while ended < n {
            let status = next_update(&mut fw).await;
            if agora_core::task_state::is_terminal(status.state()) {
                ended += 1;
            }
        }
        Ok(())
    })
    .await?;
    phase("every container gone", async {
        while !agent_runtime.list().map_err(|e| e.to_string())?.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await?;
    let destroy_time = killed_at.elapsed();
    println!(
        "agora:    {n} KILLED and deleted in {:.2} s",
        destroy_time.as_secs_f64()
    );

    // The floor: plain runc.
    let rootfs = image
        .layers
        .first()
        .cloned()
        .ok_or("the image has no layer")?;
    let raw = &cleanup.runtimes[1];
    let (raw_run, raw_delete) = raw_runc(raw, &dir.join("raw-bundles"), &rootfs, n).await?;
    println!(
        "runc:     {n} `runc run -d` in {:.2} s; {n} `runc delete -f` in {:.2} s",
        raw_run.as_secs_f64(),
        raw_delete.as_secs_f64()
    );
    println!(
        "ratio:    launch {:.2}x, destroy {:.2}x the raw runc time",
        launch_time.as_secs_f64() / raw_run.as_secs_f64(),
        destroy_time.as_secs_f64() / raw_delete.as_secs_f64()
    );

    // The cpu share of a busy loop.
    let before: Vec<String> = agent_runtime.list().map_err(|e| e.to_string())?;
    let busy = TaskBuilder::new("busy")
        .exec(
            "/bin/sh",
            vec!["sh".into(), "-c".into(), "while :; do :; done".into()],
        )
        .cpus(0.5)
        .mem(32.0);
    launch_tasks(&mut fw, vec![busy]).await?;
    phase("the busy task RUNNING", async {
        loop {
            let status = next_update(&mut fw).await;
            if status.state() == pb::TaskState::TaskRunning {
                return Ok(());
            }
            if agora_core::task_state::is_terminal(status.state()) {
                return Err(format!("the busy task ended: {}", status.message));
            }
        }
    })
    .await?;
    let id = agent_runtime
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| !before.contains(c))
        .ok_or("the busy task's container is not listed")?;
    let cgroup = agora_agent::oci::cgroup_path(&id);
    let version = cgroups::version();
    let usage = || cgroups::cpu_usage_ns(version, &cgroup).map_err(|e| e.to_string());
    let (cpu_start, wall_start) = (usage()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(options.cpu_seconds)).await;
    let (cpu_end, wall) = (usage()?, wall_start.elapsed());
    println!(
        "cpu:      a busy loop with cpus=0.5 used {:.3} of a cpu over {:.1} s (cgroup cpu time / wall time)",
        (cpu_end - cpu_start) as f64 / wall.as_nanos() as f64,
        wall.as_secs_f64()
    );
    fw.stop().await;
    drop(cleanup);
    cluster.shutdown().await;
    Ok(())
}

async fn phase<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(PHASE_DEADLINE, work)
        .await
        .map_err(|_| format!("{what} took longer than {PHASE_DEADLINE:?}"))?
}

/// The next task update the framework sees.
async fn next_update(fw: &mut TestFramework) -> pb::TaskStatus {
    fw.wait_for("a task update", |seen| match seen {
        Seen::Update(status) => Some(status.clone()),
        _ => None,
    })
    .await
}

/// Launches `tasks` (busybox image, kill grace 0) on the first offer that holds
/// them all; returns when the ACCEPT was sent.
async fn launch_tasks(fw: &mut TestFramework, tasks: Vec<TaskBuilder>) -> Result<Instant, String> {
    loop {
        let offers = phase("an offer", async { Ok(fw.next_offers().await) }).await?;
        let mut sent = None;
        for offer in offers {
            let offer_id = offer.id.clone().unwrap_or_default();
            if sent.is_none() {
                let mut room = OfferResources::new(&offer).map_err(|e| e.to_string())?;
                let infos: Result<Vec<pb::TaskInfo>, _> =
                    tasks.iter().map(|t| room.take(t)).collect();
                if let Ok(mut infos) = infos {
                    for info in &mut infos {
                        info.container = Some(pb::ContainerInfo {
                            r#type: pb::container_info::Type::Docker as i32,
                            image: Some(pb::container_info::Image {
                                name: "busybox".into(),
                            }),
                            ..Default::default()
                        });
                        info.kill_policy = Some(pb::KillPolicy {
                            grace_period_seconds: Some(0.0),
                        });
                    }
                    let at = Instant::now();
                    fw.handle
                        .accept(vec![offer_id], vec![launch(infos)], Some(refuse(0.0)))
                        .await
                        .map_err(|e| format!("ACCEPT: {e}"))?;
                    sent = Some(at);
                    continue;
                }
            }
            let _ = fw.handle.decline(vec![offer_id], Some(refuse(0.0))).await;
        }
        if let Some(at) = sent {
            return Ok(at);
        }
    }
}

/// Memory of the executor processes, summed, in KiB.
#[derive(Default)]
struct ExecutorMemory {
    processes: usize,
    /// VmRSS: counts the shared pages of the binary in every process.
    rss: u64,
    /// RssAnon: each process' own (heap, stacks).
    anon: u64,
    /// Pss: shared pages divided among the processes sharing them.
    pss: u64,
}

/// The memory of the session leaders whose environment names `work_dir`: the
/// executors.
fn executor_memory(work_dir: &Path) -> ExecutorMemory {
    let needle = work_dir.to_string_lossy().into_owned();
    let mut memory = ExecutorMemory::default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: getsid only reads another process' session id.
        if unsafe { libc::getsid(pid) } != pid {
            continue;
        }
        let named = std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| String::from_utf8_lossy(&env).contains(&needle));
        if !named {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        if let Some(rss) = field(&status, "VmRSS:") {
            memory.processes += 1;
            memory.rss += rss;
            memory.anon += field(&status, "RssAnon:").unwrap_or(0);
            memory.pss += field(&rollup, "Pss:").unwrap_or(0);
        }
    }
    memory
}

/// Prepares `n` bundles over the read-only `rootfs`, then times a shell loop of
/// `runc run -d` and one of `runc delete -f`.
async fn raw_runc(
    runtime: &Runtime,
    bundles: &Path,
    rootfs: &Path,
    n: usize,
) -> Result<(Duration, Duration), String> {
    std::fs::create_dir_all(bundles).map_err(|e| e.to_string())?;
    let spec_dir = bundles.join("spec");
    std::fs::create_dir_all(&spec_dir).map_err(|e| e.to_string())?;
    let status = std::process::Command::new(&runtime.binary)
        .args(["spec", "--bundle"])
        .arg(&spec_dir)
        .status()
        .map_err(|e| format!("runc spec: {e}"))?;
    if !status.success() {
        return Err(format!("runc spec {status}"));
    }
    let text = std::fs::read_to_string(spec_dir.join("config.json")).map_err(|e| e.to_string())?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": true});
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/sleep", "3600"]);
    // Host network, as the agent's containers; sysfs then needs a bind.
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "network");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
        for mount in mounts.iter_mut() {
            if mount["destination"] == "/sys" {
                *mount = serde_json::json!({"destination": "/sys", "type": "bind",
                    "source": "/sys", "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]});
            }
        }
    }
    let limits = agora_agent::oci::bundle::TaskLimits {
        cpus: Some(TASK_CPUS),
        mem_mb: Some(TASK_MEM),
        pids: agora_agent::command_executor::env::DEFAULT_PIDS_LIMIT,
    };
    spec["linux"]["resources"] = serde_json::json!({
        "cpu": {"shares": limits.cpu_shares(), "quota": limits.cpu_quota_us(), "period": 100000},
        "memory": {"limit": limits.memory_bytes(), "swap": limits.memory_bytes()},
        "pids": {"limit": limits.pids},
    });
    for i in 0..n {
        let bundle = bundles.join(i.to_string());
        std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
        let mut own = spec.clone();
        own["linux"]["cgroupsPath"] = format!("/agora-raw/c{i}").into();
        std::fs::write(bundle.join("config.json"), own.to_string()).map_err(|e| e.to_string())?;
    }
    let shell = |script: String| async move {
        let started = Instant::now();
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("sh: {e}"))?;
        if !status.success() {
            return Err(format!("the runc loop failed: {status}"));
        }
        Ok::<Duration, String>(started.elapsed())
    };
    let root = runtime.state_root.display().to_string();
    let runc = runtime.binary.display().to_string();
    let bundles = bundles.display().to_string();
    let run = phase(
        "the runc run loop",
        shell(format!(
            "i=0; while [ $i -lt {n} ]; do {runc} --root {root} run -d --bundle {bundles}/$i c$i \
             </dev/null >/dev/null || exit 1; i=$((i+1)); done"
        )),
    )
    .await?;
    let delete = phase(
        "the runc delete loop",
        shell(format!(
            "i=0; while [ $i -lt {n} ]; do {runc} --root {root} delete -f c$i || exit 1; \
             i=$((i+1)); done"
        )),
    )
    .await?;
    Ok((run, delete))
}
