//! `holdfast bench fanout`: opens N subscribers to one channel, publishes messages to it at a set
//! rate (or as fast as possible), and measures deliveries per second, end-to-end latency and
//! loss. It speaks to Holdfast and to other servers alike (the bench scripts run it against
//! nginx+Nchan): subscribers only need an HTTP streaming response (SSE, chunked), a WebSocket, or
//! Holdfast's long poll, and messages are recognised by a marker in their payload.
//!
//! Each payload is `hfb:<seq>:<nanoseconds since the bench started>:<Unix microseconds>:` padded
//! to `--size` bytes (both clocks read just before the POST; the wall-clock field lets an
//! independent reader, `bench/fanout_check.py`, time the same messages). A subscriber scans the
//! bytes it receives for markers (whatever the framing around them, since digits and letters pass
//! through SSE, JSON and WebSocket unchanged), so the client does little work per delivery and
//! shares the machine fairly with the server.
//!
//! Long polls (`--longpoll`) follow Holdfast's cursor (`?cursor=` from the last answer) or, with
//! `--longpoll-cursor headers`, Nchan's: `If-Modified-Since` / `If-None-Match` from the last
//! answer's `Last-Modified` / `Etag` (one message per answer).
//!
//! Prints one JSON line per phase: deliveries, lost, deliveries/s (from the first publish to the
//! last delivery), latency p50/p99/max in milliseconds, and the rate the publisher achieved (a
//! server that answers a publish only after fanning it out slows the publisher below `--rate`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EXIT_USAGE;

/// The marker that starts every payload.
const MARKER: &[u8] = b"hfb:";
/// Longest wait for the last deliveries of a phase after its last publish.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

pub fn command() -> Command {
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_parser(value_parser!(u64)).default_value(default).help(help)
    };
    Command::new("fanout")
        .about("N subscribers on one channel; publish at a rate or in a burst; deliveries/s, latency, loss")
        .arg(Arg::new("server").long("server").value_name("ADDR").required(true).help("host:port"))
        .arg(
            Arg::new("subscribe")
                .long("subscribe")
                .value_name("PATH")
                .default_value("/sub/bench?transport=sse")
                .help("subscription path (SSE/chunked stream, or WebSocket with --websocket)"),
        )
        .arg(Arg::new("publish").long("publish").value_name("PATH").default_value("/pub/bench").help("POST path"))
        .arg(Arg::new("websocket").long("websocket").num_args(0).help("subscribe with a WebSocket upgrade"))
        .arg(Arg::new("longpoll").long("longpoll").num_args(0).help("subscribe by long polls (see --longpoll-cursor)"))
        .arg(
            Arg::new("longpoll-cursor")
                .long("longpoll-cursor")
                .value_parser(["query", "headers"])
                .default_value("query")
                .help("long polls resume by Holdfast's ?cursor= (query) or Nchan's If-Modified-Since/If-None-Match (headers)"),
        )
        .arg(number("subscribers", "1000", "subscribers to open"))
        .arg(number("messages", "100", "messages per phase"))
        .arg(number("rate", "0", "messages per second; 0 = a burst, as fast as possible"))
        .arg(number("size", "100", "payload bytes"))
        .arg(number("phases", "1", "phases to run, one after another (each prints a line)"))
        .arg(number("concurrency", "256", "subscribers being opened at once"))
        .arg(number("settle-ms", "500", "wait between the last subscriber open and the first publish"))
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required").clone();
    let Some(addr) = server.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("holdfast bench fanout: cannot resolve --server {server}");
        return ExitCode::from(EXIT_USAGE);
    };
    let get = |name: &str| *args.get_one::<u64>(name).expect("default");
    let plan = Plan {
        addr,
        host: server,
        subscribe: args.get_one::<String>("subscribe").expect("default").clone(),
        publish: args.get_one::<String>("publish").expect("default").clone(),
        mode: if args.get_flag("websocket") {
            Mode::WebSocket
        } else if args.get_flag("longpoll") {
            Mode::LongPoll
        } else {
            Mode::Stream
        },
        subscribers: get("subscribers") as usize,
        messages: get("messages"),
        rate: get("rate"),
        size: get("size") as usize,
        phases: get("phases"),
        concurrency: get("concurrency") as usize,
        settle: Duration::from_millis(get("settle-ms")),
        header_cursor: args.get_one::<String>("longpoll-cursor").is_some_and(|c| c == "headers"),
    };
    let fd_limit = holdfast_server::raise_fd_limit();
    if plan.subscribers + 64 > fd_limit {
        eprintln!("holdfast bench fanout: {} subscribers need more descriptors than {fd_limit}", plan.subscribers);
        return ExitCode::from(EXIT_USAGE);
    }
    // One thread: the client takes one core at most, leaving the rest to the server.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench fanout: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast bench fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    WebSocket,
    LongPoll,
}

