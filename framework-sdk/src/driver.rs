//! `SchedulerDriver`: finds the leading master, subscribes, feeds events to the
//! `Scheduler`, and reconnects when the connection is lost.
//!
//! The driver is one loop: connect and subscribe (following leader hints, trying the
//! masters in turn, backing off between failures), then read events until the stream
//! ends, errs or falls silent for `missed_heartbeats` heartbeat intervals, then tell
//! the scheduler it is disconnected and start over with the framework id the master
//! assigned. Only `stop`, a confirmed TEARDOWN, an ERROR event or a master refusing
//! the framework outright end the loop.

use std::time::{Duration, Instant};

use agora_core::limits;
use agora_proto as pb;
use agora_proto::scheduler_client::SchedulerClient;
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::config::{DriverConfig, master_uri};
use crate::error::DriverError;
use crate::handle::{SchedulerHandle, Session};
use crate::scheduler::Scheduler;

/// Heartbeat interval assumed when the master announces none (Mesos' default).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Longest heartbeat interval believed; anything above is a master's mistake.
const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// Connects a [`Scheduler`] to the masters. Create it, keep a [`handle`](Self::handle)
/// if you need to call from outside the callbacks, then `run` it.
pub struct SchedulerDriver {
    /// Validated by [`SchedulerDriver::new`].
    config: DriverConfig,
    /// Shared with every callback; carries the live session and the stop signal.
    handle: SchedulerHandle,
}

/// How one subscription ended.
enum SessionEnd {
    /// The framework asked to stop (or tore itself down).
    Stopped,
    /// The master sent ERROR with this message.
    Aborted(String),
    /// The connection died; the driver reconnects.
    Lost(String),
}

/// A subscription that has received its SUBSCRIBED event.
struct Subscription {
    /// Events after SUBSCRIBED.
    stream: Streaming<pb::Event>,
    /// The SUBSCRIBED event itself, for the `subscribed` callback.
    subscribed: pb::event::Subscribed,
    /// Checked against the protocol's id rules.
    framework_id: pb::FrameworkId,
    /// What calls need: the client on this connection and the stream id.
    session: Session,
}

impl SchedulerDriver {
    /// Checks `config` and prepares a driver; nothing is dialed until `run`.
    pub fn new(config: DriverConfig) -> Result<Self, DriverError> {
        config.validate()?;
        let handle = SchedulerHandle::new(
            config.framework_info.id.clone(),
            config.request_timeout,
            config.logger.clone(),
        );
        Ok(SchedulerDriver { config, handle })
    }

    /// A handle for making calls, or stopping the driver, from anywhere.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Runs until [`SchedulerHandle::stop`] or a successful
    /// [`SchedulerHandle::teardown`] (`Ok(())`), an ERROR event
    /// ([`DriverError::Aborted`], after the `error` callback), or a master refusing
    /// the subscription as invalid or unauthorized ([`DriverError::Rejected`], also
    /// after `error`). Connection failures are never returned: the driver retries.
    pub async fn run<S: Scheduler>(self, scheduler: &mut S) -> Result<(), DriverError> {
        let result = self.run_loop(scheduler).await;
        self.handle.clear_session();
        result
    }

