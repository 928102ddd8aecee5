//! Write jobs: each runs inside the writer's transaction (in its own savepoint), checks the rules
//! of `natter_core::rules` against the state it is about to change, and emits the events of what
//! it committed.

use natter_core::store::NewMessage;
use natter_core::{Error, Event, Result, rules};
use natter_proto::{
    Ack, Content, ConversationId, ConversationKind, ErrorCode, Message, Receipt, Role, Seq,
    SystemEvent, User, UserId,
};
use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use super::{WriteCtx, db_error, reads};

/// What the writer remembers of the conversations it appends to: each one's last seq, and which
/// senders it has seen there as members. A send it remembers reads neither from the database:
/// that read was a tenth of the writer's time per message.
///
/// It may only say what the database says. So it is forgotten whole (`commit_group`):
/// - before any job other than an append runs (joins, leaves, system messages: anything that
///   moves a seq or a membership without going through `append`);
/// - at the start of a group when the group before did not commit (a failed commit or a
///   panicking job rolled back seqs it had counted), or when another connection committed since
///   (`PRAGMA data_version`);
/// - when it grows past `HEADS_MAX` conversations or senders, to stay small.
#[derive(Default)]
pub(crate) struct Heads {
    seqs: HashMap<ConversationId, Seq>,
    senders: HashSet<(ConversationId, UserId)>,
}

/// Conversations (and senders) past which `Heads` starts over: a few MiB at most.
const HEADS_MAX: usize = 65_536;

impl Heads {
    /// The conversation's last seq, if `sender` is known to be one of its members.
    fn last_seq(&self, conversation: ConversationId, sender: UserId) -> Option<Seq> {
        if !self.senders.contains(&(conversation, sender)) {
            return None;
        }
        self.seqs.get(&conversation).copied()
    }

    /// What the database said: `sender` is a member of `conversation`, whose last seq is `seq`.
    fn learn(&mut self, conversation: ConversationId, sender: UserId, seq: Seq) {
        if self.seqs.len() >= HEADS_MAX || self.senders.len() >= HEADS_MAX {
            self.forget();
        }
        self.seqs.insert(conversation, seq);
        self.senders.insert((conversation, sender));
    }

    /// A message took `seq` in a conversation this remembers.
    fn appended(&mut self, conversation: ConversationId, seq: Seq) {
        if let Some(last) = self.seqs.get_mut(&conversation) {
            *last = seq;
        }
    }

    pub(crate) fn forget(&mut self) {
        self.seqs.clear();
        self.senders.clear();
    }
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

pub fn create_user(
    ctx: &mut WriteCtx,
    username: &str,
    display_name: &str,
    password_hash: &str,
    now_ms: u64,
) -> Result<User> {
    let inserted = ctx.conn.execute(
        "INSERT INTO users (username, display_name, password_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![username, display_name, password_hash, now_ms],
    );
    match inserted {
        Ok(_) => Ok(User {
            id: ctx.conn.last_insert_rowid() as u64,
            username: username.to_string(),
            display_name: display_name.to_string(),
        }),
        Err(e) if is_unique_violation(&e) => Err(Error::new(
            ErrorCode::UsernameTaken,
            format!("the username `{username}` is taken"),
        )),
        Err(e) => Err(db_error(e)),
    }
}

/// A conversation's last `seq` (0 before its first message; the last entry of its seq index)
/// and its `state_pos`, or `NotFound`.
fn conversation_head(ctx: &WriteCtx, id: ConversationId) -> Result<(Seq, u64)> {
    let head: Option<(Seq, u64)> = ctx
        .conn
        .prepare_cached(concat!(
            "SELECT ",
            newest_message_column!("seq", "?1"),
            ", state_pos FROM conversations WHERE id = ?1"
        ))
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_error)?;
    head.ok_or_else(|| Error::not_found(format!("no conversation {id}")))
}

