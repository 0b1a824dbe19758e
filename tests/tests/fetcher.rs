//! The fetcher through the real master, agent and command executor: a task's URIs
//! (http from a local server, file://, absolute paths) land in its sandbox before
//! its command starts, and a URI that cannot be fetched fails the task naming it.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use agora_proto as pb;
use agora_sdk::offer::TaskBuilder;
use agora_tests::{ClusterBuilder, TestCluster, TestFramework, node_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A canned answer: status line, extra headers, body.
type Answer = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

/// Serves `routes` (path → answer; anything else 404) on 127.0.0.1:0, one request
/// per connection. Returns `http://127.0.0.1:port`.
async fn serve(routes: HashMap<&'static str, Answer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let not_found: Answer = ("404 Not Found", vec![], b"no such file".to_vec());
                let (status, headers, body) = routes.get(path.as_str()).unwrap_or(&not_found);
                let mut response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    base
}

fn ok(body: &[u8]) -> Answer {
    ("200 OK", vec![], body.to_vec())
}

fn redirect(to: &str) -> Answer {
    ("302 Found", vec![("Location", to.to_string())], Vec::new())
}

/// A gzip-compressed tar of `entries` (name, content), names written raw so that
/// unsafe ones can be built.
fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, *data).expect("tar entry");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn uri(value: impl Into<String>) -> pb::command_info::Uri {
    pb::command_info::Uri {
        value: value.into(),
        ..Default::default()
    }
}

async fn start(name: &str) -> (TestCluster, TestFramework) {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let fw = TestFramework::start(&cluster.master_addr, TestFramework::info(name, 0.0)).await;
    (cluster, fw)
}

/// Launches `task` (a shell command with URIs) on the first offer and returns its
/// terminal update, checking that TASK_STARTING came first.
async fn run(fw: &mut TestFramework, task: TaskBuilder) -> pb::TaskStatus {
    let id = task.task_id().to_string();
    let task = task.cpus(0.1).mem(32.0);
    fw.launch_on_first_offer(|room| vec![room.take(&task).expect("the task fits")])
        .await;
    fw.wait_for_state(&id, pb::TaskState::TaskStarting).await;
    fw.wait_for_terminal(&id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executable_fetched_over_http_runs_as_the_command() {
    let script = b"#!/bin/sh\necho tool-ran > ran.txt\n";
    // The URI redirects (twice), and the name still comes from the URI asked for.
    let base = serve(HashMap::from([
        ("/dl/tool", redirect("/moved/tool")),
        ("/moved/tool", redirect("../files/tool.sh")),
        ("/files/tool.sh", ok(script)),
    ]))
    .await;
    let (cluster, mut fw) = start("fetch-http").await;
    let task = TaskBuilder::new("tool")
        .shell("./tool && grep -qx tool-ran ran.txt && test -x tool")
        .fetch(pb::command_info::Uri {
            executable: true,
            ..uri(format!("{base}/dl/tool"))
        });
    let status = run(&mut fw, task).await;
    assert_eq!(status.state(), pb::TaskState::TaskFinished, "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tar_gz_is_extracted_into_the_sandbox_and_kept() {
    let (cluster, mut fw) = start("fetch-extract").await;
    let archive = cluster.data_dir().join("bundle.tar.gz");
    std::fs::write(
        &archive,
        tar_gz(&[("./conf/hello.txt", b"hello from the archive\n")]),
    )
    .expect("write the archive");
    let task = TaskBuilder::new("extracted")
        .shell("test -f bundle.tar.gz && [ \"$(cat conf/hello.txt)\" = 'hello from the archive' ]")
        .fetch(pb::command_info::Uri {
            extract: true,
            ..uri(format!("file://{}", archive.display()))
        });
    let status = run(&mut fw, task).await;
    assert_eq!(status.state(), pb::TaskState::TaskFinished, "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_file_renames_what_is_fetched() {
    let base = serve(HashMap::from([("/data", ok(b"over http\n"))])).await;
    let (cluster, mut fw) = start("fetch-rename").await;
    let local = cluster.data_dir().join("local.txt");
    std::fs::write(&local, "from a path\n").expect("write the file");
    let task = TaskBuilder::new("renamed")
        .shell(
            "[ \"$(cat etc/app.conf)\" = 'over http' ] && [ \"$(cat copy.txt)\" = 'from a path' ] \
             && test ! -e data && test ! -e local.txt",
        )
        .fetch(pb::command_info::Uri {
            output_file: "etc/app.conf".into(),
            ..uri(format!("{base}/data"))
        })
        .fetch(pb::command_info::Uri {
            output_file: "copy.txt".into(),
            ..uri(local.display().to_string())
        });
    let status = run(&mut fw, task).await;
    assert_eq!(status.state(), pb::TaskState::TaskFinished, "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_that_cannot_be_fetched_fails_the_task_naming_it() {
    let base = serve(HashMap::new()).await;
    let (cluster, mut fw) = start("fetch-missing").await;
    let missing_http = format!("{base}/nothing-here");
    let missing_file = format!("file://{}", cluster.data_dir().join("absent").display());
    for (id, value, cause) in [
        ("http-404", missing_http.as_str(), "404 Not Found"),
        ("no-file", missing_file.as_str(), "No such file"),
        ("https", "https://127.0.0.1:1/f", "https is not supported"),
    ] {
        let task = TaskBuilder::new(id)
            .shell("echo must not run; exit 0")
            .uri(value);
        let status = run(&mut fw, task).await;
        assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
        assert_eq!(
            status.reason(),
            pb::task_status::Reason::ContainerLaunchFailed,
            "{status:?}"
        );
        let expected = format!("Failed to fetch '{value}': ");
        assert!(
            status.message.starts_with(&expected) && status.message.contains(cause),
            "{status:?}"
        );
    }
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_escaping_the_sandbox_is_refused() {
    let evil = tar_gz(&[("fine.txt", b"fine"), ("../escape", b"escaped")]);
    let base = serve(HashMap::from([("/evil.tar.gz", ok(&evil))])).await;
    let (cluster, mut fw) = start("fetch-evil").await;
    let value = format!("{base}/evil.tar.gz");
    let task = TaskBuilder::new("evil")
        .shell("exit 0")
        .fetch(pb::command_info::Uri {
            extract: true,
            ..uri(value.clone())
        });
    let status = run(&mut fw, task).await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    assert_eq!(
        status.reason(),
        pb::task_status::Reason::ContainerLaunchFailed,
        "{status:?}"
    );
    assert!(
        status.message.contains(&value) && status.message.contains("'../escape' escapes"),
        "{status:?}"
    );
    assert!(
        !contains_file(cluster.data_dir(), "escape"),
        "nothing was written outside the sandbox"
    );
    fw.stop().await;
    cluster.shutdown().await;
}

/// Whether a file named `name` exists anywhere under `dir`.
fn contains_file(dir: &Path, name: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name() == name {
                return true;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    false
}
