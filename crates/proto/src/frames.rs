//! Frames: what travels in one WebSocket message.
//!
//! A client sends commands `{"id": 7, "type": "send", ...}`; each gets exactly one reply, `result` or
//! `error`, carrying the same `id`. The server also pushes events (`message`, `receipt`, …) that
//! carry no `id`.

use serde::{Deserialize, Serialize};

use crate::types::*;

/// A command from a client, tagged by `type`. The request `id` sits beside `type` in the same object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Answers `{}`; lets a client measure round trips or keep a connection warm.
    Ping {},
    /// Send a message; answered by an [`Ack`] once it is durably committed.
    Send {
        conversation_id: ConversationId,
        client_msg_id: String,
        content: Content,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
    },
    /// A page of history by `seq`; answered by a [`HistoryPage`].
    History {
        conversation_id: ConversationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Everything that changed since `cursor`; answered by a [`SyncPage`].
    Sync {
        cursor: Pos,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Move your own delivered and/or read markers forward; answered by a [`Receipt`].
    Mark {
        conversation_id: ConversationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<Seq>,
    },
    /// Tell the other members you are (or stopped) typing; answered by `{}`.
    Typing {
        conversation_id: ConversationId,
        #[serde(default = "default_true", deserialize_with = "true_unless_false")]
        active: bool,
    },
    /// Your conversations, newest activity first; answered by [`ConversationList`].
    Conversations {},
    /// One conversation's state; answered by a [`Conversation`].
    Conversation { conversation_id: ConversationId },
    /// The direct conversation with a user, created if it does not exist; answered by a [`Conversation`].
    CreateDirect { user_id: UserId },
    /// A new group with you as owner; answered by a [`Conversation`].
    CreateGroup {
        title: String,
        #[serde(default, deserialize_with = "empty_unless_given")]
        member_ids: Vec<UserId>,
    },
    /// Owner or admin only; answered by a [`Conversation`].
    AddMembers {
        conversation_id: ConversationId,
        user_ids: Vec<UserId>,
    },
    /// Owner or admin only; answered by a [`Conversation`].
    RemoveMember {
        conversation_id: ConversationId,
        user_id: UserId,
    },
    /// Leave a group; answered by `{}`. The owner must hand ownership over first.
    Leave { conversation_id: ConversationId },
    /// Owner only (admins may not promote); `owner` hands ownership over. Answered by a [`Conversation`].
    SetRole {
        conversation_id: ConversationId,
        user_id: UserId,
        role: Role,
    },
    /// Owner or admin only; answered by a [`Conversation`].
    SetTitle {
        conversation_id: ConversationId,
        title: String,
    },
    /// Find a user by username, or by id among those who share or shared a conversation with
    /// you (exactly one of the two); answered by a [`User`].
    LookupUser {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<UserId>,
    },
    /// Presence of users who share a conversation with you; answered by [`PresenceList`].
    Presence { user_ids: Vec<UserId> },
    /// Your devices; answered by [`DeviceList`].
    Devices {},
    /// Log a device out; answered by `{}`.
    RevokeDevice { device_id: DeviceId },
    /// Log this device out; answered by `{}`, then the connection closes.
    Logout {},
}

fn default_true() -> bool {
    true
}

/// An optional flag that defaults to true: `null` is read as absent, as in every optional field.
fn true_unless_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// An optional list that defaults to empty: `null` is read as absent, as in every optional field.
pub(crate) fn empty_unless_given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl Command {
    /// The `type` string of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping {} => "ping",
            Command::Send { .. } => "send",
            Command::History { .. } => "history",
            Command::Sync { .. } => "sync",
            Command::Mark { .. } => "mark",
            Command::Typing { .. } => "typing",
            Command::Conversations {} => "conversations",
            Command::Conversation { .. } => "conversation",
            Command::CreateDirect { .. } => "create_direct",
            Command::CreateGroup { .. } => "create_group",
            Command::AddMembers { .. } => "add_members",
            Command::RemoveMember { .. } => "remove_member",
            Command::Leave { .. } => "leave",
            Command::SetRole { .. } => "set_role",
            Command::SetTitle { .. } => "set_title",
            Command::LookupUser { .. } => "lookup_user",
            Command::Presence { .. } => "presence",
            Command::Devices {} => "devices",
            Command::RevokeDevice { .. } => "revoke_device",
            Command::Logout {} => "logout",
        }
    }
}

/// Every command `type` the server knows.
pub const COMMAND_TYPES: &[&str] = &[
    "ping",
    "send",
    "history",
    "sync",
    "mark",
    "typing",
    "conversations",
    "conversation",
    "create_direct",
    "create_group",
    "add_members",
    "remove_member",
    "leave",
    "set_role",
    "set_title",
    "lookup_user",
    "presence",
    "devices",
    "revoke_device",
    "logout",
];

/// A client frame: a command and its request id.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub id: u64,
    pub command: Command,
}

/// Why a client frame could not be decoded. `id` is set when the frame had a readable one, so that
/// the error reply can carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    id: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Option<TypeField<'a>>,
}

