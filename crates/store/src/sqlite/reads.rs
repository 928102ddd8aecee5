//! Queries, shared by the reader pool and by write jobs (which read inside their transaction).

use natter_core::store::{ChangedConversation, Membership, SyncRequest, UserRecord};
use natter_core::{Error, Result, rules};
use natter_proto::{
    Content, Conversation, ConversationId, ConversationKind, Device, HistoryPage, Member, Message,
    Pos, Role, Seq, SyncPage, User, UserId,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db_error;

const USER_COLUMNS: &str = "id, username, display_name, password_hash, disabled, created_at_ms";

fn user_record(row: &Row) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: row.get(0)?,
            username: row.get(1)?,
            display_name: row.get(2)?,
        },
        password_hash: row.get(3)?,
        disabled: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

pub fn user_by_username(conn: &Connection, username: &str) -> Result<Option<UserRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username = ?1"
    ))
    .and_then(|mut s| s.query_row([username], user_record).optional())
    .map_err(db_error)
}

pub fn user_by_id(conn: &Connection, id: UserId) -> Result<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], user_record).optional())
        .map_err(db_error)
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
        .and_then(|mut s| s.query_map([], user_record)?.collect())
        .map_err(db_error)
}

pub fn device_by_token(conn: &Connection, token_hash: &[u8]) -> Result<Option<(UserRecord, u64)>> {
    conn.prepare_cached(
        "SELECT u.id, u.username, u.display_name, u.password_hash, u.disabled, u.created_at_ms, d.id
         FROM devices d JOIN users u ON u.id = d.user_id
         WHERE d.token_hash = ?1 AND d.revoked = 0",
    )
    .and_then(|mut s| {
        s.query_row([token_hash], |row| Ok((user_record(row)?, row.get(6)?)))
            .optional()
    })
    .map_err(db_error)
}

pub fn refused_among(conn: &Connection, devices: &[u64]) -> Result<Vec<u64>> {
    let ids = serde_json::to_string(devices).map_err(|e| Error::internal(e.to_string()))?;
    let allowed: std::collections::HashSet<u64> = conn
        .prepare_cached(
            "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.id IN (SELECT value FROM json_each(?1)) AND d.revoked = 0 AND u.disabled = 0",
        )
        .and_then(|mut s| s.query_map([ids], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    Ok(crate::refused_of(devices, &allowed))
}

pub fn list_devices(conn: &Connection, user_id: UserId) -> Result<Vec<Device>> {
    conn.prepare_cached(
        "SELECT id, name, created_at_ms, last_seen_at_ms FROM devices
         WHERE user_id = ?1 AND revoked = 0 ORDER BY id",
    )
    .and_then(|mut s| {
        s.query_map([user_id], |row| {
            Ok(Device {
                id: row.get(0)?,
                name: row.get(1)?,
                created_at_ms: row.get(2)?,
                last_seen_at_ms: row.get(3)?,
                current: false,
            })
        })?
        .collect()
    })
    .map_err(db_error)
}

fn parse_kind(kind: &str) -> Result<ConversationKind> {
    ConversationKind::parse(kind)
        .ok_or_else(|| Error::internal(format!("stored conversation kind `{kind}` is unknown")))
}

fn parse_role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| Error::internal(format!("stored role `{role}` is unknown")))
}

