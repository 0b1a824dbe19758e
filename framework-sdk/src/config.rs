//! What a driver needs to know before it starts, with Mesos' defaults.

use std::time::Duration;

use agora_proto as pb;

use crate::error::DriverError;

/// Configuration of a [`SchedulerDriver`](crate::SchedulerDriver).
///
/// Build one with [`DriverConfig::new`] and change the fields you care about; every
/// other field has a default that suits a production framework.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Masters to try, as `host:port` (an `http://` prefix is accepted). Not empty.
    /// The driver tries them in order until one is the leader, and follows the
    /// leader hint a follower gives.
    pub masters: Vec<String>,
    /// Sent on every SUBSCRIBE. Its `id` is filled in by the driver once the master
    /// has assigned one, so a re-subscription keeps the framework's tasks; set it
    /// yourself to fail over from an earlier instance of the framework.
    pub framework_info: pb::FrameworkInfo,
    /// Roles that start suppressed (no offers until `revive`).
    pub suppressed_roles: Vec<String>,
    /// Where the driver logs connections, reconnections and failed calls.
    pub logger: slog::Logger,
    /// When true, the driver ACKNOWLEDGEs every update that carries a uuid after the
    /// `update` callback returns. When false the scheduler must call
    /// [`SchedulerHandle::acknowledge`](crate::SchedulerHandle::acknowledge) itself,
    /// or the agent resends the update forever.
    pub auto_acknowledge: bool,
    /// First reconnection delay; doubled after each failure up to `backoff_max`.
    /// Not zero, and not above `backoff_max`.
    pub backoff_min: Duration,
    /// Largest reconnection delay (Mesos advises about 15 s).
    pub backoff_max: Duration,
    /// How long opening a TCP/HTTP2 connection to a master may take.
    pub connect_timeout: Duration,
    /// How long a call, or a subscription until its SUBSCRIBED event, may take.
    pub request_timeout: Duration,
    /// Missed heartbeat intervals after which the connection counts as dead (≥ 1).
    pub missed_heartbeats: u32,
}

impl DriverConfig {
    /// A configuration with defaults: auto-acknowledge on, backoff 200 ms → 15 s
    /// (short at first, so a framework is back soon after a master failover),
    /// 5 s connect timeout, 75 s request timeout (Mesos' advice), 5 missed heartbeats.
    pub fn new(
        masters: Vec<String>,
        framework_info: pb::FrameworkInfo,
        logger: slog::Logger,
    ) -> Self {
        DriverConfig {
            masters,
            framework_info,
            suppressed_roles: Vec::new(),
            logger,
            auto_acknowledge: true,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(75),
            missed_heartbeats: 5,
        }
    }

    /// Checks everything that would otherwise fail later, and far from its cause.
    pub(crate) fn validate(&self) -> Result<(), DriverError> {
        if self.masters.is_empty() {
            return Err(DriverError::Config("no master addresses given".into()));
        }
        for master in &self.masters {
            master_uri(master)?;
        }
        let invalid = |e: agora_core::limits::LimitError| DriverError::Config(e.to_string());
        agora_core::limits::framework_info(&self.framework_info).map_err(invalid)?;
        agora_core::limits::count(
            "suppressed_roles",
            self.suppressed_roles.len(),
            agora_core::limits::MAX_ROLES,
        )
        .map_err(invalid)?;
        for role in &self.suppressed_roles {
            agora_core::limits::role_name("suppressed_roles", role).map_err(invalid)?;
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(DriverError::Config(format!(
                "backoff_min ({:?}) must be above zero and at most backoff_max ({:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(DriverError::Config(
                "connect_timeout and request_timeout must be above zero".into(),
            ));
        }
        if self.missed_heartbeats == 0 {
            return Err(DriverError::Config(
                "missed_heartbeats must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Turns `host:port` into the `http://host:port` URI tonic dials.
pub(crate) fn master_uri(master: &str) -> Result<String, DriverError> {
    let master = master.trim();
    if master.is_empty() {
        return Err(DriverError::Config("empty master address".into()));
    }
    let uri = if master.contains("://") {
        master.to_string()
    } else {
        format!("http://{master}")
    };
    tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| DriverError::Config(format!("master address '{master}': {e}")))?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(masters: &[&str]) -> DriverConfig {
        DriverConfig::new(
            masters.iter().map(|m| m.to_string()).collect(),
            pb::FrameworkInfo {
                name: "t".into(),
                ..Default::default()
            },
            slog::Logger::root(slog::Discard, slog::o!()),
        )
    }

    #[test]
    fn master_addresses_get_a_scheme() {
        assert_eq!(
            master_uri("127.0.0.1:5050").unwrap(),
            "http://127.0.0.1:5050"
        );
        assert_eq!(master_uri("http://m1:5050").unwrap(), "http://m1:5050");
        assert!(master_uri("").is_err());
        assert!(master_uri("not a host:port").is_err());
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        assert!(config(&["127.0.0.1:5050"]).validate().is_ok());
        assert!(matches!(
            config(&[]).validate(),
            Err(DriverError::Config(_))
        ));
        let mut c = config(&["127.0.0.1:5050"]);
        c.backoff_min = Duration::from_secs(30);
        assert!(matches!(c.validate(), Err(DriverError::Config(_))));
        let mut c = config(&["127.0.0.1:5050"]);
        c.framework_info.failover_timeout = f64::NAN;
        assert!(matches!(c.validate(), Err(DriverError::Config(_))));
    }
}
