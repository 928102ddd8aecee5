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
