//! Write jobs: each runs inside the writer's transaction (in its own savepoint), checks the rules
//! of `natter_core::rules` against the state it is about to change, and emits the events of what
//! it committed. The same steps, in the same order, as the SQLite engine's.

use natter_core::store::NewMessage;
use natter_core::{Error, Event, Result, rules};
use natter_proto::{
    Ack, Content, ConversationId, ConversationKind, DeviceId, ErrorCode, Message, Receipt, Role,
    Seq, SystemEvent, User, UserId,
};
use tokio_postgres::error::SqlState;

use super::reads::{self, execute, get_u64, query_one, query_opt};
use super::writer::WriteCtx;
use super::{db_error, int, stored};

pub async fn create_user(
    ctx: &mut WriteCtx<'_>,
    username: &str,
    display_name: &str,
    password_hash: &str,
    now_ms: u64,
) -> Result<User> {
    let created_at_ms = stored(now_ms, "the creation time")?;
    let statement = ctx
        .tx
        .prepare_cached(
            "INSERT INTO users (username, display_name, password_hash, created_at_ms)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .await
        .map_err(db_error)?;
    let inserted = ctx
        .tx
        .query_one(
            &statement,
            &[&username, &display_name, &password_hash, &created_at_ms],
        )
        .await;
    match inserted {
        Ok(row) => Ok(User {
            id: get_u64(&row, 0)?,
            username: username.to_string(),
            display_name: display_name.to_string(),
        }),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Error::new(
            ErrorCode::UsernameTaken,
            format!("the username `{username}` is taken"),
        )),
        Err(e) => Err(db_error(e)),
    }
}

pub async fn set_user_disabled(
    ctx: &mut WriteCtx<'_>,
    username: &str,
    disabled: bool,
) -> Result<()> {
    let changed = execute(
        ctx.tx,
        "UPDATE users SET disabled = $2 WHERE username = $1",
        &[&username, &disabled],
    )
    .await?;
    if changed == 0 {
        return Err(Error::not_found(format!("no user named `{username}`")));
    }
    Ok(())
}

pub async fn set_display_name(
    ctx: &mut WriteCtx<'_>,
    user_id: UserId,
    display_name: &str,
) -> Result<User> {
    execute(
        ctx.tx,
        "UPDATE users SET display_name = $2 WHERE id = $1",
        &[&int(user_id), &display_name],
    )
    .await?;
    reads::user_by_id(ctx.tx, user_id)
        .await?
        .map(|r| r.user)
        .ok_or_else(|| Error::not_found(format!("no user with id {user_id}")))
}

pub async fn create_device(
    ctx: &mut WriteCtx<'_>,
    user_id: UserId,
    token_hash: &[u8],
    name: &str,
    now_ms: u64,
) -> Result<DeviceId> {
    let now = stored(now_ms, "the creation time")?;
    let row = query_one(
        ctx.tx,
        "INSERT INTO devices (user_id, token_hash, name, created_at_ms, last_seen_at_ms)
         VALUES ($1, $2, $3, $4, $4) RETURNING id",
        &[&int(user_id), &token_hash, &name, &now],
    )
    .await?;
    get_u64(&row, 0)
}

pub async fn revoke_device(
    ctx: &mut WriteCtx<'_>,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<()> {
    let changed = execute(
        ctx.tx,
        "UPDATE devices SET revoked = TRUE WHERE id = $1 AND user_id = $2 AND NOT revoked",
        &[&int(device_id), &int(user_id)],
    )
    .await?;
    if changed == 0 {
        return Err(Error::not_found(format!("no device {device_id}")));
    }
    Ok(())
}

pub async fn touch_device(ctx: &mut WriteCtx<'_>, device_id: DeviceId, now_ms: u64) -> Result<()> {
    let now = stored(now_ms, "the time")?;
    execute(
        ctx.tx,
        "UPDATE devices SET last_seen_at_ms = $2 WHERE id = $1",
        &[&int(device_id), &now],
    )
    .await?;
    Ok(())
}

