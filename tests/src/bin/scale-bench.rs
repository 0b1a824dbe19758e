//! `scale-bench`: whether one master keeps up with thousands of agents and a stream
//! of short tasks. Prints figures; asserts nothing about timing.
//!
//! ```text
//! cargo run --release -p agora-tests --bin scale-bench -- --agents 1000 --tasks 100000
//! ```
//!
//! What it does:
//! 1. Starts one master (a group of one): by default an `agora master` process (this
//!    binary started again as `agora`; see `main`), so that its peak RSS and CPU
//!    time are its own; with `--in-process`, `Master::start` in this process.
//! 2. Starts `--agents` (1000) [`SimAgent`]s of `--agent-resources`
//!    (`cpus:16;mem:65536`) in this process: the real agent protocol over gRPC on
//!    loopback, no containers: a launched task reports TASK_RUNNING and then
//!    TASK_FINISHED at once (the FINISHED update follows the acknowledgement of
//!    RUNNING, as with a real agent).
//! 3. Starts `--frameworks` (10) frameworks on the SDK ([`SchedulerDriver`]). Each
//!    packs tasks of `--task-cpus` (0.1) and `--task-mem` (32) into the offers it
//!    gets ([`OfferResources`], [`TaskBuilder`]) and sends each ACCEPT without
//!    waiting for the previous one, until `--tasks` (100000) tasks in all have been
//!    launched; then it declines and suppresses. Updates are acknowledged by the
//!    driver. At most `--max-in-flight` (10000) tasks are launched and not yet
//!    ended, over all frameworks: offers that cannot be used yet are held, and
//!    used as tasks finish (in batches of at least 64). `--max-in-flight 0` lifts
//!    the limit: with tiny tasks a thousand agents hold every task at once, so all
//!    of them are launched in the first seconds and the rest of the run drains that
//!    backlog (the state then lists 100,000 live tasks, some 70 MB of JSON).
//! 4. Meanwhile polls `GET /api/v1/state` every `--state-poll-ms` (200) ms, from a
//!    thread of its own.
//! 5. Once every task FINISHED, prints:
//!    - tasks launched per second (tasks seen RUNNING, from the first ACCEPT to the
//!      last RUNNING) and finished per second (from the first ACCEPT to the last
//!      FINISHED);
//!    - accept→RUNNING p50/p99/max: from sending the ACCEPT to the framework
//!      receiving TASK_RUNNING;
//!    - the master's peak RSS (VmHWM) and CPU time; with `--in-process` the RSS is
//!      this whole process' (harness included), and no CPU time is given;
//!    - `GET /api/v1/state` latency p50/p99/max and the largest body.
//!
//! Flags: `--agents N --frameworks N --tasks N --task-cpus X --task-mem X
//! --max-in-flight N --agent-resources R --state-poll-ms N --timeout-secs N
//! --in-process --log-level LEVEL` (the master's, default `warn`).
//!
//! Everything shares the machine: the master, a thousand simulated agents and the
//! frameworks all run on the same cores, so the figures are a floor for the master
//! alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_proto as pb;
use agora_sdk::{
    DriverConfig, OfferResources, Scheduler, SchedulerDriver, SchedulerHandle, TaskBuilder,
    is_terminal,
};
use agora_tests::{MasterGroup, MasterGroupBuilder, SimAgent, SimAgentConfig, SimCounters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Set on the master process this binary starts: it runs `agora` instead.
const RUN_AS_AGORA: &str = "AGORA_SCALE_BENCH_RUN_AS_AGORA";
/// Longest wait for agents to register or frameworks to subscribe.
const SETUP_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait for one `GET /api/v1/state`.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress is printed while tasks run.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long declined offers stay away once every task is launched.
const DONE_REFUSE_SECONDS: f64 = 3600.0;
/// With `--max-in-flight`, a framework waits until this many tasks may start (or the
/// last ones) before it packs an offer, rather than sending an ACCEPT per finished
/// task.
const LAUNCH_BATCH: usize = 64;

/// The command line.
struct Options {
    agents: usize,
    frameworks: usize,
    tasks: usize,
    task_cpus: f64,
    task_mem: f64,
    /// 0: no limit.
    max_in_flight: usize,
    agent_resources: String,
    state_poll: Duration,
    timeout: Duration,
    in_process: bool,
    log_level: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agents: 1000,
            frameworks: 10,
            tasks: 100_000,
            task_cpus: 0.1,
            task_mem: 32.0,
            max_in_flight: 10_000,
            agent_resources: "cpus:16;mem:65536".into(),
            state_poll: Duration::from_millis(200),
            timeout: Duration::from_secs(600),
            in_process: false,
            log_level: "warn".into(),
        }
    }
}

