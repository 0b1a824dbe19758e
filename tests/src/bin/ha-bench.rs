//! `ha-bench`: what a master failover costs, and what the replicated state store
//! sustains, with a raft group of real master processes. Prints figures; asserts
//! nothing about timing.
//!
//! ```text
//! cargo run --release -p agora-tests --bin ha-bench -- --agents 1000 --tasks 10000
//! ```
//!
//! What it does:
//! 1. Starts `--masters` (3) `agora master` processes on 127.0.0.1 as one raft group
//!    (this binary started again as `agora`; see `main`), with their data under a
//!    temporary directory.
//! 2. Starts `--agents` (1000) [`SimAgent`]s in this process (the real agent
//!    protocol, no containers: a launched task is RUNNING at once) and a framework
//!    on the SDK given every master, which launches `--tasks` (10000) tasks.
//! 3. Waits until the cluster is at rest (every status update acknowledged, the
//!    framework's event stream drained), then SIGKILLs the leader and measures,
//!    from the kill: the new leader's election (health polled every 50 ms),
//!    the framework's re-subscription (same framework id), every agent's
//!    re-registration, and the new leader showing every task RUNNING again. The
//!    failover figure is the later of re-subscription and the last re-registration.
//!    It also checks that no task was launched twice.
//! 4. State-store throughput: `--clients` (32) SDK clients doing `--ops` (10000)
//!    puts of `--value-bytes` (256) in all, as fast as the group acknowledges them.
//! 5. The latency of a single write: `--samples` (1000) puts one after another by
//!    one client; p50, p99 and max.
//!
//! Flags: `--masters N --agents N --tasks N --ops N --clients N --samples N
//! --value-bytes N --log-level LEVEL` (the masters' log level, default `warn`).
//! Masters run with agents pinged every second and a 1 s framework heartbeat.
//!
//! The masters are processes (a SIGKILL is a real crash: no handoff, no flush), so
//! fsync latency of the machine's disk is part of every figure.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agora_proto as pb;
use agora_sdk::{StateStore, TaskBuilder};
use agora_tests::{
    GroupFramework, MasterGroup, MasterGroupBuilder, Seen, SimAgent, SimAgentConfig, SimCounters,
    TestFramework,
};
use tokio::time::Instant;

/// Set on the master processes this binary starts: they run `agora` instead.
const RUN_AS_AGORA: &str = "AGORA_HA_BENCH_RUN_AS_AGORA";
/// Longest wait for any one phase of the benchmark.
const PHASE_DEADLINE: Duration = Duration::from_secs(900);
/// How often the leader's state is polled while waiting for it to show something.
const STATE_POLL: Duration = Duration::from_millis(200);
/// Resources of one task.
const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 8.0;

/// The command line.
struct Options {
    masters: u64,
    agents: usize,
    tasks: usize,
    ops: usize,
    clients: usize,
    samples: usize,
    value_bytes: usize,
    log_level: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            masters: 3,
            agents: 1000,
            tasks: 10_000,
            ops: 10_000,
            clients: 32,
            samples: 1000,
            value_bytes: 256,
            log_level: "warn".into(),
        }
    }
}

