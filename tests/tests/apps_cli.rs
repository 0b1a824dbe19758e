//! `agora app deploy|list|show|scale|restart|rm` through the binary, against the apps
//! instance of a real `agora dev`.

mod apps_support;

use agora_tests::kill_executor_sessions;
use apps_support::{agora, app_cli, get_json, ids, poll, start_dev, stop, wait_tasks};
use serde_json::Value;

/// The line of `agora app list` naming `id`, if any.
fn listed(listing: &str, id: &str) -> Option<String> {
    listing
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .map(str::to_string)
}

async fn wait_listed(apps: &str, id: &str, instances: &str) {
    poll(
        &format!("agora app list to show {id} at {instances}"),
        || async {
            let listing = app_cli(apps, &["list"], None).await;
            match listed(&listing, id) {
                Some(line) if line.split_whitespace().nth(1) == Some(instances) => Ok(()),
                _ => Err(listing),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_app_deploys_lists_scales_and_removes_apps() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--agents", "1", "--apps-port", "0"]).await;
    let apps = dev.apps.clone().expect("an apps instance");
    let url = format!("http://{apps}");

    let definition = r#"{"id": "/cli-web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.05,
                         "mem": 16, "env": {"GREETING": "hello"}}"#;
    let deployment = app_cli(&apps, &["deploy", "-"], Some(definition)).await;
    assert!(
        !deployment.trim().is_empty(),
        "deploy prints the deployment id"
    );
    wait_tasks(&apps, "/cli-web", 1, |_| true).await;
    wait_listed(&apps, "/cli-web", "1/1").await;

    app_cli(&apps, &["scale", "/cli-web", "3"], None).await;
    wait_tasks(&apps, "/cli-web", 3, |_| true).await;
    wait_listed(&apps, "/cli-web", "3/3").await;

    let shown: Value =
        serde_json::from_str(&app_cli(&apps, &["show", "/cli-web", "--json"], None).await)
            .expect("show --json prints JSON");
    assert_eq!(shown["instances"], 3, "{shown}");
    assert_eq!(shown["tasks"].as_array().map(Vec::len), Some(3), "{shown}");
    let summary = app_cli(&apps, &["show", "cli-web"], None).await;
    assert_eq!(summary.matches("TASK_RUNNING").count(), 3, "{summary}");

    // What `show --json` printed deploys again as an update (its read-only fields
    // dropped).
    let mut saved = shown.clone();
    saved["instances"] = 2.into();
    let file = dir.path().join("cli-web.json");
    std::fs::write(&file, saved.to_string()).expect("write the definition");
    let file = file.to_string_lossy().to_string();
    let update = agora(&["app", "deploy", &file, "--apps", &url], None).await;
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(update.status.success(), "{stderr}");
    assert!(stderr.contains("updating /cli-web"), "{stderr}");
    wait_tasks(&apps, "/cli-web", 2, |_| true).await;

    // Every stored version can be read back: the first one still says 1 instance.
    let versions = get_json(&apps, "/v2/apps/cli-web/versions")
        .await
        .expect("the versions");
    let versions: Vec<String> = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(versions.len(), 3, "create, scale, update: {versions:?}");
    let oldest = versions.iter().min().expect("a version");
    let first = get_json(&apps, &format!("/v2/apps/cli-web/versions/{oldest}"))
        .await
        .expect("the first version");
    assert_eq!(first["instances"], 1, "{first}");
    assert_eq!(first["version"], oldest.as_str(), "{first}");

    // A deployed file is the whole definition: the env it leaves out is dropped.
    let without_env =
        r#"{"id": "/cli-web", "cmd": "sleep 1000", "instances": 2, "cpus": 0.05, "mem": 16}"#;
    app_cli(&apps, &["deploy", "-"], Some(without_env)).await;
    poll("the env to be dropped", || async {
        let app = get_json(&apps, "/v2/apps/cli-web").await?;
        match app["app"]["env"].as_object() {
            Some(env) if env.is_empty() => Ok(()),
            _ => Err(app.to_string()),
        }
    })
    .await;

    // A restart replaces every task.
    let before = ids(&wait_tasks(&apps, "/cli-web", 2, |_| true).await);
    app_cli(&apps, &["restart", "/cli-web"], None).await;
    poll("every task of /cli-web to be replaced", || async {
        let tasks = get_json(&apps, "/v2/apps/cli-web/tasks").await?;
        let running: Vec<Value> = tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .cloned()
            .collect();
        let now = ids(&running);
        if now.len() == 2 && now.iter().all(|id| !before.contains(id)) {
            Ok(())
        } else {
            Err(tasks.to_string())
        }
    })
    .await;

    let invalid = agora(
        &["app", "deploy", "-", "--apps", &url],
        Some(r#"{"id": "/bad", "cmd": "sleep 1", "cpus": -1}"#),
    )
    .await;
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success(), "an invalid app is refused");
    assert!(
        stderr.contains("422") && stderr.contains("cpus"),
        "{stderr}"
    );
    let missing = agora(&["app", "show", "/missing", "--apps", &url], None).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );

    app_cli(&apps, &["rm", "/cli-web"], None).await;
    poll("the app to be gone", || async {
        let listing = app_cli(&apps, &["list"], None).await;
        match listed(&listing, "/cli-web") {
            None => Ok(()),
            Some(_) => Err(listing),
        }
    })
    .await;

    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
}

#[tokio::test]
async fn agora_app_says_what_is_wrong() {
    let unreachable = agora(&["app", "list", "--apps", "http://127.0.0.1:1"], None).await;
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("cannot reach the apps API at http://127.0.0.1:1"),
        "{stderr}"
    );

    let not_json = agora(
        &["app", "deploy", "-", "--apps", "http://127.0.0.1:1"],
        Some("{not json"),
    )
    .await;
    assert!(!not_json.status.success());
    let stderr = String::from_utf8_lossy(&not_json.stderr);
    assert!(stderr.contains("stdin does not hold JSON"), "{stderr}");

    let no_id = agora(
        &["app", "deploy", "-", "--apps", "http://127.0.0.1:1"],
        Some(r#"{"cmd": "sleep 1"}"#),
    )
    .await;
    assert!(!no_id.status.success());
    assert!(
        String::from_utf8_lossy(&no_id.stderr).contains("the app has no \"id\""),
        "{no_id:?}"
    );
}
