//! `holdfast bench idle`: opens N TCP connections to a server, sends one keep-alive
//! `GET /healthz HTTP/1.1` on each and reads the response, then keeps all N open and idle, so the
//! server's memory per idle keep-alive connection can be read from outside (`bench/idle.sh`).
//!
//! With `--path PATH` the request is `GET PATH` with `Accept: text/event-stream` instead, and a
//! streaming answer (200 without `Content-Length`: SSE, chunked) counts as open once its head is
//! in; with `--websocket` it is a WebSocket upgrade, open at the `101`; with `--longpoll` it is a
//! plain `GET PATH` (a long poll), open as soon as the request is written, since a held long poll
//! has no answer yet (the script counts it at the server instead). Either way the client then
//! holds the subscriber without ever reading again (`bench/subscribers.sh`). That is only sound
//! while nothing is published: heartbeats or messages would pile up in the socket buffers (and a
//! WebSocket server may close a peer that never answers its pings); a long poll answered
//! meanwhile (by its server's timeout) is reported as `unexpected_bytes`, not as held.
//!
//! With `--until-closed` the client instead watches every connection for the server's close
//! (`bench/mass_close.sh`): it reads each one (a notice, then end of stream) and, once all have
//! ended or `--hold` has passed, prints a `"phase":"closed"` line with the wall-clock times
//! (Unix seconds) at which the first, median, 99th-percentile and last end of stream were seen,
//! so a script can time a mass close from the moment it sent the request that caused it.
//!
//! With `--json`, prints one JSON line on stdout when every connection has been tried
//! (`"phase":"open"`, with the time to open one: p50/p99/max, hdrhistogram), and one when the hold
//! ends (`--hold` seconds, or SIGTERM/SIGINT) with how many connections the server still kept
//! open (`"phase":"held"`); without it, a progress bar while opening and a table at the end.
//! `--procs P` opens them from P child processes (`procs.rs`), each holding its share: the parent
//! prints the merged lines (sums; the close times of `--until-closed` merged exactly, each child
//! sending its list), and ends the children's hold when its own ends.
//!
//! The client's own footprint is kept small because it shares the machine (and its memory) with
//! the server being measured: connections are opened by a bounded number of short tasks, and an
//! established connection is kept as a bare `std::net::TcpStream` (4 bytes in a `Vec`, no task,
//! no reactor slot).

use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::procs::{self, Children, Role};
use super::report::{self, Latency, Table};
use super::EXIT_USAGE;

/// Bound on one connection's connect + request + response; a slower one counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted to the one request (the health answer is under 200 B).
const RESPONSE_MAX: usize = 2048;
/// Descriptors kept for stdio, the runtime's epoll and eventfd, and slack.
const FD_RESERVE: u64 = 32;
/// The request path unless `--path` says otherwise.
const HEALTH_PATH: &str = "/healthz";

/// What each connection asks for, and so when it counts as open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /healthz`: open once the whole (Content-Length) response is in.
    Health,
    /// `GET PATH` with `Accept: text/event-stream`: open at the head of a streaming 200.
    Stream,
    /// WebSocket upgrade to PATH: open at the `101` head.
    WebSocket,
    /// A long poll `GET PATH`: open once the request is written (a held poll has no answer).
    LongPoll,
}

pub fn command() -> Command {
    procs::args(report::json_arg(base_command()))
}

