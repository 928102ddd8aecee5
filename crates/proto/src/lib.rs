//! The wire types of Natter's protocol: every frame a client sends or receives, and the data they carry.
//!
//! These types are the contract of `docs/protocol.md`; this crate knows nothing of sockets or storage.
//! JSON is the encoding: one frame per WebSocket text message.

mod frames;
mod rest;
mod types;

pub use frames::*;
pub use rest::*;
pub use types::*;

/// The protocol version announced in the `hello` frame; bumped on an incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol that selects JSON frames (also the default when none is asked for).
pub const SUBPROTOCOL_JSON: &str = "natter.v1.json";
