//! The embedded SQLite store: WAL mode, one writer thread that commits in groups, a reader pool.
//!
//! Why a thread: SQLite takes one writer at a time, and a transaction per message would cap
//! throughput at the disk's sync rate. The writer takes every job that is waiting (up to
//! `commit_group_max`), runs each in a savepoint so that one failure does not undo the others,
//! commits once, and only then answers: an answer is a durable commit (D1). Checkpoints run on a
//! thread of their own (`checkpoint`). The answers go out before the committed events reach the
//! listener (the fan-out to sessions): a sender's ack has resolved before its own message event
//! is queued on its connection, which then writes the ack first.

/// An SQL expression: `$column` of the newest message of the conversation `$conversation` (an
/// SQL expression too), or 0 before its first message. It reads the last entry of the
/// conversation's seq index: a conversation's last seq and message position are not kept in its
/// row, so that an append does not rewrite it (schema.rs).
macro_rules! newest_message_column {
    ($column:literal, $conversation:literal) => {
        concat!(
            "COALESCE((SELECT ",
            $column,
            " FROM messages WHERE conversation_id = ",
            $conversation,
            " ORDER BY seq DESC LIMIT 1), 0)"
        )
    };
}

mod checkpoint;
mod pcache;
mod priority;
mod reads;
mod schema;
mod traits;
mod vfs;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError};
use std::time::Instant;

use natter_core::store::{CommitBatch, CommitListener};
use natter_core::{Error, Event, Result};
use natter_proto::Pos;
use rusqlite::{Connection, OpenFlags};

use checkpoint::WalWatch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use writes::Heads;

/// How hard a commit holds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of the process (`kill -9`): WAL with `synchronous = NORMAL`.
    #[default]
    Crash,
    /// Survives a power cut: WAL with `synchronous = FULL`, an fsync per commit group.
    Power,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "crash" => Some(Durability::Crash),
            "power" => Some(Durability::Power),
            _ => None,
        }
    }
}

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub durability: Durability,
    /// Most jobs in one commit group.
    pub commit_group_max: usize,
    /// Most jobs waiting for the writer; senders wait beyond it.
    pub write_queue_max: usize,
    pub readers: usize,
    /// Log frames (1 KiB pages) past which the writer restarts the write-ahead log, right after
    /// the checkpoint thread's next pass: its disk footprint, and how often the writer pauses
    /// for two fsyncs (see `checkpoint`).
    pub wal_frames_max: u64,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            durability: Durability::Crash,
            commit_group_max: 512,
            write_queue_max: 4096,
            readers: 4,
            wal_frames_max: checkpoint::WRITER_FINISHES_AT,
        }
    }
}

/// What a write job sees: the open transaction and the change stream's next position.
pub(crate) struct WriteCtx<'a> {
    pub conn: &'a Connection,
    /// What the writer remembers of the conversations it appends to (`writes::append`).
    heads: &'a mut Heads,
    next_pos: Pos,
    events: Vec<Event>,
    messages: usize,
}

impl WriteCtx<'_> {
    /// The position `take_pos` will take next.
    pub fn peek_pos(&self) -> Pos {
        self.next_pos + 1
    }

    /// Take the next position of the change stream.
    pub fn take_pos(&mut self) -> Pos {
        self.next_pos += 1;
        self.next_pos
    }

    pub fn emit(&mut self, event: Event) {
        if matches!(event, Event::Message(_)) {
            self.messages += 1;
        }
        self.events.push(event);
    }
}

/// A job runs inside the writer's transaction and returns how to answer once the commit is known.
type Finish = Box<dyn FnOnce(Option<&Error>) + Send>;
type Work = Box<dyn FnOnce(&mut WriteCtx) -> (Outcome, Finish) + Send>;

/// How a job ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Refused for a reason of its own (not a member, bad input, …).
    Refused,
    /// The database failed under it.
    Broken,
}

/// A job and how it is guarded.
struct Job {
    work: Work,
    /// Runs in a savepoint of its own, so that a failure halfway undoes only it. An unguarded
    /// job promises to refuse before it writes anything; if the database fails under it, the
    /// whole commit group is lost (each caller gets the error; nothing is acknowledged).
    guarded: bool,
}

/// What reaches the writer thread.
enum Task {
    Write(Job),
    /// A task committed in the writer's place and the log is due for the writer's checkpoint:
    /// milliseconds of copying and fsyncs, not for a runtime thread.
    Checkpoint,
}

