//! A thin layer over SQLite's own file access (the "unix" VFS) that writes the write-ahead log in
//! one system call per commit instead of two per page.
//!
//! SQLite appends a commit to the log frame by frame, each frame as two `pwrite`s (its 24-byte
//! header, then the page). A message dirties about seven 1 KiB pages, so the writer made some
//! fifteen system calls per message, whose fixed cost (not the bytes) was about a tenth of the
//! writer's time under load (52 → 46 µs of writer CPU per message at 10,000 messages/s). This layer gathers a transaction's consecutive log writes in memory
//! and writes them out at once when the commit frame is complete, so that the commit's last
//! `xWrite` reports any failure exactly where SQLite expects it, before the commit is published
//! to readers. Anything else that touches the log file (a read, a sync, a truncate, its size, a
//! file control, a non-consecutive write, closing it) writes out what is pending first, as does
//! the wal-index barrier SQLite crosses when it publishes a commit — a second line of defence,
//! should a commit frame ever go unrecognized. Files other than the log pass straight through.
//!
//! Durability is unchanged: when a commit returns, its frames are in the operating system's
//! hands, as with the unix VFS (the `crash` durability), and `xSync` (the `power` durability, and
//! every checkpoint) writes out before it syncs.

use std::cell::Cell;
use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the store's files with.
pub(crate) const NAME: &CStr = c"natter";

/// Size of a WAL frame header; a header whose bytes 4..8 are not zero starts a commit frame.
const FRAME_HEADER: usize = 24;
/// Pending log bytes past which they are written out even within a transaction.
const PENDING_MAX: usize = 1 << 20;
/// Bytes per write call to the base VFS.
const WRITE_MAX: usize = 64 * 1024;

/// Register the VFS once per process; the result of the first attempt is kept.
pub(crate) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // First: looking up the default VFS initializes SQLite, after which its page cache
            // is fixed.
            super::pcache::install();
            // SAFETY: sqlite3_vfs_find with NULL returns the default VFS, which lives for the
            // whole process; we copy it and register the copy, leaked so that it lives as long.
            unsafe {
                let base = ffi::sqlite3_vfs_find(ptr::null());
                if base.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let inner_size = usize::try_from((*base).szOsFile)
                    .map_err(|_| "the default VFS has a negative file size".to_string())?;
                let size = c_int::try_from(INNER_OFFSET + inner_size)
                    .map_err(|_| "the default VFS's files are too large".to_string())?;
                BASE_VFS.store(base, std::sync::atomic::Ordering::Release);
                let mut vfs = ptr::read(base);
                vfs.szOsFile = size;
                vfs.pNext = ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.xOpen = Some(open);
                let vfs = Box::leak(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register the SQLite VFS: code {rc}")),
                }
            }
        })
        .clone()
}

static BASE_VFS: std::sync::atomic::AtomicPtr<ffi::sqlite3_vfs> =
    std::sync::atomic::AtomicPtr::new(ptr::null_mut());

thread_local! {
    /// The log file with pending writes on this thread (SQLite calls a connection's files on
    /// the thread that uses the connection).
    static PENDING: Cell<*mut File> = const { Cell::new(ptr::null_mut()) };
}

/// Our file object: SQLite allocates `szOsFile` bytes, this struct followed by the base VFS's.
#[repr(C)]
struct File {
    /// Must come first: SQLite sees a `sqlite3_file` whose methods are `METHODS`.
    base: ffi::sqlite3_file,
    /// The base VFS's file object, in the same allocation at `INNER_OFFSET`.
    inner: *mut ffi::sqlite3_file,
    /// Whether this is a write-ahead log (whose writes are gathered).
    log: bool,
    /// Gathered writes: consecutive bytes starting at `pending_at`.
    pending: Vec<u8>,
    pending_at: i64,
    /// The last write was the header of a commit frame: its page completes the commit.
    commit_page_next: bool,
}

const INNER_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(16);

fn inner_methods(file: &File) -> &ffi::sqlite3_io_methods {
    // SAFETY: the base VFS set the inner file's methods when it opened it successfully (we only
    // install ours after that), and they are static.
    unsafe { &*(*file.inner).pMethods }
}

/// Write out what is pending; SQLITE_OK when nothing is.
fn flush(file: &mut File) -> c_int {
    if file.pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    PENDING.with(|p| {
        if std::ptr::eq(p.get(), file) {
            p.set(ptr::null_mut());
        }
    });
    let Some(write) = inner_methods(file).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = file.pending_at;
    // The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the length).
    for chunk in file.pending.chunks(WRITE_MAX) {
        let amount = chunk.len() as c_int; // at most WRITE_MAX
        // SAFETY: `inner` is an open file of the base VFS; the chunk outlives the call.
        rc = unsafe { write(file.inner, chunk.as_ptr().cast::<c_void>(), amount, offset) };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += i64::from(amount);
    }
    file.pending.clear();
    rc
}

