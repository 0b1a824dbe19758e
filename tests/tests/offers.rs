//! Offer filters: a DECLINE holds back only what was declined.

use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, RawFramework, TestFramework, launch, node_bin, refuse, shell_task,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_freed_after_a_decline_are_offered_at_once() {
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .agent_resources("cpus:2;mem:1024")
        .start()
        .await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("decliner", 0.0)).await;
    let offer = fw.next_offers().await.remove(0);
    let agent = offer.agent_id.clone().expect("agent id");
    // Use one cpu and refuse the rest for an hour.
    fw.handle
        .accept(
            vec![offer.id.clone().expect("offer id")],
            vec![launch(vec![shell_task(
                "hog",
                &agent,
                "sleep 1000",
                "cpus:1;mem:128",
            )])],
            Some(refuse(3600.0)),
        )
        .await
        .expect("ACCEPT");
    fw.wait_for_state("hog", pb::TaskState::TaskRunning).await;
    fw.handle
        .kill(
            pb::TaskId {
                value: "hog".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL");
    fw.wait_for_state("hog", pb::TaskState::TaskKilled).await;
    // The freed cpu is new, so the filter (a subset rule, as in Mesos) lets the whole
    // agent be offered again without waiting out the hour.
    let offer = fw.next_offers().await.remove(0);
    let cpus = agora_core::Resources::from_proto(&offer.resources)
        .expect("valid offer")
        .cpus();
    assert_eq!(cpus, 2.0);
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_framework_gets_the_offers_of_its_old_subscription() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let info = TestFramework::info("failing-over", 3600.0);
    let mut old = RawFramework::subscribe(&cluster.master_addr, info.clone()).await;
    let held = old.next_offers().await;
    assert!(!held.is_empty());
    // A new instance takes over while the old stream is still open, holding offers.
    let mut again = info;
    again.id = Some(old.framework_id.clone());
    let mut new = RawFramework::subscribe(&cluster.master_addr, again).await;
    let offers = new.next_offers().await;
    assert!(
        !offers.is_empty(),
        "the new subscription is offered the agents again"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offers_are_rescinded_after_the_offer_timeout() {
    let mut timings = agora_tests::fast_timings();
    timings.offer_timeout = Some(std::time::Duration::from_millis(200));
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .timings(timings)
        .start()
        .await;
    let mut fw =
        RawFramework::subscribe(&cluster.master_addr, TestFramework::info("idle", 0.0)).await;
    let offer = fw.next_offers().await.remove(0);
    let rescinded = fw
        .wait_for("the rescind", |e| match e {
            pb::event::Event::Rescind(r) => r.offer_id,
            _ => None,
        })
        .await;
    assert_eq!(Some(rescinded), offer.id);
    let again = fw.next_offers().await;
    assert_ne!(again[0].id, offer.id, "the resources are offered anew");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revive_clears_a_decline_filter() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        RawFramework::subscribe(&cluster.master_addr, TestFramework::info("reviver", 0.0)).await;
    let offer = fw.next_offers().await.remove(0);
    fw.call(pb::call::Call::Decline(pb::call::Decline {
        offer_ids: vec![offer.id.clone().expect("offer id")],
        filters: Some(refuse(3600.0)),
    }))
    .await
    .expect("DECLINE");
    // Without REVIVE the agent would stay filtered for an hour.
    fw.call(pb::call::Call::Revive(pb::call::Revive { roles: vec![] }))
        .await
        .expect("REVIVE");
    let again = fw.next_offers().await;
    assert_eq!(again[0].agent_id, offer.agent_id);
    cluster.shutdown().await;
}
