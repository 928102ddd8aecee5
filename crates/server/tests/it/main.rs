//! Integration tests: a real `natter serve` process on an ephemeral port, real sockets.
//! One test binary (modules, not files in `tests/`) so that it links once.

mod bad_input;
mod chat;
mod cli;
mod cluster;
mod delivery;
mod harness;
mod lifecycle;
mod protobuf;
