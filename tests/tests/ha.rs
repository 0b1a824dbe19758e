//! Highly available masters, end to end: three `agora master` processes in a raft
//! group, real `agora agent` processes given the list of masters, and a framework on
//! the SDK given the same list. Masters are killed with SIGKILL (no handoff) and
//! started again on their data directories.
//!
//! - `killing_the_leader_keeps_agents_frameworks_and_tasks`: a new leader takes
//!   over; agents re-register, the framework re-subscribes with its id, every task
//!   still runs (the same process, launched once), and the old leader rejoins as a
//!   follower and catches up.
//! - `restarting_every_master_keeps_the_registry_and_the_state_store`: the
//!   registry and the state store survive the whole group going down.
//! - `garbage_from_a_raft_peer_is_refused_and_the_group_keeps_serving` and
//!   `a_master_with_a_corrupt_log_refuses_to_start_and_the_others_keep_serving`:
//!   bad input.
//! - `simulated_agents_follow_the_leader_through_a_failover`: the benchmark's
//!   simulated agents (`SimAgent`) do what real agents do across a failover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use agora_proto as pb;
use agora_sdk::{StateStore, TaskBuilder};
use agora_tests::master_group::{ProcessLog, kill_child};
use agora_tests::{
    GroupFramework, MasterGroup, Seen, SimAgent, SimAgentConfig, SimCounters, TestFramework,
    eventually, http_get, kill_executor_sessions, node_bin, process_alive, within,
};

/// Resources of each agent: room for every task of a test on either agent.
const AGENT_RESOURCES: &str = "cpus:2;mem:2048;disk:1000;ports:[31000-31100]";

/// One `agora agent` process.
struct AgentProcess {
    child: Child,
    /// Its stderr (echoed with AGORA_TEST_LOG).
    log: ProcessLog,
    work_dir: PathBuf,
}

/// Agent processes and their work dirs; on drop the agents are killed, then every
/// executor (and task) they started.
struct Agents {
    agents: Vec<AgentProcess>,
    dir: tempfile::TempDir,
}

impl Agents {
    /// Starts `count` agents given every master of `group`.
    fn start(group: &MasterGroup, count: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let agents = (1..=count)
            .map(|n| {
                let work_dir = dir.path().join(format!("agent-{n}"));
                let mut child = Command::new(node_bin!())
                    .args(["agent", "--master", &group.masters_flag()])
                    .args(["--listen", "127.0.0.1:0", "--resources", AGENT_RESOURCES])
                    .args(["--attributes", &format!("rack:r{n}")])
                    .args(["--status-update-retry-min", "200ms"])
                    .args(["--status-update-retry-max", "2s"])
                    .args(["--log-level", "info"])
                    .arg("--work-dir")
                    .arg(&work_dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("agora agent starts");
                let stderr = child.stderr.take().expect("piped stderr");
                let log = ProcessLog::capture(format!("agent {n}"), stderr);
                AgentProcess {
                    child,
                    log,
                    work_dir,
                }
            })
            .collect();
        Self { agents, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether every agent process still runs (none restarted or crashed).
    fn all_alive(&mut self) -> bool {
        self.agents
            .iter_mut()
            .all(|a| matches!(a.child.try_wait(), Ok(None)))
    }

    /// How many times the task's executor was started on any agent: its sandbox
    /// has one `runs/<container>` directory per start.
    fn executor_runs(&self, task_id: &str) -> usize {
        let mut runs = 0;
        for agent in &self.agents {
            let Ok(frameworks) = std::fs::read_dir(agent.work_dir.join("frameworks")) else {
                continue;
            };
            for framework in frameworks.flatten() {
                let dir = framework
                    .path()
                    .join("executors")
                    .join(task_id)
                    .join("runs");
                if let Ok(entries) = std::fs::read_dir(dir) {
                    runs += entries
                        .flatten()
                        .filter(|e| e.path().is_dir() && e.file_name() != "latest")
                        .count();
                }
            }
        }
        runs
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.log.text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            kill_child(&mut agent.child);
        }
        kill_executor_sessions(self.dir.path());
    }
}

/// Agent id -> status, as the leader reports them.
fn agent_statuses(state: &pb::ClusterState) -> BTreeMap<String, String> {
    state
        .agents
        .iter()
        .filter_map(|a| {
            let id = a.agent_info.as_ref()?.id.as_ref()?.value.clone();
            Some((id, a.status.clone()))
        })
        .collect()
}

/// Task id -> (agent id, state) of `framework_id`'s tasks, as the leader reports them.
fn framework_tasks(
    state: &pb::ClusterState,
    framework_id: &pb::FrameworkId,
) -> BTreeMap<String, (String, i32)> {
    state
        .tasks
        .iter()
        .filter(|t| t.framework_id.as_ref() == Some(framework_id))
        .filter_map(|t| {
            let task_id = t.task_id.as_ref()?.value.clone();
            let agent_id = t.agent_id.as_ref()?.value.clone();
            Some((task_id, (agent_id, t.state)))
        })
        .collect()
}

fn framework_summary<'a>(
    state: &'a pb::ClusterState,
    framework_id: &pb::FrameworkId,
) -> Option<&'a pb::FrameworkSummary> {
    state.frameworks.iter().find(|f| {
        f.framework_info
            .as_ref()
            .and_then(|i| i.id.as_ref())
            .is_some_and(|id| id == framework_id)
    })
}