/// Write out the pending log writes of this thread, if any (the wal-index barrier).
fn flush_thread_pending() {
    let file = PENDING.with(|p| p.replace(ptr::null_mut()));
    if !file.is_null() {
        // SAFETY: a file is registered here only while it has pending writes, and it leaves
        // before it closes (`close` flushes first).
        let rc = flush(unsafe { &mut *file });
        if rc != ffi::SQLITE_OK {
            tracing::error!(
                code = rc,
                "writing the SQLite log failed at the wal-index barrier"
            );
        }
    }
}

/// # Safety
/// `file` must point to a `File` this VFS opened.
unsafe fn file<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    // SAFETY: by the caller.
    unsafe { &mut *file.cast::<File>() }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    out: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = BASE_VFS.load(std::sync::atomic::Ordering::Acquire);
    // SAFETY: `out` has `szOsFile` bytes (our size), so the inner file fits at INNER_OFFSET;
    // `base` is the default VFS registered above.
    unsafe {
        (*out).pMethods = ptr::null();
        let inner = out
            .cast::<u8>()
            .add(INNER_OFFSET)
            .cast::<ffi::sqlite3_file>();
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        (*inner).pMethods = ptr::null();
        let rc = base_open(base, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite will not close what reports a failure with no methods (ours stay NULL), so
            // close the inner file here if the base VFS left it half open.
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            return rc;
        }
        if (*inner).pMethods.is_null() || (*(*inner).pMethods).iVersion < 3 {
            // Not a file we know how to wrap (never the case for the unix VFS).
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            return ffi::SQLITE_CANTOPEN;
        }
        ptr::write(
            out.cast::<File>(),
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                log: flags & ffi::SQLITE_OPEN_WAL != 0,
                pending: Vec::new(),
                pending_at: 0,
                commit_page_next: false,
            },
        );
    }
    ffi::SQLITE_OK
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Call the inner file's method `$m` with `$args`, or answer `$missing` when it has none.
macro_rules! inner {
    ($f:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {
        match inner_methods($f).$m {
            // SAFETY: the inner file is open; the arguments come from SQLite unchanged.
            Some(method) => unsafe { method($f.inner $(, $arg)*) },
            None => $missing,
        }
    };
}

/// `inner!` after writing out what is pending: the inner method must see every write before it.
macro_rules! after_flush {
    ($f:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {
        match flush($f) {
            ffi::SQLITE_OK => inner!($f, $m, $missing $(, $arg)*),
            rc => rc,
        }
    };
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes only files we opened.
    let f = unsafe { file(f) };
    let flushed = flush(f);
    let closed = inner!(f, xClose, ffi::SQLITE_OK);
    // SAFETY: the File was written in `open`; it is not used after close.
    unsafe { ptr::drop_in_place(&mut f.pending) };
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(f, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    if !f.log {
        return inner!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
    }
    let Ok(length) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), length) };
    let follows = i64::try_from(f.pending.len())
        .ok()
        .and_then(|n| f.pending_at.checked_add(n))
        == Some(offset);
    if !f.pending.is_empty() && !follows {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if f.pending.is_empty() {
        f.pending_at = offset;
        // Another log of this thread with writes pending (two connections written in turn on
        // one thread): write it out now, since only one is remembered.
        let me = f as *mut File;
        let other = PENDING.with(|p| p.replace(me));
        if !other.is_null() && other != me {
            // SAFETY: registered files are open (see `flush_thread_pending`).
            let rc = flush(unsafe { &mut *other });
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            PENDING.with(|p| p.set(me));
        }
    }
    f.pending.extend_from_slice(bytes);
    let completes_commit = f.commit_page_next;
    f.commit_page_next = length == FRAME_HEADER && bytes[4..8] != [0; 4];
    if completes_commit || f.pending.len() >= PENDING_MAX {
        return flush(f);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(f, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut ffi::sqlite3_int64) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(f, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(
        f,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(f, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(
        f,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        region,
        size,
        extend,
        out
    )
}

unsafe extern "C" fn shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    flush_thread_pending();
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    flush_thread_pending();
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(
    f: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    after_flush!(
        f,
        xFetch,
        {
            // SAFETY: SQLite passes a valid out pointer; no mapping means "read it instead".
            unsafe { *out = ptr::null_mut() };
            ffi::SQLITE_OK
        },
        offset,
        amount,
        out
    )
}

unsafe extern "C" fn unfetch(
    f: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened.
    let f = unsafe { file(f) };
    inner!(f, xUnfetch, ffi::SQLITE_OK, offset, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_transaction_is_read_back_by_another_connection() {
        register().unwrap();
        let path = std::env::temp_dir().join(format!("natter-vfs-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
        let writer = rusqlite::Connection::open_with_flags_and_vfs(&path, flags, NAME).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let reader = rusqlite::Connection::open_with_flags_and_vfs(&path, flags, NAME).unwrap();
        // Small commits, then ones larger than one write call of the base VFS (128 KiB).
        for k in 0..200_i64 {
            let size = if k < 100 { 3_000 } else { 300_000 };
            writer
                .execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    (k, "x".repeat(size)),
                )
                .unwrap();
            let (n, longest): (i64, usize) = reader
                .query_row("SELECT count(*), max(length(v)) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(n, k + 1, "the reader sees every commit at once");
            assert_eq!(longest, size);
        }
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop((reader, writer));
        let _ = std::fs::remove_file(&path);
    }
}
