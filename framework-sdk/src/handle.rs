//! `SchedulerHandle`: the calls a framework makes to the master.
//!
//! Calls are unary RPCs sent straight from the caller's task over the driver's current
//! connection, so a callback can make calls without waiting on the driver loop that
//! is running it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use agora_core::limits;
use agora_proto as pb;
use agora_proto::scheduler_client::SchedulerClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::transport::Channel;

use crate::error::DriverError;

/// A cheap, cloneable way to talk to the master on behalf of one driver. Every call
/// fails with [`DriverError::NotSubscribed`] while the driver is not subscribed.
#[derive(Clone)]
pub struct SchedulerHandle {
    /// State shared with the driver and every other clone.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerHandle")
            .field("framework_id", &self.framework_id())
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

struct Shared {
    /// The live subscription and the framework id; one lock, held only to copy out.
    link: Mutex<Link>,
    /// Becomes true once the framework asked the driver to stop; never goes back.
    stop: watch::Sender<bool>,
    /// Set once the master confirmed TEARDOWN: the framework is gone, so there is
    /// nothing left to acknowledge.
    torn_down: AtomicBool,
    /// Deadline of every call.
    request_timeout: Duration,
    /// Bounds automatic acknowledgements in flight (see
    /// [`SchedulerHandle::acknowledge_in_background`]); TEARDOWN takes every permit
    /// so that it follows the acknowledgements already sent.
    acks_in_flight: Arc<Semaphore>,
    /// Where automatic acknowledgements wait for [`send_acknowledgements`]; that
    /// task starts with the first one.
    ack_queue: OnceLock<mpsc::UnboundedSender<QueuedAck>>,
    /// Where failed calls are logged.
    logger: slog::Logger,
}

/// Most automatic acknowledgements outstanding (queued or sent and not answered).
const MAX_ACKS_IN_FLIGHT: u32 = 8 * limits::MAX_ACKNOWLEDGEMENTS as u32;

#[derive(Default)]
struct Link {
    /// Assigned by the master on the first SUBSCRIBED; kept across reconnections so
    /// a re-subscription keeps the framework's tasks.
    framework_id: Option<pb::FrameworkId>,
    /// Present exactly while the driver holds a subscribed event stream.
    session: Option<Session>,
}

/// One subscription to one master.
#[derive(Clone)]
pub(crate) struct Session {
    /// Client on the channel the event stream uses (HTTP/2 multiplexes both).
    pub(crate) client: SchedulerClient<Channel>,
    /// Echoed in every call; the master refuses calls carrying an older one.
    pub(crate) stream_id: String,
    /// The master's `host:port`, for messages.
    pub(crate) master: String,
}

impl SchedulerHandle {
    pub(crate) fn new(
        framework_id: Option<pb::FrameworkId>,
        request_timeout: Duration,
        logger: slog::Logger,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        SchedulerHandle {
            shared: Arc::new(Shared {
                link: Mutex::new(Link {
                    framework_id,
                    session: None,
                }),
                stop,
                torn_down: AtomicBool::new(false),
                request_timeout,
                acks_in_flight: Arc::new(Semaphore::new(MAX_ACKS_IN_FLIGHT as usize)),
                ack_queue: OnceLock::new(),
                logger,
            }),
        }
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        // Nothing panics while holding this lock, and the data stays consistent if
        // something ever did, so a poisoned lock is simply taken over.
        self.shared
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_session(&self, framework_id: pb::FrameworkId, session: Session) {
        let mut link = self.link();
        link.framework_id = Some(framework_id);
        link.session = Some(session);
    }

    pub(crate) fn clear_session(&self) {
        self.link().session = None;
    }

    pub(crate) fn is_torn_down(&self) -> bool {
        self.shared.torn_down.load(Ordering::Acquire)
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shared.stop.subscribe()
    }

    /// The framework id the master assigned, once subscribed (kept while reconnecting).
    pub fn framework_id(&self) -> Option<pb::FrameworkId> {
        self.link().framework_id.clone()
    }

    /// True while the driver holds a live subscription.
    pub fn is_subscribed(&self) -> bool {
        self.link().session.is_some()
    }

    /// True once [`stop`](Self::stop) (or a successful teardown) was called.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stop.borrow()
    }

