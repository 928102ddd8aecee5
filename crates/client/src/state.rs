//! What a client must remember between runs to resume without losing or repeating messages.

use std::collections::HashMap;

use natter_proto::{ConversationId, Pos, Seq};
use serde::{Deserialize, Serialize};

/// A client's saved delivery position: the sync cursor, and per conversation the highest
/// contiguous `seq` handed to the application.
///
/// Both halves are needed: the cursor alone would make a resumed client believe it had seen
/// nothing and deliver every conversation again from `seq` 1 as soon as a gap showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// Where the next `sync` starts; 0 for a client that has seen nothing.
    pub cursor: Pos,
    /// Highest contiguous `seq` delivered, per conversation (absent means 0).
    #[serde(default)]
    pub delivered: HashMap<ConversationId, Seq>,
}

impl ClientState {
    /// The delivered `seq` of one conversation (0 when nothing was delivered).
    pub fn delivered(&self, conversation_id: ConversationId) -> Seq {
        self.delivered.get(&conversation_id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let state = ClientState {
            cursor: 42,
            delivered: HashMap::from([(3, 12), (7, 1)]),
        };
        let text = serde_json::to_string(&state).unwrap();
        let back: ClientState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.delivered(3), 12);
        assert_eq!(back.delivered(4), 0);
    }

    #[test]
    fn conversation_ids_are_json_object_keys() {
        let text = r#"{"cursor":5,"delivered":{"3":12}}"#;
        let state: ClientState = serde_json::from_str(text).unwrap();
        assert_eq!(state.delivered(3), 12);
        assert_eq!(serde_json::to_string(&state).unwrap(), text);
    }

    #[test]
    fn missing_delivered_means_nothing_delivered() {
        let state: ClientState = serde_json::from_str(r#"{"cursor":0}"#).unwrap();
        assert_eq!(state, ClientState::default());
    }
}
