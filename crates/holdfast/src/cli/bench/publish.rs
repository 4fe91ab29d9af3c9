//! `holdfast bench publish`: publishes M small messages spread over N channels (message `i` goes
//! to channel `{prefix}{i mod N}`), over C keep-alive connections at once, each sending its
//! requests in pipelined batches. It loads the publish side of a server so its memory can be read
//! from outside (`bench/channels.sh`): many distinct channels, or many messages to one.
//!
//! Reports when done: messages answered 200, failures and the first one, seconds, messages per
//! second, and each publish's latency (from its batch's write to its answer; hdrhistogram):
//! a table, or with `--json` one JSON line. A progress bar runs on stderr meanwhile. (No
//! `--procs`: at most 1,024 connections, which one process holds.) The server must allow enough
//! requests per connection (`--keepalive-requests`): a connection the server closes counts its
//! unanswered requests as failed.
//!
//! `--rate R` paces the publishes (R a second over all connections: the batch that starts with
//! message `i` is written at `i / R` s), for the latency of publishes to a channel whose
//! subscribers could not take them at full speed; `--server a,b,c` spreads the connections over
//! several nodes of one cluster (connection `w` to server `w mod S`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use indicatif::ProgressBar;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::report::{self, Latency, Table};
use super::targets::{self, Target};
use super::EXIT_USAGE;

/// Bound on one batch's write and responses; a slower batch fails its connection.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

pub fn command() -> Command {
    let command = Command::new("publish")
        .about("Publish M messages over N channels (message i to channel PREFIX{i mod N}) on C connections")
        .arg(
            Arg::new("server")
                .long("server")
                .value_name("ADDR[,ADDR…]")
                .required(true)
                .help("host:port of the server; several: the connections spread over them round-robin"),
        )
        .arg(
            Arg::new("channels")
                .long("channels")
                .value_name("N")
                .required(true)
                .value_parser(value_parser!(u64).range(1..))
                .help("distinct channels"),
        )
        .arg(
            Arg::new("messages")
                .long("messages")
                .value_name("M")
                .value_parser(value_parser!(u64).range(1..))
                .help("messages in all (default: one per channel)"),
        )
        .arg(
            Arg::new("connections")
                .long("connections")
                .value_name("C")
                .value_parser(value_parser!(u64).range(1..=1024))
                .default_value("8")
                .help("keep-alive connections publishing at once"),
        )
        .arg(
            Arg::new("pipeline")
                .long("pipeline")
                .value_name("D")
                .value_parser(value_parser!(u64).range(1..=4096))
                .default_value("32")
                .help("requests written at once per connection before reading their answers"),
        )
        .arg(
            Arg::new("rate")
                .long("rate")
                .value_name("R")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("messages per second over all connections; 0 = each batch as soon as the last is answered"),
        )
        .arg(Arg::new("prefix").long("prefix").value_name("P").default_value("bench-").help("channel name prefix"))
        .arg(
            Arg::new("size")
                .long("size")
                .value_name("BYTES")
                .value_parser(value_parser!(u64).range(0..=65536))
                .default_value("16")
                .help("payload bytes per message"),
        );
    report::json_arg(command)
}

