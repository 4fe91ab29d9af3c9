//! The publisher: `POST /pub/{channel}` over a keep-alive connection pool, one request at a time
//! or many at once.
//!
//! **Keep-alive.** The pool drops a connection idle for `pool_idle_timeout` (default 70 s), below
//! the server's `keepalive_timeout` (75 s by default, advertised as `Keep-Alive: timeout=75`), so
//! the client, not the server, ends idle connections, and a request is not sent on a connection
//! the server is closing at that moment. If a server advertises a timeout at or below the pool's,
//! the publisher logs a warning once (lower `pool_idle_timeout`).
//!
//! **The one retry, and what counts as safe.** A publish is not idempotent: sent twice, it is
//! published twice. It is retried once, at once, only when the connection closed before any byte
//! of the answer came (hyper's "connection closed before message completed", a reset or a broken
//! pipe while sending or waiting for the head). That is the race above: a pooled connection the
//! server closed as idle, which it did without reading the request, so the retry cannot duplicate
//! the message. The only case where it could is a server that read the request, published it and
//! then died before writing a byte of the answer; the retry then publishes it a second time (its
//! id differs). Timeouts, refused connections and any error after the answer began are never
//! retried.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::{self, Error, Result};
use crate::pool::{http_client, HttpPool};
use crate::subscriber::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_SERVER};
use crate::tls::{TlsOptions, TlsSetting};
use crate::token::{self, TokenSource};
use crate::transport::{normalize_server, percent_encode};

/// Default bound on one publish (connect, send, answer).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of publishes [`Publisher::publish_batch`] runs at once (and of idle pooled
/// connections kept).
pub const DEFAULT_BATCH_CONCURRENCY: usize = 16;

/// What the server answered to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedId {
    /// The cursor right after the new message (its id).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// Subscribers the message went to.
    pub subscribers: u64,
}

/// One message for [`Publisher::publish_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub data: Bytes,
    /// The event type (`message` when `None`).
    pub event: Option<String>,
}

impl Publication {
    /// A message of the default event type.
    pub fn new(channel: impl Into<String>, data: impl Into<Bytes>) -> Publication {
        Publication { channel: channel.into(), data: data.into(), event: None }
    }

    /// Sets the event type.
    pub fn event(mut self, event: impl Into<String>) -> Publication {
        self.event = Some(event.into());
        self
    }
}

/// Configures a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    server: String,
    pool_idle_timeout: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    concurrency: usize,
    max_idle: Option<usize>,
    pool: Option<HttpPool>,
    token: Option<TokenSource>,
    tls: TlsSetting,
}

impl Default for PublisherBuilder {
    fn default() -> Self {
        PublisherBuilder {
            server: DEFAULT_SERVER.to_string(),
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_PUBLISH_TIMEOUT,
            concurrency: DEFAULT_BATCH_CONCURRENCY,
            max_idle: None,
            pool: None,
            token: None,
            tls: TlsSetting::default(),
        }
    }
}

impl PublisherBuilder {
    /// The server (`http://host:port`, or `https://host:port` for TLS, see
    /// [`PublisherBuilder::tls`]; default [`DEFAULT_SERVER`]).
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = url.into();
        self
    }

    /// Idle timeout of pooled connections: keep it below the server's `keepalive_timeout`
    /// (default 70 s; the server's default is 75 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Bound on connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on one publish, from sending to the whole answer (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Publishes [`Publisher::publish_batch`] runs at once (default 16, at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Idle connections the pool keeps (default: `concurrency`). 0 opens a new connection for
    /// every publish and closes it after the answer (only to measure what the pool saves).
    pub fn max_idle_connections(mut self, n: usize) -> Self {
        self.max_idle = Some(n);
        self
    }

    /// Publishes over this shared HTTP client instead of one of the publisher's own (its pool,
    /// connect and idle timeouts override the ones above); see [`HttpPool`].
    pub fn http_pool(mut self, pool: &HttpPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// An access token, sent as `Authorization: Bearer` with every publish; a refusal of it
    /// (401, 403) is the publish's `Err`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Static(token.into()));
        self
    }

    /// Tokens from a callback: asked before the first publish and kept; when the server refuses
    /// the kept one (401), asked once more and the publish is sent again once.
    pub fn token_source<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.token = Some(TokenSource::callback(f));
        self
    }

    /// How an `https://` server's certificate is checked (default: [`TlsOptions::default`],
    /// the web PKI). Not used with [`PublisherBuilder::http_pool`]: the pool has its own.
    pub fn tls(mut self, tls: &TlsOptions) -> Self {
        self.tls.set(tls);
        self
    }

    /// Also trusts the CA certificate(s) in `pem` (see [`TlsOptions::root_certificate_pem`]);
    /// a PEM without a usable certificate makes [`PublisherBuilder::build`] fail.
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.add_pem(pem.as_ref());
        self
    }

    /// Builds the publisher.
    pub fn build(self) -> Result<Publisher> {
        let server = normalize_server(&self.server)?;
        let tls = self.tls.resolve()?;
        let http = match &self.pool {
            Some(pool) => pool.client.clone(),
            None => {
                let max_idle = self.max_idle.unwrap_or(self.concurrency);
                http_client(self.pool_idle_timeout, self.connect_timeout, max_idle, &tls)?
            }
        };
        Ok(Publisher {
            http,
            server,
            timeout: self.timeout,
            concurrency: self.concurrency,
            pool_idle_timeout: self.pool_idle_timeout,
            warned: AtomicBool::new(false),
            token: self.token,
            current: Mutex::new(None),
        })
    }
}

