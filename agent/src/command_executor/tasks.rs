//! The executor's tasks: what it knows of each (its TaskInfo, its process, a kill in
//! progress, its health checker) and waiting for any of their processes at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::Poll;

use agora_proto as pb;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::task_process::TaskProcess;

/// How often SIGKILL is sent again to a task that outlived it: a container's kill
/// goes through the runtime, which can fail, and a task must not hang in KILLING.
pub(super) const KILL_REPEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Aborts a spawned task when dropped (a health checker dies with its task entry).
pub(super) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One task of the executor, from its launch on (kept after it ended so that its
/// id is not launched again and its end is known).
pub(super) struct LaunchedTask {
    /// As launched.
    pub info: pb::TaskInfo,
    /// The launch it came with: the tasks of one LAUNCH_GROUP share it (a LAUNCH is
    /// a group of one). They live and die together.
    pub group: u32,
    /// Its process while it runs; `None` before it started and after it ended.
    pub process: Option<TaskProcess>,
    /// A kill is in progress (SIGTERM sent).
    pub killing: bool,
    /// When SIGKILL follows the SIGTERM of a kill (and then repeats, every
    /// [`KILL_REPEAT_INTERVAL`], until the process is gone); `None` unless `killing`.
    pub escalate_at: Option<Instant>,
    /// Its terminal update was produced; nothing follows it.
    pub terminal_sent: bool,
    /// Its running health checker; `None` without a check and once it is killed.
    pub health: Option<AbortOnDrop>,
    /// The health last reported in an update; `None` before the first report.
    pub healthy: Option<bool>,
    /// Set when the health checker asked for the kill: the last check's finding,
    /// for the terminal update (which then carries healthy=false).
    pub killed_by_health: Option<String>,
    /// Why the executor killed it on its own (another task of its group ended), for
    /// the terminal update's message; `None` for kills the agent asked for.
    pub kill_cause: Option<String>,
}

impl LaunchedTask {
    pub(super) fn new(info: pb::TaskInfo, group: u32) -> Self {
        Self {
            info,
            group,
            process: None,
            killing: false,
            escalate_at: None,
            terminal_sent: false,
            health: None,
            healthy: None,
            killed_by_health: None,
            kill_cause: None,
        }
    }
}

/// The executor's tasks by id.
#[derive(Default)]
pub(super) struct TaskSet {
    /// Every task launched on this executor. Invariant: keyed by its task id.
    tasks: BTreeMap<String, LaunchedTask>,
}

impl TaskSet {
    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub(super) fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    pub(super) fn insert(&mut self, task_id: String, task: LaunchedTask) {
        self.tasks.insert(task_id, task);
    }

    pub(super) fn get(&self, task_id: &str) -> Option<&LaunchedTask> {
        self.tasks.get(task_id)
    }

    pub(super) fn get_mut(&mut self, task_id: &str) -> Option<&mut LaunchedTask> {
        self.tasks.get_mut(task_id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &LaunchedTask)> {
        self.tasks.iter()
    }

    /// Ids of the tasks of `group` with no terminal update yet.
    pub(super) fn live_in_group(&self, group: u32) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.group == group && !t.terminal_sent)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of the tasks with no terminal update yet.
    pub(super) fn live(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.terminal_sent)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every task has had its terminal update produced.
    pub(super) fn all_terminal(&self) -> bool {
        self.tasks.values().all(|t| t.terminal_sent)
    }

    /// The earliest pending SIGKILL escalation.
    pub(super) fn next_escalation(&self) -> Option<Instant> {
        self.tasks.values().filter_map(|t| t.escalate_at).min()
    }

    /// Signals every running task's process group.
    pub(super) fn signal_all(&self, signal: i32) {
        for process in self.tasks.values().filter_map(|t| t.process.as_ref()) {
            process.signal(signal);
        }
    }

    /// Sends SIGKILL to the tasks whose kill grace is over, and again to those that
    /// outlived the last one; returns their ids.
    pub(super) fn escalate_due(&mut self, now: Instant) -> Vec<String> {
        let mut escalated = Vec::new();
        for (id, task) in &mut self.tasks {
            if task.escalate_at.is_some_and(|at| at <= now) {
                task.escalate_at = None;
                if let Some(process) = &task.process {
                    process.signal(libc::SIGKILL);
                    task.escalate_at = Some(now + KILL_REPEAT_INTERVAL);
                }
                escalated.push(id.clone());
            }
        }
        escalated
    }

    /// The first task process to end, with its id; never without any. Cancel-safe:
    /// waiting on a child can be dropped and resumed.
    pub(super) async fn wait_any(&mut self) -> (String, io::Result<ExitStatus>) {
        type Wait<'a> = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + 'a>>;
        let mut waits: Vec<(&String, Wait<'_>)> = self
            .tasks
            .iter_mut()
            .filter_map(|(id, task)| {
                let process = task.process.as_mut()?;
                Some((id, Box::pin(process.wait()) as Wait<'_>))
            })
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for (id, wait) in waits.iter_mut() {
                if let Poll::Ready(status) = wait.as_mut().poll(cx) {
                    return Poll::Ready(((*id).clone(), status));
                }
            }
            Poll::Pending
        })
        .await
    }
}
