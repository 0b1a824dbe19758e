//! The placement benchmark: one pass of `place` for many apps over a few big agents,
//! the shape of a large deployment (or a restarted apps framework relaunching
//! everything). Prints the median of several passes for each case:
//! - `plain`: 1000 apps × 10 instances, no constraints, over 20 agents;
//! - `unique`: the same, every other app with `["hostname","UNIQUE"]`;
//! - `group_by`: the same, every other app with `["rack","GROUP_BY"]` over 4 racks;
//! - `half running`: `unique`, with 5 of each app's 10 instances already running;
//! - `wide plain` and `wide unique`: 5000 apps × 10 instances over 1000 agents,
//!   without constraints and with every other app `UNIQUE`.
//!
//! The target is a few milliseconds for the 20-agent cases. Run with
//! `cargo bench -p agora-apps --bench placement`. Only the pass is timed: building
//! demands and offers is not.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_apps::model::PathId;
use agora_apps::placement::{
    AgentOffer, Constraint, Demand, Location, Placed, PlacementLimits, Pool, place,
};
use agora_sdk::RangeSet;

const RUNS: usize = 11;

struct Case {
    name: &'static str,
    apps: usize,
    agents: usize,
    /// Every other app gets this constraint.
    constraint: Option<[&'static str; 2]>,
    /// Instances of each app already running (placed round-robin over the agents).
    running: u32,
}

const CASES: [Case; 6] = [
    Case {
        name: "plain",
        apps: 1000,
        agents: 20,
        constraint: None,
        running: 0,
    },
    Case {
        name: "unique",
        apps: 1000,
        agents: 20,
        constraint: Some(["hostname", "UNIQUE"]),
        running: 0,
    },
    Case {
        name: "group_by",
        apps: 1000,
        agents: 20,
        constraint: Some(["rack", "GROUP_BY"]),
        running: 0,
    },
    Case {
        name: "half running",
        apps: 1000,
        agents: 20,
        constraint: Some(["hostname", "UNIQUE"]),
        running: 5,
    },
    Case {
        name: "wide plain",
        apps: 5000,
        agents: 1000,
        constraint: None,
        running: 0,
    },
    Case {
        name: "wide unique",
        apps: 5000,
        agents: 1000,
        constraint: Some(["hostname", "UNIQUE"]),
        running: 0,
    },
];

const INSTANCES: u32 = 10;

fn offers(agents: usize) -> Vec<AgentOffer> {
    (0..agents)
        .map(|i| {
            AgentOffer::new(
                format!("offer-{i}"),
                format!("agent-{i}"),
                format!("host-{i}.example.com"),
                Pool::unreserved(
                    1000.0,
                    1_000_000.0,
                    1_000_000.0,
                    0.0,
                    RangeSet::from_intervals([(31000, 32000)]),
                ),
            )
            .with_attribute("rack", format!("rack-{}", i % 4))
        })
        .collect()
}

fn demands(case: &Case) -> Vec<Demand> {
    (0..case.apps)
        .map(|i| {
            let constraints = match case.constraint {
                Some(parts) if i % 2 == 0 => {
                    let parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                    vec![Constraint::parse(&parts).expect("benchmark constraint parses")]
                }
                _ => Vec::new(),
            };
            Demand {
                app: PathId::parse(&format!("/bench/app-{i}")).expect("benchmark id parses"),
                count: INSTANCES - case.running,
                daemon: false,
                cpus: 100,
                mem: 32_000,
                disk: 0,
                gpus: 0,
                host_ports: vec![None],
                constraints,
                accepted_roles: None,
                role: None,
            }
        })
        .collect()
}

fn placed(case: &Case, offers: &[AgentOffer]) -> Placed {
    let mut placed = Placed::new();
    for (i, demand) in demands(case).iter().enumerate() {
        for k in 0..case.running as usize {
            placed.add(
                demand.app.clone(),
                Location::of(&offers[(i + k) % offers.len()]),
            );
        }
    }
    placed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    println!("placement: one pass, median of {RUNS} runs");
    println!(
        "{:>14} {:>6} {:>7} {:>10} {:>9} {:>11}",
        "case", "apps", "agents", "instances", "launched", "median"
    );
    for case in &CASES {
        let offers = offers(case.agents);
        let demands = demands(case);
        let placed = placed(case, &offers);
        let mut samples = Vec::with_capacity(RUNS);
        let mut launched = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            let outcome = place(
                black_box(&demands),
                black_box(&offers),
                black_box(&placed),
                PlacementLimits::default(),
            );
            samples.push(start.elapsed());
            launched = outcome.launches.len();
            black_box(outcome);
        }
        let wanted: u32 = demands.iter().map(|d| d.count).sum();
        println!(
            "{:>14} {:>6} {:>7} {:>10} {:>9} {:>11}",
            case.name,
            case.apps,
            case.agents,
            wanted,
            launched,
            ms(median(samples))
        );
    }
}
