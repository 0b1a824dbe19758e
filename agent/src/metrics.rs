//! The agent's Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::text::encode;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::usage::ContainerStatus;

/// `framework_id`, `executor_id`, `container_id` of one container.
type ContainerLabels = Vec<(&'static str, String)>;
/// A per-container gauge with fractional values.
type ContainerGauge = Family<ContainerLabels, Gauge<f64, AtomicU64>>;

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
    /// Sandboxes of finished executor runs removed by the garbage collector.
    pub sandboxes_collected: Counter,
    /// Per live container, as last measured (set on every scrape; containers that
    /// ended are dropped then): user cpu seconds.
    pub container_cpu_user_seconds: ContainerGauge,
    /// System cpu seconds, likewise.
    pub container_cpu_system_seconds: ContainerGauge,
    /// Resident memory in bytes, likewise.
    pub container_memory_rss_bytes: ContainerGauge,
    /// The `cpus` of the container's resources (absent without any).
    pub container_cpus_limit: ContainerGauge,
    /// The `mem` of the container's resources in bytes (absent without any).
    pub container_memory_limit_bytes: ContainerGauge,
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
            sandboxes_collected: Counter::default(),
            container_cpu_user_seconds: ContainerGauge::default(),
            container_cpu_system_seconds: ContainerGauge::default(),
            container_memory_rss_bytes: ContainerGauge::default(),
            container_cpus_limit: ContainerGauge::default(),
            container_memory_limit_bytes: ContainerGauge::default(),
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
        registry.register(
            "agora_agent_sandboxes_collected",
            "Sandboxes of finished executor runs garbage-collected",
            metrics.sandboxes_collected.clone(),
        );
        registry.register(
            "agora_agent_container_cpu_user_seconds",
            "User cpu time of a live container",
            metrics.container_cpu_user_seconds.clone(),
        );
        registry.register(
            "agora_agent_container_cpu_system_seconds",
            "System cpu time of a live container",
            metrics.container_cpu_system_seconds.clone(),
        );
        registry.register(
            "agora_agent_container_memory_rss_bytes",
            "Resident memory of a live container",
            metrics.container_memory_rss_bytes.clone(),
        );
        registry.register(
            "agora_agent_container_cpus_limit",
            "Cpus given to a live container",
            metrics.container_cpus_limit.clone(),
        );
        registry.register(
            "agora_agent_container_memory_limit_bytes",
            "Memory given to a live container",
            metrics.container_memory_limit_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Replaces the per-container gauges with `containers`.
    pub fn set_containers(&self, containers: &[ContainerStatus]) {
        let gauges = [
            &self.container_cpu_user_seconds,
            &self.container_cpu_system_seconds,
            &self.container_memory_rss_bytes,
            &self.container_cpus_limit,
            &self.container_memory_limit_bytes,
        ];
        for gauge in gauges {
            gauge.clear();
        }
        for container in containers {
            let labels: ContainerLabels = vec![
                ("framework_id", container.framework_id.clone()),
                ("executor_id", container.executor_id.clone()),
                ("container_id", container.container_id.clone()),
            ];
            let statistics = &container.statistics;
            self.container_cpu_user_seconds
                .get_or_create(&labels)
                .set(statistics.cpus_user_time_secs);
            self.container_cpu_system_seconds
                .get_or_create(&labels)
                .set(statistics.cpus_system_time_secs);
            self.container_memory_rss_bytes
                .get_or_create(&labels)
                .set(statistics.mem_rss_bytes as f64);
            if let Some(cpus) = statistics.cpus_limit {
                self.container_cpus_limit.get_or_create(&labels).set(cpus);
            }
            if let Some(mem) = statistics.mem_limit_bytes {
                self.container_memory_limit_bytes
                    .get_or_create(&labels)
                    .set(mem as f64);
            }
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

    #[test]
    fn containers_are_labelled_gauges_replaced_on_each_measurement() {
        let m = super::Metrics::new();
        let container = |id: &str| crate::usage::ContainerStatus {
            framework_id: "f".into(),
            executor_id: "e".into(),
            executor_name: String::new(),
            container_id: id.into(),
            task_ids: vec!["t".into()],
            executor_pid: 1,
            statistics: crate::usage::Statistics {
                cpus_user_time_secs: 1.5,
                mem_rss_bytes: 4096,
                cpus_limit: Some(0.5),
                ..Default::default()
            },
        };
        m.set_containers(&[container("c1")]);
        let text = m.encode();
        assert!(
            text.contains(
                "agora_agent_container_cpu_user_seconds{framework_id=\"f\",executor_id=\"e\",container_id=\"c1\"} 1.5"
            ),
            "{text}"
        );
        assert!(
            text.contains("agora_agent_container_memory_rss_bytes{"),
            "{text}"
        );
        assert!(
            !text.contains("agora_agent_container_memory_limit_bytes{"),
            "{text}"
        );
        m.set_containers(&[container("c2")]);
        let text = m.encode();
        assert!(!text.contains("c1"), "{text}");
        assert!(text.contains("c2"), "{text}");
    }
}
