//! The `holdfast` binary: `serve` runs the server; further subcommands (pub, sub, bench) come with
//! the client SDK.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
