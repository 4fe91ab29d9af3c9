//! [`DiskBroker`]: the embedded broker with its histories kept on disk.
//!
//! Transports read local channel rings as with the memory broker (a [`MemoryBroker`] holds
//! them, as the Redis broker's local copies). What differs is the order of a publish:
//! 1. its channel's *lane* (name, epoch, sequence numbers) reserves the next sequence number and
//!    queues the message for the writer, in one step under the lane's lock, so the queue holds
//!    each channel's messages in order;
//! 2. the writer thread takes everything queued, writes it in one batch (one journal write, and
//!    with `durability = "always"` one fsync: group commit), and only then
//! 3. puts each message in its ring (subscribers get it) and answers its publisher.
//!
//! So no subscriber ever sees a message the store does not have: after `kill -9`, every
//! position any client saw is still there, and cursors resume with no gap. A power cut can
//! still take what was written but not synced (`none`, `batch`); the store then reopens its
//! channels in new epochs that continue the old ones, and cursors past what was kept are told
//! so with a gap ([`holdfast_hub::MemoryBroker::adopt_continuing`]).
//!
//! The rings are the authority on what is kept (`history_messages`, `history_seconds`,
//! `history_max_bytes` apply to them as in memory); the writer deletes from disk whatever its
//! ring no longer holds, after each batch and once a second, and forgets a channel its ring
//! dropped (no history, no holder), as the memory broker does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast_hub::{
    validate_channel_name, Broker, BrokerFuture, Channel, ChannelError, ChannelInfo, HistoryLimits, MemoryBroker,
    Payload, Position, PublishListener, Published, Recovered, StoreStats,
};
use tokio::sync::oneshot;

use crate::codec::{ChannelRow, RunRecord};
use crate::db::{Store, StoreError};
use crate::readback::ReadBack;
use crate::writer::{Job, Queue};

/// When a disk store's writes count as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the OS before the publish is answered, never synced by Holdfast: survives
    /// the process dying, not the machine.
    None,
    /// Synced at most every `durability_interval`: a power cut loses at most that much.
    Batch,
    /// Synced before the publish is answered (one sync per group of concurrent publishes).
    Always,
}

impl Durability {
    /// `none`, `batch` or `always`.
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "none" => Some(Durability::None),
            "batch" => Some(Durability::Batch),
            "always" => Some(Durability::Always),
            _ => None,
        }
    }

    /// The configuration word for it.
    pub fn label(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batch => "batch",
            Durability::Always => "always",
        }
    }
}

/// How to open a [`DiskBroker`].
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The store's directory (`data_dir`).
    pub dir: PathBuf,
    /// `durability`.
    pub durability: Durability,
    /// `durability_interval` (for [`Durability::Batch`]).
    pub interval: Duration,
    /// The history bounds, applied to the rings (and so to the disk).
    pub limits: HistoryLimits,
    /// Channels held at most.
    pub max_channels: usize,
    /// This boot of the machine ([`boot_id`]).
    pub boot_id: String,
    /// Tests: the read-back waits at this barrier before it reads anything, so what is served
    /// before it can be tested.
    #[cfg(test)]
    pub(crate) hold_read_back: Option<Arc<std::sync::Barrier>>,
}

/// The machine's current boot id (Linux), or empty where there is none: a store left open with
/// another boot id was on a machine that went down, so unsynced writes may be lost.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|id| id.trim().to_string()).unwrap_or_default()
}

/// Where the data of each journal file (`*.jnl`) in a store's directory ends: after its last
/// byte that is not zero. fjall creates journals 64 MiB long (zeros, sparse) and cuts them back
/// when it reopens them, so a journal that ends up shorter than this lost written data.
fn journal_data_ends(dir: &std::path::Path) -> HashMap<std::ffi::OsString, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "jnl"))
        .filter_map(|entry| Some((entry.file_name(), data_end(&entry.path()).ok()?)))
        .collect()
}

