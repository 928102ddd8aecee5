//! The in-process broker: one node, so publishing is handing the event to the local hub.

use std::sync::{Arc, OnceLock};

use natter_core::{Broker, Event, EventSink};
use natter_proto::ConversationId;

/// Delivers every published event to the local sink, synchronously and so in publishing order.
#[derive(Default)]
pub struct InProcessBroker {
    sink: OnceLock<Arc<dyn EventSink>>,
}

impl InProcessBroker {
    pub fn new() -> InProcessBroker {
        InProcessBroker::default()
    }
}

impl Broker for InProcessBroker {
    fn publish(&self, event: Arc<Event>) {
        // Before the hub is attached nobody is connected, so there is nobody to tell.
        if let Some(sink) = self.sink.get() {
            sink.deliver(event);
        }
    }

    fn subscribe(&self, _conversation_id: ConversationId) {}

    fn unsubscribe(&self, _conversation_id: ConversationId) {}

    fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::warn!("broker sink already attached; keeping the first");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Arc<Event>>>);

    impl EventSink for Recorder {
        fn deliver(&self, event: Arc<Event>) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn typing(user_id: u64) -> Arc<Event> {
        Arc::new(Event::Typing {
            conversation_id: 1,
            user_id,
            active: true,
        })
    }

    #[test]
    fn events_reach_the_sink_in_publishing_order() {
        let broker = InProcessBroker::new();
        let sink = Arc::new(Recorder::default());
        broker.attach(sink.clone());
        for user in 1..=3 {
            broker.publish(typing(user));
        }
        let seen: Vec<Option<u64>> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match **e {
                Event::Typing { user_id, .. } => Some(user_id),
                _ => None,
            })
            .collect();
        assert_eq!(seen, vec![Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn publishing_before_attach_is_harmless() {
        InProcessBroker::new().publish(typing(1));
    }
}
