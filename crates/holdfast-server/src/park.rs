//! The parking lot: idle keep-alive connections live here, outside the tokio runtime.
//!
//! An idle connection in tokio costs a task (≥ 256 B cell) plus a reactor slot (256 B) plus the
//! allocator's rounding (measured ≈ 515–1,150 B in all). Parked, it costs one slot
//! here (the socket, its connection state, a deadline: under 100 B) and an epoll item in the
//! kernel. When bytes arrive the socket goes back to tokio in a fresh task; when its deadline
//! passes it is closed here.
//!
//! One thread runs a private `mio::Poll`. Connections are parked from any runtime thread
//! (registration is thread-safe); the thread wakes on readiness, on the earliest deadline, or on
//! the waker when an earlier deadline or a drain arrives.
//!
//! What it does not own: deciding when to park (the connection loop does, after `park_after`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsRawFd;

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::handover::Resume;
use crate::socket::{ConnState, IdleDeadline, SessionsBySlot, StdLink};
use crate::{CloseReason, Server};

const WAKER_TOKEN: Token = Token(usize::MAX);
/// Readiness events taken per poll; more simply wait for the next round.
const EVENTS_PER_POLL: usize = 1024;

/// Handle to a server's parking lot. Dropping it stops the lot's thread.
pub(crate) struct ParkingLot {
    shared: Arc<Shared>,
}

struct Shared {
    lot: Mutex<Lot>,
    registry: Registry,
    waker: Waker,
}

#[derive(Default)]
struct Lot {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Min-heap of (deadline, slot, generation); stale entries are skipped by generation.
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// When the thread will next wake by itself; a park with an earlier deadline wakes it.
    next_wake: Option<Instant>,
    closing: bool,
    /// On a TLS listener, each parked connection's TLS session by slot: beside the slots, so a
    /// plain connection's slot does not grow by the pointer.
    sessions: SessionsBySlot,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    parked: Option<Parked>,
}

struct Parked {
    stream: std::net::TcpStream,
    conn: ConnState,
    idle: IdleDeadline,
}

impl ParkingLot {
    /// Creates the lot and the poller its thread will run (see [`ParkingLot::start`]).
    pub fn new() -> io::Result<(ParkingLot, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shared = Arc::new(Shared { lot: Mutex::new(Lot::default()), registry, waker });
        Ok((ParkingLot { shared }, poll))
    }

    /// Starts the lot's thread. A connection whose next request arrives goes to `resume` (which
    /// serves it in a new runtime task: the lot does not know how connections are served); the
    /// thread ends when the lot drains or the server is gone.
    pub fn start(&self, poll: Poll, server: Weak<Server>, resume: Resume) -> io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new().name("holdfast-park".into()).spawn(move || run(poll, shared, server, resume))?;
        Ok(())
    }

    /// Parks an idle connection until it is readable or `idle.at` passes. On failure (the lot is
    /// draining, or the socket cannot be registered) the connection is handed back to be closed.
    pub fn park(
        &self,
        stream: StdLink,
        conn: ConnState,
        idle: IdleDeadline,
    ) -> Result<(), (StdLink, ConnState, CloseReason)> {
        let mut lot = self.shared.lot.lock().unwrap_or_else(|e| e.into_inner());
        if lot.closing {
            return Err((stream, conn, CloseReason::Shutdown));
        }
        let index = match lot.free.pop() {
            Some(index) => index,
            None => {
                lot.slots.push(Slot::default());
                (lot.slots.len() - 1) as u32
            }
        };
        let fd = stream.socket.as_raw_fd();
        if let Err(e) = self.shared.registry.register(&mut SourceFd(&fd), Token(index as usize), Interest::READABLE) {
            tracing::warn!(error = %e, "cannot park a connection");
            lot.free.push(index);
            return Err((stream, conn, CloseReason::IoError));
        }
        let slot = &mut lot.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        let at = idle.at;
        let StdLink { socket: stream, tls } = stream;
        slot.parked = Some(Parked { stream, conn, idle });
        if let Some(tls) = tls {
            lot.sessions.insert(index as usize, tls);
        }
        lot.deadlines.push(Reverse((at, index, generation)));
        let wake_earlier = lot.next_wake.is_none_or(|wake| at < wake);
        drop(lot);
        if wake_earlier {
            let _ = self.shared.waker.wake();
        }
        Ok(())
    }

    /// The parked connections: (state, time until their idle deadline).
    pub fn list(&self) -> Vec<(ConnState, std::time::Duration)> {
        let lot = self.shared.lot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        lot.slots
            .iter()
            .filter_map(|s| s.parked.as_ref())
            .map(|p| (p.conn, p.idle.at.saturating_duration_since(now)))
            .collect()
    }

    /// Closes every parked connection and stops taking new ones (graceful shutdown).
    pub fn drain(&self) {
        self.shared.lot.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        let _ = self.shared.waker.wake();
    }
}

impl Drop for ParkingLot {
    fn drop(&mut self) {
        self.drain();
    }
}

impl Lot {
    /// Takes a parked connection out of its slot and out of the poller.
    fn take(&mut self, registry: &Registry, index: usize) -> Option<(StdLink, ConnState, IdleDeadline)> {
        let Parked { stream, conn, idle } = self.slots.get_mut(index)?.parked.take()?;
        let _ = registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
        self.free.push(index as u32);
        let tls = self.sessions.take(index);
        Some((StdLink { socket: stream, tls }, conn, idle))
    }
}

fn run(mut poll: Poll, shared: Arc<Shared>, server: Weak<Server>, resume: Resume) {
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut ready = Vec::new();
    let mut expired = Vec::new();
    loop {
        let timeout = {
            let mut lot = shared.lot.lock().unwrap_or_else(|e| e.into_inner());
            let next = lot.deadlines.peek().map(|Reverse((at, _, _))| *at);
            lot.next_wake = next;
            next.map(|at| at.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "parking lot poll failed");
            }
        }
        let closing = {
            let mut lot = shared.lot.lock().unwrap_or_else(|e| e.into_inner());
            for event in events.iter().filter(|e| e.token() != WAKER_TOKEN) {
                ready.extend(lot.take(&shared.registry, event.token().0));
            }
            let now = Instant::now();
            while let Some(Reverse((at, index, generation))) = lot.deadlines.peek().copied() {
                if at > now && !lot.closing {
                    break;
                }
                lot.deadlines.pop();
                let live = lot.slots.get(index as usize).is_some_and(|s| s.generation == generation);
                if live {
                    expired.extend(lot.take(&shared.registry, index as usize));
                }
            }
            lot.closing
        };
        let Some(server) = server.upgrade() else {
            return;
        };
        for (stream, conn, idle) in ready.drain(..) {
            server.stats.unparked();
            resume(stream, conn, idle);
        }
        for (stream, conn, idle) in expired.drain(..) {
            server.stats.unparked();
            let reason = if closing { CloseReason::Shutdown } else { idle.expiry };
            drop(stream);
            server.connection_closed(conn.id, conn.peer(), conn.served, reason);
        }
        if closing {
            return;
        }
    }
}
