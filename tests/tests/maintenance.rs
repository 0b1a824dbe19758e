//! The operator side of allocation: draining and reactivating agents, quotas,
//! weights and roles, over the operator gRPC API of a real master with real agents.

use std::collections::HashMap;
use std::time::Duration;

use agora_core::Resources;
use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, RawFramework, TestCluster, TestFramework, node_bin, refuse, shell_task, within,
};
use tonic::transport::Channel;

type Operator = pb::operator_client::OperatorClient<Channel>;

async fn operator(cluster: &TestCluster) -> Operator {
    Operator::connect(format!("http://{}", cluster.master_addr))
        .await
        .expect("the operator API answers")
}

fn agent_id(value: &str) -> Option<pb::AgentId> {
    Some(pb::AgentId {
        value: value.to_string(),
    })
}

fn agent_of(offer: &pb::Offer) -> String {
    offer
        .agent_id
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_default()
}

async fn drain(op: &mut Operator, agent: &str, deadline_seconds: Option<f64>) {
    op.drain_agent(pb::DrainAgentRequest {
        agent_id: agent_id(agent),
        deadline_seconds,
    })
    .await
    .expect("DrainAgent");
}

async fn reactivate(op: &mut Operator, agent: &str) -> Result<(), tonic::Status> {
    op.reactivate_agent(pb::ReactivateAgentRequest {
        agent_id: agent_id(agent),
    })
    .await
    .map(|_| ())
}

/// The status `AgentSummary` shows for `agent`.
fn status_of(state: &pb::ClusterState, agent: &str) -> String {
    state
        .agents
        .iter()
        .find(|a| {
            a.agent_info
                .as_ref()
                .and_then(|i| i.id.as_ref())
                .is_some_and(|id| id.value == agent)
        })
        .map(|a| a.status.clone())
        .unwrap_or_else(|| "absent".into())
}

