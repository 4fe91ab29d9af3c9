//! The store on disk: one fjall database in `data_dir` with three keyspaces (layout in
//! [`crate::codec`]), opened, read back whole at startup, checked and repaired.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::codec::{self, ChannelRow, RunRecord, StoredMessage, FORMAT};

/// Block cache of the store: small. The store is read only at startup (the histories live in
/// memory), and what the cache keeps from the read-back stays for the life of the process:
/// fjall has no call to empty it. With 256 KiB, a heap profile of the soak's restarted process
/// still held ~250 KB of blocks (3.5-4 KB each, read by the read-back) eight minutes after the
/// restart, the largest named part of its offset over the first process; with 64 KiB the soak's
/// restarted process ended 0.3 MiB lower (bench/RESULTS.md, "The block cache's residue"). But
/// without any cache, opening the store took three times as long: over 1,000,000 stored
/// messages, start to serving (`bench/durability.sh`, medians of 3, after a clean stop /
/// `kill -9`, another bench running) took 1,299 / 1,504 ms with none, 388 / 530 ms with 64 KiB,
/// 359 / 519 ms with 256 KiB, 421 / 463 ms with 1 MiB: whatever fjall reads again and again
/// while opening fits in 64 KiB.
const CACHE_BYTES: u64 = 64 << 10;

/// Journal bytes kept at most (fjall's minimum; its default is 512 MiB): past it the oldest
/// journal's writes are flushed to tables and the journal deleted. Bounds the disk the journal
/// takes beside the history, and what a start replays.
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// Bytes a keyspace buffers in memory before writing them to a table (fjall's default is
/// 64 MiB). Every write and delete passes through it, and the server's RSS grows by what it holds
/// until it is flushed: with the default, 50 messages/s added ~1 MB every 3 minutes for an hour
/// of the soak (bench/RESULTS.md, "Soak"). Recorded with the keyspace when it is created.
///
/// Messages: ~280 B each in memory (the value, later its tombstone). Channel rows: one ~70 B
/// entry per channel per write batch (at 50 messages/s every message is its own batch), so with
/// 4 MiB for both, RSS rose for ~50,000 messages before levelling (17 minutes of the soak's rate;
/// `bench/soak_store_rss.sh`); with 2 MiB and 1 MiB, for ~30,000, then flat within 4 %. A
/// messages memtable of 1 MiB levels sooner still, but flushes so often that 50 publishers were
/// slower (one run each: 30,548 and 21,361 publishes/s with `none` and `always`, against 33,367
/// and 34,595 at 4 MiB and 34,864 and 28,547 at 2 MiB; bench/RESULTS.md, "Memtable sizes").
///
/// The rows' memtable holds only superseded versions of the same few keys (a flush keeps the
/// newest of each), yet at 1 MiB it took ~3 MiB of RSS, and a restarted process more than the
/// first: `bench/restart_rss.sh`, anon KiB per start, 15,704 / 16,884 / 16,672 with 1 MiB,
/// 12,680 / 13,068 / 12,936 with 128 KiB; 50 publishers as fast (34,215 and 28,879 publishes/s
/// with `none` and `always`, against 35,101 and 27,487; medians of 3, `bench/durability.sh`).
/// A messages memtable of 1 MiB would take the rest of the restart's offset (11,812 / 11,796 /
/// 11,720) but costs publishes (29,589 and 23,552; 512 KiB: 22,729 and 19,587).
const MESSAGE_MEMTABLE_BYTES: u64 = 2 << 20;
const ROW_MEMTABLE_BYTES: u64 = 128 << 10;

fn keyspace_options(memtable_bytes: u64) -> impl Fn() -> KeyspaceCreateOptions {
    move || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes)
}

/// Problems listed in an error before "and N more".
const PROBLEMS_SHOWN: usize = 5;

/// The open database and its keyspaces.
pub struct Store {
    pub(crate) db: Database,
    pub(crate) messages: Keyspace,
    pub(crate) channels: Keyspace,
    meta: Keyspace,
    path: PathBuf,
}

