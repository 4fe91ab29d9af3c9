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

mod fanout;
mod hostile;
mod idle;
mod publish;

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
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match args.subcommand() {
        Some(("idle", args)) => idle::run(args),
        Some(("fanout", args)) => fanout::run(args),
        Some(("hostile", args)) => hostile::run(args),
        Some(("publish", args)) => publish::run(args),
        _ => ExitCode::from(EXIT_USAGE),
    }
}
