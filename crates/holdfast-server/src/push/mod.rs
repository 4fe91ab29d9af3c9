//! Push shards: streaming subscribers (SSE, NDJSON, iframe) live here, outside the tokio runtime.
//!
//! Once a streaming response's head is sent, its socket moves to a shard: a thread with its own
//! `mio::Poll` that owns the sockets of many subscribers. A subscriber is a slot (socket,
//! positions, framing: about 150 B) and not a task. When a channel gets a message the shard
//! writes, for each subscriber of that channel, everything after its position in one `writev`
//! whose pieces are the message's shared encodings (`Gather`), at most [`BATCH_BYTES`] at a time.
//! A subscriber whose socket is full keeps the unsent tail (`Pending`: references to the shared
//! bytes, not a copy) and waits for writability. What a subscriber may hold is bounded by
//! configuration whatever its peer does:
//! - one that falls more than `max_pending_bytes` behind, or out of the history, is cut with
//!   `slow_consumer`; one whose socket takes nothing for `send_timeout` with `send_timeout`;
//! - everything else queued for it (pongs, op answers) counts against `max_pending_bytes` too,
//!   and a peer that floods them without reading is cut with `flooding`;
//! - input is read at most [`READ_BUDGET`] bytes per connection per wake-up, and WebSocket
//!   messages are decoded (inflated) at most [`MESSAGE_BUDGET`] bytes per wake-up and
//!   [`MESSAGE_BYTES_PER_SECOND`] on average, so one flooding peer cannot starve the others.
//!
//! Every close the server initiates sends the transport's `holdfast.closed` notice with the
//! reason and the cursor first (best effort when the socket is full), then ends the response
//! cleanly. Heartbeats go to every subscriber quiet for `heartbeat_interval`.
//!
//! What it does not own: response heads, gap notices and the choice of start positions (the
//! transport does those in the connection task before handing the socket over).

mod longpoll;
mod members;
mod places;
mod websocket;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use holdfast_hub::{Channel, Message, PublishListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use self::places::{Place, Places};
use crate::handover::{Extra, LongPollReply, Resume, StreamSetup};
use crate::socket::tls::TlsSession;
use crate::socket::{ConnState, LinkMut, SessionsBySlot, StdLink};
use crate::stats::ShardTally;
use crate::subscription::{channel_list, closed_json, cursor_of};
use crate::wire::frame::{self, Framing, Gather, Id, SharedDeflater, LAST_CHUNK};
use crate::wire::pending::Pending;
use crate::{CloseReason, Server};

const WAKER_TOKEN: Token = Token(usize::MAX);
/// Messages per `writev` (each is up to 9 I/O vectors; the kernel takes 1,024).
const MESSAGES_PER_WRITE: usize = 64;
/// Bytes of messages gathered for one `writev` (at least one message): enough to fill a socket
/// buffer in one system call, small enough that the unsent tail a blocked subscriber keeps stays
/// well under `max_pending_bytes`.
const BATCH_BYTES: usize = 256 * 1024;
/// Input read from one connection per wake-up before the shard moves on to the others.
pub(crate) const READ_BUDGET: usize = 64 * 1024;
/// Input read and WebSocket message bytes handled per round over all connections: past it, the
/// rest waits for the next round, so a round stays short (about a millisecond of work) and the
/// messages published meanwhile go out at the start of the next one, however many peers flood.
pub(crate) const ROUND_BUDGET: usize = 256 * 1024;
/// WebSocket message bytes (after inflating) handled for one connection per wake-up (at least one
/// message).
const MESSAGE_BUDGET: usize = 256 * 1024;
/// WebSocket message bytes (after inflating) one connection may have handled per second on
/// average: permessage-deflate turns 1 KB into 1 MB, so without this bound a small stream of
/// compressed frames could keep the shard busy inflating.
const MESSAGE_BYTES_PER_SECOND: u64 = 16 << 20;
/// Longest a shard sleeps between heartbeat scans.
const MAX_TICK: Duration = Duration::from_secs(1);
/// Hand-overs whose room the inbox keeps between rounds (136 B each).
const ADDED_KEPT: usize = 64;

/// A socket handed to a shard, with what the transport set up.
type Added = (StdLink, ConnState, StreamSetup);

/// All shards of a server.
pub(crate) struct PushHub {
    shards: Vec<Arc<ShardShared>>,
    next_shard: std::sync::atomic::AtomicUsize,
    /// `push_spread_after`: see [`PushHub::shard_for`].
    spread_after: u64,
}

struct ShardShared {
    inbox: Mutex<Inbox>,
    waker: Waker,
}

#[derive(Default)]
struct Inbox {
    added: Vec<Added>,
    dirty: Vec<Arc<Channel>>,
    dirty_ids: HashSet<u64>,
    deleted: Vec<Arc<Channel>>,
    disconnect: Vec<Arc<Channel>>,
    queries: Vec<tokio::sync::oneshot::Sender<Vec<SubscriberInfo>>>,
    /// WebSocket op answers that waited on a network broker: (slot, connection id, outcome).
    deferred: Vec<(usize, u64, websocket::Deferred)>,
    /// A graceful drain began: close every subscriber, spread over this long.
    drain: Option<Duration>,
}

impl PushHub {
    /// Creates `count` shards and the pollers their threads will run (see [`PushHub::start`]);
    /// a channel's subscribers spread over them once it has `spread_after` (see
    /// [`PushHub::shard_for`]).
    pub fn new(count: usize, spread_after: usize) -> io::Result<(PushHub, Vec<Poll>)> {
        let mut shards = Vec::new();
        let mut polls = Vec::new();
        for _ in 0..count.clamp(1, crate::config::MAX_PUSH_THREADS) {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
            shards.push(Arc::new(ShardShared { inbox: Mutex::default(), waker }));
            polls.push(poll);
        }
        Ok((PushHub { shards, next_shard: Default::default(), spread_after: spread_after as u64 }, polls))
    }

