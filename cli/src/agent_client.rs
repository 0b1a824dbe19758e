//! Plain HTTP GETs of an agent's API (`/api/v1/logs`, `/api/v1/containers`), at the
//! `host:port` the master reports for the agent.

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response body accepted (a container listing of a very busy agent).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// An agent's answer.
pub struct AgentResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl AgentResponse {
    /// A header parsed as a number.
    pub fn number(&self, name: &str) -> anyhow::Result<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the agent's answer lacks a valid {name} header"))
    }
}

/// One client, reused for every request of a command.
pub struct AgentClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl AgentClient {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GET `path_and_query` from the agent at `endpoint` (`host:port`).
    pub async fn get(&self, endpoint: &str, path_and_query: &str) -> anyhow::Result<AgentResponse> {
        let uri: hyper::Uri = format!("http://{endpoint}{path_and_query}")
            .parse()
            .with_context(|| format!("'{endpoint}' is not an agent address"))?;
        let request = async {
            let response = self
                .client
                .get(uri)
                .await
                .with_context(|| format!("cannot reach the agent at {endpoint}"))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the agent's answer: {e}"))?
                .to_bytes();
            Ok(AgentResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .with_context(|| format!("the agent at {endpoint} did not answer in time"))?
    }
}

/// `value` percent-encoded for a query string (ids may hold any character but `/`).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(super::encode("task-1.a_b~"), "task-1.a_b~");
        assert_eq!(super::encode("a b&c=d?é"), "a%20b%26c%3Dd%3F%C3%A9");
    }
}
