//! The allocation benchmark, in the shape of Mesos' HierarchicalAllocator benchmark:
//! N agents × M frameworks, one full allocation pass (every agent is offered), no
//! outstanding offers or tasks. Prints the median of a few passes for each size, in
//! four variants:
//! - `plain`: one role, no filters (Mesos' numbers: ≈0.4 s, ≈1.1 s and ≈3.8 s for the
//!   first three sizes; the target here is ≤ 20 ms, 50 ms, 190 ms and 1 s);
//! - `filters`: every framework has a live filter refusing everything on 10% of the
//!   agents (looked up by id through hash maps, as the core does);
//! - `quotas`: 10 roles, each guaranteed 5% of the cluster's cpus and memory, the
//!   frameworks spread over them;
//! - `both`: filters and quotas.
//!
//! Run with `cargo bench -p agora-master --bench allocator`. Only the pass is timed:
//! building the input from the master's state is not.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_core::Resources;
use agora_master::allocator::{
    AgentInput, AllocationInput, FilterLookup, FrameworkInput, FrameworkRole, MinAllocatable,
    NoFilters, RoleInput, allocate,
};

const SIZES: [(usize, usize); 4] = [
    (5_000, 500),
    (10_000, 1_000),
    (20_000, 2_000),
    (50_000, 5_000),
];
const QUOTA_ROLES: usize = 10;
/// Mesos' benchmark agents.
const AGENT: &str = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";

/// Framework `f` refuses all of agent `a` for a pseudo-random 10% of the pairs: 10% of
/// the agents for every framework, chosen independently of the framework's role (a
/// pattern shared by every framework of a role would make the whole role refuse the
/// same agents, which is the allocator's worst case, not the common one).
struct TenPercent<'a> {
    frameworks: HashMap<&'a str, usize>,
    agents: HashMap<&'a str, usize>,
    refused: &'a Resources,
}

impl FilterLookup for TenPercent<'_> {
    fn refused(&self, framework: &str, _role: &str, agent: &str) -> Option<&Resources> {
        let f = *self.frameworks.get(framework)?;
        let a = *self.agents.get(agent)?;
        mix(f as u64, a as u64)
            .is_multiple_of(10)
            .then_some(self.refused)
    }
}

/// A SplitMix64-style hash of the pair.
fn mix(f: u64, a: u64) -> u64 {
    let mut z = f
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(a.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let agent_resources = Resources::parse(AGENT).expect("benchmark agent resources parse");
    let empty = Resources::new();
    println!("allocator: one full pass, median of several runs");
    println!(
        "{:>16} {:>10} {:>10} {:>10} {:>10}  grants (plain/filters/quotas/both)",
        "agents/fwks", "plain", "filters", "quotas", "both"
    );
    for (n_agents, n_frameworks) in SIZES {
        let runs = if n_agents >= 50_000 { 3 } else { 5 };
        let agent_ids: Vec<String> = (0..n_agents).map(|i| format!("agent-{i:06}")).collect();
        let framework_ids: Vec<String> = (0..n_frameworks)
            .map(|i| format!("framework-{i:05}"))
            .collect();
        let role_names: Vec<String> = (0..QUOTA_ROLES).map(|i| format!("role{i}")).collect();
        let mut total = Resources::new();
        for _ in 0..n_agents {
            total.add(&agent_resources);
        }
        // 5% of the cluster's cpus and memory per role.
        let guarantee =
            Resources::scalars(&[("cpus", total.cpus() * 0.05), ("mem", total.mem() * 0.05)])
                .expect("guarantee");
        let agents: Vec<AgentInput<'_>> = agent_ids
            .iter()
            .map(|id| AgentInput {
                id,
                available: &agent_resources,
                draining: false,
            })
            .collect();
        let frameworks = |filters: bool, quotas: bool| -> Vec<FrameworkInput<'_>> {
            framework_ids
                .iter()
                .enumerate()
                .map(|(i, id)| FrameworkInput {
                    id,
                    active: true,
                    has_filters: filters,
                    roles: vec![FrameworkRole {
                        role: if quotas {
                            &role_names[i % QUOTA_ROLES]
                        } else {
                            "role1"
                        },
                        suppressed: false,
                        allocated: &empty,
                    }],
                })
                .collect()
        };
        let quota_roles: Vec<RoleInput<'_>> = role_names
            .iter()
            .map(|name| RoleInput {
                name,
                weight: 1.0,
                guarantee: Some(&guarantee),
                limit: Vec::new(),
            })
            .collect();
        let ten_percent = TenPercent {
            frameworks: framework_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect(),
            agents: agent_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect(),
            refused: &agent_resources,
        };

        let mut cells = Vec::new();
        let mut counts = Vec::new();
        for (filters, quotas) in [(false, false), (true, false), (false, true), (true, true)] {
            let fws = frameworks(filters, quotas);
            let input = AllocationInput {
                cluster_total: &total,
                agents: &agents,
                frameworks: &fws,
                roles: if quotas { &quota_roles } else { &[] },
                min_allocatable: MinAllocatable::default(),
            };
            let mut samples = Vec::new();
            let mut grants = 0;
            for _ in 0..runs {
                let started = Instant::now();
                let out = if filters {
                    allocate(black_box(&input), &ten_percent)
                } else {
                    allocate(black_box(&input), &NoFilters)
                };
                samples.push(started.elapsed());
                grants = out.len();
                drop(black_box(out));
            }
            cells.push(ms(median(samples)));
            counts.push(grants.to_string());
        }
        println!(
            "{:>16} {:>10} {:>10} {:>10} {:>10}  {}",
            format!("{n_agents}/{n_frameworks}"),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            counts.join("/")
        );
    }
}
