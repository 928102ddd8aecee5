//! Connections of the load generator, one per simulated client, for every protocol the bench
//! speaks: Natter over WebSocket (JSON text frames, or Protocol Buffers binary frames with the
//! subprotocol `natter.v1.proto`), Socket.IO (Engine.IO v4 over WebSocket), and the NATS text
//! protocol (core and JetStream publish).
//!
//! Each connection is two tasks: a writer that drains a channel of [`Out`] items into one buffer
//! and writes it with one call, and a reader that parses every complete frame of one `read` and
//! hands each to the scenario's [`Handler`], then calls [`Handler::flush`] once (so that shared
//! histograms are locked once per read, not once per frame).
//!
//! The protocol, and for Natter the encoding, is chosen per connection ([`Proto`]); the
//! protobuf frames are encoded and decoded by hand in [`crate::protobuf`], borrowed like the JSON
//! ones.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protobuf;
use crate::wire::{self, Frame, NatsItem, ReadBuf, Rng, WsParser};

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Natter over WebSocket, JSON frames (`natter.v1.json`).
    Natter,
    /// Natter over WebSocket, Protocol Buffers frames (`natter.v1.proto`).
    NatterProtobuf,
    /// Socket.IO v4 over its WebSocket transport.
    SocketIo,
    /// NATS core publish/subscribe.
    Nats,
    /// NATS with JetStream publish (acknowledged once stored).
    JetStream,
    /// JetStream publish with a `Nats-Msg-Id` header, checked against the stream's duplicates
    /// as Natter checks every send's `client_msg_id`: the same guarantees as Natter's send.
    JetStreamDedupe,
    /// `JetStreamDedupe`, and each connection receives from the stream through a durable
    /// consumer of its own: only stored messages are delivered, and the server keeps each
    /// connection's place, as Natter delivers only committed messages and every device catches
    /// up on what it missed.
    JetStreamDurable,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Natter => "natter",
            Proto::NatterProtobuf => "natter-proto",
            Proto::SocketIo => "socketio",
            Proto::Nats => "nats",
            Proto::JetStream => "jetstream",
            Proto::JetStreamDedupe => "jetstream-dedupe",
            Proto::JetStreamDurable => "jetstream-durable",
        }
    }

    /// Whether a send gets an acknowledgement (NATS core publish gets none).
    pub fn acks(self) -> bool {
        self != Proto::Nats
    }

    /// NATS with JetStream, in any of its forms.
    pub fn is_jetstream(self) -> bool {
        matches!(
            self,
            Proto::JetStream | Proto::JetStreamDedupe | Proto::JetStreamDurable
        )
    }

    /// JetStream publishing with a `Nats-Msg-Id` on every message.
    pub fn checks_ids(self) -> bool {
        matches!(self, Proto::JetStreamDedupe | Proto::JetStreamDurable)
    }

    /// Natter, in either encoding.
    pub fn is_natter(self) -> bool {
        matches!(self, Proto::Natter | Proto::NatterProtobuf)
    }

    /// The Natter connection of this encoding: `json` or `proto`.
    pub fn natter(encoding: &str) -> Option<Proto> {
        match encoding {
            "json" => Some(Proto::Natter),
            "proto" => Some(Proto::NatterProtobuf),
            _ => None,
        }
    }

    /// The encoding of a Natter connection (`json`, `proto`); `None` for the peers.
    pub fn encoding(self) -> Option<&'static str> {
        match self {
            Proto::Natter => Some("json"),
            Proto::NatterProtobuf => Some("proto"),
            _ => None,
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub proto: Proto,
}

/// What a scenario asks a connection to write.
pub enum Out {
    /// Benchmark message `k` to channel `channel`, meant to leave at `intended_ns`.
    Send {
        k: u64,
        channel: u32,
        intended_ns: u64,
    },
    /// Natter's `ping` command, in the connection's encoding.
    Ping { id: u64 },
    /// Natter's `sync` command, in the connection's encoding.
    Sync { id: u64, cursor: u64, limit: u32 },
    /// A text frame (Socket.IO packet).
    Text(String),
    /// Raw protocol bytes (NATS).
    Raw(Vec<u8>),
    /// Answer a WebSocket ping.
    Pong(Vec<u8>),
    /// Close cleanly (WebSocket close frame), then stop writing.
    Close,
    /// Answer the server's WebSocket close frame with its code (1005: it had none), then stop
    /// writing.
    CloseReply(u16),
}

pub type Outbox = mpsc::UnboundedSender<Out>;

/// The reply id that a NATS `PONG` is reported as.
pub const PONG_ID: u64 = u64::MAX;

/// A parsed Natter server frame: only the fields the bench reads, borrowed from the buffer.
#[derive(Deserialize)]
pub struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub id: Option<u64>,
    pub cursor: Option<u64>,
    /// A `message` event's Message; `None` for an `error` frame, whose `message` is its text.
    #[serde(borrow, default, deserialize_with = "event_message")]
    pub message: Option<InMessage<'a>>,
    #[serde(borrow)]
    pub code: Option<Str<'a>>,
    #[serde(borrow)]
    pub data: Option<InData<'a>>,
}

/// `message` is a Message object in a `message` event, but a string (for humans) in an `error`
/// frame (protocol §8.1): the string is skipped, so that the error keeps its `id` and `code`
/// instead of failing the whole frame. The Message is still borrowed from the frame.
fn event_message<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<InMessage<'a>>, D::Error> {
    struct Visitor<'a>(std::marker::PhantomData<InMessage<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
        type Value = Option<InMessage<'a>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a message object, or an error's text")
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            InMessage::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(Visitor(std::marker::PhantomData))
}

/// `result` data: an ack (`seq`, `pos`) or a sync page (`cursor`, `more`, `messages`).
#[derive(Deserialize, Default, Debug)]
pub struct InData<'a> {
    pub seq: Option<u64>,
    pub cursor: Option<u64>,
    pub more: Option<bool>,
    #[serde(borrow, default)]
    pub messages: Vec<InMessage<'a>>,
}