/// Take the next `seq` of a conversation for a message at `pos`, and record its activity.
async fn next_seq(
    ctx: &mut WriteCtx<'_>,
    id: ConversationId,
    pos: u64,
    now_ms: u64,
) -> Result<Seq> {
    let now = stored(now_ms, "the time")?;
    let row = query_opt(
        ctx.tx,
        "UPDATE conversations SET last_seq = last_seq + 1, message_pos = $2,
             last_pos = GREATEST(last_pos, $2), last_activity_at_ms = $3
         WHERE id = $1 RETURNING last_seq",
        &[&int(id), &int(pos), &now],
    )
    .await?;
    match row {
        Some(row) => get_u64(&row, 0),
        None => Err(Error::not_found(format!("no conversation {id}"))),
    }
}

async fn insert_message(ctx: &mut WriteCtx<'_>, message: &Message) -> Result<()> {
    let content = serde_json::to_string(&message.content)
        .map_err(|e| Error::internal(format!("encoding content: {e}")))?;
    let sent_at_ms = stored(message.sent_at_ms, "sent_at_ms")?;
    execute(
        ctx.tx,
        "INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, reply_to, sent_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &int(message.pos),
            &int(message.conversation_id),
            &int(message.seq),
            &int(message.sender_id),
            &message.client_msg_id,
            &content,
            &message.reply_to.map(int),
            &sent_at_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Append a user's message in one statement that never fails for an expected reason, so that it
/// needs no savepoint and a run of them can be pipelined: the dedupe lookup (D3), the membership
/// and `reply_to` checks, the conversation's next `seq` (D2), the insert and the sender's own read
/// marker. What happened comes back as one row: the first copy (a duplicate), the new `seq`, and
/// whether the sender is an active member (to tell `not_member` from a bad `reply_to`).
const APPEND_SQL: &str = "
WITH dup AS (
    SELECT conversation_id, seq, pos, sent_at_ms FROM messages
    WHERE sender_id = $1 AND client_msg_id = $2
), allowed AS (
    SELECT 1 FROM members
    WHERE conversation_id = $3 AND user_id = $1 AND left_seq IS NULL
      AND NOT EXISTS (SELECT 1 FROM dup)
      AND ($5::BIGINT IS NULL
           OR EXISTS (SELECT 1 FROM messages WHERE conversation_id = $3 AND seq = $5))
), conv AS (
    UPDATE conversations SET last_seq = last_seq + 1, message_pos = $7,
        last_pos = GREATEST(last_pos, $7), last_activity_at_ms = $6
    WHERE id = $3 AND EXISTS (SELECT 1 FROM allowed)
    RETURNING last_seq
), ins AS (
    INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, reply_to, sent_at_ms)
    SELECT $7, $3, last_seq, $1, $2, $4, $5, $6 FROM conv
    RETURNING seq
), own_marker AS (
    UPDATE members SET delivered_seq = ins.seq, read_seq = ins.seq FROM ins
    WHERE members.conversation_id = $3 AND members.user_id = $1
)
SELECT dup.conversation_id, dup.seq, dup.pos, dup.sent_at_ms,
       (SELECT seq FROM ins) AS new_seq,
       EXISTS (SELECT 1 FROM members
               WHERE conversation_id = $3 AND user_id = $1 AND left_seq IS NULL) AS member
FROM (SELECT 1) AS one LEFT JOIN dup ON TRUE";

/// Append consecutive messages of one commit group with one round trip: the statements are
/// pipelined on the writer's connection and run in order, so that each sees the ones before it
/// (a duplicate within the run, the next `seq`). A message refused for an expected reason only
/// leaves an unused position behind (positions may have gaps; `seq`s never do). The outer error
/// is a database failure: the transaction is lost, and with it the whole group.
pub async fn append_run(ctx: &mut WriteCtx<'_>, run: Vec<NewMessage>) -> Result<Vec<Result<Ack>>> {
    let statement = ctx.tx.prepare_cached(APPEND_SQL).await.map_err(db_error)?;
    struct Prepared {
        message: NewMessage,
        pos: u64,
        content: String,
        sent_at_ms: i64,
    }
    let mut prepared = Vec::with_capacity(run.len());
    let mut outcomes: Vec<Option<Result<Ack>>> = Vec::with_capacity(run.len());
    for message in run {
        let content = serde_json::to_string(&message.content)
            .map_err(|e| Error::internal(format!("encoding content: {e}")));
        let checked =
            content.and_then(|content| Ok((content, stored(message.sent_at_ms, "sent_at_ms")?)));
        match checked {
            Ok((content, sent_at_ms)) => {
                let pos = ctx.take_pos();
                outcomes.push(None);
                prepared.push(Prepared {
                    message,
                    pos,
                    content,
                    sent_at_ms,
                });
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let params: Vec<_> = prepared
        .iter()
        .map(|p| {
            (
                int(p.message.sender_id),
                int(p.message.conversation_id),
                p.message.reply_to.map(int),
                int(p.pos),
            )
        })
        .collect();
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let bound: Vec<[Param; 7]> = prepared
        .iter()
        .zip(&params)
        .map(|(p, (sender, conversation, reply_to, pos))| {
            [
                sender as Param,
                &p.message.client_msg_id,
                conversation,
                &p.content,
                reply_to,
                &p.sent_at_ms,
                pos,
            ]
        })
        .collect();
    let rows = futures_util::future::join_all(
        bound
            .iter()
            .map(|values| ctx.tx.query_one(&statement, values)),
    )
    .await;
    drop(bound);
    let mut answers = prepared.into_iter().zip(rows);
    for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
        let Some((p, row)) = answers.next() else {
            break;
        };
        let row = row.map_err(db_error)?;
        let duplicate_of: Option<i64> = row.try_get(0).map_err(db_error)?;
        let new_seq: Option<i64> = row.try_get(4).map_err(db_error)?;
        let member: bool = row.try_get(5).map_err(db_error)?;
        *outcome = Some(if duplicate_of.is_some() {
            Ok(Ack {
                conversation_id: get_u64(&row, 0)?,
                client_msg_id: p.message.client_msg_id,
                seq: get_u64(&row, 1)?,
                pos: get_u64(&row, 2)?,
                sent_at_ms: get_u64(&row, 3)?,
                duplicate: true,
            })
        } else if let Some(seq) = new_seq {
            let seq = Seq::try_from(seq)
                .map_err(|_| Error::internal(format!("stored seq {seq} is negative")))?;
            let ack = Ack {
                conversation_id: p.message.conversation_id,
                client_msg_id: p.message.client_msg_id.clone(),
                seq,
                pos: p.pos,
                sent_at_ms: p.message.sent_at_ms,
                duplicate: false,
            };
            ctx.emit(Event::Message(Message {
                conversation_id: p.message.conversation_id,
                seq,
                pos: p.pos,
                sender_id: p.message.sender_id,
                client_msg_id: Some(p.message.client_msg_id),
                content: p.message.content,
                reply_to: p.message.reply_to,
                sent_at_ms: p.message.sent_at_ms,
            }));
            Ok(ack)
        } else if !member {
            Err(Error::not_member())
        } else {
            Err(Error::invalid(format!(
                "reply_to {} is not a message of this conversation",
                p.message.reply_to.unwrap_or_default()
            )))
        });
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::internal("no answer from the database"))))
        .collect())
}

