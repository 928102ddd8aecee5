//! Tests of the PostgreSQL engine beyond the conformance suite: two nodes on one database,
//! migrations racing, lost connections. Each test makes a database of its own on the server
//! named by `NATTER_TEST_POSTGRES_URL` and drops it at the end; a server that cannot be reached
//! fails the test (CI has one), it never skips.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_core::Store;
use natter_core::store::{AccountStore, CommitBatch, ConversationStore, MessageStore, NewMessage};
use natter_proto::{Content, ErrorCode, Pos, UserId};
use tokio_postgres::{Client, NoTls};

use super::{PostgresConfig, PostgresStore, SCHEMA_VERSION, describe, migrate, redact};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server the tests use: a URL to a database from which others can be created.
pub(crate) fn admin_url() -> String {
    std::env::var("NATTER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `url` pointing at database `name` instead.
pub(crate) fn with_dbname(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form: a later key wins.
        return format!("{url} dbname={name}");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    format!("{scheme}://{authority}/{name}{query}")
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL at {} (set NATTER_TEST_POSTGRES_URL): {}",
                redact(url),
                describe(&e)
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of this test's own, dropped (with whatever is still connected) when this is.
pub(crate) struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "natter_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&admin_url()).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop an old test database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        TestDb {
            url: with_dbname(&admin_url(), &name),
            name,
        }
    }

    /// A store configuration for tests: a small pool, short waits.
    pub fn config(&self) -> PostgresConfig {
        let mut config = PostgresConfig::new(&self.url);
        config.pool_size = 4;
        config.connect_timeout = Duration::from_secs(5);
        config.pool_wait_timeout = Duration::from_secs(10);
        config
    }

    /// Close every connection to this database but the caller's, and wait until they are gone.
    async fn terminate_connections(&self) {
        let admin = connect(&admin_url()).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate backends");
        for _ in 0..200 {
            let left: i64 = admin
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&self.name],
                )
                .await
                .and_then(|row| row.try_get(0))
                .expect("count backends");
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the backends of {} did not go away", self.name);
    }

    async fn allow_connections(&self, allow: bool) {
        connect(&admin_url())
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .await
            .expect("alter database");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs outside async: a thread with a runtime of its own does the dropping.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
                    .await
                    .map_err(|e| describe(&e))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client.batch_execute(&sql).await.map_err(|e| describe(&e))
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

fn text(s: &str) -> Content {
    Content::Text { text: s.into() }
}

fn new_message(conversation_id: u64, sender_id: UserId, client_msg_id: &str) -> NewMessage {
    NewMessage {
        conversation_id,
        sender_id,
        client_msg_id: client_msg_id.into(),
        content: text(client_msg_id),
        reply_to: None,
        sent_at_ms: 5,
    }
}

/// Retry `f` until it succeeds, for at most ~10 s; panics with the last error otherwise.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = natter_core::Result<T>>,
{
    let mut last = None;
    for _ in 0..100 {
        match f().await {
            Ok(value) => return value,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Internal, "{what}: {e}");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never succeeded again: {last:?}");
}

#[test]
fn urls_get_another_database_and_lose_their_password_in_logs() {
    assert_eq!(
        with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_dbname("postgresql://u:p@h/db?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_dbname("postgres://h:1", "x"), "postgres://h:1/x");
    assert_eq!(with_dbname("host=h user=u", "x"), "host=h user=u dbname=x");
    assert_eq!(
        redact("postgres://natter:s3cret@db:5432/natter"),
        "postgres://natter:***@db:5432/natter"
    );
    assert_eq!(redact("postgres://natter@db/n"), "postgres://natter@db/n");
    assert_eq!(
        redact("host=db password=s3cret user=n"),
        "host=db password=*** user=n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_servers_are_errors() {
    let error = PostgresStore::open(PostgresConfig::new("no url at all"))
        .await
        .err()
        .expect("a bad url is refused");
    assert!(error.message.contains("invalid PostgreSQL url"), "{error}");
    // Nothing listens on port 1.
    let unreachable = with_dbname(&admin_url(), "natter_nowhere").replace(":5432", ":1");
    assert!(
        PostgresStore::open(PostgresConfig::new(&unreachable))
            .await
            .is_err()
    );
    assert!(migrate(&unreachable).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let db = TestDb::create().await;
    let (a, b, c) = tokio::join!(
        PostgresStore::open(db.config()),
        PostgresStore::open(db.config()),
        migrate(&db.url),
    );
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    assert_eq!(c.expect("migrate"), SCHEMA_VERSION);
    assert_eq!(migrate(&db.url).await.unwrap(), SCHEMA_VERSION);
    let client = connect(&db.url).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>());
    // Both nodes work on the one schema.
    let alice = a.create_user("alice", "Alice", "h", 1).await.unwrap();
    assert_eq!(
        b.create_user("alice", "A", "h", 1).await.unwrap_err().code,
        ErrorCode::UsernameTaken
    );
    assert_eq!(
        b.user_by_id(alice.id).await.unwrap().unwrap().user,
        alice.clone()
    );
    // A database migrated by a newer natter is refused.
    client
        .execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .unwrap();
    assert_eq!(
        migrate(&db.url).await.unwrap_err().code,
        ErrorCode::Internal
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_database_keeps_its_messages_and_positions() {
    let db = TestDb::create().await;
    let (id, alice, pos) = {
        let store = PostgresStore::open(db.config()).await.unwrap();
        let alice = store.create_user("alice", "a", "h", 1).await.unwrap().id;
        let bob = store.create_user("bob", "b", "h", 1).await.unwrap().id;
        let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
        let ack = store.append(new_message(id, alice, "kept")).await.unwrap();
        (id, alice, ack.pos)
    };
    let store = PostgresStore::open(db.config()).await.unwrap();
    assert_eq!(store.head().await.unwrap(), pos);
    // The server-side time limits are in force on the store's connections.
    let conn = store.conn().await.unwrap();
    for setting in ["statement_timeout", "lock_timeout"] {
        let value: String = conn
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(value, "30s", "{setting}");
    }
    drop(conn);
    let ack = store.append(new_message(id, alice, "next")).await.unwrap();
    assert_eq!(ack.seq, 2);
    assert!(ack.pos > pos);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_does_not_undo_the_others_of_its_group() {
    let db = TestDb::create().await;
    let store = Arc::new(PostgresStore::open(db.config()).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        // Half of them ask for the same name: one wins, the others are refused.
        let name = if i % 2 == 0 {
            "same".to_string()
        } else {
            format!("user{i}")
        };
        tasks.push(tokio::spawn(async move {
            store.create_user(&name, "x", "h", 1).await
        }));
    }
    let mut created = 0;
    let mut taken = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) if e.code == ErrorCode::UsernameTaken => taken += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((created, taken), (21, 19));
    assert_eq!(store.list_users().await.unwrap().len(), 21);
}

/// Two nodes on one database: 200 sends split across them, plus resends of the same
/// `client_msg_id` on both. Seqs are exactly 1..=200, nothing is stored twice, and `head` on
/// either node never covers a message that is not yet readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_concurrently_in_order() {
    const SENDS: usize = 200;
    let db = TestDb::create().await;
    let mut config = db.config();
    // Small groups: more interleaving of the two nodes' commits.
    config.commit_group_max = 8;
    let a = Arc::new(PostgresStore::open(config.clone()).await.unwrap());
    let b = Arc::new(PostgresStore::open(config).await.unwrap());
    let nodes: [Arc<PostgresStore>; 2] = [a.clone(), b.clone()];

    // Each node's listener sees its commits in increasing position order.
    let heard: [Arc<Mutex<Vec<Pos>>>; 2] = Default::default();
    for (node, heard) in nodes.iter().zip(&heard) {
        let sink = heard.clone();
        node.set_commit_listener(Arc::new(move |batch: CommitBatch| {
            let mut sink = sink.lock().unwrap();
            sink.extend(batch.events.iter().filter_map(|e| e.pos()));
        }));
    }

    let alice = a.create_user("alice", "a", "h", 1).await.unwrap().id;
    let bob = b.create_user("bob", "b", "h", 1).await.unwrap().id;
    let (id, created) = b.create_direct(alice, bob, 1).await.unwrap();
    assert!(created);
    assert_eq!(a.create_direct(bob, alice, 1).await.unwrap(), (id, false));

    // A checker reads `head` on one node and the messages up to it on the other, all along.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (nodes, done) = (nodes.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples: Vec<(Pos, Vec<Pos>)> = Vec::new();
            let mut turn = 0;
            while !done.load(Ordering::Acquire) {
                let head = nodes[turn % 2].head().await.unwrap();
                let seen = crate::conformance::pos_range(
                    &*nodes[(turn + 1) % 2],
                    id,
                    0,
                    head,
                    None,
                    10_000,
                )
                .await;
                let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
                assert_eq!(
                    seqs,
                    (1..=seen.len() as u64).collect::<Vec<_>>(),
                    "a gap below head {head}"
                );
                samples.push((head, seen.iter().map(|m| m.pos).collect()));
                turn += 1;
            }
            samples
        })
    };

    let mut tasks = Vec::new();
    for i in 0..SENDS {
        let sender = if i % 3 == 0 { alice } else { bob };
        let client_msg_id = format!("m{i}");
        let mut on = vec![i % 2];
        if i % 4 == 0 {
            // The same message resent on the other node, at the same time.
            on.push((i + 1) % 2);
        }
        for node in on {
            let (store, client_msg_id) = (nodes[node].clone(), client_msg_id.clone());
            tasks.push(tokio::spawn(async move {
                let ack = store
                    .append(new_message(id, sender, &client_msg_id))
                    .await
                    .unwrap();
                (client_msg_id, ack)
            }));
        }
    }
    let mut acks: BTreeMap<String, Vec<natter_proto::Ack>> = BTreeMap::new();
    for task in tasks {
        let (client_msg_id, ack) = task.await.unwrap();
        acks.entry(client_msg_id).or_default().push(ack);
    }
    done.store(true, Ordering::Release);
    let samples = checker.await.unwrap();

    // Every resend got the first one's seq and pos, and exactly one of them stored it.
    assert_eq!(acks.len(), SENDS);
    let mut seqs = Vec::new();
    for (client_msg_id, acks) in &acks {
        let first = acks.iter().find(|a| !a.duplicate).expect("one stored");
        assert_eq!(
            acks.iter().filter(|a| !a.duplicate).count(),
            1,
            "{client_msg_id} stored twice"
        );
        for ack in acks {
            assert_eq!(
                (ack.seq, ack.pos),
                (first.seq, first.pos),
                "{client_msg_id}"
            );
        }
        seqs.push(first.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=SENDS as u64).collect::<Vec<_>>());

    let page = a.history(id, None, None, None, 1000).await.unwrap();
    assert_eq!(page.messages.len(), SENDS);
    let stored_ids: BTreeSet<_> = page
        .messages
        .iter()
        .map(|m| m.client_msg_id.clone().unwrap())
        .collect();
    assert_eq!(stored_ids.len(), SENDS);
    let positions: Vec<Pos> = page.messages.iter().map(|m| m.pos).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "pos follows seq");

    // What was readable up to a head is exactly what is stored up to it: nothing at or below a
    // head committed later.
    assert!(samples.len() > 1, "the checker ran");
    for (head, seen) in &samples {
        let expected: Vec<Pos> = positions.iter().copied().filter(|p| p <= head).collect();
        assert_eq!(&expected, seen, "head {head}");
    }
    let (head_a, head_b) = (a.head().await.unwrap(), b.head().await.unwrap());
    assert_eq!(head_a, head_b);
    assert!(head_a >= *positions.last().unwrap());

    // Each node heard its own commits in order, and the two together heard every change once.
    let mut all = Vec::new();
    for heard in &heard {
        let heard = heard.lock().unwrap().clone();
        assert!(heard.windows(2).all(|w| w[0] < w[1]), "{heard:?}");
        all.extend(heard);
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a position handed out twice");
    assert_eq!(
        all.len(),
        SENDS + 1,
        "the direct conversation and the messages"
    );
}

/// Killed connections: the next operations may fail with `internal`, then work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_connections_are_killed() {
    let db = TestDb::create().await;
    let store = PostgresStore::open(db.config()).await.unwrap();
    let alice = store.create_user("alice", "a", "h", 1).await.unwrap().id;
    let bob = store.create_user("bob", "b", "h", 1).await.unwrap().id;
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    store.append(new_message(id, alice, "m1")).await.unwrap();

    db.terminate_connections().await;
    let ack = eventually("append", || store.append(new_message(id, alice, "m2"))).await;
    assert_eq!(ack.seq, 2);
    let page = eventually("history", || store.history(id, None, None, None, 10)).await;
    assert_eq!(page.messages.len(), 2);

    // The database refuses connections for a while: everything fails with `internal`, nothing
    // hangs, and everything works again once it is back.
    db.allow_connections(false).await;
    db.terminate_connections().await;
    for attempt in 0..3 {
        let sent = tokio::time::timeout(
            Duration::from_secs(20),
            store.append(new_message(id, alice, "m3")),
        )
        .await
        .expect("a write during the outage returns");
        assert_eq!(
            sent.unwrap_err().code,
            ErrorCode::Internal,
            "attempt {attempt}"
        );
        let read = tokio::time::timeout(Duration::from_secs(20), store.head())
            .await
            .expect("a read during the outage returns");
        assert_eq!(read.unwrap_err().code, ErrorCode::Internal);
    }
    db.allow_connections(true).await;
    let ack = eventually("append after the outage", || {
        store.append(new_message(id, alice, "m3"))
    })
    .await;
    assert_eq!((ack.seq, ack.duplicate), (3, false));
    let head = eventually("head after the outage", || store.head()).await;
    assert_eq!(head, ack.pos);
    assert_eq!(
        store.conversation(id, bob).await.unwrap().unread_count,
        Some(3)
    );
}
