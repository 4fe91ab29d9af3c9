//! The [`Broker`] trait (where messages get their order and are kept) and [`MemoryBroker`], the
//! embedded single-node default.
//!
//! The trait hosts network brokers too (the Redis broker lives in `holdfast-redis`): what may
//! need a round trip (publish, opening a channel, its info, delete) returns a [`BrokerFuture`],
//! which the memory broker answers at once. Transports never wait on a broker while they stream:
//! they read the local channel rings, which a network broker feeds from its subscription, and a
//! shard thread first asks [`Broker::ready`] (local, synchronous) and hands the request to the
//! runtime only when a channel must be opened first. [`MemoryBroker::adopt`] and
//! [`MemoryBroker::insert`] let such a broker keep its local rings at positions it did not
//! assign.
//!
//! Memory on the publish side is bounded by configuration, whatever publishers do:
//! - histories by `history_messages`, `history_seconds` and `history_max_bytes`;
//! - channels by [`MemoryBroker::expire`], which drops every channel that keeps no history and
//!   that nobody holds (no subscriber, no waiting long poll), whatever it held before; one that
//!   was never published to is kept for [`UNUSED_CHANNEL_GRACE`] first, so a subscribe that is
//!   about to be followed by a publish (or a long poll between two requests) finds it. The
//!   channel map gives its room back when it empties. A cursor into a dropped channel resumes in
//!   a new epoch, with a gap notice whose loss is unknown: its messages had expired anyway, but
//!   the channel no longer knows how many there were;
//! - the number of channels by `max_channels` ([`ChannelError::TooManyChannels`] beyond it);
//! - the publish-order index (which message is the oldest anywhere, for `history_max_bytes`) by
//!   twice the messages held: it is compacted when it outgrows that, so one old message held
//!   while millions of newer ones come and go costs one entry, not millions.
//!
//! No lock is taken by every publish: the channel map is read-locked (shared), a channel's own
//! lock orders its messages (the payload is encoded before it), and the publish-order index is
//! in `ORDER_STRIPES` (16) stripes by channel, each with the ticket of its oldest entry in an atomic
//! so the oldest message anywhere is found without locking the others.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::channel::{Channel, HistoryBounds, Position, Totals, ORDER_STRIPES};
use crate::message::{Message, Payload};
use crate::name::{validate_channel_name, NameError};

/// How long a channel nobody published to and nobody holds is kept.
pub const UNUSED_CHANNEL_GRACE: Duration = Duration::from_secs(60);

/// Channels a [`MemoryBroker`] holds at most unless told otherwise (`max_channels`).
pub const DEFAULT_MAX_CHANNELS: usize = 1_000_000;

/// The channel map and the publish-order index keep at least this much room when they shrink
/// (reallocating is not worth it for less).
const MIN_KEPT_ROOM: usize = 64;

/// Bytes of one slot of the channel map: the key, the value and hashbrown's control byte.
const MAP_SLOT_BYTES: u64 = (std::mem::size_of::<(Arc<str>, Arc<Channel>)>() + 1) as u64;

/// Bytes of one publish-order entry.
const ORDER_ENTRY_BYTES: u64 = std::mem::size_of::<OrderEntry>() as u64;

/// What a local append produced ([`MemoryBroker::publish`]).
#[derive(Debug, Clone)]
pub struct Appended {
    /// The channel (created by this publish if it did not exist).
    pub channel: Arc<Channel>,
    /// The message, with its position and encodings.
    pub message: Arc<Message>,
}

/// What a publish answers: where the message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its position in the channel.
    pub position: Position,
    /// Its id: the single-channel cursor after it.
    pub id: String,
    /// Subscribers of the channel when it was published (on every node, for a network broker).
    pub subscribers: u64,
}

/// A channel as `GET /pub/{channel}` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Subscribers (on every node, for a network broker).
    pub subscribers: u64,
    /// Messages kept.
    pub messages: u64,
    /// The oldest and newest kept (`None` when none is).
    pub first: Option<Position>,
    /// The newest kept.
    pub last: Option<Position>,
}

/// A broker's answer that may take a round trip; the memory broker's are ready at once.
pub type BrokerFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Polls a broker future once, without a runtime: its output when it is ready at once (always,
/// for the memory broker), else the future back, to be awaited on a runtime. A shard thread uses
/// this so the memory broker's answers stay synchronous there.
pub fn ready_now<T>(mut future: BrokerFuture<T>) -> Result<T, BrokerFuture<T>> {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    match future.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(future),
    }
}

/// Why a channel could not be found, created or published to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The name was refused.
    Name(NameError),
    /// The channel does not exist and creating it would exceed `max_channels` (this many).
    /// Temporary: channels that hold nothing are dropped every second.
    TooManyChannels(usize),
    /// A network broker could not be reached (why). Temporary: retry later.
    Unavailable(Arc<str>),
}

