//! Brokers: how committed and ephemeral events reach the sessions hub of every node.
//!
//! `memory` is the single-node default. A cluster broker (NATS) lives beside it and passes the
//! same behaviour: what one node publishes reaches every sink, in publishing order.

pub mod memory;
pub mod nats;

pub use memory::InProcessBroker;
pub use nats::NatsBroker;