/// Why a store cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database could not be opened (damaged files, another process holds it, no access).
    Open {
        /// Its directory.
        path: String,
        /// What the storage engine said.
        why: String,
    },
    /// It opened, but some of what it holds cannot be read.
    Damaged {
        /// Its directory.
        path: String,
        /// The first problems found.
        problems: Vec<String>,
        /// How many were found.
        total: usize,
    },
    /// Another process (a running server) has it open.
    InUse {
        /// Its directory.
        path: String,
    },
    /// It holds more channels than the server may (`max_channels` was lowered): refused rather
    /// than dropping their history.
    TooManyChannels {
        /// Its directory.
        path: String,
        /// Channels it holds.
        held: usize,
        /// `max_channels`.
        max: usize,
    },
    /// A read or write failed while it was in use.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, why } => write!(
                f,
                "the history store in {path} cannot be opened ({why}); if it is damaged, `holdfast store check {path}` \
                 says what is wrong and `holdfast store repair {path}` keeps what can be read"
            ),
            StoreError::Damaged { path, problems, total } => {
                write!(f, "the history store in {path} is damaged: {}", problems.join("; "))?;
                if *total > problems.len() {
                    write!(f, "; and {} more", total - problems.len())?;
                }
                write!(
                    f,
                    ". `holdfast store check {path}` lists every problem; `holdfast store repair {path}` drops what \
                     cannot be read and keeps the rest"
                )
            }
            StoreError::InUse { path } => write!(
                f,
                "the history store in {path} is in use by another process (a running server?); one server per data_dir, \
                 and check or repair it only with the server stopped"
            ),
            StoreError::TooManyChannels { path, held, max } => write!(
                f,
                "the history store in {path} holds {held} channels, more than max_channels ({max}); set max_channels \
                 to at least {held} to keep their history"
            ),
            StoreError::Io(why) => write!(f, "history store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn io_error(e: fjall::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// One channel as read back: its row (if it has one) and its messages in order.
#[derive(Debug, Default)]
pub struct ChannelContents {
    /// Its row.
    pub row: Option<ChannelRow>,
    /// Its messages by sequence number.
    pub messages: Vec<(u64, StoredMessage)>,
}

/// Everything the store holds, and what could not be read.
#[derive(Debug, Default)]
pub struct Contents {
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelContents>,
    /// What could not be read, or does not fit together.
    pub problems: Vec<Problem>,
}

/// One thing wrong in a store.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The keyspace.
    pub keyspace: &'static str,
    /// The raw key (for a channel whose row is missing or behind: its name).
    pub key: Vec<u8>,
    /// What is wrong.
    pub why: String,
    /// The entry cannot be read at all (repair drops it); otherwise its channel's row is mended.
    pub unreadable: bool,
}

impl Contents {
    /// Messages read.
    pub fn message_count(&self) -> u64 {
        self.channels.values().map(|c| c.messages.len() as u64).sum()
    }

    /// Bytes of the payloads read.
    pub fn message_bytes(&self) -> u64 {
        self.channels.values().flat_map(|c| &c.messages).map(|(_, m)| m.payload.len() as u64).sum()
    }

    /// The problems as sentences.
    pub fn problem_lines(&self) -> Vec<String> {
        self.problems.iter().map(Problem::line).collect()
    }
}

impl Problem {
    pub(crate) fn unreadable(keyspace: &'static str, key: &[u8], why: String) -> Problem {
        Problem { keyspace, key: key.to_vec(), why, unreadable: true }
    }

    /// The problem as a sentence.
    pub fn line(&self) -> String {
        format!("{} key {}: {}", self.keyspace, String::from_utf8_lossy(&self.key).escape_debug(), self.why)
    }
}

