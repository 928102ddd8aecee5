//! A thin layer over SQLite's own page cache that spares a commit a scan of the whole cache.
//!
//! At the end of every transaction SQLite drops the cached pages past the end of the database
//! (`xTruncate`). Its page cache remembers only the largest page number it has seen since the
//! last truncation, and scans every hash slot when that number is far past the end. When a
//! b-tree splits a page, it swaps page numbers among the new siblings through a temporary number
//! that no real page has — the locking page's, one past the first gigabyte (page 1,048,577 with
//! 1 KiB pages) — and the cache then remembers that number although no page keeps it: the commit
//! that follows scans all ~7,000 pages of the writer's cache, chasing a pointer per page (some
//! 100 µs, on the commit path, about one commit in forty under load: 2.2% of the node's CPU at
//! 30,000 messages/s on `natter-bench direct`, docs/benchmarks-history.md).
//!
//! This layer keeps its own bound: no page it holds has a number above `max_key`, except the
//! temporary one, whose presence it tracks. A truncation that cannot drop anything is skipped;
//! any other goes to SQLite's cache as before. Every way a page number enters the cache passes
//! through here (a fetch that may create, a renumbering), and the ways out (unpinning, eviction,
//! truncation) only ever remove numbers, so the bound holds. The layer is installed once per
//! process, before SQLite initializes; if SQLite was initialized first (a test that opened a
//! connection of its own), the default cache stays, which is correct, only slower.

use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The byte SQLite locks files at (`PENDING_BYTE`): the page that holds it is never used, and
/// its number is the temporary one a b-tree split lends a page.
const PENDING_BYTE: u32 = 0x4000_0000;

/// SQLite's own page cache methods, which this layer calls.
struct Inner(ffi::sqlite3_pcache_methods2);

// SAFETY: SQLite's methods table is immutable once read, and its `pArg` is only handed back to
// SQLite's own `xInit`/`xShutdown`.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();

/// One connection's cache: SQLite's, and the bound on the page numbers it holds. Used only under
/// its connection, one thread at a time, as SQLite uses its own.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// No page held has a larger number, but `lent_key`.
    max_key: c_uint,
    /// The temporary page number of a b-tree split (see the module's doc).
    lent_key: c_uint,
    /// Whether a page may hold `lent_key`.
    lent: bool,
}

impl Cache {
    fn saw(&mut self, key: c_uint) {
        if key == self.lent_key {
            #[cfg(test)]
            tests::LENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.lent = true;
        } else if key > self.max_key {
            self.max_key = key;
        }
    }

    /// Whether a truncation to `limit` (dropping every page numbered `limit` or more) may drop
    /// anything.
    fn may_drop(&self, limit: c_uint) -> bool {
        self.max_key >= limit || (self.lent && self.lent_key >= limit)
    }

    fn truncated(&mut self, limit: c_uint) {
        self.max_key = self.max_key.min(limit.saturating_sub(1));
        if self.lent_key >= limit {
            self.lent = false;
        }
    }
}

/// Install the layer, once per process, before SQLite initializes. Whether it is in place.
pub(crate) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut default = ffi::sqlite3_pcache_methods2 {
            iVersion: 0,
            pArg: std::ptr::null_mut(),
            xInit: None,
            xShutdown: None,
            xCreate: None,
            xCachesize: None,
            xPagecount: None,
            xFetch: None,
            xUnpin: None,
            xRekey: None,
            xTruncate: None,
            xDestroy: None,
            xShrink: None,
        };
        // SAFETY: GETPCACHE2 copies SQLite's methods into `default`; PCACHE2 copies ours, which
        // call SQLite's through `INNER`, set before. Both fail harmlessly (SQLITE_MISUSE) once
        // SQLite is initialized.
        unsafe {
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default) != ffi::SQLITE_OK
                || default.iVersion < 1
            {
                tracing::debug!("SQLite is initialized already: its page cache stays as it is");
                return false;
            }
            let methods = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: default.pArg,
                xInit: default.xInit,
                xShutdown: default.xShutdown,
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            if INNER.set(Inner(default)).is_err() {
                return false;
            }
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &methods) == ffi::SQLITE_OK
        }
    })
}

/// SQLite's methods; always there once ours are installed (`install` sets them first).
fn inner() -> Option<&'static ffi::sqlite3_pcache_methods2> {
    INNER.get().map(|inner| &inner.0)
}