impl ChannelError {
    /// A short label for the error, as the server's JSON answers carry it.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelError::Name(_) => "bad_channel",
            ChannelError::TooManyChannels(_) => "too_many_channels",
            ChannelError::Unavailable(_) => "broker_unavailable",
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Name(e) => e.fmt(f),
            ChannelError::TooManyChannels(max) => write!(
                f,
                "the server holds its maximum of {max} channels (max_channels); channels that keep no \
                 history and have no subscriber are dropped, retry later"
            ),
            ChannelError::Unavailable(why) => write!(f, "the broker is unreachable ({why}); retry later"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<NameError> for ChannelError {
    fn from(e: NameError) -> ChannelError {
        ChannelError::Name(e)
    }
}

/// Hears about every publish and delete, per channel (the server's push shards and metrics).
pub trait PublishListener: Send + Sync {
    /// A message was appended to `channel`.
    fn published(&self, channel: &Arc<Channel>);
    /// `channel` was deleted, or its history was lost and it was reset
    /// ([`Channel::was_reset`]); its subscribers get a final notice.
    fn deleted(&self, channel: &Arc<Channel>);
}

/// Where messages are ordered and kept.
pub trait Broker: Send + Sync {
    /// Publishes a message to a channel (creating it): its assigned position, or why not.
    fn publish(
        &self,
        channel: &str,
        event: Option<&str>,
        payload: Payload,
    ) -> BrokerFuture<Result<Published, ChannelError>>;
    /// A channel ready to read here without a round trip (created if the broker can do that
    /// locally), or why it cannot be had; `None` when it must be [`Broker::open`]ed first.
    fn ready(&self, name: &str) -> Option<Result<Arc<Channel>, ChannelError>>;
    /// A channel ready to read here (created if needed, its local ring holding the history the
    /// broker keeps). A subscribe opens its channels.
    fn open(&self, name: &str) -> BrokerFuture<Result<Arc<Channel>, ChannelError>>;
    /// A channel as held here, if it is (no round trip, not created).
    fn channel(&self, name: &str) -> Option<Arc<Channel>>;
    /// What `GET /pub/{channel}` tells; `None` if the channel does not exist.
    fn info(&self, name: &str) -> BrokerFuture<Result<Option<ChannelInfo>, ChannelError>>;
    /// Drops a channel and its history everywhere: the subscribers it had (on every node), or
    /// `None` if it did not exist.
    fn delete(&self, name: &str) -> BrokerFuture<Result<Option<u64>, ChannelError>>;
    /// Every channel held here now (a network broker's local copies: what this node serves).
    fn channels(&self) -> Vec<Arc<Channel>>;
    /// Registers a listener for every publish and delete.
    fn add_listener(&self, listener: Arc<dyn PublishListener>);
    /// What kind of broker this is, for `/admin/stats` (`memory`, `redis`).
    fn kind(&self) -> &'static str;
    /// Whether the broker can be reached now (a network broker's connections are up).
    fn connected(&self) -> bool {
        true
    }
    /// Waits until [`Broker::connected`], at most `within`: whether it is. The server waits for
    /// this before it listens, so its first requests do not find the broker still connecting.
    fn wait_connected(&self, within: Duration) -> BrokerFuture<bool> {
        let _ = within;
        Box::pin(std::future::ready(self.connected()))
    }
    /// Drops expired history everywhere, and the channels left holding nothing (called every
    /// second).
    fn expire(&self);
    /// Channels that exist now.
    fn channel_count(&self) -> usize;
    /// Estimated bytes of the channels themselves and of the structures that find them (not
    /// their histories: see [`Broker::history_bytes`]).
    fn channel_bytes(&self) -> u64;
    /// Bytes held by all histories.
    fn history_bytes(&self) -> u64;
    /// The persistent store behind the histories, if there is one (`history_store = "disk"`).
    fn store(&self) -> Option<StoreStats> {
        None
    }
    /// Makes everything accepted durable and closes the store cleanly (called once, as the
    /// server stops, after its connections are gone).
    fn close(&self) -> BrokerFuture<()> {
        Box::pin(std::future::ready(()))
    }
    /// Resolves once everything the broker keeps is in the local rings (a disk store reads its
    /// messages back while the server already serves); `Err` says why what it read is damaged,
    /// and the server then stops as it would have at start.
    fn read_back(&self) -> BrokerFuture<Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A persistent history store as `/admin/stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Where it lives (`data_dir`).
    pub path: String,
    /// `none`, `batch` or `always`.
    pub durability: &'static str,
    /// Bytes its files take on disk now (compaction runs in the background).
    pub disk_bytes: u64,
    /// Channels it holds.
    pub channels: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Publishes accepted and not yet written.
    pub pending: u64,
    /// Syncs to disk so far (`fsync`: one per group commit with `always`).
    pub syncs: u64,
    /// What the store held when it was opened.
    pub recovered: Recovered,
}

/// What a persistent store held when it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Channels.
    pub channels: u64,
    /// Messages.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Milliseconds from opening the store to serving (its channel rows read: epochs and
    /// positions; the messages follow in the background).
    pub millis: u64,
    /// Every message is back in its ring (`messages` and `bytes` are final).
    pub read_back: bool,
    /// Milliseconds from opening the store to every message back in its ring (0 until then).
    pub read_back_millis: u64,
    /// The store had been closed cleanly.
    pub clean: bool,
    /// Its channels continue in new epochs: it was not closed cleanly after a restart of the
    /// machine without `durability = "always"`, so the newest messages may have been lost and
    /// cursors past what was kept are told so with a gap.
    pub continued: bool,
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
    max_channels: usize,
    totals: Arc<Totals>,
    /// Held messages in publish order, to evict the oldest anywhere when over `max_bytes`, in
    /// stripes by channel so that publishes to different channels do not wait on one lock.
    /// Each stripe also holds entries of messages already gone (trimmed, expired), at most as
    /// many as it has held: see [`MemoryBroker::compact_stripe`].
    publish_order: Box<[OrderStripe]>,
    /// The publish-order tickets: global order across stripes, from one atomic counter.
    next_ticket: AtomicU64,
    listeners: RwLock<Vec<Arc<dyn PublishListener>>>,
}

/// Channel ids, from one counter for the whole process: a server may hold channels of several
/// brokers (its own node-local one beside the configured one), and its push shards key
/// channels by id.
static NEXT_CHANNEL_ID: AtomicU64 = AtomicU64::new(1);

fn next_channel_id() -> u64 {
    NEXT_CHANNEL_ID.fetch_add(1, Ordering::Relaxed)
}

impl MemoryBroker {
    /// An empty broker holding at most [`DEFAULT_MAX_CHANNELS`] channels.
    pub fn new(limits: HistoryLimits) -> MemoryBroker {
        MemoryBroker {
            channels: RwLock::default(),
            limits,
            max_channels: DEFAULT_MAX_CHANNELS,
            totals: Arc::default(),
            publish_order: (0..ORDER_STRIPES).map(|_| OrderStripe::default()).collect(),
            next_ticket: AtomicU64::new(0),
            listeners: RwLock::default(),
        }
    }

    /// The same broker holding at most `max_channels` channels: creating one more fails with
    /// [`ChannelError::TooManyChannels`].
    pub fn with_max_channels(self, max_channels: usize) -> MemoryBroker {
        MemoryBroker { max_channels, ..self }
    }

    fn create(&self, name: Arc<str>) -> Arc<Channel> {
        let id = next_channel_id();
        let bounds = HistoryBounds { messages: self.limits.messages, max_age: self.limits.max_age };
        Arc::new(Channel::new(name, id, new_epoch(id), bounds, self.totals.clone()))
    }

    /// Records a message in its channel's stripe of the publish order, and drops the entries of
    /// messages already gone at that stripe's front.
    fn record(&self, channel: &Arc<Channel>, seq: u64) {
        let stripe = &self.publish_order[channel.stripe()];
        let mut entries = stripe.lock();
        // Taken under the stripe's lock, so tickets grow along each stripe.
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        entries.push_back((Arc::downgrade(channel), seq, ticket));
        while entries.front().is_some_and(|(c, seq, _)| !c.upgrade().is_some_and(|c| c.holds(*seq))) {
            entries.pop_front();
        }
        self.compact_stripe(channel.stripe(), &mut entries);
        stripe.publish_front(&entries);
    }

    /// Keeps the global byte bound: while over it, evicts the oldest message anywhere, found as
    /// the oldest front over the stripes (read without their locks; one stripe is locked at a
    /// time).
    fn enforce_byte_bound(&self) {
        while self.totals.history_bytes.load(Ordering::Relaxed) > self.limits.max_bytes {
            let oldest = self
                .publish_order
                .iter()
                .map(|stripe| stripe.front.load(Ordering::Acquire))
                .enumerate()
                .filter(|(_, ticket)| *ticket != EMPTY_STRIPE)
                .min_by_key(|(_, ticket)| *ticket);
            let Some((index, _)) = oldest else { return };
            let stripe = &self.publish_order[index];
            let mut entries = stripe.lock();
            if let Some((channel, seq, _)) = entries.pop_front() {
                if let Some(channel) = channel.upgrade().filter(|c| c.holds(seq)) {
                    channel.evict_through(seq);
                }
            }
            stripe.publish_front(&entries);
        }
    }

    /// Drops a stripe's entries of messages no longer held once they outnumber the held ones,
    /// and gives back the room of a mostly empty stripe. Entries leave from the front only while
    /// the oldest message is gone; behind one old message that is still held, entries of trimmed
    /// and expired messages would pile up, one per publish. Each compaction visits `len` entries
    /// of which more than half go, so its cost is at most twice the entries it removes: constant
    /// per publish, amortised.
    fn compact_stripe(&self, index: usize, entries: &mut VecDeque<OrderEntry>) {
        let held = self.totals.stripe_messages[index].load(Ordering::Relaxed) as usize;
        if entries.len() > 2 * held {
            entries.retain(|(channel, seq, _)| channel.upgrade().is_some_and(|c| c.holds(*seq)));
        }
        // Whether emptied here or from the front, the room goes back once less than half used,
        // to half as much again as the entries. (Once under a quarter used, before: a stripe
        // whose entries came grouped by channel, as a read-back places them, grew to about twice
        // what it holds while the oldest channel's entries held its front, then kept the doubled
        // room for good at half used: 393 KB after the soak's restart, bench/RESULTS.md.)
        let floor = MIN_KEPT_ROOM / ORDER_STRIPES;
        if entries.capacity() > (2 * entries.len()).max(2 * floor) {
            entries.shrink_to((entries.len() + entries.len() / 2).max(floor));
        }
    }

    /// Entries in the publish-order index, over all stripes.
    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.publish_order.iter().map(|stripe| stripe.lock().len()).sum()
    }

    /// Room of the publish-order index, over all stripes.
    fn order_capacity(&self) -> usize {
        self.publish_order.iter().map(|stripe| stripe.lock().capacity()).sum()
    }
}

/// One entry of the publish-order index: a message (its channel and sequence number) and its
/// ticket.
type OrderEntry = (Weak<Channel>, u64, u64);

/// The `front` of an empty stripe.
const EMPTY_STRIPE: u64 = u64::MAX;

/// One stripe of the publish-order index.
struct OrderStripe {
    entries: Mutex<VecDeque<OrderEntry>>,
    /// The ticket of the front entry ([`EMPTY_STRIPE`] when empty), so the oldest message
    /// anywhere is found without locking every stripe.
    front: AtomicU64,
}

impl Default for OrderStripe {
    fn default() -> OrderStripe {
        OrderStripe { entries: Mutex::default(), front: AtomicU64::new(EMPTY_STRIPE) }
    }
}

impl OrderStripe {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<OrderEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the front's ticket (called with the lock held, after any change at the front).
    fn publish_front(&self, entries: &VecDeque<OrderEntry>) {
        self.front.store(entries.front().map_or(EMPTY_STRIPE, |(_, _, ticket)| *ticket), Ordering::Release);
    }
}

/// An epoch that differs across restarts and recreations of a channel: the clock's nanoseconds
/// mixed with the channel's process-unique id.
fn new_epoch(id: u64) -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (mixed >> 32) as u32
}

impl MemoryBroker {
    /// Appends a message to a channel (creating it), at the channel's next position.
    pub fn publish(&self, name: &str, event: Option<&str>, payload: Payload) -> Result<Appended, ChannelError> {
        let channel = self.channel_or_create(name)?;
        let message = channel.append(event, payload);
        self.appended(&channel, &message);
        Ok(Appended { channel, message })
    }

    /// Books a message just added to `channel` and tells the listeners.
    fn appended(&self, channel: &Arc<Channel>, message: &Message) {
        self.record(channel, message.position.seq);
        self.enforce_byte_bound();
        for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.published(channel);
        }
    }

    /// A channel held here, if it is.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// A channel, created (in a new epoch) if needed.
    pub fn channel_or_create(&self, name: &str) -> Result<Arc<Channel>, ChannelError> {
        if let Some(channel) = self.channel(name) {
            return Ok(channel);
        }
        validate_channel_name(name)?;
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(name) {
            return Ok(channel.clone());
        }
        if channels.len() >= self.max_channels {
            return Err(ChannelError::TooManyChannels(self.max_channels));
        }
        // One allocation of the name, shared by the map's key and the channel.
        let name: Arc<str> = name.into();
        let channel = self.create(name.clone());
        channels.insert(name, channel.clone());
        Ok(channel)
    }

    /// Drops a channel and its history (its subscribers get a final notice); `None` if it did
    /// not exist.
    pub fn delete(&self, name: &str) -> Option<Arc<Channel>> {
        let channel = self.channels.write().unwrap_or_else(|e| e.into_inner()).remove(name)?;
        channel.mark_deleted();
        for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.deleted(&channel);
        }
        Some(channel)
    }

    /// The local ring of a channel whose positions another broker assigns, in that broker's
    /// `epoch`, starting after `last_seq` (the newest message that broker has: the ring fills
    /// from there, or from older ones [`MemoryBroker::insert`] brings first). A ring held in
    /// another epoch is reset: its history was lost in the broker, so its subscribers get a
    /// final notice with their cursor ([`Channel::was_reset`]) and, resuming, a gap. The
    /// second value says whether the ring is new.
    pub fn adopt(&self, name: &str, epoch: u32, last_seq: u64) -> Result<(Arc<Channel>, bool), ChannelError> {
        self.adopt_continuing(name, epoch, last_seq, None)
    }

    /// [`MemoryBroker::adopt`] for an epoch that continues an older one whose newest messages
    /// may have been lost (a disk store reopened after a power cut): a cursor of `previous.epoch`
    /// resumes after its own position or `previous.seq`, whichever is older, with a gap notice
    /// ([`Channel::start`]), instead of replaying the whole history.
    pub fn adopt_continuing(
        &self,
        name: &str,
        epoch: u32,
        last_seq: u64,
        previous: Option<Position>,
    ) -> Result<(Arc<Channel>, bool), ChannelError> {
        validate_channel_name(name)?;
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let replaced = match channels.get(name) {
            Some(channel) if channel.epoch == epoch => return Ok((channel.clone(), false)),
            Some(_) => channels.remove(name),
            None if channels.len() >= self.max_channels => {
                return Err(ChannelError::TooManyChannels(self.max_channels))
            }
            None => None,
        };
        let name: Arc<str> = name.into();
        let id = next_channel_id();
        let bounds = HistoryBounds { messages: self.limits.messages, max_age: self.limits.max_age };
        let mut channel = Channel::new(name.clone(), id, epoch, bounds, self.totals.clone());
        channel.mirror = true;
        channel.continues = previous;
        let channel = Arc::new(channel);
        channel.start_after(last_seq);
        channels.insert(name, channel.clone());
        drop(channels);
        if let Some(old) = replaced {
            old.mark_reset();
            for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
                listener.deleted(&old);
            }
        }
        Ok((channel, true))
    }

    /// Puts a message another broker placed at `seq` into a ring from [`MemoryBroker::adopt`],
    /// published `age` ago: the message as placed, or `None` for a repeat (one at or before the
    /// ring's newest, ignored).
    /// One past the next position means the messages in between could not be had: the ring
    /// starts again at it, and subscribers still before it are behind the history (they are
    /// closed with their cursor and get a gap notice when they resume).
    pub fn insert(
        &self,
        channel: &Arc<Channel>,
        seq: u64,
        event: Option<&str>,
        payload: Payload,
        age: Duration,
    ) -> Option<Arc<Message>> {
        let message = channel.insert(seq, event, payload, age)?;
        self.appended(channel, &message);
        Some(message)
    }

    /// Moves a ring from [`MemoryBroker::adopt`] on to `seq` when the messages up to it cannot be
    /// had (trimmed from the other broker's history): the ring empties, and subscribers still
    /// before `seq` are behind the history (closed with their cursor, a gap when they resume).
    pub fn skip_to(&self, channel: &Arc<Channel>, seq: u64) {
        channel.skip_to(seq);
    }

    /// Every channel held here now.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Drops expired history everywhere, and the channels for which `drop_channel` says so (the
    /// map's reference is the only one left when it is asked).
    fn expire_where(&self, drop_channel: impl Fn(&Arc<Channel>) -> bool) {
        let channels: Vec<Arc<Channel>> =
            self.channels.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for channel in &channels {
            channel.expire();
        }
        drop(channels);
        self.enforce_byte_bound();
        for (index, stripe) in self.publish_order.iter().enumerate() {
            let mut entries = stripe.lock();
            while entries.front().is_some_and(|(c, seq, _)| !c.upgrade().is_some_and(|c| c.holds(*seq))) {
                entries.pop_front();
            }
            self.compact_stripe(index, &mut entries);
            stripe.publish_front(&entries);
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, channel| {
            // Held (a subscriber, a waiting long poll): no new reference can be taken from the
            // map while it is locked for writing, so the count cannot rise under us.
            let held = Arc::strong_count(channel) > 1;
            channel.note_held(held);
            held || !drop_channel(channel)
        });
        // Give the table's room back once it is mostly empty (after a burst of channels expired),
        // keeping twice what is left so the next creations do not rehash at once. `shrink_to(k)`
        // leaves at most 2k, so a table that was shrunk is not shrunk again every second.
        let keep = (2 * channels.len()).max(MIN_KEPT_ROOM);
        if channels.capacity() > 2 * keep {
            channels.shrink_to(keep);
        }
    }

    /// For a network broker's local rings: drops expired history, and the rings nobody has held
    /// for `unheld` expiry rounds (their history stays in the broker).
    pub fn expire_unheld(&self, unheld: u32) {
        self.expire_where(|channel| channel.unheld_rounds() >= unheld)
    }
}

impl Broker for MemoryBroker {
    fn publish(
        &self,
        name: &str,
        event: Option<&str>,
        payload: Payload,
    ) -> BrokerFuture<Result<Published, ChannelError>> {
        let published = MemoryBroker::publish(self, name, event, payload).map(|appended| Published {
            position: appended.message.position,
            id: String::from_utf8_lossy(&appended.message.cursor).into_owned(),
            subscribers: appended.channel.subscribers.load(Ordering::Relaxed),
        });
        Box::pin(std::future::ready(published))
    }

    fn ready(&self, name: &str) -> Option<Result<Arc<Channel>, ChannelError>> {
        Some(self.channel_or_create(name))
    }

    fn open(&self, name: &str) -> BrokerFuture<Result<Arc<Channel>, ChannelError>> {
        Box::pin(std::future::ready(self.channel_or_create(name)))
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        MemoryBroker::channel(self, name)
    }

    fn info(&self, name: &str) -> BrokerFuture<Result<Option<ChannelInfo>, ChannelError>> {
        let info = MemoryBroker::channel(self, name).map(|channel| {
            let (messages, first, last) = channel.info();
            let at = |seq| (messages > 0).then_some(Position { epoch: channel.epoch, seq });
            ChannelInfo {
                subscribers: channel.subscribers.load(Ordering::Relaxed),
                messages: messages as u64,
                first: at(first),
                last: at(last),
            }
        });
        Box::pin(std::future::ready(Ok(info)))
    }

    fn delete(&self, name: &str) -> BrokerFuture<Result<Option<u64>, ChannelError>> {
        // Counted before the delete: the push shards start closing subscribers at once.
        let subscribers = MemoryBroker::channel(self, name).map(|c| c.subscribers.load(Ordering::Relaxed));
        let deleted = MemoryBroker::delete(self, name).and(subscribers);
        Box::pin(std::future::ready(Ok(deleted)))
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        MemoryBroker::channels(self)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn add_listener(&self, listener: Arc<dyn PublishListener>) {
        self.listeners.write().unwrap_or_else(|e| e.into_inner()).push(listener);
    }

    fn expire(&self) {
        // A channel that keeps no history and that nobody holds has nothing to give anyone: it
        // goes, so channels cost memory only while they hold messages or listeners. One that was
        // never published to is kept for a grace period, for a subscriber about to publish or a
        // long poll between requests.
        self.expire_where(|channel| {
            channel.holds_no_history() && !(channel.is_unused() && channel.created.elapsed() < UNUSED_CHANNEL_GRACE)
        });
    }

    fn channel_count(&self) -> usize {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn channel_bytes(&self) -> u64 {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner()).capacity() as u64 * MAP_SLOT_BYTES;
        let order = self.order_capacity() as u64 * ORDER_ENTRY_BYTES;
        self.totals.channel_bytes.load(Ordering::Relaxed) + map + order
    }

    fn history_bytes(&self) -> u64 {
        self.totals.history_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Position, ReadFrom};
    use bytes::Bytes;

    fn broker(max_bytes: u64) -> MemoryBroker {
        broker_with(100, Duration::from_secs(60), max_bytes)
    }

    fn broker_with(messages: usize, max_age: Duration, max_bytes: u64) -> MemoryBroker {
        MemoryBroker::new(HistoryLimits { messages, max_age, max_bytes })
    }

    /// A history age short enough for tests to wait out.
    const SHORT_AGE: Duration = Duration::from_millis(20);

    fn wait_out(age: Duration) {
        std::thread::sleep(age + Duration::from_millis(10));
    }

    #[test]
    fn channels_whose_history_expired_are_dropped_unless_held() {
        let b = broker_with(100, SHORT_AGE, u64::MAX);
        let empty_bytes = b.channel_bytes();
        b.publish("expired", None, Bytes::from_static(b"x").into()).unwrap();
        let subscribed = b.publish("subscribed", None, Bytes::from_static(b"x").into()).unwrap().channel;
        b.channel_or_create("never-published").unwrap();
        wait_out(SHORT_AGE);
        b.publish("fresh", None, Bytes::from_static(b"x").into()).unwrap();
        assert!(b.channel_bytes() > empty_bytes);
        b.expire();
        assert!(b.channel("expired").is_none(), "no history and no holder: dropped at once");
        assert!(b.channel("subscribed").is_some(), "held (a subscriber or a waiting long poll)");
        assert!(b.channel("never-published").is_some(), "never published: within its grace period");
        assert!(b.channel("fresh").is_some(), "still has history");
        assert_eq!(b.channel_count(), 3);

        // Once let go, the held channel goes too; the fresh one once its history expires.
        drop(subscribed);
        wait_out(SHORT_AGE);
        b.expire();
        assert!(b.channel("subscribed").is_none());
        assert!(b.channel("fresh").is_none());
        assert_eq!(b.channel_count(), 1);
        assert_eq!(b.history_bytes(), 0);
        // What is left is the never-published channel and the map's minimum room.
        let one_channel = b.channel_bytes() - empty_bytes;
        assert!(one_channel < 4096, "{one_channel} B for one channel and the map");
    }

    #[test]
    fn a_recreated_channel_gets_a_new_epoch_and_old_cursors_a_gap() {
        let b = broker_with(100, SHORT_AGE, u64::MAX);
        let old = b.publish("c", None, Bytes::from_static(b"x").into()).unwrap().message.position;
        wait_out(SHORT_AGE);
        b.expire();
        assert!(b.channel("c").is_none());
        let again = b.channel_or_create("c").unwrap();
        assert_ne!(again.epoch, old.epoch);
        let (_, gap) = again.start(ReadFrom::After(old));
        assert_eq!(gap.map(|g| g.asked), Some(old));
    }

    #[test]
    fn the_channel_map_gives_its_room_back_when_channels_go() {
        let b = broker_with(100, SHORT_AGE, u64::MAX);
        for i in 0..20_000 {
            b.publish(&format!("c{i}"), None, Bytes::from_static(b"x").into()).unwrap();
        }
        let full_capacity = b.channels.read().unwrap().capacity();
        let full_bytes = b.channel_bytes();
        assert!(full_capacity >= 20_000);
        wait_out(SHORT_AGE);
        b.expire();
        assert_eq!(b.channel_count(), 0);
        let capacity = b.channels.read().unwrap().capacity();
        assert!(capacity <= 2 * MIN_KEPT_ROOM, "capacity {capacity} after emptying from {full_capacity}");
        assert!(b.order_capacity() <= 2 * MIN_KEPT_ROOM);
        let bytes = b.channel_bytes();
        assert!(bytes < 8192, "{bytes} B left of {full_bytes}");
        // Shrunk once, it stays put while nothing changes.
        b.expire();
        assert_eq!(b.channels.read().unwrap().capacity(), capacity);
    }

    #[test]
    fn publish_order_stays_within_twice_the_messages_held_behind_an_old_message() {
        let b = broker_with(100, Duration::from_secs(60), u64::MAX);
        b.publish("old", None, Bytes::from_static(b"held all along").into()).unwrap();
        for i in 0..200_000u32 {
            b.publish("hot", None, Bytes::from(i.to_string()).into()).unwrap();
            if i % 10_000 == 0 {
                b.expire();
            }
        }
        let held = 1 + 100;
        let (len, capacity) = (b.order_len(), b.order_capacity());
        assert!(len <= 2 * held, "{len} entries for {held} messages held");
        assert!(capacity <= ORDER_STRIPES * 4 * held.max(MIN_KEPT_ROOM), "capacity {capacity}");
        assert_eq!(b.channel("old").unwrap().info().0, 1);
    }

    /// A read-back places each channel's messages together; the publishes after it come in
    /// time order. The index's room comes back to at most twice its entries.
    #[test]
    fn publish_order_gives_back_the_room_a_grouped_read_back_took() {
        const CHANNELS: usize = 64;
        let b = broker_with(100, Duration::from_secs(60), u64::MAX);
        for c in 0..CHANNELS {
            for i in 0..100u32 {
                b.publish(&format!("c{c}"), None, Bytes::from(i.to_string()).into()).unwrap();
            }
        }
        for round in 0..200u32 {
            for c in 0..CHANNELS {
                b.publish(&format!("c{c}"), None, Bytes::from(round.to_string()).into()).unwrap();
            }
        }
        b.expire();
        let (len, capacity) = (b.order_len(), b.order_capacity());
        assert!(len <= 2 * CHANNELS * 100, "{len} entries");
        assert!(capacity <= 2 * len + 2 * MIN_KEPT_ROOM, "room for {capacity} entries, {len} used");
    }

    #[test]
    fn byte_bound_still_evicts_the_oldest_anywhere_after_compactions() {
        // "old" and "new" have names of the same length and both get seq 1: equal sizes.
        let b = broker_with(10, Duration::from_secs(60), u64::MAX);
        b.publish("old", None, Bytes::from_static(b"payload").into()).unwrap();
        for _ in 0..1_000 {
            b.publish("hot", None, Bytes::from_static(b"payload").into()).unwrap();
        }
        assert!(b.order_len() <= 2 * 11, "compacted on the way");
        // What is held now fits, with a few bytes to spare: a cursor's length depends on its
        // channel's (random) epoch, so "new" may be a byte or two longer than "old". One more
        // message must push the oldest anywhere out, and only it.
        let b = MemoryBroker { limits: HistoryLimits { max_bytes: b.history_bytes() + 16, ..b.limits }, ..b };
        b.publish("new", None, Bytes::from_static(b"payload").into()).unwrap();
        assert_eq!(b.channel("old").unwrap().info().0, 0, "the oldest message anywhere went");
        assert_eq!(b.channel("hot").unwrap().info().0, 10);
        assert_eq!(b.channel("new").unwrap().info().0, 1);
    }

    #[test]
    fn max_channels_refuses_new_channels_but_serves_existing_ones() {
        let b = broker_with(100, SHORT_AGE, u64::MAX).with_max_channels(2);
        b.publish("a", None, Bytes::from_static(b"x").into()).unwrap();
        b.channel_or_create("b").unwrap();
        let refused = b.publish("c", None, Bytes::from_static(b"x").into()).unwrap_err();
        assert_eq!(refused, ChannelError::TooManyChannels(2));
        assert_eq!(refused.label(), "too_many_channels");
        assert!(refused.to_string().contains("max_channels"), "{refused}");
        assert!(matches!(b.channel_or_create("c"), Err(ChannelError::TooManyChannels(2))));
        assert!(matches!(
            b.publish("bad name", None, Bytes::new().into()),
            Err(ChannelError::Name(NameError::BadByte(b' ')))
        ));
        // Existing channels are still served.
        b.publish("a", None, Bytes::from_static(b"y").into()).unwrap();
        b.channel_or_create("b").unwrap();
        assert_eq!(b.channel_count(), 2);
        // Once "a" has expired and gone, there is room again.
        wait_out(SHORT_AGE);
        b.expire();
        b.publish("c", None, Bytes::from_static(b"x").into()).unwrap();
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
        assert!(matches!(
            b.publish("bad name", None, Bytes::new().into()),
            Err(ChannelError::Name(NameError::BadByte(b' ')))
        ));
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
        assert!(b.order_len() <= a_count + b_count);
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

    #[test]
    fn adopted_rings_take_positions_from_elsewhere() {
        let b = broker(u64::MAX);
        let counter = Arc::new(Counter(AtomicU64::new(0)));
        b.add_listener(counter.clone());
        let (ring, new) = b.adopt("m", 7, 10).unwrap();
        assert!(new);
        assert_eq!(ring.head(), Position { epoch: 7, seq: 10 });
        assert!(b.insert(&ring, 11, None, Bytes::from_static(b"11").into(), Duration::ZERO).is_some());
        assert!(b.insert(&ring, 11, None, Bytes::from_static(b"again").into(), Duration::ZERO).is_none(), "a repeat");
        assert_eq!(ring.info(), (1, 11, 11));
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "listeners hear inserts");
        // A cursor ahead of this copy (another node saw seq 12 first) starts there, not at 11.
        assert_eq!(ring.start(ReadFrom::After(Position { epoch: 7, seq: 12 })), (12, None));
        // Past the next position: what lay between could not be had.
        assert!(b.insert(&ring, 14, Some("e"), Bytes::from_static(b"14").into(), Duration::ZERO).is_some());
        assert_eq!(ring.info(), (1, 14, 14));
        assert!(ring.read_after(11, 10).lost);
        b.skip_to(&ring, 20);
        assert_eq!(ring.info(), (0, 21, 20));
        // The same epoch again: the same ring; another epoch: a reset (its subscribers are told).
        assert!(Arc::ptr_eq(&b.adopt("m", 7, 0).unwrap().0, &ring));
        let (again, new) = b.adopt("m", 8, 0).unwrap();
        assert!(new && again.epoch == 8);
        assert!(ring.is_deleted() && ring.was_reset());
        assert_eq!(counter.0.load(Ordering::Relaxed), 102);
        let (_, gap) = again.start(ReadFrom::After(Position { epoch: 7, seq: 20 }));
        assert!(gap.is_some(), "a cursor from the lost epoch gets a gap");
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

    #[test]
    fn concurrent_publishes_keep_the_byte_bound_and_the_index_bounded() {
        let b = Arc::new(broker_with(1000, Duration::from_secs(60), 200_000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let channel = format!("t{t}c{}", i % 50);
                        b.publish(&channel, None, Bytes::from(vec![b'x'; 100]).into()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let held: usize = (0..4)
            .flat_map(|t| (0..50).map(move |c| format!("t{t}c{c}")))
            .map(|name| b.channel(&name).map_or(0, |c| c.info().0))
            .sum();
        assert!(b.history_bytes() <= 200_000, "{} bytes held", b.history_bytes());
        assert!(held > 100, "the bound keeps the newest messages: {held}");
        assert!(b.order_len() <= 2 * held + ORDER_STRIPES, "{} entries for {held} held", b.order_len());
    }
}
