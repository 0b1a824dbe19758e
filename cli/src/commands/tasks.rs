//! `agora tasks`: tasks with their state and agent; with `--usage`, the cpu time
//! and resident memory of each running task's container, asked of its agent's
//! `/api/v1/containers`.

use std::collections::HashMap;

use agora_proto as pb;
use clap::Args;

use crate::agent_client::AgentClient;
use crate::operator_client::{ViewArgs, fetch_state, id, print_json, scalar};
use crate::table;

#[derive(Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Include completed (terminal and acknowledged) tasks.
    #[arg(long)]
    pub all: bool,
    /// Add each task's container usage (cpu seconds, resident memory), asked of the
    /// agents that run them.
    #[arg(long)]
    pub usage: bool,
}

/// A container's usage as an agent reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUsage {
    /// User plus system cpu seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Task id → usage from one agent's `/api/v1/containers` answer.
pub fn usage_by_task(containers: &serde_json::Value) -> HashMap<String, TaskUsage> {
    let mut usage = HashMap::new();
    for container in containers.as_array().into_iter().flatten() {
        let statistics = &container["statistics"];
        let seconds = |key: &str| statistics[key].as_f64().unwrap_or(0.0);
        let figures = TaskUsage {
            cpu_seconds: seconds("cpus_user_time_secs") + seconds("cpus_system_time_secs"),
            rss_bytes: statistics["mem_rss_bytes"].as_u64().unwrap_or(0),
        };
        for task in container["task_ids"].as_array().into_iter().flatten() {
            if let Some(task) = task.as_str() {
                usage.insert(task.to_string(), figures.clone());
            }
        }
    }
    usage
}

/// `12.3 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The table with two more columns: CPU-TIME and RSS (`-` where not measured).
pub fn render_with_usage(
    tasks: &[&pb::TaskSummary],
    usage: &HashMap<(String, String), TaskUsage>,
) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let key = (id(&t.agent_id, |i| &i.value), id(&t.task_id, |i| &i.value));
            let (cpu, rss) = match usage.get(&key) {
                Some(u) => (format!("{:.2}s", u.cpu_seconds), human_bytes(u.rss_bytes)),
                None => ("-".to_string(), "-".to_string()),
            };
            let mut row = columns(t);
            row.insert(row.len() - 1, cpu);
            row.insert(row.len() - 1, rss);
            row
        })
        .collect();
    table::render(
        &[
            "ID",
            "NAME",
            "STATE",
            "AGENT",
            "FRAMEWORK",
            "CPUS",
            "MEM",
            "CPU-TIME",
            "RSS",
            "DETAIL",
        ],
        &rows,
    )
}

/// Usage of every task in `tasks`, by (agent id, task id), from their agents; an
/// agent that cannot be asked is reported on stderr and its tasks show `-`.
async fn fetch_usage(
    state: &pb::ClusterState,
    tasks: &[&pb::TaskSummary],
) -> HashMap<(String, String), TaskUsage> {
    let client = AgentClient::new();
    let mut usage = HashMap::new();
    let mut agents: Vec<String> = tasks
        .iter()
        .map(|t| id(&t.agent_id, |i| &i.value))
        .collect();
    agents.sort();
    agents.dedup();
    for agent_id in agents {
        let Some(endpoint) = state
            .agents
            .iter()
            .filter_map(|a| a.agent_info.as_ref())
            .find(|info| info.id.as_ref().is_some_and(|i| i.value == agent_id))
            .map(|info| info.endpoint.clone())
            .filter(|e| !e.is_empty())
        else {
            continue;
        };
        let answer = match client.get(&endpoint, "/api/v1/containers").await {
            Ok(answer) if answer.status == 200 => answer,
            Ok(answer) => {
                eprintln!("agent {agent_id} ({endpoint}): answered {}", answer.status);
                continue;
            }
            Err(e) => {
                eprintln!("agent {agent_id} ({endpoint}): {e:#}");
                continue;
            }
        };
        match serde_json::from_slice::<serde_json::Value>(&answer.body) {
            Ok(containers) => {
                for (task, figures) in usage_by_task(&containers) {
                    usage.insert((agent_id.clone(), task), figures);
                }
            }
            Err(e) => eprintln!("agent {agent_id} ({endpoint}): not a container list: {e}"),
        }
    }
    usage
}

/// The cells of one task's row.
fn columns(t: &pb::TaskSummary) -> Vec<String> {
    let status = t.latest_status.clone().unwrap_or_default();
    let detail = match status.exit_code {
        Some(code) if status.message.is_empty() => format!("exit {code}"),
        _ => status.message.clone(),
    };
    vec![
        id(&t.task_id, |i| &i.value),
        t.name.clone(),
        agora_core::task_state::short_name(t.state).to_string(),
        id(&t.agent_id, |i| &i.value),
        id(&t.framework_id, |i| &i.value),
        scalar(&t.resources, "cpus"),
        scalar(&t.resources, "mem"),
        detail,
    ]
}

pub fn render(tasks: &[&pb::TaskSummary]) -> String {
    let rows: Vec<Vec<String>> = tasks.iter().map(|t| columns(t)).collect();
    table::render(
        &[
            "ID",
            "NAME",
            "STATE",
            "AGENT",
            "FRAMEWORK",
            "CPUS",
            "MEM",
            "DETAIL",
        ],
        &rows,
    )
}

pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    let state = fetch_state(&args.view.master).await?;
    let mut tasks: Vec<&pb::TaskSummary> = state.tasks.iter().collect();
    if args.all {
        tasks.extend(state.completed_tasks.iter());
    }
    if args.view.json {
        return print_json(&tasks);
    }
    if args.usage {
        let usage = fetch_usage(&state, &tasks).await;
        print!("{}", render_with_usage(&tasks, &usage));
        return Ok(());
    }
    print!("{}", render(&tasks));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_columns_come_from_the_agents_container_list() {
        let containers = serde_json::json!([{
            "container_id": "c1",
            "task_ids": ["t1"],
            "statistics": {
                "cpus_user_time_secs": 1.25,
                "cpus_system_time_secs": 0.5,
                "mem_rss_bytes": 3 * 1024 * 1024
            }
        }]);
        let by_task = usage_by_task(&containers);
        assert_eq!(
            by_task["t1"],
            TaskUsage {
                cpu_seconds: 1.75,
                rss_bytes: 3 * 1024 * 1024
            }
        );
        let task = |id: &str| pb::TaskSummary {
            task_id: Some(pb::TaskId { value: id.into() }),
            agent_id: Some(pb::AgentId { value: "a1".into() }),
            ..Default::default()
        };
        let (t1, t2) = (task("t1"), task("t2"));
        let usage = by_task
            .into_iter()
            .map(|(task, u)| (("a1".to_string(), task), u))
            .collect();
        let text = render_with_usage(&[&t1, &t2], &usage);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("CPU-TIME") && lines[0].contains("RSS"),
            "{text}"
        );
        assert!(
            lines[1].contains("1.75s") && lines[1].contains("3.0 MiB"),
            "{text}"
        );
        assert!(lines[2].contains(" - "), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>("not json").is_err());
        assert!(usage_by_task(&serde_json::json!({"unexpected": 1})).is_empty());
    }
}
