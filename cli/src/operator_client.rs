//! What the operator commands share: flags, the gRPC connection, finding the leader
//! among several masters, and cell formatting.
//!
//! Every `--master` flag takes a comma-separated list of masters. Reads that any
//! master can answer (the group, a master's own view) go to the first one that
//! answers; soft state (agents, frameworks, tasks) and membership changes live on the
//! leader, so those follow the group's view or the `agora-leader` hint of a refusal
//! to it, with a bounded number of hops and rounds.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use agora_core::Resources;
use agora_proto as pb;
use anyhow::Context;
use clap::Args;
use tonic::transport::{Channel, Endpoint};

/// Flags of every operator view.
#[derive(Args, Clone)]
pub struct ViewArgs {
    /// Master address(es), comma-separated host:port; the first that answers is asked,
    /// and soft state comes from the leader it names.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print JSON (the same as GET /api/v1/state) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of an operator command that changes something on the leader.
#[derive(Args, Clone)]
pub struct LeaderArgs {
    /// Master address(es), comma-separated host:port: any masters of the group; the
    /// leader is found from them.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
}

/// Flags of an operator listing that the leader answers.
#[derive(Args, Clone)]
pub struct ListArgs {
    /// Master address(es), comma-separated host:port: any masters of the group; the
    /// leader is found from them.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An operator API client of one master.
pub type OperatorClient = pb::operator_client::OperatorClient<Channel>;

/// How long connecting to one master may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take: longer than a master's own request timeout (10 s by
/// default) so that its answer, not ours, says what happened to a slow write.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Leader hints followed within one round: enough for a leader change or two while
/// asking, few enough that masters pointing at each other cannot loop.
const MAX_LEADER_HOPS: usize = 3;
/// Pauses between rounds over the whole list while no leader answers: an election
/// takes about a second, so the rounds span a few seconds in all.
const ROUND_BACKOFF: [Duration; 3] = [
    Duration::from_millis(300),
    Duration::from_millis(800),
    Duration::from_secs(2),
];

/// The masters of a `--master` flag, in the order given, without repeats.
pub fn master_list(flag: &str) -> anyhow::Result<Vec<String>> {
    let mut masters = Vec::new();
    for entry in flag.split(',') {
        let entry = entry.trim();
        anyhow::ensure!(
            !entry.is_empty(),
            "--master {flag:?}: an empty address (expected host:port[,host:port...])"
        );
        anyhow::ensure!(
            !entry.chars().any(char::is_whitespace),
            "--master {flag:?}: {entry:?} is not an address (expected host:port)"
        );
        if !masters.iter().any(|m| m == entry) {
            masters.push(entry.to_string());
        }
    }
    Ok(masters)
}

/// Connects to one master's operator API.
pub async fn connect(master: &str) -> anyhow::Result<OperatorClient> {
    let url = if master.contains("://") {
        master.to_string()
    } else {
        format!("http://{master}")
    };
    let endpoint = Endpoint::from_shared(url)
        .with_context(|| format!("{master:?} is not a master address (expected host:port)"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the master at {master}"))?;
    Ok(OperatorClient::new(channel)
        .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES))
}

/// Whether the master that produced `group` leads it. A state without a group comes
/// from a master that predates replication, which always leads.
pub fn leads(group: Option<&pb::MasterGroup>) -> bool {
    group.is_none_or(|g| g.self_id != 0 && g.leader_id == g.self_id)
}

/// The state of the first master of `masters` that answers, leader or follower, and
/// which master that was.
pub async fn fetch_any_state(masters: &[String]) -> anyhow::Result<(String, pb::ClusterState)> {
    first_answer(masters, |mut client| async move {
        client.get_state(pb::GetStateRequest {}).await
    })
    .await
}

/// The leader's state (agents, frameworks and tasks live there): the first master of
/// the comma-separated `masters` that answers, or the leader it names.
pub async fn fetch_state(masters: &str) -> anyhow::Result<pb::ClusterState> {
    let masters = master_list(masters)?;
    let (_, state) = ask_leader(&masters, |mut client, _| async move {
        match client.get_state(pb::GetStateRequest {}).await {
            Ok(state) => {
                let state = state.into_inner();
                if leads(state.group.as_ref()) {
                    return Attempt::Done(state);
                }
                let group = state.group.unwrap_or_default();
                let known = group.leader_id != 0 && !group.leader_address.is_empty();
                Attempt::Redirect(known.then_some(group.leader_address))
            }
            Err(status) => Attempt::from_status(status),
        }
    })
    .await?;
    Ok(state)
}

/// The answer of the first master of `masters` that answers `call`, and its address.
pub async fn first_answer<T, F, Fut>(masters: &[String], mut call: F) -> anyhow::Result<(String, T)>
where
    F: FnMut(OperatorClient) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut failures = Vec::new();
    for master in masters {
        let client = match connect(master).await {
            Ok(client) => client,
            Err(e) => {
                failures.push(format!("{e:#}"));
                continue;
            }
        };
        match call(client).await {
            Ok(answer) => return Ok((master.clone(), answer.into_inner())),
            Err(status) => failures.push(format!("{master}: {}", describe(&status))),
        }
    }
    Err(no_answer(masters, &failures))
}

/// What one master made of a call that must reach the leader.
pub enum Attempt<T> {
    /// The leader answered.
    Done(T),
    /// This master does not lead; it names the leader's address if it knows one.
    Redirect(Option<String>),
    /// This master could not answer for now (no leader, catching up, going away):
    /// another master, or a later round, may.
    Unavailable(String),
    /// A definite answer that asking elsewhere would not change (bad request, the
    /// member already exists, ...).
    Failed(anyhow::Error),
}

impl<T> Attempt<T> {
    /// Classifies a refusal: UNAVAILABLE is worth asking elsewhere (following the
    /// leader hint if there is one); anything else is the group's final word.
    pub fn from_status(status: tonic::Status) -> Self {
        if status.code() != tonic::Code::Unavailable {
            return Attempt::Failed(anyhow::anyhow!("{}", describe(&status)));
        }
        match leader_hint(&status) {
            Some(leader) => Attempt::Redirect(Some(leader)),
            None => Attempt::Unavailable(describe(&status)),
        }
    }
}

/// The leader's address a follower attached to its refusal, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(agora_master::LEADER_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
}

/// Runs `call` against the leader of the group `masters` belong to: each master in
/// turn, following the leader it names (at most [`MAX_LEADER_HOPS`] times a round),
/// over a few rounds while the group has no leader. Returns the leader's answer and
/// its address, or an error saying what each master said.
pub async fn ask_leader<T, F, Fut>(masters: &[String], mut call: F) -> anyhow::Result<(String, T)>
where
    F: FnMut(OperatorClient, String) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut failures = Vec::new();
    for round in 0..=ROUND_BACKOFF.len() {
        if let Some(pause) = round.checked_sub(1).and_then(|i| ROUND_BACKOFF.get(i)) {
            tokio::time::sleep(*pause).await;
        }
        failures.clear();
        let mut queue: VecDeque<String> = masters.iter().cloned().collect();
        let mut asked = HashSet::new();
        let mut hops = 0;
        while let Some(master) = queue.pop_front() {
            if !asked.insert(master.clone()) {
                continue;
            }
            let client = match connect(&master).await {
                Ok(client) => client,
                Err(e) => {
                    failures.push(format!("{e:#}"));
                    continue;
                }
            };
            match call(client, master.clone()).await {
                Attempt::Done(answer) => return Ok((master, answer)),
                Attempt::Failed(e) => return Err(e.context(format!("the master at {master}"))),
                Attempt::Redirect(Some(leader)) => {
                    failures.push(format!("{master}: not the leader; the leader is {leader}"));
                    if hops < MAX_LEADER_HOPS && !asked.contains(&leader) {
                        hops += 1;
                        queue.push_front(leader);
                    }
                }
                Attempt::Redirect(None) => failures.push(format!(
                    "{master}: not the leader, and it knows no leader (an election may be under way)"
                )),
                Attempt::Unavailable(why) => failures.push(format!("{master}: {why}")),
            }
        }
    }
    Err(anyhow::anyhow!(
        "no leader answered among the masters {} after {} rounds:\n  {}",
        masters.join(","),
        ROUND_BACKOFF.len() + 1,
        failures.join("\n  ")
    )
    .context("cannot reach the leader of the master group"))
}

