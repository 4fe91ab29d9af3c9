//! redb vs fjall on Holdfast's history workload.
//!
//! Each message: ~200 bytes keyed by (channel, u64 seq), plus a by-time index entry
//! (u64 ms, channel, seq) written in the same transaction / batch; 100 channels.
//!
//! Measurements (each run `--reps` times, every run on a fresh directory under /tmp; the
//! medians are printed as a Markdown table):
//!   durable b=N   messages/s with an fsync per commit, N messages per commit (~2 s, >= 2,000 msgs)
//!   nosync b=128  messages/s without fsync (200,000 messages, one durable commit at the end)
//!   reopen        write 100,000 messages, close; time open + read the newest 100 messages of
//!                 each of the 100 channels (page cache warm: nothing is dropped)
//!   disk          bytes allocated (like `du`) after 100,000 messages (closed), after deleting
//!                 the oldest 90% (closed, after the store's own background work had 2 s), and
//!                 after an explicit compaction (redb `Database::compact`, fjall `major_compact`)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHANNELS: usize = 100;
const PAYLOAD: usize = 200;

/// One message of the workload.
struct Msg {
    channel: String,
    seq: u64,
    ms: u64,
    payload: Vec<u8>,
}

/// Deterministic message stream: channel i % 100, per-channel seq, ms increasing by 1 per msg.
struct Gen {
    n: u64,
    seqs: Vec<u64>,
    rng: u64,
    names: Vec<String>,
}

impl Gen {
    fn new() -> Self {
        Gen {
            n: 0,
            seqs: vec![0; CHANNELS],
            rng: 0x9E37_79B9_7F4A_7C15,
            names: (0..CHANNELS).map(|i| format!("room:{i:03}")).collect(),
        }
    }
    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn next(&mut self) -> Msg {
        let c = (self.n as usize) % CHANNELS;
        self.seqs[c] += 1;
        let seq = self.seqs[c];
        let ms = 1_700_000_000_000 + self.n;
        self.n += 1;
        // A JSON-ish body with a random part, like a chat/event payload: partly compressible.
        let mut p = format!("{{\"ch\":\"{}\",\"seq\":{},\"ts\":{},\"data\":\"", self.names[c], seq, ms).into_bytes();
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        while p.len() < PAYLOAD - 2 {
            let r = self.next_rand();
            p.push(ALNUM[(r % ALNUM.len() as u64) as usize]);
        }
        p.extend_from_slice(b"\"}");
        Msg { channel: self.names[c].clone(), seq, ms, payload: p }
    }
    fn batch(&mut self, n: usize) -> Vec<Msg> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// What Holdfast's history store needs from an engine.
trait Store: Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Writes the messages and their by-time index entries in one transaction / batch.
    fn write(&mut self, msgs: &[Msg], durable: bool);
    /// Makes everything written so far durable.
    fn sync(&mut self);
    /// Reads the newest `n` messages of `channel`, newest first; returns how many and their bytes.
    fn newest(&self, channel: &str, n: usize) -> (usize, usize);
    /// Deletes every message with ms < cutoff (through the by-time index), in durable
    /// transactions of at most `chunk` messages; returns how many were deleted.
    fn delete_before(&mut self, cutoff_ms: u64, chunk: usize) -> usize;
    /// Explicit compaction, beyond what the engine does by itself.
    fn compact(&mut self);
}

// ---------------------------------------------------------------- redb

#[cfg(feature = "redb")]
mod redb_store {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

    const MSGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("msgs");
    const BY_TIME: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("by_time");

    pub struct Redb {
        pub db: Database,
    }