/// A frame's `type` as it came: a name, or some other JSON value. Not a string is still a frame
/// whose `id` could be read, so its error is answered with that id.
enum TypeField<'a> {
    Name(std::borrow::Cow<'a, str>),
    NotAString,
}

impl<'de: 'a, 'a> Deserialize<'de> for TypeField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;

        struct TypeVisitor;

        impl<'de> Visitor<'de> for TypeVisitor {
            type Value = TypeField<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TypeField::Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TypeField::Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(TypeField::Name(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(TypeField::NotAString)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(TypeField::NotAString)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(TypeField::NotAString)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(TypeField::NotAString)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(TypeField::NotAString)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TypeField::NotAString)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TypeField::NotAString)
            }
        }

        deserializer.deserialize_any(TypeVisitor)
    }
}

impl ClientFrame {
    /// Decode a JSON text frame, telling a malformed frame from an unknown `type` from bad fields.
    pub fn decode_json(text: &str) -> Result<ClientFrame, DecodeError> {
        let malformed = |detail: String| DecodeError {
            id: None,
            code: ErrorCode::MalformedFrame,
            message: format!("frame is not a JSON object with an integer `id`{detail}"),
        };
        // serde reads a struct from a JSON array too (its fields in order): `[1, 2]` is no frame.
        if !text.trim_start().starts_with('{') {
            return Err(malformed(String::new()));
        }
        let envelope: Envelope =
            serde_json::from_str(text).map_err(|e| malformed(format!(": {e}")))?;
        let Some(id) = envelope.id else {
            return Err(DecodeError {
                id: None,
                code: ErrorCode::MalformedFrame,
                message: "frame has no integer `id`".into(),
            });
        };
        let kind = match envelope.kind {
            Some(TypeField::Name(kind)) => kind,
            Some(TypeField::NotAString) => {
                return Err(DecodeError {
                    id: Some(id),
                    code: ErrorCode::MalformedFrame,
                    message: "the frame's `type` is not a string".into(),
                });
            }
            None => {
                return Err(DecodeError {
                    id: Some(id),
                    code: ErrorCode::MalformedFrame,
                    message: "frame has no `type`".into(),
                });
            }
        };
        if !COMMAND_TYPES.contains(&kind.as_ref()) {
            return Err(DecodeError {
                id: Some(id),
                code: ErrorCode::UnknownType,
                message: format!("unknown command type `{kind}`"),
            });
        }
        let command: Command = serde_json::from_str(text).map_err(|e| DecodeError {
            id: Some(id),
            code: ErrorCode::InvalidRequest,
            message: format!("invalid `{kind}` command: {e}"),
        })?;
        Ok(ClientFrame { id, command })
    }

    /// Encode as a JSON text frame (what clients send).
    pub fn encode_json(&self) -> String {
        let mut value = serde_json::to_value(&self.command).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("id".into(), self.id.into());
        }
        value.to_string()
    }
}

/// `result` data of `conversations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
}

/// `result` data of `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PresenceList {
    pub presence: Vec<Presence>,
}

/// `result` data of `devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

/// `result` data of commands that return nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Empty {}

/// The first frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub server_version: String,
    pub user: User,
    pub device_id: DeviceId,
    pub limits: Limits,
}

/// A frame from the server, as a client decodes it. `result` data stays JSON until the client
/// decodes it as the type its command expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello(Hello),
    /// The reply to command `id`.
    Result {
        id: u64,
        data: serde_json::Value,
    },
    /// The failure of command `id`; `id` is absent when the frame was too broken to have one.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(flatten)]
        error: ErrorBody,
    },
    /// A new message in one of your conversations (yours included).
    Message {
        cursor: Pos,
        message: Message,
    },
    /// A member's markers moved.
    Receipt {
        cursor: Pos,
        receipt: Receipt,
    },
    /// A conversation's members, roles or title changed, or you were added to it or removed.
    Conversation {
        cursor: Pos,
        conversation: Conversation,
    },
    /// Someone is typing (`active`), or stopped. Expires by itself after `ttl_ms`.
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        active: bool,
        ttl_ms: u64,
    },
    /// A user who shares a conversation with you came or went.
    Presence(Presence),
    /// The server is going away: reconnect (with backoff) and sync.
    Reconnect {
        reason: String,
    },
}

