//! Health checks through the real master, agent and executor (real processes and
//! sockets): HTTP, TCP and COMMAND checks, `healthy` on the updates, and the kill
//! after the allowed failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_proto as pb;
use agora_proto::task_status::Reason;
use agora_sdk::OfferResources;
use agora_sdk::offer::TaskBuilder;
use agora_tests::{ClusterBuilder, Seen, TestFramework, launch, node_bin, refuse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Launches one shell task with `check` on the first offer that fits.
async fn launch_checked(fw: &mut TestFramework, task_id: &str, cmd: &str, check: pb::HealthCheck) {
    loop {
        for offer in fw.next_offers().await {
            let offer_id = offer.id.clone().unwrap_or_default();
            let task = OfferResources::new(&offer).ok().and_then(|mut room| {
                room.take(&TaskBuilder::new(task_id).shell(cmd).cpus(0.1).mem(32.0))
                    .ok()
            });
            match task {
                Some(mut task) => {
                    task.health_check = Some(check.clone());
                    fw.handle
                        .accept(vec![offer_id], vec![launch(vec![task])], Some(refuse(0.0)))
                        .await
                        .expect("ACCEPT");
                    return;
                }
                None => {
                    let _ = fw.handle.decline(vec![offer_id], Some(refuse(0.0))).await;
                }
            }
        }
    }
}

/// The next TASK_RUNNING of `task_id` that reports its health.
async fn next_health(fw: &mut TestFramework, task_id: &str) -> pb::TaskStatus {
    fw.wait_for(
        &format!("a health report of {task_id}"),
        |seen| match seen {
            Seen::Update(s)
                if s.task_id.as_ref().map(|t| t.value.as_str()) == Some(task_id)
                    && s.state == pb::TaskState::TaskRunning as i32
                    && s.healthy.is_some() =>
            {
                Some(s.clone())
            }
            _ => None,
        },
    )
    .await
}

/// Quick checks for tests: the first 10 ms after the start, then every 100 ms.
fn quick(check: pb::HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        delay_seconds: 0.01,
        interval_seconds: 0.1,
        timeout_seconds: 0.5,
        consecutive_failures: 3,
        // Failures before the first success are ignored this long.
        grace_period_seconds: 60.0,
        ..check
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_http_check_stops_answering_is_killed_unhealthy() {
    // A server that answers 200 until `broken`, then accepts and never answers
    // (the checks time out).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broken = Arc::new(AtomicBool::new(false));
    let server_broken = broken.clone();
    let server = tokio::spawn(async move {
        let mut hung = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            if server_broken.load(Ordering::SeqCst) {
                hung.push(socket);
                continue;
            }
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let ok = request.starts_with(b"GET /health HTTP/1.");
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = socket.write_all(reply).await;
            });
        }
    });

    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(&cluster.master_addr, TestFramework::info("http", 0.0)).await;
    let check = quick(pb::HealthCheck {
        r#type: pb::health_check::Type::Http as i32,
        http: Some(pb::health_check::Http {
            port: u32::from(port),
            path: "/health".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    launch_checked(&mut fw, "web", "exec sleep 600", check).await;
    let healthy = next_health(&mut fw, "web").await;
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");
    assert_eq!(healthy.reason, Reason::TaskHealthCheckStatusUpdated as i32);

    broken.store(true, Ordering::SeqCst);
    let unhealthy = next_health(&mut fw, "web").await;
    assert_eq!(unhealthy.healthy, Some(false), "{unhealthy:?}");
    assert!(unhealthy.message.contains("timed out"), "{unhealthy:?}");
    let killed = fw.wait_for_terminal("web").await;
    assert_eq!(killed.state(), pb::TaskState::TaskKilled, "{killed:?}");
    assert_eq!(killed.healthy, Some(false), "{killed:?}");
    assert_eq!(killed.reason, Reason::TaskHealthCheckStatusUpdated as i32);
    assert!(
        killed
            .message
            .contains("3 consecutive health checks failed"),
        "{killed:?}"
    );
    server.abort();
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_that_starts_passing_reports_healthy() {
    // A free port nobody listens on yet (the OS does not hand it out again at once).
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(&cluster.master_addr, TestFramework::info("tcp", 0.0)).await;
    let check = quick(pb::HealthCheck {
        r#type: pb::health_check::Type::Tcp as i32,
        tcp: Some(pb::health_check::Tcp {
            port: u32::from(port),
        }),
        ..Default::default()
    });
    launch_checked(&mut fw, "db", "exec sleep 600", check).await;
    // Running, refusing connections (not counted: no success yet, within grace).
    fw.wait_for_state("db", pb::TaskState::TaskRunning).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is still free");
    let accepting = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let healthy = next_health(&mut fw, "db").await;
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");
    assert_eq!(healthy.reason, Reason::TaskHealthCheckStatusUpdated as i32);

    let agent = healthy.agent_id.clone();
    fw.handle
        .kill(pb::TaskId { value: "db".into() }, agent)
        .await
        .expect("KILL");
    let killed = fw.wait_for_terminal("db").await;
    assert_eq!(killed.state(), pb::TaskState::TaskKilled, "{killed:?}");
    assert_eq!(
        killed.healthy, None,
        "a kill asked for is no health verdict"
    );
    accepting.abort();
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_check_runs_in_the_tasks_sandbox_with_its_environment() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(&cluster.master_addr, TestFramework::info("cmd", 0.0)).await;
    // Healthy once the task wrote `ready` into its sandbox (the check's working
    // directory) and only for this task's id.
    let check = quick(pb::HealthCheck {
        r#type: pb::health_check::Type::Command as i32,
        command: Some(pb::CommandInfo {
            shell: true,
            value: "test -e ready && test \"$AGORA_TASK_ID\" = worker".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    launch_checked(&mut fw, "worker", "touch ready; exec sleep 600", check).await;
    let healthy = next_health(&mut fw, "worker").await;
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");

    // A check that can never pass once its grace is over: the task is killed after
    // two failures.
    let failing = pb::HealthCheck {
        consecutive_failures: 2,
        grace_period_seconds: 0.01,
        ..quick(pb::HealthCheck {
            r#type: pb::health_check::Type::Command as i32,
            command: Some(pb::CommandInfo {
                shell: true,
                value: "exit 1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    launch_checked(&mut fw, "sick", "exec sleep 600", failing).await;
    let killed = fw.wait_for_terminal("sick").await;
    assert_eq!(killed.state(), pb::TaskState::TaskKilled, "{killed:?}");
    assert_eq!(killed.healthy, Some(false), "{killed:?}");
    assert!(killed.message.contains("status 1"), "{killed:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_with_bad_figures_is_refused_with_a_clear_error() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(&cluster.master_addr, TestFramework::info("bad", 0.0)).await;
    let offer = fw.next_offers().await.remove(0);
    let mut task = OfferResources::new(&offer)
        .unwrap()
        .take(
            &TaskBuilder::new("nan")
                .shell("sleep 600")
                .cpus(0.1)
                .mem(32.0),
        )
        .unwrap();
    task.health_check = Some(pb::HealthCheck {
        r#type: pb::health_check::Type::Tcp as i32,
        timeout_seconds: f64::NAN,
        tcp: Some(pb::health_check::Tcp { port: 80 }),
        ..Default::default()
    });
    let refused = fw
        .handle
        .accept(
            vec![offer.id.clone().unwrap_or_default()],
            vec![launch(vec![task])],
            Some(refuse(0.0)),
        )
        .await
        .expect_err("the SDK refuses a NaN timeout before sending it");
    assert!(
        refused.to_string().contains("health_check.timeout_seconds"),
        "{refused}"
    );
    fw.stop().await;
    cluster.shutdown().await;
}
