//! Tests of [`place`](fn@super::place): each operator, resource accounting, rejections,
//! daemon apps, and properties over random offers and demands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;
use crate::model::PathId;
use agora_sdk::RangeSet;

fn id(app: &str) -> PathId {
    PathId::parse(app).unwrap()
}

fn pool(cpus: f64, mem: f64, ports: (u64, u64)) -> Pool {
    Pool::unreserved(cpus, mem, 1000.0, 0.0, RangeSet::from_intervals([ports]))
}

/// Agent `a{i}` on host `h{i}`, with plenty of everything.
fn big(i: usize) -> AgentOffer {
    AgentOffer::new(
        format!("o{i}"),
        format!("a{i}"),
        format!("h{i}"),
        pool(100.0, 100_000.0, (31000, 31999)),
    )
}

fn constraint(parts: &[&str]) -> Constraint {
    Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn demand(app: &str, count: u32, constraints: &[&[&str]]) -> Demand {
    Demand {
        app: id(app),
        count,
        daemon: false,
        cpus: 100,
        mem: 32_000,
        disk: 0,
        gpus: 0,
        host_ports: vec![None],
        constraints: constraints.iter().map(|c| constraint(c)).collect(),
        accepted_roles: None,
        role: None,
    }
}

fn run(demands: &[Demand], offers: &[AgentOffer], placed: &Placed) -> PlacementOutcome {
    place(demands, offers, placed, PlacementLimits::default())
}

/// Hostnames of the launches of demand `d`, in order.
fn hosts(outcome: &PlacementOutcome, offers: &[AgentOffer], d: usize) -> Vec<String> {
    outcome
        .launches
        .iter()
        .filter(|l| l.demand == d)
        .map(|l| offers[l.offer].hostname.clone())
        .collect()
}

fn per_value(values: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for v in values {
        *out.entry(v.clone()).or_default() += 1;
    }
    out
}

fn racked(i: usize, rack: &str) -> AgentOffer {
    big(i).with_attribute("rack", rack)
}

fn location(offer: &AgentOffer) -> Location {
    Location::of(offer)
}

#[test]
fn unique_hostname_puts_one_instance_per_agent_and_says_why_the_rest_wait() {
    let offers: Vec<_> = (0..3).map(big).collect();
    let out = run(
        &[demand("/web", 4, &[&["hostname", "UNIQUE"]])],
        &offers,
        &Placed::new(),
    );
    let placed = hosts(&out, &offers, 0);
    assert_eq!(placed.len(), 3);
    assert_eq!(per_value(&placed).len(), 3, "{placed:?}");
    let r = &out.unplaced[&id("/web")];
    assert_eq!((r.placed, r.wanted, r.offers_seen), (3, 4, 3));
    assert_eq!(r.counts.get(reasons::UNFULFILLED_CONSTRAINT), Some(&3));
    assert_eq!(
        r.reason,
        r#"3 of 4 instances placed; no offered agent satisfies ["hostname","UNIQUE"] (3 agents already run one)"#
    );
}

#[test]
fn unique_counts_running_instances() {
    let offers: Vec<_> = (0..3).map(big).collect();
    let mut placed = Placed::new();
    placed.add(id("/web"), location(&offers[1]));
    let out = run(
        &[demand("/web", 2, &[&["@hostname", "UNIQUE"]])],
        &offers,
        &placed,
    );
    let got: BTreeSet<_> = hosts(&out, &offers, 0).into_iter().collect();
    assert_eq!(got, BTreeSet::from(["h0".to_string(), "h2".to_string()]));
    assert!(out.unplaced.is_empty());
}

#[test]
fn unique_on_an_attribute_allows_one_per_value() {
    let offers = vec![racked(0, "r1"), racked(1, "r1"), racked(2, "r2"), big(3)];
    let out = run(
        &[demand("/db", 4, &[&["rack", "UNIQUE"]])],
        &offers,
        &Placed::new(),
    );
    let racks: Vec<String> = out
        .launches
        .iter()
        .map(|l| offers[l.offer].attributes["rack"].clone())
        .collect();
    assert_eq!(
        per_value(&racks),
        BTreeMap::from([("r1".into(), 1), ("r2".into(), 1)])
    );
    let reason = &out.unplaced[&id("/db")].reason;
    assert!(reason.starts_with("2 of 4 instances placed; "), "{reason}");
    assert!(reason.contains(r#"["rack","UNIQUE"]"#), "{reason}");
}

#[test]
fn cluster_with_a_value_uses_only_that_value() {
    let offers = vec![racked(0, "r1"), racked(1, "r2"), racked(2, "r2")];
    let out = run(
        &[demand("/a", 4, &[&["rack", "CLUSTER", "r2"]])],
        &offers,
        &Placed::new(),
    );
    assert_eq!(out.launches.len(), 4);
    assert!(out.launches.iter().all(|l| l.offer != 0));
}

#[test]
fn cluster_without_a_value_pins_to_the_first_instance() {
    let offers: Vec<_> = (0..3).map(big).collect();
    let out = run(
        &[demand("/a", 5, &[&["hostname", "CLUSTER"]])],
        &offers,
        &Placed::new(),
    );
    let placed = hosts(&out, &offers, 0);
    assert_eq!(placed.len(), 5);
    assert_eq!(per_value(&placed).len(), 1, "all on one host: {placed:?}");

    // A running instance pins the value; an agent without the attribute never matches.
    let offers = vec![racked(0, "r1"), racked(1, "r2"), big(2)];
    let mut placed = Placed::new();
    placed.add(id("/a"), location(&offers[1]));
    let out = run(
        &[demand("/a", 2, &[&["rack", "CLUSTER"]])],
        &offers,
        &placed,
    );
    assert!(
        out.launches.iter().all(|l| l.offer == 1),
        "{:?}",
        out.launches
    );
    assert_eq!(out.launches.len(), 2);

    // Pinned to an agent that is not offered: nothing placed, and it says so.
    let mut placed = Placed::new();
    placed.add(id("/a"), location(&big(9)));
    let offers: Vec<_> = (0..2).map(big).collect();
    let out = run(
        &[demand("/a", 1, &[&["hostname", "CLUSTER"]])],
        &offers,
        &placed,
    );
    assert!(out.launches.is_empty());
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        r#"0 of 1 instances placed; no offered agent satisfies ["hostname","CLUSTER"] (2 agents are not on the hostname the app's instances run on)"#
    );
}

#[test]
fn group_by_spreads_evenly_over_values() {
    let offers: Vec<_> = ["r1", "r1", "r2", "r2", "r3", "r3"]
        .iter()
        .enumerate()
        .map(|(i, r)| racked(i, r))
        .collect();
    let racks_of = |out: &PlacementOutcome| -> Vec<String> {
        out.launches
            .iter()
            .map(|l| offers[l.offer].attributes["rack"].clone())
            .collect()
    };
    let out = run(
        &[demand("/a", 6, &[&["rack", "GROUP_BY"]])],
        &offers,
        &Placed::new(),
    );
    let even = BTreeMap::from([("r1".into(), 2), ("r2".into(), 2), ("r3".into(), 2)]);
    assert_eq!(per_value(&racks_of(&out)), even);

    // Two already on r1: the next four even it out.
    let mut placed = Placed::new();
    placed.add(id("/a"), location(&offers[0]));
    placed.add(id("/a"), location(&offers[1]));
    let out = run(
        &[demand("/a", 4, &[&["rack", "GROUP_BY"]])],
        &offers,
        &placed,
    );
    let new = BTreeMap::from([("r2".into(), 2), ("r3".into(), 2)]);
    assert_eq!(per_value(&racks_of(&out)), new);
}

#[test]
fn group_by_with_a_count_waits_for_enough_values() {
    let offers = vec![racked(0, "r1"), racked(1, "r2")];
    let out = run(
        &[demand("/a", 4, &[&["rack", "GROUP_BY", "3"]])],
        &offers,
        &Placed::new(),
    );
    assert_eq!(
        out.launches.len(),
        2,
        "one per value until a third is offered"
    );
    let r = &out.unplaced[&id("/a")];
    assert!(
        r.reason.contains(r#"["rack","GROUP_BY","3"]"#),
        "{}",
        r.reason
    );
}

#[test]
fn max_per_caps_each_value() {
    let offers = vec![racked(0, "r1"), racked(1, "r1"), racked(2, "r2")];
    let out = run(
        &[demand("/a", 6, &[&["rack", "MAX_PER", "2"]])],
        &offers,
        &Placed::new(),
    );
    assert_eq!(out.launches.len(), 4);
    let r = &out.unplaced[&id("/a")];
    assert_eq!(
        r.reason,
        r#"4 of 6 instances placed; no offered agent satisfies ["rack","MAX_PER","2"] (3 agents have a rack that already runs 2)"#
    );
}

#[test]
fn like_unlike_and_missing_attributes() {
    let offers = vec![racked(0, "r1"), racked(1, "r2"), big(2), racked(3, "r11")];
    let offered = |parts: &[&str]| -> BTreeSet<usize> {
        let out = run(&[demand("/a", 8, &[parts])], &offers, &Placed::new());
        out.launches.iter().map(|l| l.offer).collect()
    };
    assert_eq!(offered(&["rack", "LIKE", "r1"]), BTreeSet::from([0]));
    assert_eq!(offered(&["rack", "LIKE", "r.*"]), BTreeSet::from([0, 1, 3]));
    assert_eq!(
        offered(&["rack", "UNLIKE", "r1"]),
        BTreeSet::from([1, 2, 3])
    );
    assert_eq!(offered(&["rack", "IS", "r2"]), BTreeSet::from([1]));
    assert_eq!(
        offered(&["hostname", "LIKE", "h[02]"]),
        BTreeSet::from([0, 2])
    );

    let out = run(
        &[demand("/a", 1, &[&["gpu", "LIKE", "yes"]])],
        &offers,
        &Placed::new(),
    );
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        r#"0 of 1 instances placed; no offered agent satisfies ["gpu","LIKE","yes"] (4 agents lack the attribute "gpu")"#
    );
}

#[test]
fn scalars_are_never_overcommitted_and_shortage_is_named() {
    let offers = vec![AgentOffer::new("o", "a", "h", pool(2.0, 1000.0, (1, 100)))];
    let mut d = demand("/a", 10, &[]);
    d.cpus = 500;
    let out = run(&[d], &offers, &Placed::new());
    assert_eq!(out.launches.len(), 4);
    let r = &out.unplaced[&id("/a")];
    assert_eq!(r.counts.get(reasons::INSUFFICIENT_CPUS), Some(&1));
    assert_eq!(
        r.reason,
        "4 of 10 instances placed; no offer has enough cpus (0.5 needed, at most 0 free)"
    );
}

#[test]
fn ports_are_distinct_and_counted() {
    let offers = vec![AgentOffer::new(
        "o",
        "a",
        "h",
        pool(10.0, 10_000.0, (31000, 31004)),
    )];
    let mut d = demand("/a", 3, &[]);
    d.host_ports = vec![None, None];
    let out = run(&[d], &offers, &Placed::new());
    assert_eq!(out.launches.len(), 2);
    let all: Vec<u64> = out.launches.iter().flat_map(|l| l.ports.clone()).collect();
    assert_eq!(all, vec![31000, 31001, 31002, 31003]);
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        "2 of 3 instances placed; no offer has enough free ports (2 needed, at most 1 free)"
    );
}

#[test]
fn fixed_ports_keep_their_position_and_fit_once_per_offer() {
    let offers: Vec<_> = (0..2).map(big).collect();
    let mut d = demand("/a", 3, &[]);
    d.host_ports = vec![None, Some(31500), None];
    let out = run(&[d], &offers, &Placed::new());
    assert_eq!(out.launches.len(), 2);
    for l in &out.launches {
        assert_eq!(l.ports, vec![31000, 31500, 31001]);
    }
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        "2 of 3 instances placed; no offer has the host ports 31500 free"
    );
}

