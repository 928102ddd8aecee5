//! The bench's own connection layer: a minimal WebSocket client (RFC 6455), a minimal HTTP/1.1
//! client for the REST setup calls, and the line reader of the NATS text protocol.
//!
//! Why not a client library: the load generator must not be the bottleneck, and must not hide
//! costs. Frames are encoded straight into one write buffer per connection (many frames, one
//! `write`), read buffers start small and grow only under load, and nothing is copied or
//! allocated per received frame.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Initial read buffer of a connection; an idle connection should cost the load generator little.
pub const READ_BUFFER_INITIAL: usize = 2 * 1024;
/// Frames, reassembled messages and NATS payloads larger than this are a protocol error for the
/// bench (the server's limit is far below), so that a bad length cannot make it buffer without end.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A read or reassembly buffer that grew beyond this for a burst or a large message is given back
/// once drained, so that an idle connection stays small.
const BUFFER_KEPT_BYTES_MAX: usize = 64 * 1024;

/// A small fast PRNG (xorshift64*) for masking keys and handshake nonces.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mixed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03);
        Rng(mixed | 1)
    }

    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        Rng::new(t ^ ((std::process::id() as u64) << 32))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Standard base64 with padding (only for the 16-byte handshake nonce).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Append one masked client frame (FIN set) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], rng: &mut Rng) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = (rng.next() as u32).to_ne_bytes();
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XOR `data` with the 4-byte masking key, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// One frame (or reassembled message) read from the server.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(u16),
}

/// A growable read buffer with a consumed prefix.
pub struct ReadBuf {
    pub data: Vec<u8>,
    pub start: usize,
}

impl ReadBuf {
    pub fn new(leftover: Vec<u8>) -> ReadBuf {
        ReadBuf {
            data: leftover,
            start: 0,
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Read once from the socket; `Ok(0)` is end of stream.
    pub async fn fill(&mut self, rd: &mut OwnedReadHalf) -> io::Result<usize> {
        if self.start > 0 && (self.start == self.data.len() || self.start > self.data.len() / 2) {
            self.data.drain(..self.start);
            self.start = 0;
        }
        if self.data.capacity() - self.data.len() < 512 {
            let grow = self.data.capacity().max(READ_BUFFER_INITIAL);
            self.data.reserve(grow);
        }
        rd.read_buf(&mut self.data).await
    }

    /// Give back memory after a burst, so that an idle connection stays small.
    pub fn shrink_if_idle(&mut self) {
        if self.start == self.data.len() && self.data.capacity() > BUFFER_KEPT_BYTES_MAX {
            self.data = Vec::with_capacity(READ_BUFFER_INITIAL);
            self.start = 0;
        }
    }
}

/// Incremental WebSocket frame parser over a [`ReadBuf`], reassembling fragmented messages.
#[derive(Default)]
pub struct WsParser {
    fragments: Vec<u8>,
    fragment_opcode: Option<u8>,
}

impl WsParser {
    /// The next complete frame in `buf`, if any. Control frames pass through fragmented messages.
    pub fn next<'a>(&'a mut self, buf: &'a mut ReadBuf) -> io::Result<Option<Frame<'a>>> {
        // A large message reassembled here was borrowed by the caller until this call: only now
        // can its buffer be given back.
        if self.fragment_opcode.is_none() && self.fragments.capacity() > BUFFER_KEPT_BYTES_MAX {
            self.fragments = Vec::new();
        }
        loop {
            let bytes = buf.pending();
            if bytes.len() < 2 {
                return Ok(None);
            }
            let fin = bytes[0] & 0x80 != 0;
            let opcode = bytes[0] & 0x0F;
            let masked = bytes[1] & 0x80 != 0;
            let (len, mut at) = match bytes[1] & 0x7F {
                126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 if bytes.len() >= 10 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap_or([0; 8])) as usize,
                    10,
                ),
                126 | 127 => return Ok(None),
                n => (n as usize, 2),
            };
            if len > FRAME_BYTES_MAX {
                return Err(invalid(format!(
                    "frame of {len} bytes, larger than {FRAME_BYTES_MAX}"
                )));
            }
            // Fragments are checked on the header, like the length, so that a bad one is refused
            // before its payload is buffered.
            match opcode {
                // Without a started message it would be appended to the last one.
                OP_CONTINUATION if self.fragment_opcode.is_none() => {
                    return Err(invalid("a continuation frame without a message".into()));
                }
                OP_CONTINUATION if self.fragments.len() + len > FRAME_BYTES_MAX => {
                    return Err(invalid(format!(
                        "fragmented message larger than {FRAME_BYTES_MAX} bytes"
                    )));
                }
                // RFC 6455 §5.4: a message's fragments are not interleaved with another message.
                OP_TEXT | OP_BINARY if self.fragment_opcode.is_some() => {
                    return Err(invalid(
                        "a new message before the fragmented one ended".into(),
                    ));
                }
                _ => {}
            }
            let mask = if masked {
                if bytes.len() < at + 4 {
                    return Ok(None);
                }
                let m = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
                at += 4;
                Some(m)
            } else {
                None
            };
            if bytes.len() < at + len {
                return Ok(None);
            }
            let begin = buf.start + at;
            let end = begin + len;
            buf.start = end;
            if let Some(mask) = mask {
                apply_mask(&mut buf.data[begin..end], mask);
            }
            let payload = begin..end;
            match opcode {
                OP_TEXT | OP_BINARY if fin => {
                    let p = &buf.data[payload];
                    return Ok(Some(if opcode == OP_TEXT {
                        Frame::Text(p)
                    } else {
                        Frame::Binary(p)
                    }));
                }
                OP_TEXT | OP_BINARY => {
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&buf.data[payload]);
                    self.fragment_opcode = Some(opcode);
                }
                OP_CONTINUATION => {
                    self.fragments.extend_from_slice(&buf.data[payload]);
                    if fin {
                        let opcode = self.fragment_opcode.take().unwrap_or(OP_TEXT);
                        let p = &self.fragments[..];
                        return Ok(Some(if opcode == OP_TEXT {
                            Frame::Text(p)
                        } else {
                            Frame::Binary(p)
                        }));
                    }
                }
                OP_CLOSE => {
                    let p = &buf.data[payload];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    return Ok(Some(Frame::Close(code)));
                }
                OP_PING => return Ok(Some(Frame::Ping(&buf.data[payload]))),
                OP_PONG => return Ok(Some(Frame::Pong)),
                _ => return Err(invalid(format!("unknown opcode {opcode}"))),
            }
        }
    }
}