const USAGE: &str = "usage: scale-bench [--agents N] [--frameworks N] [--tasks N] \
                     [--task-cpus X] [--task-mem X] [--max-in-flight N] [--agent-resources R] \
                     [--state-poll-ms N] [--timeout-secs N] [--in-process] [--log-level LEVEL]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options::default();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--help" | "-h" => return Err(USAGE.into()),
                "--in-process" => {
                    options.in_process = true;
                    continue;
                }
                _ => {}
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let count = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{flag}: '{value}' is not a whole number"))
            };
            let amount = || match value.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(format!("{flag}: '{value}' is not a positive number")),
            };
            match flag.as_str() {
                "--agents" => options.agents = count()?,
                "--frameworks" => options.frameworks = count()?,
                "--tasks" => options.tasks = count()?,
                "--task-cpus" => options.task_cpus = amount()?,
                "--task-mem" => options.task_mem = amount()?,
                "--max-in-flight" => options.max_in_flight = count()?,
                "--agent-resources" => options.agent_resources = value.clone(),
                "--state-poll-ms" => options.state_poll = Duration::from_millis(count()? as u64),
                "--timeout-secs" => options.timeout = Duration::from_secs(count()? as u64),
                "--log-level" => options.log_level = value.clone(),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if options.agents == 0 || options.frameworks == 0 || options.tasks == 0 {
            return Err("--agents, --frameworks and --tasks must be at least 1".into());
        }
        if options.state_poll.is_zero() {
            return Err("--state-poll-ms must be at least 1".into());
        }
        agora_core::Resources::parse(&options.agent_resources)
            .map_err(|e| format!("--agent-resources: {e}"))?;
        Ok(options)
    }
}

fn main() -> ExitCode {
    agora_tests::bench::main("scale-bench", RUN_AS_AGORA, Options::parse, run)
}

/// The master under test: a process, or in this process.
enum MasterUnderTest {
    Process(MasterGroup),
    InProcess {
        handle: agora_master::MasterHandle,
        /// Holds the master's data directory until the end.
        _dir: tempfile::TempDir,
    },
}

impl MasterUnderTest {
    async fn start(options: &Options) -> Result<Self, String> {
        if options.in_process {
            let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("a port for the master: {e}"))?;
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let mut config = agora_master::MasterConfig::new(dir.path().join("master"), logger);
            config.timings.agent_reregister_timeout = Duration::from_secs(600);
            let handle = agora_master::Master::start(config, listener)
                .await
                .map_err(|e| format!("the master does not start: {e}"))?;
            tokio::time::timeout(SETUP_DEADLINE, handle.until_leading())
                .await
                .map_err(|_| "the master never led".to_string())?;
            return Ok(MasterUnderTest::InProcess { handle, _dir: dir });
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        // Mesos' production timings: a thousand agents pinged every 200 ms would be
        // a benchmark of pings.
        let group = MasterGroupBuilder::new(exe)
            .size(1)
            .env(RUN_AS_AGORA, "1")
            .log_level(&options.log_level)
            .args(&[
                "--agent-ping-interval",
                "15s",
                "--agent-reregister-timeout",
                "10m",
                "--heartbeat-interval",
                "15s",
            ])
            .start()
            .await;
        Ok(MasterUnderTest::Process(group))
    }