/// Record a change of the conversation itself: a system message and a new state position.
async fn system_change(
    ctx: &mut WriteCtx<'_>,
    id: ConversationId,
    actor: UserId,
    event: SystemEvent,
    now_ms: u64,
) -> Result<Message> {
    let pos = ctx.take_pos();
    let seq = next_seq(ctx, id, pos, now_ms).await?;
    execute(
        ctx.tx,
        "UPDATE conversations SET state_pos = $2 WHERE id = $1",
        &[&int(id), &int(pos)],
    )
    .await?;
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
    insert_message(ctx, &message).await?;
    // The actor knows what they just did: it is not unread for them.
    execute(
        ctx.tx,
        "UPDATE members SET delivered_seq = GREATEST(delivered_seq, $3), read_seq = GREATEST(read_seq, $3)
         WHERE conversation_id = $1 AND user_id = $2",
        &[&int(id), &int(actor), &int(seq)],
    )
    .await?;
    Ok(message)
}

async fn state_event(
    ctx: &WriteCtx<'_>,
    id: ConversationId,
    added: Vec<UserId>,
    removed: Vec<UserId>,
) -> Result<Event> {
    Ok(Event::ConversationChanged {
        conversation: reads::conversation(ctx.tx, id, None).await?,
        added,
        removed,
        message_follows: false,
    })
}

