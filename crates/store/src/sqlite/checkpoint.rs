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
//! once the log passes `WRITER_FINISHES_AT` frames, the writer finishes the job between two
//! commit groups: by then the thread has copied nearly all of it, the writer copies the tail, and
//! its next transaction starts the log over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use natter_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

/// Log frames (pages) after which the checkpoint thread is woken.
const BACKGROUND_AT: u64 = 1_000;
/// Log frames after which the writer completes the checkpoint itself (64 MiB of 1 KiB pages).
/// Finishing costs the writer two fsyncs (10–25 ms on the benchmark machine, once every few
/// seconds at 10,000 messages/s), so it should be rare; a longer log costs only disk space and a
/// little more work per page lookup.
const WRITER_FINISHES_AT: u64 = 65_536;
/// Shortest pause between two background checkpoints: each one costs two fsyncs.
const BACKGROUND_PAUSE: Duration = Duration::from_millis(100);
/// An idle store still gets its log checkpointed, so that the next write can restart it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The writer's side: how long the log is, and the checkpoint thread's doorbell.
pub(crate) struct WalWatch {
    frames: Arc<AtomicU64>,
    /// Log length when the writer last checkpointed (0: not since the log restarted).
    writer_checkpointed_at: u64,
}

impl WalWatch {
    /// Watch the writer's log and start the checkpoint thread on its own connection.
    /// The thread stops when the writer's connection (which holds the doorbell) is dropped.
    pub(crate) fn start(writer: &mut Connection, checkpointer: Connection) -> Result<WalWatch> {
        let frames = Arc::new(AtomicU64::new(0));
        let (doorbell, rings) = mpsc::sync_channel::<()>(1);
        let seen = frames.clone();
        // Installing a WAL hook replaces SQLite's automatic checkpoint on this connection.
        writer
            .wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                    let pages = u64::try_from(pages).unwrap_or(0);
                    seen.store(pages, Ordering::Relaxed);
                    if pages >= BACKGROUND_AT {
                        // A full doorbell means the thread is already on its way.
                        let _ = doorbell.try_send(());
                    }
                    Ok(())
                },
            ))
            .map_err(super::db_error)?;
        let thread_frames = frames.clone();
        std::thread::Builder::new()
            .name("natter-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, rings, thread_frames))
            .map_err(|e| Error::internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(WalWatch {
            frames,
            writer_checkpointed_at: 0,
        })
    }

    /// Called by the writer between commit groups: finish a checkpoint when the log has grown
    /// long, so that the next transaction restarts it.
    pub(crate) fn after_commit(&mut self, writer: &Connection) {
        let frames = self.frames.load(Ordering::Relaxed);
        if frames < self.writer_checkpointed_at {
            // The log restarted since the writer's last checkpoint.
            self.writer_checkpointed_at = 0;
        }
        // Once done, wait for the log to grow again before retrying: a reader holding an old
        // snapshot can keep the log from restarting for a while.
        if frames < WRITER_FINISHES_AT || frames < self.writer_checkpointed_at + BACKGROUND_AT {
            return;
        }
        let started = Instant::now();
        match writer.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE) {
            Ok((log, done)) => {
                tracing::debug!(log, done, took = ?started.elapsed(), "the writer finished a checkpoint")
            }
            Err(e) => log_failed(&e, "writer checkpoint"),
        }
        self.writer_checkpointed_at = frames;
    }
}

fn run_checkpointer(conn: Connection, rings: mpsc::Receiver<()>, frames: Arc<AtomicU64>) {
    // Log length at the last checkpoint that reached its end: nothing to do until it changes.
    let mut clean_at: Option<u64> = None;
    loop {
        match rings.recv_timeout(IDLE_CHECK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = frames.load(Ordering::Relaxed);
        if now == 0 || clean_at == Some(now) {
            continue;
        }
        let started = Instant::now();
        match conn.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE) {
            Ok((log, done)) => {
                tracing::trace!(log, done, took = ?started.elapsed(), "background checkpoint");
                clean_at = (log == done).then_some(now);
            }
            Err(e) => {
                log_failed(&e, "background checkpoint");
                clean_at = None;
            }
        }
        std::thread::sleep(BACKGROUND_PAUSE);
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
