//! The last [`KEPT`] connection closes (when, who, over what, why), for the dashboard's feed
//! (`GET /admin/events`). Every close is recorded where it is counted
//! ([`Server::connection_closed`](crate::Server::connection_closed)); what it does not own is
//! the count by reason, which `stats` keeps.
//!
//! A fixed ring under a mutex: one uncontended lock and a copy of ~64 bytes per close, and the
//! same memory whether a thousand or a million connections closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::socket::CloseReason;

/// Closes kept: what a dashboard can show at a glance.
pub(crate) const KEPT: usize = 50;

/// One close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Close {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub peer: SocketAddr,
    /// `http` (requests, polls, idle keep-alive), or the subscriber's transport (`sse`,
    /// `stream`, `iframe`, `websocket`, `longpoll`).
    pub transport: &'static str,
    pub reason: CloseReason,
}

/// The ring.
#[derive(Debug, Default)]
pub(crate) struct RecentCloses {
    ring: Mutex<VecDeque<Close>>,
}

impl RecentCloses {
    /// Records a close now, dropping the oldest beyond [`KEPT`].
    pub fn record(&self, peer: SocketAddr, transport: &'static str, reason: CloseReason) {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(Close { at_ms, peer, transport, reason });
    }

    /// The kept closes, newest first.
    pub fn newest_first(&self) -> Vec<Close> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_fifty_newest_first() {
        let closes = RecentCloses::default();
        for port in 0..(KEPT as u16 + 7) {
            closes.record(SocketAddr::from(([127, 0, 0, 1], port)), "sse", CloseReason::PeerClosed);
        }
        let kept = closes.newest_first();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].peer.port(), KEPT as u16 + 6);
        assert_eq!(kept[KEPT - 1].peer.port(), 7);
    }
}
