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
//!
//! Two lanes lead to NATS: subscription changes and flushes, unbounded (one per conversation a
//! session brings or leaves; never dropped, or a session would silently stop hearing other nodes),
//! and publishes, bounded. A publish that finds its lane full is dropped for the other nodes;
//! so that no client waits for it for ever, the node then announces on `natter.resync` that it
//! lost events, and every other node tells its sessions to reconnect and sync.
//!
//! Every node says it is alive on `natter.nodes`. One that falls silent may have died between a
//! commit and its publish, so the others tell their sessions to reconnect and sync then too; a
//! node that stops cleanly says so on `natter.nodes.leaving` once its publishes are out, and
//! costs the others no resync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use natter_core::broker::Flushed;
use natter_core::{Broker, Event, EventSink};
use natter_proto::ConversationId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most events waiting to be published to NATS; past it events are dropped for the other nodes,
/// which are then told to resync (`RESYNC_SUBJECT`).
const PUBLISH_QUEUE_MAX: usize = 100_000;
const PRESENCE_SUBJECT: &str = "natter.presence";
/// Nobody subscribes here: a request to it is answered by the server ("no responders").
const PROBE_SUBJECT: &str = "natter.probe";
/// Most queued subscription changes a flush's round trip takes along.
const FLUSH_BATCH_MAX: usize = 1024;
/// Longest wait for that answer (NATS away: the subscriptions take effect when it is back).
const ROUND_TRIP_MAX: Duration = Duration::from_secs(2);
/// A node that dropped publishes says so here (the payload is its node id); the others resync.
const RESYNC_SUBJECT: &str = "natter.resync";
/// Every node says it is alive here (the payload is its node id), every `HEARTBEAT`.
const NODES_SUBJECT: &str = "natter.nodes";
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node not heard from for this long is gone: what it said about presence no longer holds.
const NODE_TIMEOUT: Duration = Duration::from_secs(16);
/// A node stopping cleanly says so here (the payload is its node id), once its publishes are out.
const LEAVING_SUBJECT: &str = "natter.nodes.leaving";

/// The broker's bounds and timings; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Most events waiting to be published to NATS.
    pub publish_queue_max: usize,
    /// How often a node says it is alive.
    pub heartbeat: Duration,
    /// How long a node may stay silent before the others take it for gone.
    pub node_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            publish_queue_max: PUBLISH_QUEUE_MAX,
            heartbeat: HEARTBEAT,
            node_timeout: NODE_TIMEOUT,
        }
    }
}
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

/// Subscription changes and flushes, applied in the order they were asked for.
enum Change {
    Subscribe(ConversationId),
    Unsubscribe(ConversationId),
    Flush(oneshot::Sender<()>),
    /// Say that this node leaves, once every publish queued before is out.
    Leave(oneshot::Sender<()>),
}

/// A broker over a NATS server (or cluster).
pub struct NatsBroker {
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
    changes: mpsc::UnboundedSender<Change>,
    publishes: mpsc::Sender<Arc<Event>>,
    /// Set when a publish was dropped; the control task then announces a resync.
    dropped: Arc<AtomicBool>,
    /// Set by `leave`: the heartbeats stop.
    leaving_now: Arc<AtomicBool>,
}

impl NatsBroker {
    /// Connect to `url` (e.g. `nats://127.0.0.1:4222`) as node `node_id`.
    pub async fn connect(url: &str, node_id: &str) -> Result<NatsBroker, String> {
        NatsBroker::connect_with(url, node_id, Tuning::default()).await
    }

