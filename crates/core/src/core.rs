//! [`Core`]: every operation a client can ask for, validated and authorized, whatever the transport.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use natter_proto::{
    Ack, Content, Conversation, ConversationId, ConversationList, DeviceId, DeviceList, ErrorCode,
    HistoryPage, LoginRequest, LoginResponse, Pos, Presence, PresenceList, Receipt,
    RegisterRequest, Role, Seq, SyncPage, User, UserId,
};

use crate::auth;
use crate::store::{CommitBatch, NewMessage, Store};
use crate::sync::SyncRequest;
use crate::{Broker, Error, Event, Result, now_ms};

/// Limits the core enforces; each is a named setting of `natter serve`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub message_bytes_max: usize,
    pub history_page_max: u32,
    pub sync_page_max: u32,
    /// About how many bytes of messages one sync page may carry.
    pub sync_page_bytes_max: usize,
    pub group_members_max: usize,
    pub title_chars_max: usize,
    pub client_msg_id_chars_max: usize,
    pub presence_query_users_max: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            message_bytes_max: 16 * 1024,
            history_page_max: 200,
            sync_page_max: 500,
            sync_page_bytes_max: 1024 * 1024,
            group_members_max: 1000,
            title_chars_max: 128,
            client_msg_id_chars_max: 64,
            presence_query_users_max: 256,
        }
    }
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub device_id: DeviceId,
}

/// Who is online; the sessions layer knows.
pub trait PresenceSource: Send + Sync {
    fn presence(&self, users: &[UserId]) -> Vec<Presence>;
}

/// Told about every commit, for metrics.
pub trait Observer: Send + Sync {
    fn committed(&self, messages: usize, duration: Duration);
}

/// The façade the gateway calls: one method per operation, the same for WebSocket and REST.
pub struct Core {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    config: CoreConfig,
    presence: OnceLock<Arc<dyn PresenceSource>>,
    /// When this node last recorded each device's use: a device that reconnects within
    /// `TOUCH_INTERVAL_MS` is not written again (a reconnect storm would be a write per client).
    touched: Mutex<HashMap<DeviceId, u64>>,
}

/// A device's `last_seen_at_ms` is kept to this precision.
const TOUCH_INTERVAL_MS: u64 = 60_000;

