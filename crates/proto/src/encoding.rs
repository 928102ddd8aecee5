//! The two encodings of the same frames: JSON text (the default) and Protocol Buffers binary
//! (`schema/natter.proto`), chosen per connection by WebSocket subprotocol.
//!
//! The serde types stay the one domain representation; this module turns them into protobuf
//! bytes and back. The server's side is [`encode_result_proto`], [`encode_error_proto`] and
//! [`EventRef`] (an event borrowed from the server's own data, encoded once per encoding for all
//! its recipients); a client's side is [`ClientFrame::encode_proto`] and
//! [`ServerFrame::decode_proto`].

use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frames::*;
use crate::pb::{self, ProtoError, convert};
use crate::types::*;

/// The WebSocket subprotocol that selects protobuf frames (one binary message per frame).
pub const SUBPROTOCOL_PROTO: &str = "natter.v1.proto";

/// How a connection's frames are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames ([`crate::SUBPROTOCOL_JSON`], or no subprotocol at all).
    #[default]
    Json,
    /// Protobuf binary frames ([`SUBPROTOCOL_PROTO`]).
    Proto,
}

impl Encoding {
    /// The subprotocol that selects this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => crate::SUBPROTOCOL_JSON,
            Encoding::Proto => SUBPROTOCOL_PROTO,
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name.trim() {
            crate::SUBPROTOCOL_JSON => Some(Encoding::Json),
            SUBPROTOCOL_PROTO => Some(Encoding::Proto),
            _ => None,
        }
    }

    /// The first subprotocol a client offered that selects an encoding, in the client's order of
    /// preference. `offered` are `Sec-WebSocket-Protocol` header values, each a comma-separated
    /// list. `None` when nothing known was offered: the connection is then JSON and the server
    /// names no subprotocol in its answer.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Encoding> {
        offered
            .into_iter()
            .flat_map(|value| value.split(','))
            .find_map(Encoding::from_subprotocol)
    }

    /// Whether frames travel as binary WebSocket messages.
    pub fn is_binary(self) -> bool {
        self == Encoding::Proto
    }

    /// The name used in flags and docs: `json` or `proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Proto => "proto",
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Encoding, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "proto" | "protobuf" => Ok(Encoding::Proto),
            _ => Err(format!("unknown encoding `{s}` (json or proto)")),
        }
    }
}

/// A partial view of a [`pb::ClientFrame`]: its id alone, to answer a frame whose command is
/// undecodable with the id the client waits on. Mirrors field 1 of `ClientFrame`.
#[derive(Clone, PartialEq, prost::Message)]
struct FrameId {
    #[prost(uint64, tag = "1")]
    id: u64,
}

impl ClientFrame {
    /// Decode a protobuf binary frame, with the same error codes as [`ClientFrame::decode_json`]:
    /// `malformed_frame` for bytes that are not a `ClientFrame` (with the id when the envelope
    /// still yields one), `unknown_type` when no command this server knows is set, and
    /// `invalid_request` when a command's values are wrong (a required field unset, an unknown
    /// enum value).
    pub fn decode_proto(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        let frame = pb::ClientFrame::decode(bytes).map_err(|e| DecodeError {
            id: FrameId::decode(bytes).ok().map(|f| f.id),
            code: ErrorCode::MalformedFrame,
            message: format!("frame is not a protobuf natter.v1.ClientFrame: {e}"),
        })?;
        let id = frame.id;
        let Some(command) = frame.command else {
            return Err(DecodeError {
                id: Some(id),
                code: ErrorCode::UnknownType,
                message: "frame has no command this server knows".into(),
            });
        };
        let name = convert::command_name(&command);
        let command = Command::try_from(command).map_err(|e| DecodeError {
            id: Some(id),
            code: ErrorCode::InvalidRequest,
            message: format!("invalid `{name}` command: {e}"),
        })?;
        Ok(ClientFrame { id, command })
    }

