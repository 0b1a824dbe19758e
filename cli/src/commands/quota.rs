//! `agora quota set|get|rm`: the quotas of roles, kept by the leader.
//!
//! A quota is a guarantee (what the role gets when it wants it) and a limit (the
//! most it may hold), both of unreserved scalars written as agents write resources:
//! `cpus:4;mem:4096`. A name left out of the limit is unlimited; `gpus:0` limits it
//! to none. The master checks every quota; the checks here only make the common
//! mistakes read better.

use agora_proto as pb;
use clap::{Args, Subcommand};

use crate::operator_client::{LeaderArgs, ListArgs, on_leader, print_json};
use crate::table;

#[derive(Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set (or replace) a role's quota: `agora quota set eng --guarantee 'cpus:4;mem:4096' --limit 'cpus:8'`.
    Set(SetArgs),
    /// Show the quotas of every role, or of one.
    Get(GetArgs),
    /// Remove a role's quota.
    Rm(RmArgs),
}

#[derive(Args)]
pub struct SetArgs {
    /// The role, e.g. eng or eng/ml (not '*').
    pub role: String,
    /// What the role is guaranteed: unreserved scalars, 'cpus:4;mem:4096'.
    #[arg(long, value_parser = parse_scalars)]
    pub guarantee: Option<Scalars>,
    /// The most the role may hold, 'cpus:8;mem:8192'; a resource left out is
    /// unlimited, 'gpus:0' allows none.
    #[arg(long, value_parser = parse_scalars)]
    pub limit: Option<Scalars>,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[derive(Args)]
pub struct GetArgs {
    /// Only this role's quota.
    pub role: Option<String>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Args)]
pub struct RmArgs {
    /// The role whose quota goes.
    pub role: String,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

/// Unreserved scalar resources as the operator API takes them; zeros are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalars(pub Vec<pb::Resource>);

/// Parses `cpus:4;mem:4096` into unreserved scalars, each name once, keeping zeros
/// (a limit of 0 means none).
pub fn parse_scalars(input: &str) -> Result<Scalars, String> {
    let mut out: Vec<pb::Resource> = Vec::new();
    for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| format!("'{part}' is not name:amount (e.g. cpus:4)"))?;
        let name = name.trim();
        if name.contains('(') {
            return Err(format!(
                "'{part}': a quota is of unreserved resources; leave out the role"
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!("'{part}' has no resource name (e.g. cpus:4)"));
        }
        let amount: f64 = value.trim().parse().map_err(|_| {
            format!(
                "'{part}': '{}' is not a number (quotas are of scalars such as cpus, mem, disk)",
                value.trim()
            )
        })?;
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(format!(
                "'{part}': the amount must be a number of at least 0"
            ));
        }
        if out.iter().any(|r| r.name == name) {
            return Err(format!("'{name}' is given twice"));
        }
        out.push(pb::Resource {
            name: name.to_string(),
            role: String::new(),
            reservation: None,
            value: Some(pb::resource::Value::Scalar(amount)),
        });
    }
    Ok(Scalars(out))
}

/// Scalars as `cpus:4;mem:4096` (zeros included), or `-` for none.
pub fn format_scalars(resources: &[pb::Resource]) -> String {
    let parts: Vec<String> = resources
        .iter()
        .filter_map(|r| match r.value {
            Some(pb::resource::Value::Scalar(amount)) => Some(format!("{}:{amount}", r.name)),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(";")
    }
}

pub fn render(quotas: &[pb::QuotaConfig]) -> String {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            vec![
                q.role.clone(),
                format_scalars(&q.guarantee),
                if q.limit.is_empty() {
                    "unlimited".into()
                } else {
                    format_scalars(&q.limit)
                },
            ]
        })
        .collect();
    table::render(&["ROLE", "GUARANTEE", "LIMIT"], &rows)
}

pub async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    match args.command {
        QuotaCommand::Set(set) => self::set(set).await,
        QuotaCommand::Get(get) => self::get(get).await,
        QuotaCommand::Rm(rm) => self::rm(rm).await,
    }
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.guarantee.is_some() || args.limit.is_some(),
        "give --guarantee, --limit or both"
    );
    let quota = pb::QuotaConfig {
        role: args.role.clone(),
        guarantee: args.guarantee.map(|g| g.0).unwrap_or_default(),
        limit: args.limit.map(|l| l.0).unwrap_or_default(),
    };
    let (leader, _) = on_leader(&args.leader.master, |mut client| {
        let quota = quota.clone();
        async move {
            client
                .set_quota(pb::SetQuotaRequest { quota: Some(quota) })
                .await
        }
    })
    .await?;
    println!(
        "Quota of role '{}' set (asked {leader}): guarantee {}, limit {}.",
        quota.role,
        format_scalars(&quota.guarantee),
        if quota.limit.is_empty() {
            "none".to_string()
        } else {
            format_scalars(&quota.limit)
        }
    );
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let (_, answer) = on_leader(&args.list.master, |mut client| async move {
        client.get_quotas(pb::GetQuotasRequest {}).await
    })
    .await?;
    let mut quotas = answer.quotas;
    if let Some(role) = &args.role {
        quotas.retain(|q| &q.role == role);
        anyhow::ensure!(!quotas.is_empty(), "role '{role}' has no quota");
    }
    if args.list.json {
        return print_json(&quotas);
    }
    print!("{}", render(&quotas));
    Ok(())
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let role = args.role.clone();
    let (leader, _) = on_leader(&args.leader.master, |mut client| {
        let role = role.clone();
        async move { client.remove_quota(pb::RemoveQuotaRequest { role }).await }
    })
    .await?;
    println!("Quota of role '{role}' removed (asked {leader}).");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_zeros_and_refuse_the_rest() {
        let parsed = parse_scalars("cpus:4; mem:4096;gpus:0").unwrap();
        assert_eq!(format_scalars(&parsed.0), "cpus:4;mem:4096;gpus:0");
        assert_eq!(parse_scalars("").unwrap(), Scalars(vec![]));
        for (bad, says) in [
            ("cpus", "name:amount"),
            ("cpus(eng):1", "unreserved"),
            ("ports:[1-2]", "not a number"),
            ("cpus:-1", "at least 0"),
            ("cpus:inf", "at least 0"),
            ("cpus:1;cpus:2", "twice"),
            (":1", "no resource name"),
        ] {
            match parse_scalars(bad) {
                Ok(p) => panic!("{bad:?} parsed as {p:?}"),
                Err(e) => assert!(e.contains(says), "{bad:?}: {e}"),
            }
        }
    }

    #[test]
    fn quotas_render_as_a_table() {
        let quota = pb::QuotaConfig {
            role: "eng/ml".into(),
            guarantee: parse_scalars("cpus:4;mem:4096").unwrap().0,
            limit: vec![],
        };
        assert_eq!(
            render(&[quota]),
            "ROLE    GUARANTEE        LIMIT\neng/ml  cpus:4;mem:4096  unlimited\n"
        );
    }
}
