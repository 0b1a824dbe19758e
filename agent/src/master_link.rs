//! The link to the master: connect, (re)register, answer pings, pass the master's
//! messages to the actor, and reconnect with exponential backoff whenever the stream
//! breaks or the master falls silent. The actor decides what to register with
//! (`Register` for a new agent, `Reregister` with every task otherwise) and owns the
//! outbound half once the master accepted us; the link only moves messages.

use std::time::Duration;

use agora_proto as pb;
use agora_proto::agent_link_client::AgentLinkClient;
use agora_proto::agent_message::Message as ToMaster;
use agora_proto::master_message::Message as FromMaster;
use slog::{Logger, debug, info, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::actor::Command;

/// First wait after a failed attempt; doubles up to the configured maximum.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait for a TCP (and HTTP/2) connection to a master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the master's answer to (re)registration.
const REGISTRATION_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Ping interval assumed when the master announces none (Mesos' agent ping timeout).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Pings that may be missed before the master is considered lost (Mesos: 5).
const MAX_MISSED_PINGS: u32 = 5;
/// Messages queued towards the master before new ones are dropped.
const OUTBOUND_QUEUE: usize = 4096;
/// gRPC metadata key a follower master sets to name the leader.
const LEADER_METADATA_KEY: &str = "agora-leader";

/// How one session with a master ended.
enum SessionEnd {
    /// The master accepted us and the session ran until it broke.
    WasRegistered,
    /// A follower named the leader; try it next.
    Redirect(String),
    /// Could not connect or register.
    Failed,
}

/// See the module documentation.
pub(crate) struct MasterLink {
    /// `host:port` of each master, tried in turn. Not empty.
    pub masters: Vec<String>,
    /// Receives the master's messages and (de)registration events.
    pub actor: mpsc::Sender<Command>,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// For connection diagnostics.
    pub logger: Logger,
}

impl MasterLink {
    /// Runs until `shutdown` fires (or the actor stops).
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = INITIAL_BACKOFF;
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        loop {
            if *shutdown.borrow_and_update() || self.actor.is_closed() {
                return;
            }
            let master = match redirect.take() {
                Some(leader) => leader,
                None => {
                    let master = self.masters[next % self.masters.len()].clone();
                    next = next.wrapping_add(1);
                    master
                }
            };
            let end = tokio::select! {
                end = self.session(&master) => end,
                _ = shutdown.changed() => return,
            };
            match end {
                SessionEnd::WasRegistered => backoff = INITIAL_BACKOFF,
                SessionEnd::Redirect(leader) => {
                    info!(self.logger, "following the leader hint"; "from" => &master, "leader" => &leader);
                    redirect = Some(leader);
                }
                SessionEnd::Failed => {}
            }
            let delay = jittered(backoff);
            backoff = (backoff * 2).min(self.backoff_max.max(INITIAL_BACKOFF));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn session(&self, master: &str) -> SessionEnd {
        let endpoint = match Endpoint::from_shared(format!("http://{master}")) {
            Ok(endpoint) => endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(e) => {
                warn!(self.logger, "invalid master address"; "master" => master, "error" => %e);
                return SessionEnd::Failed;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                debug!(self.logger, "cannot reach the master"; "master" => master, "error" => %e);
                return SessionEnd::Failed;
            }
        };
        let mut client = AgentLinkClient::new(channel)
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES);

        let (reply, first) = oneshot::channel();
        if self
            .actor
            .send(Command::Registration { reply })
            .await
            .is_err()
        {
            return SessionEnd::Failed;
        }
        let Ok(first) = first.await else {
            return SessionEnd::Failed;
        };
        let reregistering = matches!(first.message, Some(ToMaster::Reregister(_)));
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let _ = outbound.try_send(first);

        let attached = tokio::time::timeout(
            REGISTRATION_REPLY_TIMEOUT,
            client.attach(ReceiverStream::new(outbound_rx)),
        )
        .await;
        let mut inbound = match attached {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                if let Some(leader) = leader_hint(&status) {
                    return SessionEnd::Redirect(leader);
                }
                warn!(self.logger, "the master refused the connection";
                    "master" => master, "code" => ?status.code(), "message" => status.message());
                // The master answers PERMISSION_DENIED to an id it has written off.
                if reregistering && status.code() == tonic::Code::PermissionDenied {
                    let _ = self
                        .actor
                        .send(Command::Refused {
                            reason: status.message().to_string(),
                            while_registering: true,
                        })
                        .await;
                }
                return SessionEnd::Failed;
            }
            Err(_) => {
                warn!(self.logger, "no answer from the master"; "master" => master);
                return SessionEnd::Failed;
            }
        };

        let reply = tokio::time::timeout(REGISTRATION_REPLY_TIMEOUT, inbound.message()).await;
        let registered = match reply {
            Ok(Ok(Some(pb::MasterMessage {
                message: Some(FromMaster::Registered(registered)),
            }))) => registered,
            Ok(Ok(Some(pb::MasterMessage {
                message: Some(FromMaster::Refused(refused)),
            }))) => {
                let _ = self
                    .actor
                    .send(Command::Refused {
                        reason: refused.reason,
                        while_registering: true,
                    })
                    .await;
                return SessionEnd::Failed;
            }
            Ok(Ok(Some(other))) => {
                warn!(self.logger, "the master's first message was not Registered; reconnecting";
                    "master" => master, "message" => ?other.message.map(|m| message_name(&m)));
                return SessionEnd::Failed;
            }
            Ok(Ok(None)) => {
                warn!(self.logger, "the master closed the stream before registering us"; "master" => master);
                return SessionEnd::Failed;
            }
            Ok(Err(status)) => {
                if let Some(leader) = leader_hint(&status) {
                    return SessionEnd::Redirect(leader);
                }
                warn!(self.logger, "registration failed";
                    "master" => master, "code" => ?status.code(), "message" => status.message());
                return SessionEnd::Failed;
            }
            Err(_) => {
                warn!(self.logger, "the master did not answer the registration"; "master" => master);
                return SessionEnd::Failed;
            }
        };
        let Some(agent_id) = self.checked_agent_id(&registered) else {
            return SessionEnd::Failed;
        };
        let ping_timeout = ping_interval(registered.ping_interval_seconds) * MAX_MISSED_PINGS;
        info!(self.logger, "attached to the master";
            "master" => master, "agent_id" => &agent_id, "reregistered" => reregistering);
        if self
            .actor
            .send(Command::Registered {
                agent_id,
                outbound: outbound.clone(),
            })
            .await
            .is_err()
        {
            return SessionEnd::Failed;
        }

        let mut deadline = Instant::now() + ping_timeout;
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(pb::MasterMessage { message: Some(message) })) => match message {
                        FromMaster::Ping(ping) => {
                            deadline = Instant::now() + ping_timeout;
                            let pong = ToMaster::Pong(pb::agent_message::Pong { seq: ping.seq });
                            let _ = outbound.try_send(pb::AgentMessage { message: Some(pong) });
                        }
                        FromMaster::Error(e) => {
                            warn!(self.logger, "the master dropped a message of this agent"; "error" => e.message);
                        }
                        FromMaster::Refused(refused) => {
                            let _ = self.actor.send(Command::Refused {
                                reason: refused.reason,
                                while_registering: false,
                            }).await;
                            break;
                        }
                        FromMaster::Registered(again) => {
                            let Some(agent_id) = self.checked_agent_id(&again) else { break };
                            let _ = self.actor.send(Command::Registered {
                                agent_id,
                                outbound: outbound.clone(),
                            }).await;
                        }
                        other => {
                            if self.actor.send(Command::FromMaster(Box::new(other))).await.is_err() {
                                break;
                            }
                        }
                    },
                    Ok(Some(pb::MasterMessage { message: None })) => {
                        warn!(self.logger, "ignoring an empty message from the master");
                    }
                    Ok(None) => {
                        info!(self.logger, "the master closed the stream; reconnecting"; "master" => master);
                        break;
                    }
                    Err(status) => {
                        warn!(self.logger, "the master stream broke; reconnecting";
                            "master" => master, "code" => ?status.code(), "message" => status.message());
                        break;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    warn!(self.logger, "no ping from the master; treating it as lost";
                        "master" => master, "timeout" => ?ping_timeout);
                    break;
                }
                // The actor stopped (it could not checkpoint): answering pings for an
                // agent that does nothing else would hide that from the master.
                () = self.actor.closed() => break,
            }
        }
        let _ = self.actor.send(Command::Disconnected).await;
        SessionEnd::WasRegistered
    }

    fn checked_agent_id(&self, registered: &pb::master_message::Registered) -> Option<String> {
        let id = registered.agent_id.as_ref().map(|a| a.value.as_str());
        match agora_core::limits::id("registered.agent_id", id) {
            Ok(()) => id.map(str::to_string),
            Err(e) => {
                warn!(self.logger, "the master sent an invalid agent id; reconnecting"; "error" => %e);
                None
            }
        }
    }
}

