//! The `agora` binary run as a user runs it: `agora dev`, and `agora master` with
//! `agora agent`s as separate processes.

use std::process::Stdio;

use agora_hello::HelloOptions;
use agora_tests::images::{busybox_layout, require_busybox};
use agora_tests::requirements::require_runc;
use agora_tests::{kill_executor_sessions, logger, node_bin, read_until, within};
use tokio::process::{Child, Command};

fn stop(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a process this test started.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

async fn hello(master: &str, tasks: usize) {
    let options = HelloOptions {
        masters: vec![master.to_string()],
        tasks,
        cmd: "echo hello".into(),
        ..HelloOptions::default()
    };
    let report = within("hello", agora_hello::run(options, logger()))
        .await
        .expect("hello succeeds");
    assert_eq!(report.finished, tasks);
}

/// The quick start's container step: an image imported into `agora dev`'s store
/// (`<data dir>/images`) roots the tasks that name it. Dev agents have the oci
/// containerizer when run as root with runc installed.
async fn hello_in_an_image(master: &str, data_dir: &std::path::Path) {
    if require_runc().is_none() || require_busybox().is_none() {
        return;
    }
    let layout = busybox_layout(data_dir).expect("a busybox image layout");
    let import = std::process::Command::new(node_bin!())
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "busybox", "--store"])
        .arg(data_dir.join("images"))
        .output()
        .expect("agora image import runs");
    assert!(
        import.status.success(),
        "import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let options = HelloOptions {
        masters: vec![master.to_string()],
        tasks: 3,
        // Only the image's root has no Debian marker and has the sandbox mounted at
        // Mesos' path.
        cmd: "test ! -e /etc/debian_version && test -d /mnt/mesos/sandbox".into(),
        image: Some("busybox".into()),
        ..HelloOptions::default()
    };
    let report = within("hello in busybox", agora_hello::run(options, logger()))
        .await
        .expect("every task runs in the image");
    assert_eq!(report.finished, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_runs_a_cluster_hello_can_use() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut dev = Command::new(node_bin!())
        .args([
            "dev",
            "--port",
            "0",
            "--agent-port",
            "0",
            "--log-level",
            "error",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agora dev starts");
    let stdout = dev.stdout.take().expect("piped stdout");
    let master = read_until(stdout, "http://").await;
    hello(&master, 20).await;
    hello_in_an_image(&master, dir.path()).await;

    stop(&dev);
    let status = within("agora dev to stop", dev.wait())
        .await
        .expect("exit status");
    assert!(
        status.success(),
        "agora dev exits cleanly on SIGTERM: {status:?}"
    );
    assert!(
        dir.path()
            .join("master")
            .join("raft")
            .join("hardstate")
            .exists(),
        "the master keeps its raft state under the data dir"
    );
    kill_executor_sessions(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_and_agents_run_as_separate_processes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut master = Command::new(node_bin!())
        .args(["master", "--listen", "127.0.0.1:0", "--log-level", "info"])
        .arg("--data-dir")
        .arg(dir.path().join("master"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("agora master starts");
    let stderr = master.stderr.take().expect("piped stderr");
    let address = read_until(stderr, "master serving, address:").await;

    let mut agents = Vec::new();
    for rack in ["r1", "r2"] {
        let agent = Command::new(node_bin!())
            .args(["agent", "--master", &address, "--listen", "127.0.0.1:0"])
            .args([
                "--resources",
                "cpus:1;mem:1024;disk:1000;ports:[31000-31100]",
            ])
            .args([
                "--attributes",
                &format!("rack:{rack};zone:a"),
                "--log-level",
                "error",
            ])
            .arg("--work-dir")
            .arg(dir.path().join(format!("agent-{rack}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("agora agent starts");
        agents.push(agent);
    }
    hello(&address, 20).await;

    let master_flag = address.clone();
    let listing = tokio::task::spawn_blocking(move || {
        std::process::Command::new(node_bin!())
            .args(["agents", "--master", &master_flag])
            .output()
            .expect("agora agents runs")
    })
    .await
    .expect("the CLI runs");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("rack:r1;zone:a") && listing.contains("rack:r2;zone:a"),
        "{listing}"
    );
    assert_eq!(listing.matches("ACTIVE").count(), 2, "{listing}");

    for child in agents.iter().chain(std::iter::once(&master)) {
        stop(child);
    }
    for mut child in agents.into_iter().chain(std::iter::once(master)) {
        let status = within("a process to stop", child.wait())
            .await
            .expect("exit status");
        assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
    }
    kill_executor_sessions(dir.path());
}
