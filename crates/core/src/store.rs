//! The storage seam: one trait per aggregate, each operation documented in one line.
//!
//! Every write is durable when it returns (D1). Every committed change is handed, in commit order,
//! to the [`CommitListener`], which is how events reach the broker. Writes that a rule guards take
//! the actor and check the rule (from [`crate::rules`]) inside their transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use natter_proto::{
    Ack, Content, Conversation, ConversationId, ConversationKind, Device, DeviceId, HistoryPage,
    Message, Pos, Receipt, Role, Seq, SyncPage, User, UserId,
};

pub use crate::sync::SyncRequest;

use crate::{Event, Result};

/// A user with what only the server may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at_ms: u64,
}

/// A user's membership in one conversation, including a past one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub kind: ConversationKind,
    pub role: Role,
    /// Set once the user left or was removed: they may still read up to this `seq`.
    pub left_seq: Option<Seq>,
}

impl Membership {
    pub fn is_active(&self) -> bool {
        self.left_seq.is_none()
    }
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub client_msg_id: String,
    pub content: Content,
    pub reply_to: Option<Seq>,
    pub sent_at_ms: u64,
}

/// A conversation that changed after a sync cursor, as one member may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedConversation {
    pub id: ConversationId,
    /// Position of the newest message the member may see (0 if none).
    pub message_pos: Pos,
    /// Position of the newest state change (members, markers, title) the member may see.
    pub state_pos: Pos,
    /// For a member who left: the last `seq` they may see.
    pub left_seq: Option<Seq>,
}

/// What the store hands to its listener after each commit.
#[derive(Debug)]
pub struct CommitBatch {
    /// Committed events in commit order.
    pub events: Vec<Event>,
    /// Messages in this commit group.
    pub messages: usize,
    /// Time the commit itself took.
    pub duration: Duration,
}

/// Called after each commit, in commit order, on the store's writer, after the commit group's
/// jobs were answered (a sender's ack resolves before its message event is fanned out); must not
/// block.
pub type CommitListener = Arc<dyn Fn(CommitBatch) + Send + Sync>;

/// Users and their devices.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Create a user; `UsernameTaken` when the (normalized) name exists.
    async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        now_ms: u64,
    ) -> Result<User>;
    /// The user with this normalized username.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>>;
    /// The user with this id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// Every user, by id.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Disable or enable a user; a disabled user's tokens stop working. `NotFound` if absent.
    async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<()>;
    /// Change a user's display name.
    async fn set_display_name(&self, user_id: UserId, display_name: &str) -> Result<User>;
    /// Record a new device with the hash of its token.
    async fn create_device(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
        now_ms: u64,
    ) -> Result<DeviceId>;
    /// The live (not revoked) device with this token hash, and its user.
    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<(UserRecord, DeviceId)>>;
    /// A user's live devices.
    async fn list_devices(&self, user_id: UserId) -> Result<Vec<Device>>;
    /// Revoke one of a user's devices; `NotFound` unless it is theirs and live.
    async fn revoke_device(&self, user_id: UserId, device_id: DeviceId) -> Result<()>;
    /// Note that a device was seen now.
    async fn touch_device(&self, device_id: DeviceId, now_ms: u64) -> Result<()>;
    /// Which of `devices` `device_by_token` would refuse now: revoked (on any node, or by
    /// another process), of a disabled user, or unknown.
    async fn refused_among(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>>;
}