/// Whether the leader shows every task of `placed` RUNNING on the agent it was
/// placed on.
fn all_running(
    state: &pb::ClusterState,
    framework_id: &pb::FrameworkId,
    placed: &BTreeMap<String, pb::AgentId>,
) -> bool {
    let tasks = framework_tasks(state, framework_id);
    placed.iter().all(|(task_id, agent)| {
        tasks.get(task_id) == Some(&(agent.value.clone(), pb::TaskState::TaskRunning as i32))
    })
}

/// `count` tasks that append their pid to `<pids>/<task id>` and then sleep: a task
/// launched twice leaves two lines.
fn sleepers(prefix: &str, count: usize, pids: &Path) -> Vec<TaskBuilder> {
    (1..=count)
        .map(|n| {
            let task_id = format!("{prefix}-{n}");
            let file = pids.join(&task_id);
            TaskBuilder::new(task_id)
                .shell(format!("echo $$ >> {}; exec sleep 600", file.display()))
                .cpus(0.1)
                .mem(32.0)
        })
        .collect()
}

/// Every pid each task wrote, by task id, once each task has written one.
async fn task_pids(pids: &Path, task_ids: &[String]) -> BTreeMap<String, Vec<i32>> {
    let mut found = BTreeMap::new();
    eventually("every task to write its pid", || {
        found = task_ids
            .iter()
            .map(|id| {
                let pids: Vec<i32> = std::fs::read_to_string(pids.join(id))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect();
                (id.clone(), pids)
            })
            .collect();
        found.values().all(|pids| !pids.is_empty())
    })
    .await;
    found
}