/// Waits until the master's published state satisfies `condition`: the view is a
/// snapshot published after each batch, with no event of its own to await.
async fn state_until(
    cluster: &TestCluster,
    what: &str,
    condition: impl Fn(&pb::ClusterState) -> bool,
) -> pb::ClusterState {
    within(what, async {
        loop {
            let state = cluster.state().await;
            if condition(&state) {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The next AGENT_DRAINING event.
async fn agent_draining(fw: &mut RawFramework) -> pb::event::AgentDraining {
    fw.wait_for("AGENT_DRAINING", |e| match e {
        pb::event::Event::AgentDraining(d) => Some(d),
        _ => None,
    })
    .await
}

/// Launches `task_id` (`sleep 1000`, 0.1 cpus) with `offer` and waits until it runs.
async fn launch_sleeper(fw: &mut RawFramework, offer: &pb::Offer, task_id: &str) {
    let agent = offer.agent_id.clone().unwrap_or_default();
    fw.accept(
        vec![offer.id.clone().unwrap_or_default()],
        vec![shell_task(task_id, &agent, "sleep 1000", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    loop {
        let status = fw.next_update(task_id).await;
        match status.state() {
            pb::TaskState::TaskRunning => break,
            pb::TaskState::TaskStaging | pb::TaskState::TaskStarting => continue,
            other => panic!("{task_id} did not start: {other:?} {status:?}"),
        }
    }
}

/// Offers until one of every agent in `agents` was seen; the latest offer of each.
async fn offers_of(fw: &mut RawFramework, agents: &[&str]) -> HashMap<String, pb::Offer> {
    let mut held = HashMap::new();
    while !agents.iter().all(|a| held.contains_key(*a)) {
        for offer in fw.next_offers().await {
            held.insert(agent_of(&offer), offer);
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_rescinds_offers_tells_frameworks_and_stops_offers_until_reactivated() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let (a, b) = (cluster.agents[0].0.clone(), cluster.agents[1].0.clone());
    let mut op = operator(&cluster).await;
    let mut fw =
        RawFramework::subscribe(&cluster.master_addr, TestFramework::info("drained", 0.0)).await;
    let mut held = offers_of(&mut fw, &[&a, &b]).await;
    let offer_a = held.remove(&a).expect("an offer of a");
    let offer_b = held.remove(&b).expect("an offer of b");
    launch_sleeper(&mut fw, &offer_a, "stays").await;
    // What the task left of agent a comes back (the ACCEPT refused it for 0 s); it is
    // held, to be rescinded by the drain.
    let leftover_a = offers_of(&mut fw, &[&a]).await.remove(&a).expect("a again");

    drain(&mut op, &a, None).await;
    let leftover_id = leftover_a.id.clone().expect("offer id");
    fw.wait_for("the RESCIND of a's offer", |e| match e {
        pb::event::Event::Rescind(r) if r.offer_id.as_ref() == Some(&leftover_id) => Some(()),
        _ => None,
    })
    .await;
    let draining = agent_draining(&mut fw).await;
    assert_eq!(draining.agent_id, agent_id(&a));
    assert_eq!(draining.deadline, 0.0, "no deadline was given");

    // b's resources, declined, come straight back; a's do not come with them.
    fw.call(pb::call::Call::Decline(pb::call::Decline {
        offer_ids: vec![offer_b.id.clone().expect("offer id")],
        filters: Some(refuse(0.0)),
    }))
    .await
    .expect("DECLINE");
    let again = fw.next_offers().await;
    assert!(again.iter().any(|o| agent_of(o) == b), "{again:?}");
    assert!(
        again.iter().all(|o| agent_of(o) != a),
        "a draining agent makes no offers: {again:?}"
    );
    let state = cluster.state().await;
    assert_eq!(status_of(&state, &a), "DRAINING", "a task still runs there");
    assert_eq!(status_of(&state, &b), "ACTIVE");
    let summary_a = state
        .agents
        .iter()
        .find(|s| s.agent_info.as_ref().and_then(|i| i.id.as_ref()) == agent_id(&a).as_ref())
        .expect("a is listed");
    assert!(
        summary_a.offered.is_empty(),
        "nothing of a is offered: {summary_a:?}"
    );

    reactivate(&mut op, &a).await.expect("ReactivateAgent");
    let back = offers_of(&mut fw, &[&a]).await.remove(&a).expect("a again");
    let cpus = Resources::from_proto(&back.resources)
        .expect("a valid offer")
        .cpus();
    assert!(
        (cpus - 3.9).abs() < 1e-9,
        "a offers what the task leaves: {cpus}"
    );
    assert_eq!(status_of(&cluster.state().await, &a), "ACTIVE");
    let again = reactivate(&mut op, &a)
        .await
        .expect_err("not under maintenance");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_runs_at_the_deadline_is_killed_and_the_agent_drained() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let (a, b) = (cluster.agents[0].0.clone(), cluster.agents[1].0.clone());
    let mut op = operator(&cluster).await;
    let mut fw =
        RawFramework::subscribe(&cluster.master_addr, TestFramework::info("doomed", 0.0)).await;
    let offer_a = offers_of(&mut fw, &[&a])
        .await
        .remove(&a)
        .expect("an offer of a");
    launch_sleeper(&mut fw, &offer_a, "doomed").await;

    let asked = agora_core::time::now_secs();
    drain(&mut op, &a, Some(1.0)).await;
    let draining = agent_draining(&mut fw).await;
    assert_eq!(draining.agent_id, agent_id(&a));
    assert!(
        draining.deadline >= asked + 1.0 && draining.deadline < asked + 60.0,
        "the deadline is a second from the request: {} vs {asked}",
        draining.deadline
    );
    let end = loop {
        let status = fw.next_update("doomed").await;
        if agora_core::task_state::is_terminal_raw(status.state) {
            break status;
        }
    };
    assert_eq!(end.state(), pb::TaskState::TaskKilled, "{end:?}");
    assert_eq!(
        end.reason(),
        pb::task_status::Reason::AgentDraining,
        "{end:?}"
    );
    let state = state_until(&cluster, "agent a to be DRAINED", |s| {
        status_of(s, &a) == "DRAINED"
    })
    .await;
    assert_eq!(status_of(&state, &b), "ACTIVE");
    // Draining a drained agent again changes nothing.
    drain(&mut op, &a, Some(0.0)).await;
    assert_eq!(status_of(&cluster.state().await, &a), "DRAINED");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_quotas_and_weights_survive_a_master_restart() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let (a, b) = (cluster.agents[0].0.clone(), cluster.agents[1].0.clone());
    let mut op = operator(&cluster).await;
    let quota = pb::QuotaConfig {
        role: "eng".into(),
        guarantee: Resources::parse("cpus:1;mem:64").unwrap().to_proto(),
        limit: vec![
            scalar("cpus", 2.0),
            // A limit of none is kept (Resources would drop the zero).
            scalar("gpus", 0.0),
        ],
    };
    op.set_quota(pb::SetQuotaRequest {
        quota: Some(quota.clone()),
    })
    .await
    .expect("SetQuota");
    op.set_weights(pb::SetWeightsRequest {
        weights: vec![weight("eng", 2.0), weight("ops", 0.5)],
    })
    .await
    .expect("SetWeights");
    let mut fw = TestFramework::start(
        &cluster.master_addr,
        TestFramework::info("survivor", 3600.0),
    )
    .await;
    let b_id = b.clone();
    fw.launch_shell_where("keeps", "sleep 1000", |o| agent_of(o) == b_id)
        .await;
    fw.wait_for_state("keeps", pb::TaskState::TaskRunning).await;
    drain(&mut op, &a, None).await;
    drain(&mut op, &b, Some(3600.0)).await;
    state_until(&cluster, "a DRAINED and b DRAINING", |s| {
        status_of(s, &a) == "DRAINED" && status_of(s, &b) == "DRAINING"
    })
    .await;
    let quotas_before = op
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .expect("GetQuotas")
        .into_inner();

    cluster.restart_master().await;
    let mut op = operator(&cluster).await;
    let quotas = op
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .expect("GetQuotas")
        .into_inner();
    assert_eq!(quotas, quotas_before);
    assert_eq!(quotas.quotas.len(), 1);
    let kept = &quotas.quotas[0];
    assert_eq!(kept.role, "eng");
    assert_eq!(
        Resources::from_proto(&kept.guarantee).unwrap(),
        Resources::parse("cpus:1;mem:64").unwrap()
    );
    assert!(
        kept.limit
            .iter()
            .any(|r| r.name == "gpus" && r.value == Some(pb::resource::Value::Scalar(0.0))),
        "{kept:?}"
    );
    let weights = op
        .get_weights(pb::GetWeightsRequest {})
        .await
        .expect("GetWeights")
        .into_inner()
        .weights;
    assert_eq!(weights, vec![weight("eng", 2.0), weight("ops", 0.5)]);
    // The agents come back with their maintenance; b's task is not killed (its
    // deadline is an hour away).
    state_until(&cluster, "the agents back, under maintenance", |s| {
        status_of(s, &a) == "DRAINED"
            && status_of(s, &b) == "DRAINING"
            && s.tasks.iter().any(|t| {
                t.task_id.as_ref().map(|i| i.value.as_str()) == Some("keeps")
                    && t.state() == pb::TaskState::TaskRunning
            })
    })
    .await;

    // Reactivated, a is offered again (b still drains and makes no offers).
    reactivate(&mut op, &a).await.expect("ReactivateAgent");
    let offers = fw.next_offers().await;
    assert!(
        offers.iter().all(|o| agent_of(o) != b),
        "b drains: {offers:?}"
    );
    let mut offered_a = offers.iter().any(|o| agent_of(o) == a);
    while !offered_a {
        offered_a = fw.next_offers().await.iter().any(|o| agent_of(o) == a);
    }
    fw.stop().await;
    cluster.shutdown().await;
}

fn scalar(name: &str, amount: f64) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        role: "*".into(),
        reservation: None,
        value: Some(pb::resource::Value::Scalar(amount)),
    }
}

fn weight(role: &str, weight: f64) -> pb::RoleWeight {
    pb::RoleWeight {
        role: role.into(),
        weight,
    }
}

/// Asserts `result` is INVALID_ARGUMENT whose message names `field`.
fn invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("the request is refused");
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{field}: {status:?}"
    );
    assert!(status.message().contains(field), "{field}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_operator_requests_are_refused_and_name_the_field() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let agent = cluster.agents[0].0.clone();
    let mut op = operator(&cluster).await;
    let set_quota =
        |role: &str, guarantee: Vec<pb::Resource>, limit: Vec<pb::Resource>| pb::SetQuotaRequest {
            quota: Some(pb::QuotaConfig {
                role: role.into(),
                guarantee,
                limit,
            }),
        };
    invalid(
        op.set_quota(pb::SetQuotaRequest { quota: None }).await,
        "quota",
    );
    invalid(
        op.set_quota(set_quota("*", vec![scalar("cpus", 1.0)], vec![]))
            .await,
        "quota.role",
    );
    invalid(
        op.set_quota(set_quota("eng//x", vec![], vec![])).await,
        "quota.role",
    );
    invalid(
        op.set_quota(set_quota("eng", vec![scalar("cpus", -1.0)], vec![]))
            .await,
        "quota.guarantee",
    );
    invalid(
        op.set_quota(set_quota("eng", vec![], vec![scalar("mem", f64::NAN)]))
            .await,
        "quota.limit",
    );
    invalid(
        op.set_quota(set_quota(
            "eng",
            vec![scalar("cpus", 4.0)],
            vec![scalar("cpus", 2.0)],
        ))
        .await,
        "quota.guarantee",
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        invalid(
            op.set_weights(pb::SetWeightsRequest {
                weights: vec![weight("eng", 2.0), weight("ops", bad)],
            })
            .await,
            "weights[1].weight",
        );
    }
    invalid(
        op.set_weights(pb::SetWeightsRequest {
            weights: vec![weight("not a role", 2.0)],
        })
        .await,
        "weights[0].role",
    );
    let weights = op
        .get_weights(pb::GetWeightsRequest {})
        .await
        .expect("GetWeights")
        .into_inner();
    assert!(
        weights.weights.is_empty(),
        "a refused request sets no weight: {weights:?}"
    );
    invalid(
        op.drain_agent(pb::DrainAgentRequest {
            agent_id: None,
            deadline_seconds: None,
        })
        .await,
        "agent_id",
    );
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        invalid(
            op.drain_agent(pb::DrainAgentRequest {
                agent_id: agent_id(&agent),
                deadline_seconds: Some(bad),
            })
            .await,
            "deadline_seconds",
        );
    }
    let unknown = op
        .drain_agent(pb::DrainAgentRequest {
            agent_id: agent_id("no-such-agent"),
            deadline_seconds: None,
        })
        .await
        .expect_err("an unknown agent");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let absent = op
        .remove_quota(pb::RemoveQuotaRequest { role: "eng".into() })
        .await
        .expect_err("no quota to remove");
    assert_eq!(absent.code(), tonic::Code::NotFound, "{absent:?}");
    let active = reactivate(&mut op, &agent)
        .await
        .expect_err("not under maintenance");
    assert_eq!(active.code(), tonic::Code::FailedPrecondition, "{active:?}");
    assert_eq!(status_of(&cluster.state().await, &agent), "ACTIVE");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_show_weights_quotas_frameworks_and_allocations() {
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .agent_resources("cpus:4;mem:4096")
        .start()
        .await;
    let mut op = operator(&cluster).await;
    op.set_weights(pb::SetWeightsRequest {
        weights: vec![weight("eng", 3.0)],
    })
    .await
    .expect("SetWeights");
    op.set_quota(pb::SetQuotaRequest {
        quota: Some(pb::QuotaConfig {
            role: "eng".into(),
            guarantee: vec![scalar("cpus", 1.0)],
            limit: vec![],
        }),
    })
    .await
    .expect("SetQuota");
    let mut info = TestFramework::info("ml", 0.0);
    info.roles = vec!["eng/ml".into()];
    let mut fw = RawFramework::subscribe(&cluster.master_addr, info).await;
    let offer = fw.next_offers().await.remove(0);
    assert_eq!(offer.role, "eng/ml");
    launch_sleeper(&mut fw, &offer, "trainer").await;

    let roles = op
        .get_roles(pb::GetRolesRequest {})
        .await
        .expect("GetRoles")
        .into_inner()
        .roles;
    let names: Vec<&str> = roles.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(names, vec!["eng", "eng/ml"], "{roles:?}");
    let (eng, ml) = (&roles[0], &roles[1]);
    assert_eq!(eng.weight, 3.0);
    assert_eq!(ml.weight, 1.0);
    assert_eq!(
        eng.quota.as_ref().map(|q| q.guarantee.clone()),
        Some(Resources::parse("cpus:1").unwrap().to_proto())
    );
    assert!(ml.quota.is_none());
    assert!(eng.frameworks.is_empty());
    assert_eq!(ml.frameworks, vec![fw.framework_id.clone()]);
    for role in [eng, ml] {
        let used = Resources::from_proto(&role.used).expect("valid");
        assert!((used.cpus() - 0.1).abs() < 1e-9, "{role:?}");
        let allocated = Resources::from_proto(&role.allocated).expect("valid");
        assert!(allocated.contains(&used), "{role:?}");
        assert!(
            role.dominant_share > 0.0 && role.dominant_share <= 1.0,
            "{role:?}"
        );
    }
    cluster.shutdown().await;
}
