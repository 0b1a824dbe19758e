//! One test per rule of the allocator. The property tests are in `props.rs`.

use super::testkit::{Cluster, Subscription, by_framework, pairs, r};
use super::*;

#[test]
fn lowest_dominant_share_wins_each_agent() {
    let given = Cluster::default()
        .agent("a1", "cpus:4;mem:4096")
        .agent("a2", "cpus:4;mem:4096")
        .framework("f1", "*", "cpus:2")
        .framework("f2", "*", "")
        .run();
    // f2 (share 0) takes a1 (share 0.5 of mem); then f1 (0.2 of cpus) takes a2.
    assert_eq!(pairs(&given), [("f2", "a1"), ("f1", "a2")]);
    assert_eq!(given[0].resources, r("cpus:4;mem:4096"));
}

#[test]
fn ties_go_to_the_lower_framework_id() {
    let given = Cluster::default()
        .agent("a1", "cpus:1;mem:128")
        .agent("a2", "cpus:1;mem:128")
        .framework("f-b", "web", "")
        .framework("f-a", "web", "")
        .run();
    assert_eq!(pairs(&given), [("f-a", "a1"), ("f-b", "a2")]);
}

#[test]
fn inactive_suppressed_filtered_and_tiny_get_nothing() {
    let mut cluster = Cluster::default()
        .agent("tiny", "cpus:0.001;mem:1")
        .agent("big", "cpus:1;mem:64")
        .framework("inactive", "*", "")
        .framework("suppressed", "*", "")
        .framework("filtered", "*", "");
    cluster.frameworks[0].active = false;
    cluster.frameworks[1].roles[0].suppressed = true;
    cluster.filters.0.insert(
        ("filtered".into(), "*".into(), "big".into()),
        r("cpus:1;mem:64"),
    );
    assert!(cluster.run().is_empty());
}

#[test]
fn a_filter_holds_only_offers_contained_in_what_was_refused() {
    // f1 refused less than a1 now has: freed resources are offered at once.
    let mut cluster = Cluster::default()
        .agent("a1", "cpus:2;mem:128")
        .framework("f1", "*", "")
        .framework("f2", "*", "cpus:1");
    cluster
        .filters
        .0
        .insert(("f1".into(), "*".into(), "a1".into()), r("cpus:1;mem:64"));
    assert_eq!(pairs(&cluster.run()), [("f1", "a1")]);
    // f1 refused all of it: the next framework gets it.
    cluster
        .filters
        .0
        .insert(("f1".into(), "*".into(), "a1".into()), r("cpus:4;mem:1024"));
    assert_eq!(pairs(&cluster.run()), [("f2", "a1")]);
    // A filter for another role of the framework does not hold this one.
    cluster.filters.0.clear();
    cluster.filters.0.insert(
        ("f1".into(), "other".into(), "a1".into()),
        r("cpus:4;mem:1024"),
    );
    assert_eq!(pairs(&cluster.run()), [("f1", "a1")]);
}

#[test]
fn a_role_share_counts_its_descendants() {
    // Flat DRF would pick fy (it holds nothing); hierarchically role `a` holds 4 of 6
    // cpus through a/x, so role b goes first.
    let given = Cluster::default()
        .agent("a1", "cpus:1;mem:1024")
        .framework("fx", "a/x", "cpus:4")
        .framework("fy", "a/y", "")
        .framework("fb", "b", "cpus:1")
        .run();
    assert_eq!(pairs(&given), [("fb", "a1")]);
}

#[test]
fn weights_divide_shares() {
    let mut cluster = Cluster::default()
        .framework("fh", "heavy", "")
        .framework("fl", "light", "")
        .role("heavy", 3.0, None, &[]);
    for i in 0..8 {
        cluster = cluster.agent(&format!("a{i}"), "cpus:1;mem:128");
    }
    let got = by_framework(&cluster.run());
    assert_eq!(got["fh"].cpus(), 6.0);
    assert_eq!(got["fl"].cpus(), 2.0);
}