#[derive(Deserialize, Debug)]
pub struct InMessage<'a> {
    pub seq: u64,
    pub pos: u64,
    #[serde(borrow)]
    pub content: InContent<'a>,
}

#[derive(Deserialize, Debug)]
pub struct InContent<'a> {
    #[serde(borrow)]
    pub text: Option<Str<'a>>,
}

/// A string borrowed from the frame unless it had escapes (serde copies `Option<Cow<str>>`).
#[derive(Debug)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
        }
        deserializer.deserialize_str(Visitor).map(Str)
    }
}

/// What a connection hands to its scenario.
pub enum Ev<'a> {
    /// The reply to request `id` (for benchmark sends `id` is `k`); `data` for Natter only.
    Reply {
        id: u64,
        data: Option<&'a InData<'a>>,
    },
    /// An error reply or protocol error.
    Error { id: Option<u64>, code: &'a str },
    /// A delivered message; `k`/`intended_ns` are set for benchmark messages.
    Delivery {
        bench: Option<(u64, u64)>,
        seq: u64,
        cursor: u64,
    },
    /// Anything else (presence, receipts, …).
    Other,
    /// The connection ended: the close code if the server sent one, why if a read failed.
    Closed {
        code: Option<u16>,
        reason: Option<&'a str>,
    },
}

/// Why a connection ended ([`Ev::Closed`]), for a report.
pub fn close_reason(code: Option<u16>, reason: Option<&str>) -> String {
    match (reason, code) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(code)) => format!("connection closed by the server ({code})"),
        (None, None) => "connection closed by the server without a close frame".into(),
    }
}

/// A scenario's per-connection logic, run on the connection's reader task.
pub trait Handler: Send + 'static {
    fn on(&mut self, ev: Ev<'_>, out: &Outbox);
    /// Called after the frames of one read were handled.
    fn flush(&mut self) {}
    /// Bytes that one read took from the socket (framing included).
    fn bytes(&mut self, _n: usize) {}
}

/// The text of benchmark message `k`: `nb <intended_ns> <k> ` padded with `x` to `size` bytes.
pub fn bench_text(out: &mut Vec<u8>, intended_ns: u64, k: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "nb {intended_ns} {k} ");
    let written = out.len() - start;
    if written < size {
        out.resize(start + size, b'x');
    }
}

/// Parse `nb <intended_ns> <k>` from the start of a message text.
pub fn parse_bench_text(text: &[u8]) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(b"nb ")?;
    let mut parts = rest.split(|b| *b == b' ');
    let intended = parse_u64(parts.next()?)?;
    let k = parse_u64(parts.next()?)?;
    Some((k, intended))
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// How a connection encodes benchmark sends (the default: no conversations, empty texts, ids
/// shaped as the SDKs make them).
#[derive(Default)]
pub struct Encoding {
    /// Channel index → Natter conversation id (unused by peers: rooms and subjects are indexes).
    pub conversations: Vec<u64>,
    /// Bytes of each message's text.
    pub size: usize,
    /// How sends choose their `client_msg_id`s.
    pub ids: ClientMsgIds,
}

/// The source address of the `i`-th connection: 127.0.0.2, 127.0.0.3, … `per_source` each, so
/// that no source address runs out of ephemeral ports.
pub fn source_for(i: usize, per_source: usize) -> IpAddr {
    let n = 2 + (i / per_source.max(1)) as u32;
    IpAddr::V4(Ipv4Addr::from(0x7F00_0000u32 + n.min(0x00FF_FFFE)))
}

/// An open connection.
pub struct Conn {
    pub out: Outbox,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Conn {
    /// Drop the connection at once, without a close handshake (a network drop).
    pub fn abort(&self) {
        self.reader.abort();
        self.writer.abort();
    }

    pub fn send(&self, out: Out) {
        let _ = self.out.send(out);
    }
}

/// Connection setup failures: `status` is the HTTP status of a refused upgrade.
#[derive(Debug)]
pub struct ConnectError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status > 0 {
            write!(f, "HTTP {}: {}", self.status, self.message.trim())
        } else {
            write!(f, "{}", self.message)
        }
    }
}

