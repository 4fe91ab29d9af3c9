//! Command-line parsing. Every configuration key of `holdfast_server::config::KEYS` becomes a
//! `serve` flag (`--keepalive-timeout`) that may also come from `HOLDFAST_KEEPALIVE_TIMEOUT`.

mod bench;
mod serve;

use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use holdfast_server::config::KEYS;

/// Exit code for a usage or configuration error (as clap uses).
pub const EXIT_USAGE: u8 = 2;

fn command() -> Command {
    let mut serve = Command::new("serve").about("Run the Holdfast server (embedded defaults; no broker needed)").arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .env("HOLDFAST_CONFIG")
            .help("TOML file of configuration keys (applied before env and flags)"),
    );
    for key in KEYS {
        let flag = key.name.replace('_', "-");
        let env = format!("HOLDFAST_{}", key.name.to_ascii_uppercase());
        serve = serve.arg(
            Arg::new(key.name)
                .long(flag)
                .value_name("VALUE")
                .env(env)
                .action(ArgAction::Set)
                .help(format!("{} [default: {}]", key.help, key.default)),
        );
    }
    Command::new("holdfast")
        .about("Holdfast: a long-connection push server")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve)
        .subcommand(bench::command())
}

pub fn main() -> ExitCode {
    let matches = command().get_matches();
    match matches.subcommand() {
        Some(("serve", args)) => serve::run(args),
        Some(("bench", args)) => bench::run(args),
        _ => ExitCode::from(EXIT_USAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }
}