/// Runs one call on the leader of the group named by a `--master` flag, following
/// followers' hints; the leader's address and answer. `call` must build its request
/// afresh each time (it may run against several masters).
pub async fn on_leader<T, F, Fut>(masters: &str, mut call: F) -> anyhow::Result<(String, T)>
where
    F: FnMut(OperatorClient) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let masters = master_list(masters)?;
    ask_leader(&masters, |client, _| {
        let answer = call(client);
        async move {
            match answer.await {
                Ok(answer) => Attempt::Done(answer.into_inner()),
                Err(status) => Attempt::from_status(status),
            }
        }
    })
    .await
}

/// A status as an operator reads it: the message, with the code when that says more.
pub fn describe(status: &tonic::Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else if status.code() == tonic::Code::Unknown {
        message.to_string()
    } else {
        format!("{message} ({:?})", status.code())
    }
}

fn no_answer(masters: &[String], failures: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "no master answered among {}:\n  {}",
        masters.join(","),
        failures.join("\n  ")
    )
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `used/total` of one scalar, e.g. `1.5/4`.
pub fn usage(used: &[pb::Resource], total: &[pb::Resource], name: &str) -> String {
    let used = Resources::from_proto(used)
        .map(|r| r.scalar(name))
        .unwrap_or(0.0);
    let total = Resources::from_proto(total)
        .map(|r| r.scalar(name))
        .unwrap_or(0.0);
    format!("{}/{}", trim(used), trim(total))
}

