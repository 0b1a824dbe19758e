//! `agora master add|remove|group`: the master group's membership, asked of the
//! running masters over the operator API.
//!
//! Membership changes are raft conf changes that only the leader proposes, so `add`
//! and `remove` find it (following followers' `agora-leader` hints); `group` shows
//! the view of the leader when one is known, since only the leader knows how far
//! each member has caught up.

use agora_proto as pb;
use clap::Args;

use super::master::check_address;
use crate::operator_client::{
    Attempt, OperatorClient, ask_leader, connect, describe, first_answer, leads, master_list,
    print_json,
};
use crate::table;

/// Which masters to ask, and how to print the answer.
#[derive(Args, Clone)]
pub struct AskArgs {
    /// Master address(es), comma-separated host:port: any masters of the group.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print the group as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AddArgs {
    /// The new master's raft id: not 0, not a member's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The host:port the new master serves on (its --listen / --advertise).
    #[arg(long, value_parser = parse_address)]
    pub address: String,
    #[command(flatten)]
    pub ask: AskArgs,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// The raft id of the master to remove.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    #[command(flatten)]
    pub ask: AskArgs,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub ask: AskArgs,
    /// Show the first answering master's own view, without asking the leader.
    #[arg(long)]
    pub no_follow: bool,
}

fn parse_address(input: &str) -> Result<String, String> {
    let input = input.trim();
    check_address(input)?;
    Ok(input.to_string())
}

/// Adds a master: the leader proposes it; the new master then catches up from the
/// leader once it runs with `--join`.
pub async fn add(args: AddArgs) -> anyhow::Result<()> {
    let masters = master_list(&args.ask.master)?;
    let request = pb::AddMasterRequest {
        id: args.id,
        address: args.address.clone(),
    };
    let (_, before) = any_group(&masters).await?;
    let added = |group: &pb::MasterGroup| {
        group
            .members
            .iter()
            .any(|m| m.id == request.id && m.address == request.address)
    };
    let was_there = added(&before);
    let (leader, (group, unanswered)) = ask_leader(&masters, |mut client, _| {
        let request = request.clone();
        async move {
            match client.add_master(request).await {
                Ok(group) => Attempt::Done((group.into_inner(), false)),
                // "Already a member" after an attempt that went unanswered is that
                // attempt having gone through.
                Err(status) => {
                    let conflict = status.code() == tonic::Code::AlreadyExists && !was_there;
                    settle(&mut client, status, conflict, added).await
                }
            }
        }
    })
    .await?;
    if args.ask.json {
        return print_json(&group);
    }
    println!(
        "Master {} at {} is a member of the group (asked {leader}){}.",
        args.id,
        args.address,
        unanswered_note(unanswered)
    );
    println!();
    print!("{}", render_group(&group));
    let peers = group
        .members
        .iter()
        .map(|m| format!("{}={}", m.id, m.address))
        .collect::<Vec<_>>()
        .join(",");
    println!();
    println!("Start it, if it is not running yet (on a fresh data dir):");
    println!(
        "  agora master --id {} --join --peers {peers} --data-dir ./agora-master-{}",
        args.id, args.id
    );
    let voters = group.members.iter().filter(|m| m.role != "LEARNER").count();
    println!(
        "Until it has caught up, the group needs {} of its {voters} masters to commit anything.",
        voters / 2 + 1
    );
    Ok(())
}

/// Removes a master: the leader proposes it; a removed master that is running stops
/// once it applies its removal. Removing the leader hands leadership over (the
/// leader may go before it answers: the others then confirm the removal).
pub async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let masters = master_list(&args.ask.master)?;
    let id = args.id;
    let (_, before) = any_group(&masters).await?;
    let removed = |group: &pb::MasterGroup| !group.members.iter().any(|m| m.id == id);
    let was_gone = removed(&before);
    let (leader, (group, unanswered)) = ask_leader(&masters, |mut client, _| async move {
        match client.remove_master(pb::RemoveMasterRequest { id }).await {
            Ok(group) => Attempt::Done((group.into_inner(), false)),
            Err(status) => {
                let conflict = status.code() == tonic::Code::NotFound && !was_gone;
                settle(&mut client, status, conflict, removed).await
            }
        }
    })
    .await?;
    if args.ask.json {
        return print_json(&group);
    }
    println!(
        "Master {id} is no longer a member of the group (asked {leader}){}.",
        unanswered_note(unanswered)
    );
    println!("If it is still running, it stops by itself once it learns of its removal.");
    println!();
    print!("{}", render_group(&group));
    Ok(())
}

/// The group as the first answering master sees it: what a change is judged against.
async fn any_group(masters: &[String]) -> anyhow::Result<(String, pb::MasterGroup)> {
    first_answer(masters, |mut client| async move {
        client.get_master_group(pb::GetMasterGroupRequest {}).await
    })
    .await
}

/// Turns a refused membership change into an outcome. A refusal that contradicts
/// the group as it was before (`conflict`: the member is already there, or already
/// gone) or a write that timed out may mean that an earlier, unanswered attempt (or
/// this one) went through: if this master's group now shows the change (`reached`),
/// it is done. Otherwise the refusal stands.
async fn settle(
    client: &mut OperatorClient,
    status: tonic::Status,
    conflict: bool,
    reached: impl Fn(&pb::MasterGroup) -> bool,
) -> Attempt<(pb::MasterGroup, bool)> {
    if (conflict || status.code() == tonic::Code::DeadlineExceeded)
        && let Ok(group) = client.get_master_group(pb::GetMasterGroupRequest {}).await
    {
        let group = group.into_inner();
        if reached(&group) {
            return Attempt::Done((group, true));
        }
    }
    Attempt::from_status(status)
}

