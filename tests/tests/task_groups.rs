//! Task groups through the real master, agent and default executor (real
//! processes): a group shares one sandbox and lives and dies together.

use std::path::{Path, PathBuf};

use agora_proto as pb;
use agora_sdk::OfferResources;
use agora_sdk::offer::TaskBuilder;
use agora_tests::{ClusterBuilder, TestFramework, node_bin, refuse};

/// Launches `commands` (task id, shell command) as one group on the first offer
/// that fits them all, under default executor `executor_id`.
async fn launch_group(fw: &mut TestFramework, executor_id: &str, commands: &[(&str, &str)]) {
    loop {
        for offer in fw.next_offers().await {
            let offer_id = offer.id.clone().unwrap_or_default();
            let tasks: Option<Vec<pb::TaskInfo>> =
                OfferResources::new(&offer).ok().and_then(|mut room| {
                    commands
                        .iter()
                        .map(|(id, cmd)| {
                            room.take(&TaskBuilder::new(*id).shell(*cmd).cpus(0.1).mem(32.0))
                                .ok()
                        })
                        .collect()
                });
            match tasks {
                Some(tasks) => {
                    fw.handle
                        .launch_group(offer_id, executor_id, tasks, Some(refuse(0.0)))
                        .await
                        .expect("ACCEPT with LAUNCH_GROUP");
                    return;
                }
                None => {
                    let _ = fw.handle.decline(vec![offer_id], Some(refuse(0.0))).await;
                }
            }
        }
    }
}

/// Every file named `name` under `dir`.
fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_files(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_of_a_group_gets_the_other_killed() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(&cluster.master_addr, TestFramework::info("pods", 0.0)).await;
    // The failing task only fails once the other one wrote its mark into the
    // sandbox they share: without a shared sandbox it would never end.
    launch_group(
        &mut fw,
        "pod-1",
        &[
            ("web", "touch web.mark; exec sleep 600"),
            (
                "sidecar",
                "while [ ! -e web.mark ]; do sleep 0.01; done; touch sidecar.mark; sh -c 'exit 3'",
            ),
        ],
    )
    .await;
    let sidecar = fw.wait_for_terminal("sidecar").await;
    assert_eq!(sidecar.state(), pb::TaskState::TaskFailed, "{sidecar:?}");
    assert_eq!(sidecar.exit_code, Some(3), "{sidecar:?}");
    let web = fw.wait_for_terminal("web").await;
    assert_eq!(web.state(), pb::TaskState::TaskKilled, "{web:?}");
    assert!(web.message.contains("sidecar"), "{web:?}");
    for status in [&sidecar, &web] {
        assert_eq!(
            status.executor_id.as_ref().map(|e| e.value.as_str()),
            Some("pod-1")
        );
    }
    let web_marks = find_files(cluster.dir.path(), "web.mark");
    let sidecar_marks = find_files(cluster.dir.path(), "sidecar.mark");
    assert_eq!(web_marks.len(), 1, "{web_marks:?}");
    assert_eq!(sidecar_marks.len(), 1, "{sidecar_marks:?}");
    assert_eq!(web_marks[0].parent(), sidecar_marks[0].parent());
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_finishing_tasks_finishes_and_frees_its_executor() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("batch", 0.0)).await;
    launch_group(&mut fw, "batch-1", &[("one", "true"), ("two", "echo two")]).await;
    for id in ["one", "two"] {
        let status = fw.wait_for_terminal(id).await;
        assert_eq!(status.state(), pb::TaskState::TaskFinished, "{status:?}");
        assert_eq!(status.exit_code, Some(0));
    }
    // The executor exits once both ends are acknowledged: the agent then counts no
    // executor (polled, not slept on).
    let addr = cluster.agents[0].1.local_addr().to_string();
    agora_tests::within("the default executor to exit", async {
        loop {
            let (_, metrics) = agora_tests::http_get(&addr, "/metrics").await;
            if metrics
                .lines()
                .any(|l| l.trim() == "agora_agent_executors 0")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_refuses_an_invalid_group_whole() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = agora_tests::RawFramework::subscribe(
        &cluster.master_addr,
        TestFramework::info("raw-pods", 0.0),
    )
    .await;
    let offers = fw.next_offers().await;
    let offer_id = offers[0].id.clone().expect("offer id");
    let agent = offers[0].agent_id.clone().expect("agent id");
    // One task asks for more than offered, one has a NaN health check timeout: the
    // whole group is refused, the fine task too.
    let greedy = agora_tests::shell_task("greedy", &agent, "true", "cpus:100;mem:32");
    let mut sick = agora_tests::shell_task("sick", &agent, "true", "cpus:0.1;mem:32");
    sick.health_check = Some(pb::HealthCheck {
        r#type: pb::health_check::Type::Tcp as i32,
        timeout_seconds: f64::NAN,
        tcp: Some(pb::health_check::Tcp { port: 80 }),
        ..Default::default()
    });
    let fine = agora_tests::shell_task("fine", &agent, "true", "cpus:0.1;mem:32");
    let group = |executor_id: &str, tasks: Vec<pb::TaskInfo>| pb::Operation {
        operation: Some(pb::operation::Operation::LaunchGroup(
            pb::operation::LaunchGroup {
                executor: Some(pb::ExecutorInfo {
                    r#type: pb::executor_info::Type::Default as i32,
                    executor_id: Some(pb::ExecutorId {
                        value: executor_id.into(),
                    }),
                    ..Default::default()
                }),
                task_group: Some(pb::TaskGroupInfo { tasks }),
            },
        )),
    };
    fw.call(pb::call::Call::Accept(pb::call::Accept {
        offer_ids: vec![offer_id],
        operations: vec![
            group("g1", vec![fine.clone(), greedy]),
            group("g2", vec![sick]),
        ],
        filters: Some(refuse(0.0)),
    }))
    .await
    .expect("ACCEPT");
    for (task_id, needle) in [
        ("fine", "more resources than offered"),
        ("greedy", "more resources than offered"),
        ("sick", "health_check.timeout_seconds"),
    ] {
        let status = fw.next_update(task_id).await;
        assert_eq!(status.state(), pb::TaskState::TaskError, "{status:?}");
        assert_eq!(
            status.reason,
            pb::task_status::Reason::TaskGroupInvalid as i32,
            "{status:?}"
        );
        assert!(status.message.contains(needle), "{status:?}");
    }
    cluster.shutdown().await;
}
