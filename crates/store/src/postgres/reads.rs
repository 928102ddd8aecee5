//! Queries, shared by the read pool and by write jobs (which read inside their transaction).
//! Every statement is prepared once per connection and cached.

use deadpool_postgres::GenericClient;
use natter_core::store::{ChangedConversation, Membership, UserRecord};
use natter_core::{Error, Result, rules};
use natter_proto::{
    Content, Conversation, ConversationId, ConversationKind, Device, HistoryPage, Member, Message,
    Pos, Role, Seq, User, UserId,
};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::{db_error, int};

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query(&statement, params).await.map_err(db_error)
}

pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_opt(&statement, params).await.map_err(db_error)
}

pub(crate) async fn query_one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_one(&statement, params).await.map_err(db_error)
}

/// Run a statement; the number of rows it changed.
pub(crate) async fn execute<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<u64> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.execute(&statement, params).await.map_err(db_error)
}

pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T> {
    row.try_get(index).map_err(db_error)
}

/// A stored `BIGINT` as the domain's `u64`.
pub(crate) fn get_u64(row: &Row, index: usize) -> Result<u64> {
    let value: i64 = get(row, index)?;
    u64::try_from(value).map_err(|_| Error::internal(format!("stored number {value} is negative")))
}

pub(crate) fn get_opt_u64(row: &Row, index: usize) -> Result<Option<u64>> {
    let value: Option<i64> = get(row, index)?;
    value
        .map(|v| {
            u64::try_from(v).map_err(|_| Error::internal(format!("stored number {v} is negative")))
        })
        .transpose()
}

fn user_record(row: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: get_u64(row, 0)?,
            username: get(row, 1)?,
            display_name: get(row, 2)?,
        },
        password_hash: get(row, 3)?,
        disabled: get(row, 4)?,
        created_at_ms: get_u64(row, 5)?,
    })
}

pub async fn user_by_username<C: GenericClient>(
    c: &C,
    username: &str,
) -> Result<Option<UserRecord>> {
    query_opt(
        c,
        "SELECT id, username, display_name, password_hash, disabled, created_at_ms
         FROM users WHERE username = $1",
        &[&username],
    )
    .await?
    .as_ref()
    .map(user_record)
    .transpose()
}

pub async fn user_by_id<C: GenericClient>(c: &C, id: UserId) -> Result<Option<UserRecord>> {
    query_opt(
        c,
        "SELECT id, username, display_name, password_hash, disabled, created_at_ms
         FROM users WHERE id = $1",
        &[&int(id)],
    )
    .await?
    .as_ref()
    .map(user_record)
    .transpose()
}

pub async fn list_users<C: GenericClient>(c: &C) -> Result<Vec<UserRecord>> {
    query(
        c,
        "SELECT id, username, display_name, password_hash, disabled, created_at_ms
         FROM users ORDER BY id",
        &[],
    )
    .await?
    .iter()
    .map(user_record)
    .collect()
}

pub async fn device_by_token<C: GenericClient>(
    c: &C,
    token_hash: &[u8],
) -> Result<Option<(UserRecord, u64)>> {
    query_opt(
        c,
        "SELECT u.id, u.username, u.display_name, u.password_hash, u.disabled, u.created_at_ms, d.id
         FROM devices d JOIN users u ON u.id = d.user_id
         WHERE d.token_hash = $1 AND NOT d.revoked",
        &[&token_hash],
    )
    .await?
    .map(|row| Ok((user_record(&row)?, get_u64(&row, 6)?)))
    .transpose()
}

pub async fn refused_among<C: GenericClient>(c: &C, devices: &[u64]) -> Result<Vec<u64>> {
    let ids: Vec<i64> = devices.iter().map(|d| int(*d)).collect();
    let allowed: std::collections::HashSet<u64> = query(
        c,
        "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id
         WHERE d.id = ANY($1) AND NOT d.revoked AND NOT u.disabled",
        &[&ids],
    )
    .await?
    .iter()
    .map(|row| get_u64(row, 0))
    .collect::<Result<_>>()?;
    Ok(crate::refused_of(devices, &allowed))
}

pub async fn list_devices<C: GenericClient>(c: &C, user_id: UserId) -> Result<Vec<Device>> {
    query(
        c,
        "SELECT id, name, created_at_ms, last_seen_at_ms FROM devices
         WHERE user_id = $1 AND NOT revoked ORDER BY id",
        &[&int(user_id)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Device {
            id: get_u64(row, 0)?,
            name: get(row, 1)?,
            created_at_ms: get_u64(row, 2)?,
            last_seen_at_ms: get_u64(row, 3)?,
            current: false,
        })
    })
    .collect()
}

fn parse_kind(kind: &str) -> Result<ConversationKind> {
    ConversationKind::parse(kind)
        .ok_or_else(|| Error::internal(format!("stored conversation kind `{kind}` is unknown")))
}

