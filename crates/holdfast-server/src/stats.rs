//! Server-wide counters: connections, requests and their status codes, why connections closed,
//! bytes in and out, and the latency histograms.
//!
//! Plain atomics, updated with relaxed ordering: they are statistics, read by `/admin/stats` and
//! `/metrics`, and never used to synchronise anything. The push shards count bytes and delivery
//! latencies on their own and add them here once per round ([`Stats::absorb`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use crate::histogram::HistogramSnapshot;
use crate::histogram::{Histogram, LocalHistogram};

use crate::limits::ClientLimit;
use crate::socket::CloseReason;
use crate::wire::frame::Format;

/// The counters of one server.
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_parked: AtomicU64,
    push_deadlines: AtomicU64,
    requests: AtomicU64,
    requests_reused: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Refusals by limit per client (connections, new connections, publishes).
    limited: [AtomicU64; ClientLimit::ALL.len()],
    /// Open subscribers by format (sse, stream, iframe, websocket, held long polls).
    streaming: [AtomicU64; 5],
    messages_published: AtomicU64,
    messages_delivered: AtomicU64,
    /// Responses by status code, 100 to 599 (index: code - 100).
    by_status: StatusCounts,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    pub(crate) latency: Latency,
}

/// Lowest status code counted by code.
const FIRST_STATUS: u16 = 100;
/// Status codes counted (100 to 599): 4 KB, and counting one is one atomic add, no lock.
const STATUSES: usize = 500;

#[derive(Debug)]
struct StatusCounts([AtomicU64; STATUSES]);

