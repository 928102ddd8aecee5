//! One WebSocket connection to a server: the `hello`, commands with their replies, pushed events.
//!
//! This layer does not reconnect, sync or dedupe; [`crate::Client`] does that on top of it. It is
//! public for tools that want the raw protocol (tests, load generators, the delivery checker).
//!
//! Two tasks own the socket: a reader that hands `result`/`error` frames to the request that waits
//! for them and pushes every other frame into a bounded event queue, and a writer fed by a bounded
//! queue. Separate tasks matter: a write stuck on a full socket must never stop the reader, or
//! the server's pings go unanswered and both sides wait on each other.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use natter_proto::{
    Ack, ClientFrame, Command, Content, Conversation, ConversationId, ConversationList, Empty,
    ErrorBody, ErrorCode, Hello, HistoryPage, Pos, PresenceList, Receipt, Seq, ServerFrame,
    SyncPage, User, UserId,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ClientError, chain};
use crate::util::ws_url;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = Result<Value, ClientError>;

/// Tuning of one connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed for TCP connect plus the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Time allowed between the handshake and the `hello` frame.
    pub hello_timeout: Duration,
    /// Pushed events queued for [`Connection::next_event`]. When the queue is full the reader
    /// stops reading, so a consumer that falls behind slows the socket down instead of growing
    /// memory (and the server eventually closes it as a slow consumer).
    pub event_capacity: usize,
    /// Outgoing frames queued for the writer.
    pub write_capacity: usize,
    /// Largest frame accepted from the server.
    pub max_message_size: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            write_capacity: 256,
            max_message_size: 16 << 20,
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code the server sent (see `natter_proto::close_code`), if it sent one.
    pub code: Option<u16>,
    /// The server's close reason, or what broke the connection.
    pub reason: String,
}

impl CloseInfo {
    fn to_error(&self) -> ClientError {
        ClientError::Disconnected {
            code: self.code,
            reason: self.reason.clone(),
        }
    }
}

enum Outgoing {
    Text(String),
    Close,
}

#[derive(Default)]
struct SharedState {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    closed: Option<CloseInfo>,
}

struct Shared {
    next_id: AtomicU64,
    out: mpsc::Sender<Outgoing>,
    /// From `hello`; 0 means no limit announced.
    frame_bytes_max: usize,
    state: Mutex<SharedState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A panic while holding this lock leaves the map consistent (every operation is a single
        // insert or remove), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn resolve(&self, id: u64, reply: Reply) {
        let waiter = self.lock().pending.remove(&id);
        match waiter {
            // The requester may have given up (dropped its future); nothing to do then.
            Some(waiter) => drop(waiter.send(reply)),
            None => tracing::debug!(id, "reply to an unknown or abandoned request"),
        }
    }

    /// Mark the connection closed and fail every waiting request. Idempotent: the first reason
    /// wins, because it is the one that explains what happened.
    fn finish(&self, info: CloseInfo) {
        let waiters = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(info);
            }
            std::mem::take(&mut state.pending)
        };
        let error = self.closed_error();
        for (_, waiter) in waiters {
            drop(waiter.send(Err(error.clone())));
        }
    }

    fn closed_error(&self) -> ClientError {
        match &self.lock().closed {
            Some(info) => info.to_error(),
            None => ClientError::Disconnected {
                code: None,
                reason: "connection closed".into(),
            },
        }
    }
}

/// Removes a request's waiter if the request future is dropped before its reply came, so that
/// abandoned requests do not accumulate on a long-lived connection.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

/// A cloneable handle that sends commands on a connection and waits for their replies.
///
/// It stays usable (failing with [`ClientError::Disconnected`]) after the connection is gone, so
/// tasks can hold one without caring about the connection's lifetime.
#[derive(Clone)]
pub struct Requester {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester").finish_non_exhaustive()
    }
}

