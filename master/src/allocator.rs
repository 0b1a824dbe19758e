//! The first allocator: dominant resource fairness between frameworks. Pure: it reads a
//! picture of the cluster and says who gets what; the core turns that into offers.
//!
//! Each pass walks the agents that have resources to give and hands all of an agent's
//! available resources to the eligible framework with the lowest dominant share (its
//! largest fraction of any scalar resource of the cluster), as Mesos does. Frameworks
//! that are disconnected, suppressed, or have a live decline filter for the agent are
//! not eligible. An agent's leftover smaller than Mesos' minimum allocatable
//! (0.01 cpus or 32 MB of memory) is not offered.
//!
//! Roles with weights, quotas and reservations, and the hierarchical sorter, come with
//! the full allocator; this one gives each framework its first role.

use agora_core::Resources;

/// Mesos' `--min_allocatable_resources` default: `cpus:0.01|mem:32`.
const MIN_CPUS: f64 = 0.01;
const MIN_MEM: f64 = 32.0;

/// An agent as the allocator sees it.
pub struct AgentSlot<'a> {
    pub agent_id: &'a str,
    /// Resources neither used by tasks nor outstanding in offers.
    pub available: &'a Resources,
}

/// A framework as the allocator sees it.
pub struct FrameworkSlot<'a> {
    pub framework_id: &'a str,
    /// The role its offers are made for.
    pub role: &'a str,
    /// Resources it holds now (tasks and outstanding offers); grows during a pass.
    pub allocated: Resources,
    /// Connected and not suppressed.
    pub active: bool,
}

/// One grant: `resources` of agent `agent` to framework `framework` (indices into the
/// slices given to [`allocate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub framework: usize,
    pub agent: usize,
    pub resources: Resources,
}

/// Whether a leftover is worth offering.
pub fn is_allocatable(r: &Resources) -> bool {
    r.cpus() >= MIN_CPUS || r.mem() >= MIN_MEM
}

/// The dominant share of `allocated` in a cluster of `total`.
pub fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    total
        .scalar_names()
        .into_iter()
        .map(|name| {
            let t = total.scalar(name);
            if t > 0.0 {
                allocated.scalar(name) / t
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

/// One allocation pass. Each agent is granted to at most one framework.
/// `refuses(framework_id, agent_id, offerable)` says whether a decline filter holds
/// those resources of the agent back from the framework.
pub fn allocate(
    total: &Resources,
    agents: &[AgentSlot<'_>],
    frameworks: &mut [FrameworkSlot<'_>],
    refuses: impl Fn(&str, &str, &Resources) -> bool,
) -> Vec<Grant> {
    let mut grants = Vec::new();
    for (agent_index, agent) in agents.iter().enumerate() {
        let mut best: Option<(f64, usize, Resources)> = None;
        for (fw_index, fw) in frameworks.iter().enumerate() {
            if !fw.active {
                continue;
            }
            let offerable = agent.available.allocatable_to(fw.role);
            if !is_allocatable(&offerable) || refuses(fw.framework_id, agent.agent_id, &offerable) {
                continue;
            }
            let share = dominant_share(&fw.allocated, total);
            // Ties go to the earlier framework, which keeps a pass deterministic.
            if best.as_ref().is_none_or(|(s, _, _)| share < *s) {
                best = Some((share, fw_index, offerable));
            }
        }
        if let Some((_, fw_index, resources)) = best {
            frameworks[fw_index].allocated.add(&resources);
            grants.push(Grant {
                framework: fw_index,
                agent: agent_index,
                resources,
            });
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn lowest_dominant_share_wins_each_agent() {
        let a1 = r("cpus:4;mem:4096");
        let a2 = r("cpus:4;mem:4096");
        let total = r("cpus:8;mem:8192");
        let agents = [
            AgentSlot {
                agent_id: "a1",
                available: &a1,
            },
            AgentSlot {
                agent_id: "a2",
                available: &a2,
            },
        ];
        let mut fws = [
            FrameworkSlot {
                framework_id: "f1",
                role: "*",
                allocated: r("cpus:2"),
                active: true,
            },
            FrameworkSlot {
                framework_id: "f2",
                role: "*",
                allocated: Resources::new(),
                active: true,
            },
        ];
        let grants = allocate(&total, &agents, &mut fws, |_, _, _| false);
        // f2 (share 0) takes a1; then f1 (0.25) is below f2 (0.5) and takes a2.
        assert_eq!(grants.len(), 2);
        assert_eq!((grants[0].framework, grants[0].agent), (1, 0));
        assert_eq!((grants[1].framework, grants[1].agent), (0, 1));
    }

    #[test]
    fn inactive_filtered_and_tiny_are_skipped() {
        let tiny = r("cpus:0.001;mem:1");
        let big = r("cpus:1;mem:64");
        let total = r("cpus:2;mem:128");
        let agents = [
            AgentSlot {
                agent_id: "tiny",
                available: &tiny,
            },
            AgentSlot {
                agent_id: "big",
                available: &big,
            },
        ];
        let mut fws = [
            FrameworkSlot {
                framework_id: "f1",
                role: "*",
                allocated: Resources::new(),
                active: false,
            },
            FrameworkSlot {
                framework_id: "f2",
                role: "*",
                allocated: Resources::new(),
                active: true,
            },
        ];
        assert!(allocate(&total, &agents, &mut fws, |f, a, _| f == "f2" && a == "big").is_empty());
    }
}
