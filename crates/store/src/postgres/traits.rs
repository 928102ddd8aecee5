//! `natter_core::Store` for [`PostgresStore`]: reads go to the pool, writes to the writer task.

use async_trait::async_trait;
use natter_core::store::{
    AccountStore, ChangedConversation, CommitListener, ConversationStore, Membership, MessageStore,
    NewMessage, UserRecord,
};
use natter_core::{Result, Store};
use natter_proto::{
    Ack, Conversation, ConversationId, Device, DeviceId, HistoryPage, Message, Pos, Receipt, Role,
    Seq, User, UserId,
};

use super::writer::{Job, Op};
use super::{PostgresStore, reads};

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        now_ms: u64,
    ) -> Result<User> {
        self.write(|reply| Op::CreateUser {
            username: username.to_string(),
            display_name: display_name.to_string(),
            password_hash: password_hash.to_string(),
            now_ms,
            reply,
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        reads::user_by_username(&self.conn().await?, username).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        reads::user_by_id(&self.conn().await?, id).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        reads::list_users(&self.conn().await?).await
    }

    async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<()> {
        self.write(|reply| Op::SetDisabled {
            username: username.to_string(),
            disabled,
            reply,
        })
        .await
    }

    async fn set_display_name(&self, user_id: UserId, display_name: &str) -> Result<User> {
        self.write(|reply| Op::SetDisplayName {
            user_id,
            display_name: display_name.to_string(),
            reply,
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
        self.write(|reply| Op::CreateDevice {
            user_id,
            token_hash: token_hash.to_vec(),
            name: name.to_string(),
            now_ms,
            reply,
        })
        .await
    }

    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<(UserRecord, DeviceId)>> {
        reads::device_by_token(&self.conn().await?, token_hash).await
    }

    async fn refused_among(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>> {
        reads::refused_among(&self.conn().await?, &devices).await
    }

    async fn list_devices(&self, user_id: UserId) -> Result<Vec<Device>> {
        reads::list_devices(&self.conn().await?, user_id).await
    }

    async fn revoke_device(&self, user_id: UserId, device_id: DeviceId) -> Result<()> {
        self.write(|reply| Op::RevokeDevice {
            user_id,
            device_id,
            reply,
        })
        .await
    }

    async fn touch_device(&self, device_id: DeviceId, now_ms: u64) -> Result<()> {
        self.write(|reply| Op::TouchDevice {
            device_id,
            now_ms,
            reply,
        })
        .await
    }
}

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn create_direct(
        &self,
        a: UserId,
        b: UserId,
        now_ms: u64,
    ) -> Result<(ConversationId, bool)> {
        self.write(|reply| Op::CreateDirect {
            a,
            b,
            now_ms,
            reply,
        })
        .await
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now_ms: u64,
    ) -> Result<ConversationId> {
        self.write(|reply| Op::CreateGroup {
            owner,
            title: title.to_string(),
            members: members.to_vec(),
            now_ms,
            reply,
        })
        .await
    }

    async fn add_members(
        &self,
        actor: UserId,
        id: ConversationId,
        users: &[UserId],
        now_ms: u64,
    ) -> Result<()> {
        self.write(|reply| Op::AddMembers {
            actor,
            id,
            users: users.to_vec(),
            now_ms,
            reply,
        })
        .await
    }

    async fn remove_member(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        now_ms: u64,
    ) -> Result<()> {
        self.write(|reply| Op::RemoveMember {
            actor,
            id,
            user,
            now_ms,
            reply,
        })
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
        self.write(|reply| Op::SetRole {
            actor,
            id,
            user,
            role,
            now_ms,
            reply,
        })
        .await
    }

    async fn set_title(
        &self,
        actor: UserId,
        id: ConversationId,
        title: &str,
        now_ms: u64,
    ) -> Result<()> {
        self.write(|reply| Op::SetTitle {
            actor,
            id,
            title: title.to_string(),
            now_ms,
            reply,
        })
        .await
    }

    async fn membership(&self, id: ConversationId, user: UserId) -> Result<Option<Membership>> {
        reads::membership(&self.conn().await?, id, user).await
    }

    async fn conversation(&self, id: ConversationId, viewer: UserId) -> Result<Conversation> {
        reads::conversation(&self.conn().await?, id, Some(viewer)).await
    }

    async fn conversations_seen_by(
        &self,
        ids: Vec<ConversationId>,
        viewer: UserId,
    ) -> Result<Vec<Conversation>> {
        // One connection, the queries pipelined: one round trip's wait for them all.
        let conn = self.conn().await?;
        futures_util::future::join_all(
            ids.into_iter()
                .map(|id| reads::conversation(&conn, id, Some(viewer))),
        )
        .await
        .into_iter()
        .collect()
    }

    async fn list_conversations(&self, viewer: UserId) -> Result<Vec<Conversation>> {
        reads::list_conversations(&self.conn().await?, viewer).await
    }

    async fn conversation_ids_of(&self, user: UserId) -> Result<Vec<ConversationId>> {
        reads::conversation_ids_of(&self.conn().await?, user).await
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        reads::share_conversation(&self.conn().await?, a, b).await
    }

    async fn shared_a_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        reads::shared_a_conversation(&self.conn().await?, a, b).await
    }
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn append(&self, message: NewMessage) -> Result<Ack> {
        self.write(|reply| Job::Append { message, reply }).await
    }

    async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        max_seq: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage> {
        reads::history(&self.conn().await?, id, before, after, max_seq, limit).await
    }

    async fn mark(
        &self,
        user: UserId,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Receipt> {
        self.write(|reply| Op::Mark {
            user,
            id,
            delivered,
            read,
            reply,
        })
        .await
    }

    async fn head(&self) -> Result<Pos> {
        // `meta.pos` as committed: every change at or below it is committed and visible (see the
        // module doc), whichever node wrote it.
        reads::head(&self.conn().await?).await
    }

    async fn changed_since(
        &self,
        user: UserId,
        cursor: Pos,
        _head: Pos,
    ) -> Result<Vec<ChangedConversation>> {
        reads::changed_since(&self.conn().await?, user, cursor).await
    }

    async fn messages_in_pos_ranges(
        &self,
        conversations: Vec<(ConversationId, Option<Seq>)>,
        after: Pos,
        up_to: Pos,
        limit: u32,
    ) -> Result<Vec<Vec<Message>>> {
        let conn = self.conn().await?;
        futures_util::future::join_all(conversations.into_iter().map(|(id, max_seq)| {
            reads::messages_in_pos_range(&conn, id, after, up_to, max_seq, limit)
        }))
        .await
        .into_iter()
        .collect()
    }
}

impl Store for PostgresStore {
    fn set_commit_listener(&self, listener: CommitListener) {
        if self.listener.set(listener).is_err() {
            tracing::warn!("commit listener already set; keeping the first");
        }
    }
}
