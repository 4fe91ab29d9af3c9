//! Server configuration: every key, its default, its help line and its parser, in one table.
//!
//! Sources are applied in order, later ones winning: the defaults in [`KEYS`], a TOML file
//! (`--config`), then `HOLDFAST_<KEY>` environment variables, then command-line flags. The binary
//! turns the table into flags; this module only knows keys and string values, so every source is
//! parsed by the same function and every bad value gets the same one-line message. A key's
//! [`ValueKind`] is the one thing the sources need beyond strings: a boolean is also a bare flag,
//! and a list may be a TOML array in the file (a comma-separated string everywhere).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use holdfast_proto::Limits;

use crate::limits::parse_cidrs;
pub use crate::limits::Cidr;

/// Push shards at most: one bit each in a channel's `subscriber_shards` (a `u64`).
pub const MAX_PUSH_THREADS: usize = 64;

/// The validated configuration of one server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the `serve` command binds.
    pub listen: SocketAddr,
    /// Idle time allowed between requests on a persistent connection (advertised as `timeout=`).
    pub keepalive_timeout: Duration,
    /// Requests per connection; the last response says `Connection: close`.
    pub keepalive_requests: u32,
    /// Time allowed to receive a whole request head (and the first request on a new connection).
    pub header_timeout: Duration,
    /// Time allowed between two reads of a request body.
    pub body_timeout: Duration,
    /// Time allowed for the peer to accept a response's bytes.
    pub send_timeout: Duration,
    /// Idle time after which a keep-alive connection leaves tokio for the parking lot.
    pub park_after: Duration,
    /// Request line plus header fields, in bytes.
    pub max_header_bytes: usize,
    /// Header fields per request.
    pub max_headers: usize,
    /// Request-target length in bytes.
    pub max_uri_bytes: usize,
    /// Request body, in bytes.
    pub max_body_bytes: u64,
    /// Open connections; 0 = derived from the file-descriptor limit.
    pub max_connections: usize,
    /// Open connections from one client (an IPv4 address or an IPv6 /64, always the TCP peer);
    /// 0 = no limit.
    pub max_connections_per_ip: u32,
    /// New connections a second from one client (a token bucket); 0 = no limit.
    pub new_connections_per_ip_per_second: f64,
    /// New connections one client may open at once; 0 = one second's worth.
    pub new_connections_per_ip_burst: u32,
    /// Publishes a second from one client (`POST /pub`, the WebSocket op); 0 = no limit.
    pub publishes_per_ip_per_second: f64,
    /// Publishes one client may make at once; 0 = one second's worth.
    pub publishes_per_ip_burst: u32,
    /// Proxies whose `X-Forwarded-For` / `Forwarded: for=` name the client (publish limit, admin
    /// list, logs); empty = none.
    pub trusted_proxies: Vec<Cidr>,
    /// TCP keepalive: idle time before the first probe.
    pub tcp_keepalive_idle: Duration,
    /// TCP keepalive: time between probes.
    pub tcp_keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the kernel drops the connection.
    pub tcp_keepalive_count: u32,
    /// Bound on a graceful shutdown: after it, the remaining connections are dropped.
    pub shutdown_timeout: Duration,
    /// A graceful drain closes the streaming subscribers spread over this long (so their
    /// reconnects onto other nodes come as a flat wave); 0 = all at once. See [`Config::drain_spread`].
    pub drain_seconds: Duration,
    /// Serve `/_conformance/echo` (tests and conformance suites only).
    pub enable_conformance_echo: bool,
    /// How long a long poll is held before it answers with an empty list.
    pub longpoll_timeout: Duration,
    /// Heartbeat period on streaming transports (SSE comment, empty line, HTML comment).
    pub heartbeat_interval: Duration,
    /// Shortest heartbeat interval a subscriber may ask for with `?heartbeat=SECONDS`.
    pub heartbeat_min: Duration,
    /// Longest heartbeat interval a subscriber may ask for with `?heartbeat=SECONDS`.
    pub heartbeat_max: Duration,
    /// Reconnection delay announced to SSE clients (`retry:`).
    pub sse_retry: Duration,
    /// Messages kept per channel.
    pub history_messages: usize,
    /// Age after which a message leaves its channel's history.
    pub history_seconds: Duration,
    /// Bytes of history kept over all channels.
    pub history_max_bytes: u64,
    /// Channels held at once; creating one more is refused (503).
    pub max_channels: usize,
    /// Where messages are ordered and kept: `memory` (this process), or a Redis URL
    /// (`redis://host:port/db`, `redis+cluster://host:port,host:port`) that several nodes share.
    pub broker: String,
    /// Where the embedded broker keeps histories: `memory`, or `disk` (in `data_dir`, kept
    /// across restarts).
    pub history_store: String,
    /// The disk store's directory (`history_store = "disk"`).
    pub data_dir: String,
    /// When a disk store's writes count as done: `none`, `batch` or `always`.
    pub durability: String,
    /// `durability = "batch"` syncs at most this long after a write.
    pub durability_interval: Duration,
    /// How far (in bytes) a streaming subscriber may fall behind before it is cut (`slow_consumer`).
    pub max_pending_bytes: u64,
    /// Origins allowed by CORS: empty = none, `*` = any, else the listed origins and subdomain
    /// patterns (`https://*.example.com`).
    pub cors_origins: Vec<String>,
    /// WebSocket: a peer that sends nothing (not even a pong) for this long is closed.
    pub heartbeat_timeout: Duration,
    /// WebSocket: largest message a client may send (1009 above).
    pub ws_max_message_bytes: usize,
    /// WebSocket: whether clients may publish with `{"op":"publish"}`.
    pub ws_client_publish: bool,
    /// WebSocket: accept permessage-deflate (RFC 7692) from clients that offer it.
    pub ws_deflate: bool,
    /// Runtime worker threads; 0 = one per core less one (at least one).
    pub worker_threads: usize,
    /// Push shard threads (streaming subscribers and held long polls); 0 = one per core.
    pub push_threads: usize,
    /// A channel's one-channel subscribers share its home shard until it has this many; past it
    /// they spread over every shard (0 = always spread).
    pub push_spread_after: usize,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    /// Access control: the HS256 shared secret tokens are signed with (empty = none).
    pub jwt_secret: Secret,
    /// Access control: a PEM public key file (RSA, EC or Ed25519) tokens are signed for (empty = none).
    pub jwt_public_key: String,
    /// Access control: accept tokens without `exp` (they never expire).
    pub jwt_allow_no_exp: bool,
    /// Access control: serve `/metrics` without a token.
    pub metrics_public: bool,
    /// TLS: the certificate chain (PEM, the server's certificate first); with `tls_key`, the
    /// listener speaks TLS only. Empty = plain HTTP. Reloaded on SIGHUP.
    pub tls_cert: String,
    /// TLS: the private key (PEM: PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: String,
}