fn insert_message(ctx: &mut WriteCtx, message: &Message) -> rusqlite::Result<()> {
    let content = serde_json::to_string(&message.content)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, reply_to, sent_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                message.pos,
                message.conversation_id,
                message.seq,
                message.sender_id,
                message.client_msg_id,
                content,
                message.reply_to,
                message.sent_at_ms
            ])
        })?;
    Ok(())
}

/// The dedupe lookup: one search of `messages_by_client_id` (a test holds it to that plan).
pub(crate) const SENT_BEFORE_SQL: &str =
    "SELECT conversation_id, seq, pos, sent_at_ms FROM messages
     WHERE sender_id = ?1 AND client_msg_id = ?2";

/// The ack of the message `sender` already sent under `client_msg_id`, if any (D3).
fn sent_before(ctx: &WriteCtx, sender: UserId, client_msg_id: &str) -> Result<Option<Ack>> {
    ctx.conn
        .prepare_cached(SENT_BEFORE_SQL)
        .and_then(|mut s| {
            s.query_row(params![sender, client_msg_id], |r| {
                Ok(Ack {
                    conversation_id: r.get(0)?,
                    client_msg_id: client_msg_id.to_string(),
                    seq: r.get(1)?,
                    pos: r.get(2)?,
                    sent_at_ms: r.get(3)?,
                    duplicate: true,
                })
            })
            .optional()
        })
        .map_err(db_error)
}

