//! Command-line parsing. Every configuration key of `holdfast_server::config::KEYS` becomes a
//! `serve` flag (`--keepalive-timeout`) that may also come from `HOLDFAST_KEEPALIVE_TIMEOUT`.
//! Boolean keys are switches as well: `--ws-deflate` alone means `--ws-deflate=true`. Values stay
//! strings here; the configuration parses them, so every source gets the same messages.

mod bench;
#[path = "pub.rs"]
mod publish;
mod serve;
mod store;
mod sub;

use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use holdfast_server::config::{Key, ValueKind, KEYS};

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
        serve = serve.arg(key_arg(key));
    }
    Command::new("holdfast")
        .about("Holdfast: a long-connection push server")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve)
        .subcommand(publish::command())
        .subcommand(sub::command())
        .subcommand(bench::command())
        .subcommand(store::command())
}

/// A small runtime for the client subcommands (one thread: a CLI client needs no more).
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `--cacert FILE` (env `HOLDFAST_CACERT`) of `pub` and `sub`, as curl's: the CA certificate(s)
/// an `https://` server's certificate must chain to.
fn cacert_arg() -> Arg {
    Arg::new("cacert").long("cacert").value_name("FILE").env("HOLDFAST_CACERT").help(
        "PEM file of the CA certificate(s) to check an https:// server against, instead of the \
         public web PKI roots (as curl's --cacert)",
    )
}

/// `--token TOKEN` (env `HOLDFAST_TOKEN`, never shown in --help) of `pub` and `sub`.
fn token_arg() -> Arg {
    Arg::new("token")
        .long("token")
        .value_name("TOKEN")
        .env("HOLDFAST_TOKEN")
        .hide_env_values(true)
        .help("access token for a server with access control (sent as Authorization: Bearer)")
}

/// The TLS options `--cacert` asks for: only the CAs in the file (as curl does: the file
/// replaces the default roots), or the SDK's default (the web PKI) without it.
fn cacert_tls(args: &clap::ArgMatches) -> Result<holdfast_client::TlsOptions, String> {
    let Some(path) = args.get_one::<String>("cacert") else { return Ok(holdfast_client::TlsOptions::default()) };
    let pem = std::fs::read(path).map_err(|e| format!("--cacert {path}: {e}"))?;
    let tls =
        holdfast_client::TlsOptions::new().root_certificate_pem(pem).map_err(|e| format!("--cacert {path}: {e}"))?;
    Ok(tls.web_pki_roots(false))
}

/// The flag of one configuration key, also read from `HOLDFAST_<KEY>`.
fn key_arg(key: &Key) -> Arg {
    let arg = Arg::new(key.name)
        .long(key.name.replace('_', "-"))
        .env(format!("HOLDFAST_{}", key.name.to_ascii_uppercase()))
        .action(ArgAction::Set)
        .help(format!("{} [default: {}]", key.help, key.default));
    match key.kind {
        // An optional value: `--ws-deflate`, `--ws-deflate=false` and `--ws-deflate false` all work
        // (serve takes no positional arguments, so a following word can only be this value).
        ValueKind::Bool => arg.value_name("BOOL").num_args(0..=1).default_missing_value("true"),
        ValueKind::List => arg.value_name("LIST"),
        ValueKind::Single => arg.value_name("VALUE"),
    }
}

pub fn main() -> ExitCode {
    let matches = command().get_matches();
    match matches.subcommand() {
        Some(("serve", args)) => serve::run(args),
        Some(("pub", args)) => publish::run(args),
        Some(("sub", args)) => sub::run(args),
        Some(("bench", args)) => bench::run(args),
        Some(("store", args)) => store::run(args),
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

    /// The value clap hands `serve` for `ws_deflate`, given these arguments after `serve`.
    fn ws_deflate_value(args: &[&str]) -> Option<String> {
        let matches = command().try_get_matches_from(["holdfast", "serve"].iter().chain(args)).unwrap();
        matches.subcommand_matches("serve").unwrap().get_one::<String>("ws_deflate").cloned()
    }

    #[test]
    fn boolean_flags_take_no_value_or_an_explicit_one() {
        assert_eq!(ws_deflate_value(&["--ws-deflate"]).as_deref(), Some("true"));
        assert_eq!(ws_deflate_value(&["--ws-deflate", "--listen", "127.0.0.1:1"]).as_deref(), Some("true"));
        assert_eq!(ws_deflate_value(&["--ws-deflate=false"]).as_deref(), Some("false"));
        assert_eq!(ws_deflate_value(&["--ws-deflate", "false"]).as_deref(), Some("false"));
        assert_eq!(ws_deflate_value(&["--ws-deflate=true"]).as_deref(), Some("true"));
    }

    #[test]
    fn other_flags_still_require_a_value() {
        let args = ["holdfast", "serve", "--keepalive-timeout"];
        assert!(command().try_get_matches_from(args).is_err());
    }
}