    /// Starts the shard threads once the server exists; each ends when the server is gone or
    /// drained.
    /// `resume` takes back a connection whose long poll was answered (see `longpoll`).
    pub fn start(&self, polls: Vec<Poll>, server: Weak<Server>, resume: Resume) -> io::Result<()> {
        for (index, (poll, shared)) in polls.into_iter().zip(&self.shards).enumerate() {
            let shared = shared.clone();
            let server = server.clone();
            let resume = resume.clone();
            std::thread::Builder::new()
                .name(format!("holdfast-push-{index}"))
                .spawn(move || Shard::new(index, poll, shared, server, resume).run())?;
        }
        Ok(())
    }

    /// Hands a subscriber's socket (head already sent) to a shard.
    pub fn add(&self, stream: StdLink, conn: ConnState, setup: StreamSetup) {
        let shard = &self.shards[self.shard_for(&setup.positions)];
        shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).added.push((stream, conn, setup));
        let _ = shard.waker.wake();
    }

    /// Where a new subscriber goes. A subscriber of one channel joins the channel's home shard
    /// (by channel id) while the channel has fewer than `push_spread_after` subscribers: a
    /// publish to it then wakes one thread, which writes every copy while the other cores stay
    /// free for the runtime, other channels and, here, the clients. Past it the fan-out is worth
    /// spreading (at 1-2 µs of a core per delivery, 1,024 subscribers are 1-2 ms of one shard):
    /// the next subscribers fill the other shards to the same share, then all take turns, as
    /// subscribers of several channels always do. Measured on 2 cores (bench/RESULTS.md): a
    /// 1,000-subscriber long-poll channel's p99 23 ms on one shard, 28 ms spread over two; a
    /// 1,000-message burst to 1,000 subscribers 0.66x as fast on one.
    fn shard_for(&self, positions: &[(Arc<Channel>, u64)]) -> usize {
        let count = self.shards.len();
        let next = || self.next_shard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let [(channel, _)] = positions else { return next() % count };
        if count == 1 {
            return 0;
        }
        let home = (channel.id % count as u64) as usize;
        // The shards count a subscriber when it joins, so a burst of arrivals reads a count a
        // round behind: the split is even to within a round's arrivals, which is enough.
        let subscribers = channel.subscribers.load(std::sync::atomic::Ordering::Relaxed);
        if subscribers < self.spread_after {
            home
        } else if subscribers < self.spread_after.saturating_mul(count as u64) {
            (home + 1 + next() % (count - 1)) % count
        } else {
            next() % count
        }
    }

    /// Closes the streaming subscribers of a channel (they reconnect and resume from their
    /// cursors): for moving load off a node, and for testing clients' resume.
    pub fn disconnect(&self, channel: &Arc<Channel>) {
        for shard in self.shards_of(channel) {
            shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).disconnect.push(channel.clone());
            let _ = shard.waker.wake();
        }
    }

    /// The shards that hold subscribers of `channel`.
    fn shards_of<'a>(&'a self, channel: &Channel) -> impl Iterator<Item = &'a Arc<ShardShared>> + 'a {
        let mask = channel.subscriber_shards.load(std::sync::atomic::Ordering::SeqCst);
        self.shards.iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, shard)| shard)
    }

    /// Lists every streaming subscriber (each shard answers between two rounds).
    pub async fn list(&self) -> Vec<SubscriberInfo> {
        let mut answers = Vec::new();
        for shard in &self.shards {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).queries.push(tx);
            let _ = shard.waker.wake();
            answers.push(rx);
        }
        let mut all = Vec::new();
        for answer in answers {
            // A shard that has stopped (draining) answers nothing.
            if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(2), answer).await {
                all.extend(list);
            }
        }
        all
    }

    /// Graceful shutdown: held long polls are answered and waiting long-poll connections closed
    /// at once; every streaming subscriber gets its final notice and is closed at a moment of
    /// its own within `spread` (see [`crate::drain::close_offsets_ms`]). A shard's thread ends
    /// when its last subscriber is gone.
    pub fn drain(&self, spread: Duration) {
        for shard in &self.shards {
            shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).drain = Some(spread);
            let _ = shard.waker.wake();
        }
    }
}

impl Drop for PushHub {
    fn drop(&mut self) {
        self.drain(Duration::ZERO);
    }
}

impl PublishListener for PushHub {
    fn published(&self, channel: &Arc<Channel>) {
        for shard in self.shards_of(channel) {
            let mut inbox = shard.inbox.lock().unwrap_or_else(|e| e.into_inner());
            // A channel already marked dirty will be read to its end anyway.
            if inbox.dirty_ids.insert(channel.id) {
                inbox.dirty.push(channel.clone());
                drop(inbox);
                let _ = shard.waker.wake();
            }
        }
    }

    fn deleted(&self, channel: &Arc<Channel>) {
        for shard in self.shards_of(channel) {
            shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).deleted.push(channel.clone());
            let _ = shard.waker.wake();
        }
    }
}

/// One streaming subscriber.
struct Subscriber {
    /// Its socket; on a TLS listener its session is in the shard's `sessions`.
    stream: std::net::TcpStream,
    conn: ConnState,
    framing: Framing,
    /// Boxed: 8 bytes in every slot for what few need.
    extra: Option<Box<Extra>>,
    /// A held long poll: how to answer it (8 bytes, which the slot's 128-byte size class has
    /// room for anyway).
    longpoll: Option<LongPollReply>,
    /// Its channels, with where it is in each (one inline).
    places: Places,
    /// Bytes accepted for this subscriber but not yet taken by its socket. Boxed so the rare
    /// case costs every subscriber slot 8 bytes.
    pending: Option<Box<Pending>>,
    /// Milliseconds on [`clock_ms_at`]'s clock of the last write that made progress (heartbeats
    /// go to the quiet ones; a blocked one is cut after `send_timeout`).
    last_write: u64,
    /// Seconds on [`clock_ms_at`]'s clock when the subscription began (for `/admin/connections`).
    /// Both are plain numbers rather than `Instant`s (16 B each): the slot fits 128 B.
    opened: u32,
    /// Milliseconds of quiet after which it gets a heartbeat (`Holdfast-Heartbeat`).
    heartbeat_ms: u32,
    bytes_out: u64,
    /// WebSocket subscribers only.
    ws: Option<Box<websocket::WsPeer>>,
}

