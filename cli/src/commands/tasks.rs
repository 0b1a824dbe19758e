//! `agora tasks`: tasks with their state and agent.

use agora_proto as pb;
use clap::Args;

use crate::operator_client::{ViewArgs, fetch_state, id, print_json, scalar};
use crate::table;

#[derive(Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Include completed (terminal and acknowledged) tasks.
    #[arg(long)]
    pub all: bool,
}

pub fn render(tasks: &[&pb::TaskSummary]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
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
    print!("{}", render(&tasks));
    Ok(())
}
