//! `holdfast bench failover`: how long an SDK [`Subscriber`] takes to move to the other server
//! when the one it is on dies.
//!
//! It starts two servers itself (`holdfast serve` from this executable, or `--bin`, on two free
//! ports of 127.0.0.1, with `--heartbeat` as their `heartbeat_interval`), and one subscriber
//! with both in its list. Each round: publish a message to the server the subscriber is on and
//! wait for it (so the link is healthy and the backoff starts afresh), then stop that server and
//! start the clock, publish a tagged message to the other server every `--publish-every` until
//! the subscriber yields one, stop the clock, and start the stopped server again on its port. The
//! subscriber now sits on the other server, which is the one stopped next round.
//!
//! Two ways to stop a server (`--mode`):
//! - `kill`: SIGKILL. The kernel closes its sockets (FIN, or RST for unread data), so the
//!   subscriber sees the end at once: the time is mostly the first backoff draw, in
//!   `[0, backoff_base]`, plus a connect.
//! - `stop`: SIGSTOP. The server's sockets stay open and its kernel still acknowledges, but no
//!   byte comes any more, like a half-open link or a NAT that forgot the flow: only the heartbeat
//!   watch (`heartbeat × k` without a byte) can notice. (The testkit's freezing proxy would do
//!   the same; it is a dev-only crate, and a frozen process is the same silence with no relay in
//!   the path.) The stopped server is then killed and restarted.
//!
//! The times go into an HDR histogram (`report::Latency`). Prints a summary table at the end
//! (p50/p90/p99/max of the failover times and `bound`, the goal); with `--json`, one JSON line
//! per round as it ends (`"phase":"round"`, `ms` from the stop to the message) and a summary
//! (`"phase":"failover"`: `median_ms` (the p50), `p50_ms`, `p90_ms`, `p99_ms`, `max_ms`, and
//! `bound_ms` = heartbeat × k + backoff base, the goal). A progress bar on stderr counts the
//! servers stopped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use futures_util::StreamExt;
use holdfast_client::{Event, Publisher, State, Subscriber, Transport};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::report::{self, Latency, Table};
use super::EXIT_USAGE;

/// Bound on one failover; a slower one fails the run.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a server starting to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel the subscriber follows.
const CHANNEL: &str = "failover";

pub fn command() -> Command {
    let command = Command::new("failover")
        .about("Start two servers and a Subscriber on both; stop the one it is on K times and time the failover")
        .arg(
            Arg::new("kills")
                .long("kills")
                .value_name("K")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("20")
                .help("servers stopped, one per round"),
        )
        .arg(
            Arg::new("mode")
                .long("mode")
                .value_parser(["kill", "stop"])
                .default_value("kill")
                .help("kill: SIGKILL (the kernel closes the sockets); stop: SIGSTOP (silence)"),
        )
        .arg(
            Arg::new("transport")
                .long("transport")
                .value_parser(["ws", "sse", "stream"])
                .default_value("ws")
                .help("the subscriber's transport"),
        )
        .arg(
            Arg::new("heartbeat")
                .long("heartbeat")
                .value_name("SECS")
                .value_parser(value_parser!(f64))
                .default_value("1")
                .help("the servers' heartbeat_interval"),
        )
        .arg(
            Arg::new("k")
                .long("k")
                .value_name("K")
                .value_parser(value_parser!(f64))
                .default_value("2")
                .help("the subscriber's heartbeat factor"),
        )
        .arg(
            Arg::new("backoff-base")
                .long("backoff-base")
                .value_name("SECS")
                .value_parser(value_parser!(f64))
                .default_value("1")
                .help("the subscriber's first backoff window (the SDK's default is 1 s)"),
        )
        .arg(
            Arg::new("publish-every")
                .long("publish-every")
                .value_name("MS")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("5")
                .help("period of the publishes to the other server while waiting (the resolution)"),
        )
        .arg(
            Arg::new("bin")
                .long("bin")
                .value_name("PATH")
                .help("the holdfast binary to serve with (default: this one)"),
        );
    report::json_arg(command)
}

