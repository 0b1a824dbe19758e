//! `agora agent drain <id>` and `agora agent reactivate <id>`: agent maintenance,
//! asked of the leader.
//!
//! Draining stops new offers of the agent, rescinds outstanding ones, tells the
//! frameworks with tasks there, and at `--deadline` kills what still runs; the agent
//! then shows DRAINED in `agora agents`. Reactivating makes its resources offered
//! again.

use std::time::Duration;

use agora_proto as pb;
use clap::Args;

use super::parse_duration;
use crate::operator_client::{LeaderArgs, on_leader};

#[derive(Args)]
pub struct DrainArgs {
    /// The agent's id (see `agora agents`).
    pub agent_id: String,
    /// Kill what still runs on the agent this long from now (e.g. 10m, 1h, 0s for at
    /// once) [default: no deadline; tasks are left to end by themselves].
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[derive(Args)]
pub struct ReactivateArgs {
    /// The agent's id (see `agora agents`).
    pub agent_id: String,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

fn agent_id(value: &str) -> Option<pb::AgentId> {
    Some(pb::AgentId {
        value: value.to_string(),
    })
}

pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let deadline_seconds = args.deadline.map(|d| d.as_secs_f64());
    let (leader, _) = on_leader(&args.leader.master, |mut client| {
        let request = pb::DrainAgentRequest {
            agent_id: agent_id(&args.agent_id),
            deadline_seconds,
        };
        async move { client.drain_agent(request).await }
    })
    .await?;
    let deadline = match args.deadline {
        None => "no deadline: its tasks are left to end by themselves".to_string(),
        Some(d) if d.is_zero() => "what still runs on it is being killed".to_string(),
        Some(d) => format!("what still runs on it in {} is killed", humanize(d)),
    };
    println!(
        "Agent {} is draining (asked {leader}): no new offers; {deadline}. \
         It shows DRAINED in `agora agents` once nothing runs on it.",
        args.agent_id
    );
    Ok(())
}

pub async fn reactivate(args: ReactivateArgs) -> anyhow::Result<()> {
    let (leader, _) = on_leader(&args.leader.master, |mut client| {
        let request = pb::ReactivateAgentRequest {
            agent_id: agent_id(&args.agent_id),
        };
        async move { client.reactivate_agent(request).await }
    })
    .await?;
    println!(
        "Agent {} is active again (asked {leader}): its resources are offered.",
        args.agent_id
    );
    Ok(())
}

/// `90s` → `1m30s`, `600s` → `10m`.
fn humanize(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::humanize;
    use std::time::Duration;

    #[test]
    fn deadlines_read_as_given() {
        assert_eq!(humanize(Duration::from_secs(600)), "10m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(3600)), "1h");
        assert_eq!(humanize(Duration::from_millis(500)), "500ms");
    }
}