#[test]
fn launch_resources_are_exactly_the_demand() {
    let offers = vec![big(0)];
    let mut d = demand("/a", 1, &[]);
    d.disk = 1500;
    d.host_ports = vec![None, Some(31007)];
    let out = run(&[d], &offers, &Placed::new());
    let resources = agora_sdk::Resources::from_proto(&out.launches[0].resources()).unwrap();
    assert_eq!(resources.cpus(), 0.1);
    assert_eq!(resources.mem(), 32.0);
    assert_eq!(resources.disk(), 1.5);
    assert_eq!(
        resources.ranges("ports"),
        RangeSet::from_intervals([(31000, 31000), (31007, 31007)])
    );
}

#[test]
fn instances_of_one_app_spread_over_agents() {
    let offers: Vec<_> = (0..5).map(big).collect();
    let out = run(&[demand("/a", 10, &[])], &offers, &Placed::new());
    let counts = per_value(&hosts(&out, &offers, 0));
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|n| *n == 2), "{counts:?}");
}

#[test]
fn launches_in_one_pass_count_for_later_demands_of_the_app() {
    let offers: Vec<_> = (0..3).map(big).collect();
    let demands = [
        demand("/a", 2, &[&["hostname", "UNIQUE"]]),
        demand("/a", 2, &[&["hostname", "UNIQUE"]]),
    ];
    let out = run(&demands, &offers, &Placed::new());
    let all: Vec<String> = out
        .launches
        .iter()
        .map(|l| offers[l.offer].hostname.clone())
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(per_value(&all).len(), 3);
    let r = &out.unplaced[&id("/a")];
    assert_eq!((r.placed, r.wanted), (1, 2));
}