    /// `connect`, with other bounds and timings.
    pub async fn connect_with(
        url: &str,
        node_id: &str,
        tuning: Tuning,
    ) -> Result<NatsBroker, String> {
        let publish_queue_max = tuning.publish_queue_max.max(1);
        let sink: Arc<OnceLock<Arc<dyn EventSink>>> = Arc::new(OnceLock::new());
        let resync_sink = sink.clone();
        // While NATS is away this node resyncs its sessions when it is back; the silence of the
        // others it hears meanwhile is its own, not theirs.
        let connected = Arc::new(AtomicBool::new(true));
        let connected_flag = connected.clone();
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
                        connected_flag.store(false, Ordering::Release);
                    }
                    async_nats::Event::Connected if was_disconnected => {
                        tracing::warn!("NATS reconnected: sessions here resync");
                        was_disconnected = false;
                        connected_flag.store(true, Ordering::Release);
                        if let Some(sink) = resync_sink.get() {
                            sink.resync();
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            }
        });

        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = mpsc::channel(publish_queue_max);
        let dropped = Arc::new(AtomicBool::new(false));
        let presence = client
            .subscribe(PRESENCE_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to presence: {e}"))?;
        let membership = client
            .subscribe(MEMBERSHIP_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to membership changes: {e}"))?;
        let resyncs = client
            .subscribe(RESYNC_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to resync notices: {e}"))?;
        let heartbeats = client
            .subscribe(NODES_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to node heartbeats: {e}"))?;
        let leaving = client
            .subscribe(LEAVING_SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to nodes leaving: {e}"))?;
        let node = node_id.to_string();
        let leaving_now = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_nodes(
            client.clone(),
            Watch {
                heartbeats,
                leaving,
                node: node.clone(),
                tuning,
                connected,
                leaving_now: leaving_now.clone(),
            },
            sink.clone(),
        ));
        tokio::spawn(forward(presence, node.clone(), sink.clone()));
        tokio::spawn(forward(membership, node.clone(), sink.clone()));
        tokio::spawn(follow_resyncs(resyncs, node.clone(), sink.clone()));
        let lanes = Lanes {
            changes: changes_rx,
            publishes: publishes_rx,
            dropped: dropped.clone(),
        };
        tokio::spawn(run_control(client, lanes, node, sink.clone()));
        Ok(NatsBroker {
            sink,
            changes,
            publishes,
            dropped,
            leaving_now,
        })
    }

    fn change(&self, change: Change) {
        if self.changes.send(change).is_err() {
            tracing::error!("the NATS control task has stopped");
        }
    }
}

impl Broker for NatsBroker {
    fn publish(&self, event: Arc<Event>) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event.clone());
        }
        if self.publishes.try_send(event).is_err() && !self.dropped.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "NATS publish queue full: events lost for the other nodes, which will resync"
            );
        }
    }

    fn subscribe(&self, conversation_id: ConversationId) {
        self.change(Change::Subscribe(conversation_id));
    }

    fn unsubscribe(&self, conversation_id: ConversationId) {
        self.change(Change::Unsubscribe(conversation_id));
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::warn!("broker sink already attached; keeping the first");
        }
    }

    fn flush(&self) -> Flushed {
        let (done, flushed) = oneshot::channel();
        self.change(Change::Flush(done));
        Box::pin(async move {
            // A broker that cannot answer in time must not hold a connection up for ever.
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        })
    }

    fn leave(&self) -> Flushed {
        self.leaving_now.store(true, Ordering::Release);
        let publishes = self.publishes.clone();
        let changes = self.changes.clone();
        Box::pin(async move {
            // Changes overtake publishes in the control task: the notice waits until the control
            // task has taken every publish queued before it (it finishes one before the next
            // change). Bounded: a node whose NATS is away stops anyway, and the others resync.
            let out = async {
                while publishes.capacity() < publishes.max_capacity() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let (done, left) = oneshot::channel();
                if changes.send(Change::Leave(done)).is_ok() {
                    let _ = left.await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), out)
                .await
                .is_err()
            {
                tracing::warn!("NATS: the leaving notice did not go out in time");
            }
        })
    }
}

/// The control task's two inputs.
struct Lanes {
    changes: mpsc::UnboundedReceiver<Change>,
    publishes: mpsc::Receiver<Arc<Event>>,
    dropped: Arc<AtomicBool>,
}