impl Subscriber {
    /// The iframe callback, if any.
    fn callback(&self) -> Option<&str> {
        match self.extra.as_deref() {
            Some(Extra::Callback(callback)) => Some(callback),
            _ => None,
        }
    }

    /// The cursor of its places now.
    fn cursor(&self) -> String {
        cursor_of(self.places.iter().map(|p| (&*p.channel, p.seq)))
    }

    /// Its places as the transports' positions (channel, last sequence number).
    fn positions(&self) -> crate::subscription::Positions {
        self.places.iter().map(|p| (p.channel.clone(), p.seq)).collect()
    }

    fn is_longpoll(&self) -> bool {
        self.framing.format == frame::Format::LongPoll
    }

    /// A long-poll client's connection, answered, waiting in the shard for its next request.
    fn is_awaiting(&self) -> bool {
        self.is_longpoll() && self.longpoll.is_none()
    }
}

/// One subscriber as `/admin/connections` shows it.
pub(crate) struct SubscriberInfo {
    pub id: u64,
    pub peer: std::net::SocketAddr,
    pub transport: &'static str,
    pub channels: Vec<String>,
    pub age: Duration,
    pub idle: Duration,
    pub requests: u32,
    /// Bytes the peer sent since it came to the shard (WebSocket frames).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Its heartbeat interval (a held long poll: `longpoll_timeout`).
    pub heartbeat: Duration,
    pub blocked: bool,
    /// Bytes queued, not yet taken by the socket.
    pub pending_bytes: u64,
    /// The push shard that holds it.
    pub shard: usize,
}

struct Shard {
    poll: Poll,
    shared: Arc<ShardShared>,
    server: Weak<Server>,
    /// Boxed: an empty or spare slot costs 8 bytes instead of a whole subscriber, which matters
    /// when the vector's capacity doubles past 16k subscribers.
    slots: Vec<Option<Box<Subscriber>>>,
    /// On a TLS listener, each subscriber's TLS session by slot: beside the slots rather than
    /// in them, so a plain subscriber's slot keeps its 128-byte size class.
    sessions: Sessions,
    free: Vec<usize>,
    /// This shard's number: its bit in channels' `subscriber_shards`.
    id: usize,
    /// Takes back the connection of an answered long poll (a new runtime task).
    resume: Resume,
    /// The subscribers of each channel that has some here (see `members`).
    by_channel: HashMap<u64, Vec<u32>>,
    /// Subscribers to catch up after the op being handled (a WebSocket subscribe).
    deliver_soon: Vec<usize>,
    /// Connections with input left unread after their budget ran out, each with the time (on
    /// [`clock_ms_at`]'s clock) before which it is not read again (throttled WebSockets).
    more_input: Vec<(usize, u64)>,
    /// What is left of this round's [`ROUND_BUDGET`].
    round_budget: usize,
    /// While a WebSocket's input is being handled: that connection, whose answers (pongs, op
    /// answers) gather in `replies` and go out in one write when its turn ends.
    batching: Option<usize>,
    replies: Vec<u8>,
    /// When each publish op answered in `replies` was read: its latency is observed once
    /// `replies` is written.
    publishes_answered: Vec<Instant>,
    /// Held long polls by deadline (on [`clock_ms_at`]'s clock), with their slot and the low
    /// half of their connection id (a slot answered early may hold another connection by then).
    /// First in, first due: all wait the same `longpoll_timeout`. 16 bytes an entry; a poll
    /// answered early leaves its entry behind, so at most twice the subscribers plus 64 are
    /// kept (see `longpoll::drop_stale`).
    longpoll_deadlines: std::collections::VecDeque<longpoll::Deadline>,
    /// Answered long polls' connections waiting for their next request, by when they go to the
    /// runtime (`park_after`; FIFO for the same reason).
    awaiting_deadlines: std::collections::VecDeque<longpoll::Deadline>,
    /// Where a waiting connection's next request is peeked at (`max_header_bytes`, one per shard).
    peek_buf: Vec<u8>,
    /// The shortest heartbeat interval any subscriber here has had: the heartbeat scan runs at a
    /// quarter of it, so a heartbeat goes out within 1.25 intervals of quiet.
    shortest_heartbeat: Duration,
    /// Set once a graceful drain has begun here: subscribers handed over from then on are
    /// closed as they arrive, and the thread ends when the last slot is empty.
    draining: bool,
    /// During a drain, when each streaming subscriber is to be closed, soonest first (on
    /// [`clock_ms_at`]'s clock; the tag guards against a slot that changed hands meanwhile).
    drain_deadlines: std::collections::VecDeque<longpoll::Deadline>,
    /// Compresses messages for permessage-deflate subscribers (each message once).
    deflater: SharedDeflater,
    /// WebSocket ops out on the runtime (waiting on a network broker), by connection id; only
    /// connections with some are here (see `websocket::MAX_DEFERRED_OPS`).
    deferred_ops: HashMap<u64, u32>,
    /// The inbox's `added` of the previous round, emptied: given back to the inbox each round so
    /// a burst of subscribers fills the same vector instead of growing a new one every round
    /// (each growth leaves its smaller buffers in the allocator's thread caches, and the last
    /// one is freed here, on a thread that seldom allocates and so never trims its cache).
    spare_added: Vec<Added>,
    /// Bytes in and out and delivery latencies counted this round, added to the server's stats
    /// at its end: no atomic per delivery on this thread.
    tally: ShardTally,
    /// The deadline queues' length last added to the server's `push_deadlines`.
    deadlines_reported: usize,
}

/// Messages after a position, shared by the subscribers at that position during one round.
type ReadCache = HashMap<(u64, u64), Rc<holdfast_hub::channel::Read>>;

