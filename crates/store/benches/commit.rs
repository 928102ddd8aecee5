//! The SQLite store's commit path: appending messages one at a time (every append waits for its
//! own commit) and many at once (the writer thread commits them in groups).
//!
//!     cargo bench -p natter-store --bench commit
//!
//! The database lives in a fresh temporary directory, in the default durability (`crash`: WAL,
//! synchronous = NORMAL) unless NATTER_BENCH_DURABILITY=power.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use natter_core::Store;
use natter_core::store::{AccountStore, ConversationStore, MessageStore, NewMessage};
use natter_proto::Content;
use natter_store::{Durability, SqliteConfig, SqliteStore};

struct Fixture {
    store: Arc<SqliteStore>,
    conversation: u64,
    sender: u64,
    dir: std::path::PathBuf,
    next: AtomicU64,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(runtime: &tokio::runtime::Runtime, label: &str) -> Fixture {
    let dir =
        std::env::temp_dir().join(format!("natter-store-bench-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = SqliteConfig::new(dir.join("natter.db"));
    if std::env::var("NATTER_BENCH_DURABILITY").as_deref() == Ok("power") {
        config.durability = Durability::Power;
    }
    let store = Arc::new(SqliteStore::open(config).expect("open store"));
    let (conversation, sender) = runtime.block_on(async {
        let a = store
            .create_user("alice", "Alice", "hash", 1)
            .await
            .expect("user")
            .id;
        let b = store
            .create_user("bob", "Bob", "hash", 1)
            .await
            .expect("user")
            .id;
        let (id, _) = store.create_direct(a, b, 1).await.expect("conversation");
        (id, a)
    });
    store.set_commit_listener(Arc::new(|_| {}));
    Fixture {
        store,
        conversation,
        sender,
        dir,
        next: AtomicU64::new(0),
    }
}

fn message(f: &Fixture) -> NewMessage {
    let n = f.next.fetch_add(1, Ordering::Relaxed);
    NewMessage {
        conversation_id: f.conversation,
        sender_id: f.sender,
        client_msg_id: format!("m{n}"),
        content: Content::Text {
            text: format!("nb {n} {n} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        },
        reply_to: None,
        sent_at_ms: 1_763_900_000_000,
    }
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(5));

    // One at a time: each append waits for its own commit (a lone sender).
    let single = fixture(&runtime, "single");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    single.store.append(message(&single)).await.expect("append");
                }
                started.elapsed()
            })
        })
    });
    drop(single);

    // Many senders at once: the writer commits whatever is waiting as one group.
    for concurrency in [16u64, 256] {
        let fixture = Arc::new(fixture(&runtime, &format!("concurrent-{concurrency}")));
        group.throughput(Throughput::Elements(concurrency));
        group.bench_function(format!("concurrent/{concurrency}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = Vec::with_capacity(concurrency as usize);
                        for _ in 0..concurrency {
                            let f = fixture.clone();
                            tasks.push(tokio::spawn(async move {
                                f.store.append(message(&f)).await.expect("append");
                            }));
                        }
                        for t in tasks {
                            t.await.expect("task");
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
