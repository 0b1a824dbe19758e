//! Roles as the operator sees them: weights, quotas, and each role's allocation.
//!
//! Weights and quotas are durable (the registry's `SetWeight`, `SetQuota` and
//! `RemoveQuota`); the core keeps a copy in [`MasterCore::weights`] and
//! [`MasterCore::quotas`] for the allocation pass, loaded in `recover` and changed
//! only after the registry acknowledged the write, so the copy never holds what a
//! new leader would not.
//!
//! Validation is pure (`quota_from_config`, `weights_from_request`) so the rules are
//! tested without a master: role names as `agora_core::limits::role_name` has them,
//! quotas of unreserved scalars only, each name once, finite and not negative, every
//! guarantee within its limit, weights above 0 and finite.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use agora_core::Resources;
use agora_core::limits::{self, LimitError};
use agora_core::resources::UNRESERVED_ROLE;
use agora_proto as pb;
use slog::info;
use tokio::sync::oneshot;
use tonic::Status;

use super::MasterCore;
use crate::registry::{RegistryError, RegistryOp};

/// Most weights one SetWeights call may carry.
pub(crate) const MAX_WEIGHTS_PER_REQUEST: usize = 1000;

/// A role's quota as the allocator reads it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RoleQuota {
    /// Unreserved scalars the role (with its descendants) is guaranteed; every entry's
    /// role is `*` and no name exceeds its `limit`.
    pub guarantee: Resources,
    /// Scalar name → the most of it the role (with its descendants) may hold, in the
    /// same thousandths as `Resources`. A name absent is unlimited. A map rather than
    /// `Resources` because a limit of 0 is meaningful and `Resources` drops zeros.
    pub limit: BTreeMap<String, f64>,
}

impl RoleQuota {
    /// The quota as the operator API shows it.
    pub(crate) fn to_config(&self, role: &str) -> pb::QuotaConfig {
        pb::QuotaConfig {
            role: role.to_string(),
            guarantee: self.guarantee.to_proto(),
            limit: self
                .limit
                .iter()
                .map(|(name, amount)| scalar_resource(name, *amount))
                .collect(),
        }
    }

    /// The record the registry keeps (the same resources as [`RoleQuota::to_config`]).
    fn to_record(&self, role: &str) -> pb::QuotaRecord {
        let config = self.to_config(role);
        pb::QuotaRecord {
            role: config.role,
            guarantee: config.guarantee,
            limit: config.limit,
        }
    }
}

fn scalar_resource(name: &str, amount: f64) -> pb::Resource {
    pb::Resource {
        name: name.to_string(),
        role: UNRESERVED_ROLE.to_string(),
        reservation: None,
        value: Some(pb::resource::Value::Scalar(amount)),
    }
}