impl Shard {
    fn new(id: usize, poll: Poll, shared: Arc<ShardShared>, server: Weak<Server>, resume: Resume) -> Shard {
        Shard {
            poll,
            shared,
            server,
            slots: Vec::new(),
            sessions: Sessions::default(),
            free: Vec::new(),
            by_channel: HashMap::new(),
            id,
            resume,
            deliver_soon: Vec::new(),
            more_input: Vec::new(),
            round_budget: ROUND_BUDGET,
            batching: None,
            replies: Vec::new(),
            publishes_answered: Vec::new(),
            longpoll_deadlines: Default::default(),
            awaiting_deadlines: Default::default(),
            peek_buf: Vec::new(),
            shortest_heartbeat: Duration::MAX,
            draining: false,
            drain_deadlines: Default::default(),
            deflater: SharedDeflater::default(),
            deferred_ops: HashMap::new(),
            spare_added: Vec::new(),
            tally: ShardTally::default(),
            deadlines_reported: 0,
        }
    }

    fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_heartbeat_scan = Instant::now();
        loop {
            let Some(server) = self.server.upgrade() else { return };
            drop(server);
            let now = Instant::now();
            let mut timeout = next_heartbeat_scan.saturating_duration_since(now);
            let next_input = self.more_input.iter().map(|(_, at)| *at).min();
            let next_longpoll = self.longpoll_deadlines.front().map(|deadline| deadline.due);
            let next_awaiting = self.awaiting_deadlines.front().map(|deadline| deadline.due);
            let next_drain = self.drain_deadlines.front().map(|deadline| deadline.due);
            if let Some(at) = next_input.into_iter().chain(next_longpoll).chain(next_awaiting).chain(next_drain).min() {
                timeout = timeout.min(Duration::from_millis(at.saturating_sub(clock_ms_at(now))));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "push shard poll failed");
                }
            }
            let Some(server) = self.server.upgrade() else { return };
            let mut inbox = {
                let mut shared = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
                let inbox = std::mem::take(&mut *shared);
                shared.added = std::mem::take(&mut self.spare_added);
                inbox
            };
            if let Some(spread) = inbox.drain.filter(|_| !self.draining) {
                self.begin_drain(&server, spread);
            }
            for query in inbox.queries {
                let _ = query.send(self.describe(Instant::now()));
            }
            for (index, conn_id, outcome) in inbox.deferred {
                self.resume_deferred(&server, index, conn_id, outcome);
            }
            self.round_budget = ROUND_BUDGET;
            let mut cache = ReadCache::new();
            for (stream, conn, setup) in inbox.added.drain(..) {
                if let Some(index) = self.insert(&server, stream, conn, setup) {
                    // Frames sent right behind a WebSocket upgrade are handled first.
                    if self.slots[index].as_ref().is_some_and(|s| s.ws.as_ref().is_some_and(|w| w.input.is_some())) {
                        self.read_input(&server, index);
                    }
                    self.deliver(&server, index, &mut cache, Timing::CatchUp);
                    // Set up just as the drain began (new subscriptions are refused since).
                    if self.draining {
                        self.close(&server, index, CloseReason::Shutdown);
                    }
                }
            }
            // A subscriber with a shorter interval than any before brings the next scan forward.
            next_heartbeat_scan = next_heartbeat_scan.min(Instant::now() + self.heartbeat_tick(&server));
            if inbox.added.capacity() <= ADDED_KEPT {
                self.spare_added = inbox.added;
            }
            for channel in inbox.deleted {
                let started = (Instant::now(), thread_cpu_time());
                let before = self.members_of(channel.id);
                let reason = if channel.was_reset() { CloseReason::HistoryLost } else { CloseReason::ChannelDeleted };
                self.for_each_member(channel.id, |shard, index| {
                    shard.end(&server, index, reason, Some(&channel.name));
                });
                log_mass_close(reason.label(), &channel, self.id, before, started);
            }
            for channel in inbox.disconnect {
                let started = (Instant::now(), thread_cpu_time());
                let before = self.members_of(channel.id);
                self.for_each_member(channel.id, |shard, index| {
                    shard.close(&server, index, CloseReason::AdminDisconnect)
                });
                log_mass_close("admin disconnect", &channel, self.id, before, started);
            }
            for channel in inbox.dirty {
                self.for_each_member(channel.id, |shard, index| {
                    shard.deliver(&server, index, &mut cache, Timing::Live)
                });
            }
            for event in events.iter().filter(|e| e.token() != WAKER_TOKEN) {
                let index = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read_input(&server, index);
                }
                if event.is_writable() {
                    self.flush(&server, index, &mut cache);
                }
            }
            self.read_deferred_input(&server);
            self.expire_longpolls(&server, clock_ms_at(Instant::now()));
            self.expire_awaiting(&server, clock_ms_at(Instant::now()));
            self.close_drained(&server, clock_ms_at(Instant::now()));
            let now = Instant::now();
            if now >= next_heartbeat_scan {
                self.heartbeats(&server, now);
                if crate::auth::is_enabled(&server) {
                    self.expire_tokens(&server);
                }
                next_heartbeat_scan = now + self.heartbeat_tick(&server);
            }
            server.stats.absorb(&mut self.tally);
            let deadlines = self.longpoll_deadlines.len() + self.awaiting_deadlines.len();
            if deadlines != self.deadlines_reported {
                server.stats.push_deadlines_changed(self.deadlines_reported, deadlines);
                self.deadlines_reported = deadlines;
            }
            if self.draining && self.slots.iter().all(Option::is_none) {
                // Its queues go with it: whatever they still count leaves the gauge.
                server.stats.push_deadlines_changed(self.deadlines_reported, 0);
                tracing::debug!(shard = self.id, "push shard drained");
                return;
            }
        }
    }

    /// The drain begins here: held long polls are answered now (with their cursor), answered
    /// long polls' connections waiting for their next request are closed now (idle keep-alive
    /// connections), and every streaming subscriber is given its moment to be closed.
    fn begin_drain(&mut self, server: &Server, spread: Duration) {
        self.draining = true;
        let mut streaming = Vec::new();
        for index in 0..self.slots.len() {
            match self.slots[index].as_ref() {
                Some(sub) if sub.is_longpoll() => self.close(server, index, CloseReason::Shutdown),
                Some(sub) => streaming.push((index, sub.conn)),
                None => {}
            }
        }
        let start = clock_ms_at(Instant::now());
        let offsets = crate::drain::close_offsets_ms(streaming.len(), spread);
        let mut deadlines: Vec<longpoll::Deadline> = streaming
            .iter()
            .zip(offsets)
            .map(|((index, conn), offset)| longpoll::Deadline::new(start + offset, *index, conn))
            .collect();
        deadlines.sort_by_key(|deadline| deadline.due);
        self.drain_deadlines = deadlines.into();
        tracing::debug!(shard = self.id, streaming = streaming.len(), ?spread, "push shard draining");
        // With no spread everyone is due now.
        self.close_drained(server, start);
    }

    /// Closes the streaming subscribers whose moment in the drain has come (`shutdown`: the
    /// notice with their cursor, SSE's jittered `retry:`, WebSocket's 1012).
    fn close_drained(&mut self, server: &Server, now_ms: u64) {
        while let Some(deadline) = self.drain_deadlines.front().copied() {
            if deadline.due > now_ms {
                return;
            }
            self.drain_deadlines.pop_front();
            let index = deadline.index as usize;
            if self.slots.get(index).and_then(Option::as_ref).is_some_and(|sub| deadline.is_for(&sub.conn)) {
                self.close(server, index, CloseReason::Shutdown);
            }
        }
    }

    /// Reads again the connections whose input budget ran out in an earlier round (their socket
    /// reports nothing new: readiness is edge-triggered) once their throttle time has come.
    fn read_deferred_input(&mut self, server: &Server) {
        if self.more_input.is_empty() {
            return;
        }
        let now = clock_ms_at(Instant::now());
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.more_input).into_iter().partition(|(_, at)| *at <= now);
        self.more_input = later;
        // Oldest first; what the round's budget does not cover waits (in order) for the next.
        for (index, _) in due {
            self.read_input(server, index);
        }
    }

    fn insert(&mut self, server: &Server, stream: StdLink, conn: ConnState, setup: StreamSetup) -> Option<usize> {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let StdLink { socket: stream, tls } = stream;
        let fd = stream.as_raw_fd();
        if let Err(e) = self.registry().register(&mut SourceFd(&fd), Token(index), Interest::READABLE) {
            tracing::warn!(error = %e, "cannot register a subscriber");
            self.free.push(index);
            server.connection_closed(conn.id, conn.peer(), conn.served, CloseReason::IoError);
            return None;
        }
        server.stats.subscriber_opened(setup.framing.format);
        if setup.framing.format != frame::Format::LongPoll {
            self.shortest_heartbeat = self.shortest_heartbeat.min(Duration::from_millis(setup.heartbeat_ms.into()));
        }
        if let Some(tls) = tls {
            self.sessions.0.insert(index, tls);
        }
        self.slots[index] = Some(Box::new(Subscriber {
            stream,
            conn,
            framing: setup.framing,
            extra: setup.extra,
            longpoll: setup.longpoll,
            places: Places::default(),
            pending: None,
            last_write: clock_ms_at(Instant::now()),
            opened: (clock_ms_at(Instant::now()) / 1000) as u32,
            heartbeat_ms: setup.heartbeat_ms,
            bytes_out: 0,
            ws: setup
                .framing
                .format
                .is_websocket()
                .then(|| websocket::peer_for(server, setup.early_input, setup.inflate)),
        }));
        if setup.framing.format == frame::Format::LongPoll {
            let due = clock_ms_at(Instant::now()) + server.config().longpoll_timeout.as_millis() as u64;
            self.hold_until(due, index);
        }
        let places: Places = setup.positions.into_iter().map(|(channel, seq)| self.join(index, channel, seq)).collect();
        let deleted = places.iter().find(|p| p.channel.is_deleted()).map(|p| p.channel.clone());
        if let Some(sub) = self.slots[index].as_mut() {
            sub.places = places;
        }
        // Deleted (or reset) between its request and now: it missed the shard's notice.
        if let Some(channel) = deleted {
            let reason = if channel.was_reset() { CloseReason::HistoryLost } else { CloseReason::ChannelDeleted };
            self.end(server, index, reason, Some(&channel.name));
            return None;
        }
        Some(index)
    }

    /// Writes everything after the subscriber's positions, in `writev`s of up to
    /// [`MESSAGES_PER_WRITE`] messages and about [`BATCH_BYTES`], until it is caught up or its
    /// socket is full. `timing` says whether the messages count in the delivery latency.
    fn deliver(&mut self, server: &Server, index: usize, cache: &mut ReadCache, timing: Timing) {
        if self.slots.get(index).and_then(Option::as_ref).is_some_and(|s| s.is_longpoll()) {
            return self.answer_longpoll(server, index, longpoll::Answer::IfDue);
        }
        loop {
            match self.deliver_batch(server, index, cache, timing) {
                Step::More => continue,
                Step::Done => return,
                Step::Blocked => return self.want_writable(index, true),
                Step::Close(reason) => return self.close(server, index, reason),
            }
        }
    }

    fn deliver_batch(&mut self, server: &Server, index: usize, cache: &mut ReadCache, timing: Timing) -> Step {
        let max_pending = server.config().max_pending_bytes;
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Step::Done };
        if sub.pending.is_some() {
            if behind_bytes(sub, cache) > max_pending {
                return Step::Close(CloseReason::SlowConsumer);
            }
            return Step::Done;
        }
        // What is due, oldest first per channel.
        let mut batch: Vec<(usize, Arc<Message>)> = Vec::new();
        for (i, place) in sub.places.iter().enumerate() {
            let read = cached_read(cache, &place.channel, place.seq);
            if read.lost {
                // Fell out of the history while blocked or before its first write.
                return Step::Close(CloseReason::SlowConsumer);
            }
            let room = MESSAGES_PER_WRITE - batch.len();
            batch.extend(read.messages.iter().take(room).map(|m| (i, m.clone())));
            if batch.len() == MESSAGES_PER_WRITE {
                break;
            }
        }
        if batch.is_empty() {
            return Step::Done;
        }
        if sub.places.len() > 1 {
            batch.sort_by_key(|(_, m)| m.published_at);
        }
        let single = sub.places.len() == 1;
        let byte_budget = BATCH_BYTES.min(usize::try_from(max_pending).unwrap_or(usize::MAX));
        let mut gather = Gather::default();
        let mut taken = 0;
        for (i, message) in &batch {
            if taken > 0 && gather.len() >= byte_budget {
                break;
            }
            sub.places[*i].seq = message.position.seq;
            let id = if single { Id::Shared(&message.cursor) } else { Id::Own(sub.cursor()) };
            gather.message(sub.framing, message, id, sub.callback(), &mut self.deflater);
            taken += 1;
        }
        // Counted as accepted for sending: what is pending goes out later or the subscriber is cut.
        sub.bytes_out += gather.len() as u64;
        match write_gather(&mut self.sessions.link(index, &sub.stream), &gather) {
            Ok(written) if written == gather.len() => self.tally.bytes_out += written as u64,
            Ok(written) => {
                self.tally.bytes_out += written as u64;
                sub.pending = Some(Box::new(gather.tail_from(written)));
            }
            Err(e) => return Step::Close(crate::socket::io_close_reason(&e)),
        }
        // The dashboard's feed is the server talking about itself, not traffic: its deliveries
        // count in neither `messages_delivered` nor the delivery latency.
        let counted = sub.places.first().is_none_or(|p| crate::admin_feed::counts_deliveries(&p.channel));
        let now = Instant::now();
        if timing == Timing::Live && counted {
            // Timed at the write that carries them (a blocked subscriber's tail goes later).
            for (_, message) in &batch[..taken] {
                self.tally.delivery.observe(now.saturating_duration_since(message.published_at));
            }
        }
        sub.last_write = clock_ms_at(now);
        if counted {
            server.stats.delivered(taken as u64);
        }
        if sub.pending.is_some() {
            Step::Blocked
        } else if taken < batch.len() || taken == MESSAGES_PER_WRITE {
            Step::More
        } else {
            Step::Done
        }
    }

    /// The socket took more bytes: send the pending tail, then catch up.
    fn flush(&mut self, server: &Server, index: usize, cache: &mut ReadCache) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let Some(pending) = sub.pending.as_mut() else { return };
        match pending.write_to(&mut self.sessions.link(index, &sub.stream)) {
            Ok(0) => return,
            Ok(n) => {
                self.tally.bytes_out += n as u64;
                sub.last_write = clock_ms_at(Instant::now());
            }
            Err(e) => {
                let reason = crate::socket::io_close_reason(&e);
                return self.close(server, index, reason);
            }
        }
        if pending.is_empty() {
            sub.pending = None;
            self.want_writable(index, false);
            self.deliver(server, index, cache, Timing::Live);
        }
    }

    fn describe(&self, now: Instant) -> Vec<SubscriberInfo> {
        let transport = |framing: Framing| framing.format.label();
        self.slots
            .iter()
            .flatten()
            .filter(|sub| !(sub.is_longpoll() && sub.places.is_empty()))
            .map(|sub| SubscriberInfo {
                id: sub.conn.id,
                peer: sub.conn.peer(),
                transport: transport(sub.framing),
                channels: sub.places.iter().map(|p| p.channel.name.to_string()).collect(),
                age: Duration::from_secs((clock_ms_at(now) / 1000).saturating_sub(u64::from(sub.opened))),
                // The last byte either way (a WebSocket peer talks too).
                idle: Duration::from_millis(
                    clock_ms_at(now)
                        .saturating_sub(sub.last_write)
                        .min(sub.ws.as_ref().map_or(u64::MAX, |ws| ws.silence_ms(clock_ms_at(now)).into())),
                ),
                requests: sub.conn.served,
                bytes_in: sub.ws.as_ref().map_or(0, |ws| ws.bytes_in),
                bytes_out: sub.bytes_out,
                heartbeat: Duration::from_millis(sub.heartbeat_ms.into()),
                blocked: sub.pending.is_some(),
                pending_bytes: sub.pending.as_ref().map_or(0, |p| p.len() as u64),
                shard: self.id,
            })
            .collect()
    }

    fn want_writable(&self, index: usize, writable: bool) {
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return };
        let interest = if writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _ = self.registry().reregister(&mut SourceFd(&sub.stream.as_raw_fd()), Token(index), interest);
    }

    /// HTTP streaming subscribers send nothing: input is read and dropped (at most
    /// [`READ_BUDGET`] per wake-up), and EOF ends the subscription. WebSocket subscribers send
    /// frames.
    fn read_input(&mut self, server: &Server, index: usize) {
        if self.round_budget == 0 {
            return self.more_input.push((index, 0));
        }
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        if sub.ws.is_some() {
            return self.read_websocket(server, index);
        }
        if sub.is_longpoll() {
            return self.read_longpoll(server, index);
        }
        let mut scratch = [0u8; 512];
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 || self.round_budget == 0 {
                return self.more_input.push((index, 0));
            }
            match self.sessions.link(index, &sub.stream).read(&mut scratch) {
                Ok(0) => return self.close(server, index, CloseReason::PeerClosed),
                Ok(n) => {
                    self.tally.bytes_in += n as u64;
                    budget = budget.saturating_sub(n);
                    self.round_budget = self.round_budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = crate::socket::io_close_reason(&e);
                    return self.close(server, index, reason);
                }
            }
        }
    }

    /// How often the heartbeat scan runs: a quarter of the shortest interval here (so a heartbeat
    /// goes out within 1.25 intervals of quiet), at least once a second.
    fn heartbeat_tick(&self, server: &Server) -> Duration {
        (self.shortest_heartbeat.min(server.config().heartbeat_interval) / 4).min(MAX_TICK)
    }

    fn heartbeats(&mut self, server: &Server, now: Instant) {
        let send_timeout = server.config().send_timeout.as_millis() as u64;
        let now_ms = clock_ms_at(now);
        let mut failed = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(sub) = slot else { continue };
            let quiet = now_ms.saturating_sub(sub.last_write);
            if sub.pending.is_some() {
                // Blocked: its socket has taken nothing for `send_timeout`.
                if quiet >= send_timeout {
                    failed.push((index, CloseReason::SendTimeout));
                }
                continue;
            }
            let interval = u64::from(sub.heartbeat_ms);
            // A WebSocket peer that only reads says nothing while messages keep the line busy:
            // it is pinged when it has been silent for an interval too, so its pong shows it is
            // alive (else it would be cut at `heartbeat_timeout` however busy the line).
            let ping_silent_peer = sub.ws.as_deref_mut().is_some_and(|ws| ws.wants_ping(now_ms, interval));
            if (quiet < interval && !ping_silent_peer) || sub.is_longpoll() {
                continue;
            }
            let beat = sub.framing.heartbeat();
            sub.bytes_out += beat.len() as u64;
            let written = self.sessions.link(index, &sub.stream).write(beat);
            if let Ok(n) = written {
                self.tally.bytes_out += n as u64;
            }
            match written {
                Ok(n) if n == beat.len() => {}
                Ok(n) => sub.pending = Some(pending_of(&beat[n..])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sub.pending = Some(pending_of(beat)),
                Err(e) => failed.push((index, crate::socket::io_close_reason(&e))),
            }
            sub.last_write = now_ms;
        }
        for (index, reason) in failed {
            self.close(server, index, reason);
        }
        for index in self.silent_websockets(server, now) {
            self.close(server, index, CloseReason::HeartbeatTimeout);
        }
        for index in 0..self.slots.len() {
            if self.slots[index].as_ref().is_some_and(|s| s.pending.is_some()) {
                self.want_writable(index, true);
            }
        }
    }

    /// Ends the subscriptions whose token has expired (checked with the heartbeat scan, at
    /// least once a second): a held long poll is answered 401, the others are closed with
    /// `token_expired` (the notice and their cursor first; WebSocket 4003). A long-poll
    /// connection waiting for its next request is left alone: that request brings a token.
    fn expire_tokens(&mut self, server: &Server) {
        let now = crate::auth::unix_now();
        let expired: Vec<usize> = (0..self.slots.len())
            .filter(|&index| {
                self.slots[index]
                    .as_ref()
                    .is_some_and(|sub| !sub.is_awaiting() && crate::auth::is_expired(sub.conn.token_deadline, now))
            })
            .collect();
        for index in expired {
            if self.slots[index].as_ref().is_some_and(|sub| sub.longpoll.is_some()) {
                self.answer_longpoll_expired(server, index);
            } else {
                self.close(server, index, CloseReason::TokenExpired);
            }
        }
    }

    /// Ends a subscription; see [`Shard::end`].
    fn close(&mut self, server: &Server, index: usize, reason: CloseReason) {
        self.end(server, index, reason, None);
    }

    /// Ends a subscription. When the server ends it (rather than the peer), the peer first gets
    /// the `holdfast.closed` notice with the reason and its cursor (`channel`: the channel it is
    /// about, else the subscription's list), the WebSocket close frame or the last chunk, and
    /// a FIN; behind a full socket this is best effort. Then the connection is counted closed.
    fn end(&mut self, server: &Server, index: usize, reason: CloseReason, channel: Option<&str>) {
        if self.ends_by_answering(server, index, reason) {
            return;
        }
        // Answers gathered for this connection go out before anything else ends it.
        if self.batching == Some(index) {
            self.flush_replies(server, index);
            self.batching = None;
        }
        let Some((mut sub, mut tls)) = self.detach(server, index) else { return };
        if is_server_initiated(reason) && !sub.is_longpoll() {
            let mut out = Vec::new();
            let cursor = sub.cursor();
            let channel = channel.map_or_else(|| channel_list(sub.places.iter().map(|p| &*p.channel)), str::to_string);
            let data = closed_json(reason.label(), &cursor);
            if matches!(reason, CloseReason::Shutdown) && sub.framing.format == frame::Format::Sse {
                // Clients closed in the same moment of a drain come back at different moments.
                let retry_ms = crate::drain::jittered_retry(server.config().sse_retry).as_millis();
                sub.framing.put_piece(&mut out, format!("retry: {retry_ms}\n\n").as_bytes());
            }
            sub.framing.put_notice(&mut out, sub.callback(), &channel, &cursor, "holdfast.closed", &data);
            if sub.ws.is_some() {
                let (code, text) = websocket::close_code(reason);
                let mut frame = bytes::BytesMut::new();
                holdfast_proto::ws::close::put_close(&mut frame, code, text);
                out.extend_from_slice(&frame);
            } else if sub.framing.chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
            match sub.pending.as_mut() {
                // Nothing queued before it: the notice goes with MSG_MORE, so the kernel holds it
                // and the close below sends it with the FIN in one segment (one transmission and
                // one acknowledgement instead of two: a mass close costs ~30 % less CPU).
                None => {
                    let sent = LinkMut { socket: &sub.stream, tls: tls.as_deref_mut() }.send_last(&out);
                    self.tally.bytes_out += sent.unwrap_or(0) as u64;
                }
                Some(pending) => {
                    pending.push(out.into());
                    let mut link = LinkMut { socket: &sub.stream, tls: tls.as_deref_mut() };
                    self.tally.bytes_out += pending.write_to(&mut link).unwrap_or(0) as u64;
                }
            }
        }
        if matches!(
            reason,
            CloseReason::SlowConsumer | CloseReason::SendTimeout | CloseReason::Flooding | CloseReason::RateLimited
        ) {
            tracing::info!(conn = sub.conn.id, peer = %sub.conn.peer(), reason = reason.label(), "subscriber cut");
        }
        // Closing the descriptor is the whole close: the kernel sends the FIN behind the bytes
        // already queued (a `shutdown` first would add a system call and change nothing, as the
        // descriptor is not shared) and takes the socket out of the shard's epoll set (so no
        // `deregister` either: two system calls fewer per subscriber in a mass close).
        drop(sub.stream);
        server.connection_closed_as(sub.framing.format.label(), sub.conn.id, sub.conn.peer(), sub.conn.served, reason);
    }

    /// Takes a subscriber out of the shard (its slot, its channels, the counts) and gives it to
    /// the caller, who closes its connection (which takes it out of the poller too) or, to hand
    /// it over, deregisters it first.
    fn detach(&mut self, server: &Server, index: usize) -> Option<(Box<Subscriber>, Option<Box<TlsSession>>)> {
        let sub = self.slots.get_mut(index).and_then(Option::take)?;
        let tls = self.sessions.0.take(index);
        self.free.push(index);
        for place in sub.places.iter() {
            self.leave(index, place);
        }
        // A long poll counts as a subscriber while it is held (has channels); one answered and
        // waiting for its next request was counted out then.
        if !(sub.is_longpoll() && sub.places.is_empty()) {
            server.stats.subscriber_closed(sub.framing.format);
        }
        Some((sub, tls))
    }
}

