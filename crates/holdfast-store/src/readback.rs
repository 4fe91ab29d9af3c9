//! Reading a reopened store's messages back into the rings while the server already serves.
//!
//! Opening reads only the channel rows (epochs and newest positions: all a publish needs), so a
//! restart serves after fjall's own recovery however much history is kept: reading 1,000,000
//! messages back took 2.4 s of a 3.0 s start before (bench/RESULTS.md, "Restart"). The messages
//! follow in the background: one thread per core reads a range of channels in key order and
//! hands each channel to the writer thread, which puts it in its ring (see [`send_fill`] for
//! why there). A request for a channel not read yet (subscribe, publish, info, delete) reads that
//! channel at once (one prefix scan; a poll of a 1,000-message channel took 6-17 ms) and has it
//! placed ahead of the background's, so no cursor ever meets a ring that does not yet hold its
//! history.
//!
//! Everything is read from one snapshot taken at opening: what is written after it (new channels,
//! new messages of channels already read) is not seen twice, and a message of a channel with no
//! row in it is damage. Damage found on the way (an entry that cannot be read, messages without
//! a row or past its newest) refuses publishes at once and is reported through
//! [`ReadBack::wait`]; the server then stops with the error it would have given at start.

use std::collections::{HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fjall::Readable;
use holdfast_hub::{BrokerFuture, ChannelError};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::broker::{now_ms, Lane, Shared};
use crate::codec::{self, ChannelRow};
use crate::db::{self, Problem};
use crate::writer::Job;

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
    /// Channels read on demand, for a request, so far.
    pub scans: AtomicU64,
    /// On-demand scans that may run at once: one per core.
    scan_slots: Semaphore,
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
            scans: AtomicU64::new(0),
            scan_slots: Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
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

    pub(crate) fn stopped(&self) -> bool {
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

/// One channel's messages as scanned: their values side by side in one buffer, so that what a
/// read-back thread hands the writer is two allocations, not two per message.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    values: Vec<u8>,
    /// Each message's sequence number and where its value ends in `values`.
    ends: Vec<(u64, usize)>,
}

impl Scanned {
    /// Adds a message whose value has been checked ([`codec::view_message`]).
    fn push(&mut self, seq: u64, value: &[u8]) {
        self.values.extend_from_slice(value);
        self.ends.push((seq, self.values.len()));
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn last_seq(&self) -> Option<u64> {
        self.ends.last().map(|(seq, _)| *seq)
    }

    /// The messages from the `skip`-th on: sequence number and value.
    fn messages(&self, skip: usize) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|(_, end)| *end));
        starts.zip(&self.ends).skip(skip).map(|(start, (seq, end))| (*seq, &self.values[start..*end]))
    }
}

/// Has `lane`'s messages put in its ring if they are not there yet, and waits until they are:
/// read now from the snapshot, then placed by the writer.
///
/// A reconnect wave asks for many channels at once, so this holds no thread while it waits:
/// requests for a channel being read wait for that one's scan on its lane's async lock, and at
/// most one scan per core runs at a time (`scan_slots`), each on a blocking thread only while it
/// scans. Before, every request waited in a blocking thread of its own, up to tokio's 512.
pub(crate) async fn read_channel(shared: &Arc<Shared>, lane: &Arc<Lane>) -> Result<(), ChannelError> {
    if lane.is_read() {
        return Ok(());
    }
    // One scan per lane: when subscribers come back all at once, the others wait for it.
    let _reading = lane.reading().await;
    if lane.is_read() || lane.unread().is_none() {
        return Ok(());
    }
    let scanned = {
        let _slot = shared.read_back.scan_slots.acquire().await.map_err(|_| closing())?;
        let (scanning, name) = (shared.clone(), lane.name.clone());
        tokio::task::spawn_blocking(move || scan_channel(&scanning, &name))
            .await
            .map_err(|_| ChannelError::Unavailable("reading the history store failed".into()))?
    };
    let scanned = scanned.map_err(|lines| damaged(shared, lines))?;
    let (done, filled) = oneshot::channel();
    if queue_fill(shared, lane, scanned, Done::Task(done), true)? {
        wait_filled_async(shared, filled).await?;
    }
    Ok(())
}

/// [`read_channel`] for a caller that cannot wait asynchronously (an admin request in the first
/// seconds): scans and waits on this thread, without the lane's lock (a second scan of a channel
/// is wasted work, not an error: only the first fill places anything).
pub(crate) fn read_channel_blocking(shared: &Shared, lane: &Arc<Lane>) -> Result<(), ChannelError> {
    if lane.is_read() || lane.unread().is_none() {
        return Ok(());
    }
    let scanned = scan_channel(shared, &lane.name).map_err(|lines| damaged(shared, lines))?;
    let (done, filled) = mpsc::sync_channel(1);
    if queue_fill(shared, lane, scanned, Done::Thread(done), true)? {
        wait_filled(shared, &filled)?;
    }
    Ok(())
}

/// Publishes stop for the damage found; the answer a request gets for it.
fn damaged(shared: &Shared, lines: Vec<String>) -> ChannelError {
    shared.read_back.note_damage(lines);
    shared.unavailable().expect("damaged")
}

