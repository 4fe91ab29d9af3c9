//! `holdfast bench sdk-memory`: one process holds N SDK subscriptions (`holdfast_client`
//! [`Subscriber`]s, SSE or WebSocket) to a running server and reports its own memory per
//! subscription: (RSS after − RSS before) / N, RSS from `/proc/self/smaps_rollup`, "before" taken
//! once one warm-up subscriber is connected (so the runtime, the first client and the allocator's
//! first arenas are not counted).
//!
//! The subscribers are polled together in one task (`SelectAll`), as an application holding many
//! would, so the figure is the SDK's: its state, sockets' user-space buffers, the HTTP client
//! (one per subscriber, or one shared [`HttpPool`] with `--shared-pool`), and any task the HTTP
//! stack spawns per connection. They are added `--concurrency` at a time, each batch connected
//! before the next (so the server's listen backlog never overflows), on distinct channels
//! (`{prefix}{i}`), then held `--settle` seconds while heartbeats flow, and measured. An
//! `https://` server makes them TLS links (one `TlsOptions` shared by all; `--cacert` for a
//! private CA), so rustls's per-connection state and buffers are in the figure.
//!
//! Prints a summary table at the end; with `--json`, one JSON line instead: `"phase":"held"` with
//! `connected`, `reconnects`, `rss_before_kb`, `rss_after_kb`, `bytes_per_subscription`, `fds`
//! (descriptors held) and `seconds` to connect. A progress bar on stderr counts the subscriptions
//! opened; it is made before the first RSS reading and kept until after the second, so what it
//! holds (its ticker thread) is in both and not in the difference.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use holdfast_client::{
    Event, HttpPool, State, Subscriber, TlsOptions, Transport, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_POOL_MAX_IDLE,
};
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::report::{self, Table};
use super::EXIT_USAGE;

/// Bound on one batch connecting; a slower batch fails the run.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn command() -> Command {
    let command = Command::new("sdk-memory")
        .about("Hold N SDK subscriptions in this process and report its RSS per subscription")
        .arg(
            Arg::new("server")
                .long("server")
                .value_name("URL")
                .required(true)
                .help("http://host:port or https://host:port"),
        )
        .arg(super::super::cacert_arg())
        .arg(
            Arg::new("subscribers")
                .long("subscribers")
                .value_name("N")
                .required(true)
                .value_parser(value_parser!(u64).range(1..))
                .help("subscriptions to hold"),
        )
        .arg(
            Arg::new("transport")
                .long("transport")
                .value_parser(["sse", "ws", "stream"])
                .default_value("sse")
                .help("transport of every subscription"),
        )
        .arg(
            Arg::new("shared-pool")
                .long("shared-pool")
                .action(ArgAction::SetTrue)
                .help("give every subscriber one shared HttpPool (default: each builds its own client)"),
        )
        .arg(
            Arg::new("concurrency")
                .long("concurrency")
                .value_name("C")
                .value_parser(value_parser!(u64).range(1..))
                .default_value("250")
                .help("subscriptions connecting at once"),
        )
        .arg(
            Arg::new("settle")
                .long("settle")
                .value_name("SECS")
                .value_parser(value_parser!(f64))
                .default_value("2")
                .help("seconds to hold them (heartbeats flowing) before reading RSS"),
        )
        .arg(Arg::new("prefix").long("prefix").value_name("P").default_value("sdkmem-").help("channel name prefix"));
    report::json_arg(command)
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let transport = match args.get_one::<String>("transport").map(String::as_str) {
        Some("ws") => Transport::Ws,
        Some("stream") => Transport::Stream,
        _ => Transport::Sse,
    };
    let plan = Plan {
        server: args.get_one::<String>("server").expect("required").clone(),
        n: *args.get_one::<u64>("subscribers").expect("required"),
        transport,
        shared: args.get_flag("shared-pool"),
        concurrency: *args.get_one::<u64>("concurrency").expect("default"),
        settle: Duration::from_secs_f64(args.get_one::<f64>("settle").expect("default").max(0.0)),
        prefix: args.get_one::<String>("prefix").expect("default").clone(),
        tls: match super::super::cacert_tls(args) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("holdfast bench sdk-memory: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench sdk-memory: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = report::progress(plan.n, &format!("subscriptions opened ({})", plan.transport.name()), false);
    let result = runtime.block_on(bench(&plan, &bar));
    bar.finish_and_clear();
    match result {
        Ok(line) => {
            if report::wants_json(args) {
                report::print_json(&line);
            } else {
                print_table(&plan, &line);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdfast bench sdk-memory: {e}");
            ExitCode::from(if e.starts_with("usage") { EXIT_USAGE } else { 1 })
        }
    }
}

struct Plan {
    server: String,
    n: u64,
    transport: Transport,
    shared: bool,
    concurrency: u64,
    settle: Duration,
    prefix: String,
    /// How `https://` servers are checked (`--cacert`).
    tls: TlsOptions,
}

/// The subscribers, polled together, and what they reported.
struct Held {
    all: SelectAll<Subscriber>,
    connected: u64,
    reconnects: u64,
    first_reconnect: Option<String>,
    /// Counts the subscriptions opened (the warm-up one not).
    bar: ProgressBar,
}

impl Held {
    /// Polls until `target` connections were reported, or `deadline`.
    async fn until_connected(&mut self, target: u64, deadline: Instant) -> Result<(), String> {
        while self.connected < target {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.all.next()).await {
                Err(_) => {
                    return Err(format!(
                        "only {} of {target} connected in time ({} reconnects; first: {:?})",
                        self.connected, self.reconnects, self.first_reconnect
                    ))
                }
                Ok(None) => return Err("every subscriber ended".into()),
                Ok(Some(event)) => self.note(event)?,
            }
        }
        Ok(())
    }

    fn note(&mut self, event: holdfast_client::Result<Event>) -> Result<(), String> {
        match event.map_err(|e| format!("a subscriber failed: {e}"))? {
            Event::State(State::Connected { .. }) => {
                self.connected += 1;
                self.bar.set_position(self.connected.saturating_sub(1));
            }
            Event::State(State::Reconnecting { cause, .. }) => {
                self.reconnects += 1;
                self.first_reconnect.get_or_insert(cause);
            }
            _ => {}
        }
        Ok(())
    }

    /// Keeps polling for `time` (heartbeats are read, the links stay healthy).
    async fn hold(&mut self, time: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + time;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                event = self.all.next() => match event {
                    Some(event) => self.note(event)?,
                    None => return Err("every subscriber ended".into()),
                },
            }
        }
    }
}

