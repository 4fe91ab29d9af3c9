//! The store's writer thread: takes everything queued at once, writes it as one batch (group
//! commit), then places the messages in their rings and answers their publishers; deletes what
//! the rings no longer hold; syncs on the `batch` interval; closes the store cleanly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fjall::PersistMode;
use holdfast_hub::{ChannelError, Cursor, Payload, Published};
use tokio::sync::oneshot;

use crate::broker::{now_ms, Durability, Lane, LaneState, Shared};
use crate::codec::{self, RunRecord};
use crate::readback::{self, Scanned};

/// Payload bytes accepted and not yet written, at most: beyond it publishes are refused (503)
/// until the disk catches up, so a slow disk cannot make the queue take unbounded memory.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Work for the writer, in the order it must be done.
pub(crate) enum Job {
    /// Write a message at its reserved position, place it, answer.
    Publish {
        lane: Arc<Lane>,
        seq: u64,
        published_ms: u64,
        event: Option<String>,
        payload: Payload,
        reply: oneshot::Sender<Result<Published, ChannelError>>,
    },
    /// Drop a channel and its messages (its lane is already out of the map): the subscribers
    /// it had.
    Delete { lane: Arc<Lane>, reply: oneshot::Sender<Result<Option<u64>, ChannelError>> },
    /// Delete what the rings dropped; forget channels whose rings are gone.
    Tend,
    /// Put a reopened channel's messages in its ring ([`crate::readback`]), then say so.
    Fill { lane: Arc<Lane>, scanned: Scanned, done: readback::Done },
    /// Write what is queued, sync, record a clean close, and stop.
    Close { reply: oneshot::Sender<()> },
    /// Tests: the writer waits at this barrier, so what waits for it can be looked at.
    #[cfg(test)]
    Hold(Arc<std::sync::Barrier>),
}

/// The jobs waiting for the writer.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Payload bytes admitted and not yet written.
    bytes: AtomicUsize,
}

impl Queue {
    /// Counts a publish of `bytes` in, or refuses it while the queue holds its maximum.
    pub(crate) fn admit(&self, bytes: usize) -> Result<(), Arc<str>> {
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > MAX_QUEUED_BYTES {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(format!(
                "the history store is behind ({} MiB of publishes waiting for the disk); retry later",
                MAX_QUEUED_BYTES >> 20
            )
            .into());
        }
        Ok(())
    }

    pub(crate) fn release(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(crate) fn push(&self, job: Job) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_back(job);
        self.ready.notify_one();
    }

