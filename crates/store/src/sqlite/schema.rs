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
