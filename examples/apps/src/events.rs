//! [`EventBus`]: Marathon's event stream (`/v2/events`), a broadcast of JSON events
//! each carrying `eventType` and `timestamp`.

use serde_json::Value;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::model::Timestamp;

/// How many events a slow `/v2/events` reader may fall behind before it misses some
/// (Marathon: "use only as a cache-invalidation mechanism").
const EVENT_BUFFER: usize = 4096;

/// Event streams served at once: each costs a task's worth of work per event.
const MAX_STREAMS: usize = 256;

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<(String, Value)>,
    /// One permit per open `/v2/events` stream.
    streams: Arc<Semaphore>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        EventBus {
            sender,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }
}

impl EventBus {
    /// Publishes an event of `event_type`; `fields` (an object) gets `eventType`
    /// and `timestamp` added. Nobody listening is fine.
    pub fn publish(&self, event_type: &str, mut fields: Value) {
        if let Value::Object(map) = &mut fields {
            map.insert("eventType".into(), Value::String(event_type.to_string()));
            map.insert(
                "timestamp".into(),
                Value::String(Timestamp::now().to_string()),
            );
        }
        let _ = self.sender.send((event_type.to_string(), fields));
    }

    /// A receiver of every event published from now on: `(eventType, event)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, Value)> {
        self.sender.subscribe()
    }

    /// A receiver for one more event stream, and the permit it holds while open;
    /// None when `MAX_STREAMS` are open already.
    pub fn open_stream(
        &self,
    ) -> Option<(broadcast::Receiver<(String, Value)>, OwnedSemaphorePermit)> {
        let permit = Arc::clone(&self.streams).try_acquire_owned().ok()?;
        Some((self.sender.subscribe(), permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_capped_and_a_closed_one_frees_its_place() {
        let bus = EventBus::default();
        let mut open: Vec<_> = (0..MAX_STREAMS)
            .map(|_| bus.open_stream().expect("room for a stream"))
            .collect();
        assert!(bus.open_stream().is_none(), "one stream too many");
        open.pop();
        assert!(bus.open_stream().is_some(), "a closed stream makes room");
    }
}
