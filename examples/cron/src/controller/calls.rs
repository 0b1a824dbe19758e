//! `CallLane`: the master calls the controller makes without waiting for their
//! answers (DECLINE, REVIVE, SUPPRESS, KILL).
//!
//! The master answers calls in the order they reach it, so during a burst an answer
//! waits behind every ACCEPT sent before it. The controller must not stop reading
//! task updates for that long; it queues these calls here instead. One task sends
//! them one after the other, so a SUPPRESS never overtakes an earlier REVIVE (or the
//! reverse). A REVIVE or SUPPRESS that fails is reported back through
//! [`CallLane::take_failures`], so the controller asks again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_sdk::SchedulerHandle;
use agora_sdk::proto as pb;
use tokio::sync::mpsc;

/// A call that may be sent later, in order.
pub(super) enum LaneCall {
    Decline {
        offer_ids: Vec<pb::OfferId>,
        filters: Option<pb::Filters>,
    },
    Revive {
        roles: Vec<String>,
    },
    Suppress {
        roles: Vec<String>,
    },
    Kill {
        task_id: pb::TaskId,
        agent_id: Option<pb::AgentId>,
    },
}

/// Which interest calls failed since the controller last looked.
#[derive(Default)]
struct Failures {
    revive: AtomicBool,
    suppress: AtomicBool,
}

/// One subscribed driver: its handle, for the calls awaited elsewhere (ACCEPT), and
/// the queue of its unawaited calls. Dropping it lets the sending task finish what
/// is queued and end.
pub(super) struct CallLane {
    driver: SchedulerHandle,
    queue: mpsc::UnboundedSender<LaneCall>,
    failures: Arc<Failures>,
}

impl CallLane {
    /// Starts the task that sends `driver`'s queued calls.
    pub(super) fn start(driver: SchedulerHandle) -> CallLane {
        let (queue, calls) = mpsc::unbounded_channel();
        let failures = Arc::new(Failures::default());
        tokio::spawn(send_in_order(driver.clone(), calls, failures.clone()));
        CallLane {
            driver,
            queue,
            failures,
        }
    }

    pub(super) fn driver(&self) -> &SchedulerHandle {
        &self.driver
    }

    pub(super) fn send(&self, call: LaneCall) {
        // Fails only once the sending task is gone, with the runtime.
        let _ = self.queue.send(call);
    }

    /// Whether a REVIVE, and whether a SUPPRESS, failed since the last look.
    pub(super) fn take_failures(&self) -> (bool, bool) {
        (
            self.failures.revive.swap(false, Ordering::AcqRel),
            self.failures.suppress.swap(false, Ordering::AcqRel),
        )
    }
}

async fn send_in_order(
    driver: SchedulerHandle,
    mut calls: mpsc::UnboundedReceiver<LaneCall>,
    failures: Arc<Failures>,
) {
    // Each call logs its own failure; only the interest calls need to be retried.
    while let Some(call) = calls.recv().await {
        match call {
            LaneCall::Decline { offer_ids, filters } => {
                let _ = driver.decline(offer_ids, filters).await;
            }
            LaneCall::Revive { roles } => {
                if driver.revive(roles).await.is_err() {
                    failures.revive.store(true, Ordering::Release);
                }
            }
            LaneCall::Suppress { roles } => {
                if driver.suppress(roles).await.is_err() {
                    failures.suppress.store(true, Ordering::Release);
                }
            }
            LaneCall::Kill { task_id, agent_id } => {
                let _ = driver.kill(task_id, agent_id).await;
            }
        }
    }
}