#[test]
fn daemons_run_once_on_every_matching_agent() {
    let offers = vec![
        racked(0, "r1"),
        racked(1, "r1"),
        racked(2, "r2"),
        racked(3, "r1"),
        // A second offer of agent a0: still one instance there.
        AgentOffer::new("o0b", "a0", "h0", pool(100.0, 100_000.0, (40000, 40010)))
            .with_attribute("rack", "r1"),
    ];
    let mut placed = Placed::new();
    placed.add(id("/log"), location(&offers[1]));
    let mut d = demand("/log", 0, &[&["rack", "LIKE", "r1"]]);
    d.daemon = true;
    let out = run(std::slice::from_ref(&d), &offers, &placed);
    let agents: Vec<&str> = out
        .launches
        .iter()
        .map(|l| offers[l.offer].agent_id.as_str())
        .collect();
    assert_eq!(agents, vec!["a0", "a3"]);
    assert!(out.unplaced.is_empty());

    // An agent that matches but is full is reported; non-matching agents are not.
    let mut small = AgentOffer::new("o9", "a9", "h9", pool(0.05, 1000.0, (1, 10)));
    small = small.with_attribute("rack", "r1");
    let out = run(&[d], &[small, racked(8, "r2")], &Placed::new());
    assert!(out.launches.is_empty());
    let r = &out.unplaced[&id("/log")];
    assert_eq!((r.placed, r.wanted, r.offers_seen), (0, 1, 1));
    assert_eq!(
        r.reason,
        "0 of 1 instances placed; no offer has enough cpus (0.1 needed, at most 0.05 free)"
    );
}

