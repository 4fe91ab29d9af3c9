//! `holdfast bench`: clients that load a running server so it can be measured. The scripts in
//! `bench/` start the servers, run these clients and read the numbers; see `bench/README.md`.
//!
//! - `bench idle`: opens N keep-alive connections, one request each, then holds them idle
//!   (server memory per idle connection).
//! - `bench fanout`: N subscribers on one channel, messages at a rate or in a burst: deliveries/s,
//!   latency percentiles, loss.
//! - `bench hostile`: N WebSocket peers that never read and flood pings or deflate bombs, while
//!   probes measure an SSE subscriber's delivery delay, `/healthz` latency and the server's RSS.
//! - `bench publish`: M messages over N channels on C pipelined keep-alive connections (server
//!   memory per channel and per publish).
//! - `bench keepalive`: N requests at concurrency C over persistent connections, then with a
//!   connection per request: req/s, latency, and their ratio, against any HTTP/1.1 server.
//! - `bench transports`: the fan-out workload over each Holdfast transport in turn, side by side:
//!   deliveries/s, latency, bytes on the wire per message, server CPU.
//!
//! Shared by all: `report` (hdrhistogram latencies, the summary table or `--json` lines, the
//! progress bar on stderr), `procs` (`--procs P`: the bench spread over P processes and merged)
//! and `response` (reading HTTP/1.1 responses of any server).

mod fanout;
mod hostile;
mod idle;
mod keepalive;
mod procs;
mod publish;
mod report;
mod response;
mod server_cpu;
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
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match args.subcommand() {
        Some(("idle", args)) => idle::run(args),
        Some(("fanout", args)) => fanout::run(args),
        Some(("hostile", args)) => hostile::run(args),
        Some(("publish", args)) => publish::run(args),
        Some(("keepalive", args)) => keepalive::run(args),
        Some(("transports", args)) => transports::run(args),
        _ => ExitCode::from(EXIT_USAGE),
    }
}
