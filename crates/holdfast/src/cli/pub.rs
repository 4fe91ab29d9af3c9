//! `holdfast pub [--server URL] [--token TOKEN] [--cacert FILE] CHANNEL [MESSAGE | -] [--event NAME]`: publishes one message, or
//! each line of stdin (no MESSAGE, or `-`), in order, printing the id of each. On a failure it
//! prints one line saying why and exits with 1.

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command};
use holdfast_client::Publisher;

pub fn command() -> Command {
    Command::new("pub")
        .about("Publish a message (or each line of stdin) to a channel; prints each message's id")
        .arg(
            Arg::new("server")
                .long("server")
                .value_name("URL")
                .env("HOLDFAST_SERVER")
                .default_value(holdfast_client::DEFAULT_SERVER)
                .help("the server's base URL (https:// for TLS)"),
        )
        .arg(super::cacert_arg())
        .arg(super::token_arg())
        .arg(Arg::new("channel").value_name("CHANNEL").required(true).help("the channel to publish to"))
        .arg(Arg::new("message").value_name("MESSAGE").help("the message; `-` or none: stdin, one message per line"))
        .arg(Arg::new("event").long("event").value_name("NAME").help("the event type (default: message)"))
}

pub fn run(args: &ArgMatches) -> ExitCode {
    let server = args.get_one::<String>("server").expect("defaulted");
    let channel = args.get_one::<String>("channel").expect("required");
    let event = args.get_one::<String>("event").map(String::as_str);
    let message = args.get_one::<String>("message").filter(|m| *m != "-");
    let result = super::runtime().and_then(|runtime| {
        runtime.block_on(async {
            let tls = super::cacert_tls(args)?;
            let mut publisher = Publisher::builder().server(server.as_str()).tls(&tls);
            if let Some(token) = args.get_one::<String>("token") {
                publisher = publisher.token(token.clone());
            }
            let publisher = publisher.build().map_err(|e| e.to_string())?;
            match message {
                Some(message) => publish(&publisher, channel, message.clone(), event).await,
                None => {
                    for line in std::io::stdin().lock().lines() {
                        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                        publish(&publisher, channel, line, event).await?;
                    }
                    Ok(())
                }
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("holdfast pub: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(publisher: &Publisher, channel: &str, message: String, event: Option<&str>) -> Result<(), String> {
    let published = publisher.publish(channel, message, event).await.map_err(|e| e.to_string())?;
    println!("{}", published.id);
    Ok(())
}
