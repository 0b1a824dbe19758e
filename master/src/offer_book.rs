//! The OfferBook: every outstanding offer, and the resources it holds.
//!
//! An offer's resources belong to its framework until the offer is accepted, declined
//! or rescinded, and then the offer is gone from the book: `take` removes it, so an
//! offer id can be used once. Sums per agent and per framework are kept up to date so
//! that "available = total - used - offered" costs nothing to compute.

use std::collections::{HashMap, HashSet};

use agora_core::Resources;

/// One outstanding offer.
#[derive(Debug, Clone)]
pub struct OutstandingOffer {
    pub offer_id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub role: String,
    pub resources: Resources,
}

#[derive(Default)]
pub struct OfferBook {
    /// offer id → offer.
    offers: HashMap<String, OutstandingOffer>,
    /// framework id → ids of its outstanding offers.
    by_framework: HashMap<String, HashSet<String>>,
    /// agent id → ids of outstanding offers of its resources.
    by_agent: HashMap<String, HashSet<String>>,
    /// agent id → sum of its outstanding offers' resources.
    offered_on_agent: HashMap<String, Resources>,
    /// framework id → sum of resources offered to it.
    offered_to_framework: HashMap<String, Resources>,
    /// Prefix making offer ids unique across master restarts.
    prefix: String,
    /// Next offer sequence number.
    next: u64,
    /// Agents and frameworks whose offered sums changed since the last
    /// [`OfferBook::take_changes`]: the core's view rebuilds only their summaries.
    changed_agents: HashSet<String>,
    changed_frameworks: HashSet<String>,
}

impl OfferBook {
    pub fn new() -> Self {
        Self {
            prefix: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            ..Default::default()
        }
    }

    /// Records a new offer and returns it.
    pub fn issue(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        role: &str,
        resources: Resources,
    ) -> OutstandingOffer {
        self.next += 1;
        let offer_id = format!("{}-O{}", self.prefix, self.next);
        self.by_framework
            .entry(framework_id.to_string())
            .or_default()
            .insert(offer_id.clone());
        self.by_agent
            .entry(agent_id.to_string())
            .or_default()
            .insert(offer_id.clone());
        self.offered_on_agent
            .entry(agent_id.to_string())
            .or_default()
            .add(&resources);
        self.offered_to_framework
            .entry(framework_id.to_string())
            .or_default()
            .add(&resources);
        self.note_change(agent_id, framework_id);
        let offer = OutstandingOffer {
            offer_id: offer_id.clone(),
            framework_id: framework_id.to_string(),
            agent_id: agent_id.to_string(),
            role: role.to_string(),
            resources,
        };
        self.offers.insert(offer_id, offer.clone());
        offer
    }

    pub fn get(&self, offer_id: &str) -> Option<&OutstandingOffer> {
        self.offers.get(offer_id)
    }

    /// Removes an offer (used, declined or rescinded) and returns it.
    pub fn take(&mut self, offer_id: &str) -> Option<OutstandingOffer> {
        let offer = self.offers.remove(offer_id)?;
        self.note_change(&offer.agent_id, &offer.framework_id);
        if let Some(set) = self.by_framework.get_mut(&offer.framework_id) {
            set.remove(offer_id);
            if set.is_empty() {
                self.by_framework.remove(&offer.framework_id);
            }
        }
        if let Some(set) = self.by_agent.get_mut(&offer.agent_id) {
            set.remove(offer_id);
            if set.is_empty() {
                self.by_agent.remove(&offer.agent_id);
            }
        }
        if let Some(sum) = self.offered_on_agent.get_mut(&offer.agent_id) {
            sum.sub_saturating(&offer.resources);
            if sum.is_empty() {
                self.offered_on_agent.remove(&offer.agent_id);
            }
        }
        if let Some(sum) = self.offered_to_framework.get_mut(&offer.framework_id) {
            sum.sub_saturating(&offer.resources);
            if sum.is_empty() {
                self.offered_to_framework.remove(&offer.framework_id);
            }
        }
        Some(offer)
    }

    fn note_change(&mut self, agent_id: &str, framework_id: &str) {
        if !self.changed_agents.contains(agent_id) {
            self.changed_agents.insert(agent_id.to_string());
        }
        if !self.changed_frameworks.contains(framework_id) {
            self.changed_frameworks.insert(framework_id.to_string());
        }
    }

    /// The agents and the frameworks whose offered sums changed since the last call.
    pub fn take_changes(&mut self) -> (HashSet<String>, HashSet<String>) {
        (
            std::mem::take(&mut self.changed_agents),
            std::mem::take(&mut self.changed_frameworks),
        )
    }

    pub fn ids_for_agent(&self, agent_id: &str) -> Vec<String> {
        self.by_agent
            .get(agent_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn ids_for_framework(&self, framework_id: &str) -> Vec<String> {
        self.by_framework
            .get(framework_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn offered_on_agent(&self, agent_id: &str) -> Option<&Resources> {
        self.offered_on_agent.get(agent_id)
    }

    pub fn offered_to_framework(&self, framework_id: &str) -> Option<&Resources> {
        self.offered_to_framework.get(framework_id)
    }

    pub fn len(&self) -> usize {
        self.offers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_taken_once_and_sums_follow() {
        let mut book = OfferBook::new();
        let id = book
            .issue("f1", "a1", "*", Resources::parse("cpus:2").unwrap())
            .offer_id
            .clone();
        assert_eq!(book.offered_on_agent("a1").map(|r| r.cpus()), Some(2.0));
        assert_eq!(book.ids_for_framework("f1"), vec![id.clone()]);
        assert!(book.take(&id).is_some());
        assert!(book.take(&id).is_none());
        assert!(book.offered_on_agent("a1").is_none());
        assert!(book.offered_to_framework("f1").is_none());
        assert!(book.is_empty());
    }

    #[test]
    fn changes_name_whose_offered_sums_moved() {
        let mut book = OfferBook::new();
        let id = book
            .issue("f1", "a1", "*", Resources::parse("cpus:2").unwrap())
            .offer_id;
        book.issue("f2", "a2", "*", Resources::parse("cpus:1").unwrap());
        let (agents, frameworks) = book.take_changes();
        assert_eq!(agents.len(), 2);
        assert!(frameworks.contains("f1") && frameworks.contains("f2"));
        assert_eq!(book.take_changes(), Default::default(), "taken once");
        book.take(&id);
        let (agents, frameworks) = book.take_changes();
        assert_eq!(
            agents.into_iter().collect::<Vec<_>>(),
            vec!["a1".to_string()]
        );
        assert_eq!(
            frameworks.into_iter().collect::<Vec<_>>(),
            vec!["f1".to_string()]
        );
    }
}
