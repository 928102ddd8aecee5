//! The high-level client: stays connected, syncs, delivers every message exactly once and in
//! order, and retries sends until they are acknowledged.
//!
//! One background task (the *driver*) owns everything mutable: the connection, the
//! [`Reorderer`], the outbox and the queue of events for the application. The [`Client`] handle
//! talks to it through bounded channels. The driver never blocks on one thing while another needs
//! it: it is a single `select!` loop, and every request it makes runs as a future inside that loop,
//! so a slow application, a slow server and a pending reply cannot wait on each other.
//!
//! # Delivery
//!
//! After every (re)connect the driver sends `sync {cursor}` until a page says `more: false`
//! (the first one right after the WebSocket upgrade, without waiting for the `hello`: protocol.md
//! §9.4), applying each page (conversation states, then messages) before storing its cursor.
//! Live events are applied as they come; their `cursor` is taken only once that sync is done.
//! Every message goes through the [`Reorderer`], and gaps it finds are filled with `history` once
//! the sync is done (the sync would bring most of them anyway).
//!
//! The saved [`ClientState`] only ever covers what the application took from [`Events`]: its
//! cursor is not moved past messages still held back by a gap, and events still queued, inside
//! the client or in [`Events`], are not counted. A client resumed from it may see some events
//! again (deduped for messages) but never misses one.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use natter_proto::{
    Ack, Command, Content, Conversation, ConversationId, ErrorCode, Hello, HistoryPage, Message,
    Pos, Presence, Receipt, Seq, ServerFrame, SyncPage, UserId, close_code,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::connection::{ConnectOptions, Connection, EarlySync, Requester, frame_name};
use crate::error::ClientError;
use crate::order::{Fill, Reorderer};
use crate::state::ClientState;
use crate::util::{new_client_msg_id, ws_url};

/// Gap fills in flight at once: enough to catch up several conversations, few enough not to
/// flood the server after a long absence.
const FILLS_IN_FLIGHT_MAX: usize = 4;
/// After this many fills that bring nothing, a gap is given up on (and reported as skipped).
const FILL_FAILURES_MAX: u32 = 5;
/// History page size when the server announces none.
const HISTORY_LIMIT_DEFAULT: u32 = 100;

/// Everything a [`Client`] needs to start.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server addresses (`http://host:port`, `ws://host:port` or `host:port`). The client
    /// starts with the first and moves to the next after each failure or disconnect.
    pub servers: Vec<String>,
    /// The device token from `login` or `register`.
    pub token: String,
    /// Where to resume from; `None` starts from cursor 0 and delivers every message.
    pub state: Option<ClientState>,
    /// Sync and deliver messages. `false` makes a send-only client (a CLI `send`, a load
    /// generator's sender): no sync, `message` events are ignored, the other events still come.
    pub sync: bool,
    /// Events queued for the application. When the application falls behind, the client stops
    /// reading the socket rather than growing this queue.
    pub event_capacity: usize,
    /// Messages accepted by [`Client::send`] and not yet acknowledged; further sends wait.
    pub outbox_capacity: usize,
    /// Sends written to the socket and not yet acknowledged.
    pub send_window: usize,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// How long a command may wait for its reply before the connection is deemed dead.
    pub request_timeout: Duration,
    /// A session that lasted this long resets the backoff: its end is a new incident, not one
    /// more failure in a row.
    pub stable_after: Duration,
    /// Options of each WebSocket connection.
    pub connect: ConnectOptions,
}

impl ClientConfig {
    /// A configuration with defaults: sync on, 1024 queued events, 1024 outbox entries,
    /// 64 sends in flight, backoff from 100 ms to 10 s, 30 s request timeout.
    pub fn new<S: Into<String>>(
        servers: impl IntoIterator<Item = S>,
        token: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            token: token.into(),
            state: None,
            sync: true,
            event_capacity: 1024,
            outbox_capacity: 1024,
            send_window: 64,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            connect: ConnectOptions::default(),
        }
    }

    /// The same configuration, resuming from `state`.
    pub fn with_state(mut self, state: ClientState) -> ClientConfig {
        self.state = Some(state);
        self
    }
}

/// What the client tells the application, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection is up; sync starts now.
    Connected {
        /// The server address connected to.
        server: String,
        /// The server's greeting: our user and device, and the limits to respect.
        hello: Hello,
    },
    /// The server never issued the saved cursor (it is above the server's position: another
    /// deployment's, or the server was restored from an older backup), so what the application
    /// holds is not this server's: drop it. The client starts over from cursor 0, with an empty
    /// delivered state, and every message comes again (protocol.md §9.4).
    Reset {
        /// The cursor the client had.
        cursor: Pos,
        /// The server's position, which it answered with.
        server_cursor: Pos,
    },
    /// The post-connect sync is complete: everything up to `cursor` has been delivered.
    Synced {
        /// The cursor the sync ended at.
        cursor: Pos,
    },
    /// A message: each exactly once, in `seq` order within its conversation.
    Message(Message),
    /// Messages `first..=last` of a conversation will never be delivered: the server no longer
    /// shows them to this user (e.g. sent after they left) or they could not be fetched.
    Skipped {
        /// The conversation with the hole.
        conversation_id: ConversationId,
        /// The first `seq` skipped.
        first: Seq,
        /// The last `seq` skipped; delivery goes on after it.
        last: Seq,
    },
    /// A member's delivered/read markers moved.
    Receipt(Receipt),
    /// A conversation's current state (from sync, or because it changed).
    Conversation(Conversation),
    /// Someone started or stopped typing; an active indication expires after `ttl_ms`.
    Typing {
        /// Where they type.
        conversation_id: ConversationId,
        /// Who types.
        user_id: UserId,
        /// True when they type, false when they stopped.
        active: bool,
        /// How long an active indication lasts unless renewed.
        ttl_ms: u64,
    },
    /// A user came online or went offline.
    Presence(Presence),
    /// The connection was lost. With `reconnecting: false` the client has stopped for good
    /// (token revoked, or closed), and the event channel ends after this.
    Disconnected {
        /// What happened, for humans.
        reason: String,
        /// The WebSocket close code, if the server sent one.
        code: Option<u16>,
        /// True while the client will connect again by itself.
        reconnecting: bool,
    },
}

