//! `GET /api/v1/logs`: a task's stdout or stderr read at a logical offset, in the
//! manner of Mesos' `/files/read` (`offset=-1` asks for the size only). Only the
//! stream files of a sandbox under `work_dir/frameworks` are ever served: ids are
//! single path components, the sandbox must resolve inside the work dir, and the
//! files are opened without following symbolic links.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::rotation::{self, LogChunk};
use super::runs;

/// Bytes returned by one read when the request names no `length`, and the most
/// it may name (Mesos' `/files/read` pages are of this order).
pub const MAX_READ: usize = 1024 * 1024;

/// Which output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    /// Valid id.
    pub framework_id: String,
    /// Valid id when set; found from `task_id` when not.
    pub executor_id: Option<String>,
    /// Valid id when set. At least one of `executor_id` and `task_id` is set.
    pub task_id: Option<String>,
    /// Valid id when set; the newest run of the executor when not.
    pub container_id: Option<String>,
    pub stream: Stream,
    /// `None`: the end of the stream (`offset=-1`).
    pub offset: Option<u64>,
    /// 0..=[`MAX_READ`].
    pub length: usize,
}

/// Why a request got no bytes; each maps to an HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 403: the file is not one that may be served.
    #[error("{0}")]
    Forbidden(String),
    /// 503: reading failed; retrying may help.
    #[error("{0}")]
    Unavailable(String),
}

fn id_param(params: &HashMap<String, String>, name: &str) -> Result<Option<String>, LogError> {
    match params.get(name) {
        None => Ok(None),
        Some(value) => agora_core::limits::id(name, Some(value))
            .map(|()| Some(value.clone()))
            .map_err(|e| LogError::BadRequest(e.to_string())),
    }
}

/// Validates the query parameters.
pub fn parse(params: &HashMap<String, String>) -> Result<LogRequest, LogError> {
    let framework_id = id_param(params, "framework_id")?
        .ok_or_else(|| LogError::BadRequest("framework_id is required".into()))?;
    let executor_id = id_param(params, "executor_id")?;
    let task_id = id_param(params, "task_id")?;
    if executor_id.is_none() && task_id.is_none() {
        return Err(LogError::BadRequest(
            "task_id or executor_id is required".into(),
        ));
    }
    let stream = match params.get("stream").map(String::as_str) {
        None | Some("stdout") => Stream::Stdout,
        Some("stderr") => Stream::Stderr,
        Some(other) => {
            return Err(LogError::BadRequest(format!(
                "stream '{other}' is neither stdout nor stderr"
            )));
        }
    };
    let offset = match params.get("offset").map(String::as_str) {
        None => Some(0),
        Some("-1") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            LogError::BadRequest(format!(
                "offset '{text}' is not a byte offset (a number >= 0, or -1 for the end)"
            ))
        })?),
    };
    let length = match params.get("length") {
        None => MAX_READ,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_READ)
            .ok_or_else(|| {
                LogError::BadRequest(format!(
                    "length '{text}' is not a number of bytes between 0 and {MAX_READ}"
                ))
            })?,
    };
    Ok(LogRequest {
        framework_id,
        executor_id,
        task_id,
        container_id: id_param(params, "container_id")?,
        stream,
        offset,
        length,
    })
}

/// The sandbox a request names.
fn find_sandbox(work_dir: &Path, request: &LogRequest) -> Result<PathBuf, LogError> {
    let mut executor_id = request.executor_id.clone();
    let mut container_id = request.container_id.clone();
    if let (None, Some(task_id)) = (&executor_id, &request.task_id) {
        // A task the agent still tracks names its executor in the checkpoints;
        // otherwise it ran under a command executor, whose id is the task's.
        let tracked = runs::checkpointed_runs(work_dir).into_iter().find(|run| {
            run.framework_id == request.framework_id
                && run.tasks.iter().any(|(id, _)| id == task_id)
        });
        match tracked {
            Some(run) => {
                executor_id = Some(run.executor_id);
                container_id = container_id.or(Some(run.container_id));
            }
            None => executor_id = Some(task_id.clone()),
        }
    }
    let executor_id = executor_id.unwrap_or_default();
    let runs_dir = super::executor_runs_dir(work_dir, &request.framework_id, &executor_id);
    let not_found = || {
        LogError::NotFound(format!(
            "no sandbox of executor '{executor_id}' of framework '{}' on this agent",
            request.framework_id
        ))
    };
    let sandbox = match container_id {
        Some(container_id) => runs_dir.join(container_id),
        None => {
            // The newest run: the executor id may have been reused.
            let newest = std::fs::read_dir(&runs_dir)
                .map_err(|_| not_found())?
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .max();
            newest.map(|(_, path)| path).ok_or_else(not_found)?
        }
    };
    let root = std::fs::canonicalize(work_dir.join("frameworks")).map_err(|_| not_found())?;
    let resolved = std::fs::canonicalize(&sandbox).map_err(|_| not_found())?;
    if !resolved.starts_with(&root) {
        return Err(LogError::Forbidden(format!(
            "{} is outside the agent's sandboxes",
            sandbox.display()
        )));
    }
    Ok(resolved)
}

