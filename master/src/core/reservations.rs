//! Dynamic reservations: RESERVE and UNRESERVE offer operations.
//!
//! A reservation turns unreserved resources of an agent into resources of one role
//! (`cpus:1` → `cpus(eng):1`), which from then on are offered only to that role (and
//! its descendants). The master keeps one aggregated record per (agent, role) in the
//! registry, replicated like everything else, and applies them over what the agent
//! reports each time it (re-)registers; the agent itself needs to know nothing, since
//! roles only steer offers.

use std::collections::BTreeMap;

use agora_core::Resources;
use agora_proto as pb;

use super::MasterCore;
use crate::registry::RegistryOp;

/// `resources` with every entry moved to `role` (`*` = unreserved).
pub(crate) fn with_role(resources: &Resources, role: &str) -> Resources {
    let mut entries = resources.to_proto();
    for entry in &mut entries {
        entry.role = role.to_string();
        entry.reservation = None;
    }
    // Moving valid resources to a valid role keeps them valid.
    Resources::from_proto(&entries).unwrap_or_default()
}

/// The roles of `resources`' entries (`*` included).
fn roles_of(resources: &Resources) -> Vec<String> {
    let mut roles: Vec<String> = resources.iter().map(|(key, _)| key.role.clone()).collect();
    roles.sort_unstable();
    roles.dedup();
    roles
}

/// The registry id of the aggregated reservation of `role` on `agent_id`. Ids may
/// not contain `/`, which hierarchical roles do, so the role is hashed (FNV-1a, 64
/// bits); the record itself carries the role, and `reserve` refuses the (absurdly
/// unlikely) case of two roles of one agent sharing a hash.
fn reservation_id(agent_id: &str, role: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in role.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{agent_id}-{hash:016x}")
}

impl MasterCore {
    /// Checks a RESERVE against the offer's role and what is left of the offers, and
    /// applies it to them: the unreserved resources become the role's.
    pub(super) fn reserve(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        offer_role: &str,
        requested: &[pb::Resource],
        remaining: &mut Resources,
    ) -> Result<(), String> {
        let reserved =
            Resources::from_proto(requested).map_err(|e| format!("reserve.resources: {e}"))?;
        if reserved.is_empty() {
            return Err("reserve.resources is empty".into());
        }
        for role in roles_of(&reserved) {
            if role == agora_core::resources::UNRESERVED_ROLE {
                return Err("reserve.resources must name the role to reserve for".into());
            }
            if role != offer_role {
                return Err(format!(
                    "reserve.resources names role '{role}' but the offer was made to role '{offer_role}'"
                ));
            }
        }
        let id = reservation_id(agent_id, offer_role);
        let clash = self
            .reservations
            .get(agent_id)
            .into_iter()
            .flat_map(|roles| roles.keys())
            .any(|role| role != offer_role && reservation_id(agent_id, role) == id);
        if clash {
            return Err(format!(
                "role '{offer_role}' cannot be reserved on this agent (id clash)"
            ));
        }
        let unreserved = with_role(&reserved, agora_core::resources::UNRESERVED_ROLE);
        let mut after = remaining.clone();
        after
            .checked_sub(&unreserved)
            .map_err(|e| format!("the offers do not hold the unreserved {unreserved} ({e})"))?;
        after.add(&reserved);
        *remaining = after;
        self.change_reservation(framework_id, agent_id, offer_role, &unreserved, &reserved);
        Ok(())
    }

    /// Checks an UNRESERVE (the reserved resources must be in the offers, so unused)
    /// and applies it: they become unreserved again.
    pub(super) fn unreserve(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        requested: &[pb::Resource],
        remaining: &mut Resources,
    ) -> Result<(), String> {
        let reserved =
            Resources::from_proto(requested).map_err(|e| format!("unreserve.resources: {e}"))?;
        if reserved.is_empty() {
            return Err("unreserve.resources is empty".into());
        }
        let roles = roles_of(&reserved);
        let [role] = roles.as_slice() else {
            return Err("unreserve.resources must be of exactly one role".into());
        };
        if role == agora_core::resources::UNRESERVED_ROLE {
            return Err("unreserve.resources are not reserved".into());
        }
        let held = self
            .reservations
            .get(agent_id)
            .and_then(|roles| roles.get(role))
            .is_some_and(|r| r.contains(&reserved));
        if !held {
            return Err(format!(
                "agent '{agent_id}' has no dynamic reservation of {reserved} for role '{role}'"
            ));
        }
        let unreserved = with_role(&reserved, agora_core::resources::UNRESERVED_ROLE);
        let mut after = remaining.clone();
        after
            .checked_sub(&reserved)
            .map_err(|e| format!("the offers do not hold {reserved} ({e})"))?;
        after.add(&unreserved);
        *remaining = after;
        let role = role.clone();
        self.change_reservation(framework_id, agent_id, &role, &reserved, &unreserved);
        Ok(())
    }

    /// Moves `from` to `to` in the agent's total and records the role's aggregated
    /// reservation in the registry.
    fn change_reservation(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        from: &Resources,
        to: &Resources,
    ) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.total.sub_saturating(from);
            agent.total.add(to);
        }
        let roles = self.reservations.entry(agent_id.to_string()).or_default();
        let entry = roles.entry(role.to_string()).or_default();
        let reserving = to.iter().any(|(key, _)| key.role == role);
        if reserving {
            entry.add(to);
        } else {
            entry.sub_saturating(from);
        }
        let op = if entry.is_empty() {
            roles.remove(role);
            RegistryOp::RemoveReservation {
                reservation_id: reservation_id(agent_id, role),
            }
        } else {
            RegistryOp::PutReservation(pb::ReservationRecord {
                reservation_id: reservation_id(agent_id, role),
                agent_id: agent_id.to_string(),
                role: role.to_string(),
                principal: self
                    .frameworks
                    .get(framework_id)
                    .map(|f| f.info.principal.clone())
                    .unwrap_or_default(),
                resources: entry.to_proto(),
                labels: None,
            })
        };
        if self
            .reservations
            .get(agent_id)
            .is_some_and(BTreeMap::is_empty)
        {
            self.reservations.remove(agent_id);
        }
        self.deferred_registry_ops.push(op);
        self.recompute_cluster_total();
    }

    /// What an agent reports, with the dynamic reservations the registry holds for it
    /// applied (what no longer fits — the agent shrank — is left unreserved).
    pub(super) fn with_reservations(&self, agent_id: &str, reported: Resources) -> Resources {
        let mut total = reported;
        if let Some(roles) = self.reservations.get(agent_id) {
            for reserved in roles.values() {
                let unreserved = with_role(reserved, agora_core::resources::UNRESERVED_ROLE);
                if total.contains(&unreserved) {
                    total.sub_saturating(&unreserved);
                    total.add(reserved);
                }
            }
        }
        total
    }

    /// Loads the aggregated reservations from the registry after a start.
    pub(super) fn recover_reservations(
        &mut self,
        records: &BTreeMap<String, pb::ReservationRecord>,
    ) {
        for record in records.values() {
            let Ok(resources) = Resources::from_proto(&record.resources) else {
                continue;
            };
            self.reservations
                .entry(record.agent_id.clone())
                .or_default()
                .insert(record.role.clone(), resources);
        }
    }
}
