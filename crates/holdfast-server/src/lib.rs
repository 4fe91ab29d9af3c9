//! The Holdfast server: a listener, one task per active connection driving the HTTP/1.x
//! keep-alive loop, a parking lot for idle connections, the router and the admin endpoints.
//!
//! Entry point: [`run`], which takes a bound listener (so tests own their port), a [`Config`] and a
//! shutdown future, and returns once a graceful drain has finished or hit `shutdown_timeout`.
//!
//! # Layout
//!
//! Dependencies point one way, down this picture; nothing below imports anything above it.
//!
//! ```text
//! listener ──> conn ──> router ─────────────> publish, metrics, cors, assets
//!               │  └──> transport (poll, stream, websocket, ws_echo)
//!               └─────> push (shards: streaming subscribers, WebSocket ops, held long polls)
//!                        park (idle keep-alive connections)
//! ─────────────────────────── leaves ────────────────────────────────────────────
//! sub_request   what a GET /sub request asks for (transport, positions, heartbeat)
//! subscription  names, the channel cap, start positions, gaps, cursors, refusals
//! poll_answer   what a poll answers, for the task and the shards alike
//! handover      what travels with a socket from the runtime to a shard
//! wire          each streaming format's framing and notices; a socket's pending bytes
//! socket        ConnState, idle deadlines, close reasons, socket I/O with deadlines; a
//!               connection's Link (its socket and TLS session) and the rustls session itself
//! limits        limits per client IP: the table of clients, token buckets, trusted proxies
//! drain         a graceful drain's arithmetic: each subscriber's close time, the jitters
//! stats, recent_closes, config, response, query, origin (what an Origin is; cors_origins entries)
//! ```
//!
//! - `listener`: the accept loop, the connection cap, socket options.
//! - `conn`: the per-connection keep-alive loop; hands a connection to `park` when idle, to
//!   `push` when its response becomes a stream (or a long poll must wait).
//! - `park`: idle connections outside the runtime; hands one back through the function `run`
//!   gives it (a new `conn` task), so it does not depend on `conn`.
//! - `push`: the shards that own streaming sockets; an answered long poll's connection waits
//!   there for its next request (a long poll is served there too, parsed with `sub_request`;
//!   anything else goes back to a `conn` task through the function `run` gives it).
//! - `assets`: the embedded web files (the browser client, the landing page, the dashboard, the
//!   chat demo) with their ETags and gzipped bodies.
//! - `admin_feed`: `GET /admin/events`, the dashboard's feed: a snapshot a second published on
//!   an internal channel of the node-local broker, which viewers subscribe to like any stream.
//! - `reload`: SIGHUP. The configuration is read again through the function `run_reloadable` is
//!   given, and its live keys (`config::LIVE_KEYS`) swapped in whole; the TLS files read again.
//! - `router`, `publish`, `transport`: what to answer. Handlers take what they use (the broker,
//!   the configuration, the counters), not the whole server; only the orchestrators (`listener`,
//!   `conn`, `park`, `push`, `router` for the admin endpoints) see the `Server` state.

mod admin_feed;
mod assets;
mod auth;
pub mod config;
mod conn;
mod cors;
mod drain;
pub mod fuzzing;
mod handover;
mod histogram;
mod limits;
mod listener;
mod metrics;
mod origin;
mod park;
mod poll_answer;
mod publish;
mod push;
mod query;
mod recent_closes;
mod reload;
mod response;
mod router;
mod socket;
pub mod stats;
mod sub_request;
mod subscription;
mod transport;
mod wire;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_hub::{Broker, HistoryLimits, MemoryBroker};
use holdfast_proto::Limits;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{Config, ConfigError};
pub use reload::ConfigSource;
pub use socket::CloseReason;
pub use stats::{Stats, StatsSnapshot};

/// File descriptors kept free below the process limit when `max_connections` is derived from it:
/// the listener, the pollers, logs, and room to accept and refuse (503) the connections beyond.
const FD_RESERVE: usize = 64;

/// How often expired history is dropped from quiet channels.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How long the server waits for a network broker's connection before it listens anyway.
const BROKER_CONNECT_WAIT: Duration = Duration::from_secs(3);

