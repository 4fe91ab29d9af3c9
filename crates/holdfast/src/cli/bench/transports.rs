//! `holdfast bench transports`: the fan-out workload of `bench fanout` over each of Holdfast's
//! transports in turn, one table side by side: deliveries/s, latency p50/p99/max, bytes on the
//! wire per message, and the server's CPU.
//!
//! For each transport: N subscribers to the channel `{channel}-{transport}` (its own channel, so
//! no history or subscriber of one run reaches the next), M messages published to it (a burst, or
//! `--rate` per second), the deliveries measured as `bench fanout` does; then the subscribers are
//! closed. Paths are Holdfast's (docs/protocol.md, Transports):
//!
//! | transport | request | read as |
//! |---|---|---|
//! | `sse` | `GET /sub/C?transport=sse` | one stream |
//! | `ws` | WebSocket upgrade to `/sub/C` (JSON envelopes in text frames) | one stream |
//! | `ws-raw` | WebSocket upgrade to `/sub/C?format=raw` (bare payloads) | one stream |
//! | `stream` | `GET /sub/C?transport=stream` (chunked NDJSON) | one stream |
//! | `iframe` | `GET /sub/C?transport=iframe&callback=cb` | one stream |
//! | `longpoll` | `GET /sub/C?cursor=…`, again after each answer | polls |
//! | `poll` | `GET /sub/C?transport=poll&cursor=…`, every `--poll-interval-ms` | polls |
//!
//! Bytes per message: every byte the subscribers read during the phase (response heads of polls,
//! framing, envelopes, heartbeats) over the deliveries. Server CPU: user + system seconds of the
//! server's processes over the phase (publishing and delivering), from `/proc` (`server_cpu.rs`;
//! `--server-pid`, else the process listening on the port), and per delivery.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::{json, Value};

use super::fanout::{self, Mode, Plan};
use super::procs::{self, Children, Role};
use super::report::{self, Table};
use super::targets::Target;
use super::EXIT_USAGE;

/// Every transport this bench knows, in the default order.
const TRANSPORTS: [&str; 7] = ["sse", "ws", "ws-raw", "stream", "iframe", "longpoll", "poll"];

