//! The cluster broker: committed and ephemeral events travel between nodes over NATS core.
//!
//! Why NATS core and not JetStream: PostgreSQL already holds every committed event durably, and
//! sync is how a device catches up on whatever it missed. The broker only has to be fast; when it
//! loses events (NATS restarts), every local session is told to reconnect and sync.
//!
//! Subjects: `natter.conv.<id>` per conversation — a node subscribes only to the conversations
//! its connected users are in — and two that every node hears: `natter.presence`, and
//! `natter.members` for membership changes that add users (their nodes are not subscribed yet). An event is
//! delivered to the local hub at once and published for the other nodes; a node ignores its own
//! publications when they come back.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use natter_core::broker::Flushed;
use natter_core::{Broker, Event, EventSink};
use natter_proto::ConversationId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most events waiting to be published to NATS; past it events are dropped for the other nodes
/// (their clients catch up by gap filling and sync) and logged.
const PUBLISH_QUEUE_MAX: usize = 100_000;
const PRESENCE_SUBJECT: &str = "natter.presence";
/// Membership changes that add users: the nodes of the added users are not subscribed to the
/// conversation yet, so these go where every node hears them.
const MEMBERSHIP_SUBJECT: &str = "natter.members";

fn conversation_subject(id: ConversationId) -> String {
    format!("natter.conv.{id}")
}

/// What goes over the wire between nodes.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    node: std::borrow::Cow<'a, str>,
    event: std::borrow::Cow<'a, Event>,
}

enum Control {
    Publish(Arc<Event>),
    Subscribe(ConversationId),
    Unsubscribe(ConversationId),
    Flush(oneshot::Sender<()>),
}

/// A broker over a NATS server (or cluster).
pub struct NatsBroker {
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
    control: mpsc::Sender<Control>,
}

impl NatsBroker {
    /// Connect to `url` (e.g. `nats://127.0.0.1:4222`) as node `node_id`.
    pub async fn connect(url: &str, node_id: &str) -> Result<NatsBroker, String> {
        let sink: Arc<OnceLock<Arc<dyn EventSink>>> = Arc::new(OnceLock::new());
        let resync_sink = sink.clone();
        let mut was_disconnected = false;
        let (events_tx, mut events_rx) = mpsc::channel::<async_nats::Event>(64);
        let client = async_nats::ConnectOptions::new()
            .name(format!("natter-{node_id}"))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event).await;
                }
            })
            .connect(url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
        // Whatever was published while NATS was away is lost for this node: resync everyone.
        tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected");
                        was_disconnected = true;
                    }
                    async_nats::Event::Connected if was_disconnected => {
                        tracing::warn!("NATS reconnected: sessions here resync");
                        was_disconnected = false;
                        if let Some(sink) = resync_sink.get() {
                            sink.resync();
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            }
        });

        let (control, commands) = mpsc::channel(PUBLISH_QUEUE_MAX);
        let presence = client
            .subscribe(PRESENCE_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to presence: {e}"))?;
        let membership = client
            .subscribe(MEMBERSHIP_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to membership changes: {e}"))?;
        let node = node_id.to_string();
        tokio::spawn(forward(presence, node.clone(), sink.clone()));
        tokio::spawn(forward(membership, node.clone(), sink.clone()));
        tokio::spawn(run_control(client, commands, node, sink.clone()));
        Ok(NatsBroker { sink, control })
    }

    fn send(&self, control: Control) {
        if let Err(e) = self.control.try_send(control) {
            tracing::error!(error = %e, "NATS publish queue full; event not sent to other nodes");
        }
    }
}

impl Broker for NatsBroker {
    fn publish(&self, event: Arc<Event>) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event.clone());
        }
        self.send(Control::Publish(event));
    }

    fn subscribe(&self, conversation_id: ConversationId) {
        self.send(Control::Subscribe(conversation_id));
    }

    fn unsubscribe(&self, conversation_id: ConversationId) {
        self.send(Control::Unsubscribe(conversation_id));
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::warn!("broker sink already attached; keeping the first");
        }
    }

    fn flush(&self) -> Flushed {
        let (done, flushed) = oneshot::channel();
        self.send(Control::Flush(done));
        Box::pin(async move {
            // A broker that cannot answer in time must not hold a connection up for ever.
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        })
    }
}

/// Applies subscription changes and publishes, in the order they were asked for.
async fn run_control(
    client: async_nats::Client,
    mut commands: mpsc::Receiver<Control>,
    node: String,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    let mut subscriptions: HashMap<ConversationId, JoinHandle<()>> = HashMap::new();
    while let Some(command) = commands.recv().await {
        match command {
            Control::Publish(event) => {
                let subject = match &*event {
                    Event::Presence { .. } => PRESENCE_SUBJECT.to_string(),
                    Event::ConversationChanged { added, .. } if !added.is_empty() => {
                        MEMBERSHIP_SUBJECT.to_string()
                    }
                    other => match other.conversation_id() {
                        Some(id) => conversation_subject(id),
                        None => PRESENCE_SUBJECT.to_string(),
                    },
                };
                let envelope = Envelope {
                    node: std::borrow::Cow::Borrowed(&node),
                    event: std::borrow::Cow::Borrowed(&event),
                };
                let payload = match serde_json::to_vec(&envelope) {
                    Ok(payload) => payload,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding an event for NATS");
                        continue;
                    }
                };
                if let Err(e) = client.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "NATS publish");
                }
            }
            Control::Subscribe(id) => {
                if subscriptions.contains_key(&id) {
                    continue;
                }
                match client.subscribe(conversation_subject(id)).await {
                    Ok(subscriber) => {
                        let task = tokio::spawn(forward(subscriber, node.clone(), sink.clone()));
                        subscriptions.insert(id, task);
                    }
                    Err(e) => tracing::error!(error = %e, id, "NATS subscribe"),
                }
            }
            Control::Unsubscribe(id) => {
                // Dropping the subscriber (by ending its task) unsubscribes it at the server.
                if let Some(task) = subscriptions.remove(&id) {
                    task.abort();
                }
            }
            Control::Flush(done) => {
                if let Err(e) = client.flush().await {
                    tracing::warn!(error = %e, "NATS flush");
                }
                let _ = done.send(());
            }
        }
    }
}

/// Hands the events of one subscription to the local hub, skipping this node's own.
async fn forward(
    mut subscriber: async_nats::Subscriber,
    node: String,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    while let Some(message) = subscriber.next().await {
        let envelope: Envelope = match serde_json::from_slice(&message.payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable event from NATS");
                continue;
            }
        };
        if envelope.node == node {
            continue;
        }
        if let Some(sink) = sink.get() {
            sink.deliver(Arc::new(envelope.event.into_owned()));
        }
    }
}