/// A secret setting (`jwt_secret`): its `Debug` form never shows it, so a configuration printed
/// in a log line or a panic message does not leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"[redacted]\"" })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Config {
    /// How long a graceful drain spreads the closes of streaming subscribers over:
    /// `drain_seconds`, at most four fifths of `shutdown_timeout`, so the last fifth is left for
    /// the last notices to go out and the peers to close before the bound drops what is left.
    pub fn drain_spread(&self) -> Duration {
        self.drain_seconds.min(self.shutdown_timeout.mul_f64(0.8))
    }

    /// The parser limits that follow from this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_uri_bytes: self.max_uri_bytes,
            max_body_bytes: self.max_body_bytes,
            ..Limits::default()
        }
    }

    /// The runtime threads to start: `worker_threads`, or one per core less one, leaving a core to
    /// the push shard and parking-lot threads (and, on small machines, to whatever else runs
    /// there: with two workers on two cores shared with its client, keep-alive throughput
    /// measured 17 % lower than with one, bench/RESULTS.md).
    pub fn runtime_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1),
            n => n,
        }
    }

    /// The push shards to start: `push_threads`, or one per core. Subscribers are spread over
    /// them; a publish wakes only the shards with subscribers of its channel.
    pub fn push_shards(&self) -> usize {
        match self.push_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_PUSH_THREADS)
    }

    /// Whether `cors_origins` allows this origin: `*`, a listed origin, or a pattern
    /// (`https://*.example.com`: one or more labels before `example.com`, same scheme and port).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|entry| crate::origin::matches(entry, origin))
    }

    /// Sets one key from its string form, as any source gives it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let entry = KEYS.iter().find(|k| k.name == key).ok_or_else(|| ConfigError::unknown_key(key))?;
        (entry.set)(self, value.trim()).map_err(|problem| ConfigError {
            key: key.to_string(),
            source: String::new(),
            problem: format!("{value:?} {problem}"),
        })
    }

    /// Applies a TOML file whose top-level keys are configuration keys. Numbers, strings and
    /// booleans are accepted (numbers mean seconds for durations and bytes for sizes), and list
    /// keys also take an array of strings.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let source = path.display().to_string();
        let file_error = |problem: String| ConfigError { key: "config".to_string(), source: source.clone(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| file_error(e.message().to_string()))?;
        for (key, value) in table {
            // An unknown key is reported as such, before whatever its value's type would say.
            let Some(entry) = KEYS.iter().find(|k| k.name == key) else {
                return Err(ConfigError::unknown_key(&key).from_source(&source));
            };
            let text = match file_value_text(value, entry.kind) {
                Ok(text) => text,
                Err(problem) => return Err(ConfigError { key, source: source.clone(), problem }),
            };
            self.set(&key, &text).map_err(|e| e.from_source(&source))?;
        }
        Ok(())
    }
}