/// Publishes messages to one server over a keep-alive pool. Cheap to share (`&self` methods;
/// wrap it in an `Arc` to share across tasks).
pub struct Publisher {
    http: reqwest::Client,
    server: String,
    timeout: Duration,
    concurrency: usize,
    pool_idle_timeout: Duration,
    /// The warning about the server's keep-alive timeout was logged.
    warned: AtomicBool,
    token: Option<TokenSource>,
    /// The token last fetched from the source (kept until the server refuses it).
    current: Mutex<Option<String>>,
}

/// Never prints the token.
impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for `server` with the defaults.
    pub fn new(server: impl Into<String>) -> Result<Publisher> {
        PublisherBuilder::default().server(server).build()
    }

    /// A builder with the defaults.
    pub fn builder() -> PublisherBuilder {
        PublisherBuilder::default()
    }

    /// The same publisher, sending this access token (see [`PublisherBuilder::token`]).
    pub fn with_token(self, token: impl Into<String>) -> Publisher {
        self.with_source(TokenSource::Static(token.into()))
    }

    /// The same publisher, taking tokens from a callback (see [`PublisherBuilder::token_source`]).
    pub fn with_token_source<F, Fut, E>(self, f: F) -> Publisher
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.with_source(TokenSource::callback(f))
    }

    /// Takes tokens from `source` from now on, forgetting the one kept from the previous source.
    fn with_source(mut self, source: TokenSource) -> Publisher {
        self.token = Some(source);
        *self.current.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self
    }

    /// The token to send: the kept one, or a fresh one from the source.
    async fn token(&self, renew: bool) -> Result<Option<String>> {
        let Some(source) = &self.token else { return Ok(None) };
        if !renew {
            if let Some(token) = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Ok(Some(token));
            }
        }
        let token = source.fetch().await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(Some(token))
    }

    /// Publishes `data` to `channel` (`POST /pub/{channel}?event=`). With a token source, a 401
    /// asks it once more and sends the publish again once (a refused publish was not published).
    pub async fn publish(&self, channel: &str, data: impl Into<Bytes>, event: Option<&str>) -> Result<PublishedId> {
        let data = data.into();
        match self.publish_with(channel, data.clone(), event, false).await {
            Err(e) if token::is_unauthorized(&e) && self.token.as_ref().is_some_and(TokenSource::can_renew) => {
                self.publish_with(channel, data, event, true).await
            }
            other => other,
        }
    }

    async fn publish_with(&self, channel: &str, data: Bytes, event: Option<&str>, renew: bool) -> Result<PublishedId> {
        let token = self.token(renew).await?;
        let mut url = format!("{}/pub/{}", self.server, percent_encode(channel));
        if let Some(event) = event {
            url.push_str("?event=");
            url.push_str(&percent_encode(event));
        }
        let body = data;
        let mut retried = false;
        let response = loop {
            let mut post = self.http.post(&url).body(body.clone()).timeout(self.timeout);
            if let Some(token) = &token {
                post = post.bearer_auth(token);
            }
            let sent = post.send().await;
            match sent {
                Ok(response) => break response,
                Err(e) if !retried && closed_before_answer(&e) => {
                    tracing::debug!(error = %e, "publish: the pooled connection was closed; retrying once");
                    retried = true;
                }
                Err(e) => return Err(error::from_reqwest(&format!("POST {url}"), e)),
            }
        };
        self.check_keep_alive(response.headers());
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| error::from_reqwest("reading the publish answer", e))?;
        if !(200..300).contains(&status) {
            return Err(error::from_answer(status, &body));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| Error::protocol("a publish answer that is not JSON"))?;
        Ok(PublishedId {
            id: v["id"].as_str().ok_or_else(|| Error::protocol("a publish answer without an id"))?.to_string(),
            channel: v["channel"].as_str().unwrap_or(channel).to_string(),
            subscribers: v["subscribers"].as_u64().unwrap_or(0),
        })
    }

    /// Publishes many messages, up to the builder's `concurrency` at once over the pool. The
    /// results come in the order of `messages`. Messages to one channel published concurrently
    /// may be stored in any order among themselves; publish them one by one (or with concurrency
    /// 1) when their order matters.
    pub async fn publish_batch<I>(&self, messages: I) -> Vec<Result<PublishedId>>
    where
        I: IntoIterator<Item = Publication>,
    {
        futures_util::stream::iter(messages)
            .map(|m| async move { self.publish(&m.channel, m.data, m.event.as_deref()).await })
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Warns once when the server's `Keep-Alive: timeout=N` is not above the pool's idle timeout.
    fn check_keep_alive(&self, headers: &reqwest::header::HeaderMap) {
        let Some(timeout) = headers
            .get("keep-alive")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("timeout=")?.trim().parse::<u64>().ok()))
        else {
            return;
        };
        if Duration::from_secs(timeout) <= self.pool_idle_timeout && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                server_timeout_s = timeout,
                pool_idle_timeout = ?self.pool_idle_timeout,
                "the server closes idle connections no later than the pool does: lower pool_idle_timeout"
            );
        }
    }
}

/// Whether the connection closed before any byte of the answer (see the module docs).
fn closed_before_answer(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() || e.is_status() || e.is_body() || e.is_decode() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof) {
                return true;
            }
        }
        source = err.source();
    }
    false
}
