//! The `natter` server: gateway (WebSocket, REST, OpenAPI) → core → store → broker → sessions.
//!
//! [`node`] assembles one node from its [`config::Config`]; [`gateway`] turns frames and HTTP
//! requests into calls on `natter_core::Core`; [`sessions`] holds who is connected and fans
//! committed events out to them, encoded once.

pub mod admin;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod node;
pub mod sessions;
