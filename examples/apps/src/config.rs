//! [`AppsConfig`]: how an apps framework instance is set up.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one apps instance. Several instances (same `name`, same masters) form
/// an HA group: one leads; the others answer with the leader's address and take
/// over when its lease lapses.
#[derive(Clone, Debug)]
pub struct AppsConfig {
    /// Masters to find the leader among (`host:port`).
    pub masters: Vec<String>,
    /// Where the REST API listens (`127.0.0.1:8080`; port 0 lets the OS choose).
    pub listen: SocketAddr,
    /// How clients reach this instance (`host` or `host:port`; a host alone takes
    /// the listening port): what standbys redirect to and the masters show. `None`:
    /// the listening address, which must then be reachable as it is.
    pub advertise: Option<String>,
    /// Framework name; also the state-store namespace and the leader lease's name.
    pub name: String,
    /// The role the framework subscribes with (`*` by default).
    pub role: String,
    /// How long the master keeps our tasks when we are gone (Marathon: one week).
    pub failover_timeout: Duration,
    /// How long a leader's lease lasts without renewal; a standby takes over after.
    pub leader_lease: Duration,
    /// Old versions kept per app (Marathon's `--zk_max_versions`: 50).
    pub max_versions: usize,
    /// How long declined offers stay away (Marathon's `--decline_offer_duration`: 120 s).
    pub decline_offer_duration: Duration,
    /// Upper bound of running deployments (Marathon's `--max_running_deployments`: 100).
    pub max_running_deployments: usize,
}

impl AppsConfig {
    pub fn new(masters: Vec<String>, listen: SocketAddr) -> Self {
        AppsConfig {
            masters,
            listen,
            advertise: None,
            name: "apps".to_string(),
            role: "*".to_string(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            leader_lease: Duration::from_secs(10),
            max_versions: 50,
            decline_offer_duration: Duration::from_secs(120),
            max_running_deployments: 100,
        }
    }
}
