//! `holdfast bench publisher`: the SDK [`Publisher`] under C concurrent publishes (C tasks, each
//! publishing one small message after another to `{prefix}{task}` for `--seconds`), once over the
//! publisher's keep-alive pool (`pool`: at most C idle connections kept) and once with a new
//! connection per publish (`new`: `max_idle_connections(0)`, the connection is closed after each
//! answer), in the same process, one after the other.
//!
//! Prints one JSON line per mode (`"phase":"publisher"`: `mode`, `ok`, `failed`, `first_error`,
//! `seconds`, `per_second`) and a last one (`"phase":"ratio"`) with `pool_per_second /
//! new_per_second`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};
use holdfast_client::Publisher;
use serde_json::json;
use tokio::task::JoinSet;

use super::EXIT_USAGE;

pub fn command() -> Command {
    Command::new("publisher")
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
        .arg(Arg::new("prefix").long("prefix").value_name("P").default_value("sdkpub-").help("channel name prefix"))
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
    runtime.block_on(async {
        let mut rates = Vec::new();
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
            let result = load(publisher, concurrency, seconds, &prefix).await;
            all_ok &= result.failed == 0;
            let per_second = result.ok as f64 / result.seconds;
            rates.push((mode.clone(), per_second));
            println!(
                "{}",
                json!({
                    "phase": "publisher",
                    "mode": mode,
                    "concurrency": concurrency,
                    "ok": result.ok,
                    "failed": result.failed,
                    "first_error": result.first_error,
                    "seconds": (result.seconds * 100.0).round() / 100.0,
                    "per_second": per_second.round(),
                })
            );
            // Let the closed connections' TIME_WAIT and the server's parking settle between modes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let rate = |m: &str| rates.iter().find(|(mode, _)| mode == m).map(|(_, r)| *r);
        if let (Some(pool), Some(new)) = (rate("pool"), rate("new")) {
            let ratio = if new > 0.0 { pool / new } else { 0.0 };
            println!("{}", json!({ "phase": "ratio", "pool_per_second": pool.round(), "new_per_second": new.round(), "ratio": (ratio * 100.0).round() / 100.0 }));
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

/// C tasks publishing back to back until `time` has passed.
async fn load(publisher: Arc<Publisher>, concurrency: usize, time: Duration, prefix: &str) -> Load {
    let started = Instant::now();
    let deadline = started + time;
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let publisher = publisher.clone();
        let channel = format!("{prefix}{task}");
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                match publisher.publish(&channel, &b"0123456789abcdef"[..], None).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
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