fn closing() -> ChannelError {
    ChannelError::Unavailable("the history store is closing".into())
}

/// How the writer tells that a fill is done: to a read-back thread or to a request's task.
pub(crate) enum Done {
    Thread(mpsc::SyncSender<()>),
    Task(oneshot::Sender<()>),
}

impl Done {
    pub(crate) fn send(self) {
        match self {
            Done::Thread(done) => drop(done.send(())),
            Done::Task(done) => drop(done.send(())),
        }
    }
}

/// Hands a channel scanned by a read-back thread to the writer: what to wait on, `None` if the
/// lane is read already.
fn send_fill(shared: &Shared, lane: &Arc<Lane>, scanned: Scanned) -> Result<Option<mpsc::Receiver<()>>, ChannelError> {
    let (done, filled) = mpsc::sync_channel(1);
    Ok(queue_fill(shared, lane, scanned, Done::Thread(done), false)?.then_some(filled))
}

/// Queues `lane`'s `scanned` messages for the writer, which puts them in the ring: `false` if the
/// lane is read already. Messages past the lane's newest are damage: publishing stops and the
/// request is answered so.
///
/// Why the writer: it makes every message that lives in a ring, read back or published, so they
/// all come from its allocator arena. Placed by the read-back threads, the first messages came
/// from theirs, and the writer's thread cache went on recycling those regions after the threads
/// had ended: the restarted server kept ~1 MiB more in half-used slabs (bench/RESULTS.md,
/// "Restart RSS").
fn queue_fill(
    shared: &Shared,
    lane: &Arc<Lane>,
    scanned: Scanned,
    done: Done,
    urgent: bool,
) -> Result<bool, ChannelError> {
    if lane.is_read() {
        return Ok(false);
    }
    let Some(row) = *lane.unread() else { return Ok(false) };
    if let Some(last) = scanned.last_seq().filter(|last| *last > row.last_seq) {
        let why = format!("row says the newest message is {} but {last} is stored", row.last_seq);
        return Err(damaged(shared, vec![Problem::unreadable("channels", lane.name.as_bytes(), why).line()]));
    }
    let job = Job::Fill { lane: lane.clone(), scanned, done };
    if urgent {
        // A request waits for it: ahead of the background's channels (a fill touches only its
        // own lane, so it may pass the jobs queued before it).
        shared.queue.push_first(job);
    } else {
        shared.queue.push(job);
    }
    Ok(true)
}

/// How often a wait for a fill looks whether the store is closing: a job queued after the
/// writer's last one is never taken, so its sender is never dropped either.
const CLOSING_CHECK: Duration = Duration::from_millis(100);

