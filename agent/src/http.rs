//! The agent's HTTP routes, served on the same port as its gRPC API:
//!
//! - `GET /health`: `ok`.
//! - `GET /metrics`: Prometheus text, with per-container usage measured at scrape.
//! - `GET /api/v1/containers`: every live container with its usage and limits, as
//!   JSON shaped like Mesos' `/containers`.
//! - `GET /api/v1/logs?framework_id=&task_id=|executor_id=[&container_id=]
//!   [&stream=stdout|stderr][&offset=N|-1][&length=M]`: bytes of a sandbox's
//!   stdout or stderr at a logical offset that stays valid across rotation (see
//!   `sandbox::rotation`). The body is the raw bytes; the headers
//!   [`LOG_OFFSET_HEADER`] (where they start), [`LOG_NEXT_OFFSET_HEADER`],
//!   [`LOG_START_HEADER`] (the oldest byte still stored) and [`LOG_END_HEADER`]
//!   (the stream's logical size) place them. `offset=-1` reads nothing and reports
//!   the size, as Mesos' `/files/read` does. Bad parameters are 400 with a message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::sandbox::logs::{self, LogError};
use crate::usage;

pub const LOG_OFFSET_HEADER: &str = "x-agora-log-offset";
pub const LOG_NEXT_OFFSET_HEADER: &str = "x-agora-log-next-offset";
pub const LOG_START_HEADER: &str = "x-agora-log-start";
pub const LOG_END_HEADER: &str = "x-agora-log-end";

pub(crate) fn router(metrics: Arc<Metrics>, work_dir: PathBuf) -> Router {
    let work_dir = Arc::new(work_dir);
    let containers_dir = work_dir.clone();
    let logs_dir = work_dir.clone();
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let work_dir = work_dir.clone();
                async move {
                    // Measured per scrape: a stale figure is worse than none.
                    if let Ok(containers) =
                        tokio::task::spawn_blocking(move || usage::containers(&work_dir)).await
                    {
                        metrics.set_containers(&containers);
                    }
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/api/v1/containers",
            get(move || {
                let work_dir = containers_dir.clone();
                async move { containers(work_dir).await }
            }),
        )
        .route(
            "/api/v1/logs",
            get(move |Query(params): Query<HashMap<String, String>>| {
                let work_dir = logs_dir.clone();
                async move { read_log(work_dir, params).await }
            }),
        )
}

async fn containers(work_dir: Arc<PathBuf>) -> Response {
    match tokio::task::spawn_blocking(move || usage::containers(&work_dir)).await {
        Ok(containers) => axum::Json(containers).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot measure the containers: {e}\n"),
        )
            .into_response(),
    }
}

async fn read_log(work_dir: Arc<PathBuf>, params: HashMap<String, String>) -> Response {
    let request = match logs::parse(&params) {
        Ok(request) => request,
        Err(e) => return error_response(&e),
    };
    let read = tokio::task::spawn_blocking(move || logs::read(&work_dir, &request)).await;
    let chunk = match read {
        Ok(Ok(chunk)) => chunk,
        Ok(Err(e)) => return error_response(&e),
        Err(e) => {
            return error_response(&LogError::Unavailable(format!("cannot read the log: {e}")));
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(LOG_OFFSET_HEADER),
                chunk.offset.to_string(),
            ),
            (
                header::HeaderName::from_static(LOG_NEXT_OFFSET_HEADER),
                chunk.next_offset().to_string(),
            ),
            (
                header::HeaderName::from_static(LOG_START_HEADER),
                chunk.first_available.to_string(),
            ),
            (
                header::HeaderName::from_static(LOG_END_HEADER),
                chunk.end.to_string(),
            ),
        ],
        chunk.data,
    )
        .into_response()
}

fn error_response(error: &LogError) -> Response {
    let status = match error {
        LogError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LogError::NotFound(_) => StatusCode::NOT_FOUND,
        LogError::Forbidden(_) => StatusCode::FORBIDDEN,
        LogError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{error}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `router` on a loopback port for one GET; returns status, headers, body.
    async fn get(router: Router, uri: &str) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {uri} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        server.abort();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let body = raw[split + 4..].to_vec();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (StatusCode::from_u16(status).unwrap(), headers, body)
    }

    #[tokio::test]
    async fn logs_are_served_with_their_offsets_and_bad_requests_explained() {
        let work = tempfile::tempdir().unwrap();
        let sandbox = work.path().join("frameworks/f/executors/t/runs/r");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join("stdout"), "hello world").unwrap();
        let router = || router(Arc::new(Metrics::new()), work.path().to_path_buf());

        let (status, headers, body) = get(
            router(),
            "/api/v1/logs?framework_id=f&task_id=t&offset=6&length=3",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"wor");
        assert_eq!(headers[LOG_OFFSET_HEADER], "6");
        assert_eq!(headers[LOG_NEXT_OFFSET_HEADER], "9");
        assert_eq!(headers[LOG_END_HEADER], "11");

        let (status, headers, body) =
            get(router(), "/api/v1/logs?framework_id=f&task_id=t&offset=-1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(headers[LOG_OFFSET_HEADER], "11");

        let (status, _, body) = get(
            router(),
            "/api/v1/logs?framework_id=f&task_id=..&stream=stdout",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("task_id"));

        let (status, _, body) = get(
            router(),
            "/api/v1/logs?framework_id=f&task_id=t&stream=../../etc/passwd",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("neither stdout nor stderr"));

        let (status, _, _) = get(router(), "/api/v1/logs?framework_id=f&task_id=gone").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, _, body) = get(router(), "/api/v1/containers").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"[]");
    }
}