#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    host: String,
    subscribe: String,
    publish: String,
    mode: Mode,
    subscribers: usize,
    messages: u64,
    rate: u64,
    size: usize,
    phases: u64,
    concurrency: usize,
    /// Wait between the last subscriber opened and the first publish.
    settle: Duration,
    /// Long polls resume with Nchan's `If-Modified-Since` / `If-None-Match` instead of `?cursor=`.
    header_cursor: bool,
}

/// What the subscribers record, shared by all of them (one thread, so the lock is uncontended).
#[derive(Default)]
struct Record {
    /// Latency of each delivery in the current phase, in microseconds.
    latencies_us: Vec<u32>,
    last_delivery: Option<Instant>,
}

struct Shared {
    start: Instant,
    record: Mutex<Record>,
    deliveries: AtomicU64,
}

async fn bench(plan: Plan) -> Result<(), String> {
    let shared = Arc::new(Shared { start: Instant::now(), record: Mutex::default(), deliveries: AtomicU64::new(0) });
    let mut opened = 0;
    let mut pending = tokio::task::JoinSet::new();
    let mut ready = 0;
    while opened < plan.subscribers || !pending.is_empty() {
        while opened < plan.subscribers && pending.len() < plan.concurrency {
            pending.spawn(open_subscriber(plan.clone()));
            opened += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(stream))) => {
                ready += 1;
                let shared = shared.clone();
                let plan = plan.clone();
                tokio::spawn(async move { receive(stream, plan, shared).await });
            }
            Some(Ok(Err(e))) => return Err(format!("a subscriber failed to open: {e}")),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    let subscribe_span = shared.start.elapsed();
    // Let the server register the last subscribers before publishing.
    tokio::time::sleep(plan.settle).await;
    let mut publisher = Publisher::connect(&plan).await?;
    let mut seq = 0u64;
    for phase in 0..plan.phases {
        *shared.record.lock().unwrap() = Record::default();
        shared.deliveries.store(0, Ordering::Relaxed);
        let began = Instant::now();
        for i in 0..plan.messages {
            if plan.rate > 0 {
                let due = began + Duration::from_secs_f64(i as f64 / plan.rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            seq += 1;
            publisher.publish(seq, shared.start.elapsed().as_nanos() as u64, unix_micros()).await?;
        }
        let published = Instant::now();
        // The rate the publisher kept: messages over the time from the first publish to the last
        // answer (at a set rate, the first message is due at once and the last at (M-1)/rate).
        let publish_span = published.saturating_duration_since(began);
        let want = plan.messages * ready as u64;
        while shared.deliveries.load(Ordering::Relaxed) < want && published.elapsed() < DRAIN_WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Stragglers (duplicates would show as more than wanted).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let record = std::mem::take(&mut *shared.record.lock().unwrap());
        let got = record.latencies_us.len() as u64;
        let span = record.last_delivery.map_or(Duration::ZERO, |last| last.saturating_duration_since(began));
        let mut latencies = record.latencies_us;
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied()
        };
        let ms = |us: Option<u32>| us.map(|us| us as f64 / 1000.0);
        println!(
            "{}",
            json!({
                "phase": phase + 1,
                "subscribers": ready,
                "messages": plan.messages,
                "rate": plan.rate,
                "deliveries": got,
                "expected": want,
                "lost": want.saturating_sub(got),
                "extra": got.saturating_sub(want),
                "seconds": span.as_secs_f64(),
                "deliveries_per_s": if span.is_zero() { 0.0 } else { got as f64 / span.as_secs_f64() },
                "p50_ms": ms(pct(0.50)),
                "p99_ms": ms(pct(0.99)),
                "max_ms": ms(latencies.last().copied()),
                "subscribe_seconds": subscribe_span.as_secs_f64(),
                "publish_seconds": publish_span.as_secs_f64(),
                "published_per_s": if plan.messages < 2 || publish_span.is_zero() {
                    0.0
                } else {
                    (plan.messages - 1) as f64 / publish_span.as_secs_f64()
                },
            })
        );
    }
    Ok(())
}

async fn open_subscriber(plan: Plan) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(plan.addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    if plan.mode == Mode::LongPoll {
        return Ok(stream);
    }
    let request = match plan.mode {
        Mode::WebSocket => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            plan.subscribe, plan.host
        ),
        _ => format!("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", plan.subscribe, plan.host),
    };
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // Read the response head (and whatever prelude came with it) before counting it as open.
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| "no response head within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_ok = head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 101");
    if !status_ok {
        return Err(format!("answer: {}", String::from_utf8_lossy(&head[..head.len().min(200)])));
    }
    Ok(stream)
}

