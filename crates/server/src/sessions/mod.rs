//! Who is connected, and the fan-out of events to them.
//!
//! The [`hub::Hub`] is the broker's sink: it routes each event to the sessions that may see it,
//! encodes it once per encoding in use (JSON, Protocol Buffers), and pushes the same bytes onto
//! every recipient's bounded [`queue::SessionQueue`].
//!
//! **Invariant:** no lock is held across an await in the fan-out path; pushing never blocks.

pub mod hub;
pub mod queue;

pub use hub::Hub;
pub use queue::{CloseReason, SessionQueue};