    /// Encode as a protobuf binary frame (what clients send).
    pub fn encode_proto(&self) -> Vec<u8> {
        pb::ClientFrame {
            id: self.id,
            command: Some(self.command.clone().into()),
        }
        .encode_to_vec()
    }
}

impl ServerFrame {
    /// Decode a protobuf binary frame. `result` data becomes the same JSON value the JSON
    /// encoding carries, so that a client handles both encodings alike.
    pub fn decode_proto(bytes: &[u8]) -> Result<ServerFrame, ProtoError> {
        use pb::server_frame::Frame as F;
        let frame = pb::ServerFrame::decode(bytes)
            .map_err(|e| ProtoError(format!("not a protobuf natter.v1.ServerFrame: {e}")))?;
        let required = |field: &str| ProtoError(format!("`{field}` is required"));
        Ok(
            match frame
                .frame
                .ok_or_else(|| ProtoError("no frame this client knows".into()))?
            {
                F::Hello(hello) => ServerFrame::Hello(hello.try_into()?),
                F::Result(result) => ServerFrame::Result {
                    id: result.id,
                    data: result_json(result.data.ok_or_else(|| required("data"))?)?,
                },
                F::Error(error) => {
                    let (id, error) = convert::error_body(error)?;
                    ServerFrame::Error { id, error }
                }
                F::Message(event) => ServerFrame::Message {
                    cursor: event.cursor,
                    message: event
                        .message
                        .ok_or_else(|| required("message"))?
                        .try_into()?,
                },
                F::Receipt(event) => ServerFrame::Receipt {
                    cursor: event.cursor,
                    receipt: event.receipt.ok_or_else(|| required("receipt"))?.into(),
                },
                F::Conversation(event) => ServerFrame::Conversation {
                    cursor: event.cursor,
                    conversation: event
                        .conversation
                        .ok_or_else(|| required("conversation"))?
                        .try_into()?,
                },
                F::Typing(event) => ServerFrame::Typing {
                    conversation_id: event.conversation_id,
                    user_id: event.user_id,
                    active: event.active,
                    ttl_ms: event.ttl_ms,
                },
                F::Presence(presence) => ServerFrame::Presence(presence.into()),
                F::Reconnect(reconnect) => ServerFrame::Reconnect {
                    reason: reconnect.reason,
                },
            },
        )
    }

    /// Encode as a protobuf binary frame. A `result` frame's JSON data is matched to its protobuf
    /// type by its fields; data that is no result type is an error. (The server encodes results
    /// from their typed data with [`encode_result_proto`] instead.)
    pub fn encode_proto(&self) -> Result<Vec<u8>, ProtoError> {
        use pb::server_frame::Frame as F;
        let frame = match self {
            ServerFrame::Hello(hello) => F::Hello(hello.clone().into()),
            ServerFrame::Result { id, data } => F::Result(pb::Result {
                id: *id,
                data: Some(result_data_of_json(data)?),
            }),
            ServerFrame::Error { id, error } => F::Error(convert::error(*id, error)),
            ServerFrame::Message { cursor, message } => F::Message(pb::MessageEvent {
                cursor: *cursor,
                message: Some(message.clone().into()),
            }),
            ServerFrame::Receipt { cursor, receipt } => F::Receipt(pb::ReceiptEvent {
                cursor: *cursor,
                receipt: Some(receipt.clone().into()),
            }),
            ServerFrame::Conversation {
                cursor,
                conversation,
            } => F::Conversation(pb::ConversationEvent {
                cursor: *cursor,
                conversation: Some(conversation.clone().into()),
            }),
            ServerFrame::Typing {
                conversation_id,
                user_id,
                active,
                ttl_ms,
            } => F::Typing(pb::TypingEvent {
                conversation_id: *conversation_id,
                user_id: *user_id,
                active: *active,
                ttl_ms: *ttl_ms,
            }),
            ServerFrame::Presence(presence) => F::Presence(presence.clone().into()),
            ServerFrame::Reconnect { reason } => F::Reconnect(pb::Reconnect {
                reason: reason.clone(),
            }),
        };
        Ok(pb::ServerFrame { frame: Some(frame) }.encode_to_vec())
    }
}

