//! `/ping`, `/v2/info`, `/v2/leader` (answered by every instance, leader or not)
//! and `/metrics`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::Ctx;
use super::error::ApiError;
use super::render::{has_task, state_name};
use crate::controller::Snapshot;

/// `GET /ping`.
pub(crate) async fn ping() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "pong",
    )
        .into_response()
}

/// The leader's address: this instance's own when it leads.
fn leader_of(ctx: &Ctx, snapshot: &Snapshot) -> Option<String> {
    if snapshot.is_leader {
        Some(
            snapshot
                .leader
                .clone()
                .unwrap_or_else(|| ctx.info.http_address.clone()),
        )
    } else {
        snapshot.leader.clone()
    }
}

/// `GET /v2/info`. The config objects use Marathon's flag names, and only those
/// Marathon's clients know (they refuse unknown keys).
pub(crate) async fn info(State(ctx): State<Ctx>) -> Response {
    let snapshot = ctx.controller.snapshot();
    let info = &ctx.info;
    let http_port = info
        .http_address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    let hostname = info
        .http_address
        .rsplit_once(':')
        .map(|(host, _)| host.to_string())
        .unwrap_or_else(|| info.http_address.clone());
    Json(json!({
        "name": info.name,
        "version": info.version,
        "buildref": "",
        "elected": snapshot.is_leader,
        "leader": leader_of(&ctx, &snapshot),
        "frameworkId": snapshot.framework_id,
        "marathon_config": {
            "master": info.masters.join(","),
            "framework_name": info.framework_name,
            "mesos_role": info.role,
            "hostname": hostname,
            "ha": true,
            "checkpoint": true,
            "failover_timeout": info.failover_timeout.as_secs(),
            "decline_offer_duration": info.decline_offer_duration.as_millis() as u64,
            "features": [],
        },
        "zookeeper_config": {
            "zk_max_versions": info.max_versions,
        },
        "http_config": {
            "http_port": http_port,
        },
        "event_subscriber": null,
    }))
    .into_response()
}

/// `GET /v2/leader`: `{"leader": "host:port"}`, or 404 when none is known.
pub(crate) async fn leader(State(ctx): State<Ctx>) -> Result<Response, ApiError> {
    let snapshot = ctx.controller.snapshot();
    match leader_of(&ctx, &snapshot) {
        Some(leader) => Ok(Json(json!({ "leader": leader })).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "There is no leader")),
    }
}

/// `DELETE /v2/leader`: not offered; stopping the leader hands leadership over.
pub(crate) async fn abdicate() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "Abdication is not supported: stop the leading instance and a standby takes over",
    )
}

/// The gauges `/metrics` shows, computed from one snapshot.
struct Gauges {
    apps: i64,
    groups: i64,
    deployments: i64,
    queued_instances: i64,
    /// Tasks per state name (`TASK_RUNNING`, ...).
    tasks: BTreeMap<&'static str, i64>,
    healthy: i64,
    unhealthy: i64,
}

impl Gauges {
    fn of(snapshot: &Snapshot) -> Self {
        let mut gauges = Gauges {
            apps: snapshot.root.apps.len() as i64,
            groups: snapshot.root.group_ids().len() as i64,
            deployments: snapshot.deployments.len() as i64,
            queued_instances: snapshot.queue.values().map(|e| i64::from(e.count)).sum(),
            tasks: BTreeMap::new(),
            healthy: 0,
            unhealthy: 0,
        };
        for instance in snapshot
            .instances
            .values()
            .flat_map(|list| list.iter())
            .filter(|i| has_task(i))
        {
            *gauges.tasks.entry(state_name(instance)).or_default() += 1;
            match instance.healthy {
                Some(true) => gauges.healthy += 1,
                Some(false) => gauges.unhealthy += 1,
                None => {}
            }
        }
        gauges
    }

    fn running(&self) -> i64 {
        self.tasks.get("TASK_RUNNING").copied().unwrap_or(0)
    }

    fn prometheus(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("agora_apps");
        let gauge = |value: i64| {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            gauge
        };
        registry.register("apps", "Apps defined", gauge(self.apps));
        registry.register("groups", "Groups, explicit and implied", gauge(self.groups));
        registry.register(
            "deployments",
            "Running deployments",
            gauge(self.deployments),
        );
        registry.register(
            "instances_running",
            "Instances whose task is TASK_RUNNING",
            gauge(self.running()),
        );
        registry.register(
            "instances_queued",
            "Instances waiting for a launch",
            gauge(self.queued_instances),
        );
        let by_state = Family::<Vec<(String, String)>, Gauge>::default();
        for (state, count) in &self.tasks {
            by_state
                .get_or_create(&vec![("state".to_string(), state.to_string())])
                .set(*count);
        }
        registry.register("tasks", "Current tasks by state", by_state);
        registry.register(
            "tasks_healthy",
            "Tasks passing their health checks",
            gauge(self.healthy),
        );
        registry.register(
            "tasks_unhealthy",
            "Tasks failing their health checks",
            gauge(self.unhealthy),
        );
        let mut text = String::new();
        encode(&mut text, &registry)?;
        Ok(text)
    }

    /// Marathon's metrics JSON (Dropwizard's shape), for clients that ask for JSON.
    fn json(&self) -> Value {
        let mut gauges = Map::new();
        let mut put = |name: String, value: i64| {
            gauges.insert(name, json!({ "value": value }));
        };
        put("apps".into(), self.apps);
        put("groups".into(), self.groups);
        put("deployments".into(), self.deployments);
        put("instances.running".into(), self.running());
        put("instances.queued".into(), self.queued_instances);
        put("tasks.healthy".into(), self.healthy);
        put("tasks.unhealthy".into(), self.unhealthy);
        for (state, count) in &self.tasks {
            put(format!("tasks.{}", state.to_ascii_lowercase()), *count);
        }
        json!({
            "version": "4.0.0",
            "gauges": gauges,
            "counters": {},
            "histograms": {},
            "meters": {},
            "timers": {},
        })
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text, or Marathon's JSON when the
/// client accepts only JSON (as Marathon's own clients ask).
pub(crate) async fn metrics(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gauges = Gauges::of(&ctx.controller.snapshot());
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/"));
    if wants_json {
        return Ok(Json(gauges.json()).into_response());
    }
    let text = gauges.prometheus().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
