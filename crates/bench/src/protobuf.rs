//! Natter's Protocol Buffers frames (subprotocol `natter.v1.proto`, schema
//! `crates/proto/schema/natter.proto`), as far as the bench needs them, written by hand.
//!
//! Why not `natter_proto::pb` and prost: decoding a `ServerFrame` with prost allocates every
//! string of the frame (client message id, text) and builds the whole message tree, once per
//! delivery — 300,000 times a second in `fanout`. The JSON path reads only the fields it needs,
//! borrowed from the read buffer; this does the same for protobuf: it walks the wire format and
//! keeps the few fields the bench looks at (ids, `seq`, `pos`, cursors, the message text), so
//! that neither encoding makes the load generator the bottleneck. The tests check both
//! directions against `natter_proto`, the protocol's reference code.

use std::borrow::Cow;

use crate::conn::{InContent, InData, InMessage, Str};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Bytes that are not the protobuf message the bench expected.
#[derive(Debug, PartialEq)]
pub struct Malformed;

/// One field's value (fixed-width values are skipped: none of the fields read here has one).
#[derive(Debug, PartialEq)]
enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or(Malformed)?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// The fields of one message, in wire order.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { bytes, at: 0 }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), Malformed> {
        let key = read_varint(self.bytes, &mut self.at)?;
        let number = key >> 3;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(read_varint(self.bytes, &mut self.at)?),
            LEN => {
                let len = usize::try_from(read_varint(self.bytes, &mut self.at)?)
                    .map_err(|_| Malformed)?;
                let end = self.at.checked_add(len).ok_or(Malformed)?;
                let slice = self.bytes.get(self.at..end).ok_or(Malformed)?;
                self.at = end;
                Value::Len(slice)
            }
            FIXED64 | FIXED32 => {
                let width = if key & 7 == u64::from(FIXED64) { 8 } else { 4 };
                self.at += width;
                if self.at > self.bytes.len() {
                    return Err(Malformed);
                }
                Value::Fixed
            }
            _ => return Err(Malformed),
        };
        Ok((number, value))
    }
}

/// What the bench reads of a `natter.v1.ServerFrame`.
#[derive(Debug)]
pub enum ServerFrame<'a> {
    Hello,
    /// `Result`: `data` carries an ack's `seq`, or a sync page's `cursor`, `more` and messages.
    Result {
        id: u64,
        data: InData<'a>,
    },
    /// `Error`: `code` is the JSON spelling (`not_member`, …).
    Error {
        id: Option<u64>,
        code: &'static str,
    },
    /// `MessageEvent`.
    Message {
        cursor: u64,
        seq: u64,
        text: Option<&'a [u8]>,
    },
    /// Receipts, conversation changes, typing, presence, reconnect, and kinds from the future.
    Other,
}

/// Decode one binary frame.
pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame<'_>, Malformed> {
    let mut frame = ServerFrame::Other;
    for field in fields(bytes) {
        frame = match field? {
            (1, Value::Len(_)) => ServerFrame::Hello,
            (2, Value::Len(body)) => result(body)?,
            (3, Value::Len(body)) => error(body)?,
            (4, Value::Len(body)) => message_event(body)?,
            _ => continue,
        };
    }
    Ok(frame)
}

