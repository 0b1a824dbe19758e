//! [`CronScheduler`]: the SDK `Scheduler` of the cron framework. It decides nothing:
//! it hands every event to the controller, in order, and returns.

use agora_sdk::proto as pb;
use agora_sdk::{Scheduler, SchedulerHandle};
use tokio::sync::mpsc;

/// An event from the master, as the controller receives it.
pub enum DriverEvent {
    /// (Re)subscribed: calls can be made through `handle`.
    Subscribed {
        handle: SchedulerHandle,
        framework_id: String,
    },
    Offers(Vec<pb::Offer>),
    Rescinded(pb::OfferId),
    Update(pb::TaskStatus),
    /// The connection is lost; the driver reconnects by itself.
    Disconnected,
}

/// Forwards the driver's callbacks to the controller. The channel is bounded: a
/// controller that falls behind slows the driver down instead of growing a queue.
pub struct CronScheduler {
    pub events: mpsc::Sender<DriverEvent>,
}

impl CronScheduler {
    async fn forward(&self, event: DriverEvent) {
        // A closed channel means the controller has stopped; the driver is about to
        // be stopped too, so the event has nowhere to go.
        let _ = self.events.send(event).await;
    }
}

impl Scheduler for CronScheduler {
    async fn subscribed(&mut self, driver: &SchedulerHandle, info: pb::event::Subscribed) {
        let framework_id = info.framework_id.map(|id| id.value).unwrap_or_default();
        self.forward(DriverEvent::Subscribed {
            handle: driver.clone(),
            framework_id,
        })
        .await;
    }

    async fn offers(&mut self, _driver: &SchedulerHandle, offers: Vec<pb::Offer>) {
        self.forward(DriverEvent::Offers(offers)).await;
    }

    async fn rescinded(&mut self, _driver: &SchedulerHandle, offer_id: pb::OfferId) {
        self.forward(DriverEvent::Rescinded(offer_id)).await;
    }

    async fn update(&mut self, _driver: &SchedulerHandle, status: pb::TaskStatus) {
        self.forward(DriverEvent::Update(status)).await;
    }

    async fn disconnected(&mut self, _driver: &SchedulerHandle) {
        self.forward(DriverEvent::Disconnected).await;
    }
}
