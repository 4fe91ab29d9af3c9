//! The [`Broker`] trait (where messages get their order and are kept) and [`MemoryBroker`], the
//! embedded single-node default.
//!
//! The trait is shaped for a Redis broker too: `publish` returns the assigned position, history
//! is read by range from a [`Channel`], and listeners hear about every publish per channel. A
//! Redis broker would assign positions in Redis (INCR + XADD in one script) and feed the same
//! local channel rings from its subscription, so transports read locally either way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::channel::{Channel, HistoryBounds};
use crate::message::{Message, Payload};
use crate::name::{validate_channel_name, NameError};

/// How long a channel nobody published to and nobody holds is kept.
pub const UNUSED_CHANNEL_GRACE: Duration = Duration::from_secs(60);

/// What a publish produced.
#[derive(Debug, Clone)]
pub struct Published {
    /// The channel (created by this publish if it did not exist).
    pub channel: Arc<Channel>,
    /// The message, with its position and encodings.
    pub message: Arc<Message>,
}

/// Hears about every publish and delete, per channel (the server's push shards and metrics).
pub trait PublishListener: Send + Sync {
    /// A message was appended to `channel`.
    fn published(&self, channel: &Arc<Channel>);
    /// `channel` was deleted; its subscribers get a final notice.
    fn deleted(&self, channel: &Arc<Channel>);
}

/// Where messages are ordered and kept.
pub trait Broker: Send + Sync {
    /// Appends a message to a channel (creating it), returning its assigned position.
    fn publish(&self, channel: &str, event: Option<&str>, payload: Payload) -> Result<Published, NameError>;
    /// An existing channel.
    fn channel(&self, name: &str) -> Option<Arc<Channel>>;
    /// A channel, created if needed (a subscribe creates it).
    fn channel_or_create(&self, name: &str) -> Result<Arc<Channel>, NameError>;
    /// Drops a channel and its history; `None` if it did not exist.
    fn delete(&self, name: &str) -> Option<Arc<Channel>>;
    /// Registers a listener for every publish and delete.
    fn add_listener(&self, listener: Arc<dyn PublishListener>);
    /// Drops expired history everywhere (called periodically).
    fn expire(&self);
    /// Channels that exist now.
    fn channel_count(&self) -> usize;
    /// Bytes held by all histories.
    fn history_bytes(&self) -> u64;
}

/// History bounds (from the server's configuration).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages kept per channel (`history_messages`).
    pub messages: usize,
    /// Age after which messages are dropped (`history_seconds`).
    pub max_age: Duration,
    /// Bytes kept over all channels (`history_max_bytes`); the oldest messages anywhere go first.
    pub max_bytes: u64,
}

/// The embedded broker: channels and histories in this process.
pub struct MemoryBroker {
    channels: RwLock<HashMap<Arc<str>, Arc<Channel>>>,
    limits: HistoryLimits,
    total_bytes: Arc<AtomicU64>,
    /// Every held message in publish order, to evict the oldest anywhere when over `max_bytes`.
    publish_order: Mutex<VecDeque<(Weak<Channel>, u64)>>,
    listeners: RwLock<Vec<Arc<dyn PublishListener>>>,
    next_channel_id: AtomicU64,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new(limits: HistoryLimits) -> MemoryBroker {
        MemoryBroker {
            channels: RwLock::default(),
            limits,
            total_bytes: Arc::default(),
            publish_order: Mutex::default(),
            listeners: RwLock::default(),
            next_channel_id: AtomicU64::new(1),
        }
    }

    fn create(&self, name: &str) -> Arc<Channel> {
        let id = self.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let bounds = HistoryBounds { messages: self.limits.messages, max_age: self.limits.max_age };
        Arc::new(Channel::new(name.into(), id, new_epoch(id), bounds, self.total_bytes.clone()))
    }

    /// Keeps the global byte bound, and drops bookkeeping for messages already gone.
    fn enforce_byte_bound(&self) {
        let mut order = self.publish_order.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((channel, seq)) = order.front() {
            let channel = channel.upgrade();
            let held = channel.as_ref().is_some_and(|c| c.holds(*seq));
            if held && self.total_bytes.load(Ordering::Relaxed) <= self.limits.max_bytes {
                break;
            }
            if let (true, Some(channel)) = (held, channel) {
                channel.evict_through(*seq);
            }
            order.pop_front();
        }
    }
}

/// An epoch that differs across restarts and recreations of a channel: the clock's nanoseconds
/// mixed with the channel's process-unique id.
fn new_epoch(id: u64) -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (mixed >> 32) as u32
}

impl Broker for MemoryBroker {
    fn publish(&self, name: &str, event: Option<&str>, payload: Payload) -> Result<Published, NameError> {
        let channel = self.channel_or_create(name)?;
        let message = channel.append(event, payload);
        self.publish_order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((Arc::downgrade(&channel), message.position.seq));
        self.enforce_byte_bound();
        for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.published(&channel);
        }
        Ok(Published { channel, message })
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn channel_or_create(&self, name: &str) -> Result<Arc<Channel>, NameError> {
        if let Some(channel) = self.channel(name) {
            return Ok(channel);
        }
        validate_channel_name(name)?;
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let channel = channels.entry(name.into()).or_insert_with(|| self.create(name));
        Ok(channel.clone())
    }

