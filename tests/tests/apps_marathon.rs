//! The apps API driven by Marathon's own Python client (PyPI `marathon`), against a
//! real `agora dev` (3 agents and an apps instance): one scenario script of
//! `tests/python/` after another, on the same cluster.

mod apps_support;

use agora_tests::python::run_script;
use agora_tests::{kill_executor_sessions, marathon_python};
use apps_support::{start_dev, stop};

/// Agents of the dev cluster (the daemon scenario expects one instance on each).
const AGENTS: &str = "3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_client_scenarios() {
    let Some(python) = tokio::task::spawn_blocking(|| marathon_python!())
        .await
        .expect("the virtualenv check runs")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--agents", AGENTS, "--apps-port", "0"]).await;
    let url = format!("http://{}", dev.apps.as_deref().expect("an apps instance"));

    let scenarios: [(&str, &[&str]); 4] = [
        ("app_lifecycle.py", &[]),
        ("rolling_update.py", &[]),
        ("health_replace.py", &[]),
        ("daemon.py", &[AGENTS]),
    ];
    let mut failures = Vec::new();
    for (script, extra) in scenarios {
        let mut args = vec![url.as_str()];
        args.extend_from_slice(extra);
        if let Err(failure) = run_script(&python, script, &args).await {
            failures.push(failure);
        }
    }

    stop(dev.child, "agora dev").await;
    kill_executor_sessions(dir.path());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