/// The write connection and its log watch; whoever holds them commits.
struct Writer {
    conn: Connection,
    wal: WalWatch,
    /// Trusted only while `settled`: see `Heads`.
    heads: Heads,
    /// The last group committed; false from its first statement until its commit, so that a
    /// group that failed or panicked leaves `heads` to be forgotten by the next one.
    settled: bool,
    /// `PRAGMA data_version` at the last group: it changes when another connection commits.
    data_version: Option<i64>,
}

/// What the writer thread and the tasks that commit in its place share.
struct WritePath {
    writer: Mutex<Writer>,
    /// Tasks handed to the writer thread and not yet done. A task commits its own job only while
    /// this is zero: a job never overtakes one submitted before it (a connection's pipelined
    /// sends keep their order).
    queued: AtomicUsize,
    /// Position of the last commit.
    head: AtomicU64,
    listener: OnceLock<CommitListener>,
    /// Whether tasks may commit in the writer's place. Not when every commit waits for an fsync
    /// (`Durability::Power`): that would stall a runtime thread for milliseconds.
    inline: bool,
}

/// The SQLite implementation of `natter_core::Store`.
pub struct SqliteStore {
    jobs: tokio::sync::mpsc::Sender<Task>,
    path: Arc<WritePath>,
    readers: Arc<ReaderPool>,
    reader_permits: Arc<Semaphore>,
    /// The write-ahead log's length and restarts, for `Store::stats`.
    wal: checkpoint::WalGauge,
}

/// The read connections not lent out right now.
type ReaderPool = Mutex<Vec<Connection>>;

/// A read connection lent from the pool, with its permit. It goes back when this is dropped,
/// also when the closure that used it panicked, so that a panic costs one read, not one
/// connection of the pool for the rest of the process ("reader pool empty" once all were lost).
/// The permit is released only after that (fields drop after `drop`): a read whose caller gave up
/// holds its place until its closure ends, so no read is let in to find the pool empty.
pub(crate) struct Lent {
    conn: Option<Connection>,
    pool: Arc<ReaderPool>,
    _permit: OwnedSemaphorePermit,
}

impl Lent {
    fn take(pool: &Arc<ReaderPool>, permit: OwnedSemaphorePermit) -> Option<Lent> {
        let conn = pool.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(Lent {
            conn: Some(conn),
            pool: pool.clone(),
            _permit: permit,
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        // Set from `take` until `drop`.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // A closure that unwound inside a read transaction left it open: end it, so that the
        // next read does not see an old snapshot (or fail to begin its own).
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }
}

fn open_connection(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    vfs::register().map_err(|message| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(message),
        )
    })?;
    let conn = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        vfs::NAME,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Only takes effect on a new, empty database (before the switch to WAL).
    conn.pragma_update(None, "page_size", PAGE_BYTES)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Crash => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "cache_size", -8000)?;
    // Without the planner's stability guarantee, a statement whose plan could depend on a bound
    // value (a `LIMIT ?`) is parsed and planned again on every run, since the statement cache
    // clears bindings: a fifth of the CPU of a reconnect storm.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A database failure: the details go to the log, the client hears only that storage failed.
