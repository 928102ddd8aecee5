//! Storage engines behind `natter_core::Store`.
//!
//! `sqlite` is the embedded default: one writer thread that commits in groups (many sends, one
//! transaction) and a pool of readers that never block it. `postgres` (feature `postgres`, on by
//! default) is the cluster engine: several nodes share one database, each with one writer task
//! that commits in groups under a cluster-wide lock. Every engine must pass the one
//! [`conformance`] suite.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::{Durability, SqliteConfig, SqliteStore};

/// The migration, the same in both engines (SQLite's 5th, PostgreSQL's 2nd), after which the
/// dedupe index leads with the id, not the sender. Ids that grow with time (the SDKs',
/// protocol.md §9.3) then all go to the index's last pages, a few per commit group whoever sends
/// them, where leading with the sender gave every sender a page of its own that each of their
/// messages dirtied: 1.9 pages written per message (docs/benchmarks.md). The dedupe lookup is
/// the same equality on both columns.
const DEDUPE_INDEX_LEADS_WITH_THE_ID: &str = "
DROP INDEX messages_by_client_id;
CREATE UNIQUE INDEX messages_by_client_id ON messages (client_msg_id, sender_id)
    WHERE client_msg_id IS NOT NULL;
";

/// `Store::refused_among`'s answer from the devices an engine found allowed (not revoked, their
/// user not disabled): the others, in the order asked.
fn refused_of(devices: &[u64], allowed: &std::collections::HashSet<u64>) -> Vec<u64> {
    devices
        .iter()
        .copied()
        .filter(|d| !allowed.contains(d))
        .collect()
}
