//! The agent's Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::text::encode;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric the agent exports. Cloned handles share the same values.
pub struct Metrics {
    /// Holds a handle to each metric below, for encoding.
    registry: Registry,
    /// 1 while attached to a master, else 0.
    pub master_connected: Gauge,
    /// Successful (re-)registrations with a master.
    pub registrations: Counter,
    /// Tasks accepted from the master for launch.
    pub tasks_launched: Counter,
    /// Executors the agent currently tracks (launching, running or recovering).
    pub executors: Gauge,
    /// Executors that ended.
    pub executor_exits: Counter,
    /// Status updates accepted into the status-update manager (not duplicates).
    pub status_updates: Counter,
    /// Status updates sent to the master, retries included.
    pub status_updates_sent: Counter,
    /// Status-update acknowledgements that released an update.
    pub status_update_acks: Counter,
    /// Messages from the master or executors refused as invalid.
    pub invalid_messages: Counter,
    /// Batches of checkpoint ops written (group commits).
    pub checkpoint_batches: Counter,
    /// Checkpoint ops written; divided by the batches, how many share a commit.
    pub checkpoint_ops: Counter,
    /// Time spent writing and syncing checkpoint batches.
    pub checkpoint_seconds: Counter<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            master_connected: Gauge::default(),
            registrations: Counter::default(),
            tasks_launched: Counter::default(),
            executors: Gauge::default(),
            executor_exits: Counter::default(),
            status_updates: Counter::default(),
            status_updates_sent: Counter::default(),
            status_update_acks: Counter::default(),
            invalid_messages: Counter::default(),
            checkpoint_batches: Counter::default(),
            checkpoint_ops: Counter::default(),
            checkpoint_seconds: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "agora_agent_master_connected",
            "1 while the agent is attached to a master",
            metrics.master_connected.clone(),
        );
        registry.register(
            "agora_agent_registrations",
            "Registrations and re-registrations with a master",
            metrics.registrations.clone(),
        );
        registry.register(
            "agora_agent_tasks_launched",
            "Tasks received from the master for launch",
            metrics.tasks_launched.clone(),
        );
        registry.register(
            "agora_agent_executors",
            "Executors the agent tracks",
            metrics.executors.clone(),
        );
        registry.register(
            "agora_agent_executor_exits",
            "Executors that ended",
            metrics.executor_exits.clone(),
        );
        registry.register(
            "agora_agent_status_updates",
            "Status updates accepted",
            metrics.status_updates.clone(),
        );
        registry.register(
            "agora_agent_status_updates_sent",
            "Status updates sent to the master, retries included",
            metrics.status_updates_sent.clone(),
        );
        registry.register(
            "agora_agent_status_update_acks",
            "Acknowledgements that released a status update",
            metrics.status_update_acks.clone(),
        );
        registry.register(
            "agora_agent_invalid_messages",
            "Messages from the master or executors refused as invalid",
            metrics.invalid_messages.clone(),
        );
        registry.register(
            "agora_agent_checkpoint_batches",
            "Batches of checkpoint writes made durable together (group commits)",
            metrics.checkpoint_batches.clone(),
        );
        registry.register(
            "agora_agent_checkpoint_ops",
            "Checkpoint writes, removals and log appends",
            metrics.checkpoint_ops.clone(),
        );
        registry.register(
            "agora_agent_checkpoint_seconds",
            "Time spent writing and syncing checkpoint batches",
            metrics.checkpoint_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_counters_with_their_values() {
        let m = super::Metrics::new();
        m.tasks_launched.inc();
        m.master_connected.set(1);
        let text = m.encode();
        assert!(
            text.contains("agora_agent_tasks_launched_total 1"),
            "{text}"
        );
        assert!(text.contains("agora_agent_master_connected 1"), "{text}");
    }
}