/// The live connection, as seen from the [`Client`] handle.
#[derive(Clone)]
struct Live {
    requester: Requester,
    hello: Hello,
}

/// The connection's status, as published to the [`Client`] handle.
#[derive(Clone)]
enum Link {
    Down,
    Up(Live),
    /// The client stopped for good; nobody should wait for `Up` any more.
    Stopped,
}

impl Link {
    fn live(&self) -> Option<&Live> {
        match self {
            Link::Up(live) => Some(live),
            Link::Down | Link::Stopped => None,
        }
    }
}

/// What the handle and the driver share: the delivered state, and why the client stopped.
struct Shared {
    /// The saved state, as of the events the application has taken from [`Events`], and the
    /// changes of those still queued there.
    taken: Mutex<Taken>,
    stopped: Mutex<Option<ClientError>>,
}

/// Changes to the saved state, each held back until the application has taken the event it
/// came with (or, for a cursor, every event queued before it).
#[derive(Default)]
struct Taken {
    state: ClientState,
    /// Events handed to the channel, and taken from it.
    handed: u64,
    taken: u64,
    /// Nobody reads the channel any more: changes apply at once.
    unread: bool,
    /// Changes not applied yet, each with the number of events that must be taken first.
    waiting: VecDeque<(u64, Change)>,
}

#[derive(Clone, Copy)]
enum Change {
    Cursor(Pos),
    Reset,
    Delivered(ConversationId, Seq),
}

impl Change {
    fn apply(&self, state: &mut ClientState) {
        match self {
            Change::Cursor(cursor) => state.cursor = state.cursor.max(*cursor),
            Change::Reset => *state = ClientState::default(),
            Change::Delivered(conversation_id, seq) => {
                let delivered = state.delivered.entry(*conversation_id).or_insert(0);
                *delivered = (*delivered).max(*seq);
            }
        }
    }
}

impl Taken {
    /// Record a change; `with_event`: it comes with an event just handed to the channel.
    fn note(&mut self, change: Change, with_event: bool) {
        if with_event {
            self.handed += 1;
        }
        if self.unread || self.taken >= self.handed {
            change.apply(&mut self.state);
        } else if let (Change::Cursor(cursor), Some((at, Change::Cursor(last)))) =
            (change, self.waiting.back_mut())
            && *at == self.handed
        {
            // Cursors with no event between them: the highest stands for all.
            *last = (*last).max(cursor);
        } else {
            self.waiting.push_back((self.handed, change));
        }
    }

    /// The state as of every event handed to the channel: what the application saves after
    /// draining it.
    fn handed_state(&self) -> ClientState {
        let mut state = self.state.clone();
        for (_, change) in &self.waiting {
            change.apply(&mut state);
        }
        state
    }

    fn took_one(&mut self) {
        self.taken += 1;
        self.catch_up();
    }

    fn catch_up(&mut self) {
        while let Some((at, _)) = self.waiting.front() {
            if !self.unread && *at > self.taken {
                break;
            }
            if let Some((_, change)) = self.waiting.pop_front() {
                change.apply(&mut self.state);
            }
        }
    }
}

/// The client's events, in order: take them with [`recv`](Events::recv). What the application
/// has taken is what [`Client::state`] covers, so a state saved after processing the events
/// taken so far never skips one still waiting here.
pub struct Events {
    receiver: mpsc::Receiver<ClientEvent>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next event; `None` once the client has stopped and every event was taken.
    /// Cancel-safe (usable in `select!`): an event is counted as taken only when returned.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        let event = self.receiver.recv().await?;
        lock(&self.shared.taken).took_one();
        Some(event)
    }

    /// What to save to resume later, as of the events taken from here so far (the same as
    /// [`Client::state`], and still readable after [`Client::close`]).
    pub fn state(&self) -> ClientState {
        lock(&self.shared.taken).state.clone()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut taken = lock(&self.shared.taken);
        taken.unread = true;
        taken.catch_up();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a plain assignment, so a poisoned lock still holds valid data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn stop_error(&self) -> ClientError {
        lock(&self.stopped).clone().unwrap_or(ClientError::Closed)
    }
}

struct SendJob {
    conversation_id: ConversationId,
    client_msg_id: String,
    content: Content,
    reply_to: Option<Seq>,
    waiter: oneshot::Sender<Result<Ack, ClientError>>,
}

enum Control {
    Close(oneshot::Sender<()>),
}