/// One scalar of a resource list.
pub fn scalar(resources: &[pb::Resource], name: &str) -> String {
    trim(
        Resources::from_proto(resources)
            .map(|r| r.scalar(name))
            .unwrap_or(0.0),
    )
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn id<T>(value: &Option<T>, get: impl Fn(&T) -> &str) -> String {
    value
        .as_ref()
        .map(|v| get(v).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_lists_keep_order_and_drop_repeats() {
        assert_eq!(
            master_list("a:1, b:2,a:1").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert!(master_list("a:1,,b:2").is_err());
        assert!(master_list("").is_err());
        assert!(master_list("a b:1").is_err());
    }

    #[test]
    fn only_the_leader_leads() {
        let group = |self_id, leader_id| pb::MasterGroup {
            self_id,
            leader_id,
            ..Default::default()
        };
        assert!(leads(None));
        assert!(leads(Some(&group(1, 1))));
        assert!(!leads(Some(&group(2, 1))));
        assert!(!leads(Some(&group(2, 0))));
        assert!(!leads(Some(&group(0, 0))));
    }

    #[test]
    fn refusals_are_classified() {
        let mut hinted = tonic::Status::unavailable("this master is not the leader");
        hinted.metadata_mut().insert(
            agora_master::LEADER_METADATA_KEY,
            "127.0.0.1:5060".parse().unwrap(),
        );
        assert!(matches!(
            Attempt::<()>::from_status(hinted),
            Attempt::Redirect(Some(leader)) if leader == "127.0.0.1:5060"
        ));
        assert!(matches!(
            Attempt::<()>::from_status(tonic::Status::unavailable("catching up")),
            Attempt::Unavailable(_)
        ));
        assert!(matches!(
            Attempt::<()>::from_status(tonic::Status::already_exists("member 4")),
            Attempt::Failed(_)
        ));
    }
}