/// State shared by every connection of one server.
pub(crate) struct Server {
    /// The configuration: read through [`Server::config`], replaced whole by a SIGHUP reload
    /// (`reload`), which changes only the keys in [`config::LIVE_KEYS`].
    config: arc_swap::ArcSwap<Config>,
    pub stats: Arc<Stats>,
    /// The runtime, for what a push shard hands off (a publish or subscribe op that must wait
    /// on a network broker).
    pub runtime: tokio::runtime::Handle,
    /// Open connections allowed; beyond it new ones get 503.
    pub max_connections: usize,
    /// Set once a graceful shutdown begins: no new keep-alive, idle connections close.
    draining: AtomicBool,
    /// Wakes connections idling in the runtime when draining begins.
    pub drain_started: Notify,
    /// Wakes the drain when the last connection closes.
    all_closed: Notify,
    /// `POST /admin/drain` asks `run` to drain as a signal would (a stored permit: asked before
    /// `run` waits on it still counts).
    drain_requested: Notify,
    next_connection_id: AtomicU64,
    pub parking: park::ParkingLot,
    pub broker: Arc<dyn Broker>,
    /// Node-local channels only the server uses (the dashboard's feed), whatever `broker` is:
    /// delivered by the push shards like any channel, never shared with other nodes.
    pub local: Arc<MemoryBroker>,
    pub feed: admin_feed::Feed,
    /// The last connection closes, for the dashboard.
    pub recent_closes: recent_closes::RecentCloses,
    pub push: Arc<push::PushHub>,
    pub started: Instant,
    /// Limits per client IP (`max_connections_per_ip`, the rates, `trusted_proxies`).
    pub client_limits: limits::ClientLimits,
    /// Access control (`jwt_secret`, `jwt_public_key`); `None` when off.
    pub auth: Option<auth::Auth>,
    /// TLS (`tls_cert`, `tls_key`); `None` for plain HTTP.
    pub tls: Option<socket::tls::ServerTls>,
}

