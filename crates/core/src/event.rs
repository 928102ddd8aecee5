//! Events: what the core tells connected devices. Committed events come from the store in commit
//! order; ephemeral ones (typing, presence) are never stored.

use natter_proto::{Conversation, ConversationId, Message, Pos, Presence, Receipt, UserId};
use serde::{Deserialize, Serialize};

/// One thing that happened, routed by the sessions layer to the devices that may see it.
/// Serializable so that a cluster broker can carry it between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A committed message; goes to every member.
    Message(Message),
    /// A member's markers moved; goes to every member.
    Receipt(Receipt),
    /// Members, roles or title changed; goes to every member and to those just removed.
    ConversationChanged {
        conversation: Conversation,
        added: Vec<UserId>,
        removed: Vec<UserId>,
        /// The system message of this change, at the same position, comes right after this
        /// event (`Event::state_then_message`): until it arrives, a recipient has every change
        /// below that position, not the position itself — the event's cursor is one lower.
        #[serde(default)]
        message_follows: bool,
    },
    /// Ephemeral: goes to the other members.
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        active: bool,
    },
    /// Ephemeral: goes to everyone who shares one of `conversation_ids` with the user.
    Presence {
        presence: Presence,
        conversation_ids: Vec<ConversationId>,
        /// The node whose sessions of the user this is about: a user may be connected to several
        /// nodes, and is offline only once every one of them says so.
        #[serde(default)]
        node: String,
    },
}

impl Event {
    /// The conversation this event belongs to, if it belongs to one.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        match self {
            Event::Message(m) => Some(m.conversation_id),
            Event::Receipt(r) => Some(r.conversation_id),
            Event::ConversationChanged { conversation, .. } => Some(conversation.id),
            Event::Typing {
                conversation_id, ..
            } => Some(*conversation_id),
            Event::Presence { .. } => None,
        }
    }

    /// The change-stream position of a committed event; `None` for ephemeral ones.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            Event::Message(m) => Some(m.pos),
            Event::Receipt(r) => Some(r.pos),
            Event::ConversationChanged { conversation, .. } => Some(conversation.last_pos),
            Event::Typing { .. } | Event::Presence { .. } => None,
        }
    }

    /// A change's new state, then the system message that records it, both at the message's
    /// position. The state goes first so that the sessions of members it adds are listening
    /// when the message arrives; its cursor stays below the message's (`message_follows`), so
    /// that a client that adopts it and goes away before the message still gets the message
    /// from `sync` (protocol §9.5).
    pub fn state_then_message(
        conversation: Conversation,
        added: Vec<UserId>,
        message: Message,
    ) -> [Event; 2] {
        [
            Event::ConversationChanged {
                conversation,
                added,
                removed: Vec::new(),
                message_follows: true,
            },
            Event::Message(message),
        ]
    }

    /// The cursor a client may adopt once it has applied this event, on a node that delivers
    /// committed events in commit order; `None` for ephemeral ones.
    pub fn cursor(&self) -> Option<Pos> {
        match self {
            Event::ConversationChanged {
                conversation,
                message_follows: true,
                ..
            } => Some(conversation.last_pos.saturating_sub(1)),
            other => other.pos(),
        }
    }

    /// Ephemeral events may be dropped under pressure and never displace committed ones.
    pub fn is_ephemeral(&self) -> bool {
        self.pos().is_none()
    }
}