/// A protocol error of the server's bytes.
fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Open a TCP connection to `target` from `source` (any port), with Nagle off. A source of the
/// other address family than `target` is ignored: the loopback sources are 127.0.0.x, and a
/// node given as `--url http://[::1]:…` is reached from ::1.
pub async fn tcp_connect(
    source: Option<std::net::IpAddr>,
    target: SocketAddr,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Find the end of an HTTP header block.
fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Read an HTTP response head; returns (status, head text, bytes read past the head).
async fn read_head(stream: &mut TcpStream) -> io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = header_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok((status, head, buf[end..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// An error of the WebSocket upgrade, with the HTTP status when there was one.
#[derive(Debug)]
pub struct UpgradeError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status > 0 {
            write!(f, "HTTP {}: {}", self.status, self.message)
        } else {
            write!(f, "{}", self.message)
        }
    }
}

impl From<io::Error> for UpgradeError {
    fn from(e: io::Error) -> Self {
        UpgradeError {
            status: 0,
            message: e.to_string(),
        }
    }
}

/// Perform the client side of the WebSocket opening handshake. Returns the bytes that followed
/// the response head (the first frames, if the server was quick) and the subprotocol the server
/// chose (`Sec-WebSocket-Protocol`), if it named one.
pub async fn ws_handshake(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    subprotocol: Option<&str>,
    rng: &mut Rng,
) -> Result<(Vec<u8>, Option<String>), UpgradeError> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next().to_ne_bytes());
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        base64(&nonce)
    );
    if let Some(protocol) = subprotocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let (status, head, rest) = read_head(stream).await?;
    if status != 101 {
        let mut body = rest;
        let want = header_value(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        while body.len() < want {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        return Err(UpgradeError {
            status,
            message: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let chosen = header_value(&head, "sec-websocket-protocol").map(str::to_string);
    Ok((rest, chosen))
}

/// A minimal HTTP/1.1 request on a fresh connection (`Connection: close`); returns status and body.
pub async fn http_request(
    target: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = tcp_connect(None, target).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let (status, head, mut rest) = read_head(&mut stream).await?;
    stream.read_to_end(&mut rest).await?;
    let chunked =
        header_value(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&rest) } else { rest };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return out;
        };
        if size == 0 || bytes.len() < line_end + 2 + size {
            return out;
        }
        out.extend_from_slice(&bytes[line_end + 2..line_end + 2 + size]);
        bytes = &bytes[(line_end + 4 + size).min(bytes.len())..];
    }
}

/// Write a whole buffer; used by writer tasks.
pub async fn write_all(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
    wr.write_all(bytes).await
}

/// One item of the NATS text protocol from the server.
#[derive(Debug, PartialEq)]
pub enum NatsItem<'a> {
    Info(&'a [u8]),
    Msg {
        subject: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

/// The next complete NATS protocol item in `buf`, if any.
pub fn nats_next(buf: &mut ReadBuf) -> io::Result<Option<NatsItem<'_>>> {
    let bytes = buf.pending();
    let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &bytes[..line_end];
    let base = buf.start;
    let headers = line.starts_with(b"HMSG ");
    if headers || line.starts_with(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>: the payload handed on
        // is what follows the headers.
        let mut fields = [(0usize, 0usize); 5];
        let mut count = 0;
        let mut i = if headers { 5 } else { 4 };
        while i < line_end {
            while i < line_end && bytes[i] == b' ' {
                i += 1;
            }
            let from = i;
            while i < line_end && bytes[i] != b' ' {
                i += 1;
            }
            if from < i {
                if count == fields.len() {
                    count += 1;
                    break;
                }
                fields[count] = (from, i);
                count += 1;
            }
        }
        let counts = if headers { 4..=5 } else { 3..=4 };
        if !counts.contains(&count) {
            return Err(invalid("bad MSG line".into()));
        }
        let number = |(from, to): (usize, usize)| {
            std::str::from_utf8(&bytes[from..to])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
        };
        let (subject_from, subject_to) = fields[0];
        let Some(len) = number(fields[count - 1]) else {
            return Err(invalid("bad MSG length".into()));
        };
        let header_len = if headers {
            match number(fields[count - 2]) {
                Some(n) if n <= len => n,
                _ => return Err(invalid("bad HMSG header length".into())),
            }
        } else {
            0
        };
        // Bounded before the sums below, which a length near `usize::MAX` would overflow.
        let payload_start = line_end + 2;
        let Some(end) = payload_start
            .checked_add(len)
            .and_then(|n| n.checked_add(2))
            .filter(|_| len <= FRAME_BYTES_MAX)
        else {
            return Err(invalid(format!(
                "MSG of {len} bytes, larger than {FRAME_BYTES_MAX}"
            )));
        };
        if bytes.len() < end {
            return Ok(None);
        }
        buf.start = base + end;
        let data = &buf.data;
        let body_start = payload_start + header_len;
        return Ok(Some(NatsItem::Msg {
            subject: &data[base + subject_from..base + subject_to],
            payload: &data[base + body_start..base + payload_start + len],
        }));
    }
    buf.start = base + line_end + 2;
    let line = &buf.data[base..base + line_end];
    Ok(Some(if line.starts_with(b"INFO") {
        NatsItem::Info(line)
    } else if line == b"PING" {
        NatsItem::Ping
    } else if line == b"PONG" {
        NatsItem::Pong
    } else if line == b"+OK" {
        NatsItem::Ok
    } else {
        NatsItem::Err(line)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_masked_frame_decodes_to_its_payload() {
        let mut rng = Rng::new(3);
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            encode_frame(&mut wire, OP_TEXT, &payload, &mut rng);
            let mut buf = ReadBuf::new(wire);
            let mut parser = WsParser::default();
            assert_eq!(
                parser.next(&mut buf).unwrap(),
                Some(Frame::Text(&payload[..]))
            );
            assert!(buf.pending().is_empty());
        }
    }

    #[test]
    fn partial_and_fragmented_frames_wait_then_reassemble() {
        let mut wire = server_frame(OP_TEXT, false, b"hel");
        wire.extend(server_frame(OP_PING, true, b"p"));
        wire.extend(server_frame(OP_CONTINUATION, true, b"lo"));
        wire.extend(server_frame(OP_CLOSE, true, &1000u16.to_be_bytes()));
        let mut parser = WsParser::default();
        let mut buf = ReadBuf::new(wire[..3].to_vec());
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        buf.data.extend_from_slice(&wire[3..]);
        assert_eq!(parser.next(&mut buf).unwrap(), Some(Frame::Ping(b"p")));
        assert_eq!(parser.next(&mut buf).unwrap(), Some(Frame::Text(b"hello")));
        assert_eq!(parser.next(&mut buf).unwrap(), Some(Frame::Close(1000)));
        assert_eq!(parser.next(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_stray_or_interleaved_fragment_is_a_protocol_error() {
        // A continuation with no message started, even right after a reassembled one.
        let mut wire = server_frame(OP_TEXT, false, b"he");
        wire.extend(server_frame(OP_CONTINUATION, true, b"y"));
        wire.extend(server_frame(OP_CONTINUATION, true, b"stray"));
        let mut parser = WsParser::default();
        let mut buf = ReadBuf::new(wire);
        assert_eq!(parser.next(&mut buf).unwrap(), Some(Frame::Text(b"hey")));
        let e = parser.next(&mut buf).unwrap_err();
        assert!(e.to_string().contains("continuation"), "{e}");
        // A new message while a fragmented one is open.
        let mut wire = server_frame(OP_TEXT, false, b"he");
        wire.extend(server_frame(OP_BINARY, true, b"other"));
        let mut buf = ReadBuf::new(wire);
        assert!(WsParser::default().next(&mut buf).is_err());
    }

    #[test]
    fn a_fragmented_message_is_bounded_as_a_whole() {
        // Each fragment is below the cap, the message is not: refused on the second header,
        // before its payload arrives.
        let mut wire = server_frame(OP_BINARY, false, b"abc");
        wire.extend([OP_CONTINUATION, 127]);
        wire.extend(((FRAME_BYTES_MAX - 2) as u64).to_be_bytes());
        let mut buf = ReadBuf::new(wire);
        let e = WsParser::default().next(&mut buf).unwrap_err();
        assert!(e.to_string().contains("fragmented message larger"), "{e}");
    }

    #[test]
    fn a_large_reassembled_message_gives_its_buffer_back() {
        let half = vec![b'x'; 60_000];
        let mut wire = server_frame(OP_TEXT, false, &half);
        wire.extend(server_frame(OP_CONTINUATION, true, &half));
        let mut parser = WsParser::default();
        let mut buf = ReadBuf::new(wire);
        let Some(Frame::Text(message)) = parser.next(&mut buf).unwrap() else {
            panic!("no message");
        };
        assert_eq!(message.len(), 120_000);
        assert!(parser.fragments.capacity() >= 120_000);
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        assert_eq!(parser.fragments.capacity(), 0);
    }

    #[test]
    fn a_huge_nats_payload_length_is_an_error_not_a_panic() {
        for len in [usize::MAX, FRAME_BYTES_MAX + 1] {
            let mut buf = ReadBuf::new(format!("MSG s 1 {len}\r\nabc").into_bytes());
            let e = nats_next(&mut buf).unwrap_err();
            assert!(e.to_string().contains("larger than"), "{e}");
        }
    }

    fn msg<'a>(subject: &'a [u8], payload: &'a [u8]) -> Option<NatsItem<'a>> {
        Some(NatsItem::Msg { subject, payload })
    }

    #[test]
    fn nats_items_parse_including_split_payloads() {
        let wire =
            b"INFO {\"x\":1}\r\nPING\r\nMSG bench.3 1 _INBOX.a.9 5\r\nhello\r\nMSG s 2 3\r\nab";
        let mut buf = ReadBuf::new(wire.to_vec());
        assert!(matches!(
            nats_next(&mut buf).unwrap(),
            Some(NatsItem::Info(_))
        ));
        assert_eq!(nats_next(&mut buf).unwrap(), Some(NatsItem::Ping));
        assert_eq!(nats_next(&mut buf).unwrap(), msg(b"bench.3", b"hello"));
        assert_eq!(nats_next(&mut buf).unwrap(), None);
        buf.data.extend_from_slice(b"c\r\n");
        assert_eq!(nats_next(&mut buf).unwrap(), msg(b"s", b"abc"));
    }

    #[test]
    fn a_message_with_headers_hands_on_the_payload_after_them() {
        let headers = "NATS/1.0\r\nNats-Msg-Id: 4-9\r\n\r\n";
        let total = headers.len() + 5;
        let wire = format!(
            "HMSG bench.3 1 {} {total}\r\n{headers}hello\r\nHMSG s 2 _INBOX.a.9 {} {total}\r\n{headers}hel",
            headers.len(),
            headers.len()
        );
        let mut buf = ReadBuf::new(wire.into_bytes());
        assert_eq!(nats_next(&mut buf).unwrap(), msg(b"bench.3", b"hello"));
        assert_eq!(nats_next(&mut buf).unwrap(), None);
        buf.data.extend_from_slice(b"lo\r\n");
        assert_eq!(nats_next(&mut buf).unwrap(), msg(b"s", b"hello"));
        // Headers longer than the whole message are an error.
        let mut buf = ReadBuf::new(b"HMSG s 1 9 5\r\nhello\r\n".to_vec());
        assert!(nats_next(&mut buf).is_err());
    }

    #[tokio::test]
    async fn an_ipv6_loopback_target_is_reached_despite_an_ipv4_source() {
        // `--url` accepts ::1 (procs::loopback); the connections still get 127.0.0.x sources.
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // no IPv6 on this machine
        };
        let target = listener.local_addr().unwrap();
        let source = std::net::IpAddr::from([127, 0, 0, 2]);
        let stream = tcp_connect(Some(source), target).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), target);
        let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tcp_connect(Some(source), v4.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), source);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
