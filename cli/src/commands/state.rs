//! `agora state`: the whole cluster at a glance.

use clap::Args;

use crate::operator_client::{ViewArgs, fetch_state, print_json};

#[derive(Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub view: ViewArgs,
}

pub async fn run(args: StateArgs) -> anyhow::Result<()> {
    let state = fetch_state(&args.view.master).await?;
    if args.view.json {
        return print_json(&state);
    }
    let master = state.master_info.clone().unwrap_or_default();
    println!(
        "Master {} (version {}, leading)",
        master.address, master.version
    );
    println!();
    println!("Agents ({})", state.agents.len());
    print!("{}", super::agents::render(&state.agents));
    println!();
    println!("Frameworks ({})", state.frameworks.len());
    print!("{}", super::frameworks::render(&state.frameworks));
    println!();
    let tasks: Vec<_> = state.tasks.iter().collect();
    println!(
        "Tasks ({} live, {} completed)",
        state.tasks.len(),
        state.completed_tasks.len()
    );
    print!("{}", super::tasks::render(&tasks));
    Ok(())
}
