//! `holdfast sub [--server URL]... CHANNEL[,CHANNEL...] [--transport T] [--cursor C] [--history N]
//! [--json] [--heartbeat SECONDS|adaptive] [--token TOKEN] [--cacert FILE]`: subscribes until interrupted. Payloads go to stdout,
//! one per line (raw, or one JSON object `{"channel","event","data","id"}` with `--json`), flushed
//! line by line; the link's story (connections, reconnections, failovers, gaps, close notices) goes
//! to stderr in plain words. A refusal that retrying cannot cure ends it with exit code 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use futures_util::StreamExt;
use holdfast_client::{Event, Gap, Heartbeat, Message, State, Subscriber, Transport};

/// `--heartbeat adaptive`: start at the server's default `heartbeat_min` and probe up in 15 s
/// steps to 2 minutes (beyond that, a NAT-friendly interval saves little).
const ADAPTIVE: Heartbeat =
    Heartbeat::Adaptive { min: Duration::from_secs(5), max: Duration::from_secs(120), step: Duration::from_secs(15) };

pub fn command() -> Command {
    Command::new("sub")
        .about("Subscribe to channels: payloads on stdout, one per line; connection states and gaps on stderr")
        .arg(Arg::new("server").long("server").value_name("URL").action(ArgAction::Append).help(
            "a server's base URL (https:// for TLS); repeat for failover, tried in order \
                     [default: http://127.0.0.1:7700]",
        ))
        .arg(super::cacert_arg())
        .arg(Arg::new("channels").value_name("CHANNEL[,CHANNEL...]").required(true).help("channels, comma-separated"))
        .arg(
            Arg::new("transport")
                .long("transport")
                .value_name("T")
                .default_value("ws")
                .value_parser(["ws", "sse", "longpoll", "poll", "stream"])
                .help("how messages come"),
        )
        .arg(super::token_arg())
        .arg(Arg::new("cursor").long("cursor").value_name("C").help("resume after this cursor (a message's id)"))
        .arg(
            Arg::new("history")
                .long("history")
                .value_name("N")
                .value_parser(clap::value_parser!(u32))
                .help("without a cursor, first replay the last N messages of each channel"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("print one JSON object per message: channel, event, data (or data_b64), id"),
        )
        .arg(Arg::new("heartbeat").long("heartbeat").value_name("SECONDS|adaptive").help(
            "heartbeat interval to ask the server for, or `adaptive` (5 s, probing up by 15 s to 120 s); \
                 default: the server's",
        ))
        .arg(
            Arg::new("backoff_base")
                .long("backoff-base")
                .value_name("SECONDS")
                .value_parser(parse_seconds)
                .default_value("1")
                .help("first reconnection backoff window (full jitter)"),
        )
        .arg(
            Arg::new("backoff_cap")
                .long("backoff-cap")
                .value_name("SECONDS")
                .value_parser(parse_seconds)
                .default_value("30")
                .help("largest reconnection backoff window"),
        )
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

fn heartbeat(text: &str) -> Result<Heartbeat, String> {
    if text.eq_ignore_ascii_case("adaptive") {
        return Ok(ADAPTIVE);
    }
    parse_seconds(text).map(Heartbeat::Fixed).map_err(|e| format!("--heartbeat: {e} (or `adaptive`)"))
}

pub fn run(args: &ArgMatches) -> ExitCode {
    match subscribe(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("holdfast sub: {line}");
            ExitCode::FAILURE
        }
    }
}

fn subscribe(args: &ArgMatches) -> Result<(), String> {
    let transport: Transport = args.get_one::<String>("transport").expect("defaulted").parse()?;
    let mut builder = Subscriber::builder()
        .channels(args.get_one::<String>("channels").expect("required").split(',').filter(|c| !c.is_empty()))
        .transport(transport)
        .tls(&super::cacert_tls(args)?)
        .backoff(
            *args.get_one::<Duration>("backoff_base").expect("defaulted"),
            *args.get_one::<Duration>("backoff_cap").expect("defaulted"),
        );
    if let Some(token) = args.get_one::<String>("token") {
        builder = builder.token(token.clone());
    }
    if let Some(servers) = args.get_many::<String>("server") {
        builder = builder.servers(servers.cloned());
    }
    if let Some(cursor) = args.get_one::<String>("cursor") {
        builder = builder.cursor(cursor.clone());
    }
    if let Some(n) = args.get_one::<u32>("history") {
        builder = builder.history(*n);
    }
    if let Some(text) = args.get_one::<String>("heartbeat") {
        builder = builder.heartbeat(heartbeat(text)?);
    }
    let json = args.get_flag("json");
    let mut sub = builder.build().map_err(|e| e.to_string())?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let mut stdout = std::io::stdout().lock();
        let mut server: Option<String> = None;
        while let Some(event) = sub.next().await {
            let event = event.map_err(|e| e.to_string())?;
            match event {
                Event::Message(m) => {
                    let written = write_message(&mut stdout, &m, json).and_then(|()| stdout.flush());
                    // A closed stdout (`| head`) ends the subscription quietly.
                    if written.is_err() {
                        return Ok(());
                    }
                }
                Event::State(State::Connected { server: now, transport, heartbeat }) => {
                    if server.as_ref().is_some_and(|before| *before != now) {
                        eprintln!("failover: moved to {now}");
                    }
                    eprintln!("connected to {now} over {transport} (heartbeat {})", seconds(heartbeat));
                    server = Some(now);
                }
                other => eprintln!("{}", describe(&other)),
            }
        }
        Ok(())
    })
}

fn write_message(out: &mut impl Write, m: &Message, json: bool) -> std::io::Result<()> {
    if !json {
        out.write_all(&m.data)?;
        return out.write_all(b"\n");
    }
    let mut object = serde_json::json!({"channel": m.channel, "event": m.event, "id": m.cursor});
    match m.text() {
        Some(text) => object["data"] = text.into(),
        None => {
            use base64::Engine;
            object["data_b64"] = base64::engine::general_purpose::STANDARD.encode(&m.data).into();
        }
    }
    writeln!(out, "{object}")
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// An event other than a message, in plain words.
fn describe(event: &Event) -> String {
    match event {
        Event::Gap(Gap { channel, lost: Some(n), first_available }) => {
            format!("gap in {channel}: {n} messages lost (resuming at {first_available})")
        }
        Event::Gap(Gap { channel, lost: None, first_available }) => format!(
            "gap in {channel}: an unknown number of messages lost (new epoch: server restarted, \
             channel deleted, or another server; resuming at {first_available})"
        ),
        Event::Closed { channel, reason } => format!("the server closed the subscription to {channel}: {reason}"),
        Event::State(State::Connecting) => "connecting".to_string(),
        Event::State(State::Reconnecting { attempt, after, cause }) => {
            format!("disconnected ({cause}); reconnecting in {:.3}s (attempt {attempt})", after.as_secs_f64())
        }
        Event::State(State::HeartbeatSettled { interval }) => format!("heartbeat settled at {}", seconds(*interval)),
        other => format!("{other:?}"),
    }
}