pub(crate) fn db_error(e: rusqlite::Error) -> Error {
    tracing::error!(error = %e, "sqlite");
    Error::internal("storage error")
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `config.path`.
    pub fn open(config: SqliteConfig) -> Result<SqliteStore> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut writer = open_connection(&config.path, config.durability).map_err(db_error)?;
        schema::migrate(&mut writer).map_err(db_error)?;
        let pos: Pos = writer
            .query_row(HEAD_SQL, [], |r| r.get(0))
            .map_err(db_error)?;
        let mut readers = Vec::new();
        for _ in 0..config.readers.max(1) {
            let conn = open_connection(&config.path, config.durability).map_err(db_error)?;
            conn.pragma_update(None, "query_only", true)
                .map_err(db_error)?;
            readers.push(conn);
        }
        // A tokio channel: waiting for room is async, and waiters get in in the order they came
        // (a connection's pipelined sends keep their order even when the queue is full).
        let (jobs, queue) = tokio::sync::mpsc::channel::<Task>(config.write_queue_max.max(1));
        let group_max = config.commit_group_max.max(1);
        // Once the log restarts, its file is cut back to this size.
        writer
            .pragma_update(
                None,
                "journal_size_limit",
                wal_bytes_kept(config.wal_frames_max),
            )
            .map_err(db_error)?;
        let checkpointer = open_connection(&config.path, config.durability).map_err(db_error)?;
        let wal = WalWatch::start(&mut writer, checkpointer, config.wal_frames_max)?;
        let wal_gauge = wal.gauge();
        let path = Arc::new(WritePath {
            writer: Mutex::new(Writer {
                conn: writer,
                wal,
                heads: Heads::default(),
                settled: false,
                data_version: None,
            }),
            queued: AtomicUsize::new(0),
            head: AtomicU64::new(pos),
            listener: OnceLock::new(),
            inline: config.durability == Durability::Crash,
        });
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("natter-sqlite-writer".into())
            .spawn(move || {
                priority::writer();
                run_writer(thread_path, queue, group_max)
            })
            .map_err(|e| Error::internal(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            jobs,
            path,
            reader_permits: Arc::new(Semaphore::new(readers.len())),
            readers: Arc::new(Mutex::new(readers)),
            wal: wal_gauge,
        })
    }

    /// Run `f` in the writer's next commit group, in a savepoint of its own; resolves after the
    /// commit.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(f, true).await
    }

    /// `write` without a savepoint, for a job that refuses only before it writes anything (an
    /// append: the membership and `reply_to` checks come first, and its insert, which fails
    /// alone on a duplicate, is its first write). Two statements fewer per message, and no page
    /// copied into the savepoint's journal.
    pub(crate) async fn write_unguarded<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(f, false).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
        guarded: bool,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let work: Work = Box::new(move |ctx| {
            let result = f(ctx);
            let outcome = match &result {
                Ok(_) => Outcome::Done,
                Err(e) if e.code == natter_proto::ErrorCode::Internal => Outcome::Broken,
                Err(_) => Outcome::Refused,
            };
            let finish: Finish = Box::new(move |commit_error| {
                let _ = reply.send(match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                });
            });
            (outcome, finish)
        });
        let job = Job { work, guarded };
        if let Some(job) = self.commit_here(job) {
            self.path.queued.fetch_add(1, Ordering::AcqRel);
            if self.jobs.send(Task::Write(job)).await.is_err() {
                self.path.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::internal("the writer has stopped"));
            }
        }
        answer
            .await
            .map_err(|_| Error::internal("the writer dropped a job"))?
    }

    /// Commit `job` on this thread, as a group of one, when the writer is idle and nothing is
    /// queued; else give it back for the queue.
    fn commit_here(&self, job: Job) -> Option<Job> {
        let path = &*self.path;
        if !path.inline || path.queued.load(Ordering::Acquire) != 0 {
            return Some(job);
        }
        let mut writer = match path.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::WouldBlock) => return Some(job),
            // A job that panicked here before left nothing behind (its transaction rolled back
            // as it unwound), as the writer thread assumes too: else every later job would take
            // the thread's road for the rest of the process.
            Err(TryLockError::Poisoned(poisoned)) => {
                path.writer.clear_poison();
                poisoned.into_inner()
            }
        };
        // Again under the lock: the thread may have taken jobs, not yet committed, since.
        if path.queued.load(Ordering::Acquire) != 0 {
            return Some(job);
        }
        let mut batch = vec![job];
        if writer.commit(&mut batch, path) && writer.wal.wants_finish() {
            path.queued.fetch_add(1, Ordering::AcqRel);
            // A full queue will reach the thread, which checks the log after every group.
            if self.jobs.try_send(Task::Checkpoint).is_err() {
                path.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
        None
    }

    /// Run `f` on a pooled read connection, off the async threads.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("reader pool closed"))?;
        let lent = Lent::take(&self.readers, permit)
            .ok_or_else(|| Error::internal("reader pool empty"))?;
        Self::read_with(lent, f).await
    }

    /// Run `f` on `lent`, off the async threads.
    pub(crate) async fn read_with<T: Send + 'static>(
        lent: Lent,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(move || f(lent.conn()))
            .await
            .map_err(|e| Error::internal(format!("reader task: {e}")))?
    }

    /// Run a point lookup (a token, a user, a membership, a user's conversation ids: a few
    /// pages) on this thread when a reader connection is free right now, else as `read`. A trip
    /// to a reader thread and back is two wake-ups, which cost more than such a lookup: on a
    /// 2-vCPU VM, switching threads was a fifth of the node's CPU in a storm of 19,000
    /// reconnects.
    pub(crate) async fn lookup<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if let Some(lent) = self.lend_now() {
            return f(lent.conn());
        }
        self.read(f).await
    }

    /// A reader connection for this thread, if one is free right now.
    pub(crate) fn lend_now(&self) -> Option<Lent> {
        let permit = self.reader_permits.clone().try_acquire_owned().ok()?;
        Lent::take(&self.readers, permit)
    }

    pub(crate) fn head_pos(&self) -> Pos {
        self.path.head.load(Ordering::Acquire)
    }
}

