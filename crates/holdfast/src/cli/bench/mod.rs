//! `holdfast bench`: clients that load a running server so it can be measured. The scripts in
//! `bench/` start the servers, run these clients and read the numbers; see `bench/README.md`.
//!
//! - `bench idle`: opens N keep-alive connections, one request each, then holds them idle
//!   (server memory per idle connection).
//! - `bench fanout`: N subscribers on one channel (of one server, or spread over the nodes of a
//!   cluster), messages at a rate or in a burst: deliveries/s, latency percentiles, loss.
//! - `bench hostile`: N WebSocket peers that never read and flood pings or deflate bombs, while
//!   probes measure an SSE subscriber's delivery delay, `/healthz` latency and the server's RSS.
//! - `bench publish`: M messages over N channels on C pipelined keep-alive connections (server
//!   memory per channel and per publish; publish latency and publishes/s, at a set rate or not).
//! - `bench keepalive`: N requests at concurrency C over persistent connections, then with a
//!   connection per request: req/s, latency, and their ratio, against any HTTP/1.1 server.
//! - `bench transports`: the fan-out workload over each Holdfast transport in turn, side by side:
//!   deliveries/s, latency, bytes on the wire per message, server CPU.
//! - `bench sdk-memory`: N SDK subscriptions (SSE or WebSocket) in this process: client memory per
//!   subscription, with one HTTP client each or one shared `HttpPool`.
//! - `bench publisher`: the SDK `Publisher`, C publishes at once over its keep-alive pool and with
//!   a new connection per publish: publishes/s of each and the ratio.
//! - `bench failover`: starts two servers, a `Subscriber` on both, and kills (or freezes) the one
//!   it is on K times: time from the kill to the first message from the other.
//!
//! Shared by all: `report` (hdrhistogram latencies, the summary table at the end or `--json`
//! lines, the progress bar on stderr), `procs` (`--procs P`: the bench spread over P processes
//! and merged; not the SDK benches), `response` (reading HTTP/1.1 responses of any server) and
//! `targets` (`--server a,b,c` and `--bind`: connections spread over servers and source addresses).

mod failover;
mod fanout;
mod hostile;
mod idle;
mod keepalive;
mod procs;
mod publish;
mod publisher;
mod report;
mod response;
mod sdk_memory;
mod server_cpu;
mod targets;
mod tls;
mod transports;

use std::process::ExitCode;

use clap::{ArgMatches, Command};

use super::EXIT_USAGE;

pub fn command() -> Command {
    Command::new("bench")
        .about("Benchmark clients for measuring a running server (see bench/README.md)")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(idle::command())
        .subcommand(fanout::command())
        .subcommand(hostile::command())
        .subcommand(publish::command())
        .subcommand(keepalive::command())
        .subcommand(transports::command())
        .subcommand(sdk_memory::command())
        .subcommand(publisher::command())
        .subcommand(failover::command())
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match args.subcommand() {
        Some(("idle", args)) => idle::run(args),
        Some(("fanout", args)) => fanout::run(args),
        Some(("hostile", args)) => hostile::run(args),
        Some(("publish", args)) => publish::run(args),
        Some(("keepalive", args)) => keepalive::run(args),
        Some(("transports", args)) => transports::run(args),
        Some(("sdk-memory", args)) => sdk_memory::run(args),
        Some(("publisher", args)) => publisher::run(args),
        Some(("failover", args)) => failover::run(args),
        _ => ExitCode::from(EXIT_USAGE),
    }
}
