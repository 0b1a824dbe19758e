//! The cron API driven by Metronome's own Python client (PyPI `dcos-metronome`),
//! against a real `agora dev` (2 agents and a cron instance): one scenario script of
//! `tests/python/metronome_*.py` after another, on the same cluster.

mod apps_support;
mod cron_support;

use agora_tests::python::run_script;
use agora_tests::{kill_executor_sessions, metronome_python};
use apps_support::{start_dev, stop};
use cron_support::wait_serving;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metronome_python_client_scenarios() {
    let Some(python) = tokio::task::spawn_blocking(|| metronome_python!())
        .await
        .expect("the virtualenv check runs")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dev = start_dev(dir.path(), &["--no-apps", "--agents", "2"]).await;
    let cron = dev.cron.clone().expect("a cron instance");
    wait_serving(&cron).await;
    let url = format!("http://{cron}");
    // Where the tasks of the retry scenario leave their mark.
    let scratch_dir = tempfile::tempdir().expect("a scratch directory");
    let scratch = scratch_dir.path().to_string_lossy().to_string();

    let scenarios: [(&str, &[&str]); 3] = [
        ("metronome_jobs.py", &[]),
        ("metronome_runs.py", &[&scratch]),
        ("metronome_schedules.py", &[]),
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
