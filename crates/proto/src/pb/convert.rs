//! Between the domain types (the serde ones, the single representation the code works with) and
//! their protobuf messages. Domain → protobuf is total and moves its strings; protobuf → domain
//! checks what the schema cannot: required messages set, enum values known and not UNSPECIFIED.

use crate::frames::{Command, ConversationList, DeviceList, Empty, Hello, PresenceList};
use crate::pb;
use crate::types::*;

/// Bytes that are not a valid protobuf frame, or a protobuf message that has no domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl std::error::Error for ProtoError {}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ProtoError> {
    value.ok_or_else(|| ProtoError(format!("`{field}` is required")))
}

fn usize_of(value: u64, field: &str) -> Result<usize, ProtoError> {
    usize::try_from(value).map_err(|_| ProtoError(format!("`{field}` is out of range")))
}

// --- enums ---------------------------------------------------------------------------------------

impl From<Role> for pb::Role {
    fn from(role: Role) -> pb::Role {
        match role {
            Role::Owner => pb::Role::Owner,
            Role::Admin => pb::Role::Admin,
            Role::Member => pb::Role::Member,
        }
    }
}

fn role(value: i32) -> Result<Role, ProtoError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Member) => Ok(Role::Member),
        Ok(pb::Role::Unspecified) | Err(_) => {
            Err(ProtoError(format!("`role` {value} is not a role")))
        }
    }
}

impl From<ConversationKind> for pb::ConversationKind {
    fn from(kind: ConversationKind) -> pb::ConversationKind {
        match kind {
            ConversationKind::Direct => pb::ConversationKind::Direct,
            ConversationKind::Group => pb::ConversationKind::Group,
        }
    }
}

fn conversation_kind(value: i32) -> Result<ConversationKind, ProtoError> {
    match pb::ConversationKind::try_from(value) {
        Ok(pb::ConversationKind::Direct) => Ok(ConversationKind::Direct),
        Ok(pb::ConversationKind::Group) => Ok(ConversationKind::Group),
        Ok(pb::ConversationKind::Unspecified) | Err(_) => Err(ProtoError(format!(
            "`kind` {value} is not a conversation kind"
        ))),
    }
}

/// One list for both directions, so that a code added to [`ErrorCode`] without its protobuf twin
/// (or the other way round) does not compile.
macro_rules! error_codes {
    ($($code:ident),* $(,)?) => {
        impl From<ErrorCode> for pb::ErrorCode {
            fn from(code: ErrorCode) -> pb::ErrorCode {
                match code {
                    $(ErrorCode::$code => pb::ErrorCode::$code,)*
                }
            }
        }

        fn error_code(value: i32) -> Result<ErrorCode, ProtoError> {
            match pb::ErrorCode::try_from(value) {
                $(Ok(pb::ErrorCode::$code) => Ok(ErrorCode::$code),)*
                Ok(pb::ErrorCode::Unspecified) | Err(_) => {
                    Err(ProtoError(format!("`code` {value} is not an error code")))
                }
            }
        }
    };
}

error_codes!(
    MalformedFrame,
    UnknownType,
    InvalidRequest,
    FrameTooLarge,
    MessageTooLarge,
    UnsupportedContent,
    Unauthorized,
    WrongPassword,
    UserDisabled,
    UsernameTaken,
    InvalidUsername,
    InvalidPassword,
    NotFound,
    NotMember,
    Forbidden,
    Conflict,
    RateLimited,
    TooManyConnections,
    ServerFull,
    ShuttingDown,
    Internal,
);

// --- data ----------------------------------------------------------------------------------------

impl From<User> for pb::User {
    fn from(u: User) -> pb::User {
        pb::User {
            id: u.id,
            username: u.username,
            display_name: u.display_name,
        }
    }
}

impl From<pb::User> for User {
    fn from(u: pb::User) -> User {
        User {
            id: u.id,
            username: u.username,
            display_name: u.display_name,
        }
    }
}