    fn address(&self) -> String {
        match self {
            MasterUnderTest::Process(group) => group.address(1).to_string(),
            MasterUnderTest::InProcess { handle, .. } => handle.local_addr().to_string(),
        }
    }

    /// The pid whose VmHWM and CPU time are the master's.
    fn pid(&self) -> Option<i32> {
        match self {
            MasterUnderTest::Process(group) => group.pid(1),
            MasterUnderTest::InProcess { .. } => None,
        }
    }

    /// Peak resident set in kB: the master process', or this process' in-process.
    fn peak_rss_kb(&self) -> Option<u64> {
        let path = match self.pid() {
            Some(pid) => format!("/proc/{pid}/status"),
            None => "/proc/self/status".into(),
        };
        let status = std::fs::read_to_string(path).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User + system CPU seconds of the master process so far (process mode only).
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&format!("/proc/{}/stat", self.pid()?))
    }

    async fn stop(self) {
        match self {
            MasterUnderTest::Process(group) => drop(group),
            MasterUnderTest::InProcess { handle, .. } => handle.shutdown().await,
        }
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn cpu_seconds_of(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may contain spaces) start at state (3).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// What every framework and the main task share.
struct Shared {
    /// Tasks not yet handed to an ACCEPT; taken one at a time, given back when a
    /// launch fails or a task ends otherwise than FINISHED.
    budget: AtomicUsize,
    /// Tasks handed to an ACCEPT and not ended yet.
    in_flight: AtomicUsize,
    /// The most tasks in flight at once (`--max-in-flight`); `usize::MAX` for no
    /// limit.
    max_in_flight: usize,
    /// Task ids are `t-<n>`, unique across frameworks.
    next_task: AtomicU64,
    /// Tasks sent in ACCEPTs that the master took.
    launched: AtomicU64,
    /// Tasks seen FINISHED (each once: a task's FINISHED may be delivered again).
    finished: AtomicU64,
    /// Tasks that ended otherwise than FINISHED (relaunched under a new id).
    failed: AtomicU64,
    /// Why tasks failed: "STATE (REASON)" → how many, and the first one's message.
    failures: Mutex<std::collections::BTreeMap<String, (u64, String)>>,
    /// ACCEPTs the master refused or that timed out.
    accept_errors: AtomicU64,
    /// Offers that arrived, and offers declined.
    offers: AtomicU64,
    declined: AtomicU64,
    /// The first ACCEPT, as an offset from `origin`.
    first_accept: Mutex<Option<Duration>>,
    /// The latest TASK_RUNNING seen, in nanoseconds after `origin`.
    last_running_nanos: AtomicU64,
    /// When the benchmark started counting.
    origin: Instant,
    /// Flipped once every task FINISHED.
    done: watch::Sender<bool>,
    target: u64,
}

impl Shared {
    /// Takes one task from the budget and one place in flight, if both are left.
    fn take_one(&self) -> bool {
        let placed = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .is_ok();
        if !placed {
            return false;
        }
        let budgeted = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !budgeted {
            self.end_in_flight(1);
        }
        budgeted
    }

    /// Places in flight left.
    fn free_slots(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.in_flight.load(Ordering::Acquire))
    }

    fn end_in_flight(&self, n: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_sub(n))
            });
    }

    fn give_back(&self, n: usize) {
        self.budget.fetch_add(n, Ordering::AcqRel);
    }

    fn note_accept(&self) {
        let at = self.origin.elapsed();
        if let Ok(mut first) = self.first_accept.lock() {
            first.get_or_insert(at);
        }
    }

    fn note_running(&self) {
        let at = self.origin.elapsed().as_nanos() as u64;
        self.last_running_nanos.fetch_max(at, Ordering::Relaxed);
    }
}

