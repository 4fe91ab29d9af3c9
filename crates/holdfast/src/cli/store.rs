//! `holdfast store check DIR` and `holdfast store repair DIR`: the way out when `serve` refuses
//! a damaged disk history store (`history_store = "disk"`). Run them with the server stopped:
//! the store's directory is locked while a server has it open.

use std::path::Path;
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command};
use holdfast_store::RepairReport;

use super::EXIT_USAGE;

pub fn command() -> Command {
    let dir = || Arg::new("dir").value_name("DIR").required(true).help("the store's directory (data_dir)");
    Command::new("store")
        .about("Check or repair a disk history store (history_store = disk), with the server stopped")
        .subcommand_required(true)
        .subcommand(
            Command::new("check")
                .about("Read the whole store and list what cannot be read (exit 0: whole, 1: damaged, 2: cannot open)")
                .arg(dir()),
        )
        .subcommand(
            Command::new("repair")
                .about(
                    "Keep what can be read: drop unreadable entries and mend channel rows; a store that cannot be \
                     opened at all is moved aside to DIR.damaged-UNIXTIME and a new one is started",
                )
                .arg(dir()),
        )
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match args.subcommand() {
        Some(("check", args)) => check(Path::new(args.get_one::<String>("dir").expect("required"))),
        Some(("repair", args)) => repair(Path::new(args.get_one::<String>("dir").expect("required"))),
        _ => ExitCode::from(EXIT_USAGE),
    }
}

fn check(dir: &Path) -> ExitCode {
    match holdfast_store::check(dir) {
        Err(e) => {
            eprintln!("holdfast store check: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(report) => {
            let left = match &report.run {
                None => "never opened by a server".to_string(),
                Some(run) if run.clean => format!("closed cleanly (durability {})", run.durability),
                Some(run) => {
                    format!("left open (durability {}): the server stopped without closing it", run.durability)
                }
            };
            println!(
                "{}: {} channels, {} messages, {} payload bytes, {} bytes on disk; {left}",
                dir.display(),
                report.channels,
                report.messages,
                report.bytes,
                report.disk_bytes
            );
            if report.problems.is_empty() {
                println!("no problems found");
                return ExitCode::SUCCESS;
            }
            for problem in &report.problems {
                println!("problem: {problem}");
            }
            println!(
                "{} problems; `holdfast store repair {}` drops what cannot be read and keeps the rest",
                report.problems.len(),
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

fn repair(dir: &Path) -> ExitCode {
    match holdfast_store::repair(dir) {
        Err(e) => {
            eprintln!("holdfast store repair: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(RepairReport::Mended { dropped, rows_mended, channels, messages }) => {
            println!(
                "{}: dropped {dropped} unreadable entries, mended {rows_mended} channel rows; kept {channels} channels \
                 and {messages} messages",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(RepairReport::MovedAside { to, why }) => {
            println!(
                "{} could not be opened ({why}); moved aside to {} and a new, empty store started there. Channels \
                 start in new epochs: cursors from before get a gap notice",
                dir.display(),
                to.display()
            );
            ExitCode::SUCCESS
        }
    }
}