/// Serves one request.
pub fn read(work_dir: &Path, request: &LogRequest) -> Result<LogChunk, LogError> {
    let sandbox = find_sandbox(work_dir, request)?;
    rotation::read(
        &sandbox,
        request.stream.file_name(),
        request.offset,
        request.length,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => LogError::Forbidden(e.to_string()),
        _ => LogError::Unavailable(format!("cannot read the log: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_explained() {
        let bad = |pairs: &[(&str, &str)], says: &str| {
            let LogError::BadRequest(message) = parse(&params(pairs)).unwrap_err() else {
                panic!("a bad request");
            };
            assert!(message.contains(says), "{message} should mention {says}");
        };
        bad(&[("task_id", "t")], "framework_id is required");
        bad(&[("framework_id", "f")], "task_id or executor_id");
        bad(&[("framework_id", ".."), ("task_id", "t")], "framework_id");
        bad(&[("framework_id", "f"), ("task_id", "a/b")], "task_id");
        bad(
            &[("framework_id", "f"), ("executor_id", "..")],
            "executor_id",
        );
        bad(
            &[
                ("framework_id", "f"),
                ("task_id", "t"),
                ("container_id", "../x"),
            ],
            "container_id",
        );
        bad(
            &[("framework_id", "f"), ("task_id", "t"), ("stream", "stdin")],
            "stdin",
        );
        bad(
            &[("framework_id", "f"), ("task_id", "t"), ("offset", "-2")],
            "offset",
        );
        bad(
            &[
                ("framework_id", "f"),
                ("task_id", "t"),
                ("length", "99999999"),
            ],
            "length",
        );
        let request = parse(&params(&[
            ("framework_id", "f"),
            ("task_id", "t"),
            ("stream", "stderr"),
            ("offset", "-1"),
        ]))
        .unwrap();
        assert_eq!(request.offset, None);
        assert_eq!(request.stream, Stream::Stderr);
        assert_eq!(request.length, MAX_READ);
    }

    #[test]
    fn only_files_of_sandboxes_inside_the_work_dir_are_served() {
        let work = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("stdout"), "secret").unwrap();
        let runs = work.path().join("frameworks/f/executors/t/runs");
        std::fs::create_dir_all(runs.join("r1")).unwrap();
        std::fs::write(runs.join("r1/stdout"), "hello").unwrap();
        let request = |container: &str| {
            parse(&params(&[
                ("framework_id", "f"),
                ("task_id", "t"),
                ("container_id", container),
            ]))
            .unwrap()
        };
        assert_eq!(read(work.path(), &request("r1")).unwrap().data, b"hello");
        // A run directory that is a link to elsewhere is refused.
        std::os::unix::fs::symlink(outside.path(), runs.join("r2")).unwrap();
        assert!(matches!(
            read(work.path(), &request("r2")),
            Err(LogError::Forbidden(_))
        ));
        // So is a stream file that is a link (the task can write its sandbox).
        std::fs::create_dir_all(runs.join("r3")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("stdout"), runs.join("r3/stdout")).unwrap();
        assert!(matches!(
            read(work.path(), &request("r3")),
            Err(LogError::Forbidden(_))
        ));
        assert!(matches!(
            read(work.path(), &request("r4")),
            Err(LogError::NotFound(_))
        ));
        // Without a container id the newest real run is read.
        let newest = parse(&params(&[("framework_id", "f"), ("task_id", "t")])).unwrap();
        let result = read(work.path(), &newest);
        assert!(
            matches!(&result, Ok(chunk) if chunk.data == b"hello")
                || matches!(&result, Err(LogError::Forbidden(_))),
            "{result:?}"
        );
    }
}
