//! Turns allocator grants into offers and sends them.

use std::collections::BTreeMap;

use agora_proto as pb;
use tokio::time::Instant;

use super::MasterCore;
use crate::allocator::{self, AgentSlot, FrameworkSlot};

impl MasterCore {
    /// One allocation pass over every connected, reachable agent.
    pub(super) fn allocate(&mut self) {
        let started = std::time::Instant::now();
        let now = Instant::now();
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|_, (until, _)| *until > now);
        }
        // Sorted by id so a pass is deterministic.
        let mut agents: Vec<(&str, agora_core::Resources)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.reachable && a.connection.is_some())
            .map(|(id, a)| (id.as_str(), a.available(&self.offers)))
            .filter(|(_, available)| allocator::is_allocatable(available))
            .collect();
        agents.sort_by(|a, b| a.0.cmp(b.0));
        let mut framework_ids: Vec<&str> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.connection.is_some() && !f.suppressed)
            .map(|(id, _)| id.as_str())
            .collect();
        framework_ids.sort_unstable();
        if agents.is_empty() || framework_ids.is_empty() {
            return;
        }
        let slots_agents: Vec<AgentSlot<'_>> = agents
            .iter()
            .map(|(id, available)| AgentSlot {
                agent_id: id,
                available,
            })
            .collect();
        let mut slots_frameworks: Vec<FrameworkSlot<'_>> = framework_ids
            .iter()
            .map(|id| {
                let fw = &self.frameworks[*id];
                let mut allocated = fw.used.clone();
                if let Some(offered) = self.offers.offered_to_framework(id) {
                    allocated.add(offered);
                }
                FrameworkSlot {
                    framework_id: id,
                    role: fw.role.as_str(),
                    allocated,
                    active: true,
                }
            })
            .collect();
        // Expired filters were pruned above, so any filter left holds.
        let frameworks = &self.frameworks;
        let grants = allocator::allocate(
            &self.cluster_total,
            &slots_agents,
            &mut slots_frameworks,
            |f, a, offerable| {
                frameworks
                    .get(f)
                    .and_then(|fw| fw.filters.get(a))
                    .is_some_and(|(_, refused)| refused.contains(offerable))
            },
        );
        let grants: Vec<(String, String, String, agora_core::Resources)> = grants
            .into_iter()
            .map(|g| {
                let fw = &slots_frameworks[g.framework];
                (
                    fw.framework_id.to_string(),
                    fw.role.to_string(),
                    slots_agents[g.agent].agent_id.to_string(),
                    g.resources,
                )
            })
            .collect();
        drop(slots_frameworks);

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