/// Reads a subscriber's stream and records every marker found in it.
async fn receive(mut stream: TcpStream, plan: Plan, shared: Arc<Shared>) {
    if plan.mode == Mode::LongPoll {
        return long_poll(stream, plan, shared).await;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry = 0;
    loop {
        let n = match stream.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        let end = carry + n;
        carry = scan(&buf[..end], now, &shared);
        // Keep an incomplete marker at the end for the next read.
        buf.copy_within(end - carry..end, 0);
    }
}

/// Long polls: poll with the cursor, record what comes back, poll again. The cursor is Holdfast's
/// (`"cursor":"…"` in the answer, sent back as `?cursor=`) or, with `header_cursor`, Nchan's
/// (`Last-Modified` and `Etag` of the answer, sent back as `If-Modified-Since` and
/// `If-None-Match`).
async fn long_poll(mut stream: TcpStream, plan: Plan, shared: Arc<Shared>) {
    let mut cursor = String::new();
    let (mut last_modified, mut etag) = (String::new(), String::new());
    let mut buf = Vec::with_capacity(4096);
    loop {
        let separator = if plan.subscribe.contains('?') { '&' } else { '?' };
        let target = if cursor.is_empty() {
            plan.subscribe.clone()
        } else {
            format!("{}{separator}cursor={cursor}", plan.subscribe)
        };
        let mut fields = String::new();
        if !last_modified.is_empty() {
            fields = format!("If-Modified-Since: {last_modified}\r\nIf-None-Match: {etag}\r\n");
        }
        let request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n{fields}\r\n", plan.host);
        if stream.write_all(request.as_bytes()).await.is_err() {
            return;
        }
        buf.clear();
        let body = loop {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(body) = complete_body(&buf) {
                break body;
            }
        };
        scan(body, Instant::now(), &shared);
        if plan.header_cursor {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            if let Some(value) = field(&buf[..head_end], "last-modified") {
                last_modified = value;
                etag = field(&buf[..head_end], "etag").unwrap_or_default();
            }
            continue;
        }
        // The answer's cursor: the last "cursor":"…" in the body.
        let text = String::from_utf8_lossy(body);
        if let Some(at) = text.rfind("\"cursor\":\"") {
            let rest = &text[at + 10..];
            cursor = rest[..rest.find('"').unwrap_or(0)].to_string();
        }
    }
}

/// The value of header field `name` (lower case) in a response head.
fn field(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// Wall-clock time in microseconds since the Unix epoch.
fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The body of a complete Content-Length response in `buf`.
fn complete_body(buf: &[u8]) -> Option<&[u8]> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head.split("content-length:").nth(1)?.trim_start().split('\r').next()?.trim().parse().ok()?;
    (buf.len() >= head_end + length).then(|| &buf[head_end..head_end + length])
}

/// Records each complete `hfb:<seq>:<ns>:` marker; returns how many trailing bytes may hold the
/// start of an incomplete one.
fn scan(bytes: &[u8], now: Instant, shared: &Shared) -> usize {
    let now_ns = now.duration_since(shared.start).as_nanos() as u64;
    let mut record = shared.record.lock().unwrap();
    let mut at = 0;
    let mut found = 0;
    while let Some(offset) = find(&bytes[at..], MARKER) {
        let start = at + offset;
        let fields = &bytes[start + MARKER.len()..];
        let mut parts = fields.splitn(3, |&b| b == b':');
        let (Some(_seq), Some(sent), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return bytes.len() - start;
        };
        let sent_ns: u64 = std::str::from_utf8(sent).ok().and_then(|s| s.parse().ok()).unwrap_or(now_ns);
        record.latencies_us.push((now_ns.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32);
        found += 1;
        at = start + MARKER.len();
    }
    if found > 0 {
        record.last_delivery = Some(now);
        shared.deliveries.fetch_add(found, Ordering::Relaxed);
    }
    // An unfinished marker may start in the last few bytes; keep them, but never a marker already
    // counted (`at` is past the last one's prefix).
    const KEEP: usize = 48;
    bytes.len() - at.max(bytes.len().saturating_sub(KEEP))
}

/// Where `needle` first occurs in `haystack`. The scan for its first byte goes eight bytes at a
/// time (a bytewise `windows().position()` took ~30 % of the single-threaded client's time in a
/// 10k-subscriber burst, where it reads ~140 MB).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(offset) = find_byte(&haystack[from..], first) {
        let at = from + offset;
        if haystack.len() - at < needle.len() {
            return None;
        }
        if &haystack[at + 1..at + needle.len()] == rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where `byte` first occurs in `haystack` (SWAR: a word with a zero byte where they match).
fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * byte as u64;
    let mut chunks = haystack.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ pattern;
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            // The lowest flagged byte is a true match (borrows only run towards higher bytes).
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|&b| b == byte).map(|i| base + i)
}

