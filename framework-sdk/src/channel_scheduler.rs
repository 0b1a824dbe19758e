//! [`ChannelScheduler`]: a `Scheduler` that decides nothing: for frameworks whose logic
//! runs in a task of its own (an actor), it hands every event to a channel, in order.

use crate::{Scheduler, SchedulerHandle};
use agora_proto as pb;
use tokio::sync::mpsc;

/// An event from the master, as the framework's own task receives it.
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

/// Forwards the driver's callbacks to `events`. The channel is bounded: a framework
/// that falls behind slows the driver down instead of growing a queue. Updates are
/// acknowledged (with `auto_acknowledge`) once they are in the channel.
pub struct ChannelScheduler {
    pub events: mpsc::Sender<DriverEvent>,
}

impl ChannelScheduler {
    async fn forward(&self, event: DriverEvent) {
        // A closed channel means the framework's task has stopped; the driver is
        // about to be stopped too, so the event has nowhere to go.
        let _ = self.events.send(event).await;
    }
}

impl Scheduler for ChannelScheduler {
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