    /// Asks the driver to stop: `run` returns `Ok(())` as soon as the current callback
    /// (if any) returns. The framework stays registered, and its tasks keep running,
    /// for its `failover_timeout`; use [`teardown`](Self::teardown) to remove it.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// ACCEPT: runs `operations` on the offers, which must all be from one agent.
    /// Whatever the operations leave unused is declined with `filters`.
    pub async fn accept(
        &self,
        offer_ids: Vec<pb::OfferId>,
        operations: Vec<pb::Operation>,
        filters: Option<pb::Filters>,
    ) -> Result<(), DriverError> {
        limits::count("accept.offer_ids", offer_ids.len(), limits::MAX_OFFER_IDS)?;
        limits::count(
            "accept.operations",
            operations.len(),
            limits::MAX_OPERATIONS,
        )?;
        for op in &operations {
            if let Some(pb::operation::Operation::Launch(launch)) = &op.operation {
                limits::count(
                    "accept.operations.launch.task_infos",
                    launch.task_infos.len(),
                    limits::MAX_TASKS_PER_LAUNCH,
                )?;
                for task in &launch.task_infos {
                    limits::task_info(task)?;
                }
            }
            if let Some(pb::operation::Operation::LaunchGroup(group)) = &op.operation {
                let tasks = group
                    .task_group
                    .as_ref()
                    .map(|g| g.tasks.as_slice())
                    .unwrap_or_default();
                limits::count(
                    "accept.operations.launch_group.task_group.tasks",
                    tasks.len(),
                    limits::MAX_TASK_GROUP,
                )?;
                for task in tasks {
                    limits::task_info(task)?;
                }
            }
        }
        self.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids,
            operations,
            filters,
        }))
        .await
    }

    /// ACCEPT with a single LAUNCH of `tasks` on one offer: the common case.
    /// What the tasks leave of the offer is declined with `filters`; `None` means
    /// the master's default of 5 s, which keeps the rest of that agent from this
    /// framework for that long. Pass a short `refuse_seconds` to get it back soon.
    pub async fn launch(
        &self,
        offer_id: pb::OfferId,
        tasks: Vec<pb::TaskInfo>,
        filters: Option<pb::Filters>,
    ) -> Result<(), DriverError> {
        let launch = pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                task_infos: tasks,
            })),
        };
        self.accept(vec![offer_id], vec![launch], filters).await
    }

    /// ACCEPT with a single LAUNCH_GROUP on one offer: `tasks` run together under
    /// the agent's default executor `executor_id`, share its sandbox, and live and
    /// die together (when one fails or is killed, the others are killed). The
    /// executor needs no resources of its own here; `filters` as for
    /// [`launch`](Self::launch).
    pub async fn launch_group(
        &self,
        offer_id: pb::OfferId,
        executor_id: impl Into<String>,
        tasks: Vec<pb::TaskInfo>,
        filters: Option<pb::Filters>,
    ) -> Result<(), DriverError> {
        let group = pb::Operation {
            operation: Some(pb::operation::Operation::LaunchGroup(
                pb::operation::LaunchGroup {
                    executor: Some(pb::ExecutorInfo {
                        r#type: pb::executor_info::Type::Default as i32,
                        executor_id: Some(pb::ExecutorId {
                            value: executor_id.into(),
                        }),
                        ..Default::default()
                    }),
                    task_group: Some(pb::TaskGroupInfo { tasks }),
                },
            )),
        };
        self.accept(vec![offer_id], vec![group], filters).await
    }

    /// DECLINE: gives the offers back; `filters.refuse_seconds` (default 5 s) keeps
    /// the same resources from being offered again for that long.
    pub async fn decline(
        &self,
        offer_ids: Vec<pb::OfferId>,
        filters: Option<pb::Filters>,
    ) -> Result<(), DriverError> {
        limits::count("decline.offer_ids", offer_ids.len(), limits::MAX_OFFER_IDS)?;
        self.call(pb::call::Call::Decline(pb::call::Decline {
            offer_ids,
            filters,
        }))
        .await
    }

    /// REVIVE: offers again for `roles` (every role when empty), clearing filters.
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), DriverError> {
        limits::count("revive.roles", roles.len(), limits::MAX_ROLES)?;
        self.call(pb::call::Call::Revive(pb::call::Revive { roles }))
            .await
    }

    /// SUPPRESS: no more offers for `roles` (every role when empty) until `revive`.
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), DriverError> {
        limits::count("suppress.roles", roles.len(), limits::MAX_ROLES)?;
        self.call(pb::call::Call::Suppress(pb::call::Suppress { roles }))
            .await
    }

    /// KILL: asks the task's executor to kill it; a terminal update follows.
    pub async fn kill(
        &self,
        task_id: pb::TaskId,
        agent_id: Option<pb::AgentId>,
    ) -> Result<(), DriverError> {
        limits::id("kill.task_id", Some(&task_id.value))?;
        self.call(pb::call::Call::Kill(pb::call::Kill {
            task_id: Some(task_id),
            agent_id,
            kill_policy: None,
        }))
        .await
    }

    /// ACKNOWLEDGE: tells the agent it may forget `status`. Updates without a uuid
    /// need no acknowledgement; for them this does nothing and returns `Ok`.
    pub async fn acknowledge(&self, status: &pb::TaskStatus) -> Result<(), DriverError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        limits::bytes(
            "acknowledge.uuid",
            status.uuid.len(),
            limits::MAX_UUID_BYTES,
        )?;
        self.call(pb::call::Call::Acknowledge(pb::call::Acknowledge {
            agent_id: status.agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        }))
        .await
    }

    /// Queues an acknowledgement without waiting for the master's answer, so that
    /// the driver reads the next event at once; waits only while the maximum number
    /// of acknowledgements is already outstanding. One call at a time carries every
    /// acknowledgement queued meanwhile ([`send_acknowledgements`]), so a burst of
    /// updates costs a round trip per batch, not per update. A lost acknowledgement
    /// is harmless: the agent resends the update.
    pub(crate) async fn acknowledge_in_background(&self, status: pb::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        // The master refuses a batch holding one malformed acknowledgement: this
        // one must not cost the others theirs.
        if status.uuid.len() != limits::MAX_UUID_BYTES {
            slog::warn!(self.shared.logger, "not acknowledging an update whose uuid is not 16 bytes";
                "task_id" => status.task_id.map(|t| t.value).unwrap_or_default(),
                "uuid_bytes" => status.uuid.len());
            return;
        }
        let Ok(permit) = self.shared.acks_in_flight.clone().acquire_owned().await else {
            return;
        };
        let queue = self.shared.ack_queue.get_or_init(|| {
            let (queue, outgoing) = mpsc::unbounded_channel();
            tokio::spawn(send_acknowledgements(
                Arc::downgrade(&self.shared),
                outgoing,
            ));
            queue
        });
        let ack = pb::call::Acknowledge {
            agent_id: status.agent_id,
            task_id: status.task_id,
            uuid: status.uuid,
        };
        // Fails only once the sending task is gone, with the runtime.
        let _ = queue.send((ack, permit));
    }

    /// RECONCILE: the master answers with an update per task (every task it knows
    /// for this framework when `tasks` is empty).
    pub async fn reconcile(
        &self,
        tasks: Vec<(pb::TaskId, Option<pb::AgentId>)>,
    ) -> Result<(), DriverError> {
        limits::count("reconcile.tasks", tasks.len(), limits::MAX_RECONCILE_TASKS)?;
        let tasks = tasks
            .into_iter()
            .map(|(task_id, agent_id)| pb::call::reconcile::Task {
                task_id: Some(task_id),
                agent_id,
            })
            .collect();
        self.call(pb::call::Call::Reconcile(pb::call::Reconcile { tasks }))
            .await
    }

    /// MESSAGE: bytes for an executor (unreliable).
    pub async fn message(
        &self,
        agent_id: pb::AgentId,
        executor_id: pb::ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), DriverError> {
        limits::bytes("message.data", data.len(), limits::MAX_MESSAGE_DATA_BYTES)?;
        self.call(pb::call::Call::Message(pb::call::Message {
            agent_id: Some(agent_id),
            executor_id: Some(executor_id),
            data,
        }))
        .await
    }

    /// TEARDOWN: removes the framework and kills all its tasks; once the master
    /// confirms, the driver stops and `run` returns `Ok(())`.
    pub async fn teardown(&self) -> Result<(), DriverError> {
        // Let acknowledgements already sent land first (each is bounded by the
        // request timeout), so that the framework's last updates are not resent.
        let _all_acks_answered = self
            .shared
            .acks_in_flight
            .acquire_many(MAX_ACKS_IN_FLIGHT)
            .await;
        self.call(pb::call::Call::Teardown(pb::call::Teardown {}))
            .await?;
        self.shared.torn_down.store(true, Ordering::Release);
        self.stop();
        Ok(())
    }

    /// Sends one call on the live subscription, with the framework and stream ids.
    async fn call(&self, call: pb::call::Call) -> Result<(), DriverError> {
        let (framework_id, session) = {
            let link = self.link();
            match (&link.framework_id, &link.session) {
                (Some(id), Some(session)) => (id.clone(), session.clone()),
                _ => return Err(DriverError::NotSubscribed),
            }
        };
        let kind = call_name(&call);
        let request = pb::Call {
            framework_id: Some(framework_id),
            stream_id: session.stream_id,
            call: Some(call),
        };
        let mut client = session.client;
        let timeout = self.shared.request_timeout;
        let result = match tokio::time::timeout(timeout, client.call(request)).await {
            Err(_) => Err(DriverError::Timeout(timeout)),
            Ok(Err(status)) => Err(DriverError::from_status(&status)),
            Ok(Ok(_)) => Ok(()),
        };
        if let Err(e) = &result {
            slog::warn!(self.shared.logger, "call failed";
                "call" => kind, "master" => &session.master, "error" => %e);
        }
        result
    }
}

