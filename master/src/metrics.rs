//! The master's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::collections::BTreeMap;

/// What the gauges show, as the core counts it when it publishes a snapshot.
pub struct ClusterCounts<'a> {
    /// Agent status (as in `AgentSummary.status`) → agents in it; statuses that
    /// emptied are present with 0.
    pub agents_by_status: &'a BTreeMap<&'static str, i64>,
    /// Frameworks with a live subscription, and without one.
    pub frameworks_connected: i64,
    pub frameworks_disconnected: i64,
    /// Task state (the protobuf number) → live tasks in it; states that emptied are
    /// present with 0.
    pub tasks_by_state: &'a BTreeMap<i32, i64>,
    /// Offers made and not yet accepted, declined or rescinded.
    pub offers_outstanding: i64,
}

/// Counters are bumped by the core as things happen; gauges are set from the counts
/// the core keeps for each published snapshot.
pub struct MasterMetrics {
    /// Owns every metric below; immutable after construction.
    registry: Registry,
    pub calls: Counter,
    pub invalid_calls: Counter,
    pub invalid_agent_messages: Counter,
    pub status_updates: Counter,
    pub tasks_launched: Counter,
    pub agents_marked_unreachable: Counter,
    pub allocation_runs: Counter,
    pub offers_sent: Counter,
    pub allocation_seconds: Histogram,
    agents: Family<Vec<(String, String)>, Gauge>,
    frameworks: Family<Vec<(String, String)>, Gauge>,
    tasks: Family<Vec<(String, String)>, Gauge>,
    offers_outstanding: Gauge,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora_master");
        let m = Self {
            calls: Counter::default(),
            invalid_calls: Counter::default(),
            invalid_agent_messages: Counter::default(),
            status_updates: Counter::default(),
            tasks_launched: Counter::default(),
            agents_marked_unreachable: Counter::default(),
            allocation_runs: Counter::default(),
            offers_sent: Counter::default(),
            allocation_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            agents: Family::default(),
            frameworks: Family::default(),
            tasks: Family::default(),
            offers_outstanding: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "scheduler_calls",
            "Framework calls accepted",
            m.calls.clone(),
        );
        registry.register(
            "invalid_calls",
            "Framework calls or tasks refused as invalid",
            m.invalid_calls.clone(),
        );
        registry.register(
            "invalid_agent_messages",
            "Agent messages refused as malformed or unknown",
            m.invalid_agent_messages.clone(),
        );
        registry.register(
            "status_updates",
            "Status updates received from agents",
            m.status_updates.clone(),
        );
        registry.register(
            "tasks_launched",
            "Tasks sent to agents",
            m.tasks_launched.clone(),
        );
        registry.register(
            "agents_marked_unreachable",
            "Agents that timed out",
            m.agents_marked_unreachable.clone(),
        );
        registry.register(
            "allocation_runs",
            "Allocation passes",
            m.allocation_runs.clone(),
        );
        registry.register("offers_sent", "Offers made", m.offers_sent.clone());
        registry.register(
            "allocation_seconds",
            "Duration of an allocation pass",
            m.allocation_seconds.clone(),
        );
        registry.register("agents", "Agents by status", m.agents.clone());
        registry.register(
            "frameworks",
            "Frameworks by connection",
            m.frameworks.clone(),
        );
        registry.register("tasks", "Tasks by state", m.tasks.clone());
        registry.register(
            "offers_outstanding",
            "Offers not yet answered",
            m.offers_outstanding.clone(),
        );
        Self { registry, ..m }
    }

    /// Sets the gauges from the core's counts (kept up to date incrementally, so this
    /// costs a few label lookups however large the cluster).
    pub fn set_counts(&self, counts: &ClusterCounts<'_>) {
        for (status, n) in counts.agents_by_status {
            self.agents
                .get_or_create(&vec![("status".into(), (*status).to_string())])
                .set(*n);
        }
        for (label, n) in [
            ("connected", counts.frameworks_connected),
            ("disconnected", counts.frameworks_disconnected),
        ] {
            self.frameworks
                .get_or_create(&vec![("connection".into(), label.into())])
                .set(n);
        }
        for (state, n) in counts.tasks_by_state {
            let name = agora_core::task_state::short_name(*state).to_string();
            self.tasks
                .get_or_create(&vec![("state".into(), name)])
                .set(*n);
        }
        self.offers_outstanding.set(counts.offers_outstanding);
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