/// One line per shard for a delete or an admin disconnect: how many subscribers it closed, how
/// long that took on the shard's thread (`took_ms`, wall time: what the other subscribers of the
/// shard waited) and the CPU time the thread spent on it (`cpu_ms`: the server's own work, which
/// `took_ms` exceeds when other processes, such as the clients on a small machine, take the core).
fn log_mass_close(what: &str, channel: &Channel, shard: usize, closed: usize, started: (Instant, Duration)) {
    if closed > 0 {
        let took_ms = started.0.elapsed().as_secs_f64() * 1000.0;
        let cpu_ms = thread_cpu_time().saturating_sub(started.1).as_secs_f64() * 1000.0;
        tracing::info!(channel = %channel.name, shard, closed, took_ms, cpu_ms, "{what}: subscribers closed");
    }
}

/// CPU time the calling thread has used (user and system).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to; the clock id is a constant Linux defines.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Whether the server ends the subscription for this reason (then the peer gets a notice); the
/// others are the peer's doing (it closed, reset, or broke the protocol).
fn is_server_initiated(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Shutdown
            | CloseReason::SlowConsumer
            | CloseReason::SendTimeout
            | CloseReason::ChannelDeleted
            | CloseReason::HistoryLost
            | CloseReason::AdminDisconnect
            | CloseReason::HeartbeatTimeout
            | CloseReason::Flooding
            | CloseReason::RateLimited
            | CloseReason::TokenExpired
    )
}