    fn delete(&self, name: &str) -> Option<Arc<Channel>> {
        let channel = self.channels.write().unwrap_or_else(|e| e.into_inner()).remove(name)?;
        channel.mark_deleted();
        for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.deleted(&channel);
        }
        Some(channel)
    }

    fn add_listener(&self, listener: Arc<dyn PublishListener>) {
        self.listeners.write().unwrap_or_else(|e| e.into_inner()).push(listener);
    }

    fn expire(&self) {
        let channels: Vec<Arc<Channel>> =
            self.channels.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for channel in &channels {
            channel.expire();
        }
        drop(channels);
        self.enforce_byte_bound();
        // Subscribing creates channels; one nobody ever published to and nobody holds (no
        // subscriber, no long poll: the map's is the only reference) goes after a grace period,
        // so clients cannot grow the channel table without bound.
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, channel| {
            Arc::strong_count(channel) > 1 || !channel.is_unused() || channel.created.elapsed() < UNUSED_CHANNEL_GRACE
        });
    }

    fn channel_count(&self) -> usize {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn history_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Position, ReadFrom};
    use bytes::Bytes;

    fn broker(max_bytes: u64) -> MemoryBroker {
        MemoryBroker::new(HistoryLimits { messages: 100, max_age: Duration::from_secs(60), max_bytes })
    }

    #[test]
    fn publish_assigns_increasing_positions_per_channel() {
        let b = broker(u64::MAX);
        let p1 = b.publish("a", None, Bytes::from_static(b"1").into()).unwrap();
        let p2 = b.publish("a", Some("e"), Bytes::from_static(b"2").into()).unwrap();
        let q1 = b.publish("b", None, Bytes::from_static(b"x").into()).unwrap();
        assert_eq!(p1.message.position.seq, 1);
        assert_eq!(p2.message.position, Position { epoch: p1.channel.epoch, seq: 2 });
        assert_eq!(q1.message.position.seq, 1);
        assert_ne!(p1.channel.epoch, q1.channel.epoch);
        assert_eq!(b.channel_count(), 2);
        assert!(matches!(b.publish("bad name", None, Bytes::new().into()), Err(NameError::BadByte(b' '))));
    }

    #[test]
    fn global_byte_bound_evicts_the_oldest_anywhere() {
        let b = broker(4000);
        for i in 0..30 {
            b.publish(if i % 2 == 0 { "a" } else { "b" }, None, Bytes::from(vec![b'x'; 100]).into()).unwrap();
        }
        assert!(b.history_bytes() <= 4000, "{}", b.history_bytes());
        let (a_count, a_first, _) = b.channel("a").unwrap().info();
        let (b_count, _, _) = b.channel("b").unwrap().info();
        assert!(a_count > 0 && b_count > 0);
        assert!(a_first > 1, "the oldest messages were evicted");
        // Bookkeeping does not grow past what is held.
        assert!(b.publish_order.lock().unwrap().len() <= a_count + b_count);
    }

    #[test]
    fn unused_unheld_channels_are_dropped_after_the_grace_period() {
        let b = broker(u64::MAX);
        let held = b.channel_or_create("held").unwrap();
        b.channel_or_create("idle").unwrap();
        b.publish("used", None, Bytes::new().into()).unwrap();
        b.expire();
        assert_eq!(b.channel_count(), 3, "within the grace period everything stays");
        // Pretend the grace period passed by recreating the map's entries with an old creation time.
        let old = std::time::Instant::now() - UNUSED_CHANNEL_GRACE - Duration::from_secs(1);
        for channel in b.channels.write().unwrap().values_mut() {
            let mut aged = Channel::new(
                channel.name.clone(),
                channel.id,
                channel.epoch,
                HistoryBounds { messages: 10, max_age: Duration::from_secs(60) },
                Arc::default(),
            );
            aged.created = old;
            if channel.is_unused() && Arc::strong_count(channel) == 1 {
                *channel = Arc::new(aged);
            }
        }
        b.expire();
        assert!(b.channel("idle").is_none());
        assert!(b.channel("used").is_some());
        assert!(b.channel("held").is_some());
        drop(held);
    }

    #[test]
    fn delete_then_recreate_changes_the_epoch() {
        let b = broker(u64::MAX);
        let first = b.publish("a", None, Bytes::from_static(b"1").into()).unwrap();
        let old = first.message.position;
        assert!(b.delete("a").unwrap().is_deleted());
        assert!(b.channel("a").is_none());
        let again = b.channel_or_create("a").unwrap();
        assert_ne!(again.epoch, old.epoch);
        let (_, gap) = again.start(ReadFrom::After(old));
        assert!(gap.is_some());
    }

    struct Counter(AtomicU64);
    impl PublishListener for Counter {
        fn published(&self, _: &Arc<Channel>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn deleted(&self, _: &Arc<Channel>) {
            self.0.fetch_add(100, Ordering::Relaxed);
        }
    }

    #[test]
    fn listeners_hear_publishes_and_deletes() {
        let b = broker(u64::MAX);
        let counter = Arc::new(Counter(AtomicU64::new(0)));
        b.add_listener(counter.clone());
        b.publish("a", None, Bytes::new().into()).unwrap();
        b.publish("a", None, Bytes::new().into()).unwrap();
        b.delete("a");
        assert_eq!(counter.0.load(Ordering::Relaxed), 102);
    }
}