/// The announced ping interval, or the default when absent or absurd.
fn ping_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 {
        Duration::from_secs_f64(seconds)
    } else {
        DEFAULT_PING_INTERVAL
    }
}

/// A wait between half of `backoff` and all of it, so agents that lost the same
/// master do not all return at once.
fn jittered(backoff: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let half = backoff / 2;
    let spread = half.as_nanos() as u64;
    half + Duration::from_nanos(if spread == 0 { 0 } else { random % spread })
}

fn leader_hint(status: &tonic::Status) -> Option<String> {
    let value = status
        .metadata()
        .get(LEADER_METADATA_KEY)?
        .to_str()
        .ok()?
        .trim();
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_whitespace) {
        return None;
    }
    Some(value.to_string())
}

fn message_name(message: &FromMaster) -> &'static str {
    match message {
        FromMaster::Registered(_) => "Registered",
        FromMaster::Ping(_) => "Ping",
        FromMaster::RunTask(_) => "RunTask",
        FromMaster::RunTaskGroup(_) => "RunTaskGroup",
        FromMaster::KillTask(_) => "KillTask",
        FromMaster::ShutdownFramework(_) => "ShutdownFramework",
        FromMaster::Acknowledge(_) => "Acknowledge",
        FromMaster::FrameworkMessage(_) => "FrameworkMessage",
        FromMaster::Refused(_) => "Refused",
        FromMaster::Error(_) => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_interval_falls_back_on_nonsense() {
        assert_eq!(ping_interval(2.5), Duration::from_millis(2500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert_eq!(ping_interval(bad), DEFAULT_PING_INTERVAL);
        }
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