/// The command without the options every bench shares.
fn base_command() -> Command {
    Command::new("idle")
        .about("Open N keep-alive connections, one GET /healthz each, then hold them idle")
        .arg(Arg::new("server").long("server").value_name("ADDR").required(true).help("host:port of the server"))
        .arg(
            Arg::new("connections")
                .long("connections")
                .value_name("N")
                .required(true)
                .value_parser(value_parser!(u64).range(1..))
                .help("connections to open and hold"),
        )
        .arg(
            Arg::new("hold")
                .long("hold")
                .value_name("SECS")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("seconds to hold them; 0 = until SIGTERM or SIGINT"),
        )
        .arg(
            Arg::new("path").long("path").value_name("PATH").help(
                "subscribe to PATH (Accept: text/event-stream) instead of GET /healthz; held once the head is in",
            ),
        )
        .arg(
            Arg::new("websocket")
                .long("websocket")
                .num_args(0)
                .help("open WebSocket subscribers (upgrade to --path, default /sub/bench)"),
        )
        .arg(
            Arg::new("longpoll")
                .long("longpoll")
                .num_args(0)
                .conflicts_with("websocket")
                .help("open long polls (GET --path, default /sub/bench, no Accept field); held once written"),
        )
        .arg(Arg::new("until-closed").long("until-closed").num_args(0).help(
            "read every connection until the server closes it, then report when (Unix seconds); ends when all \
             have closed or after --hold",
        ))
        .arg(
            Arg::new("concurrency")
                .long("concurrency")
                .value_name("N")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("256")
                .help("connections being opened at once (stays under the listen backlog)"),
        )
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required");
    let connections = *args.get_one::<u64>("connections").expect("required");
    let hold = *args.get_one::<u64>("hold").expect("default");
    let concurrency = *args.get_one::<u64>("concurrency").expect("default") as usize;
    let path = args.get_one::<String>("path");
    let (kind, path) = match (args.get_flag("websocket"), args.get_flag("longpoll"), path) {
        (true, _, path) => (Kind::WebSocket, path.map_or("/sub/bench", String::as_str)),
        (false, true, path) => (Kind::LongPoll, path.map_or("/sub/bench", String::as_str)),
        (false, false, Some(path)) => (Kind::Stream, path.as_str()),
        (false, false, None) => (Kind::Health, HEALTH_PATH),
    };
    let until_closed = args.get_flag("until-closed");
    let role = Role::of(args);
    let connections = role.share(connections);

    let addr = match server.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(addr) => addr,
        None => {
            eprintln!("holdfast bench idle: cannot resolve --server {server}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Each connection is a descriptor: the default soft limit (often 1024) would stop us early.
    let fd_limit = holdfast_server::raise_fd_limit() as u64;
    if connections + FD_RESERVE > fd_limit {
        eprintln!(
            "holdfast bench idle: {connections} connections need more descriptors than the limit ({fd_limit}) allows \
             (--procs spreads them)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    // One thread: the client should take as little CPU as possible from the server it measures.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench idle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = request(kind, server, path);
    let plan = Plan { addr, host: server, kind, request, connections, concurrency, hold, until_closed };
    let mut out = Out { role, json: report::wants_json(args), lines: Vec::new() };
    let code = runtime.block_on(async {
        match role {
            Role::Parent { procs } => parent(&plan, procs, &mut out).await,
            Role::Child { .. } => {
                procs::ignore_stop_signals();
                bench(plan, &mut out).await
            }
            Role::Alone => bench(plan, &mut out).await,
        }
    });
    out.print_table();
    code
}

/// Where the phase lines go: JSON lines on stdout as they come (`--json`, and always in a child,
/// with what its parent merges), or a table at the end.
struct Out {
    role: Role,
    json: bool,
    lines: Vec<Value>,
}

impl Out {
    /// One phase line; `extra`: fields only the parent needs (histograms, lists).
    fn emit(&mut self, line: Value, extra: &[(&str, Value)]) {
        if self.role.is_child() {
            let mut full = line;
            for (key, value) in extra {
                full[*key] = value.clone();
            }
            return report::print_json(&full);
        }
        if self.json {
            report::print_json(&line);
        } else if line["phase"] == "open" {
            eprintln!("holdfast bench idle: {} of {} open; holding them", line["open"], line["requested"]);
        }
        self.lines.push(line);
    }

    /// Without `--json`: every phase's fields, one column per phase.
    fn print_table(&self) {
        if self.json || self.role.is_child() || self.lines.is_empty() {
            return;
        }
        let phases: Vec<String> = self.lines.iter().map(|l| report::cell(&l["phase"])).collect();
        let mut headers = vec!["field"];
        headers.extend(phases.iter().map(String::as_str));
        let mut table = Table::new(&headers);
        let mut keys: Vec<&str> = Vec::new();
        for line in &self.lines {
            for key in line.as_object().into_iter().flat_map(|o| o.keys()) {
                if key != "phase" && !keys.contains(&key.as_str()) {
                    keys.push(key);
                }
            }
        }
        for key in keys {
            let mut row = vec![key.to_string()];
            row.extend(
                self.lines.iter().map(|l| if l.get(key).is_some() { report::cell(&l[key]) } else { String::new() }),
            );
            table.row(row);
        }
        table.print();
    }
}

/// What to open and how long to hold it.
struct Plan<'a> {
    addr: SocketAddr,
    host: &'a str,
    kind: Kind,
    request: Arc<[u8]>,
    connections: u64,
    concurrency: usize,
    hold: u64,
    until_closed: bool,
}

/// The one request each connection sends.
fn request(kind: Kind, host: &str, path: &str) -> Arc<[u8]> {
    let text = match kind {
        Kind::Health | Kind::LongPoll => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        Kind::Stream => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"),
        Kind::WebSocket => format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    };
    text.into_bytes().into()
}

async fn bench(plan: Plan<'_>, out: &mut Out) -> ExitCode {
    let Plan { addr, host, kind, request, connections, concurrency, hold, until_closed } = plan;
    let child = out.role.is_child();
    let bar = report::progress(connections, "opening", child || out.json);
    let mut latency = Latency::default();
    let started = Instant::now();
    let mut open = Vec::with_capacity(connections as usize);
    let mut failed = 0u64;
    let mut first_error = None;
    let mut tasks = JoinSet::new();
    let mut launched = 0;
    while launched < connections || !tasks.is_empty() {
        // Bounded concurrency: a burst of N connects would overflow the server's accept backlog
        // and turn into SYN retransmits (1 s, 3 s, …) that say nothing about the server.
        while launched < connections && tasks.len() < concurrency {
            let request = request.clone();
            tasks.spawn(async move {
                let began = Instant::now();
                match tokio::time::timeout(OPEN_TIMEOUT, open_one(addr, kind, &request, until_closed)).await {
                    Ok(result) => result.map(|held| (held, began.elapsed())),
                    Err(_) => Err(format!("no response within {OPEN_TIMEOUT:?}")),
                }
            });
            launched += 1;
        }
        bar.inc(1);
        match tasks.join_next().await {
            Some(Ok(Ok((stream, took)))) => {
                latency.record(took);
                open.push(stream);
            }
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
    let mut line = json!({
        "phase": "open",
        "server": host,
        "requested": connections,
        "open": open.len(),
        "failed": failed,
        "first_error": first_error,
        "seconds": round3(started.elapsed().as_secs_f64()),
    });
    line.as_object_mut().expect("object").extend(latency.summary_json("open_"));
    out.emit(line, &[("hist", latency.to_json())]);

    if until_closed {
        return watch_closes(open, host, hold, failed, out).await;
    }
    let held_since = Instant::now();
    if child {
        // The end of stdin (a parent gone) ends the hold too.
        procs::wait_go().await;
    } else {
        wait_hold(hold).await;
    }
    let mut still_open = 0u64;
    let mut closed = 0u64;
    let mut unexpected_bytes = 0u64;
    let mut stream_bytes = 0u64;
    for held in &open {
        let Held::Bare(stream) = held else { continue };
        if kind == Kind::Health {
            // A non-blocking one-byte peek: nothing to read means the server still holds it.
            match stream.peek(&mut [0u8]) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => still_open += 1,
                Ok(0) | Err(_) => closed += 1,
                Ok(_) => unexpected_bytes += 1,
            }
            continue;
        }
        // A subscriber may have been sent heartbeats or pings meanwhile: drain them, then the
        // socket is open if nothing more is there (WouldBlock), closed at end of stream. A long
        // poll has no heartbeats: any byte is an answer, so that poll is no longer held.
        match drain(stream) {
            Ok(n) if kind == Kind::LongPoll && n > 0 => {
                stream_bytes += n;
                unexpected_bytes += 1;
            }
            Ok(n) => {
                stream_bytes += n;
                still_open += 1;
            }
            Err(n) => {
                stream_bytes += n;
                closed += 1;
            }
        }
    }
    out.emit(
        json!({
            "phase": "held",
            "server": host,
            "held_seconds": round3(held_since.elapsed().as_secs_f64()),
            "open": still_open,
            "closed_by_server": closed,
            "unexpected_bytes": unexpected_bytes,
            "stream_bytes": stream_bytes,
        }),
        &[],
    );
    if failed == 0 && closed == 0 && (kind != Kind::LongPoll || unexpected_bytes == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads what a held subscriber has been sent without blocking: `Ok(bytes)` if it is still open,
/// `Err(bytes)` if the server closed it.
fn drain(mut stream: &std::net::TcpStream) -> Result<u64, u64> {
    use std::io::Read;
    let mut total = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(total),
        }
    }
}

/// A connection once open: a bare socket out of the runtime (held idle), or one left in it that is
/// read until the server closes it (`--until-closed`).
enum Held {
    Bare(std::net::TcpStream),
    Watched(TcpStream),
}

/// Connects, sends the request, reads the response (the whole of a health answer, the head of a
/// subscription; nothing for a long poll), and returns the socket, taken out of the runtime
/// unless it is to be watched.
async fn open_one(addr: SocketAddr, kind: Kind, request: &[u8], watch: bool) -> Result<Held, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
    // A held long poll has no answer yet: it is open once its request is out.
    if kind != Kind::LongPoll {
        read_answer(&mut stream, kind).await?;
    }
    if watch {
        return Ok(Held::Watched(stream));
    }
    // Out of the reactor: a held idle connection costs the client only its descriptor.
    stream.into_std().map(Held::Bare).map_err(|e| format!("into_std: {e}"))
}

/// Reads the answer that makes a connection open: the whole of a health answer, the head of a
/// subscription.
async fn read_answer(stream: &mut TcpStream, kind: Kind) -> Result<(), String> {
    let mut buf = [0u8; RESPONSE_MAX];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response ended".into());
        }
        len += n;
        let end = match kind {
            Kind::Health => response_end(&buf[..len])?,
            Kind::Stream | Kind::WebSocket | Kind::LongPoll => subscription_head_end(&buf[..len], kind)?,
        };
        match end {
            // A subscription's head may come with its first bytes (SSE `retry:`, a chunk).
            Some(_) if kind != Kind::Health => return Ok(()),
            Some(end) if end == len => return Ok(()),
            Some(_) => return Err("bytes after the response".into()),
            None if len == buf.len() => return Err("response too large".into()),
            None => {}
        }
    }
}

/// `--until-closed`: reads every connection until end of stream (or an error), noting the wall
/// clock then, and how many saw Holdfast's `holdfast.closed` notice on the way; prints the
/// `"phase":"closed"` line once all have ended, or after `hold` seconds (0: until a signal).
async fn watch_closes(open: Vec<Held>, host: &str, hold: u64, failed: u64, out: &mut Out) -> ExitCode {
    let watched = open.len();
    let mut readers = JoinSet::new();
    for held in open {
        let Held::Watched(mut stream) = held else { continue };
        readers.spawn(async move {
            let mut buf = [0u8; 1024];
            let mut bytes = 0u64;
            // The notice's name may straddle two reads: keep the tail of the previous one.
            let mut tail = Vec::new();
            let mut notice = false;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        if !notice {
                            tail.extend_from_slice(&buf[..n]);
                            notice = tail.windows(NOTICE.len()).any(|w| w == NOTICE);
                            let keep = tail.len().saturating_sub(NOTICE.len());
                            tail.drain(..keep);
                        }
                    }
                }
            }
            (unix_now(), bytes, notice)
        });
    }
    let mut ends = Vec::with_capacity(watched);
    let (mut bytes, mut notices) = (0u64, 0u64);
    let collect = async {
        while let Some(result) = readers.join_next().await {
            if let Ok((at, n, notice)) = result {
                ends.push(at);
                bytes += n;
                notices += u64::from(notice);
            }
        }
    };
    let child = out.role.is_child();
    tokio::select! {
        _ = collect => {}
        _ = async { if child { procs::wait_go().await; } else { wait_hold(hold).await } } => {}
    }
    let line = closed_line(host, watched as u64, notices, bytes, &mut ends);
    out.emit(line, &[("ends", json!(ends))]);
    if failed == 0 && ends.len() == watched {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `"phase":"closed"` line: the wall-clock times (Unix seconds) at which the first, median,
/// 99th-percentile and last end of stream were seen (`ends` is sorted here).
fn closed_line(host: &str, watched: u64, notices: u64, bytes: u64, ends: &mut [f64]) -> Value {
    ends.sort_by(f64::total_cmp);
    let pct = |p: f64| ends.get(((ends.len() as f64 * p) as usize).min(ends.len().saturating_sub(1))).copied();
    json!({
        "phase": "closed",
        "server": host,
        "watched": watched,
        "closed": ends.len(),
        "still_open": watched - ends.len() as u64,
        "notices": notices,
        "bytes": bytes,
        "first_eof_unix": ends.first(),
        "p50_eof_unix": pct(0.50),
        "p99_eof_unix": pct(0.99),
        "last_eof_unix": ends.last(),
    })
}

/// `--procs P`: starts the children, prints their merged lines, and ends their hold with its own.
async fn parent(plan: &Plan<'_>, procs: u64, out: &mut Out) -> ExitCode {
    let mut children = match Children::spawn(procs) {
        Ok(children) => children,
        Err(e) => {
            eprintln!("holdfast bench idle: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = report::progress(0, &format!("opening ({procs} processes)"), out.json);
    let opened = children.lines();
    bar.finish_and_clear();
    let opened = match opened {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("holdfast bench idle: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut latency = Latency::default();
    for line in &opened {
        latency.add(&Latency::from_json(&line["hist"]).unwrap_or_default());
    }
    let mut line = json!({
        "phase": "open",
        "server": plan.host,
        "procs": procs,
        "requested": procs::sum(&opened, "requested"),
        "open": procs::sum(&opened, "open"),
        "failed": procs::sum(&opened, "failed"),
        "first_error": procs::first(&opened, "first_error"),
        "seconds": procs::max_f64(&opened, "seconds"),
    });
    line.as_object_mut().expect("object").extend(latency.summary_json("open_"));
    let failed = procs::sum(&opened, "failed");
    out.emit(line, &[]);
    // The children's next lines come when their hold ends: on `go`, sent when ours ends, or (with
    // --until-closed) when all their connections have closed. Read them on a thread meanwhile.
    let goer = children.goer();
    let mut reader = tokio::task::spawn_blocking(move || {
        let lines = children.lines();
        (children.finish(), lines)
    });
    let joined = tokio::select! {
        joined = &mut reader => joined,
        _ = wait_hold(plan.hold) => {
            let _ = goer.go();
            reader.await
        }
    };
    let (finished, lines) = match joined {
        Ok((finished, Ok(lines))) => (finished, lines),
        Ok((_, Err(e))) => {
            eprintln!("holdfast bench idle: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("holdfast bench idle: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = if plan.until_closed {
        let mut ends: Vec<f64> = lines
            .iter()
            .flat_map(|l| l["ends"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        let watched = procs::sum(&lines, "watched");
        let line =
            closed_line(plan.host, watched, procs::sum(&lines, "notices"), procs::sum(&lines, "bytes"), &mut ends);
        out.emit(line, &[]);
        ends.len() as u64 == watched
    } else {
        let closed = procs::sum(&lines, "closed_by_server");
        let unexpected = procs::sum(&lines, "unexpected_bytes");
        out.emit(
            json!({
                "phase": "held",
                "server": plan.host,
                "procs": procs,
                "held_seconds": procs::max_f64(&lines, "held_seconds"),
                "open": procs::sum(&lines, "open"),
                "closed_by_server": closed,
                "unexpected_bytes": unexpected,
                "stream_bytes": procs::sum(&lines, "stream_bytes"),
            }),
            &[],
        );
        closed == 0 && (plan.kind != Kind::LongPoll || unexpected == 0)
    };
    if ok && finished && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The event name of Holdfast's close notice.
const NOTICE: &[u8] = b"holdfast.closed";

/// Wall-clock time in Unix seconds (microsecond resolution).
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Where a complete `200` response ends in `buf`, or `None` while incomplete. Only what the health
/// answer uses is understood: a `Content-Length` body (none if the field is absent).
fn response_end(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "non-UTF-8 head")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("unexpected status line: {status}"));
    }
    let mut body_len = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                body_len = value.trim().parse().map_err(|_| "bad Content-Length")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported".into());
            }
        }
    }
    Ok((buf.len() >= head_len + body_len).then_some(head_len + body_len))
}

/// Where the head of a subscription's answer ends in `buf`, or `None` while incomplete: a `101`
/// for a WebSocket, else a `200` that streams (no `Content-Length`, which would mean a finished
/// answer such as an empty long poll, not a held subscriber).
fn subscription_head_end(buf: &[u8], kind: Kind) -> Result<Option<usize>, String> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let want = if kind == Kind::WebSocket { "101" } else { "200" };
    if status.split(' ').nth(1) != Some(want) {
        return Err(format!("unexpected status line: {status}"));
    }
    if kind == Kind::Stream
        && lines.any(|line| line.split_once(':').is_some_and(|(name, _)| name.eq_ignore_ascii_case("content-length")))
    {
        return Err("a finished answer (Content-Length), not a stream".into());
    }
    Ok(Some(head_len))
}

/// Waits `hold` seconds (0: forever), or until SIGTERM or SIGINT.
async fn wait_hold(hold: u64) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let timer = async {
        match hold {
            0 => std::future::pending().await,
            secs => tokio::time::sleep(Duration::from_secs(secs)).await,
        }
    };
    tokio::select! {
        _ = timer => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_end_waits_for_the_body() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(response_end(head).unwrap(), None);
        let full = [&head[..], b"ok\n"].concat();
        assert_eq!(response_end(&full).unwrap(), Some(full.len()));
        assert_eq!(response_end(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(response_end(b"HTTP/1.1 503 Busy\r\n\r\n").is_err());
    }

    #[test]
    fn subscription_heads() {
        let sse = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nretry: 2000\n\n";
        assert_eq!(subscription_head_end(&sse[..20], Kind::Stream).unwrap(), None);
        assert_eq!(subscription_head_end(sse, Kind::Stream).unwrap(), Some(sse.len() - 13));
        assert!(subscription_head_end(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", Kind::Stream).is_err());
        let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(subscription_head_end(ws, Kind::WebSocket).unwrap(), Some(ws.len()));
        assert!(subscription_head_end(ws, Kind::Stream).is_err());
        assert!(request(Kind::WebSocket, "h", "/sub/x").starts_with(b"GET /sub/x HTTP/1.1\r\nHost: h\r\nUpgrade"));
        // A long poll is a plain GET: no Accept field, so the server answers it as a poll.
        assert_eq!(&*request(Kind::LongPoll, "h", "/sub/x"), b"GET /sub/x HTTP/1.1\r\nHost: h\r\n\r\n");
    }
}