impl Requester {
    /// Send a command and wait for its `result` data; an `error` frame becomes
    /// [`ClientError::Api`].
    pub async fn request(&self, command: Command) -> Result<Value, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let text = ClientFrame { id, command }.encode_json();
        if self.shared.frame_bytes_max > 0 && text.len() > self.shared.frame_bytes_max {
            // The server would close the whole connection over it: refuse it here instead.
            return Err(ClientError::from_body(ErrorBody {
                code: ErrorCode::FrameTooLarge,
                message: format!(
                    "frame of {} bytes exceeds the server's limit of {}",
                    text.len(),
                    self.shared.frame_bytes_max
                ),
                retry_after_ms: None,
            }));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(info) = &state.closed {
                return Err(info.to_error());
            }
            state.pending.insert(id, tx);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        if self.shared.out.send(Outgoing::Text(text)).await.is_err() {
            return Err(self.shared.closed_error());
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    /// [`request`](Self::request), decoding the `result` data as `T`.
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        command: Command,
    ) -> Result<T, ClientError> {
        let name = command.name();
        decode_result(name, self.request(command).await?)
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// `ping`: a round trip that does nothing.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request(Command::Ping {}).await.map(drop)
    }

    /// `send`: one message, acknowledged once durably committed. This is the raw command: it is
    /// not retried; [`crate::Client::send`] is the reliable way.
    pub async fn send(
        &self,
        conversation_id: ConversationId,
        client_msg_id: &str,
        content: Content,
        reply_to: Option<Seq>,
    ) -> Result<Ack, ClientError> {
        self.request_as(Command::Send {
            conversation_id,
            client_msg_id: client_msg_id.to_string(),
            content,
            reply_to,
        })
        .await
    }

    /// `history`: a page of a conversation in ascending `seq`, before or after a `seq`.
    pub async fn history(
        &self,
        conversation_id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        self.request_as(Command::History {
            conversation_id,
            before,
            after,
            limit,
        })
        .await
    }

    /// `sync`: one page of changes since `cursor`.
    pub async fn sync(&self, cursor: Pos, limit: Option<u32>) -> Result<SyncPage, ClientError> {
        self.request_as(Command::Sync { cursor, limit }).await
    }

    /// `mark`: move this user's delivered and/or read markers forward.
    pub async fn mark(
        &self,
        conversation_id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Receipt, ClientError> {
        self.request_as(Command::Mark {
            conversation_id,
            delivered,
            read,
        })
        .await
    }

    /// `typing`: tell the other members this user is typing (or stopped).
    pub async fn typing(
        &self,
        conversation_id: ConversationId,
        active: bool,
    ) -> Result<(), ClientError> {
        self.request_as::<Empty>(Command::Typing {
            conversation_id,
            active,
        })
        .await
        .map(drop)
    }

    /// `conversations`: this user's conversations.
    pub async fn conversations(&self) -> Result<ConversationList, ClientError> {
        self.request_as(Command::Conversations {}).await
    }

    /// `conversation`: one conversation's state.
    pub async fn conversation(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Conversation, ClientError> {
        self.request_as(Command::Conversation { conversation_id })
            .await
    }

    /// `create_direct`: the direct conversation with a user, created if needed.
    pub async fn create_direct(&self, user_id: UserId) -> Result<Conversation, ClientError> {
        self.request_as(Command::CreateDirect { user_id }).await
    }

    /// `create_group`: a new group owned by this user.
    pub async fn create_group(
        &self,
        title: &str,
        member_ids: Vec<UserId>,
    ) -> Result<Conversation, ClientError> {
        self.request_as(Command::CreateGroup {
            title: title.to_string(),
            member_ids,
        })
        .await
    }

    /// `lookup_user`: a user by username.
    pub async fn lookup_user(&self, username: &str) -> Result<User, ClientError> {
        self.request_as(Command::LookupUser {
            username: Some(username.to_string()),
            user_id: None,
        })
        .await
    }

    /// `lookup_user` by id: a user who shares or shared a conversation with you.
    pub async fn lookup_user_by_id(&self, user_id: UserId) -> Result<User, ClientError> {
        self.request_as(Command::LookupUser {
            username: None,
            user_id: Some(user_id),
        })
        .await
    }

    /// `presence`: whether these users are online.
    pub async fn presence(&self, user_ids: Vec<UserId>) -> Result<PresenceList, ClientError> {
        self.request_as(Command::Presence { user_ids }).await
    }

    /// `logout`: revoke this device's token; the server then closes the connection.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.request(Command::Logout {}).await.map(drop)
    }
}

fn decode_result<T: DeserializeOwned>(name: &str, data: Value) -> Result<T, ClientError> {
    serde_json::from_value(data)
        .map_err(|e| ClientError::Protocol(format!("unexpected `{name}` result: {e}")))
}

/// The id of the `sync` that [`Connection::connect_and_sync`] sends before the `hello`: the first
/// of the connection's ids, so that no later request can take it.
const EARLY_SYNC_ID: u64 = 1;

/// The reply to the `sync` that [`Connection::connect_and_sync`] sent before the `hello` came.
///
/// It fails with [`ClientError::Disconnected`] if the connection ends first, like any request.
/// Dropping it abandons the page (the reply is then discarded when it arrives).
#[derive(Debug)]
pub struct EarlySync {
    reply: oneshot::Receiver<Reply>,
    requester: Requester,
}

impl EarlySync {
    /// Wait for the page.
    pub async fn page(self) -> Result<SyncPage, ClientError> {
        match self.reply.await {
            Ok(reply) => decode_result("sync", reply?),
            Err(_) => Err(self.requester.shared.closed_error()),
        }
    }
}

/// An open WebSocket connection that has received its `hello`.
///
/// Derefs to its [`Requester`] for commands. Dropping it closes the socket and fails every
/// request still waiting.
pub struct Connection {
    server: String,
    hello: Hello,
    requester: Requester,
    events: mpsc::Receiver<ServerFrame>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("user", &self.hello.user.username)
            .field("device_id", &self.hello.device_id)
            .finish_non_exhaustive()
    }
}

impl Deref for Connection {
    type Target = Requester;