/// A copy of a few bytes of our own as a pending tail.
fn pending_of(bytes: &[u8]) -> Box<Pending> {
    let mut pending = Box::<Pending>::default();
    pending.push(bytes::Bytes::copy_from_slice(bytes));
    pending
}

/// Milliseconds since the first call in this process (a monotonic clock in 8 bytes).
fn clock_ms_at(at: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_millis() as u64
}

/// Whether the messages a delivery writes count in the delivery latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// Published while the subscriber was subscribed: their latency is the server's.
    Live,
    /// What a subscriber is sent as it joins (history, a resumed cursor): their latency is their
    /// age, not the server's. (What such a catch-up leaves for after its socket drained counts
    /// as live: a rare case.)
    CatchUp,
}

/// What one delivery step leaves to do.
enum Step {
    /// A full batch went out; there may be more.
    More,
    /// Caught up (or nothing to do).
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// Cut the subscriber.
    Close(CloseReason),
}

fn cached_read(cache: &mut ReadCache, channel: &Arc<Channel>, seq: u64) -> Rc<holdfast_hub::channel::Read> {
    cache.entry((channel.id, seq)).or_insert_with(|| Rc::new(channel.read_after(seq, usize::MAX))).clone()
}

/// How far a blocked subscriber is behind: its unsent bytes plus everything published since.
fn behind_bytes(sub: &Subscriber, cache: &mut ReadCache) -> u64 {
    let pending = sub.pending.as_ref().map_or(0, |p| p.len()) as u64;
    let queued: u64 = sub
        .places
        .iter()
        .map(|place| {
            let read = cached_read(cache, &place.channel, place.seq);
            if read.lost {
                return u64::MAX / 4;
            }
            read.messages.iter().map(|m| (m.sse_body.len() + m.cursor.len() + 8) as u64).sum::<u64>()
        })
        .sum();
    pending + queued
}