/// The data of a `result` frame: every type a command is answered by. Its JSON form is its serde
/// form; its protobuf form is one member of the `Result.data` oneof.
pub trait ResultData: Serialize {
    fn into_proto(self) -> pb::result::Data;
}

macro_rules! result_data {
    ($($ty:ident),* $(,)?) => {
        $(impl ResultData for $ty {
            fn into_proto(self) -> pb::result::Data {
                pb::result::Data::$ty(self.into())
            }
        })*
    };
}

result_data!(
    Ack,
    HistoryPage,
    SyncPage,
    Receipt,
    Conversation,
    ConversationList,
    User,
    PresenceList,
    DeviceList,
    Empty,
);

/// Encode a protobuf `result` frame from typed data (the twin of [`encode_result`]); takes the
/// data by value so that its strings move into the message rather than being copied.
pub fn encode_result_proto<T: ResultData>(id: u64, data: T) -> Vec<u8> {
    pb::ServerFrame {
        frame: Some(pb::server_frame::Frame::Result(pb::Result {
            id,
            data: Some(data.into_proto()),
        })),
    }
    .encode_to_vec()
}

/// Encode a protobuf `error` frame (the twin of [`encode_error`]).
pub fn encode_error_proto(id: Option<u64>, error: &ErrorBody) -> Vec<u8> {
    pb::ServerFrame {
        frame: Some(pb::server_frame::Frame::Error(convert::error(id, error))),
    }
    .encode_to_vec()
}

fn result_json(data: pb::result::Data) -> Result<serde_json::Value, ProtoError> {
    use pb::result::Data as D;
    fn json<T: Serialize>(value: T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or_default()
    }
    Ok(match data {
        D::Ack(ack) => json(Ack::from(ack)),
        D::HistoryPage(page) => json(HistoryPage::try_from(page)?),
        D::SyncPage(page) => json(SyncPage::try_from(page)?),
        D::Receipt(receipt) => json(Receipt::from(receipt)),
        D::Conversation(conversation) => json(Conversation::try_from(conversation)?),
        D::ConversationList(list) => json(ConversationList::try_from(list)?),
        D::User(user) => json(User::from(user)),
        D::PresenceList(list) => json(PresenceList::from(list)),
        D::DeviceList(list) => json(DeviceList::from(list)),
        D::Empty(_) => json(Empty {}),
    })
}

/// Which result type a JSON `result` data is, told by the fields only that type has.
fn result_data_of_json(data: &serde_json::Value) -> Result<pb::result::Data, ProtoError> {
    fn parse<T: DeserializeOwned + ResultData>(
        data: &serde_json::Value,
    ) -> Result<pb::result::Data, ProtoError> {
        serde_json::from_value::<T>(data.clone())
            .map(ResultData::into_proto)
            .map_err(|e| ProtoError(format!("result data: {e}")))
    }
    let Some(object) = data.as_object() else {
        return Err(ProtoError("result data is not an object".into()));
    };
    let has = |key: &str| object.contains_key(key);
    if object.is_empty() {
        parse::<Empty>(data)
    } else if has("client_msg_id") && has("duplicate") {
        parse::<Ack>(data)
    } else if has("cursor") && has("conversations") {
        parse::<SyncPage>(data)
    } else if has("messages") {
        parse::<HistoryPage>(data)
    } else if has("members") && has("kind") {
        parse::<Conversation>(data)
    } else if has("conversations") {
        parse::<ConversationList>(data)
    } else if has("delivered_seq") && has("user_id") {
        parse::<Receipt>(data)
    } else if has("username") {
        parse::<User>(data)
    } else if has("presence") {
        parse::<PresenceList>(data)
    } else if has("devices") {
        parse::<DeviceList>(data)
    } else {
        Err(ProtoError("result data is of no known result type".into()))
    }
}

