//! The broker seam: how events reach the sessions of every node.
//!
//! The in-process broker hands events straight to the local sink; a cluster broker (NATS) carries
//! them between nodes. Either way the order in which one node publishes is the order every sink
//! sees.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use natter_proto::ConversationId;

use crate::Event;

/// Where a node's broker delivers events: the sessions hub.
pub trait EventSink: Send + Sync {
    /// Must not block: it runs on the store's commit path.
    fn deliver(&self, event: Arc<Event>);

    /// Events may have been lost between nodes (the broker lost its connection): every local
    /// session must catch up by sync.
    fn resync(&self) {}

    /// A node has not been heard from for a while (it died, or lost the broker), or said it is
    /// leaving: what it said about its users' presence no longer holds.
    fn node_gone(&self, _node: &str) {}
}

/// A future the broker resolves once earlier subscriptions are in effect.
pub type Flushed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Carries events from the node that produced them to every node with an interested session.
pub trait Broker: Send + Sync {
    /// Publish an event. Must not block; events of one publisher arrive in publishing order.
    fn publish(&self, event: Arc<Event>);
    /// This node now has a session that wants a conversation's events.
    fn subscribe(&self, conversation_id: ConversationId);
    /// This node no longer has a session that wants a conversation's events.
    fn unsubscribe(&self, conversation_id: ConversationId);
    /// Set the local sink; called once, when the sessions hub exists.
    fn attach(&self, sink: Arc<dyn EventSink>);
    /// Resolves once every subscription asked for so far is in effect, so that a session told
    /// "you are subscribed" cannot miss an event published after that.
    fn flush(&self) -> Flushed {
        Box::pin(std::future::ready(()))
    }
    /// This node is stopping cleanly, its sessions closed: resolves once what it published has
    /// gone out and the other nodes are told that it leaves, so that they do not take its
    /// silence for a crash (which could have lost events on their way out, and makes them
    /// resync).
    fn leave(&self) -> Flushed {
        Box::pin(std::future::ready(()))
    }
}