    impl Store for Redb {
        const NAME: &'static str = "redb";
        fn open(dir: &Path) -> Self {
            let db = Database::create(dir.join("history.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(MSGS).unwrap();
            tx.open_table(BY_TIME).unwrap();
            tx.commit().unwrap();
            Redb { db }
        }
        fn write(&mut self, msgs: &[Msg], durable: bool) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(if durable { Durability::Immediate } else { Durability::None }).unwrap();
            {
                let mut t = tx.open_table(MSGS).unwrap();
                let mut i = tx.open_table(BY_TIME).unwrap();
                for m in msgs {
                    t.insert((m.channel.as_str(), m.seq), m.payload.as_slice()).unwrap();
                    i.insert((m.ms, m.channel.as_str(), m.seq), ()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn sync(&mut self) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            tx.commit().unwrap();
        }
        fn newest(&self, channel: &str, n: usize) -> (usize, usize) {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(MSGS).unwrap();
            let mut count = 0;
            let mut bytes = 0;
            for r in t.range((channel, 0)..=(channel, u64::MAX)).unwrap().rev().take(n) {
                let (_k, v) = r.unwrap();
                count += 1;
                bytes += v.value().len();
            }
            (count, bytes)
        }
        fn delete_before(&mut self, cutoff_ms: u64, chunk: usize) -> usize {
            let mut total = 0;
            loop {
                let mut tx = self.db.begin_write().unwrap();
                tx.set_durability(Durability::Immediate).unwrap();
                let done;
                {
                    let mut t = tx.open_table(MSGS).unwrap();
                    let mut i = tx.open_table(BY_TIME).unwrap();
                    let mut keys: Vec<(u64, String, u64)> = Vec::with_capacity(chunk);
                    for r in i.range((0u64, "", 0u64)..(cutoff_ms, "", 0u64)).unwrap().take(chunk) {
                        let (k, _) = r.unwrap();
                        let (ms, ch, seq) = k.value();
                        keys.push((ms, ch.to_string(), seq));
                    }
                    for (ms, ch, seq) in &keys {
                        t.remove((ch.as_str(), *seq)).unwrap();
                        i.remove((*ms, ch.as_str(), *seq)).unwrap();
                    }
                    total += keys.len();
                    done = keys.len() < chunk;
                }
                tx.commit().unwrap();
                if done {
                    return total;
                }
            }
        }
        fn compact(&mut self) {
            while self.db.compact().unwrap() {}
        }
    }
}

// ---------------------------------------------------------------- fjall

#[cfg(feature = "fjall")]
mod fjall_store {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    /// `SMALL`: 4 MiB memtables and a 64 MiB journal limit (the smallest fjall allows) instead of
    /// the defaults (64 MiB memtables per keyspace, 512 MiB of journal), so data reaches tables
    /// sooner and less journal is replayed when the database is opened.
    pub struct Fjall<const SMALL: bool> {
        pub db: Database,
        msgs: Keyspace,
        by_time: Keyspace,
    }

    /// channel bytes, 0x00, seq big-endian: one channel's messages are contiguous and ordered.
    fn msg_key(channel: &str, seq: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(channel.len() + 9);
        k.extend_from_slice(channel.as_bytes());
        k.push(0);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
    /// ms big-endian, then the message key.
    fn time_key(ms: u64, channel: &str, seq: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(channel.len() + 17);
        k.extend_from_slice(&ms.to_be_bytes());
        k.extend_from_slice(&msg_key(channel, seq));
        k
    }

    impl<const SMALL: bool> Store for Fjall<SMALL> {
        const NAME: &'static str = if SMALL { "fjall-4m" } else { "fjall" };
        fn open(dir: &Path) -> Self {
            let mut b = Database::builder(dir.join("history.fjall"));
            if SMALL {
                b = b.max_journaling_size(64 * 1024 * 1024);
            }
            let db = b.open().unwrap();
            let opts = || {
                let o = KeyspaceCreateOptions::default();
                if SMALL {
                    o.max_memtable_size(4 * 1024 * 1024)
                } else {
                    o
                }
            };
            let msgs = db.keyspace("msgs", opts).unwrap();
            let by_time = db.keyspace("by_time", opts).unwrap();
            Fjall { db, msgs, by_time }
        }
        fn write(&mut self, msgs: &[Msg], durable: bool) {
            let mut b = self
                .db
                .batch()
                .durability(if durable { Some(PersistMode::SyncAll) } else { None });
            for m in msgs {
                b.insert(&self.msgs, msg_key(&m.channel, m.seq), m.payload.as_slice());
                b.insert(&self.by_time, time_key(m.ms, &m.channel, m.seq), &[][..]);
            }
            b.commit().unwrap();
        }
        fn sync(&mut self) {
            self.db.persist(PersistMode::SyncAll).unwrap();
        }
        fn newest(&self, channel: &str, n: usize) -> (usize, usize) {
            let mut prefix = channel.as_bytes().to_vec();
            prefix.push(0);
            let mut count = 0;
            let mut bytes = 0;
            for g in self.msgs.prefix(&prefix).rev().take(n) {
                let v = g.value().unwrap();
                count += 1;
                bytes += v.len();
            }
            (count, bytes)
        }
        fn delete_before(&mut self, cutoff_ms: u64, chunk: usize) -> usize {
            // fjall 3.1 has no range delete in its public API: delete key by key, in batches.
            let mut total = 0;
            loop {
                let keys: Vec<Vec<u8>> = self
                    .by_time
                    .range(..cutoff_ms.to_be_bytes().to_vec())
                    .take(chunk)
                    .map(|g| g.key().unwrap().to_vec())
                    .collect();
                let n = keys.len();
                let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
                for k in keys {
                    b.remove(&self.msgs, k[8..].to_vec());
                    b.remove(&self.by_time, k);
                }
                b.commit().unwrap();
                total += n;
                if n < chunk {
                    return total;
                }
            }
        }
        fn compact(&mut self) {
            self.msgs.rotate_memtable_and_wait().unwrap();
            self.by_time.rotate_memtable_and_wait().unwrap();
            self.msgs.major_compact().unwrap();
            self.by_time.major_compact().unwrap();
        }
    }
}

// ---------------------------------------------------------------- harness

fn fresh_dir(tag: &str) -> PathBuf {
    let base = std::env::var_os("STORE_CHOICE_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!(
        "store-choice-{}-{}-{}",
        std::process::id(),
        tag,
        Instant::now().elapsed().as_nanos() ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Bytes allocated on disk under `p` (st_blocks * 512, like `du`). With STORE_CHOICE_LIST set,
/// lists the files on stderr.
fn disk_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            total += disk_bytes(&e.path());
        } else {
            total += md.blocks() * 512;
            if std::env::var_os("STORE_CHOICE_LIST").is_some() {
                eprintln!("    {:>10} {}", md.blocks() * 512, e.path().display());
            }
        }
    }
    total
}

const BATCHES: [usize; 3] = [1, 16, 128];

fn durable<S: Store>(batch: usize, min_time: Duration, max_time: Duration) -> f64 {
    let dir = fresh_dir(&format!("{}-durable{}", S::NAME, batch));
    let mut s = S::open(&dir);
    let mut g = Gen::new();
    // Pre-generate so generation is not timed.
    let pool: Vec<Vec<Msg>> = (0..(200_000 / batch).max(64)).map(|_| g.batch(batch)).collect();
    let start = Instant::now();
    let mut n = 0usize;
    let mut i = 0;
    loop {
        s.write(&pool[i % pool.len()], true);
        i += 1;
        n += batch;
        let el = start.elapsed();
        if (el >= min_time && n >= 2_000) || el >= max_time {
            break;
        }
        if i == pool.len() {
            // Never rewrite the same keys: extend the pool.
            break;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(s);
    std::fs::remove_dir_all(&dir).ok();
    rate
}

fn nosync<S: Store>(total: usize) -> f64 {
    let dir = fresh_dir(&format!("{}-nosync", S::NAME));
    let mut s = S::open(&dir);
    let mut g = Gen::new();
    let batches: Vec<Vec<Msg>> = (0..total / 128).map(|_| g.batch(128)).collect();
    let start = Instant::now();
    for b in &batches {
        s.write(b, false);
    }
    s.sync();
    let rate = (batches.len() * 128) as f64 / start.elapsed().as_secs_f64();
    drop(s);
    std::fs::remove_dir_all(&dir).ok();
    rate
}

/// Reopen + disk use. Returns (reopen ms, disk full, disk after delete, disk after compaction).
fn reopen_and_disk<S: Store>() -> (f64, u64, u64, u64) {
    const N: usize = 100_000;
    let dir = fresh_dir(&format!("{}-reopen", S::NAME));
    {
        let mut s = S::open(&dir);
        let mut g = Gen::new();
        for _ in 0..N / 100 {
            s.write(&g.batch(100), false);
        }
        s.sync();
    } // closed
    let disk_full = disk_bytes(&dir);

    let start = Instant::now();
    let s = S::open(&dir);
    let mut count = 0;
    let mut bytes = 0;
    for c in 0..CHANNELS {
        let (n, b) = s.newest(&format!("room:{c:03}"), 100);
        count += n;
        bytes += b;
    }
    let reopen_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(count, CHANNELS * 100, "{}: read back {count} messages", S::NAME);
    assert!(bytes >= CHANNELS * 100 * PAYLOAD);
    let mut s = s;

    // Delete the oldest 90% (ms < first ms + 90,000), durable, 10,000 messages per transaction.
    let deleted = s.delete_before(1_700_000_000_000 + (N as u64) * 9 / 10, 10_000);
    assert_eq!(deleted, N * 9 / 10, "{}: deleted", S::NAME);
    std::thread::sleep(Duration::from_secs(2)); // let background work (flush/compaction) run
    let (c2, _) = s.newest("room:000", 1000);
    assert_eq!(c2, 100, "{}: left in room:000", S::NAME);
    drop(s);
    let disk_deleted = disk_bytes(&dir);

    let mut s = S::open(&dir);
    s.compact();
    drop(s);
    let disk_compacted = disk_bytes(&dir);
    std::fs::remove_dir_all(&dir).ok();
    (reopen_ms, disk_full, disk_deleted, disk_compacted)
}

/// The disk's own rate: append ~200 bytes + fsync to a plain file, for ~2 s. What a store that
/// does one fsync per commit could reach at most, measured next to the stores (the disk's fsync
/// latency on a shared VM drifts over minutes).
fn raw_fsync() -> f64 {
    use std::io::Write;
    let dir = fresh_dir("raw-fsync");
    let mut f = std::fs::File::create(dir.join("log")).unwrap();
    let buf = [b'x'; PAYLOAD];
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(2) || n < 200 {
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_dir_all(&dir).ok();
    rate
}

/// Measurement `m` of engine `name`; returns its values (one for most, four for reopen/disk).
fn measure(name: &str, m: &Meas) -> Vec<f64> {
    fn go<S: Store>(m: &Meas) -> Vec<f64> {
        match m {
            Meas::Durable(b) => vec![durable::<S>(*b, Duration::from_secs(2), Duration::from_secs(10))],
            Meas::NoSync => vec![nosync::<S>(200_000)],
            Meas::Reopen => {
                let (ms, f, d, c) = reopen_and_disk::<S>();
                vec![ms, f as f64, d as f64, c as f64]
            }
        }
    }
    match name {
        "fsync" => vec![raw_fsync()],
        #[cfg(feature = "redb")]
        "redb" => go::<redb_store::Redb>(m),
        #[cfg(feature = "fjall")]
        "fjall" => go::<fjall_store::Fjall<false>>(m),
        #[cfg(feature = "fjall")]
        "fjall-4m" => go::<fjall_store::Fjall<true>>(m),
        _ => unreachable!(),
    }
}

enum Meas {
    Durable(usize),
    NoSync,
    Reopen,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let reps: usize = std::env::args()
        .skip_while(|a| a != "--reps")
        .nth(1)
        .map(|s| s.parse().expect("--reps N"))
        .unwrap_or(3);
    let mut engines: Vec<&str> = Vec::new();
    #[cfg(feature = "redb")]
    engines.push("redb");
    #[cfg(feature = "fjall")]
    engines.extend(["fjall", "fjall-4m"]);
    // `--only redb|fjall|fjall-4m`: one engine (for looking into it, e.g. under strace).
    if let Some(only) = std::env::args().skip_while(|a| a != "--only").nth(1) {
        engines.retain(|n| *n == only);
    }

    let meas: Vec<Meas> = BATCHES.iter().map(|b| Meas::Durable(*b)).chain([Meas::NoSync, Meas::Reopen]).collect();
    // results[measurement][engine] = one Vec<f64> per rep
    let mut results: Vec<Vec<Vec<Vec<f64>>>> = meas.iter().map(|_| engines.iter().map(|_| Vec::new()).collect()).collect();
    let mut fsync_runs: Vec<f64> = Vec::new();

    // Engines are interleaved per measurement (and their order rotated each rep), so a drift in
    // the disk's speed hits all of them alike; the raw fsync rate is taken before each durable one.
    for rep in 0..reps {
        eprintln!("rep {}/{}", rep + 1, reps);
        for (mi, m) in meas.iter().enumerate() {
            if let Meas::Durable(1) = m {
                let r = raw_fsync();
                eprintln!("  {:8} raw fsync      {:>10.0} /s", "disk", r);
                fsync_runs.push(r);
            }
            for k in 0..engines.len() {
                let ei = (k + rep) % engines.len();
                let v = measure(engines[ei], m);
                match m {
                    Meas::Durable(b) => eprintln!("  {:8} durable b={:<3} {:>10.0} msg/s", engines[ei], b, v[0]),
                    Meas::NoSync => eprintln!("  {:8} nosync  b=128 {:>10.0} msg/s", engines[ei], v[0]),
                    Meas::Reopen => eprintln!("  {:8} reopen {:.1} ms; disk {} / {} / {} bytes", engines[ei], v[0], v[1], v[2], v[3]),
                }
                results[mi][ei].push(v);
            }
        }
    }

    // A cell: the median, and the range (min–max) over the reps.
    let cell = |mi: usize, ei: usize, idx: usize, fmt: &dyn Fn(f64) -> String| -> String {
        let v: Vec<f64> = results[mi][ei].iter().map(|r| r[idx]).collect();
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if v.len() > 1 && fmt(lo) != fmt(hi) {
            format!("{} ({}–{})", fmt(median(v)), fmt(lo), fmt(hi))
        } else {
            fmt(median(v))
        }
    };
    let int = |x: f64| format!("{x:.0}");
    let ms = |x: f64| format!("{x:.1}");
    let mib = |x: f64| format!("{:.1} MiB", x / 1048576.0);

    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for (mi, m) in meas.iter().enumerate() {
        let each = |idx: usize, fmt: &dyn Fn(f64) -> String| -> Vec<String> { (0..engines.len()).map(|ei| cell(mi, ei, idx, fmt)).collect() };
        match m {
            Meas::Durable(b) => rows.push((format!("durable (fsync per commit), batch {b}: msg/s"), each(0, &int))),
            Meas::NoSync => rows.push(("no fsync, batch 128 (+1 fsync at end): msg/s".into(), each(0, &int))),
            Meas::Reopen => {
                rows.push(("reopen + newest 100 of each of 100 channels: ms".into(), each(0, &ms)));
                rows.push(("disk after 100,000 msgs (closed)".into(), each(1, &mib)));
                rows.push(("disk after deleting oldest 90% (own background work, 2 s)".into(), each(2, &mib)));
                rows.push(("disk after explicit compaction".into(), each(3, &mib)));
            }
        }
    }

    println!("Medians of {reps} runs (min–max in brackets).");
    if !fsync_runs.is_empty() {
        let lo = fsync_runs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = fsync_runs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        println!("Raw disk: 200-byte append + fsync on a plain file: {:.0}/s ({:.0}–{:.0}).", median(fsync_runs.clone()), lo, hi);
    }
    println!();
    print!("| measurement |");
    for n in &engines {
        print!(" {n} |");
    }
    println!();
    print!("|---|");
    for _ in &engines {
        print!("---:|");
    }
    println!();
    for (name, vals) in rows {
        print!("| {name} |");
        for v in vals {
            print!(" {v} |");
        }
        println!();
    }
}