impl From<Device> for pb::Device {
    fn from(d: Device) -> pb::Device {
        pb::Device {
            id: d.id,
            name: d.name,
            created_at_ms: d.created_at_ms,
            last_seen_at_ms: d.last_seen_at_ms,
            current: d.current,
        }
    }
}

impl From<pb::Device> for Device {
    fn from(d: pb::Device) -> Device {
        Device {
            id: d.id,
            name: d.name,
            created_at_ms: d.created_at_ms,
            last_seen_at_ms: d.last_seen_at_ms,
            current: d.current,
        }
    }
}

impl From<SystemEvent> for pb::SystemEvent {
    fn from(event: SystemEvent) -> pb::SystemEvent {
        use pb::system_event as se;
        let kind = match event {
            SystemEvent::Created { by, title } => se::Kind::Created(se::Created { by, title }),
            SystemEvent::MembersAdded { by, user_ids } => {
                se::Kind::MembersAdded(se::MembersAdded { by, user_ids })
            }
            SystemEvent::MemberRemoved { by, user_id } => {
                se::Kind::MemberRemoved(se::MemberRemoved { by, user_id })
            }
            SystemEvent::MemberLeft { user_id } => se::Kind::MemberLeft(se::MemberLeft { user_id }),
            SystemEvent::RoleChanged { by, user_id, role } => {
                se::Kind::RoleChanged(se::RoleChanged {
                    by,
                    user_id,
                    role: pb::Role::from(role).into(),
                })
            }
            SystemEvent::TitleChanged { by, title } => {
                se::Kind::TitleChanged(se::TitleChanged { by, title })
            }
        };
        pb::SystemEvent { kind: Some(kind) }
    }
}

impl TryFrom<pb::SystemEvent> for SystemEvent {
    type Error = ProtoError;

    fn try_from(event: pb::SystemEvent) -> Result<SystemEvent, ProtoError> {
        use pb::system_event as se;
        Ok(match required(event.kind, "system event kind")? {
            se::Kind::Created(e) => SystemEvent::Created {
                by: e.by,
                title: e.title,
            },
            se::Kind::MembersAdded(e) => SystemEvent::MembersAdded {
                by: e.by,
                user_ids: e.user_ids,
            },
            se::Kind::MemberRemoved(e) => SystemEvent::MemberRemoved {
                by: e.by,
                user_id: e.user_id,
            },
            se::Kind::MemberLeft(e) => SystemEvent::MemberLeft { user_id: e.user_id },
            se::Kind::RoleChanged(e) => SystemEvent::RoleChanged {
                by: e.by,
                user_id: e.user_id,
                role: role(e.role)?,
            },
            se::Kind::TitleChanged(e) => SystemEvent::TitleChanged {
                by: e.by,
                title: e.title,
            },
        })
    }
}

impl From<Content> for pb::Content {
    fn from(content: Content) -> pb::Content {
        let kind = match content {
            Content::Text { text } => pb::content::Kind::Text(pb::content::Text { text }),
            Content::System { event } => pb::content::Kind::System(event.into()),
        };
        pb::Content { kind: Some(kind) }
    }
}

impl TryFrom<pb::Content> for Content {
    type Error = ProtoError;

    fn try_from(content: pb::Content) -> Result<Content, ProtoError> {
        Ok(match required(content.kind, "content kind")? {
            pb::content::Kind::Text(t) => Content::Text { text: t.text },
            pb::content::Kind::System(event) => Content::System {
                event: event.try_into()?,
            },
        })
    }
}

impl From<Message> for pb::Message {
    fn from(m: Message) -> pb::Message {
        pb::Message {
            conversation_id: m.conversation_id,
            seq: m.seq,
            pos: m.pos,
            sender_id: m.sender_id,
            client_msg_id: m.client_msg_id,
            content: Some(m.content.into()),
            reply_to: m.reply_to,
            sent_at_ms: m.sent_at_ms,
        }
    }
}

