//! `agora state`: the whole cluster at a glance, and who leads the master group.
//!
//! Any master answers: the leader with everything, a follower with itself and the
//! group (soft state lives on the leader), which is what an operator needs to see
//! when the leader is the thing in doubt.

use clap::Args;

use crate::operator_client::{ViewArgs, fetch_any_state, leads, master_list, print_json};

use super::master_group::{leader_line, own_role, render_view};

#[derive(Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub view: ViewArgs,
}

pub async fn run(args: StateArgs) -> anyhow::Result<()> {
    let masters = master_list(&args.view.master)?;
    let (_, state) = fetch_any_state(&masters).await?;
    if args.view.json {
        return print_json(&state);
    }
    let master = state.master_info.clone().unwrap_or_default();
    let leading = leads(state.group.as_ref());
    match &state.group {
        Some(group) => {
            println!(
                "Master {} (id {}, {}, version {})",
                master.address,
                group.self_id,
                own_role(group),
                master.version
            );
            println!("{}", leader_line(group));
        }
        None => println!(
            "Master {} (version {}, leading)",
            master.address, master.version
        ),
    }
    if let Some(group) = state.group.as_ref().filter(|_| !leading) {
        println!();
        println!(
            "This master does not lead: agents, frameworks and tasks are on the leader{}.",
            if group.leader_address.is_empty() {
                String::new()
            } else {
                format!(" (agora state --master {})", group.leader_address)
            }
        );
        println!();
        println!("Masters ({})", group.members.len());
        print!("{}", render_view(group));
        return Ok(());
    }
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
    if let Some(group) = &state.group {
        println!();
        println!("Masters ({})", group.members.len());
        print!("{}", render_view(group));
    }
    Ok(())
}