/// The conversation's last seq if `sender` is one of its members now, else `None`: one read of
/// the membership row and the last entry of the conversation's seq index.
fn member_head(ctx: &WriteCtx, id: ConversationId, sender: UserId) -> Result<Option<Seq>> {
    let state: Option<(Seq, bool)> = ctx
        .conn
        .prepare_cached(concat!(
            "SELECT ",
            newest_message_column!("seq", "?1"),
            ", left_seq IS NULL FROM members WHERE conversation_id = ?1 AND user_id = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![id, sender], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_error)?;
    Ok(state.and_then(|(last_seq, member)| member.then_some(last_seq)))
}

/// Append a user's message (D1–D3).
///
/// Three statements on the way of a new message, and none of them writes before every reason
/// to refuse is known (the job runs without a savepoint): one read of the sender's membership
/// and the conversation's last seq (the last entry of its seq index, which the insert writes
/// next to; skipped when the writer's `Heads` remember both), the insert — whose unique index on
/// (client message id, sender) is the dedupe check, so a resend costs a failed insert and a
/// lookup instead of every send paying the lookup — then the sender's read marker. The conversation's row is not written: its last
/// message is read from the messages table wherever it is needed (`reads::newest_message`).
pub fn append(ctx: &mut WriteCtx, new: NewMessage) -> Result<Ack> {
    let (id, sender) = (new.conversation_id, new.sender_id);
    let last_seq = match ctx.heads.last_seq(id, sender) {
        Some(last_seq) => last_seq,
        None => match member_head(ctx, id, sender)? {
            Some(last_seq) => {
                ctx.heads.learn(id, sender, last_seq);
                last_seq
            }
            // A member who left may still resend what they sent before: it was stored (D3).
            None => {
                return match sent_before(ctx, sender, &new.client_msg_id)? {
                    Some(ack) => Ok(ack),
                    None => Err(Error::not_member()),
                };
            }
        },
    };
    if let Some(reply_to) = new.reply_to {
        let exists = reads::message_by_seq(ctx.conn, new.conversation_id, reply_to)?.is_some();
        if !exists {
            // A resend of a message stored before is acknowledged, whatever it says now.
            if let Some(ack) = sent_before(ctx, new.sender_id, &new.client_msg_id)? {
                return Ok(ack);
            }
            return Err(Error::invalid(format!(
                "reply_to {reply_to} is not a message of this conversation"
            )));
        }
    }
    let message = Message {
        conversation_id: new.conversation_id,
        seq: last_seq + 1,
        pos: ctx.peek_pos(),
        sender_id: new.sender_id,
        client_msg_id: Some(new.client_msg_id),
        content: new.content,
        reply_to: new.reply_to,
        sent_at_ms: new.sent_at_ms,
    };
    match insert_message(ctx, &message) {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            let client_msg_id = message.client_msg_id.as_deref().unwrap_or_default();
            return sent_before(ctx, message.sender_id, client_msg_id)?.ok_or_else(|| {
                // The only unique index a new position and seq can collide with is the dedupe
                // index: anything else means the writer lost track of the stream.
                tracing::error!(error = %e, "a new message collided with a stored one");
                Error::internal("storage error")
            });
        }
        Err(e) => return Err(db_error(e)),
    }
    ctx.take_pos();
    let (id, seq, pos) = (message.conversation_id, message.seq, message.pos);
    ctx.heads.appended(id, seq);
    // What you sent you have read.
    ctx.conn
        .prepare_cached(
            "UPDATE members SET delivered_seq = ?3, read_seq = ?3
             WHERE conversation_id = ?1 AND user_id = ?2",
        )
        .and_then(|mut s| s.execute(params![id, message.sender_id, seq]))
        .map_err(db_error)?;
    let ack = Ack {
        conversation_id: id,
        client_msg_id: message.client_msg_id.clone().unwrap_or_default(),
        seq,
        pos,
        sent_at_ms: message.sent_at_ms,
        duplicate: false,
    };
    ctx.emit(Event::Message(message));
    Ok(ack)
}

/// Record a change of the conversation itself: a system message and a new state position.
fn system_change(
    ctx: &mut WriteCtx,
    id: ConversationId,
    actor: UserId,
    event: SystemEvent,
    now_ms: u64,
) -> Result<Message> {
    let seq = conversation_head(ctx, id)?.0 + 1;
    let pos = ctx.take_pos();
    ctx.conn
        .execute(
            "UPDATE conversations SET state_pos = ?2 WHERE id = ?1",
            params![id, pos],
        )
        .map_err(db_error)?;
    let message = Message {
        conversation_id: id,
        seq,
        pos,
        sender_id: actor,
        client_msg_id: None,
        content: Content::System { event },
        reply_to: None,
        sent_at_ms: now_ms,
    };
    insert_message(ctx, &message).map_err(db_error)?;
    // The actor knows what they just did: it is not unread for them.
    ctx.conn
        .execute(
            "UPDATE members SET delivered_seq = MAX(delivered_seq, ?3), read_seq = MAX(read_seq, ?3)
             WHERE conversation_id = ?1 AND user_id = ?2",
            params![id, actor, seq],
        )
        .map_err(db_error)?;
    Ok(message)
}

fn state_event(
    ctx: &WriteCtx,
    id: ConversationId,
    added: Vec<UserId>,
    removed: Vec<UserId>,
) -> Result<Event> {
    Ok(Event::ConversationChanged {
        conversation: reads::conversation(ctx.conn, id, None)?,
        added,
        removed,
        message_follows: false,
    })
}

fn require_user(ctx: &WriteCtx, id: UserId) -> Result<()> {
    match reads::user_by_id(ctx.conn, id)? {
        Some(record) if !record.disabled => Ok(()),
        _ => Err(Error::not_found(format!("no user with id {id}"))),
    }
}

fn insert_member(ctx: &WriteCtx, id: ConversationId, user: UserId, role: Role) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO members (conversation_id, user_id, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (conversation_id, user_id)
             DO UPDATE SET role = excluded.role, left_seq = NULL, left_pos = NULL",
        )
        .and_then(|mut s| s.execute(params![id, user, role.as_str()]))
        .map_err(db_error)?;
    Ok(())
}

fn insert_conversation(
    ctx: &mut WriteCtx,
    kind: ConversationKind,
    title: Option<&str>,
    direct_key: Option<&str>,
    now_ms: u64,
) -> Result<ConversationId> {
    ctx.conn
        .execute(
            "INSERT INTO conversations (kind, title, direct_key, created_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![kind.as_str(), title, direct_key, now_ms],
        )
        .map_err(db_error)?;
    Ok(ctx.conn.last_insert_rowid() as u64)
}