    fn deref(&self) -> &Requester {
        &self.requester
    }
}

impl Connection {
    /// Connect to `server` (`http://host:port`, `ws://host:port` or `host:port`) with a token and
    /// wait for the `hello`, with default options.
    pub async fn connect(server: &str, token: &str) -> Result<Connection, ClientError> {
        Connection::connect_with(server, token, &ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(
        server: &str,
        token: &str,
        options: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let (connection, _) = Connection::open(server, token, options, None).await?;
        Ok(connection)
    }

    /// [`connect_with`](Self::connect_with), sending `sync {cursor, limit}` right after the
    /// WebSocket upgrade instead of after the `hello`: the server reads it after the hello
    /// (protocol.md §3.2, §9.4), so a client that comes back saves a round trip. The token names
    /// the user, so a cursor saved for this token's user is the right one to send.
    pub async fn connect_and_sync(
        server: &str,
        token: &str,
        options: &ConnectOptions,
        cursor: Pos,
        limit: Option<u32>,
    ) -> Result<(Connection, EarlySync), ClientError> {
        let (connection, reply) = Connection::open(
            server,
            token,
            options,
            Some(Command::Sync { cursor, limit }),
        )
        .await?;
        let reply = reply.ok_or_else(|| ClientError::Protocol("the sync was not sent".into()))?;
        let early = EarlySync {
            reply,
            requester: connection.requester(),
        };
        Ok((connection, early))
    }

    /// Connect, write `before_hello` (as request [`EARLY_SYNC_ID`]) if there is one, and wait for
    /// the `hello`; the receiver gets that request's reply.
    async fn open(
        server: &str,
        token: &str,
        options: &ConnectOptions,
        before_hello: Option<Command>,
    ) -> Result<(Connection, Option<oneshot::Receiver<Reply>>), ClientError> {
        let url = ws_url(server, token)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Config(format!("`{server}`: {e}")))?;
        // The token also goes in the header: the server accepts either, and a proxy that strips
        // query strings from upgrade requests then still lets the client in.
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Config("the token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let config = WebSocketConfig::default()
            .max_message_size(Some(options.max_message_size))
            .max_frame_size(Some(options.max_message_size));

        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (mut ws, _response) = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout(format!("connecting to {server}")))?
            .map_err(handshake_error)?;

        let early = before_hello.is_some();
        if let Some(command) = before_hello {
            let text = ClientFrame {
                id: EARLY_SYNC_ID,
                command,
            }
            .encode_json();
            ws.send(WsMessage::text(text))
                .await
                .map_err(|e| ClientError::Io(chain(&e)))?;
        }

        let hello = tokio::time::timeout(options.hello_timeout, read_hello(&mut ws))
            .await
            .map_err(|_| ClientError::Timeout(format!("waiting for hello from {server}")))??;

        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(options.write_capacity.max(1));
        let (events_tx, events_rx) = mpsc::channel(options.event_capacity.max(1));
        let (failed_tx, failed_rx) = oneshot::channel();
        let mut state = SharedState::default();
        // Registered before the reader starts, so the reply (which follows the hello) finds it.
        let early_reply = early.then(|| {
            let (tx, rx) = oneshot::channel();
            state.pending.insert(EARLY_SYNC_ID, tx);
            rx
        });
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(EARLY_SYNC_ID + 1),
            out: out_tx,
            frame_bytes_max: hello.limits.frame_bytes_max,
            state: Mutex::new(state),
        });
        let writer = tokio::spawn(write_loop(sink, out_rx, failed_tx));
        let reader = tokio::spawn(read_loop(stream, shared.clone(), events_tx, failed_rx));
        let connection = Connection {
            server: server.to_string(),
            hello,
            requester: Requester { shared },
            events: events_rx,
            reader,
            writer,
        };
        Ok((connection, early_reply))
    }