    async fn run_loop<S: Scheduler>(&self, scheduler: &mut S) -> Result<(), DriverError> {
        let log = &self.config.logger;
        let masters = &self.config.masters;
        let mut stop = self.handle.stop_signal();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        // Index of the next master of the list to try when there is no better guess.
        let mut next_master = 0;
        // A better guess: the leader a follower named, or the master just lost.
        let mut preferred: Option<String> = None;
        // Redirects followed since the last subscription or pause; bounded so that
        // masters that point at each other cannot spin the driver.
        let mut redirects = 0;
        let redirect_limit = masters.len() + 2;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let target = preferred
                .take()
                .unwrap_or_else(|| masters[next_master % masters.len()].clone());
            let attempt = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                attempt = self.subscribe(&target) => attempt,
            };
            match attempt {
                Ok(subscription) => {
                    redirects = 0;
                    let since = Instant::now();
                    match self.serve(scheduler, subscription, &mut stop).await {
                        SessionEnd::Stopped => return Ok(()),
                        SessionEnd::Aborted(message) => return Err(DriverError::Aborted(message)),
                        SessionEnd::Lost(reason) => {
                            slog::warn!(log, "lost the master; reconnecting";
                                "master" => &target, "reason" => &reason);
                            self.handle.clear_session();
                            scheduler.disconnected(&self.handle).await;
                            // A session that lived a while proves the master healthy;
                            // one that died at once should not be retried in a loop.
                            if since.elapsed() > self.config.backoff_max {
                                backoff.reset();
                            }
                            preferred = Some(target);
                        }
                    }
                }
                Err(DriverError::NotLeader {
                    leader: Some(leader),
                    ..
                }) if redirects < redirect_limit => {
                    slog::info!(log, "following the leader hint"; "from" => &target, "leader" => &leader);
                    redirects += 1;
                    preferred = Some(leader);
                    continue;
                }
                Err(e) if is_fatal(&e) => {
                    slog::error!(log, "the master refused the framework"; "master" => &target, "error" => %e);
                    scheduler.error(&self.handle, e.to_string()).await;
                    return Err(e);
                }
                Err(e) => {
                    slog::warn!(log, "cannot subscribe"; "master" => &target, "error" => %e);
                    redirects = 0;
                    if let Some(leader) = e.leader_hint() {
                        preferred = Some(leader.to_string());
                    } else {
                        next_master = (next_master + 1) % masters.len();
                    }
                }
            }
            let delay = backoff.next_delay();
            slog::debug!(log, "waiting before reconnecting"; "delay" => ?delay);
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Dials `master`, subscribes and waits for SUBSCRIBED.
    async fn subscribe(&self, master: &str) -> Result<Subscription, DriverError> {
        let connect_timeout = self.config.connect_timeout;
        let endpoint = Endpoint::from_shared(master_uri(master)?)
            .map_err(|e| DriverError::Config(format!("master address '{master}': {e}")))?
            .connect_timeout(connect_timeout);
        let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
            Err(_) => return Err(DriverError::Timeout(connect_timeout)),
            Ok(Err(e)) => {
                return Err(DriverError::Connect {
                    master: master.to_string(),
                    reason: error_chain(&e),
                });
            }
            Ok(Ok(channel)) => channel,
        };
        let client = SchedulerClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);

        let mut framework_info = self.config.framework_info.clone();
        if let Some(id) = self.handle.framework_id() {
            framework_info.id = Some(id);
        }
        let request = pb::SubscribeRequest {
            framework_info: Some(framework_info),
            suppressed_roles: self.config.suppressed_roles.clone(),
        };
        let mut events_client = client.clone();
        let handshake = async move {
            let mut stream = events_client.subscribe(request).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        };
        let request_timeout = self.config.request_timeout;
        let (stream, first) = match tokio::time::timeout(request_timeout, handshake).await {
            Err(_) => return Err(DriverError::Timeout(request_timeout)),
            Ok(Err(status)) => return Err(DriverError::from_status(&status)),
            Ok(Ok(answer)) => answer,
        };
        let protocol = |reason: &str| DriverError::Protocol {
            master: master.to_string(),
            reason: reason.to_string(),
        };
        let subscribed = match first.and_then(|e| e.event) {
            Some(pb::event::Event::Subscribed(subscribed)) => subscribed,
            Some(_) => return Err(protocol("the first event was not SUBSCRIBED")),
            None => return Err(protocol("the event stream ended before SUBSCRIBED")),
        };
        let framework_id = subscribed
            .framework_id
            .clone()
            .ok_or_else(|| protocol("SUBSCRIBED carries no framework id"))?;
        limits::id("subscribed.framework_id", Some(&framework_id.value))
            .map_err(|e| protocol(&e.to_string()))?;
        if subscribed.stream_id.is_empty() || subscribed.stream_id.len() > limits::MAX_ID_LEN {
            return Err(protocol("SUBSCRIBED carries no usable stream id"));
        }
        if let Some(known) = self.handle.framework_id()
            && known != framework_id
        {
            slog::warn!(self.config.logger, "the master assigned a new framework id";
                "previous" => &known.value, "new" => &framework_id.value);
        }
        Ok(Subscription {
            stream,
            session: Session {
                client,
                stream_id: subscribed.stream_id.clone(),
                master: master.to_string(),
            },
            framework_id,
            subscribed,
        })
    }

    /// Publishes the session, then feeds events to the scheduler until it ends.
    async fn serve<S: Scheduler>(
        &self,
        scheduler: &mut S,
        subscription: Subscription,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let Subscription {
            mut stream,
            subscribed,
            framework_id,
            session,
        } = subscription;
        let silence_limit = heartbeat_interval(subscribed.heartbeat_interval_seconds)
            .saturating_mul(self.config.missed_heartbeats);
        slog::info!(self.config.logger, "subscribed";
            "master" => &session.master, "framework_id" => &framework_id.value,
            "heartbeat_interval_seconds" => subscribed.heartbeat_interval_seconds);
        self.handle.set_session(framework_id, session);
        scheduler.subscribed(&self.handle, subscribed).await;
        loop {
            if *stop.borrow() {
                return SessionEnd::Stopped;
            }
            let next = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return SessionEnd::Stopped,
                next = tokio::time::timeout(silence_limit, stream.message()) => next,
            };
            let event = match next {
                Err(_) => {
                    return SessionEnd::Lost(format!(
                        "no event for {silence_limit:?} ({} heartbeat intervals)",
                        self.config.missed_heartbeats
                    ));
                }
                Ok(Err(status)) => {
                    return SessionEnd::Lost(DriverError::from_status(&status).to_string());
                }
                Ok(Ok(None)) => {
                    return SessionEnd::Lost("the master closed the event stream".into());
                }
                Ok(Ok(Some(event))) => event,
            };
            if let Some(message) = self.dispatch(scheduler, event).await {
                return SessionEnd::Aborted(message);
            }
        }
    }

    /// Hands one event to the scheduler; returns the message of an ERROR event.
    async fn dispatch<S: Scheduler>(&self, scheduler: &mut S, event: pb::Event) -> Option<String> {
        use pb::event::Event;
        let driver = &self.handle;
        let log = &self.config.logger;
        match event.event {
            None => slog::warn!(log, "ignoring an event of an unknown type"),
            Some(Event::Subscribed(_)) => slog::warn!(log, "ignoring a second SUBSCRIBED"),
            Some(Event::Heartbeat(_)) => slog::trace!(log, "heartbeat"),
            Some(Event::Offers(offers)) => scheduler.offers(driver, offers.offers).await,
            Some(Event::Rescind(rescind)) => match rescind.offer_id {
                Some(offer_id) => scheduler.rescinded(driver, offer_id).await,
                None => slog::warn!(log, "ignoring a RESCIND without an offer id"),
            },
            Some(Event::Update(update)) => {
                let Some(status) = update.status else {
                    slog::warn!(log, "ignoring an UPDATE without a status");
                    return None;
                };
                let ack = (self.config.auto_acknowledge && !status.uuid.is_empty()).then(|| {
                    pb::TaskStatus {
                        task_id: status.task_id.clone(),
                        agent_id: status.agent_id.clone(),
                        uuid: status.uuid.clone(),
                        ..Default::default()
                    }
                });
                scheduler.update(driver, status).await;
                if let Some(ack) = ack
                    && !driver.is_torn_down()
                {
                    // Not awaited: reading events never waits for a round trip per
                    // update.
                    driver.acknowledge_in_background(ack).await;
                }
            }
            Some(Event::Message(message)) => scheduler.message(driver, message).await,
            Some(Event::Failure(failure)) => scheduler.failure(driver, failure).await,
            Some(Event::AgentDraining(draining)) => {
                scheduler.agent_draining(driver, draining).await
            }
            Some(Event::Error(error)) => {
                slog::error!(log, "the master sent ERROR"; "message" => &error.message);
                scheduler.error(driver, error.message.clone()).await;
                return Some(error.message);
            }
        }
        None
    }
}