/// A server event as it goes on the wire, borrowing its data from wherever the server holds it,
/// so that the JSON encoding copies nothing first. The server's fan-out encodes each event at
/// most once per encoding and sends the same bytes to every recipient of that encoding.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventRef<'a> {
    Message {
        cursor: Pos,
        message: &'a Message,
    },
    Receipt {
        cursor: Pos,
        receipt: &'a Receipt,
    },
    Conversation {
        cursor: Pos,
        conversation: &'a Conversation,
    },
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        active: bool,
        ttl_ms: u64,
    },
    Presence(&'a Presence),
}

impl EventRef<'_> {
    /// The JSON text frame: the same text as [`ServerFrame::encode_json`] of the same event.
    pub fn encode_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The protobuf binary frame. Copies the event's strings once into the message (once per
    /// event, not per recipient); the message is then encoded into one exactly sized buffer.
    pub fn encode_proto(&self) -> Vec<u8> {
        use pb::server_frame::Frame as F;
        let frame = match *self {
            EventRef::Message { cursor, message } => F::Message(pb::MessageEvent {
                cursor,
                message: Some(message.clone().into()),
            }),
            EventRef::Receipt { cursor, receipt } => F::Receipt(pb::ReceiptEvent {
                cursor,
                receipt: Some(receipt.clone().into()),
            }),
            EventRef::Conversation {
                cursor,
                conversation,
            } => F::Conversation(pb::ConversationEvent {
                cursor,
                conversation: Some(conversation.clone().into()),
            }),
            EventRef::Typing {
                conversation_id,
                user_id,
                active,
                ttl_ms,
            } => F::Typing(pb::TypingEvent {
                conversation_id,
                user_id,
                active,
                ttl_ms,
            }),
            EventRef::Presence(presence) => F::Presence(presence.clone().into()),
        };
        pb::ServerFrame { frame: Some(frame) }.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Content {
        Content::Text { text: s.into() }
    }

    fn message(seq: Seq, content: Content) -> Message {
        Message {
            conversation_id: 12,
            seq,
            pos: 1000 + seq,
            sender_id: 7,
            client_msg_id: Some(format!("c-{seq}")),
            content,
            reply_to: Some(seq.saturating_sub(1)),
            sent_at_ms: 1_760_000_000_000 + seq,
        }
    }

    fn system_events() -> Vec<SystemEvent> {
        vec![
            SystemEvent::Created {
                by: 1,
                title: Some("team".into()),
            },
            SystemEvent::Created { by: 1, title: None },
            SystemEvent::MembersAdded {
                by: 1,
                user_ids: vec![2, 3],
            },
            SystemEvent::MemberRemoved { by: 1, user_id: 3 },
            SystemEvent::MemberLeft { user_id: 2 },
            SystemEvent::RoleChanged {
                by: 1,
                user_id: 2,
                role: Role::Admin,
            },
            SystemEvent::TitleChanged {
                by: 2,
                title: "renamed".into(),
            },
        ]
    }

    fn member(user_id: UserId, role: Role) -> Member {
        Member {
            user_id,
            username: format!("user{user_id}"),
            display_name: format!("User {user_id}"),
            role,
            delivered_seq: 4,
            read_seq: 3,
        }
    }

    fn conversation() -> Conversation {
        Conversation {
            id: 12,
            kind: ConversationKind::Group,
            title: Some("team".into()),
            members: vec![
                member(1, Role::Owner),
                member(2, Role::Admin),
                member(3, Role::Member),
            ],
            last_seq: 5,
            last_pos: 1005,
            created_at_ms: 1_760_000_000_000,
            last_activity_at_ms: 1_760_000_000_005,
            last_message: Some(message(5, text("latest"))),
            unread_count: Some(2),
        }
    }

    fn direct() -> Conversation {
        Conversation {
            id: 13,
            kind: ConversationKind::Direct,
            title: None,
            members: vec![member(1, Role::Member), member(2, Role::Member)],
            last_seq: 0,
            last_pos: 0,
            created_at_ms: 1,
            last_activity_at_ms: 1,
            last_message: None,
            unread_count: None,
        }
    }

    fn presence(online: bool) -> Presence {
        Presence {
            user_id: 2,
            online,
            last_seen_at_ms: (!online).then_some(1_760_000_000_000),
        }
    }

    fn every_command() -> Vec<Command> {
        vec![
            Command::Ping {},
            Command::Send {
                conversation_id: 12,
                client_msg_id: "c-1".into(),
                content: text("héllo ✓"),
                reply_to: Some(3),
            },
            Command::Send {
                conversation_id: 12,
                client_msg_id: "c-2".into(),
                content: Content::System {
                    event: SystemEvent::MemberLeft { user_id: 1 },
                },
                reply_to: None,
            },
            Command::History {
                conversation_id: 12,
                before: Some(50),
                after: Some(10),
                limit: Some(20),
            },
            Command::History {
                conversation_id: 12,
                before: None,
                after: None,
                limit: None,
            },
            Command::Sync {
                cursor: 99,
                limit: Some(100),
            },
            Command::Sync {
                cursor: 0,
                limit: None,
            },
            Command::Mark {
                conversation_id: 12,
                delivered: Some(5),
                read: Some(4),
            },
            Command::Mark {
                conversation_id: 12,
                delivered: None,
                read: None,
            },
            Command::Typing {
                conversation_id: 12,
                active: true,
            },
            Command::Typing {
                conversation_id: 12,
                active: false,
            },
            Command::Conversations {},
            Command::Conversation {
                conversation_id: 12,
            },
            Command::CreateDirect { user_id: 2 },
            Command::CreateGroup {
                title: "team".into(),
                member_ids: vec![2, 3],
            },
            Command::AddMembers {
                conversation_id: 12,
                user_ids: vec![4, 5],
            },
            Command::RemoveMember {
                conversation_id: 12,
                user_id: 4,
            },
            Command::Leave {
                conversation_id: 12,
            },
            Command::SetRole {
                conversation_id: 12,
                user_id: 2,
                role: Role::Owner,
            },
            Command::SetRole {
                conversation_id: 12,
                user_id: 2,
                role: Role::Member,
            },
            Command::SetTitle {
                conversation_id: 12,
                title: "new title".into(),
            },
            Command::LookupUser {
                username: Some("bob".into()),
                user_id: None,
            },
            Command::LookupUser {
                username: None,
                user_id: Some(5),
            },
            Command::Presence {
                user_ids: vec![2, 3],
            },
            Command::Devices {},
            Command::RevokeDevice { device_id: 77 },
            Command::Logout {},
        ]
    }

    fn result<T: Serialize>(id: u64, data: T) -> ServerFrame {
        ServerFrame::Result {
            id,
            data: serde_json::to_value(data).unwrap(),
        }
    }

    fn every_server_frame() -> Vec<ServerFrame> {
        let mut frames = vec![
            ServerFrame::Hello(Hello {
                protocol: crate::PROTOCOL_VERSION,
                server_version: "0.1.0".into(),
                user: User {
                    id: 1,
                    username: "alice".into(),
                    display_name: "Alice".into(),
                },
                device_id: 10,
                limits: Limits {
                    frame_bytes_max: 65536,
                    message_bytes_max: 16384,
                    sends_per_second: 20,
                    history_page_max: 200,
                    sync_page_max: 500,
                    heartbeat_interval_ms: 30000,
                    idle_timeout_ms: 90000,
                    typing_ttl_ms: 5000,
                },
            }),
            result(
                1,
                Ack {
                    conversation_id: 12,
                    client_msg_id: "c-1".into(),
                    seq: 6,
                    pos: 1006,
                    sent_at_ms: 1_760_000_000_006,
                    duplicate: true,
                },
            ),
            result(
                2,
                HistoryPage {
                    messages: vec![message(1, text("a")), message(2, text("b"))],
                    more: true,
                },
            ),
            result(
                3,
                HistoryPage {
                    messages: vec![],
                    more: false,
                },
            ),
            result(
                4,
                SyncPage {
                    cursor: 1006,
                    more: true,
                    conversations: vec![conversation(), direct()],
                    messages: vec![message(6, text("new"))],
                },
            ),
            result(
                5,
                Receipt {
                    conversation_id: 12,
                    user_id: 1,
                    delivered_seq: 6,
                    read_seq: 5,
                    pos: 1007,
                },
            ),
            result(6, conversation()),
            result(7, direct()),
            result(
                8,
                ConversationList {
                    conversations: vec![conversation(), direct()],
                },
            ),
            result(
                9,
                ConversationList {
                    conversations: vec![],
                },
            ),
            result(
                10,
                User {
                    id: 2,
                    username: "bob".into(),
                    display_name: "Bob".into(),
                },
            ),
            result(
                11,
                PresenceList {
                    presence: vec![presence(true), presence(false)],
                },
            ),
            result(
                12,
                DeviceList {
                    devices: vec![Device {
                        id: 10,
                        name: "laptop".into(),
                        created_at_ms: 5,
                        last_seen_at_ms: 6,
                        current: true,
                    }],
                },
            ),
            result(13, Empty {}),
            ServerFrame::Error {
                id: Some(14),
                error: ErrorBody {
                    code: ErrorCode::RateLimited,
                    message: "slow down".into(),
                    retry_after_ms: Some(250),
                },
            },
            ServerFrame::Error {
                id: None,
                error: ErrorBody {
                    code: ErrorCode::MalformedFrame,
                    message: "nope".into(),
                    retry_after_ms: None,
                },
            },
            ServerFrame::Message {
                cursor: 1001,
                message: message(1, text("hi")),
            },
            ServerFrame::Message {
                cursor: 0,
                message: Message {
                    client_msg_id: None,
                    reply_to: None,
                    ..message(2, text(""))
                },
            },
            ServerFrame::Receipt {
                cursor: 1007,
                receipt: Receipt {
                    conversation_id: 12,
                    user_id: 2,
                    delivered_seq: 6,
                    read_seq: 6,
                    pos: 1007,
                },
            },
            ServerFrame::Conversation {
                cursor: 1005,
                conversation: conversation(),
            },
            ServerFrame::Typing {
                conversation_id: 12,
                user_id: 2,
                active: true,
                ttl_ms: 5000,
            },
            ServerFrame::Typing {
                conversation_id: 12,
                user_id: 2,
                active: false,
                ttl_ms: 5000,
            },
            ServerFrame::Presence(presence(true)),
            ServerFrame::Presence(presence(false)),
            ServerFrame::Reconnect {
                reason: "the server is restarting".into(),
            },
        ];
        for (seq, event) in (1..).zip(system_events()) {
            frames.push(ServerFrame::Message {
                cursor: seq,
                message: Message {
                    client_msg_id: None,
                    ..message(seq, Content::System { event })
                },
            });
        }
        frames
    }

    #[test]
    fn every_command_round_trips() {
        let commands = every_command();
        let mut names: Vec<&str> = commands.iter().map(Command::name).collect();
        names.dedup();
        assert_eq!(
            names, COMMAND_TYPES,
            "one sample (or more) of every command"
        );
        for (id, command) in (1..).zip(commands) {
            let frame = ClientFrame { id, command };
            let bytes = frame.encode_proto();
            assert_eq!(ClientFrame::decode_proto(&bytes), Ok(frame));
        }
    }

    #[test]
    fn every_server_frame_round_trips() {
        let frames = every_server_frame();
        let kinds: std::collections::BTreeSet<String> = frames
            .iter()
            .map(|f| serde_json::to_value(f).unwrap()["type"].to_string())
            .collect();
        assert_eq!(kinds.len(), 9, "every kind of server frame: {kinds:?}");
        for frame in frames {
            let bytes = frame.encode_proto().unwrap();
            assert_eq!(ServerFrame::decode_proto(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn typed_encoders_give_the_same_bytes_as_the_frames() {
        let ack = Ack {
            conversation_id: 12,
            client_msg_id: "c-1".into(),
            seq: 6,
            pos: 1006,
            sent_at_ms: 1_760_000_000_006,
            duplicate: false,
        };
        assert_eq!(
            encode_result_proto(3, ack.clone()),
            result(3, ack).encode_proto().unwrap()
        );
        assert_eq!(
            encode_result_proto(4, conversation()),
            result(4, conversation()).encode_proto().unwrap()
        );
        let error = ErrorBody {
            code: ErrorCode::NotMember,
            message: "no".into(),
            retry_after_ms: None,
        };
        let frame = ServerFrame::Error {
            id: Some(9),
            error: error.clone(),
        };
        assert_eq!(
            encode_error_proto(Some(9), &error),
            frame.encode_proto().unwrap()
        );
    }

    #[test]
    fn an_event_encodes_as_its_server_frame_in_both_encodings() {
        let message = message(1, text("hi"));
        let receipt = Receipt {
            conversation_id: 12,
            user_id: 2,
            delivered_seq: 1,
            read_seq: 1,
            pos: 1002,
        };
        let conversation = conversation();
        let presence = presence(false);
        let events = [
            (
                EventRef::Message {
                    cursor: 1001,
                    message: &message,
                },
                ServerFrame::Message {
                    cursor: 1001,
                    message: message.clone(),
                },
            ),
            (
                EventRef::Receipt {
                    cursor: 1002,
                    receipt: &receipt,
                },
                ServerFrame::Receipt {
                    cursor: 1002,
                    receipt: receipt.clone(),
                },
            ),
            (
                EventRef::Conversation {
                    cursor: 0,
                    conversation: &conversation,
                },
                ServerFrame::Conversation {
                    cursor: 0,
                    conversation: conversation.clone(),
                },
            ),
            (
                EventRef::Typing {
                    conversation_id: 12,
                    user_id: 2,
                    active: true,
                    ttl_ms: 5000,
                },
                ServerFrame::Typing {
                    conversation_id: 12,
                    user_id: 2,
                    active: true,
                    ttl_ms: 5000,
                },
            ),
            (
                EventRef::Presence(&presence),
                ServerFrame::Presence(presence.clone()),
            ),
        ];
        for (event, frame) in events {
            assert_eq!(event.encode_json(), frame.encode_json());
            assert_eq!(event.encode_proto(), frame.encode_proto().unwrap());
        }
    }

    fn error_of(bytes: &[u8]) -> DecodeError {
        ClientFrame::decode_proto(bytes).unwrap_err()
    }

    #[test]
    fn undecodable_bytes_are_a_malformed_frame() {
        let error = error_of(&[0xff, 0xff, 0xff]);
        assert_eq!((error.code, error.id), (ErrorCode::MalformedFrame, None));
        // A length that runs past the end.
        let error = error_of(&[0x08, 0x07, 0x5a, 0x10, 0x01]);
        assert_eq!(error.code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn a_broken_command_in_a_sound_envelope_keeps_the_request_id() {
        let mut bytes = ClientFrame {
            id: 6,
            command: Command::LookupUser {
                username: Some("~".into()),
                user_id: None,
            },
        }
        .encode_proto();
        let at = bytes.iter().position(|b| *b == b'~').unwrap();
        bytes[at] = 0xff; // not UTF-8
        let error = error_of(&bytes);
        assert_eq!((error.code, error.id), (ErrorCode::MalformedFrame, Some(6)));
    }

    #[test]
    fn a_frame_without_a_known_command_is_an_unknown_type() {
        // Empty bytes are a valid, empty ClientFrame: id 0 and no command.
        let error = error_of(&[]);
        assert_eq!((error.code, error.id), (ErrorCode::UnknownType, Some(0)));
        // id 4 and field 99 (a command from the future), an empty message.
        let mut bytes = pb::ClientFrame {
            id: 4,
            command: None,
        }
        .encode_to_vec();
        bytes.extend_from_slice(&[0x9a, 0x06, 0x00]);
        let error = error_of(&bytes);
        assert_eq!((error.code, error.id), (ErrorCode::UnknownType, Some(4)));
    }

    #[test]
    fn bad_values_are_an_invalid_request() {
        use pb::client_frame::Command as C;
        let cases = [
            C::Send(pb::command::Send {
                conversation_id: 1,
                client_msg_id: "c".into(),
                content: None,
                reply_to: None,
            }),
            C::Send(pb::command::Send {
                conversation_id: 1,
                client_msg_id: "c".into(),
                content: Some(pb::Content { kind: None }),
                reply_to: None,
            }),
            C::SetRole(pb::command::SetRole {
                conversation_id: 1,
                user_id: 2,
                role: pb::Role::Unspecified.into(),
            }),
            C::SetRole(pb::command::SetRole {
                conversation_id: 1,
                user_id: 2,
                role: 42,
            }),
        ];
        for command in cases {
            let bytes = pb::ClientFrame {
                id: 5,
                command: Some(command),
            }
            .encode_to_vec();
            let error = error_of(&bytes);
            assert_eq!(
                (error.code, error.id),
                (ErrorCode::InvalidRequest, Some(5)),
                "{error:?}"
            );
        }
    }

    #[test]
    fn typing_without_active_means_active() {
        let bytes = pb::ClientFrame {
            id: 1,
            command: Some(pb::client_frame::Command::Typing(pb::command::Typing {
                conversation_id: 3,
                active: None,
            })),
        }
        .encode_to_vec();
        assert_eq!(
            ClientFrame::decode_proto(&bytes).unwrap().command,
            Command::Typing {
                conversation_id: 3,
                active: true
            }
        );
    }

    #[test]
    fn typing_with_active_absent_or_null_means_active() {
        for json in [
            r#"{"id":1,"type":"typing","conversation_id":3}"#,
            r#"{"id":1,"type":"typing","conversation_id":3,"active":null}"#,
        ] {
            let command = ClientFrame::decode_json(json).unwrap().command;
            let expected = Command::Typing {
                conversation_id: 3,
                active: true,
            };
            assert_eq!(command, expected, "{json}");
        }
        let stopped = r#"{"id":1,"type":"typing","conversation_id":3,"active":false}"#;
        assert!(matches!(
            ClientFrame::decode_json(stopped).unwrap().command,
            Command::Typing { active: false, .. }
        ));
    }

    #[test]
    fn a_broken_server_frame_is_an_error() {
        assert!(ServerFrame::decode_proto(&[0xff]).is_err());
        assert!(ServerFrame::decode_proto(&[]).is_err());
        let unknown_code = pb::ServerFrame {
            frame: Some(pb::server_frame::Frame::Error(pb::Error {
                id: None,
                code: 999,
                message: String::new(),
                retry_after_ms: None,
            })),
        };
        assert!(ServerFrame::decode_proto(&unknown_code.encode_to_vec()).is_err());
        let no_type = ServerFrame::Result {
            id: 1,
            data: serde_json::json!({"what": 1}),
        };
        assert!(no_type.encode_proto().is_err());
    }

    #[test]
    fn the_client_chooses_among_the_subprotocols_it_offers() {
        assert_eq!(Encoding::negotiate([]), None);
        assert_eq!(Encoding::negotiate(["chat, superchat"]), None);
        assert_eq!(
            Encoding::negotiate(["natter.v1.proto"]),
            Some(Encoding::Proto)
        );
        assert_eq!(
            Encoding::negotiate(["natter.v1.proto, natter.v1.json"]),
            Some(Encoding::Proto)
        );
        assert_eq!(
            Encoding::negotiate(["other", "natter.v1.json,natter.v1.proto"]),
            Some(Encoding::Json)
        );
        for encoding in [Encoding::Json, Encoding::Proto] {
            assert_eq!(
                Encoding::from_subprotocol(encoding.subprotocol()),
                Some(encoding)
            );
            assert_eq!(encoding.as_str().parse(), Ok(encoding));
        }
    }
}
