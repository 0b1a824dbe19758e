//! [`CronConfig`]: how a cron framework instance is set up.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CronConfig {
    /// Masters to find the leader among (`host:port`).
    pub masters: Vec<String>,
    /// Where the REST API listens (`127.0.0.1:9000`; port 0 lets the OS choose).
    pub listen: SocketAddr,
    /// How clients reach this instance (`host` or `host:port`; a host alone takes
    /// the listening port): what standbys redirect to and the masters show. `None`:
    /// the listening address, which must then be reachable as it is.
    pub advertise: Option<String>,
    /// Framework name; also the state-store namespace and the leader lease's name.
    pub name: String,
    pub role: String,
    /// How long the master keeps our tasks when we are gone.
    pub failover_timeout: Duration,
    /// How long a leader's lease lasts without renewal.
    pub leader_lease: Duration,
    /// Finished runs kept per job (Metronome's `metronome.history.count`: 1000).
    pub history_count: usize,
}

impl CronConfig {
    pub fn new(masters: Vec<String>, listen: SocketAddr) -> Self {
        CronConfig {
            masters,
            listen,
            advertise: None,
            name: "cron".to_string(),
            role: "*".to_string(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            leader_lease: Duration::from_secs(10),
            history_count: 1000,
        }
    }
}
