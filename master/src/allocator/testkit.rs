//! Owned clusters for the allocator's tests: build one, run a pass, read the grants
//! by name.

use std::collections::BTreeMap;

use agora_core::Resources;

use super::{
    AgentInput, AllocationInput, FilterLookup, FrameworkInput, FrameworkRole, MinAllocatable,
    RoleInput, allocate,
};

pub(super) fn r(s: &str) -> Resources {
    Resources::parse(s).unwrap_or_else(|e| panic!("bad test resources {s}: {e}"))
}

pub(super) struct Agent {
    pub id: String,
    pub available: Resources,
    pub draining: bool,
}

pub(super) struct Subscription {
    pub role: String,
    pub suppressed: bool,
    pub allocated: Resources,
}

pub(super) struct Framework {
    pub id: String,
    pub active: bool,
    pub roles: Vec<Subscription>,
}

pub(super) struct Role {
    pub name: String,
    pub weight: f64,
    pub guarantee: Option<Resources>,
    pub limit: Vec<(String, f64)>,
}

/// (framework, role, agent) → refused resources.
#[derive(Default)]
pub(super) struct Filters(pub BTreeMap<(String, String, String), Resources>);

impl FilterLookup for Filters {
    fn refused(&self, framework: &str, role: &str, agent: &str) -> Option<&Resources> {
        self.0
            .get(&(framework.to_string(), role.to_string(), agent.to_string()))
    }
}

/// One grant by name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Given {
    pub framework: String,
    pub role: String,
    pub agent: String,
    pub resources: Resources,
}

#[derive(Default)]
pub(super) struct Cluster {
    /// The cluster total; when `None`, the agents' available plus every allocation.
    pub total: Option<Resources>,
    pub agents: Vec<Agent>,
    pub frameworks: Vec<Framework>,
    pub roles: Vec<Role>,
    pub filters: Filters,
    pub min: MinAllocatable,
}

impl Cluster {
    pub fn agent(mut self, id: &str, available: &str) -> Self {
        self.agents.push(Agent {
            id: id.into(),
            available: r(available),
            draining: false,
        });
        self
    }

    /// A framework in one role, holding `allocated`.
    pub fn framework(mut self, id: &str, role: &str, allocated: &str) -> Self {
        self.frameworks.push(Framework {
            id: id.into(),
            active: true,
            roles: vec![Subscription {
                role: role.into(),
                suppressed: false,
                allocated: r(allocated),
            }],
        });
        self
    }

    pub fn role(
        mut self,
        name: &str,
        weight: f64,
        guarantee: Option<&str>,
        limit: &[(&str, f64)],
    ) -> Self {
        self.roles.push(Role {
            name: name.into(),
            weight,
            guarantee: guarantee.map(r),
            limit: limit.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        });
        self
    }

    pub fn total(&self) -> Resources {
        if let Some(total) = &self.total {
            return total.clone();
        }
        let mut total = Resources::new();
        for a in &self.agents {
            total.add(&a.available);
        }
        for f in &self.frameworks {
            for s in &f.roles {
                total.add(&s.allocated);
            }
        }
        total
    }

    pub fn run(&self) -> Vec<Given> {
        let total = self.total();
        let agents: Vec<AgentInput<'_>> = self
            .agents
            .iter()
            .map(|a| AgentInput {
                id: &a.id,
                available: &a.available,
                draining: a.draining,
            })
            .collect();
        let frameworks: Vec<FrameworkInput<'_>> = self
            .frameworks
            .iter()
            .map(|f| FrameworkInput {
                id: &f.id,
                active: f.active,
                has_filters: self.filters.0.keys().any(|(id, _, _)| *id == f.id),
                roles: f
                    .roles
                    .iter()
                    .map(|s| FrameworkRole {
                        role: &s.role,
                        suppressed: s.suppressed,
                        allocated: &s.allocated,
                    })
                    .collect(),
            })
            .collect();
        let roles: Vec<RoleInput<'_>> = self
            .roles
            .iter()
            .map(|r| RoleInput {
                name: &r.name,
                weight: r.weight,
                guarantee: r.guarantee.as_ref(),
                limit: r.limit.iter().map(|(n, v)| (n.as_str(), *v)).collect(),
            })
            .collect();
        let input = AllocationInput {
            cluster_total: &total,
            agents: &agents,
            frameworks: &frameworks,
            roles: &roles,
            min_allocatable: self.min,
        };
        allocate(&input, &self.filters)
            .into_iter()
            .map(|g| Given {
                framework: frameworks[g.framework].id.to_string(),
                role: frameworks[g.framework].roles[g.role].role.to_string(),
                agent: agents[g.agent].id.to_string(),
                resources: g.resources,
            })
            .collect()
    }
}

/// Grants as (framework, agent) pairs, in grant order.
pub(super) fn pairs(given: &[Given]) -> Vec<(&str, &str)> {
    given
        .iter()
        .map(|g| (g.framework.as_str(), g.agent.as_str()))
        .collect()
}

/// What each framework got in total.
pub(super) fn by_framework(given: &[Given]) -> BTreeMap<String, Resources> {
    let mut out: BTreeMap<String, Resources> = BTreeMap::new();
    for g in given {
        out.entry(g.framework.clone())
            .or_default()
            .add(&g.resources);
    }
    out
}