/// An automatic acknowledgement, holding its place among those outstanding until
/// the master has answered the call that carried it.
type QueuedAck = (pb::call::Acknowledge, OwnedSemaphorePermit);

/// Sends the queued acknowledgements, all that are waiting in each call (at most
/// [`limits::MAX_ACKNOWLEDGEMENTS`]), one call at a time. Holds the handle weakly:
/// the queue closes, and this ends, when the last handle is dropped.
async fn send_acknowledgements(
    shared: Weak<Shared>,
    mut queue: mpsc::UnboundedReceiver<QueuedAck>,
) {
    let mut batch = Vec::new();
    while queue
        .recv_many(&mut batch, limits::MAX_ACKNOWLEDGEMENTS)
        .await
        > 0
    {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let handle = SchedulerHandle { shared };
        let (mut acks, permits): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        // Alone, it goes as the plain call.
        let call = if acks.len() == 1 {
            pb::call::Call::Acknowledge(acks.remove(0))
        } else {
            pb::call::Call::AcknowledgeMany(pb::call::AcknowledgeMany {
                acknowledgements: acks,
            })
        };
        // The call has logged why it failed, if it did.
        let _ = handle.call(call).await;
        drop(permits);
    }
}

fn call_name(call: &pb::call::Call) -> &'static str {
    match call {
        pb::call::Call::Teardown(_) => "TEARDOWN",
        pb::call::Call::Accept(_) => "ACCEPT",
        pb::call::Call::Decline(_) => "DECLINE",
        pb::call::Call::Revive(_) => "REVIVE",
        pb::call::Call::Suppress(_) => "SUPPRESS",
        pb::call::Call::Kill(_) => "KILL",
        pb::call::Call::Acknowledge(_) => "ACKNOWLEDGE",
        pb::call::Call::AcknowledgeMany(_) => "ACKNOWLEDGE_MANY",
        pb::call::Call::Reconcile(_) => "RECONCILE",
        pb::call::Call::Message(_) => "MESSAGE",
    }
}
