//! `agora agents`: agents with their resources and attributes.

use agora_proto as pb;

use crate::operator_client::{ViewArgs, fetch_state, id, print_json, usage};
use crate::table;

pub fn render(agents: &[pb::AgentSummary]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let info = a.agent_info.clone().unwrap_or_default();
            vec![
                id(&info.id, |i| &i.value),
                info.hostname.clone(),
                a.status.clone(),
                usage(&a.used, &a.total, "cpus"),
                usage(&a.used, &a.total, "mem"),
                usage(&a.used, &a.total, "disk"),
                agora_core::Resources::from_proto(&a.total)
                    .map(|r| r.ranges("ports").to_string())
                    .unwrap_or_default(),
                agora_core::attributes::format(&info.attributes),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "CPUS",
            "MEM (MB)",
            "DISK (MB)",
            "PORTS",
            "ATTRIBUTES",
        ],
        &rows,
    )
}

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let state = fetch_state(&args.master).await?;
    if args.json {
        return print_json(&state.agents);
    }
    print!("{}", render(&state.agents));
    Ok(())
}
