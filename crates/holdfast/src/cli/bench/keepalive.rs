//! `holdfast bench keepalive`: N plain `GET PATH HTTP/1.1` requests at concurrency C over
//! persistent connections, then N more with a new TCP connection per request (`Connection:
//! close`); requests/s and latency percentiles of each mode, and the ratio keep-alive / close.
//! It works against any HTTP/1.1 server (the bench scripts run it against nginx too).
//!
//! Each of the C workers sends one request, reads the whole response (`response.rs`:
//! Content-Length, chunked or until close), and only then sends the next: no pipelining. A keep-alive worker
//! keeps its connection while the server does (a response with `Connection: close`, or the
//! server's close, makes it reconnect, counted as `reconnects`); a close worker connects, sends
//! the request with `Connection: close`, reads the answer and drops the socket. A latency runs
//! from just before the request is written (close: before `connect`) to the end of the response.
//! Responses that are not 2xx count as `non_2xx`; requests that fail (timeout, reset, a bad
//! response) as `errors`, each followed by a new connection.
//!
//! With `--tls` every connection speaks TLS (rustls, ring, ALPN http/1.1) and close mode pays a
//! full handshake per request (the client resumes no session), so the ratio shows what
//! keep-alive saves over TLS; the handshake is inside the first request's latency. The
//! certificate is checked against `--cacert` (else the web PKI roots), or not at all with
//! `--insecure-skip-verify`.
//!
//! The client runs on one thread by default (`--threads`), like `wrk -t1`, so on a 2-core machine
//! the server keeps the other core. `bench/keepalive.sh` runs wrk on the same server in the same
//! run to check that this client is not the bottleneck (bench/RESULTS.md).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::procs::{self, Children, Role};
use super::report::{self, Latency, Table};
use super::response::Conn;
use super::tls::{self, Stream};
use super::EXIT_USAGE;

/// The modes, in the order they run by default.
const MODES: [&str; 2] = ["keepalive", "close"];
/// Progress-bar updates are batched: one atomic add per this many requests of a worker.
const PROGRESS_BATCH: u64 = 64;

pub fn command() -> Command {
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_parser(value_parser!(u64).range(1..)).default_value(default).help(help)
    };
    let command = Command::new("keepalive")
        .about("N GET requests at concurrency C, keep-alive then Connection: close; req/s, latency, ratio")
        .arg(Arg::new("server").long("server").value_name("ADDR").required(true).help("host:port"))
        .arg(Arg::new("path").long("path").value_name("PATH").default_value("/healthz").help("the path to GET"))
        .arg(number("requests", "100000", "requests per mode"))
        .arg(number("concurrency", "50", "connections (keep-alive) or requests (close) in flight at once"))
        .arg(number("threads", "1", "client threads (tokio workers)"))
        .arg(number("timeout-ms", "10000", "bound on one request; a slower one counts as an error"))
        .arg(
            Arg::new("modes")
                .long("modes")
                .value_name("LIST")
                .value_delimiter(',')
                .value_parser(MODES)
                .default_value("keepalive,close")
                .help("modes to run, in order"),
        );
    procs::args(report::json_arg(tls::args(command)))
}

/// What to send and how.
#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    server: String,
    path: String,
    requests: u64,
    concurrency: u64,
    timeout: Duration,
    modes: Vec<String>,
    role: Role,
    /// `--tls`: the client configuration, and the name the certificate must carry.
    tls: Option<Arc<rustls::ClientConfig>>,
    name: rustls::pki_types::ServerName<'static>,
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required").clone();
    let Some(addr) = server.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("holdfast bench keepalive: cannot resolve --server {server}");
        return ExitCode::from(EXIT_USAGE);
    };
    let get = |name: &str| *args.get_one::<u64>(name).expect("default");
    let role = Role::of(args);
    let (tls, name) = match tls::config(args).and_then(|tls| Ok((tls, tls::server_name(&server)?))) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("holdfast bench keepalive: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let plan = Plan {
        addr,
        server,
        path: args.get_one::<String>("path").expect("default").clone(),
        requests: role.share(get("requests")),
        concurrency: role.share(get("concurrency")).max(1),
        timeout: Duration::from_millis(get("timeout-ms")),
        modes: args.get_many::<String>("modes").expect("default").cloned().collect(),
        role,
        tls,
        name,
    };
    let json = report::wants_json(args);
    let threads = get("threads") as usize;
    holdfast_server::raise_fd_limit();
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench keepalive: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lines = match runtime.block_on(bench(&plan)) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("holdfast bench keepalive: {e}");
            return ExitCode::FAILURE;
        }
    };
    if plan.role.is_child() {
        return ExitCode::SUCCESS;
    }
    let summary = summary_line(&lines);
    if json {
        for line in &lines {
            report::print_json(line);
        }
        report::print_json(&summary);
    } else {
        print_table(&plan, &lines, &summary);
    }
    let failed = lines.iter().any(|l| l["errors"].as_u64() != Some(0) || l["non_2xx"].as_u64() != Some(0));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every mode (alone, as a child, or as the parent of children); the lines of the modes,
