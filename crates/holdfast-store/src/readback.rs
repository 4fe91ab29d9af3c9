//! Reading a reopened store's messages back into the rings while the server already serves.
//!
//! Opening reads only the channel rows (epochs and newest positions: all a publish needs), so a
//! restart serves after fjall's own recovery however much history is kept: reading 1,000,000
//! messages back took 2.4 s of a 3.0 s start before (bench/RESULTS.md, "Restart"). The messages
//! follow in the background, one thread per core, each over a range of channels in key order.
//! A request for a channel not read yet (subscribe, publish, info, delete) reads that channel at
//! once (one prefix scan; a poll of a 1,000-message channel took 6-17 ms) and waits for nothing
//! else, so no cursor ever meets a ring that does not yet hold its history.
//!
//! Everything is read from one snapshot taken at opening: what is written after it (new channels,
//! new messages of channels already read) is not seen twice, and a message of a channel with no
//! row in it is damage. Damage found on the way (an entry that cannot be read, messages without
//! a row or past its newest) refuses publishes at once and is reported through
//! [`ReadBack::wait`]; the server then stops with the error it would have given at start.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjall::Readable;
use holdfast_hub::{BrokerFuture, ChannelError};
use tokio::sync::watch;

use crate::broker::{now_ms, Lane, Shared};
use crate::codec::{self, ChannelRow, StoredMessage};
use crate::db::{self, Problem};

/// Where the read-back stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Reading,
    Done,
    /// The store's error, as it would have been given at start.
    Damaged(String),
}

/// The read-back's state, shared by its threads and the requests that read a channel first.
pub(crate) struct ReadBack {
    started: Instant,
    /// The view everything is read from (dropped once all is read: it holds back compaction).
    snapshot: Mutex<Option<fjall::Snapshot>>,
    /// Messages and payload bytes put in rings so far.
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Milliseconds from opening to the last message read (0 until then).
    millis: AtomicU64,
    finished: AtomicBool,
    /// Damage was found: publishes are refused.
    damaged: AtomicBool,
    /// The store is closing: the threads stop.
    stop: AtomicBool,
    problems: Mutex<Vec<String>>,
    outcome: watch::Sender<Outcome>,
}

impl ReadBack {
    pub(crate) fn new(started: Instant, snapshot: fjall::Snapshot) -> ReadBack {
        ReadBack {
            started,
            snapshot: Mutex::new(Some(snapshot)),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            millis: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            damaged: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
            outcome: watch::channel(Outcome::Reading).0,
        }
    }

    /// Every channel's messages are in its ring.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// Milliseconds from opening until everything was read (0 until then).
    pub(crate) fn millis(&self) -> u64 {
        self.millis.load(Ordering::Relaxed)
    }

    /// Stops the threads (the store is closing).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> Option<fjall::Snapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn note_damage(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        self.damaged.store(true, Ordering::Release);
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).extend(lines);
    }

    /// Resolves when everything is read back: `Err` with the store's error if it is damaged.
    pub(crate) fn wait(&self) -> BrokerFuture<Result<(), String>> {
        let mut outcome = self.outcome.subscribe();
        Box::pin(async move {
            loop {
                match outcome.borrow_and_update().clone() {
                    Outcome::Done => return Ok(()),
                    Outcome::Damaged(why) => return Err(why),
                    Outcome::Reading => {}
                }
                if outcome.changed().await.is_err() {
                    // The broker is gone (the server stopped while reading).
                    return Ok(());
                }
            }
        })
    }
}

/// Puts `lane`'s messages in its ring if they are not there yet: those `scanned` by a read-back
/// thread, or else read now. Damage found stops publishing and is answered as such.
pub(crate) fn read_channel(
    shared: &Shared,
    lane: &Lane,
    scanned: Option<Vec<(u64, StoredMessage)>>,
) -> Result<(), ChannelError> {
    if lane.is_read() {
        return Ok(());
    }
    let mut unread = lane.unread();
    let Some(row) = *unread else { return Ok(()) };
    let messages = match scanned {
        Some(messages) => messages,
        None => match scan_channel(shared, &lane.name) {
            Ok(messages) => messages,
            Err(lines) => {
                shared.read_back.note_damage(lines);
                return Err(shared.unavailable().expect("damaged"));
            }
        },
    };
    if let Some((last, _)) = messages.last().filter(|(last, _)| *last > row.last_seq) {
        let why = format!("row says the newest message is {} but {last} is stored", row.last_seq);
        shared.read_back.note_damage(vec![Problem::unreadable("channels", lane.name.as_bytes(), why).line()]);
        return Err(shared.unavailable().expect("damaged"));
    }
    fill_ring(shared, lane, row, &messages);
    *unread = None;
    lane.mark_read();
    Ok(())
}

