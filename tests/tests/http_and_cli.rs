//! The master's HTTP endpoints and the operator commands of the `agora` binary.

use agora_proto as pb;
use agora_tests::{ClusterBuilder, GroupFramework, MasterGroup, TestFramework, http_get, node_bin};

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

/// Runs `agora args` expecting it to fail; returns its stderr.
fn agora_fails(args: &[&str]) -> String {
    let output = std::process::Command::new(node_bin!())
        .args(args)
        .output()
        .expect("the agora binary runs");
    assert!(
        !output.status.success(),
        "agora {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).to_string()
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
    for sub in ["add", "remove", "group"] {
        let help = agora(&["master", sub, "--help"]);
        assert!(
            help.contains("Usage: ") && help.contains(&format!(" master {sub} ")),
            "agora master {sub} --help: {help}"
        );
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

#[test]
fn master_group_flags_are_checked_before_anything_starts() {
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3";
    let stderr = agora_fails(&["master", "--id", "4", "--peers", peers]);
    assert!(
        stderr.contains("--id 4 is not among --peers (ids 1, 2, 3)") && stderr.contains("--join"),
        "{stderr}"
    );
    let stderr = agora_fails(&["master", "--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert!(stderr.contains("master id 1 appears twice"), "{stderr}");
    let stderr = agora_fails(&["master", "--peers", "1=127.0.0.1"]);
    assert!(stderr.contains("no port"), "{stderr}");
    let stderr = agora_fails(&[
        "master",
        "--peers",
        peers,
        "--raft-election-ticks",
        "2",
        "--raft-heartbeat-ticks",
        "2",
    ]);
    assert!(
        stderr.contains("--raft-election-ticks (2) must be more"),
        "{stderr}"
    );
    let stderr = agora_fails(&["master", "--listen", "127.0.0.1:0", "group"]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = agora_fails(&["master", "add", "--id", "0", "--address", "127.0.0.1:1"]);
    assert!(stderr.contains("--id"), "{stderr}");
    let stderr = agora_fails(&["master", "add", "--id", "4", "--address", "nowhere"]);
    assert!(stderr.contains("no port"), "{stderr}");
    let stderr = agora_fails(&["dev", "--masters", "2"]);
    assert!(stderr.contains("1, 3 or 5"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_leader_of_a_master_group() {
    let mut group = MasterGroup::start(node_bin!()).await;
    let leader = group.wait_for_leader().await;
    let leader_addr = group.address(leader).to_string();
    let followers: Vec<u64> = group.ids().into_iter().filter(|id| *id != leader).collect();
    let (asked, removed) = match followers[..] {
        [asked, removed] => (asked, removed),
        _ => panic!("three masters, one leading: {followers:?}"),
    };
    let follower = group.address(asked).to_string();
    let fw = GroupFramework::start(group.addresses(), TestFramework::info("grouped", 0.0)).await;

    let asking = follower.clone();
    let output = tokio::task::spawn_blocking(move || {
        let follower = asking;
        let group_view = agora(&["master", "group", "--master", &follower]);
        let own_view = agora(&["master", "group", "--master", &follower, "--no-follow"]);
        let state = agora(&["state", "--master", &follower]);
        // A master that does not answer first, then a follower: the view comes from
        // the leader the follower names.
        let frameworks = agora(&["frameworks", "--master", &format!("127.0.0.1:1,{follower}")]);
        let unknown = agora_fails(&["master", "remove", "--id", "9", "--master", &follower]);
        let removal = agora(&[
            "master",
            "remove",
            "--id",
            &removed.to_string(),
            "--master",
            &follower,
        ]);
        (group_view, own_view, state, frameworks, unknown, removal)
    })
    .await
    .expect("the CLI runs");
    let (group_view, own_view, state, frameworks, unknown, removal) = output;

    assert!(
        group_view.contains(&format!(
            "Leader: master {leader} at {leader_addr} (this master)"
        )),
        "the group is shown as the leader sees it: {group_view}"
    );
    for id in group.ids() {
        assert!(
            group_view.contains(&format!("{id}   {}", group.address(id))),
            "master {id} is listed: {group_view}"
        );
    }
    assert!(
        own_view.contains(&format!(
            "As seen by master {asked} at {follower} (FOLLOWER)"
        )),
        "{own_view}"
    );
    assert!(
        state.contains("does not lead")
            && state.contains(&format!("Leader: master {leader} at {leader_addr}"))
            && state.contains("Masters (3)"),
        "{state}"
    );
    assert!(
        frameworks.contains("grouped") && frameworks.contains("yes"),
        "the frameworks came from the leader: {frameworks}"
    );
    assert!(unknown.contains("master 9 is not a member"), "{unknown}");
    assert!(
        removal.contains(&format!("Master {removed} is no longer a member")),
        "{removal}"
    );
    let members: Vec<u64> = group
        .group_view(leader)
        .await
        .expect("the leader answers")
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    let mut expected = vec![leader, asked];
    expected.sort_unstable();
    assert_eq!(members, expected, "master {removed} left the group");

    fw.stop().await;
}

#[test]
fn the_role_and_maintenance_commands_have_help() {
    for args in [
        &["quota", "--help"][..],
        &["quota", "set", "--help"],
        &["quota", "get", "--help"],
        &["quota", "rm", "--help"],
        &["weights", "--help"],
        &["weights", "set", "--help"],
        &["roles", "--help"],
        &["agent", "drain", "--help"],
        &["agent", "reactivate", "--help"],
    ] {
        let help = agora(args);
        assert!(help.contains("Usage: "), "agora {args:?}: {help}");
        // Every command that asks a master takes the group's addresses.
        assert!(
            args == ["quota", "--help"] || help.contains("--master"),
            "agora {args:?}: {help}"
        );
    }
    let agent = agora(&["agent", "--help"]);
    assert!(
        agent.contains("drain") && agent.contains("reactivate") && agent.contains("--work-dir"),
        "{agent}"
    );
    // Refused before any master is asked.
    let stderr = agora_fails(&["quota", "set", "eng", "--guarantee", "cpus(eng):1"]);
    assert!(stderr.contains("unreserved"), "{stderr}");
    let stderr = agora_fails(&["quota", "set", "eng"]);
    assert!(stderr.contains("--guarantee, --limit or both"), "{stderr}");
    let stderr = agora_fails(&["weights", "set", "eng=0"]);
    assert!(stderr.contains("above 0"), "{stderr}");
    let stderr = agora_fails(&["agent", "drain", "x", "--deadline", "soon"]);
    assert!(stderr.contains("not a duration"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_weights_roles_and_drains_from_the_cli() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let agent = cluster.agents[0].0.clone();
    // A master that does not answer first: every command finds the leader.
    let master = format!("127.0.0.1:1,{}", cluster.master_addr);
    let output = tokio::task::spawn_blocking(move || {
        let m = master.as_str();
        let set = agora(&[
            "quota",
            "set",
            "eng",
            "--guarantee",
            "cpus:1;mem:128",
            "--limit",
            "cpus:2;gpus:0",
            "--master",
            m,
        ]);
        let listed = agora(&["quota", "get", "--master", m]);
        let one = agora(&["quota", "get", "eng", "--master", m, "--json"]);
        let bad = agora_fails(&["quota", "set", "*", "--guarantee", "cpus:1", "--master", m]);
        let over = agora_fails(&[
            "quota",
            "set",
            "eng",
            "--guarantee",
            "cpus:4",
            "--limit",
            "cpus:2",
            "--master",
            m,
        ]);
        let weighted = agora(&["weights", "set", "eng=2,ops=0.5", "--master", m]);
        let weights = agora(&["weights", "--master", m]);
        let roles = agora(&["roles", "--master", m]);
        let roles_json = agora(&["roles", "--master", m, "--json"]);
        let removed = agora(&["quota", "rm", "eng", "--master", m]);
        let gone = agora_fails(&["quota", "get", "eng", "--master", m]);
        let drained = agora(&["agent", "drain", &agent, "--deadline", "10m", "--master", m]);
        let agents = agora(&["agents", "--master", m]);
        let reactivated = agora(&["agent", "reactivate", &agent, "--master", m]);
        let unknown = agora_fails(&["agent", "drain", "no-such-agent", "--master", m]);
        (
            set,
            listed,
            one,
            bad,
            over,
            weighted,
            weights,
            roles,
            roles_json,
            removed,
            gone,
            drained,
            agents,
            reactivated,
            unknown,
        )
    })
    .await
    .expect("the CLI runs");
    let (
        set,
        listed,
        one,
        bad,
        over,
        weighted,
        weights,
        roles,
        roles_json,
        removed,
        gone,
        drained,
        agents,
        reactivated,
        unknown,
    ) = output;
    assert!(set.contains("Quota of role 'eng' set"), "{set}");
    assert!(
        listed.starts_with("ROLE") && listed.contains("eng   cpus:1;mem:128  cpus:2;gpus:0"),
        "{listed}"
    );
    let one: serde_json::Value = serde_json::from_str(&one).expect("--json prints JSON");
    assert_eq!(one[0]["role"], "eng");
    assert_eq!(one[0]["limit"][1]["name"], "gpus");
    assert!(
        bad.contains("quota.role") && bad.contains("InvalidArgument"),
        "{bad}"
    );
    assert!(over.contains("exceeds the limit"), "{over}");
    assert!(weighted.contains("Weights set"), "{weighted}");
    assert!(
        weights.contains("eng   2") && weights.contains("ops   0.5"),
        "{weights}"
    );
    assert!(
        roles.starts_with("ROLE") && roles.contains("SHARE"),
        "{roles}"
    );
    let eng_row = roles
        .lines()
        .find(|l| l.starts_with("eng "))
        .unwrap_or_else(|| panic!("eng is listed: {roles}"));
    assert!(
        eng_row.contains(" 2 ") && eng_row.contains("cpus:1;mem:128"),
        "{roles}"
    );
    let roles_json: serde_json::Value = serde_json::from_str(&roles_json).expect("JSON roles");
    assert!(
        roles_json
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["role"] == "ops" && r["weight"] == 0.5)),
        "{roles_json}"
    );
    assert!(removed.contains("removed"), "{removed}");
    assert!(gone.contains("has no quota"), "{gone}");
    assert!(
        drained.contains("is draining") && drained.contains("in 10m"),
        "{drained}"
    );
    assert!(agents.contains("DRAINED"), "no task ran there: {agents}");
    assert!(reactivated.contains("active again"), "{reactivated}");
    assert!(unknown.contains("not known"), "{unknown}");
    let state = cluster.state().await;
    assert_eq!(state.agents[0].status, "ACTIVE");
    cluster.shutdown().await;
}