/// Applies subscription changes (first, in the order they were asked for) and publishes (in
/// publishing order).
async fn run_control(
    client: async_nats::Client,
    mut lanes: Lanes,
    node: String,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    let mut subscriptions: HashMap<ConversationId, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            change = lanes.changes.recv() => match change {
                Some(Change::Flush(done)) => {
                    // Changes queued meanwhile ride on the same round trip (a reconnecting
                    // crowd asks for one each), up to a bound, so that a stream of changes
                    // cannot hold the first flush (and every publish) back for ever.
                    let mut waiting = vec![done];
                    for _ in 0..FLUSH_BATCH_MAX {
                        let Ok(next) = lanes.changes.try_recv() else {
                            break;
                        };
                        match next {
                            Change::Flush(done) => waiting.push(done),
                            other => apply(&client, other, &mut subscriptions, &node, &sink).await,
                        }
                    }
                    round_trip(&client).await;
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                Some(change) => apply(&client, change, &mut subscriptions, &node, &sink).await,
                None => return,
            },
            event = lanes.publishes.recv() => match event {
                Some(event) => publish(&client, &event, &node).await,
                None => return,
            },
        }
        if lanes.dropped.swap(false, Ordering::AcqRel) {
            tracing::warn!("telling the other nodes to resync");
            if let Err(e) = client.publish(RESYNC_SUBJECT, node.clone().into()).await {
                tracing::warn!(error = %e, "NATS publish of a resync notice");
                lanes.dropped.store(true, Ordering::Release);
            }
        }
    }
}

async fn publish(client: &async_nats::Client, event: &Event, node: &str) {
    let subject = match event {
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
        node: std::borrow::Cow::Borrowed(node),
        event: std::borrow::Cow::Borrowed(event),
    };
    let payload = match serde_json::to_vec(&envelope) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(error = %e, "encoding an event for NATS");
            return;
        }
    };
    if let Err(e) = client.publish(subject, payload.into()).await {
        tracing::warn!(error = %e, "NATS publish");
    }
}

async fn apply(
    client: &async_nats::Client,
    change: Change,
    subscriptions: &mut HashMap<ConversationId, JoinHandle<()>>,
    node: &str,
    sink: &Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    match change {
        Change::Subscribe(id) => {
            if subscriptions.contains_key(&id) {
                return;
            }
            match client.subscribe(conversation_subject(id)).await {
                Ok(subscriber) => {
                    let task = tokio::spawn(forward(subscriber, node.to_string(), sink.clone()));
                    subscriptions.insert(id, task);
                }
                Err(e) => tracing::error!(error = %e, id, "NATS subscribe"),
            }
        }
        Change::Unsubscribe(id) => {
            // Dropping the subscriber (by ending its task) unsubscribes it at the server.
            if let Some(task) = subscriptions.remove(&id) {
                task.abort();
            }
        }
        Change::Flush(done) => {
            round_trip(client).await;
            let _ = done.send(());
        }
        Change::Leave(done) => {
            if let Err(e) = client
                .publish(LEAVING_SUBJECT, node.to_string().into())
                .await
            {
                tracing::warn!(error = %e, "NATS publish of the leaving notice");
            }
            round_trip(client).await;
            let _ = done.send(());
        }
    }
}

/// Wait until the server has taken everything sent so far, subscriptions included. A flush
/// only writes to the socket: an event another node publishes a moment later could still find
/// no subscription. A request that nobody answers comes back from the server itself ("no
/// responders") once it has read everything sent before it on this connection.
async fn round_trip(client: &async_nats::Client) {
    let probe = client.request(PROBE_SUBJECT, "".into());
    match tokio::time::timeout(ROUND_TRIP_MAX, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "NATS round trip"),
        Err(_) => tracing::warn!("NATS round trip: no answer within {ROUND_TRIP_MAX:?}"),
    }
}

/// What `watch_nodes` listens to and knows.
struct Watch {
    heartbeats: async_nats::Subscriber,
    leaving: async_nats::Subscriber,
    node: String,
    tuning: Tuning,
    /// False while this node's own connection to NATS is down.
    connected: Arc<AtomicBool>,
    /// Set when this node leaves: no more heartbeats.
    leaving_now: Arc<AtomicBool>,
}

