//! [`HttpPool`]: one HTTP client (connection pool, connector, settings) that any number of
//! publishers and subscribers can share, instead of each building its own.
//!
//! **Why share.** A reqwest client is a few kilobytes of its own (pool, connector, settings),
//! and each keeps its idle connections apart: a subscriber that built its own kept its first
//! short poll's connection idle next to its WebSocket for `pool_idle_timeout`, two descriptors per
//! subscription. Shared, those short polls reuse a handful of pooled connections, and a process
//! holding 10,000 subscriptions pays for one client (`bench/sdk.sh` measures both).
//!
//! **Why it is not the default.** A pooled connection belongs to the tokio runtime that opened it
//! (its socket is registered with that runtime's reactor, and hyper's dispatch task runs there).
//! A process-wide client silently shared by subscribers living on different runtimes (one per
//! test, a short-lived runtime in a thread) would hand one runtime's connections to another, and
//! they fail (or hang) once the first runtime is gone. So each publisher and subscriber keeps its
//! own client unless the caller passes a pool, which the caller then uses within one runtime.

use std::time::Duration;

use crate::error::{self, Result};
use crate::subscriber::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT};
use crate::tls::TlsOptions;

/// Default number of idle connections an [`HttpPool`] keeps per server.
pub const DEFAULT_POOL_MAX_IDLE: usize = 16;

/// A keep-alive HTTP client to share between publishers and subscribers (one `Arc` inside:
/// cloning is cheap and clones share the pool). Use it within the tokio runtime where its
/// connections are made (see the module docs).
///
/// ```no_run
/// # fn demo() -> holdfast_client::Result<()> {
/// use holdfast_client::{HttpPool, Subscriber};
/// let pool = HttpPool::new()?;
/// let subs = (0..10_000)
///     .map(|i| Subscriber::builder().channel(format!("user-{i}")).http_pool(&pool).build())
///     .collect::<Result<Vec<_>, _>>()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpPool {
    pub(crate) client: reqwest::Client,
}

impl HttpPool {
    /// A pool with the defaults: idle connections dropped after
    /// [`DEFAULT_POOL_IDLE_TIMEOUT`](crate::DEFAULT_POOL_IDLE_TIMEOUT), at most
    /// [`DEFAULT_POOL_MAX_IDLE`] kept per server, connects bounded by
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT), `https://` servers checked
    /// against the default [`TlsOptions`] (the web PKI).
    pub fn new() -> Result<HttpPool> {
        HttpPool::with(DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_MAX_IDLE)
    }

    /// A pool that drops connections idle for `idle_timeout` (keep it below the server's
    /// `keepalive_timeout`), bounds connects by `connect_timeout` and keeps at most `max_idle`
    /// idle connections per server (0: a new connection for every request).
    pub fn with(idle_timeout: Duration, connect_timeout: Duration, max_idle: usize) -> Result<HttpPool> {
        HttpPool::with_tls(idle_timeout, connect_timeout, max_idle, &TlsOptions::default())
    }

    /// As [`HttpPool::with`], checking `https://` servers against `tls` (a private CA, say). The
    /// pool's TLS options are the ones its requests use, whatever the publishers and
    /// subscribers that share it were given.
    pub fn with_tls(
        idle_timeout: Duration,
        connect_timeout: Duration,
        max_idle: usize,
        tls: &TlsOptions,
    ) -> Result<HttpPool> {
        Ok(HttpPool { client: http_client(idle_timeout, connect_timeout, max_idle, tls)? })
    }
}

/// The reqwest client behind publishers and polls: a keep-alive pool whose idle timeout is below
/// the server's, HTTP/1.1 (over TLS with the SDK's rustls configuration for `https://`), no
/// proxy lookup.
pub(crate) fn http_client(
    idle: Duration,
    connect: Duration,
    max_idle: usize,
    tls: &TlsOptions,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        // Always given (reqwest is built without a provider of its own, so it must never make
        // one); the same roots, ALPN and session cache as the SDK's other links.
        .use_preconfigured_tls(tls.client_config())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(max_idle)
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(|e| error::from_reqwest("building the HTTP client", e))
}