pub fn create_direct(
    ctx: &mut WriteCtx,
    a: UserId,
    b: UserId,
    now_ms: u64,
) -> Result<(ConversationId, bool)> {
    let key = format!("{}:{}", a.min(b), a.max(b));
    let existing: Option<ConversationId> = ctx
        .conn
        .query_row(
            "SELECT id FROM conversations WHERE direct_key = ?1",
            [&key],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_error)?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    require_user(ctx, a)?;
    require_user(ctx, b)?;
    let id = insert_conversation(ctx, ConversationKind::Direct, None, Some(&key), now_ms)?;
    insert_member(ctx, id, a, Role::Member)?;
    insert_member(ctx, id, b, Role::Member)?;
    let pos = ctx.take_pos();
    ctx.conn
        .execute(
            "UPDATE conversations SET state_pos = ?2 WHERE id = ?1",
            params![id, pos],
        )
        .map_err(db_error)?;
    let event = state_event(ctx, id, vec![a, b], vec![])?;
    ctx.emit(event);
    Ok((id, true))
}

pub fn create_group(
    ctx: &mut WriteCtx,
    owner: UserId,
    title: &str,
    members: &[UserId],
    now_ms: u64,
) -> Result<ConversationId> {
    require_user(ctx, owner)?;
    for &member in members {
        require_user(ctx, member)?;
    }
    let id = insert_conversation(ctx, ConversationKind::Group, Some(title), None, now_ms)?;
    insert_member(ctx, id, owner, Role::Owner)?;
    for &member in members.iter().filter(|m| **m != owner) {
        insert_member(ctx, id, member, Role::Member)?;
    }
    let created = system_change(
        ctx,
        id,
        owner,
        SystemEvent::Created {
            by: owner,
            title: Some(title.to_string()),
        },
        now_ms,
    )?;
    let mut added = vec![owner];
    added.extend(members.iter().copied().filter(|m| *m != owner));
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.conn, id, None)?;
    for event in Event::state_then_message(state, added, created) {
        ctx.emit(event);
    }
    Ok(id)
}

pub fn add_members(
    ctx: &mut WriteCtx,
    actor: UserId,
    id: ConversationId,
    users: &[UserId],
    now_ms: u64,
) -> Result<()> {
    let membership = reads::active_membership(ctx.conn, id, actor)?;
    rules::may_manage_members(membership.kind, membership.role)?;
    let mut added = Vec::new();
    for &user in users {
        require_user(ctx, user)?;
        let already = reads::membership(ctx.conn, id, user)?.is_some_and(|m| m.is_active());
        if !already && !added.contains(&user) {
            insert_member(ctx, id, user, Role::Member)?;
            added.push(user);
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    let message = system_change(
        ctx,
        id,
        actor,
        SystemEvent::MembersAdded {
            by: actor,
            user_ids: added.clone(),
        },
        now_ms,
    )?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.conn, id, None)?;
    for event in Event::state_then_message(state, added, message) {
        ctx.emit(event);
    }
    Ok(())
}

pub fn remove_member(
    ctx: &mut WriteCtx,
    actor: UserId,
    id: ConversationId,
    user: UserId,
    now_ms: u64,
) -> Result<()> {
    let actor_membership = reads::active_membership(ctx.conn, id, actor)?;
    let system_event = if actor == user {
        let members_count: usize = ctx
            .conn
            .query_row(
                "SELECT COUNT(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL",
                [id],
                |r| r.get(0),
            )
            .map_err(db_error)?;
        rules::leave(actor, &actor_membership, members_count)?
    } else {
        let target = reads::membership(ctx.conn, id, user)?;
        rules::removal(actor, &actor_membership, user, target.as_ref())?
    };
    // The message goes out while the user is still a member, so that they see it too.
    let message = system_change(ctx, id, actor, system_event, now_ms)?;
    ctx.conn
        .execute(
            "UPDATE members SET left_seq = ?3, left_pos = ?4 WHERE conversation_id = ?1 AND user_id = ?2",
            params![id, user, message.seq, message.pos],
        )
        .map_err(db_error)?;
    ctx.emit(Event::Message(message));
    let event = state_event(ctx, id, vec![], vec![user])?;
    ctx.emit(event);
    Ok(())
}

pub fn set_role(
    ctx: &mut WriteCtx,
    actor: UserId,
    id: ConversationId,
    user: UserId,
    role: Role,
    now_ms: u64,
) -> Result<()> {
    let actor_membership = reads::active_membership(ctx.conn, id, actor)?;
    let target = reads::membership(ctx.conn, id, user)?;
    for (who, role) in rules::role_changes(actor, &actor_membership, user, target.as_ref(), role)? {
        ctx.conn
            .execute(
                "UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND user_id = ?2",
                params![id, who, role.as_str()],
            )
            .map_err(db_error)?;
    }
    let message = system_change(
        ctx,
        id,
        actor,
        SystemEvent::RoleChanged {
            by: actor,
            user_id: user,
            role,
        },
        now_ms,
    )?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.conn, id, None)?;
    for event in Event::state_then_message(state, Vec::new(), message) {
        ctx.emit(event);
    }
    Ok(())
}