#[test]
fn a_role_own_frameworks_compete_with_its_sub_roles() {
    let given = Cluster::default()
        .agent("a1", "cpus:1;mem:128")
        .agent("a2", "cpus:1;mem:128")
        .agent("a3", "cpus:1;mem:128")
        .framework("f-own", "eng", "")
        .framework("f-sub", "eng/ml", "")
        .run();
    // The role's own frameworks win a tie; then they alternate on share.
    assert_eq!(
        pairs(&given),
        [("f-own", "a1"), ("f-sub", "a2"), ("f-own", "a3")]
    );
}

#[test]
fn reservations_go_only_to_their_role_and_its_descendants() {
    let given = Cluster::default()
        .agent("r1", "cpus(eng):2;mem(eng):1024")
        .framework("f-ops", "ops", "")
        .framework("f-engineering", "engineering", "")
        .framework("f-ml", "eng/ml", "cpus:1")
        .run();
    assert_eq!(pairs(&given), [("f-ml", "r1")]);
    assert_eq!(given[0].resources, r("cpus(eng):2;mem(eng):1024"));

    // Reserved for a child: not for its parent.
    let given = Cluster::default()
        .agent("r1", "cpus(eng/ml):2;mem(eng/ml):1024")
        .framework("f-eng", "eng", "")
        .run();
    assert!(given.is_empty());
}

#[test]
fn an_agent_is_split_between_unreserved_and_reserved() {
    let given = Cluster::default()
        .agent("a1", "cpus:2;mem:1024;cpus(eng):1;mem(eng):512")
        .framework("f-ops", "ops", "")
        .framework("f-eng", "eng", "cpus:1")
        .run();
    assert_eq!(pairs(&given), [("f-ops", "a1"), ("f-eng", "a1")]);
    assert_eq!(given[0].resources, r("cpus:2;mem:1024"));
    assert_eq!(given[1].resources, r("cpus(eng):1;mem(eng):512"));
}

#[test]
fn a_framework_gets_one_offer_per_agent_per_role() {
    let mut cluster = Cluster::default()
        .agent("a1", "cpus:1;mem:128;cpus(a):1;cpus(b):1")
        .framework("f", "a", "");
    cluster.frameworks[0].roles.push(Subscription {
        role: "b".into(),
        suppressed: false,
        allocated: Resources::new(),
    });
    let given = cluster.run();
    // Role a (tie, first by name) takes the unreserved and its reservation; role b its own.
    assert_eq!(given.len(), 2);
    assert_eq!((given[0].role.as_str(), given[1].role.as_str()), ("a", "b"));
    assert_eq!(given[0].resources, r("cpus:1;mem:128;cpus(a):1"));
    assert_eq!(given[1].resources, r("cpus(b):1"));

    // Suppressing one role leaves the other.
    cluster.frameworks[0].roles[0].suppressed = true;
    let given = cluster.run();
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].role, "b");
    assert_eq!(given[0].resources, r("cpus:1;mem:128;cpus(b):1"));
}

#[test]
fn draining_agents_are_offered_nothing() {
    let mut cluster = Cluster::default()
        .agent("a1", "cpus:1;mem:128")
        .framework("f", "*", "");
    cluster.agents[0].draining = true;
    assert!(cluster.run().is_empty());
}

#[test]
fn ranges_and_sets_go_whole_with_a_grant() {
    let given = Cluster::default()
        .agent("a1", "cpus:1;mem:128;ports:[31000-31010];disks:{a,b}")
        .framework("f", "*", "")
        .run();
    assert_eq!(
        given[0].resources,
        r("cpus:1;mem:128;ports:[31000-31010];disks:{a,b}")
    );
}

