//! `holdfast bench fanout`: opens N subscribers to one channel, publishes messages to it at a set
//! rate (or as fast as possible), and measures deliveries per second, end-to-end latency and
//! loss. It speaks to Holdfast and to other servers alike (the bench scripts run it against
//! nginx+Nchan): subscribers only need an HTTP streaming response (SSE, chunked), a WebSocket, or
//! Holdfast's long poll, and messages are recognised by a marker in their payload.
//!
//! Each payload is `hfb:<seq>:<CLOCK_MONOTONIC nanoseconds>:<Unix microseconds>:` padded to
//! `--size` bytes (both clocks read just before the POST; the monotonic one is the same in every
//! process, so `--procs` children time deliveries against the parent's publishes; the wall-clock
//! field lets an independent reader, `bench/fanout_check.py`, time the same messages). A
//! subscriber scans the bytes it receives for markers (whatever the framing around them, since
//! digits and letters pass through SSE, JSON and WebSocket unchanged), so the client does little
//! work per delivery and shares the machine fairly with the server.
//!
//! Long polls (`--longpoll`) follow Holdfast's cursor (`?cursor=` from the last answer) or, with
//! `--longpoll-cursor headers`, Nchan's: `If-Modified-Since` / `If-None-Match` from the last
//! answer's `Last-Modified` / `Etag` (one message per answer).
//!
//! Reports per phase: deliveries, lost, deliveries/s (from the first publish to the last
//! delivery), latency p50/p90/p99/max in milliseconds (hdrhistogram), the rate the publisher
//! achieved (a server that answers a publish only after fanning it out slows the publisher below
//! `--rate`), bytes read by the subscribers per delivery, and the server's CPU seconds
//! (`server_cpu.rs`): a table, or with `--json` one JSON line per phase. `--procs P` spreads the
//! subscribers over P child processes (`procs.rs`); this process then only publishes.
//! `bench transports` runs this workload once per transport (`run_workload`).
//!
//! Several nodes of one cluster (`--server a,b,c`, `targets.rs`): subscriber `g` (numbered over
//! all processes) subscribes to server `g mod S`, optionally from source address `--bind`
//! `(g div S) mod B`, and the publisher POSTs to the first server, so every delivery on the
//! other servers went through the cluster's broker. `--broker-pid` adds the broker's CPU seconds
//! per phase (`broker_cpu_s`, to the microsecond from schedstat: a broker spends far less than a
//! 10 ms clock tick on one message); `--pause-file` lets a script read the servers' memory with
//! every subscriber open, before the first publish.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::procs::{self, Children, Role};
use super::report::{self, Latency, Table};
use super::server_cpu::ServerCpu;
use super::targets::{self, Target};
use super::EXIT_USAGE;

/// The marker that starts every payload.
const MARKER: &[u8] = b"hfb:";
/// Longest wait for the last deliveries of a phase after its last publish.
const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// How often a paused client looks whether its `--pause-file` is gone.
const PAUSE_POLL: Duration = Duration::from_millis(50);

pub fn command() -> Command {
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_parser(value_parser!(u64)).default_value(default).help(help)
    };
    let command = Command::new("fanout")
        .about("N subscribers on one channel; publish at a rate or in a burst; deliveries/s, latency, loss")
        .arg(Arg::new("server").long("server").value_name("ADDR[,ADDR…]").required(true).help(
            "host:port; several: subscribers spread over them round-robin, publishes to the first",
        ))
        .arg(Arg::new("bind").long("bind").value_name("IP[,IP…]").default_value("").help(
            "source addresses for the subscribers, round-robin (beyond one address's ephemeral ports)",
        ))
        .arg(
            Arg::new("broker-pid")
                .long("broker-pid")
                .value_name("PID")
                .value_parser(value_parser!(u32))
                .help("a broker process (redis-server): its CPU seconds per phase (broker_cpu_s, from schedstat)"),
        )
        .arg(Arg::new("pause-file").long("pause-file").value_name("PATH").help(
            "once every subscriber is open, write the subscribed line to PATH and wait until it is removed",
        ))
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
        .arg(number("settle-ms", "500", "wait between the last subscriber open and the first publish"));
    procs::args(report::json_arg(server_pid_arg(command)))
}