fn err(message: impl Into<String>) -> ConnectError {
    ConnectError {
        status: 0,
        message: message.into(),
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        err(e.to_string())
    }
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Open a connection and complete the protocol's own handshake: Natter's `hello`, Socket.IO's
/// namespace connect, NATS's `CONNECT`/`PONG`. Then start its reader and writer.
pub async fn open(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
    conn_id: u64,
    encoding: Arc<Encoding>,
    handler: Box<dyn Handler>,
) -> Result<Conn, ConnectError> {
    open_with(endpoint, source, token, conn_id, encoding, handler, None).await
}

/// [`open`], writing `before_hello` (a Natter command) right after the WebSocket upgrade,
/// without waiting for the `hello`: the server reads it after the hello (protocol.md §3.2, §9.4),
/// so a client that comes back and syncs saves a round trip. Its reply reaches the handler as any
/// other, after the hello.
pub async fn open_with(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
    conn_id: u64,
    encoding: Arc<Encoding>,
    handler: Box<dyn Handler>,
    before_hello: Option<Out>,
) -> Result<Conn, ConnectError> {
    match tokio::time::timeout(
        SETUP_TIMEOUT,
        open_inner(
            endpoint,
            source,
            token,
            conn_id,
            encoding,
            handler,
            before_hello,
        ),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(err("connection setup timed out")),
    }
}

async fn open_inner(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
    conn_id: u64,
    encoding: Arc<Encoding>,
    handler: Box<dyn Handler>,
    before_hello: Option<Out>,
) -> Result<Conn, ConnectError> {
    let mut rng = Rng::new(conn_id.wrapping_mul(7919) ^ wire::Rng::seeded().next());
    let mut stream = wire::tcp_connect(source, endpoint.addr).await?;
    let host = endpoint.addr.to_string();
    let mut parser = WsParser::default();
    let mut preamble: Vec<u8> = Vec::new();
    match endpoint.proto {
        Proto::Natter | Proto::NatterProtobuf => {
            let path = format!("/v1/ws?token={token}");
            let offered = if endpoint.proto == Proto::Natter {
                natter_proto::SUBPROTOCOL_JSON
            } else {
                natter_proto::SUBPROTOCOL_PROTO
            };
            let (rest, chosen) =
                wire::ws_handshake(&mut stream, &host, &path, Some(offered), &mut rng)
                    .await
                    .map_err(|e| ConnectError {
                        status: e.status,
                        message: e.message,
                    })?;
            // A server that answers without the subprotocol speaks JSON: fine for a JSON
            // connection, a failure for a protobuf one (its figures would be JSON's).
            if chosen.as_deref().is_some_and(|c| c != offered)
                || (chosen.is_none() && endpoint.proto == Proto::NatterProtobuf)
            {
                return Err(err(format!(
                    "the server did not accept the subprotocol {offered} (answered {chosen:?})"
                )));
            }
            let mut buf = ReadBuf::new(rest);
            let (mut rd, mut wr) = stream.into_split();
            if let Some(item) = before_hello {
                let mut frame = Vec::new();
                encode(
                    endpoint.proto,
                    item,
                    &mut frame,
                    &mut Scratch::default(),
                    conn_id,
                    &encoding,
                    &mut rng,
                );
                wire::write_all(&mut wr, &frame).await?;
            }
            // The first frame is `hello`; an `error` frame or a close means refusal.
            loop {
                match parser.next(&mut buf)? {
                    Some(Frame::Text(text)) if endpoint.proto == Proto::Natter => {
                        let frame: InFrame = serde_json::from_slice(text)
                            .map_err(|e| err(format!("bad first frame: {e}")))?;
                        if frame.kind == "hello" {
                            break;
                        }
                        return Err(err(format!("refused: {}", String::from_utf8_lossy(text))));
                    }
                    Some(Frame::Binary(bytes)) if endpoint.proto == Proto::NatterProtobuf => {
                        match protobuf::decode_server(bytes) {
                            Ok(protobuf::ServerFrame::Hello) => break,
                            Ok(protobuf::ServerFrame::Error { code, .. }) => {
                                return Err(err(format!("refused: {code}")));
                            }
                            Ok(_) => return Err(err("the first frame was not a hello")),
                            Err(_) => return Err(err("bad first frame: not a ServerFrame")),
                        }
                    }
                    Some(Frame::Close(code)) => {
                        return Err(answer_close(&mut wr, code, &mut rng).await);
                    }
                    Some(_) => continue,
                    None => {
                        if buf.fill(&mut rd).await? == 0 {
                            return Err(err("closed before hello"));
                        }
                    }
                }
            }
            Ok(spawn(
                endpoint.proto,
                rd,
                wr,
                buf,
                parser,
                conn_id,
                encoding,
                handler,
                rng,
            ))
        }
        Proto::SocketIo => {
            let (rest, _) = wire::ws_handshake(
                &mut stream,
                &host,
                "/socket.io/?EIO=4&transport=websocket",
                None,
                &mut rng,
            )
            .await
            .map_err(|e| ConnectError {
                status: e.status,
                message: e.message,
            })?;
            let mut buf = ReadBuf::new(rest);
            let (mut rd, mut wr) = stream.into_split();
            let mut connected = false;
            loop {
                match parser.next(&mut buf)? {
                    Some(Frame::Text(text)) => match text {
                        [b'0', ..] => {
                            let mut frame = Vec::new();
                            wire::encode_frame(&mut frame, wire::OP_TEXT, b"40", &mut rng);
                            wire::write_all(&mut wr, &frame).await?;
                            connected = true;
                        }
                        [b'4', b'0', ..] if connected => break,
                        [b'4', b'4', ..] => {
                            return Err(err(format!(
                                "socket.io refused: {}",
                                String::from_utf8_lossy(text)
                            )));
                        }
                        _ => continue,
                    },
                    Some(Frame::Close(code)) => {
                        return Err(answer_close(&mut wr, code, &mut rng).await);
                    }
                    Some(_) => continue,
                    None => {
                        if buf.fill(&mut rd).await? == 0 {
                            return Err(err("closed during socket.io connect"));
                        }
                    }
                }
            }
            Ok(spawn(
                endpoint.proto,
                rd,
                wr,
                buf,
                parser,
                conn_id,
                encoding,
                handler,
                rng,
            ))
        }
        Proto::Nats | Proto::JetStream | Proto::JetStreamDedupe | Proto::JetStreamDurable => {
            let (mut rd, mut wr) = stream.into_split();
            let mut buf = ReadBuf::new(Vec::new());
            // Headers only where they are published: a subscriber that allows them gets each
            // message as `HMSG`.
            let headers = endpoint.proto.checks_ids();
            let _ = write!(
                preamble,
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":true,\"headers\":{headers},\
                 \"protocol\":1,\"name\":\"natter-bench\",\"lang\":\"rust\",\"version\":\"0.1\"}}\r\nPING\r\n",
            );
            let mut sent = false;
            loop {
                match wire::nats_next(&mut buf)? {
                    Some(NatsItem::Info(_)) if !sent => {
                        wire::write_all(&mut wr, &preamble).await?;
                        sent = true;
                    }
                    Some(NatsItem::Pong) if sent => break,
                    Some(NatsItem::Ping) => wire::write_all(&mut wr, b"PONG\r\n").await?,
                    Some(NatsItem::Err(line)) => {
                        return Err(err(format!("nats: {}", String::from_utf8_lossy(line))));
                    }
                    Some(_) => continue,
                    None => {
                        if buf.fill(&mut rd).await? == 0 {
                            return Err(err("closed during nats connect"));
                        }
                    }
                }
            }
            Ok(spawn(
                endpoint.proto,
                rd,
                wr,
                buf,
                parser,
                conn_id,
                encoding,
                handler,
                rng,
            ))
        }
    }
}

/// Start the reader and writer tasks of an open connection.
#[allow(clippy::too_many_arguments)]
fn spawn(
    proto: Proto,
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: ReadBuf,
    parser: WsParser,
    conn_id: u64,
    encoding: Arc<Encoding>,
    handler: Box<dyn Handler>,
    rng: Rng,
) -> Conn {
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(proto, wr, rx, conn_id, encoding, rng));
    let reader = tokio::spawn(read_loop(proto, rd, buf, parser, handler, tx.clone()));
    Conn {
        out: tx,
        reader,
        writer,
    }
}