/// One benchmark framework; only its driver calls it, one callback at a time.
struct BenchScheduler {
    shared: Arc<Shared>,
    task_cpus: f64,
    task_mem: f64,
    /// Offers not used yet, oldest first: held while `--max-in-flight` tasks run,
    /// used as tasks finish.
    held: VecDeque<OfferResources>,
    /// When each launched task's ACCEPT was sent; removed at its first RUNNING.
    accepted_at: HashMap<String, Instant>,
    /// accept→RUNNING of every task seen RUNNING.
    accept_to_running: Vec<Duration>,
    /// Tasks seen ending, so that a repeated update is not counted twice.
    ended: HashSet<String>,
    /// SUPPRESS was accepted; cleared by REVIVE when budget comes back.
    suppressed: bool,
}

impl BenchScheduler {
    /// Launches what the budget and the in-flight limit allow on the held offers;
    /// declines offers that fit no task, and every offer once nothing is left to
    /// launch.
    async fn pump(&mut self, driver: &SchedulerHandle) {
        let shared = self.shared.clone();
        let mut declined = Vec::new();
        loop {
            let budget = shared.budget.load(Ordering::Acquire);
            if budget == 0 {
                declined.extend(self.held.drain(..).map(|room| room.offer_id().clone()));
                break;
            }
            // Wait until a batch worth an ACCEPT is free (or the last tasks are),
            // rather than sending one ACCEPT per finished task.
            let free = shared.free_slots();
            if free == 0 || (free < LAUNCH_BATCH && budget > free) {
                break;
            }
            let Some(mut room) = self.held.pop_front() else {
                break;
            };
            let mut tasks = Vec::new();
            while tasks.len() < agora_core::limits::MAX_TASKS_PER_LAUNCH && shared.take_one() {
                let n = shared.next_task.fetch_add(1, Ordering::Relaxed);
                let task = TaskBuilder::new(format!("t-{n}"))
                    .shell("true")
                    .cpus(self.task_cpus)
                    .mem(self.task_mem);
                match room.take(&task) {
                    Ok(info) => tasks.push(info),
                    Err(_) => {
                        shared.give_back(1);
                        shared.end_in_flight(1);
                        break;
                    }
                }
            }
            if tasks.is_empty() {
                declined.push(room.offer_id().clone());
                continue;
            }
            let sent_at = Instant::now();
            shared.note_accept();
            for task in &tasks {
                if let Some(id) = &task.task_id {
                    self.accepted_at.insert(id.value.clone(), sent_at);
                }
            }
            // Sent without waiting: the next offer is packed while this ACCEPT
            // travels, as a framework that wants throughput does. What the tasks
            // leave is refused for the master's default 5 s; resources freed by
            // finished tasks come back at once regardless.
            let driver = driver.clone();
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let count = tasks.len();
                match driver.launch(room.offer_id().clone(), tasks, None).await {
                    Ok(()) => {
                        shared.launched.fetch_add(count as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                        shared.give_back(count);
                        shared.end_in_flight(count);
                    }
                }
            });
        }
        if !declined.is_empty() {
            shared
                .declined
                .fetch_add(declined.len() as u64, Ordering::Relaxed);
            let refuse = if shared.budget.load(Ordering::Acquire) == 0 {
                DONE_REFUSE_SECONDS
            } else {
                1.0
            };
            let filters = Some(pb::Filters {
                refuse_seconds: Some(refuse),
            });
            let _ = driver.decline(declined, filters).await;
        }
        if shared.budget.load(Ordering::Acquire) == 0 && !self.suppressed {
            self.suppressed = driver.suppress(Vec::new()).await.is_ok();
        }
    }
}

impl Scheduler for BenchScheduler {
    async fn offers(&mut self, driver: &SchedulerHandle, offers: Vec<pb::Offer>) {
        self.shared
            .offers
            .fetch_add(offers.len() as u64, Ordering::Relaxed);
        self.held.extend(
            offers
                .iter()
                .filter_map(|offer| OfferResources::new(offer).ok()),
        );
        self.pump(driver).await;
    }

    async fn rescinded(&mut self, _driver: &SchedulerHandle, offer_id: pb::OfferId) {
        self.held.retain(|room| *room.offer_id() != offer_id);
    }

