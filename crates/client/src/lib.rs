//! The Natter client library: everything that talks to a Natter server.
//!
//! Three layers, each usable on its own:
//!
//! - [`RestClient`]: the REST API under `/v1/` (accounts, devices, conversations, history, sync)
//!   over plain HTTP.
//! - [`Connection`]: one WebSocket connection: the `hello`, commands correlated with their replies
//!   by request id, and a bounded stream of pushed events. No reconnects, no dedupe.
//! - [`Client`]: what applications use. It stays connected across failures (exponential backoff
//!   with full jitter, rotating through several server addresses), syncs after every connect,
//!   delivers each message exactly once and in `seq` order per conversation (filling gaps from
//!   history), and retries sends with the same `client_msg_id` until they are acknowledged. Its
//!   [`ClientState`] can be saved and restored to resume where it stopped.
//!
//! The [`cli`] module holds the `natter` command's `login`, `send` and `listen`.
//!
//! Only `http://` and `ws://` are supported: TLS is expected to be terminated in front of the
//! server.

#![warn(missing_docs)]

pub mod backoff;
pub mod cli;
pub mod client;
pub mod connection;
pub mod error;
pub mod order;
pub mod rest;
pub mod state;
pub mod util;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, ClientEvent, Events};
pub use connection::{CloseInfo, ConnectOptions, Connection, EarlySync, Requester};
pub use error::ClientError;
pub use order::Reorderer;
pub use rest::RestClient;
pub use state::ClientState;

/// The wire types, re-exported so that users of this crate need not depend on `natter-proto`.
pub use natter_proto as proto;
