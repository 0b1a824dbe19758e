//! `agora logs <task-id> [--stderr] [--follow]`: a task's stdout (or stderr), read
//! from its agent's `/api/v1/logs`. The master says which agent runs the task and
//! where that agent listens; the agent serves the sandbox's output as one stream
//! whose offsets survive rotation, so `--follow` keeps its place when files rotate
//! (bytes rotated away before they were read are reported, not silently skipped).

use std::io::Write;
use std::time::Duration;

use agora_proto as pb;
use anyhow::Context;
use clap::Args;

use crate::agent_client::{AgentClient, encode};
use crate::operator_client::fetch_state;

/// How often `--follow` asks for new bytes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Response headers of the agent's logs endpoint.
const OFFSET_HEADER: &str = "x-agora-log-offset";
const NEXT_OFFSET_HEADER: &str = "x-agora-log-next-offset";
const END_HEADER: &str = "x-agora-log-end";

#[derive(Args)]
pub struct LogsArgs {
    /// The task whose output to print.
    pub task_id: String,
    /// Print its stderr instead of its stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing what the task writes until it ends (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// The task's framework, when several frameworks have a task of that id.
    #[arg(long)]
    pub framework: Option<String>,
    /// Master address(es), comma-separated host:port.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
}

/// Where a task's output is.
struct TaskLocation {
    framework_id: String,
    executor_id: Option<String>,
    /// `host:port` of the agent's API.
    agent_endpoint: String,
    /// The task has ended: its output is complete.
    terminal: bool,
}

fn find_task(state: &pb::ClusterState, args: &LogsArgs) -> anyhow::Result<TaskLocation> {
    let matches: Vec<&pb::TaskSummary> = state
        .tasks
        .iter()
        .chain(&state.completed_tasks)
        .filter(|t| t.task_id.as_ref().is_some_and(|i| i.value == args.task_id))
        .filter(|t| {
            args.framework
                .as_ref()
                .is_none_or(|f| t.framework_id.as_ref().is_some_and(|i| &i.value == f))
        })
        .collect();
    let task = match matches.as_slice() {
        [] => anyhow::bail!("the master knows no task '{}'", args.task_id),
        [task] => *task,
        [first, ..] => {
            let frameworks: Vec<String> = matches
                .iter()
                .filter_map(|t| t.framework_id.as_ref().map(|f| f.value.clone()))
                .collect();
            // The same task seen as active and completed is one task.
            if frameworks.iter().all(|f| Some(f) == frameworks.first()) {
                first
            } else {
                anyhow::bail!(
                    "several frameworks have a task '{}' ({}); name one with --framework",
                    args.task_id,
                    frameworks.join(", ")
                );
            }
        }
    };
    let agent_id = task
        .agent_id
        .as_ref()
        .map(|a| a.value.clone())
        .filter(|a| !a.is_empty())
        .with_context(|| format!("task '{}' was never placed on an agent", args.task_id))?;
    let agent = state
        .agents
        .iter()
        .filter_map(|a| a.agent_info.as_ref())
        .find(|info| info.id.as_ref().is_some_and(|i| i.value == agent_id))
        .with_context(|| format!("the master no longer knows agent {agent_id}"))?;
    anyhow::ensure!(
        !agent.endpoint.is_empty(),
        "agent {agent_id} reported no address to reach it at"
    );
    let executor_id = task
        .latest_status
        .as_ref()
        .and_then(|s| s.executor_id.as_ref())
        .map(|e| e.value.clone())
        .filter(|e| !e.is_empty());
    Ok(TaskLocation {
        framework_id: task
            .framework_id
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or_default(),
        executor_id,
        agent_endpoint: agent.endpoint.clone(),
        terminal: agora_core::task_state::is_terminal_raw(task.state),
    })
}

/// One read of the stream: the bytes and where the next read starts.
struct Chunk {
    offset: u64,
    data: hyper::body::Bytes,
    next_offset: u64,
    end: u64,
}

async fn read_chunk(
    client: &AgentClient,
    location: &TaskLocation,
    args: &LogsArgs,
    offset: u64,
) -> anyhow::Result<Option<Chunk>> {
    let mut query = format!(
        "/api/v1/logs?framework_id={}&task_id={}&stream={}&offset={offset}",
        encode(&location.framework_id),
        encode(&args.task_id),
        if args.stderr { "stderr" } else { "stdout" },
    );
    if let Some(executor_id) = &location.executor_id {
        query.push_str(&format!("&executor_id={}", encode(executor_id)));
    }
    let response = client.get(&location.agent_endpoint, &query).await?;
    if response.status == 404 {
        return Ok(None);
    }
    anyhow::ensure!(
        response.status == 200,
        "agent {} refused to read the log ({}): {}",
        location.agent_endpoint,
        response.status,
        String::from_utf8_lossy(&response.body).trim()
    );
    Ok(Some(Chunk {
        offset: response.number(OFFSET_HEADER)?,
        next_offset: response.number(NEXT_OFFSET_HEADER)?,
        end: response.number(END_HEADER)?,
        data: response.body,
    }))
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let state = fetch_state(&args.master).await?;
    let mut location = find_task(&state, &args)?;
    let client = AgentClient::new();
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    // After the task ended, one more pass reads what was written last.
    let mut last_pass = false;
    loop {
        let Some(chunk) = read_chunk(&client, &location, &args, offset).await? else {
            // No sandbox: not made yet (a follower waits for it), or removed.
            anyhow::ensure!(
                args.follow && !location.terminal,
                "agent {} has no sandbox for task '{}' (it may have been garbage-collected)",
                location.agent_endpoint,
                args.task_id
            );
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                () = super::stop_requested() => return Ok(()),
            }
            if let Ok(state) = fetch_state(&args.master).await
                && let Ok(now) = find_task(&state, &args)
            {
                location = now;
            }
            continue;
        };
        if chunk.offset > offset {
            eprintln!(
                "[{} bytes were rotated away before they could be read]",
                chunk.offset - offset
            );
        }
        out.write_all(&chunk.data).context("writing to stdout")?;
        offset = chunk.next_offset;
        if offset < chunk.end && !chunk.data.is_empty() {
            continue;
        }
        out.flush().context("writing to stdout")?;
        if !args.follow || last_pass {
            return Ok(());
        }
        if location.terminal {
            last_pass = true;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            () = super::stop_requested() => return Ok(()),
        }
        // Whether the task ended since: its output is then complete.
        if let Ok(state) = fetch_state(&args.master).await
            && let Ok(now) = find_task(&state, &args)
        {
            location.terminal = now.terminal;
        }
    }
}
