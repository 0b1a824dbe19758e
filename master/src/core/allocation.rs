//! Builds the allocator's input from the core, runs one pass, and turns the grants
//! into offers.

use std::collections::{BTreeMap, HashMap};

use agora_core::Resources;
use agora_proto as pb;
use tokio::time::Instant;

use super::{FrameworkEntry, MasterCore};
use crate::allocator::{
    self, AgentInput, AllocationInput, FilterLookup, FrameworkInput, FrameworkRole, MinAllocatable,
    RoleInput,
};

/// The frameworks' decline filters, as the allocator reads them. Expired filters are
/// pruned before each pass, so any filter left holds.
struct CoreFilters<'c>(&'c HashMap<String, FrameworkEntry>);

impl FilterLookup for CoreFilters<'_> {
    fn refused(&self, framework: &str, role: &str, agent: &str) -> Option<&Resources> {
        self.0
            .get(framework)?
            .filters
            .get(&(agent.to_string(), role.to_string()))
            .map(|(_, refused)| refused)
    }
}

impl MasterCore {
    /// What a framework holds (live tasks and outstanding offers), by role.
    fn allocated_by_role(&self, fw: &FrameworkEntry) -> BTreeMap<String, Resources> {
        let mut by_role = fw.used_by_role();
        if let [role] = fw.roles.as_slice() {
            if let Some(offered) = self.offers.offered_to_framework(fw.id()) {
                by_role.entry(role.clone()).or_default().add(offered);
            }
            return by_role;
        }
        for offer_id in self.offers.ids_for_framework(fw.id()) {
            if let Some(offer) = self.offers.get(&offer_id) {
                by_role
                    .entry(offer.role.clone())
                    .or_default()
                    .add(&offer.resources);
            }
        }
        by_role
    }

    /// One allocation pass over every connected, reachable agent.
    pub(super) fn allocate(&mut self) {
        let started = std::time::Instant::now();
        let now = Instant::now();
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|_, (until, _)| *until > now);
        }
        if !self
            .frameworks
            .values()
            .any(|f| f.connection.is_some() && f.suppressed_roles.len() < f.roles.len())
        {
            return;
        }
        // Sorted by id so a pass is deterministic.
        let mut agents: Vec<(&str, Resources)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.reachable && a.connection.is_some())
            .map(|(id, a)| (id.as_str(), a.available(&self.offers)))
            .filter(|(_, available)| allocator::is_allocatable(available))
            .collect();
        agents.sort_by(|a, b| a.0.cmp(b.0));
        if agents.is_empty() {
            return;
        }
        let agent_inputs: Vec<AgentInput<'_>> = agents
            .iter()
            .map(|(id, available)| AgentInput {
                id,
                available,
                draining: self.draining_agents.contains(*id),
            })
            .collect();
        // Every framework, connected or not: what the disconnected ones hold still
        // counts toward their roles' shares.
        let allocations: Vec<(&FrameworkEntry, BTreeMap<String, Resources>)> = self
            .frameworks
            .values()
            .map(|fw| (fw, self.allocated_by_role(fw)))
            .collect();
        let framework_inputs: Vec<FrameworkInput<'_>> = allocations
            .iter()
            .map(|(fw, allocated)| FrameworkInput {
                id: fw.id(),
                active: fw.connection.is_some(),
                has_filters: !fw.filters.is_empty(),
                roles: fw
                    .roles
                    .iter()
                    .map(|role| FrameworkRole {
                        role: role.as_str(),
                        suppressed: fw.suppressed_roles.contains(role),
                        allocated: allocated.get(role).unwrap_or(&self.nothing),
                    })
                    .collect(),
            })
            .collect();
        let role_names: std::collections::BTreeSet<&str> = self
            .weights
            .keys()
            .chain(self.quotas.keys())
            .map(String::as_str)
            .collect();
        let role_inputs: Vec<RoleInput<'_>> = role_names
            .into_iter()
            .map(|name| {
                let quota = self.quotas.get(name);
                RoleInput {
                    name,
                    weight: self.role_weight(name),
                    guarantee: quota.map(|q| &q.guarantee),
                    limit: quota
                        .map(|q| q.limit.iter().map(|(n, v)| (n.as_str(), *v)).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let input = AllocationInput {
            cluster_total: &self.cluster_total,
            agents: &agent_inputs,
            frameworks: &framework_inputs,
            roles: &role_inputs,
            min_allocatable: MinAllocatable::default(),
        };
        let grants: Vec<(String, String, String, Resources)> =
            allocator::allocate(&input, &CoreFilters(&self.frameworks))
                .into_iter()
                .filter_map(|g| {
                    let fw = framework_inputs.get(g.framework)?;
                    Some((
                        fw.id.to_string(),
                        fw.roles.get(g.role)?.role.to_string(),
                        agent_inputs.get(g.agent)?.id.to_string(),
                        g.resources,
                    ))
                })
                .collect();
        drop(framework_inputs);
        drop(allocations);

        let mut by_framework: BTreeMap<String, Vec<pb::Offer>> = BTreeMap::new();
        for (framework_id, role, agent_id, resources) in grants {
            let offer = self
                .offers
                .issue(&framework_id, &agent_id, &role, resources);
            if let Some(timeout) = self.timings.offer_timeout {
                self.set_timer(
                    now + timeout,
                    super::Timer::OfferTimeout {
                        offer_id: offer.offer_id.clone(),
                    },
                );
            }
            let agent = &self.agents[&agent_id];
            by_framework
                .entry(framework_id.clone())
                .or_default()
                .push(pb::Offer {
                    id: Some(pb::OfferId {
                        value: offer.offer_id.clone(),
                    }),
                    framework_id: Some(pb::FrameworkId {
                        value: framework_id,
                    }),
                    agent_id: Some(pb::AgentId { value: agent_id }),
                    hostname: agent.info.hostname.clone(),
                    resources: offer.resources.to_proto(),
                    attributes: agent.info.attributes.clone(),
                    role,
                });
        }
        let offered: usize = by_framework.values().map(Vec::len).sum();
        for (framework_id, offers) in by_framework {
            self.send_event(
                &framework_id,
                pb::event::Event::Offers(pb::event::Offers { offers }),
            );
        }
        self.metrics.allocation_runs.inc();
        self.metrics.offers_sent.inc_by(offered as u64);
        self.metrics
            .allocation_seconds
            .observe(started.elapsed().as_secs_f64());
        if offered > 0 {
            self.view_dirty = true;
        }
    }
}