#[test]
fn accepted_roles_choose_pools_and_reserved_resources_go_first() {
    let mut offer = big(0);
    offer.pools.insert(
        0,
        Pool {
            role: "prod".into(),
            cpus: 150,
            mem: 1_000_000,
            ..Pool::default()
        },
    );
    let offers = vec![offer];

    let mut d = demand("/a", 1, &[]);
    d.cpus = 200;
    let out = run(std::slice::from_ref(&d), &offers, &Placed::new());
    let taken: Vec<(String, i64)> = out.launches[0]
        .taken
        .iter()
        .map(|p| (p.role.clone(), p.cpus))
        .collect();
    assert_eq!(taken, vec![("prod".into(), 150), ("*".into(), 50)]);

    d.accepted_roles = Some(vec!["*".into()]);
    let out = run(std::slice::from_ref(&d), &offers, &Placed::new());
    assert_eq!(out.launches[0].taken.len(), 1);
    assert_eq!(out.launches[0].taken[0].role, "*");

    d.accepted_roles = Some(vec!["dev".into()]);
    let out = run(&[d], &offers, &Placed::new());
    let r = &out.unplaced[&id("/a")];
    assert_eq!(r.counts.get(reasons::UNFULFILLED_ROLE), Some(&1));
    assert_eq!(
        r.reason,
        r#"0 of 1 instances placed; no offer has resources of the accepted roles ["dev"]"#
    );
}

