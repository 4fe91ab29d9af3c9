//! `holdfast bench hostile`: N hostile WebSocket connections that never read, flooding the server
//! with pings and/or compressed messages that inflate a thousandfold, while well-behaved clients
//! measure what everyone else gets meanwhile (`bench/hostile.sh`).
//!
//! Each hostile connection subscribes to `/sub/<channel>` with a WebSocket upgrade (offering
//! permessage-deflate with `--deflate`), reads the `101`, and from then on never reads: it writes,
//! as fast as its socket takes them, copies of one prepared buffer of masked client frames chosen
//! by `--attack`:
//! - `ping`: ping frames with 125-byte payloads (each asks for a 127-byte pong);
//! - `deflate`: compressed text messages of ~1 KB that inflate to `--inflate-size` bytes (by
//!   default 1,000,000, just under the server's default 1 MiB `ws_max_message_bytes`): a valid
//!   `{"op":"ping","pad":"aaa…"}` op by default (inflated, parsed and answered), or with
//!   `--bomb raw` a run of `a`s (inflated, then refused as `bad_json`);
//! - `mixed`: both, 4 compressed messages and 32 pings per buffer;
//! - `none`: the connections are opened and held, nothing is sent (a quiet baseline).
//!
//! The buffer is built once (one mask key, one compressed copy: the server's answer requires
//! `client_no_context_takeover`, so every compressed message stands alone), so the attacker costs
//! only system calls. A connection the server cuts is counted (a write fails, or its TCP state is
//! no longer established at the end); with `--reconnect` it is opened again at once, so N stay
//! open for the whole attack.
//!
//! Meanwhile, on a thread of their own (so the flood does not delay their clock readings):
//! - one SSE subscriber on `--probe-channel` receives messages published every
//!   `--publish-interval-ms` (50) over one keep-alive connection; each payload is
//!   `hfp:<seq>:<ns since the bench started>:<µs since the Unix epoch>:`, and the delivery delay is
//!   the read time minus the time just before the POST was written (the wall-clock field lets an
//!   independent client check the figure);
//! - `GET /healthz` every `--health-interval-ms` (100) on one keep-alive connection (the next one
//!   goes out at once when an answer took longer);
//! - the server's RSS (`--server-pid`, `VmRSS` of `/proc/PID/status`) every 50 ms: start, peak,
//!   final (at the end of the attack) and after the hostile connections are closed. With
//!   `--rss-limit-mb` the attack stops (and the hostile sockets are reset) as soon as RSS passes
//!   it, to protect the machine from a server without bounds.
//!
//! With `--json`, prints one JSON line on stdout and a human summary on stderr; without it, the
//! summary and a table of the latencies (hdrhistogram) on stdout. A progress bar runs on stderr
//! while the connections open and the attack lasts. (No `--procs`: the probes must be one
//! process's, and the default 1,000 connections fit in one.)

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{value_parser, Arg, ArgMatches, Command};
use flate2::{Compress, Compression, FlushCompress};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::report::{self, Latency, Table};
use super::server_cpu::ServerCpu;
use super::EXIT_USAGE;

/// WebSocket opcodes (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
const OP_PING: u8 = 0x9;
/// The longest control payload (RFC 6455 §5.5).
const PING_PAYLOAD: usize = 125;
/// The one masking key of every hostile frame (any key is valid; a fixed one lets the buffer be
/// built once).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The marker that starts every probe payload.
const MARKER: &[u8] = b"hfp:";
/// Bound on opening one hostile connection (connect, upgrade, `101`).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `/healthz` or publish round trip; a slower one counts as failed (with this time)
/// and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server's RSS is read.
const RSS_EVERY: Duration = Duration::from_millis(50);
/// Descriptors kept for stdio, the runtimes and the probes.
const FD_RESERVE: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Attack {
    None,
    Ping,
    Deflate,
    Mixed,
}

