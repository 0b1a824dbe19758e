//! The HTTP client of the commands that drive a framework's REST API (`agora app`
//! against Marathon's, `agora job` against Metronome's): one base URL, JSON in and
//! out, an error answer made readable, and the JSON definitions they read from a
//! file or stdin.

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted (a listing of many apps or jobs with their runs).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Which API a client talks to, for the messages that name it.
#[derive(Clone, Copy)]
pub struct Api {
    /// `the apps API`: the subject of "... answered 404".
    pub name: &'static str,
    /// The flag naming its URL (`--apps`).
    pub flag: &'static str,
    /// What to check when it cannot be reached.
    pub hint: &'static str,
    /// A URL to show as an example of the flag's value.
    pub example: &'static str,
}

/// The API's answer to one request.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self, api: &Api) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{}'s answer is not JSON", api.name))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One HTTP client for a command's requests, bound to the API's base URL.
pub struct RestClient {
    api: Api,
    /// Turns an answer other than 2xx into the error [`RestClient::call`] returns.
    describe: fn(&Api, &Reply) -> String,
    /// `http://host:port` with any path prefix, without a trailing slash.
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RestClient {
    pub fn new(api: Api, url: &str) -> anyhow::Result<Self> {
        let base = base_url(&api, url)?;
        Ok(Self {
            api,
            describe: describe_error,
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Describes error answers with `describe` rather than [`describe_error`].
    pub fn describing_errors(mut self, describe: fn(&Api, &Reply) -> String) -> Self {
        self.describe = describe;
        self
    }

    /// Sends one request and returns the answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path_and_query}", self.base);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .with_context(|| format!("'{url}' is not a valid request URL"))?;
        let exchange = async {
            let response = self.client.request(request).await.with_context(|| {
                format!(
                    "cannot reach {} at {} ({})",
                    self.api.name, self.base, self.api.hint
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading {}'s answer: {e}", self.api.name))?
                .to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {url}: no answer in time"))?
    }

    /// Sends one request; an answer other than 2xx is an error describing it.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let reply = self.send(method, path_and_query, body).await?;
        anyhow::ensure!(reply.is_success(), "{}", (self.describe)(&self.api, &reply));
        Ok(reply)
    }
}

/// `http://host:port[/prefix]` from the API's flag (`host:port` alone means http).
pub fn base_url(api: &Api, url: &str) -> anyhow::Result<String> {
    let flag = api.flag;
    let url = url.trim();
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let uri: hyper::Uri = full
        .parse()
        .with_context(|| format!("{flag} '{url}' is not a URL (try {})", api.example))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "{flag} '{url}': only http:// is supported"
    );
    anyhow::ensure!(
        uri.host().is_some_and(|h| !h.is_empty()),
        "{flag} '{url}' names no host"
    );
    anyhow::ensure!(
        uri.query().is_none(),
        "{flag} '{url}' must not have a query"
    );
    Ok(full.trim_end_matches('/').to_string())
}

/// The error answer of Marathon and Metronome made readable: `{message, details:
/// [{path, errors}]}`, or the raw text when it is not JSON.
pub fn describe_error(api: &Api, reply: &Reply) -> String {
    let mut out = format!("{} answered {}", api.name, reply.status);
    let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
        let text = String::from_utf8_lossy(&reply.body);
        let text = text.trim();
        if !text.is_empty() {
            out.push_str(": ");
            out.extend(text.chars().take(500));
        }
        return out;
    };
    out.push_str(": ");
    match body.get("message").and_then(Value::as_str) {
        Some(message) => out.push_str(message),
        None => out.push_str(&body.to_string()),
    }
    for detail in body
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = detail.get("path").and_then(Value::as_str).unwrap_or("/");
        let errors: Vec<String> = detail
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect();
        out.push_str(&format!("\n  {path}: {}", errors.join("; ")));
    }
    out
}

/// The text of `file`, or of stdin for `-`; `what` names it in errors.
pub async fn read_input(file: &str, what: &str) -> anyhow::Result<String> {
    if file == "-" {
        let read = tokio::task::spawn_blocking(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
        });
        return read
            .await
            .context("reading stdin stopped")?
            .with_context(|| format!("cannot read {what} from stdin"));
    }
    tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("cannot read {file}"))
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot print the answer")?
    );
    Ok(())
}

/// A field of `value` as text: strings as they are, `1` for 1.0, empty when absent.
pub fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => number(n.as_f64().unwrap_or_default()),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub fn count(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// `1` for 1.0, `0.5` for 0.5: resources as users write them.
pub fn number(n: f64) -> String {
    format!("{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API: Api = Api {
        name: "the test API",
        flag: "--test",
        hint: "is it running?",
        example: "http://127.0.0.1:1",
    };

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url(&API, "http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url(&API, "localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            base_url(&API, "http://gateway/marathon").unwrap(),
            "http://gateway/marathon"
        );
        assert!(base_url(&API, "https://x:8080").is_err());
        assert!(base_url(&API, "http://").is_err());
        let error = base_url(&API, "http://x:8080/?a=b")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--test "), "{error}");
    }

    #[test]
    fn errors_are_readable() {
        let invalid = Reply {
            status: 422,
            headers: HeaderMap::new(),
            body: Bytes::from(
                json!({"message": "Object is not valid", "details": [
                    {"path": "/run/cpus", "errors": ["error.min"]},
                    {"path": "/id", "errors": ["must be lowercase", "too long"]}
                ]})
                .to_string(),
            ),
        };
        assert_eq!(
            describe_error(&API, &invalid),
            "the test API answered 422: Object is not valid\n  \
             /run/cpus: error.min\n  /id: must be lowercase; too long"
        );
        let plain = Reply {
            status: 502,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"bad gateway\n"),
        };
        assert_eq!(
            describe_error(&API, &plain),
            "the test API answered 502: bad gateway"
        );
    }

    #[test]
    fn fields_as_text() {
        let value = json!({"s": "x", "n": 0.5, "i": 128.0, "b": true, "z": null});
        assert_eq!(text(&value, "s"), "x");
        assert_eq!(text(&value, "n"), "0.5");
        assert_eq!(text(&value, "i"), "128");
        assert_eq!(text(&value, "b"), "true");
        assert_eq!(text(&value, "z"), "");
        assert_eq!(text(&value, "missing"), "");
    }
}