/// A connected, self-healing Natter client. See the [module docs](self).
///
/// Create it with [`Client::start`] inside a Tokio runtime, take its [`events`](Client::events),
/// and [`close`](Client::close) it to save its state. Dropping it stops it too.
pub struct Client {
    control: mpsc::Sender<Control>,
    sends: mpsc::Sender<SendJob>,
    shared: Arc<Shared>,
    live: watch::Receiver<Link>,
    events: Option<Events>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Start the background task; it connects right away. Fails only on a bad configuration
    /// (no server, an unusable address). Connection problems are retried with the backoff, for
    /// ever: a session that ends is reported as [`ClientEvent::Disconnected`], and attempts
    /// that fail before any session are not reported (check [`is_connected`](Self::is_connected)
    /// or wait for [`ClientEvent::Connected`] with a timeout of your own); refused credentials
    /// stop the client with `Disconnected { reconnecting: false, .. }`.
    pub fn start(mut config: ClientConfig) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ClientError::Config("Client::start needs a Tokio runtime".into()))?;
        if config.servers.is_empty() {
            return Err(ClientError::Config("no server address".into()));
        }
        for server in &config.servers {
            ws_url(server, &config.token)?;
        }
        let state = config.state.take().unwrap_or_default();
        let (control_tx, control_rx) = mpsc::channel(4);
        let (send_tx, send_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let (live_tx, live_rx) = watch::channel(Link::Down);
        let shared = Arc::new(Shared {
            taken: Mutex::new(Taken {
                state: state.clone(),
                ..Taken::default()
            }),
            stopped: Mutex::new(None),
        });
        let driver = Driver::new(
            config,
            state,
            shared.clone(),
            live_tx,
            event_tx,
            control_rx,
            send_rx,
        );
        let task = runtime.spawn(driver.run());
        Ok(Client {
            control: control_tx,
            sends: send_tx,
            shared: shared.clone(),
            live: live_rx,
            events: Some(Events {
                receiver: event_rx,
                shared,
            }),
            task: Some(task),
        })
    }

    /// The event stream; `Some` the first time only. Read it steadily: when it is full the
    /// client stops reading from the server, and sends are not acknowledged either. Drop it if
    /// you do not want events.
    pub fn events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Send a text or other content, with a fresh `client_msg_id`. Resolves with the server's
    /// [`Ack`] once the message is committed, however many reconnects that takes; fails only
    /// when the server refuses the message for good (e.g. `not_member`) or the client stops.
    pub async fn send(
        &self,
        conversation_id: ConversationId,
        content: Content,
        reply_to: Option<Seq>,
    ) -> Result<Ack, ClientError> {
        self.send_with_id(conversation_id, new_client_msg_id(), content, reply_to)
            .await
    }

    /// [`send`](Self::send) with a `client_msg_id` of the caller's choosing, for callers that
    /// must recognise their message when it comes back (or retry across restarts of their own).
    /// Once accepted, the message is sent until acknowledged even if this future is dropped.
    pub async fn send_with_id(
        &self,
        conversation_id: ConversationId,
        client_msg_id: String,
        content: Content,
        reply_to: Option<Seq>,
    ) -> Result<Ack, ClientError> {
        let (waiter, done) = oneshot::channel();
        let job = SendJob {
            conversation_id,
            client_msg_id,
            content,
            reply_to,
            waiter,
        };
        if self.sends.send(job).await.is_err() {
            return Err(self.shared.stop_error());
        }
        done.await.unwrap_or_else(|_| Err(self.shared.stop_error()))
    }

    /// What to save to resume later: covers exactly the events taken from [`Events`] so far
    /// (not those still waiting there). Save it after processing the events you took: a client
    /// resumed from it gets every later one.
    pub fn state(&self) -> ClientState {
        lock(&self.shared.taken).state.clone()
    }

    /// Why the client stopped for good (credentials refused, token revoked, closed), if it did.
    pub fn stopped(&self) -> Option<ClientError> {
        lock(&self.shared.stopped).clone()
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.live.borrow().live().is_some()
    }

    /// The `hello` of the current connection (who we are, the server's limits).
    pub fn hello(&self) -> Option<Hello> {
        self.live.borrow().live().map(|live| live.hello.clone())
    }

    /// Wait until a connection is up, and return its `hello`. Fails if the client stops first.
    pub async fn wait_connected(&self) -> Result<Hello, ClientError> {
        let mut live = self.live.clone();
        let result = live
            .wait_for(|link| !matches!(link, Link::Down))
            .await
            .map(|link| link.live().map(|live| live.hello.clone()));
        match result {
            Ok(Some(hello)) => Ok(hello),
            Ok(None) | Err(_) => Err(self.shared.stop_error()),
        }
    }

    /// A handle on the current connection for raw commands, if connected. It fails once that
    /// connection is gone; it does not follow reconnects.
    pub fn requester(&self) -> Option<Requester> {
        self.live.borrow().live().map(|live| live.requester.clone())
    }

    /// Send any command on the current connection and return its `result` data. Not retried:
    /// fails with [`ClientError::NotConnected`] between connections and
    /// [`ClientError::Disconnected`] if the connection drops before the reply.
    pub async fn request(&self, command: Command) -> Result<Value, ClientError> {
        match self.requester() {
            Some(requester) => requester.request(command).await,
            None => Err(ClientError::NotConnected),
        }
    }

    /// [`request`](Self::request), decoding the result as `T`.
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        command: Command,
    ) -> Result<T, ClientError> {
        match self.requester() {
            Some(requester) => requester.request_as(command).await,
            None => Err(ClientError::NotConnected),
        }
    }

    /// Stop: close the connection, fail unacknowledged sends with [`ClientError::Closed`], and
    /// return the final state. Events already in [`Events`] can still be taken afterwards, and
    /// the returned state covers them too: drain them, then save it (or save
    /// [`Events::state`] after whatever you took).
    pub async fn close(mut self) -> ClientState {
        let (done_tx, done_rx) = oneshot::channel();
        if self.control.send(Control::Close(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        lock(&self.shared.taken).handed_state()
    }
}

/// A pending item for the application: an event, or a cursor to record once every event queued
/// before it has been handed over.
// Events vastly outnumber cursors, so boxing the event to shrink the cursor would cost an
// allocation per event to save a few bytes per (rare) cursor.
#[allow(clippy::large_enum_variant)]
enum Pending {
    Event(ClientEvent),
    Cursor(Pos),
    /// The saved state starts over (a `Reset`): applied in its turn, after the events before it.
    Reset,
}

struct Entry {
    conversation_id: ConversationId,
    client_msg_id: String,
    content: Content,
    reply_to: Option<Seq>,
    waiter: Option<oneshot::Sender<Result<Ack, ClientError>>>,
    attempts: u32,
}

impl Entry {
    fn resolve(&mut self, result: Result<Ack, ClientError>) {
        if let Some(waiter) = self.waiter.take() {
            // The caller may have stopped waiting; the send counted all the same.
            let _ = waiter.send(result);
        }
    }
}

/// A connection that said hello, with the reply to the `sync` sent before the hello and the
/// cursor it asked from, if one was sent.
struct Connected {
    conn: Connection,
    early_sync: Option<(Pos, EarlySync)>,
}

enum Done {
    Sync(Result<SyncPage, ClientError>),
    History {
        conversation_id: ConversationId,
        after: Seq,
        result: Result<HistoryPage, ClientError>,
    },
    Send {
        key: u64,
        result: Result<Ack, ClientError>,
    },
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Default)]
struct FillState {
    in_flight: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// State of one connection's lifetime.
struct Session {
    started: Instant,
    syncing: bool,
    /// The server answered a cursor it never issued, and the client started over from 0: once
    /// per connection at most.
    reset: bool,
    sync_cursor: Pos,
    sync_in_flight: bool,
    sync_retry_at: Option<Instant>,
    history_limit: u32,
    fills: HashMap<ConversationId, FillState>,
    sends_in_flight: usize,
}

/// Why a session ended.
struct End {
    reason: String,
    code: Option<u16>,
}

struct Driver {
    config: ClientConfig,
    reorder: Reorderer,
    /// The cursor decided so far (it reaches the saved state once the events before it do).
    cursor: Pos,
    /// A cursor held back because some conversation has a gap below it.
    deferred_cursor: Pos,
    shared: Arc<Shared>,
    live: watch::Sender<Link>,
    app: Option<mpsc::Sender<ClientEvent>>,
    pending: VecDeque<Pending>,
    control: mpsc::Receiver<Control>,
    send_rx: mpsc::Receiver<SendJob>,
    outbox: BTreeMap<u64, Entry>,
    next_key: u64,
    /// Outbox entries to write now, lowest key (oldest) first.
    ready: BTreeSet<u64>,
    /// Outbox entries waiting to be retried (after `rate_limited` and the like).
    delayed: Vec<(Instant, u64)>,
    conn: Option<Connection>,
    session: Option<Session>,
    in_flight: FuturesUnordered<BoxFuture<Done>>,
    connecting: Option<BoxFuture<Result<Connected, ClientError>>>,
    reconnect_at: Option<Instant>,
    attempt: u32,
    server_index: usize,
    stopped: bool,
}

impl Driver {
    fn new(
        config: ClientConfig,
        state: ClientState,
        shared: Arc<Shared>,
        live: watch::Sender<Link>,
        app: mpsc::Sender<ClientEvent>,
        control: mpsc::Receiver<Control>,
        send_rx: mpsc::Receiver<SendJob>,
    ) -> Driver {
        Driver {
            reorder: Reorderer::with_delivered(&state.delivered),
            cursor: state.cursor,
            deferred_cursor: 0,
            shared,
            live,
            app: Some(app),
            pending: VecDeque::new(),
            control,
            send_rx,
            outbox: BTreeMap::new(),
            next_key: 0,
            ready: BTreeSet::new(),
            delayed: Vec::new(),
            conn: None,
            session: None,
            in_flight: FuturesUnordered::new(),
            connecting: None,
            reconnect_at: None,
            attempt: 0,
            server_index: 0,
            stopped: false,
            config,
        }
    }

