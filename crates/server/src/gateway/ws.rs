//! `GET /v1/ws`: authenticate, admit under the connection limits, then run one connection:
//! commands in, replies and queued events out, heartbeats, and a clean close with a reason.
//!
//! A connection speaks one encoding, chosen by WebSocket subprotocol at the handshake: JSON text
//! frames (`natter.v1.json`, or no subprotocol) or protobuf binary frames (`natter.v1.proto`).

use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use natter_core::{Error, Session};
use natter_proto::{
    ClientFrame, Command, Empty, Encoding, ErrorBody, ErrorCode, Hello, PROTOCOL_VERSION,
    ResultData, ServerFrame, close_code, encode_error, encode_error_proto, encode_result,
    encode_result_proto,
};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ApiQuery};
use crate::sessions::hub::Attached;
use crate::sessions::queue::Frame;
use crate::sessions::{CloseReason, SessionQueue};

/// Per-connection read buffer: small, because an idle connection should cost a few KiB.
const READ_BUFFER_BYTES: usize = 1024;
/// Writes are flushed once this much is buffered (and after every batch).
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Consecutive `send` commands of one connection that may be committing at once. A client with
/// several messages to send (an outbox after a reconnect, a busy bot) should not pay one commit
/// round trip per message, and under load one commit group then takes them all.
const SENDS_IN_FLIGHT_MAX: usize = 32;

/// Commands under way, answered in the order they arrived.
type InFlight = FuturesOrdered<Pin<Box<dyn Future<Output = (Frame, After)> + Send>>>;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// The token of an `Authorization: Bearer …` header. The scheme is case-insensitive (RFC 9110
/// §11.1): `bearer …` is the same header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The encoding a client asked for: the first subprotocol it offered that the server knows, in the
/// client's order of preference (axum's `protocols` would take the server's order, and its
/// `requested_protocols` has lost the client's). `None`: nothing known was offered, the connection
/// is JSON and the handshake names no subprotocol.
pub fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    Encoding::negotiate(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    )
}

/// An encoded frame of a connection's encoding.
fn encode(encoding: Encoding, frame: &ServerFrame) -> Frame {
    match encoding {
        Encoding::Json => Frame::Text(Utf8Bytes::from(frame.encode_json())),
        // Only `result` frames can fail to encode, and those are encoded by `Reply`.
        Encoding::Proto => Frame::Binary(Bytes::from(frame.encode_proto().unwrap_or_default())),
    }
}

fn error_frame(encoding: Encoding, id: Option<u64>, error: &ErrorBody) -> Frame {
    match encoding {
        Encoding::Json => Frame::Text(Utf8Bytes::from(encode_error(id, error))),
        Encoding::Proto => Frame::Binary(Bytes::from(encode_error_proto(id, error))),
    }
}

/// Releases an admitted connection's place when it ends, however it ends.
struct Admission(Arc<AppState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.connections_admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
    mut ws: WebSocketUpgrade,
) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        return ApiError(Error::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ))
        .into_response();
    }
    let token = bearer_token(&headers)
        .map(str::to_string)
        .or(query.token)
        .unwrap_or_default();
    let session = match app.core.authenticate(&token).await {
        Ok(session) => session,
        Err(e) => return ApiError(e).into_response(),
    };
    let admitted = app.connections_admitted.fetch_add(1, Ordering::AcqRel) + 1;
    let admission = Admission(app.clone());
    if admitted > app.connections_max {
        app.metrics.connections_refused.inc();
        return ApiError(Error::new(
            ErrorCode::ServerFull,
            "this server holds as many connections as it can; try another node or later",
        ))
        .into_response();
    }
    if app.hub.sessions_of(session.user.id) >= app.config.limits.connections_per_user_max {
        return ApiError(Error::new(
            ErrorCode::TooManyConnections,
            format!(
                "at most {} connections per user",
                app.config.limits.connections_per_user_max
            ),
        ))
        .into_response();
    }
    let frame_bytes_max = app.config.limits.frame_bytes_max;
    let encoding = match negotiate(&headers) {
        Some(encoding) => {
            ws.set_selected_protocol(HeaderValue::from_static(encoding.subprotocol()));
            encoding
        }
        None => Encoding::Json,
    };
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // Frames up to 4× the limit are read and answered with `frame_too_large`; beyond that the
        // connection is closed with 1009 rather than buffering without end.
        .max_message_size(frame_bytes_max * 4)
        .max_frame_size(frame_bytes_max * 4)
        .on_upgrade(move |socket| async move {
            let _admission = admission;
            Connection::run(app, session, encoding, socket).await;
        })
}