/// One keep-alive connection that POSTs payloads.
struct Publisher {
    stream: TcpStream,
    path: String,
    host: String,
    size: usize,
}

impl Publisher {
    async fn connect(plan: &Plan) -> Result<Publisher, String> {
        let stream = TcpStream::connect(plan.addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Publisher { stream, path: plan.publish.clone(), host: plan.host.clone(), size: plan.size })
    }

    async fn publish(&mut self, seq: u64, sent_ns: u64, unix_us: u64) -> Result<(), String> {
        let mut body = format!("hfb:{seq}:{sent_ns}:{unix_us}:").into_bytes();
        body.resize(body.len().max(self.size), b'x');
        let head =
            format!("POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", self.path, self.host, body.len());
        self.stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        self.stream.write_all(&body).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            let n = self.stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("publisher connection closed".into());
            }
            response.extend_from_slice(&chunk[..n]);
            if complete_body(&response).is_some() {
                break;
            }
        }
        if !(response.starts_with(b"HTTP/1.1 200")
            || response.starts_with(b"HTTP/1.1 201")
            || response.starts_with(b"HTTP/1.1 202"))
        {
            return Err(format!("publish answered {}", String::from_utf8_lossy(&response[..response.len().min(120)])));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchan_cursor_fields() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nLast-Modified: Tue, 01 Dec 2026 13:28:38 GMT\r\n\
                     Etag: 1\r\n\r\n";
        assert_eq!(field(head, "last-modified").as_deref(), Some("Tue, 01 Dec 2026 13:28:38 GMT"));
        assert_eq!(field(head, "etag").as_deref(), Some("1"));
        assert_eq!(field(head, "x-missing"), None);
    }

    #[test]
    fn find_matches_the_naive_search() {
        let naive = |h: &[u8], n: &[u8]| h.windows(n.len()).position(|w| w == n);
        let text = b"data: hfb:12:345:xxxx\n\nid: 7\ndata: hhfb:13:346:x hfb";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let h = &text[start..end];
                assert_eq!(find(h, MARKER), naive(h, MARKER), "{:?}", String::from_utf8_lossy(h));
                for b in [b'h', b'x', b':', 0x80, 0xff] {
                    assert_eq!(find_byte(h, b), h.iter().position(|&c| c == b));
                }
            }
        }
        let high = [0x01u8, 0x80, 0xe8, 0x68, 0x00, 0x68, 0xff, 0x68, 0x68];
        for b in [0x68, 0xe8, 0x80, 0x00, 0xff, 0x01] {
            for start in 0..high.len() {
                assert_eq!(find_byte(&high[start..], b), high[start..].iter().position(|&c| c == b));
            }
        }
    }
}
