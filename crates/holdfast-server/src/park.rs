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
    /// Free slots below `slots.len()`, lowest first: reusing the lowest keeps the occupied
    /// slots at the front, so the tail a burst added empties and is given back (see
    /// [`Lot::give_back_room`]). May hold indices past the end (skipped, purged in bulk).
    free: BinaryHeap<Reverse<u32>>,
    /// Connections parked now.
    parked: usize,
    /// The last generation given to a parked connection. Lot-wide, not per slot: a slot given
    /// back and made again must not reuse a generation that a stale deadline still names.
    generation: u32,
    /// Min-heap of (deadline, slot, generation); stale entries are skipped by generation, and
    /// dropped in bulk once they outnumber the parked connections.
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// When the thread will next wake by itself; a park with an earlier deadline wakes it.
    next_wake: Option<Instant>,
    closing: bool,
    /// On a TLS listener, each parked connection's TLS session by slot: beside the slots, so a
    /// plain connection's slot does not grow by the pointer.
    sessions: SessionsBySlot,
}

/// Entries a lot's vectors may hold beyond twice what is in use before they are trimmed (so a
/// small lot never reallocates back and forth).
const SLACK: usize = 64;

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
        let index = lot.free_slot();
        let fd = stream.socket.as_raw_fd();
        if let Err(e) = self.shared.registry.register(&mut SourceFd(&fd), Token(index as usize), Interest::READABLE) {
            tracing::warn!(error = %e, "cannot park a connection");
            lot.free.push(Reverse(index));
            lot.give_back_room();
            return Err((stream, conn, CloseReason::IoError));
        }
        lot.generation = lot.generation.wrapping_add(1);
        let generation = lot.generation;
        let slot = &mut lot.slots[index as usize];
        slot.generation = generation;
        let at = idle.at;
        let StdLink { socket: stream, tls } = stream;
        slot.parked = Some(Parked { stream, conn, idle });
        lot.parked += 1;
        if let Some(tls) = tls {
            lot.sessions.insert(index as usize, tls);
        }
        lot.deadlines.push(Reverse((at, index, generation)));
        lot.drop_stale_deadlines();
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
        self.parked -= 1;
        self.free.push(Reverse(index as u32));
        let tls = self.sessions.take(index);
        self.give_back_room();
        Some((StdLink { socket: stream, tls }, conn, idle))
    }

    /// The lowest free slot, or a new one at the end.
    fn free_slot(&mut self) -> u32 {
        while let Some(Reverse(index)) = self.free.pop() {
            if self.slots.get(index as usize).is_some_and(|slot| slot.parked.is_none()) {
                return index;
            }
        }
        self.slots.push(Slot::default());
        (self.slots.len() - 1) as u32
    }

    /// Gives back the room a burst of parked connections took once they have left. Why: the
    /// lot's vectors kept their peak for the life of the process, and the peak comes from one
    /// moment (a restart's reconnect wave parked ~10,000 connections at once and left ~1 MB of
    /// slots and deadlines behind for good, bench/RESULTS.md "The restart step"). Amortised
    /// O(1): each trim follows at least as many operations as it moves.
    fn give_back_room(&mut self) {
        while self.slots.last().is_some_and(|slot| slot.parked.is_none()) {
            self.slots.pop();
        }
        let len = self.slots.len();
        if self.slots.capacity() > 4 * len + SLACK {
            self.slots.shrink_to(2 * len + SLACK);
            self.sessions.truncate(len);
        }
        // Free entries past the end, or for slots taken since: purge them once they are most.
        let free_slots = len - self.parked;
        if self.free.len() > 2 * free_slots + SLACK {
            let slots = &self.slots;
            self.free.retain(|Reverse(index)| slots.get(*index as usize).is_some_and(|slot| slot.parked.is_none()));
            self.free.shrink_to(2 * self.free.len() + SLACK);
        }
        self.trim_deadlines();
    }

    /// A connection that leaves before its deadline leaves the deadline in the heap until it
    /// comes due: at the rate connections park and leave, that is many more entries than
    /// connections parked. Dropped in bulk once they are more than twice the parked ones.
    fn drop_stale_deadlines(&mut self) {
        if self.deadlines.len() > 2 * self.parked + SLACK {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((_, index, generation))| {
                slots.get(*index as usize).is_some_and(|slot| slot.parked.is_some() && slot.generation == *generation)
            });
            self.trim_deadlines();
        }
    }

    fn trim_deadlines(&mut self) {
        if self.deadlines.capacity() > 4 * self.deadlines.len() + SLACK {
            self.deadlines.shrink_to(2 * self.deadlines.len() + SLACK);
        }
    }

    /// Room held: (slots, deadlines) as allocated, for tests.
    #[cfg(test)]
    fn room(&self) -> (usize, usize) {
        (self.slots.capacity(), self.deadlines.capacity())
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
            lot.trim_deadlines();
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
            // Counted before the close: a peer that sees the end and asks /admin/stats at once
            // finds it counted.
            server.connection_closed(conn.id, conn.peer(), conn.served, reason);
            drop(stream);
        }
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn park_one(lot: &ParkingLot, listener: &TcpListener, id: u64) -> TcpStream {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, peer) = listener.accept().unwrap();
        let idle = IdleDeadline { at: Instant::now() + Duration::from_secs(60), expiry: CloseReason::IdleTimeout };
        assert!(lot.park(StdLink { socket, tls: None }, ConnState::new(id, peer), idle).is_ok());
        client
    }

    /// A reconnect wave parks thousands of connections at once; once they have left, the lot
    /// holds room for what is parked, not for the wave (before, ~1 MB stayed for good).
    #[test]
    fn a_burst_of_parked_connections_gives_its_room_back_once_they_leave() {
        const BURST: usize = 2_000;
        let (lot, _poll) = ParkingLot::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients: Vec<TcpStream> = (0..BURST).map(|i| park_one(&lot, &listener, i as u64)).collect();
        let (slots, deadlines) = lot.shared.lot.lock().unwrap().room();
        assert!(slots >= BURST && deadlines >= BURST, "room at the peak: {slots} slots, {deadlines} deadlines");

        // All but the last ten leave (their deadlines stay in the heap until they come due).
        {
            let mut inner = lot.shared.lot.lock().unwrap();
            for index in 0..BURST - 10 {
                assert!(inner.take(&lot.shared.registry, index).is_some());
            }
            assert_eq!(inner.parked, 10);
        }
        // New connections take the lowest free slots, so the last ten's slots end the vector...
        clients.extend((0..10).map(|i| park_one(&lot, &listener, (BURST + i) as u64)));
        {
            let inner = lot.shared.lot.lock().unwrap();
            let taken: Vec<usize> =
                inner.slots.iter().enumerate().filter(|(_, s)| s.parked.is_some()).map(|(i, _)| i).collect();
            assert_eq!(taken[..10], (0..10).collect::<Vec<_>>()[..], "new connections reuse the lowest slots");
            // ...and the stale deadlines are gone once they outnumber the parked connections.
            assert!(inner.deadlines.len() <= 2 * inner.parked + SLACK, "{} deadlines for 20", inner.deadlines.len());
        }
        // When the last ten leave, the tail they held is given back.
        {
            let mut inner = lot.shared.lot.lock().unwrap();
            for index in BURST - 10..BURST {
                assert!(inner.take(&lot.shared.registry, index).is_some());
            }
            assert_eq!(inner.slots.len(), 10);
            let (slots, deadlines) = inner.room();
            assert!(slots <= 4 * 10 + SLACK, "room for {slots} slots for 10 parked");
            assert!(deadlines <= 4 * inner.deadlines.len() + SLACK, "room for {deadlines} deadlines");
            // A generation is never given twice, so a stale deadline cannot match a new occupant.
            let generations: std::collections::HashSet<u32> =
                inner.slots.iter().filter(|s| s.parked.is_some()).map(|s| s.generation).collect();
            assert_eq!(generations.len(), 10);
            assert!(generations.iter().all(|g| *g as usize > BURST));
        }
        drop(clients);
    }
}