/// Say every heartbeat that this node is alive, and tell the hub of any other node that fell
/// silent or left: its users' presence would otherwise stay "online" for ever. A node that fell
/// silent may also have died between a commit and its publish, an event no session here would
/// ever hear live: every local session then catches up by sync.
async fn watch_nodes(
    client: async_nats::Client,
    mut watch: Watch,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    let mut heard: HashMap<String, tokio::time::Instant> = HashMap::new();
    // Nodes that said they leave, and when: a heartbeat of theirs read after the notice (another
    // subscription, read in any order) must not bring them back. Forgotten after a timeout, by
    // when any such heartbeat has long been read, so that notices cannot pile up.
    let mut left: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(watch.tuning.heartbeat);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if watch.leaving_now.load(Ordering::Acquire) {
                    continue;
                }
                left.retain(|_, at| at.elapsed() <= watch.tuning.node_timeout);
                if let Err(e) = client.publish(NODES_SUBJECT, watch.node.clone().into()).await {
                    tracing::debug!(error = %e, "NATS heartbeat");
                }
                let silent: Vec<String> = heard
                    .iter()
                    .filter(|(_, at)| at.elapsed() > watch.tuning.node_timeout)
                    .map(|(other, _)| other.clone())
                    .collect();
                let Some(sink) = sink.get() else {
                    continue;
                };
                for other in &silent {
                    heard.remove(other);
                    tracing::warn!(node = %other, "node silent: its users' presence is dropped");
                    sink.node_gone(other);
                }
                // Without NATS every other node falls silent here; the reconnect resyncs.
                if !silent.is_empty() && watch.connected.load(Ordering::Acquire) {
                    tracing::warn!("a node fell silent and may have lost events: sessions here resync");
                    sink.resync();
                }
            }
            heartbeat = watch.heartbeats.next() => match heartbeat {
                Some(message) => {
                    let other = String::from_utf8_lossy(&message.payload).into_owned();
                    if other != watch.node && !left.contains_key(&other) {
                        heard.insert(other, tokio::time::Instant::now());
                    }
                }
                None => return,
            },
            notice = watch.leaving.next() => match notice {
                Some(message) => {
                    let other = String::from_utf8_lossy(&message.payload).into_owned();
                    if other != watch.node
                        && left.insert(other.clone(), tokio::time::Instant::now()).is_none()
                    {
                        heard.remove(&other);
                        tracing::info!(node = %other, "node left");
                        if let Some(sink) = sink.get() {
                            sink.node_gone(&other);
                        }
                    }
                }
                None => return,
            },
        }
    }
}

