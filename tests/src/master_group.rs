//! A raft group of real `agora master` processes on 127.0.0.1, for tests that kill
//! masters with SIGKILL and start them again on the same data directory, and a
//! framework ([`GroupFramework`]) that is given every master of such a group.
//!
//! # How a group starts
//! Every master must know its peers' addresses before any of them runs, so the
//! ports are chosen up front: each is bound on 127.0.0.1:0 and released. Another
//! process could take one in between; then that master fails to listen, and the
//! whole start is retried once with new ports (the only tolerated race).
//!
//! # Waiting
//! Nothing here sleeps to synchronise: [`MasterGroup::wait_for_leader`] polls the
//! masters' `GetHealth` until exactly one leads and every running master names it,
//! with the harness' deadline ([`crate::WAIT`]) so a broken group fails the test
//! with a message instead of hanging it.
//!
//! # Logs
//! Each master's stderr is kept in memory (the most recent lines; see
//! [`MasterGroup::stderr`]) so a test can check what a master said before it
//! exited, and echoed to the test's stderr when `AGORA_TEST_LOG` is set.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto as pb;
use agora_sdk::{DriverConfig, SchedulerHandle};
use tokio::sync::mpsc;

use crate::{Seen, WAIT, logger, spawn_channel_driver, wait_for_seen, within};

/// Lines of a process' stderr kept in memory; older lines are dropped.
const KEPT_LOG_LINES: usize = 20_000;
/// How long one health probe of one master may take; a master that does not answer
/// within it counts as not serving (it may be dead, or still starting).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of probes while waiting for the group to settle.
const POLL: Duration = Duration::from_millis(50);

/// The stderr of a child process, read by a thread into memory.
#[derive(Clone)]
pub struct ProcessLog {
    /// Who wrote it, as printed before each echoed line ("master 2").
    name: String,
    /// The most recent lines (at most [`KEPT_LOG_LINES`]) and whether the stream
    /// ended (the process and every holder of its stderr are gone).
    lines: Arc<Mutex<(VecDeque<String>, bool)>>,
}