    async fn run(mut self) {
        while !self.stopped {
            self.on_timer();
            self.maybe_connect();
            self.pump();
            let wake = self.next_wakeup();
            let has_pending = !self.pending.is_empty();
            let read_events =
                self.conn.is_some() && self.pending.len() < self.config.event_capacity;
            let outbox_room = self.outbox.len() < self.config.outbox_capacity.max(1);
            let sleep_until = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                control = self.control.recv() => {
                    // A closed channel means the `Client` was dropped: stop as for `close`.
                    let reply = control.map(|Control::Close(reply)| reply);
                    self.shutdown().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                    return;
                }
                permit = reserve(self.app.clone()), if has_pending => match permit {
                    Some(permit) => {
                        if let Some(Pending::Event(event)) = self.pending.pop_front() {
                            self.record(&event);
                            permit.send(event);
                        }
                        self.settle();
                    }
                    None => {
                        // Nobody listens any more: keep the state moving, drop the events.
                        self.app = None;
                        self.settle();
                    }
                },
                result = poll_option(&mut self.connecting) => {
                    self.connecting = None;
                    match result {
                        Ok(connected) => self.on_connected(connected),
                        Err(error) => self.on_connect_failed(error),
                    }
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Some(end) = self.on_done(done) {
                        self.end_session(end);
                    }
                }
                frame = next_event(&mut self.conn), if read_events => match frame {
                    Some(frame) => {
                        if let Some(end) = self.on_frame(frame) {
                            self.end_session(end);
                        }
                    }
                    None => {
                        let end = self.closed_end();
                        self.end_session(end);
                    }
                },
                job = self.send_rx.recv(), if outbox_room => {
                    if let Some(job) = job {
                        self.enqueue(job);
                    }
                }
                // Deadlines are acted on at the top of the loop.
                () = tokio::time::sleep_until(sleep_until), if wake.is_some() => {}
            }
        }
        self.drain_after_stop().await;
    }

    // ----- connection lifecycle -----

    fn maybe_connect(&mut self) {
        if self.stopped || self.conn.is_some() || self.connecting.is_some() {
            return;
        }
        if self.reconnect_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.reconnect_at = None;
        let server = self.config.servers[self.server_index % self.config.servers.len()].clone();
        let token = self.config.token.clone();
        let options = self.config.connect.clone();
        // The first sync page goes with the upgrade when it could be taken in now (the same rule
        // as `pump`'s): the session would send it first thing anyway.
        let early_cursor = (self.config.sync && self.has_room()).then_some(self.cursor);
        tracing::debug!(%server, attempt = self.attempt, "connecting");
        self.connecting = Some(Box::pin(async move {
            match early_cursor {
                Some(cursor) => {
                    let (conn, early) =
                        Connection::connect_and_sync(&server, &token, &options, cursor, None)
                            .await?;
                    Ok(Connected {
                        conn,
                        early_sync: Some((cursor, early)),
                    })
                }
                None => Ok(Connected {
                    conn: Connection::connect_with(&server, &token, &options).await?,
                    early_sync: None,
                }),
            }
        }));
    }

    /// Room in the application's queue for another sync page or history fill: each brings more
    /// events.
    fn has_room(&self) -> bool {
        self.pending.len() < self.config.event_capacity.max(2) / 2
    }

