//! The `Scheduler` trait: what a framework does when the master tells it something.

use std::future::Future;

use agora_proto as pb;

use crate::handle::SchedulerHandle;

/// A framework's scheduler. The driver calls one method at a time, in the order the
/// master sent the events, and waits for it to return before reading the next event;
/// so a callback may keep state in `self` without locks, but should not block for long
/// (the heartbeat clock does not run while a callback runs, events simply queue up).
///
/// Implement the methods with `async fn`. Every method has a default; `offers`
/// declines what it is given so an unused offer goes back to the allocator at once.
/// Use `driver` to answer: accept or decline offers, kill tasks, and so on.
pub trait Scheduler: Send {
    /// The master accepted the subscription: `info.framework_id` is the framework's
    /// id (the same one again after a re-subscription). Called again after every
    /// reconnection; a good place to reconcile.
    fn subscribed(
        &mut self,
        driver: &SchedulerHandle,
        info: pb::event::Subscribed,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, info);
        async {}
    }

    /// New offers. Each must be accepted or declined; held offers count against the
    /// framework's share until the master rescinds them.
    fn offers(
        &mut self,
        driver: &SchedulerHandle,
        offers: Vec<pb::Offer>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let ids: Vec<pb::OfferId> = offers.into_iter().filter_map(|o| o.id).collect();
            if !ids.is_empty() {
                // A failed decline is harmless: the master rescinds the offer in time.
                let _ = driver.decline(ids, None).await;
            }
        }
    }

    /// An offer is no longer valid (its agent left, or it timed out); calls using it
    /// will fail.
    fn rescinded(
        &mut self,
        driver: &SchedulerHandle,
        offer_id: pb::OfferId,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, offer_id);
        async {}
    }

    /// An agent where this framework has tasks is being drained for maintenance: it
    /// makes no new offers, and what still runs on it at `draining.deadline` (seconds
    /// since the epoch; 0 = none) is killed with REASON_AGENT_DRAINING. A framework
    /// may move its tasks first. The default does nothing.
    fn agent_draining(
        &mut self,
        driver: &SchedulerHandle,
        draining: pb::event::AgentDraining,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, draining);
        async {}
    }

    /// A task changed state. With `auto_acknowledge` (the default) the driver
    /// acknowledges the update after this returns.
    fn update(
        &mut self,
        driver: &SchedulerHandle,
        status: pb::TaskStatus,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, status);
        async {}
    }

    /// Bytes an executor sent to the framework (unreliable, as in Mesos).
    fn message(
        &mut self,
        driver: &SchedulerHandle,
        message: pb::event::Message,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, message);
        async {}
    }

    /// An agent was lost, or an executor ended (with its exit status).
    fn failure(
        &mut self,
        driver: &SchedulerHandle,
        failure: pb::event::Failure,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, failure);
        async {}
    }

    /// The master sent an ERROR: the framework must stop. `run` returns
    /// [`DriverError::Aborted`](crate::DriverError::Aborted) once this returns.
    fn error(
        &mut self,
        driver: &SchedulerHandle,
        message: String,
    ) -> impl Future<Output = ()> + Send {
        let _ = (driver, message);
        async {}
    }

    /// The connection to the master was lost. The driver is already reconnecting;
    /// calls fail with [`DriverError::NotSubscribed`](crate::DriverError::NotSubscribed)
    /// until the next `subscribed`.
    fn disconnected(&mut self, driver: &SchedulerHandle) -> impl Future<Output = ()> + Send {
        let _ = driver;
        async {}
    }
}
