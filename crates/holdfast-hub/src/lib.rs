//! Holdfast's channels: bounded histories, per-channel sequence numbers under an epoch, cursors,
//! and messages encoded once per wire format and shared by every subscriber.
//!
//! What it does not own: sockets and timers (the server's push shards and transports read from
//! here), and wire formats themselves (`holdfast-proto`).
//!
//! - [`name`]: channel-name rules.
//! - [`cursor`]: the opaque resume token.
//! - [`message`]: one published message and its shared encodings.
//! - [`channel`]: a channel's history ring and its waiters.
//! - [`broker`]: the [`Broker`] trait and the embedded [`MemoryBroker`].
#![deny(missing_docs)]

pub mod broker;
pub mod channel;
pub mod cursor;
pub mod message;
pub mod name;

pub use broker::{
    ready_now, Appended, Broker, BrokerFuture, ChannelError, ChannelInfo, HistoryLimits, MemoryBroker, PublishListener,
    Published, Recovered, StoreStats,
};
pub use channel::{Channel, Gap, Position, ReadFrom};
pub use cursor::{Cursor, CursorError};
pub use message::{Message, Payload};
pub use name::{validate_channel_name, NameError};