/// Conversations and their members.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// The direct conversation of two users, created if absent; `true` when created now.
    async fn create_direct(
        &self,
        a: UserId,
        b: UserId,
        now_ms: u64,
    ) -> Result<(ConversationId, bool)>;
    /// A new group owned by `owner` with `members` (unknown users: `NotFound`).
    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now_ms: u64,
    ) -> Result<ConversationId>;
    /// Add users (rule: [`crate::rules::may_manage_members`]); already-members are ignored.
    async fn add_members(
        &self,
        actor: UserId,
        id: ConversationId,
        users: &[UserId],
        now_ms: u64,
    ) -> Result<()>;
    /// Remove a member, or leave when `actor == user` (rules: may_remove, may_leave).
    async fn remove_member(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        now_ms: u64,
    ) -> Result<()>;
    /// Change a role; `Owner` hands ownership over (rule: may_set_role).
    async fn set_role(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        role: Role,
        now_ms: u64,
    ) -> Result<()>;
    /// Rename a group (rule: may_set_title).
    async fn set_title(
        &self,
        actor: UserId,
        id: ConversationId,
        title: &str,
        now_ms: u64,
    ) -> Result<()>;
    /// A user's membership (current or past) in a conversation.
    async fn membership(&self, id: ConversationId, user: UserId) -> Result<Option<Membership>>;
    /// A conversation as `viewer` sees it, with last message and unread count.
    async fn conversation(&self, id: ConversationId, viewer: UserId) -> Result<Conversation>;
    /// `conversation` for several at once, in the order asked (a sync page needs one per changed
    /// conversation: engines answer them in one go, not one round trip each).
    async fn conversations_seen_by(
        &self,
        ids: Vec<ConversationId>,
        viewer: UserId,
    ) -> Result<Vec<Conversation>>;
    /// The conversations a user is an active member of, newest activity first.
    async fn list_conversations(&self, viewer: UserId) -> Result<Vec<Conversation>>;
    /// Ids of the conversations a user is an active member of.
    async fn conversation_ids_of(&self, user: UserId) -> Result<Vec<ConversationId>>;
    /// Whether two users are active members of one conversation together.
    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool>;
    /// Whether two users are or were members of one conversation, either or both having left.
    async fn shared_a_conversation(&self, a: UserId, b: UserId) -> Result<bool>;
}

/// Messages, markers and the change stream.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Append a message: dedupe by (sender, client_msg_id), check membership, assign the next
    /// `seq` and `pos`, commit durably, and move the sender's markers to it.
    async fn append(&self, message: NewMessage) -> Result<Ack>;
    /// Messages with `seq` in `(after, before)` up to `max_seq`, ascending; the newest `limit`
    /// when only `before` is given, the oldest `limit` otherwise.
    async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        max_seq: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage>;
    /// Move a member's markers forward (never back, never past the last `seq`).
    async fn mark(
        &self,
        user: UserId,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Receipt>;
    /// A position such that every change at or below it is committed and visible to readers.
    async fn head(&self) -> Result<Pos>;
    /// The conversations (current or past) of `user` with a visible change in `(cursor, head]`.
    async fn changed_since(
        &self,
        user: UserId,
        cursor: Pos,
        head: Pos,
    ) -> Result<Vec<ChangedConversation>>;
    /// For each conversation asked (with its `max_seq`), in the order asked: its messages with
    /// `pos` in `(after, up_to]` and `seq <= max_seq`, by `pos`, at most `limit` of them. What a
    /// sync page reads, in one go.
    async fn messages_in_pos_ranges(
        &self,
        conversations: Vec<(ConversationId, Option<Seq>)>,
        after: Pos,
        up_to: Pos,
        limit: u32,
    ) -> Result<Vec<Vec<Message>>>;
}

/// An engine's own figures for the metrics page; `None` where the engine has no such thing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Frames (1 KiB pages) in SQLite's write-ahead log now: it should fall back every 256 MiB
    /// or so under load; one that only grows has a checkpoint held off (docs/operations.md).
    pub log_frames: Option<u64>,
    /// Times the log started over since the store opened.
    pub log_restarts: Option<u64>,
}

/// A whole storage engine: SQLite embedded, PostgreSQL in a cluster.
#[async_trait]
pub trait Store: AccountStore + ConversationStore + MessageStore {
    /// Install the listener that receives every commit's events; called once, at start.
    fn set_commit_listener(&self, listener: CommitListener);

    /// What the engine tells the metrics page about itself, read at each scrape.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// One `sync` page (D4): what changed for the user (`changed_since`), those conversations'
    /// messages (`messages_in_pos_ranges`), the page `request.plan` cuts from them, and the
    /// states of the conversations it holds (`conversations_seen_by`). An engine may read it
    /// all in one go.
    async fn sync_page(&self, request: SyncRequest) -> Result<SyncPage> {
        let changed = self
            .changed_since(request.user, request.cursor, request.head)
            .await?;
        let read = self
            .messages_in_pos_ranges(
                request.messages_to_read(&changed),
                request.cursor,
                request.head,
                request.limit.saturating_add(1),
            )
            .await?;
        let plan = request.plan(&changed, read);
        let conversations = self
            .conversations_seen_by(plan.conversation_ids.clone(), request.user)
            .await?;
        Ok(plan.into_page(conversations))
    }
}