async fn write_loop(
    proto: Proto,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn_id: u64,
    encoding: Arc<Encoding>,
    mut rng: Rng,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut scratch = Scratch::default();
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut closing = encode(
            proto,
            first,
            &mut buf,
            &mut scratch,
            conn_id,
            &encoding,
            &mut rng,
        );
        while !closing && buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(next) => {
                    closing = encode(
                        proto,
                        next,
                        &mut buf,
                        &mut scratch,
                        conn_id,
                        &encoding,
                        &mut rng,
                    )
                }
                Err(_) => break,
            }
        }
        if wire::write_all(&mut wr, &buf).await.is_err() || closing {
            break;
        }
        if buf.capacity() > 256 * 1024 {
            buf = Vec::new();
        }
    }
}

/// Buffers a writer reuses for every frame it encodes.
#[derive(Default)]
struct Scratch {
    /// A frame's payload (or, for protobuf, the message text).
    text: Vec<u8>,
    /// A protobuf frame's payload.
    frame: Vec<u8>,
}

/// How the bench's sends choose their `client_msg_id`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMsgIds {
    /// As the SDKs make them (`newClientMsgId`, `new_client_msg_id`; protocol.md §9.3): the send
    /// time in milliseconds (12 hex digits), then 80 bits that look random.
    #[default]
    Time,
    /// 128 bits that look random, as a client that follows only the rule "unique per sender"
    /// may send: each lands anywhere in the store's dedupe index.
    Random,
}

/// The `client_msg_id` of message `k` on connection `conn_id`, intended at `intended_ns`: 32
/// hex digits shaped as `ids` says. Unique per connection, as `client_msg_id` must be per
/// sender: its last 16 digits are a bijection of `k`.
fn client_msg_id(ids: ClientMsgIds, conn_id: u64, k: u64, intended_ns: u64) -> [u8; 32] {
    /// splitmix64's finalizer: a bijection of u64 whose outputs look random.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let low = mix(k ^ mix(conn_id));
    let random_high = mix(low ^ 0x9e37_79b9_7f4a_7c15);
    let high = match ids {
        ClientMsgIds::Time => ((intended_ns / 1_000_000) << 16) | (random_high & 0xffff),
        ClientMsgIds::Random => random_high,
    };
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        let v = if i < 16 { high } else { low };
        let nibble = (v >> (60 - 4 * (i % 16))) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    id
}

/// Encode one item; returns true when the connection should stop writing after it.
fn encode(
    proto: Proto,
    item: Out,
    buf: &mut Vec<u8>,
    scratch: &mut Scratch,
    conn_id: u64,
    encoding: &Encoding,
    rng: &mut Rng,
) -> bool {
    let conversation = |channel: u32| {
        encoding
            .conversations
            .get(channel as usize)
            .copied()
            .unwrap_or(0)
    };
    match item {
        Out::Send {
            k,
            channel,
            intended_ns,
        } => {
            let Scratch {
                text: scratch,
                frame,
            } = scratch;
            scratch.clear();
            match proto {
                Proto::Natter => {
                    let conversation = conversation(channel);
                    let _ = write!(
                        scratch,
                        "{{\"id\":{k},\"type\":\"send\",\"conversation_id\":{conversation},\
                         \"client_msg_id\":\""
                    );
                    scratch.extend_from_slice(&client_msg_id(
                        encoding.ids,
                        conn_id,
                        k,
                        intended_ns,
                    ));
                    scratch.extend_from_slice(b"\",\"content\":{\"type\":\"text\",\"text\":\"");
                    bench_text(scratch, intended_ns, k, encoding.size);
                    scratch.extend_from_slice(b"\"}}");
                    wire::encode_frame(buf, wire::OP_TEXT, scratch, rng);
                }
                Proto::NatterProtobuf => {
                    bench_text(scratch, intended_ns, k, encoding.size);
                    frame.clear();
                    let id = client_msg_id(encoding.ids, conn_id, k, intended_ns);
                    protobuf::encode_send(frame, k, conversation(channel), &id, scratch);
                    wire::encode_frame(buf, wire::OP_BINARY, frame, rng);
                }
                Proto::SocketIo => {
                    let _ = write!(scratch, "42{k}[\"send\",\"{channel}\",\"");
                    bench_text(scratch, intended_ns, k, encoding.size);
                    scratch.extend_from_slice(b"\"]");
                    wire::encode_frame(buf, wire::OP_TEXT, scratch, rng);
                }
                Proto::JetStreamDedupe | Proto::JetStreamDurable => {
                    bench_text(scratch, intended_ns, k, encoding.size);
                    // The message id is the one a Natter send of the same message carries:
                    // unique per connection and message, as `client_msg_id` is per sender.
                    frame.clear();
                    frame.extend_from_slice(b"NATS/1.0\r\nNats-Msg-Id: ");
                    frame.extend_from_slice(&client_msg_id(encoding.ids, conn_id, k, intended_ns));
                    frame.extend_from_slice(b"\r\n\r\n");
                    let _ = write!(
                        buf,
                        "HPUB bench.{channel} _INBOX.{conn_id}.{k} {} {}\r\n",
                        frame.len(),
                        frame.len() + scratch.len()
                    );
                    buf.extend_from_slice(frame);
                    buf.extend_from_slice(scratch);
                    buf.extend_from_slice(b"\r\n");
                }
                Proto::Nats | Proto::JetStream => {
                    bench_text(scratch, intended_ns, k, encoding.size);
                    if proto == Proto::JetStream {
                        let _ = write!(
                            buf,
                            "PUB bench.{channel} _INBOX.{conn_id}.{k} {}\r\n",
                            scratch.len()
                        );
                    } else {
                        let _ = write!(buf, "PUB bench.{channel} {}\r\n", scratch.len());
                    }
                    buf.extend_from_slice(scratch);
                    buf.extend_from_slice(b"\r\n");
                }
            }
            false
        }
        Out::Ping { id } => {
            if proto == Proto::NatterProtobuf {
                scratch.frame.clear();
                protobuf::encode_ping(&mut scratch.frame, id);
                wire::encode_frame(buf, wire::OP_BINARY, &scratch.frame, rng);
            } else {
                let text = format!("{{\"id\":{id},\"type\":\"ping\"}}");
                wire::encode_frame(buf, wire::OP_TEXT, text.as_bytes(), rng);
            }
            false
        }
        Out::Sync { id, cursor, limit } => {
            if proto == Proto::NatterProtobuf {
                scratch.frame.clear();
                protobuf::encode_sync(&mut scratch.frame, id, cursor, limit);
                wire::encode_frame(buf, wire::OP_BINARY, &scratch.frame, rng);
            } else {
                let text = format!(
                    "{{\"id\":{id},\"type\":\"sync\",\"cursor\":{cursor},\"limit\":{limit}}}"
                );
                wire::encode_frame(buf, wire::OP_TEXT, text.as_bytes(), rng);
            }
            false
        }
        Out::Text(text) => {
            wire::encode_frame(buf, wire::OP_TEXT, text.as_bytes(), rng);
            false
        }
        Out::Raw(bytes) => {
            buf.extend_from_slice(&bytes);
            false
        }
        Out::Pong(payload) => {
            wire::encode_frame(buf, wire::OP_PONG, &payload, rng);
            false
        }
        Out::Close => {
            if matches!(
                proto,
                Proto::Natter | Proto::NatterProtobuf | Proto::SocketIo
            ) {
                wire::encode_frame(buf, wire::OP_CLOSE, &1000u16.to_be_bytes(), rng);
            }
            true
        }
        Out::CloseReply(code) => {
            encode_close_reply(buf, code, rng);
            true
        }
    }
}