    /// Queues a job ahead of every other (one that passing them cannot reorder: a fill).
    pub(crate) fn push_first(&self, job: Job) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_front(job);
        self.ready.notify_one();
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Everything queued, waiting for some first (at most `wait`, if given).
    fn take(&self, wait: Option<Duration>) -> VecDeque<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match wait {
            None => {
                while jobs.is_empty() {
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            }
            Some(wait) if jobs.is_empty() => {
                jobs = self.ready.wait_timeout(jobs, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
            Some(_) => {}
        }
        std::mem::take(&mut *jobs)
    }
}

/// The writer's loop (its own thread: fjall's writes and syncs block).
pub(crate) fn run(shared: Arc<Shared>) {
    let durability = shared.config.durability;
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let wait = unsynced_since.map(|since| shared.config.interval.saturating_sub(since.elapsed()));
        let jobs = shared.queue.take(wait);
        let mut publishes = Vec::new();
        for job in jobs {
            match job {
                Job::Publish { .. } => publishes.push(job),
                Job::Delete { lane, reply } => {
                    write(&shared, std::mem::take(&mut publishes));
                    let _ = reply.send(delete(&shared, &lane));
                }
                Job::Tend => {
                    write(&shared, std::mem::take(&mut publishes));
                    tend(&shared);
                }
                // A lane being filled has no publishes queued (they wait for its fill), so the
                // publishes gathered so far need not be written first.
                Job::Fill { lane, scanned, done } => {
                    readback::fill(&shared, &lane, &scanned);
                    done.send();
                }
                #[cfg(test)]
                Job::Hold(barrier) => {
                    barrier.wait();
                }
                Job::Close { reply } => {
                    write(&shared, std::mem::take(&mut publishes));
                    close(&shared);
                    let _ = reply.send(());
                    return;
                }
            }
        }
        if write(&shared, publishes) && durability == Durability::Batch {
            unsynced_since.get_or_insert_with(Instant::now);
        }
        if unsynced_since.is_some_and(|since| since.elapsed() >= shared.config.interval) {
            sync(&shared);
            unsynced_since = None;
        }
    }
}

/// How a batch of messages is made durable when committed.
fn commit_mode(shared: &Shared) -> PersistMode {
    match shared.config.durability {
        Durability::Always => PersistMode::SyncAll,
        // Into the OS's buffers: survives the process, not the machine.
        Durability::None | Durability::Batch => PersistMode::Buffer,
    }
}

fn sync(shared: &Shared) {
    match shared.store.db.persist(PersistMode::SyncAll) {
        Ok(()) => {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail(shared, &e.to_string()),
    }
}

fn fail(shared: &Shared, why: &str) {
    if !shared.failed.swap(true, Ordering::AcqRel) {
        tracing::error!(error = why, "history store: a write failed; publishes are refused until a restart");
    }
}

/// Writes a group of publishes in one batch, then places and answers them in order. Whether
/// anything was written.
fn write(shared: &Shared, jobs: Vec<Job>) -> bool {
    if jobs.is_empty() {
        return false;
    }
    let messages = &shared.store.messages;
    let mut batch = shared.store.db.batch().durability(Some(commit_mode(shared)));
    let mut newest: HashMap<Arc<str>, (Arc<Lane>, u64)> = HashMap::new();
    for job in &jobs {
        let Job::Publish { lane, seq, published_ms, event, payload, .. } = job else { continue };
        batch.insert(
            messages,
            codec::message_key(&lane.name, *seq),
            codec::encode_message(*published_ms, event.as_deref(), payload),
        );
        newest.insert(lane.name.clone(), (lane.clone(), *seq));
    }
    for (lane, last_seq) in newest.values() {
        batch.insert(&shared.store.channels, lane.name.as_bytes(), lane.row(*last_seq).encode());
    }
    let committed = match shared.unavailable() {
        Some(e) => Err(e),
        None => batch.commit().map_err(|e| {
            fail(shared, &e.to_string());
            shared.unavailable().expect("just failed")
        }),
    };
    if committed.is_ok() {
        if shared.config.durability == Durability::Always {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        shared.disk_messages.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    }
    for job in jobs {
        let Job::Publish { lane, seq, published_ms, event, payload, reply } = job else { continue };
        shared.queue.release(payload.bytes.len());
        let answer = match &committed {
            Err(e) => Err(e.clone()),
            Ok(()) => place(shared, &lane, seq, published_ms, event.as_deref(), payload),
        };
        let _ = reply.send(answer);
    }
    if committed.is_ok() {
        let mut trims = shared.store.db.batch().durability(None);
        for (lane, _) in newest.values() {
            trim(shared, lane, &mut lane.lock(), &mut trims);
        }
        commit_quietly(shared, trims);
    }
    committed.is_ok()
}

/// Puts a written message in its ring (its subscribers get it) and says where it went.
fn place(
    shared: &Shared,
    lane: &Lane,
    seq: u64,
    published_ms: u64,
    event: Option<&str>,
    payload: Payload,
) -> Result<Published, ChannelError> {
    let mut state = lane.lock();
    let ring = shared.ring(lane, &state)?;
    let age = Duration::from_millis(now_ms().saturating_sub(published_ms));
    let placed = shared.local.insert(&ring, seq, event, payload, age);
    state.written = seq;
    let subscribers = ring.subscribers.load(Ordering::Relaxed);
    Ok(match placed {
        Some(message) => Published {
            position: message.position,
            id: String::from_utf8_lossy(&message.cursor).into_owned(),
            subscribers,
        },
        // Only if the ring was somehow ahead: the position is still the message's own.
        None => {
            let position = holdfast_hub::Position { epoch: lane.epoch, seq };
            Published { position, id: Cursor::new([(&*lane.name, position)]).encode(), subscribers }
        }
    })
}

/// Adds to `batch` the deletion of `lane`'s messages its ring no longer holds.
fn trim(shared: &Shared, lane: &Lane, state: &mut LaneState, batch: &mut fjall::OwnedWriteBatch) {
    let Some(ring) = shared.local.channel(&lane.name).filter(|ring| ring.epoch == lane.epoch) else { return };
    let (held, first, last) = ring.info();
    let first_held = if held == 0 { last + 1 } else { first };
    // Never past what is written (with `always`, a ring lags the disk by what is being placed).
    remove_before(shared, lane, state, first_held.min(state.written + 1), batch);
}

/// Adds to `batch` the deletion of a lane's messages before `end`.
fn remove_before(shared: &Shared, lane: &Lane, state: &mut LaneState, end: u64, batch: &mut fjall::OwnedWriteBatch) {
    if end <= state.disk_first {
        return;
    }
    for seq in state.disk_first..end {
        batch.remove(&shared.store.messages, codec::message_key(&lane.name, seq));
    }
    let removed = end - state.disk_first;
    state.disk_first = end;
    let _ =
        shared.disk_messages.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(removed)));
}

/// Commits deletions without waiting for them to reach the disk (a crash brings back messages
/// the rings trim again on the next start).
fn commit_quietly(shared: &Shared, batch: fjall::OwnedWriteBatch) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = batch.commit() {
        fail(shared, &e.to_string());
    }
}

