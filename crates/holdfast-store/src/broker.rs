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
use crate::db::{ChannelContents, Store, StoreError};
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
}

/// The machine's current boot id (Linux), or empty where there is none: a store left open with
/// another boot id was on a machine that went down, so unsynced writes may be lost.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|id| id.trim().to_string()).unwrap_or_default()
}

/// One channel read back into its ring.
struct Reopened {
    lane: Arc<Lane>,
    /// Its row again, when it continues in a new epoch.
    new_row: Option<ChannelRow>,
    messages: u64,
    bytes: u64,
}

/// Puts a channel read from disk into a ring of `local` (in a new epoch that continues the old
/// one, if `continued`), and makes its lane.
fn reopen_channel(
    local: &MemoryBroker,
    name: &str,
    channel: &ChannelContents,
    continued: bool,
    limits: HistoryLimits,
    now: u64,
) -> Option<Reopened> {
    let row = channel.row?;
    let first = channel.messages.first().map_or(row.last_seq + 1, |(seq, _)| *seq);
    let (epoch, continues, new_row) = if continued {
        let epoch = loop {
            let epoch = fastrand::u32(1..);
            if epoch != row.epoch {
                break epoch;
            }
        };
        let continues = Some(Position { epoch: row.epoch, seq: row.last_seq });
        (epoch, continues, Some(ChannelRow { epoch, last_seq: row.last_seq, continues }))
    } else {
        (row.epoch, row.continues, None)
    };
    // Only what the ring would keep is put in it (the history bound may have been lowered
    // since); the rest goes from disk on the first tending.
    let skipped = channel.messages.len().saturating_sub(limits.messages);
    let kept = &channel.messages[skipped..];
    let ring_first = kept.first().map_or(row.last_seq + 1, |(seq, _)| *seq);
    let (ring, _) = match local.adopt_continuing(name, epoch, ring_first - 1, continues) {
        Ok(adopted) => adopted,
        Err(e) => {
            tracing::warn!(channel = %name, error = %e, "history store: channel not reopened");
            return None;
        }
    };
    let (mut messages, mut bytes) = (0, 0);
    for (seq, message) in kept {
        let age = Duration::from_millis(now.saturating_sub(message.published_ms));
        messages += 1;
        bytes += message.payload.len() as u64;
        local.insert(&ring, *seq, message.event.as_deref(), message.payload(), age);
    }
    // Messages past the newest the row names cannot be (refused on reading); the ring ends at the
    // row's newest even when those messages have expired.
    local.skip_to(&ring, row.last_seq);
    let name: Arc<str> = name.into();
    let state = LaneState { reserved: row.last_seq, written: row.last_seq, disk_first: first, gone: false };
    let lane = Arc::new(Lane { name, epoch, continues, state: Mutex::new(state) });
    Some(Reopened { lane, new_row, messages, bytes })
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
        let state = LaneState { disk_first: 1, ..LaneState::default() };
        let lane =
            Arc::new(Lane { name: name.clone(), epoch: fastrand::u32(1..), continues: None, state: Mutex::new(state) });
        lanes.insert(name, lane.clone());
        Ok(lane)
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
    /// Opens the store in `config.dir` (created if needed), reads back every channel into its
    /// ring, and starts the writer. A store that cannot be read whole is refused.
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
        let previous = store.run_record().map_err(|why| StoreError::Damaged {
            path: config.dir.display().to_string(),
            problems: vec![format!("meta key run: {why}")],
            total: 1,
        })?;
        let contents = store.read_whole()?;
        let on_disk = contents.message_count();
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
        let mut batch = store.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        let now = now_ms();
        let mut recovered =
            Recovered { clean: previous.as_ref().is_none_or(|run| run.clean), continued, ..Recovered::default() };
        // Channels are independent: read back on every core (most of a start's time is here,
        // encoding each message into its wire formats).
        let channels: Vec<(String, ChannelContents)> = contents.channels.into_iter().collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(channels.len()).max(1);
        let per_thread = channels.len().div_ceil(threads).max(1);
        let reopened: Vec<Reopened> = std::thread::scope(|scope| {
            let workers: Vec<_> = channels
                .chunks(per_thread)
                .map(|chunk| {
                    let local = &local;
                    let limits = config.limits;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|(name, channel)| reopen_channel(local, name, channel, continued, limits, now))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|worker| worker.join().expect("a reopening thread panicked")).collect()
        });
        for reopened in reopened {
            recovered.channels += 1;
            recovered.messages += reopened.messages;
            recovered.bytes += reopened.bytes;
            if let Some(row) = reopened.new_row {
                batch.insert(&store.channels, reopened.lane.name.as_bytes(), row.encode());
            }
            lanes.insert(reopened.lane.name.clone(), reopened.lane);
        }
        batch.commit().map_err(crate::db::io_error)?;
        store.write_run(&RunRecord {
            clean: false,
            durability: config.durability.label().to_string(),
            boot_id: config.boot_id.clone(),
        })?;
        recovered.millis = started.elapsed().as_millis() as u64;
        let shared = Arc::new(Shared {
            store,
            local,
            lanes: RwLock::new(lanes),
            queue: Queue::default(),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            disk_messages: AtomicU64::new(on_disk),
            recovered,
            tend_queued: AtomicBool::new(false),
            config,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("holdfast-store".into())
                .spawn(move || crate::writer::run(shared))
                .map_err(|e| StoreError::Io(format!("cannot start the store's writer: {e}")))?
        };
        Ok(DiskBroker { shared, writer: Mutex::new(Some(writer)) })
    }

    /// What the store held when it was opened.
    pub fn recovered(&self) -> Recovered {
        self.shared.recovered
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
            let lane = match shared.lane(&name) {
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
        if let Some(ring) = self.shared.local.channel(name) {
            return Some(Ok(ring));
        }
        loop {
            let lane = match self.shared.lane(name) {
                Ok(lane) => lane,
                Err(e) => return Some(Err(e)),
            };
            let state = lane.lock();
            // Forgotten between the look-up and the lock: take the new lane.
            if !state.gone {
                return Some(self.shared.ring(&lane, &state));
            }
        }
    }

    fn open(&self, name: &str) -> BrokerFuture<Result<Arc<Channel>, ChannelError>> {
        let ready = self.ready(name).expect("always ready");
        Box::pin(std::future::ready(ready))
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.shared.local.channel(name)
    }

    fn info(&self, name: &str) -> BrokerFuture<Result<Option<ChannelInfo>, ChannelError>> {
        Broker::info(&self.shared.local, name)
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
            recovered: shared.recovered,
        })
    }

    fn close(&self) -> BrokerFuture<()> {
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
        let refused = DiskBroker::open(config(dir.path(), Durability::Always, 100)).err().unwrap();
        let text = refused.to_string();
        assert!(text.contains("damaged") && text.contains("holdfast store repair"), "{text}");
        let report = crate::check(dir.path()).unwrap();
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        let RepairReport::Mended { dropped, messages, .. } = crate::repair(dir.path()).unwrap() else { panic!() };
        assert_eq!((dropped, messages), (2, 1));
        assert!(crate::check(dir.path()).unwrap().problems.is_empty());
        let broker = DiskBroker::open(config(dir.path(), Durability::Always, 100)).unwrap();
        assert_eq!(payloads(&broker, "ok"), ["fine"]);
    }
}
