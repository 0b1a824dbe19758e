//! [`EventBus`]: Marathon's event stream (`/v2/events`), a broadcast of JSON events
//! each carrying `eventType` and `timestamp`.

use serde_json::Value;
use tokio::sync::broadcast;

use crate::model::Timestamp;

/// How many events a slow `/v2/events` reader may fall behind before it misses some
/// (Marathon: "use only as a cache-invalidation mechanism").
const EVENT_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<(String, Value)>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        EventBus { sender }
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
}