struct Plan {
    kills: u64,
    silent: bool,
    transport: Transport,
    heartbeat: Duration,
    k: f64,
    backoff_base: Duration,
    publish_every: Duration,
    bin: PathBuf,
    json: bool,
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let secs = |name: &str| Duration::from_secs_f64(args.get_one::<f64>(name).expect("default").max(0.0));
    let bin = match args.get_one::<String>("bin") {
        Some(bin) => PathBuf::from(bin),
        None => match std::env::current_exe() {
            Ok(bin) => bin,
            Err(e) => {
                eprintln!("holdfast bench failover: cannot find this executable: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let plan = Plan {
        kills: *args.get_one::<u64>("kills").expect("default"),
        silent: args.get_one::<String>("mode").map(String::as_str) == Some("stop"),
        transport: match args.get_one::<String>("transport").map(String::as_str) {
            Some("sse") => Transport::Sse,
            Some("stream") => Transport::Stream,
            _ => Transport::Ws,
        },
        heartbeat: secs("heartbeat"),
        k: *args.get_one::<f64>("k").expect("default"),
        backoff_base: secs("backoff-base"),
        publish_every: Duration::from_millis(*args.get_one::<u64>("publish-every").expect("default")),
        bin,
        json: report::wants_json(args),
    };
    if plan.heartbeat < Duration::from_millis(100) || plan.k < 1.0 {
        eprintln!("holdfast bench failover: --heartbeat must be at least 0.1 and --k at least 1");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench failover: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut servers = Vec::new();
    let label = format!("{}s ({})", if plan.silent { "stop" } else { "kill" }, plan.transport.name());
    let bar = report::progress(plan.kills, &label, false);
    let result = runtime.block_on(bench(&plan, &mut servers, &bar));
    bar.finish_and_clear();
    for server in &mut servers {
        server.stop();
    }
    match result {
        Ok(summary) => {
            if plan.json {
                report::print_json(&summary);
            } else {
                print_table(&plan, &summary);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdfast bench failover: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One server process this bench started.
struct Server {
    addr: SocketAddr,
    child: Option<Child>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts `holdfast serve` on this server's address and waits until it answers.
    async fn start(&mut self, plan: &Plan) -> Result<(), String> {
        let heartbeat = format!("{}ms", plan.heartbeat.as_millis());
        let child = std::process::Command::new(&plan.bin)
            .args(["serve", "--listen", &self.addr.to_string(), "--heartbeat-interval", &heartbeat])
            .args(["--heartbeat-min", &heartbeat, "--shutdown-timeout", "1s"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", plan.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !healthy(self.addr).await {
            if Instant::now() > deadline {
                return Err(format!("the server on {} does not answer", self.addr));
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("the server on {} exited: {status}", self.addr));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGKILL or SIGSTOP.
    fn signal(&mut self, silent: bool) {
        let Some(child) = self.child.as_mut() else { return };
        if silent {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet (no reuse).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGSTOP) };
        } else {
            let _ = child.kill();
        }
    }

    /// SIGKILL (a stopped process too) and reap.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /healthz` answered 200.
async fn healthy(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/1.1 200")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

/// A free port of 127.0.0.1 (bound then released).
fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| format!("local_addr: {e}"))
}

/// Runs the rounds (printing each one's JSON line with `--json`); the summary line.
async fn bench(plan: &Plan, servers: &mut Vec<Server>, bar: &ProgressBar) -> Result<Value, String> {
    for _ in 0..2 {
        servers.push(Server { addr: free_addr()?, child: None });
    }
    for server in servers.iter_mut() {
        server.start(plan).await?;
    }
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let publishers = urls
        .iter()
        .map(|url| Publisher::builder().server(url).timeout(Duration::from_secs(2)).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let subscriber = Subscriber::builder()
        .servers(&urls)
        .channel(CHANNEL)
        .transport(plan.transport)
        .heartbeat_factor(plan.k)
        .backoff(plan.backoff_base, plan.backoff_base * 8)
        .build()
        .map_err(|e| e.to_string())?;
    // The subscriber is polled by its own task, which timestamps what it yields.
    let (tx, mut events) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut subscriber = subscriber;
        while let Some(event) = subscriber.next().await {
            if tx.send((Instant::now(), event)).is_err() {
                break;
            }
        }
    });
    let mut current: Option<usize> = None;
    let mut times = Latency::default();
    let mut reconnects = 0u64;
    for round in 0..plan.kills {
        // 1. The subscriber is on `on`, healthy: a message published there arrives.
        let warm = format!("warm-{round}");
        let on = loop {
            if let Some(on) = current {
                let _ = publishers[on].publish(CHANNEL, warm.clone(), None).await;
            }
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(wait);
            let mut got = false;
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    event = events.recv() => {
                        let (_, event) = event.ok_or("the subscriber ended")?;
                        match event.map_err(|e| format!("the subscriber failed: {e}"))? {
                            Event::State(State::Connected { server, .. }) => {
                                current = urls.iter().position(|u| *u == server);
                            }
                            Event::State(State::Reconnecting { .. }) => reconnects += 1,
                            Event::Message(m) if m.text() == Some(warm.as_str()) => got = true,
                            _ => {}
                        }
                    }
                }
            }
            if let (true, Some(on)) = (got, current) {
                break on;
            }
        };
        // 2. Stop it; publish to the other until the subscriber yields one of those.
        let other = 1 - on;
        let tag = format!("after-{round}");
        servers[on].signal(plan.silent);
        let stopped = Instant::now();
        let publisher = &publishers[other];
        let mut tick = tokio::time::interval(plan.publish_every);
        let deadline = tokio::time::sleep(ROUND_TIMEOUT);
        tokio::pin!(deadline);
        let arrived = loop {
            tokio::select! {
                _ = &mut deadline => return Err(format!("round {round}: no message from the other server within {ROUND_TIMEOUT:?}")),
                _ = tick.tick() => {
                    // Bounded by the publisher's timeout; a refused one (the subscriber's own
                    // reconnection racing) is simply tried again next tick.
                    let _ = tokio::time::timeout(plan.publish_every.max(Duration::from_millis(50)), publisher.publish(CHANNEL, tag.clone(), None)).await;
                }
                event = events.recv() => {
                    let (at, event) = event.ok_or("the subscriber ended")?;
                    match event.map_err(|e| format!("the subscriber failed: {e}"))? {
                        Event::State(State::Connected { server, .. }) => current = urls.iter().position(|u| *u == server),
                        Event::State(State::Reconnecting { .. }) => reconnects += 1,
                        Event::Message(m) if m.text() == Some(tag.as_str()) => break at,
                        _ => {}
                    }
                }
            }
        };
        let time = arrived.duration_since(stopped);
        times.record(time);
        if plan.json {
            let ms = time.as_secs_f64() * 1000.0;
            let line = json!({ "phase": "round", "round": round, "from": urls[on], "to": urls[other], "ms": (ms * 10.0).round() / 10.0 });
            bar.suspend(|| report::print_json(&line));
        }
        bar.inc(1);
        // 3. Bring the stopped server back on its port for the next round.
        servers[on].stop();
        servers[on].start(plan).await?;
    }
    reader.abort();
    let bound = plan.heartbeat.mul_f64(plan.k) + plan.backoff_base;
    let mut summary = json!({
        "phase": "failover",
        "mode": if plan.silent { "stop" } else { "kill" },
        "transport": plan.transport.name(),
        "kills": times.len(),
        "heartbeat_ms": plan.heartbeat.as_millis() as u64,
        "k": plan.k,
        "backoff_base_ms": plan.backoff_base.as_millis() as u64,
        "median_ms": times.percentile_ms(50.0),
        "bound_ms": bound.as_millis() as u64,
        "reconnects": reconnects,
    });
    summary.as_object_mut().expect("object").extend(times.summary_json(""));
    Ok(summary)
}

fn print_table(plan: &Plan, summary: &Value) {
    println!(
        "holdfast bench failover: the server in use {} {} times, {} subscriber, heartbeat {} ms, k {}, \
         first backoff window {} ms",
        if plan.silent { "stopped (SIGSTOP)" } else { "killed (SIGKILL)" },
        plan.kills,
        plan.transport.name(),
        plan.heartbeat.as_millis(),
        plan.k,
        plan.backoff_base.as_millis(),
    );
    let mut table =
        Table::new(&["mode", "transport", "kills", "p50_ms", "p90_ms", "p99_ms", "max_ms", "bound_ms", "reconnects"]);
    table.row_of(
        summary,
        &["mode", "transport", "kills", "p50_ms", "p90_ms", "p99_ms", "max_ms", "bound_ms", "reconnects"],
    );
    table.print();
}
