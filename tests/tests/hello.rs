//! The SDK's tutorial framework against a real cluster: 20 command tasks over 2 agents.

use std::path::Path;

use agora_hello::HelloOptions;
use agora_tests::{ClusterBuilder, logger, node_bin, within};

/// Sandboxes under `dir` whose stdout is exactly what `echo hello` prints.
fn hello_sandboxes(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "stdout")
                && std::fs::read_to_string(&path).is_ok_and(|s| s.contains("hello"))
            {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_20_tasks_to_finished_across_both_agents() {
    // One cpu per agent: 10 tasks of 0.1 cpus fill each, so both must be used.
    let cluster = ClusterBuilder::new(node_bin!())
        .agents(2)
        .agent_resources("cpus:1;mem:1024;disk:1000;ports:[31000-31100]")
        .start()
        .await;
    let options = HelloOptions {
        masters: vec![cluster.master_addr.clone()],
        tasks: 20,
        cmd: "echo hello".into(),
        ..HelloOptions::default()
    };
    let report = within("hello to finish", agora_hello::run(options, logger()))
        .await
        .expect("hello succeeds");
    assert_eq!(report.finished, 20);
    assert_eq!(report.accept_to_running.len(), 20);
    let on_first = hello_sandboxes(&cluster.data_dir().join("agent-1"));
    let on_second = hello_sandboxes(&cluster.data_dir().join("agent-2"));
    assert_eq!(
        on_first + on_second,
        20,
        "every task wrote 'hello' to its sandbox stdout"
    );
    assert!(
        on_first > 0 && on_second > 0,
        "tasks ran on both agents ({on_first} and {on_second})"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_fails_with_the_reason_when_a_task_fails() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let options = HelloOptions {
        masters: vec![cluster.master_addr.clone()],
        tasks: 2,
        cmd: "exit 7".into(),
        ..HelloOptions::default()
    };
    let error = within("hello to fail", agora_hello::run(options, logger()))
        .await
        .expect_err("a failing command fails hello");
    let message = format!("{error:#}");
    assert!(message.contains("FAILED"), "{message}");
    cluster.shutdown().await;
}