#[test]
fn offers_of_another_role_are_refused() {
    let mut offer = big(0);
    offer.allocation_role = "dev".into();
    let mut d = demand("/a", 1, &[]);
    d.role = Some("prod".into());
    let out = run(&[d], &[offer], &Placed::new());
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        r#"0 of 1 instances placed; no offer is allocated to the app's role "prod""#
    );
}

#[test]
fn mixed_causes_are_counted_per_offer() {
    let offers = [
        racked(1, "r2"),
        AgentOffer::new("o2", "a2", "h2", pool(0.0, 100.0, (1, 10))).with_attribute("rack", "r1"),
    ];
    let out = run(
        &[demand("/a", 1, &[&["rack", "LIKE", "r1"]])],
        &offers,
        &Placed::new(),
    );
    assert_eq!(
        out.unplaced[&id("/a")].reason,
        r#"0 of 1 instances placed; of 2 offers, 1 fail ["rack","LIKE","r1"] (1 agent has another rack) and 1 lack enough cpus (0.1 needed, at most 0 free)"#
    );
    assert!(
        run(&[demand("/a", 1, &[])], &[], &Placed::new()).unplaced[&id("/a")]
            .reason
            .ends_with("no offers were available")
    );
}

#[test]
fn launch_limits_are_respected() {
    let offers: Vec<_> = (0..2).map(big).collect();
    let limits = PlacementLimits {
        max_launches_per_offer: 2,
        ..PlacementLimits::default()
    };
    let out = place(&[demand("/a", 5, &[])], &offers, &Placed::new(), limits);
    assert_eq!(out.launches.len(), 4);
    let r = &out.unplaced[&id("/a")];
    assert_eq!(r.counts.get(reasons::OFFER_LAUNCH_LIMIT), Some(&2));
    assert!(
        r.reason
            .ends_with("every offer already carries its most launches"),
        "{}",
        r.reason
    );

    let limits = PlacementLimits {
        max_launches: 3,
        ..PlacementLimits::default()
    };
    let out = place(
        &[demand("/a", 2, &[]), demand("/b", 2, &[])],
        &offers,
        &Placed::new(),
        limits,
    );
    assert_eq!(out.launches.len(), 3);
    assert!(
        out.unplaced[&id("/b")]
            .reason
            .contains("limit of 3 launches")
    );
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

const HOSTS: [&str; 4] = ["h0", "h1", "h2", "h3"];
const RACKS: [&str; 3] = ["r0", "r1", "r2"];

fn arb_offer(i: usize) -> impl Strategy<Value = AgentOffer> {
    (
        0..HOSTS.len(),
        prop::option::of(0..RACKS.len()),
        0u32..4000,
        0u32..4000,
        0u64..6,
        prop::option::of((0u32..2000, 0u64..4)),
    )
        .prop_map(move |(host, rack, cpus, mem, ports, reserved)| {
            let start = 31000 + 10 * i as u64;
            let mut offer = AgentOffer::new(
                format!("o{i}"),
                // Some offers share an agent, as two offers of one agent may.
                format!("a{}", i % 5),
                HOSTS[host],
                Pool {
                    role: "*".into(),
                    cpus: cpus.into(),
                    mem: mem.into(),
                    disk: 0,
                    gpus: 0,
                    ports: if ports == 0 {
                        RangeSet::new()
                    } else {
                        RangeSet::from_intervals([(start, start + ports - 1)])
                    },
                },
            );
            if let Some((cpus, ports)) = reserved {
                let start = 41000 + 10 * i as u64;
                offer.pools.insert(
                    0,
                    Pool {
                        role: "prod".into(),
                        cpus: cpus.into(),
                        mem: 500,
                        ports: if ports == 0 {
                            RangeSet::new()
                        } else {
                            RangeSet::from_intervals([(start, start + ports - 1)])
                        },
                        ..Pool::default()
                    },
                );
            }
            if let Some(rack) = rack {
                offer = offer.with_attribute("rack", RACKS[rack]);
            }
            offer
        })
}

fn arb_offers() -> impl Strategy<Value = Vec<AgentOffer>> {
    (0usize..8).prop_flat_map(|n| (0..n).map(arb_offer).collect::<Vec<_>>())
}

fn arb_constraint() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    prop_oneof![
        Just(None),
        Just(Some(vec!["hostname", "UNIQUE"])),
        Just(Some(vec!["rack", "UNIQUE"])),
        Just(Some(vec!["rack", "MAX_PER", "2"])),
        Just(Some(vec!["rack", "GROUP_BY"])),
        Just(Some(vec!["rack", "GROUP_BY", "3"])),
        Just(Some(vec!["hostname", "CLUSTER"])),
        Just(Some(vec!["rack", "LIKE", "r[01]"])),
        Just(Some(vec!["rack", "UNLIKE", "r1"])),
    ]
}

