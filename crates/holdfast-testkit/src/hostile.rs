//! Helpers for hostile-client tests: peers that never read (with a small receive buffer, so the
//! kernel holds little on their side), floods bounded in bytes and time, the server's RSS sampled
//! on a thread of its own, and a probe that measures another subscriber's delivery delay
//! (publish → receipt) while an attack runs.
//!
//! The server runs in the test process, so RSS is the test's own too: tests build their attack
//! buffers before the baseline is taken, and tests that measure memory hold [`exclusive`] so that
//! no other test of the same binary allocates at the same time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::{RawConn, TestServer};

/// Serialises the tests of one binary that take it (memory figures are per process).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The process's resident set size (what `/admin/stats` reports as `rss_bytes`).
pub fn rss_bytes() -> u64 {
    holdfast_server::stats::process_rss_bytes()
}

/// Connects with `SO_RCVBUF` set to `rcvbuf` before the handshake: a peer that never reads then
/// lets the kernel hold only that much on its side, and the rest piles up in the server.
pub async fn connect_small(addr: SocketAddr, rcvbuf: u32) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect to the test server")
}

/// Sends an HTTP request head and reads the response head (up to the blank line); returns the
/// head as text and the bytes read past it. Bounded by [`crate::IO_TIMEOUT`].
pub async fn request_head(stream: &mut TcpStream, request: &str) -> (String, Vec<u8>) {
    stream.write_all(request.as_bytes()).await.expect("write the request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + crate::IO_TIMEOUT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return (head, buf[end + 4..].to_vec());
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no response head ({other:?}); have {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// A WebSocket upgrade on a socket with a small receive buffer (see [`connect_small`]); panics
/// unless the answer is 101. Returns the stream, the response head and bytes read past it.
pub async fn ws_connect_small(addr: SocketAddr, target: &str, extra: &str) -> (TcpStream, String, Vec<u8>) {
    let mut stream = connect_small(addr, 16 * 1024).await;
    let (head, rest) = request_head(&mut stream, &crate::ws_upgrade_request(target, extra)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    (stream, head, rest)
}

/// What a flood ended with.
#[derive(Debug, Clone, Copy)]
pub struct FloodOutcome {
    /// Bytes the kernel took.
    pub sent: u64,
    /// A write failed (reset or broken pipe): the server cut the connection.
    pub cut: bool,
    /// The deadline passed with writes blocked (the server stopped reading and did not cut).
    pub timed_out: bool,
    /// How long the flood ran.
    pub elapsed: Duration,
}

/// Writes `pattern` over and over, never reading, until `total` bytes went (make it a multiple of
/// the pattern's length to end on a frame boundary), a write fails, or `within` passes.
pub async fn flood(stream: &mut TcpStream, pattern: &[u8], total: u64, within: Duration) -> FloodOutcome {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let mut sent = 0u64;
    // Where in the pattern the next write starts: a short write must not break a frame.
    let mut at = 0;
    while sent < total {
        let end = pattern.len().min(at + (total - sent).min(pattern.len() as u64) as usize);
        match tokio::time::timeout_at(deadline, stream.write(&pattern[at..end])).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return FloodOutcome { sent, cut: true, timed_out: false, elapsed: started.elapsed() }
            }
            Ok(Ok(n)) => {
                sent += n as u64;
                at = (at + n) % pattern.len();
            }
            Err(_) => return FloodOutcome { sent, cut: false, timed_out: true, elapsed: started.elapsed() },
        }
    }
    FloodOutcome { sent, cut: false, timed_out: false, elapsed: started.elapsed() }
}

/// How a connection ended, as seen by reading it to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A WebSocket close frame with this code and reason.
    Close(u16, String),
    /// EOF or reset without a close frame.
    Eof,
    /// Still open after the wait.
    Open,
}

/// Reads server WebSocket frames (discarding them) until a close frame, EOF or `wait`; also
/// gives how many data frames came before.
pub async fn ws_ending(stream: &mut TcpStream, mut buf: Vec<u8>, wait: Duration) -> (Ending, u64) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut frames = 0;
    loop {
        // Parse every whole frame in the buffer.
        loop {
            if buf.len() < 2 {
                break;
            }
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < header + len {
                break;
            }
            let opcode = buf[0] & 0x0f;
            if opcode == 0x8 {
                let payload = &buf[header..header + len];
                let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                return (Ending::Close(code, reason), frames);
            }
            if opcode < 0x8 {
                frames += 1;
            }
            buf.drain(..header + len);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (Ending::Open, frames),
            Ok(Ok(0)) | Ok(Err(_)) => return (Ending::Eof, frames),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Samples the process RSS every few milliseconds on a thread of its own (so a stalled runtime
/// does not hide a peak).
pub struct RssSampler {
    /// RSS when sampling started.
    pub baseline: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Takes the baseline now and starts sampling.
    pub fn start() -> RssSampler {
        let baseline = rss_bytes();
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssSampler { baseline, peak, stop, thread: Some(thread) }
    }

    /// The highest RSS seen so far above the baseline.
    pub fn growth(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).max(rss_bytes()).saturating_sub(self.baseline)
    }

    /// Stops sampling; the growth of the peak over the baseline.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.growth()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[derive(Default)]
struct ProbeState {
    sent: Vec<Instant>,
    received: Vec<Option<Instant>>,
}

/// An SSE subscriber on a channel of its own, and a publisher that sends it a numbered message
/// every `PROBE_PERIOD`; each message's delay is from just before its publish request to its
/// receipt.
pub struct DelayProbe {
    state: Arc<Mutex<ProbeState>>,
    stop: Arc<AtomicBool>,
    publisher: JoinHandle<()>,
    reader: JoinHandle<()>,
}

/// How often the probe publishes.
pub const PROBE_PERIOD: Duration = Duration::from_millis(20);

/// What a probe measured.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Messages published.
    pub sent: usize,
    /// Messages received.
    pub received: usize,
    /// The largest delay (a message never received counts from its publish to the end).
    pub max_delay: Duration,
    /// The median delay of those received.
    pub median_delay: Duration,
}

impl DelayProbe {
    /// Subscribes to `channel` over SSE and starts publishing to it.
    pub async fn start(server: &TestServer, channel: &str) -> DelayProbe {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/{channel}?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        let head = conn.stream_head().await;
        assert_eq!(head.status, 200, "probe subscription: {}", head.head);
        conn.next_chunk().await; // retry: prelude
        server.wait_for_subscribers(channel, 1).await;

        let state = Arc::new(Mutex::new(ProbeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(probe_reader(conn, state, stop))
        };
        let publisher = {
            let (state, stop, addr, channel) = (state.clone(), stop.clone(), server.addr, channel.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROBE_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let seq = {
                        let mut state = state.lock().unwrap();
                        state.sent.push(Instant::now());
                        state.received.push(None);
                        state.sent.len() - 1
                    };
                    publish_to(addr, &channel, seq.to_string().as_bytes()).await;
                }
            })
        };
        DelayProbe { state, stop, publisher, reader }
    }

    /// Stops publishing, waits (a bounded time) for the last messages, and reports.
    pub async fn finish(self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        let published = tokio::time::timeout(Duration::from_secs(15), self.publisher).await;
        assert!(matches!(published, Ok(Ok(()))), "probe publisher failed or hung: {published:?}");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reader).await;
        let end = Instant::now();
        let state = self.state.lock().unwrap();
        let mut delays: Vec<Duration> = state
            .sent
            .iter()
            .zip(&state.received)
            .filter_map(|(sent, got)| got.map(|got| got.saturating_duration_since(*sent)))
            .collect();
        let lost = state.sent.iter().zip(&state.received).filter(|(_, got)| got.is_none()).map(|(sent, _)| end - *sent);
        let max_delay = delays.iter().copied().chain(lost).max().unwrap_or_default();
        delays.sort();
        ProbeReport {
            sent: state.sent.len(),
            received: delays.len(),
            max_delay,
            median_delay: delays.get(delays.len() / 2).copied().unwrap_or_default(),
        }
    }
}

async fn probe_reader(mut conn: RawConn, state: Arc<Mutex<ProbeState>>, stop: Arc<AtomicBool>) {
    let mut stopped_at = None;
    let mut partial = String::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            let all = state.lock().unwrap().received.iter().all(Option::is_some);
            if all || since.elapsed() > Duration::from_secs(3) {
                return;
            }
        }
        let waited = Instant::now();
        let Some(chunk) = conn.next_chunk_within(Duration::from_millis(50)).await else {
            // Closed (None at once): do not spin.
            if waited.elapsed() < Duration::from_millis(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        };
        let now = Instant::now();
        partial.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only (a chunk may end mid-event).
        while let Some(end) = partial.find("\n\n") {
            let event: String = partial.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(seq) = line.strip_prefix("data: ").and_then(|d| d.trim().parse::<usize>().ok()) {
                    let mut state = state.lock().unwrap();
                    if let Some(slot) = state.received.get_mut(seq) {
                        slot.get_or_insert(now);
                    }
                }
            }
        }
    }
}