/// # Safety
/// `p` is a cache `create` returned and `destroy` has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *(p as *mut Cache) }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = inner().and_then(|m| m.xCreate) else {
        return std::ptr::null_mut();
    };
    // SAFETY: SQLite's own xCreate, with SQLite's arguments.
    let inner_cache = unsafe { create(page_size, extra, purgeable) };
    if inner_cache.is_null() {
        return std::ptr::null_mut();
    }
    let lent_key = u32::try_from(page_size)
        .ok()
        .filter(|&size| size > 0)
        .map_or(c_uint::MAX, |size| PENDING_BYTE / size + 1);
    let cache = Box::new(Cache {
        inner: inner_cache,
        max_key: 0,
        lent_key,
        lent: false,
    });
    Box::into_raw(cache) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY (every method below): `p` is ours (`create`), and its `inner` is SQLite's cache.
    let cache = unsafe { cache(p) };
    if let Some(f) = inner().and_then(|m| m.xCachesize) {
        unsafe { f(cache.inner, pages) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    let cache = unsafe { cache(p) };
    inner()
        .and_then(|m| m.xPagecount)
        .map_or(0, |f| unsafe { f(cache.inner) })
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let cache = unsafe { cache(p) };
    let Some(f) = inner().and_then(|m| m.xFetch) else {
        return std::ptr::null_mut();
    };
    let page = unsafe { f(cache.inner, key, create) };
    // A fetch that may create is the one way a new number enters by fetching.
    if create != 0 && !page.is_null() {
        cache.saw(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    let cache = unsafe { cache(p) };
    if let Some(f) = inner().and_then(|m| m.xUnpin) {
        unsafe { f(cache.inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let cache = unsafe { cache(p) };
    if let Some(f) = inner().and_then(|m| m.xRekey) {
        unsafe { f(cache.inner, page, old, new) }
    }
    // A number is held by one page at most: the page that held the lent one holds `new` now.
    if old == cache.lent_key {
        cache.lent = false;
    }
    cache.saw(new);
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let cache = unsafe { cache(p) };
    if !cache.may_drop(limit) {
        return;
    }
    if let Some(f) = inner().and_then(|m| m.xTruncate) {
        unsafe { f(cache.inner, limit) }
    }
    cache.truncated(limit);
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from Box::into_raw in `create`, and SQLite destroys a cache once.
    let cache = unsafe { Box::from_raw(p as *mut Cache) };
    if let Some(f) = inner().and_then(|m| m.xDestroy) {
        unsafe { f(cache.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    let cache = unsafe { cache(p) };
    if let Some(f) = inner().and_then(|m| m.xShrink) {
        unsafe { f(cache.inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Pages lent the temporary number, in any cache of the process.
    pub(super) static LENT: AtomicU64 = AtomicU64::new(0);

    /// Splits that swap page numbers, transactions rolled back (which truncate what they grew)
    /// and a cache too small to hold the table: the database stays whole, and holds exactly
    /// what was committed.
    #[test]
    fn a_database_under_the_layer_stays_whole() {
        let dir = std::env::temp_dir().join(format!("natter-pcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = super::super::open_connection(&dir.join("db"), super::super::Durability::Crash)
            .unwrap();
        assert!(install(), "the layer is in place before SQLite initializes");
        conn.pragma_update(None, "cache_size", 64).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID; CREATE INDEX t_v ON t (v);",
        )
        .unwrap();
        let lent_before = LENT.load(Ordering::Relaxed);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut committed = 0;
        for round in 0..40 {
            conn.execute_batch("BEGIN").unwrap();
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                conn.execute(
                    "INSERT OR IGNORE INTO t VALUES (?1, ?2)",
                    rusqlite::params![
                        format!("{x:x}"),
                        vec![(x % 251) as u8; 40 + (x % 200) as usize]
                    ],
                )
                .unwrap();
            }
            if round % 3 == 2 {
                conn.execute_batch("ROLLBACK").unwrap();
            } else {
                conn.execute_batch("COMMIT").unwrap();
                committed += 100;
            }
        }
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, committed);
        assert!(
            LENT.load(Ordering::Relaxed) > lent_before,
            "no split lent a page the temporary number: the test did not test the layer"
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn cache() -> Cache {
        Cache {
            inner: std::ptr::null_mut(),
            max_key: 0,
            lent_key: PENDING_BYTE / 1024 + 1,
            lent: false,
        }
    }

    #[test]
    fn a_truncation_past_every_page_is_skipped() {
        let mut c = cache();
        assert!(!c.may_drop(1), "an empty cache has nothing to drop");
        c.saw(10);
        assert!(c.may_drop(10));
        assert!(!c.may_drop(11));
        // A split lends a page the locking page's number, then gives it another.
        c.saw(c.lent_key);
        assert!(c.may_drop(11), "the lent number may still be held");
        c.lent = false; // as `rekey` from the lent number does
        c.saw(12);
        assert!(!c.may_drop(13));
        assert!(c.may_drop(12));
    }

    #[test]
    fn a_truncation_lowers_the_bound() {
        let mut c = cache();
        c.saw(50);
        c.saw(c.lent_key);
        c.truncated(21);
        assert_eq!(c.max_key, 20);
        assert!(!c.lent);
        assert!(!c.may_drop(21));
        // Clearing the cache (a limit of 1) leaves nothing.
        c.truncated(1);
        assert!(!c.may_drop(1));
    }
}
