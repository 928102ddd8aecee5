//! The hub: which users are connected here, which conversations they are in, and the routing of
//! every event to the sessions that may see it (D7), encoded once per event and encoding.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use natter_core::{Broker, Event, EventSink, PresenceSource, now_ms};
use natter_proto::{ConversationId, DeviceId, Encoding, EventRef, Presence, UserId};
use tokio::sync::watch;

use super::queue::{CloseReason, Frame, SessionQueue};
use crate::metrics::Metrics;

/// An event as it goes on the wire, borrowing from the event.
///
/// `stamp_cursors`: whether a live event's position is a safe cursor for its recipients. On one
/// node events arrive in commit order, so it is; across nodes they may not, and the frames then
/// carry cursor 0 ("no promise"), leaving cursors to sync.
fn outgoing(event: &Event, typing_ttl_ms: u64, stamp_cursors: bool) -> EventRef<'_> {
    let cursor = match event.cursor() {
        Some(cursor) if stamp_cursors => cursor,
        _ => 0,
    };
    match event {
        Event::Message(message) => EventRef::Message { cursor, message },
        Event::Receipt(receipt) => EventRef::Receipt { cursor, receipt },
        Event::ConversationChanged { conversation, .. } => EventRef::Conversation {
            cursor,
            conversation,
        },
        Event::Typing {
            conversation_id,
            user_id,
            active,
        } => EventRef::Typing {
            conversation_id: *conversation_id,
            user_id: *user_id,
            active: *active,
            ttl_ms: typing_ttl_ms,
        },
        Event::Presence { presence, .. } => EventRef::Presence(presence),
    }
}

/// Encode an event as the frame every recipient of one encoding gets (see [`outgoing`] for
/// `stamp_cursors`).
pub fn encode_event(
    event: &Event,
    typing_ttl_ms: u64,
    stamp_cursors: bool,
    encoding: Encoding,
) -> Frame {
    encode(&outgoing(event, typing_ttl_ms, stamp_cursors), encoding)
}

fn encode(event: &EventRef<'_>, encoding: Encoding) -> Frame {
    match encoding {
        Encoding::Json => Frame::Text(Utf8Bytes::from(event.encode_json())),
        Encoding::Proto => Frame::Binary(Bytes::from(event.encode_proto())),
    }
}

/// One event's frames, encoded lazily: at most once per encoding, and only for the encodings its
/// recipients use, however many they are. Every recipient of an encoding shares the same bytes.
struct EventFrames<'a> {
    event: EventRef<'a>,
    json: Option<Frame>,
    proto: Option<Frame>,
}

impl<'a> EventFrames<'a> {
    fn new(event: EventRef<'a>) -> EventFrames<'a> {
        EventFrames {
            event,
            json: None,
            proto: None,
        }
    }

    fn get(&mut self, encoding: Encoding) -> Frame {
        let slot = match encoding {
            Encoding::Json => &mut self.json,
            Encoding::Proto => &mut self.proto,
        };
        slot.get_or_insert_with(|| encode(&self.event, encoding))
            .clone()
    }
}

struct OnlineUser {
    sessions: Vec<Arc<SessionQueue>>,
    conversations: Vec<ConversationId>,
    /// Set between the first session's arrival and the load of the user's conversations.
    loading: Option<Loading>,
}

struct Loading {
    /// Membership changes seen meanwhile, so that the (older) load cannot undo them.
    changes: Vec<(ConversationId, bool)>,
    /// Tells sessions that arrived meanwhile that the subscriptions are in place.
    done: watch::Sender<bool>,
}

/// What a new session must do before it may say hello.
pub enum Attached {
    /// Load the user's conversations and call [`Hub::finish_loading`].
    Load,
    /// Another session of the user is loading; wait for it.
    Wait(watch::Receiver<bool>),
    /// Subscriptions are in place.
    Ready,
}

/// How long a node remembers when an offline user was last connected (the `last_seen_at_ms` of
/// presence): a day.
pub const PRESENCE_MEMORY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Default)]
struct State {
    users: HashMap<UserId, OnlineUser>,
    /// The connected members of each conversation that has any.
    conversations: HashMap<ConversationId, Vec<UserId>>,
    last_seen_ms: HashMap<UserId, u64>,
    /// What the other nodes said about their users' presence.
    remote: HashMap<UserId, RemotePresence>,
    sessions_open: usize,
}

