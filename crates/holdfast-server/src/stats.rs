//! Server-wide counters: connections, requests, and why connections closed.
//!
//! Plain atomics, updated with relaxed ordering: they are statistics, read by `/admin/stats`, and
//! never used to synchronise anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::socket::CloseReason;
use crate::wire::frame::Format;

/// The counters of one server.
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_parked: AtomicU64,
    requests: AtomicU64,
    requests_reused: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Open subscribers by format (sse, stream, iframe, websocket, held long polls).
    streaming: [AtomicU64; 5],
    messages_published: AtomicU64,
    messages_delivered: AtomicU64,
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
    /// Requests answered.
    pub requests: u64,
    /// Requests answered on a connection that had already served one (keep-alive reuse).
    pub requests_reused: u64,
    /// Closed connections by reason.
    pub closed: Vec<(&'static str, u64)>,
    /// Open subscribers by transport.
    pub subscribers: Vec<(&'static str, u64)>,
    /// Messages published.
    pub messages_published: u64,
    /// Message deliveries (one message to one subscriber).
    pub messages_delivered: u64,
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

    pub(crate) fn parked(&self) {
        self.connections_parked.fetch_add(1, Relaxed);
    }

    pub(crate) fn unparked(&self) {
        self.connections_parked.fetch_sub(1, Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_open: self.connections_open.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_parked: self.connections_parked.load(Relaxed),
            requests: self.requests.load(Relaxed),
            requests_reused: self.requests_reused.load(Relaxed),
            closed: CloseReason::ALL.iter().map(|r| (r.label(), self.closed[*r as usize].load(Relaxed))).collect(),
            subscribers: vec![
                ("sse", self.streaming[0].load(Relaxed)),
                ("stream", self.streaming[1].load(Relaxed)),
                ("iframe", self.streaming[2].load(Relaxed)),
                ("websocket", self.streaming[3].load(Relaxed)),
                ("longpoll", self.streaming[4].load(Relaxed)),
            ],
            messages_published: self.messages_published.load(Relaxed),
            messages_delivered: self.messages_delivered.load(Relaxed),
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
    fn rss_is_reported() {
        assert!(process_rss_bytes() > 1024 * 1024);
    }
}
