//! A channel: its history ring (which is also the fan-out ring: subscribers read it at their own
//! positions), its epoch, and the waiters of long polls.
//!
//! Every channel of a broker adds to shared [`Totals`]: the bytes and count of the messages it
//! holds (the global history bounds and `history_bytes`) and the bytes of its own structure
//! (`channel_bytes`), so the broker can report and bound both without visiting every channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::message::{Message, Payload};

/// A place in a channel: "everything up to and including `seq` of epoch `epoch` was seen".
/// Sequence numbers start at 1; `seq == 0` is before the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes whenever the channel's history is lost or reset.
    pub epoch: u32,
    /// The last sequence number seen.
    pub seq: u64,
}

/// Where a new subscriber starts in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Only messages published from now on.
    Now,
    /// The last `n` messages kept, then live (`?history=N`).
    Last(u64),
    /// After this position (a cursor).
    After(Position),
}

/// Messages a subscriber asked for that are no longer kept: told to it before what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The channel.
    pub channel: Arc<str>,
    /// The position the subscriber asked to resume after.
    pub asked: Position,
    /// The channel's current epoch.
    pub epoch: u32,
    /// The first sequence number still kept (what the subscriber gets next).
    pub first_available: u64,
}

/// The bounds on one channel's history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Messages kept per channel.
    pub messages: usize,
    /// Age after which a message is dropped.
    pub max_age: Duration,
}

/// Stripes of the broker's publish-order index: a publish locks only its channel's stripe.
pub(crate) const ORDER_STRIPES: usize = 16;

/// What all channels of one broker hold, kept up to date by each channel as it changes.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Bytes of the messages held (counted against `history_max_bytes`).
    pub history_bytes: AtomicU64,
    /// Messages held.
    pub messages: AtomicU64,
    /// Messages held, by publish-order stripe (a channel's stripe is its id modulo
    /// [`ORDER_STRIPES`]): what each stripe of the broker's index may keep entries for.
    pub stripe_messages: [AtomicU64; ORDER_STRIPES],
    /// Bytes of the channels' own structures: the `Channel` allocation, its name and its ring's
    /// buffer of message pointers (not the messages).
    pub channel_bytes: AtomicU64,
}

/// Bytes of one channel's allocation (the `Arc`'s two counters and the `Channel`), without its
/// name and ring buffer.
const CHANNEL_ALLOCATION_BYTES: u64 = (std::mem::size_of::<Channel>() + 2 * std::mem::size_of::<usize>()) as u64;
/// Bytes of an `Arc<str>` allocation beyond the string's own bytes (its two counters).
const ARC_STR_OVERHEAD: u64 = 2 * std::mem::size_of::<usize>() as u64;

/// One channel.
#[derive(Debug)]
pub struct Channel {
    /// Its name.
    pub name: Arc<str>,
    /// A process-unique id: a deleted and recreated channel gets a new one.
    pub id: u64,
    /// Its epoch (see [`Position`]).
    pub epoch: u32,
    history: Mutex<History>,
    bounds: HistoryBounds,
    /// What all channels of the broker hold (shared).
    totals: Arc<Totals>,
    /// Wakes long polls waiting on this channel.
    waiters: tokio::sync::Notify,
    /// Live subscribers (maintained by the server, for info and stats).
    pub subscribers: AtomicU64,
    /// Which of the server's push shards hold subscribers of this channel (bit `i`: shard `i`),
    /// kept by the shards, so a publish wakes only those. A shard sets its bit before it reads
    /// the history for a new subscriber, and a publish appends before it reads the bits: either
    /// the publish sees the bit or the shard's read sees the message.
    pub subscriber_shards: AtomicU64,
    deleted: AtomicBool,
    /// Deleted because the broker lost its history (a network broker's new epoch), not by a
    /// `DELETE`: subscribers are told `history_lost` and resume into the new epoch with a gap.
    reset: AtomicBool,
    /// Consecutive expiry rounds nobody held it (a network broker drops rings unheld a while).
    unheld_rounds: std::sync::atomic::AtomicU32,
    /// When the channel was created (a never-published channel is dropped after a while).
    pub created: Instant,
    /// A local copy of a channel another broker orders (see `MemoryBroker::adopt`): a cursor
    /// ahead of it is not forged but from a node that heard of newer messages first.
    pub(crate) mirror: bool,
    /// The older epoch this one continues, up to the last position it kept (see
    /// `MemoryBroker::adopt_continuing`).
    pub(crate) continues: Option<Position>,
}