impl Attack {
    fn parse(text: &str) -> Option<Attack> {
        Some(match text {
            "none" => Attack::None,
            "ping" => Attack::Ping,
            "deflate" => Attack::Deflate,
            "mixed" => Attack::Mixed,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Ping => "ping",
            Attack::Deflate => "deflate",
            Attack::Mixed => "mixed",
        }
    }

    /// Compressed messages and pings in one buffer (about 8 KB either way).
    fn unit(self) -> (usize, usize) {
        match self {
            Attack::None => (0, 0),
            Attack::Ping => (0, 64),
            Attack::Deflate => (8, 0),
            Attack::Mixed => (4, 32),
        }
    }
}

pub fn command() -> Command {
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_parser(value_parser!(u64)).default_value(default).help(help)
    };
    let command = Command::new("hostile")
        .about("N WebSocket peers that never read and flood pings/deflate bombs; SSE delay, /healthz latency, RSS")
        .arg(Arg::new("server").long("server").value_name("ADDR").required(true).help("host:port"))
        .arg(
            Arg::new("attack")
                .long("attack")
                .value_parser(["ping", "deflate", "mixed", "none"])
                .default_value("ping")
                .help("what the hostile connections send"),
        )
        .arg(
            Arg::new("deflate").long("deflate").num_args(0).help("offer permessage-deflate (needed by deflate, mixed)"),
        )
        .arg(
            Arg::new("bomb")
                .long("bomb")
                .value_parser(["json", "raw"])
                .default_value("json")
                .help("inflated text: a {\"op\":\"ping\",\"pad\":…} op, or a run of 'a's (bad_json)"),
        )
        .arg(Arg::new("reconnect").long("reconnect").num_args(0).help("reopen a connection the server cut"))
        .arg(number("connections", "1000", "hostile connections"))
        .arg(number("seconds", "10", "length of the attack"))
        .arg(number("inflate-size", "1000000", "bytes each compressed message inflates to"))
        .arg(Arg::new("channel").long("channel").default_value("hostile").help("channel of the hostile connections"))
        .arg(Arg::new("probe-channel").long("probe-channel").default_value("probe").help("channel of the SSE probe"))
        .arg(number("publish-interval-ms", "50", "probe publishes every this many ms"))
        .arg(number("health-interval-ms", "100", "GET /healthz every this many ms"))
        .arg(
            Arg::new("server-pid")
                .long("server-pid")
                .value_name("PID")
                .value_parser(value_parser!(u32))
                .help("server process whose RSS (and CPU) is sampled"),
        )
        .arg(number("rss-limit-mb", "0", "stop the attack once server RSS passes this (0 = never)"))
        .arg(number("grace-ms", "5000", "after the attack, wait this long for probe messages still due"))
        .arg(number("concurrency", "256", "hostile connections being opened at once"))
        .arg(
            Arg::new("delays-file")
                .long("delays-file")
                .value_name("PATH")
                .help("write `seq delay_ms` of every probe message received (to check against another client)"),
        );
    report::json_arg(command)
}

/// What the run is asked to do.
#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    host: String,
    attack: Attack,
    deflate: bool,
    reconnect: bool,
    connections: usize,
    seconds: u64,
    inflate_size: usize,
    raw_bomb: bool,
    channel: String,
    probe_channel: String,
    publish_every: Duration,
    health_every: Duration,
    server_pid: Option<u32>,
    rss_limit_kb: u64,
    grace: Duration,
    concurrency: usize,
    delays_file: Option<String>,
    /// `--json`: the JSON line on stdout; else the summary table there.
    json: bool,
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required").clone();
    let Some(addr) = server.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("holdfast bench hostile: cannot resolve --server {server}");
        return ExitCode::from(EXIT_USAGE);
    };
    let get = |name: &str| *args.get_one::<u64>(name).expect("default");
    let text = |name: &str| args.get_one::<String>(name).expect("default").clone();
    let attack = Attack::parse(&text("attack")).expect("checked by clap");
    let plan = Plan {
        addr,
        host: server,
        attack,
        deflate: args.get_flag("deflate"),
        reconnect: args.get_flag("reconnect"),
        connections: get("connections") as usize,
        seconds: get("seconds"),
        inflate_size: get("inflate-size") as usize,
        raw_bomb: text("bomb") == "raw",
        channel: text("channel"),
        probe_channel: text("probe-channel"),
        publish_every: Duration::from_millis(get("publish-interval-ms").max(1)),
        health_every: Duration::from_millis(get("health-interval-ms").max(1)),
        server_pid: args.get_one::<u32>("server-pid").copied(),
        rss_limit_kb: get("rss-limit-mb") * 1024,
        grace: Duration::from_millis(get("grace-ms")),
        concurrency: get("concurrency").max(1) as usize,
        delays_file: args.get_one::<String>("delays-file").cloned(),
        json: report::wants_json(args),
    };
    if matches!(attack, Attack::Deflate | Attack::Mixed) && !plan.deflate {
        eprintln!("holdfast bench hostile: --attack {} needs --deflate", attack.label());
        return ExitCode::from(EXIT_USAGE);
    }
    let fd_limit = holdfast_server::raise_fd_limit();
    if plan.connections + FD_RESERVE > fd_limit {
        eprintln!("holdfast bench hostile: {} connections need more descriptors than {fd_limit}", plan.connections);
        return ExitCode::from(EXIT_USAGE);
    }
    // The flood runs on this thread, the probes on one of their own: two threads at most.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench hostile: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast bench hostile: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- The frames (pure helpers) ----

/// Appends one masked client frame (FIN set; RSV1 when `compressed`) carrying `payload`.
fn put_client_frame(out: &mut Vec<u8>, opcode: u8, compressed: bool, payload: &[u8], key: [u8; 4]) {
    out.push(0x80 | if compressed { 0x40 } else { 0 } | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// The text a compressed message inflates to: exactly `size` bytes of a valid ping op padded
/// with `a`s (`raw`: `size` `a`s).
fn bomb_text(size: usize, raw: bool) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"op\":\"ping\",\"pad\":\"";
    const TAIL: &[u8] = b"\"}";
    if raw || size < HEAD.len() + TAIL.len() {
        return vec![b'a'; size];
    }
    let mut text = Vec::with_capacity(size);
    text.extend_from_slice(HEAD);
    text.resize(size - TAIL.len(), b'a');
    text.extend_from_slice(TAIL);
    text
}

/// `data` as the payload of one permessage-deflate message (RFC 7692 §7.2.1): raw DEFLATE with a
/// 32 KiB window, flushed to a byte boundary, without the trailing `00 00 ff ff`.
fn deflate_message(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new_with_window_bits(Compression::best(), false, 15);
    let mut out = Vec::with_capacity(data.len() / 512 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).expect("DEFLATE of a buffer");
        if compress.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    debug_assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len().saturating_sub(4));
    out
}

