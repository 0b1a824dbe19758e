//! `agora frameworks`: frameworks, connected or waiting out their failover timeout.

use agora_proto as pb;

use crate::operator_client::{ViewArgs, fetch_state, id, print_json, scalar};
use crate::table;

pub fn render(frameworks: &[pb::FrameworkSummary]) -> String {
    let rows: Vec<Vec<String>> = frameworks
        .iter()
        .map(|f| {
            let info = f.framework_info.clone().unwrap_or_default();
            vec![
                id(&info.id, |i| &i.value),
                info.name.clone(),
                if f.connected {
                    "yes".into()
                } else {
                    "no".into()
                },
                f.active_tasks.to_string(),
                scalar(&f.used, "cpus"),
                scalar(&f.used, "mem"),
                if info.roles.is_empty() {
                    "*".into()
                } else {
                    info.roles.join(",")
                },
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "NAME",
            "CONNECTED",
            "TASKS",
            "CPUS",
            "MEM (MB)",
            "ROLES",
        ],
        &rows,
    )
}

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let state = fetch_state(&args.master).await?;
    if args.json {
        return print_json(&state.frameworks);
    }
    print!("{}", render(&state.frameworks));
    Ok(())
}