    async fn update(&mut self, driver: &SchedulerHandle, status: pb::TaskStatus) {
        let task = status
            .task_id
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or("");
        let state = status.state();
        match state {
            pb::TaskState::TaskRunning => {
                if let Some(sent_at) = self.accepted_at.remove(task) {
                    self.accept_to_running.push(sent_at.elapsed());
                    self.shared.note_running();
                }
            }
            // A repeated update (delivered again) is not counted twice.
            pb::TaskState::TaskFinished if self.ended.insert(task.to_string()) => {
                self.shared.end_in_flight(1);
                let finished = self.shared.finished.fetch_add(1, Ordering::AcqRel) + 1;
                if finished >= self.shared.target {
                    self.shared.done.send_replace(true);
                }
                self.pump(driver).await;
            }
            state if is_terminal(state) => {
                if !self.ended.insert(task.to_string()) {
                    return;
                }
                self.accepted_at.remove(task);
                self.shared.end_in_flight(1);
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut failures) = self.shared.failures.lock() {
                    let why = format!(
                        "{} ({})",
                        state.as_str_name(),
                        status.reason().as_str_name()
                    );
                    let entry = failures
                        .entry(why)
                        .or_insert_with(|| (0, status.message.clone()));
                    entry.0 += 1;
                }
                self.shared.give_back(1);
                if self.suppressed && driver.revive(Vec::new()).await.is_ok() {
                    self.suppressed = false;
                }
                self.pump(driver).await;
            }
            _ => {}
        }
    }
}

/// `GET /api/v1/state` latencies and the largest body seen.
#[derive(Default)]
struct StatePolls {
    latencies: Vec<Duration>,
    largest_body: usize,
    errors: u64,
}

/// One HTTP/1.1 GET of `path`; returns the status code and the body's length.
/// `expect` sizes the buffer (the previous body's length), so that reading a large
/// body does not grow it step by step.
async fn http_get(addr: &str, path: &str, expect: usize) -> Result<(u16, usize), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::with_capacity(expect + 64 * 1024);
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of headers")?;
        let head = String::from_utf8_lossy(&raw[..head_end]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok::<_, String>((status, raw.len() - head_end - 4))
    };
    tokio::time::timeout(STATE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {STATE_TIMEOUT:?}"))?
}

/// Polls the state every `every` until `done`, on a thread of its own: the
/// harness' runtime is busy with a thousand agents, and the figure is the
/// master's latency, not the harness' scheduling delay.
fn spawn_state_poller(
    addr: String,
    every: Duration,
    done: watch::Receiver<bool>,
) -> std::thread::JoinHandle<StatePolls> {
    std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(poll_state(addr, every, done)),
            Err(_) => StatePolls {
                errors: 1,
                ..Default::default()
            },
        }
    })
}

async fn poll_state(addr: String, every: Duration, mut done: watch::Receiver<bool>) -> StatePolls {
    let mut polls = StatePolls::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.wait_for(|d| *d) => return polls,
        }
        let started = Instant::now();
        match http_get(&addr, "/api/v1/state", polls.largest_body).await {
            Ok((200, bytes)) => {
                polls.latencies.push(started.elapsed());
                polls.largest_body = polls.largest_body.max(bytes);
            }
            Ok(_) | Err(_) => polls.errors += 1,
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Waits for every future, in order.
async fn join_all<T>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for future in futures {
        out.push(future.await);
    }
    out
}

