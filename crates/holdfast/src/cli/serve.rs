//! `holdfast serve`: builds the configuration from defaults ← file ← env ← flags, then runs the
//! server until SIGTERM or SIGINT, and drains. SIGHUP builds it again the same way (the file read
//! anew, the environment and flags as they were at start) and the server applies the keys that
//! can change live.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::ArgMatches;
use holdfast_server::config::{self, Config, LogFormat, KEYS};

use super::EXIT_USAGE;

pub fn run(args: &ArgMatches) -> ExitCode {
    let config = match build_config(args) {
        Ok(config) => config,
        Err(line) => {
            eprintln!("holdfast: {line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(config.log_format);
    let fd_limit = holdfast_server::raise_fd_limit();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(config.runtime_threads()).enable_all().build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("holdfast: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        // The handlers go in before the socket listens: a SIGTERM sent as soon as the port
        // answers (a supervisor, a test) must drain, not kill with the default action.
        let signals = ShutdownSignals::install();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| (ExitCode::FAILURE, format!("cannot listen on {}: {e}", config.listen)))?;
        tracing::info!(fd_limit, "starting");
        // The environment was read into `args` at start, so a reload sees the same overrides.
        let matches = args.clone();
        let source: holdfast_server::ConfigSource = Box::new(move || build_config(&matches));
        holdfast_server::run_reloadable(listener, config, signals.first(), Some(source)).await.map_err(|e| {
            // A setting the server cannot use (a TLS certificate or key file, a broker URL) is
            // the configuration's fault, as a bad value is: exit code 2.
            let code = if e.kind() == std::io::ErrorKind::InvalidInput { EXIT_USAGE.into() } else { ExitCode::FAILURE };
            (code, e.to_string())
        })
    });
    // Connections still open after the drain bound are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, line)) => {
            eprintln!("holdfast: {line}");
            code
        }
    }
}

/// Defaults, then the file, then env and flags (clap gives a flag precedence over its env var).
fn build_config(args: &ArgMatches) -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(path) = args.get_one::<String>("config") {
        config.apply_file(Path::new(path)).map_err(|e| e.to_string())?;
    }
    for key in KEYS {
        let Some(value) = args.get_one::<String>(key.name) else {
            continue;
        };
        let source = match args.value_source(key.name) {
            Some(ValueSource::EnvVariable) => format!("HOLDFAST_{}", key.name.to_ascii_uppercase()),
            _ => format!("--{}", key.name.replace('_', "-")),
        };
        config.set(key.name, value).map_err(|e| e.from_source(&source).to_string())?;
    }
    config::validate(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

/// `RUST_LOG` picks what is logged (default `info`; `holdfast_server=debug` adds one line per
/// connection close with its reason); `log_format` how. Colour codes only go to a terminal: in a
/// file or a pipe they are noise that log tools show as `^[[32m`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The disk store's engine reports each keyspace it reopens: its warnings are enough.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let colour = format == LogFormat::Text && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        // Event fields (`message`, `reason`, …) at the top level of each object, beside
        // `timestamp`, `level` and `target`, where log collectors look for them.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// SIGTERM and SIGINT handlers, installed when made.
struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        use tokio::signal::unix::{signal, SignalKind};
        ShutdownSignals { term: signal(SignalKind::terminate()).ok(), interrupt: signal(SignalKind::interrupt()).ok() }
    }

    /// Completes on the first SIGTERM or SIGINT.
    async fn first(mut self) {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(self.term.as_mut()) => tracing::info!("SIGTERM: shutting down"),
            _ = next(self.interrupt.as_mut()) => tracing::info!("SIGINT: shutting down"),
        }
    }
}
