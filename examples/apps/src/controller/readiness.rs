//! Readiness checks: during a deployment, a new instance counts only once its
//! readiness check answers with one of `httpStatusCodesForReady` (Marathon runs them
//! from the framework, not on the agent). One check task per task incarnation.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::app::ReadinessCheck;

/// A check that passed.
#[derive(Debug)]
pub struct Ready {
    pub instance_id: String,
    pub incarnation: u32,
}

/// Starts checking `url` every `check.interval_seconds` until it is ready, then
/// reports once on `ready`. Abort the handle when the instance goes.
pub fn spawn(
    check: &ReadinessCheck,
    url: String,
    instance_id: String,
    incarnation: u32,
    ready: mpsc::Sender<Ready>,
) -> JoinHandle<()> {
    // Validation keeps both within a year; a definition stored by an older version
    // may not have been, and must not bring the controller down.
    let seconds = |value: f64| {
        Duration::try_from_secs_f64(value.max(0.1)).unwrap_or(Duration::from_secs(86_400))
    };
    let interval = seconds(check.interval_seconds);
    let timeout = seconds(check.timeout_seconds);
    let codes = check.http_status_codes_for_ready.clone();
    tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let Ok(uri) = url.parse::<hyper::Uri>() else {
            return;
        };
        loop {
            let answer = tokio::time::timeout(timeout, async {
                let response = client.get(uri.clone()).await.ok()?;
                let status = response.status().as_u16();
                // Read the body so the connection can be reused.
                let _ = response.into_body().collect().await;
                Some(status)
            })
            .await;
            if let Ok(Some(status)) = answer
                && codes.contains(&status)
            {
                let _ = ready
                    .send(Ready {
                        instance_id,
                        incarnation,
                    })
                    .await;
                return;
            }
            tokio::time::sleep(interval).await;
        }
    })
}