fn invalid(e: LimitError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A role quotas and reservations can name: valid, and not `*`.
fn specific_role(field: &str, role: &str) -> Result<(), LimitError> {
    limits::role_name(field, role)?;
    if role == UNRESERVED_ROLE {
        return Err(LimitError::new(
            field,
            "'*' is every role; name a specific role",
        ));
    }
    Ok(())
}

/// Checks one list of quota resources and returns each name's amount (in `Resources`'
/// thousandths). Only unreserved scalars, each name once.
fn quota_scalars(
    field: &str,
    resources: &[pb::Resource],
) -> Result<Vec<(String, Resources)>, LimitError> {
    limits::count(field, resources.len(), limits::MAX_RESOURCES)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(resources.len());
    for resource in resources {
        let name = resource.name.trim();
        if !matches!(resource.value, Some(pb::resource::Value::Scalar(_))) {
            return Err(LimitError::new(
                field,
                format!("'{name}' is not a scalar: quotas are of scalars such as cpus, mem, disk"),
            ));
        }
        if !(resource.role.is_empty() || resource.role == UNRESERVED_ROLE)
            || resource.reservation.is_some()
        {
            return Err(LimitError::new(
                field,
                format!(
                    "'{name}' names role '{}': a quota is of unreserved resources, its role is the quota's",
                    resource.role
                ),
            ));
        }
        let amount = Resources::from_proto(std::slice::from_ref(resource))
            .map_err(|e| LimitError::new(field, e.to_string()))?;
        if !seen.insert(name.to_string()) {
            return Err(LimitError::new(field, format!("'{name}' is given twice")));
        }
        out.push((name.to_string(), amount));
    }
    Ok(out)
}

/// Checks a quota from the operator API: role, resources, guarantee ≤ limit.
pub(crate) fn quota_from_config(config: &pb::QuotaConfig) -> Result<RoleQuota, Status> {
    specific_role("quota.role", &config.role).map_err(invalid)?;
    let mut guarantee = Resources::new();
    for (_, amount) in quota_scalars("quota.guarantee", &config.guarantee).map_err(invalid)? {
        guarantee.add(&amount);
    }
    let mut limit = BTreeMap::new();
    for (name, amount) in quota_scalars("quota.limit", &config.limit).map_err(invalid)? {
        limit.insert(name.clone(), amount.scalar(&name));
    }
    for (name, most) in &limit {
        let wanted = guarantee.scalar(name);
        if wanted > *most {
            return Err(Status::invalid_argument(format!(
                "quota.guarantee: {name} {wanted} exceeds the limit of {most} (quota.limit)"
            )));
        }
    }
    Ok(RoleQuota { guarantee, limit })
}

/// Checks a SetWeights request: each role once, valid, with a weight above 0.
pub(crate) fn weights_from_request(
    weights: &[pb::RoleWeight],
) -> Result<Vec<(String, f64)>, Status> {
    if weights.is_empty() {
        return Err(Status::invalid_argument(
            "weights: give at least one role=weight",
        ));
    }
    limits::count("weights", weights.len(), MAX_WEIGHTS_PER_REQUEST).map_err(invalid)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        limits::role_name(&format!("weights[{i}].role"), &w.role).map_err(invalid)?;
        limits::role_weight(&format!("weights[{i}].weight"), w.weight).map_err(invalid)?;
        if !seen.insert(w.role.as_str()) {
            return Err(Status::invalid_argument(format!(
                "weights[{i}].role: '{}' is given twice",
                w.role
            )));
        }
        out.push((w.role.clone(), w.weight));
    }
    Ok(out)
}

/// `role` and its ancestors, nearest first: `eng/ml/x`, `eng/ml`, `eng`. `*` has none.
pub(crate) fn role_and_ancestors(role: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(role);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rsplit_once('/').map(|(parent, _)| parent);
        Some(current)
    })
}

