//! The agent when its work dir misbehaves: a full disk and damaged checkpoints. Each
//! must end in a clear terminal update or a clear error, never a hung task or an
//! update that silently disappears.
//!
//! The full-disk test mounts a small tmpfs as the work dir, which needs root; it fails
//! in CI (where it runs as root) if the mount is refused and is skipped elsewhere.

mod common;

use std::path::Path;

use agora_proto::TaskState;
use agora_proto::agent_message::Message as FromAgent;
use agora_proto::task_status::Reason;
use common::*;

/// A tmpfs of `bytes` mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(name: &str, bytes: u64) -> Option<Self> {
        let dir = TempDir::new(name);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { dir }),
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root and must be able to mount a tmpfs: {other:?}"
                );
                eprintln!("skipped: cannot mount a tmpfs here (not root?): {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `filler` until the filesystem refuses; returns how much was written.
fn fill(filler: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

#[tokio::test]
async fn a_full_work_dir_fails_the_launch_clearly_and_the_agent_recovers_once_freed() {
    let Some(disk) = SmallDisk::mount("fulldisk", 8 * 1024 * 1024) else {
        return;
    };
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, disk.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;

    let filler = disk.path().join("filler");
    assert!(fill(&filler) > 0, "the filler took some space");
    link.run_task(framework("fw"), shell_task("starved", "echo never"))
        .await;
    let statuses = link.updates_until_terminal().await;
    let failed = statuses.last().expect("a terminal update");
    assert_eq!(state_name(failed.state), "TASK_FAILED", "{statuses:?}");
    assert_eq!(failed.reason, Reason::ContainerLaunchFailed as i32);
    assert!(
        failed.message.contains("No space left on device"),
        "the reason names the cause: {}",
        failed.message
    );

    // Space again: the same agent launches the next task as usual.
    std::fs::remove_file(&filler).expect("remove the filler");
    link.run_task(framework("fw"), shell_task("fed", "echo fed"))
        .await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(
        states(&statuses),
        vec!["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    );
    agent.shutdown().await;
}

/// Every file named `name` under `dir`, at any depth.
fn find_files(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_corrupt_task_checkpoint_is_skipped_and_the_task_still_ends_visibly() {
    let dir = TempDir::new("corrupt");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let addr = agent.local_addr();
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.run_task(framework("fw"), shell_task("damaged", "sleep 100"))
        .await;
    link.ack_until(TaskState::TaskRunning).await;
    link.run_task(framework("fw"), shell_task("intact", "sleep 100"))
        .await;
    link.ack_until(TaskState::TaskRunning).await;
    agent.shutdown().await;
    drop(link);

    let damaged: Vec<_> = find_files(&dir.path().join("meta"), "task.info")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/damaged"))
        .collect();
    assert_eq!(damaged.len(), 1, "one checkpoint of the damaged task");
    std::fs::write(&damaged[0], b"\xff\xfe not a protobuf \x00\x01").unwrap();

    // The restarted agent starts despite the damage and reports what it still knows.
    let agent = restart_agent(addr, config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    let FromAgent::Reregister(reregister) = link.accept("agent-1", 30.0).await else {
        panic!("the restarted agent re-registers");
    };
    let reported: Vec<String> = reregister
        .tasks
        .iter()
        .filter_map(|t| t.task.as_ref()?.task_id.as_ref().map(|id| id.value.clone()))
        .collect();
    assert!(
        reported.contains(&"intact".to_string()),
        "the intact task is recovered: {reported:?}"
    );
    // The damaged task's executor is destroyed and the task fails with a reason that
    // names the file: it neither runs on unobserved nor silently vanishes.
    let end = link
        .find(|m| match m {
            FromAgent::StatusUpdate(u)
                if u.status
                    .as_ref()
                    .and_then(|s| s.task_id.as_ref())
                    .is_some_and(|t| t.value == "damaged") =>
            {
                u.status.clone()
            }
            _ => None,
        })
        .await;
    assert_eq!(state_name(end.state), "TASK_FAILED", "{end:?}");
    assert_eq!(end.reason, Reason::AgentRestarted as i32);
    assert!(
        end.message.contains("task.info"),
        "the reason names the damaged file: {}",
        end.message
    );
    link.kill_task("fw", "intact", Some(0.5)).await;
    agent.shutdown().await;
}
