//! Apps across process boundaries: `agora dev --no-apps` for the master, and
//! `agora apps` and `agora agent`s as processes of their own, so that agents can come
//! and go (SIGKILLed) and the apps process can be SIGKILLed and started again.

mod apps_support;

use std::collections::BTreeMap;

use agora_tests::python::assert_script;
use agora_tests::{kill_executor_sessions, marathon_python};
use apps_support::{
    app_cli, get_json, hosts, ids, kill, master_running, poll, start_agent, start_apps,
    start_apps_listening, start_apps_standby, start_dev, stop, wait_leading, wait_tasks,
};

/// Master flags that find a killed agent unreachable within a second.
const FAST_UNREACHABLE: [&str; 4] = ["--agent-ping-interval", "200ms", "--max-missed-pings", "3"];

fn app(id: &str, instances: u32, daemon: bool) -> String {
    let mut app = serde_json::json!({
        "id": id, "cmd": "sleep 1000", "cpus": 0.05, "mem": 16, "instances": instances,
    });
    if daemon {
        app["labels"] = serde_json::json!({ "AGORA_DAEMON": "true" });
    }
    app.to_string()
}

fn host_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_follow_agents_as_they_come_and_go() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut flags = vec!["--no-apps", "--agents", "0"];
    flags.extend_from_slice(&FAST_UNREACHABLE);
    let dev = start_dev(dir.path(), &flags).await;
    let master = dev.master.clone();
    let mut agents = BTreeMap::new();
    for (i, host) in ["host-a", "host-b", "host-c"].into_iter().enumerate() {
        let first = 31000 + 200 * i;
        let ports = format!("{first}-{}", first + 199);
        let work_dir = dir.path().join(host);
        agents.insert(host, start_agent(&master, host, &work_dir, &ports));
    }
    let (apps_process, apps) = start_apps(&master).await;
    let url = format!("http://{apps}");

    // UNIQUE hostname, 4 instances on 3 hosts: 3 run, the 4th waits in the queue.
    if let Some(python) = tokio::task::spawn_blocking(|| marathon_python!())
        .await
        .expect("the virtualenv check runs")
    {
        assert_script(&python, "unique_hostname.py", &[&url, "3"]).await;
    }

    // A daemon app follows agents that join and leave.
    app_cli(&apps, &["deploy", "-"], Some(&app("/everywhere", 1, true))).await;
    let three = host_names(&["host-a", "host-b", "host-c"]);
    wait_tasks(&apps, "/everywhere", 3, |h| h == three).await;
    let joining = start_agent(&master, "host-d", &dir.path().join("host-d"), "31600-31799");
    let four = host_names(&["host-a", "host-b", "host-c", "host-d"]);
    wait_tasks(&apps, "/everywhere", 4, |h| h == four).await;
    kill(joining, "the agent on host-d").await;
    wait_tasks(&apps, "/everywhere", 3, |h| h == three).await;

    // The instances of a lost agent move to the others.
    app_cli(&apps, &["deploy", "-"], Some(&app("/mover", 2, false))).await;
    let placed = wait_tasks(&apps, "/mover", 2, |_| true).await;
    let lost = hosts(&placed)[0].clone();
    // An app kept on that agent for an hour after it becomes unreachable.
    let patient = serde_json::json!({
        "id": "/patient", "cmd": "sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1,
        "constraints": [["hostname", "IS", lost]],
        "unreachableStrategy": {"inactiveAfterSeconds": 3600, "expungeAfterSeconds": 3600},
    });
    app_cli(&apps, &["deploy", "-"], Some(&patient.to_string())).await;
    wait_tasks(&apps, "/patient", 1, |_| true).await;
    let victim = agents.remove(lost.as_str()).expect("one of our agents");
    kill(victim, &lost).await;
    let moved = wait_tasks(&apps, "/mover", 2, |h| !h.contains(&lost)).await;
    // Deleting it while its only instance is unreachable finishes: the kill that can
    // never be confirmed does not hold the deployment.
    poll("/patient's instance to be unreachable", || async {
        let tasks = get_json(&apps, "/v2/apps/patient/tasks").await?;
        match tasks["tasks"][0]["state"].as_str() {
            Some("TASK_UNREACHABLE") => Ok(()),
            _ => Err(tasks.to_string()),
        }
    })
    .await;
    app_cli(&apps, &["rm", "/patient"], None).await;
    poll("the deletion of /patient to finish", || async {
        let deployments = get_json(&apps, "/v2/deployments").await?;
        let apps_listed = get_json(&apps, "/v2/apps").await?;
        let gone = apps_listed["apps"]
            .as_array()
            .is_some_and(|a| a.iter().all(|app| app["id"] != "/patient"));
        if deployments.as_array().is_some_and(Vec::is_empty) && gone {
            Ok(())
        } else {
            Err(format!("{deployments} {apps_listed}"))
        }
    })
    .await;
    let kept = placed.iter().filter(|t| t["host"] != lost.as_str());
    for task in kept {
        assert!(
            ids(&moved).iter().any(|id| task["id"] == id.as_str()),
            "a task on a live agent stays: {task} in {moved:?}"
        );
    }
    let survivors: Vec<String> = three.iter().filter(|h| **h != lost).cloned().collect();
    wait_tasks(&apps, "/everywhere", 2, |h| h == survivors).await;

    stop(apps_process, "agora apps").await;
    for (host, agent) in agents {
        stop(agent, host).await;
    }
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apps_process_comes_back_to_the_same_apps_and_instances() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--agents", "2"]).await;
    let master = dev.master.clone();
    let (first, apps) = start_apps(&master).await;
    app_cli(&apps, &["deploy", "-"], Some(&app("/steady", 3, false))).await;
    let before = ids(&wait_tasks(&apps, "/steady", 3, |_| true).await);
    assert_eq!(master_running(&master, "steady.").await.unwrap(), before);
    // An app that fails at once: its first failure delays it 1 s, its second
    // 100 s (factor 100), and the third would be an hour.
    let crashing = serde_json::json!({
        "id": "/crashing", "cmd": "exit 1", "cpus": 0.05, "mem": 16, "instances": 1,
        "backoffSeconds": 1, "backoffFactor": 100, "maxLaunchDelaySeconds": 3600,
    });
    app_cli(&apps, &["deploy", "-"], Some(&crashing.to_string())).await;
    let delay = wait_backoff(&apps, "/crashing").await;
    assert!(delay <= 100, "two failures, not three: {delay}");
    assert_eq!(master_tasks(&master, "crashing.").await, 2);

    kill(first, "the first apps process").await;
    let (second, apps) = start_apps(&master).await;
    // The new process leads once the killed one's lease lapsed, with the same apps.
    let listed = poll("the restarted apps process to list its apps", || async {
        let body = get_json(&apps, "/v2/apps").await?;
        let ids: Vec<String> = body["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        if ids.is_empty() {
            Err(body.to_string())
        } else {
            Ok(ids)
        }
    })
    .await;
    assert_eq!(listed, ["/crashing", "/steady"]);
    let after = ids(&wait_tasks(&apps, "/steady", 3, |_| true).await);
    assert_eq!(after, before, "the same instances, none launched again");
    // The backoff was kept: still delayed by what is left of the 100 s, neither
    // restarted at 1 s (a third launch) nor grown by counting the last failure,
    // which reconciliation reports again, a second time (an hour).
    let delay = wait_backoff(&apps, "/crashing").await;
    assert!(delay <= 100, "the last failure counted once: {delay}");
    assert_eq!(master_tasks(&master, "crashing.").await, 2);

    // Still no duplicate once it acts: scaling adds exactly one task.
    app_cli(&apps, &["scale", "/steady", "4"], None).await;
    let scaled = ids(&wait_tasks(&apps, "/steady", 4, |_| true).await);
    assert!(before.iter().all(|id| scaled.contains(id)), "{scaled:?}");
    assert_eq!(master_running(&master, "steady.").await.unwrap(), scaled);

    stop(second, "agora apps").await;
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

