//! Frameworks subscribed to several roles: offers per role, SUPPRESS and REVIVE per
//! role, decline filters per role.

use agora_proto as pb;
use agora_tests::{ClusterBuilder, RawFramework, TestFramework, node_bin, refuse};

fn info(name: &str, roles: &[&str]) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..TestFramework::info(name, 3600.0)
    }
}

async fn decline(fw: &mut RawFramework, offer: &pb::Offer, seconds: f64) {
    fw.call(pb::call::Call::Decline(pb::call::Decline {
        offer_ids: vec![offer.id.clone().expect("offer id")],
        filters: Some(refuse(seconds)),
    }))
    .await
    .expect("DECLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_of_two_roles_is_offered_for_each_and_suppresses_one() {
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .agent_resources("cpus:2;mem:1024")
        .start()
        .await;
    let mut fw = RawFramework::subscribe(&cluster.master_addr, info("two", &["a", "b"])).await;

    // A decline filter holds for the role it was made in only: declining the offer of
    // one role for an hour brings the agent back under the other role.
    let first = fw.next_offers().await.remove(0);
    let first_role = first.role.clone();
    assert!(
        first_role == "a" || first_role == "b",
        "offered to {first_role}"
    );
    decline(&mut fw, &first, 3600.0).await;
    let second = fw.next_offers().await.remove(0);
    assert_ne!(
        second.role, first_role,
        "the filter of one role held for the other"
    );

    // SUPPRESS the other role: nothing is offered any more (the first role is
    // filtered, the second suppressed).
    fw.call(pb::call::Call::Suppress(pb::call::Suppress {
        roles: vec![second.role.clone()],
    }))
    .await
    .expect("SUPPRESS");
    decline(&mut fw, &second, 0.0).await;
    // REVIVE of the first role clears its filter: the agent comes back in that role.
    fw.call(pb::call::Call::Revive(pb::call::Revive {
        roles: vec![first_role.clone()],
    }))
    .await
    .expect("REVIVE");
    let again = fw.next_offers().await.remove(0);
    assert_eq!(again.role, first_role, "the suppressed role was offered");
    cluster.shutdown().await;
}
