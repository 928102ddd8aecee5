//! Storage engines behind `natter_core::Store`.
//!
//! `sqlite` is the embedded default: one writer thread that commits in groups (many sends, one
//! transaction) and a pool of readers that never block it. Every engine must pass the one
//! [`conformance`] suite.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod sqlite;

pub use sqlite::{Durability, SqliteConfig, SqliteStore};