/// The answer to the server's close frame of `code` (protocol §6.6: the server waits up to a
/// second for it).
fn encode_close_reply(buf: &mut Vec<u8>, code: u16, rng: &mut Rng) {
    // RFC 6455 §7.4.1: 1005 stands for a close without a code and is never sent, so such a
    // close is answered without one.
    let bytes = code.to_be_bytes();
    let payload: &[u8] = if code == 1005 { &[] } else { &bytes };
    wire::encode_frame(buf, wire::OP_CLOSE, payload, rng);
}

/// A close that refused a connection before its handshake finished, answered as the read loop
/// answers one after it; the refusal to report.
async fn answer_close(wr: &mut OwnedWriteHalf, code: u16, rng: &mut Rng) -> ConnectError {
    let mut frame = Vec::new();
    encode_close_reply(&mut frame, code, rng);
    // The connection is refused either way: a failed answer changes nothing to report.
    let _ = wire::write_all(wr, &frame).await;
    err(format!("closed with {code}"))
}

async fn read_loop(
    proto: Proto,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: ReadBuf,
    mut parser: WsParser,
    mut handler: Box<dyn Handler>,
    out: Outbox,
) {
    let mut close_code = None;
    // Why the connection ended when a read failed, for the report (`first_error`).
    let mut failure = None;
    'outer: loop {
        // Handle what is buffered (the handshake may have left frames), then read more.
        loop {
            let step = match proto {
                Proto::Natter | Proto::NatterProtobuf | Proto::SocketIo => {
                    match parser.next(&mut buf) {
                        Ok(Some(frame)) => handle_ws(proto, frame, &mut *handler, &out),
                        Ok(None) => break,
                        Err(e) => Step::Failed(e),
                    }
                }
                Proto::Nats
                | Proto::JetStream
                | Proto::JetStreamDedupe
                | Proto::JetStreamDurable => match wire::nats_next(&mut buf) {
                    Ok(Some(item)) => handle_nats(item, &mut *handler, &out),
                    Ok(None) => break,
                    Err(e) => Step::Failed(e),
                },
            };
            match step {
                Step::Continue => {}
                Step::Closed(code) => {
                    close_code = Some(code);
                    break 'outer;
                }
                Step::Failed(e) => {
                    failure = Some(format!("connection read failed: {e}"));
                    break 'outer;
                }
            }
        }
        handler.flush();
        buf.shrink_if_idle();
        match buf.fill(&mut rd).await {
            Ok(0) => break,
            Ok(n) => handler.bytes(n),
            Err(e) => {
                failure = Some(format!("connection read failed: {e}"));
                break;
            }
        }
    }
    handler.on(
        Ev::Closed {
            code: close_code,
            reason: failure.as_deref(),
        },
        &out,
    );
    handler.flush();
}

enum Step {
    Continue,
    Closed(u16),
    /// The server's bytes could not be parsed.
    Failed(std::io::Error),
}

fn handle_ws(proto: Proto, frame: Frame<'_>, handler: &mut dyn Handler, out: &Outbox) -> Step {
    match frame {
        Frame::Text(text) if proto == Proto::Natter => handle_natter(text, handler, out),
        Frame::Binary(bytes) if proto == Proto::NatterProtobuf => {
            handle_natter_proto(bytes, handler, out)
        }
        Frame::Text(text) if proto == Proto::SocketIo => handle_socketio(text, handler, out),
        // The wrong kind of frame for the encoding: the server would not send it.
        Frame::Text(_) | Frame::Binary(_) if proto.is_natter() => {
            handler.on(
                Ev::Error {
                    id: None,
                    code: "frame_of_the_other_encoding",
                },
                out,
            );
            Step::Continue
        }
        Frame::Ping(payload) => {
            let _ = out.send(Out::Pong(payload.to_vec()));
            Step::Continue
        }
        Frame::Close(code) => {
            // Protocol §6.6: after its close the server waits up to a second for the client's.
            // Queued for the writer, so that the reader never waits on the socket.
            let _ = out.send(Out::CloseReply(code));
            Step::Closed(code)
        }
        Frame::Text(_) | Frame::Binary(_) | Frame::Pong => Step::Continue,
    }
}

