//! One file per subcommand.

pub mod agent;
pub mod agent_drain;
pub mod agents;
pub mod app;
pub mod apps;
pub mod cron;
pub mod dev;
pub mod executor;
pub mod frameworks;
pub mod image;
pub mod job;
pub mod logs;
pub mod master;
pub mod master_group;
pub mod quota;
pub mod roles;
pub mod state;
pub mod tasks;
pub mod weights;

use std::time::Duration;

/// What an HA framework instance (`agora apps`, `agora cron`) tells clients to reach
/// it at: `--advertise` as given; else, listening on every interface, this machine's
/// hostname (the instance's port is added once bound); else the listening address.
pub fn advertise(given: Option<&str>, listen: std::net::SocketAddr) -> Option<String> {
    match given {
        Some(given) => Some(given.to_string()),
        None if listen.ip().is_unspecified() => Some(agora_agent::config::local_hostname()),
        None => None,
    }
}

#[cfg(test)]
mod advertise_tests {
    #[test]
    fn every_interface_advertises_the_hostname() {
        let any = "0.0.0.0:8080".parse().expect("an address");
        let local = "127.0.0.1:8080".parse().expect("an address");
        assert_eq!(
            super::advertise(None, any),
            Some(agora_agent::config::local_hostname())
        );
        assert_eq!(super::advertise(None, local), None);
        assert_eq!(
            super::advertise(Some("apps-1"), any).as_deref(),
            Some("apps-1")
        );
    }
}

/// Parses `15s`, `500ms`, `10m`, `1h` or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let (number, unit) = match input.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => input.split_at(i),
        None => (input, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{input}' is not a duration (try 15s, 500ms, 10m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "'{input}': unknown unit '{unit}' (use ms, s, m or h)"
            ));
        }
    };
    if !(0.0..=agora_core::limits::MAX_TIMEOUT_SECONDS).contains(&seconds) {
        return Err(format!("'{input}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_requested() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