impl Core {
    /// Wire the store's commits to the broker, in commit order.
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        config: CoreConfig,
        observer: Option<Arc<dyn Observer>>,
    ) -> Arc<Core> {
        let publisher = broker.clone();
        store.set_commit_listener(Arc::new(move |batch: CommitBatch| {
            if let Some(observer) = &observer {
                observer.committed(batch.messages, batch.duration);
            }
            for event in batch.events {
                publisher.publish(Arc::new(event));
            }
        }));
        Arc::new(Core {
            store,
            broker,
            config,
            presence: OnceLock::new(),
            touched: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Set where presence is read from; called once, when the sessions hub exists.
    pub fn set_presence_source(&self, source: Arc<dyn PresenceSource>) {
        let _ = self.presence.set(source);
    }

    // ---- accounts -------------------------------------------------------------------------

    /// Create a user (also the admin command `natter user create`).
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<User> {
        let username = auth::normalize_username(username)?;
        auth::validate_password(password)?;
        let display_name =
            auth::clean_name(display_name, auth::DISPLAY_NAME_CHARS_MAX, "display name")?
                .unwrap_or_else(|| username.clone());
        let password = password.to_string();
        let hash = blocking(move || auth::hash_password(&password)).await?;
        self.store
            .create_user(&username, &display_name, &hash, now_ms())
            .await
    }

    /// Create a user and log in a first device.
    pub async fn register(&self, request: RegisterRequest) -> Result<LoginResponse> {
        let device_name = auth::clean_name(
            request.device_name.as_deref(),
            auth::DEVICE_NAME_CHARS_MAX,
            "device name",
        )?;
        let user = self
            .create_user(
                &request.username,
                &request.password,
                request.display_name.as_deref(),
            )
            .await?;
        self.new_device(user, device_name).await
    }

    /// Check a password and log in a new device.
    pub async fn login(&self, request: LoginRequest) -> Result<LoginResponse> {
        let device_name = auth::clean_name(
            request.device_name.as_deref(),
            auth::DEVICE_NAME_CHARS_MAX,
            "device name",
        )?;
        let wrong = || Error::new(ErrorCode::WrongPassword, "wrong username or password");
        let Ok(username) = auth::normalize_username(&request.username) else {
            return Err(wrong());
        };
        let record = self.store.user_by_username(&username).await?;
        let Some(record) = record else {
            return Err(wrong());
        };
        let password = request.password;
        let hash = record.password_hash.clone();
        if !blocking(move || Ok(auth::verify_password(&password, &hash))).await? {
            return Err(wrong());
        }
        if record.disabled {
            return Err(Error::new(
                ErrorCode::UserDisabled,
                "this account is disabled",
            ));
        }
        self.new_device(record.user, device_name).await
    }

    async fn new_device(&self, user: User, name: Option<String>) -> Result<LoginResponse> {
        let token = auth::new_token();
        let name = name.unwrap_or_else(|| "device".to_string());
        let device_id = self
            .store
            .create_device(user.id, &auth::token_hash(&token), &name, now_ms())
            .await?;
        Ok(LoginResponse {
            user,
            device_id,
            token,
        })
    }

    /// The session a token belongs to; `Unauthorized` for unknown or revoked tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let unauthorized =
            || Error::new(ErrorCode::Unauthorized, "missing, wrong or revoked token");
        if token.is_empty() || token.len() > 128 {
            return Err(unauthorized());
        }
        let Some((record, device_id)) =
            self.store.device_by_token(&auth::token_hash(token)).await?
        else {
            return Err(unauthorized());
        };
        if record.disabled {
            return Err(Error::new(
                ErrorCode::UserDisabled,
                "this account is disabled",
            ));
        }
        Ok(Session {
            user: record.user,
            device_id,
        })
    }

    /// Note that a device is in use (for the devices list), at most once a minute per device.
    pub async fn touch(&self, session: &Session) -> Result<()> {
        let now = now_ms();
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            match touched.get(&session.device_id) {
                Some(at) if now.saturating_sub(*at) < TOUCH_INTERVAL_MS => return Ok(()),
                _ => {
                    touched.insert(session.device_id, now);
                }
            }
        }
        self.store.touch_device(session.device_id, now).await
    }

    /// Forget devices not touched for a while (called now and then by the node).
    pub fn forget_old_touches(&self) {
        let now = now_ms();
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| now.saturating_sub(*at) < TOUCH_INTERVAL_MS);
    }

    pub async fn logout(&self, session: &Session) -> Result<()> {
        self.store
            .revoke_device(session.user.id, session.device_id)
            .await
    }

    pub async fn devices(&self, session: &Session) -> Result<DeviceList> {
        let mut devices = self.store.list_devices(session.user.id).await?;
        for device in &mut devices {
            device.current = device.id == session.device_id;
        }
        Ok(DeviceList { devices })
    }

    pub async fn revoke_device(&self, session: &Session, device_id: DeviceId) -> Result<()> {
        in_range("device_id", Some(device_id))?;
        self.store.revoke_device(session.user.id, device_id).await
    }

    pub async fn set_display_name(&self, session: &Session, display_name: &str) -> Result<User> {
        let name = auth::clean_name(
            Some(display_name),
            auth::DISPLAY_NAME_CHARS_MAX,
            "display name",
        )?
        .ok_or_else(|| Error::invalid("display name must not be empty"))?;
        self.store.set_display_name(session.user.id, &name).await
    }

    /// A user by id: yourself, or one who shares or shared a conversation with you. Anyone else
    /// is `not_found`, as if absent, so that ids cannot be walked to list a server's users.
    pub async fn lookup_user_by_id(&self, session: &Session, user_id: UserId) -> Result<User> {
        in_range("user_id", Some(user_id))?;
        let not_found = || Error::not_found(format!("no user {user_id} among your contacts"));
        if user_id != session.user.id
            && !self
                .store
                .shared_a_conversation(session.user.id, user_id)
                .await?
        {
            return Err(not_found());
        }
        match self.store.user_by_id(user_id).await? {
            Some(record) if !record.disabled => Ok(record.user),
            _ => Err(not_found()),
        }
    }

    pub async fn lookup_user(&self, _session: &Session, username: &str) -> Result<User> {
        let not_found = || Error::not_found(format!("no user named `{username}`"));
        let Ok(name) = auth::normalize_username(username) else {
            return Err(not_found());
        };
        match self.store.user_by_username(&name).await? {
            Some(record) if !record.disabled => Ok(record.user),
            _ => Err(not_found()),
        }
    }

    // ---- conversations --------------------------------------------------------------------

    pub async fn conversations(&self, session: &Session) -> Result<ConversationList> {
        Ok(ConversationList {
            conversations: self.store.list_conversations(session.user.id).await?,
        })
    }

    pub async fn conversation(
        &self,
        session: &Session,
        id: ConversationId,
    ) -> Result<Conversation> {
        in_range("conversation_id", Some(id))?;
        self.readable(session, id).await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn create_direct(&self, session: &Session, user_id: UserId) -> Result<Conversation> {
        in_range("user_id", Some(user_id))?;
        if user_id == session.user.id {
            return Err(Error::invalid("a direct conversation is with another user"));
        }
        match self.store.user_by_id(user_id).await? {
            Some(record) if !record.disabled => {}
            _ => return Err(Error::not_found(format!("no user with id {user_id}"))),
        }
        let (id, _) = self
            .store
            .create_direct(session.user.id, user_id, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn create_group(
        &self,
        session: &Session,
        title: &str,
        member_ids: &[UserId],
    ) -> Result<Conversation> {
        let title = self.clean_title(title)?;
        all_in_range("member_ids", member_ids)?;
        let mut members: Vec<UserId> = member_ids
            .iter()
            .copied()
            .filter(|id| *id != session.user.id)
            .collect();
        members.sort_unstable();
        members.dedup();
        if members.len() + 1 > self.config.group_members_max {
            return Err(Error::invalid(format!(
                "a group has at most {} members",
                self.config.group_members_max
            )));
        }
        let id = self
            .store
            .create_group(session.user.id, &title, &members, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn add_members(
        &self,
        session: &Session,
        id: ConversationId,
        user_ids: &[UserId],
    ) -> Result<Conversation> {
        if user_ids.is_empty() {
            return Err(Error::invalid("user_ids must not be empty"));
        }
        in_range("conversation_id", Some(id))?;
        all_in_range("user_ids", user_ids)?;
        // Outsiders learn nothing, not even whether the conversation exists.
        match self.store.membership(id, session.user.id).await? {
            Some(m) if m.is_active() => {}
            _ => return Err(Error::not_member()),
        }
        let current = self.store.conversation(id, session.user.id).await?;
        if current.members.len() + user_ids.len() > self.config.group_members_max {
            return Err(Error::invalid(format!(
                "a group has at most {} members",
                self.config.group_members_max
            )));
        }
        self.store
            .add_members(session.user.id, id, user_ids, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn remove_member(
        &self,
        session: &Session,
        id: ConversationId,
        user_id: UserId,
    ) -> Result<Conversation> {
        in_range("conversation_id", Some(id))?;
        in_range("user_id", Some(user_id))?;
        self.store
            .remove_member(session.user.id, id, user_id, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn leave(&self, session: &Session, id: ConversationId) -> Result<()> {
        in_range("conversation_id", Some(id))?;
        self.store
            .remove_member(session.user.id, id, session.user.id, now_ms())
            .await
    }

    pub async fn set_role(
        &self,
        session: &Session,
        id: ConversationId,
        user_id: UserId,
        role: Role,
    ) -> Result<Conversation> {
        in_range("conversation_id", Some(id))?;
        in_range("user_id", Some(user_id))?;
        self.store
            .set_role(session.user.id, id, user_id, role, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    pub async fn set_title(
        &self,
        session: &Session,
        id: ConversationId,
        title: &str,
    ) -> Result<Conversation> {
        in_range("conversation_id", Some(id))?;
        let title = self.clean_title(title)?;
        self.store
            .set_title(session.user.id, id, &title, now_ms())
            .await?;
        self.store.conversation(id, session.user.id).await
    }

    fn clean_title(&self, title: &str) -> Result<String> {
        auth::clean_name(Some(title), self.config.title_chars_max, "title")?
            .ok_or_else(|| Error::invalid("title must not be empty"))
    }

    /// The highest `seq` a user may read in a conversation (`None`: no limit), or `NotMember`.
    async fn readable(&self, session: &Session, id: ConversationId) -> Result<Option<Seq>> {
        match self.store.membership(id, session.user.id).await? {
            Some(membership) => Ok(membership.left_seq),
            None => Err(Error::not_member()),
        }
    }

    // ---- messages -------------------------------------------------------------------------

    /// Commit a message (D1–D3) and return its acknowledgement.
    pub async fn send(
        &self,
        session: &Session,
        conversation_id: ConversationId,
        client_msg_id: String,
        content: Content,
        reply_to: Option<Seq>,
    ) -> Result<Ack> {
        in_range("conversation_id", Some(conversation_id))?;
        if client_msg_id.is_empty()
            || client_msg_id.chars().count() > self.config.client_msg_id_chars_max
        {
            return Err(Error::invalid(format!(
                "client_msg_id must be 1 to {} characters",
                self.config.client_msg_id_chars_max
            )));
        }
        match &content {
            Content::Text { text } => {
                if text.len() > self.config.message_bytes_max {
                    return Err(Error::new(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "a text message is at most {} bytes",
                            self.config.message_bytes_max
                        ),
                    ));
                }
                if text.trim().is_empty() {
                    return Err(Error::invalid("a text message must not be empty"));
                }
                in_range("reply_to", reply_to)?;
            }
            Content::System { .. } => {
                return Err(Error::new(
                    ErrorCode::UnsupportedContent,
                    "system content is written by the server only",
                ));
            }
        }
        self.store
            .append(NewMessage {
                conversation_id,
                sender_id: session.user.id,
                client_msg_id,
                content,
                reply_to,
                sent_at_ms: now_ms(),
            })
            .await
    }

    pub async fn history(
        &self,
        session: &Session,
        id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        in_range("conversation_id", Some(id))?;
        in_range("before", before)?;
        in_range("after", after)?;
        let max_seq = self.readable(session, id).await?;
        let limit = limit
            .unwrap_or(self.config.history_page_max / 4)
            .clamp(1, self.config.history_page_max.max(1));
        self.store.history(id, before, after, max_seq, limit).await
    }

    pub async fn mark(
        &self,
        session: &Session,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Receipt> {
        if delivered.is_none() && read.is_none() {
            return Err(Error::invalid("give `delivered`, `read` or both"));
        }
        in_range("conversation_id", Some(id))?;
        in_range("delivered", delivered)?;
        in_range("read", read)?;
        self.store.mark(session.user.id, id, delivered, read).await
    }

    /// Everything that changed for this user after `cursor`, one bounded page at a time (D4).
    pub async fn sync(
        &self,
        session: &Session,
        cursor: Pos,
        limit: Option<u32>,
    ) -> Result<SyncPage> {
        in_range("cursor", Some(cursor))?;
        let limit = limit
            .unwrap_or(self.config.sync_page_max)
            .clamp(1, self.config.sync_page_max.max(1));
        // Read the head first: whatever commits later lies above it and waits for the next sync.
        let head = self.store.head().await?;
        self.store
            .sync_page(SyncRequest {
                user: session.user.id,
                cursor,
                head,
                limit,
                bytes_max: self.config.sync_page_bytes_max,
            })
            .await
    }

    // ---- ephemeral ------------------------------------------------------------------------

    /// Tell the other members that this user is typing; never stored (D5).
    pub async fn typing(&self, session: &Session, id: ConversationId, active: bool) -> Result<()> {
        in_range("conversation_id", Some(id))?;
        match self.store.membership(id, session.user.id).await? {
            Some(m) if m.is_active() => {}
            _ => return Err(Error::not_member()),
        }
        self.broker.publish(Arc::new(Event::Typing {
            conversation_id: id,
            user_id: session.user.id,
            active,
        }));
        Ok(())
    }

    /// Presence of users who share a conversation with this user; others are left out.
    pub async fn presence(&self, session: &Session, user_ids: &[UserId]) -> Result<PresenceList> {
        if user_ids.len() > self.config.presence_query_users_max {
            return Err(Error::invalid(format!(
                "ask for at most {} users at once",
                self.config.presence_query_users_max
            )));
        }
        all_in_range("user_ids", user_ids)?;
        let mut visible = Vec::new();
        for &user_id in user_ids {
            if user_id == session.user.id
                || self
                    .store
                    .share_conversation(session.user.id, user_id)
                    .await?
            {
                visible.push(user_id);
            }
        }
        let presence = match self.presence.get() {
            Some(source) => source.presence(&visible),
            None => Vec::new(),
        };
        Ok(PresenceList { presence })
    }
}

/// Ids, seqs and cursors are stored as signed 64-bit integers: anything larger is invalid input.
fn in_range(what: &str, value: Option<u64>) -> Result<()> {
    match value {
        Some(v) if v > i64::MAX as u64 => Err(Error::invalid(format!(
            "`{what}` must be at most {}",
            i64::MAX
        ))),
        _ => Ok(()),
    }
}

fn all_in_range(what: &str, values: &[u64]) -> Result<()> {
    values.iter().try_for_each(|v| in_range(what, Some(*v)))
}

/// Password hashes computed at once. Each argon2 hash takes ~19 MiB and a core for tens of
/// milliseconds: a burst of logins must queue, not take every core and a thread's memory each.
static PASSWORD_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Run password hashing off the async worker threads, a bounded number at a time.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let _permit = PASSWORD_WORK
        .acquire()
        .await
        .map_err(|_| Error::internal("password work closed"))?;
    tokio::task::spawn_blocking(move || {
        let result = f();
        release_freed_memory();
        result
    })
    .await
    .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

/// Give the memory argon2 just freed back to the system: glibc keeps it in the thread's arena
/// otherwise, and a few hundred logins would leave a gigabyte resident.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