fn parse_role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| Error::internal(format!("stored role `{role}` is unknown")))
}

pub async fn membership<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<Option<Membership>> {
    let row = query_opt(
        c,
        "SELECT c.kind, m.role, m.left_seq FROM members m
         JOIN conversations c ON c.id = m.conversation_id
         WHERE m.conversation_id = $1 AND m.user_id = $2",
        &[&int(id), &int(user)],
    )
    .await?;
    row.map(|row| {
        Ok(Membership {
            kind: parse_kind(get(&row, 0)?)?,
            role: parse_role(get(&row, 1)?)?,
            left_seq: get_opt_u64(&row, 2)?,
        })
    })
    .transpose()
}

/// An active membership, or `NotMember`.
pub async fn active_membership<C: GenericClient>(
    c: &C,
    id: ConversationId,
    user: UserId,
) -> Result<Membership> {
    match membership(c, id, user).await? {
        Some(m) if m.is_active() => Ok(m),
        _ => Err(Error::not_member()),
    }
}

fn message(row: &Row) -> Result<Message> {
    let content: &str = get(row, 5)?;
    let content: Content = serde_json::from_str(content)
        .map_err(|e| Error::internal(format!("stored content is not valid: {e}")))?;
    Ok(Message {
        conversation_id: get_u64(row, 0)?,
        seq: get_u64(row, 1)?,
        pos: get_u64(row, 2)?,
        sender_id: get_u64(row, 3)?,
        client_msg_id: get(row, 4)?,
        content,
        reply_to: get_opt_u64(row, 6)?,
        sent_at_ms: get_u64(row, 7)?,
    })
}

pub async fn message_by_seq<C: GenericClient>(
    c: &C,
    id: ConversationId,
    seq: Seq,
) -> Result<Option<Message>> {
    query_opt(
        c,
        "SELECT conversation_id, seq, pos, sender_id, client_msg_id, content, reply_to, sent_at_ms
         FROM messages WHERE conversation_id = $1 AND seq = $2",
        &[&int(id), &int(seq)],
    )
    .await?
    .as_ref()
    .map(message)
    .transpose()
}

