//! `holdfast bench`: clients that load a running server so it can be measured. The scripts in
//! `bench/` start the servers, run these clients and read the numbers; see `bench/README.md`.
//!
//! - `bench idle`: opens N keep-alive connections, one request each, then holds them idle
//!   (server memory per idle connection).
//! - `bench fanout`: N subscribers on one channel, messages at a rate or in a burst: deliveries/s,
//!   latency percentiles, loss.
//! - `bench publish`: M messages over N channels on C pipelined keep-alive connections (server
//!   memory per channel and per publish).

mod fanout;
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
        .subcommand(publish::command())
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match args.subcommand() {
        Some(("idle", args)) => idle::run(args),
        Some(("fanout", args)) => fanout::run(args),
        Some(("publish", args)) => publish::run(args),
        _ => ExitCode::from(EXIT_USAGE),
    }
}