/// Another node lost events on their way out: every local session catches up by sync.
async fn follow_resyncs(
    mut subscriber: async_nats::Subscriber,
    node: String,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
) {
    while let Some(message) = subscriber.next().await {
        if message.payload.as_ref() == node.as_bytes() {
            continue;
        }
        tracing::warn!(from = %String::from_utf8_lossy(&message.payload), "a node lost events: sessions here resync");
        if let Some(sink) = sink.get() {
            sink.resync();
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

#[cfg(test)]
mod tests {
    //! Against a `nats-server` of the test's own (the binary must be installed: CI installs it).

    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;

    struct NatsServer(Child);

    impl Drop for NatsServer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn nats_server() -> (NatsServer, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (NatsServer(child), format!("nats://127.0.0.1:{port}"))
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<Arc<Event>>>,
        resyncs: Mutex<usize>,
        gone: Mutex<Vec<String>>,
    }

    impl EventSink for Recorder {
        fn deliver(&self, event: Arc<Event>) {
            self.events.lock().unwrap().push(event);
        }
        fn resync(&self) {
            *self.resyncs.lock().unwrap() += 1;
        }
        fn node_gone(&self, node: &str) {
            self.gone.lock().unwrap().push(node.to_string());
        }
    }

    /// A node in a runtime of its own, on a thread of its own, until the returned sender says
    /// stop: the runtime is then dropped, which ends its tasks and its connection as a crash
    /// would, with no leaving notice.
    fn node_in_its_own_runtime(
        url: String,
        node: &'static str,
        tuning: Tuning,
    ) -> std::sync::mpsc::Sender<()> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let broker = NatsBroker::connect_with(&url, node, tuning).await.unwrap();
                broker.attach(Arc::new(Recorder::default()));
                ready.send(()).unwrap();
                while stopped.try_recv().is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        });
        is_ready.recv().unwrap();
        stop
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_node_that_falls_silent_makes_the_others_resync_and_one_that_leaves_does_not() {
        let (_server, url) = nats_server().await;
        let tuning = Tuning {
            heartbeat: Duration::from_millis(100),
            node_timeout: Duration::from_millis(500),
            ..Tuning::default()
        };
        let a = NatsBroker::connect_with(&url, "a", tuning)
            .await
            .expect("a");
        let at_a = Arc::new(Recorder::default());
        a.attach(at_a.clone());
        let leaver = NatsBroker::connect_with(&url, "leaver", tuning)
            .await
            .expect("leaver");
        leaver.attach(Arc::new(Recorder::default()));
        let crash = node_in_its_own_runtime(url.clone(), "crasher", tuning);
        tokio::time::sleep(Duration::from_millis(400)).await;

        // Stopping cleanly: gone at once, and no resync, however long its silence lasts.
        leaver.publish(typing(1, 1));
        leaver.leave().await;
        eventually("a hears that leaver left", || {
            at_a.gone.lock().unwrap().contains(&"leaver".to_string())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            *at_a.resyncs.lock().unwrap(),
            0,
            "a clean leave makes no resync"
        );
        assert_eq!(
            *at_a.gone.lock().unwrap(),
            ["leaver"],
            "the crasher still heard"
        );

        // A crash: silence, then gone, and every session here syncs.
        let _ = crash.send(());
        eventually("a takes the crasher for gone", || {
            at_a.gone.lock().unwrap().contains(&"crasher".to_string())
        })
        .await;
        eventually("a resyncs", || *at_a.resyncs.lock().unwrap() == 1).await;
    }

    fn typing(conversation_id: ConversationId, user_id: u64) -> Arc<Event> {
        Arc::new(Event::Typing {
            conversation_id,
            user_id,
            active: true,
        })
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not within 5 s: {what}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_publish_lane_loses_no_subscription_and_makes_the_others_resync() {
        let (_server, url) = nats_server().await;
        let a = NatsBroker::connect_with(
            &url,
            "a",
            Tuning {
                publish_queue_max: 4,
                ..Tuning::default()
            },
        )
        .await
        .expect("a");
        let b = NatsBroker::connect(&url, "b").await.expect("b");
        let at_a = Arc::new(Recorder::default());
        let at_b = Arc::new(Recorder::default());
        a.attach(at_a.clone());
        b.attach(at_b.clone());
        b.subscribe(1);
        b.flush().await;
        // Once flushed, b's subscriptions are in effect at the server: nothing a publishes
        // from now on can miss them.

        // Without an await the control task cannot drain: all but four publishes are dropped.
        for user in 0..100 {
            a.publish(typing(1, user));
        }
        // A subscription asked for now still takes effect.
        a.subscribe(2);
        a.flush().await;
        eventually("b resyncs", || *at_b.resyncs.lock().unwrap() == 1).await;
        assert_eq!(
            *at_a.resyncs.lock().unwrap(),
            0,
            "the node that dropped does not resync"
        );
        assert_eq!(
            at_a.events.lock().unwrap().len(),
            100,
            "local sessions heard everything"
        );
        // The publishes that got through arrive on their own subscription, which may be read
        // after the resync subject: wait for them, then check that the others were dropped.
        eventually("b hears what got through", || {
            !at_b.events.lock().unwrap().is_empty()
        })
        .await;
        let heard_at_b = at_b.events.lock().unwrap().len();
        assert!((1..100).contains(&heard_at_b), "b heard {heard_at_b}");

        b.publish(typing(2, 7));
        eventually("a hears conversation 2", || {
            at_a.events.lock().unwrap().iter().any(|e| {
                matches!(
                    **e,
                    Event::Typing {
                        conversation_id: 2,
                        user_id: 7,
                        ..
                    }
                )
            })
        })
        .await;
    }
}
