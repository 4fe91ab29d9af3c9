//! `GET /sub/{ch1,ch2,…}`: which transport a request asks for, where each channel starts, and
//! the gaps to report (DESIGN §1, "Transport selection" and "Cursors, history and resume").
//!
//! - [`poll`]: short and long polling (answers are complete responses; the connection stays
//!   keep-alive).
//! - [`stream`]: SSE, NDJSON and the forever-iframe (a head, a prelude, then the socket goes to a
//!   push shard).

pub(crate) mod poll;
pub(crate) mod stream;
pub(crate) mod websocket;
pub(crate) mod ws_echo;

pub(crate) use crate::sub_request::{heartbeat_header, parse, Subscription, Transport};