/// One channel's messages from the snapshot, or the problems met.
fn scan_channel(shared: &Shared, name: &str) -> Result<Vec<(u64, StoredMessage)>, Vec<String>> {
    let prefix = codec::channel_prefix(name);
    let items = match shared.read_back.snapshot() {
        Some(snapshot) => snapshot.prefix(&shared.store.messages, prefix),
        // Everything was read (this lane too, then): nothing changed it since.
        None => shared.store.messages.prefix(prefix),
    };
    let mut messages = Vec::new();
    let mut problems = Vec::new();
    for item in items {
        match decode(item) {
            Ok((_, seq, message)) => messages.push((seq, message)),
            Err(Bad::Entry(line)) => problems.push(line),
            Err(Bad::Unreadable(line)) => {
                problems.push(line);
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(messages)
    } else {
        Err(problems)
    }
}

/// What is wrong with an entry met in a scan.
enum Bad {
    /// The store's files could not be read there: nothing after it can be trusted.
    Unreadable(String),
    /// This entry cannot be read (the scan goes on, to list every such entry).
    Entry(String),
}

/// A message entry: its channel, sequence number and message, or the problem with it.
fn decode(item: fjall::Guard) -> Result<(String, u64, StoredMessage), Bad> {
    let (key, value) = item.into_inner().map_err(|e| Bad::Unreadable(format!("messages cannot be read: {e}")))?;
    let entry = |why: String| Bad::Entry(Problem::unreadable("messages", &key, why).line());
    let Some((name, seq)) = codec::split_message_key(&key) else {
        return Err(entry("not a message key".into()));
    };
    let message = codec::decode_message(&value).map_err(entry)?;
    Ok((name.to_string(), seq, message))
}

/// Puts a channel read from disk in its ring (only what the ring keeps: the history bound may
/// have been lowered since; the rest goes from disk on the first tending).
fn fill_ring(shared: &Shared, lane: &Lane, row: ChannelRow, messages: &[(u64, StoredMessage)]) {
    let first = messages.first().map_or(row.last_seq + 1, |(seq, _)| *seq);
    lane.lock().disk_first = first;
    shared.disk_messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
    let skipped = messages.len().saturating_sub(shared.config.limits.messages);
    let kept = &messages[skipped..];
    let ring_first = kept.first().map_or(row.last_seq + 1, |(seq, _)| *seq);
    let ring = match shared.local.adopt_continuing(&lane.name, lane.epoch, ring_first - 1, lane.continues) {
        Ok((ring, _)) => ring,
        Err(e) => {
            // `max_channels` lowered below what the store holds: the channel is forgotten (its
            // messages deleted from disk) like one that expired.
            tracing::warn!(channel = %lane.name, error = %e, "history store: channel not reopened; its history is dropped");
            return;
        }
    };
    let now = now_ms();
    let mut bytes = 0;
    for (seq, message) in kept {
        let age = Duration::from_millis(now.saturating_sub(message.published_ms));
        bytes += message.payload.len() as u64;
        shared.local.insert(&ring, *seq, message.event.as_deref(), message.payload(), age);
    }
    // Messages past the row's newest are refused above; the ring ends at the row's newest even
    // when those messages have expired.
    shared.local.skip_to(&ring, row.last_seq);
    shared.read_back.messages.fetch_add(kept.len() as u64, Ordering::Relaxed);
    shared.read_back.bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// Starts reading every channel back (`rows`: the names with a row at opening, sorted).
pub(crate) fn start(shared: Arc<Shared>, rows: Vec<Arc<str>>) -> std::io::Result<()> {
    std::thread::Builder::new().name("holdfast-readback".into()).spawn(move || {
        #[cfg(test)]
        if let Some(hold) = &shared.config.hold_read_back {
            hold.wait();
        }
        read_all(&shared, &rows);
        let problems = std::mem::take(&mut *shared.read_back.problems.lock().unwrap_or_else(|e| e.into_inner()));
        let read_back = &shared.read_back;
        let outcome = if !problems.is_empty() {
            let error = db::damaged(&shared.config.dir, problems);
            tracing::error!(error = %error, "history store: damage found while reading it back; publishes are refused");
            Outcome::Damaged(error.to_string())
        } else {
            read_back.millis.store(read_back.started.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
            read_back.finished.store(true, Ordering::Release);
            Outcome::Done
        };
        read_back.snapshot.lock().unwrap_or_else(|e| e.into_inner()).take();
        read_back.outcome.send_replace(outcome);
    })?;
    Ok(())
}

/// Reads every message in ranges of channels, one thread per core, then marks the channels that
/// had none as read.
fn read_all(shared: &Shared, rows: &[Arc<str>]) {
    let Some(snapshot) = shared.read_back.snapshot() else { return };
    let known: HashSet<Arc<str>> = rows.iter().cloned().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.len()).max(1);
    let per_thread = rows.len().div_ceil(threads).max(1);
    let starts: Vec<Vec<u8>> = rows.chunks(per_thread).map(|chunk| codec::channel_prefix(&chunk[0])).collect();
    std::thread::scope(|scope| {
        for i in 0..starts.len().max(1) {
            // The first range starts at the beginning and the last runs to the end, so messages
            // of channels without a row are met wherever they sort.
            let lower = if i == 0 { Bound::Unbounded } else { Bound::Included(starts[i].clone()) };
            let upper = starts.get(i + 1).map_or(Bound::Unbounded, |next| Bound::Excluded(next.clone()));
            let (snapshot, known) = (&snapshot, &known);
            scope.spawn(move || read_range(shared, snapshot, known, (lower, upper)));
        }
    });
    if shared.read_back.is_damaged() || shared.read_back.stopped() {
        return;
    }
    let unread: Vec<Arc<Lane>> = shared.lanes().values().filter(|lane| !lane.is_read()).cloned().collect();
    for lane in unread {
        // A channel whose row remains but whose messages have all gone.
        let _ = read_channel(shared, &lane, Some(Vec::new()));
    }
}

/// Reads one range of keys, channel by channel.
fn read_range(
    shared: &Shared,
    snapshot: &fjall::Snapshot,
    known: &HashSet<Arc<str>>,
    range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
) {
    let mut current: Option<(String, Vec<(u64, StoredMessage)>)> = None;
    let mut problems = Vec::new();
    for item in snapshot.range(&shared.store.messages, range) {
        if shared.read_back.stopped() {
            return;
        }
        match decode(item) {
            Ok((name, seq, message)) => match &mut current {
                Some((held, messages)) if *held == name => messages.push((seq, message)),
                _ => {
                    if let Some((done, messages)) = current.replace((name, vec![(seq, message)])) {
                        finish_channel(shared, known, &done, messages, &mut problems);
                    }
                }
            },
            Err(Bad::Entry(line)) => {
                problems.push(line);
                // Publishes stop at once; the scan goes on to list the rest.
                shared.read_back.note_damage(std::mem::take(&mut problems));
            }
            Err(Bad::Unreadable(line)) => {
                shared.read_back.note_damage(vec![line]);
                return;
            }
        }
    }
    if let Some((done, messages)) = current {
        finish_channel(shared, known, &done, messages, &mut problems);
    }
    shared.read_back.note_damage(problems);
}

fn finish_channel(
    shared: &Shared,
    known: &HashSet<Arc<str>>,
    name: &str,
    messages: Vec<(u64, StoredMessage)>,
    problems: &mut Vec<String>,
) {
    if !known.contains(name) {
        // The row is written in the same batch as every message: a message without one is damage.
        let why = format!("no row for a channel with {} messages", messages.len());
        problems.push(Problem::unreadable("channels", name.as_bytes(), why).line());
        return;
    }
    let lane = shared.lanes().get(name).cloned();
    // No lane: deleted or forgotten since it was read on demand; read: by a request.
    if let Some(lane) = lane.filter(|lane| !lane.is_read()) {
        let _ = read_channel(shared, &lane, Some(messages));
    }
}