impl TryFrom<pb::Message> for Message {
    type Error = ProtoError;

    fn try_from(m: pb::Message) -> Result<Message, ProtoError> {
        Ok(Message {
            conversation_id: m.conversation_id,
            seq: m.seq,
            pos: m.pos,
            sender_id: m.sender_id,
            client_msg_id: m.client_msg_id,
            content: required(m.content, "content")?.try_into()?,
            reply_to: m.reply_to,
            sent_at_ms: m.sent_at_ms,
        })
    }
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> pb::Member {
        pb::Member {
            user_id: m.user_id,
            username: m.username,
            display_name: m.display_name,
            role: pb::Role::from(m.role).into(),
            delivered_seq: m.delivered_seq,
            read_seq: m.read_seq,
        }
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = ProtoError;

    fn try_from(m: pb::Member) -> Result<Member, ProtoError> {
        Ok(Member {
            user_id: m.user_id,
            username: m.username,
            display_name: m.display_name,
            role: role(m.role)?,
            delivered_seq: m.delivered_seq,
            read_seq: m.read_seq,
        })
    }
}

impl From<Conversation> for pb::Conversation {
    fn from(c: Conversation) -> pb::Conversation {
        pb::Conversation {
            id: c.id,
            kind: pb::ConversationKind::from(c.kind).into(),
            title: c.title,
            members: c.members.into_iter().map(Into::into).collect(),
            last_seq: c.last_seq,
            last_pos: c.last_pos,
            created_at_ms: c.created_at_ms,
            last_activity_at_ms: c.last_activity_at_ms,
            last_message: c.last_message.map(Into::into),
            unread_count: c.unread_count,
        }
    }
}

impl TryFrom<pb::Conversation> for Conversation {
    type Error = ProtoError;

    fn try_from(c: pb::Conversation) -> Result<Conversation, ProtoError> {
        Ok(Conversation {
            id: c.id,
            kind: conversation_kind(c.kind)?,
            title: c.title,
            members: try_all(c.members)?,
            last_seq: c.last_seq,
            last_pos: c.last_pos,
            created_at_ms: c.created_at_ms,
            last_activity_at_ms: c.last_activity_at_ms,
            last_message: c.last_message.map(TryInto::try_into).transpose()?,
            unread_count: c.unread_count,
        })
    }
}

fn try_all<P, T: TryFrom<P, Error = ProtoError>>(items: Vec<P>) -> Result<Vec<T>, ProtoError> {
    items.into_iter().map(T::try_from).collect()
}

impl From<Ack> for pb::Ack {
    fn from(a: Ack) -> pb::Ack {
        pb::Ack {
            conversation_id: a.conversation_id,
            client_msg_id: a.client_msg_id,
            seq: a.seq,
            pos: a.pos,
            sent_at_ms: a.sent_at_ms,
            duplicate: a.duplicate,
        }
    }
}

impl From<pb::Ack> for Ack {
    fn from(a: pb::Ack) -> Ack {
        Ack {
            conversation_id: a.conversation_id,
            client_msg_id: a.client_msg_id,
            seq: a.seq,
            pos: a.pos,
            sent_at_ms: a.sent_at_ms,
            duplicate: a.duplicate,
        }
    }
}

impl From<HistoryPage> for pb::HistoryPage {
    fn from(p: HistoryPage) -> pb::HistoryPage {
        pb::HistoryPage {
            messages: p.messages.into_iter().map(Into::into).collect(),
            more: p.more,
        }
    }
}

impl TryFrom<pb::HistoryPage> for HistoryPage {
    type Error = ProtoError;