/// The error for a store whose problems are `lines` (the first few named).
pub(crate) fn damaged(path: &Path, lines: Vec<String>) -> StoreError {
    StoreError::Damaged {
        path: path.display().to_string(),
        total: lines.len(),
        problems: lines.into_iter().take(PROBLEMS_SHOWN).collect(),
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let shown = dir.display().to_string();
        let open_error = |why: String| StoreError::Open { path: shown.clone(), why };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = Database::builder(dir).cache_size(CACHE_BYTES).max_journaling_size(MAX_JOURNAL_BYTES).open().map_err(
            |e| match e {
                fjall::Error::Locked => StoreError::InUse { path: shown.clone() },
                e => open_error(e.to_string()),
            },
        )?;
        let keyspace = |name: &str, memtable_bytes| {
            db.keyspace(name, keyspace_options(memtable_bytes)).map_err(|e| open_error(e.to_string()))
        };
        let store = Store {
            messages: keyspace("messages", MESSAGE_MEMTABLE_BYTES)?,
            channels: keyspace("channels", ROW_MEMTABLE_BYTES)?,
            meta: keyspace("meta", ROW_MEMTABLE_BYTES)?,
            db,
            path: dir.to_path_buf(),
        };
        match store.meta.get("format").map_err(|e| open_error(e.to_string()))? {
            None => {
                store.meta.insert("format", FORMAT.to_be_bytes()).map_err(|e| open_error(e.to_string()))?;
            }
            Some(value) if value.len() == 4 => {
                let format = u32::from_be_bytes(value[..].try_into().expect("4 bytes"));
                if format != FORMAT {
                    return Err(open_error(format!(
                        "it was written in layout {format}, this Holdfast reads layout {FORMAT}"
                    )));
                }
            }
            Some(_) => return Err(open_error("its format record cannot be read".into())),
        }
        Ok(store)
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the store was last left (`None` for a new one), or why that cannot be read.
    pub fn run_record(&self) -> Result<Option<RunRecord>, String> {
        match self.meta.get("run").map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(value) => RunRecord::decode(&value).map(Some),
        }
    }

    /// Records how the store is being left, synced to disk.
    pub fn write_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.meta.insert("run", run.encode()).map_err(io_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(io_error)?;
        // Written twice a run: left in a memtable, this one entry would keep every journal
        // since the start from being deleted (fjall deletes a journal once every keyspace has
        // flushed past it), and a start replays what journals remain.
        flush(&self.meta)
    }

    /// Writes every keyspace's memtable to tables, so the next start has nothing to replay into
    /// memory from the journal (a clean close).
    pub(crate) fn flush_all(&self) -> Result<(), StoreError> {
        flush(&self.messages)?;
        flush(&self.channels)?;
        flush(&self.meta)
    }

    /// Every channel's row by name, and the rows that cannot be read.
    pub(crate) fn read_rows(&self) -> Result<(BTreeMap<String, ChannelRow>, Vec<Problem>), StoreError> {
        let mut rows = BTreeMap::new();
        let mut problems = Vec::new();
        for item in self.channels.iter() {
            let (key, value) = item.into_inner().map_err(io_error)?;
            let name = match std::str::from_utf8(&key) {
                Ok(name) if holdfast_hub::validate_channel_name(name).is_ok() => name.to_string(),
                _ => {
                    problems.push(Problem::unreadable("channels", &key, "not a channel name".into()));
                    continue;
                }
            };
            match ChannelRow::decode(&value) {
                Ok(row) => {
                    rows.insert(name, row);
                }
                Err(why) => problems.push(Problem::unreadable("channels", &key, why)),
            }
        }
        Ok((rows, problems))
    }

    /// Reads every channel and message back, noting what cannot be read rather than stopping.
    pub fn read_all(&self) -> Result<Contents, StoreError> {
        let (rows, problems) = self.read_rows()?;
        let mut contents = Contents { problems, ..Contents::default() };
        for (name, row) in rows {
            contents.channels.entry(name).or_default().row = Some(row);
        }
        for item in self.messages.iter() {
            let (key, value) = item.into_inner().map_err(io_error)?;
            let Some((name, seq)) = codec::split_message_key(&key) else {
                contents.problems.push(Problem::unreadable("messages", &key, "not a message key".into()));
                continue;
            };
            match codec::decode_message(&value) {
                Ok(message) => contents.channels.entry(name.to_string()).or_default().messages.push((seq, message)),
                Err(why) => contents.problems.push(Problem::unreadable("messages", &key, why)),
            }
        }
        // Messages without a channel row, or past its newest: the row is written in the same
        // batch as every message, so either means damage.
        for (name, channel) in &contents.channels {
            let last = channel.messages.last().map_or(0, |(seq, _)| *seq);
            match channel.row {
                None => contents.problems.push(Problem {
                    keyspace: "channels",
                    key: name.as_bytes().to_vec(),
                    why: format!("no row for a channel with {} messages", channel.messages.len()),
                    unreadable: false,
                }),
                Some(row) if last > row.last_seq => contents.problems.push(Problem {
                    keyspace: "channels",
                    key: name.as_bytes().to_vec(),
                    why: format!("row says the newest message is {} but {last} is stored", row.last_seq),
                    unreadable: false,
                }),
                Some(_) => {}
            }
        }
        Ok(contents)
    }

    /// Bytes the store's files take on disk: the blocks allocated (the journal's file is created
    /// long and sparse, so its length, which fjall's `disk_space` counts, overstates it).
    pub fn disk_bytes(&self) -> u64 {
        allocated_bytes(&self.path)
    }
}

