//! The domain of Natter: commands, events, authorization rules, and the [`Store`] and [`Broker`]
//! seams that the rest of the server plugs into.
//!
//! **Architecture invariant:** this crate knows nothing of sockets, HTTP, SQL or NATS. The gateway
//! turns frames into calls on [`Core`]; a [`Store`] commits; committed events leave through the
//! [`Broker`] in commit order.

pub mod auth;
pub mod broker;
mod core;
mod error;
pub mod event;
pub mod rules;
pub mod store;
mod sync;

pub use crate::core::{Core, CoreConfig, Observer, PresenceSource, Session};
pub use broker::{Broker, EventSink};
pub use error::{Error, Result};
pub use event::Event;
pub use store::{Store, StoreStats};
pub use sync::plan_sync_page;

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