async fn require_user(ctx: &WriteCtx<'_>, id: UserId) -> Result<()> {
    match reads::user_by_id(ctx.tx, id).await? {
        Some(record) if !record.disabled => Ok(()),
        _ => Err(Error::not_found(format!("no user with id {id}"))),
    }
}

async fn insert_member(
    ctx: &WriteCtx<'_>,
    id: ConversationId,
    user: UserId,
    role: Role,
) -> Result<()> {
    execute(
        ctx.tx,
        "INSERT INTO members (conversation_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (conversation_id, user_id)
         DO UPDATE SET role = excluded.role, left_seq = NULL, left_pos = NULL",
        &[&int(id), &int(user), &role.as_str()],
    )
    .await?;
    Ok(())
}

async fn insert_conversation(
    ctx: &mut WriteCtx<'_>,
    kind: ConversationKind,
    title: Option<&str>,
    direct_key: Option<&str>,
    now_ms: u64,
) -> Result<ConversationId> {
    let now = stored(now_ms, "the creation time")?;
    let row = query_one(
        ctx.tx,
        "INSERT INTO conversations (kind, title, direct_key, created_at_ms, last_activity_at_ms)
         VALUES ($1, $2, $3, $4, $4) RETURNING id",
        &[&kind.as_str(), &title, &direct_key, &now],
    )
    .await?;
    get_u64(&row, 0)
}

pub async fn create_direct(
    ctx: &mut WriteCtx<'_>,
    a: UserId,
    b: UserId,
    now_ms: u64,
) -> Result<(ConversationId, bool)> {
    let key = format!("{}:{}", a.min(b), a.max(b));
    let existing = query_opt(
        ctx.tx,
        "SELECT id FROM conversations WHERE direct_key = $1",
        &[&key],
    )
    .await?;
    if let Some(row) = existing {
        return Ok((get_u64(&row, 0)?, false));
    }
    require_user(ctx, a).await?;
    require_user(ctx, b).await?;
    let id = insert_conversation(ctx, ConversationKind::Direct, None, Some(&key), now_ms).await?;
    insert_member(ctx, id, a, Role::Member).await?;
    insert_member(ctx, id, b, Role::Member).await?;
    let pos = ctx.take_pos();
    execute(
        ctx.tx,
        "UPDATE conversations SET state_pos = $2, last_pos = $2 WHERE id = $1",
        &[&int(id), &int(pos)],
    )
    .await?;
    let event = state_event(ctx, id, vec![a, b], vec![]).await?;
    ctx.emit(event);
    Ok((id, true))
}

pub async fn create_group(
    ctx: &mut WriteCtx<'_>,
    owner: UserId,
    title: &str,
    members: &[UserId],
    now_ms: u64,
) -> Result<ConversationId> {
    require_user(ctx, owner).await?;
    for &member in members {
        require_user(ctx, member).await?;
    }
    let id = insert_conversation(ctx, ConversationKind::Group, Some(title), None, now_ms).await?;
    insert_member(ctx, id, owner, Role::Owner).await?;
    for &member in members.iter().filter(|m| **m != owner) {
        insert_member(ctx, id, member, Role::Member).await?;
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
    )
    .await?;
    let mut added = vec![owner];
    added.extend(members.iter().copied().filter(|m| *m != owner));
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.tx, id, None).await?;
    for event in Event::state_then_message(state, added, created) {
        ctx.emit(event);
    }
    Ok(id)
}

pub async fn add_members(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    id: ConversationId,
    users: &[UserId],
    now_ms: u64,
) -> Result<()> {
    let membership = reads::active_membership(ctx.tx, id, actor).await?;
    rules::may_manage_members(membership.kind, membership.role)?;
    let mut added = Vec::new();
    for &user in users {
        require_user(ctx, user).await?;
        let already = reads::membership(ctx.tx, id, user)
            .await?
            .is_some_and(|m| m.is_active());
        if !already && !added.contains(&user) {
            insert_member(ctx, id, user, Role::Member).await?;
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
    )
    .await?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.tx, id, None).await?;
    for event in Event::state_then_message(state, added, message) {
        ctx.emit(event);
    }
    Ok(())
}