#[test]
fn the_minimum_allocatable_is_configurable() {
    let mut cluster = Cluster::default()
        .agent("a1", "cpus:0.5;mem:512")
        .framework("f", "*", "");
    assert_eq!(cluster.run().len(), 1);
    cluster.min = MinAllocatable {
        cpus: 1.0,
        mem: 1024.0,
    };
    assert!(cluster.run().is_empty());
}

#[test]
fn guarantees_are_met_first_and_only_up_to_what_is_unmet() {
    let given = Cluster::default()
        .agent("a1", "cpus:8;mem:8192")
        .agent("a2", "cpus:8;mem:8192")
        .framework("fq", "q", "cpus:2;mem:2048")
        .framework("fr", "r", "")
        .role("q", 1.0, Some("cpus:4;mem:4096"), &[])
        .run();
    // Stage 1: q, although its share is higher, gets what its guarantee misses.
    // Stage 2: the rest of a1 to r (lower share), a2 to q.
    assert_eq!(
        given,
        [
            ("fq", "a1", "cpus:2;mem:2048"),
            ("fr", "a1", "cpus:6;mem:6144"),
            ("fq", "a2", "cpus:8;mem:8192"),
        ]
        .map(|(f, a, res)| testkit::Given {
            framework: f.into(),
            role: if f == "fq" { "q" } else { "r" }.into(),
            agent: a.into(),
            resources: r(res),
        })
    );
}

#[test]
fn unmet_guarantees_keep_their_headroom_even_without_frameworks() {
    let cluster = Cluster::default()
        .agent("a1", "cpus:4;mem:4096")
        .agent("a2", "cpus:4;mem:4096")
        .framework("fr", "r", "")
        .role("q", 1.0, Some("cpus:6;mem:6144"), &[]);
    // Free: 8 cpus, 8192 mem; q needs 6 and 6144: r may take 2 and 2048.
    let got = by_framework(&cluster.run());
    assert_eq!(got["fr"], r("cpus:2;mem:2048"));

    // A suppressed framework of q changes nothing; an active one takes its guarantee.
    let mut cluster = cluster.framework("fq", "q", "");
    cluster.frameworks[1].roles[0].suppressed = true;
    assert_eq!(by_framework(&cluster.run())["fr"], r("cpus:2;mem:2048"));
    cluster.frameworks[1].roles[0].suppressed = false;
    let got = by_framework(&cluster.run());
    assert_eq!(got["fq"], r("cpus:6;mem:6144"));
    assert_eq!(got["fr"], r("cpus:2;mem:2048"));
}

#[test]
fn a_child_guarantee_counts_inside_its_parent() {
    let given = Cluster::default()
        .agent("a1", "cpus:4;mem:4096")
        .agent("a2", "cpus:4;mem:4096")
        .framework("f-ops", "ops", "")
        .role("eng", 1.0, Some("cpus:4;mem:4096"), &[])
        .role("eng/ml", 1.0, Some("cpus:4;mem:4096"), &[])
        .run();
    // Required is 4 cpus (ml's 4 are part of eng's 4), not 8.
    assert_eq!(by_framework(&given)["f-ops"], r("cpus:4;mem:4096"));
}

#[test]
fn a_sibling_takes_only_what_the_parent_guarantee_leaves_to_it() {
    let given = Cluster::default()
        .agent("a1", "cpus:8;mem:8192")
        .framework("f-web", "eng/web", "")
        .role("eng", 1.0, Some("cpus:6"), &[])
        .role("eng/ml", 1.0, Some("cpus:2"), &[])
        .run();
    // eng/web may count 4 of eng's 6 cpus (2 are ml's) in stage 1, with all the memory
    // (not guaranteed); stage 2 adds nothing that ml needs: 2 cpus stay free.
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].resources, r("cpus:6;mem:8192"));
}