/// A conversation's state; with a viewer, also their last visible message and unread count.
pub async fn conversation<C: GenericClient>(
    c: &C,
    id: ConversationId,
    viewer: Option<UserId>,
) -> Result<Conversation> {
    let Some(head) = query_opt(
        c,
        "SELECT kind, title, created_at_ms, last_activity_at_ms, last_seq, last_pos
         FROM conversations WHERE id = $1",
        &[&int(id)],
    )
    .await?
    else {
        return Err(Error::not_found(format!("no conversation {id}")));
    };
    let members = query(
        c,
        "SELECT m.user_id, u.username, u.display_name, m.role, m.delivered_seq, m.read_seq
         FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = $1 AND m.left_seq IS NULL ORDER BY m.user_id",
        &[&int(id)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Member {
            user_id: get_u64(row, 0)?,
            username: get(row, 1)?,
            display_name: get(row, 2)?,
            role: parse_role(get(row, 3)?)?,
            delivered_seq: get_u64(row, 4)?,
            read_seq: get_u64(row, 5)?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let last_seq = get_u64(&head, 4)?;
    let mut conversation = Conversation {
        id,
        kind: parse_kind(get(&head, 0)?)?,
        title: get(&head, 1)?,
        members,
        last_seq,
        last_pos: get_u64(&head, 5)?,
        created_at_ms: get_u64(&head, 2)?,
        last_activity_at_ms: get_u64(&head, 3)?,
        last_message: None,
        unread_count: None,
    };
    if let Some(viewer) = viewer {
        let Some(markers) = query_opt(
            c,
            "SELECT read_seq, left_seq, left_pos FROM members
             WHERE conversation_id = $1 AND user_id = $2",
            &[&int(id), &int(viewer)],
        )
        .await?
        else {
            return Err(Error::not_member());
        };
        let read_seq = get_u64(&markers, 0)?;
        let left_seq = get_opt_u64(&markers, 1)?;
        let left_pos = get_opt_u64(&markers, 2)?;
        let visible_seq = rules::visible_seq(last_seq, left_seq);
        let last_message = if visible_seq > 0 {
            message_by_seq(c, id, visible_seq).await?
        } else {
            None
        };
        rules::as_seen_by(
            &mut conversation,
            read_seq,
            left_seq.zip(left_pos),
            last_message,
        );
    }
    Ok(conversation)
}

pub async fn conversation_ids_of<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<ConversationId>> {
    query(
        c,
        "SELECT conversation_id FROM members WHERE user_id = $1 AND left_seq IS NULL",
        &[&int(user)],
    )
    .await?
    .iter()
    .map(|row| get_u64(row, 0))
    .collect()
}

pub async fn list_conversations<C: GenericClient>(
    c: &C,
    viewer: UserId,
) -> Result<Vec<Conversation>> {
    let mut list = Vec::new();
    for id in conversation_ids_of(c, viewer).await? {
        list.push(conversation(c, id, Some(viewer)).await?);
    }
    list.sort_by(|a, b| {
        b.last_activity_at_ms
            .cmp(&a.last_activity_at_ms)
            .then(b.last_pos.cmp(&a.last_pos))
    });
    Ok(list)
}

pub async fn share_conversation<C: GenericClient>(c: &C, a: UserId, b: UserId) -> Result<bool> {
    let row = query_one(
        c,
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y
           ON y.conversation_id = x.conversation_id AND y.user_id = $2 AND y.left_seq IS NULL
         WHERE x.user_id = $1 AND x.left_seq IS NULL)",
        &[&int(a), &int(b)],
    )
    .await?;
    get(&row, 0)
}

pub async fn shared_a_conversation<C: GenericClient>(c: &C, a: UserId, b: UserId) -> Result<bool> {
    let row = query_one(
        c,
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y
           ON y.conversation_id = x.conversation_id AND y.user_id = $2
         WHERE x.user_id = $1)",
        &[&int(a), &int(b)],
    )
    .await?;
    get(&row, 0)
}

pub async fn history<C: GenericClient>(
    c: &C,
    id: ConversationId,
    before: Option<Seq>,
    after: Option<Seq>,
    max_seq: Option<Seq>,
    limit: u32,
) -> Result<HistoryPage> {
    // Exclusive bounds: seq in (low, high).
    let low = after.unwrap_or(0);
    let high = match (before, max_seq) {
        (Some(b), Some(m)) => b.min(m.saturating_add(1)),
        (Some(b), None) => b,
        (None, Some(m)) => m.saturating_add(1),
        (None, None) => u64::MAX >> 1,
    };
    let fetch = i64::from(limit) + 1;
    let newest_first = before.is_some() && after.is_none();
    let sql = if newest_first {
        "SELECT conversation_id, seq, pos, sender_id, client_msg_id, content, reply_to, sent_at_ms
         FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3
         ORDER BY seq DESC LIMIT $4"
    } else {
        "SELECT conversation_id, seq, pos, sender_id, client_msg_id, content, reply_to, sent_at_ms
         FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3
         ORDER BY seq ASC LIMIT $4"
    };
    let mut messages = query(c, sql, &[&int(id), &int(low), &int(high), &fetch])
        .await?
        .iter()
        .map(message)
        .collect::<Result<Vec<_>>>()?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    if newest_first {
        messages.reverse();
    }
    Ok(HistoryPage { messages, more })
}

pub async fn changed_since<C: GenericClient>(
    c: &C,
    user: UserId,
    cursor: Pos,
) -> Result<Vec<ChangedConversation>> {
    // A member who left sees changes only up to the position of their leaving.
    query(
        c,
        "SELECT c.id,
                CASE WHEN m.left_pos IS NULL THEN c.message_pos
                     ELSE LEAST(c.message_pos, m.left_pos) END,
                CASE WHEN m.left_pos IS NULL THEN c.state_pos
                     ELSE LEAST(c.state_pos, m.left_pos) END,
                m.left_seq
         FROM members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = $1
           AND ((m.left_pos IS NULL AND c.last_pos > $2) OR m.left_pos > $2)",
        &[&int(user), &int(cursor)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(ChangedConversation {
            id: get_u64(row, 0)?,
            message_pos: get_u64(row, 1)?,
            state_pos: get_u64(row, 2)?,
            left_seq: get_opt_u64(row, 3)?,
        })
    })
    .collect()
}

pub async fn messages_in_pos_range<C: GenericClient>(
    c: &C,
    id: ConversationId,
    after: Pos,
    up_to: Pos,
    max_seq: Option<Seq>,
    limit: u32,
) -> Result<Vec<Message>> {
    let max_seq = max_seq.unwrap_or(u64::MAX >> 1);
    query(
        c,
        "SELECT conversation_id, seq, pos, sender_id, client_msg_id, content, reply_to, sent_at_ms
         FROM messages
         WHERE conversation_id = $1 AND pos > $2 AND pos <= $3 AND seq <= $4
         ORDER BY pos LIMIT $5",
        &[
            &int(id),
            &int(after),
            &int(up_to),
            &int(max_seq),
            &i64::from(limit),
        ],
    )
    .await?
    .iter()
    .map(message)
    .collect()
}

/// The position of the newest committed change (see the module doc of [`super`]).
pub async fn head<C: GenericClient>(c: &C) -> Result<Pos> {
    let row = query_one(c, "SELECT value FROM meta WHERE key = 'pos'", &[]).await?;
    get_u64(&row, 0)
}