    /// The server address this connection was opened with (without the token).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The `hello` the server opened with: who we are, and the limits to respect.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// A cloneable handle for commands, usable from other tasks.
    pub fn requester(&self) -> Requester {
        self.requester.clone()
    }

    /// The next pushed event (`message`, `receipt`, `conversation`, `typing`, `presence`,
    /// `reconnect`, or an `error` without id); `None` once the connection has closed and every
    /// event before the close was taken. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<ServerFrame> {
        self.events.recv().await
    }

    /// The event queue itself, for `select!` loops and stream adapters.
    pub fn events(&mut self) -> &mut mpsc::Receiver<ServerFrame> {
        &mut self.events
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.requester.shared.lock().closed.clone()
    }

    /// Close with a normal close frame and wait (briefly) for the server to acknowledge it.
    pub async fn close(mut self) {
        if self.requester.shared.out.try_send(Outgoing::Close).is_ok() {
            // The reader ends when the server answers the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.reader).await;
        }
        // Drop aborts whatever is left.
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.requester.shared.finish(CloseInfo {
            code: None,
            reason: "connection closed by the client".into(),
        });
    }
}

/// Map a failed handshake to an error, reading the server's error body when it refused us with
/// an HTTP status (e.g. 401 for a bad token).
fn handshake_error(err: WsError) -> ClientError {
    match err {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(body) {
                Ok(error) => ClientError::Api(error, status),
                Err(_) => ClientError::Http(
                    status,
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                ),
            }
        }
        WsError::Io(e) => ClientError::Io(chain(&e)),
        other => ClientError::Protocol(format!("WebSocket handshake: {}", chain(&other))),
    }
}

/// Read frames until the `hello`; anything else first means the server refused us.
async fn read_hello(ws: &mut Ws) -> Result<Hello, ClientError> {
    loop {
        let Some(message) = ws.next().await else {
            return Err(ClientError::Disconnected {
                code: None,
                reason: "closed before hello".into(),
            });
        };
        match message.map_err(|e| ClientError::Io(chain(&e)))? {
            WsMessage::Text(text) => {
                return match ServerFrame::decode_json(&text) {
                    Ok(ServerFrame::Hello(hello)) => Ok(hello),
                    Ok(ServerFrame::Error { error, .. }) => Err(ClientError::from_body(error)),
                    Ok(other) => Err(ClientError::Protocol(format!(
                        "expected hello, got {}",
                        frame_name(&other)
                    ))),
                    Err(e) => Err(ClientError::Protocol(format!("undecodable hello: {e}"))),
                };
            }
            WsMessage::Close(frame) => {
                let info = close_info(frame.as_ref());
                return Err(info.to_error());
            }
            // Pings are answered by tungstenite itself.
            _ => {}
        }
    }
}

fn close_info(frame: Option<&CloseFrame>) -> CloseInfo {
    match frame {
        Some(frame) => CloseInfo {
            code: Some(u16::from(frame.code)),
            reason: frame.reason.to_string(),
        },
        None => CloseInfo {
            code: None,
            reason: "closed without a code".into(),
        },
    }
}