/// What the connection does after sending a reply.
enum After {
    Continue,
    Close(CloseReason),
}

/// One WebSocket connection's state. Kept small: it lives as long as the connection.
struct Connection {
    app: Arc<AppState>,
    session: Arc<Session>,
    socket: WebSocket,
    queue: Arc<SessionQueue>,
    encoding: Encoding,
}

impl Connection {
    async fn run(app: Arc<AppState>, session: Session, encoding: Encoding, socket: WebSocket) {
        let queue = Arc::new(
            SessionQueue::new(
                session.user.id,
                session.device_id,
                app.config.limits.outbound_queue_frames_max,
            )
            .with_encoding(encoding),
        );
        let mut connection = Connection {
            app,
            session: Arc::new(session),
            socket,
            queue,
            encoding,
        };
        if connection.subscribe().await {
            let reason = connection.serve().await;
            connection.close(reason).await;
        }
        connection.app.hub.detach(&connection.queue);
    }

    /// Attach to the hub and wait until this user's conversations are subscribed, so that nothing
    /// committed after the hello can miss this connection.
    async fn subscribe(&mut self) -> bool {
        let app = self.app.clone();
        let user = self.session.user.id;
        let subscribed = match app.hub.attach(self.queue.clone()) {
            Attached::Ready => true,
            Attached::Load => match app.core.store().conversation_ids_of(user).await {
                Ok(ids) => {
                    app.hub.finish_loading(user, ids);
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, user, "loading conversations");
                    app.hub.abort_loading(user);
                    false
                }
            },
            Attached::Wait(mut done) => done.wait_for(|loaded| *loaded).await.is_ok(),
        };
        // In a cluster the broker's subscriptions must be in effect before the hello, too.
        if subscribed {
            app.hub.flush_subscriptions().await;
        }
        subscribed
    }

    /// The connection's loop; returns why it ends (`None`: the client went away).
    async fn serve(&mut self) -> Option<CloseReason> {
        let limits = &self.app.config.limits;
        let heartbeat_interval = Duration::from_millis(limits.heartbeat_interval_ms);
        let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            user: self.session.user.clone(),
            device_id: self.session.device_id,
            limits: natter_proto::Limits {
                frame_bytes_max: limits.frame_bytes_max,
                message_bytes_max: limits.message_bytes_max,
                sends_per_second: limits.sends_per_second,
                history_page_max: limits.history_page_max,
                sync_page_max: limits.sync_page_max,
                heartbeat_interval_ms: limits.heartbeat_interval_ms,
                idle_timeout_ms: limits.idle_timeout_ms,
                typing_ttl_ms: limits.typing_ttl_ms,
            },
        };
        let hello = encode(self.encoding, &ServerFrame::Hello(hello));
        if !self.write(vec![hello]).await {
            return None;
        }
        let touch = (self.app.clone(), self.session.clone());
        tokio::spawn(async move {
            let (app, session) = touch;
            if let Err(e) = app.core.touch(&session).await {
                tracing::warn!(error = %e, "touching device");
            }
        });

        // The first ping one interval after the hello: an interval's first tick is at once, and
        // a ping right after the hello would cost every connect a write and a pong for nothing
        // (19,000 of each in a reconnect storm).
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat_interval,
            heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut outgoing = Vec::new();
        let mut in_flight = InFlight::new();
        // A command other than `send` runs only once every command before it is answered, so
        // that it sees their effects (a `history` after a `send` includes the message).
        let mut waiting: Option<ClientFrame> = None;
        loop {
            tokio::select! {
                biased;
                // Replies before queued events: the store answers a commit group before it hands
                // the events to the fan-out, so a send's ack has resolved by the time its own
                // message event is queued here, and the ack is written first.
                Some((reply, after)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let After::Close(reason) = after {
                        return if self.write(vec![reply]).await { Some(reason) } else { None };
                    }
                    // One write for every answer that is ready and the events queued meanwhile
                    // (the sender's own message): a syscall per frame is most of a send's cost.
                    let mut frames = vec![reply];
                    let mut close = None;
                    while let Some(Some((reply, after))) = in_flight.next().now_or_never() {
                        frames.push(reply);
                        if let After::Close(reason) = after {
                            close = Some(reason);
                            break;
                        }
                    }
                    if close.is_none() && let Some(reason) = self.queue.drain(&mut frames) {
                        return self.wind_down(reason, frames, &mut in_flight).await;
                    }
                    if !self.write(frames).await {
                        return None;
                    }
                    if close.is_some() {
                        return close;
                    }
                    if in_flight.is_empty()
                        && let Some(frame) = waiting.take()
                        && let ControlFlow::Break(end) = self.run_now(frame).await
                    {
                        return end;
                    }
                }
                _ = self.queue.ready() => {
                    if let Some(reason) = self.queue.drain(&mut outgoing) {
                        return self.wind_down(reason, std::mem::take(&mut outgoing), &mut in_flight).await;
                    }
                    if !self.write(std::mem::take(&mut outgoing)).await {
                        return None;
                    }
                }
                received = self.socket.recv(), if waiting.is_none() && in_flight.len() < SENDS_IN_FLIGHT_MAX => {
                    last_heard = Instant::now();
                    let frame = match received {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read");
                            if let Some((code, reason)) = close_for(&e) {
                                self.close_with(code, reason).await;
                            }
                            return None;
                        }
                        None => return None,
                    };
                    let inbound = match &frame {
                        WsMessage::Text(text) => Inbound::Text(text.as_str()),
                        WsMessage::Binary(bytes) => Inbound::Binary(bytes),
                        WsMessage::Close(_) => {
                            // Answer the client's close so that it sees a clean close, not 1006.
                            let timeout = Duration::from_millis(self.app.config.limits.write_timeout_ms);
                            let _ = tokio::time::timeout(timeout, self.socket.close()).await;
                            return None;
                        }
                        WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                    };
                    self.app.metrics.frames_in.inc();
                    let frame = match self.decode(inbound) {
                        Ok(frame) => frame,
                        Err(error) => {
                            // Answered in its turn, after the commands before it.
                            in_flight.push_back(Box::pin(std::future::ready((error, After::Continue))));
                            continue;
                        }
                    };
                    if matches!(frame.command, Command::Send { .. }) {
                        in_flight.push_back(self.pipelined(frame));
                    } else if !in_flight.is_empty() {
                        waiting = Some(frame);
                    } else if let ControlFlow::Break(end) = self.run_now(frame).await {
                        return end;
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > idle_timeout {
                        self.close_with(close_code::IDLE_TIMEOUT, "idle timeout").await;
                        return None;
                    }
                    if !self.send_timed(WsMessage::Ping(Default::default())).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Run one command now and write its reply; `Break` with how the connection ends.
    async fn run_now(&mut self, frame: ClientFrame) -> ControlFlow<Option<CloseReason>> {
        let (reply, after) = Box::pin(self.execute(frame)).await;
        if !self.write(vec![reply]).await {
            return ControlFlow::Break(None);
        }
        match after {
            After::Close(reason) => ControlFlow::Break(Some(reason)),
            After::Continue => ControlFlow::Continue(()),
        }
    }

    /// The queue says the connection closes. A shutdown or a resync still writes `frames` and
    /// answers the sends under way (their jobs are with the store and will commit), within the
    /// write timeout.
    async fn wind_down(
        &mut self,
        reason: CloseReason,
        frames: Vec<Frame>,
        in_flight: &mut InFlight,
    ) -> Option<CloseReason> {
        if matches!(reason, CloseReason::Shutdown | CloseReason::Resync) && self.write(frames).await
        {
            self.answer_in_flight(in_flight).await;
        }
        Some(reason)
    }

    /// Write the replies of the commands in flight as they complete, for at most the write
    /// timeout in all.
    async fn answer_in_flight(&mut self, in_flight: &mut InFlight) {
        let timeout = Duration::from_millis(self.app.config.limits.write_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some((reply, _))) = tokio::time::timeout_at(deadline, in_flight.next()).await {
            if !self.write(vec![reply]).await {
                return;
            }
        }
    }

    /// Decode one frame, or the error frame that answers it.
    fn decode(&self, inbound: Inbound<'_>) -> Result<ClientFrame, Frame> {
        let encoding = self.encoding;
        // In the order protocol.md §4.2 gives: size, then kind, then content.
        let limits = &self.app.config.limits;
        if inbound.len() > limits.frame_bytes_max {
            let error = Error::new(
                ErrorCode::FrameTooLarge,
                format!("a frame is at most {} bytes", limits.frame_bytes_max),
            );
            return Err(error_frame(encoding, None, &error.body()));
        }
        let mismatch = match (encoding, inbound) {
            (Encoding::Json, Inbound::Binary(_)) => {
                Some("binary frames are not part of the JSON protocol")
            }
            (Encoding::Proto, Inbound::Text(_)) => {
                Some("text frames are not part of the protobuf protocol")
            }
            _ => None,
        };
        if let Some(message) = mismatch {
            let body = ErrorBody {
                code: ErrorCode::MalformedFrame,
                message: message.into(),
                retry_after_ms: None,
            };
            return Err(error_frame(encoding, None, &body));
        }
        let decoded = match inbound {
            Inbound::Text(text) => ClientFrame::decode_json(text),
            Inbound::Binary(bytes) => ClientFrame::decode_proto(bytes),
        };
        decoded.map_err(|e| {
            let body = ErrorBody {
                code: e.code,
                message: e.message,
                retry_after_ms: None,
            };
            error_frame(encoding, e.id, &body)
        })
    }

    /// Execute one command; always yields exactly one reply frame, in the connection's encoding.
    fn execute(&self, frame: ClientFrame) -> impl Future<Output = (Frame, After)> + Send + 'static {
        let app = self.app.clone();
        let session = self.session.clone();
        let encoding = self.encoding;
        async move {
            let id = frame.id;
            match execute(&app, &session, frame.command).await {
                Ok(Reply { encode, after }) => (encode(id, encoding), after),
                Err(e) => {
                    if e.code == ErrorCode::Internal {
                        tracing::error!(error = %e, "command failed");
                    }
                    (error_frame(encoding, Some(id), &e.body()), After::Continue)
                }
            }
        }
    }

    /// Start a `send` while the connection goes on reading. It is polled once here, before the
    /// next frame is read, so that its job joins the store's queue (a FIFO, also while waiting
    /// for room): a connection's messages are stored in the order they arrived. The set polls it
    /// again at once (a pushed future always is), which registers the real waker.
    fn pipelined(
        &self,
        frame: ClientFrame,
    ) -> Pin<Box<dyn Future<Output = (Frame, After)> + Send>> {
        let mut future = Box::pin(self.execute(frame));
        let mut context = Context::from_waker(futures_util::task::noop_waker_ref());
        match future.as_mut().poll(&mut context) {
            Poll::Ready(done) => Box::pin(std::future::ready(done)),
            Poll::Pending => future,
        }
    }

    async fn send_timed(&mut self, message: WsMessage) -> bool {
        let timeout = Duration::from_millis(self.app.config.limits.write_timeout_ms);
        matches!(
            tokio::time::timeout(timeout, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    /// Write frames as one batch; false when the client is gone or too slow to take them.
    async fn write(&mut self, frames: Vec<Frame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let count = frames.len() as u64;
        let timeout = Duration::from_millis(self.app.config.limits.write_timeout_ms);
        let socket = &mut self.socket;
        let written = tokio::time::timeout(timeout, async move {
            for frame in frames {
                socket.feed(WsMessage::from(frame)).await?;
            }
            socket.flush().await
        })
        .await;
        self.app.metrics.frames_out.inc_by(count);
        matches!(written, Ok(Ok(())))
    }

    async fn close_with(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .send_timed(WsMessage::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
    }

    /// Say why the server closes, so that the client knows whether and how to come back.
    async fn close(&mut self, reason: Option<CloseReason>) {
        match reason {
            None => {}
            Some(going @ (CloseReason::Shutdown | CloseReason::Resync)) => {
                // The same close for both (1012: reconnect, then sync); only the words differ.
                let (why, close_reason) = if going == CloseReason::Shutdown {
                    ("the server is restarting", "server restart")
                } else {
                    (
                        "live events may have been lost between the servers: reconnect and sync",
                        "reconnect and sync",
                    )
                };
                let frame = ServerFrame::Reconnect { reason: why.into() };
                let _ = self.write(vec![encode(self.encoding, &frame)]).await;
                self.close_with(close_code::SERVICE_RESTART, close_reason)
                    .await;
            }
            Some(CloseReason::SlowConsumer) => {
                self.close_with(
                    close_code::SLOW_CONSUMER,
                    "slow consumer: reconnect and sync",
                )
                .await;
            }
            Some(CloseReason::Revoked) => {
                self.close_with(close_code::REVOKED, "logged out, revoked or disabled")
                    .await;
            }
        }
        if reason.is_some() {
            self.await_close_reply().await;
        }
    }

    /// After our close frame, read (and drop) what the client still sends until its own close
    /// frame, for at most `CLOSE_WAIT`: a socket closed with unread input is reset, and a reset
    /// can destroy what the client had not read yet — the replies and the `reconnect` frame.
    async fn await_close_reply(&mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(frame)) = self.socket.recv().await {
                if matches!(frame, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a closing connection waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The close code a read error earns, where the client's bytes were at fault (RFC 6455 §7.4.1);
/// `None` for a broken or reset connection, which nothing can be sent on.
fn close_for(e: &axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::Error as WsError;
    use tungstenite::error::ProtocolError;
    match std::error::Error::source(e)?.downcast_ref::<WsError>()? {
        WsError::Capacity(_) => Some((close_code::FRAME_TOO_LARGE, "frame too large")),
        WsError::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "text frame is not UTF-8")),
        // A reset is the network's doing (or the client's), not a frame of theirs.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((close_code::PROTOCOL_ERROR, "websocket protocol error")),
        _ => None,
    }
}

/// A frame as it was read.
#[derive(Clone, Copy)]
enum Inbound<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl Inbound<'_> {
    fn len(&self) -> usize {
        match self {
            Inbound::Text(text) => text.len(),
            Inbound::Binary(bytes) => bytes.len(),
        }
    }
}

/// A command's successful result, encoded once as its reply frame in the connection's encoding.
struct Reply {
    encode: Box<dyn FnOnce(u64, Encoding) -> Frame + Send>,
    after: After,
}

impl Reply {
    fn of<T: ResultData + Send + 'static>(data: T) -> Reply {
        Reply {
            encode: Box::new(move |id, encoding| match encoding {
                Encoding::Json => Frame::Text(Utf8Bytes::from(encode_result(id, &data))),
                Encoding::Proto => Frame::Binary(Bytes::from(encode_result_proto(id, data))),
            }),
            after: After::Continue,
        }
    }
}

/// Execute one WebSocket command through the same `Core` methods as the REST API.
async fn execute(app: &AppState, session: &Session, command: Command) -> Result<Reply, Error> {
    let core = &app.core;
    Ok(match command {
        Command::Ping {} => Reply::of(Empty {}),
        Command::Send {
            conversation_id,
            client_msg_id,
            content,
            reply_to,
        } => {
            app.limiters.send(session.user.id)?;
            let started = Instant::now();
            let ack = core
                .send(session, conversation_id, client_msg_id, content, reply_to)
                .await?;
            app.metrics
                .send_ack_seconds
                .observe(started.elapsed().as_secs_f64());
            Reply::of(ack)
        }
        Command::History {
            conversation_id,
            before,
            after,
            limit,
        } => Reply::of(
            core.history(session, conversation_id, before, after, limit)
                .await?,
        ),
        Command::Sync { cursor, limit } => Reply::of(core.sync(session, cursor, limit).await?),
        Command::Mark {
            conversation_id,
            delivered,
            read,
        } => {
            app.limiters.send(session.user.id)?;
            Reply::of(core.mark(session, conversation_id, delivered, read).await?)
        }
        Command::Typing {
            conversation_id,
            active,
        } => {
            app.limiters.typing(session.user.id)?;
            core.typing(session, conversation_id, active).await?;
            Reply::of(Empty {})
        }
        Command::Conversations {} => Reply::of(core.conversations(session).await?),
        Command::Conversation { conversation_id } => {
            Reply::of(core.conversation(session, conversation_id).await?)
        }
        Command::CreateDirect { user_id } => Reply::of(core.create_direct(session, user_id).await?),
        Command::CreateGroup { title, member_ids } => {
            Reply::of(core.create_group(session, &title, &member_ids).await?)
        }
        Command::AddMembers {
            conversation_id,
            user_ids,
        } => Reply::of(
            core.add_members(session, conversation_id, &user_ids)
                .await?,
        ),
        Command::RemoveMember {
            conversation_id,
            user_id,
        } => Reply::of(
            core.remove_member(session, conversation_id, user_id)
                .await?,
        ),
        Command::Leave { conversation_id } => {
            core.leave(session, conversation_id).await?;
            Reply::of(Empty {})
        }
        Command::SetRole {
            conversation_id,
            user_id,
            role,
        } => Reply::of(
            core.set_role(session, conversation_id, user_id, role)
                .await?,
        ),
        Command::SetTitle {
            conversation_id,
            title,
        } => Reply::of(core.set_title(session, conversation_id, &title).await?),
        Command::LookupUser { username, user_id } => match (username, user_id) {
            (Some(username), None) => Reply::of(core.lookup_user(session, &username).await?),
            (None, Some(user_id)) => Reply::of(core.lookup_user_by_id(session, user_id).await?),
            _ => {
                return Err(Error::invalid(
                    "`lookup_user` takes exactly one of `username` and `user_id`",
                ));
            }
        },
        Command::Presence { user_ids } => Reply::of(core.presence(session, &user_ids).await?),
        Command::Devices {} => Reply::of(core.devices(session).await?),
        Command::RevokeDevice { device_id } => {
            core.revoke_device(session, device_id).await?;
            app.hub.close_device(device_id, CloseReason::Revoked);
            Reply::of(Empty {})
        }
        Command::Logout {} => {
            core.logout(session).await?;
            // The device's other connections end too, as after `POST /v1/logout`; this one ends
            // after its reply.
            app.hub
                .close_device(session.device_id, CloseReason::Revoked);
            Reply {
                after: After::Close(CloseReason::Revoked),
                ..Reply::of(Empty {})
            }
        }
    })
}

/// The peer address, for per-IP limits; absent when the server runs without connect info.
pub fn peer_ip(info: Option<ConnectInfo<SocketAddr>>) -> std::net::IpAddr {
    info.map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn the_first_known_subprotocol_the_client_offers_wins() {
        assert_eq!(negotiate(&offering(&[])), None);
        assert_eq!(negotiate(&offering(&["mqtt"])), None);
        assert_eq!(
            negotiate(&offering(&["natter.v1.proto"])),
            Some(Encoding::Proto)
        );
        assert_eq!(
            negotiate(&offering(&["natter.v1.proto, natter.v1.json"])),
            Some(Encoding::Proto)
        );
        assert_eq!(
            negotiate(&offering(&["mqtt", "natter.v1.json", "natter.v1.proto"])),
            Some(Encoding::Json)
        );
    }

    #[test]
    fn the_bearer_scheme_is_read_whatever_its_case() {
        let authorization = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        for value in [
            "Bearer nt_x",
            "bearer nt_x",
            "BEARER  nt_x ",
            " Bearer nt_x",
        ] {
            assert_eq!(bearer_token(&authorization(value)), Some("nt_x"), "{value}");
        }
        for value in ["Basic nt_x", "Bearernt_x", "nt_x"] {
            assert_eq!(bearer_token(&authorization(value)), None, "{value}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