impl ProcessLog {
    /// Starts a thread that reads `stderr` until it ends.
    pub fn capture(name: String, stderr: impl std::io::Read + Send + 'static) -> Self {
        let log = ProcessLog {
            name,
            lines: Arc::new(Mutex::new((VecDeque::new(), false))),
        };
        let writer = log.clone();
        let echo = std::env::var_os("AGORA_TEST_LOG").is_some();
        std::thread::spawn(move || {
            let reader = std::io::BufReader::new(stderr);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("[{}] {line}", writer.name);
                }
                if let Ok(mut guard) = writer.lines.lock() {
                    if guard.0.len() == KEPT_LOG_LINES {
                        guard.0.pop_front();
                    }
                    guard.0.push_back(line);
                }
            }
            if let Ok(mut guard) = writer.lines.lock() {
                guard.1 = true;
            }
        });
        log
    }

    /// Everything kept so far, one line per line.
    pub fn text(&self) -> String {
        match self.lines.lock() {
            Ok(guard) => guard.0.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Whether the stream ended.
    pub fn ended(&self) -> bool {
        self.lines.lock().map(|guard| guard.1).unwrap_or(true)
    }
}

/// Picks a port that was free a moment ago: bound on 127.0.0.1:0 and released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// SIGKILLs a child and reaps it.
pub fn kill_child(child: &mut Child) {
    // SAFETY: kill(2) on a process this harness started and has not reaped yet (so
    // the pid cannot have been reused).
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// How to start a [`MasterGroup`].
pub struct MasterGroupBuilder {
    /// The `agora` binary (see [`crate::node_bin!`]).
    binary: PathBuf,
    /// Number of masters (raft ids 1..=size).
    size: u64,
    /// Flags every master gets after the group flags (timings).
    args: Vec<String>,
    /// Environment every master gets on top of this process' own.
    env: Vec<(String, String)>,
    log_level: String,
}

impl MasterGroupBuilder {
    /// Three masters with short timings: agents are pinged every 200 ms, have 30 s
    /// to come back after a failover, and frameworks get a heartbeat every second.
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            size: 3,
            args: [
                "--agent-ping-interval",
                "200ms",
                "--agent-reregister-timeout",
                "30s",
                "--heartbeat-interval",
                "1s",
            ]
            .map(String::from)
            .to_vec(),
            env: Vec::new(),
            log_level: "info".into(),
        }
    }

    pub fn size(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    /// Replaces the timing flags given to every master.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Sets an environment variable for every master.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// Starts every master and waits until one leads. A master that cannot listen
    /// on its port (taken since it was picked) makes the whole start be retried once.
    pub async fn start(self) -> MasterGroup {
        let mut group = self.spawn_all();
        if let Err(e) = group.wait_until_listening().await {
            eprintln!("master group: {e}; retrying with new ports");
            drop(group);
            group = self.spawn_all();
            if let Err(e) = group.wait_until_listening().await {
                panic!("the master group did not start twice: {e}");
            }
        }
        group.wait_for_leader().await;
        group
    }

    fn spawn_all(&self) -> MasterGroup {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let members: BTreeMap<u64, Member> = (1..=self.size)
            .map(|id| {
                let member = Member {
                    address: format!("127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join("masters").join(format!("master-{id}")),
                    process: None,
                    log: None,
                    starts: 0,
                };
                (id, member)
            })
            .collect();
        let mut group = MasterGroup {
            dir,
            binary: self.binary.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            log_level: self.log_level.clone(),
            members,
        };
        for id in group.ids() {
            group.start_member(id);
        }
        group
    }
}

/// One master of a [`MasterGroup`].
struct Member {
    /// "127.0.0.1:port"; the same across restarts.
    address: String,
    /// Its `--data-dir`; kept across restarts.
    data_dir: PathBuf,
    /// The running process; `None` once killed (it has been reaped).
    process: Option<Child>,
    /// The latest run's stderr.
    log: Option<ProcessLog>,
    /// How many times it was started.
    starts: u32,
}

/// Real `agora master` processes forming one raft group; every process is killed
/// when the group is dropped.
pub struct MasterGroup {
    /// Holds every master's data directory.
    dir: tempfile::TempDir,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_level: String,
    /// Raft id -> master. Ids are 1..=size and never change.
    members: BTreeMap<u64, Member>,
}

impl MasterGroup {
    /// Three masters with [`MasterGroupBuilder::new`]'s flags.
    pub async fn start(binary: PathBuf) -> Self {
        MasterGroupBuilder::new(binary).start().await
    }

    /// Every raft id, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// Every master's address, by ascending id.
    pub fn addresses(&self) -> Vec<String> {
        self.members.values().map(|m| m.address.clone()).collect()
    }

    /// The addresses as `agora agent --master` takes them: comma-separated.
    pub fn masters_flag(&self) -> String {
        self.addresses().join(",")
    }

    /// The `--peers` flag every master gets: `1=host:port,2=host:port,...`.
    pub fn peers_flag(&self) -> String {
        self.members
            .iter()
            .map(|(id, m)| format!("{id}={}", m.address))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn address(&self, id: u64) -> &str {
        &self.member(id).address
    }

    /// The id of the master at `address`.
    pub fn id_of(&self, address: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.address == address)
            .map(|(id, _)| *id)
    }

    /// The master's `--data-dir` (its raft files are under `raft/`).
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.member(id).data_dir
    }

    /// The temporary directory holding every data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the master's process was started and not killed (it may have exited
    /// by itself: see [`MasterGroup::exit_status`]).
    pub fn is_started(&self, id: u64) -> bool {
        self.member(id).process.is_some()
    }

    /// The ids of the masters whose process runs.
    pub fn running(&mut self) -> Vec<u64> {
        let ids = self.ids();
        ids.into_iter()
            .filter(|id| self.exit_status(*id).is_none() && self.is_started(*id))
            .collect()
    }

    pub fn pid(&self, id: u64) -> Option<i32> {
        self.member(id).process.as_ref().map(|c| c.id() as i32)
    }

    /// The latest run's stderr, as far as it was read.
    pub fn stderr(&self, id: u64) -> String {
        self.member(id)
            .log
            .as_ref()
            .map(ProcessLog::text)
            .unwrap_or_default()
    }

    /// The exit status if the master's process has exited by itself.
    pub fn exit_status(&mut self, id: u64) -> Option<ExitStatus> {
        self.member_mut(id)
            .process
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Waits until the master's process exits by itself; returns its status and the
    /// whole of its stderr.
    pub async fn wait_exit(&mut self, id: u64) -> (ExitStatus, String) {
        let mut status = None;
        crate::eventually(&format!("master {id} to exit"), || {
            status = status.or_else(|| self.exit_status(id));
            status.is_some() && self.member(id).log.as_ref().is_none_or(ProcessLog::ended)
        })
        .await;
        let status = status.expect("an exit status once the process exited");
        (status, self.stderr(id))
    }

    /// SIGKILLs master `id` (no clean shutdown, no handoff) and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.member_mut(id).process.take() {
            kill_child(&mut child);
        }
    }

    /// SIGKILLs every master.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Finds the leader and SIGKILLs it; returns its id.
    pub async fn kill_leader(&mut self) -> u64 {
        let leader = self.wait_for_leader().await;
        self.kill(leader);
        leader
    }

    /// Starts master `id` again on its data directory and address (it must have
    /// been killed or have exited). Does not wait for anything.
    pub fn restart(&mut self, id: u64) {
        if self.exit_status(id).is_some() {
            self.member_mut(id).process = None;
        }
        assert!(
            self.member(id).process.is_none(),
            "master {id} still runs; kill it before restarting it"
        );
        self.start_member(id);
    }

    /// Starts every master that does not run.
    pub fn restart_all(&mut self) {
        for id in self.ids() {
            if !self.is_started(id) || self.exit_status(id).is_some() {
                self.member_mut(id).process = None;
                self.start_member(id);
            }
        }
    }

    fn start_member(&mut self, id: u64) {
        let peers = self.peers_flag();
        let (binary, args, env, log_level) = (
            self.binary.clone(),
            self.args.clone(),
            self.env.clone(),
            self.log_level.clone(),
        );
        let member = self.member_mut(id);
        member.starts += 1;
        let mut command = Command::new(&binary);
        command
            .arg("master")
            .args(["--id", &id.to_string()])
            .args(["--peers", &peers])
            .args(["--listen", &member.address])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--log-level", &log_level])
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let name = format!("master {id}#{}", member.starts);
        member.log = child
            .stderr
            .take()
            .map(|stderr| ProcessLog::capture(name, stderr));
        member.process = Some(child);
    }

    /// Waits until every started master answers health probes. Fails (without
    /// panicking) when a master exited because its port was taken.
    async fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut waiting = Vec::new();
            for id in self.ids() {
                if let Some(status) = self.exit_status(id) {
                    let stderr = self.stderr(id);
                    let port_taken = stderr.contains("in use") || stderr.contains("cannot listen");
                    let message = format!("master {id} exited ({status}) while starting: {stderr}");
                    if port_taken {
                        return Err(message);
                    }
                    panic!("{message}");
                }
                if self.health(id).await.is_none() {
                    waiting.push(id);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                panic!("masters {waiting:?} never answered a health probe");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The operator API of master `id`.
    pub async fn operator(
        &self,
        id: u64,
    ) -> Result<pb::operator_client::OperatorClient<tonic::transport::Channel>, String> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.address(id)))
                .map_err(|e| e.to_string())?
                .connect_timeout(PROBE_TIMEOUT)
                .timeout(PROBE_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        Ok(pb::operator_client::OperatorClient::new(channel)
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES))
    }

    /// Master `id`'s health, or `None` when it does not answer.
    pub async fn health(&self, id: u64) -> Option<pb::Health> {
        let mut client = self.operator(id).await.ok()?;
        client
            .get_health(pb::GetHealthRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// The group as master `id` sees it, or `None` when it does not answer.
    pub async fn group_view(&self, id: u64) -> Option<pb::MasterGroup> {
        let mut client = self.operator(id).await.ok()?;
        client
            .get_master_group(pb::GetMasterGroupRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Waits until exactly one running master leads (serves) and every running master
    /// names it as the leader; returns its id.
    pub async fn wait_for_leader(&mut self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let running = self.running();
            let mut leaders = Vec::new();
            let mut named = BTreeMap::new();
            for &id in &running {
                let Some(health) = self.health(id).await else {
                    named.insert(id, None);
                    continue;
                };
                if health.leading {
                    leaders.push(id);
                }
                let leader = health.leader.and_then(|l| l.id.parse::<u64>().ok());
                named.insert(id, leader);
            }
            if let [leader] = leaders[..]
                && named.values().all(|named| *named == Some(leader))
            {
                return leader;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no single leader among the masters: running {running:?}, \
                     leading {leaders:?}, leader named by each {named:?}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The leader's address (waiting for one).
    pub async fn leader_address(&mut self) -> String {
        let leader = self.wait_for_leader().await;
        self.address(leader).to_string()
    }

    /// The cluster state as the leader publishes it.
    pub async fn leader_state(&mut self) -> pb::ClusterState {
        let leader = self.wait_for_leader().await;
        let mut client = self
            .operator(leader)
            .await
            .unwrap_or_else(|e| panic!("the leader's operator API: {e}"));
        client
            .get_state(pb::GetStateRequest {})
            .await
            .unwrap_or_else(|e| panic!("GetState on the leader: {e}"))
            .into_inner()
    }

    /// Waits until the leader's published state satisfies `condition`; returns it.
    pub async fn wait_for_state(
        &mut self,
        what: &str,
        mut condition: impl FnMut(&pb::ClusterState) -> bool,
    ) -> pb::ClusterState {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = self.leader_state().await;
            if condition(&state) {
                return state;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; the leader's state: {state:#?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn member(&self, id: u64) -> &Member {
        self.members
            .get(&id)
            .unwrap_or_else(|| panic!("no master with id {id}"))
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no master with id {id}"))
    }
}

impl Drop for MasterGroup {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A framework on the SDK that is given every master of a group (it finds the
/// leader, follows hints, and re-subscribes with its id after a failover) and whose
/// events the caller takes one by one.
pub struct GroupFramework {
    pub handle: SchedulerHandle,
    /// The id of the first subscription.
    pub framework_id: pb::FrameworkId,
    events: mpsc::UnboundedReceiver<Seen>,
    /// Events set aside by [`GroupFramework::wait_for`], oldest first.
    backlog: VecDeque<Seen>,
    driver: tokio::task::JoinHandle<Result<(), agora_sdk::DriverError>>,
}

impl GroupFramework {
    /// Subscribes through `masters` and waits for SUBSCRIBED.
    pub async fn start(masters: Vec<String>, info: pb::FrameworkInfo) -> Self {
        let mut config = DriverConfig::new(masters, info, logger());
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(20);
        let (handle, mut events, driver) = spawn_channel_driver(config);
        let mut backlog = VecDeque::new();
        let framework_id = within("SUBSCRIBED", async {
            loop {
                match events.recv().await {
                    Some(Seen::Subscribed(id)) => break id,
                    Some(other) => backlog.push_back(other),
                    None => panic!("the driver stopped before SUBSCRIBED"),
                }
            }
        })
        .await;
        Self {
            handle,
            framework_id,
            events,
            backlog,
            driver,
        }
    }

    /// The next event, whatever it is (set-aside events first).
    pub async fn next_event(&mut self) -> Seen {
        if let Some(seen) = self.backlog.pop_front() {
            return seen;
        }
        within("a framework event", self.events.recv())
            .await
            .unwrap_or_else(|| panic!("the driver stopped"))
    }

    /// The next event if one is there already (set-aside events first).
    pub fn try_next_event(&mut self) -> Option<Seen> {
        self.backlog
            .pop_front()
            .or_else(|| self.events.try_recv().ok())
    }

    /// The next event that `pick` maps to `Some`; the others are set aside for
    /// later waits, in order.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl FnMut(&Seen) -> Option<T>) -> T {
        wait_for_seen(&mut self.events, &mut self.backlog, what, pick).await
    }

    /// Drops every set-aside event.
    pub fn clear_backlog(&mut self) {
        self.backlog.clear();
        while self.events.try_recv().is_ok() {}
    }

    /// Launches `tasks` on the offers that come, at most `per_agent` of them on any
    /// one agent; returns task id -> the agent it was placed on. Offers it does not
    /// use are declined for 0 s so that they come back while tasks remain.
    pub async fn launch_spread(
        &mut self,
        tasks: Vec<agora_sdk::TaskBuilder>,
        per_agent: usize,
    ) -> BTreeMap<String, pb::AgentId> {
        let mut remaining: VecDeque<agora_sdk::TaskBuilder> = tasks.into();
        let mut placed: BTreeMap<String, pb::AgentId> = BTreeMap::new();
        while !remaining.is_empty() {
            let offers = self
                .wait_for("offers", |seen| match seen {
                    Seen::Offers(offers) => Some(offers.clone()),
                    _ => None,
                })
                .await;
            for offer in offers {
                let offer_id = offer.id.clone().unwrap_or_default();
                let agent = offer.agent_id.clone().unwrap_or_default();
                let mut room = agora_sdk::OfferResources::new(&offer).ok();
                let mut launch = Vec::new();
                while let (Some(task), Some(room)) = (remaining.front(), room.as_mut()) {
                    let on_agent = placed.values().filter(|a| **a == agent).count();
                    if on_agent + launch.len() >= per_agent {
                        break;
                    }
                    match room.take(task) {
                        Ok(info) => {
                            launch.push(info);
                            remaining.pop_front();
                        }
                        Err(_) => break,
                    }
                }
                if launch.is_empty() {
                    let _ = self
                        .handle
                        .decline(vec![offer_id], Some(crate::refuse(0.0)))
                        .await;
                    continue;
                }
                for task in &launch {
                    let task_id = task.task_id.clone().unwrap_or_default().value;
                    placed.insert(task_id, agent.clone());
                }
                self.handle
                    .accept(
                        vec![offer_id],
                        vec![crate::launch(launch)],
                        Some(crate::refuse(0.0)),
                    )
                    .await
                    .expect("ACCEPT");
            }
        }
        placed
    }

    /// Waits for an update putting each of `task_ids` in `state`; returns them by id.
    pub async fn wait_for_states(
        &mut self,
        task_ids: &[String],
        state: pb::TaskState,
    ) -> BTreeMap<String, pb::TaskStatus> {
        let mut seen = BTreeMap::new();
        while seen.len() < task_ids.len() {
            let what = format!(
                "{} tasks to reach {}",
                task_ids.len() - seen.len(),
                state.as_str_name()
            );
            let status = self
                .wait_for(&what, |event| match event {
                    Seen::Update(s)
                        if s.state == state as i32
                            && s.task_id.as_ref().is_some_and(|t| {
                                task_ids.contains(&t.value) && !seen.contains_key(&t.value)
                            }) =>
                    {
                        Some(s.clone())
                    }
                    _ => None,
                })
                .await;
            let id = status.task_id.clone().unwrap_or_default().value;
            seen.insert(id, status);
        }
        seen
    }

    /// Stops the driver (the framework stays registered for its failover timeout).
    pub async fn stop(self) {
        self.handle.stop();
        let _ = self.driver.await;
    }
}