impl Server {
    fn new(config: Config) -> io::Result<Arc<Server>> {
        let fd_room = fd_limit().saturating_sub(FD_RESERVE).max(1);
        let max_connections = match config.max_connections {
            0 => fd_room,
            n => {
                if n > fd_room {
                    tracing::warn!(max_connections = n, fd_room, "max_connections is above what the file-descriptor limit allows; accepts beyond it will wait for descriptors");
                }
                n
            }
        };
        let (parking, poll) = park::ParkingLot::new()?;
        let limits = HistoryLimits {
            messages: config.history_messages,
            max_age: config.history_seconds,
            max_bytes: config.history_max_bytes,
        };
        let embedded = config.broker == "memory" || config.broker.is_empty();
        let broker: Arc<dyn Broker> = if embedded && config.history_store == "disk" {
            Arc::new(open_disk_store(&config, limits)?)
        } else if embedded {
            Arc::new(MemoryBroker::new(limits).with_max_channels(config.max_channels))
        } else {
            let redis =
                holdfast_redis::RedisConfig { url: config.broker.clone(), limits, max_channels: config.max_channels };
            Arc::new(
                holdfast_redis::RedisBroker::connect(redis)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("broker: {e}")))?,
            )
        };
        let auth = auth::Auth::from_config(&config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = if config.tls_cert.is_empty() {
            None
        } else {
            let loaded = socket::tls::ServerTls::load(config.tls_cert.as_ref(), config.tls_key.as_ref());
            Some(loaded.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
        };
        let (push, push_polls) = push::PushHub::new(config.push_shards(), config.push_spread_after)?;
        let server = Arc::new(Server {
            push: Arc::new(push),
            broker,
            local: Arc::new(admin_feed::local_broker()),
            feed: admin_feed::Feed::default(),
            recent_closes: Default::default(),
            client_limits: limits::ClientLimits::new(&config),
            parking,
            config: arc_swap::ArcSwap::from_pointee(config),
            stats: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
            max_connections,
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            all_closed: Notify::new(),
            drain_requested: Notify::new(),
            next_connection_id: AtomicU64::new(1),
            started: Instant::now(),
            auth,
            tls,
        });
        let resume = resume_in(tokio::runtime::Handle::current(), &server);
        server.parking.start(poll, Arc::downgrade(&server), resume.clone())?;
        server.push.start(push_polls, Arc::downgrade(&server), resume)?;
        server.broker.add_listener(server.push.clone());
        server.local.add_listener(server.push.clone());
        Ok(server)
    }

    /// The configuration now. A SIGHUP may replace it between two calls, so a request reads it
    /// once where its values must agree, and nothing holds it across an `.await` (copy the
    /// values out). The load is lock-free and touches no shared cache line (arc-swap's debt
    /// slots are per thread), which is why a reload does not cost every request a lock.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The configuration now, for holding across an `.await`: an `Arc` of its own (one shared
    /// reference count touched, so not for every request).
    pub fn config_owned(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The parser limits of the configuration now (`max_header_bytes`, `max_body_bytes`, …).
    pub fn limits(&self) -> Limits {
        self.config().limits()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the same graceful drain as SIGTERM (`POST /admin/drain`); `run` returns when it ends.
    pub fn request_drain(&self) {
        self.drain_requested.notify_one();
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts and logs the end of a connection that was not a streaming subscriber (requests,
    /// polls, idle keep-alive): see [`Server::connection_closed_as`].
    pub fn connection_closed(&self, id: u64, peer: std::net::SocketAddr, served: u32, reason: CloseReason) {
        self.connection_closed_as("http", id, peer, served, reason);
    }

    /// Counts, records (for the dashboard) and logs the end of a connection, which was last
    /// serving `transport`: the one place every close goes through.
    pub fn connection_closed_as(
        &self,
        transport: &'static str,
        id: u64,
        peer: std::net::SocketAddr,
        served: u32,
        reason: CloseReason,
    ) {
        self.client_limits.release(peer.ip());
        self.count_close(transport, id, peer, served, reason);
    }

    /// Counts and logs a connection refused at accept (`max_connections`, the limits per client):
    /// it was never counted as its client's, so it is not released.
    pub fn connection_refused(&self, conn: socket::ConnState, reason: CloseReason) {
        self.count_close("http", conn.id, conn.peer(), conn.served, reason);
    }

    fn count_close(
        &self,
        transport: &'static str,
        id: u64,
        peer: std::net::SocketAddr,
        served: u32,
        reason: CloseReason,
    ) {
        let open = self.stats.connection_closed(reason);
        self.recent_closes.record(peer, transport, reason);
        // Behind a trusted proxy, the client it named (the TCP peer is the proxy).
        match self.client_limits.forget_client(id) {
            Some(client) => tracing::debug!(
                conn = id, peer = %client, via = %peer, requests = served, transport, reason = reason.label(),
                "connection closed"
            ),
            None => {
                tracing::debug!(conn = id, %peer, requests = served, transport, reason = reason.label(), "connection closed")
            }
        }
        if open == 0 && self.is_draining() {
            self.all_closed.notify_waiters();
        }
    }
}

/// How the parking lot hands back a connection whose next request arrived: a new runtime task
/// running the connection loop. (Given to the lot, so the lot does not depend on the loop.)
fn resume_in(runtime: tokio::runtime::Handle, server: &Arc<Server>) -> handover::Resume {
    let server = Arc::downgrade(server);
    Arc::new(move |stream, conn, idle| {
        let Some(server) = server.upgrade() else { return };
        runtime.spawn(async move {
            match socket::TaskLink::from_std(stream) {
                Ok(stream) => conn::serve(stream, server, conn, idle).await,
                Err(_) => server.connection_closed(conn.id, conn.peer(), conn.served, CloseReason::IoError),
            }
        });
    })
}

/// Serves HTTP on `listener` until `shutdown` completes (or `POST /admin/drain` asks), then drains:
/// `/healthz` answers 503 and new subscriptions 503 with `Retry-After` (the listener stays open so
/// load balancers hear it), idle connections close at once, in-flight requests finish (their
/// responses say `Connection: close`), held long polls are answered, streaming subscribers are
/// closed spread over `drain_seconds`, and `run` returns when every connection is closed or
/// `config.shutdown_timeout` has passed.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    run_reloadable(listener, config, shutdown, None).await
}

/// [`run`], with where a SIGHUP gets the configuration again (`holdfast serve`: the same file,
/// environment and flags as at start). The keys in [`config::LIVE_KEYS`] change at once, without
/// dropping a connection; the others are kept until a restart (logged); a configuration that
/// does not parse or validate is logged and changes nothing. Without a source, SIGHUP reloads
/// only the TLS certificate (as it does with one, too).
pub async fn run_reloadable(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    source: Option<ConfigSource>,
) -> io::Result<()> {
    config::validate(&config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let server = Server::new(config)?;
    if !server.broker.wait_connected(BROKER_CONNECT_WAIT).await {
        tracing::warn!(
            broker = %server.config().broker,
            "the broker is not reachable yet; publishes and new subscriptions answer 503 until it is"
        );
    }
    let scheme = if server.tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, max_connections = server.max_connections, "holdfast listening");
    // SIGHUP is taken over before the first connection (with or without TLS), so a reload sent
    // as soon as the server listens (`systemctl reload`) cannot meet the default action, which
    // ends the process.
    let reload = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(tokio::spawn(reload::on_sighup(Arc::downgrade(&server), hangups, source))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; nothing will be reloaded");
            None
        }
    };
    let expiry = tokio::spawn(expire_history(Arc::downgrade(&server)));
    let feed = tokio::spawn(admin_feed::run(Arc::downgrade(&server)));
    // A disk store's messages are read back while the server serves; damage found there stops
    // the server with the error (and exit code) it would have given at start.
    let mut damaged = None;
    let mut deadline = None;
    let drained = async {
        tokio::select! {
            _ = shutdown => {}
            _ = server.drain_requested.notified() => tracing::info!("POST /admin/drain: draining"),
            why = read_back(&server) => {
                tracing::error!(error = %why, "the history store is damaged: draining and stopping");
                damaged = Some(why);
            }
        }
        deadline = Some(drain(&server).await);
    };
    // The listener stays open while subscribers are drained: health checks get their 503.
    listener::accept_loop(listener, &server, drained).await;
    if let Some(deadline) = deadline {
        finish_drain(&server, deadline).await;
    }
    expiry.abort();
    feed.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    // Every connection is gone: what was accepted is made durable and the store marked closed.
    if server.broker.store().is_some() {
        server.broker.close().await;
        tracing::info!("history store closed");
    }
    match damaged {
        Some(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        None => Ok(()),
    }
}

/// Waits for the broker to have everything it keeps in its rings, logs what a disk store read
/// back, and resolves only if that found damage (with the store's error).
async fn read_back(server: &Server) -> String {
    match server.broker.read_back().await {
        Ok(()) => {
            if let Some(store) = server.broker.store() {
                let recovered = store.recovered;
                tracing::info!(
                    channels = recovered.channels,
                    messages = recovered.messages,
                    bytes = recovered.bytes,
                    millis = recovered.read_back_millis,
                    "history store read back"
                );
            }
            std::future::pending().await
        }
        Err(why) => why,
    }
}

/// Opens the disk history store (`history_store = "disk"`), reporting in one line what it
/// recovered (its channels; the messages follow while it serves, reported by [`read_back`]); a
/// store that cannot be opened or whose channel rows cannot be read is refused (`InvalidInput`:
/// exit 2).
fn open_disk_store(config: &Config, limits: HistoryLimits) -> io::Result<holdfast_store::DiskBroker> {
    let disk = holdfast_store::DiskConfig {
        dir: config.data_dir.clone().into(),
        durability: holdfast_store::Durability::parse(&config.durability).unwrap_or(holdfast_store::Durability::Batch),
        interval: config.durability_interval,
        limits,
        max_channels: config.max_channels,
        boot_id: holdfast_store::boot_id(),
    };
    let broker = holdfast_store::DiskBroker::open(disk)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let recovered = broker.recovered();
    tracing::info!(
        data_dir = %config.data_dir,
        durability = %config.durability,
        channels = recovered.channels,
        millis = recovered.millis,
        closed_cleanly = recovered.clean,
        new_epochs = recovered.continued,
        "history store opened"
    );
    if recovered.continued {
        tracing::warn!("the history store was left open by a machine that restarted: channels continue in new epochs, and cursors past what was kept get a gap notice");
    }
    Ok(broker)
}

/// How often a drain looks again whether what it waits for has come.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// The drain's first part, while the listener is open (health checks and new subscriptions get
/// their 503): closes the subscribers over the spread, and returns when none is left and the
/// spread is over (or no connection at all is left, or at `shutdown_timeout`), with the deadline
/// for [`finish_drain`].
///
/// It does not wait for every connection here: clients closed by the drain keep coming back
/// while the node still answers, each refused, so with a few thousand of them some refusal is
/// always in flight and "no connection open" may never come while the listener is open. Soaks
/// of 10,000 subscribers waited out the whole `shutdown_timeout` that way, then cut ~2,000
/// requests in the middle.
async fn drain(server: &Arc<Server>) -> tokio::time::Instant {
    let config = server.config_owned();
    let started = tokio::time::Instant::now();
    let deadline = started + config.shutdown_timeout;
    server.draining.store(true, Ordering::Release);
    server.drain_started.notify_waiters();
    server.parking.drain();
    let spread = config.drain_spread();
    if spread < config.drain_seconds {
        tracing::warn!(drain_seconds = ?config.drain_seconds, ?spread, "drain_seconds is capped at 4/5 of shutdown_timeout");
    }
    server.push.drain(spread);
    tracing::info!(open = server.stats.connections_open(), ?spread, "draining");
    let spread_end = started + spread;
    let stats = &server.stats;
    let subscribers_gone = || tokio::time::Instant::now() >= spread_end && stats.subscribers_open() == 0;
    wait_for(server, deadline, || stats.connections_open() == 0 || subscribers_gone()).await;
    tracing::info!(open = stats.connections_open(), "subscribers drained; closing the listener");
    deadline
}

/// The drain's end, the listener closed: waits for the connections still open (requests in
/// flight, refusals being answered) to close, at most until `deadline`.
async fn finish_drain(server: &Server, deadline: tokio::time::Instant) {
    if !wait_for(server, deadline, || server.stats.connections_open() == 0).await {
        tracing::warn!(open = server.stats.connections_open(), "shutdown_timeout reached; dropping the rest");
    }
    tracing::info!("stopped");
}

/// Waits until `done` holds, looking again each time the last connection closes and every
/// [`DRAIN_CHECK`], at most until `deadline`: whether it held.
async fn wait_for(server: &Server, deadline: tokio::time::Instant, done: impl Fn() -> bool) -> bool {
    loop {
        let all_closed = server.all_closed.notified();
        tokio::pin!(all_closed);
        all_closed.as_mut().enable();
        if done() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = tokio::time::timeout_at(deadline.min(now + DRAIN_CHECK), all_closed).await;
    }
}

/// Ages histories of channels nobody publishes to, and drops idle clients from the limits' table.
async fn expire_history(server: std::sync::Weak<Server>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        let Some(server) = server.upgrade() else { return };
        server.broker.expire();
        server.client_limits.sweep();
    }
}

/// The soft limit on open file descriptors (the binary raises it to the hard limit at start).
fn fd_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Raises the soft file-descriptor limit to the hard limit, so `max_connections` can use what the
/// system allows. Returns the new soft limit.
pub fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    fd_limit()
}

/// The size of one connection's future (what its task cell holds besides ~100 B of header), for
/// a test that keeps it from growing unnoticed.
#[doc(hidden)]
pub async fn connection_future_size() -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    let server = Server::new(Config::default()).expect("server");
    let state = socket::ConnState::new(0, peer);
    let idle = socket::IdleDeadline::first_request(&server.config());
    let future = conn::serve(socket::TaskLink::new(stream, None), server, state, idle);
    let size = std::mem::size_of_val(&future);
    drop((future, client));
    size
}

/// How long a lingering close waits for the peer to finish sending (RFC 9112 §9.6: close the
/// write side first, keep reading, so the peer gets our response rather than a reset).
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
