//! `agora roles`: every role the leader knows, with its weight, quota, allocation and
//! share of the cluster. A role's allocation includes its descendants' (`eng` holds
//! what `eng/ml` holds).

use agora_core::Resources;
use agora_proto as pb;

use super::quota::format_scalars;
use crate::operator_client::{ListArgs, on_leader, print_json};
use crate::table;

/// The scalars of `resources` summed over reservation roles, as `cpus:2;mem:512`.
fn allocation(resources: &[pb::Resource]) -> String {
    let Ok(resources) = Resources::from_proto(resources) else {
        return "?".into();
    };
    let parts: Vec<String> = resources
        .scalar_names()
        .into_iter()
        .map(|name| format!("{name}:{}", resources.scalar(name)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(";")
    }
}

pub fn render(roles: &[pb::RoleSummary]) -> String {
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|r| {
            let (guarantee, limit) = match &r.quota {
                None => ("-".to_string(), "-".to_string()),
                Some(q) => (
                    format_scalars(&q.guarantee),
                    if q.limit.is_empty() {
                        "unlimited".into()
                    } else {
                        format_scalars(&q.limit)
                    },
                ),
            };
            vec![
                r.role.clone(),
                r.weight.to_string(),
                guarantee,
                limit,
                allocation(&r.allocated),
                format!("{:.1}%", r.dominant_share * 100.0),
                r.frameworks.len().to_string(),
            ]
        })
        .collect();
    table::render(
        &[
            "ROLE",
            "WEIGHT",
            "GUARANTEE",
            "LIMIT",
            "ALLOCATED",
            "SHARE",
            "FRAMEWORKS",
        ],
        &rows,
    )
}

pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let (_, answer) = on_leader(&args.master, |mut client| async move {
        client.get_roles(pb::GetRolesRequest {}).await
    })
    .await?;
    if args.json {
        return print_json(&answer.roles);
    }
    print!("{}", render(&answer.roles));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_render_as_a_table() {
        let role = pb::RoleSummary {
            role: "eng".into(),
            weight: 2.0,
            quota: Some(pb::QuotaConfig {
                role: "eng".into(),
                guarantee: super::super::quota::parse_scalars("cpus:1").unwrap().0,
                limit: vec![],
            }),
            frameworks: vec![pb::FrameworkId { value: "f1".into() }],
            allocated: Resources::parse("cpus:0.5;mem:128;ports:[31000-31001]")
                .unwrap()
                .to_proto(),
            dominant_share: 0.125,
            ..Default::default()
        };
        assert_eq!(
            render(&[role]),
            "ROLE  WEIGHT  GUARANTEE  LIMIT      ALLOCATED         SHARE  FRAMEWORKS\n\
             eng   2       cpus:1     unlimited  cpus:0.5;mem:128  12.5%  1\n"
        );
    }
}