/// Page size of a new database. Every commit appends each page it dirtied to the log, and a
/// message dirties a few pages far apart (its conversation's index leaves, the dedupe index, the
/// member and conversation rows): with 1 KiB pages a message writes a quarter of the bytes it
/// writes with SQLite's default 4 KiB, in the log and again at the checkpoint.
const PAGE_BYTES: i64 = 1024;
/// The size the WAL file is cut back to when the log restarts: the longest it gets without a
/// reader holding it back (the writer finishes a checkpoint by twice `wal_frames_max`), so that
/// a restart in the steady state cuts nothing. Cutting it to the length it restarts at, when it
/// had just grown past that, took a millisecond inside the writer's checkpoint, and the log
/// allocated its blocks again on the way back up.
fn wal_bytes_kept(wal_frames_max: u64) -> i64 {
    let frame_bytes = PAGE_BYTES as u64 + 24;
    i64::try_from(wal_frames_max.saturating_mul(2 * frame_bytes)).unwrap_or(i64::MAX)
}

fn run_writer(
    path: Arc<WritePath>,
    mut queue: tokio::sync::mpsc::Receiver<Task>,
    group_max: usize,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(group_max);
    while let Some(first) = queue.blocking_recv() {
        let mut taken = 1;
        if let Task::Write(job) = first {
            batch.push(job);
        }
        while batch.len() < group_max {
            match queue.try_recv() {
                Ok(Task::Write(job)) => batch.push(job),
                Ok(Task::Checkpoint) => {}
                Err(_) => break,
            }
            taken += 1;
        }
        // A job that panicked on a task's thread left nothing behind: dropping its transaction
        // rolled it back.
        let mut writer = path.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let committed = batch.is_empty() || writer.commit(&mut batch, &path);
        if committed && writer.wal.wants_finish() {
            let writer = &mut *writer;
            writer.wal.finish(&writer.conn);
        }
        path.queued.fetch_sub(taken, Ordering::AcqRel);
    }
}

impl Writer {
    /// Commit `batch` as one group, answer its jobs, then hand the events to the listener: under
    /// the lock, so that the listener sees the groups in commit order. False if it failed.
    fn commit(&mut self, batch: &mut Vec<Job>, path: &WritePath) -> bool {
        let started = Instant::now();
        let committed_pos = path.head.load(Ordering::Acquire);
        let (finishes, outcome) = commit_group(self, batch, committed_pos);
        match outcome {
            Ok((pos, events, messages)) => {
                path.head.store(pos, Ordering::Release);
                for finish in finishes {
                    finish(None);
                }
                if let Some(listener) = path.listener.get() {
                    listener(CommitBatch {
                        events,
                        messages,
                        duration: started.elapsed(),
                    });
                }
                true
            }
            Err(error) => {
                for finish in finishes {
                    finish(Some(&error));
                }
                false
            }
        }
    }
}

type GroupOutcome = Result<(Pos, Vec<Event>, usize)>;

/// The newest committed position: the larger of `meta.pos` and the newest message's (the last
/// entry of the `messages` b-tree, whose key is the position). A commit group records its last
/// position in `meta` only when it was not a message's: rewriting that page on every commit was
/// one of the seven or so log frames a lone message costs. Messages are never deleted, so the
/// newest one stays.
const HEAD_SQL: &str = "SELECT MAX((SELECT value FROM meta WHERE key = 'pos'),
                                   COALESCE((SELECT MAX(pos) FROM messages), 0))";