fn unanswered_note(unanswered: bool) -> &'static str {
    if unanswered {
        "; the change went through though a master's answer to it was lost"
    } else {
        ""
    }
}

/// Shows the group: the leader's view when it can be reached (it alone knows how far
/// each member has caught up), else the first answering master's.
pub async fn group(args: GroupArgs) -> anyhow::Result<()> {
    let masters = master_list(&args.ask.master)?;
    let (asked, mut group) = first_answer(&masters, |mut client| async move {
        client.get_master_group(pb::GetMasterGroupRequest {}).await
    })
    .await?;
    let leader_known = group.leader_id != 0 && !group.leader_address.is_empty();
    if !args.no_follow && !leads(Some(&group)) && leader_known {
        match ask_group(&group.leader_address).await {
            Ok(leaders) if leads(Some(&leaders)) => group = leaders,
            Ok(_) => eprintln!(
                "note: master {} at {} no longer leads; showing the view of {asked}",
                group.leader_id, group.leader_address
            ),
            Err(e) => eprintln!(
                "note: the leader at {} did not answer ({e:#}); showing the view of {asked}",
                group.leader_address
            ),
        }
    }
    if args.ask.json {
        return print_json(&group);
    }
    print!("{}", render_group(&group));
    Ok(())
}

async fn ask_group(master: &str) -> anyhow::Result<pb::MasterGroup> {
    let mut client = connect(master).await?;
    let group = client
        .get_master_group(pb::GetMasterGroupRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("{}", describe(&status)))?;
    Ok(group.into_inner())
}

/// The role of the master that produced `group`, as it sees itself.
pub fn own_role(group: &pb::MasterGroup) -> String {
    group
        .members
        .iter()
        .find(|m| m.id == group.self_id)
        .map(|m| m.role.clone())
        .unwrap_or_else(|| "not a member".into())
}

/// One line naming the leader, from the point of view of the master that answered.
pub fn leader_line(group: &pb::MasterGroup) -> String {
    if group.leader_id == 0 {
        "Leader: none known (an election may be under way, or the group lost its majority)".into()
    } else if group.leader_id == group.self_id {
        format!(
            "Leader: master {} at {} (this master)",
            group.leader_id, group.leader_address
        )
    } else {
        format!(
            "Leader: master {} at {}",
            group.leader_id,
            if group.leader_address.is_empty() {
                "an unknown address"
            } else {
                &group.leader_address
            }
        )
    }
}

/// The group under a line naming the leader: see [`render_view`].
pub fn render_group(group: &pb::MasterGroup) -> String {
    format!("{}\n{}", leader_line(group), render_view(group))
}

/// The group as a table, under whose view it is. MATCHED is only known to the
/// leader: elsewhere it shows "-".
pub fn render_view(group: &pb::MasterGroup) -> String {
    let seer = group
        .members
        .iter()
        .find(|m| m.id == group.self_id)
        .map(|m| m.address.as_str())
        .unwrap_or("");
    let mut out = format!(
        "As seen by master {}{} ({}): term {}, commit index {}, applied index {}\n",
        group.self_id,
        if seer.is_empty() {
            String::new()
        } else {
            format!(" at {seer}")
        },
        own_role(group),
        group.term,
        group.commit_index,
        group.applied_index
    );
    let leading = leads(Some(group));
    let rows: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.address.clone(),
                m.role.clone(),
                if leading {
                    m.matched.to_string()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    out.push_str(&table::render(&["ID", "ADDRESS", "ROLE", "MATCHED"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, role: &str, matched: u64) -> pb::master_group::Member {
        pb::master_group::Member {
            id,
            address: format!("127.0.0.1:50{id}0"),
            role: role.into(),
            matched,
        }
    }

    #[test]
    fn the_leaders_view_shows_progress() {
        let group = pb::MasterGroup {
            self_id: 1,
            leader_id: 1,
            leader_address: "127.0.0.1:5010".into(),
            term: 3,
            commit_index: 42,
            applied_index: 41,
            members: vec![member(1, "LEADER", 42), member(2, "FOLLOWER", 40)],
        };
        assert_eq!(
            render_group(&group),
            "Leader: master 1 at 127.0.0.1:5010 (this master)\n\
             As seen by master 1 at 127.0.0.1:5010 (LEADER): term 3, commit index 42, applied index 41\n\
             ID  ADDRESS         ROLE      MATCHED\n\
             1   127.0.0.1:5010  LEADER    42\n\
             2   127.0.0.1:5020  FOLLOWER  40\n"
        );
    }

    #[test]
    fn a_followers_view_names_the_leader_and_hides_progress() {
        let group = pb::MasterGroup {
            self_id: 2,
            leader_id: 1,
            leader_address: "127.0.0.1:5010".into(),
            term: 3,
            commit_index: 42,
            applied_index: 42,
            members: vec![member(1, "LEADER", 0), member(2, "FOLLOWER", 0)],
        };
        let shown = render_group(&group);
        assert!(
            shown.starts_with("Leader: master 1 at 127.0.0.1:5010\n"),
            "{shown}"
        );
        assert!(
            shown.contains("master 2 at 127.0.0.1:5020 (FOLLOWER)"),
            "{shown}"
        );
        assert!(shown.contains("2   127.0.0.1:5020  FOLLOWER  -"), "{shown}");

        let lost = pb::MasterGroup {
            self_id: 5,
            ..Default::default()
        };
        assert!(leader_line(&lost).contains("none known"));
        assert_eq!(own_role(&lost), "not a member");
    }
}