/// The largest fraction of any scalar of `total` that `allocated` holds.
fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    total
        .scalar_names()
        .into_iter()
        .map(|name| {
            let whole = total.scalar(name);
            if whole > 0.0 {
                allocated.scalar(name) / whole
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

/// A registry refusal as the operator sees it.
pub(crate) fn registry_status(e: RegistryError) -> Status {
    match e {
        RegistryError::Rejected(why) => Status::failed_precondition(why),
        other => Status::unavailable(format!("registry write failed: {other}")),
    }
}

/// The operator's role commands (see [`super::Command::Roles`]).
pub(crate) enum RolesCommand {
    SetQuota {
        quota: pb::QuotaConfig,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    RemoveQuota {
        role: String,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    GetQuotas {
        reply: oneshot::Sender<Result<Vec<pb::QuotaConfig>, Status>>,
    },
    SetWeights {
        weights: Vec<pb::RoleWeight>,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    GetWeights {
        reply: oneshot::Sender<Result<Vec<pb::RoleWeight>, Status>>,
    },
    GetRoles {
        reply: oneshot::Sender<Result<Vec<pb::RoleSummary>, Status>>,
    },
}

impl MasterCore {
    pub(super) async fn roles_command(&mut self, command: RolesCommand) {
        match command {
            RolesCommand::SetQuota { quota, reply } => {
                let _ = reply.send(self.set_quota(quota).await);
            }
            RolesCommand::RemoveQuota { role, reply } => {
                let _ = reply.send(self.remove_quota(role).await);
            }
            RolesCommand::GetQuotas { reply } => {
                let quotas = self
                    .quotas
                    .iter()
                    .map(|(role, quota)| quota.to_config(role))
                    .collect();
                let _ = reply.send(Ok(quotas));
            }
            RolesCommand::SetWeights { weights, reply } => {
                let _ = reply.send(self.set_weights(weights).await);
            }
            RolesCommand::GetWeights { reply } => {
                let weights = self
                    .weights
                    .iter()
                    .map(|(role, weight)| pb::RoleWeight {
                        role: role.clone(),
                        weight: *weight,
                    })
                    .collect();
                let _ = reply.send(Ok(weights));
            }
            RolesCommand::GetRoles { reply } => {
                let _ = reply.send(Ok(self.role_summaries()));
            }
        }
    }

    /// A role's weight: 1 unless the operator set another.
    pub(crate) fn role_weight(&self, role: &str) -> f64 {
        self.weights.get(role).copied().unwrap_or(1.0)
    }

    /// Loads weights and quotas from the registry. Records the registry accepted are
    /// valid; one that no longer parses (a rule tightened since) is skipped, loudly,
    /// rather than keeping the master from starting.
    pub(super) fn recover_roles(
        &mut self,
        weights: &BTreeMap<String, f64>,
        quotas: &BTreeMap<String, pb::QuotaRecord>,
    ) {
        self.weights = weights
            .iter()
            .filter(|(role, weight)| {
                limits::role_name("weight", role).is_ok()
                    && limits::role_weight("weight", **weight).is_ok()
            })
            .map(|(role, weight)| (role.clone(), *weight))
            .collect();
        self.quotas.clear();
        for (role, record) in quotas {
            let config = pb::QuotaConfig {
                role: role.clone(),
                guarantee: record.guarantee.clone(),
                limit: record.limit.clone(),
            };
            match quota_from_config(&config) {
                Ok(quota) => {
                    self.quotas.insert(role.clone(), quota);
                }
                Err(e) => {
                    slog::error!(self.logger, "a quota in the registry is invalid; ignoring it";
                    "role" => role, "error" => e.message())
                }
            }
        }
    }

    async fn set_quota(&mut self, config: pb::QuotaConfig) -> Result<(), Status> {
        let quota = quota_from_config(&config)?;
        let role = config.role;
        self.registry
            .apply(RegistryOp::SetQuota(quota.to_record(&role)))
            .await
            .map_err(registry_status)?;
        info!(self.logger, "quota set"; "role" => &role,
            "guarantee" => %quota.guarantee, "limit" => ?quota.limit);
        self.quotas.insert(role, quota);
        self.allocation_needed = true;
        Ok(())
    }

    async fn remove_quota(&mut self, role: String) -> Result<(), Status> {
        specific_role("role", &role).map_err(invalid)?;
        if !self.quotas.contains_key(&role) {
            return Err(Status::not_found(format!("role '{role}' has no quota")));
        }
        self.registry
            .apply(RegistryOp::RemoveQuota { role: role.clone() })
            .await
            .map_err(registry_status)?;
        info!(self.logger, "quota removed"; "role" => &role);
        self.quotas.remove(&role);
        self.allocation_needed = true;
        Ok(())
    }

    /// Sets every weight of the request. They are checked first, so a bad one changes
    /// nothing; the writes then go to the registry together (one raft round rather
    /// than one per role). Should one fail, the others stand and the error says so.
    async fn set_weights(&mut self, weights: Vec<pb::RoleWeight>) -> Result<(), Status> {
        let weights = weights_from_request(&weights)?;
        let mut writes = tokio::task::JoinSet::new();
        for (index, (role, weight)) in weights.iter().enumerate() {
            let registry = self.registry.clone();
            let op = RegistryOp::SetWeight {
                role: role.clone(),
                weight: *weight,
            };
            writes.spawn(async move { (index, registry.apply(op).await) });
        }
        let mut failed = Vec::new();
        while let Some(done) = writes.join_next().await {
            match done {
                Ok((index, Ok(()))) => {
                    if let Some((role, weight)) = weights.get(index) {
                        if *weight == 1.0 {
                            self.weights.remove(role);
                        } else {
                            self.weights.insert(role.clone(), *weight);
                        }
                    }
                }
                Ok((index, Err(e))) => {
                    let role = weights.get(index).map(|(r, _)| r.as_str()).unwrap_or("?");
                    failed.push((role.to_string(), registry_status(e)));
                }
                Err(e) => failed.push(("?".into(), Status::internal(e.to_string()))),
            }
        }
        self.allocation_needed = true;
        info!(self.logger, "weights set"; "roles" => weights.len(), "failed" => failed.len());
        match failed.into_iter().next() {
            None => Ok(()),
            Some((role, status)) => Err(Status::new(
                status.code(),
                format!(
                    "the weight of role '{role}' was not recorded ({}); weights of the \
                     other roles may have been: set them again",
                    status.message()
                ),
            )),
        }
    }

    /// Every known role with its weight, quota, frameworks and allocation. A role's
    /// allocation includes its descendants' (`eng` holds what `eng/ml` holds), as in
    /// hierarchical DRF and Mesos' quota accounting. Tasks count for their framework's
    /// offer role; offers for the role they were made to.
    pub(crate) fn role_summaries(&self) -> Vec<pb::RoleSummary> {
        let mut frameworks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut used: BTreeMap<String, Resources> = BTreeMap::new();
        let mut offered: BTreeMap<String, Resources> = BTreeMap::new();
        for (id, fw) in &self.frameworks {
            if fw.info.roles.is_empty() {
                frameworks
                    .entry(UNRESERVED_ROLE.to_string())
                    .or_default()
                    .push(id.clone());
            }
            for role in &fw.info.roles {
                frameworks.entry(role.clone()).or_default().push(id.clone());
            }
            for (framework_role, held) in fw.used_by_role() {
                for role in role_and_ancestors(&framework_role) {
                    used.entry(role.to_string()).or_default().add(&held);
                }
            }
            for offer_id in self.offers.ids_for_framework(id) {
                if let Some(offer) = self.offers.get(&offer_id) {
                    for role in role_and_ancestors(&offer.role) {
                        offered
                            .entry(role.to_string())
                            .or_default()
                            .add(&offer.resources);
                    }
                }
            }
        }
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut note = |role: &str| {
            for r in role_and_ancestors(role) {
                known.insert(r.to_string());
            }
        };
        frameworks.keys().for_each(|r| note(r));
        self.weights.keys().for_each(|r| note(r));
        self.quotas.keys().for_each(|r| note(r));
        used.keys().for_each(|r| note(r));
        offered.keys().for_each(|r| note(r));
        for agent in self.agents.values() {
            for (key, _) in agent.total.iter() {
                if key.role != UNRESERVED_ROLE {
                    note(&key.role);
                }
            }
        }
        known
            .into_iter()
            .map(|role| {
                let used = used.get(&role).cloned().unwrap_or_default();
                let offered = offered.get(&role).cloned().unwrap_or_default();
                let mut allocated = used.clone();
                allocated.add(&offered);
                let mut ids = frameworks.remove(&role).unwrap_or_default();
                ids.sort_unstable();
                pb::RoleSummary {
                    weight: self.role_weight(&role),
                    quota: self.quotas.get(&role).map(|q| q.to_config(&role)),
                    frameworks: ids
                        .into_iter()
                        .map(|value| pb::FrameworkId { value })
                        .collect(),
                    dominant_share: dominant_share(&allocated, &self.cluster_total),
                    allocated: allocated.to_proto(),
                    used: used.to_proto(),
                    offered: offered.to_proto(),
                    role,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(name: &str, amount: f64) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            role: String::new(),
            reservation: None,
            value: Some(pb::resource::Value::Scalar(amount)),
        }
    }

    fn config(
        role: &str,
        guarantee: Vec<pb::Resource>,
        limit: Vec<pb::Resource>,
    ) -> pb::QuotaConfig {
        pb::QuotaConfig {
            role: role.into(),
            guarantee,
            limit,
        }
    }

    fn refused(config: &pb::QuotaConfig) -> String {
        let status = quota_from_config(config).expect_err("the quota is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_string()
    }

    #[test]
    fn a_quota_round_trips_with_zero_limits() {
        let quota = quota_from_config(&config(
            "eng/ml",
            vec![scalar("cpus", 4.0), scalar("mem", 4096.0)],
            vec![scalar("cpus", 8.0), scalar("gpus", 0.0)],
        ))
        .expect("a valid quota");
        assert_eq!(quota.guarantee.cpus(), 4.0);
        assert_eq!(quota.limit.get("gpus"), Some(&0.0));
        assert_eq!(quota.limit.get("mem"), None, "mem is unlimited");
        let shown = quota.to_config("eng/ml");
        assert_eq!(
            quota_from_config(&shown).expect("shown quota is valid"),
            quota
        );
        let record = quota.to_record("eng/ml");
        limits::quota_record(&record).expect("the registry accepts the record");
    }

    #[test]
    fn bad_quotas_name_the_field() {
        let ok = || vec![scalar("cpus", 1.0)];
        assert!(refused(&config("*", ok(), vec![])).starts_with("quota.role"));
        assert!(refused(&config("", ok(), vec![])).starts_with("quota.role"));
        assert!(refused(&config("eng//ml", ok(), vec![])).starts_with("quota.role"));
        let e = refused(&config("eng", vec![scalar("cpus", -1.0)], vec![]));
        assert!(
            e.starts_with("quota.guarantee") && e.contains("negative"),
            "{e}"
        );
        let e = refused(&config("eng", vec![], vec![scalar("cpus", f64::NAN)]));
        assert!(e.starts_with("quota.limit") && e.contains("finite"), "{e}");
        let e = refused(&config("eng", vec![], vec![scalar("cpus", f64::INFINITY)]));
        assert!(e.starts_with("quota.limit"), "{e}");
        let e = refused(&config(
            "eng",
            vec![scalar("cpus", 1.0), scalar("cpus", 2.0)],
            vec![],
        ));
        assert!(e.contains("twice"), "{e}");
        let mut reserved = scalar("cpus", 1.0);
        reserved.role = "eng".into();
        let e = refused(&config("eng", vec![reserved], vec![]));
        assert!(e.contains("unreserved"), "{e}");
        let ports = pb::Resource {
            name: "ports".into(),
            value: Some(pb::resource::Value::Ranges(pb::Ranges { range: vec![] })),
            ..Default::default()
        };
        let e = refused(&config("eng", vec![ports], vec![]));
        assert!(e.contains("not a scalar"), "{e}");
        let e = refused(&config(
            "eng",
            vec![scalar("cpus", 4.0)],
            vec![scalar("cpus", 2.0)],
        ));
        assert!(
            e.starts_with("quota.guarantee") && e.contains("exceeds the limit"),
            "{e}"
        );
    }

    #[test]
    fn weights_are_checked_whole() {
        let w = |role: &str, weight: f64| pb::RoleWeight {
            role: role.into(),
            weight,
        };
        assert_eq!(
            weights_from_request(&[w("eng", 2.0), w("*", 0.5)]).unwrap(),
            vec![("eng".to_string(), 2.0), ("*".to_string(), 0.5)]
        );
        for (bad, says) in [
            (vec![], "at least one"),
            (vec![w("eng", 0.0)], "weights[0].weight"),
            (vec![w("eng", -1.0)], "weights[0].weight"),
            (vec![w("eng", f64::NAN)], "weights[0].weight"),
            (vec![w("eng", f64::INFINITY)], "weights[0].weight"),
            (vec![w("eng", 1.0), w("bad role", 1.0)], "weights[1].role"),
            (vec![w("eng", 1.0), w("eng", 2.0)], "twice"),
        ] {
            let status = weights_from_request(&bad).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(says), "{}", status.message());
        }
    }

    #[test]
    fn ancestors_nearest_first() {
        assert_eq!(
            role_and_ancestors("eng/ml/x").collect::<Vec<_>>(),
            vec!["eng/ml/x", "eng/ml", "eng"]
        );
        assert_eq!(role_and_ancestors("*").collect::<Vec<_>>(), vec!["*"]);
    }
}
