//! The master's HTTP endpoints and the operator commands of the `agora` binary.

use agora_proto as pb;
use agora_tests::{ClusterBuilder, TestFramework, http_get, node_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_state_answer_over_http() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("observed", 0.0)).await;
    fw.launch_shell("visible", "sleep 1000").await;
    fw.wait_for_state("visible", pb::TaskState::TaskRunning)
        .await;

    let (code, body) = http_get(&cluster.master_addr, "/health").await;
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON health");
    assert_eq!(health["healthy"], true);
    assert_eq!(health["leading"], true);

    let (code, body) = http_get(&cluster.master_addr, "/api/v1/state").await;
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&body).expect("JSON state");
    let agents = state["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    for agent in agents {
        assert_eq!(agent["status"], "ACTIVE");
        let cpus = agent["total"]
            .as_array()
            .expect("total resources")
            .iter()
            .find(|r| r["name"] == "cpus")
            .expect("cpus");
        assert_eq!(cpus["value"]["scalar"], 4.0);
        assert_eq!(agent["agent_info"]["attributes"][0]["name"], "rack");
    }
    let tasks = state["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["state"], "TASK_RUNNING");
    assert_eq!(tasks[0]["task_id"]["value"], "visible");
    let used_somewhere = agents.iter().any(|a| {
        a["used"]
            .as_array()
            .is_some_and(|u| u.iter().any(|r| r["name"] == "cpus"))
    });
    assert!(used_somewhere, "the running task's resources show as used");
    assert_eq!(state["frameworks"][0]["framework_info"]["name"], "observed");

    let (code, metrics) = http_get(&cluster.master_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("agora_master_tasks_launched_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agora_master_tasks{state=\"RUNNING\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agora_master_agents{status=\"ACTIVE\"} 2"),
        "{metrics}"
    );

    let (code, page) = http_get(&cluster.master_addr, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("/api/v1/state"));

    fw.stop().await;
    cluster.shutdown().await;
}

fn agora(args: &[&str]) -> String {
    let output = std::process::Command::new(node_bin!())
        .args(args)
        .output()
        .expect("the agora binary runs");
    assert!(
        output.status.success(),
        "agora {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_agents_frameworks_and_tasks() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("listed", 0.0)).await;
    fw.launch_shell("shown", "sleep 1000").await;
    fw.wait_for_state("shown", pb::TaskState::TaskRunning).await;
    let master = cluster.master_addr.clone();

    let output = tokio::task::spawn_blocking(move || {
        let agents = agora(&["agents", "--master", &master]);
        let frameworks = agora(&["frameworks", "--master", &master]);
        let tasks = agora(&["tasks", "--master", &master]);
        let state = agora(&["state", "--master", &master]);
        let json = agora(&["state", "--master", &master, "--json"]);
        (agents, frameworks, tasks, state, json)
    })
    .await
    .expect("the CLI runs");
    let (agents, frameworks, tasks, state, json) = output;
    assert!(agents.starts_with("ID"), "{agents}");
    assert_eq!(agents.matches("ACTIVE").count(), 2, "{agents}");
    assert!(
        agents.contains("rack:r1") && agents.contains("rack:r2"),
        "{agents}"
    );
    assert!(agents.contains("[31000-32000]"), "{agents}");
    assert!(
        frameworks.contains("listed") && frameworks.contains("yes"),
        "{frameworks}"
    );
    assert!(
        tasks.contains("shown") && tasks.contains("RUNNING"),
        "{tasks}"
    );
    assert!(
        state.contains("Agents (2)") && state.contains("Tasks (1 live"),
        "{state}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed["tasks"][0]["task_id"]["value"], "shown");
    let (_, http_state) = http_get(&cluster.master_addr, "/api/v1/state").await;
    let over_http: serde_json::Value = serde_json::from_str(&http_state).expect("JSON");
    assert_eq!(
        parsed["agents"], over_http["agents"],
        "the CLI and HTTP show the same state"
    );

    fw.stop().await;
    cluster.shutdown().await;
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "dev",
        "master",
        "agent",
        "state",
        "agents",
        "frameworks",
        "tasks",
    ] {
        let help = agora(&[sub, "--help"]);
        assert!(help.contains("Usage: "), "agora {sub} --help: {help}");
    }
    let bad = std::process::Command::new(node_bin!())
        .args([
            "agent",
            "--resources",
            "cpus:lots",
            "--master",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--work-dir")
        .arg(std::env::temp_dir().join(format!("agora-bad-{}", std::process::id())))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("cpus:lots") || stderr.contains("not a number"),
        "{stderr}"
    );
}