    fn on_connected(&mut self, connected: Connected) {
        let Connected { conn, early_sync } = connected;
        let hello = conn.hello().clone();
        tracing::debug!(server = conn.server(), user = %hello.user.username, "connected");
        // The new sync recomputes it; a cursor held back in an older session must not jump
        // ahead of this one's pages.
        self.deferred_cursor = 0;
        let history_limit = match hello.limits.history_page_max {
            0 => HISTORY_LIMIT_DEFAULT,
            n => n,
        };
        self.session = Some(Session {
            started: Instant::now(),
            syncing: self.config.sync,
            reset: false,
            sync_cursor: self.cursor,
            sync_in_flight: false,
            sync_retry_at: None,
            history_limit,
            fills: HashMap::new(),
            sends_in_flight: 0,
        });
        self.live.send_replace(Link::Up(Live {
            requester: conn.requester(),
            hello: hello.clone(),
        }));
        self.push(ClientEvent::Connected {
            server: conn.server().to_string(),
            hello,
        });
        // Everything unacknowledged goes again, oldest first, with its original client_msg_id.
        self.delayed.clear();
        self.ready = self.outbox.keys().copied().collect();
        self.conn = Some(conn);
        // The sync sent with the upgrade is this session's first page if it asked from where the
        // session starts. The cursor may have moved while connecting (the application took
        // events queued before, and the cursors between them): then its page is dropped, and
        // `pump` asks again from the new cursor.
        if let Some((cursor, early)) = early_sync
            && let Some(session) = &mut self.session
            && session.syncing
            && cursor == session.sync_cursor
        {
            session.sync_in_flight = true;
            let timeout = self.config.request_timeout;
            self.in_flight.push(Box::pin(async move {
                Done::Sync(timed(timeout, "sync", early.page()).await)
            }));
        }
    }

    fn on_connect_failed(&mut self, error: ClientError) {
        if error.is_auth() {
            tracing::warn!(%error, "credentials refused: stopping");
            self.push(ClientEvent::Disconnected {
                reason: error.to_string(),
                code: None,
                reconnecting: false,
            });
            self.stop(error);
            return;
        }
        let server = &self.config.servers[self.server_index % self.config.servers.len()];
        tracing::debug!(%server, %error, attempt = self.attempt, "connect failed");
        self.schedule_reconnect();
    }

    fn schedule_reconnect(&mut self) {
        self.server_index = (self.server_index + 1) % self.config.servers.len();
        let delay = self.config.backoff.next_delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.reconnect_at = Some(Instant::now() + delay);
    }

    /// How a connection whose event stream ended was closed.
    fn closed_end(&self) -> End {
        match self.conn.as_ref().and_then(Connection::close_info) {
            Some(info) => End {
                reason: info.reason,
                code: info.code,
            },
            None => End {
                reason: "connection closed".into(),
                code: None,
            },
        }
    }