pub fn command() -> Command {
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_parser(value_parser!(u64)).default_value(default).help(help)
    };
    let command = Command::new("transports")
        .about("The fan-out workload over each transport in turn: deliveries/s, latency, bytes/message, server CPU")
        .arg(Arg::new("server").long("server").value_name("ADDR").required(true).help("host:port of a Holdfast server"))
        .arg(
            Arg::new("transports")
                .long("transports")
                .value_name("LIST")
                .value_delimiter(',')
                .value_parser(TRANSPORTS)
                .default_value("sse,ws,ws-raw,stream,iframe,longpoll,poll")
                .help("transports to run, in order"),
        )
        .arg(Arg::new("channel").long("channel").value_name("NAME").default_value("tb").help("channel name prefix"))
        .arg(number("subscribers", "1000", "subscribers per transport"))
        .arg(number("messages", "100", "messages per transport"))
        .arg(number("rate", "0", "messages per second; 0 = a burst, as fast as possible"))
        .arg(number("size", "100", "payload bytes"))
        .arg(number("poll-interval-ms", "100", "short polls (poll): wait between an answer and the next poll"))
        .arg(number("concurrency", "256", "subscribers being opened at once"))
        .arg(number("settle-ms", "500", "wait between the last subscriber open and the first publish"));
    procs::args(report::json_arg(fanout::server_pid_arg(command)))
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("required").clone();
    let Some(addr) = server.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("holdfast bench transports: cannot resolve --server {server}");
        return ExitCode::from(EXIT_USAGE);
    };
    let target = Target { addr, host: server.clone() };
    let get = |name: &str| *args.get_one::<u64>(name).expect("default");
    let role = Role::of(args);
    let transports: Vec<String> = args.get_many::<String>("transports").expect("default").cloned().collect();
    let channel = args.get_one::<String>("channel").expect("default").clone();
    let base = Plan {
        servers: vec![target].into(),
        binds: Vec::new().into(),
        pause_file: None,
        subscribe: String::new(),
        publish: String::new(),
        mode: Mode::Stream,
        subscribers: role.share(get("subscribers")) as usize,
        messages: get("messages"),
        rate: get("rate"),
        size: get("size") as usize,
        phases: 1,
        concurrency: get("concurrency") as usize,
        settle: Duration::from_millis(get("settle-ms")),
        header_cursor: false,
        poll_interval: None,
        role,
    };
    let poll_interval = Duration::from_millis(get("poll-interval-ms"));
    let fd_limit = holdfast_server::raise_fd_limit();
    if base.subscribers + 64 > fd_limit {
        eprintln!(
            "holdfast bench transports: {} subscribers need more descriptors than {fd_limit} (--procs spreads them)",
            base.subscribers
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let cpu = fanout::find_server_cpu(args, &base.servers, role);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast bench transports: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut children = match role {
            Role::Parent { procs } => Some(Children::spawn(procs)?),
            Role::Child { .. } => {
                procs::ignore_stop_signals();
                None
            }
            Role::Alone => None,
        };
        let mut lines = Vec::new();
        for transport in &transports {
            let plan = plan_for(&base, transport, &channel, poll_interval);
            for mut line in fanout::run_workload(&plan, children.as_mut(), cpu.as_ref(), None).await? {
                line["phase"] = json!("transport");
                line["transport"] = json!(transport);
                line["path"] = json!(plan.subscribe);
                lines.push(line);
            }
        }
        if let Some(children) = children {
            if !children.finish() {
                return Err("a child failed".to_string());
            }
        }
        Ok::<_, String>(lines)
    });
    let lines = match result {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("holdfast bench transports: {e}");
            return ExitCode::FAILURE;
        }
    };
    if role.is_child() {
        return ExitCode::SUCCESS;
    }
    if report::wants_json(args) {
        lines.iter().for_each(report::print_json);
    } else {
        print_table(&base, &lines);
    }
    if lines.iter().all(|l| l["lost"].as_u64() == Some(0)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The fan-out plan of one transport.
fn plan_for(base: &Plan, transport: &str, channel: &str, poll_interval: Duration) -> Plan {
    let name = format!("{channel}-{transport}");
    let (subscribe, mode) = match transport {
        "sse" => (format!("/sub/{name}?transport=sse"), Mode::Stream),
        "ws" => (format!("/sub/{name}"), Mode::WebSocket),
        "ws-raw" => (format!("/sub/{name}?format=raw"), Mode::WebSocket),
        "stream" => (format!("/sub/{name}?transport=stream"), Mode::Stream),
        "iframe" => (format!("/sub/{name}?transport=iframe&callback=cb"), Mode::Stream),
        "longpoll" => (format!("/sub/{name}"), Mode::LongPoll),
        "poll" => (format!("/sub/{name}?transport=poll"), Mode::Poll),
        other => unreachable!("clap allows only known transports, not {other}"),
    };
    Plan {
        subscribe,
        publish: format!("/pub/{name}"),
        mode,
        poll_interval: (mode == Mode::Poll).then_some(poll_interval),
        ..base.clone()
    }
}

fn print_table(base: &Plan, lines: &[Value]) {
    println!(
        "holdfast bench transports: {} on {}, {} messages of {} B at {}",
        match base.role {
            Role::Parent { procs } => format!("subscribers in {procs} processes"),
            _ => format!("{} subscribers", base.subscribers),
        },
        base.servers[0].host,
        base.messages,
        base.size,
        if base.rate == 0 { "full speed (burst)".to_string() } else { format!("{}/s", base.rate) }
    );
    let mut table = Table::new(&[
        "transport",
        "subs",
        "deliveries",
        "lost",
        "deliv/s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "B/msg",
        "srv_cpu_s",
        "cpu_us/deliv",
    ]);
    for line in lines {
        table.row_of(
            line,
            &[
                "transport",
                "subscribers",
                "deliveries",
                "lost",
                "deliveries_per_s",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "bytes_per_delivery",
                "server_cpu_s",
                "server_cpu_us_per_delivery",
            ],
        );
    }
    table.print();
}
