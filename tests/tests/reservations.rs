//! Dynamic reservations: RESERVE and UNRESERVE offer operations, replicated, offered
//! only to their role.

use agora_core::Resources;
use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, RawFramework, TestFramework, launch, node_bin, refuse, shell_task,
};

fn info(name: &str, role: &str) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        roles: vec![role.into()],
        ..TestFramework::info(name, 3600.0)
    }
}

/// The offer's cpus and memory (agents also report disk and ports).
fn resources(offer: &pb::Offer) -> Resources {
    let cpus_and_mem: Vec<pb::Resource> = offer
        .resources
        .iter()
        .filter(|r| r.name == "cpus" || r.name == "mem")
        .cloned()
        .collect();
    Resources::from_proto(&cpus_and_mem).expect("offered resources are valid")
}

fn r(text: &str) -> Resources {
    Resources::parse(text).expect("test resources parse")
}

fn operation(op: pb::operation::Operation) -> pb::Operation {
    pb::Operation {
        operation: Some(op),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_resources_go_only_to_their_role_and_survive_a_master_restart() {
    let mut cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .agent_resources("cpus:2;mem:1024")
        .start()
        .await;
    let mut eng = RawFramework::subscribe(&cluster.master_addr, info("eng", "eng")).await;
    let offer = eng.next_offers().await.remove(0);
    assert_eq!(offer.role, "eng");
    let agent = offer.agent_id.clone().expect("agent id");

    // Reserve one cpu and 256 MB for eng, and launch on part of it in the same call.
    eng.call(pb::call::Call::Accept(pb::call::Accept {
        offer_ids: vec![offer.id.clone().expect("offer id")],
        operations: vec![
            operation(pb::operation::Operation::Reserve(pb::operation::Reserve {
                resources: r("cpus(eng):1;mem(eng):256").to_proto(),
            })),
            launch(vec![shell_task(
                "on-reserved",
                &agent,
                "sleep 1000",
                "cpus(eng):0.5;mem(eng):64",
            )]),
        ],
        filters: Some(refuse(0.0)),
    }))
    .await
    .expect("ACCEPT");
    loop {
        let update = eng.next_update("on-reserved").await;
        match update.state() {
            pb::TaskState::TaskStarting => continue,
            pb::TaskState::TaskRunning => break,
            _ => panic!("the task on reserved resources did not run: {update:?}"),
        }
    }

    // What is left comes back with the reservation in it.
    let offer = eng.next_offers().await.remove(0);
    assert_eq!(
        resources(&offer),
        r("cpus(eng):0.5;mem(eng):192;cpus:1;mem:768"),
        "the reserved remainder and the unreserved rest"
    );
    // Another role is offered the unreserved part only.
    eng.call(pb::call::Call::Decline(pb::call::Decline {
        offer_ids: vec![offer.id.clone().expect("offer id")],
        filters: Some(refuse(3600.0)),
    }))
    .await
    .expect("DECLINE");
    let mut web = RawFramework::subscribe(&cluster.master_addr, info("web", "web")).await;
    let offer = web.next_offers().await.remove(0);
    assert_eq!(resources(&offer), r("cpus:1;mem:768"));
    drop(web);

    // The reservation is in the registry: a new master (term) offers it again.
    let framework_id = eng.framework_id.clone();
    drop(eng);
    cluster.restart_master().await;
    let mut again = info("eng", "eng");
    again.id = Some(framework_id);
    let mut eng = RawFramework::subscribe(&cluster.master_addr, again).await;
    let offer = loop {
        let offer = eng.next_offers().await.remove(0);
        if resources(&offer).contains(&r("cpus(eng):0.5")) {
            break offer;
        }
    };
    assert_eq!(
        resources(&offer),
        r("cpus(eng):0.5;mem(eng):192;cpus:1;mem:768"),
        "the reservation survived the restart"
    );

    // UNRESERVE what is not used: it is unreserved again.
    eng.call(pb::call::Call::Accept(pb::call::Accept {
        offer_ids: vec![offer.id.clone().expect("offer id")],
        operations: vec![operation(pb::operation::Operation::Unreserve(
            pb::operation::Unreserve {
                resources: r("cpus(eng):0.5;mem(eng):192").to_proto(),
            },
        ))],
        filters: Some(refuse(0.0)),
    }))
    .await
    .expect("ACCEPT");
    let offer = eng.next_offers().await.remove(0);
    assert_eq!(resources(&offer), r("cpus:1.5;mem:960"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reservation_is_dropped_and_changes_nothing() {
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(1)
        .agent_resources("cpus:2;mem:1024")
        .start()
        .await;
    let mut eng = RawFramework::subscribe(&cluster.master_addr, info("eng", "eng")).await;
    let offer = eng.next_offers().await.remove(0);
    // More than offered, and for a role the offer was not made to.
    for bad in ["cpus(eng):8", "cpus(web):1", "cpus:1"] {
        let offer = if bad == "cpus(eng):8" {
            offer.clone()
        } else {
            eng.next_offers().await.remove(0)
        };
        eng.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids: vec![offer.id.clone().expect("offer id")],
            operations: vec![operation(pb::operation::Operation::Reserve(
                pb::operation::Reserve {
                    resources: r(bad).to_proto(),
                },
            ))],
            filters: Some(refuse(0.0)),
        }))
        .await
        .expect("ACCEPT is answered; the bad operation is dropped");
    }
    let offer = eng.next_offers().await.remove(0);
    assert_eq!(
        resources(&offer),
        r("cpus:2;mem:1024"),
        "nothing was reserved"
    );
    cluster.shutdown().await;
}
