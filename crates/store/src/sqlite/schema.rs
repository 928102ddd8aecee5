//! The SQLite schema and its migrations, applied in order at open.

use rusqlite::Connection;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('pos', 0);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    token_hash      BLOB NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    revoked         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_user ON devices (user_id);

-- last_pos = max(message_pos, state_pos): the newest change, what sync looks for.
-- (Migration 3 drops last_seq, message_pos, last_pos and last_activity_at_ms.)
CREATE TABLE conversations (
    id                  INTEGER PRIMARY KEY,
    kind                TEXT NOT NULL,
    title               TEXT,
    direct_key          TEXT UNIQUE,
    created_at_ms       INTEGER NOT NULL,
    last_activity_at_ms INTEGER NOT NULL,
    last_seq            INTEGER NOT NULL DEFAULT 0,
    message_pos         INTEGER NOT NULL DEFAULT 0,
    state_pos           INTEGER NOT NULL DEFAULT 0,
    last_pos            INTEGER NOT NULL DEFAULT 0
);

-- A row stays when a member leaves (left_seq, left_pos set): they may read what they saw.
CREATE TABLE members (
    conversation_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    role            TEXT NOT NULL,
    delivered_seq   INTEGER NOT NULL DEFAULT 0,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    left_seq        INTEGER,
    left_pos        INTEGER,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, conversation_id);

-- A message is stored once, never once per recipient. Its pos is the rowid.
CREATE TABLE messages (
    pos             INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    sender_id       INTEGER NOT NULL,
    client_msg_id   TEXT,
    content         TEXT NOT NULL,
    reply_to        INTEGER,
    sent_at_ms      INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
CREATE INDEX messages_by_pos ON messages (conversation_id);
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
"#,
    // Within a conversation positions grow with seqs: a position range is found as a seq range
    // through `messages_by_seq` (`reads::SeqPositions`), and an index on positions that every
    // append updated goes.
    "DROP INDEX messages_by_pos;",
    // A conversation's last seq, message position and activity time are its newest message's,
    // read from the seq index (`reads::newest_message`), so that an append does not rewrite the
    // conversation's row: one page fewer in the log per message. `state_pos` stays.
    r#"
ALTER TABLE conversations DROP COLUMN last_seq;
ALTER TABLE conversations DROP COLUMN message_pos;
ALTER TABLE conversations DROP COLUMN last_pos;
ALTER TABLE conversations DROP COLUMN last_activity_at_ms;
"#,
    crate::DEDUPE_INDEX_LEADS_WITH_THE_ID,
];

/// Bring a database to the newest schema version.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database brought to schema `version` by the migrations before it, as an
    /// older build left it.
    fn database_at(version: usize) -> Connection {
        // Whichever test touches SQLite first installs the page cache layer, as the store does.
        crate::sqlite::pcache::install();
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    /// A database written before migration 3 keeps what its conversations' rows said: the last
    /// seq, position and activity time now come from the newest message.
    #[test]
    fn a_conversation_written_before_migration_3_reads_the_same_after_it() {
        let mut conn = database_at(2);
        conn.execute_batch(
            r#"
INSERT INTO users (id, username, display_name, password_hash, created_at_ms)
    VALUES (1, 'ada', 'Ada', 'x', 10), (2, 'bob', 'Bob', 'x', 10);
INSERT INTO conversations (id, kind, created_at_ms, last_activity_at_ms, last_seq, message_pos,
                           state_pos, last_pos)
    VALUES (7, 'direct', 100, 300, 2, 5, 9, 9), (8, 'direct', 150, 150, 0, 0, 4, 4);
INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq)
    VALUES (7, 1, 'member', 2, 2), (7, 2, 'member', 1, 1), (8, 1, 'member', 0, 0);
INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, sent_at_ms)
    VALUES (3, 7, 1, 1, 'a', '{"type":"text","text":"hi"}', 200),
           (5, 7, 2, 1, 'b', '{"type":"text","text":"there"}', 300);
"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());

        let with_messages = super::super::reads::conversation(&conn, 7, Some(2)).unwrap();
        assert_eq!(
            (
                with_messages.last_seq,
                with_messages.last_pos,
                with_messages.last_activity_at_ms
            ),
            (2, 9, 300)
        );
        assert_eq!(with_messages.unread_count, Some(1));
        assert_eq!(with_messages.last_message.map(|m| m.pos), Some(5));
        let empty = super::super::reads::conversation(&conn, 8, Some(1)).unwrap();
        assert_eq!(
            (empty.last_seq, empty.last_pos, empty.last_activity_at_ms),
            (0, 4, 150)
        );
        // Sync finds a conversation by its newest message as by its state.
        let changed = super::super::reads::changed_since(&conn, 1, 4).unwrap();
        let ids: Vec<_> = changed.iter().map(|c| (c.id, c.message_pos)).collect();
        assert_eq!(ids, vec![(7, 5)]);
    }

    /// The dedupe index leads with the id (migration 5), a database written before keeps every
    /// message and still refuses a second message under a sender's id, and the dedupe lookup is
    /// one search of that index.
    #[test]
    fn the_dedupe_index_leads_with_the_id_and_keeps_refusing_duplicates() {
        let mut conn = database_at(4);
        conn.execute_batch(
            r#"
INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, sent_at_ms)
    VALUES (3, 7, 1, 1, '019af4c2d1e07c3f9a0b5e21d8f64a1c', '{"type":"text","text":"hi"}', 200),
           (4, 7, 2, 2, '019af4c2d1e07c3f9a0b5e21d8f64a1c', '{"type":"text","text":"hi"}', 200),
           (5, 7, 3, 1, NULL, '{"type":"system"}', 300),
           (6, 7, 4, 1, NULL, '{"type":"system"}', 300);
"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();

        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_info('messages_by_client_id') ORDER BY seqno")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(columns, ["client_msg_id", "sender_id"]);
        let count: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 4);
        // The same id from another sender, and messages without an id, are not duplicates;
        // the same id from the same sender is.
        conn.execute(
            "INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, sent_at_ms)
             VALUES (8, 7, 5, 3, '019af4c2d1e07c3f9a0b5e21d8f64a1c', '{}', 400)",
            [],
        )
        .unwrap();
        let again = conn.execute(
            "INSERT INTO messages (pos, conversation_id, seq, sender_id, client_msg_id, content, sent_at_ms)
             VALUES (9, 7, 6, 1, '019af4c2d1e07c3f9a0b5e21d8f64a1c', '{}', 400)",
            [],
        );
        assert!(super::super::writes::is_unique_violation(
            &again.unwrap_err()
        ));

        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::super::writes::SENT_BEFORE_SQL
            ))
            .unwrap()
            .query_map(rusqlite::params![1, "x"], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH messages USING INDEX messages_by_client_id (client_msg_id=? AND sender_id=?)"]
        );
    }
}