/// Once a second: deletes what the rings dropped (age, the byte bound), and forgets channels
/// whose ring is gone (it held nothing and nobody held it), row and all, as the memory broker
/// forgets them.
fn tend(shared: &Shared) {
    shared.tend_queued.store(false, Ordering::Release);
    if shared.unavailable().is_some() {
        return;
    }
    let lanes: Vec<Arc<Lane>> = shared.lanes().values().cloned().collect();
    let mut batch = shared.store.db.batch().durability(None);
    let mut forgotten = Vec::new();
    for lane in lanes {
        if !lane.is_read() {
            // Not read back yet: it has no ring, but it is not gone.
            continue;
        }
        let mut state = lane.lock();
        if shared.local.channel(&lane.name).is_some_and(|ring| ring.epoch == lane.epoch) {
            trim(shared, &lane, &mut state, &mut batch);
        } else if state.reserved == state.written && !state.gone {
            let end = state.written + 1;
            remove_before(shared, &lane, &mut state, end, &mut batch);
            batch.remove(&shared.store.channels, lane.name.as_bytes());
            state.gone = true;
            forgotten.push(lane.clone());
        }
    }
    if !forgotten.is_empty() {
        let mut lanes = shared.lanes_mut();
        for lane in forgotten {
            if lanes.get(&lane.name).is_some_and(|held| Arc::ptr_eq(held, &lane)) {
                lanes.remove(&lane.name);
            }
        }
    }
    commit_quietly(shared, batch);
}

/// Drops a deleted channel's messages and row, then its ring: the subscribers it had.
fn delete(shared: &Shared, lane: &Lane) -> Result<Option<u64>, ChannelError> {
    if let Some(e) = shared.unavailable() {
        return Err(e);
    }
    let mut state = lane.lock();
    let mut batch = shared.store.db.batch().durability(Some(commit_mode(shared)));
    let end = state.written + 1;
    remove_before(shared, lane, &mut state, end, &mut batch);
    batch.remove(&shared.store.channels, lane.name.as_bytes());
    if let Err(e) = batch.commit() {
        fail(shared, &e.to_string());
        return Err(shared.unavailable().expect("just failed"));
    }
    drop(state);
    let ring = shared.local.channel(&lane.name).filter(|ring| ring.epoch == lane.epoch);
    let subscribers = ring.as_ref().map_or(0, |ring| ring.subscribers.load(Ordering::Relaxed));
    if ring.is_some() {
        shared.local.delete(&lane.name);
    }
    Ok(Some(subscribers))
}

/// Syncs everything and records that the store was closed cleanly.
fn close(shared: &Shared) {
    if shared.unavailable().is_some() {
        return;
    }
    // Everything in tables: the next start replays nothing from the journal into memory.
    if let Err(e) = shared.store.flush_all() {
        fail(shared, &e.to_string());
        return;
    }
    let run = RunRecord {
        clean: true,
        durability: shared.config.durability.label().to_string(),
        boot_id: shared.config.boot_id.clone(),
    };
    match shared.store.write_run(&run) {
        Ok(()) => {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail(shared, &e.to_string()),
    }
}
