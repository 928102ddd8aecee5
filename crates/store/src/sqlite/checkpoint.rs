//! Checkpoints off the commit path.
//!
//! In WAL mode every commit appends pages to the log. A checkpoint copies them back into the
//! database file and syncs both files, and only a log that has been checkpointed to its end can
//! start over from its beginning. SQLite's automatic checkpoint runs on the committing connection
//! every 1,000 pages, so the writer — and every send waiting on it — would stall for two fsyncs
//! several times a second under load: the p99 of a send.
//!
//! So a thread of its own runs PASSIVE checkpoints beside the writer, and the writer checkpoints
//! only rarely. A passive checkpoint beside a busy writer never quite reaches the end of the log
//! (frames keep arriving while it syncs), and a log that never restarts grows without bound; so
//! once the log passes `wal_frames_max` frames, the writer finishes the job between two
//! commit groups, and its next transaction starts the log over.
//!
//! What the writer's checkpoint costs is everything written since the thread's last checkpoint
//! *began*: one `pwrite` per frame copied, and two fsyncs whose time grows with the pages they
//! flush (on a virtual disk ~0.5 ms, plus 20–60 µs per scattered page). With the thread pausing
//! 100 ms between checkpoints, that was up to ~10,000 frames at 10,000 messages/s, a 7–15 ms
//! stall for every send behind it. So the writer first asks the thread for checkpoints at once,
//! each one's tail being what arrived while the one before copied and synced, and so shorter,
//! until the tail is short (`TAIL_FRAMES_MAX`) or `PASSES_MAX` passes have run; it finishes
//! right after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use natter_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

/// Log frames (pages) after which the checkpoint thread is woken.
const BACKGROUND_AT: u64 = 1_000;
/// Log frames after which, by default, the writer completes the checkpoint itself (256 MiB of
/// 1 KiB pages), right after the thread's next one. The writer's checkpoint stalls every send
/// for its two fsyncs (5–20 ms, the disk's flush, however few frames are left), so how often
/// it comes is what counts: against 64 MiB, 256 MiB took the recv p99 of `natter-bench direct`
/// from 1.6–1.8 to 1.1–1.4 ms at 5,000 messages/s and from 3.1–5.6 to 2.3–2.5 ms at 10,000/s,
/// with the same top rate (docs/benchmarks-history.md). Longer still would gain less and less (at
/// 5,000/s the stall already comes only every ~10 s) for a larger file on disk: the log file is
/// kept at twice this length (`wal_bytes_kept`).
pub(crate) const WRITER_FINISHES_AT: u64 = 262_144;
/// The writer finishes once the frames not yet checkpointed are at most this many: a few
/// hundred scattered pages to flush, a few milliseconds on a virtual disk.
const TAIL_FRAMES_MAX: u64 = 256;
/// … or after this many passes of the thread asked for at once, however long the tail: each pass
/// shortens it only while the thread copies faster than sends arrive.
const PASSES_MAX: u32 = 4;
/// Shortest pause between two background checkpoints: each one costs two fsyncs.
const BACKGROUND_PAUSE: Duration = Duration::from_millis(100);
/// An idle store still gets its log checkpointed, so that the next write can restart it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What the writer and the checkpoint thread share.
struct Shared {
    /// The log's length in frames after the writer's last commit.
    frames: AtomicU64,
    /// Checkpoints the thread has completed.
    completed: AtomicU64,
    /// Frames the thread's last completed checkpoint found copied, in the log of that time.
    backfilled: AtomicU64,
    /// The writer asks for a checkpoint now, without the pause.
    urgent: AtomicBool,
    /// The checkpoint thread's kernel id (0 until it runs), for `priority::hurry`.
    checkpointer_tid: AtomicI32,
    /// The writer lifted the thread out of the background class; it goes back after its pass.
    hurried: AtomicBool,
    /// Times the log started over (its length after a commit fell).
    restarts: AtomicU64,
}

/// The log's length after the last commit, and how often it started over: for the metrics page.
#[derive(Clone)]
pub(crate) struct WalGauge(Arc<Shared>);

impl WalGauge {
    pub(crate) fn frames(&self) -> u64 {
        self.0.frames.load(Ordering::Relaxed)
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }
}