    fn try_from(p: pb::HistoryPage) -> Result<HistoryPage, ProtoError> {
        Ok(HistoryPage {
            messages: try_all(p.messages)?,
            more: p.more,
        })
    }
}

impl From<SyncPage> for pb::SyncPage {
    fn from(p: SyncPage) -> pb::SyncPage {
        pb::SyncPage {
            cursor: p.cursor,
            more: p.more,
            conversations: p.conversations.into_iter().map(Into::into).collect(),
            messages: p.messages.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::SyncPage> for SyncPage {
    type Error = ProtoError;

    fn try_from(p: pb::SyncPage) -> Result<SyncPage, ProtoError> {
        Ok(SyncPage {
            cursor: p.cursor,
            more: p.more,
            conversations: try_all(p.conversations)?,
            messages: try_all(p.messages)?,
        })
    }
}

impl From<Receipt> for pb::Receipt {
    fn from(r: Receipt) -> pb::Receipt {
        pb::Receipt {
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            delivered_seq: r.delivered_seq,
            read_seq: r.read_seq,
            pos: r.pos,
        }
    }
}

impl From<pb::Receipt> for Receipt {
    fn from(r: pb::Receipt) -> Receipt {
        Receipt {
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            delivered_seq: r.delivered_seq,
            read_seq: r.read_seq,
            pos: r.pos,
        }
    }
}

impl From<Presence> for pb::Presence {
    fn from(p: Presence) -> pb::Presence {
        pb::Presence {
            user_id: p.user_id,
            online: p.online,
            last_seen_at_ms: p.last_seen_at_ms,
        }
    }
}

impl From<pb::Presence> for Presence {
    fn from(p: pb::Presence) -> Presence {
        Presence {
            user_id: p.user_id,
            online: p.online,
            last_seen_at_ms: p.last_seen_at_ms,
        }
    }
}

impl From<Limits> for pb::Limits {
    fn from(l: Limits) -> pb::Limits {
        pb::Limits {
            frame_bytes_max: l.frame_bytes_max as u64,
            message_bytes_max: l.message_bytes_max as u64,
            sends_per_second: l.sends_per_second,
            history_page_max: l.history_page_max,
            sync_page_max: l.sync_page_max,
            heartbeat_interval_ms: l.heartbeat_interval_ms,
            idle_timeout_ms: l.idle_timeout_ms,
            typing_ttl_ms: l.typing_ttl_ms,
        }
    }
}

impl TryFrom<pb::Limits> for Limits {
    type Error = ProtoError;

    fn try_from(l: pb::Limits) -> Result<Limits, ProtoError> {
        Ok(Limits {
            frame_bytes_max: usize_of(l.frame_bytes_max, "frame_bytes_max")?,
            message_bytes_max: usize_of(l.message_bytes_max, "message_bytes_max")?,
            sends_per_second: l.sends_per_second,
            history_page_max: l.history_page_max,
            sync_page_max: l.sync_page_max,
            heartbeat_interval_ms: l.heartbeat_interval_ms,
            idle_timeout_ms: l.idle_timeout_ms,
            typing_ttl_ms: l.typing_ttl_ms,
        })
    }
}

impl From<ConversationList> for pb::ConversationList {
    fn from(l: ConversationList) -> pb::ConversationList {
        pb::ConversationList {
            conversations: l.conversations.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ConversationList> for ConversationList {
    type Error = ProtoError;

    fn try_from(l: pb::ConversationList) -> Result<ConversationList, ProtoError> {
        Ok(ConversationList {
            conversations: try_all(l.conversations)?,
        })
    }
}

impl From<PresenceList> for pb::PresenceList {
    fn from(l: PresenceList) -> pb::PresenceList {
        pb::PresenceList {
            presence: l.presence.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::PresenceList> for PresenceList {
    fn from(l: pb::PresenceList) -> PresenceList {
        PresenceList {
            presence: l.presence.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<DeviceList> for pb::DeviceList {
    fn from(l: DeviceList) -> pb::DeviceList {
        pb::DeviceList {
            devices: l.devices.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::DeviceList> for DeviceList {
    fn from(l: pb::DeviceList) -> DeviceList {
        DeviceList {
            devices: l.devices.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Empty> for pb::Empty {
    fn from(_: Empty) -> pb::Empty {
        pb::Empty {}
    }
}

impl From<Hello> for pb::Hello {
    fn from(h: Hello) -> pb::Hello {
        pb::Hello {
            protocol: h.protocol,
            server_version: h.server_version,
            user: Some(h.user.into()),
            device_id: h.device_id,
            limits: Some(h.limits.into()),
        }
    }
}

impl TryFrom<pb::Hello> for Hello {
    type Error = ProtoError;

    fn try_from(h: pb::Hello) -> Result<Hello, ProtoError> {
        Ok(Hello {
            protocol: h.protocol,
            server_version: h.server_version,
            user: required(h.user, "user")?.into(),
            device_id: h.device_id,
            limits: required(h.limits, "limits")?.try_into()?,
        })
    }
}

/// An `error` frame's protobuf message.
pub fn error(id: Option<u64>, body: &ErrorBody) -> pb::Error {
    pb::Error {
        id,
        code: pb::ErrorCode::from(body.code).into(),
        message: body.message.clone(),
        retry_after_ms: body.retry_after_ms,
    }
}

/// An `error` frame's id and body.
pub fn error_body(e: pb::Error) -> Result<(Option<u64>, ErrorBody), ProtoError> {
    Ok((
        e.id,
        ErrorBody {
            code: error_code(e.code)?,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        },
    ))
}

// --- commands ------------------------------------------------------------------------------------

impl From<Command> for pb::client_frame::Command {
    fn from(command: Command) -> pb::client_frame::Command {
        use pb::client_frame::Command as C;
        use pb::command as c;
        match command {
            Command::Ping {} => C::Ping(c::Ping {}),
            Command::Send {
                conversation_id,
                client_msg_id,
                content,
                reply_to,
            } => C::Send(c::Send {
                conversation_id,
                client_msg_id,
                content: Some(content.into()),
                reply_to,
            }),
            Command::History {
                conversation_id,
                before,
                after,
                limit,
            } => C::History(c::History {
                conversation_id,
                before,
                after,
                limit,
            }),
            Command::Sync { cursor, limit } => C::Sync(c::Sync { cursor, limit }),
            Command::Mark {
                conversation_id,
                delivered,
                read,
            } => C::Mark(c::Mark {
                conversation_id,
                delivered,
                read,
            }),
            Command::Typing {
                conversation_id,
                active,
            } => C::Typing(c::Typing {
                conversation_id,
                active: Some(active),
            }),
            Command::Conversations {} => C::Conversations(c::Conversations {}),
            Command::Conversation { conversation_id } => {
                C::Conversation(c::Conversation { conversation_id })
            }
            Command::CreateDirect { user_id } => C::CreateDirect(c::CreateDirect { user_id }),
            Command::CreateGroup { title, member_ids } => {
                C::CreateGroup(c::CreateGroup { title, member_ids })
            }
            Command::AddMembers {
                conversation_id,
                user_ids,
            } => C::AddMembers(c::AddMembers {
                conversation_id,
                user_ids,
            }),
            Command::RemoveMember {
                conversation_id,
                user_id,
            } => C::RemoveMember(c::RemoveMember {
                conversation_id,
                user_id,
            }),
            Command::Leave { conversation_id } => C::Leave(c::Leave { conversation_id }),
            Command::SetRole {
                conversation_id,
                user_id,
                role,
            } => C::SetRole(c::SetRole {
                conversation_id,
                user_id,
                role: pb::Role::from(role).into(),
            }),
            Command::SetTitle {
                conversation_id,
                title,
            } => C::SetTitle(c::SetTitle {
                conversation_id,
                title,
            }),
            Command::LookupUser { username, user_id } => C::LookupUser(c::LookupUser {
                username: username.unwrap_or_default(),
                user_id: user_id.unwrap_or_default(),
            }),
            Command::Presence { user_ids } => C::Presence(c::Presence { user_ids }),
            Command::Devices {} => C::Devices(c::Devices {}),
            Command::RevokeDevice { device_id } => C::RevokeDevice(c::RevokeDevice { device_id }),
            Command::Logout {} => C::Logout(c::Logout {}),
        }
    }
}

/// The `type` of a protobuf command, for error messages.
pub fn command_name(command: &pb::client_frame::Command) -> &'static str {
    use pb::client_frame::Command as C;
    match command {
        C::Ping(_) => "ping",
        C::Send(_) => "send",
        C::History(_) => "history",
        C::Sync(_) => "sync",
        C::Mark(_) => "mark",
        C::Typing(_) => "typing",
        C::Conversations(_) => "conversations",
        C::Conversation(_) => "conversation",
        C::CreateDirect(_) => "create_direct",
        C::CreateGroup(_) => "create_group",
        C::AddMembers(_) => "add_members",
        C::RemoveMember(_) => "remove_member",
        C::Leave(_) => "leave",
        C::SetRole(_) => "set_role",
        C::SetTitle(_) => "set_title",
        C::LookupUser(_) => "lookup_user",
        C::Presence(_) => "presence",
        C::Devices(_) => "devices",
        C::RevokeDevice(_) => "revoke_device",
        C::Logout(_) => "logout",
    }
}

impl TryFrom<pb::client_frame::Command> for Command {
    type Error = ProtoError;

    fn try_from(command: pb::client_frame::Command) -> Result<Command, ProtoError> {
        use pb::client_frame::Command as C;
        Ok(match command {
            C::Ping(_) => Command::Ping {},
            C::Send(c) => Command::Send {
                conversation_id: c.conversation_id,
                client_msg_id: c.client_msg_id,
                content: required(c.content, "content")?.try_into()?,
                reply_to: c.reply_to,
            },
            C::History(c) => Command::History {
                conversation_id: c.conversation_id,
                before: c.before,
                after: c.after,
                limit: c.limit,
            },
            C::Sync(c) => Command::Sync {
                cursor: c.cursor,
                limit: c.limit,
            },
            C::Mark(c) => Command::Mark {
                conversation_id: c.conversation_id,
                delivered: c.delivered,
                read: c.read,
            },
            C::Typing(c) => Command::Typing {
                conversation_id: c.conversation_id,
                active: c.active.unwrap_or(true),
            },
            C::Conversations(_) => Command::Conversations {},
            C::Conversation(c) => Command::Conversation {
                conversation_id: c.conversation_id,
            },
            C::CreateDirect(c) => Command::CreateDirect { user_id: c.user_id },
            C::CreateGroup(c) => Command::CreateGroup {
                title: c.title,
                member_ids: c.member_ids,
            },
            C::AddMembers(c) => Command::AddMembers {
                conversation_id: c.conversation_id,
                user_ids: c.user_ids,
            },
            C::RemoveMember(c) => Command::RemoveMember {
                conversation_id: c.conversation_id,
                user_id: c.user_id,
            },
            C::Leave(c) => Command::Leave {
                conversation_id: c.conversation_id,
            },
            C::SetRole(c) => Command::SetRole {
                conversation_id: c.conversation_id,
                user_id: c.user_id,
                role: role(c.role)?,
            },
            C::SetTitle(c) => Command::SetTitle {
                conversation_id: c.conversation_id,
                title: c.title,
            },
            C::LookupUser(c) => Command::LookupUser {
                username: Some(c.username).filter(|name| !name.is_empty()),
                user_id: Some(c.user_id).filter(|id| *id != 0),
            },
            C::Presence(c) => Command::Presence {
                user_ids: c.user_ids,
            },
            C::Devices(_) => Command::Devices {},
            C::RevokeDevice(c) => Command::RevokeDevice {
                device_id: c.device_id,
            },
            C::Logout(_) => Command::Logout {},
        })
    }
}