/// `POST /pub/{channel}` on a fresh connection; panics unless 200.
pub async fn publish_to(addr: SocketAddr, channel: &str, body: &[u8]) -> Value {
    let mut conn = RawConn::connect(addr).await;
    let head = format!("POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    conn.send(&[head.as_bytes(), body].concat()).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "publish to {channel}: {}", response.text());
    response.json()
}

/// `GET target` on a fresh connection, as JSON (panics unless 200).
pub async fn get_json(addr: SocketAddr, target: &str) -> Value {
    let mut conn = RawConn::connect(addr).await;
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "GET {target}: {}", response.text());
    response.json()
}

/// The subscribers `GET /admin/connections` lists (everything but parked HTTP connections).
pub async fn subscribers(addr: SocketAddr) -> Vec<Value> {
    let listing = get_json(addr, "/admin/connections").await;
    listing["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["transport"] != "http")
        .collect()
}

/// `/admin/stats` `closed.<label>` (0 when the label is absent).
pub fn closed(stats: &Value, label: &str) -> u64 {
    stats["closed"][label].as_u64().unwrap_or(0)
}

/// Polls `/admin/stats` until `done` holds or `within` passes; the last stats and whether it held.
pub async fn stats_until(addr: SocketAddr, within: Duration, done: impl Fn(&Value) -> bool) -> (Value, bool) {
    let deadline = Instant::now() + within;
    loop {
        let stats = get_json(addr, "/admin/stats").await;
        if done(&stats) {
            return (stats, true);
        }
        if Instant::now() >= deadline {
            return (stats, false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
