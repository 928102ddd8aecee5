//! `natter_core::Store` for [`SqliteStore`]: reads go to the pool (point lookups and small sync
//! pages on the calling thread when a reader connection is free), writes to the writer thread.

use async_trait::async_trait;
use natter_core::store::{
    AccountStore, ChangedConversation, CommitListener, ConversationStore, Membership, MessageStore,
    NewMessage, SyncRequest, UserRecord,
};
use natter_core::{Error, Result, Store, StoreStats};
use natter_proto::{
    Ack, Conversation, ConversationId, Device, DeviceId, HistoryPage, Message, Pos, Receipt, Role,
    Seq, SyncPage, User, UserId,
};
use rusqlite::params;

use super::{SqliteStore, db_error, reads, writes};

/// The largest sync page read on the calling (async) thread: the user's conversations (what
/// finding the changed ones goes through), the changed ones, and the messages to read. 64
/// messages of 60 bytes take ~50 µs to read on a slow VM (the sixteenth of docs/benchmarks.md);
/// anything larger goes to a reader thread.
const INLINE_SYNC_MEMBERSHIPS_MAX: u64 = 64;
const INLINE_SYNC_CONVERSATIONS_MAX: usize = 8;
const INLINE_SYNC_MESSAGES_MAX: u64 = 64;

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        now_ms: u64,
    ) -> Result<User> {
        let (username, display_name, password_hash) = (
            username.to_string(),
            display_name.to_string(),
            password_hash.to_string(),
        );
        self.write(move |ctx| {
            writes::create_user(ctx, &username, &display_name, &password_hash, now_ms)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        let username = username.to_string();
        self.lookup(move |conn| reads::user_by_username(conn, &username))
            .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        self.lookup(move |conn| reads::user_by_id(conn, id)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.read(reads::list_users).await
    }

    async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<()> {
        let username = username.to_string();
        self.write(move |ctx| {
            let changed = ctx
                .conn
                .execute(
                    "UPDATE users SET disabled = ?2 WHERE username = ?1",
                    params![username, disabled],
                )
                .map_err(db_error)?;
            if changed == 0 {
                return Err(Error::not_found(format!("no user named `{username}`")));
            }
            Ok(())
        })
        .await
    }

    async fn set_display_name(&self, user_id: UserId, display_name: &str) -> Result<User> {
        let display_name = display_name.to_string();
        self.write(move |ctx| {
            ctx.conn
                .execute(
                    "UPDATE users SET display_name = ?2 WHERE id = ?1",
                    params![user_id, display_name],
                )
                .map_err(db_error)?;
            reads::user_by_id(ctx.conn, user_id)?
                .map(|r| r.user)
                .ok_or_else(|| Error::not_found(format!("no user with id {user_id}")))
        })
        .await
    }

    async fn create_device(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
        now_ms: u64,
    ) -> Result<DeviceId> {
        let (token_hash, name) = (token_hash.to_vec(), name.to_string());
        self.write(move |ctx| {
            ctx.conn
                .execute(
                    "INSERT INTO devices (user_id, token_hash, name, created_at_ms, last_seen_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![user_id, token_hash, name, now_ms],
                )
                .map_err(db_error)?;
            Ok(ctx.conn.last_insert_rowid() as u64)
        })
        .await
    }

    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<(UserRecord, DeviceId)>> {
        let token_hash = token_hash.to_vec();
        self.lookup(move |conn| reads::device_by_token(conn, &token_hash))
            .await
    }

    async fn refused_among(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>> {
        self.read(move |conn| reads::refused_among(conn, &devices))
            .await
    }

    async fn list_devices(&self, user_id: UserId) -> Result<Vec<Device>> {
        self.read(move |conn| reads::list_devices(conn, user_id))
            .await
    }

    async fn revoke_device(&self, user_id: UserId, device_id: DeviceId) -> Result<()> {
        self.write(move |ctx| {
            let changed = ctx
                .conn
                .execute(
                    "UPDATE devices SET revoked = 1 WHERE id = ?1 AND user_id = ?2 AND revoked = 0",
                    params![device_id, user_id],
                )
                .map_err(db_error)?;
            if changed == 0 {
                return Err(Error::not_found(format!("no device {device_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn touch_device(&self, device_id: DeviceId, now_ms: u64) -> Result<()> {
        self.write(move |ctx| {
            ctx.conn
                .execute(
                    "UPDATE devices SET last_seen_at_ms = ?2 WHERE id = ?1",
                    params![device_id, now_ms],
                )
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_direct(
        &self,
        a: UserId,
        b: UserId,
        now_ms: u64,
    ) -> Result<(ConversationId, bool)> {
        self.write(move |ctx| writes::create_direct(ctx, a, b, now_ms))
            .await
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now_ms: u64,
    ) -> Result<ConversationId> {
        let (title, members) = (title.to_string(), members.to_vec());
        self.write(move |ctx| writes::create_group(ctx, owner, &title, &members, now_ms))
            .await
    }

    async fn add_members(
        &self,
        actor: UserId,
        id: ConversationId,
        users: &[UserId],
        now_ms: u64,
    ) -> Result<()> {
        let users = users.to_vec();
        self.write(move |ctx| writes::add_members(ctx, actor, id, &users, now_ms))
            .await
    }

    async fn remove_member(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        now_ms: u64,
    ) -> Result<()> {
        self.write(move |ctx| writes::remove_member(ctx, actor, id, user, now_ms))
            .await
    }

    async fn set_role(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        role: Role,
        now_ms: u64,
    ) -> Result<()> {
        self.write(move |ctx| writes::set_role(ctx, actor, id, user, role, now_ms))
            .await
    }

    async fn set_title(
        &self,
        actor: UserId,
        id: ConversationId,
        title: &str,
        now_ms: u64,
    ) -> Result<()> {
        let title = title.to_string();
        self.write(move |ctx| writes::set_title(ctx, actor, id, &title, now_ms))
            .await
    }

    async fn membership(&self, id: ConversationId, user: UserId) -> Result<Option<Membership>> {
        self.lookup(move |conn| reads::membership(conn, id, user))
            .await
    }

    async fn conversation(&self, id: ConversationId, viewer: UserId) -> Result<Conversation> {
        self.read(move |conn| reads::conversation(conn, id, Some(viewer)))
            .await
    }

    async fn conversations_seen_by(
        &self,
        ids: Vec<ConversationId>,
        viewer: UserId,
    ) -> Result<Vec<Conversation>> {
        self.read(move |conn| reads::conversations_seen_by(conn, &ids, viewer))
            .await
    }

    async fn list_conversations(&self, viewer: UserId) -> Result<Vec<Conversation>> {
        self.read(move |conn| reads::list_conversations(conn, viewer))
            .await
    }

    async fn conversation_ids_of(&self, user: UserId) -> Result<Vec<ConversationId>> {
        // One range of the members index: a lookup, which every connection of a user
        // not yet attached here makes (a reconnect storm of distinct users is that many).
        self.lookup(move |conn| reads::conversation_ids_of(conn, user))
            .await
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        self.lookup(move |conn| reads::share_conversation(conn, a, b))
            .await
    }

    async fn shared_a_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        self.lookup(move |conn| reads::shared_a_conversation(conn, a, b))
            .await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append(&self, message: NewMessage) -> Result<Ack> {
        // `writes::append` refuses (duplicate, not a member, bad `reply_to`) before it writes.
        self.write_unguarded(move |ctx| writes::append(ctx, message))
            .await
    }

    async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        max_seq: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage> {
        self.read(move |conn| reads::history(conn, id, before, after, max_seq, limit))
            .await
    }

    async fn mark(
        &self,
        user: UserId,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Receipt> {
        self.write(move |ctx| writes::mark(ctx, user, id, delivered, read))
            .await
    }

    async fn head(&self) -> Result<Pos> {
        // The writer publishes a position only after its commit: every change at or below it is
        // visible to a reader that starts now.
        Ok(self.head_pos())
    }

    async fn changed_since(
        &self,
        user: UserId,
        cursor: Pos,
        _head: Pos,
    ) -> Result<Vec<ChangedConversation>> {
        self.read(move |conn| reads::changed_since(conn, user, cursor))
            .await
    }

    async fn messages_in_pos_ranges(
        &self,
        conversations: Vec<(ConversationId, Option<Seq>)>,
        after: Pos,
        up_to: Pos,
        limit: u32,
    ) -> Result<Vec<Vec<Message>>> {
        // One trip to a reader thread for them all, one snapshot.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(db_error)?;
            reads::messages_in_pos_ranges(&tx, conversations, after, up_to, limit)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn set_commit_listener(&self, listener: CommitListener) {
        if self.path.listener.set(listener).is_err() {
            tracing::warn!("commit listener already set; keeping the first");
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            log_frames: Some(self.wal.frames()),
            log_restarts: Some(self.wal.restarts()),
        }
    }

    async fn sync_page(&self, request: SyncRequest) -> Result<SyncPage> {
        // One snapshot for the whole page. A small page (a device back after a short absence:
        // the common case, and thousands at once in a reconnect storm) is read on this thread
        // when a reader connection is free: the trip to a reader thread and back is two
        // wake-ups, which cost more than reading a few messages. A large one goes on on a
        // reader thread, so that an async thread is never held for long.
        let whole =
            move |conn: &rusqlite::Connection| reads::SyncRead::begin(conn, request)?.finish(conn);
        let Some(lent) = self.lend_now() else {
            return self.read(whole).await;
        };
        if reads::memberships_of(lent.conn(), request.user)? > INLINE_SYNC_MEMBERSHIPS_MAX {
            return Self::read_with(lent, whole).await;
        }
        let mut read = reads::SyncRead::begin(lent.conn(), request)?;
        if read.conversations() <= INLINE_SYNC_CONVERSATIONS_MAX
            && read.messages(lent.conn())? <= INLINE_SYNC_MESSAGES_MAX
        {
            return read.finish(lent.conn());
        }
        Self::read_with(lent, move |conn| read.finish(conn)).await
    }
}