#[test]
fn a_role_never_exceeds_its_limit() {
    let given = Cluster::default()
        .agent("a1", "cpus:2;mem:1024")
        .agent("a2", "cpus:2;mem:1024")
        .agent("a3", "cpus:2;mem:1024")
        .framework("f", "eng/ml", "")
        .role("eng", 1.0, None, &[("cpus", 3.0), ("mem", 1500.0)])
        .run();
    assert_eq!(
        given
            .iter()
            .map(|g| g.resources.clone())
            .collect::<Vec<_>>(),
        [r("cpus:2;mem:1024"), r("cpus:1;mem:476")]
    );
    // A limit of 0 on memory: cpus alone.
    let given = Cluster::default()
        .agent("a1", "cpus:2;mem:1024")
        .framework("f", "eng", "")
        .role("eng", 1.0, None, &[("mem", 0.0)])
        .run();
    assert_eq!(given[0].resources, r("cpus:2"));
}

#[test]
fn odd_input_never_panics() {
    let mut cluster = Cluster {
        total: Some(r("cpus:4;mem:4096")),
        ..Default::default()
    }
    .agent(
        "a1",
        "cpus:1;mem:1024;gpus:2;cpus(/x):1;cpus(x/):1;cpus(a//b):1",
    )
    .agent("a1", "cpus:1;mem:1024")
    .framework("f", "", "cpus:100;bogus:5")
    .framework("f", "", "")
    .framework("g", "a//b", "")
    .framework("h", "/x", "")
    .framework("i", "x/", "")
    .role(
        "",
        f64::NAN,
        Some("cpus:1"),
        &[("cpus", f64::NAN), ("mem", -5.0)],
    )
    .role("a//b", f64::INFINITY, None, &[("unknown", 1.0)])
    .role("a//b", 0.0, None, &[])
    .role("/x", -1.0, None, &[]);
    cluster.min = MinAllocatable {
        cpus: f64::NAN,
        mem: -1.0,
    };
    let given = cluster.run();
    for g in &given {
        assert!(!g.resources.is_empty());
    }
    let report_input_total = cluster.total();
    let input = AllocationInput {
        cluster_total: &report_input_total,
        agents: &[],
        frameworks: &[],
        roles: &[],
        min_allocatable: MinAllocatable::default(),
    };
    assert!(allocate(&input, &NoFilters).is_empty());
    assert!(role_report(&input).is_empty());
}

#[test]
fn the_role_report_sums_descendants() {
    let total = r("cpus:10;mem:1000");
    let (a, b, c) = (r("cpus:2"), r("cpus:3;mem:500"), r(""));
    let frameworks = [
        FrameworkInput {
            id: "f1",
            active: true,
            has_filters: false,
            roles: vec![FrameworkRole {
                role: "eng/ml",
                suppressed: false,
                allocated: &a,
            }],
        },
        FrameworkInput {
            id: "f2",
            active: false,
            has_filters: false,
            roles: vec![
                FrameworkRole {
                    role: "eng",
                    suppressed: true,
                    allocated: &b,
                },
                FrameworkRole {
                    role: "ops",
                    suppressed: false,
                    allocated: &c,
                },
            ],
        },
    ];
    let roles = [RoleInput {
        name: "eng",
        weight: 2.0,
        guarantee: None,
        limit: vec![],
    }];
    let input = AllocationInput {
        cluster_total: &total,
        agents: &[],
        frameworks: &frameworks,
        roles: &roles,
        min_allocatable: MinAllocatable::default(),
    };
    let report = role_report(&input);
    let names: Vec<&str> = report.iter().map(|x| x.role.as_str()).collect();
    assert_eq!(names, ["eng", "eng/ml", "ops"]);
    assert_eq!(report[0].allocated, r("cpus:5;mem:500"));
    assert_eq!(report[0].weight, 2.0);
    assert!((report[0].share - 0.5).abs() < 1e-12);
    assert!((report[1].share - 0.2).abs() < 1e-12);
    assert_eq!(report[2].share, 0.0);
}