/// The applied index of master `id`, or 0 if it does not answer.
async fn applied_index(group: &MasterGroup, id: u64) -> u64 {
    group
        .group_view(id)
        .await
        .map(|g| g.applied_index)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_keeps_agents_frameworks_and_tasks() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let mut agents = Agents::start(&group, 2);
    let state = group
        .wait_for_state("both agents to register", |s| {
            agent_statuses(s)
                .values()
                .filter(|s| *s == "ACTIVE")
                .count()
                == 2
        })
        .await;
    let agent_ids = agent_statuses(&state);

    let mut framework = GroupFramework::start(
        group.addresses(),
        TestFramework::info("ha-failover", 3600.0),
    )
    .await;
    let framework_id = framework.framework_id.clone();
    let pids_dir = agents.path().join("pids");
    std::fs::create_dir_all(&pids_dir).expect("a pid directory");
    let placed = framework
        .launch_spread(sleepers("sleeper", 6, &pids_dir), 3)
        .await;
    let task_ids: Vec<String> = placed.keys().cloned().collect();
    assert_eq!(
        placed
            .values()
            .map(|agent| agent.value.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "the tasks are spread over both agents: {placed:?}"
    );
    framework
        .wait_for_states(&task_ids, pb::TaskState::TaskRunning)
        .await;
    let pids_before = task_pids(&pids_dir, &task_ids).await;

    let old_leader = group.kill_leader().await;
    let new_leader = group.wait_for_leader().await;
    assert_ne!(new_leader, old_leader, "a surviving master leads");

    // The framework finds the new leader by itself and keeps its id.
    let resubscribed = framework
        .wait_for("the framework to re-subscribe", |seen| match seen {
            Seen::Subscribed(id) => Some(id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(resubscribed, framework_id, "re-subscribed with the same id");

    // Both agents re-registered with the new leader, which learnt every task from
    // them, and the framework is connected to it.
    let state = group
        .wait_for_state(
            "the agents to re-register and re-report every task",
            |state| {
                agent_statuses(state)
                    == agent_ids
                        .keys()
                        .map(|id| (id.clone(), "ACTIVE".to_string()))
                        .collect()
                    && all_running(state, &framework_id, &placed)
                    && framework_summary(state, &framework_id).is_some_and(|f| f.connected)
            },
        )
        .await;
    assert_eq!(
        state.group.as_ref().map(|g| g.leader_id),
        Some(new_leader),
        "the state names the new leader"
    );
    assert!(
        agents.all_alive(),
        "no agent process restarted: {}",
        agents.logs()
    );

    // An explicit reconciliation: the new leader answers RUNNING for every task.
    framework
        .handle
        .reconcile(
            placed
                .iter()
                .map(|(task_id, agent)| {
                    (
                        pb::TaskId {
                            value: task_id.clone(),
                        },
                        Some(agent.clone()),
                    )
                })
                .collect(),
        )
        .await
        .expect("RECONCILE");
    let mut reconciled = BTreeMap::new();
    while reconciled.len() < placed.len() {
        let status = framework
            .wait_for("reconciliation answers", |seen| match seen {
                Seen::Update(s)
                    if s.reason == pb::task_status::Reason::Reconciliation as i32
                        && s.task_id
                            .as_ref()
                            .is_some_and(|t| placed.contains_key(&t.value)) =>
                {
                    Some(s.clone())
                }
                _ => None,
            })
            .await;
        let task_id = status.task_id.clone().unwrap_or_default().value;
        reconciled.insert(task_id, status.state);
    }
    for (task_id, state) in &reconciled {
        assert_eq!(
            *state,
            pb::TaskState::TaskRunning as i32,
            "{task_id} reconciles as RUNNING"
        );
    }

    // No task was launched twice: one executor run and one process each, and the
    // process from before the failover still runs.
    let pids_after = task_pids(&pids_dir, &task_ids).await;
    assert_eq!(pids_after, pids_before, "no task started again");
    for (task_id, pids) in &pids_after {
        assert_eq!(pids.len(), 1, "{task_id} was started once: {pids:?}");
        assert!(
            pids.iter().all(|pid| process_alive(*pid)),
            "{task_id} still runs"
        );
        assert_eq!(
            agents.executor_runs(task_id),
            1,
            "{task_id} has one executor run"
        );
    }

    // Over HTTP: the new leader's /health says it leads; a follower sends
    // /api/v1/state to it.
    let leader_address = group.address(new_leader).to_string();
    let (code, body) = http_get(&leader_address, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).expect("/health is JSON");
    assert_eq!(code, 200, "{body}");
    assert_eq!(health["leading"], serde_json::Value::Bool(true), "{body}");
    let follower = group
        .running()
        .into_iter()
        .find(|id| *id != new_leader)
        .expect("a running follower");
    let (code, body) = http_get(group.address(follower), "/api/v1/state").await;
    assert_eq!(code, 307, "a follower redirects /api/v1/state: {body}");
    assert!(body.contains(&leader_address), "to the leader: {body}");

    // The killed master comes back as a follower and catches up with the log.
    group.restart(old_leader);
    within(
        &format!("master {old_leader} to rejoin as a follower"),
        async {
            loop {
                if let Some(health) = group.health(old_leader).await {
                    let named = health
                        .leader
                        .as_ref()
                        .and_then(|l| l.id.parse::<u64>().ok());
                    if !health.leading && named == Some(new_leader) {
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    assert_eq!(
        group.wait_for_leader().await,
        new_leader,
        "leadership stays"
    );
    let leader_applied = applied_index(&group, new_leader).await;
    assert!(leader_applied > 0, "the leader has applied entries");
    let mut caught_up = 0;
    within("the restarted master to catch up", async {
        loop {
            caught_up = applied_index(&group, old_leader).await;
            if caught_up >= leader_applied {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(caught_up >= leader_applied);

    framework.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_master_keeps_the_registry_and_the_state_store() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let agents = Agents::start(&group, 2);
    group
        .wait_for_state("both agents to register", |s| {
            agent_statuses(s)
                .values()
                .filter(|s| *s == "ACTIVE")
                .count()
                == 2
        })
        .await;
    let mut framework =
        GroupFramework::start(group.addresses(), TestFramework::info("ha-restart", 3600.0)).await;
    let framework_id = framework.framework_id.clone();
    let pids_dir = agents.path().join("pids");
    std::fs::create_dir_all(&pids_dir).expect("a pid directory");
    let placed = framework
        .launch_spread(sleepers("keeper", 2, &pids_dir), 1)
        .await;
    let task_ids: Vec<String> = placed.keys().cloned().collect();
    framework
        .wait_for_states(&task_ids, pb::TaskState::TaskRunning)
        .await;
    let pids_before = task_pids(&pids_dir, &task_ids).await;
    let before = group
        .wait_for_state("the tasks to show as running", |state| {
            all_running(state, &framework_id, &placed)
        })
        .await;

    let store = StateStore::connect(group.addresses(), "ha-restart").expect("a store client");
    let written = store
        .put("config", b"kept across restarts".to_vec())
        .await
        .expect("a state-store write");

    let killed_at = agora_core::time::now_secs();
    group.kill_all();
    group.restart_all();
    group.wait_for_leader().await;

    // Everyone comes back with the ids they had.
    let resubscribed = framework
        .wait_for("the framework to re-subscribe", |seen| match seen {
            Seen::Subscribed(id) => Some(id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(resubscribed, framework_id);
    let after = group
        .wait_for_state("the agents and the framework to come back", |state| {
            agent_statuses(state)
                == agent_statuses(&before)
                    .into_keys()
                    .map(|id| (id, "ACTIVE".to_string()))
                    .collect()
                && all_running(state, &framework_id, &placed)
                && framework_summary(state, &framework_id).is_some_and(|f| f.connected)
        })
        .await;
    // They were not merely re-admitted: the masters read them from the registry,
    // which keeps when each first registered, before the masters went down. (The
    // view shows the leader's clock at admission before a restart and the
    // registry's record after it; they differ by the proposal's latency.)
    let registered_times = |state: &pb::ClusterState| -> BTreeMap<String, f64> {
        let mut times: BTreeMap<String, f64> = state
            .agents
            .iter()
            .filter_map(|a| {
                let id = a.agent_info.as_ref()?.id.as_ref()?.value.clone();
                Some((id, a.registered_time))
            })
            .collect();
        if let Some(framework) = framework_summary(state, &framework_id) {
            times.insert("framework".into(), framework.registered_time);
        }
        times
    };
    let (times_before, times_after) = (registered_times(&before), registered_times(&after));
    assert_eq!(
        times_after.keys().collect::<Vec<_>>(),
        times_before.keys().collect::<Vec<_>>()
    );
    for (who, time) in &times_after {
        let earlier = times_before.get(who).copied().unwrap_or_default();
        assert!(
            *time < killed_at && (time - earlier).abs() < 1.0,
            "{who} registered at {time}, from the registry (first seen at {earlier}; \
             the masters were killed at {killed_at})"
        );
    }
    assert_eq!(
        task_pids(&pids_dir, &task_ids).await,
        pids_before,
        "no task started again"
    );

    let read = store
        .get("config")
        .await
        .expect("a state-store read")
        .expect("the key survived");
    assert_eq!(read, written, "same value and version");

    framework.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_raft_peer_is_refused_and_the_group_keeps_serving() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let leader = group.wait_for_leader().await;
    let follower = group
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    for (target, sender) in [(leader, follower), (follower, leader)] {
        let mut peer = pb::raft_peer_client::RaftPeerClient::connect(format!(
            "http://{}",
            group.address(target)
        ))
        .await
        .expect("the raft peer service answers");
        let garbage = peer
            .deliver(pb::RaftBatch {
                from: sender,
                to: target,
                messages: vec![b"garbage".to_vec()],
            })
            .await
            .expect_err("garbage is refused");
        assert_eq!(
            garbage.code(),
            tonic::Code::InvalidArgument,
            "master {target}: {garbage:?}"
        );
        let misdirected = peer
            .deliver(pb::RaftBatch {
                from: sender,
                to: target + 100,
                messages: vec![],
            })
            .await
            .expect_err("a batch for another id is refused");
        assert_eq!(
            misdirected.code(),
            tonic::Code::InvalidArgument,
            "master {target}: {misdirected:?}"
        );
    }

    let store = StateStore::connect(group.addresses(), "ha-garbage").expect("a store client");
    let entry = store
        .put("after-garbage", b"still serving".to_vec())
        .await
        .expect("the group still takes writes");
    assert!(entry.version > 0);
    assert_eq!(group.running().len(), 3, "no master crashed");
}

/// The raft log segments under a master's data directory, largest first.
fn log_segments(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<(u64, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && name.starts_with("log-")
                && name.ends_with(".seg")
            {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                found.push((size, path));
            }
        }
    }
    let mut found = Vec::new();
    walk(&data_dir.join("raft"), &mut found);
    found.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    found.into_iter().map(|(_, path)| path).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_a_corrupt_log_refuses_to_start_and_the_others_keep_serving() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let store = StateStore::connect(group.addresses(), "ha-corrupt").expect("a store client");
    for n in 0..64 {
        store
            .put(&format!("key-{n}"), vec![b'x'; 512])
            .await
            .expect("a state-store write");
    }
    let leader = group.wait_for_leader().await;
    let victim = group
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let leader_applied = applied_index(&group, leader).await;
    within("the follower to apply the writes", async {
        while applied_index(&group, victim).await < leader_applied {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    group.kill(victim);

    let segments = log_segments(group.data_dir(victim));
    let segment = segments.first().unwrap_or_else(|| {
        panic!(
            "no log-*.seg file under {}",
            group.data_dir(victim).join("raft").display()
        )
    });
    let mut bytes = std::fs::read(segment).expect("the segment is readable");
    assert!(bytes.len() > 64, "the segment holds entries");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle - 8..middle + 8] {
        *byte ^= 0xA5;
    }
    std::fs::write(segment, &bytes).expect("the segment is writable");

    group.restart(victim);
    let (status, stderr) = group.wait_exit(victim).await;
    assert!(!status.success(), "the master refuses to start: {status}");
    let file_name = segment
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    assert!(
        stderr.contains(file_name) && stderr.to_lowercase().contains("corrupt"),
        "stderr names the file and says corrupt: {stderr}"
    );

    // The other two keep serving.
    assert_eq!(group.running().len(), 2);
    let entry = store
        .put("after-corruption", b"still serving".to_vec())
        .await
        .expect("the other masters take writes");
    assert!(entry.version > leader_applied);
    let read = store
        .get("key-63")
        .await
        .expect("a read")
        .expect("earlier writes are there");
    assert_eq!(read.value, vec![b'x'; 512]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_follow_the_leader_through_a_failover() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let agents: Vec<SimAgent> = (0..20)
        .map(|n| {
            let mut config =
                SimAgentConfig::new(group.addresses(), "cpus:1;mem:1024").expect("a config");
            config.hostname = format!("sim-{n}");
            SimAgent::start(config).expect("a simulated agent")
        })
        .collect();
    for agent in &agents {
        within("a simulated agent to register", agent.wait_registrations(1)).await;
    }
    let mut framework =
        GroupFramework::start(group.addresses(), TestFramework::info("ha-sim", 3600.0)).await;
    let tasks: Vec<TaskBuilder> = (1..=40)
        .map(|n| {
            TaskBuilder::new(format!("sim-task-{n}"))
                .shell("sleep 600")
                .cpus(0.1)
                .mem(16.0)
        })
        .collect();
    let placed = framework.launch_spread(tasks, 2).await;
    let task_ids: Vec<String> = placed.keys().cloned().collect();
    framework
        .wait_for_states(&task_ids, pb::TaskState::TaskRunning)
        .await;
    let ids_before: Vec<Option<String>> = agents.iter().map(SimAgent::agent_id).collect();

    let old_leader = group.kill_leader().await;
    let new_leader = group.wait_for_leader().await;
    for agent in &agents {
        let status = within(
            "a simulated agent to re-register",
            agent.wait_registrations(2),
        )
        .await;
        assert_eq!(status.reregistrations, 1, "{status:?}");
        assert_eq!(
            status.master.as_deref(),
            Some(group.address(new_leader)),
            "attached to the new leader, not master {old_leader}"
        );
    }
    let ids_after: Vec<Option<String>> = agents.iter().map(SimAgent::agent_id).collect();
    assert_eq!(ids_after, ids_before, "every agent kept its id");
    let framework_id = framework.framework_id.clone();
    group
        .wait_for_state("every task to be re-reported", |state| {
            all_running(state, &framework_id, &placed)
        })
        .await;
    let held: usize = agents.iter().map(|a| a.tasks().len()).sum();
    assert_eq!(held, placed.len());
    for agent in &agents {
        assert_eq!(
            SimCounters::get(&agent.counters().duplicate_launches),
            0,
            "no task launched twice"
        );
    }
    framework.stop().await;
    for agent in agents {
        agent.stop().await;
    }
}