/// A user as other nodes see them.
#[derive(Default)]
struct RemotePresence {
    /// The other nodes where the user is connected (usually none or one).
    online_on: Vec<String>,
    last_seen_at_ms: Option<u64>,
    /// Their conversations, as the last node to announce them online said: where an offline
    /// presence goes when that node is gone without saying so.
    conversation_ids: Vec<ConversationId>,
}

impl State {
    /// Connected here or on another node.
    fn online_anywhere(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
            || self
                .remote
                .get(&user)
                .is_some_and(|r| !r.online_on.is_empty())
    }

    fn subscribe(&mut self, user: UserId, id: ConversationId) -> bool {
        let members = self.conversations.entry(id).or_default();
        let first = members.is_empty();
        if !members.contains(&user) {
            members.push(user);
        }
        first
    }

    /// Returns true when nobody here is left in the conversation.
    fn unsubscribe(&mut self, user: UserId, id: ConversationId) -> bool {
        let Some(members) = self.conversations.get_mut(&id) else {
            return false;
        };
        members.retain(|u| *u != user);
        if members.is_empty() {
            self.conversations.remove(&id);
            return true;
        }
        false
    }

    fn queues_of(&self, users: &[UserId], skip: Option<UserId>, out: &mut Vec<Arc<SessionQueue>>) {
        for user in users {
            if Some(*user) == skip {
                continue;
            }
            if let Some(online) = self.users.get(user) {
                out.extend(online.sessions.iter().cloned());
            }
        }
    }
}

/// The sessions of this node and the routing of events to them.
pub struct Hub {
    state: RwLock<State>,
    /// This node's name in the cluster, on the presence events it publishes.
    node: String,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    typing_ttl_ms: u64,
    stamp_cursors: bool,
}

impl Hub {
    /// `stamp_cursors`: true when events arrive in commit order (a single node), see
    /// [`encode_event`].
    pub fn new(
        node: String,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        typing_ttl_ms: u64,
        stamp_cursors: bool,
    ) -> Hub {
        Hub {
            state: RwLock::new(State::default()),
            node,
            broker,
            metrics,
            typing_ttl_ms,
            stamp_cursors,
        }
    }