fn arb_demand(i: usize) -> impl Strategy<Value = Demand> {
    (
        0u32..7,
        0i64..1500,
        0i64..1500,
        0usize..3,
        prop::option::of(0u64..3),
        arb_constraint(),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(vec!["*".to_string()]))],
    )
        .prop_map(
            move |(count, cpus, mem, any_ports, fixed, constraint, daemon, accepted)| {
                let mut host_ports = vec![None; any_ports];
                // Fixed ports from the low end of an offer's unreserved range.
                if let Some(f) = fixed {
                    host_ports.push(Some(31000 + f));
                }
                let mut d = demand(&format!("/app{}", i % 3), count, &[]);
                d.cpus = cpus;
                d.mem = mem;
                d.host_ports = host_ports;
                d.constraints = constraint.iter().map(|c| constraint_of(c)).collect();
                d.daemon = daemon && i % 4 == 3;
                d.accepted_roles = accepted;
                d
            },
        )
}

fn constraint_of(parts: &[&str]) -> Constraint {
    constraint(parts)
}

fn arb_demands() -> impl Strategy<Value = Vec<Demand>> {
    (0usize..6).prop_flat_map(|n| (0..n).map(arb_demand).collect::<Vec<_>>())
}

/// Running instances: on arbitrary (possibly unoffered) hosts and racks.
fn arb_placed() -> impl Strategy<Value = Vec<(usize, usize, Option<usize>)>> {
    prop::collection::vec(
        (0usize..3, 0usize..6, prop::option::of(0..RACKS.len())),
        0..6,
    )
}