/// The `type` of a server frame, for logs.
pub(crate) fn frame_name(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Hello(_) => "hello",
        ServerFrame::Result { .. } => "result",
        ServerFrame::Error { .. } => "error",
        ServerFrame::Message { .. } => "message",
        ServerFrame::Receipt { .. } => "receipt",
        ServerFrame::Conversation { .. } => "conversation",
        ServerFrame::Typing { .. } => "typing",
        ServerFrame::Presence(_) => "presence",
        ServerFrame::Reconnect { .. } => "reconnect",
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, WsMessage>,
    mut out: mpsc::Receiver<Outgoing>,
    failed: oneshot::Sender<String>,
) {
    while let Some(item) = out.recv().await {
        let result = match item {
            // Feed without flushing while more frames are queued: one syscall for a burst.
            Outgoing::Text(text) => match sink.feed(WsMessage::text(text)).await {
                Ok(()) if out.is_empty() => sink.flush().await,
                other => other,
            },
            Outgoing::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
                return;
            }
        };
        if let Err(e) = result {
            let _ = failed.send(chain(&e));
            return;
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    events: mpsc::Sender<ServerFrame>,
    failed: oneshot::Receiver<String>,
) {
    let mut failed = Some(failed);
    let mut close: Option<CloseInfo> = None;
    let end = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            failure = wait_failure(&mut failed) => break failure,
        };
        let message = match next {
            None => break "connection closed".to_string(),
            Some(Err(e)) => break chain(&e),
            Some(Ok(message)) => message,
        };
        let text = match message {
            WsMessage::Text(text) => text,
            WsMessage::Close(frame) => {
                // tungstenite answers the close; the stream ends right after.
                close = Some(close_info(frame.as_ref()));
                continue;
            }
            WsMessage::Binary(_) => {
                tracing::warn!("ignoring a binary frame: this client speaks JSON");
                continue;
            }
            _ => continue,
        };
        let frame = match ServerFrame::decode_json(&text) {
            Ok(frame) => frame,
            Err(e) => {
                // A newer server may send frames this client does not know: skip, don't die.
                tracing::warn!(error = %e, "ignoring an undecodable frame");
                continue;
            }
        };
        match frame {
            ServerFrame::Result { id, data } => shared.resolve(id, Ok(data)),
            ServerFrame::Error {
                id: Some(id),
                error,
            } => shared.resolve(id, Err(ClientError::from_body(error))),
            ServerFrame::Hello(_) => tracing::debug!("ignoring a second hello"),
            event => {
                tokio::select! {
                    // A dropped receiver only means nobody wants events; replies still matter.
                    _ = events.send(event) => {}
                    failure = wait_failure(&mut failed) => break failure,
                }
            }
        }
    };
    let info = close.unwrap_or(CloseInfo {
        code: None,
        reason: end,
    });
    shared.finish(info);
}

/// Resolves when the writer reports a failure; pends forever once the writer has ended without
/// one (after sending a close frame), leaving the reader to see the close through.
async fn wait_failure(failed: &mut Option<oneshot::Receiver<String>>) -> String {
    if let Some(receiver) = failed {
        match receiver.await {
            Ok(reason) => return format!("write failed: {reason}"),
            Err(_) => *failed = None,
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_give_their_code_and_reason() {
        let frame = CloseFrame {
            code: CloseCode::from(4008),
            reason: "slow consumer".into(),
        };
        assert_eq!(
            close_info(Some(&frame)),
            CloseInfo {
                code: Some(4008),
                reason: "slow consumer".into()
            }
        );
        assert_eq!(close_info(None).code, None);
    }

    #[test]
    fn finishing_fails_waiters_with_the_first_reason() {
        let (out, _rx) = mpsc::channel(1);
        let shared = Shared {
            next_id: AtomicU64::new(1),
            out,
            frame_bytes_max: 0,
            state: Mutex::new(SharedState::default()),
        };
        let (tx, mut rx) = oneshot::channel();
        shared.lock().pending.insert(1, tx);
        shared.finish(CloseInfo {
            code: Some(1012),
            reason: "restart".into(),
        });
        shared.finish(CloseInfo {
            code: None,
            reason: "later".into(),
        });
        let reply = rx.try_recv().unwrap();
        assert!(matches!(
            reply,
            Err(ClientError::Disconnected {
                code: Some(1012),
                ..
            })
        ));
        assert!(shared.lock().pending.is_empty());
    }

    #[tokio::test]
    async fn refused_connections_fail_fast() {
        let err = Connection::connect("127.0.0.1:1", "t").await.unwrap_err();
        assert!(matches!(err, ClientError::Io(_)), "{err:?}");
    }

    #[test]
    fn handshake_refusals_keep_the_servers_error() {
        let response = tokio_tungstenite::tungstenite::http::Response::builder()
            .status(401)
            .body(Some(
                br#"{"code":"unauthorized","message":"bad token"}"#.to_vec(),
            ))
            .unwrap();
        let err = handshake_error(WsError::Http(Box::new(response)));
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
        assert!(err.is_auth());
    }
}