impl ServerFrame {
    pub fn decode_json(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn encode_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Encode a `result` frame without building a [`serde_json::Value`] first.
pub fn encode_result<T: Serialize>(id: u64, data: &T) -> String {
    #[derive(Serialize)]
    struct ResultFrame<'a, T> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: u64,
        data: &'a T,
    }
    serde_json::to_string(&ResultFrame {
        kind: "result",
        id,
        data,
    })
    .unwrap_or_default()
}

/// Encode an `error` frame.
pub fn encode_error(id: Option<u64>, error: &ErrorBody) -> String {
    ServerFrame::Error {
        id,
        error: error.clone(),
    }
    .encode_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_command_round_trips_with_its_id() {
        let frame = ClientFrame {
            id: 7,
            command: Command::Send {
                conversation_id: 3,
                client_msg_id: "c1".into(),
                content: Content::Text { text: "hi".into() },
                reply_to: None,
            },
        };
        let text = frame.encode_json();
        assert!(text.contains("\"id\":7"));
        assert_eq!(ClientFrame::decode_json(&text), Ok(frame));
    }

    #[test]
    fn broken_json_is_a_malformed_frame() {
        for text in ["{nope", "[1,2]", r#"[1,"ping"]"#, "\"ping\"", "7", ""] {
            let err = ClientFrame::decode_json(text).unwrap_err();
            assert_eq!(
                (err.code, err.id),
                (ErrorCode::MalformedFrame, None),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_type_keeps_the_request_id() {
        let err = ClientFrame::decode_json(r#"{"id":4,"type":"fly"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.id, Some(4));
    }

    #[test]
    fn a_type_that_is_not_a_string_keeps_the_request_id() {
        for text in [
            r#"{"id":12,"type":5}"#,
            r#"{"id":12,"type":null}"#,
            r#"{"id":12,"type":["send"],"conversation_id":1}"#,
            r#"{"type":{"a":[1,{"b":2}]},"id":12}"#,
        ] {
            let err = ClientFrame::decode_json(text).unwrap_err();
            assert_eq!(
                (err.code, err.id),
                (ErrorCode::MalformedFrame, Some(12)),
                "{text}"
            );
        }
        // An escaped name is still a name.
        let frame = ClientFrame::decode_json(r#"{"id":3,"type":"p\u0069ng"}"#).unwrap();
        assert_eq!(frame.command, Command::Ping {});
    }

    #[test]
    fn missing_field_is_an_invalid_request() {
        let err = ClientFrame::decode_json(r#"{"id":5,"type":"send"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.id, Some(5));
    }

    #[test]
    fn null_is_absent_in_an_optional_field_and_a_wrong_type_in_a_required_one() {
        let group = ClientFrame::decode_json(
            r#"{"id":1,"type":"create_group","title":"t","member_ids":null}"#,
        )
        .unwrap();
        assert_eq!(
            group.command,
            Command::CreateGroup {
                title: "t".into(),
                member_ids: vec![]
            }
        );
        let typing = ClientFrame::decode_json(
            r#"{"id":2,"type":"typing","conversation_id":3,"active":null}"#,
        )
        .unwrap();
        assert!(matches!(
            typing.command,
            Command::Typing { active: true, .. }
        ));
        let body: crate::CreateConversationRequest =
            serde_json::from_str(r#"{"kind":"group","title":"t","member_ids":null}"#).unwrap();
        assert!(
            matches!(body, crate::CreateConversationRequest::Group { member_ids, .. } if member_ids.is_empty())
        );
        for text in [
            r#"{"id":4,"type":"send","conversation_id":null,"client_msg_id":"c","content":{"type":"text","text":"x"}}"#,
            r#"{"id":4,"type":"create_group","title":null}"#,
        ] {
            let err = ClientFrame::decode_json(text).unwrap_err();
            assert_eq!(
                (err.code, err.id),
                (ErrorCode::InvalidRequest, Some(4)),
                "{text}"
            );
        }
    }

    #[test]
    fn a_key_given_twice_is_malformed_in_the_envelope_and_invalid_in_a_command() {
        for text in [
            r#"{"id":6,"id":6,"type":"ping"}"#,
            r#"{"id":6,"type":"ping","type":"ping"}"#,
        ] {
            let err = ClientFrame::decode_json(text).unwrap_err();
            assert_eq!(
                (err.code, err.id),
                (ErrorCode::MalformedFrame, None),
                "{text}"
            );
        }
        for text in [
            r#"{"id":6,"type":"history","conversation_id":1,"conversation_id":1}"#,
            r#"{"id":6,"type":"send","conversation_id":1,"client_msg_id":"c","content":{"type":"text","text":"a","text":"b"}}"#,
        ] {
            let err = ClientFrame::decode_json(text).unwrap_err();
            assert_eq!(
                (err.code, err.id),
                (ErrorCode::InvalidRequest, Some(6)),
                "{text}"
            );
        }
        // A field the server does not know is ignored, however often it comes.
        let frame = ClientFrame::decode_json(r#"{"id":6,"type":"ping","x":1,"x":2}"#).unwrap();
        assert_eq!(frame.command, Command::Ping {});
    }

    #[test]
    fn every_command_type_is_listed() {
        let commands = [
            Command::Ping {},
            Command::Conversations {},
            Command::Devices {},
            Command::Logout {},
        ];
        for c in commands {
            assert!(COMMAND_TYPES.contains(&c.name()));
        }
    }

    #[test]
    fn error_frame_flattens_its_body() {
        let text = encode_error(
            Some(9),
            &ErrorBody {
                code: ErrorCode::NotMember,
                message: "no".into(),
                retry_after_ms: None,
            },
        );
        assert_eq!(
            text,
            r#"{"type":"error","id":9,"code":"not_member","message":"no"}"#
        );
        let ServerFrame::Error { id, error } = ServerFrame::decode_json(&text).unwrap() else {
            panic!("not an error frame");
        };
        assert_eq!((id, error.code), (Some(9), ErrorCode::NotMember));
    }
}