pub fn set_title(
    ctx: &mut WriteCtx,
    actor: UserId,
    id: ConversationId,
    title: &str,
    now_ms: u64,
) -> Result<()> {
    let membership = reads::active_membership(ctx.conn, id, actor)?;
    rules::may_set_title(membership.kind, membership.role)?;
    ctx.conn
        .execute(
            "UPDATE conversations SET title = ?2 WHERE id = ?1",
            params![id, title],
        )
        .map_err(db_error)?;
    let message = system_change(
        ctx,
        id,
        actor,
        SystemEvent::TitleChanged {
            by: actor,
            title: title.to_string(),
        },
        now_ms,
    )?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.conn, id, None)?;
    for event in Event::state_then_message(state, Vec::new(), message) {
        ctx.emit(event);
    }
    Ok(())
}

pub fn mark(
    ctx: &mut WriteCtx,
    user: UserId,
    id: ConversationId,
    delivered: Option<Seq>,
    read: Option<Seq>,
) -> Result<Receipt> {
    reads::active_membership(ctx.conn, id, user)?;
    let (last_seq, state_pos) = conversation_head(ctx, id)?;
    let (old_delivered, old_read): (Seq, Seq) = ctx
        .conn
        .query_row(
            "SELECT delivered_seq, read_seq FROM members WHERE conversation_id = ?1 AND user_id = ?2",
            params![id, user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_error)?;
    let (delivered_seq, read_seq) =
        rules::marks_after((old_delivered, old_read), delivered, read, last_seq);
    if (delivered_seq, read_seq) == (old_delivered, old_read) {
        return Ok(Receipt {
            conversation_id: id,
            user_id: user,
            delivered_seq,
            read_seq,
            pos: state_pos,
        });
    }
    let pos = ctx.take_pos();
    ctx.conn
        .prepare_cached(
            "UPDATE members SET delivered_seq = ?3, read_seq = ?4 WHERE conversation_id = ?1 AND user_id = ?2",
        )
        .and_then(|mut s| s.execute(params![id, user, delivered_seq, read_seq]))
        .map_err(db_error)?;
    ctx.conn
        .prepare_cached("UPDATE conversations SET state_pos = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, pos]))
        .map_err(db_error)?;
    let receipt = Receipt {
        conversation_id: id,
        user_id: user,
        delivered_seq,
        read_seq,
        pos,
    };
    ctx.emit(Event::Receipt(receipt.clone()));
    Ok(receipt)
}