    fn end_session(&mut self, end: End) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // The close code, when there is one, says more than the error that noticed it.
        let code = end
            .code
            .or_else(|| conn.close_info().and_then(|info| info.code));
        let session = self.session.take();
        self.live.send_replace(Link::Down);
        // Dropping the futures abandons their requests; unacknowledged sends stay in the outbox.
        self.in_flight = FuturesUnordered::new();
        drop(conn);
        let revoked = code == Some(close_code::REVOKED);
        tracing::debug!(reason = %end.reason, ?code, "disconnected");
        self.push(ClientEvent::Disconnected {
            reason: end.reason.clone(),
            code,
            reconnecting: !revoked,
        });
        if revoked {
            self.stop(ClientError::Disconnected {
                code,
                reason: end.reason,
            });
            return;
        }
        if session.is_some_and(|s| s.started.elapsed() >= self.config.stable_after) {
            self.attempt = 0;
        }
        self.schedule_reconnect();
    }

    /// Stop for good: fail every waiting send with `error`.
    fn stop(&mut self, error: ClientError) {
        self.stopped = true;
        self.connecting = None;
        self.reconnect_at = None;
        self.live.send_replace(Link::Stopped);
        *lock(&self.shared.stopped) = Some(error.clone());
        for entry in self.outbox.values_mut() {
            entry.resolve(Err(error.clone()));
        }
        self.outbox.clear();
        self.ready.clear();
        self.delayed.clear();
    }

    /// `close` or drop of the handle: close the socket politely, hand over what the
    /// application can take without waiting, and stop.
    async fn shutdown(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.live.send_replace(Link::Down);
            self.in_flight = FuturesUnordered::new();
            conn.close().await;
            self.push(ClientEvent::Disconnected {
                reason: "closed by the client".into(),
                code: None,
                reconnecting: false,
            });
        }
        self.stop(ClientError::Closed);
        self.fail_queued_sends();
        // Events that do not fit are dropped, and so not counted in the state: a resumed
        // client gets them again.
        while let Some(Pending::Event(event)) = self.pending.front() {
            let Some(app) = &self.app else {
                break;
            };
            let Ok(permit) = app.try_reserve() else {
                break;
            };
            let event = event.clone();
            self.pending.pop_front();
            self.record(&event);
            permit.send(event);
            self.settle();
        }
    }

    /// After a stop the client could not recover from, wait for the application to take the
    /// remaining events (ending with the `Disconnected` that explains the stop), then end.
    async fn drain_after_stop(&mut self) {
        self.fail_queued_sends();
        while !self.pending.is_empty() {
            tokio::select! {
                biased;
                control = self.control.recv() => {
                    if let Some(Control::Close(reply)) = control {
                        let _ = reply.send(());
                    }
                    return;
                }
                permit = reserve(self.app.clone()) => match permit {
                    Some(permit) => {
                        if let Some(Pending::Event(event)) = self.pending.pop_front() {
                            self.record(&event);
                            permit.send(event);
                        }
                        self.settle();
                    }
                    None => {
                        self.app = None;
                        self.settle();
                    }
                },
            }
        }
    }

    fn fail_queued_sends(&mut self) {
        self.send_rx.close();
        let error = self.shared.stop_error();
        while let Ok(job) = self.send_rx.try_recv() {
            let _ = job.waiter.send(Err(error.clone()));
        }
    }

    // ----- requests -----

    /// Start whatever requests the current state calls for: the next sync page, gap fills,
    /// sends. Sync and fills wait while the application is behind, since each brings more
    /// events.
    fn pump(&mut self) {
        let room = self.has_room();
        let Some(conn) = &self.conn else {
            return;
        };
        let Some(session) = &mut self.session else {
            return;
        };
        let now = Instant::now();
        let timeout = self.config.request_timeout;

        if session.syncing
            && !session.sync_in_flight
            && room
            && session.sync_retry_at.is_none_or(|at| at <= now)
        {
            session.sync_in_flight = true;
            session.sync_retry_at = None;
            let requester = conn.requester();
            let cursor = session.sync_cursor;
            self.in_flight.push(Box::pin(async move {
                Done::Sync(timed(timeout, "sync", requester.sync(cursor, None)).await)
            }));
        }

        if !session.fills.is_empty() {
            // A gap closed by a push or a sync page leaves its fill state behind; its failure
            // count must not count against the next gap of that conversation.
            let reorder = &self.reorder;
            session
                .fills
                .retain(|&id, fill| fill.in_flight || reorder.gap(id).is_some());
        }
        if !session.syncing && room && self.reorder.has_gaps() {
            let mut fills_in_flight = session.fills.values().filter(|f| f.in_flight).count();
            for gap in self.reorder.gaps() {
                if fills_in_flight >= FILLS_IN_FLIGHT_MAX {
                    break;
                }
                let fill = session.fills.entry(gap.conversation_id).or_default();
                if fill.in_flight || fill.retry_at.is_some_and(|at| at > now) {
                    continue;
                }
                fill.in_flight = true;
                fill.retry_at = None;
                fills_in_flight += 1;
                let limit = u32::try_from(gap.len())
                    .unwrap_or(u32::MAX)
                    .min(session.history_limit);
                let requester = conn.requester();
                let (conversation_id, after) = (gap.conversation_id, gap.after);
                self.in_flight.push(Box::pin(async move {
                    let result = timed(
                        timeout,
                        "history",
                        requester.history(conversation_id, None, Some(after), Some(limit)),
                    )
                    .await;
                    Done::History {
                        conversation_id,
                        after,
                        result,
                    }
                }));
            }
        }

        while session.sends_in_flight < self.config.send_window.max(1) {
            let Some(key) = self.ready.pop_first() else {
                break;
            };
            let Some(entry) = self.outbox.get_mut(&key) else {
                continue;
            };
            entry.attempts = entry.attempts.saturating_add(1);
            session.sends_in_flight += 1;
            let requester = conn.requester();
            let command = Command::Send {
                conversation_id: entry.conversation_id,
                client_msg_id: entry.client_msg_id.clone(),
                content: entry.content.clone(),
                reply_to: entry.reply_to,
            };
            self.in_flight.push(Box::pin(async move {
                let result = timed(timeout, "send", requester.request_as::<Ack>(command)).await;
                Done::Send { key, result }
            }));
        }
    }

    fn enqueue(&mut self, job: SendJob) {
        let key = self.next_key;
        self.next_key += 1;
        self.outbox.insert(
            key,
            Entry {
                conversation_id: job.conversation_id,
                client_msg_id: job.client_msg_id,
                content: job.content,
                reply_to: job.reply_to,
                waiter: Some(job.waiter),
                attempts: 0,
            },
        );
        if self.conn.is_some() {
            self.ready.insert(key);
        }
    }

    /// The next deadline still ahead. Deadlines already past are left out: whatever they wait
    /// for is blocked on something else (e.g. a sync retry on room in the event queue), and
    /// waking up for them would spin.
    fn next_wakeup(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at.filter(|&at| at > now) {
                wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
            }
        };
        consider(self.reconnect_at);
        for (at, _) in &self.delayed {
            consider(Some(*at));
        }
        if let Some(session) = &self.session {
            consider(session.sync_retry_at);
            for fill in session.fills.values() {
                consider(fill.retry_at);
            }
        }
        wake
    }

    /// Move delayed sends whose time has come back to the ready set. Reconnects, sync retries
    /// and fill retries need nothing here: `maybe_connect` and `pump` read their deadlines.
    fn on_timer(&mut self) {
        if self.delayed.is_empty() {
            return;
        }
        let now = Instant::now();
        let ready = &mut self.ready;
        let conn_up = self.conn.is_some();
        self.delayed.retain(|&(at, key)| {
            if at <= now {
                if conn_up {
                    ready.insert(key);
                }
                false
            } else {
                true
            }
        });
    }

    fn on_done(&mut self, done: Done) -> Option<End> {
        match done {
            Done::Sync(result) => self.on_sync(result),
            Done::History {
                conversation_id,
                after,
                result,
            } => self.on_history(conversation_id, after, result),
            Done::Send { key, result } => self.on_send(key, result),
        }
    }

    fn on_sync(&mut self, result: Result<SyncPage, ClientError>) -> Option<End> {
        let session = self.session.as_mut()?;
        session.sync_in_flight = false;
        let page = match result {
            Ok(page) => page,
            Err(error) => {
                if let Some(delay) = retry_delay(&error) {
                    session.sync_retry_at = Some(Instant::now() + delay);
                    return None;
                }
                return Some(End {
                    reason: format!("sync failed: {error}"),
                    code: None,
                });
            }
        };
        if !page.more && page.cursor < session.sync_cursor {
            if session.reset {
                return Some(End {
                    reason: format!("the server went back to cursor {} again", page.cursor),
                    code: None,
                });
            }
            session.reset = true;
            let sent = std::mem::take(&mut session.sync_cursor);
            session.fills.clear();
            tracing::warn!(
                cursor = sent,
                server_cursor = page.cursor,
                "the server never issued this cursor: starting over from 0"
            );
            self.reorder = Reorderer::new();
            self.deferred_cursor = 0;
            self.cursor = 0;
            self.pending.push_back(Pending::Reset);
            self.push(ClientEvent::Reset {
                cursor: sent,
                server_cursor: page.cursor,
            });
            return None;
        }
        if page.more && page.cursor <= session.sync_cursor {
            // Asking again with the same cursor would loop forever.
            return Some(End {
                reason: format!("sync cursor did not advance past {}", page.cursor),
                code: None,
            });
        }
        session.sync_cursor = page.cursor;
        let done = !page.more;
        if done {
            session.syncing = false;
        }
        for conversation in page.conversations {
            self.push(ClientEvent::Conversation(conversation));
        }
        let mut released = Vec::new();
        for message in page.messages {
            self.reorder.offer(message, &mut released);
        }
        self.push_messages(released);
        self.advance_cursor(page.cursor);
        if done {
            tracing::debug!(cursor = page.cursor, "synced");
            self.push(ClientEvent::Synced {
                cursor: page.cursor,
            });
        }
        None
    }

    fn on_history(
        &mut self,
        conversation_id: ConversationId,
        after: Seq,
        result: Result<HistoryPage, ClientError>,
    ) -> Option<End> {
        let session = self.session.as_mut()?;
        let fill = session.fills.entry(conversation_id).or_default();
        fill.in_flight = false;
        let mut released = Vec::new();
        let mut skipped = None;
        match result {
            Ok(page) => {
                let (outcome, skip) =
                    self.reorder
                        .fill(conversation_id, after, page, &mut released);
                skipped = skip;
                match outcome {
                    Fill::Closed => {
                        session.fills.remove(&conversation_id);
                    }
                    Fill::Progress => fill.failures = 0,
                    Fill::NoProgress => {
                        fill.failures += 1;
                        if fill.failures >= FILL_FAILURES_MAX {
                            tracing::warn!(
                                conversation_id,
                                after,
                                "gap cannot be filled: skipping"
                            );
                            skipped = self.reorder.skip_gap(conversation_id, &mut released);
                            session.fills.remove(&conversation_id);
                        } else {
                            let delay = self.config.backoff.next_delay(fill.failures);
                            fill.retry_at = Some(Instant::now() + delay);
                        }
                    }
                }
            }
            Err(error) => match error.code() {
                Some(ErrorCode::NotMember | ErrorCode::NotFound | ErrorCode::Forbidden) => {
                    // No longer ours to read: what is held back is all we will get.
                    tracing::info!(conversation_id, %error, "history refused: skipping the gap");
                    skipped = self.reorder.skip_gap(conversation_id, &mut released);
                    session.fills.remove(&conversation_id);
                }
                _ if is_connection_error(&error) => {
                    return Some(End {
                        reason: format!("history failed: {error}"),
                        code: None,
                    });
                }
                _ => {
                    fill.failures += 1;
                    let delay = retry_delay(&error)
                        .unwrap_or_else(|| self.config.backoff.next_delay(fill.failures));
                    fill.retry_at = Some(Instant::now() + delay);
                }
            },
        }
        if let Some((first, last)) = skipped {
            self.push(ClientEvent::Skipped {
                conversation_id,
                first,
                last,
            });
        }
        self.push_messages(released);
        self.release_deferred_cursor();
        None
    }

    fn on_send(&mut self, key: u64, result: Result<Ack, ClientError>) -> Option<End> {
        if let Some(session) = &mut self.session {
            session.sends_in_flight = session.sends_in_flight.saturating_sub(1);
        }
        match result {
            // A duplicate ack is a success too: an earlier attempt was committed.
            Ok(ack) => {
                if let Some(mut entry) = self.outbox.remove(&key) {
                    entry.resolve(Ok(ack));
                }
                None
            }
            Err(error) if is_connection_error(&error) => {
                // Stays in the outbox; the next connection sends it again.
                Some(End {
                    reason: format!("send failed: {error}"),
                    code: None,
                })
            }
            Err(error) => {
                if let Some(delay) = retry_delay(&error) {
                    if let Some(entry) = self.outbox.get(&key) {
                        let delay = delay.max(self.config.backoff.next_delay(entry.attempts));
                        self.delayed.push((Instant::now() + delay, key));
                    }
                } else if let Some(mut entry) = self.outbox.remove(&key) {
                    entry.resolve(Err(error));
                }
                None
            }
        }
    }

    // ----- events -----

    fn on_frame(&mut self, frame: ServerFrame) -> Option<End> {
        match frame {
            ServerFrame::Message { cursor, message } => {
                if self.config.sync {
                    let mut released = Vec::new();
                    self.reorder.offer(message, &mut released);
                    self.push_messages(released);
                    self.live_cursor(cursor);
                }
            }
            ServerFrame::Receipt { cursor, receipt } => {
                self.push(ClientEvent::Receipt(receipt));
                self.live_cursor(cursor);
            }
            ServerFrame::Conversation {
                cursor,
                conversation,
            } => {
                self.push(ClientEvent::Conversation(conversation));
                self.live_cursor(cursor);
            }
            ServerFrame::Typing {
                conversation_id,
                user_id,
                active,
                ttl_ms,
            } => self.push(ClientEvent::Typing {
                conversation_id,
                user_id,
                active,
                ttl_ms,
            }),
            ServerFrame::Presence(presence) => self.push(ClientEvent::Presence(presence)),
            ServerFrame::Reconnect { reason } => {
                return Some(End {
                    reason: format!("server asked to reconnect: {reason}"),
                    code: None,
                });
            }
            ServerFrame::Error { error, .. } => {
                tracing::warn!(code = error.code.as_str(), message = %error.message, "server error");
            }
            other @ (ServerFrame::Hello(_) | ServerFrame::Result { .. }) => {
                tracing::debug!(frame = frame_name(&other), "unexpected frame ignored");
            }
        }
        None
    }

    /// A live event's cursor counts only after the post-connect sync: before that, the sync
    /// has not yet delivered everything below it.
    fn live_cursor(&mut self, cursor: Pos) {
        let synced = self.session.as_ref().is_some_and(|s| !s.syncing);
        if self.config.sync && synced {
            self.advance_cursor(cursor);
        }
    }

    /// Move the cursor to `cursor`, unless a gap is open: a cursor saved past messages that are
    /// still missing would make a resumed client skip them.
    fn advance_cursor(&mut self, cursor: Pos) {
        if self.reorder.has_gaps() {
            self.deferred_cursor = self.deferred_cursor.max(cursor);
            return;
        }
        let cursor = cursor.max(std::mem::take(&mut self.deferred_cursor));
        if cursor > self.cursor {
            self.cursor = cursor;
            self.pending.push_back(Pending::Cursor(cursor));
            self.settle();
        }
    }

    fn release_deferred_cursor(&mut self) {
        if self.deferred_cursor > 0 && !self.reorder.has_gaps() {
            self.advance_cursor(self.deferred_cursor);
        }
    }

    // ----- handing events to the application -----

    fn push(&mut self, event: ClientEvent) {
        self.pending.push_back(Pending::Event(event));
        self.settle();
    }

    fn push_messages(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.pending
                .push_back(Pending::Event(ClientEvent::Message(message)));
        }
        self.settle();
    }

    /// Apply cursor markers that reached the front of the queue, and, when nobody listens,
    /// everything: the invariant is that the front of `pending` is always an event for the app.
    fn settle(&mut self) {
        loop {
            match self.pending.front() {
                Some(Pending::Cursor(cursor)) => {
                    let cursor = *cursor;
                    self.pending.pop_front();
                    lock(&self.shared.taken).note(Change::Cursor(cursor), false);
                }
                Some(Pending::Reset) => {
                    self.pending.pop_front();
                    lock(&self.shared.taken).note(Change::Reset, false);
                }
                Some(Pending::Event(_)) if self.app.is_none() => {
                    if let Some(Pending::Event(event)) = self.pending.pop_front() {
                        self.record(&event);
                    }
                }
                _ => return,
            }
        }
    }

    /// Count an event, about to be handed to the channel (or dropped, when nobody listens), as
    /// delivered in the saved state once the application takes it.
    fn record(&self, event: &ClientEvent) {
        let delivered = match event {
            ClientEvent::Message(message) => Some((message.conversation_id, message.seq)),
            ClientEvent::Skipped {
                conversation_id,
                last,
                ..
            } => Some((*conversation_id, *last)),
            _ => None,
        };
        let mut taken = lock(&self.shared.taken);
        let Some((conversation_id, seq)) = delivered else {
            // Counted all the same: the changes after it wait until it is taken.
            taken.handed += 1;
            return;
        };
        taken.note(Change::Delivered(conversation_id, seq), true);
    }
}