/// The buffer a hostile connection sends over and over: `bombs` compressed text messages
/// inflating to `inflate_size` bytes each, then `pings` pings, all masked.
fn attack_buffer(bombs: usize, pings: usize, inflate_size: usize, raw: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bombs > 0 {
        let compressed = deflate_message(&bomb_text(inflate_size, raw));
        for _ in 0..bombs {
            put_client_frame(&mut out, OP_TEXT, true, &compressed, MASK);
        }
    }
    let payload: Vec<u8> = (0..PING_PAYLOAD).map(|i| b'0' + (i % 10) as u8).collect();
    for _ in 0..pings {
        put_client_frame(&mut out, OP_PING, false, &payload, MASK);
    }
    out
}

// ---- Small parsers ----

/// The length of the complete `Content-Length` response at the start of `buf` and its status,
/// or `None` while incomplete.
fn response_len(buf: &[u8]) -> Option<(usize, u16)> {
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let body = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_len + body).then_some((head_len + body, status))
}

/// Probe markers in `buf` up to its last newline: `(seq, ns since the start)` each; returns them
/// and how many bytes were consumed (the rest is an unfinished line).
fn probe_markers(buf: &[u8]) -> (Vec<(u64, u64)>, usize) {
    let Some(end) = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else { return (Vec::new(), 0) };
    let mut found = Vec::new();
    for line in buf[..end].split(|&b| b == b'\n') {
        let Some(at) = line.windows(MARKER.len()).position(|w| w == MARKER) else { continue };
        let mut fields = line[at + MARKER.len()..].split(|&b| b == b':');
        let number = |f: Option<&[u8]>| f.and_then(|f| std::str::from_utf8(f).ok()).and_then(|s| s.parse().ok());
        if let (Some(seq), Some(sent)) = (number(fields.next()), number(fields.next())) {
            found.push((seq, sent));
        }
    }
    (found, end)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---- /proc ----

/// `VmRSS` of a process in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's TCP state of a socket (1 = established; 7 = closed, e.g. reset; 8 = the peer
/// sent FIN).
fn tcp_state(stream: &TcpStream) -> Option<u8> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info.tcpi_state)
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

// ---- The hostile connections ----

/// Counters the hostile connections share (one thread: relaxed atomics are plenty).
#[derive(Default)]
struct Flood {
    bytes: AtomicU64,
    opened: AtomicU64,
    reopen_failed: AtomicU64,
    /// Cuts seen while the attack ran, and when (ms since the attack began).
    cuts: Mutex<Vec<u64>>,
}

/// Opens one hostile connection: upgrade, read the `101`; returns it and whether
/// permessage-deflate was agreed.
async fn open_hostile(plan: &Plan) -> Result<(TcpStream, bool), String> {
    let mut stream = TcpStream::connect(plan.addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let offer =
        if plan.deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" } else { "" };
    let request = format!(
        "GET /sub/{} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
        plan.channel, plan.host
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let head_len = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 8192 {
            return Err("response head too large".into());
        }
        let n = stream.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..head_len]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 101") {
        return Err(format!("answer: {}", text.lines().next().unwrap_or_default()));
    }
    let agreed = text.lines().any(|l| l.starts_with("sec-websocket-extensions:") && l.contains("permessage-deflate"));
    Ok((stream, agreed))
}