impl Default for StatusCounts {
    fn default() -> StatusCounts {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// The latency histograms.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Publish to the message's bytes written to a live subscriber's socket (the push shards).
    pub delivery: Histogram,
    /// A publish (`POST /pub`, the WebSocket `publish` op) received to answered, broker included.
    pub publish: Histogram,
    /// A plain request's head read to its response written (every request but `/sub`).
    pub request: Histogram,
}

/// What a push shard counted during a round, added to [`Stats`] at its end.
#[derive(Debug, Default)]
pub(crate) struct ShardTally {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub delivery: LocalHistogram,
}

/// The latency histograms at one moment; `/admin/stats` shows them as `latency_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LatencySnapshot {
    /// Publish to the message's bytes written to a live subscriber's socket.
    pub delivery: HistogramSnapshot,
    /// A publish received to answered.
    pub publish: HistogramSnapshot,
    /// A plain request's head read to its response written.
    pub request: HistogramSnapshot,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now (active, idle in the runtime, or parked).
    pub connections_open: u64,
    /// Connections accepted since start (including those refused with 503).
    pub connections_accepted: u64,
    /// Idle connections parked outside the runtime now.
    pub connections_parked: u64,
    /// Deadlines queued in the push shards (held long polls, and answered ones' connections
    /// waiting for their next request), stale ones included: at most twice the shards'
    /// subscribers plus 64 a queue, whatever the rate of polls.
    pub push_deadlines: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered on a connection that had already served one (keep-alive reuse).
    pub requests_reused: u64,
    /// Closed connections by reason.
    pub closed: Vec<(&'static str, u64)>,
    /// Connections and publishes refused by a limit per client, by limit.
    pub limited: Vec<(&'static str, u64)>,
    /// Open subscribers by transport.
    pub subscribers: Vec<(&'static str, u64)>,
    /// Messages published.
    pub messages_published: u64,
    /// Message deliveries (one message to one subscriber).
    pub messages_delivered: u64,
    /// Responses sent, by status code (those sent at least once).
    pub requests_by_status: BTreeMap<u16, u64>,
    /// Open connections by what they serve: `http` for those that are not subscribers (busy
    /// with a request, idle, parked), then each subscriber transport.
    pub connections_by_transport: BTreeMap<&'static str, u64>,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// The latency histograms.
    pub latency: LatencySnapshot,
}

impl Stats {
    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// Counts a close; returns the number of connections still open.
    pub(crate) fn connection_closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].fetch_add(1, Relaxed);
        self.connections_open.fetch_sub(1, Relaxed) - 1
    }

    /// Counts a connection or publish refused by a limit per client.
    pub(crate) fn limited(&self, limit: ClientLimit) {
        self.limited[limit as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn request_served(&self, reused: bool) {
        self.requests.fetch_add(1, Relaxed);
        if reused {
            self.requests_reused.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn subscriber_opened(&self, format: Format) {
        self.streaming[format.stats_index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn subscriber_closed(&self, format: Format) {
        self.streaming[format.stats_index()].fetch_sub(1, Relaxed);
    }

    pub(crate) fn published(&self) {
        self.messages_published.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, count: u64) {
        self.messages_delivered.fetch_add(count, Relaxed);
    }

    /// Counts a response sent with this status.
    pub(crate) fn responded(&self, status: u16) {
        if let Some(count) = status.checked_sub(FIRST_STATUS).and_then(|i| self.by_status.0.get(usize::from(i))) {
            count.fetch_add(1, Relaxed);
        }
    }

    /// Counts bytes read from a socket (one read system call).
    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts bytes written to a socket (one write system call).
    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// Adds what a push shard counted, and empties its tally.
    pub(crate) fn absorb(&self, tally: &mut ShardTally) {
        if tally.bytes_in > 0 {
            self.received(std::mem::take(&mut tally.bytes_in) as usize);
        }
        if tally.bytes_out > 0 {
            self.sent(std::mem::take(&mut tally.bytes_out) as usize);
        }
        self.latency.delivery.absorb(&mut tally.delivery);
    }

    pub(crate) fn parked(&self) {
        self.connections_parked.fetch_add(1, Relaxed);
    }

    pub(crate) fn unparked(&self) {
        self.connections_parked.fetch_sub(1, Relaxed);
    }

    /// A push shard's deadline queues went from `before` entries to `now`.
    pub(crate) fn push_deadlines_changed(&self, before: usize, now: usize) {
        if now > before {
            self.push_deadlines.fetch_add((now - before) as u64, Relaxed);
        } else {
            self.push_deadlines.fetch_sub((before - now) as u64, Relaxed);
        }
    }

    /// Subscribers open now, every transport (held long polls too).
    pub fn subscribers_open(&self) -> u64 {
        self.streaming.iter().map(|open| open.load(Relaxed)).sum()
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let subscribers = vec![
            ("sse", self.streaming[0].load(Relaxed)),
            ("stream", self.streaming[1].load(Relaxed)),
            ("iframe", self.streaming[2].load(Relaxed)),
            ("websocket", self.streaming[3].load(Relaxed)),
            ("longpoll", self.streaming[4].load(Relaxed)),
        ];
        let connections_open = self.connections_open.load(Relaxed);
        let subscribing: u64 = subscribers.iter().map(|(_, n)| n).sum();
        let mut connections_by_transport: BTreeMap<&'static str, u64> = subscribers.iter().copied().collect();
        connections_by_transport.insert("http", connections_open.saturating_sub(subscribing));
        StatsSnapshot {
            connections_open,
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_parked: self.connections_parked.load(Relaxed),
            push_deadlines: self.push_deadlines.load(Relaxed),
            requests: self.requests.load(Relaxed),
            requests_reused: self.requests_reused.load(Relaxed),
            closed: CloseReason::ALL.iter().map(|r| (r.label(), self.closed[*r as usize].load(Relaxed))).collect(),
            limited: ClientLimit::ALL.iter().map(|l| (l.label(), self.limited[*l as usize].load(Relaxed))).collect(),
            subscribers,
            messages_published: self.messages_published.load(Relaxed),
            messages_delivered: self.messages_delivered.load(Relaxed),
            requests_by_status: (FIRST_STATUS..)
                .zip(&self.by_status.0)
                .map(|(code, count)| (code, count.load(Relaxed)))
                .filter(|(_, count)| *count > 0)
                .collect(),
            connections_by_transport,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            latency: LatencySnapshot {
                delivery: self.latency.delivery.snapshot(),
                publish: self.latency.publish.snapshot(),
                request: self.latency.request.snapshot(),
            },
        }
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm` (0 where unavailable).
pub fn process_rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let resident_pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    resident_pages * u64::try_from(page_size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }

    #[test]
    fn close_counts_by_reason() {
        let stats = Stats::default();
        stats.connection_opened();
        stats.connection_opened();
        assert_eq!(stats.connection_closed(CloseReason::IdleTimeout), 1);
        let snap = stats.snapshot();
        assert_eq!(snap.connections_open, 1);
        assert_eq!(snap.closed.iter().find(|(l, _)| *l == "idle_timeout").unwrap().1, 1);
    }

    #[test]
    fn statuses_count_by_code_and_odd_ones_are_ignored() {
        let stats = Stats::default();
        stats.responded(200);
        stats.responded(200);
        stats.responded(101);
        stats.responded(599);
        stats.responded(600);
        stats.responded(42);
        let snap = stats.snapshot();
        assert_eq!(snap.requests_by_status.into_iter().collect::<Vec<_>>(), [(101, 1), (200, 2), (599, 1)]);
    }

    #[test]
    fn http_connections_are_the_open_ones_that_do_not_subscribe() {
        let stats = Stats::default();
        for _ in 0..3 {
            stats.connection_opened();
        }
        stats.subscriber_opened(Format::Sse);
        let by_transport = stats.snapshot().connections_by_transport;
        assert_eq!(by_transport["http"], 2);
        assert_eq!(by_transport["sse"], 1);
        assert_eq!(by_transport.len(), 6);
    }

    #[test]
    fn rss_is_reported() {
        assert!(process_rss_bytes() > 1024 * 1024);
    }
}
