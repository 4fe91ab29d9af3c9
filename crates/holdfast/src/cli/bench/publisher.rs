//! `holdfast bench publisher`: the SDK [`Publisher`] under C concurrent publishes (C tasks, each
//! publishing one small message after another to `{prefix}{task}` for `--seconds`), once over the
//! publisher's keep-alive pool (`pool`: at most C idle connections kept) and once with a new
//! connection per publish (`new`: `max_idle_connections(0)`, the connection is closed after each
//! answer), in the same process, one after the other.
//!
//! Prints a summary table at the end (publishes/s of each mode and the ratio pool / new); with
//! `--json`, one JSON line per mode (`"phase":"publisher"`: `mode`, `ok`, `failed`,
//! `first_error`, `seconds`, `per_second`) and a last one (`"phase":"ratio"`) with
//! `pool_per_second / new_per_second`. A progress bar on stderr counts the publishes done.
//! (Publishes are not timed one by one: the figure is the throughput.)

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use holdfast_client::Publisher;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::report::{self, Table};
use super::EXIT_USAGE;

/// Progress-bar updates are batched: one add per this many publishes of a task.
const PROGRESS_BATCH: u64 = 16;

pub fn command() -> Command {
    let command = Command::new("publisher")
        .about("SDK Publisher: C concurrent publishes over the keep-alive pool vs a new connection each")
        .arg(Arg::new("server").long("server").value_name("URL").required(true).help("http://host:port"))
        .arg(
            Arg::new("concurrency")
                .long("concurrency")
                .value_name("C")
                .value_parser(value_parser!(u64).range(1..=1024))
                .default_value("50")
                .help("publishes in flight at once"),
        )
        .arg(
            Arg::new("seconds")
                .long("seconds")
                .value_name("SECS")
                .value_parser(value_parser!(f64))
                .default_value("3")
                .help("duration of each mode"),
        )
        .arg(
            Arg::new("modes")
                .long("modes")
                .value_name("LIST")
                .default_value("pool,new")
                .help("modes to run, in order: pool (keep-alive), new (a connection per publish)"),
        )
        .arg(Arg::new("prefix").long("prefix").value_name("P").default_value("sdkpub-").help("channel name prefix"));
    report::json_arg(command)
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required").clone();
    let concurrency = *args.get_one::<u64>("concurrency").expect("default") as usize;
    let seconds = Duration::from_secs_f64(args.get_one::<f64>("seconds").expect("default").max(0.1));
    let prefix = args.get_one::<String>("prefix").expect("default").clone();
    let modes: Vec<String> = args.get_one::<String>("modes").expect("default").split(',').map(str::to_string).collect();
    if modes.iter().any(|m| m != "pool" && m != "new") {
        eprintln!("holdfast bench publisher: --modes takes pool and new");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench publisher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = report::wants_json(args);
    runtime.block_on(async {
        let mut rates = Vec::new();
        let mut lines = Vec::new();
        let mut all_ok = true;
        for mode in &modes {
            let builder = Publisher::builder().server(&server).concurrency(concurrency);
            let builder = if mode == "new" { builder.max_idle_connections(0) } else { builder };
            let publisher = match builder.build() {
                Ok(publisher) => Arc::new(publisher),
                Err(e) => {
                    eprintln!("holdfast bench publisher: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let bar = report::progress(0, &format!("publishes ({mode})"), false);
            let result = load(publisher, concurrency, seconds, &prefix, &bar).await;
            bar.finish_and_clear();
            all_ok &= result.failed == 0;
            let per_second = result.ok as f64 / result.seconds;
            rates.push((mode.clone(), per_second));
            let line = json!({
                "phase": "publisher",
                "mode": mode,
                "concurrency": concurrency,
                "ok": result.ok,
                "failed": result.failed,
                "first_error": result.first_error,
                "seconds": (result.seconds * 100.0).round() / 100.0,
                "per_second": per_second.round(),
            });
            if json {
                report::print_json(&line);
            }
            lines.push(line);
            // Let the closed connections' TIME_WAIT and the server's parking settle between modes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let rate = |m: &str| rates.iter().find(|(mode, _)| mode == m).map(|(_, r)| *r);
        let ratio = match (rate("pool"), rate("new")) {
            (Some(pool), Some(new)) => {
                let ratio = if new > 0.0 { pool / new } else { 0.0 };
                Some(json!({ "phase": "ratio", "pool_per_second": pool.round(), "new_per_second": new.round(), "ratio": (ratio * 100.0).round() / 100.0 }))
            }
            _ => None,
        };
        if json {
            if let Some(ratio) = &ratio {
                report::print_json(ratio);
            }
        } else {
            print_table(&server, concurrency, seconds, &lines, ratio.as_ref());
        }
        if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

struct Load {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
}

fn print_table(server: &str, concurrency: usize, seconds: Duration, lines: &[Value], ratio: Option<&Value>) {
    println!(
        "holdfast bench publisher: SDK Publisher on {server}, {concurrency} publishes in flight, {} s per mode",
        report::round3(seconds.as_secs_f64())
    );
    let mut table = Table::new(&["mode", "concurrency", "ok", "failed", "seconds", "publishes/s"]);
    for line in lines {
        table.row_of(line, &["mode", "concurrency", "ok", "failed", "seconds", "per_second"]);
    }
    table.print();
    match ratio.and_then(|r| r["ratio"].as_f64()) {
        Some(ratio) => println!("pool/new: {ratio:.2}x"),
        None => println!("pool/new: - (needs both modes)"),
    }
    if let Some(error) = lines.iter().find_map(|l| l["first_error"].as_str()) {
        println!("first error: {error}");
    }
}

/// C tasks publishing back to back until `time` has passed.
async fn load(publisher: Arc<Publisher>, concurrency: usize, time: Duration, prefix: &str, bar: &ProgressBar) -> Load {
    let started = Instant::now();
    let deadline = started + time;
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let (publisher, bar) = (publisher.clone(), bar.clone());
        let channel = format!("{prefix}{task}");
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
            let mut unreported = 0;
            while Instant::now() < deadline {
                match publisher.publish(&channel, &b"0123456789abcdef"[..], None).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
                unreported += 1;
                if unreported == PROGRESS_BATCH {
                    bar.inc(unreported);
                    unreported = 0;
                }
            }
            bar.inc(unreported);
            (ok, failed, first_error)
        });
    }
    let mut load = Load { ok: 0, failed: 0, first_error: None, seconds: 0.0 };
    while let Some(joined) = tasks.join_next().await {
        let (ok, failed, error) = joined.unwrap_or_else(|e| (0, 1, Some(format!("task: {e}"))));
        load.ok += ok;
        load.failed += failed;
        if let Some(error) = error {
            load.first_error.get_or_insert(error);
        }
    }
    load.seconds = started.elapsed().as_secs_f64();
    load
}