/// The writer's side: how long the log is, and the checkpoint thread's doorbell.
pub(crate) struct WalWatch {
    shared: Arc<Shared>,
    /// The checkpoint thread, unparked when the writer asks for a checkpoint at once.
    checkpointer: Thread,
    /// Log length past which the writer finishes a checkpoint.
    finishes_at: u64,
    /// Log length when the writer last checkpointed (0: not since the log restarted).
    writer_checkpointed_at: u64,
    /// The thread's completed count when the writer last asked it for a checkpoint at once.
    asked_at: Option<u64>,
    /// Checkpoints asked for at once since the log passed `finishes_at`.
    passes_asked: u32,
}

impl WalWatch {
    /// Watch the writer's log and start the checkpoint thread on its own connection.
    /// The thread stops when the writer's connection (which holds the doorbell) is dropped.
    pub(crate) fn start(
        writer: &mut Connection,
        checkpointer: Connection,
        finishes_at: u64,
    ) -> Result<WalWatch> {
        let shared = Arc::new(Shared {
            frames: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            backfilled: AtomicU64::new(0),
            urgent: AtomicBool::new(false),
            checkpointer_tid: AtomicI32::new(0),
            hurried: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        });
        let (doorbell, rings) = mpsc::sync_channel::<()>(1);
        let seen = shared.clone();
        // Installing a WAL hook replaces SQLite's automatic checkpoint on this connection.
        writer
            .wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                    let pages = u64::try_from(pages).unwrap_or(0);
                    if pages < seen.frames.swap(pages, Ordering::Relaxed) {
                        seen.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    if pages >= BACKGROUND_AT {
                        // A full doorbell means the thread is already on its way.
                        let _ = doorbell.try_send(());
                    }
                    Ok(())
                },
            ))
            .map_err(super::db_error)?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("natter-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, rings, thread_shared))
            .map_err(|e| Error::internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(WalWatch {
            shared,
            checkpointer: thread.thread().clone(),
            finishes_at: finishes_at.max(BACKGROUND_AT),
            writer_checkpointed_at: 0,
            asked_at: None,
            passes_asked: 0,
        })
    }

    /// Called after each commit: whether the writer should finish a checkpoint now, because
    /// the log has grown long (`finish`), so that the next transaction restarts it. Asks the
    /// thread for passes at once first, and says yes only once they have left a short tail.
    pub(crate) fn wants_finish(&mut self) -> bool {
        let frames = self.shared.frames.load(Ordering::Relaxed);
        if frames < self.writer_checkpointed_at {
            // The log restarted since the writer's last checkpoint.
            self.writer_checkpointed_at = 0;
        }
        // Once done, wait for the log to grow again before retrying: a reader holding an old
        // snapshot can keep the log from restarting for a while.
        if frames < self.finishes_at || frames < self.writer_checkpointed_at + BACKGROUND_AT {
            self.asked_at = None;
            return false;
        }
        let completed = self.shared.completed.load(Ordering::Acquire);
        // Past twice the length the writer finishes without waiting: the thread lags too far.
        if frames < 2 * self.finishes_at {
            match self.asked_at {
                None => {
                    self.passes_asked = 0;
                    self.ask_now(completed);
                    return false;
                }
                // The thread has not completed a checkpoint since: the tail is still long.
                Some(asked) if asked == completed => return false,
                Some(_) => {
                    let tail =
                        frames.saturating_sub(self.shared.backfilled.load(Ordering::Acquire));
                    if tail > TAIL_FRAMES_MAX && self.passes_asked < PASSES_MAX {
                        self.ask_now(completed);
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Ask the thread for a checkpoint at once, out of the background class.
    fn ask_now(&mut self, completed: u64) {
        self.asked_at = Some(completed);
        self.passes_asked += 1;
        self.hurry();
        self.shared.urgent.store(true, Ordering::Release);
        // The thread is either pausing (parked) or soon back at its doorbell, which every commit
        // of a log this long rings.
        self.checkpointer.unpark();
    }

    /// Lift the checkpoint thread out of the background class until its next pass ends, where
    /// the process may: the writer now waits for that pass, and a pass under way holds the
    /// checkpoint lock (the writer's own checkpoint would find it busy).
    fn hurry(&self) {
        let tid = self.shared.checkpointer_tid.load(Ordering::Acquire);
        // Flagged after the lift, so that the thread never drops back before it is lifted; a
        // pass that ends in between leaves it lifted until the next pass ends. The thread
        // lives as long as the writer's connection, so `tid` is never another thread's.
        if tid != 0 && super::priority::hurry(tid) {
            self.shared.hurried.store(true, Ordering::Release);
        }
    }

    /// The log's length and restarts, readable without the writer's lock.
    pub(crate) fn gauge(&self) -> WalGauge {
        WalGauge(self.shared.clone())
    }

    /// The writer's checkpoint, between two commit groups: milliseconds of copying and two
    /// fsyncs, so only ever on the writer thread.
    pub(crate) fn finish(&mut self, writer: &Connection) {
        let frames = self.shared.frames.load(Ordering::Relaxed);
        let started = Instant::now();
        match writer.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE) {
            Ok((log, done)) => tracing::debug!(
                log,
                done,
                tail = frames.saturating_sub(self.shared.backfilled.load(Ordering::Acquire)),
                passes = self.passes_asked,
                took = ?started.elapsed(),
                "the writer finished a checkpoint"
            ),
            Err(e) => log_failed(&e, "writer checkpoint"),
        }
        self.writer_checkpointed_at = frames;
        self.asked_at = None;
    }
}

fn run_checkpointer(conn: Connection, rings: mpsc::Receiver<()>, shared: Arc<Shared>) {
    super::priority::background();
    shared
        .checkpointer_tid
        .store(super::priority::thread_id(), Ordering::Release);
    // The database file, to sync after the passes the writer asks for (`sync_database`). An
    // in-memory or temporary database has none, and needs none.
    let database = conn
        .path()
        .filter(|path| !path.is_empty())
        .and_then(|path| std::fs::File::open(path).ok());
    // Log length at the last checkpoint that reached its end: nothing to do until it changes.
    let mut clean_at: Option<u64> = None;
    loop {
        if !shared.urgent.load(Ordering::Acquire) {
            match rings.recv_timeout(IDLE_CHECK) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let urgent = shared.urgent.swap(false, Ordering::AcqRel);
        let now = shared.frames.load(Ordering::Relaxed);
        if !urgent && (now == 0 || clean_at == Some(now)) {
            continue;
        }
        let started = Instant::now();
        match conn.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE) {
            Ok((log, done)) => {
                tracing::trace!(log, done, took = ?started.elapsed(), "background checkpoint");
                clean_at = (log == done).then_some(now);
                shared
                    .backfilled
                    .store(u64::try_from(done).unwrap_or(0), Ordering::Release);
            }
            Err(e) => {
                log_failed(&e, "background checkpoint");
                clean_at = None;
            }
        }
        if urgent && let Some(database) = &database {
            sync_database(database);
        }
        shared.completed.fetch_add(1, Ordering::AcqRel);
        if shared.hurried.swap(false, Ordering::AcqRel) {
            super::priority::background();
        }
        pause(&shared);
    }
}

/// Sync the database file, for the writer's checkpoint to come. A passive checkpoint syncs it
/// only when it has copied the log to its very end, which beside a busy writer never happens:
/// every page the thread copied into the file since the log last restarted would wait for the
/// writer's checkpoint to flush it (thousands of scattered pages, 15–50 ms on a virtual disk
/// with every send held behind it), where the kernel had not written it back yet. Done after
/// the passes the writer asks for, off the commit path, that flush leaves the writer only the
/// pages of the last short tail. Syncing more often than SQLite would is never unsafe.
fn sync_database(database: &std::fs::File) {
    let started = Instant::now();
    match database.sync_data() {
        Ok(()) => {
            tracing::trace!(took = ?started.elapsed(), "the checkpoint thread synced the database")
        }
        Err(e) => tracing::warn!(error = %e, "syncing the database file"),
    }
}

/// Wait `BACKGROUND_PAUSE` before the next checkpoint, unless the writer asks for one at once.
/// Parked rather than waiting on the doorbell, which a busy writer rings at every commit.
fn pause(shared: &Shared) {
    let until = Instant::now() + BACKGROUND_PAUSE;
    while !shared.urgent.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::park_timeout(left);
    }
}

/// A passive checkpoint finds the other one (writer or thread) under way now and then: it tries
/// again later, nothing is wrong. Anything else is worth a warning.
fn log_failed(e: &rusqlite::Error, what: &str) {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        tracing::debug!(error = %e, "{what}: the other checkpoint is under way");
    } else {
        tracing::warn!(error = %e, "{what}");
    }
}
