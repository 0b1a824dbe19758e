//! `agora weights [set role=weight,...]`: role weights, kept by the leader.
//!
//! A role's weight scales its fair share: a role of weight 2 is offered twice what
//! a role of weight 1 is when both want more. Every role weighs 1 unless set; setting
//! 1 removes the record.

use agora_proto as pb;
use clap::{Args, Subcommand};

use crate::operator_client::{LeaderArgs, ListArgs, on_leader, print_json};
use crate::table;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WeightsArgs {
    /// Without a subcommand, `agora weights` lists the weights that are not 1.
    #[command(subcommand)]
    pub command: Option<WeightsCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Subcommand)]
pub enum WeightsCommand {
    /// Set weights: `agora weights set eng=2,eng/ml=3,ops=0.5`.
    Set(SetArgs),
}

#[derive(Args)]
pub struct SetArgs {
    /// role=weight pairs, comma-separated; weights above 0, 1 is the default.
    #[arg(value_parser = parse_weights)]
    pub weights: Weights,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

/// Parsed `role=weight,...`.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights(pub Vec<pb::RoleWeight>);

/// Parses `eng=2,ops=0.5`. The master checks role names and ranges again.
pub fn parse_weights(input: &str) -> Result<Weights, String> {
    let mut out: Vec<pb::RoleWeight> = Vec::new();
    for entry in input.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!(
                "{input:?} has an empty entry (expected role=weight[,role=weight...])"
            ));
        }
        let (role, weight) = entry
            .split_once('=')
            .ok_or_else(|| format!("'{entry}' is not role=weight"))?;
        let role = role.trim();
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("'{entry}': '{}' is not a number", weight.trim()))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!("'{entry}': a weight is a number above 0"));
        }
        if out.iter().any(|w| w.role == role) {
            return Err(format!("role '{role}' is given twice"));
        }
        out.push(pb::RoleWeight {
            role: role.to_string(),
            weight,
        });
    }
    Ok(Weights(out))
}

pub fn render(weights: &[pb::RoleWeight]) -> String {
    let rows: Vec<Vec<String>> = weights
        .iter()
        .map(|w| vec![w.role.clone(), w.weight.to_string()])
        .collect();
    table::render(&["ROLE", "WEIGHT"], &rows)
}

pub async fn run(args: WeightsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(WeightsCommand::Set(set)) => self::set(set).await,
        None => list(args.list).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (_, answer) = on_leader(&args.master, |mut client| async move {
        client.get_weights(pb::GetWeightsRequest {}).await
    })
    .await?;
    if args.json {
        return print_json(&answer.weights);
    }
    print!("{}", render(&answer.weights));
    if answer.weights.is_empty() {
        println!("(every role has the default weight 1)");
    }
    Ok(())
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let weights = args.weights.0;
    let (leader, _) = on_leader(&args.leader.master, |mut client| {
        let weights = weights.clone();
        async move { client.set_weights(pb::SetWeightsRequest { weights }).await }
    })
    .await?;
    println!("Weights set (asked {leader}):");
    print!("{}", render(&weights));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_lists_are_parsed_strictly() {
        let parsed = parse_weights("eng=2, eng/ml=0.5").unwrap();
        assert_eq!(
            render(&parsed.0),
            "ROLE    WEIGHT\neng     2\neng/ml  0.5\n"
        );
        for (bad, says) in [
            ("", "empty entry"),
            ("eng=1,,ops=2", "empty entry"),
            ("eng", "not role=weight"),
            ("eng=x", "not a number"),
            ("eng=0", "above 0"),
            ("eng=-1", "above 0"),
            ("eng=NaN", "above 0"),
            ("eng=1,eng=2", "twice"),
        ] {
            match parse_weights(bad) {
                Ok(w) => panic!("{bad:?} parsed as {w:?}"),
                Err(e) => assert!(e.contains(says), "{bad:?}: {e}"),
            }
        }
    }
}