/// A TOML value in the string form every source shares: a list becomes a comma-separated string.
fn file_value_text(value: toml::Value, kind: ValueKind) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) if kind == ValueKind::List => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    // A comma inside one element would silently become two elements once joined.
                    toml::Value::String(s) if s.contains(',') => {
                        return Err(format!("has the element {s:?}, which contains a comma (one entry per element)"))
                    }
                    toml::Value::String(s) => texts.push(s),
                    other => {
                        return Err(format!("expected a list of strings, got an element that is {}", other.type_str()))
                    }
                }
            }
            Ok(texts.join(","))
        }
        other if kind == ValueKind::List => {
            Err(format!("expected a list of strings or a comma-separated string, got {}", other.type_str()))
        }
        other => Err(format!("expected a string, number or boolean, got {}", other.type_str())),
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            keepalive_timeout: Duration::ZERO,
            keepalive_requests: 0,
            header_timeout: Duration::ZERO,
            body_timeout: Duration::ZERO,
            send_timeout: Duration::ZERO,
            park_after: Duration::ZERO,
            max_header_bytes: 0,
            max_headers: 0,
            max_uri_bytes: 0,
            max_body_bytes: 0,
            max_connections: 0,
            max_connections_per_ip: 0,
            new_connections_per_ip_per_second: 0.0,
            new_connections_per_ip_burst: 0,
            publishes_per_ip_per_second: 0.0,
            publishes_per_ip_burst: 0,
            trusted_proxies: Vec::new(),
            tcp_keepalive_idle: Duration::ZERO,
            tcp_keepalive_interval: Duration::ZERO,
            tcp_keepalive_count: 0,
            shutdown_timeout: Duration::ZERO,
            drain_seconds: Duration::ZERO,
            enable_conformance_echo: false,
            longpoll_timeout: Duration::ZERO,
            heartbeat_interval: Duration::ZERO,
            heartbeat_min: Duration::ZERO,
            heartbeat_max: Duration::ZERO,
            sse_retry: Duration::ZERO,
            history_messages: 0,
            history_seconds: Duration::ZERO,
            history_max_bytes: 0,
            max_channels: 0,
            broker: String::new(),
            history_store: String::new(),
            data_dir: String::new(),
            durability: String::new(),
            durability_interval: Duration::ZERO,
            max_pending_bytes: 0,
            cors_origins: Vec::new(),
            heartbeat_timeout: Duration::ZERO,
            ws_max_message_bytes: 0,
            ws_client_publish: false,
            ws_deflate: false,
            worker_threads: 0,
            push_threads: 0,
            push_spread_after: 1024,
            log_format: LogFormat::Text,
            jwt_secret: Secret::default(),
            jwt_public_key: String::new(),
            jwt_allow_no_exp: false,
            metrics_public: false,
            tls_cert: String::new(),
            tls_key: String::new(),
        };
        // The table is the one place defaults are written; a bad default is a bug caught by tests.
        for key in KEYS {
            if let Err(e) = (key.set)(&mut config, key.default) {
                panic!("default of {} does not parse: {e}", key.name);
            }
        }
        config
    }
}

/// A configuration value that cannot be used. Displays as one readable line naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    source: String,
    problem: String,
}

impl ConfigError {
    fn unknown_key(key: &str) -> ConfigError {
        ConfigError { key: key.to_string(), source: String::new(), problem: "unknown configuration key".to_string() }
    }

    /// Records where the value came from (`--keepalive-timeout`, `HOLDFAST_…`, a file).
    pub fn from_source(mut self, source: &str) -> ConfigError {
        self.source = source.to_string();
        self
    }