/// Holds the subscriptions and measures; the `held` line.
async fn bench(plan: &Plan, bar: &ProgressBar) -> Result<Value, String> {
    let pool = match plan.shared {
        true => Some(
            HttpPool::with_tls(DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_MAX_IDLE, &plan.tls)
                .map_err(|e| format!("usage: {e}"))?,
        ),
        false => None,
    };
    let build = |i: u64| {
        let mut builder = Subscriber::builder()
            .server(&plan.server)
            .channel(format!("{}{i}", plan.prefix))
            .transport(plan.transport)
            // One TlsOptions for all (shared roots and session cache), as an application would.
            .tls(&plan.tls)
            // No reconnection should happen; if one does, come back fast and count it.
            .backoff(Duration::from_millis(100), Duration::from_secs(2));
        if let Some(pool) = &pool {
            builder = builder.http_pool(pool);
        }
        builder.build().map_err(|e| format!("usage: {e}"))
    };
    let mut held = Held { all: SelectAll::new(), connected: 0, reconnects: 0, first_reconnect: None, bar: bar.clone() };
    // Warm-up: one subscriber connected before the first reading.
    held.all.push(build(u64::MAX)?);
    held.until_connected(1, Instant::now() + BATCH_TIMEOUT).await?;
    held.hold(Duration::from_millis(200)).await?;
    let before = rss_kb()?;
    let started = Instant::now();
    let mut added = 0;
    while added < plan.n {
        let batch = plan.concurrency.min(plan.n - added);
        for i in added..added + batch {
            held.all.push(build(i)?);
        }
        added += batch;
        held.until_connected(added + 1, Instant::now() + BATCH_TIMEOUT).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    held.hold(plan.settle).await?;
    let after = rss_kb()?;
    let per = (after.saturating_sub(before) * 1024) as f64 / plan.n as f64;
    Ok(json!({
        "phase": "held",
        "transport": plan.transport.name(),
        "pool": if plan.shared { "shared" } else { "per_subscriber" },
        "subscribers": plan.n,
        "connected": held.connected - 1,
        "reconnects": held.reconnects,
        "first_reconnect": held.first_reconnect,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_subscription": per.round(),
        "fds": fd_count(),
        "seconds": (seconds * 100.0).round() / 100.0,
    }))
}

fn print_table(plan: &Plan, line: &Value) {
    println!(
        "holdfast bench sdk-memory: {} {} subscriptions to {} in this process, {}",
        plan.n,
        plan.transport.name(),
        plan.server,
        if plan.shared { "one shared HttpPool" } else { "one HTTP client each" }
    );
    let keys = [
        "transport",
        "pool",
        "subscribers",
        "connected",
        "reconnects",
        "rss_before_kb",
        "rss_after_kb",
        "bytes_per_subscription",
        "fds",
        "seconds",
    ];
    let mut table = Table::new(&[
        "transport",
        "pool",
        "subs",
        "connected",
        "reconnects",
        "rss_before_kb",
        "rss_after_kb",
        "B/sub",
        "fds",
        "connect_s",
    ]);
    table.row_of(line, &keys);
    table.print();
    if let Some(cause) = line["first_reconnect"].as_str() {
        println!("first reconnection: {cause}");
    }
}

/// This process's resident set size in KiB (`Rss:` of `/proc/self/smaps_rollup`).
fn rss_kb() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").map_err(|e| format!("smaps_rollup: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Rss:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| "no Rss in /proc/self/smaps_rollup".into())
}

/// Descriptors this process holds.
fn fd_count() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}