/// Writes a keyspace's memtable to a table and waits for it. fjall offers this only as a hidden
/// function (its own tests use it); the version is locked, and the test
/// `a_clean_close_leaves_everything_in_tables` checks it still does what is needed here.
fn flush(keyspace: &Keyspace) -> Result<(), StoreError> {
    keyspace.rotate_memtable_and_wait().map_err(io_error)
}

/// What `holdfast store check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// Channels with a readable row.
    pub channels: usize,
    /// Messages read.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// What cannot be read (empty: the store is whole).
    pub problems: Vec<String>,
    /// How it was last left.
    pub run: Option<RunRecord>,
}

/// Reads a store through without changing it (it must not be open in a running server).
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::Io(format!("{} is not a directory", dir.display())));
    }
    let store = Store::open(dir)?;
    let contents = store.read_all()?;
    let mut problems = contents.problem_lines();
    let run = match store.run_record() {
        Ok(run) => run,
        Err(why) => {
            problems.push(format!("meta key run: {why}"));
            None
        }
    };
    Ok(CheckReport {
        channels: contents.channels.values().filter(|c| c.row.is_some()).count(),
        messages: contents.message_count(),
        bytes: contents.message_bytes(),
        disk_bytes: store.disk_bytes(),
        problems,
        run,
    })
}

/// What `holdfast store repair` did.
#[derive(Debug)]
pub enum RepairReport {
    /// The store opened: what could not be read was dropped, rows were mended.
    Mended {
        /// Entries dropped.
        dropped: usize,
        /// Channel rows written again (missing, or behind their messages).
        rows_mended: usize,
        /// Channels and messages kept.
        channels: usize,
        /// Messages kept.
        messages: u64,
    },
    /// The store could not be opened at all: it was moved aside and a new, empty one starts.
    MovedAside {
        /// Where the old files are now.
        to: PathBuf,
        /// Why it could not be opened.
        why: String,
    },
}

/// Keeps what can be read: drops unreadable entries, mends channel rows, and when the store
/// cannot be opened at all, moves it aside (`DIR.damaged-UNIXTIME`) for a new one.
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let store = match Store::open(dir) {
        Ok(store) => store,
        Err(StoreError::Open { why, .. }) if dir.is_dir() => {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut to = dir.as_os_str().to_owned();
            to.push(format!(".damaged-{stamp}"));
            let to = PathBuf::from(to);
            std::fs::rename(dir, &to)
                .map_err(|e| StoreError::Io(format!("cannot move {} aside: {e}", dir.display())))?;
            Store::open(dir)?;
            return Ok(RepairReport::MovedAside { to, why });
        }
        Err(e) => return Err(e),
    };
    let contents = store.read_all()?;
    let mut batch = store.db.batch().durability(Some(PersistMode::SyncAll));
    let mut dropped = 0;
    for problem in contents.problems.iter().filter(|p| p.unreadable) {
        let keyspace = if problem.keyspace == "messages" { &store.messages } else { &store.channels };
        batch.remove(keyspace, problem.key.clone());
        dropped += 1;
    }
    let mut rows_mended = 0;
    for (name, channel) in &contents.channels {
        let last = channel.messages.last().map_or(0, |(seq, _)| *seq);
        let row = match channel.row {
            Some(row) if row.last_seq >= last => continue,
            Some(row) => ChannelRow { last_seq: last, ..row },
            None if channel.messages.is_empty() => continue,
            // A channel whose row was lost gets a new epoch: cursors into it get a gap.
            None => ChannelRow { epoch: fastrand::u32(1..), last_seq: last, continues: None },
        };
        batch.insert(&store.channels, name.as_bytes(), row.encode());
        rows_mended += 1;
    }
    if let Ok(Some(mut run)) = store.run_record() {
        // Mended by hand: whatever it ran with, the next start treats it as not closed cleanly.
        run.clean = false;
        batch.insert(&store.meta, "run", run.encode());
    } else {
        batch.remove(&store.meta, "run");
    }
    batch.commit().map_err(io_error)?;
    let kept = store.read_all()?;
    Ok(RepairReport::Mended {
        dropped,
        rows_mended,
        channels: kept.channels.values().filter(|c| c.row.is_some()).count(),
        messages: kept.message_count(),
    })
}

/// Bytes allocated to the files under `dir`.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => allocated_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