/// The offset after the last byte that is not zero (read backwards, 1 MiB at a time).
fn data_end(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut chunk = vec![0u8; 1 << 20];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        if let Some(last) = piece.iter().rposition(|b| *b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn file_lengths(dir: &std::path::Path) -> HashMap<std::ffi::OsString, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries.flatten().filter_map(|entry| Some((entry.file_name(), entry.metadata().ok()?.len()))).collect()
}

/// One channel's identity and numbering, beside its ring.
pub(crate) struct Lane {
    pub name: Arc<str>,
    pub epoch: u32,
    pub continues: Option<Position>,
    state: Mutex<LaneState>,
    /// The row it was reopened from, until its messages are in its ring (`None` once they are,
    /// or for a channel new since the start): see [`crate::readback`].
    unread: Mutex<Option<ChannelRow>>,
    read: AtomicBool,
    /// Held by a request reading this lane first and waiting for its fill, so that the requests
    /// that come meanwhile wait for that one instead of scanning it again (an async lock: they
    /// wait as tasks, holding no thread).
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
pub(crate) struct LaneState {
    /// The newest sequence number handed out.
    pub reserved: u64,
    /// The newest written and placed in the ring.
    pub written: u64,
    /// Every message before this one is gone from disk.
    pub disk_first: u64,
    /// The lane was deleted or forgotten: a publish that still holds it takes a new one.
    pub gone: bool,
}

impl Lane {
    /// A channel new since the start.
    fn new(name: Arc<str>, epoch: u32, continues: Option<Position>) -> Lane {
        let state = LaneState { disk_first: 1, ..LaneState::default() };
        Lane {
            name,
            epoch,
            continues,
            state: Mutex::new(state),
            unread: Mutex::new(None),
            read: AtomicBool::new(true),
            reading: tokio::sync::Mutex::const_new(()),
        }
    }

    /// A channel reopened from `row` (in `epoch`, a new one if it continues the row's), its
    /// messages not read yet.
    fn reopened(name: Arc<str>, epoch: u32, continues: Option<Position>, row: ChannelRow) -> Lane {
        // Where its messages start on disk is set when they are read.
        let state = LaneState { reserved: row.last_seq, written: row.last_seq, disk_first: 1, gone: false };
        Lane {
            name,
            epoch,
            continues,
            state: Mutex::new(state),
            unread: Mutex::new(Some(row)),
            read: AtomicBool::new(false),
            reading: tokio::sync::Mutex::const_new(()),
        }
    }

    /// Its messages are in its ring.
    pub(crate) fn is_read(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }

    /// Taken by a request that reads this lane first (never by the writer).
    pub(crate) async fn reading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reading.lock().await
    }

    pub(crate) fn unread(&self) -> MutexGuard<'_, Option<ChannelRow>> {
        self.unread.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn mark_read(&self) {
        self.read.store(true, Ordering::Release);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn row(&self, last_seq: u64) -> ChannelRow {
        ChannelRow { epoch: self.epoch, last_seq, continues: self.continues }
    }
}

/// What the broker and its writer thread share.
pub(crate) struct Shared {
    pub store: Store,
    pub local: MemoryBroker,
    pub lanes: RwLock<HashMap<Arc<str>, Arc<Lane>>>,
    pub queue: Queue,
    pub config: DiskConfig,
    /// Set when a write failed: the store is not trusted again until a restart.
    pub failed: AtomicBool,
    pub syncs: AtomicU64,
    /// Messages on disk (kept as they are written and deleted).
    pub disk_messages: AtomicU64,
    pub recovered: Recovered,
    /// A tending pass is queued (one at a time).
    pub tend_queued: AtomicBool,
    /// Reading the messages back after opening.
    pub read_back: ReadBack,
}

impl Shared {
    pub(crate) fn lanes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Lane>>> {
        self.lanes.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lanes_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Lane>>> {
        self.lanes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel's lane, created (in a new epoch) if it has none.
    fn lane(&self, name: &str) -> Result<Arc<Lane>, ChannelError> {
        if let Some(lane) = self.lanes().get(name) {
            return Ok(lane.clone());
        }
        validate_channel_name(name)?;
        let mut lanes = self.lanes_mut();
        if let Some(lane) = lanes.get(name) {
            return Ok(lane.clone());
        }
        if lanes.len() >= self.config.max_channels {
            return Err(ChannelError::TooManyChannels(self.config.max_channels));
        }
        let name: Arc<str> = name.into();
        let lane = Arc::new(Lane::new(name.clone(), fastrand::u32(1..), None));
        lanes.insert(name, lane.clone());
        Ok(lane)
    }

    /// A channel's lane with its messages in its ring, read first if they are not yet.
    async fn read_lane(self: &Arc<Self>, name: &str) -> Result<Arc<Lane>, ChannelError> {
        let lane = self.lane(name)?;
        crate::readback::read_channel(self, &lane).await?;
        Ok(lane)
    }

    /// The ring of a channel whose messages are read (`None` if they are not yet).
    fn ready_ring(&self, name: &str) -> Option<Result<Arc<Channel>, ChannelError>> {
        // Until everything is read, a ring may exist before its messages are all in it.
        if self.read_back.is_finished() {
            if let Some(ring) = self.local.channel(name) {
                return Some(Ok(ring));
            }
        }
        loop {
            let lane = match self.lane(name) {
                Ok(lane) => lane,
                Err(e) => return Some(Err(e)),
            };
            if !lane.is_read() {
                return None;
            }
            let state = lane.lock();
            // Forgotten between the look-up and the lock: take the new lane.
            if !state.gone {
                return Some(self.ring(&lane, &state));
            }
        }
    }

    /// The lane's ring, adopted at its newest written position if the local broker does not hold
    /// it (new, or dropped while it held nothing). Called with the lane's lock held, so the
    /// writer's placing and this agree on where the ring stands.
    pub(crate) fn ring(&self, lane: &Lane, state: &LaneState) -> Result<Arc<Channel>, ChannelError> {
        if let Some(ring) = self.local.channel(&lane.name) {
            if ring.epoch == lane.epoch && !ring.is_deleted() {
                return Ok(ring);
            }
        }
        let (ring, _) = self.local.adopt_continuing(&lane.name, lane.epoch, state.written, lane.continues)?;
        Ok(ring)
    }

    pub(crate) fn unavailable(&self) -> Option<ChannelError> {
        if self.read_back.is_damaged() {
            return Some(ChannelError::Unavailable(
                "the history store is damaged (see the server's log); the server is stopping".into(),
            ));
        }
        self.failed.load(Ordering::Acquire).then(|| {
            ChannelError::Unavailable("a write to the history store failed; restart the server (see its log)".into())
        })
    }
}

/// The embedded broker with its histories on disk (`history_store = "disk"`).
pub struct DiskBroker {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl DiskBroker {
    /// Opens the store in `config.dir` (created if needed), reads its channel rows, starts the
    /// writer, and starts reading the messages back into the rings ([`crate::readback`]). A store
    /// whose rows cannot be read is refused; damage among the messages is reported by
    /// [`Broker::read_back`].
    pub fn open(config: DiskConfig) -> Result<DiskBroker, StoreError> {
        let started = Instant::now();
        let journals = journal_data_ends(&config.dir);
        let store = Store::open(&config.dir)?;
        // fjall drops a journal's damaged or torn tail when it reopens, silently: seen here as a
        // journal cut back before the end of its data. What was in that tail may have reached
        // subscribers.
        let after = file_lengths(&config.dir);
        let journal_cut = journals.iter().any(|(name, end)| after.get(name).is_some_and(|now| now < end));
        if journal_cut {
            tracing::warn!(dir = %config.dir.display(), "history store: a journal's damaged tail was dropped on reopening; the newest writes may be lost");
        }
        let previous =
            store.run_record().map_err(|why| crate::db::damaged(&config.dir, vec![format!("meta key run: {why}")]))?;
        let (rows, problems) = store.read_rows()?;
        if !problems.is_empty() {
            return Err(crate::db::damaged(&config.dir, problems.iter().map(|p| p.line()).collect()));
        }
        if rows.len() > config.max_channels {
            let path = config.dir.display().to_string();
            return Err(StoreError::TooManyChannels { path, held: rows.len(), max: config.max_channels });
        }
        // A journal cut short, or the store left open (not closed by the server) on a machine
        // that has restarted since without syncing every write: the newest writes may be lost.
        let continued = journal_cut
            || previous.as_ref().is_some_and(|run| {
                !run.clean
                    && run.durability != Durability::Always.label()
                    && (run.boot_id != config.boot_id || run.boot_id.is_empty())
            });
        let local = MemoryBroker::new(config.limits).with_max_channels(config.max_channels);
        let mut lanes = HashMap::new();
        let mut names = Vec::with_capacity(rows.len());
        let mut batch = store.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (name, row) in rows {
            let name: Arc<str> = name.into();
            let (epoch, continues) = if continued {
                // A new epoch that continues the old one: cursors past what was kept get a gap.
                let epoch = loop {
                    let epoch = fastrand::u32(1..);
                    if epoch != row.epoch {
                        break epoch;
                    }
                };
                let continues = Some(Position { epoch: row.epoch, seq: row.last_seq });
                batch.insert(
                    &store.channels,
                    name.as_bytes(),
                    ChannelRow { epoch, last_seq: row.last_seq, continues }.encode(),
                );
                (epoch, continues)
            } else {
                (row.epoch, row.continues)
            };
            lanes.insert(name.clone(), Arc::new(Lane::reopened(name.clone(), epoch, continues, row)));
            names.push(name);
        }
        batch.commit().map_err(crate::db::io_error)?;
        store.write_run(&RunRecord {
            clean: false,
            durability: config.durability.label().to_string(),
            boot_id: config.boot_id.clone(),
        })?;
        let snapshot = store.db.snapshot();
        let recovered = Recovered {
            channels: names.len() as u64,
            millis: started.elapsed().as_millis() as u64,
            clean: previous.as_ref().is_none_or(|run| run.clean),
            continued,
            ..Recovered::default()
        };
        let shared = Arc::new(Shared {
            store,
            local,
            lanes: RwLock::new(lanes),
            queue: Queue::default(),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            // Counted as the messages are read back.
            disk_messages: AtomicU64::new(0),
            recovered,
            tend_queued: AtomicBool::new(false),
            read_back: ReadBack::new(started, snapshot),
            config,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("holdfast-store".into())
                .spawn(move || crate::writer::run(shared))
                .map_err(|e| StoreError::Io(format!("cannot start the store's writer: {e}")))?
        };
        let broker = DiskBroker { shared: shared.clone(), writer: Mutex::new(Some(writer)) };
        crate::readback::start(shared, names)
            .map_err(|e| StoreError::Io(format!("cannot start reading the store back: {e}")))?;
        Ok(broker)
    }

    /// What the store held when it was opened.
    pub fn recovered(&self) -> Recovered {
        let read_back = &self.shared.read_back;
        Recovered {
            messages: read_back.messages.load(Ordering::Relaxed),
            bytes: read_back.bytes.load(Ordering::Relaxed),
            read_back: read_back.is_finished(),
            read_back_millis: read_back.millis(),
            ..self.shared.recovered
        }
    }

    async fn publish_owned(
        shared: Arc<Shared>,
        name: String,
        event: Option<String>,
        payload: Payload,
    ) -> Result<Published, ChannelError> {
        if let Some(e) = shared.unavailable() {
            return Err(e);
        }
        shared.queue.admit(payload.bytes.len()).map_err(ChannelError::Unavailable)?;
        let published_ms = now_ms();
        let (reply, answer) = oneshot::channel();
        let mut job = Some((event, payload, reply));
        loop {
            let lane = match shared.read_lane(&name).await {
                Ok(lane) => lane,
                Err(e) => {
                    let (_, payload, _) = job.take().expect("still held");
                    shared.queue.release(payload.bytes.len());
                    return Err(e);
                }
            };
            let mut state = lane.lock();
            if state.gone {
                // Deleted or forgotten between the look-up and the lock: a new lane.
                continue;
            }
            state.reserved += 1;
            let seq = state.reserved;
            let (event, payload, reply) = job.take().expect("taken once");
            // Queued under the lane's lock: the queue holds this channel's messages in order.
            shared.queue.push(Job::Publish { lane: lane.clone(), seq, published_ms, event, payload, reply });
            break;
        }
        answer.await.unwrap_or_else(|_| Err(ChannelError::Unavailable("the history store closed".into())))
    }

    async fn delete_owned(shared: Arc<Shared>, name: String) -> Result<Option<u64>, ChannelError> {
        if let Some(e) = shared.unavailable() {
            return Err(e);
        }
        let unread = shared.lanes().get(name.as_str()).is_some_and(|lane| !lane.is_read());
        if unread {
            // Its messages are deleted by position: where they start is known once read.
            shared.read_lane(&name).await?;
        }
        let Some(lane) = shared.lanes_mut().remove(name.as_str()) else {
            // Never written (a ring a subscriber opened): nothing on disk.
            let subscribers = shared.local.channel(&name).map(|c| c.subscribers.load(Ordering::Relaxed));
            return Ok(shared.local.delete(&name).and(subscribers));
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut state = lane.lock();
            state.gone = true;
            shared.queue.push(Job::Delete { lane: lane.clone(), reply });
        }
        answer.await.unwrap_or_else(|_| Err(ChannelError::Unavailable("the history store closed".into())))
    }
}

impl Broker for DiskBroker {
    fn publish(
        &self,
        channel: &str,
        event: Option<&str>,
        payload: Payload,
    ) -> BrokerFuture<Result<Published, ChannelError>> {
        Box::pin(DiskBroker::publish_owned(
            self.shared.clone(),
            channel.to_string(),
            event.map(str::to_string),
            payload,
        ))
    }

    fn ready(&self, name: &str) -> Option<Result<Arc<Channel>, ChannelError>> {
        self.shared.ready_ring(name)
    }

    fn open(&self, name: &str) -> BrokerFuture<Result<Arc<Channel>, ChannelError>> {
        if let Some(ready) = self.shared.ready_ring(name) {
            return Box::pin(std::future::ready(ready));
        }
        let (shared, name) = (self.shared.clone(), name.to_string());
        Box::pin(async move {
            loop {
                shared.read_lane(&name).await?;
                if let Some(ready) = shared.ready_ring(&name) {
                    return ready;
                }
            }
        })
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        if !self.shared.read_back.is_finished() {
            let lane = self.shared.lanes().get(name).cloned();
            if let Some(lane) = lane.filter(|lane| !lane.is_read()) {
                // Rare (the admin pages, in the first seconds): read it here.
                crate::readback::read_channel_blocking(&self.shared, &lane).ok()?;
            }
        }
        self.shared.local.channel(name)
    }

    fn info(&self, name: &str) -> BrokerFuture<Result<Option<ChannelInfo>, ChannelError>> {
        let unread = self.shared.lanes().get(name).is_some_and(|lane| !lane.is_read());
        if !unread {
            return Broker::info(&self.shared.local, name);
        }
        let (shared, name) = (self.shared.clone(), name.to_string());
        Box::pin(async move {
            shared.read_lane(&name).await?;
            Broker::info(&shared.local, &name).await
        })
    }

    fn delete(&self, name: &str) -> BrokerFuture<Result<Option<u64>, ChannelError>> {
        Box::pin(DiskBroker::delete_owned(self.shared.clone(), name.to_string()))
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        self.shared.local.channels()
    }

    fn add_listener(&self, listener: Arc<dyn PublishListener>) {
        Broker::add_listener(&self.shared.local, listener);
    }

    fn kind(&self) -> &'static str {
        "disk"
    }

    fn connected(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire)
    }

    fn expire(&self) {
        Broker::expire(&self.shared.local);
        if !self.shared.tend_queued.swap(true, Ordering::AcqRel) {
            self.shared.queue.push(Job::Tend);
        }
    }

    fn channel_count(&self) -> usize {
        self.shared.local.channel_count()
    }

    fn channel_bytes(&self) -> u64 {
        // A lane: its allocation, its name, its map slot.
        let lanes = self.shared.lanes();
        let lane_bytes: u64 =
            lanes.keys().map(|name| (std::mem::size_of::<Lane>() + 32 + name.len() + 24) as u64).sum();
        self.shared.local.channel_bytes() + lane_bytes
    }

    fn history_bytes(&self) -> u64 {
        self.shared.local.history_bytes()
    }

    fn store(&self) -> Option<StoreStats> {
        let shared = &self.shared;
        Some(StoreStats {
            path: shared.config.dir.display().to_string(),
            durability: shared.config.durability.label(),
            disk_bytes: shared.store.disk_bytes(),
            channels: shared.lanes().len() as u64,
            messages: shared.disk_messages.load(Ordering::Relaxed),
            pending: shared.queue.len() as u64,
            syncs: shared.syncs.load(Ordering::Relaxed),
            recovered: self.recovered(),
        })
    }

    fn read_back(&self) -> BrokerFuture<Result<(), String>> {
        self.shared.read_back.wait()
    }

    fn close(&self) -> BrokerFuture<()> {
        self.shared.read_back.stop();
        let (reply, done) = oneshot::channel();
        self.shared.queue.push(Job::Close { reply });
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        Box::pin(async move {
            let _ = done.await;
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
        })
    }
}

impl Drop for DiskBroker {
    fn drop(&mut self) {
        // Not closed by the server (a test, an error path): the writer finishes what is queued,
        // syncs and marks the store closed, then exits.
        if let Some(writer) = self.writer.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            self.shared.read_back.stop();
            let (reply, _) = oneshot::channel();
            self.shared.queue.push(Job::Close { reply });
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::RepairReport;
    use bytes::Bytes;
    use holdfast_hub::ReadFrom;

    fn config(dir: &std::path::Path, durability: Durability, messages: usize) -> DiskConfig {
        DiskConfig {
            dir: dir.to_path_buf(),
            durability,
            interval: Duration::from_millis(20),
            limits: HistoryLimits { messages, max_age: Duration::from_secs(3600), max_bytes: u64::MAX },
            max_channels: 1000,
            boot_id: "boot-1".into(),
            hold_read_back: None,
        }
    }

    async fn publish(broker: &DiskBroker, channel: &str, text: &str) -> Published {
        broker.publish(channel, None, Payload::text(Bytes::copy_from_slice(text.as_bytes()))).await.unwrap()
    }

    fn payloads(broker: &DiskBroker, channel: &str) -> Vec<String> {
        let ring = broker.channel(channel).unwrap();
        let (_, first, _) = ring.info();
        ring.read_after(first - 1, 1000)
            .messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn history_positions_and_epochs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
            for i in 1..=5 {
                publish(&broker, "room", &format!("m{i}")).await;
            }
            let third = broker.channel("room").unwrap().read_after(2, 1).messages[0].position;
            broker.close().await;
            third
        };
        let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
        broker.read_back().await.unwrap();
        let recovered = broker.recovered();
        assert_eq!((recovered.channels, recovered.messages, recovered.clean, recovered.continued), (1, 5, true, false));
        assert_eq!(payloads(&broker, "room"), ["m1", "m2", "m3", "m4", "m5"]);
        let ring = broker.channel("room").unwrap();
        assert_eq!(ring.epoch, before.epoch);
        // A cursor from before the restart resumes with no gap, and numbering goes on.
        assert_eq!(ring.start(ReadFrom::After(before)), (3, None));
        let next = publish(&broker, "room", "m6").await;
        assert_eq!(next.position, Position { epoch: before.epoch, seq: 6 });
    }

    #[tokio::test]
    async fn a_reopened_store_serves_before_its_read_back_and_reads_a_channel_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let cursor_a = {
            let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
            for (channel, count) in [("a", 5), ("b", 3), ("c", 2), ("d", 4)] {
                for i in 1..=count {
                    publish(&broker, channel, &format!("{channel}{i}")).await;
                }
            }
            broker.close().await;
            broker.channel("a").unwrap().read_after(2, 1).messages[0].position
        };
        let hold = Arc::new(std::sync::Barrier::new(2));
        let mut held = config(dir.path(), Durability::Batch, 100);
        held.hold_read_back = Some(hold.clone());
        let broker = DiskBroker::open(held).unwrap();
        let recovered = broker.recovered();
        assert_eq!((recovered.channels, recovered.messages, recovered.read_back), (4, 0, false));
        // Nothing read yet: a subscriber must wait for its channel, off the shard threads.
        assert!(broker.ready("a").is_none());
        let ring = broker.open("a").await.unwrap();
        assert_eq!(ring.start(ReadFrom::After(cursor_a)), (3, None), "resumes with no gap");
        assert_eq!(payloads(&broker, "a"), ["a1", "a2", "a3", "a4", "a5"]);
        assert!(broker.ready("a").is_some());
        // A publish reads its channel first, and numbering goes on.
        assert_eq!(publish(&broker, "b", "b4").await.position.seq, 4);
        assert_eq!(payloads(&broker, "b"), ["b1", "b2", "b3", "b4"]);
        let info = broker.info("c").await.unwrap().unwrap();
        assert_eq!(info.messages, 2, "{info:?}");
        assert_eq!(broker.delete("c").await, Ok(Some(0)));
        // Tending meanwhile must not take unread channels (no ring yet) for forgotten ones.
        broker.expire();
        tokio::time::sleep(Duration::from_millis(100)).await;
        hold.wait();
        broker.read_back().await.unwrap();
        let recovered = broker.recovered();
        assert!(recovered.read_back && recovered.read_back_millis > 0, "{recovered:?}");
        assert_eq!(recovered.messages, 5 + 3 + 2 + 4);
        assert_eq!(payloads(&broker, "d"), ["d1", "d2", "d3", "d4"]);
        assert!(broker.channel("c").is_none());
        assert_eq!(broker.store().unwrap().messages, 5 + 4 + 4);
        broker.close().await;
        drop(broker);
        let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
        broker.read_back().await.unwrap();
        assert_eq!(payloads(&broker, "b"), ["b1", "b2", "b3", "b4"]);
        assert!(broker.channel("c").is_none());
        assert_eq!(broker.recovered().messages, 5 + 4 + 4);
    }

    #[tokio::test]
    async fn every_channel_is_read_back_through_the_writer_and_a_close_meanwhile_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::None, 100)).unwrap();
            // More channels than a read-back thread hands the writer at once.
            for i in 0..(4 * crate::readback::FILLS_IN_FLIGHT) {
                for n in 1..=3 {
                    publish(&broker, &format!("c{i:03}"), &format!("c{i:03}-{n}")).await;
                }
            }
            broker.close().await;
        }
        let channels = 4 * crate::readback::FILLS_IN_FLIGHT;
        let broker = DiskBroker::open(config(dir.path(), Durability::None, 100)).unwrap();
        // Publishing while the writer places read-back channels.
        let published = publish(&broker, "c007", "c007-4").await;
        assert_eq!(published.position.seq, 4);
        broker.read_back().await.unwrap();
        assert_eq!(broker.recovered().messages, 3 * channels as u64);
        for i in [0, 7, channels - 1] {
            let name = format!("c{i:03}");
            let mut expected: Vec<String> = (1..=3).map(|n| format!("{name}-{n}")).collect();
            if i == 7 {
                expected.push("c007-4".into());
            }
            assert_eq!(payloads(&broker, &name), expected);
        }
        broker.close().await;
        drop(broker);

        // Closed while the read-back is held: the close and a request waiting for its channel
        // both end (the request with an error or its channel), none hangs.
        let hold = Arc::new(std::sync::Barrier::new(2));
        let mut held = config(dir.path(), Durability::None, 100);
        held.hold_read_back = Some(hold.clone());
        let broker = Arc::new(DiskBroker::open(held).unwrap());
        let reader = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.open("c010").await.is_ok() })
        };
        let closing = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.close().await })
        };
        tokio::time::timeout(Duration::from_secs(10), closing).await.expect("close hangs").unwrap();
        hold.wait();
        tokio::time::timeout(Duration::from_secs(10), reader).await.expect("request hangs").unwrap();
        tokio::time::timeout(Duration::from_secs(10), broker.read_back()).await.expect("read-back hangs").ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_coming_back_at_once_read_their_channel_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::None, 100)).unwrap();
            for i in 1..=50 {
                publish(&broker, "busy", &format!("m{i}")).await;
            }
            broker.close().await;
        }
        let hold = Arc::new(std::sync::Barrier::new(2));
        let mut held = config(dir.path(), Durability::None, 100);
        held.hold_read_back = Some(hold.clone());
        let broker = Arc::new(DiskBroker::open(held).unwrap());
        let opens: Vec<_> = (0..32)
            .map(|_| {
                let broker = broker.clone();
                tokio::spawn(async move { broker.open("busy").await.map(|ring| ring.info().0) })
            })
            .collect();
        for open in opens {
            assert_eq!(open.await.unwrap(), Ok(50));
        }
        assert_eq!(broker.shared.read_back.scans.load(Ordering::Relaxed), 1, "one scan for 32 requests");
        hold.wait();
        broker.read_back().await.unwrap();
        broker.close().await;
    }

    /// A reconnect wave asks for many channels not read yet at once: the requests wait for the
    /// writer as tasks, not each in a blocking thread (tokio would start up to 512 of them).
    #[test]
    fn a_reconnect_wave_over_many_channels_waits_without_a_thread_each() {
        const CHANNELS: usize = 200;
        const RUNTIME: &str = "wave-test";
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(RUNTIME)
            .enable_all()
            .build()
            .unwrap();
        let threads_named = |name: &str| {
            let tasks = std::fs::read_dir("/proc/self/task").unwrap();
            tasks
                .flatten()
                .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name))
                .count()
        };
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            {
                let broker = DiskBroker::open(config(dir.path(), Durability::None, 100)).unwrap();
                for i in 0..CHANNELS {
                    publish(&broker, &format!("c{i}"), "kept").await;
                }
                broker.close().await;
            }
            let hold = Arc::new(std::sync::Barrier::new(2));
            let mut held = config(dir.path(), Durability::None, 100);
            held.hold_read_back = Some(hold.clone());
            let broker = Arc::new(DiskBroker::open(held).unwrap());
            let writer = Arc::new(std::sync::Barrier::new(2));
            broker.shared.queue.push(Job::Hold(writer.clone()));
            while broker.shared.queue.len() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let opens: Vec<_> = (0..CHANNELS)
                .map(|i| {
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.open(&format!("c{i}")).await.map(|ring| ring.info().0) })
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(20);
            while broker.shared.queue.len() < CHANNELS {
                assert!(Instant::now() < deadline, "{} of {CHANNELS} fills queued", broker.shared.queue.len());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Every request now waits for the held writer. Waiting each in a blocking thread,
            // they held 200 threads; as tasks, the runtime has its one worker and the blocking
            // threads the scans used (one per core at once; a few more, as tokio may start a
            // thread before the one a scan just left is idle again).
            let threads = threads_named(RUNTIME);
            writer.wait();
            assert!(threads < CHANNELS / 4, "{threads} runtime threads for {CHANNELS} waiting requests");
            for open in opens {
                assert_eq!(open.await.unwrap(), Ok(1));
            }
            assert_eq!(broker.shared.read_back.scans.load(Ordering::Relaxed), CHANNELS as u64);
            hold.wait();
            broker.read_back().await.unwrap();
            broker.close().await;
        });
    }

    #[tokio::test]
    async fn a_store_with_more_channels_than_max_channels_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 10)).unwrap();
            for channel in ["a", "b", "c"] {
                publish(&broker, channel, "kept").await;
            }
            broker.close().await;
        }
        let mut fewer = config(dir.path(), Durability::Batch, 10);
        fewer.max_channels = 2;
        let refused = DiskBroker::open(fewer).err().unwrap();
        assert!(matches!(refused, StoreError::TooManyChannels { held: 3, max: 2, .. }), "{refused}");
        assert!(refused.to_string().contains("max_channels"), "{refused}");
        let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 10)).unwrap();
        broker.read_back().await.unwrap();
        assert_eq!(broker.recovered().messages, 3, "nothing was dropped");
    }

    #[tokio::test]
    async fn a_clean_close_leaves_everything_in_tables() {
        let dir = tempfile::tempdir().unwrap();
        let broker = DiskBroker::open(config(dir.path(), Durability::None, 1000)).unwrap();
        for i in 0..200 {
            publish(&broker, &format!("c{}", i % 7), "a small message, far below a memtable's size").await;
        }
        broker.close().await;
        drop(broker);
        // Without the flush these 200 writes would all still be in memtables (and the journal),
        // replayed at the next start; with it, each keyspace has them in a table.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.messages.table_count() >= 1 && store.channels.table_count() >= 1);
        assert_eq!(store.read_all().unwrap().message_count(), 200);
    }

    #[tokio::test]
    async fn concurrent_publishes_share_syncs_and_keep_each_channels_order() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(DiskBroker::open(config(dir.path(), Durability::Always, 1000)).unwrap());
        let tasks: Vec<_> = (0..10)
            .map(|p| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..50 {
                        seqs.push(publish(&broker, "shared", &format!("{p}-{i}")).await.position.seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let seqs = task.await.unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one publisher's messages in its order");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=500).collect::<Vec<u64>>());
        let stats = broker.store().unwrap();
        assert_eq!(stats.messages, 500);
        assert!(stats.syncs < 500, "{} syncs for 500 publishes: no group commit", stats.syncs);
    }

    #[tokio::test]
    async fn the_disk_keeps_what_the_ring_keeps_and_forgets_deleted_channels() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::None, 3)).unwrap();
            for i in 1..=10 {
                publish(&broker, "short", &format!("m{i}")).await;
            }
            publish(&broker, "gone", "x").await;
            assert_eq!(broker.delete("gone").await, Ok(Some(0)));
            assert_eq!(broker.store().unwrap().messages, 3);
            broker.close().await;
        }
        let broker = DiskBroker::open(config(dir.path(), Durability::None, 3)).unwrap();
        assert_eq!(payloads(&broker, "short"), ["m8", "m9", "m10"]);
        assert!(broker.channel("gone").is_none());
        broker.read_back().await.unwrap();
        assert_eq!(broker.recovered().messages, 3);
    }

    #[tokio::test]
    async fn a_lowered_history_bound_applies_on_reopening_and_the_disk_follows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 10)).unwrap();
            for i in 1..=10 {
                publish(&broker, "c", &format!("m{i}")).await;
            }
        }
        let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 3)).unwrap();
        assert_eq!(payloads(&broker, "c"), ["m8", "m9", "m10"]);
        broker.expire();
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.store().unwrap().messages != 3 {
            assert!(Instant::now() < deadline, "disk still holds {}", broker.store().unwrap().messages);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(broker);
        let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
        assert_eq!(payloads(&broker, "c"), ["m8", "m9", "m10"], "deleted from disk, not only skipped");
    }

    /// Leaves the store as a machine that went down with it open would.
    fn mark_left_open(dir: &std::path::Path, durability: &str, boot_id: &str) {
        let store = Store::open(dir).unwrap();
        store.write_run(&RunRecord { clean: false, durability: durability.into(), boot_id: boot_id.into() }).unwrap();
    }

    #[tokio::test]
    async fn after_a_machine_restart_unsynced_channels_continue_in_a_new_epoch_with_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let seen = {
            let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
            for i in 1..=4 {
                publish(&broker, "feed", &format!("m{i}")).await;
            }
            broker.close().await;
            broker.channel("feed").unwrap().head()
        };
        // The same machine (a process crash): nothing unsynced is lost, the epoch stays.
        mark_left_open(dir.path(), "batch", "boot-1");
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
            assert!(!broker.recovered().continued && !broker.recovered().clean);
            assert_eq!(broker.channel("feed").unwrap().epoch, seen.epoch);
        }
        // Another boot: the epoch changes; a cursor of the old one is told of a possible loss.
        mark_left_open(dir.path(), "batch", "boot-0");
        let broker = DiskBroker::open(config(dir.path(), Durability::Batch, 100)).unwrap();
        assert!(broker.recovered().continued);
        let ring = broker.channel("feed").unwrap();
        assert_ne!(ring.epoch, seen.epoch);
        let (start, gap) = ring.start(ReadFrom::After(Position { epoch: seen.epoch, seq: 2 }));
        assert_eq!((start, gap.map(|g| g.first_available)), (2, Some(3)));
        assert_eq!(publish(&broker, "feed", "m5").await.position.seq, 5);
        // `always` never continues: what anyone saw was synced first.
        drop(broker);
        mark_left_open(dir.path(), "always", "boot-0");
        let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
        assert!(!broker.recovered().continued);
    }

    #[tokio::test]
    async fn a_damaged_store_is_refused_checked_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
            publish(&broker, "ok", "fine").await;
            broker.close().await;
        }
        {
            let store = Store::open(dir.path()).unwrap();
            store.messages.insert(crate::codec::message_key("ok", 2), [9u8, 1, 2]).unwrap();
            store.messages.insert(b"no-separator".to_vec(), [1u8]).unwrap();
        }
        // Found while reading back: publishes are refused, and the server is told why.
        let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
        let text = broker.read_back().await.unwrap_err();
        assert!(text.contains("damaged") && text.contains("holdfast store repair"), "{text}");
        let refused = broker.publish("ok", None, Payload::text(Bytes::from_static(b"x"))).await.unwrap_err();
        assert!(refused.to_string().contains("damaged"), "{refused}");
        drop(broker);
        let report = crate::check(dir.path()).unwrap();
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        let RepairReport::Mended { dropped, messages, .. } = crate::repair(dir.path()).unwrap() else { panic!() };
        assert_eq!((dropped, messages), (2, 1));
        assert!(crate::check(dir.path()).unwrap().problems.is_empty());
        let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
        assert_eq!(payloads(&broker, "ok"), ["fine"]);
    }
}