/// Waits until `/v2/queue` shows `app` delayed by more than 50 s of backoff;
/// returns the seconds left.
async fn wait_backoff(apps: &str, app: &str) -> i64 {
    poll(&format!("{app} to be delayed in /v2/queue"), || async {
        let queue = get_json(apps, "/v2/queue").await?;
        queue["queue"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["app"]["id"] == app)
            .filter_map(|entry| entry["delay"]["timeLeftSeconds"].as_i64())
            .find(|left| *left > 50)
            .ok_or_else(|| queue.to_string())
    })
    .await
}

/// How many tasks (live or completed) whose id starts with `prefix` the master knows.
async fn master_tasks(master: &str, prefix: &str) -> usize {
    let state = get_json(master, "/api/v1/state")
        .await
        .expect("the master's state");
    ["tasks", "completed_tasks"]
        .iter()
        .flat_map(|list| state[*list].as_array().into_iter().flatten())
        .filter_map(|t| t["task_id"]["value"].as_str())
        .filter(|id| id.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--agents", "2"]).await;
    let master = dev.master.clone();
    // Listening on every interface, it tells clients to come by 127.0.0.1.
    let (leader, leader_api) = start_apps_listening(
        &master,
        &["--listen", "0.0.0.0:0", "--advertise", "127.0.0.1"],
    )
    .await;
    wait_leading(&leader_api).await;
    let port = leader_api
        .rsplit_once(':')
        .map(|(_, port)| port.to_string());
    let advertised = format!("127.0.0.1:{}", port.unwrap_or_default());
    app_cli(&leader_api, &["deploy", "-"], Some(&app("/kept", 2, false))).await;
    let before = ids(&wait_tasks(&leader_api, "/kept", 2, |_| true).await);

    // A second instance of the same framework stands by: it sends clients to the
    // leader rather than acting itself.
    let (standby, standby_api) = start_apps_standby(&master).await;
    // (503 until it has read who holds the lease.)
    poll("the standby to redirect to the leader", || async {
        match agora_tests::http_get(&standby_api, "/v2/apps").await {
            (307, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    let leader_named = get_json(&standby_api, "/v2/leader")
        .await
        .expect("the standby names the leader");
    assert_eq!(
        leader_named["leader"],
        advertised.as_str(),
        "{leader_named}"
    );

    kill(leader, "the leading apps process").await;
    wait_leading(&standby_api).await;
    let after = ids(&wait_tasks(&standby_api, "/kept", 2, |_| true).await);
    assert_eq!(after, before, "the standby took over the same instances");
    assert_eq!(master_running(&master, "kept.").await.unwrap(), before);

    stop(standby, "agora apps").await;
    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}