async fn run(options: Options) -> Result<(), String> {
    println!(
        "scale-bench: {} agents ({}), {} frameworks, {} tasks of cpus:{};mem:{}, {} in flight; master {}",
        options.agents,
        options.agent_resources,
        options.frameworks,
        options.tasks,
        options.task_cpus,
        options.task_mem,
        match options.max_in_flight {
            0 => "any number".to_string(),
            n => format!("at most {n}"),
        },
        if options.in_process {
            "in this process"
        } else {
            "in its own process"
        }
    );
    let master = MasterUnderTest::start(&options).await?;
    let address = master.address();

    let setup = Instant::now();
    let mut agents = Vec::with_capacity(options.agents);
    for n in 0..options.agents {
        let mut config = SimAgentConfig::new(vec![address.clone()], &options.agent_resources)
            .map_err(|e| e.to_string())?;
        config.hostname = format!("sim-{n:05}");
        config.finish_tasks = true;
        config.backoff_max = Duration::from_secs(1);
        agents.push(SimAgent::start(config).map_err(|e| e.to_string())?);
    }
    tokio::time::timeout(
        SETUP_DEADLINE,
        join_all(agents.iter().map(|a| a.wait_registrations(1))),
    )
    .await
    .map_err(|_| "the agents did not all register".to_string())?;
    println!(
        "{} agents registered in {:.2} s",
        agents.len(),
        setup.elapsed().as_secs_f64()
    );

    let (done_tx, done) = watch::channel(false);
    let shared = Arc::new(Shared {
        budget: AtomicUsize::new(options.tasks),
        in_flight: AtomicUsize::new(0),
        max_in_flight: match options.max_in_flight {
            0 => usize::MAX,
            n => n,
        },
        next_task: AtomicU64::new(0),
        launched: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        failures: Mutex::new(Default::default()),
        accept_errors: AtomicU64::new(0),
        offers: AtomicU64::new(0),
        declined: AtomicU64::new(0),
        first_accept: Mutex::new(None),
        last_running_nanos: AtomicU64::new(0),
        origin: Instant::now(),
        done: done_tx,
        target: options.tasks as u64,
    });
    let master_cpu_before = master.cpu_seconds();
    let harness_cpu_before = cpu_seconds_of("/proc/self/stat");
    let poller = spawn_state_poller(address.clone(), options.state_poll, done.clone());

    let mut frameworks = Vec::new();
    let mut handles = Vec::new();
    for n in 0..options.frameworks {
        let info = pb::FrameworkInfo {
            name: format!("scale-bench-{n}"),
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let driver = SchedulerDriver::new(DriverConfig::new(vec![address.clone()], info, logger))
            .map_err(|e| e.to_string())?;
        handles.push(driver.handle());
        let mut scheduler = BenchScheduler {
            shared: shared.clone(),
            task_cpus: options.task_cpus,
            task_mem: options.task_mem,
            held: VecDeque::new(),
            accepted_at: HashMap::new(),
            accept_to_running: Vec::new(),
            ended: HashSet::new(),
            suppressed: false,
        };
        frameworks.push(tokio::spawn(async move {
            let result = driver.run(&mut scheduler).await;
            (scheduler, result)
        }));
    }

    // Progress, and the deadline.
    let stalled = Arc::new(AtomicBool::new(false));
    {
        let mut done = done.clone();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                _ = done.wait_for(|d| *d) => break,
                _ = tokio::time::sleep_until(deadline) => {
                    stalled.store(true, Ordering::Relaxed);
                    shared.done.send_replace(true);
                    break;
                }
                _ = every.tick() => {
                    println!(
                        "  {:>6.1} s: launched {:>7}, finished {:>7}, failed {}, offers {}",
                        shared.origin.elapsed().as_secs_f64(),
                        shared.launched.load(Ordering::Relaxed),
                        shared.finished.load(Ordering::Relaxed),
                        shared.failed.load(Ordering::Relaxed),
                        shared.offers.load(Ordering::Relaxed),
                    );
                }
            }
        }
    }
    let finished_at = shared.origin.elapsed();
    let master_cpu = master
        .cpu_seconds()
        .zip(master_cpu_before)
        .map(|(after, before)| after - before);
    let harness_cpu = cpu_seconds_of("/proc/self/stat")
        .zip(harness_cpu_before)
        .map(|(after, before)| after - before);
    let peak_rss = master.peak_rss_kb();

    for handle in &handles {
        handle.stop();
    }
    let mut accept_to_running = Vec::new();
    for framework in frameworks {
        if let Ok((scheduler, _)) = framework.await {
            accept_to_running.extend(scheduler.accept_to_running);
        }
    }
    accept_to_running.sort();
    let mut polls = poller.join().unwrap_or_default();
    polls.latencies.sort();

    let duplicates: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().duplicate_launches))
        .sum();
    let master_errors: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().master_errors))
        .sum();

    let first = shared
        .first_accept
        .lock()
        .ok()
        .and_then(|f| *f)
        .unwrap_or_default();
    let last = Duration::from_nanos(shared.last_running_nanos.load(Ordering::Relaxed));
    let launched = shared.launched.load(Ordering::Relaxed);
    let finished = shared.finished.load(Ordering::Relaxed);
    let launch_window = last.saturating_sub(first).max(Duration::from_millis(1));
    let finish_window = finished_at
        .saturating_sub(first)
        .max(Duration::from_millis(1));

    println!();
    if stalled.load(Ordering::Relaxed) {
        println!("DID NOT FINISH within {:?}", options.timeout);
    }
    println!(
        "tasks:           {launched} launched, {finished} finished, {} failed (relaunched), {} ACCEPTs refused",
        shared.failed.load(Ordering::Relaxed),
        shared.accept_errors.load(Ordering::Relaxed)
    );
    if let Ok(failures) = shared.failures.lock() {
        for (why, (count, example)) in failures.iter() {
            println!("  {count} × {why}, e.g. \"{example}\"");
        }
    }
    println!(
        "offers:          {} received, {} declined",
        shared.offers.load(Ordering::Relaxed),
        shared.declined.load(Ordering::Relaxed)
    );
    println!(
        "launch rate:     {:.0} tasks/s ({} RUNNING in {:.2} s, first ACCEPT to last RUNNING)",
        accept_to_running.len() as f64 / launch_window.as_secs_f64(),
        accept_to_running.len(),
        launch_window.as_secs_f64()
    );
    println!(
        "finish rate:     {:.0} tasks/s ({finished} in {:.2} s, first ACCEPT to last FINISHED)",
        finished as f64 / finish_window.as_secs_f64(),
        finish_window.as_secs_f64()
    );
    println!(
        "accept→RUNNING:  p50 {}, p99 {}, max {} ({} samples)",
        ms(percentile(&accept_to_running, 50.0)),
        ms(percentile(&accept_to_running, 99.0)),
        ms(accept_to_running.last().copied().unwrap_or_default()),
        accept_to_running.len()
    );
    println!(
        "GET /api/v1/state: p50 {}, p99 {}, max {} ({} polls, {} failed, largest body {} KiB)",
        ms(percentile(&polls.latencies, 50.0)),
        ms(percentile(&polls.latencies, 99.0)),
        ms(polls.latencies.last().copied().unwrap_or_default()),
        polls.latencies.len(),
        polls.errors,
        polls.largest_body / 1024
    );
    match (peak_rss, options.in_process) {
        (Some(kb), false) => println!("master peak RSS: {:.1} MiB", kb as f64 / 1024.0),
        (Some(kb), true) => println!(
            "peak RSS:        {:.1} MiB (this process: master AND harness)",
            kb as f64 / 1024.0
        ),
        (None, _) => println!("peak RSS:        unknown"),
    }
    if let Some(cpu) = master_cpu {
        println!(
            "master CPU:      {cpu:.1} s ({:.0}% of one core over the run)",
            100.0 * cpu / finished_at.as_secs_f64().max(0.001)
        );
    }
    if let Some(cpu) = harness_cpu {
        if options.in_process {
            println!("process CPU:     {cpu:.1} s (master AND harness)");
        } else {
            println!("harness CPU:     {cpu:.1} s (agents, frameworks, poller)");
        }
    }
    println!("agents:          {duplicates} duplicate launches, {master_errors} master errors");

    for agent in agents {
        agent.stop().await;
    }
    master.stop().await;
    if stalled.load(Ordering::Relaxed) {
        return Err(format!(
            "only {finished} of {} tasks finished within {:?}",
            options.tasks, options.timeout
        ));
    }
    Ok(())
}