fn build_placed(entries: &[(usize, usize, Option<usize>)]) -> Placed {
    let mut placed = Placed::new();
    for &(app, host, rack) in entries {
        let mut attributes = BTreeMap::new();
        if let Some(rack) = rack {
            attributes.insert("rack".to_string(), RACKS[rack].to_string());
        }
        placed.add(
            id(&format!("/app{app}")),
            Location {
                agent_id: format!("a{host}"),
                hostname: format!("h{host}"),
                attributes: attributes.into(),
            },
        );
    }
    placed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placements_never_exceed_an_offers_free_resources(
        offers in arb_offers(),
        demands in arb_demands(),
        placed in arb_placed(),
    ) {
        let out = run(&demands, &offers, &build_placed(&placed));
        // Per offer and pool role: the sum of what launches took.
        let mut used: HashMap<(usize, String), Pool> = HashMap::new();
        let mut ports_seen: HashMap<usize, BTreeSet<u64>> = HashMap::new();
        for l in &out.launches {
            let d = &demands[l.demand];
            let (mut cpus, mut mem, mut ports) = (0, 0, 0u64);
            for part in &l.taken {
                let u = used.entry((l.offer, part.role.clone())).or_default();
                u.cpus += part.cpus;
                u.mem += part.mem;
                u.ports.union(&part.ports);
                cpus += part.cpus;
                mem += part.mem;
                ports += part.ports.count();
                prop_assert!(d.accepts_role(&part.role));
            }
            prop_assert_eq!((cpus, mem), (d.cpus, d.mem));
            prop_assert_eq!(ports, d.host_ports.len() as u64);
            prop_assert_eq!(l.ports.len(), d.host_ports.len());
            for (got, want) in l.ports.iter().zip(&d.host_ports) {
                if let Some(fixed) = want {
                    prop_assert_eq!(got, fixed);
                }
                prop_assert!(ports_seen.entry(l.offer).or_default().insert(*got),
                    "port {} handed out twice on offer {}", got, l.offer);
            }
        }
        for ((o, role), u) in used {
            let Some(pool) = offers[o].pools.iter().find(|p| p.role == role) else {
                return Err(TestCaseError::fail(format!("offer {o} has no pool {role}")));
            };
            prop_assert!(u.cpus <= pool.cpus, "offer {o} {role}: {} cpus of {}", u.cpus, pool.cpus);
            prop_assert!(u.mem <= pool.mem, "offer {o} {role}: {} mem of {}", u.mem, pool.mem);
            prop_assert!(pool.ports.contains(&u.ports));
        }
    }

    #[test]
    fn unique_never_puts_two_instances_on_one_hostname(
        offers in arb_offers(),
        demands in arb_demands(),
        placed in arb_placed(),
    ) {
        let placed = build_placed(&placed);
        let out = run(&demands, &offers, &placed);
        // Hosts of each app's instances: running ones, then launches in order.
        let mut hosts_of: HashMap<&PathId, Vec<&str>> = HashMap::new();
        for d in &demands {
            hosts_of
                .entry(&d.app)
                .or_insert_with(|| placed.of(&d.app).iter().map(|l| l.hostname.as_str()).collect());
        }
        for l in &out.launches {
            let d = &demands[l.demand];
            let host = offers[l.offer].hostname.as_str();
            let hosts = hosts_of.entry(&d.app).or_default();
            if d.constraints.iter().any(|c| c.describe() == r#"["hostname","UNIQUE"]"#) {
                prop_assert!(!hosts.contains(&host),
                    "{} launched on {} where one already runs ({:?})", d.app, host, hosts);
            }
            hosts.push(host);
        }
    }

    #[test]
    fn every_unplaced_demand_has_a_reason(
        offers in arb_offers(),
        demands in arb_demands(),
        placed in arb_placed(),
    ) {
        let out = run(&demands, &offers, &build_placed(&placed));
        let mut launched: HashMap<&PathId, u32> = HashMap::new();
        for l in &out.launches {
            *launched.entry(&demands[l.demand].app).or_default() += 1;
        }
        let mut wanted: HashMap<&PathId, u32> = HashMap::new();
        for d in demands.iter().filter(|d| !d.daemon) {
            *wanted.entry(&d.app).or_default() += d.count;
        }
        for (app, want) in wanted {
            let got = launched.get(app).copied().unwrap_or(0);
            if got < want {
                let r = out.unplaced.get(app);
                prop_assert!(r.is_some(), "{} placed {} of {} with no rejection", app, got, want);
                if let Some(r) = r {
                    prop_assert!(!r.reason.is_empty());
                    prop_assert!(r.placed < r.wanted);
                }
            }
        }
        for (app, r) in &out.unplaced {
            prop_assert!(!r.reason.is_empty(), "{} has an empty reason", app);
            prop_assert!(r.placed < r.wanted, "{}: {:?}", app, r);
        }
    }
}