/// The TLS sessions of a shard's subscribers, by slot (empty on a plain listener).
#[derive(Default)]
struct Sessions(SessionsBySlot);

impl Sessions {
    /// The connection of the subscriber in slot `index`, whose socket is `stream`.
    fn link<'a>(&'a mut self, index: usize, stream: &'a std::net::TcpStream) -> LinkMut<'a> {
        LinkMut { socket: stream, tls: self.0.get_mut(index) }
    }
}

/// One `writev` of the whole gather. A short count means the socket buffer is full (it is
/// non-blocking): the caller keeps the rest and waits for writability rather than retrying now.
fn write_gather(stream: &mut LinkMut<'_>, gather: &Gather<'_>) -> io::Result<usize> {
    let slices = gather.slices();
    loop {
        match stream.write_vectored(&slices) {
            Ok(0) if gather.len() > 0 => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_slot_stays_small() {
        // An idle subscriber is this struct (boxed), its positions and an epoll item: the goal is
        // under 512 B of server memory per idle subscriber all told. These bounds are here so a
        // new field cannot grow them unnoticed.
        let subscriber = std::mem::size_of::<Subscriber>();
        let websocket = std::mem::size_of::<websocket::WsPeer>();
        assert!(subscriber <= 128, "Subscriber is {subscriber} B");
        assert!(websocket <= 48, "WsPeer is {websocket} B");
    }
}