fn handle_natter(text: &[u8], handler: &mut dyn Handler, out: &Outbox) -> Step {
    let Ok(frame) = serde_json::from_slice::<InFrame>(text) else {
        handler.on(
            Ev::Error {
                id: None,
                code: "undecodable_frame",
            },
            out,
        );
        return Step::Continue;
    };
    match frame.kind.as_ref() {
        "message" => {
            if let Some(message) = &frame.message {
                let bench = message
                    .content
                    .text
                    .as_deref()
                    .and_then(|t| parse_bench_text(t.as_bytes()));
                handler.on(
                    Ev::Delivery {
                        bench,
                        seq: message.seq,
                        cursor: frame.cursor.unwrap_or(message.pos),
                    },
                    out,
                );
            }
        }
        "result" => {
            let empty = InData::default();
            handler.on(
                Ev::Reply {
                    id: frame.id.unwrap_or(0),
                    data: Some(frame.data.as_ref().unwrap_or(&empty)),
                },
                out,
            );
        }
        "error" => handler.on(
            Ev::Error {
                id: frame.id,
                code: frame.code.as_deref().unwrap_or("unknown"),
            },
            out,
        ),
        _ => handler.on(Ev::Other, out),
    }
    Step::Continue
}

/// The protobuf twin of [`handle_natter`]: the same events from a binary frame.
fn handle_natter_proto(bytes: &[u8], handler: &mut dyn Handler, out: &Outbox) -> Step {
    match protobuf::decode_server(bytes) {
        Ok(protobuf::ServerFrame::Message { cursor, seq, text }) => handler.on(
            Ev::Delivery {
                bench: text.and_then(parse_bench_text),
                seq,
                cursor,
            },
            out,
        ),
        Ok(protobuf::ServerFrame::Result { id, data }) => handler.on(
            Ev::Reply {
                id,
                data: Some(&data),
            },
            out,
        ),
        Ok(protobuf::ServerFrame::Error { id, code }) => handler.on(Ev::Error { id, code }, out),
        Ok(protobuf::ServerFrame::Hello | protobuf::ServerFrame::Other) => {
            handler.on(Ev::Other, out)
        }
        Err(protobuf::Malformed) => handler.on(
            Ev::Error {
                id: None,
                code: "undecodable_frame",
            },
            out,
        ),
    }
    Step::Continue
}

fn handle_socketio(text: &[u8], handler: &mut dyn Handler, out: &Outbox) -> Step {
    match text {
        [b'2', ..] => {
            let _ = out.send(Out::Text("3".into()));
        }
        [b'4', b'2', rest @ ..] => {
            // 42["msg","nb <intended> <k> …"]
            let bench = find(rest, b"\"nb ").and_then(|at| parse_bench_text(&rest[at + 1..]));
            handler.on(
                Ev::Delivery {
                    bench,
                    seq: 0,
                    cursor: 0,
                },
                out,
            );
        }
        [b'4', b'3', rest @ ..] => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if let Some(id) = parse_u64(&rest[..digits]) {
                handler.on(Ev::Reply { id, data: None }, out);
            }
        }
        [b'4', b'4', ..] => handler.on(
            Ev::Error {
                id: None,
                code: "socketio_connect_error",
            },
            out,
        ),
        [b'1', ..] | [b'4', b'1', ..] => return Step::Closed(1000),
        _ => handler.on(Ev::Other, out),
    }
    Step::Continue
}

