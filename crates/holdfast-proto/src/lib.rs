//! Sans-IO wire formats for Holdfast.
//!
//! Everything here is a pure function or a small state machine over a byte buffer: no sockets, no
//! runtime, no clocks. A decoder takes the bytes it has and answers "here is a value" or "need more"
//! (`Ok(None)`), so every case can be unit-tested split at every byte and fuzzed without tokio.
//!
//! What this crate does not own: timeouts, sockets, routing, and what a response says. Those belong
//! to `holdfast-server`.
#![deny(missing_docs)]

pub mod error;
pub mod http1;
pub mod json;
pub mod limits;
pub mod sse;
pub mod ws;

pub use error::ParseError;
pub use limits::Limits;