    /// The key that was wrong.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.key)?;
        if !self.source.is_empty() {
            write!(f, " (from {})", self.source)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// One configuration key.
pub struct Key {
    /// The key as written in the TOML file; the flag is `--` + dashes, the env var `HOLDFAST_` + upper case.
    pub name: &'static str,
    /// The default, in the same syntax a user writes.
    pub default: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// What sort of value it takes: decides the flag's shape and which TOML types a file may use.
    pub kind: ValueKind,
    set: fn(&mut Config, &str) -> Result<(), String>,
    /// Its value in a configuration, for comparing two and for the reload's log line (a
    /// [`Secret`] shows redacted, so compare those with [`Key::same`]).
    show: fn(&Config) -> String,
    /// Copies its value from one configuration to another (a reload keeps what needs a restart).
    keep: fn(&mut Config, &Config),
}

impl Key {
    /// Whether a SIGHUP reload applies a new value of this key at once (see [`LIVE_KEYS`]).
    pub fn is_live(&self) -> bool {
        LIVE_KEYS.contains(&self.name)
    }

    /// Whether the key has the same value in both.
    pub fn same(&self, a: &Config, b: &Config) -> bool {
        // `jwt_secret` is the one key whose shown form hides its value.
        if self.name == "jwt_secret" {
            return a.jwt_secret == b.jwt_secret;
        }
        (self.show)(a) == (self.show)(b)
    }

    /// Its value in `config`, as the reload's log line writes it.
    pub fn show(&self, config: &Config) -> String {
        (self.show)(config)
    }

    /// Sets its value in `to` to the one in `from`.
    pub fn keep(&self, to: &mut Config, from: &Config) {
        (self.keep)(to, from)
    }
}

/// The keys a SIGHUP applies without a restart: what is read when a request, a connection or a
/// timer needs it, not when the server starts. New values apply to what begins after the reload
/// (a request read, a timer armed, a connection accepted); nothing open is dropped. Any other
/// key that differs in the re-read configuration keeps its old value until a restart.
pub const LIVE_KEYS: &[&str] = &[
    "keepalive_timeout",
    "keepalive_requests",
    "header_timeout",
    "body_timeout",
    "send_timeout",
    "park_after",
    "max_header_bytes",
    "max_headers",
    "max_uri_bytes",
    "max_body_bytes",
    "max_connections_per_ip",
    "new_connections_per_ip_per_second",
    "new_connections_per_ip_burst",
    "publishes_per_ip_per_second",
    "publishes_per_ip_burst",
    "trusted_proxies",
    "shutdown_timeout",
    "drain_seconds",
    "enable_conformance_echo",
    "longpoll_timeout",
    "heartbeat_interval",
    "heartbeat_min",
    "heartbeat_max",
    "sse_retry",
    "max_pending_bytes",
    "cors_origins",
    "heartbeat_timeout",
    "ws_max_message_bytes",
    "ws_client_publish",
    "ws_deflate",
];

/// What sort of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); a bare `--flag` means `true`.
    Bool,
    /// Several strings: a TOML array, or one comma-separated string (the only form env and flags have).
    List,
    /// One value: a string, a number, a duration or a size.
    Single,
}

/// The kind follows from the parser, so the table cannot declare one kind and parse another.
macro_rules! value_kind {
    (parse_bool) => {
        ValueKind::Bool
    };
    (parse_origins) => {
        ValueKind::List
    };
    (parse_cidrs) => {
        ValueKind::List
    };
    ($other:ident) => {
        ValueKind::Single
    };
}

macro_rules! key {
    ($name:ident, $default:expr, $parse:ident, $help:expr) => {
        Key {
            name: stringify!($name),
            default: $default,
            help: $help,
            kind: value_kind!($parse),
            set: |config, value| {
                config.$name = $parse(value)?;
                Ok(())
            },
            show: |config| format!("{:?}", config.$name),
            keep: |to, from| to.$name = from.$name.clone(),
        }
    };
}

/// The shortest heartbeat interval accepted anywhere: below it the shards would do little else.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Every configuration key, with its default.
pub const KEYS: &[Key] = &[
    key!(listen, "127.0.0.1:7700", parse_addr, "address and port to listen on"),
    key!(keepalive_timeout, "75s", parse_duration, "idle time allowed between requests on a persistent connection"),
    key!(keepalive_requests, "1000", parse_count_u32, "requests per connection before it is closed"),
    key!(header_timeout, "10s", parse_duration, "time allowed to send a request head (408 after)"),
    key!(body_timeout, "30s", parse_duration, "time allowed between two reads of a request body (408 after)"),
    key!(send_timeout, "30s", parse_duration, "time allowed for a peer to take a response's bytes"),
    key!(park_after, "1s", parse_duration, "idle time after which a connection is parked outside the runtime (memory)"),
    key!(max_header_bytes, "16KiB", parse_size_usize, "request line plus header fields (431 above)"),
    key!(max_headers, "100", parse_count_usize, "header fields per request, at most 128 (431 above)"),
    key!(max_uri_bytes, "8KiB", parse_size_usize, "request-target length (414 above)"),
    key!(max_body_bytes, "1MiB", parse_size_u64, "request body size (413 above)"),
    key!(max_connections, "0", parse_count_usize, "open connections, 0 = from the file-descriptor limit (503 above)"),
    // The limits per client are off by default: offices, schools and mobile carriers put many
    // users behind one address (NAT, CGNAT), and a limit on by default would refuse them without
    // the operator knowing why. `max_connections` bounds the server meanwhile; an instance on the
    // open internet should set them (README, "Limits per client").
    key!(
        max_connections_per_ip,
        "0",
        parse_count_u32,
        "open connections from one client IP (IPv6: its /64; always the TCP peer), 0 = no limit (429 above)"
    ),
    key!(
        new_connections_per_ip_per_second,
        "0",
        parse_rate,
        "new connections a second from one client IP (token bucket), 0 = no limit (429 above)"
    ),
    key!(
        new_connections_per_ip_burst,
        "0",
        parse_count_u32,
        "new connections one client IP may open at once, 0 = one second's worth"
    ),
    key!(
        publishes_per_ip_per_second,
        "0",
        parse_rate,
        "publishes a second from one client IP (POST /pub and the WebSocket op), 0 = no limit (429 above)"
    ),
    key!(publishes_per_ip_burst, "0", parse_count_u32, "publishes one client IP may make at once, 0 = one second's worth"),
    key!(
        trusted_proxies,
        "",
        parse_cidrs,
        "proxies (CIDRs) whose X-Forwarded-For / Forwarded name the client for the publish limit and logs"
    ),
    key!(tcp_keepalive_idle, "60s", parse_duration, "TCP keepalive: idle time before the first probe"),
    key!(tcp_keepalive_interval, "10s", parse_duration, "TCP keepalive: time between probes"),
    key!(
        tcp_keepalive_count,
        "5",
        parse_count_u32,
        "TCP keepalive: unanswered probes before the connection is dropped"
    ),
    // Above `drain_seconds`, so the default spread is whole and the last closes have time to flush.
    key!(shutdown_timeout, "15s", parse_duration, "bound on a graceful shutdown (SIGTERM/SIGINT, POST /admin/drain)"),
    key!(
        drain_seconds,
        "10s",
        parse_duration,
        "a drain closes streaming subscribers spread over this long (at most 4/5 of shutdown_timeout); 0 = all at once"
    ),
    key!(enable_conformance_echo, "false", parse_bool, "serve POST /_conformance/echo (testing only)"),
    key!(longpoll_timeout, "30s", parse_duration, "how long a long poll is held before an empty answer"),
    key!(heartbeat_interval, "25s", parse_duration, "heartbeat period on streaming transports"),
    key!(heartbeat_min, "5s", parse_duration, "shortest heartbeat a subscriber may ask for (?heartbeat=SECONDS)"),
    key!(heartbeat_max, "300s", parse_duration, "longest heartbeat a subscriber may ask for (?heartbeat=SECONDS)"),
    key!(sse_retry, "2s", parse_duration, "reconnection delay announced to SSE clients (retry:)"),
    key!(history_messages, "1000", parse_count_usize, "messages kept per channel"),
    key!(history_seconds, "3600", parse_duration, "age after which a message leaves the history"),
    key!(history_max_bytes, "256MiB", parse_size_u64, "bytes of history kept over all channels"),
    key!(max_channels, "1000000", parse_count_usize, "channels held at once (503 for a new one above)"),
    key!(
        broker,
        "memory",
        parse_broker,
        "memory (this process), or redis://host:port/db, redis+cluster://host:port,host:port or redis-sentinel://host:port/db?sentinelServiceName=NAME shared by several nodes"
    ),
    key!(
        history_store,
        "memory",
        parse_history_store,
        "where the embedded broker keeps histories: memory, or disk (in data_dir, kept across restarts)"
    ),
    key!(data_dir, "holdfast-data", parse_dir, "directory of the disk history store (history_store = disk)"),
    key!(
        durability,
        "batch",
        parse_durability,
        "disk store: none (written to the OS before a publish is answered), batch (synced every durability_interval), always (synced before a publish is answered)"
    ),
    key!(durability_interval, "100ms", parse_duration, "disk store, durability = batch: longest time a write waits for its sync"),
    key!(max_pending_bytes, "1MiB", parse_size_u64, "how far a streaming subscriber may fall behind before it is cut"),
    key!(
        cors_origins,
        "",
        parse_origins,
        "other origins whose pages may read (CORS), publish and act here: empty = none, * = any, or a list of origins and patterns like https://*.example.com"
    ),
    key!(heartbeat_timeout, "60s", parse_duration, "WebSocket: close a peer silent (no pong, no frame) for this long"),
    key!(ws_max_message_bytes, "1MiB", parse_size_usize, "WebSocket: largest message a client may send (1009 above)"),
    key!(ws_client_publish, "false", parse_bool, "WebSocket: allow clients to publish with {\"op\":\"publish\"}"),
    key!(
        ws_deflate,
        "false",
        parse_bool,
        "WebSocket: compress messages with permessage-deflate for clients that offer it"
    ),
    key!(worker_threads, "0", parse_count_usize, "runtime threads for connections; 0 = cores - 1 (at least 1)"),
    key!(push_threads, "0", parse_count_usize, "push shard threads for subscribers; 0 = one per core (at most 64)"),
    key!(
        push_spread_after,
        "1024",
        parse_count_usize,
        "a channel's subscribers share one push shard until it has this many, then spread over all; 0 = always spread"
    ),
    key!(
        log_format,
        "text",
        parse_log_format,
        "log lines on stderr: text (coloured on a terminal) or json (one object a line)"
    ),
    key!(jwt_secret, "", parse_secret, "HS256 secret for access tokens; with it (or jwt_public_key) every endpoint but the public pages needs a token"),
    key!(jwt_public_key, "", parse_public_key, "PEM public key file for access tokens (RS256, ES256 or EdDSA, from the key type)"),
    key!(jwt_allow_no_exp, "false", parse_bool, "accept access tokens without exp (they never expire)"),
    key!(metrics_public, "false", parse_bool, "serve /metrics without a token when access control is on"),
    key!(tls_cert, "", parse_path, "PEM certificate chain; with tls_key the listener speaks TLS (HTTPS, WSS) only; reloaded on SIGHUP"),
    key!(tls_key, "", parse_path, "PEM private key of tls_cert (PKCS#8, PKCS#1 or SEC1)"),
];

/// A duration: plain seconds (`75`, `0.5`) or a number with a unit (`500ms`, `75s`, `2m`, `1h`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    const HINT: &str = "is not a duration (use e.g. 75, 500ms, 75s, 2m, 1h)";
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| HINT.to_string())?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => number,
        "ms" => number / 1000.0,
        "m" | "min" | "mins" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(HINT.to_string()),
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(HINT.to_string());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A size in bytes: plain (`16384`) or with a unit (`16KiB`, `16k`, `1MiB`, `1m`, `1GiB`); units
/// are binary (1 k = 1024), as in nginx.
pub fn parse_size(value: &str) -> Result<u64, String> {
    const HINT: &str = "is not a size (use e.g. 16384, 16KiB, 1MiB)";
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| HINT.to_string())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(HINT.to_string()),
    };
    number.checked_mul(multiplier).ok_or_else(|| "is too large".to_string())
}