fn result(bytes: &[u8]) -> Result<ServerFrame<'_>, Malformed> {
    let mut id = 0;
    let mut data = InData::default();
    for field in fields(bytes) {
        match field? {
            (1, Value::Varint(v)) => id = v,
            (10, Value::Len(ack)) => {
                // proto3: an unset seq is 0, but an ack always has one.
                data.seq = Some(0);
                for field in fields(ack) {
                    if let (3, Value::Varint(seq)) = field? {
                        data.seq = Some(seq);
                    }
                }
            }
            (12, Value::Len(page)) => {
                data.cursor = Some(0);
                data.more = Some(false);
                for field in fields(page) {
                    match field? {
                        (1, Value::Varint(cursor)) => data.cursor = Some(cursor),
                        (2, Value::Varint(more)) => data.more = Some(more != 0),
                        (4, Value::Len(message)) => {
                            let (seq, pos, text) = message_fields(message)?;
                            let text = match text {
                                Some(t) => Some(Str(Cow::Borrowed(
                                    std::str::from_utf8(t).map_err(|_| Malformed)?,
                                ))),
                                None => None,
                            };
                            data.messages.push(InMessage {
                                seq,
                                pos,
                                content: InContent { text },
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ServerFrame::Result { id, data })
}

fn error(bytes: &[u8]) -> Result<ServerFrame<'_>, Malformed> {
    let mut id = None;
    let mut code = 0;
    for field in fields(bytes) {
        match field? {
            (1, Value::Varint(v)) => id = Some(v),
            (2, Value::Varint(v)) => code = v,
            _ => {}
        }
    }
    let code = i32::try_from(code)
        .ok()
        .and_then(|c| natter_proto::pb::ErrorCode::try_from(c).ok())
        .map_or("unknown", |c| error_code_name(c.as_str_name()));
    Ok(ServerFrame::Error { id, code })
}

/// `ERROR_CODE_NOT_MEMBER` → `not_member` (the schema's rule for the JSON twin), without
/// allocating: the known names are listed once here.
fn error_code_name(proto_name: &str) -> &'static str {
    const NAMES: [&str; 21] = [
        "malformed_frame",
        "unknown_type",
        "invalid_request",
        "frame_too_large",
        "message_too_large",
        "unsupported_content",
        "unauthorized",
        "wrong_password",
        "user_disabled",
        "username_taken",
        "invalid_username",
        "invalid_password",
        "not_found",
        "not_member",
        "forbidden",
        "conflict",
        "rate_limited",
        "too_many_connections",
        "server_full",
        "shutting_down",
        "internal",
    ];
    let bare = proto_name.strip_prefix("ERROR_CODE_").unwrap_or(proto_name);
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(bare))
        .copied()
        .unwrap_or("unknown")
}

fn message_event(bytes: &[u8]) -> Result<ServerFrame<'_>, Malformed> {
    let mut cursor = 0;
    let mut message = (0, 0, None);
    for field in fields(bytes) {
        match field? {
            (1, Value::Varint(v)) => cursor = v,
            (2, Value::Len(body)) => message = message_fields(body)?,
            _ => {}
        }
    }
    let (seq, _pos, text) = message;
    Ok(ServerFrame::Message { cursor, seq, text })
}

/// `Message`: `seq`, `pos` and the text of a text content (none for system messages).
fn message_fields(bytes: &[u8]) -> Result<(u64, u64, Option<&[u8]>), Malformed> {
    let (mut seq, mut pos, mut text) = (0, 0, None);
    for field in fields(bytes) {
        match field? {
            (2, Value::Varint(v)) => seq = v,
            (3, Value::Varint(v)) => pos = v,
            (6, Value::Len(content)) => {
                for field in fields(content) {
                    if let (1, Value::Len(text_message)) = field? {
                        for field in fields(text_message) {
                            if let (1, Value::Len(t)) = field? {
                                text = Some(t);
                            }
                        }
                        // A text content with an empty text is still a text.
                        text.get_or_insert(&[]);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((seq, pos, text))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(out: &mut Vec<u8>, number: u64, wire_type: u8) {
    put_varint(out, (number << 3) | u64::from(wire_type));
}

fn put_varint_field(out: &mut Vec<u8>, number: u64, v: u64) {
    put_key(out, number, VARINT);
    put_varint(out, v);
}

/// The key and length of a length-delimited field whose body follows.
fn put_len_head(out: &mut Vec<u8>, number: u64, len: usize) {
    put_key(out, number, LEN);
    put_varint(out, len as u64);
}

/// Bytes of a length-delimited field of field number < 16 holding `len` bytes.
fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// `ClientFrame { id, send: Send { conversation_id, client_msg_id, content: { text } } }`: the
/// bench's message.
pub fn encode_send(
    out: &mut Vec<u8>,
    id: u64,
    conversation_id: u64,
    client_msg_id: &[u8],
    text: &[u8],
) {
    let text_message = len_field_size(text.len());
    let content = len_field_size(text_message);
    let send = 1
        + varint_len(conversation_id)
        + len_field_size(client_msg_id.len())
        + len_field_size(content);
    put_varint_field(out, 1, id);
    put_len_head(out, 11, send);
    put_varint_field(out, 1, conversation_id);
    put_len_head(out, 2, client_msg_id.len());
    out.extend_from_slice(client_msg_id);
    put_len_head(out, 3, content);
    put_len_head(out, 1, text_message);
    put_len_head(out, 1, text.len());
    out.extend_from_slice(text);
}

/// `ClientFrame { id, ping: {} }`.
pub fn encode_ping(out: &mut Vec<u8>, id: u64) {
    put_varint_field(out, 1, id);
    put_len_head(out, 10, 0);
}

/// `ClientFrame { id, sync: Sync { cursor, limit } }`.
pub fn encode_sync(out: &mut Vec<u8>, id: u64, cursor: u64, limit: u32) {
    put_varint_field(out, 1, id);
    let body = 2 + varint_len(cursor) + varint_len(u64::from(limit));
    put_len_head(out, 13, body);
    put_varint_field(out, 1, cursor);
    put_varint_field(out, 2, u64::from(limit));
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::{
        Ack, ClientFrame, Command, Content, ErrorBody, ErrorCode, EventRef, Message, SyncPage,
    };

    fn message(seq: u64, text: &str) -> Message {
        Message {
            conversation_id: 12,
            seq,
            pos: 1000 + seq,
            sender_id: 3,
            client_msg_id: Some(format!("c-{seq}")),
            content: Content::Text { text: text.into() },
            reply_to: None,
            sent_at_ms: 1_760_000_000_000,
        }
    }

    #[test]
    fn varints_encode_as_prost_does() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(&mut ours, v);
            let mut theirs = Vec::new();
            natter_proto::prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(varint_len(v), ours.len(), "{v}");
            assert_eq!(read_varint(&ours, &mut 0), Ok(v));
        }
    }

    #[test]
    fn sends_pings_and_syncs_decode_with_natter_proto() {
        let text = "nb 123456 42 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        for (id, conversation_id) in [(42, 12), (1, 0), (u64::MAX, 1 << 40)] {
            let mut bytes = Vec::new();
            let client_msg_id = format!("{id:x}");
            encode_send(
                &mut bytes,
                id,
                conversation_id,
                client_msg_id.as_bytes(),
                text.as_bytes(),
            );
            let frame = ClientFrame::decode_proto(&bytes).unwrap();
            assert_eq!(frame.id, id);
            let Command::Send {
                conversation_id: c,
                client_msg_id,
                content,
                reply_to,
            } = frame.command
            else {
                panic!("not a send: {:?}", frame.command);
            };
            assert_eq!(c, conversation_id);
            assert_eq!(client_msg_id, format!("{id:x}"));
            assert_eq!(content.text(), Some(text));
            assert_eq!(reply_to, None);
        }
        let mut bytes = Vec::new();
        encode_ping(&mut bytes, 1);
        let frame = ClientFrame::decode_proto(&bytes).unwrap();
        assert_eq!((frame.id, frame.command), (1, Command::Ping {}));
        for (cursor, limit) in [(0, 500), (1_234_567, 1), (u64::MAX, u32::MAX)] {
            let mut bytes = Vec::new();
            encode_sync(&mut bytes, 7, cursor, limit);
            let frame = ClientFrame::decode_proto(&bytes).unwrap();
            assert_eq!(frame.id, 7);
            assert_eq!(
                frame.command,
                Command::Sync {
                    cursor,
                    limit: Some(limit)
                }
            );
        }
    }

    #[test]
    fn message_events_decode_without_copies() {
        let m = message(5, "nb 77 5 xx");
        let bytes = EventRef::Message {
            cursor: 1005,
            message: &m,
        }
        .encode_proto();
        let ServerFrame::Message { cursor, seq, text } = decode_server(&bytes).unwrap() else {
            panic!("not a message");
        };
        assert_eq!((cursor, seq), (1005, 5));
        let text = text.unwrap();
        assert_eq!(text, b"nb 77 5 xx");
        // Borrowed from the frame's bytes.
        let range = bytes.as_ptr_range();
        assert!(range.contains(&text.as_ptr()));
        // Cursor 0 (a cluster node's live frames) and a system message (no text).
        let system = Message {
            content: Content::System {
                event: natter_proto::SystemEvent::MemberLeft { user_id: 4 },
            },
            client_msg_id: None,
            ..message(6, "")
        };
        let bytes = EventRef::Message {
            cursor: 0,
            message: &system,
        }
        .encode_proto();
        assert!(matches!(
            decode_server(&bytes),
            Ok(ServerFrame::Message {
                cursor: 0,
                seq: 6,
                text: None,
            })
        ));
    }

    #[test]
    fn acks_pages_errors_and_hellos_decode() {
        let ack = Ack {
            conversation_id: 12,
            client_msg_id: "9".into(),
            seq: 6,
            pos: 1006,
            sent_at_ms: 1,
            duplicate: false,
        };
        let bytes = natter_proto::encode_result_proto(9, ack);
        let Ok(ServerFrame::Result { id: 9, data }) = decode_server(&bytes) else {
            panic!("not a result");
        };
        assert_eq!((data.seq, data.cursor), (Some(6), None));

        let page = SyncPage {
            cursor: 2000,
            more: true,
            conversations: vec![],
            messages: vec![message(1, "nb 1 1 x"), message(2, "hello")],
        };
        let bytes = natter_proto::encode_result_proto(7, page);
        let Ok(ServerFrame::Result { id: 7, data }) = decode_server(&bytes) else {
            panic!("not a result");
        };
        assert_eq!(
            (data.cursor, data.more, data.seq),
            (Some(2000), Some(true), None)
        );
        let texts: Vec<&str> = data
            .messages
            .iter()
            .map(|m| m.content.text.as_deref().unwrap())
            .collect();
        assert_eq!(texts, ["nb 1 1 x", "hello"]);
        assert_eq!(data.messages[1].seq, 2);

        // The last page of a sync: cursor and `more: false` are proto3 defaults when zero.
        let empty = SyncPage {
            cursor: 0,
            more: false,
            conversations: vec![],
            messages: vec![],
        };
        let bytes = natter_proto::encode_result_proto(7, empty);
        let Ok(ServerFrame::Result { data, .. }) = decode_server(&bytes) else {
            panic!("not a result");
        };
        assert_eq!((data.cursor, data.more), (Some(0), Some(false)));

        let bytes = natter_proto::encode_result_proto(1, natter_proto::Empty {});
        let Ok(ServerFrame::Result { id: 1, data }) = decode_server(&bytes) else {
            panic!("not a result");
        };
        assert_eq!(data.seq, None);

        for (code, id) in [
            (ErrorCode::NotMember, Some(4)),
            (ErrorCode::RateLimited, None),
            (ErrorCode::Internal, Some(0)),
        ] {
            let body = ErrorBody {
                code,
                message: "no".into(),
                retry_after_ms: Some(5),
            };
            let bytes = natter_proto::encode_error_proto(id, &body);
            let Ok(ServerFrame::Error {
                id: got,
                code: name,
            }) = decode_server(&bytes)
            else {
                panic!("not an error");
            };
            assert_eq!((got, name), (id, code.as_str()));
        }

        let hello = natter_proto::ServerFrame::Hello(natter_proto::Hello {
            protocol: 1,
            server_version: "0.1.0".into(),
            user: natter_proto::User {
                id: 1,
                username: "a".into(),
                display_name: "a".into(),
            },
            device_id: 2,
            limits: natter_proto::Limits {
                frame_bytes_max: 1,
                message_bytes_max: 1,
                sends_per_second: 1,
                history_page_max: 1,
                sync_page_max: 1,
                heartbeat_interval_ms: 1,
                idle_timeout_ms: 1,
                typing_ttl_ms: 1,
            },
        });
        let bytes = hello.encode_proto().unwrap();
        assert!(matches!(decode_server(&bytes), Ok(ServerFrame::Hello)));
    }

    #[test]
    fn other_frames_are_other_and_broken_bytes_are_malformed() {
        let typing = EventRef::Typing {
            conversation_id: 1,
            user_id: 2,
            active: true,
            ttl_ms: 5000,
        }
        .encode_proto();
        assert!(matches!(decode_server(&typing), Ok(ServerFrame::Other)));
        assert!(matches!(decode_server(&[]), Ok(ServerFrame::Other)));
        // A length running past the end; an unterminated varint; a group wire type.
        assert_eq!(decode_server(&[0x22, 0x05, 0x08]).err(), Some(Malformed));
        assert_eq!(decode_server(&[0x08, 0xFF]).err(), Some(Malformed));
        assert_eq!(decode_server(&[0x0B]).err(), Some(Malformed));
    }

    #[test]
    fn every_error_code_has_its_json_name() {
        // Every code the schema has, so that a new one fails here until it is listed.
        for value in 1.. {
            let Ok(code) = natter_proto::pb::ErrorCode::try_from(value) else {
                assert!(value > 21, "codes end at {value}");
                break;
            };
            let name = error_code_name(code.as_str_name());
            assert_ne!(name, "unknown", "{code:?}");
            assert_eq!(
                name,
                code.as_str_name()
                    .trim_start_matches("ERROR_CODE_")
                    .to_ascii_lowercase()
            );
        }
    }
}