/// How long to wait before retrying a request that failed with `error`, or `None` if retrying on
/// the same connection makes no sense.
fn retry_delay(error: &ClientError) -> Option<Duration> {
    match error {
        ClientError::Api(body, _) => match body.code {
            ErrorCode::RateLimited => {
                Some(Duration::from_millis(body.retry_after_ms.unwrap_or(1000)))
            }
            ErrorCode::ServerFull | ErrorCode::Internal | ErrorCode::TooManyConnections => {
                Some(Duration::from_millis(body.retry_after_ms.unwrap_or(500)))
            }
            // The connection is about to close; the retry happens on the next one.
            ErrorCode::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        },
        _ => None,
    }
}

/// Errors that mean the connection itself is gone or unusable.
fn is_connection_error(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Disconnected { .. } | ClientError::Timeout(_) | ClientError::Io(_)
    )
}

async fn timed<T>(
    timeout: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout(format!(
            "no reply to {what} within {timeout:?}"
        ))),
    }
}

/// A slot in the application's queue. Owned (from a cloned sender) rather than borrowed, so that
/// the driver's handlers stay free to use `self` while holding it.
async fn reserve(app: Option<mpsc::Sender<ClientEvent>>) -> Option<mpsc::OwnedPermit<ClientEvent>> {
    match app {
        Some(app) => app.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

async fn poll_option<T>(future: &mut Option<BoxFuture<T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_event(conn: &mut Option<Connection>) -> Option<ServerFrame> {
    match conn {
        Some(conn) => conn.next_event().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::ErrorBody;

    fn api(code: ErrorCode, retry_after_ms: Option<u64>) -> ClientError {
        ClientError::from_body(ErrorBody {
            code,
            message: String::new(),
            retry_after_ms,
        })
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Client::start(ClientConfig::new(["127.0.0.1:1"], "t")).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)));
    }

    #[tokio::test]
    async fn a_config_without_usable_servers_is_refused() {
        let none: [&str; 0] = [];
        assert!(Client::start(ClientConfig::new(none, "t")).is_err());
        assert!(Client::start(ClientConfig::new(["wss://tls.example"], "t")).is_err());
    }

    #[test]
    fn rate_limits_are_retried_after_the_servers_delay() {
        assert_eq!(
            retry_delay(&api(ErrorCode::RateLimited, Some(250))),
            Some(Duration::from_millis(250))
        );
        assert!(retry_delay(&api(ErrorCode::RateLimited, None)).is_some());
        assert!(retry_delay(&api(ErrorCode::ShuttingDown, None)).is_some());
    }

    #[test]
    fn refusals_are_final_and_connection_errors_end_the_session() {
        for code in [
            ErrorCode::NotMember,
            ErrorCode::MessageTooLarge,
            ErrorCode::InvalidRequest,
            ErrorCode::Forbidden,
        ] {
            assert_eq!(retry_delay(&api(code, None)), None, "{code:?}");
            assert!(!is_connection_error(&api(code, None)));
        }
        let gone = ClientError::Disconnected {
            code: Some(1012),
            reason: "restart".into(),
        };
        assert!(is_connection_error(&gone));
        assert!(is_connection_error(&ClientError::Timeout("send".into())));
        assert_eq!(retry_delay(&gone), None);
    }

    #[test]
    fn config_defaults_follow_the_contract() {
        let config = ClientConfig::new(["127.0.0.1:8080"], "t").with_state(ClientState {
            cursor: 5,
            delivered: HashMap::from([(1, 2)]),
        });
        assert!(config.sync);
        assert_eq!(config.backoff, Backoff::default());
        assert_eq!(config.state.map(|s| s.cursor), Some(5));
    }
}