fn parse_size_u64(value: &str) -> Result<u64, String> {
    parse_size(value)
}

fn parse_size_usize(value: &str) -> Result<usize, String> {
    usize::try_from(parse_size(value)?).map_err(|_| "is too large".to_string())
}

fn parse_count_usize(value: &str) -> Result<usize, String> {
    value.parse().map_err(|_| "is not a whole number".to_string())
}

/// Events a second: a number, fractions allowed (`0.5` = one every two seconds).
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err("is not a rate (events a second, e.g. 10 or 0.5; 0 = no limit)".to_string()),
    }
}

fn parse_count_u32(value: &str) -> Result<u32, String> {
    value.parse().map_err(|_| "is not a whole number below 4294967296".to_string())
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| "is not an address:port (e.g. 127.0.0.1:7700)".to_string())
}

fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value.split(',').map(str::trim).filter(|o| !o.is_empty()).map(String::from).collect();
    for origin in &origins {
        crate::origin::check_entry(origin).map_err(|problem| format!("has {origin:?}, {problem}"))?;
    }
    Ok(origins)
}

fn parse_history_store(value: &str) -> Result<String, String> {
    match value.trim() {
        word @ ("memory" | "disk") => Ok(word.to_string()),
        _ => Err("is not memory or disk".to_string()),
    }
}