    /// Wait until the broker has every subscription asked for so far in effect.
    pub async fn flush_subscriptions(&self) {
        self.broker.flush().await
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still consistent enough to route.
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Open WebSocket sessions on this node.
    pub fn sessions_open(&self) -> usize {
        self.read().sessions_open
    }

    /// Open sessions of one user on this node.
    pub fn sessions_of(&self, user: UserId) -> usize {
        self.read().users.get(&user).map_or(0, |u| u.sessions.len())
    }

    /// Register a session; see [`Attached`] for what the caller must do next.
    pub fn attach(&self, queue: Arc<SessionQueue>) -> Attached {
        let mut state = self.write();
        state.sessions_open += 1;
        self.metrics
            .connections_open
            .set(state.sessions_open as i64);
        match state.users.get_mut(&queue.user_id) {
            Some(online) => {
                online.sessions.push(queue);
                match &online.loading {
                    Some(loading) => Attached::Wait(loading.done.subscribe()),
                    None => Attached::Ready,
                }
            }
            None => {
                state.users.insert(
                    queue.user_id,
                    OnlineUser {
                        sessions: vec![queue],
                        conversations: Vec::new(),
                        loading: Some(Loading {
                            changes: Vec::new(),
                            done: watch::channel(false).0,
                        }),
                    },
                );
                Attached::Load
            }
        }
    }

    /// The load of a user's conversations failed: close their sessions (they will retry).
    pub fn abort_loading(&self, user: UserId) {
        let mut state = self.write();
        if let Some(online) = state.users.get_mut(&user) {
            // Dropping the sender wakes the waiting sessions with an error.
            online.loading = None;
            for session in &online.sessions {
                session.close(CloseReason::Shutdown);
            }
        }
    }

    /// Subscribe a newly connected user to their conversations and announce them online.
    pub fn finish_loading(&self, user: UserId, mut loaded: Vec<ConversationId>) {
        let mut first_subscriptions = Vec::new();
        let conversation_ids;
        {
            let mut state = self.write();
            let Some(online) = state.users.get_mut(&user) else {
                return;
            };
            let Some(loading) = online.loading.take() else {
                return;
            };
            for (id, added) in loading.changes {
                if added {
                    if !loaded.contains(&id) {
                        loaded.push(id);
                    }
                } else {
                    loaded.retain(|c| *c != id);
                }
            }
            online.conversations = loaded.clone();
            for id in &loaded {
                if state.subscribe(user, *id) {
                    first_subscriptions.push(*id);
                }
            }
            conversation_ids = loaded;
            let _ = loading.done.send(true);
        }
        for id in first_subscriptions {
            self.broker.subscribe(id);
        }
        self.broker.publish(Arc::new(Event::Presence {
            presence: Presence {
                user_id: user,
                online: true,
                last_seen_at_ms: None,
            },
            conversation_ids,
            node: self.node.clone(),
        }));
    }

    /// Remove a session; the user's last one unsubscribes them and announces them offline.
    pub fn detach(&self, queue: &Arc<SessionQueue>) {
        let user = queue.user_id;
        let mut emptied = Vec::new();
        let mut gone: Option<Vec<ConversationId>> = None;
        let now = now_ms();
        {
            let mut state = self.write();
            state.sessions_open = state.sessions_open.saturating_sub(1);
            self.metrics
                .connections_open
                .set(state.sessions_open as i64);
            let Some(online) = state.users.get_mut(&user) else {
                return;
            };
            online.sessions.retain(|s| !Arc::ptr_eq(s, queue));
            if online.sessions.is_empty() {
                let conversations = state
                    .users
                    .remove(&user)
                    .map(|u| u.conversations)
                    .unwrap_or_default();
                for id in &conversations {
                    if state.unsubscribe(user, *id) {
                        emptied.push(*id);
                    }
                }
                state.last_seen_ms.insert(user, now);
                gone = Some(conversations);
            }
        }
        for id in emptied {
            self.broker.unsubscribe(id);
        }
        if let Some(conversation_ids) = gone {
            self.broker.publish(Arc::new(Event::Presence {
                presence: Presence {
                    user_id: user,
                    online: false,
                    last_seen_at_ms: Some(now),
                },
                conversation_ids,
                node: self.node.clone(),
            }));
        }
    }

    /// The devices with a session on this node, each once.
    pub fn connected_devices(&self) -> Vec<DeviceId> {
        let state = self.read();
        let mut devices: Vec<DeviceId> = state
            .users
            .values()
            .flat_map(|online| online.sessions.iter().map(|s| s.device_id))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    /// Close every session of a device (it was logged out).
    pub fn close_device(&self, device: DeviceId, reason: CloseReason) {
        let state = self.read();
        for online in state.users.values() {
            for session in online.sessions.iter().filter(|s| s.device_id == device) {
                session.close(reason);
            }
        }
    }

    /// Forget the last-seen times of users gone longer than `PRESENCE_MEMORY_MS` (here or on
    /// other nodes), so that a node's presence maps hold the users seen lately, not every user
    /// ever seen: with every node hearing every user's presence, they would otherwise grow with
    /// the user base. Run by the node's janitor.
    pub fn forget_old_presence(&self, now: u64) {
        let cutoff = now.saturating_sub(PRESENCE_MEMORY_MS);
        let mut state = self.write();
        state.last_seen_ms.retain(|_, seen| *seen >= cutoff);
        state.remote.retain(|_, remote| {
            !remote.online_on.is_empty()
                || remote.last_seen_at_ms.is_some_and(|seen| seen >= cutoff)
        });
    }

    /// Close every session (the node is shutting down).
    pub fn close_all(&self, reason: CloseReason) {
        let state = self.read();
        for online in state.users.values() {
            for session in &online.sessions {
                session.close(reason);
            }
        }
    }

    /// Apply a membership change to the subscriptions; returns conversations that gained or lost
    /// their first or last local member.
    fn apply_membership(
        &self,
        id: ConversationId,
        added: &[UserId],
        removed: &[UserId],
    ) -> (Vec<ConversationId>, Vec<ConversationId>) {
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        let mut state = self.write();
        for user in added {
            let Some(online) = state.users.get_mut(user) else {
                continue;
            };
            if let Some(loading) = online.loading.as_mut() {
                loading.changes.push((id, true));
            }
            if !online.conversations.contains(&id) {
                online.conversations.push(id);
            }
            if state.subscribe(*user, id) {
                subscribe.push(id);
            }
        }
        for user in removed {
            let Some(online) = state.users.get_mut(user) else {
                continue;
            };
            if let Some(loading) = online.loading.as_mut() {
                loading.changes.push((id, false));
            }
            online.conversations.retain(|c| *c != id);
            if state.unsubscribe(*user, id) {
                unsubscribe.push(id);
            }
        }
        (subscribe, unsubscribe)
    }

    fn push(&self, event: &Event, queues: &[Arc<SessionQueue>]) {
        if queues.is_empty() {
            return;
        }
        let mut frames = EventFrames::new(outgoing(event, self.typing_ttl_ms, self.stamp_cursors));
        if event.is_ephemeral() {
            for queue in queues {
                queue.push_ephemeral(frames.get(queue.encoding));
            }
            return;
        }
        for queue in queues {
            if !queue.push_committed(frames.get(queue.encoding)) {
                self.metrics.slow_reader_disconnects.inc();
            }
        }
    }
}

impl EventSink for Hub {
    /// Events may have been lost on their way here: every session reconnects and syncs.
    fn resync(&self) {
        self.resync_all();
    }

    /// The users a vanished node had online are offline there now: told as if it had said so.
    fn node_gone(&self, node: &str) {
        let now = now_ms();
        let vanished: Vec<(UserId, Vec<ConversationId>)> = self
            .read()
            .remote
            .iter()
            .filter(|(_, r)| r.online_on.iter().any(|n| n == node))
            .map(|(user, r)| (*user, r.conversation_ids.clone()))
            .collect();
        for (user_id, conversation_ids) in vanished {
            self.deliver(Arc::new(Event::Presence {
                presence: Presence {
                    user_id,
                    online: false,
                    last_seen_at_ms: Some(now),
                },
                conversation_ids,
                node: node.to_string(),
            }));
        }
    }

    fn deliver(&self, event: Arc<Event>) {
        let mut queues = Vec::new();
        match &*event {
            Event::Message(_) | Event::Receipt(_) | Event::Typing { .. } => {
                let Some(id) = event.conversation_id() else {
                    return;
                };
                let skip = match &*event {
                    Event::Typing { user_id, .. } => Some(*user_id),
                    _ => None,
                };
                let state = self.read();
                if let Some(members) = state.conversations.get(&id) {
                    state.queues_of(members, skip, &mut queues);
                }
            }
            Event::ConversationChanged {
                conversation,
                added,
                removed,
                ..
            } => {
                // Subscribe the added first so that they get this event and every later one;
                // tell the removed before they stop hearing.
                let (subscribe, _) = self.apply_membership(conversation.id, added, &[]);
                {
                    // The removed are still subscribed here: they hear of their removal.
                    let state = self.read();
                    if let Some(members) = state.conversations.get(&conversation.id) {
                        state.queues_of(members, None, &mut queues);
                    }
                }
                self.push(&event, &queues);
                let (_, unsubscribe) = self.apply_membership(conversation.id, &[], removed);
                for id in subscribe {
                    self.broker.subscribe(id);
                }
                for id in unsubscribe {
                    self.broker.unsubscribe(id);
                }
                return;
            }
            Event::Presence {
                presence,
                conversation_ids,
                node,
            } => {
                let user = presence.user_id;
                let mut state = self.write();
                if *node != self.node {
                    let remote = state.remote.entry(user).or_default();
                    remote.online_on.retain(|n| n != node);
                    if presence.online {
                        remote.online_on.push(node.clone());
                        remote.conversation_ids = conversation_ids.clone();
                    } else {
                        remote.last_seen_at_ms =
                            remote.last_seen_at_ms.max(presence.last_seen_at_ms);
                    }
                }
                // Leaving one node while still connected to another changes nothing for others.
                if !presence.online && state.online_anywhere(user) {
                    return;
                }
                let state = std::sync::RwLockWriteGuard::downgrade(state);
                let mut users: Vec<UserId> = Vec::new();
                for id in conversation_ids {
                    if let Some(members) = state.conversations.get(id) {
                        users.extend(members.iter().copied().filter(|u| *u != user));
                    }
                }
                users.sort_unstable();
                users.dedup();
                state.queues_of(&users, None, &mut queues);
            }
        }
        self.push(&event, &queues);
    }
}

impl Hub {
    fn resync_all(&self) {
        self.close_all(CloseReason::Resync);
    }
}

impl PresenceSource for Hub {
    fn presence(&self, users: &[UserId]) -> Vec<Presence> {
        let state = self.read();
        users
            .iter()
            .map(|user| {
                if state.users.contains_key(user) {
                    return Presence {
                        user_id: *user,
                        online: true,
                        last_seen_at_ms: None,
                    };
                }
                let remote = state.remote.get(user);
                Presence {
                    user_id: *user,
                    online: remote.is_some_and(|r| !r.online_on.is_empty()),
                    last_seen_at_ms: state
                        .last_seen_ms
                        .get(user)
                        .copied()
                        .max(remote.and_then(|r| r.last_seen_at_ms)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_broker::InProcessBroker;
    use natter_proto::{Content, Conversation, Message, ServerFrame};

    fn hub() -> Arc<Hub> {
        let broker = Arc::new(InProcessBroker::new());
        let hub = Arc::new(Hub::new(
            "here".into(),
            broker.clone(),
            Arc::new(Metrics::new()),
            5000,
            true,
        ));
        broker.attach(hub.clone());
        hub
    }

    fn connect(hub: &Hub, user: UserId, conversations: Vec<ConversationId>) -> Arc<SessionQueue> {
        connect_with(hub, user, conversations, Encoding::Json)
    }

    fn connect_with(
        hub: &Hub,
        user: UserId,
        conversations: Vec<ConversationId>,
        encoding: Encoding,
    ) -> Arc<SessionQueue> {
        let queue = Arc::new(SessionQueue::new(user, user * 10, 64).with_encoding(encoding));
        if let Attached::Load = hub.attach(queue.clone()) {
            hub.finish_loading(user, conversations);
        }
        queue
    }

    fn message(conversation_id: ConversationId, seq: u64) -> Event {
        Event::Message(Message {
            conversation_id,
            seq,
            pos: seq,
            sender_id: 1,
            client_msg_id: Some(seq.to_string()),
            content: Content::Text { text: "hi".into() },
            reply_to: None,
            sent_at_ms: 0,
        })
    }

    fn raw(queue: &SessionQueue) -> Vec<Frame> {
        let mut out = Vec::new();
        queue.drain(&mut out);
        out
    }

    /// The frames queued, decoded; each must be in the queue's encoding.
    fn drained(queue: &SessionQueue) -> Vec<ServerFrame> {
        raw(queue)
            .iter()
            .map(|frame| match (queue.encoding, frame) {
                (Encoding::Json, Frame::Text(text)) => ServerFrame::decode_json(text).unwrap(),
                (Encoding::Proto, Frame::Binary(bytes)) => {
                    ServerFrame::decode_proto(bytes).unwrap()
                }
                (encoding, frame) => panic!("{frame:?} queued for a {encoding:?} connection"),
            })
            .collect()
    }

    /// Where a frame's bytes live: equal for frames that share one encoding.
    fn address(frame: &Frame) -> *const u8 {
        match frame {
            Frame::Text(text) => text.as_str().as_ptr(),
            Frame::Binary(bytes) => bytes.as_ptr(),
        }
    }

    #[test]
    fn each_recipient_gets_its_encoding_encoded_once_for_all() {
        let hub = hub();
        let queues = [
            connect_with(&hub, 1, vec![7], Encoding::Json),
            connect_with(&hub, 1, vec![7], Encoding::Proto),
            connect_with(&hub, 2, vec![7], Encoding::Proto),
            connect_with(&hub, 3, vec![7], Encoding::Json),
        ];
        for queue in &queues {
            drained(queue);
        }
        hub.deliver(Arc::new(message(7, 1)));
        let frames: Vec<Frame> = queues.iter().map(|q| raw(q).remove(0)).collect();
        let (json, proto) = (address(&frames[0]), address(&frames[1]));
        assert_ne!(json, proto);
        assert_eq!(address(&frames[2]), proto, "one protobuf encoding for all");
        assert_eq!(address(&frames[3]), json, "one JSON encoding for all");
        let Frame::Binary(bytes) = &frames[1] else {
            panic!("not binary: {:?}", frames[1]);
        };
        let Frame::Text(text) = &frames[0] else {
            panic!("not text: {:?}", frames[0]);
        };
        assert_eq!(
            ServerFrame::decode_proto(bytes).unwrap(),
            ServerFrame::decode_json(text).unwrap()
        );
    }

    #[test]
    fn an_encoding_no_recipient_uses_is_never_made() {
        let event = message(7, 1);
        let mut frames = EventFrames::new(outgoing(&event, 5000, true));
        let a = frames.get(Encoding::Json);
        let b = frames.get(Encoding::Json);
        assert_eq!(address(&a), address(&b));
        assert!(frames.proto.is_none());
        assert!(matches!(frames.get(Encoding::Proto), Frame::Binary(_)));
        assert!(frames.proto.is_some());
    }

    #[test]
    fn messages_reach_members_only() {
        let hub = hub();
        let alice = connect(&hub, 1, vec![7]);
        let bob = connect(&hub, 2, vec![8]);
        drained(&alice);
        drained(&bob);
        hub.deliver(Arc::new(message(7, 1)));
        assert!(matches!(
            drained(&alice)[..],
            [ServerFrame::Message { cursor: 1, .. }]
        ));
        assert!(drained(&bob).is_empty());
    }

    fn presence_from(node: &str, user_id: UserId, online: bool) -> Arc<Event> {
        Arc::new(Event::Presence {
            presence: Presence {
                user_id,
                online,
                last_seen_at_ms: (!online).then_some(1_000),
            },
            conversation_ids: vec![7],
            node: node.into(),
        })
    }

    /// What the queue got: (user, online) of each presence frame.
    fn presences(queue: &SessionQueue) -> Vec<(UserId, bool)> {
        drained(queue)
            .into_iter()
            .filter_map(|frame| match frame {
                ServerFrame::Presence(p) => Some((p.user_id, p.online)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_user_on_several_nodes_is_offline_only_when_every_node_says_so() {
        let hub = hub();
        let alice = connect(&hub, 1, vec![7]);
        // Bob connects on nodes a and b.
        hub.deliver(presence_from("a", 2, true));
        hub.deliver(presence_from("b", 2, true));
        assert_eq!(presences(&alice), vec![(2, true), (2, true)]);
        // He leaves a: still online on b, nothing to say.
        hub.deliver(presence_from("a", 2, false));
        assert_eq!(presences(&alice), vec![]);
        assert!(hub.presence(&[2])[0].online);
        // b vanishes without a word: he is offline now.
        hub.node_gone("b");
        assert_eq!(presences(&alice), vec![(2, false)]);
        let bob = &hub.presence(&[2])[0];
        assert!(!bob.online && bob.last_seen_at_ms.is_some());
        // A node that is gone again changes nothing more.
        hub.node_gone("b");
        assert_eq!(presences(&alice), vec![]);

        // Carol is on another node and here: leaving there says nothing, leaving here too says
        // offline at last.
        let carol = connect(&hub, 3, vec![7]);
        hub.deliver(presence_from("a", 3, true));
        assert_eq!(presences(&alice), vec![(3, true), (3, true)]);
        hub.deliver(presence_from("a", 3, false));
        assert_eq!(presences(&alice), vec![]);
        hub.detach(&carol);
        assert_eq!(presences(&alice), vec![(3, false)]);
        assert!(!hub.presence(&[3])[0].online);
        // And leaving here while still on a says nothing either.
        let carol = connect(&hub, 3, vec![7]);
        hub.deliver(presence_from("a", 3, true));
        drained(&alice);
        hub.detach(&carol);
        assert_eq!(presences(&alice), vec![]);
        assert!(hub.presence(&[3])[0].online);
    }

    #[test]
    fn last_seen_times_are_forgotten_after_a_day_and_online_users_never() {
        let hub = hub();
        let _alice = connect(&hub, 1, vec![7]);
        // Bob went offline on node a at t = 1,000; Carol is online on node a; Dave was here.
        hub.deliver(presence_from("a", 2, true));
        hub.deliver(presence_from("a", 2, false));
        hub.deliver(presence_from("a", 3, true));
        let dave = connect(&hub, 4, vec![7]);
        hub.detach(&dave);
        let dave_seen = hub.presence(&[4])[0].last_seen_at_ms.unwrap();

        hub.forget_old_presence(1_000 + PRESENCE_MEMORY_MS);
        assert_eq!(hub.presence(&[2])[0].last_seen_at_ms, Some(1_000));
        hub.forget_old_presence(1_001 + PRESENCE_MEMORY_MS);
        let [alice, bob, carol, dave] = &hub.presence(&[1, 2, 3, 4])[..] else {
            panic!("four answers");
        };
        assert!(alice.online, "connected here: kept");
        assert_eq!(
            (bob.online, bob.last_seen_at_ms),
            (false, None),
            "forgotten"
        );
        assert!(carol.online, "online on another node: kept");
        assert_eq!(
            dave.last_seen_at_ms,
            Some(dave_seen),
            "seen here within the day"
        );
        assert_eq!(hub.read().remote.len(), 1, "only Carol's entry is left");

        hub.forget_old_presence(dave_seen + PRESENCE_MEMORY_MS + 1);
        assert_eq!(hub.presence(&[4])[0].last_seen_at_ms, None);
        assert!(hub.read().last_seen_ms.is_empty());
    }

    #[test]
    fn typing_skips_the_typist_and_presence_reaches_contacts() {
        let hub = hub();
        let alice = connect(&hub, 1, vec![7]);
        let bob = connect(&hub, 2, vec![7]);
        // Bob's arrival was announced to Alice.
        assert!(matches!(
            drained(&alice)[..],
            [ServerFrame::Presence(Presence {
                user_id: 2,
                online: true,
                ..
            })]
        ));
        drained(&bob);
        hub.deliver(Arc::new(Event::Typing {
            conversation_id: 7,
            user_id: 1,
            active: true,
        }));
        assert!(drained(&alice).is_empty());
        assert!(matches!(
            drained(&bob)[..],
            [ServerFrame::Typing { user_id: 1, .. }]
        ));
        hub.detach(&bob);
        assert!(matches!(
            drained(&alice)[..],
            [ServerFrame::Presence(Presence {
                user_id: 2,
                online: false,
                ..
            })]
        ));
        assert!(!hub.presence(&[2])[0].online);
    }

    #[test]
    fn added_members_hear_the_change_and_removed_ones_hear_it_last() {
        let hub = hub();
        let alice = connect(&hub, 1, vec![]);
        drained(&alice);
        let conversation = Conversation {
            id: 9,
            kind: natter_proto::ConversationKind::Group,
            title: Some("t".into()),
            members: vec![],
            last_seq: 1,
            last_pos: 3,
            created_at_ms: 0,
            last_activity_at_ms: 0,
            last_message: None,
            unread_count: None,
        };
        hub.deliver(Arc::new(Event::ConversationChanged {
            conversation: conversation.clone(),
            added: vec![1],
            removed: vec![],
            message_follows: false,
        }));
        hub.deliver(Arc::new(message(9, 2)));
        assert_eq!(drained(&alice).len(), 2);
        hub.deliver(Arc::new(Event::ConversationChanged {
            conversation,
            added: vec![],
            removed: vec![1],
            message_follows: false,
        }));
        hub.deliver(Arc::new(message(9, 3)));
        let frames = drained(&alice);
        assert!(matches!(frames[..], [ServerFrame::Conversation { .. }]));
    }

    #[test]
    fn a_membership_change_during_loading_is_not_lost() {
        let hub = hub();
        let queue = Arc::new(SessionQueue::new(1, 10, 64));
        assert!(matches!(hub.attach(queue.clone()), Attached::Load));
        hub.apply_membership(5, &[1], &[]);
        // The load started before the change and does not know conversation 5.
        hub.finish_loading(1, vec![4]);
        drained(&queue);
        hub.deliver(Arc::new(message(5, 1)));
        assert_eq!(drained(&queue).len(), 1);
    }
}
