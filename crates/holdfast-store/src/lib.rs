//! Holdfast's disk history (`history_store = "disk"`): every channel's messages, epoch and
//! sequence numbers kept in an embedded store in `data_dir`, so a restart loses no history and a
//! cursor issued before it resumes after it with no gap.
//!
//! - [`codec`]: how channels and messages are laid out on disk.
//! - [`db`]: opening, reading back, checking and repairing the store.
//! - [`broker`]: [`DiskBroker`], the embedded broker whose publishes are written (group commit)
//!   before anyone sees them.
//! - `readback`: reading the messages back into the rings while the server already serves.
//! - `writer`: the thread that writes, syncs and deletes.
#![deny(missing_docs)]

pub mod broker;
pub mod codec;
pub mod db;
mod readback;
mod writer;

pub use broker::{boot_id, DiskBroker, DiskConfig, Durability};
pub use db::{check, repair, CheckReport, RepairReport, Store, StoreError};
pub use writer::MAX_QUEUED_BYTES;