pub fn membership(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
) -> Result<Option<Membership>> {
    let row: Option<(String, String, Option<Seq>)> = conn
        .prepare_cached(
            "SELECT c.kind, m.role, m.left_seq FROM members m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = ?1 AND m.user_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![id, user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db_error)?;
    row.map(|(kind, role, left_seq)| {
        Ok(Membership {
            kind: parse_kind(&kind)?,
            role: parse_role(&role)?,
            left_seq,
        })
    })
    .transpose()
}

/// An active membership, or `NotMember`.
pub fn active_membership(
    conn: &Connection,
    id: ConversationId,
    user: UserId,
) -> Result<Membership> {
    match membership(conn, id, user)? {
        Some(m) if m.is_active() => Ok(m),
        _ => Err(Error::not_member()),
    }
}

const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, pos, sender_id, client_msg_id, content, reply_to, sent_at_ms";

fn message_row(row: &Row) -> rusqlite::Result<(Message, String)> {
    Ok((
        Message {
            conversation_id: row.get(0)?,
            seq: row.get(1)?,
            pos: row.get(2)?,
            sender_id: row.get(3)?,
            client_msg_id: row.get(4)?,
            content: Content::Text {
                text: String::new(),
            },
            reply_to: row.get(6)?,
            sent_at_ms: row.get(7)?,
        },
        row.get(5)?,
    ))
}

fn with_content((mut message, content): (Message, String)) -> Result<Message> {
    message.content = serde_json::from_str(&content)
        .map_err(|e| Error::internal(format!("stored content is not valid: {e}")))?;
    Ok(message)
}

fn query_messages(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Message>> {
    let rows: Vec<(Message, String)> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, message_row)?.collect())
        .map_err(db_error)?;
    rows.into_iter().map(with_content).collect()
}

pub fn message_by_seq(conn: &Connection, id: ConversationId, seq: Seq) -> Result<Option<Message>> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq = ?2");
    Ok(query_messages(conn, &sql, params![id, seq])?.pop())
}

/// A conversation's state; with a viewer, also their last visible message and unread count.
pub fn conversation(
    conn: &Connection,
    id: ConversationId,
    viewer: Option<UserId>,
) -> Result<Conversation> {
    type Head = (String, Option<String>, u64, Pos);
    let head: Option<Head> = conn
        .prepare_cached(
            "SELECT kind, title, created_at_ms, state_pos FROM conversations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })
        .map_err(db_error)?;
    let Some((kind, title, created_at_ms, state_pos)) = head else {
        return Err(Error::not_found(format!("no conversation {id}")));
    };
    let newest = newest_message(conn, id)?;
    let last_seq = newest.as_ref().map_or(0, |m| m.seq);
    let last_pos = newest.as_ref().map_or(state_pos, |m| m.pos.max(state_pos));
    let last_activity_at_ms = newest.as_ref().map_or(created_at_ms, |m| m.sent_at_ms);
    let rows: Vec<(UserId, String, String, String, Seq, Seq)> = conn
        .prepare_cached(
            "SELECT m.user_id, u.username, u.display_name, m.role, m.delivered_seq, m.read_seq
             FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.conversation_id = ?1 AND m.left_seq IS NULL ORDER BY m.user_id",
        )
        .and_then(|mut s| {
            s.query_map([id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let members = rows
        .into_iter()
        .map(
            |(user_id, username, display_name, role, delivered_seq, read_seq)| {
                Ok(Member {
                    user_id,
                    username,
                    display_name,
                    role: parse_role(&role)?,
                    delivered_seq,
                    read_seq,
                })
            },
        )
        .collect::<Result<Vec<_>>>()?;
    let mut conversation = Conversation {
        id,
        kind: parse_kind(&kind)?,
        title,
        members,
        last_seq,
        last_pos,
        created_at_ms,
        last_activity_at_ms,
        last_message: None,
        unread_count: None,
    };
    if let Some(viewer) = viewer {
        type Markers = (Seq, Option<Seq>, Option<Pos>);
        let markers: Option<Markers> = conn
            .prepare_cached(
                "SELECT read_seq, left_seq, left_pos FROM members
                 WHERE conversation_id = ?1 AND user_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![id, viewer], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(db_error)?;
        let Some((read_seq, left_seq, left_pos)) = markers else {
            return Err(Error::not_member());
        };
        let visible_seq = rules::visible_seq(last_seq, left_seq);
        // The newest message, read above, unless the viewer left before it.
        let last_message = match newest {
            Some(m) if m.seq == visible_seq => Some(m),
            _ if visible_seq > 0 => message_by_seq(conn, id, visible_seq)?,
            _ => None,
        };
        let left = left_seq.zip(left_pos);
        rules::as_seen_by(&mut conversation, read_seq, left, last_message);
    }
    Ok(conversation)
}

/// A conversation's newest message: the last entry of its seq index. A conversation's last seq,
/// message position and activity time are this message's rather than kept in the
/// conversation's row, which every append would then rewrite (a page more per message in the
/// log).
fn newest_message(conn: &Connection, id: ConversationId) -> Result<Option<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1
         ORDER BY seq DESC LIMIT 1"
    );
    Ok(query_messages(conn, &sql, [id])?.pop())
}

pub fn conversation_ids_of(conn: &Connection, user: UserId) -> Result<Vec<ConversationId>> {
    conn.prepare_cached(
        "SELECT conversation_id FROM members WHERE user_id = ?1 AND left_seq IS NULL",
    )
    .and_then(|mut s| s.query_map([user], |r| r.get(0))?.collect())
    .map_err(db_error)
}

/// How many conversations `user` is or was a member of: the rows `changed_since` goes through.
pub fn memberships_of(conn: &Connection, user: UserId) -> Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM members WHERE user_id = ?1")
        .and_then(|mut s| s.query_row([user], |r| r.get(0)))
        .map_err(db_error)
}

pub fn list_conversations(conn: &Connection, viewer: UserId) -> Result<Vec<Conversation>> {
    let mut list = conversation_ids_of(conn, viewer)?
        .into_iter()
        .map(|id| conversation(conn, id, Some(viewer)))
        .collect::<Result<Vec<_>>>()?;
    list.sort_by(|a, b| {
        b.last_activity_at_ms
            .cmp(&a.last_activity_at_ms)
            .then(b.last_pos.cmp(&a.last_pos))
    });
    Ok(list)
}

pub fn share_conversation(conn: &Connection, a: UserId, b: UserId) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y
           ON y.conversation_id = x.conversation_id AND y.user_id = ?2 AND y.left_seq IS NULL
         WHERE x.user_id = ?1 AND x.left_seq IS NULL)",
    )
    .and_then(|mut s| s.query_row(params![a, b], |r| r.get(0)))
    .map_err(db_error)
}