fn parse_durability(value: &str) -> Result<String, String> {
    match value.trim() {
        word @ ("none" | "batch" | "always") => Ok(word.to_string()),
        _ => Err("is not none, batch or always".to_string()),
    }
}

fn parse_dir(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Err("is empty".to_string()),
        path => Ok(path.to_string()),
    }
}

fn parse_broker(value: &str) -> Result<String, String> {
    let value = value.trim();
    let known = ["redis://", "redis+cluster://", "redis-cluster://", "redis-sentinel://"];
    if value == "memory" || known.iter().any(|scheme| value.starts_with(scheme)) {
        Ok(value.to_string())
    } else {
        Err("is not memory or a redis://, redis+cluster://, redis-sentinel:// URL".to_string())
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("is not a log format (text or json)".to_string()),
    }
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::from(value))
}

/// A key file path, read and checked now, so a bad key stops the server at start (exit 2).
fn parse_public_key(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    crate::auth::load_public_key(value).map(|_| value.to_string())
}

/// A file's path, read when the server starts (and, for TLS, on SIGHUP).
fn parse_path(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("is not a boolean (true or false)".to_string()),
    }
}

/// Checks relations between keys that no single parser can see.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let bad = |key: &str, problem: &str| {
        Err(ConfigError { key: key.to_string(), source: String::new(), problem: problem.to_string() })
    };
    if config.keepalive_requests == 0 {
        return bad("keepalive_requests", "must be at least 1");
    }
    if config.push_threads > MAX_PUSH_THREADS {
        return bad("push_threads", "must be at most 64");
    }
    if config.max_headers == 0 || config.max_headers > holdfast_proto::http1::request::MAX_HEADERS_CAP {
        return bad("max_headers", "must be between 1 and 128");
    }
    if config.max_channels == 0 {
        return bad("max_channels", "must be at least 1 (no channel could be created)");
    }
    if config.max_header_bytes < 256 {
        return bad("max_header_bytes", "must be at least 256 bytes");
    }
    if config.heartbeat_interval < MIN_HEARTBEAT || config.heartbeat_min < MIN_HEARTBEAT {
        return bad("heartbeat_interval", "heartbeat_interval and heartbeat_min must be at least 100ms");
    }
    if config.heartbeat_min > config.heartbeat_max {
        return bad("heartbeat_min", "must not be above heartbeat_max");
    }
    if config.tls_cert.is_empty() != config.tls_key.is_empty() {
        return bad("tls_cert", "tls_cert and tls_key go together: set both (TLS) or neither (plain HTTP)");
    }
    if config.history_store == "disk" && config.broker != "memory" && !config.broker.is_empty() {
        return bad(
            "history_store",
            "disk keeps the embedded broker's histories; with a Redis broker they live in Redis (see its appendonly setting)",
        );
    }
    if config.history_store == "disk" && config.durability == "batch" && config.durability_interval.is_zero() {
        return bad("durability_interval", "must be above 0 with durability = batch (or use always)");
    }
    if config.keepalive_timeout.is_zero() || config.header_timeout.is_zero() || config.body_timeout.is_zero() {
        return bad("timeouts", "keepalive_timeout, header_timeout and body_timeout must be above 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_validates() {
        let config = Config::default();
        assert_eq!(config.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(config.max_header_bytes, 16 * 1024);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        validate(&config).unwrap();
    }

    #[test]
    fn durations_take_plain_seconds_and_units() {
        let cases = [
            ("75", 75_000),
            ("500ms", 500),
            ("75s", 75_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0.25", 250),
            (" 3 s", 3_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration(text.trim()), Ok(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "abc", "5x", "-1", "1.2.3s", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("16k"), Ok(16384));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("1.5k").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn bad_value_names_the_key_in_one_line() {
        let mut config = Config::default();
        let err = config.set("keepalive_timeout", "soon").unwrap_err().from_source("--keepalive-timeout");
        let line = err.to_string();
        assert!(
            line.starts_with("invalid configuration: keepalive_timeout (from --keepalive-timeout): \"soon\""),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert_eq!(config.set("no_such_key", "1").unwrap_err().key(), "no_such_key");
    }

    #[test]
    fn file_values_apply_and_report_their_key() {
        let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("good.toml");
        std::fs::write(&path, "keepalive_timeout = 5\nmax_body_bytes = \"2MiB\"\nenable_conformance_echo = true\n")
            .unwrap();
        let mut config = Config::default();
        config.apply_file(&path).unwrap();
        assert_eq!(config.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(config.max_body_bytes, 2 << 20);
        assert!(config.enable_conformance_echo);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "header_timeout = \"later\"\n").unwrap();
        let err = Config::default().apply_file(&bad).unwrap_err();
        assert_eq!(err.key(), "header_timeout");
        assert!(err.to_string().contains("bad.toml"));
    }

    /// A file in a fresh temporary directory, holding `text`.
    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn list_keys_take_a_toml_array_or_a_comma_separated_string() {
        let array = temp_file("array.toml", "cors_origins = [\"https://a.example\", \"https://b.example\"]\n");
        let mut config = Config::default();
        config.apply_file(&array).unwrap();
        assert_eq!(config.cors_origins, ["https://a.example", "https://b.example"]);
        assert!(config.allows_origin("https://b.example") && !config.allows_origin("https://c.example"));

        let patterns =
            temp_file("patterns.toml", "cors_origins = [\"https://*.example.com\", \"http://127.0.0.1:8000\"]\n");
        let mut config = Config::default();
        config.apply_file(&patterns).unwrap();
        assert!(config.allows_origin("https://a.example.com") && config.allows_origin("http://127.0.0.1:8000"));
        assert!(!config.allows_origin("https://example.com") && !config.allows_origin("http://a.example.com"));

        let string = temp_file("string.toml", "cors_origins = \"https://a.example, https://b.example\"\n");
        let mut config = Config::default();
        config.apply_file(&string).unwrap();
        assert_eq!(config.cors_origins, ["https://a.example", "https://b.example"]);

        let empty = temp_file("empty.toml", "cors_origins = []\n");
        let mut config = Config { cors_origins: vec!["*".into()], ..Config::default() };
        config.apply_file(&empty).unwrap();
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn wrong_toml_types_get_one_line_naming_the_key() {
        let cases = [
            ("cors_origins = [\"https://a.example\", 3]\n", "cors_origins", "expected a list of strings"),
            ("cors_origins = [\"https://a.example,https://b.example\"]\n", "cors_origins", "contains a comma"),
            ("cors_origins = { a = 1 }\n", "cors_origins", "got table"),
            ("listen = [\"127.0.0.1:1\"]\n", "listen", "got array"),
            ("[ws_deflate]\nvalue = true\n", "ws_deflate", "got table"),
            ("cors_origins = [\"ftp://a.example\"]\n", "cors_origins", "not * or an origin"),
            ("cors_origins = [\"https://*.com\"]\n", "cors_origins", "top-level domain"),
            ("cors_origins = [\"https://a.*.example.com\"]\n", "cors_origins", "whole leftmost label"),
            ("no_such_key = [1]\n", "no_such_key", "unknown configuration key"),
        ];
        for (text, key, problem) in cases {
            let path = temp_file("wrong.toml", text);
            let err = Config::default().apply_file(&path).unwrap_err();
            let line = err.to_string();
            assert_eq!(err.key(), key, "{text}: {line}");
            assert!(line.contains(problem) && line.contains("wrong.toml") && !line.contains('\n'), "{text}: {line}");
        }
    }

    #[test]
    fn booleans_take_the_usual_spellings() {
        let mut config = Config::default();
        for (text, want) in [("true", true), ("0", false), ("1", true), ("FALSE", false), ("on", true), ("no", false)] {
            config.set("ws_deflate", text).unwrap();
            assert_eq!(config.ws_deflate, want, "{text}");
        }
        assert!(config.set("ws_deflate", "maybe").is_err());
        assert_eq!(KEYS.iter().filter(|k| k.kind == ValueKind::Bool).count(), 5);
        let lists = ["cors_origins", "trusted_proxies"];
        assert!(KEYS.iter().filter(|k| k.kind == ValueKind::List).all(|k| lists.contains(&k.name)));
    }

    #[test]
    fn client_limit_keys_take_rates_and_cidr_lists() {
        let mut config = Config::default();
        config.set("publishes_per_ip_per_second", "0.5").unwrap();
        assert_eq!(config.publishes_per_ip_per_second, 0.5);
        assert!(config.set("publishes_per_ip_per_second", "-1").is_err());
        assert!(config.set("new_connections_per_ip_per_second", "fast").is_err());
        config.set("trusted_proxies", "10.0.0.0/8, 2001:db8::/32").unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        let line = config.set("trusted_proxies", "10.0.0.0/40").unwrap_err().to_string();
        assert!(line.contains("trusted_proxies") && line.contains("prefix"), "{line}");
        let array = temp_file("proxies.toml", "trusted_proxies = [\"127.0.0.1\", \"::1\"]\n");
        config.apply_file(&array).unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
    }

    #[test]
    fn log_format_is_text_or_json() {
        let mut config = Config::default();
        assert_eq!(config.log_format, LogFormat::Text);
        config.set("log_format", "json").unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        let line = config.set("log_format", "xml").unwrap_err().to_string();
        assert!(line.contains("log_format") && line.contains("text or json"), "{line}");
    }

    /// The annotated example at the repository root parses, sets every key in `KEYS` to its
    /// default, and has a comment above each, so it cannot fall behind the table.
    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../holdfast.example.toml"));
        let mut config = Config::default();
        config.apply_file(path).unwrap();
        assert_eq!(
            format!("{config:?}"),
            format!("{:?}", Config::default()),
            "a value in the example is not the default"
        );

        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for key in KEYS {
            let at = lines.iter().position(|l| l.starts_with(&format!("{} = ", key.name)));
            let at = at.unwrap_or_else(|| panic!("holdfast.example.toml lacks {}", key.name));
            assert!(at > 0 && lines[at - 1].starts_with("# "), "{} has no comment above it", key.name);
        }
    }
}