/// What to publish.
#[derive(Clone)]
struct Plan {
    /// Connection `w` publishes to server `w mod S`.
    servers: Vec<Target>,
    channels: u64,
    messages: u64,
    connections: u64,
    pipeline: u64,
    prefix: String,
    payload: Vec<u8>,
    /// Messages per second over all connections (0: unpaced).
    rate: u64,
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let servers = match targets::parse(args.get_one::<String>("server").expect("required")) {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("holdfast bench publish: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let channels = *args.get_one::<u64>("channels").expect("required");
    let plan = Plan {
        servers,
        channels,
        messages: args.get_one::<u64>("messages").copied().unwrap_or(channels),
        connections: *args.get_one::<u64>("connections").expect("default"),
        pipeline: *args.get_one::<u64>("pipeline").expect("default"),
        prefix: args.get_one::<String>("prefix").expect("default").clone(),
        payload: vec![b'x'; *args.get_one::<u64>("size").expect("default") as usize],
        rate: *args.get_one::<u64>("rate").expect("default"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench publish: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(bench(plan, report::wants_json(args)))
}

async fn bench(plan: Plan, json: bool) -> ExitCode {
    let started = Instant::now();
    let bar = report::progress(plan.messages, "publishing", json);
    let mut tasks = JoinSet::new();
    for worker in 0..plan.connections {
        let (plan, bar) = (plan.clone(), bar.clone());
        tasks.spawn(async move { publish_share(&plan, worker, started, &bar).await });
    }
    let (mut ok, mut first_error) = (0u64, None);
    let mut latency = Latency::default();
    while let Some(joined) = tasks.join_next().await {
        let (answered, error, part) = joined.unwrap_or_else(|e| (0, Some(format!("task: {e}")), Latency::default()));
        ok += answered;
        latency.add(&part);
        if let Some(error) = error {
            first_error.get_or_insert(error);
        }
    }
    bar.finish_and_clear();
    let failed = plan.messages - ok;
    let seconds = started.elapsed().as_secs_f64();
    let mut line = json!({
            "phase": "published",
            "server": targets::hosts(&plan.servers),
            "channels": plan.channels,
            "messages": plan.messages,
            "ok": ok,
            "failed": failed,
            "first_error": first_error,
            "seconds": (seconds * 10.0).round() / 10.0,
            "per_second": (ok as f64 / seconds).round(),
    });
    if plan.rate > 0 {
        line["rate"] = json!(plan.rate);
    }
    line.as_object_mut().expect("object").extend(latency.summary_json(""));
    if json {
        report::print_json(&line);
    } else {
        let keys =
            ["messages", "channels", "ok", "failed", "seconds", "per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms"];
        let mut table = Table::new(&[
            "messages", "channels", "ok", "failed", "seconds", "msg/s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
        ]);
        table.row_of(&line, &keys);
        println!(
            "holdfast bench publish: {} on {} connections, {} pipelined{}",
            targets::hosts(&plan.servers),
            plan.connections,
            plan.pipeline,
            if plan.rate > 0 { format!(", {}/s", plan.rate) } else { String::new() }
        );
        table.print();
        if let Some(error) = line["first_error"].as_str() {
            println!("first error: {error}");
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Publishes messages `worker`, `worker + C`, … on one connection (with `plan.rate`, each batch at
/// the time its first message is due after `started`); returns how many were answered 200, the
/// error that stopped it, if any, and their latencies.
async fn publish_share(
    plan: &Plan,
    worker: u64,
    started: Instant,
    bar: &ProgressBar,
) -> (u64, Option<String>, Latency) {
    let mut latency = Latency::default();
    let server = &plan.servers[(worker % plan.servers.len() as u64) as usize];
    let mut stream = match TcpStream::connect(server.addr).await {
        Ok(stream) => stream,
        Err(e) => return (0, Some(format!("connect: {e}")), latency),
    };
    let _ = stream.set_nodelay(true);
    let mine: Vec<u64> = (worker..plan.messages).step_by(plan.connections as usize).collect();
    let mut answered = 0;
    let mut requests = Vec::new();
    let mut input = Vec::with_capacity(64 * 1024);
    for batch in mine.chunks(plan.pipeline as usize) {
        if plan.rate > 0 {
            let due = started + Duration::from_secs_f64(batch[0] as f64 / plan.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        requests.clear();
        for i in batch {
            let channel = i % plan.channels;
            requests.extend_from_slice(
                format!(
                    "POST /pub/{}{channel} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
                    plan.prefix,
                    server.host,
                    plan.payload.len()
                )
                .as_bytes(),
            );
            requests.extend_from_slice(&plan.payload);
        }
        let exchange = async {
            let written = Instant::now();
            stream.write_all(&requests).await.map_err(|e| format!("write: {e}"))?;
            for _ in batch {
                read_ok_response(&mut stream, &mut input).await?;
                latency.record(written.elapsed());
                answered += 1;
            }
            Ok::<(), String>(())
        };
        let result = tokio::time::timeout(BATCH_TIMEOUT, exchange).await;
        bar.inc(batch.len() as u64);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (answered, Some(e), latency),
            Err(_) => return (answered, Some("a batch took longer than 30 s".into()), latency),
        }
    }
    (answered, None, latency)
}

/// Reads one complete `Content-Length` response from `stream` (bytes after it stay in `input`)
/// and checks that it is a 200.
async fn read_ok_response(stream: &mut TcpStream, input: &mut Vec<u8>) -> Result<(), String> {
    loop {
        if let Some(length) = response_length(input) {
            let ok = input.starts_with(b"HTTP/1.1 200 ");
            let text = String::from_utf8_lossy(&input[..length.min(input.len()).min(200)]).into_owned();
            input.drain(..length);
            return if ok { Ok(()) } else { Err(format!("answered {text:?}")) };
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection (is --keepalive-requests high enough?)".into());
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the first response in `buf` (head and body) once it is all there.
fn response_length(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head.split("\r\ncontent-length:").nth(1)?.split('\r').next()?.trim().parse().ok()?;
    (buf.len() >= head_end + length).then_some(head_end + length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_length_waits_for_the_whole_body() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{}\n";
        assert_eq!(response_length(one), Some(one.len()));
        assert_eq!(response_length(&one[..one.len() - 1]), None);
        assert_eq!(response_length(&one[..20]), None);
        let two = [&one[..], &one[..]].concat();
        assert_eq!(response_length(&two), Some(one.len()));
    }
}