/// Adds `--server-pid` (fanout and transports report the server's CPU seconds per phase).
pub(super) fn server_pid_arg(command: Command) -> Command {
    command.arg(
        Arg::new("server-pid")
            .long("server-pid")
            .value_name("PID[,PID…]")
            .value_parser(value_parser!(u32))
            .value_delimiter(',')
            .help("the server's processes, for their CPU time (default: found by the ports they listen on)"),
    )
}

/// The servers' processes for CPU figures: each `--server-pid` and its children, or whatever
/// holds each server's listening socket; `None` (with a note on stderr) when one is not found.
pub(super) fn find_server_cpu(args: &ArgMatches, servers: &[Target], role: Role) -> Option<ServerCpu> {
    if role.is_child() {
        return None;
    }
    let found = match args.get_many::<u32>("server-pid") {
        Some(pids) => ServerCpu::merged(pids.map(|&pid| ServerCpu::from_pid(pid))),
        None => ServerCpu::merged(servers.iter().map(|t| ServerCpu::from_port(t.addr.port()))),
    };
    match found {
        Ok(cpu) => Some(cpu),
        Err(e) => {
            eprintln!("holdfast bench: no server CPU figures: {e}");
            None
        }
    }
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let parsed = targets::parse(args.get_one::<String>("server").expect("required"))
        .and_then(|servers| Ok((servers, targets::parse_binds(args.get_one::<String>("bind").expect("default"))?)));
    let (servers, binds) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("holdfast bench fanout: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let get = |name: &str| *args.get_one::<u64>(name).expect("default");
    let role = Role::of(args);
    let plan = Plan {
        servers: servers.into(),
        binds: binds.into(),
        pause_file: args.get_one::<String>("pause-file").map(PathBuf::from),
        subscribe: args.get_one::<String>("subscribe").expect("default").clone(),
        publish: args.get_one::<String>("publish").expect("default").clone(),
        mode: if args.get_flag("websocket") {
            Mode::WebSocket
        } else if args.get_flag("longpoll") {
            Mode::LongPoll
        } else {
            Mode::Stream
        },
        subscribers: role.share(get("subscribers")) as usize,
        messages: get("messages"),
        rate: get("rate"),
        size: get("size") as usize,
        phases: get("phases"),
        concurrency: get("concurrency") as usize,
        settle: Duration::from_millis(get("settle-ms")),
        header_cursor: args.get_one::<String>("longpoll-cursor").is_some_and(|c| c == "headers"),
        poll_interval: None,
        role,
    };
    let fd_limit = holdfast_server::raise_fd_limit();
    if plan.subscribers + 64 > fd_limit {
        eprintln!(
            "holdfast bench fanout: {} subscribers need more descriptors than {fd_limit} (--procs spreads them)",
            plan.subscribers
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let cpu = find_server_cpu(args, &plan.servers, role);
    let broker_cpu = match (role.is_child(), args.get_one::<u32>("broker-pid")) {
        (false, Some(&pid)) => match ServerCpu::from_pid(pid) {
            Ok(cpu) => Some(cpu),
            Err(e) => {
                eprintln!("holdfast bench fanout: --broker-pid: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        _ => None,
    };
    let json = report::wants_json(args);
    // One thread: the client takes one core at most, leaving the rest to the server.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench fanout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut children = match role {
            Role::Parent { procs } => Some(Children::spawn(procs)?),
            Role::Child { .. } => {
                procs::ignore_stop_signals();
                None
            }
            Role::Alone => None,
        };
        let lines = run_workload(&plan, children.as_mut(), cpu.as_ref(), broker_cpu.as_ref()).await?;
        if let Some(children) = children {
            if !children.finish() {
                return Err("a child failed".to_string());
            }
        }
        Ok::<_, String>(lines)
    });
    let lines = match result {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("holdfast bench fanout: {e}");
            return ExitCode::FAILURE;
        }
    };
    if role.is_child() {
        return ExitCode::SUCCESS;
    }
    if json {
        lines.iter().for_each(report::print_json);
    } else {
        println!(
            "holdfast bench fanout: {} on {}, {} messages of {} B per phase at {}",
            plan.subscribe,
            targets::hosts(&plan.servers),
            plan.messages,
            plan.size,
            if plan.rate == 0 { "full speed (burst)".to_string() } else { format!("{}/s", plan.rate) }
        );
        let mut table = Table::new(&[
            "phase",
            "subs",
            "deliveries",
            "lost",
            "deliv/s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "pub/s",
            "B/deliv",
            "srv_cpu_s",
        ]);
        for line in &lines {
            table.row_of(
                line,
                &[
                    "phase",
                    "subscribers",
                    "deliveries",
                    "lost",
                    "deliveries_per_s",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "max_ms",
                    "published_per_s",
                    "bytes_per_delivery",
                    "server_cpu_s",
                ],
            );
        }
        table.print();
    }
    ExitCode::SUCCESS
}

/// How subscribers receive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// One streaming response (SSE, chunked NDJSON, forever-iframe): markers in its bytes.
    Stream,
    WebSocket,
    /// Long polls, each sent again at once after its answer.
    LongPoll,
    /// Short polls (`?transport=poll`, answered at once), one every `poll_interval`.
    Poll,
}

/// One workload: what to open, publish and measure. `subscribers` is this process's share.
#[derive(Clone)]
pub(super) struct Plan {
    /// Where subscribers connect, round-robin; the first also takes the publishes.
    pub servers: Arc<[Target]>,
    /// Source addresses for the subscribers, round-robin (none: the system's choice).
    pub binds: Arc<[IpAddr]>,
    /// Once subscribed: write the subscribed line here and wait until the file is removed.
    pub pause_file: Option<PathBuf>,
    pub subscribe: String,
    pub publish: String,
    pub mode: Mode,
    pub subscribers: usize,
    pub messages: u64,
    pub rate: u64,
    pub size: usize,
    pub phases: u64,
    pub concurrency: usize,
    /// Wait between the last subscriber opened and the first publish.
    pub settle: Duration,
    /// Long polls resume with Nchan's `If-Modified-Since` / `If-None-Match` instead of `?cursor=`.
    pub header_cursor: bool,
    /// `Mode::Poll`: the wait between one poll's answer and the next poll.
    pub poll_interval: Option<Duration>,
    pub role: Role,
}

/// What the subscribers record in the current phase, shared by all of them (one thread, so the
/// lock is uncontended).
#[derive(Default)]
struct Record {
    latency: Latency,
    /// `mono_ns` of the last delivery.
    last_delivery_ns: Option<u64>,
}

struct Shared {
    record: Mutex<Record>,
    deliveries: AtomicU64,
    /// Bytes read by every subscriber (heads, framing, heartbeats included).
    wire_bytes: AtomicU64,
}

/// One phase as seen by the subscribers of one process (or merged from several).
struct Collected {
    deliveries: u64,
    latency: Latency,
    last_delivery_ns: Option<u64>,
    wire_bytes: u64,
}

impl Shared {
    /// Starts a new phase: what was recorded so far is returned and forgotten.
    fn take(&self) -> Collected {
        let mut record = self.record.lock().unwrap();
        let taken = std::mem::take(&mut *record);
        Collected {
            deliveries: self.deliveries.swap(0, Ordering::Relaxed),
            latency: taken.latency,
            last_delivery_ns: taken.last_delivery_ns,
            wire_bytes: self.wire_bytes.swap(0, Ordering::Relaxed),
        }
    }
}

/// The subscribers of this process; dropping them closes their connections.
struct Subscribers {
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
    ready: u64,
    subscribe_seconds: f64,
}

/// Runs one workload: subscribe, then each phase publishes and measures. Alone, everything here;
/// as the parent of `children`, they subscribe and measure while this process publishes; as a
/// child (`plan.role`), subscribe and measure on the parent's `go`, printing a line per step.
/// Returns a line per phase (nothing in a child). `cpu`: the server's, read around each phase.
pub(super) async fn run_workload(
    plan: &Plan,
    mut children: Option<&mut Children>,
    cpu: Option<&ServerCpu>,
    broker_cpu: Option<&ServerCpu>,
) -> Result<Vec<Value>, String> {
    let child = plan.role.is_child();
    let label = format!("{} subscribers", plan.subscribe);
    let (local, ready, subscribe_seconds) = match children.as_deref_mut() {
        Some(children) => {
            let bar = report::progress(0, &format!("{label}: children subscribing"), false);
            let lines = children.lines()?;
            bar.finish_and_clear();
            (None, procs::sum(&lines, "subscribers"), procs::max_f64(&lines, "subscribe_seconds").unwrap_or(0.0))
        }
        None => {
            let bar = report::progress(plan.subscribers as u64, &label, child);
            let subscribers = open_all(plan, &bar).await?;
            bar.finish_and_clear();
            let (ready, seconds) = (subscribers.ready, subscribers.subscribe_seconds);
            (Some(subscribers), ready, seconds)
        }
    };
    if child {
        let subscribers = local.as_ref().expect("a child subscribes");
        subscribers.shared.take();
        report::print_json(
            &json!({"phase": "subscribed", "subscribers": ready, "subscribe_seconds": subscribe_seconds}),
        );
        for phase in 1..=plan.phases {
            if !procs::wait_go().await {
                return Err("the parent is gone".into());
            }
            let got = collect(&subscribers.shared, plan.messages * ready, &ProgressBar::hidden()).await;
            report::print_json(&json!({
                "phase": phase,
                "deliveries": got.deliveries,
                "last_delivery_ns": got.last_delivery_ns,
                "wire_bytes": got.wire_bytes,
                "hist": got.latency.to_json(),
            }));
        }
        return Ok(Vec::new());
    }
    if let Some(path) = &plan.pause_file {
        let line = json!({"phase": "subscribed", "subscribers": ready, "subscribe_seconds": subscribe_seconds});
        pause(path, &line).await?;
    }
    // Let the server register the last subscribers before publishing.
    tokio::time::sleep(plan.settle).await;
    let mut publisher = Publisher::connect(plan).await?;
    let mut seq = 0u64;
    let mut lines = Vec::new();
    for phase in 1..=plan.phases {
        if let Some(subscribers) = &local {
            subscribers.shared.take();
        }
        let cpu_before = cpu.map(ServerCpu::times);
        let broker_before = broker_cpu.map(ServerCpu::precise_seconds);
        let began_ns = mono_ns();
        let began = Instant::now();
        let bar = report::progress(plan.messages, &format!("phase {phase}: publishing"), false);
        for i in 0..plan.messages {
            if plan.rate > 0 {
                let due = began + Duration::from_secs_f64(i as f64 / plan.rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            seq += 1;
            publisher.publish(seq, mono_ns(), unix_micros()).await?;
            bar.inc(1);
        }
        // The rate the publisher kept: messages over the time from the first publish to the last
        // answer (at a set rate, the first message is due at once and the last at (M-1)/rate).
        let publish_span = began.elapsed();
        let want = plan.messages * ready;
        bar.set_length(want);
        bar.set_position(0);
        bar.set_message(format!("phase {phase}: deliveries"));
        let got = match (&local, children.as_deref_mut()) {
            (Some(subscribers), _) => collect(&subscribers.shared, want, &bar).await,
            (None, Some(children)) => {
                children.go()?;
                merge_collected(&children.lines()?)?
            }
            (None, None) => unreachable!("either subscribers here or children"),
        };
        bar.finish_and_clear();
        let server_cpu = match (cpu, cpu_before) {
            (Some(cpu), Some(before)) => Some(cpu.times().since(before)),
            _ => None,
        };
        let server_cpu_s = server_cpu.map(|spent| report::round3(spent.total()));
        let broker_cpu_s = match (broker_cpu, broker_before) {
            (Some(cpu), Some(before)) => Some(((cpu.precise_seconds() - before).max(0.0) * 1e6).round() / 1e6),
            _ => None,
        };
        let span_s = got.last_delivery_ns.map_or(0.0, |last| last.saturating_sub(began_ns) as f64 / 1e9);
        let mut line = json!({
            "phase": phase,
            "subscribers": ready,
            "messages": plan.messages,
            "rate": plan.rate,
            "deliveries": got.deliveries,
            "expected": want,
            "lost": want.saturating_sub(got.deliveries),
            "extra": got.deliveries.saturating_sub(want),
            "seconds": span_s,
            "deliveries_per_s": if span_s > 0.0 { got.deliveries as f64 / span_s } else { 0.0 },
            "subscribe_seconds": subscribe_seconds,
            "publish_seconds": publish_span.as_secs_f64(),
            "published_per_s": if plan.messages < 2 || publish_span.is_zero() {
                0.0
            } else {
                (plan.messages - 1) as f64 / publish_span.as_secs_f64()
            },
            "wire_bytes": got.wire_bytes,
            "bytes_per_delivery": got.wire_bytes.checked_div(got.deliveries),
            "server_cpu_s": server_cpu_s,
            // The kernel's part: on loopback it includes the reader's TCP input and wake-up.
            "server_system_cpu_s": server_cpu.map(|spent| report::round3(spent.system)),
            "server_cpu_us_per_delivery": match server_cpu_s {
                Some(s) if got.deliveries > 0 => json!(report::round3(s * 1e6 / got.deliveries as f64)),
                _ => Value::Null,
            },
        });
        line.as_object_mut().expect("object").extend(got.latency.summary_json(""));
        if let Role::Parent { procs } = plan.role {
            line["procs"] = json!(procs);
        }
        if plan.servers.len() > 1 {
            line["servers"] = json!(plan.servers.len());
        }
        if broker_cpu.is_some() {
            line["broker_cpu_s"] = json!(broker_cpu_s);
        }
        lines.push(line);
    }
    Ok(lines)
}

/// `--pause-file`: writes `line` to `path`, then waits until something removes the file.
async fn pause(path: &Path, line: &Value) -> Result<(), String> {
    std::fs::write(path, format!("{line}\n")).map_err(|e| format!("--pause-file {}: {e}", path.display()))?;
    while path.exists() {
        tokio::time::sleep(PAUSE_POLL).await;
    }
    Ok(())
}

/// The server subscriber `global` (numbered over all processes) connects to, and from where.
fn route(plan: &Plan, global: u64) -> (&Target, Option<IpAddr>) {
    let servers = plan.servers.len() as u64;
    let server = &plan.servers[(global % servers) as usize];
    let bind = (!plan.binds.is_empty()).then(|| plan.binds[((global / servers) % plan.binds.len() as u64) as usize]);
    (server, bind)
}

/// Opens this process's subscribers, `plan.concurrency` at a time, each then read by its own task.
async fn open_all(plan: &Plan, bar: &ProgressBar) -> Result<Subscribers, String> {
    let started = Instant::now();
    let shared =
        Arc::new(Shared { record: Mutex::default(), deliveries: AtomicU64::new(0), wire_bytes: AtomicU64::new(0) });
    let mut tasks = JoinSet::new();
    let mut opened = 0;
    let mut pending = JoinSet::new();
    let mut ready = 0;
    while opened < plan.subscribers || !pending.is_empty() {
        while opened < plan.subscribers && pending.len() < plan.concurrency.max(1) {
            let (server, bind) = route(plan, plan.role.global(opened as u64));
            let server = server.clone();
            pending.spawn(open_subscriber(plan.clone(), server, bind));
            opened += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok((stream, server)))) => {
                ready += 1;
                bar.inc(1);
                let shared = shared.clone();
                let plan = plan.clone();
                tasks.spawn(async move { receive(stream, plan, server, shared).await });
            }
            Some(Ok(Err(e))) => return Err(format!("a subscriber failed to open: {e}")),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    Ok(Subscribers { shared, _tasks: tasks, ready, subscribe_seconds: started.elapsed().as_secs_f64() })
}

/// Waits until `want` deliveries are in (or `DRAIN_WAIT` has passed), then 200 ms more for
/// stragglers (duplicates would show as more than wanted); what the phase recorded.
async fn collect(shared: &Shared, want: u64, bar: &ProgressBar) -> Collected {
    let deadline = Instant::now() + DRAIN_WAIT;
    loop {
        let got = shared.deliveries.load(Ordering::Relaxed);
        bar.set_position(got);
        if got >= want || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    shared.take()
}

/// One phase from the children's lines: counts added, histograms merged, the last delivery the
/// latest of theirs (one clock, CLOCK_MONOTONIC, for all processes).
fn merge_collected(lines: &[Value]) -> Result<Collected, String> {
    let mut latency = Latency::default();
    for line in lines {
        latency.add(&Latency::from_json(&line["hist"])?);
    }
    Ok(Collected {
        deliveries: procs::sum(lines, "deliveries"),
        latency,
        last_delivery_ns: lines.iter().filter_map(|l| l["last_delivery_ns"].as_u64()).max(),
        wire_bytes: procs::sum(lines, "wire_bytes"),
    })
}

async fn open_subscriber(plan: Plan, server: Target, bind: Option<IpAddr>) -> Result<(TcpStream, Target), String> {
    let mut stream = targets::connect(server.addr, bind).await.map_err(|e| format!("{}: {e}", server.host))?;
    let _ = stream.set_nodelay(true);
    if matches!(plan.mode, Mode::LongPoll | Mode::Poll) {
        return Ok((stream, server));
    }
    let request = match plan.mode {
        Mode::WebSocket => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            plan.subscribe, server.host
        ),
        _ => format!("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", plan.subscribe, server.host),
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
    Ok((stream, server))
}

/// Reads a subscriber's stream and records every marker found in it.
async fn receive(mut stream: TcpStream, plan: Plan, server: Target, shared: Arc<Shared>) {
    if matches!(plan.mode, Mode::LongPoll | Mode::Poll) {
        return long_poll(stream, plan, server, shared).await;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry = 0;
    loop {
        let n = match stream.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        shared.wire_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let end = carry + n;
        carry = scan(&buf[..end], mono_ns(), &shared);
        // Keep an incomplete marker at the end for the next read.
        buf.copy_within(end - carry..end, 0);
    }
}

/// Long polls (and short polls, `plan.poll_interval` apart): poll with the cursor, record what
/// comes back, poll again. The cursor is Holdfast's
/// (`"cursor":"…"` in the answer, sent back as `?cursor=`) or, with `header_cursor`, Nchan's
/// (`Last-Modified` and `Etag` of the answer, sent back as `If-Modified-Since` and
/// `If-None-Match`).
async fn long_poll(mut stream: TcpStream, plan: Plan, server: Target, shared: Arc<Shared>) {
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
        let request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n{fields}\r\n", server.host);
        if stream.write_all(request.as_bytes()).await.is_err() {
            return;
        }
        buf.clear();
        let body = loop {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    shared.wire_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            if let Some(body) = complete_body(&buf) {
                break body;
            }
        };
        scan(body, mono_ns(), &shared);
        if let Some(interval) = plan.poll_interval {
            tokio::time::sleep(interval).await;
        }
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

/// CLOCK_MONOTONIC in nanoseconds: one clock for the publisher and every subscriber, in this
/// process and in `--procs` children alike.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// Records each complete `hfb:<seq>:<ns>:` marker (`ns`: the publisher's `mono_ns`); returns how
/// many trailing bytes may hold the start of an incomplete one.
fn scan(bytes: &[u8], now_ns: u64, shared: &Shared) -> usize {
    let mut record = shared.record.lock().unwrap();
    let mut at = 0;
    let mut found = 0;
    // Set when the bytes end inside a marker: keep it all for the next read.
    let mut unfinished = None;
    while let Some(offset) = find(&bytes[at..], MARKER) {
        let start = at + offset;
        let fields = &bytes[start + MARKER.len()..];
        let mut parts = fields.splitn(3, |&b| b == b':');
        let (Some(_seq), Some(sent), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            unfinished = Some(bytes.len() - start);
            break;
        };
        let sent_ns: u64 = std::str::from_utf8(sent).ok().and_then(|s| s.parse().ok()).unwrap_or(now_ns);
        record.latency.record_us(now_ns.saturating_sub(sent_ns) / 1000);
        found += 1;
        at = start + MARKER.len();
    }
    // Counted even when the bytes end inside a marker (before this was so, a read ending inside
    // one left the markers before it out of the count, though not out of the histogram).
    if found > 0 {
        record.last_delivery_ns = Some(now_ns);
        shared.deliveries.fetch_add(found, Ordering::Relaxed);
    }
    // An unfinished marker may start in the last few bytes; keep them, but never a marker already
    // counted (`at` is past the last one's prefix).
    const KEEP: usize = 48;
    unfinished.unwrap_or_else(|| bytes.len() - at.max(bytes.len().saturating_sub(KEEP)))
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
    pub(super) async fn connect(plan: &Plan) -> Result<Publisher, String> {
        let server = &plan.servers[0];
        let stream = TcpStream::connect(server.addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Publisher { stream, path: plan.publish.clone(), host: server.host.clone(), size: plan.size })
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

    fn shared() -> Shared {
        Shared { record: Mutex::default(), deliveries: AtomicU64::new(0), wire_bytes: AtomicU64::new(0) }
    }

    #[test]
    fn a_read_ending_inside_a_marker_still_counts_the_ones_before_it() {
        let shared = shared();
        let bytes = b"data: hfb:1:100:7:xx\n\ndata: hfb:2:200:8:xx\n\ndata: hfb:3:30";
        let carry = scan(bytes, 1_000_000, &shared);
        assert_eq!(&bytes[bytes.len() - carry..], b"hfb:3:30");
        assert_eq!(shared.deliveries.load(Ordering::Relaxed), 2);
        assert_eq!(shared.take().latency.len(), 2);
    }

    #[test]
    fn every_marker_counts_once_whatever_the_read_sizes() {
        // The receive loop of `receive` over a stream cut into reads of every size up to 64 B.
        let mut stream = Vec::new();
        for seq in 1..=50u64 {
            stream.extend_from_slice(format!("data: hfb:{seq}:{}:1733:xxxxxxxx\n\n", 1000 + seq).as_bytes());
        }
        for size in 1..=64 {
            let shared = shared();
            let mut buf = vec![0u8; 256];
            let mut carry = 0;
            for piece in stream.chunks(size) {
                buf[carry..carry + piece.len()].copy_from_slice(piece);
                let end = carry + piece.len();
                carry = scan(&buf[..end], 5000, &shared);
                buf.copy_within(end - carry..end, 0);
            }
            assert_eq!(shared.deliveries.load(Ordering::Relaxed), 50, "reads of {size} B");
            assert_eq!(shared.take().latency.len(), 50, "reads of {size} B");
        }
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
