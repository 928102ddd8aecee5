//! One connection's outbound queue: committed frames first, ephemeral ones after, both bounded.
//!
//! Why not a channel: an idle connection should cost almost nothing, and a `VecDeque` allocates
//! only when something is queued. Why two lanes: a burst of typing must never delay a message (D5).

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use natter_proto::{DeviceId, Encoding, UserId};
use tokio::sync::Notify;

/// Most ephemeral frames (typing, presence) waiting; older ones are dropped first.
const EPHEMERAL_FRAMES_MAX: usize = 32;

/// One encoded frame, as the connection writes it: JSON text or protobuf binary. Cloning shares the
/// bytes (a reference count), so one encoding of an event serves all its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl From<Frame> for WsMessage {
    fn from(frame: Frame) -> WsMessage {
        match frame {
            Frame::Text(text) => WsMessage::Text(text),
            Frame::Binary(bytes) => WsMessage::Binary(bytes),
        }
    }
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The outbound queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// Live events may have been lost between the nodes of a cluster (NATS reconnected, a node
    /// dropped publishes or fell silent): the node stays, the client reconnects and syncs.
    Resync,
    /// The device was logged out.
    Revoked,
}

#[derive(Default)]
struct Lanes {
    committed: VecDeque<Frame>,
    ephemeral: VecDeque<Frame>,
    close: Option<CloseReason>,
}

/// The frames waiting to be written to one connection.
pub struct SessionQueue {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The connection's encoding: which encoding of an event the hub queues here.
    pub encoding: Encoding,
    committed_frames_max: usize,
    lanes: Mutex<Lanes>,
    ready: Notify,
}

impl SessionQueue {
    pub fn new(user_id: UserId, device_id: DeviceId, committed_frames_max: usize) -> SessionQueue {
        SessionQueue {
            user_id,
            device_id,
            encoding: Encoding::Json,
            committed_frames_max,
            lanes: Mutex::new(Lanes::default()),
            ready: Notify::new(),
        }
    }

    /// The same queue for a connection of another encoding (JSON when not set).
    pub fn with_encoding(self, encoding: Encoding) -> SessionQueue {
        SessionQueue { encoding, ..self }
    }

    /// Queue a committed event. `false` when the queue was full: the session is then closed as a
    /// slow consumer, and will catch up by sync after reconnecting.
    pub fn push_committed(&self, frame: Frame) -> bool {
        let Ok(mut lanes) = self.lanes.lock() else {
            return false;
        };
        if lanes.close.is_some() {
            return true;
        }
        if lanes.committed.len() >= self.committed_frames_max {
            lanes.close = Some(CloseReason::SlowConsumer);
            lanes.committed.clear();
            lanes.ephemeral.clear();
            drop(lanes);
            self.ready.notify_one();
            return false;
        }
        lanes.committed.push_back(frame);
        drop(lanes);
        self.ready.notify_one();
        true
    }

    /// Queue an ephemeral event; under pressure it is dropped rather than delaying anything.
    pub fn push_ephemeral(&self, frame: Frame) {
        let Ok(mut lanes) = self.lanes.lock() else {
            return;
        };
        if lanes.close.is_some() || lanes.committed.len() > self.committed_frames_max / 2 {
            return;
        }
        if lanes.ephemeral.len() >= EPHEMERAL_FRAMES_MAX {
            lanes.ephemeral.pop_front();
        }
        lanes.ephemeral.push_back(frame);
        drop(lanes);
        self.ready.notify_one();
    }

    /// Ask the connection to close.
    pub fn close(&self, reason: CloseReason) {
        if let Ok(mut lanes) = self.lanes.lock() {
            lanes.close.get_or_insert(reason);
        }
        self.ready.notify_one();
    }

    /// Wait until something is queued or a close is asked for.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Move everything queued into `out`, committed frames first; returns a pending close.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Option<CloseReason> {
        let Ok(mut lanes) = self.lanes.lock() else {
            return Some(CloseReason::Shutdown);
        };
        if let Some(reason) = lanes.close {
            return Some(reason);
        }
        out.extend(lanes.committed.drain(..));
        out.extend(lanes.ephemeral.drain(..));
        // A burst must not leave a big allocation behind on an idle connection.
        if lanes.committed.capacity() > 64 {
            lanes.committed.shrink_to_fit();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Frame {
        Frame::Text(Utf8Bytes::from(s.to_string()))
    }

    #[test]
    fn committed_frames_come_before_ephemeral_ones() {
        let queue = SessionQueue::new(1, 1, 16);
        queue.push_ephemeral(frame("typing"));
        queue.push_committed(frame("message"));
        let mut out = Vec::new();
        assert_eq!(queue.drain(&mut out), None);
        assert_eq!(out, vec![frame("message"), frame("typing")]);
    }

    #[test]
    fn an_overflowing_queue_closes_as_a_slow_consumer() {
        let queue = SessionQueue::new(1, 1, 2);
        assert!(queue.push_committed(frame("1")));
        assert!(queue.push_committed(frame("2")));
        assert!(!queue.push_committed(frame("3")));
        assert_eq!(
            queue.drain(&mut Vec::new()),
            Some(CloseReason::SlowConsumer)
        );
    }

    #[test]
    fn ephemeral_frames_never_fill_the_queue() {
        let queue = SessionQueue::new(1, 1, 4);
        for _ in 0..100 {
            queue.push_ephemeral(frame("typing"));
        }
        let mut out = Vec::new();
        assert_eq!(queue.drain(&mut out), None);
        assert_eq!(out.len(), EPHEMERAL_FRAMES_MAX);
        assert!(queue.push_committed(frame("message")));
    }

    #[test]
    fn ephemeral_frames_are_dropped_when_messages_back_up() {
        let queue = SessionQueue::new(1, 1, 4);
        for i in 0..3 {
            queue.push_committed(frame(&i.to_string()));
        }
        queue.push_ephemeral(frame("typing"));
        let mut out = Vec::new();
        queue.drain(&mut out);
        assert_eq!(out.len(), 3);
    }
}