/// Run a statement through the statement cache: the savepoints around every job would otherwise
/// be parsed again each time.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The one value of a one-row statement, through the statement cache.
fn cached_value<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
}

/// The writer's transaction. `BEGIN IMMEDIATE` and `COMMIT` go through the statement cache
/// (rusqlite's `Transaction` parses them on every group); dropped uncommitted, a panic
/// included, it rolls back.
struct Group<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Group<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Group<'c>> {
        run_cached(conn, "BEGIN IMMEDIATE")?;
        Ok(Group { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        run_cached(self.conn, "COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn commit_group(
    writer: &mut Writer,
    batch: &mut Vec<Job>,
    committed_pos: Pos,
) -> (Vec<Finish>, GroupOutcome) {
    let mut finishes = Vec::with_capacity(batch.len());
    let conn = &writer.conn;
    let tx = match Group::begin(conn) {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping a job drops its reply channel: its caller gets an error, nothing is lost
            // that was acknowledged.
            batch.clear();
            return (finishes, Err(db_error(e)));
        }
    };
    // Inside the write transaction, nobody else commits until it ends. Whether another process
    // (`natter user create` on the same data directory) has committed since the last group:
    // then the position is read again, and what `heads` remember is forgotten. Both statements
    // through the statement cache, as every statement of the writer: parsing and planning them
    // on every commit group was a tenth of the writer's time.
    let seen = (|| -> rusqlite::Result<(i64, Option<Pos>)> {
        let version = cached_value::<i64>(conn, "PRAGMA data_version")?;
        let head = if writer.data_version == Some(version) {
            None
        } else {
            Some(cached_value::<Pos>(conn, HEAD_SQL)?)
        };
        Ok((version, head))
    })();
    let (version, head) = match seen {
        Ok(seen) => seen,
        Err(e) => {
            batch.clear();
            return (finishes, Err(db_error(e)));
        }
    };
    writer.data_version = Some(version);
    if head.is_some() || !writer.settled {
        writer.heads.forget();
    }
    writer.settled = false;
    let committed_pos = head.map_or(committed_pos, |pos| pos.max(committed_pos));
    let mut ctx = WriteCtx {
        conn,
        heads: &mut writer.heads,
        next_pos: committed_pos,
        events: Vec::new(),
        messages: 0,
    };
    let mut broken: Option<Error> = None;
    for job in batch.drain(..) {
        let saved = (ctx.next_pos, ctx.events.len(), ctx.messages);
        if job.guarded {
            // Only an append keeps `heads` true; any other job may move a seq or a membership.
            ctx.heads.forget();
            if let Err(e) = run_cached(ctx.conn, "SAVEPOINT job") {
                tracing::error!(error = %e, "savepoint");
                drop(job);
                continue;
            }
        }
        let (outcome, finish) = (job.work)(&mut ctx);
        finishes.push(finish);
        if outcome != Outcome::Done {
            ctx.next_pos = saved.0;
            ctx.events.truncate(saved.1);
            ctx.messages = saved.2;
        }
        if !job.guarded {
            if outcome == Outcome::Broken {
                // It may have written half of itself, with no savepoint to undo it: give up
                // the group (dropping the jobs not run yet answers their callers).
                broken = Some(Error::internal("storage error"));
                break;
            }
            continue;
        }
        let closed = if outcome == Outcome::Done {
            run_cached(ctx.conn, "RELEASE job")
        } else {
            run_cached(ctx.conn, "ROLLBACK TO job")
                .and_then(|_| run_cached(ctx.conn, "RELEASE job"))
        };
        if let Err(e) = closed {
            tracing::error!(error = %e, "closing savepoint");
        }
    }
    if let Some(error) = broken {
        batch.clear();
        // Dropping the transaction rolls it back.
        return (finishes, Err(error));
    }
    let (pos, events, messages) = (ctx.next_pos, ctx.events, ctx.messages);
    // A group whose last position went to a message leaves `meta` alone (see `HEAD_SQL`).
    let last_message_pos = events.iter().rev().find_map(|event| match event {
        Event::Message(message) => Some(message.pos),
        _ => None,
    });
    let record_pos = if pos != committed_pos && last_message_pos != Some(pos) {
        conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'pos'")
            .and_then(|mut s| s.execute([pos]))
            .map(|_| ())
    } else {
        Ok(())
    };
    let outcome = record_pos
        .and_then(|_| tx.commit())
        .map(|_| (pos, events, messages))
        .map_err(db_error);
    writer.settled = outcome.is_ok();
    (finishes, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn store(name: &str, durability: Durability) -> (SqliteStore, PathBuf) {
        let path = std::env::temp_dir().join(format!("natter-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut config = SqliteConfig::new(&path);
        config.durability = durability;
        (SqliteStore::open(config).unwrap(), path)
    }

    /// A lookup runs on the calling thread while a reader is free, and waits for one, as a
    /// pooled read does, while every reader is busy; either way the connection returns to the
    /// pool.
    #[tokio::test]
    async fn a_lookup_runs_here_when_a_reader_is_free_and_waits_for_one_otherwise() {
        let (store, path) = store("lookup", Durability::Crash);
        let store = Arc::new(store);
        let here = std::thread::current().id();
        let ran_on = store
            .lookup(|_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, here);

        let readers = store.readers.lock().unwrap().len();
        let busy = store
            .reader_permits
            .acquire_many(readers as u32)
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .lookup(|conn| {
                        conn.query_row("SELECT 7", [], |r| r.get::<_, i64>(0))
                            .map_err(db_error)
                    })
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "ran without a free reader");
        drop(busy);
        assert_eq!(waiting.await.unwrap().unwrap(), 7);
        assert_eq!(store.readers.lock().unwrap().len(), readers);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// A read whose caller went away (a client that disconnected mid-sync drops the future)
    /// still holds its connection until its closure ends: its place in the pool must stay taken
    /// until then, or a read let in meanwhile finds the pool empty and fails.
    #[tokio::test]
    async fn a_read_given_up_by_its_caller_keeps_its_place_until_it_ends() {
        let (store, path) = store("abandoned-read", Durability::Crash);
        let store = Arc::new(store);
        let readers = store.readers.lock().unwrap().len();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            store.read(move |_| {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            }),
        )
        .await;
        assert!(abandoned.is_err(), "the blocked read should time out");
        has_started.recv().unwrap();
        let others: Vec<_> = (0..readers)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .read(|conn| {
                            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                                .map_err(db_error)
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        release.send(()).unwrap();
        for other in others {
            assert_eq!(other.await.unwrap().unwrap(), 1);
        }
        // Every permit back means every connection back (a permit goes after its connection).
        let all = store
            .reader_permits
            .acquire_many(readers as u32)
            .await
            .unwrap();
        assert_eq!(store.readers.lock().unwrap().len(), readers);
        drop(all);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_read_that_panics_gives_its_connection_back() {
        let (store, path) = store("panicking-read", Durability::Crash);
        let store = Arc::new(store);
        let readers = store.readers.lock().unwrap().len();
        for _ in 0..readers + 1 {
            let failed = store
                .read(|conn| -> Result<()> {
                    conn.execute_batch("BEGIN").map_err(db_error)?;
                    panic!("a bug in a read")
                })
                .await;
            assert!(failed.is_err());
            let failed = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .lookup(|_| -> Result<()> { panic!("a bug in a lookup") })
                        .await
                }
            })
            .await;
            assert!(failed.is_err());
        }
        assert_eq!(store.readers.lock().unwrap().len(), readers);
        // Each connection came back out of the transaction it was left in.
        for _ in 0..readers {
            let autocommit = store.read(|conn| Ok(conn.is_autocommit())).await.unwrap();
            assert!(autocommit);
        }
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_restarted_log_keeps_the_file_at_its_longest_length() {
        // 262,144 frames of 1,048 bytes, twice: what the log reaches before the writer finishes
        // a checkpoint whatever the thread has done.
        assert_eq!(wal_bytes_kept(checkpoint::WRITER_FINISHES_AT), 549_453_824);
        let (store, path) = store("wal-kept", Durability::Crash);
        let limit: i64 = store
            .write(|ctx| {
                ctx.conn
                    .query_row("PRAGMA journal_size_limit", [], |r| r.get(0))
                    .map_err(db_error)
            })
            .await
            .unwrap();
        assert_eq!(limit, wal_bytes_kept(checkpoint::WRITER_FINISHES_AT));
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// The name of the thread a write job ran on.
    async fn committed_on(store: &SqliteStore) -> Option<String> {
        store
            .write(|_| Ok(std::thread::current().name().map(String::from)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_to_an_idle_writer_commits_on_the_calling_thread() {
        let (store, path) = store("inline", Durability::Crash);
        let here = std::thread::current().name().map(String::from);
        assert_eq!(committed_on(&store).await, here);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn with_an_fsync_per_commit_every_write_goes_to_the_writer_thread() {
        let (store, path) = store("inline-power", Durability::Power);
        assert_eq!(
            committed_on(&store).await.as_deref(),
            Some("natter-sqlite-writer")
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// A job queued before this one, even one the writer has not started, keeps it from
    /// committing here: it would overtake it.
    #[tokio::test]
    async fn a_write_behind_queued_jobs_joins_the_queue() {
        let (store, path) = store("inline-queued", Durability::Crash);
        store.path.queued.fetch_add(1, Ordering::AcqRel);
        let on = committed_on(&store).await;
        store.path.queued.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(on.as_deref(), Some("natter-sqlite-writer"));
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_job_that_panicked_here_does_not_send_the_next_ones_to_the_thread() {
        let (store, path) = store("inline-panic", Durability::Crash);
        let store = Arc::new(store);
        let panicking = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(|ctx| -> Result<()> {
                        ctx.conn
                            .execute("UPDATE meta SET value = value + 1000 WHERE key = 'pos'", [])
                            .map_err(db_error)?;
                        panic!("a job that panics halfway")
                    })
                    .await
            })
        };
        assert!(panicking.await.is_err_and(|e| e.is_panic()));
        let here = std::thread::current().name().map(String::from);
        assert_eq!(committed_on(&store).await, here);
        // What the panicking job wrote was rolled back.
        let pos: i64 = store
            .read(|conn| {
                conn.query_row("SELECT value FROM meta WHERE key = 'pos'", [], |r| r.get(0))
                    .map_err(db_error)
            })
            .await
            .unwrap();
        assert!(pos < 1000, "the panicking job's write survived: {pos}");
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// Scheduling policies of this process's checkpoint threads (`/proc`, Linux).
    #[cfg(target_os = "linux")]
    fn checkpoint_thread_policies() -> Vec<i64> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                // Thread names are cut to 15 bytes.
                if name.trim_end() != "natter-sqlite-c" {
                    return None;
                }
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // Fields after the parenthesized name; the policy is the 41st field.
                let after_name = stat.get(stat.rfind(')')? + 2..)?;
                after_name.split(' ').nth(38)?.parse().ok()
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_checkpoint_thread_yields_the_cpu() {
        let (store, path) = store("checkpoint-idle", Durability::Crash);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let policies = checkpoint_thread_policies();
            if !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_IDLE as i64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "checkpoint threads' scheduling policies: {policies:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// Wait (at most 10 s) until the count of queued jobs satisfies `done`.
    async fn queued_until(store: &SqliteStore, done: impl Fn(usize) -> bool) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !done(store.path.queued.load(Ordering::Acquire)) {
            assert!(Instant::now() < deadline, "the queue never got there");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_write_while_another_commits_joins_the_queue() {
        let (store, path) = store("inline-busy", Durability::Crash);
        let store = Arc::new(store);
        let (held, holding) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let path_shared = store.path.clone();
        let holder = std::thread::spawn(move || {
            let _writer = path_shared.writer.lock().unwrap();
            held.send(()).unwrap();
            let _ = released.recv();
        });
        holding.recv().unwrap();
        let writing = {
            let store = store.clone();
            tokio::spawn(async move { committed_on(&store).await })
        };
        // The job is queued (the writer thread waits for the lock), not committed.
        queued_until(&store, |n| n > 0).await;
        release.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(
            writing.await.unwrap().as_deref(),
            Some("natter-sqlite-writer")
        );
        // Once the queue is empty, the next write commits here again.
        queued_until(&store, |n| n == 0).await;
        let here = std::thread::current().name().map(String::from);
        assert_eq!(committed_on(&store).await, here);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// A small sync page is read on the calling thread, so it never waits for a reader thread;
    /// a large one goes to a reader thread, and is whole once one is free.
    #[test]
    fn a_small_sync_page_is_read_here_and_a_large_one_on_a_reader_thread() {
        use natter_core::Store;
        use natter_core::store::SyncRequest;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let (store, path) = store("sync-here", Durability::Crash);
            let (_, alice) = a_direct_conversation(&store, 100).await;
            let head = store.head_pos();
            let page = |cursor| {
                store.sync_page(SyncRequest {
                    user: alice,
                    cursor,
                    head,
                    limit: 500,
                    bytes_max: 1 << 20,
                })
            };
            let everything = page(0).await.unwrap();
            assert_eq!(everything.messages.len(), 100);
            let last_three = everything.messages[96].pos;

            // The only blocking thread is taken until `free` is sent.
            let (free, taken) = mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || taken.recv());
            tokio::task::yield_now().await;
            let small = tokio::time::timeout(std::time::Duration::from_secs(5), page(last_three))
                .await
                .expect("a small page waited for a reader thread")
                .unwrap();
            assert_eq!(small.messages.len(), 3);
            assert_eq!(small.cursor, head);

            let mut large = Box::pin(page(0));
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(200), &mut large)
                    .await
                    .is_err(),
                "a page of 100 messages was read on the calling thread"
            );
            free.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            assert_eq!(large.await.unwrap(), everything);
            drop(store);
            let _ = std::fs::remove_file(&path);
        });
    }

    /// Two users and their direct conversation, with `messages` sent in it by the first.
    async fn a_direct_conversation(
        store: &SqliteStore,
        messages: u64,
    ) -> (natter_proto::ConversationId, natter_proto::UserId) {
        use natter_core::store::{AccountStore, ConversationStore, MessageStore};
        let alice = store
            .create_user("alice", "Alice", "h", 1)
            .await
            .unwrap()
            .id;
        let bob = store.create_user("bob", "Bob", "h", 1).await.unwrap().id;
        let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
        for i in 0..messages {
            store
                .append(message(id, alice, &format!("m{i}")))
                .await
                .unwrap();
        }
        (id, alice)
    }

    fn message(
        conversation_id: natter_proto::ConversationId,
        sender_id: natter_proto::UserId,
        client_msg_id: &str,
    ) -> natter_core::store::NewMessage {
        natter_core::store::NewMessage {
            conversation_id,
            sender_id,
            client_msg_id: client_msg_id.into(),
            content: natter_proto::Content::Text {
                text: client_msg_id.into(),
            },
            reply_to: None,
            sent_at_ms: 5,
        }
    }

    /// An append the writer counted in its `Heads` and then lost with its group (a job after it
    /// panicked) leaves no gap: the next send takes the seq the lost one had.
    #[tokio::test]
    async fn a_seq_counted_in_a_group_that_rolled_back_is_taken_again() {
        use natter_core::store::MessageStore;
        let (store, path) = store("heads-rollback", Durability::Crash);
        let store = Arc::new(store);
        let (id, alice) = a_direct_conversation(&store, 1).await;
        let lost = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_unguarded(move |ctx| -> Result<()> {
                        let ack = writes::append(ctx, message(id, alice, "lost"))?;
                        assert_eq!(ack.seq, 2);
                        panic!("a job that panics after an append")
                    })
                    .await
            })
        };
        assert!(lost.await.is_err_and(|e| e.is_panic()));
        let ack = store.append(message(id, alice, "next")).await.unwrap();
        assert_eq!(
            ack.seq, 2,
            "the seq of the rolled-back append is taken again"
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// A message another connection committed (another process on the same data directory) is
    /// seen by the next append, which takes the seq after it rather than the one the writer's
    /// `Heads` remembered.
    #[tokio::test]
    async fn an_append_after_another_connection_committed_takes_the_seq_after_its_message() {
        use natter_core::store::MessageStore;
        let (store, path) = store("heads-elsewhere", Durability::Crash);
        let (id, alice) = a_direct_conversation(&store, 2).await;
        let other = open_connection(&path, Durability::Crash).unwrap();
        other
            .execute(
                "INSERT INTO messages (pos, conversation_id, seq, sender_id, content, sent_at_ms)
                 VALUES ((SELECT MAX(pos) + 1 FROM messages), ?1, 3, ?2, '{}', 5)",
                rusqlite::params![id, alice],
            )
            .unwrap();
        let elsewhere_pos: u64 = other
            .query_row("SELECT MAX(pos) FROM messages", [], |r| r.get(0))
            .unwrap();
        drop(other);
        let ack = store.append(message(id, alice, "after")).await.unwrap();
        assert_eq!(ack.seq, 4);
        assert!(ack.pos > elsewhere_pos);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