#[derive(Debug, Default)]
struct History {
    messages: VecDeque<Arc<Message>>,
    /// The sequence number of the newest message (0 before any).
    last_seq: u64,
    bytes: u64,
}

impl History {
    /// The first sequence number kept (`last_seq + 1` when empty).
    fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.messages.len() as u64
    }

    /// Bytes of the ring's buffer of message pointers.
    fn ring_bytes(&self) -> u64 {
        (self.messages.capacity() * std::mem::size_of::<Arc<Message>>()) as u64
    }
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Read {
    /// Messages after the position, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// The position was older than the oldest kept message: something was lost in between.
    pub lost: bool,
}

impl Channel {
    pub(crate) fn new(name: Arc<str>, id: u64, epoch: u32, bounds: HistoryBounds, totals: Arc<Totals>) -> Channel {
        totals
            .channel_bytes
            .fetch_add(CHANNEL_ALLOCATION_BYTES + ARC_STR_OVERHEAD + name.len() as u64, Ordering::Relaxed);
        Channel {
            name,
            id,
            epoch,
            history: Mutex::new(History::default()),
            bounds,
            totals,
            waiters: tokio::sync::Notify::new(),
            subscribers: AtomicU64::new(0),
            subscriber_shards: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            unheld_rounds: Default::default(),
            created: Instant::now(),
            mirror: false,
            continues: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest position.
    pub fn head(&self) -> Position {
        Position { epoch: self.epoch, seq: self.lock().last_seq }
    }

    /// Appends a message (under the lock, so sequence numbers follow publish order) and trims.
    pub(crate) fn append(&self, event: Option<&str>, payload: Payload) -> Arc<Message> {
        // Encoded before the lock: only the position and the cursor after it are made under it.
        let mut message = Message::encode(self.name.clone(), event, payload);
        let mut history = self.lock();
        let position = Position { epoch: self.epoch, seq: history.last_seq + 1 };
        message.place(position, Instant::now());
        let message = Arc::new(message);
        history.last_seq = position.seq;
        self.push(&mut history, message.clone(), Instant::now());
        drop(history);
        self.waiters.notify_waiters();
        message
    }

    /// Starts an empty ring after `seq` (a network broker's newest message when the ring opens).
    pub(crate) fn start_after(&self, seq: u64) {
        self.lock().last_seq = seq;
    }

    /// Puts a message that another broker placed at `seq` and that was published `age` ago:
    /// `None` for a repeat (at or before the newest); past the next position, the ring starts
    /// again at it (what lay between could not be had).
    pub(crate) fn insert(
        &self,
        seq: u64,
        event: Option<&str>,
        payload: Payload,
        age: Duration,
    ) -> Option<Arc<Message>> {
        let mut message = Message::encode(self.name.clone(), event, payload);
        let mut history = self.lock();
        if seq <= history.last_seq {
            return None;
        }
        if seq > history.last_seq + 1 {
            while !history.messages.is_empty() {
                self.pop_oldest(&mut history);
            }
        }
        let now = Instant::now();
        message.place(Position { epoch: self.epoch, seq }, now.checked_sub(age).unwrap_or(now));
        let message = Arc::new(message);
        history.last_seq = seq;
        self.push(&mut history, message.clone(), now);
        drop(history);
        self.waiters.notify_waiters();
        Some(message)
    }

    /// Empties the ring and moves its newest position on to `seq` (if it is ahead).
    pub(crate) fn skip_to(&self, seq: u64) {
        let mut history = self.lock();
        if seq <= history.last_seq {
            return;
        }
        while !history.messages.is_empty() {
            self.pop_oldest(&mut history);
        }
        history.last_seq = seq;
        drop(history);
        self.waiters.notify_waiters();
    }

    /// Adds a placed message at the ring's end, counts it, and trims.
    fn push(&self, history: &mut History, message: Arc<Message>, now: Instant) {
        let size = message.size() as u64;
        history.bytes += size;
        self.totals.history_bytes.fetch_add(size, Ordering::Relaxed);
        self.totals.messages.fetch_add(1, Ordering::Relaxed);
        self.stripe_messages().fetch_add(1, Ordering::Relaxed);
        let ring_before = history.ring_bytes();
        history.messages.push_back(message);
        // The ring's buffer only grows here (and is released in `expire`): count what it took.
        self.totals.channel_bytes.fetch_add(history.ring_bytes() - ring_before, Ordering::Relaxed);
        self.trim(history, now);
    }

    /// Drops messages beyond the count bound or older than the age bound.
    fn trim(&self, history: &mut History, now: Instant) {
        while let Some(oldest) = history.messages.front() {
            let too_many = history.messages.len() > self.bounds.messages;
            let too_old = now.duration_since(oldest.published_at) > self.bounds.max_age;
            if !(too_many || too_old) {
                break;
            }
            self.pop_oldest(history);
        }
    }

    fn pop_oldest(&self, history: &mut History) {
        if let Some(message) = history.messages.pop_front() {
            let size = message.size() as u64;
            history.bytes -= size;
            self.totals.history_bytes.fetch_sub(size, Ordering::Relaxed);
            self.totals.messages.fetch_sub(1, Ordering::Relaxed);
            self.stripe_messages().fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops expired messages (called periodically so quiet channels age too). A ring left empty
    /// gives its buffer back: a quiet channel that is held (subscribed) keeps only its structure.
    pub fn expire(&self) {
        let mut history = self.lock();
        self.trim(&mut history, Instant::now());
        if history.messages.is_empty() && history.messages.capacity() > 0 {
            self.totals.channel_bytes.fetch_sub(history.ring_bytes(), Ordering::Relaxed);
            history.messages = VecDeque::new();
        }
    }

    /// Whether no message is kept (none published, or all expired, evicted or trimmed).
    pub fn holds_no_history(&self) -> bool {
        self.lock().messages.is_empty()
    }

    /// Drops messages up to and including `seq` (the broker's global byte bound).
    pub(crate) fn evict_through(&self, seq: u64) {
        let mut history = self.lock();
        while history.messages.front().is_some_and(|m| m.position.seq <= seq) {
            self.pop_oldest(&mut history);
        }
    }

    /// Whether the message `seq` is still held.
    pub(crate) fn holds(&self, seq: u64) -> bool {
        let history = self.lock();
        seq >= history.first_seq() && seq <= history.last_seq
    }

    /// Resolves where a new subscriber starts, and the gap to report if its cursor points at
    /// messages no longer kept.
    pub fn start(&self, from: ReadFrom) -> (u64, Option<Gap>) {
        let history = self.lock();
        let before_first = history.first_seq() - 1;
        match from {
            ReadFrom::Now => (history.last_seq, None),
            ReadFrom::Last(n) => (history.last_seq.saturating_sub(n).max(before_first), None),
            ReadFrom::After(asked) if self.continues.is_some_and(|previous| previous.epoch == asked.epoch) => {
                // A cursor of the epoch this one continues: what it saw up to the last position
                // kept is here under the new epoch, what came after may be lost. It resumes after
                // the older of the two (never sent what it saw again), told of the possible loss.
                let kept = self.continues.map_or(0, |previous| previous.seq);
                let resume = asked.seq.min(kept).max(before_first).min(history.last_seq);
                let gap = Gap { channel: self.name.clone(), asked, epoch: self.epoch, first_available: resume + 1 };
                (resume, Some(gap))
            }
            ReadFrom::After(asked) => {
                // A cursor that had seen nothing of an older epoch lost nothing if this epoch's
                // history is whole (a channel dropped unused and created again).
                let saw_nothing = asked.seq == 0 && history.first_seq() == 1;
                let lost = !saw_nothing && (asked.epoch != self.epoch || asked.seq < before_first);
                if lost {
                    let gap = Gap {
                        channel: self.name.clone(),
                        asked,
                        epoch: self.epoch,
                        first_available: history.first_seq(),
                    };
                    (before_first, Some(gap))
                } else if self.mirror {
                    // Beyond the newest: another node handed out that cursor before this copy
                    // heard of the message; it starts there (never sends what it has seen).
                    (asked.seq, None)
                } else {
                    // A position beyond the newest (only a forged cursor) means "now".
                    (asked.seq.min(history.last_seq), None)
                }
            }
        }
    }

    /// Messages after `seq`, at most `max` of them.
    pub fn read_after(&self, seq: u64, max: usize) -> Read {
        let history = self.lock();
        let first = history.first_seq();
        let lost = seq + 1 < first;
        let skip = (seq + 1).saturating_sub(first) as usize;
        let messages = history.messages.iter().skip(skip).take(max).cloned().collect();
        Read { messages, lost }
    }

    /// Messages kept and their sequence range: (count, first seq, last seq).
    pub fn info(&self) -> (usize, u64, u64) {
        let history = self.lock();
        (history.messages.len(), history.first_seq(), history.last_seq)
    }

    /// A future that completes at the next publish (or delete). Create it, check for messages,
    /// then await it, so no publish between the check and the wait is missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.waiters.notified()
    }

    /// Whether nothing was ever published here.
    pub fn is_unused(&self) -> bool {
        self.lock().last_seq == 0
    }

    /// Whether the channel was deleted (its subscribers get a final notice and close).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether it was dropped because the broker lost its history (see [`MemoryBroker::adopt`]):
    /// its subscribers resume into the channel's new epoch, with a gap.
    ///
    /// [`MemoryBroker::adopt`]: crate::MemoryBroker::adopt
    pub fn was_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    pub(crate) fn mark_reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.mark_deleted();
    }

    /// Records whether an expiry round found it held.
    pub(crate) fn note_held(&self, held: bool) {
        if held {
            self.unheld_rounds.store(0, Ordering::Relaxed);
        } else {
            self.unheld_rounds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Consecutive expiry rounds that found it unheld.
    pub(crate) fn unheld_rounds(&self) -> u32 {
        self.unheld_rounds.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        let mut history = self.lock();
        while !history.messages.is_empty() {
            self.pop_oldest(&mut history);
        }
        drop(history);
        self.waiters.notify_waiters();
    }
}

impl Channel {
    /// This channel's stripe of the publish-order index.
    pub(crate) fn stripe(&self) -> usize {
        (self.id % ORDER_STRIPES as u64) as usize
    }

    fn stripe_messages(&self) -> &AtomicU64 {
        &self.totals.stripe_messages[self.stripe()]
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let history = self.history.get_mut().unwrap_or_else(|e| e.into_inner());
        // A channel dropped with messages (deleted channels are emptied; others are dropped only
        // when empty, but a test or a future broker may do otherwise) gives their bytes back too.
        for message in history.messages.drain(..) {
            self.totals.history_bytes.fetch_sub(message.size() as u64, Ordering::Relaxed);
            self.totals.messages.fetch_sub(1, Ordering::Relaxed);
            self.totals.stripe_messages[(self.id % ORDER_STRIPES as u64) as usize].fetch_sub(1, Ordering::Relaxed);
        }
        let own = CHANNEL_ALLOCATION_BYTES + ARC_STR_OVERHEAD + self.name.len() as u64 + history.ring_bytes();
        self.totals.channel_bytes.fetch_sub(own, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn channel(messages: usize) -> Channel {
        let bounds = HistoryBounds { messages, max_age: Duration::from_secs(3600) };
        Channel::new("c".into(), 1, 77, bounds, Arc::default())
    }

    fn publish(channel: &Channel, n: usize) {
        for i in 0..n {
            channel.append(None, Bytes::from(format!("m{i}")).into());
        }
    }

    #[test]
    fn history_keeps_the_last_n_and_reads_after_a_position() {
        let c = channel(3);
        publish(&c, 5);
        assert_eq!(c.info(), (3, 3, 5));
        let read = c.read_after(3, 10);
        assert!(!read.lost);
        assert_eq!(read.messages.iter().map(|m| m.position.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(c.read_after(1, 10).lost);
        assert!(!c.read_after(2, 10).lost);
        assert_eq!(c.read_after(5, 10).messages.len(), 0);
    }

    #[test]
    fn start_positions_and_gaps() {
        let c = channel(3);
        publish(&c, 5);
        assert_eq!(c.start(ReadFrom::Now), (5, None));
        assert_eq!(c.start(ReadFrom::Last(2)), (3, None));
        assert_eq!(c.start(ReadFrom::Last(100)), (2, None));
        assert_eq!(c.start(ReadFrom::After(Position { epoch: 77, seq: 2 })), (2, None));
        let (start, gap) = c.start(ReadFrom::After(Position { epoch: 77, seq: 1 }));
        assert_eq!(start, 2);
        assert_eq!(gap.unwrap().first_available, 3);
        // Another epoch: the history was reset since; replay all that is kept, with a gap.
        let (start, gap) = c.start(ReadFrom::After(Position { epoch: 76, seq: 5 }));
        assert_eq!((start, gap.map(|g| g.asked.epoch)), (2, Some(76)));
        // A position from the future is "now".
        assert_eq!(c.start(ReadFrom::After(Position { epoch: 77, seq: 99 })), (5, None));
        // A cursor that saw nothing of an older epoch: no gap while this epoch's history is whole.
        let fresh = channel(3);
        publish(&fresh, 2);
        assert_eq!(fresh.start(ReadFrom::After(Position { epoch: 1, seq: 0 })), (0, None));
    }

    #[test]
    fn cursors_of_a_continued_epoch_resume_at_what_was_kept_with_a_gap() {
        // Epoch 76 kept up to 4 when it was reopened as epoch 77 (a power cut may have lost more).
        let mut c = channel(10);
        c.continues = Some(Position { epoch: 76, seq: 4 });
        c.start_after(2);
        for seq in 3..=6 {
            c.insert(seq, None, Bytes::from_static(b"m").into(), Duration::ZERO);
        }
        // Saw up to 3, which was kept: resumes after 3, told that the tail may be lost.
        let (start, gap) = c.start(ReadFrom::After(Position { epoch: 76, seq: 3 }));
        assert_eq!((start, gap.map(|g| (g.asked.seq, g.epoch, g.first_available))), (3, Some((3, 77, 4))));
        // Saw up to 9, lost after 4: resumes after 4 (everything newer is new to it).
        let (start, gap) = c.start(ReadFrom::After(Position { epoch: 76, seq: 9 }));
        assert_eq!((start, gap.map(|g| g.first_available)), (4, Some(5)));
        // Older than what is kept: from the first kept.
        let (start, _) = c.start(ReadFrom::After(Position { epoch: 76, seq: 1 }));
        assert_eq!(start, 2);
        // The current epoch resumes as usual.
        assert_eq!(c.start(ReadFrom::After(Position { epoch: 77, seq: 5 })), (5, None));
    }

    #[test]
    fn old_messages_expire() {
        let bounds = HistoryBounds { messages: 100, max_age: Duration::from_millis(1) };
        let c = Channel::new("c".into(), 1, 1, bounds, Arc::default());
        publish(&c, 3);
        std::thread::sleep(Duration::from_millis(5));
        c.expire();
        assert_eq!(c.info(), (0, 4, 3));
        assert!(c.read_after(0, 10).lost);
    }

    #[test]
    fn totals_follow_the_channel_and_its_ring() {
        let totals = Arc::new(Totals::default());
        let bounds = HistoryBounds { messages: 100, max_age: Duration::from_millis(1) };
        let c = Channel::new("room".into(), 1, 1, bounds, totals.clone());
        let bare = totals.channel_bytes.load(Ordering::Relaxed);
        assert_eq!(bare, CHANNEL_ALLOCATION_BYTES + ARC_STR_OVERHEAD + 4);
        publish(&c, 50);
        assert_eq!(totals.messages.load(Ordering::Relaxed), 50);
        assert!(totals.history_bytes.load(Ordering::Relaxed) > 0);
        assert!(totals.channel_bytes.load(Ordering::Relaxed) >= bare + 50 * 8, "the ring's buffer counts");
        std::thread::sleep(Duration::from_millis(5));
        c.expire();
        assert!(c.holds_no_history());
        assert_eq!(totals.messages.load(Ordering::Relaxed), 0);
        assert_eq!(totals.history_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(totals.channel_bytes.load(Ordering::Relaxed), bare, "an emptied ring gives its buffer back");
        publish(&c, 3);
        drop(c);
        assert_eq!(totals.channel_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(totals.history_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn publish_wakes_a_waiter_registered_before_the_check() {
        let c = Arc::new(channel(10));
        let waiter = c.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        assert!(c.read_after(0, 10).messages.is_empty());
        publish(&c, 1);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken");
    }
}
