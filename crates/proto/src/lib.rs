//! The wire types of Natter's protocol: every frame a client sends or receives, and the data they carry.
//!
//! These types are the contract of `docs/protocol.md`; this crate knows nothing of sockets or storage.
//! Two encodings of the same frames: JSON (the default), one frame per WebSocket text message, and
//! Protocol Buffers (`schema/natter.proto`, module [`pb`]), one frame per binary message, selected
//! by the subprotocol [`SUBPROTOCOL_PROTO`] (see [`Encoding`]).

mod encoding;
mod frames;
pub mod pb;
mod rest;
mod types;

pub use encoding::*;
pub use frames::*;
pub use pb::ProtoError;
/// The protobuf runtime the [`pb`] types are built on (`prost::Message` encodes and decodes them).
pub use prost;
pub use rest::*;
pub use types::*;

/// The protocol version announced in the `hello` frame; bumped on an incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol that selects JSON frames (also the default when none is asked for).
pub const SUBPROTOCOL_JSON: &str = "natter.v1.json";
