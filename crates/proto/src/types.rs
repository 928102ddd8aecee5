//! The data that frames carry: users, conversations, messages, receipts.

use serde::{Deserialize, Serialize};

/// A user's numeric id, assigned by the server.
pub type UserId = u64;
/// A conversation's numeric id, assigned by the server.
pub type ConversationId = u64;
/// A device (one login session) of a user.
pub type DeviceId = u64;
/// A message's place in its conversation: 1, 2, 3, … with no gap and no repeat.
pub type Seq = u64;
/// A place in the server's one change stream; a client's sync cursor is a `Pos`.
pub type Pos = u64;

/// A registered user as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
}

/// One logged-in device of the current user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Device {
    pub id: DeviceId,
    pub name: String,
    pub created_at_ms: u64,
    pub last_seen_at_ms: u64,
    /// True for the device whose token made this request.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub current: bool,
}

/// What a message carries. New kinds of content are new variants, never new frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain UTF-8 text.
    Text { text: String },
    /// Written by the server when the conversation itself changes; clients cannot send it.
    System { event: SystemEvent },
}

impl Content {
    /// The text of a text message, for display and previews.
    pub fn text(&self) -> Option<&str> {
        match self {
            Content::Text { text } => Some(text),
            Content::System { .. } => None,
        }
    }
}

/// A change to a conversation, recorded in its timeline as a system message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SystemEvent {
    Created {
        by: UserId,
        title: Option<String>,
    },
    MembersAdded {
        by: UserId,
        user_ids: Vec<UserId>,
    },
    MemberRemoved {
        by: UserId,
        user_id: UserId,
    },
    MemberLeft {
        user_id: UserId,
    },
    RoleChanged {
        by: UserId,
        user_id: UserId,
        role: Role,
    },
    TitleChanged {
        by: UserId,
        title: String,
    },
}

/// A committed message: the same for every member and every device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Message {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    /// Its place in the change stream (see `sync`).
    pub pos: Pos,
    pub sender_id: UserId,
    /// The sender's id for this message (absent on system messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub client_msg_id: Option<String>,
    pub content: Content,
    /// The `seq` of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub reply_to: Option<Seq>,
    pub sent_at_ms: u64,
}

/// What a member may do in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// Direct conversations have exactly two members and no roles that matter; groups have a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<ConversationKind> {
        match s {
            "direct" => Some(ConversationKind::Direct),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }
}

/// A current member of a conversation, with their receipt markers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Member {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// Highest `seq` this member's devices have received.
    pub delivered_seq: Seq,
    /// Highest `seq` this member has read.
    pub read_seq: Seq,
}

/// A conversation's state as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub title: Option<String>,
    /// Current members; a user who left or was removed sees the list without themselves.
    pub members: Vec<Member>,
    /// The `seq` of the newest message (0 when there is none); for a past member, of their
    /// leaving.
    pub last_seq: Seq,
    /// Position of the newest change to this conversation; for a past member, at most their
    /// leaving's.
    pub last_pos: Pos,
    pub created_at_ms: u64,
    /// Time of the newest message the viewer may see (or of creation): the list is ordered by it.
    pub last_activity_at_ms: u64,
    /// The newest message the viewer may see: in command replies, lists and sync pages, not in
    /// `conversation` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub last_message: Option<Message>,
    /// `last_seq` minus the viewer's `read_seq`: every message above the read marker, system
    /// messages included. Present where `last_message` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub unread_count: Option<u64>,
}

/// The acknowledgement of a send: the message is durably committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Ack {
    pub conversation_id: ConversationId,
    pub client_msg_id: String,
    pub seq: Seq,
    pub pos: Pos,
    pub sent_at_ms: u64,
    /// True when this client message id was already committed: nothing new was stored.
    pub duplicate: bool,
}

/// A page of a conversation's history, in ascending `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// True when more messages lie beyond this page in the direction asked for.
    pub more: bool,
}

/// One page of changes since a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SyncPage {
    /// Store this once the page is applied; send it in the next `sync`.
    pub cursor: Pos,
    /// True when another page follows: sync again with `cursor` right away.
    pub more: bool,
    /// Current state of every conversation that changed in this page (members, markers, titles).
    pub conversations: Vec<Conversation>,
    /// New messages, in ascending `pos` (and so ascending `seq` within each conversation).
    pub messages: Vec<Message>,
}

/// A member's markers moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Receipt {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
    pub pos: Pos,
}

/// Whether a user is connected, and when they were last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Presence {
    pub user_id: UserId,
    pub online: bool,
    /// When the user was last connected, if known since the server started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub last_seen_at_ms: Option<u64>,
}

/// Limits the server enforces, announced in `hello` so that clients can respect them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Limits {
    pub frame_bytes_max: usize,
    pub message_bytes_max: usize,
    pub sends_per_second: u32,
    pub history_page_max: u32,
    pub sync_page_max: u32,
    pub heartbeat_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub typing_ttl_ms: u64,
}

/// Every error has one stable code; the HTTP status of its REST twin is listed in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or lacks `id`/`type`.
    MalformedFrame,
    /// The frame's `type` is not a known command.
    UnknownType,
    /// A field is missing or has a wrong value.
    InvalidRequest,
    FrameTooLarge,
    MessageTooLarge,
    /// Content type that clients may not send.
    UnsupportedContent,
    /// Missing, wrong, revoked or expired token.
    Unauthorized,
    WrongPassword,
    UserDisabled,
    UsernameTaken,
    InvalidUsername,
    InvalidPassword,
    NotFound,
    /// You are not a member of that conversation.
    NotMember,
    /// You are a member but your role does not allow this.
    Forbidden,
    /// The request conflicts with current state (e.g. the owner cannot leave without handing over).
    Conflict,
    RateLimited,
    TooManyConnections,
    ServerFull,
    ShuttingDown,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::UnsupportedContent => "unsupported_content",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::UserDisabled => "user_disabled",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::InvalidPassword => "invalid_password",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of this error in the REST API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame
            | ErrorCode::UnknownType
            | ErrorCode::InvalidRequest
            | ErrorCode::UnsupportedContent
            | ErrorCode::InvalidUsername
            | ErrorCode::InvalidPassword => 400,
            ErrorCode::Unauthorized | ErrorCode::WrongPassword => 401,
            ErrorCode::UserDisabled | ErrorCode::NotMember | ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::UsernameTaken | ErrorCode::Conflict => 409,
            ErrorCode::FrameTooLarge | ErrorCode::MessageTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => 429,
            ErrorCode::ServerFull | ErrorCode::ShuttingDown => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// The error model, the same over WebSocket and REST: a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: how long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub retry_after_ms: Option<u64>,
}

/// WebSocket close codes the server uses (1000–1999 are the standard ones).
pub mod close_code {
    /// The server is restarting or shutting down: reconnect (to any node) and sync.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The client did not read fast enough and its queue overflowed: reconnect and sync.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing was received within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The session's token was revoked (logout or device revoked): log in again.
    pub const REVOKED: u16 = 4001;
    /// The frame was larger than the limit.
    pub const FRAME_TOO_LARGE: u16 = 1009;
    /// A text frame was not UTF-8 (RFC 6455 §8.1).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client broke the WebSocket framing (an unmasked frame, a reserved bit or opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
}

/// `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub device_name: Option<String>,
}

/// `POST /v1/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub device_name: Option<String>,
}

/// The answer to register and login: a new device and its token (shown only this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub user: User,
    pub device_id: DeviceId,
    /// Send as `Authorization: Bearer <token>`, or as `?token=` when opening the WebSocket.
    pub token: String,
}