pub async fn remove_member(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    id: ConversationId,
    user: UserId,
    now_ms: u64,
) -> Result<()> {
    let actor_membership = reads::active_membership(ctx.tx, id, actor).await?;
    let system_event = if actor == user {
        let row = query_one(
            ctx.tx,
            "SELECT COUNT(*) FROM members WHERE conversation_id = $1 AND left_seq IS NULL",
            &[&int(id)],
        )
        .await?;
        let members_count = usize::try_from(get_u64(&row, 0)?)
            .map_err(|_| Error::internal("member count out of range"))?;
        rules::leave(actor, &actor_membership, members_count)?
    } else {
        let target = reads::membership(ctx.tx, id, user).await?;
        rules::removal(actor, &actor_membership, user, target.as_ref())?
    };
    // The message goes out while the user is still a member, so that they see it too.
    let message = system_change(ctx, id, actor, system_event, now_ms).await?;
    execute(
        ctx.tx,
        "UPDATE members SET left_seq = $3, left_pos = $4 WHERE conversation_id = $1 AND user_id = $2",
        &[&int(id), &int(user), &int(message.seq), &int(message.pos)],
    )
    .await?;
    ctx.emit(Event::Message(message));
    let event = state_event(ctx, id, vec![], vec![user]).await?;
    ctx.emit(event);
    Ok(())
}

pub async fn set_role(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    id: ConversationId,
    user: UserId,
    role: Role,
    now_ms: u64,
) -> Result<()> {
    let actor_membership = reads::active_membership(ctx.tx, id, actor).await?;
    let target = reads::membership(ctx.tx, id, user).await?;
    for (who, role) in rules::role_changes(actor, &actor_membership, user, target.as_ref(), role)? {
        execute(
            ctx.tx,
            "UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
            &[&int(id), &int(who), &role.as_str()],
        )
        .await?;
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
    )
    .await?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.tx, id, None).await?;
    for event in Event::state_then_message(state, Vec::new(), message) {
        ctx.emit(event);
    }
    Ok(())
}

pub async fn set_title(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    id: ConversationId,
    title: &str,
    now_ms: u64,
) -> Result<()> {
    let membership = reads::active_membership(ctx.tx, id, actor).await?;
    rules::may_set_title(membership.kind, membership.role)?;
    execute(
        ctx.tx,
        "UPDATE conversations SET title = $2 WHERE id = $1",
        &[&int(id), &title],
    )
    .await?;
    let message = system_change(
        ctx,
        id,
        actor,
        SystemEvent::TitleChanged {
            by: actor,
            title: title.to_string(),
        },
        now_ms,
    )
    .await?;
    // The new state, then the message that records it (`Event::state_then_message`).
    let state = reads::conversation(ctx.tx, id, None).await?;
    for event in Event::state_then_message(state, Vec::new(), message) {
        ctx.emit(event);
    }
    Ok(())
}

pub async fn mark(
    ctx: &mut WriteCtx<'_>,
    user: UserId,
    id: ConversationId,
    delivered: Option<Seq>,
    read: Option<Seq>,
) -> Result<Receipt> {
    reads::active_membership(ctx.tx, id, user).await?;
    let row = query_one(
        ctx.tx,
        "SELECT last_seq, state_pos FROM conversations WHERE id = $1",
        &[&int(id)],
    )
    .await?;
    let (last_seq, state_pos) = (get_u64(&row, 0)?, get_u64(&row, 1)?);
    let row = query_one(
        ctx.tx,
        "SELECT delivered_seq, read_seq FROM members WHERE conversation_id = $1 AND user_id = $2",
        &[&int(id), &int(user)],
    )
    .await?;
    let (old_delivered, old_read) = (get_u64(&row, 0)?, get_u64(&row, 1)?);
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
    execute(
        ctx.tx,
        "UPDATE members SET delivered_seq = $3, read_seq = $4 WHERE conversation_id = $1 AND user_id = $2",
        &[&int(id), &int(user), &int(delivered_seq), &int(read_seq)],
    )
    .await?;
    execute(
        ctx.tx,
        "UPDATE conversations SET state_pos = $2, last_pos = $2 WHERE id = $1",
        &[&int(id), &int(pos)],
    )
    .await?;
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