/// Subscription errors that retrying cannot fix: the framework is invalid or not
/// allowed. Everything else (unreachable, not the leader, overloaded) is retried.
fn is_fatal(error: &DriverError) -> bool {
    matches!(
        error,
        DriverError::Rejected {
            code: tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated,
            ..
        }
    )
}

/// The announced heartbeat interval, or the default when it is missing or absurd.
fn heartbeat_interval(seconds: f64) -> Duration {
    match Duration::try_from_secs_f64(seconds) {
        Ok(interval) if !interval.is_zero() => interval.min(MAX_HEARTBEAT),
        _ => DEFAULT_HEARTBEAT,
    }
}

/// An error and its causes on one line: tonic's top-level transport error alone
/// says only "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper repeats its wrapper's message in the cause; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_heartbeat_intervals_fall_back_to_the_default() {
        assert_eq!(heartbeat_interval(0.5), Duration::from_millis(500));
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e300), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e7), MAX_HEARTBEAT);
    }

    #[test]
    fn only_refusals_of_the_framework_itself_are_fatal() {
        let rejected = |code| DriverError::Rejected {
            code,
            message: String::new(),
        };
        assert!(is_fatal(&rejected(tonic::Code::InvalidArgument)));
        assert!(is_fatal(&rejected(tonic::Code::PermissionDenied)));
        assert!(!is_fatal(&rejected(tonic::Code::Unavailable)));
        assert!(!is_fatal(&DriverError::NotLeader {
            leader: None,
            message: String::new()
        }));
    }
}