pub fn shared_a_conversation(conn: &Connection, a: UserId, b: UserId) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y
           ON y.conversation_id = x.conversation_id AND y.user_id = ?2
         WHERE x.user_id = ?1)",
    )
    .and_then(|mut s| s.query_row(params![a, b], |r| r.get(0)))
    .map_err(db_error)
}

pub fn history(
    conn: &Connection,
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
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3
             ORDER BY seq DESC LIMIT ?4"
        )
    } else {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3
             ORDER BY seq ASC LIMIT ?4"
        )
    };
    let mut messages = query_messages(conn, &sql, params![id, low, high, fetch])?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    if newest_first {
        messages.reverse();
    }
    Ok(HistoryPage { messages, more })
}

pub fn changed_since(
    conn: &Connection,
    user: UserId,
    cursor: Pos,
) -> Result<Vec<ChangedConversation>> {
    // A member who left sees changes only up to the position of their leaving. A conversation's
    // message position is its newest message's (`newest_message`), from the seq index.
    conn.prepare_cached(concat!(
        "SELECT id,
                CASE WHEN left_pos IS NULL THEN message_pos ELSE MIN(message_pos, left_pos) END,
                CASE WHEN left_pos IS NULL THEN state_pos ELSE MIN(state_pos, left_pos) END,
                left_seq
         FROM (SELECT c.id, c.state_pos, m.left_pos, m.left_seq, ",
        newest_message_column!("pos", "c.id"),
        " AS message_pos
               FROM members m JOIN conversations c ON c.id = m.conversation_id
               WHERE m.user_id = ?1)
         WHERE (left_pos IS NULL AND MAX(message_pos, state_pos) > ?2) OR left_pos > ?2"
    ))
    .and_then(|mut s| {
        s.query_map(params![user, cursor], |r| {
            Ok(ChangedConversation {
                id: r.get(0)?,
                message_pos: r.get(1)?,
                state_pos: r.get(2)?,
                left_seq: r.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(db_error)
}

/// `messages_in_pos_range` for each conversation asked, in the order asked
/// (`Store::messages_in_pos_ranges`).
pub fn messages_in_pos_ranges(
    conn: &Connection,
    conversations: Vec<(ConversationId, Option<Seq>)>,
    after: Pos,
    up_to: Pos,
    limit: u32,
) -> Result<Vec<Vec<Message>>> {
    conversations
        .into_iter()
        .map(|(id, max_seq)| messages_in_pos_range(conn, id, after, up_to, max_seq, limit))
        .collect()
}

/// One sync page read in one snapshot, in steps: what changed ([`SyncRead::begin`]), where the
/// messages to read are and how many ([`SyncRead::messages`]), then the messages and the
/// conversations' states ([`SyncRead::finish`]). Between them a caller can tell a small page,
/// cheap enough to read on an async thread, from a large one, and hand the rest of a large one
/// to a reader thread with its connection.
///
/// `begin` opens a read transaction on its connection and `finish` ends it: every step must be
/// given that same connection. One given back to the pool still in the transaction (an error
/// between the steps) is rolled back there.
pub struct SyncRead {
    request: SyncRequest,
    changed: Vec<ChangedConversation>,
    /// Once located: one per conversation of `request.messages_to_read(&changed)`, in order.
    ranges: Option<Vec<Option<SeqRange>>>,
}

impl SyncRead {
    pub fn begin(conn: &Connection, request: SyncRequest) -> Result<SyncRead> {
        conn.execute_batch("BEGIN").map_err(db_error)?;
        let changed = changed_since(conn, request.user, request.cursor)?;
        Ok(SyncRead {
            request,
            changed,
            ranges: None,
        })
    }

    /// Conversations with changes after the cursor: a page reads the state of those it takes.
    pub fn conversations(&self) -> usize {
        self.changed.len()
    }

    /// Messages `finish` will read: at most `limit + 1` per conversation.
    pub fn messages(&mut self, conn: &Connection) -> Result<u64> {
        let per_conversation = u64::from(self.read_limit());
        Ok(self
            .located(conn)?
            .iter()
            .flatten()
            .map(|range| range.len().min(per_conversation))
            .sum())
    }

    /// Where the messages to read are, looked up once: one range (or none) per conversation of
    /// `messages_to_read`, in its order.
    fn located(&mut self, conn: &Connection) -> Result<&[Option<SeqRange>]> {
        if self.ranges.is_none() {
            let request = self.request;
            let ranges = request
                .messages_to_read(&self.changed)
                .into_iter()
                .map(|(id, max_seq)| seq_range(conn, id, request.cursor, request.head, max_seq))
                .collect::<Result<_>>()?;
            self.ranges = Some(ranges);
        }
        Ok(self.ranges.as_deref().unwrap_or_default())
    }

    fn read_limit(&self) -> u32 {
        self.request.limit.saturating_add(1)
    }

    pub fn finish(mut self, conn: &Connection) -> Result<SyncPage> {
        let limit = self.read_limit();
        let read = self
            .located(conn)?
            .iter()
            .map(|range| match range {
                Some(range) => messages_in_seq_range(conn, range, limit),
                None => Ok(Vec::new()),
            })
            .collect::<Result<_>>()?;
        let plan = self.request.plan(&self.changed, read);
        let conversations = conversations_seen_by(conn, &plan.conversation_ids, self.request.user)?;
        conn.execute_batch("COMMIT").map_err(db_error)?;
        Ok(plan.into_page(conversations))
    }
}

/// The states of `ids` as `viewer` sees them, in that order.
pub fn conversations_seen_by(
    conn: &Connection,
    ids: &[ConversationId],
    viewer: UserId,
) -> Result<Vec<Conversation>> {
    ids.iter()
        .map(|id| conversation(conn, *id, Some(viewer)))
        .collect()
}

pub fn messages_in_pos_range(
    conn: &Connection,
    id: ConversationId,
    after: Pos,
    up_to: Pos,
    max_seq: Option<Seq>,
    limit: u32,
) -> Result<Vec<Message>> {
    match seq_range(conn, id, after, up_to, max_seq)? {
        Some(range) => messages_in_seq_range(conn, &range, limit),
        None => Ok(Vec::new()),
    }
}

/// The seqs of a conversation's messages in a range of positions: `(after, last]`.
pub struct SeqRange {
    id: ConversationId,
    after: Seq,
    last: Seq,
}

impl SeqRange {
    fn len(&self) -> u64 {
        self.last - self.after
    }
}

/// Where the messages of `id` with positions in `(after, up_to]` and seqs at most `max_seq` are;
/// `None` when there are none.
fn seq_range(
    conn: &Connection,
    id: ConversationId,
    after: Pos,
    up_to: Pos,
    max_seq: Option<Seq>,
) -> Result<Option<SeqRange>> {
    let Some(mut positions) = SeqPositions::of(conn, id)? else {
        return Ok(None);
    };
    let first = positions.seq_at(after)?;
    let last = positions
        .seq_at(up_to)?
        .min(max_seq.unwrap_or(u64::MAX >> 1));
    Ok((last > first).then_some(SeqRange {
        id,
        after: first,
        last,
    }))
}

/// The first `limit` messages of `range`, in seq order.
fn messages_in_seq_range(conn: &Connection, range: &SeqRange, limit: u32) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3
         ORDER BY seq LIMIT ?4"
    );
    query_messages(
        conn,
        &sql,
        params![range.id, range.after, range.last, limit],
    )
}

/// Where a conversation's messages are in the change stream, looked up through
/// `messages_by_seq`.
///
/// Within a conversation seqs and positions grow together (an append takes both in one job) and
/// seqs have no gaps, so the newest message at or before a position is found by a binary search
/// over seqs: a few index lookups per conversation and sync page, instead of an index on
/// positions that every append would have to update (a log frame per message).
struct SeqPositions<'c> {
    pos_of_seq: rusqlite::CachedStatement<'c>,
    id: ConversationId,
    newest: Seq,
    newest_pos: Pos,
}

impl<'c> SeqPositions<'c> {
    /// None for a conversation without messages.
    fn of(conn: &'c Connection, id: ConversationId) -> Result<Option<SeqPositions<'c>>> {
        let newest: Option<Seq> = conn
            .prepare_cached("SELECT MAX(seq) FROM messages WHERE conversation_id = ?1")
            .and_then(|mut s| s.query_row(params![id], |r| r.get(0)))
            .map_err(db_error)?;
        let Some(newest) = newest else {
            return Ok(None);
        };
        let pos_of_seq = conn
            .prepare_cached("SELECT pos FROM messages WHERE conversation_id = ?1 AND seq = ?2")
            .map_err(db_error)?;
        let mut positions = SeqPositions {
            pos_of_seq,
            id,
            newest,
            newest_pos: 0,
        };
        positions.newest_pos = positions.pos_of(newest)?;
        Ok(Some(positions))
    }

    fn pos_of(&mut self, seq: Seq) -> Result<Pos> {
        let id = self.id;
        self.pos_of_seq
            .query_row(params![id, seq], |r| r.get(0))
            .optional()
            .map_err(db_error)?
            .ok_or_else(|| Error::internal(format!("conversation {id} has no seq {seq}")))
    }

    /// The seq of the newest message at or before `pos` (0: none).
    fn seq_at(&mut self, pos: Pos) -> Result<Seq> {
        // Most reads ask up to the head, or after a position past the newest message.
        if self.newest_pos <= pos {
            return Ok(self.newest);
        }
        // The answer is in [low, high]: seq `low` is at or before `pos` (0 always is), `high + 1`
        // is after it.
        let (mut low, mut high) = (0, self.newest.saturating_sub(1));
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if self.pos_of(middle)? <= pos {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(low)
    }
}