/// merged in a parent. A child prints its lines (with histograms) as it goes.
async fn bench(plan: &Plan) -> Result<Vec<Value>, String> {
    let mut lines = Vec::new();
    match plan.role {
        Role::Parent { procs } => {
            let mut children = Children::spawn(procs)?;
            for mode in &plan.modes {
                let bar = report::progress(0, &format!("{mode} ({procs} processes)"), false);
                children.go()?;
                let parts = children.lines()?;
                bar.finish_and_clear();
                lines.push(merge(mode, &parts)?);
            }
            if !children.finish() {
                return Err("a child failed".into());
            }
        }
        Role::Alone | Role::Child { .. } => {
            if plan.role.is_child() {
                procs::ignore_stop_signals();
            }
            for mode in &plan.modes {
                if plan.role.is_child() && !procs::wait_go().await {
                    return Err("the parent is gone".into());
                }
                let bar = report::progress(plan.requests, mode, plan.role.is_child());
                let result = run_mode(plan, mode == "keepalive", &bar).await;
                bar.finish_and_clear();
                let line = result.line(mode, plan);
                if plan.role.is_child() {
                    let mut with_hist = line.clone();
                    with_hist["hist"] = result.latency.to_json();
                    report::print_json(&with_hist);
                }
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

/// One mode's counts, over all workers.
#[derive(Default)]
struct Outcome {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    first_error: Option<String>,
    reconnects: u64,
    wire_bytes: u64,
    latency: Latency,
    seconds: f64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.reconnects += other.reconnects;
        self.wire_bytes += other.wire_bytes;
        self.latency.add(&other.latency);
    }

    fn line(&self, mode: &str, plan: &Plan) -> Value {
        let done = self.ok + self.non_2xx;
        let mut line = json!({
            "phase": mode,
            "mode": mode,
            "server": plan.server,
            "path": plan.path,
            "tls": plan.tls.is_some(),
            "requests": done + self.errors,
            "concurrency": plan.concurrency,
            "ok": self.ok,
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "first_error": self.first_error,
            "reconnects": self.reconnects,
            "seconds": report::round3(self.seconds),
            "req_per_s": report::per_second(done as f64, self.seconds),
            "bytes_per_response": self.wire_bytes.checked_div(done).unwrap_or(0),
            "wire_bytes": self.wire_bytes,
        });
        line.as_object_mut().expect("object").extend(self.latency.summary_json(""));
        line
    }
}

/// Runs `plan.requests` requests of one mode on `plan.concurrency` workers.
async fn run_mode(plan: &Plan, keep_alive: bool, bar: &ProgressBar) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let request: Arc<[u8]> = if keep_alive {
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", plan.path, plan.server)
    } else {
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", plan.path, plan.server)
    }
    .into_bytes()
    .into();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.min(plan.requests) {
        let (issued, request, bar) = (issued.clone(), request.clone(), bar.clone());
        let to = Target { addr: plan.addr, tls: plan.tls.clone(), name: plan.name.clone() };
        let (total, timeout) = (plan.requests, plan.timeout);
        workers.spawn(async move { worker(&to, &request, keep_alive, total, timeout, &issued, &bar).await });
    }
    let mut outcome = Outcome::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(part) => outcome.add(part),
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(format!("worker: {e}"));
            }
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// Where a worker connects, and how.
struct Target {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    name: rustls::pki_types::ServerName<'static>,
}

/// One worker: takes requests from the shared count until `total` have been issued.
async fn worker(
    to: &Target,
    request: &[u8],
    keep_alive: bool,
    total: u64,
    timeout: Duration,
    issued: &AtomicU64,
    bar: &ProgressBar,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut conn: Option<Conn<Stream>> = None;
    let mut opened_before = false;
    let mut unreported = 0;
    while issued.fetch_add(1, Ordering::Relaxed) < total {
        let began = Instant::now();
        let exchange = async {
            if conn.is_none() {
                let tcp = TcpStream::connect(to.addr).await.map_err(|e| format!("connect: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let stream = Stream::over(tcp, to.tls.as_ref(), &to.name).await?;
                if keep_alive && opened_before {
                    outcome.reconnects += 1;
                }
                opened_before = true;
                conn = Some(Conn::new(stream));
            }
            let c = conn.as_mut().expect("connected above");
            c.stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
            // A TLS stream buffers what it encrypts until flushed; plain TCP has nothing to flush.
            c.stream.flush().await.map_err(|e| format!("write: {e}"))?;
            c.read_response(false).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => {
                outcome.latency.record(began.elapsed());
                outcome.wire_bytes += answer.wire_bytes;
                if (200..300).contains(&answer.status) {
                    outcome.ok += 1;
                } else {
                    outcome.non_2xx += 1;
                }
                if !keep_alive || !answer.keep_alive {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(e);
                conn = None;
            }
            Err(_) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(format!("no response within {timeout:?}"));
                conn = None;
            }
        }
        unreported += 1;
        if unreported == PROGRESS_BATCH {
            bar.inc(unreported);
            unreported = 0;
        }
    }
    bar.inc(unreported);
    outcome
}

/// One mode's line from the children's: counts added, histograms merged, seconds the longest
/// child's (they start together on the parent's `go`).
fn merge(mode: &str, parts: &[Value]) -> Result<Value, String> {
    let mut latency = Latency::default();
    for part in parts {
        latency.add(&Latency::from_json(&part["hist"])?);
    }
    let seconds = procs::max_f64(parts, "seconds").unwrap_or(0.0);
    let done = procs::sum(parts, "ok") + procs::sum(parts, "non_2xx");
    let wire_bytes = procs::sum(parts, "wire_bytes");
    let mut line = json!({
        "phase": mode,
        "mode": mode,
        "server": procs::first(parts, "server"),
        "path": procs::first(parts, "path"),
        "tls": procs::first(parts, "tls"),
        "procs": parts.len(),
        "requests": procs::sum(parts, "requests"),
        "concurrency": procs::sum(parts, "concurrency"),
        "ok": procs::sum(parts, "ok"),
        "non_2xx": procs::sum(parts, "non_2xx"),
        "errors": procs::sum(parts, "errors"),
        "first_error": procs::first(parts, "first_error"),
        "reconnects": procs::sum(parts, "reconnects"),
        "seconds": seconds,
        "req_per_s": report::per_second(done as f64, seconds),
        "bytes_per_response": wire_bytes.checked_div(done).unwrap_or(0),
        "wire_bytes": wire_bytes,
    });
    line.as_object_mut().expect("object").extend(latency.summary_json(""));
    Ok(line)
}

/// The last line: keep-alive req/s over close req/s (`null` unless both modes ran).
fn summary_line(lines: &[Value]) -> Value {
    let rate = |mode: &str| lines.iter().find(|l| l["mode"] == mode).and_then(|l| l["req_per_s"].as_f64());
    let ratio = match (rate("keepalive"), rate("close")) {
        (Some(k), Some(c)) if c > 0.0 => Some((k / c * 100.0).round() / 100.0),
        _ => None,
    };
    let tls = lines.first().map_or(Value::Null, |l| l["tls"].clone());
    json!({"phase": "summary", "tls": tls, "keepalive_req_per_s": rate("keepalive"), "close_req_per_s": rate("close"),
           "ratio_keepalive_close": ratio})
}

fn print_table(plan: &Plan, lines: &[Value], summary: &Value) {
    let keys = [
        "mode",
        "requests",
        "errors",
        "non_2xx",
        "req_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "reconnects",
        "bytes_per_response",
    ];
    let mut table = Table::new(&[
        "mode",
        "requests",
        "errors",
        "non_2xx",
        "req/s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "reconnects",
        "B/resp",
    ]);
    for line in lines {
        table.row_of(line, &keys);
    }
    println!(
        "holdfast bench keepalive: GET {} on {}{}, concurrency {}{}",
        plan.path,
        plan.server,
        if plan.tls.is_some() { " over TLS (close: a full handshake per request)" } else { "" },
        lines.first().map_or(Value::Null, |l| l["concurrency"].clone()),
        match plan.role {
            Role::Parent { procs } => format!(", {procs} processes"),
            _ => String::new(),
        }
    );
    table.print();
    match summary["ratio_keepalive_close"].as_f64() {
        Some(ratio) => println!("keep-alive/close: {ratio:.2}x"),
        None => println!("keep-alive/close: - (needs both modes)"),
    }
    if let Some(error) = lines.iter().find_map(|l| l["first_error"].as_str()) {
        println!("first error: {error}");
    }
}