/// Waits on this thread for the writer to have filled a ring; `Err` if the store closed first.
fn wait_filled(shared: &Shared, filled: &mpsc::Receiver<()>) -> Result<(), ChannelError> {
    loop {
        match filled.recv_timeout(CLOSING_CHECK) {
            Ok(()) => return Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(closing()),
            Err(mpsc::RecvTimeoutError::Timeout) if shared.read_back.stopped() => return Err(closing()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// [`wait_filled`] for a task.
async fn wait_filled_async(shared: &Shared, mut filled: oneshot::Receiver<()>) -> Result<(), ChannelError> {
    loop {
        match tokio::time::timeout(CLOSING_CHECK, &mut filled).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(closing()),
            Err(_) if shared.read_back.stopped() => return Err(closing()),
            Err(_) => {}
        }
    }
}

/// The writer's part: puts a lane's scanned messages in its ring and marks it read, unless an
/// earlier fill did.
pub(crate) fn fill(shared: &Shared, lane: &Lane, scanned: &Scanned) {
    let mut unread = lane.unread();
    let Some(row) = *unread else { return };
    if lane.is_read() {
        return;
    }
    fill_ring(shared, lane, row, scanned);
    *unread = None;
    lane.mark_read();
}

/// One channel's messages from the snapshot, or the problems met.
fn scan_channel(shared: &Shared, name: &str) -> Result<Scanned, Vec<String>> {
    shared.read_back.scans.fetch_add(1, Ordering::Relaxed);
    let prefix = codec::channel_prefix(name);
    let items = match shared.read_back.snapshot() {
        Some(snapshot) => snapshot.prefix(&shared.store.messages, prefix),
        // Everything was read (this lane too, then): nothing changed it since.
        None => shared.store.messages.prefix(prefix),
    };
    let mut scanned = Scanned::default();
    let mut problems = Vec::new();
    for item in items {
        match check(item) {
            Ok((key, value)) => {
                let (_, seq) = codec::split_message_key(&key).expect("checked");
                scanned.push(seq, &value);
            }
            Err(Bad::Entry(line)) => problems.push(line),
            Err(Bad::Unreadable(line)) => {
                problems.push(line);
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(scanned)
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

/// A message entry whose key and value can be read, or the problem with it.
fn check(item: fjall::Guard) -> Result<(fjall::UserKey, fjall::UserValue), Bad> {
    let (key, value) = item.into_inner().map_err(|e| Bad::Unreadable(format!("messages cannot be read: {e}")))?;
    let entry = |why: String| Bad::Entry(Problem::unreadable("messages", &key, why).line());
    if codec::split_message_key(&key).is_none() {
        return Err(entry("not a message key".into()));
    }
    codec::view_message(&value).map_err(entry)?;
    Ok((key, value))
}

/// Puts a channel read from disk in its ring (only what the ring keeps: the history bound may
/// have been lowered since; the rest goes from disk on the first tending).
fn fill_ring(shared: &Shared, lane: &Lane, row: ChannelRow, scanned: &Scanned) {
    let first = scanned.ends.first().map_or(row.last_seq + 1, |(seq, _)| *seq);
    lane.lock().disk_first = first;
    shared.disk_messages.fetch_add(scanned.len() as u64, Ordering::Relaxed);
    let skipped = scanned.len().saturating_sub(shared.config.limits.messages);
    let ring_first = scanned.ends.get(skipped).map_or(row.last_seq + 1, |(seq, _)| *seq);
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
    let (mut kept, mut bytes) = (0, 0);
    for (seq, value) in scanned.messages(skipped) {
        // Checked when scanned.
        let Ok(message) = codec::view_message(value) else { continue };
        let age = Duration::from_millis(now.saturating_sub(message.published_ms));
        bytes += message.payload.len() as u64;
        kept += 1;
        shared.local.insert(&ring, seq, message.event, message.payload(), age);
    }
    // Messages past the row's newest are refused above; the ring ends at the row's newest even
    // when those messages have expired.
    shared.local.skip_to(&ring, row.last_seq);
    shared.read_back.messages.fetch_add(kept, Ordering::Relaxed);
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

/// Channels a read-back thread has handed to the writer and not seen filled, at most: it reads
/// on while the writer places, holding no more than this many channels' messages twice.
pub(crate) const FILLS_IN_FLIGHT: usize = 16;

/// A read-back thread's fills not yet seen done.
#[derive(Default)]
struct InFlight(VecDeque<mpsc::Receiver<()>>);

impl InFlight {
    /// Adds a fill, first waiting for the oldest when the window is full. `false` once the store
    /// is closing.
    fn add(&mut self, shared: &Shared, filled: Option<mpsc::Receiver<()>>) -> bool {
        self.0.extend(filled);
        while self.0.len() > FILLS_IN_FLIGHT {
            let oldest = self.0.pop_front().expect("over the window");
            if wait_filled(shared, &oldest).is_err() {
                return false;
            }
        }
        true
    }

    /// Waits for every fill.
    fn finish(self, shared: &Shared) {
        for filled in self.0 {
            if wait_filled(shared, &filled).is_err() {
                return;
            }
        }
    }
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
    let mut in_flight = InFlight::default();
    for lane in unread {
        // A channel whose row remains but whose messages have all gone.
        let filled = send_fill(shared, &lane, Scanned::default()).ok().flatten();
        if !in_flight.add(shared, filled) {
            return;
        }
    }
    in_flight.finish(shared);
}

/// Reads one range of keys, channel by channel.
fn read_range(
    shared: &Shared,
    snapshot: &fjall::Snapshot,
    known: &HashSet<Arc<str>>,
    range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
) {
    let mut current: Option<(String, Scanned)> = None;
    let mut problems = Vec::new();
    let mut in_flight = InFlight::default();
    for item in snapshot.range(&shared.store.messages, range) {
        if shared.read_back.stopped() {
            return;
        }
        match check(item) {
            Ok((key, value)) => {
                let (name, seq) = codec::split_message_key(&key).expect("checked");
                match &mut current {
                    Some((held, scanned)) if held == name => scanned.push(seq, &value),
                    _ => {
                        let mut scanned = Scanned::default();
                        scanned.push(seq, &value);
                        if let Some((done, scanned)) = current.replace((name.to_string(), scanned)) {
                            let filled = finish_channel(shared, known, &done, scanned, &mut problems);
                            if !in_flight.add(shared, filled) {
                                return;
                            }
                        }
                    }
                }
            }
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
    if let Some((done, scanned)) = current {
        let filled = finish_channel(shared, known, &done, scanned, &mut problems);
        in_flight.add(shared, filled);
    }
    in_flight.finish(shared);
    shared.read_back.note_damage(problems);
}

/// Hands a channel read in a range to the writer: what to wait on, if anything.
fn finish_channel(
    shared: &Shared,
    known: &HashSet<Arc<str>>,
    name: &str,
    scanned: Scanned,
    problems: &mut Vec<String>,
) -> Option<mpsc::Receiver<()>> {
    if !known.contains(name) {
        // The row is written in the same batch as every message: a message without one is damage.
        let why = format!("no row for a channel with {} messages", scanned.len());
        problems.push(Problem::unreadable("channels", name.as_bytes(), why).line());
        return None;
    }
    let lane = shared.lanes().get(name).cloned();
    // No lane: deleted or forgotten since it was read on demand; read: by a request.
    let lane = lane.filter(|lane| !lane.is_read())?;
    send_fill(shared, &lane, scanned).ok().flatten()
}