fn handle_nats(item: NatsItem<'_>, handler: &mut dyn Handler, out: &Outbox) -> Step {
    match item {
        NatsItem::Msg { subject, payload } => {
            if let Some(rest) = subject.strip_prefix(b"_INBOX.") {
                let id = rest
                    .iter()
                    .rposition(|b| *b == b'.')
                    .and_then(|dot| parse_u64(&rest[dot + 1..]));
                if find(payload, b"\"error\"").is_some() {
                    handler.on(
                        Ev::Error {
                            id,
                            code: "jetstream_error",
                        },
                        out,
                    );
                } else if let Some(id) = id {
                    handler.on(Ev::Reply { id, data: None }, out);
                }
            } else {
                handler.on(
                    Ev::Delivery {
                        bench: parse_bench_text(payload),
                        seq: 0,
                        cursor: 0,
                    },
                    out,
                );
            }
        }
        NatsItem::Ping => {
            let _ = out.send(Out::Raw(b"PONG\r\n".to_vec()));
        }
        NatsItem::Err(_) => handler.on(
            Ev::Error {
                id: None,
                code: "nats_error",
            },
            out,
        ),
        NatsItem::Pong => handler.on(
            Ev::Reply {
                id: PONG_ID,
                data: None,
            },
            out,
        ),
        NatsItem::Info(_) | NatsItem::Ok => handler.on(Ev::Other, out),
    }
    Step::Continue
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_text_round_trips_and_pads() {
        let mut out = Vec::new();
        bench_text(&mut out, 123_456, 42, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(parse_bench_text(&out), Some((42, 123_456)));
        assert_eq!(parse_bench_text(b"hello"), None);
    }

    #[test]
    fn sources_spread_over_loopback_addresses() {
        assert_eq!(source_for(0, 100).to_string(), "127.0.0.2");
        assert_eq!(source_for(99, 100).to_string(), "127.0.0.2");
        assert_eq!(source_for(100, 100).to_string(), "127.0.0.3");
        assert_eq!(source_for(300 * 100, 100).to_string(), "127.0.1.46");
    }

    #[test]
    fn natter_frames_parse_without_copies() {
        let text = br#"{"type":"message","cursor":9,"message":{"conversation_id":3,"seq":2,"pos":9,"sender_id":1,"client_msg_id":"5","content":{"type":"text","text":"nb 77 5 xx"},"sent_at_ms":1}}"#;
        let frame: InFrame = serde_json::from_slice(text).unwrap();
        let message = frame.message.unwrap();
        assert!(matches!(message.content.text, Some(Str(Cow::Borrowed(_)))));
        assert_eq!((message.seq, frame.cursor), (2, Some(9)));
        let ack = br#"{"type":"result","id":5,"data":{"conversation_id":3,"client_msg_id":"5","seq":2,"pos":9,"sent_at_ms":1,"duplicate":false}}"#;
        let frame: InFrame = serde_json::from_slice(ack).unwrap();
        assert_eq!(frame.data.unwrap().seq, Some(2));
    }

    #[test]
    fn json_error_frames_keep_their_id_and_code() {
        // Every JSON error frame carries a human-readable `message` string (protocol §8.1).
        let text = br#"{"type":"error","id":9,"code":"rate_limited","message":"too many requests; slow down","retry_after_ms":2752}"#;
        let frame: InFrame = serde_json::from_slice(text).unwrap();
        assert_eq!(frame.id, Some(9));
        assert_eq!(frame.code.as_deref(), Some("rate_limited"));
        assert!(frame.message.is_none());

        struct Errors(Vec<(Option<u64>, String)>);
        impl Handler for Errors {
            fn on(&mut self, ev: Ev<'_>, _: &Outbox) {
                if let Ev::Error { id, code } = ev {
                    self.0.push((id, code.to_string()));
                }
            }
        }
        let (out, _queue) = mpsc::unbounded_channel();
        let mut errors = Errors(Vec::new());
        handle_natter(text, &mut errors, &out);
        handle_natter(
            br#"{"type":"error","code":"malformed_frame","message":"frame has no integer `id`"}"#,
            &mut errors,
            &out,
        );
        assert_eq!(
            errors.0,
            vec![
                (Some(9), "rate_limited".to_string()),
                (None, "malformed_frame".to_string())
            ]
        );
    }

    #[test]
    fn a_server_close_is_answered_with_a_masked_close_of_its_code() {
        struct Ignore;
        impl Handler for Ignore {
            fn on(&mut self, _: Ev<'_>, _: &Outbox) {}
        }
        let encoding = Encoding::default();
        let mut rng = Rng::new(5);
        for proto in [Proto::Natter, Proto::NatterProtobuf, Proto::SocketIo] {
            for (code, payload_len) in [(4008u16, 2u8), (1005, 0)] {
                let (out, mut queue) = mpsc::unbounded_channel();
                let step = handle_ws(proto, Frame::Close(code), &mut Ignore, &out);
                assert!(matches!(step, Step::Closed(c) if c == code));
                let Ok(reply) = queue.try_recv() else {
                    panic!("{proto:?}: no reply to the close");
                };
                let mut buf = Vec::new();
                let stop = encode(
                    proto,
                    reply,
                    &mut buf,
                    &mut Scratch::default(),
                    1,
                    &encoding,
                    &mut rng,
                );
                assert!(stop, "the writer stops after the close");
                // Masked, as every client frame; the same code, or none if there was none.
                assert_eq!(buf[1], 0x80 | payload_len);
                let mut rb = ReadBuf::new(buf);
                assert_eq!(
                    WsParser::default().next(&mut rb).unwrap(),
                    Some(Frame::Close(code))
                );
            }
        }
    }

    #[tokio::test]
    async fn a_close_before_the_handshake_ended_is_answered_too() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_rd, mut wr) = client.into_split();
        let refusal = answer_close(&mut wr, 4001, &mut Rng::new(3)).await;
        assert_eq!(refusal.message, "closed with 4001");
        // The server reads a masked close of the same code.
        let mut buf = vec![0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        buf.truncate(n);
        assert_eq!(buf[1], 0x80 | 2);
        let mut rb = ReadBuf::new(buf);
        assert_eq!(
            WsParser::default().next(&mut rb).unwrap(),
            Some(Frame::Close(4001))
        );
    }

    /// A connection's reader and writer over a local socket, whose other end the test plays.
    async fn local_conn(
        proto: Proto,
        closes: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> (Conn, tokio::net::TcpStream) {
        struct Closes(Arc<std::sync::Mutex<Vec<String>>>);
        impl Handler for Closes {
            fn on(&mut self, ev: Ev<'_>, _: &Outbox) {
                if let (Ev::Closed { code, reason }, Ok(mut closes)) = (ev, self.0.lock()) {
                    closes.push(close_reason(code, reason));
                }
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (rd, wr) = client.into_split();
        let encoding = Arc::new(Encoding::default());
        let conn = spawn(
            proto,
            rd,
            wr,
            ReadBuf::new(Vec::new()),
            WsParser::default(),
            1,
            encoding,
            Box::new(Closes(closes)),
            Rng::new(9),
        );
        (conn, server)
    }

    #[tokio::test]
    async fn the_reader_answers_a_close_then_the_writer_ends_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut conn, mut server) = local_conn(Proto::Natter, closes.clone()).await;
        server.write_all(&[0x88, 2, 0x0F, 0xA8]).await.unwrap();
        // The reply, then the end of the stream: the connection is not held open.
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let mut rb = ReadBuf::new(reply);
        assert_eq!(
            WsParser::default().next(&mut rb).unwrap(),
            Some(Frame::Close(4008))
        );
        assert!(rb.pending().is_empty());
        (&mut conn.reader).await.unwrap();
        assert_eq!(
            *closes.lock().unwrap(),
            vec!["connection closed by the server (4008)".to_string()]
        );
    }

    #[tokio::test]
    async fn a_read_that_fails_is_reported_with_its_reason() {
        use tokio::io::AsyncWriteExt;
        // A WebSocket frame beyond the bench's cap, and a NATS payload length beyond it.
        let huge = [0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0];
        for (proto, bytes, why) in [
            (Proto::Natter, &huge[..], "frame of 4294967296 bytes"),
            (
                Proto::Nats,
                &b"MSG s 1 99999999999\r\n"[..],
                "MSG of 99999999999 bytes",
            ),
        ] {
            let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (mut conn, mut server) = local_conn(proto, closes.clone()).await;
            server.write_all(bytes).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), &mut conn.reader)
                .await
                .unwrap()
                .unwrap();
            let closes = closes.lock().unwrap();
            assert_eq!(closes.len(), 1);
            assert!(
                closes[0].starts_with("connection read failed: "),
                "{closes:?}"
            );
            assert!(closes[0].contains(why), "{closes:?}");
        }
    }

    #[test]
    fn pings_and_syncs_encode_in_both_natter_encodings() {
        let encoding = Encoding::default();
        let mut rng = Rng::new(2);
        for proto in [Proto::Natter, Proto::NatterProtobuf] {
            for (item, want) in [
                (Out::Ping { id: 1 }, natter_proto::Command::Ping {}),
                (
                    Out::Sync {
                        id: 1,
                        cursor: 99,
                        limit: 500,
                    },
                    natter_proto::Command::Sync {
                        cursor: 99,
                        limit: Some(500),
                    },
                ),
            ] {
                let mut buf = Vec::new();
                let mut scratch = Scratch::default();
                encode(proto, item, &mut buf, &mut scratch, 1, &encoding, &mut rng);
                let mut rb = ReadBuf::new(buf);
                let mut parser = WsParser::default();
                let frame = match parser.next(&mut rb).unwrap() {
                    Some(Frame::Text(t)) if proto == Proto::Natter => {
                        natter_proto::ClientFrame::decode_json(std::str::from_utf8(t).unwrap())
                            .unwrap()
                    }
                    Some(Frame::Binary(b)) if proto == Proto::NatterProtobuf => {
                        natter_proto::ClientFrame::decode_proto(b).unwrap()
                    }
                    other => panic!("{proto:?}: {other:?}"),
                };
                assert_eq!((frame.id, frame.command), (1, want));
            }
        }
    }

    /// The bench's client message ids are 32 lowercase hex digits, unique per connection. Time
    /// ids (the SDKs' shape) grow with the send time and are in no order within a millisecond;
    /// random ids are in no order at all, so that the dedupe index gets scattered keys.
    #[test]
    fn client_msg_ids_are_unique_and_shaped_as_asked() {
        for ids in [ClientMsgIds::Time, ClientMsgIds::Random] {
            let mut seen = std::collections::HashSet::new();
            let (mut ascending, mut previous) = (0, client_msg_id(ids, 3, 0, 0));
            for k in 0..100_000u64 {
                // Ten messages a millisecond.
                let id = client_msg_id(ids, 3, k, k * 100_000);
                assert!(
                    id.iter()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                );
                assert!(seen.insert(id), "id of {k} repeated");
                ascending += usize::from(id > previous);
                previous = id;
            }
            let wanted = match ids {
                // Up every millisecond, and half the time within one.
                ClientMsgIds::Time => 52_000..58_000,
                ClientMsgIds::Random => 48_000..52_000,
            };
            assert!(wanted.contains(&ascending), "{ids:?}: {ascending} in order");
            assert_ne!(client_msg_id(ids, 3, 5, 0), client_msg_id(ids, 4, 5, 0));
        }
        let id = client_msg_id(ClientMsgIds::Time, 3, 5, 0x0123_4567_89ab * 1_000_000);
        assert_eq!(&id[..12], b"0123456789ab");
    }

    #[test]
    fn sends_encode_for_every_protocol() {
        let client_msg_id_of = |conn_id, k| client_msg_id(ClientMsgIds::Time, conn_id, k, 99);
        let encoding = Encoding {
            conversations: vec![11, 12],
            size: 32,
            ids: ClientMsgIds::Time,
        };
        let mut rng = Rng::new(1);
        for proto in [
            Proto::Natter,
            Proto::NatterProtobuf,
            Proto::SocketIo,
            Proto::Nats,
            Proto::JetStream,
            Proto::JetStreamDedupe,
            Proto::JetStreamDurable,
        ] {
            let mut buf = Vec::new();
            let send = Out::Send {
                k: 7,
                channel: 1,
                intended_ns: 99,
            };
            encode(
                proto,
                send,
                &mut buf,
                &mut Scratch::default(),
                4,
                &encoding,
                &mut rng,
            );
            if proto == Proto::NatterProtobuf {
                let mut rb = ReadBuf::new(buf);
                let mut parser = WsParser::default();
                let Some(Frame::Binary(bytes)) = parser.next(&mut rb).unwrap() else {
                    panic!("no binary frame");
                };
                let frame = natter_proto::ClientFrame::decode_proto(bytes).unwrap();
                assert_eq!(frame.id, 7);
                let natter_proto::Command::Send {
                    conversation_id,
                    client_msg_id,
                    content,
                    ..
                } = frame.command
                else {
                    panic!("not a send");
                };
                assert_eq!(conversation_id, 12);
                assert_eq!(client_msg_id.as_bytes(), client_msg_id_of(4, 7));
                assert!(content.text().unwrap().starts_with("nb 99 7 "));
            } else if proto == Proto::Natter || proto == Proto::SocketIo {
                let mut rb = ReadBuf::new(buf);
                let mut parser = WsParser::default();
                let Some(Frame::Text(text)) = parser.next(&mut rb).unwrap() else {
                    panic!("no text frame");
                };
                let text = String::from_utf8(text.to_vec()).unwrap();
                if proto == Proto::Natter {
                    let frame = natter_proto::ClientFrame::decode_json(&text).unwrap();
                    assert_eq!(frame.id, 7);
                    assert!(text.contains("\"conversation_id\":12"));
                    let natter_proto::Command::Send { client_msg_id, .. } = frame.command else {
                        panic!("not a send");
                    };
                    assert_eq!(client_msg_id.as_bytes(), client_msg_id_of(4, 7));
                } else {
                    assert!(text.starts_with("427[\"send\",\"1\",\"nb 99 7 "));
                }
            } else {
                let text = String::from_utf8(buf).unwrap();
                let id = String::from_utf8(client_msg_id_of(4, 7).to_vec()).unwrap();
                let head = match proto {
                    Proto::Nats => "PUB bench.1 32\r\n".to_string(),
                    Proto::JetStream => "PUB bench.1 _INBOX.4.7 32\r\n".to_string(),
                    // The headers are 59 bytes: 10 + 13 + the id's 32 + 2 + 2.
                    _ => format!(
                        "HPUB bench.1 _INBOX.4.7 59 91\r\nNATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\nnb 99 7 "
                    ),
                };
                assert!(text.starts_with(&head), "{text}");
            }
        }
    }
}