const USAGE: &str = "usage: ha-bench [--masters N] [--agents N] [--tasks N] [--ops N] \
                     [--clients N] [--samples N] [--value-bytes N] [--log-level LEVEL]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options::default();
        while let Some((flag, value)) = agora_tests::bench::next_flag(&mut args, USAGE)? {
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{flag}: '{value}' is not a number"))
            };
            match flag.as_str() {
                "--masters" => options.masters = number()? as u64,
                "--agents" => options.agents = number()?,
                "--tasks" => options.tasks = number()?,
                "--ops" => options.ops = number()?,
                "--clients" => options.clients = number()?,
                "--samples" => options.samples = number()?,
                "--value-bytes" => options.value_bytes = number()?,
                "--log-level" => options.log_level = value.clone(),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if options.masters == 0 || options.agents == 0 || options.clients == 0 {
            return Err("--masters, --agents and --clients must be at least 1".into());
        }
        if options.value_bytes > agora_core::limits::MAX_MESSAGE_BYTES / 2 {
            return Err("--value-bytes is larger than a state-store value may be".into());
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    agora_tests::bench::main("ha-bench", RUN_AS_AGORA, Options::parse, run)
}

/// Awaits `future` for at most [`PHASE_DEADLINE`].
async fn phase<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(PHASE_DEADLINE, future)
        .await
        .map_err(|_| format!("timed out after {PHASE_DEADLINE:?} waiting for {what}"))
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

async fn run(options: Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    println!(
        "ha-bench: {} masters (processes), {} simulated agents, {} tasks",
        options.masters, options.agents, options.tasks
    );
    let started = Instant::now();
    let mut group = MasterGroupBuilder::new(exe)
        .size(options.masters)
        .env(RUN_AS_AGORA, "1")
        .log_level(&options.log_level)
        .args(&[
            "--agent-ping-interval",
            "1s",
            "--agent-reregister-timeout",
            "10m",
            "--heartbeat-interval",
            "1s",
        ])
        .start()
        .await;
    println!(
        "group of {} up in {}",
        options.masters,
        seconds(started.elapsed())
    );

    let agents = start_agents(&group, &options).await?;
    let mut framework =
        GroupFramework::start(group.addresses(), TestFramework::info("ha-bench", 86_400.0)).await;
    launch_tasks(&mut framework, &agents, &options).await?;

    failover(&mut group, &agents, framework, &options).await?;

    state_store_throughput(&group, &options).await?;
    state_store_latency(&group, &options).await?;

    let stops = agents.into_iter().map(SimAgent::stop);
    futures_join_all(stops).await;
    drop(group);
    Ok(())
}

/// Starts every agent and waits until each registered.
async fn start_agents(group: &MasterGroup, options: &Options) -> Result<Vec<SimAgent>, String> {
    let per_agent = options.tasks.div_ceil(options.agents).max(1) as f64;
    let resources = format!(
        "cpus:{};mem:{};disk:1000",
        (per_agent * TASK_CPUS * 2.0).max(1.0),
        (per_agent * TASK_MEM * 2.0).max(256.0)
    );
    let started = Instant::now();
    let mut agents = Vec::with_capacity(options.agents);
    for n in 0..options.agents {
        let mut config =
            SimAgentConfig::new(group.addresses(), &resources).map_err(|e| e.to_string())?;
        config.hostname = format!("sim-{n}");
        config.backoff_max = Duration::from_secs(1);
        agents.push(SimAgent::start(config).map_err(|e| e.to_string())?);
    }
    phase(
        "every agent to register",
        futures_join_all(agents.iter().map(|a| a.wait_registrations(1))),
    )
    .await?;
    println!(
        "{} agents registered in {}",
        agents.len(),
        seconds(started.elapsed())
    );
    Ok(agents)
}

/// Launches every task on the offers that come, and waits until each is RUNNING.
async fn launch_tasks(
    framework: &mut GroupFramework,
    agents: &[SimAgent],
    options: &Options,
) -> Result<(), String> {
    let started = Instant::now();
    let mut next_task = 0usize;
    let mut running = BTreeSet::new();
    let deadline = started + PHASE_DEADLINE;
    while running.len() < options.tasks {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} tasks RUNNING after {PHASE_DEADLINE:?}",
                running.len(),
                options.tasks
            ));
        }
        match framework.next_event().await {
            Seen::Offers(offers) => {
                for offer in offers {
                    let offer_id = offer.id.clone().unwrap_or_default();
                    let mut tasks = Vec::new();
                    if let Ok(mut room) = agora_sdk::OfferResources::new(&offer) {
                        while next_task < options.tasks
                            && tasks.len() < agora_core::limits::MAX_TASKS_PER_LAUNCH
                        {
                            let task = TaskBuilder::new(format!("task-{next_task}"))
                                .shell("sleep 3600")
                                .cpus(TASK_CPUS)
                                .mem(TASK_MEM);
                            match room.take(&task) {
                                Ok(info) => {
                                    tasks.push(info);
                                    next_task += 1;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    // Unused offers come back at once while tasks remain, and stay
                    // away for a day once every task is placed.
                    let refuse = if next_task < options.tasks {
                        0.0
                    } else {
                        86_400.0
                    };
                    let filters = Some(pb::Filters {
                        refuse_seconds: Some(refuse),
                    });
                    let sent = if tasks.is_empty() {
                        framework.handle.decline(vec![offer_id], filters).await
                    } else {
                        framework.handle.launch(offer_id, tasks, filters).await
                    };
                    if let Err(e) = sent {
                        return Err(format!("ACCEPT/DECLINE failed: {e}"));
                    }
                }
            }
            Seen::Update(status) if status.state == pb::TaskState::TaskRunning as i32 => {
                if let Some(task_id) = status.task_id {
                    running.insert(task_id.value);
                }
            }
            Seen::Update(status) if agora_core::task_state::is_terminal_raw(status.state) => {
                return Err(format!("a task ended: {status:?}"));
            }
            Seen::Error(message) => return Err(format!("the framework got ERROR: {message}")),
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    let launched: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().launched))
        .sum();
    println!(
        "{} tasks RUNNING in {} ({:.0} tasks/s); the agents started {launched}",
        options.tasks,
        seconds(elapsed),
        options.tasks as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    settle(framework, agents).await?;
    println!(
        "every update acknowledged and the framework's stream drained after {}",
        seconds(started.elapsed())
    );
    Ok(())
}

/// Waits until the cluster is at rest: every agent's updates acknowledged (so none
/// is resent), and the framework's event stream drained. The failover is measured
/// from there, so that it does not include the framework working through events
/// the old leader had already sent.
async fn settle(framework: &mut GroupFramework, agents: &[SimAgent]) -> Result<(), String> {
    let deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        // The framework must be reading for acknowledgements to be sent.
        while let Some(seen) = framework.try_next_event() {
            if let Seen::Error(message) = seen {
                return Err(format!("the framework got ERROR: {message}"));
            }
        }
        if agents.iter().all(|a| a.pending_updates() == 0) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the agents' updates were never all acknowledged".into());
        }
        tokio::time::sleep(STATE_POLL).await;
    }
    // Events reach the framework in order: once the answer to a reconciliation
    // arrives, everything queued before it has been handled.
    let Some((task_id, agent_id)) = agents.iter().find_map(|a| {
        let task = a.tasks().into_iter().next()?;
        Some((task.task_id, a.agent_id()?))
    }) else {
        return Ok(());
    };
    framework
        .handle
        .reconcile(vec![(
            pb::TaskId {
                value: task_id.clone(),
            },
            Some(pb::AgentId { value: agent_id }),
        )])
        .await
        .map_err(|e| format!("RECONCILE: {e}"))?;
    phase("the reconciliation answer", async {
        loop {
            if let Seen::Update(status) = framework.next_event().await
                && status.reason == pb::task_status::Reason::Reconciliation as i32
                && status.task_id.as_ref().is_some_and(|t| t.value == task_id)
            {
                break;
            }
        }
    })
    .await
}

/// SIGKILLs the leader and measures how long everyone takes to be back.
async fn failover(
    group: &mut MasterGroup,
    agents: &[SimAgent],
    mut framework: GroupFramework,
    options: &Options,
) -> Result<(), String> {
    let framework_id = framework.framework_id.clone();
    let before: Vec<u64> = agents.iter().map(|a| a.status().registrations).collect();
    let old_leader = group.wait_for_leader().await;
    framework.clear_backlog();

    let killed_at = Instant::now();
    group.kill(old_leader);
    println!("SIGKILLed the leader (master {old_leader})");

    // The framework is driven by its own task, which notes when it re-subscribed.
    let resubscription = tokio::spawn(async move {
        let id = framework
            .wait_for("the framework to re-subscribe", |seen| match seen {
                Seen::Subscribed(id) => Some(id.clone()),
                _ => None,
            })
            .await;
        (Instant::now(), id, framework)
    });
    let new_leader = group.wait_for_leader().await;
    let elected = killed_at.elapsed();

    let registered_at: Vec<Instant> = phase(
        "every agent to re-register",
        futures_join_all(
            agents
                .iter()
                .zip(&before)
                .map(|(agent, before)| async move {
                    agent
                        .wait_registrations(before + 1)
                        .await
                        .registered_at
                        .unwrap_or_else(Instant::now)
                }),
        ),
    )
    .await?;
    let (resubscribed_at, resubscribed_id, framework) =
        phase("the framework to re-subscribe", resubscription)
            .await?
            .map_err(|e| format!("the framework's task failed: {e}"))?;
    if resubscribed_id != framework_id {
        return Err(format!(
            "the framework re-subscribed as {resubscribed_id:?}, not {framework_id:?}"
        ));
    }

    let mut agent_times: Vec<Duration> = registered_at
        .iter()
        .map(|at| at.duration_since(killed_at))
        .collect();
    agent_times.sort();
    let last_agent = agent_times.last().copied().unwrap_or_default();
    let framework_time = resubscribed_at.duration_since(killed_at);

    // The new leader learns every task again from the agents' re-registrations.
    let all_running = phase("the new leader to show every task RUNNING", async {
        loop {
            let state = group.leader_state().await;
            let running = state
                .tasks
                .iter()
                .filter(|t| t.state == pb::TaskState::TaskRunning as i32)
                .count();
            let active = state.agents.iter().filter(|a| a.status == "ACTIVE").count();
            if running >= options.tasks && active >= options.agents {
                break Instant::now();
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    })
    .await?;
    let duplicates: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().duplicate_launches))
        .sum();
    let held: usize = agents.iter().map(|a| a.tasks().len()).sum();

    println!("failover (from the SIGKILL of master {old_leader}):");
    println!(
        "  new leader (master {new_leader}) elected:   {}",
        seconds(elected)
    );
    println!(
        "  framework re-subscribed (same id): {}",
        seconds(framework_time)
    );
    println!(
        "  agents re-registered: p50 {}, p99 {}, last {}",
        seconds(percentile(&agent_times, 0.50)),
        seconds(percentile(&agent_times, 0.99)),
        seconds(last_agent)
    );
    println!(
        "  => framework re-subscribed AND every agent re-registered: {}",
        seconds(framework_time.max(last_agent))
    );
    println!(
        "  new leader shows all {} tasks RUNNING (polled every {STATE_POLL:?}): {}",
        options.tasks,
        seconds(all_running.duration_since(killed_at))
    );
    println!("  tasks held by agents: {held}; launched twice: {duplicates}");
    if duplicates > 0 {
        return Err(format!("{duplicates} tasks were launched twice"));
    }
    framework.stop().await;
    Ok(())
}

/// `--ops` puts by `--clients` concurrent clients.
async fn state_store_throughput(group: &MasterGroup, options: &Options) -> Result<(), String> {
    if options.ops == 0 {
        return Ok(());
    }
    let value = Arc::new(vec![b'v'; options.value_bytes]);
    let clients: Vec<StateStore> = (0..options.clients)
        .map(|_| StateStore::connect(group.addresses(), "ha-bench"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    // Each client connects (and finds the leader) before the clock starts.
    for (n, client) in clients.iter().enumerate() {
        client
            .put(&format!("warmup/{n}"), b"w".to_vec())
            .await
            .map_err(|e| format!("warm-up put: {e}"))?;
    }
    let started = Instant::now();
    let workers = clients.into_iter().enumerate().map(|(n, client)| {
        let value = value.clone();
        let share = options.ops / options.clients + usize::from(n < options.ops % options.clients);
        async move {
            for i in 0..share {
                client
                    .put(&format!("throughput/{n}/{i}"), value.as_slice().to_vec())
                    .await
                    .map_err(|e| format!("put: {e}"))?;
            }
            Ok::<(), String>(())
        }
    });
    for result in phase("the throughput puts", futures_join_all(workers)).await? {
        result?;
    }
    let elapsed = started.elapsed();
    println!(
        "state store: {} puts of {} B by {} concurrent clients in {}: {:.0} ops/s",
        options.ops,
        options.value_bytes,
        options.clients,
        seconds(elapsed),
        options.ops as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// `--samples` puts one after another by one client.
async fn state_store_latency(group: &MasterGroup, options: &Options) -> Result<(), String> {
    if options.samples == 0 {
        return Ok(());
    }
    let client = StateStore::connect(group.addresses(), "ha-bench").map_err(|e| e.to_string())?;
    client
        .put("latency/warmup", b"w".to_vec())
        .await
        .map_err(|e| format!("warm-up put: {e}"))?;
    let value = vec![b'l'; options.value_bytes];
    let mut latencies = Vec::with_capacity(options.samples);
    for i in 0..options.samples {
        let started = Instant::now();
        client
            .put(&format!("latency/{i}"), value.clone())
            .await
            .map_err(|e| format!("put: {e}"))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let millis = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "state store: single write latency with {} masters over {} puts: p50 {}, p99 {}, max {}",
        options.masters,
        options.samples,
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default())
    );
    Ok(())
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64) * q).ceil() as usize;
    values
        .get(rank.saturating_sub(1).min(values.len() - 1))
        .copied()
        .unwrap_or_default()
}

/// Awaits every future, concurrently, on this task; results in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