/// One hostile connection during the attack: writes its buffer over and over until `stop`;
/// a cut connection is recorded and, with `--reconnect`, opened again. Returns the socket it
/// holds at the end (`None` if it was cut and not reopened).
async fn flood(
    plan: Arc<Plan>,
    mut stream: TcpStream,
    mut buffer: Arc<Vec<u8>>,
    buffers: Arc<(Vec<u8>, Vec<u8>)>,
    mut stop: watch::Receiver<bool>,
    flood: Arc<Flood>,
    began: Instant,
) -> Option<TcpStream> {
    if buffer.is_empty() {
        let _ = stop.wait_for(|&s| s).await;
        return Some(stream);
    }
    let mut offset = 0;
    loop {
        let result = tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => return Some(stream),
            result = stream.write(&buffer[offset..]) => result,
        };
        match result {
            Ok(n) if n > 0 => {
                flood.bytes.fetch_add(n as u64, Ordering::Relaxed);
                offset = (offset + n) % buffer.len();
                continue;
            }
            _ => {}
        }
        // Cut by the server (reset, or closed).
        flood.cuts.lock().unwrap().push(began.elapsed().as_millis() as u64);
        if !plan.reconnect || *stop.borrow() {
            return None;
        }
        let reopened = tokio::select! {
            _ = stop.wait_for(|&s| s) => return None,
            r = tokio::time::timeout(OPEN_TIMEOUT, open_hostile(&plan)) => r,
        };
        match reopened {
            Ok(Ok((s, agreed))) => {
                flood.opened.fetch_add(1, Ordering::Relaxed);
                stream = s;
                buffer = Arc::new(if agreed || !plan.deflate { buffers.0.clone() } else { buffers.1.clone() });
                offset = 0;
            }
            _ => {
                flood.reopen_failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

// ---- The probes (their own thread) ----

/// What the probes measured.
#[derive(Default)]
struct ProbeResults {
    /// Delivery delay of each probe message received, µs.
    sse_delays: Latency,
    /// `(seq, delay µs)` of each, in arrival order (for `--delays-file`).
    sse_log: Vec<(u64, u64)>,
    published: u64,
    /// `(seq, ns since the start)` of each accepted publish, to age the ones never delivered.
    published_at: Vec<(u64, u64)>,
    publish_failed: u64,
    publish: Latency,
    /// The SSE subscriber's stream ended (or failed) before the end.
    sse_error: Option<String>,
    health: Latency,
    health_failed: u64,
    rss_start_kb: Option<u64>,
    rss_peak_kb: u64,
    rss_last_kb: Option<u64>,
    /// When RSS passed the limit, seconds after the attack began.
    rss_limit_hit_s: Option<f64>,
}

/// Shared between the flood thread and the probe thread.
struct Probes {
    start: Instant,
    /// The SSE subscriber is subscribed (its `200` head is in).
    subscribed: AtomicBool,
    /// Server RSS passed `--rss-limit-mb`: the attack must stop.
    rss_limit_hit: AtomicBool,
    results: Mutex<ProbeResults>,
}

/// Phases the probe thread follows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Debug)]
enum Phase {
    /// SSE subscribing; RSS sampled; nothing published yet.
    Ready,
    /// Attack on: publish, poll /healthz, record.
    Attack,
    /// Attack over: stop publishing and polling; the SSE subscriber waits for stragglers.
    After,
    /// Everything stops.
    Done,
}

fn run_probes(plan: Arc<Plan>, probes: Arc<Probes>, phase: watch::Receiver<Phase>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            probes.results.lock().unwrap().sse_error = Some(format!("probe runtime: {e}"));
            probes.subscribed.store(true, Ordering::Relaxed);
            return;
        }
    };
    runtime.block_on(async {
        let mut tasks = JoinSet::new();
        tasks.spawn(sse_probe(plan.clone(), probes.clone(), phase.clone()));
        tasks.spawn(publisher(plan.clone(), probes.clone(), phase.clone()));
        tasks.spawn(health_probe(plan.clone(), probes.clone(), phase.clone()));
        tasks.spawn(rss_sampler(plan.clone(), probes.clone(), phase.clone()));
        while tasks.join_next().await.is_some() {}
    });
}

async fn sse_probe(plan: Arc<Plan>, probes: Arc<Probes>, mut phase: watch::Receiver<Phase>) {
    let error = |e: String| {
        probes.results.lock().unwrap().sse_error.get_or_insert(e);
        probes.subscribed.store(true, Ordering::Relaxed);
    };
    let Ok(mut stream) = TcpStream::connect(plan.addr).await else { return error("SSE connect failed".into()) };
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET /sub/{}?transport=sse HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        plan.probe_channel, plan.host
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return error("SSE request failed".into());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut subscribed = false;
    loop {
        let n = tokio::select! {
            r = stream.read(&mut chunk) => match r {
                Ok(0) => return error("SSE stream ended".into()),
                Ok(n) => n,
                Err(e) => return error(format!("SSE read: {e}")),
            },
            _ = phase.changed() => {
                if *phase.borrow() == Phase::Done {
                    return;
                }
                continue;
            }
        };
        let now = now_ns(probes.start);
        buf.extend_from_slice(&chunk[..n]);
        if !subscribed {
            let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            if !buf.starts_with(b"HTTP/1.1 200") {
                return error(format!("SSE answer: {}", String::from_utf8_lossy(&buf[..at])));
            }
            buf.drain(..at + 4);
            subscribed = true;
            probes.subscribed.store(true, Ordering::Relaxed);
        }
        let (found, used) = probe_markers(&buf);
        buf.drain(..used);
        if !found.is_empty() {
            let mut results = probes.results.lock().unwrap();
            for (seq, sent) in found {
                let delay = now.saturating_sub(sent) / 1000;
                results.sse_delays.record_us(delay);
                results.sse_log.push((seq, delay));
            }
        }
    }
}

/// One keep-alive HTTP connection for the probes' requests.
struct Http {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    /// Sends `request` and reads the whole response; its status.
    async fn round_trip(&mut self, addr: SocketAddr, request: &[u8]) -> Result<u16, String> {
        let work = async {
            if self.stream.is_none() {
                let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                let _ = stream.set_nodelay(true);
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().expect("just set");
            stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
            self.buf.clear();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some((len, status)) = response_len(&self.buf) {
                    if len != self.buf.len() {
                        return Err("bytes after the response".to_string());
                    }
                    return Ok(status);
                }
                let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed".to_string());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err("timeout".to_string()),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// Waits for the attack to begin; false if it never does.
async fn wait_attack(phase: &mut watch::Receiver<Phase>) -> bool {
    matches!(phase.wait_for(|p| *p >= Phase::Attack).await.map(|p| *p), Ok(Phase::Attack))
}

async fn publisher(plan: Arc<Plan>, probes: Arc<Probes>, mut phase: watch::Receiver<Phase>) {
    if !wait_attack(&mut phase).await {
        return;
    }
    let mut http = Http { stream: None, buf: Vec::new() };
    let began = Instant::now();
    let mut seq = 0u64;
    while *phase.borrow() == Phase::Attack {
        let due = began + plan.publish_every * seq as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = phase.changed() => continue,
        }
        seq += 1;
        let sent_ns = now_ns(probes.start);
        let body = format!("hfp:{seq}:{sent_ns}:{}:", unix_us());
        let request = format!(
            "POST /pub/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            plan.probe_channel,
            plan.host,
            body.len()
        );
        let sent = Instant::now();
        let result = http.round_trip(plan.addr, request.as_bytes()).await;
        let took = sent.elapsed().as_micros() as u64;
        let mut results = probes.results.lock().unwrap();
        results.publish.record_us(took);
        match result {
            // A publish that failed may still have been published; count it as due only if the
            // server said so.
            Ok(200..=299) => {
                results.published += 1;
                results.published_at.push((seq, sent_ns));
            }
            _ => results.publish_failed += 1,
        }
    }
}

async fn health_probe(plan: Arc<Plan>, probes: Arc<Probes>, mut phase: watch::Receiver<Phase>) {
    if !wait_attack(&mut phase).await {
        return;
    }
    let mut http = Http { stream: None, buf: Vec::new() };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", plan.host);
    let began = Instant::now();
    let mut next = began;
    while *phase.borrow() == Phase::Attack {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = phase.changed() => continue,
        }
        let sent = Instant::now();
        let result = http.round_trip(plan.addr, request.as_bytes()).await;
        let took = sent.elapsed().as_micros() as u64;
        let mut results = probes.results.lock().unwrap();
        results.health.record_us(took);
        if result != Ok(200) {
            results.health_failed += 1;
        }
        // The next one at the next tick, or at once if this one overran it.
        next = (next + plan.health_every).max(Instant::now());
    }
}

async fn rss_sampler(plan: Arc<Plan>, probes: Arc<Probes>, phase: watch::Receiver<Phase>) {
    let Some(pid) = plan.server_pid else { return };
    let mut attack_began = None;
    loop {
        let now = *phase.borrow();
        if now == Phase::Done {
            return;
        }
        if now >= Phase::Attack && attack_began.is_none() {
            attack_began = Some(Instant::now());
        }
        if let Some(rss) = rss_kb(pid) {
            let mut results = probes.results.lock().unwrap();
            results.rss_start_kb.get_or_insert(rss);
            results.rss_peak_kb = results.rss_peak_kb.max(rss);
            results.rss_last_kb = Some(rss);
            if plan.rss_limit_kb > 0 && rss > plan.rss_limit_kb && results.rss_limit_hit_s.is_none() {
                results.rss_limit_hit_s = Some(round3(attack_began.map_or(0.0, |t| t.elapsed().as_secs_f64())));
                probes.rss_limit_hit.store(true, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(RSS_EVERY).await;
    }
}

// ---- The run ----

async fn bench(plan: Plan) -> Result<(), String> {
    let plan = Arc::new(plan);
    let started = Instant::now();
    let (bombs, pings) = plan.attack.unit();
    // Connections whose server declined permessage-deflate send the pings only.
    let buffers = Arc::new((
        attack_buffer(bombs, pings, plan.inflate_size, plan.raw_bomb),
        attack_buffer(0, pings.max(usize::from(bombs > 0) * 64), plan.inflate_size, plan.raw_bomb),
    ));

    // 1. The hostile connections, `concurrency` at a time (the accept backlog stays small).
    let mut hostile: Vec<(TcpStream, bool)> = Vec::with_capacity(plan.connections);
    let mut failed = 0u64;
    let mut first_error = None;
    let mut opening = JoinSet::new();
    let mut launched = 0;
    let bar = report::progress(plan.connections as u64, "opening hostile connections", plan.json);
    while launched < plan.connections || !opening.is_empty() {
        while launched < plan.connections && opening.len() < plan.concurrency {
            let plan = plan.clone();
            opening.spawn(async move {
                tokio::time::timeout(OPEN_TIMEOUT, open_hostile(&plan))
                    .await
                    .unwrap_or_else(|_| Err(format!("no 101 within {OPEN_TIMEOUT:?}")))
            });
            launched += 1;
        }
        bar.inc(1);
        match opening.join_next().await {
            Some(Ok(Ok(opened))) => hostile.push(opened),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    let open = hostile.len();
    let agreed = hostile.iter().filter(|(_, a)| *a).count();
    let open_seconds = started.elapsed().as_secs_f64();

    // 2. The probes; the SSE subscriber must be in before the attack.
    let probes = Arc::new(Probes {
        start: started,
        subscribed: AtomicBool::new(false),
        rss_limit_hit: AtomicBool::new(false),
        results: Mutex::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Ready);
    let probe_thread = {
        let (plan, probes) = (plan.clone(), probes.clone());
        std::thread::Builder::new()
            .name("hostile-probes".into())
            .spawn(move || run_probes(plan, probes, phase_rx))
            .map_err(|e| format!("probe thread: {e}"))?
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probes.subscribed.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(e) = probes.results.lock().unwrap().sse_error.clone() {
        let _ = phase_tx.send(Phase::Done);
        let _ = probe_thread.join();
        return Err(format!("probe subscriber: {e}"));
    }
    // Let the server register the subscriber (and take a first RSS reading).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. The attack.
    let server = plan.server_pid.map(ServerCpu::process);
    let client = ServerCpu::process(std::process::id());
    let server_cpu0 = server.as_ref().map(ServerCpu::seconds);
    let client_cpu0 = client.seconds();
    let flood_state = Arc::new(Flood { opened: AtomicU64::new(open as u64), ..Flood::default() });
    let (stop_tx, stop_rx) = watch::channel(false);
    let began = Instant::now();
    let _ = phase_tx.send(Phase::Attack);
    let mut writers = JoinSet::new();
    for (stream, agreed) in hostile {
        let buffer = Arc::new(if agreed || !plan.deflate { buffers.0.clone() } else { buffers.1.clone() });
        writers.spawn(flood(
            plan.clone(),
            stream,
            buffer,
            buffers.clone(),
            stop_rx.clone(),
            flood_state.clone(),
            began,
        ));
    }
    let attack_for = Duration::from_secs(plan.seconds);
    let bar = report::progress(plan.seconds * 1000, "attack (ms)", plan.json);
    while began.elapsed() < attack_for && !probes.rss_limit_hit.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        bar.set_position(began.elapsed().as_millis() as u64);
    }
    bar.finish_and_clear();
    let rss_stopped = probes.rss_limit_hit.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let attack_seconds = began.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::After);
    let server_cpu = server.as_ref().map(ServerCpu::seconds).zip(server_cpu0).map(|(b, a)| b - a);
    let client_cpu = Some(client.seconds() - client_cpu0);
    let rss_final_kb = plan.server_pid.and_then(rss_kb);
    let mut held = Vec::new();
    while let Some(done) = writers.join_next().await {
        if let Ok(Some(stream)) = done {
            held.push(stream);
        }
    }
    // A server that stopped reading a connection and then closed it shows only in its state.
    let established = held.iter().filter(|s| tcp_state(s) == Some(1)).count();
    let cut_during = flood_state.cuts.lock().unwrap().clone();
    let opened_total = flood_state.opened.load(Ordering::Relaxed);
    let cut_total = cut_during.len() as u64 + (held.len() - established) as u64;
    if rss_stopped {
        // Reset at once (SO_LINGER 0): the server should drop what it holds for them now.
        for stream in &held {
            let _ = stream.set_zero_linger();
        }
        held.clear();
    }
    // The server's own count of why connections closed, before ours close.
    let server_stats = admin_stats(&plan).await;

    // 4. Stragglers of the SSE probe, then the end of the probes.
    let grace_end = Instant::now() + plan.grace;
    loop {
        let (got, want) = {
            let r = probes.results.lock().unwrap();
            (r.sse_log.len() as u64, r.published)
        };
        if got >= want || Instant::now() >= grace_end || probes.results.lock().unwrap().sse_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // RSS once the hostile connections are gone.
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_close_kb = plan.server_pid.and_then(rss_kb);
    let _ = phase_tx.send(Phase::Done);
    let _ = probe_thread.join();

    let results = std::mem::take(&mut *probes.results.lock().unwrap());
    // A message never delivered was at least as late as its age now: the true largest delay is
    // at least the larger of this and the largest measured one.
    let now = now_ns(started);
    let delivered: std::collections::HashSet<u64> = results.sse_log.iter().map(|(seq, _)| *seq).collect();
    let undelivered_age_us = results
        .published_at
        .iter()
        .filter(|(seq, _)| !delivered.contains(seq))
        .map(|(_, sent)| now.saturating_sub(*sent) / 1000)
        .max();
    if let Some(path) = &plan.delays_file {
        let text: String =
            results.sse_log.iter().map(|(seq, us)| format!("{seq} {:.3}\n", *us as f64 / 1000.0)).collect();
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    let (sse, health) = (&results.sse_delays, &results.health);
    let sse_max_us = results.sse_log.iter().map(|&(_, us)| us).max();
    let first_cut = cut_during.iter().min().map(|&ms| ms as f64 / 1000.0);
    let last_cut = cut_during.iter().max().map(|&ms| ms as f64 / 1000.0);
    let closed = server_stats.as_ref().and_then(|s| s.get("closed")).map(nonzero).unwrap_or(Value::Null);
    // In parts: one json! of all the keys would pass the macro's recursion limit.
    let mut line = json!({
        "attack": plan.attack.label(),
        "deflate": plan.deflate,
        "bomb": if plan.raw_bomb { "raw" } else { "json" },
        "inflate_size": plan.inflate_size,
        "reconnect": plan.reconnect,
        "server": plan.host,
        "requested": plan.connections,
        "open": open,
        "failed": failed,
        "first_error": first_error,
        "open_seconds": round3(open_seconds),
        "deflate_agreed": agreed,
        "attack_seconds": round3(attack_seconds),
        "hostile_bytes_sent": flood_state.bytes.load(Ordering::Relaxed),
        "buffer_bytes": buffers.0.len(),
        "buffer_messages": bombs,
        "buffer_pings": pings,
        "opened_total": opened_total,
        "reopen_failed": flood_state.reopen_failed.load(Ordering::Relaxed),
        "cut": cut_total,
        "cut_while_writing": cut_during.len(),
        "first_cut_s": first_cut,
        "last_cut_s": last_cut,
        "open_at_end": established,
    });
    merge(
        &mut line,
        json!({
            "sse_published": results.published,
            "sse_received": results.sse_log.len(),
            "sse_lost": results.published.saturating_sub(results.sse_log.len() as u64),
            "sse_max_at_least_ms": sse_max_us.max(undelivered_age_us).map(|us| round3(us as f64 / 1000.0)),
            "sse_error": results.sse_error,
            "sse_p50_ms": sse.percentile_ms(50.0),
            "sse_p99_ms": sse.percentile_ms(99.0),
            "sse_max_ms": sse.max_ms(),
            "publish_failed": results.publish_failed,
            "publish_p50_ms": results.publish.percentile_ms(50.0),
            "publish_max_ms": results.publish.max_ms(),
            "healthz_requests": health.len(),
            "healthz_failed": results.health_failed,
            "healthz_p50_ms": health.percentile_ms(50.0),
            "healthz_p99_ms": health.percentile_ms(99.0),
            "healthz_max_ms": health.max_ms(),
        }),
    );
    merge(
        &mut line,
        json!({
            "server_pid": plan.server_pid,
            "rss_start_kb": results.rss_start_kb,
            "rss_peak_kb": plan.server_pid.map(|_| results.rss_peak_kb),
            "rss_final_kb": rss_final_kb,
            "rss_after_close_kb": rss_after_close_kb,
            "rss_limit_kb": plan.rss_limit_kb,
            "rss_limit_hit": rss_stopped,
            "rss_limit_hit_s": results.rss_limit_hit_s,
            "server_cpu_s": server_cpu.map(|s| (s * 100.0).round() / 100.0),
            "client_cpu_s": client_cpu.map(|s| (s * 100.0).round() / 100.0),
            "server_closed": closed,
        }),
    );
    if plan.json {
        report::print_json(&line);
        eprintln!("{}", summary(&line));
    } else {
        println!("{}", summary(&line));
        let mut table = Table::new(&["latency", "n", "p50_ms", "p99_ms", "max_ms"]);
        for (name, latency, n) in [
            ("sse delay", sse, results.sse_log.len() as u64),
            ("/healthz", health, health.len()),
            ("publish", &results.publish, results.publish.len()),
        ] {
            let cells = [latency.percentile_ms(50.0), latency.percentile_ms(99.0), latency.max_ms()];
            let mut row = vec![name.to_string(), report::cell(&json!(n))];
            row.extend(cells.iter().map(|ms| report::cell(&json!(ms))));
            table.row(row);
        }
        table.print();
    }
    Ok(())
}

/// Adds the keys of object `more` to object `line`.
fn merge(line: &mut Value, more: Value) {
    if let (Value::Object(line), Value::Object(more)) = (line, more) {
        line.extend(more);
    }
}

/// `/admin/stats` of the server, if it answers.
async fn admin_stats(plan: &Plan) -> Option<Value> {
    let mut http = Http { stream: None, buf: Vec::new() };
    let request = format!("GET /admin/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", plan.host);
    http.round_trip(plan.addr, request.as_bytes()).await.ok()?;
    let at = http.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    serde_json::from_slice(&http.buf[at..]).ok()
}

/// The non-zero counters of a `{"reason": count}` object (or `[["reason", count]]` list).
fn nonzero(closed: &Value) -> Value {
    let pairs: Vec<(String, u64)> = match closed {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect(),
        Value::Array(list) => {
            list.iter().filter_map(|pair| Some((pair.get(0)?.as_str()?.to_string(), pair.get(1)?.as_u64()?))).collect()
        }
        _ => return closed.clone(),
    };
    Value::Object(pairs.into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k, Value::from(n))).collect())
}

/// The human summary of a result line.
fn summary(line: &Value) -> String {
    let f = |key: &str| match &line[key] {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let mb = |key: &str| line[key].as_u64().map_or("-".to_string(), |kb| format!("{:.1} MB", kb as f64 / 1024.0));
    format!(
        "hostile {attack}: {open}/{req} connections ({agreed} with deflate) for {secs} s, {sent} MB sent; \
         cut {cut} (first at {first} s), {left} still open\n  \
         SSE delay p50/p99/max {s50}/{s99}/{smax} ms ({got}/{pubd} received)\n  \
         /healthz p50/p99/max {h50}/{h99}/{hmax} ms ({hn} requests, {hf} failed)\n  \
         server RSS start {r0}, peak {rp}, final {rf}, after close {ra}{limit}; CPU server {sc} s, client {cc} s",
        attack = line["attack"].as_str().unwrap_or("?"),
        open = f("open"),
        req = f("requested"),
        agreed = f("deflate_agreed"),
        secs = f("attack_seconds"),
        sent = line["hostile_bytes_sent"].as_u64().unwrap_or(0) / 1_000_000,
        cut = f("cut"),
        first = f("first_cut_s"),
        left = f("open_at_end"),
        s50 = f("sse_p50_ms"),
        s99 = f("sse_p99_ms"),
        smax = if line["sse_lost"].as_u64().unwrap_or(0) > 0 {
            format!("≥{}", f("sse_max_at_least_ms"))
        } else {
            f("sse_max_ms")
        },
        got = f("sse_received"),
        pubd = f("sse_published"),
        h50 = f("healthz_p50_ms"),
        h99 = f("healthz_p99_ms"),
        hmax = f("healthz_max_ms"),
        hn = f("healthz_requests"),
        hf = f("healthz_failed"),
        r0 = mb("rss_start_kb"),
        rp = mb("rss_peak_kb"),
        rf = mb("rss_final_kb"),
        ra = mb("rss_after_close_kb"),
        limit = if line["rss_limit_hit"] == true {
            format!(" (STOPPED at the RSS limit after {} s)", f("rss_limit_hit_s"))
        } else {
            String::new()
        },
        sc = f("server_cpu_s"),
        cc = f("client_cpu_s"),
    )
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use holdfast_proto::ws::codec::{Decoder, Event};

    use super::*;

    /// Every event in `buf`, decoded as the server decodes client frames.
    fn decode_all(decoder: &mut Decoder, buf: &[u8]) -> Vec<Event> {
        let mut input = BytesMut::from(buf);
        let mut events = Vec::new();
        while let Some(event) = decoder.decode(&mut input).expect("valid frames") {
            events.push(event);
        }
        assert!(input.is_empty(), "{} bytes left over", input.len());
        events
    }

    #[test]
    fn frames_round_trip_through_the_server_decoder() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut frame = Vec::new();
            put_client_frame(&mut frame, OP_TEXT, false, &payload, MASK);
            let events = decode_all(&mut Decoder::new(1 << 20), &frame);
            assert_eq!(events, vec![Event::Text(payload.into())], "length {len}");
        }
        let mut ping = Vec::new();
        put_client_frame(&mut ping, OP_PING, false, &[7; PING_PAYLOAD], MASK);
        assert_eq!(ping.len(), 2 + 4 + PING_PAYLOAD);
        assert_eq!(decode_all(&mut Decoder::new(1 << 20), &ping), vec![Event::Ping(vec![7; PING_PAYLOAD].into())]);
    }

    #[test]
    fn bombs_inflate_to_the_size_asked() {
        for (size, raw) in [(1_000_000, false), (1_000_000, true), (64, false), (10, false)] {
            let text = bomb_text(size, raw);
            assert_eq!(text.len(), size);
            if !raw && size >= 22 {
                let op: Value = serde_json::from_slice(&text).expect("JSON");
                assert_eq!(op["op"], "ping");
            }
            let compressed = deflate_message(&text);
            if size == 1_000_000 {
                // About a thousandfold: DEFLATE's longest match is 258 bytes for 1–2 bytes.
                assert!(compressed.len() < 1_100, "{} bytes", compressed.len());
            }
            let mut frame = Vec::new();
            put_client_frame(&mut frame, OP_TEXT, true, &compressed, MASK);
            let events = decode_all(&mut Decoder::with_deflate(1 << 20), &frame);
            assert_eq!(events, vec![Event::Text(text.into())]);
        }
        // Over the server's cap once inflated: refused with 1009, as the bench must avoid.
        let mut frame = Vec::new();
        put_client_frame(&mut frame, OP_TEXT, true, &deflate_message(&bomb_text(2 << 20, false)), MASK);
        let error = Decoder::with_deflate(1 << 20).decode(&mut BytesMut::from(&frame[..])).unwrap_err();
        assert_eq!(error.code, 1009);
    }

    #[test]
    fn attack_buffers_hold_what_they_say() {
        for attack in [Attack::Ping, Attack::Deflate, Attack::Mixed] {
            let (bombs, pings) = attack.unit();
            let buffer = attack_buffer(bombs, pings, 100_000, false);
            let events = decode_all(&mut Decoder::with_deflate(1 << 20), &buffer);
            let texts = events.iter().filter(|e| matches!(e, Event::Text(t) if t.len() == 100_000)).count();
            let pinged = events.iter().filter(|e| matches!(e, Event::Ping(p) if p.len() == PING_PAYLOAD)).count();
            assert_eq!((texts, pinged, events.len()), (bombs, pings, bombs + pings), "{attack:?}");
            // Sent over and over, copies must not run into each other.
            let twice = [&buffer[..], &buffer[..]].concat();
            assert_eq!(decode_all(&mut Decoder::with_deflate(1 << 20), &twice).len(), 2 * (bombs + pings));
        }
        assert!(attack_buffer(0, 0, 1_000, false).is_empty());
    }

    #[test]
    fn parsers() {
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"), None);
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"), Some((41, 200)));
        assert_eq!(response_len(b"HTTP/1.1 503 Busy\r\n\r\n"), Some((21, 503)));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n"), None);

        let stream = b"retry: 2000\n\nid: 1\ndata: hfp:1:5000:17:\n\ndata: hfp:2:7000:18:\n\ndata: hfp:3:";
        let (found, used) = probe_markers(stream);
        assert_eq!(found, vec![(1, 5000), (2, 7000)]);
        assert_eq!(&stream[used..], b"data: hfp:3:");
        assert_eq!(probe_markers(b"data: hfp:3"), (vec![], 0));
        // A JSON envelope carries the payload as a string: the marker is found the same way.
        assert_eq!(probe_markers(b"{\"data\":\"hfp:9:42:1:\"}\n").0, vec![(9, 42)]);

        assert_eq!(nonzero(&json!({"a": 0, "b": 2})), json!({"b": 2}));
        assert_eq!(nonzero(&json!([["a", 0], ["b", 3]])), json!({"b": 3}));
    }

    #[test]
    fn rss_reader() {
        let me = std::process::id();
        assert!(rss_kb(me).is_some_and(|kb| kb > 0));
    }
}
