//! The subscriber: a [`Stream`] of [`Event`]s over one transport, that keeps its link alive by
//! itself. It owns the loop connect → read (with the heartbeat watch) → lost → backoff →
//! next server → resume from the last cursor. Wire formats are in `transport`, backoff and server
//! choice in `reconnect`, intervals in `heartbeat`.
//!
//! Nothing runs in the background: the link is read while the stream is polled, so a subscriber
//! costs no task of its own, and the heartbeat watch times each read from when it starts (a
//! consumer that stops polling for a while is not mistaken for a dead link; it reads what waited).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::Instant;

use crate::error::{self, Error, Result};
use crate::event::{Event, State, Transport};
use crate::heartbeat::{AfterHeartbeat, Heartbeat, Tuner};
use crate::pool::{http_client, HttpPool};
use crate::reconnect::{Backoff, Servers, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP};
use crate::tls::{TlsOptions, TlsSetting};
use crate::token::{self, TokenSource};
use crate::transport::{self, Ended, Item, Link, SubRequest};

/// The `holdfast.closed` reason (and WebSocket close reason) of a link whose token expired.
const TOKEN_EXPIRED: &str = "token_expired";

/// The server's default listen address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
/// Default heartbeat factor k: a link is dead after `heartbeat × k` without a byte. The server
/// sends a heartbeat after one interval of quiet, checking at half-interval ticks, so the real gap
/// is up to 1.5 intervals; 2 leaves room for scheduling and network delay.
pub const DEFAULT_HEARTBEAT_FACTOR: f64 = 2.0;
/// Default bound on connecting and on a response head (and on a short poll).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default period of short polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default idle timeout of pooled HTTP connections: below the server's default
/// `keepalive_timeout` (75 s), so the client drops an idle connection before the server closes it
/// and never sends a request on a connection the server is closing.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(70);

/// Configures and builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    servers: Vec<String>,
    channels: Vec<String>,
    transport: Transport,
    cursor: Option<String>,
    history: Option<u32>,
    heartbeat: Heartbeat,
    heartbeat_factor: f64,
    backoff_base: Duration,
    backoff_cap: Duration,
    connect_timeout: Duration,
    poll_interval: Duration,
    pool_idle_timeout: Duration,
    pool: Option<HttpPool>,
    token: Option<TokenSource>,
    tls: TlsSetting,
}

impl Default for SubscriberBuilder {
    fn default() -> Self {
        SubscriberBuilder {
            servers: Vec::new(),
            channels: Vec::new(),
            transport: Transport::Ws,
            cursor: None,
            history: None,
            heartbeat: Heartbeat::Server,
            heartbeat_factor: DEFAULT_HEARTBEAT_FACTOR,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool: None,
            token: None,
            tls: TlsSetting::default(),
        }
    }
}

impl SubscriberBuilder {
    /// Adds a server (`http://host:port`, or `https://host:port` for TLS on every transport, see
    /// [`SubscriberBuilder::tls`]). Several servers make a failover list, tried in order:
    /// the subscriber stays on one while it is healthy, moves to the next on a failure, and comes
    /// back to the first only after the last failed. None given: [`DEFAULT_SERVER`].
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Adds servers (see [`SubscriberBuilder::server`]).
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Adds a channel (at least one; at most 64).
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(name.into());
        self
    }

    /// Adds channels.
    pub fn channels<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.channels.extend(names.into_iter().map(Into::into));
        self
    }

    /// The transport (default [`Transport::Ws`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Starts after this cursor (a [`Message::cursor`](crate::Message::cursor) kept from before)
    /// instead of now.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Without a cursor, first replays the last `n` kept messages of each channel.
    pub fn history(mut self, n: u32) -> Self {
        self.history = Some(n);
        self
    }

    /// How the heartbeat interval is chosen (default [`Heartbeat::Server`]).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The factor k: the link is declared dead after `heartbeat × k` without a byte (default 2;
    /// at least 1).
    pub fn heartbeat_factor(mut self, k: f64) -> Self {
        self.heartbeat_factor = k;
        self
    }

    /// Reconnection backoff: attempt n (from 0) waits a random time in
    /// `[0, min(cap, base · 2ⁿ)]` (full jitter). Defaults: 1 s, 30 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// Bound on connecting and on waiting for a response head (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Period of [`Transport::Poll`] requests (default 1 s).
    pub fn poll_interval(mut self, period: Duration) -> Self {
        self.poll_interval = period;
        self
    }

    /// Idle timeout of pooled HTTP connections (long and short polls); keep it below the server's
    /// `keepalive_timeout` (default 70 s, the server's default being 75 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Uses this shared HTTP client (its pool, connect timeout and idle timeout; not
    /// `pool_idle_timeout` above) for polls, instead of one of the subscriber's own. Pass one to
    /// every subscriber of a process that holds many polling subscriptions: they then share
    /// pooled connections and one client's memory (see [`HttpPool`] for why it is not the
    /// default). Streaming transports (SSE, NDJSON, WebSocket) hold their link on a bare socket
    /// and use HTTP only for a position poll to a server that does not announce
    /// `Holdfast-Cursor`.
    pub fn http_pool(mut self, pool: &HttpPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// An access token for a server with access control, sent as `Authorization: Bearer` on
    /// every request and on the WebSocket handshake. A static token the server refuses (401), or
    /// any 403, ends the stream with that `Err`; use [`SubscriberBuilder::token_source`] for
    /// tokens that expire.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Static(token.into()));
        self
    }

    /// Tokens from a callback: asked for the first link, and again whenever the server refuses
    /// the token in hand (401) or ends the link with `token_expired` (WebSocket close 4003, the
    /// `holdfast.closed` notice, a long poll's 401). The subscriber then reconnects at once (no
    /// backoff after a healthy link) and resumes from its cursor, losing nothing. A token
    /// refused just after being asked for, or an `Err` from the callback, backs off and asks
    /// again.
    pub fn token_source<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.token = Some(TokenSource::callback(f));
        self
    }

    /// How an `https://` server's certificate is checked, on every transport (default:
    /// [`TlsOptions::default`], the web PKI). Polls through a [`SubscriberBuilder::http_pool`]
    /// use the pool's instead. A certificate the subscriber does not trust ends the stream with
    /// an `Err` ([`Error::is_tls`]).
    pub fn tls(mut self, tls: &TlsOptions) -> Self {
        self.tls.set(tls);
        self
    }

    /// Also trusts the CA certificate(s) in `pem` (see [`TlsOptions::root_certificate_pem`]);
    /// a PEM without a usable certificate makes [`SubscriberBuilder::build`] fail. For many
    /// subscribers, build one [`TlsOptions`] and pass it to each with
    /// [`SubscriberBuilder::tls`]: they then share it and its session cache.
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.add_pem(pem.as_ref());
        self
    }

    /// Checks the settings and builds the subscriber. Nothing connects until it is polled.
    pub fn build(self) -> Result<Subscriber> {
        if self.channels.is_empty() {
            return Err(Error::invalid("no channel to subscribe to"));
        }
        if self.channels.iter().any(|c| c.is_empty() || c.contains(',')) {
            return Err(Error::invalid("a channel name is empty or contains a comma"));
        }
        if !(self.heartbeat_factor.is_finite() && self.heartbeat_factor >= 1.0) {
            return Err(Error::invalid("the heartbeat factor k must be at least 1"));
        }
        if let Heartbeat::Adaptive { min, max, .. } = self.heartbeat {
            if min.is_zero() || max < min {
                return Err(Error::invalid("adaptive heartbeat needs 0 < min <= max"));
            }
        }
        let servers = if self.servers.is_empty() { vec![DEFAULT_SERVER.to_string()] } else { self.servers.clone() };
        let servers = servers.iter().map(|s| transport::normalize_server(s)).collect::<Result<Vec<_>>>()?;
        let tls = self.tls.resolve()?;
        let http = self.pool.as_ref().map(|pool| pool.client.clone());
        let channel_path = self.channels.iter().map(|c| transport::percent_encode(c)).collect::<Vec<_>>().join(",");
        let driver = Driver {
            channel_label: self.channels.join(","),
            channel_path,
            servers: Servers::new(servers),
            backoff: Backoff::new(self.backoff_base, self.backoff_cap),
            tuner: Tuner::new(self.heartbeat),
            cursor: self.cursor.clone(),
            history: self.history,
            http,
            tls,
            phase: Phase::Start,
            out: VecDeque::new(),
            items: Vec::new(),
            done: false,
            token: None,
            fresh_token: false,
            settings: self,
        };
        let stream = futures_util::stream::unfold(driver, |mut driver| async move {
            let next = driver.next().await?;
            Some((next, driver))
        });
        Ok(Subscriber { inner: Box::pin(stream) })
    }
}

/// A subscription that reconnects, fails over and resumes by itself: a [`Stream`] of
/// [`Event`]s. It yields `Err` only for a refusal that retrying cannot cure (a bad channel name, a
/// malformed cursor: see [`Error::is_transient`]), and ends after it; every other trouble shows as
/// [`State::Reconnecting`] and is retried.
pub struct Subscriber {
    inner: Pin<Box<dyn Stream<Item = Result<Event>> + Send>>,
}

impl Subscriber {
    /// A builder with the defaults.
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder::default()
    }
}

impl Stream for Subscriber {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

/// Where the subscriber's loop is.
enum Phase {
    /// Nothing done yet: report `Connecting`.
    Start,
    /// Backing off until then.
    Wait(Instant),
    /// Connect to the current server now.
    Connect,
    /// A streaming link is up.
    Streaming {
        link: Box<Link>,
        /// The heartbeat interval in force.
        interval: Duration,
        /// Something (an event or a heartbeat) came on it: the next failure starts a fresh backoff.
        healthy: bool,
        /// When the last event (not heartbeat) came, or the link opened.
        last_event: Instant,
        /// The reason of the `holdfast.closed` notice, once one came.
        closed: Option<String>,
    },
    /// Polling.
    Polling {
        /// The interval the server announced (a long poll's `longpoll_timeout`).
        interval: Option<Duration>,
        /// A poll of this server was answered.
        connected: bool,
        /// When the next short poll goes.
        next: Option<Instant>,
    },
}

struct Driver {
    settings: SubscriberBuilder,
    /// The channels as the path names them (percent-encoded, joined by commas).
    channel_path: String,
    /// The channels joined by commas: the channel of events whose wire format does not say it.
    channel_label: String,
    servers: Servers,
    backoff: Backoff,
    tuner: Tuner,
    /// Where to resume: the cursor after the last event yielded.
    cursor: Option<String>,
    /// `?history=` still to ask (only until there is a cursor).
    history: Option<u32>,
    /// The HTTP client for polls: the shared pool's, or one of the subscriber's own, built when
    /// first needed (see [`Driver::http`]).
    http: Option<reqwest::Client>,
    /// How `https://` servers are checked (the streaming links, and polls without a pool).
    tls: TlsOptions,
    phase: Phase,
    out: VecDeque<Result<Event>>,
    /// Scratch for one read's items.
    items: Vec<Item>,
    /// A fatal error was yielded: the stream ends.
    done: bool,
    /// The token in hand; `None` when one is to be asked for before the next request.
    token: Option<String>,
    /// The token in hand came from the source and no request has accepted it yet: a 401 now is
    /// not an expiry but a source handing out bad tokens, so it backs off.
    fresh_token: bool,
}

impl Driver {
    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(next) = self.out.pop_front() {
                if self.out.capacity() > 64 && self.out.is_empty() {
                    self.out = VecDeque::new();
                }
                return Some(next);
            }
            if self.done {
                return None;
            }
            match &mut self.phase {
                Phase::Start => {
                    self.out.push_back(Ok(Event::State(State::Connecting)));
                    self.phase = Phase::Connect;
                }
                Phase::Wait(until) => {
                    tokio::time::sleep_until(*until).await;
                    self.phase = Phase::Connect;
                }
                Phase::Connect => self.connect().await,
                Phase::Streaming { .. } => self.read_stream().await,
                Phase::Polling { .. } => self.poll_once().await,
            }
        }
    }

    /// The HTTP client for a poll. Without a shared pool, the subscriber's own: kept (with one
    /// idle connection) by the polling transports, which poll again and again; built for the
    /// position poll of a streaming transport (only to a server that does not announce
    /// `Holdfast-Cursor`), with no idle connection, and dropped after it
    /// (a streaming link does not use it), so an idle streaming subscription holds no client.
    fn http(&mut self) -> Result<reqwest::Client> {
        if let Some(http) = &self.http {
            return Ok(http.clone());
        }
        let streaming = self.settings.transport.is_streaming();
        let http = http_client(
            self.settings.pool_idle_timeout,
            self.settings.connect_timeout,
            usize::from(!streaming),
            &self.tls,
        )?;
        if !streaming {
            self.http = Some(http.clone());
        }
        Ok(http)
    }

    fn request(&self) -> SubRequest<'_> {
        SubRequest {
            server: self.servers.current(),
            channels: &self.channel_path,
            cursor: self.cursor.as_deref(),
            history: if self.cursor.is_none() { self.history } else { None },
            heartbeat: self.tuner.ask(),
            token: self.token.as_deref(),
        }
    }

    async fn connect(&mut self) {
        let transport = self.settings.transport;
        if !transport.is_streaming() {
            self.phase = Phase::Polling { interval: None, connected: false, next: None };
            return;
        }
        if let Err(e) = self.ensure_token().await {
            return self.failed(e, false);
        }
        // Without a cursor a streaming subscription starts at "now" and carries no position until
        // its first message: a reconnect before that would start at a later "now" and miss what
        // was published in between, silently. The server names the start in `Holdfast-Cursor`
        // (before any history it replays), which becomes the cursor at once. A server that does
        // not say (an older one) gets a short poll first for the position.
        let server = self.servers.current().to_string();
        let opened = Link::open(transport, &self.request(), &self.tls, self.settings.connect_timeout).await;
        let opened = match opened {
            Ok(link) if self.cursor.is_none() && link.start.is_none() => {
                drop(link);
                if let Err(e) = self.poll_request(Transport::Poll).await {
                    return self.failed(e, false);
                }
                Link::open(transport, &self.request(), &self.tls, self.settings.connect_timeout).await
            }
            other => other,
        };
        match opened {
            Ok(mut link) => {
                self.fresh_token = false;
                if self.cursor.is_none() {
                    self.cursor = link.start.take();
                }
                let interval = self.tuner.connected(link.announced);
                self.history = None;
                self.out.push_back(Ok(Event::State(State::Connected { server, transport, heartbeat: interval })));
                self.phase = Phase::Streaming {
                    link: Box::new(link),
                    interval,
                    healthy: false,
                    last_event: Instant::now(),
                    closed: None,
                };
            }
            Err(e) => self.failed(e, false),
        }
    }

    /// One read of the streaming link, with the heartbeat watch.
    async fn read_stream(&mut self) {
        let Phase::Streaming { link, interval, .. } = &mut self.phase else { return };
        let interval = *interval;
        let watch = interval.mul_f64(self.settings.heartbeat_factor);
        let step = link.step(&self.channel_label, watch, &mut self.items).await;
        let mut raise = false;
        let mut items = std::mem::take(&mut self.items);
        for item in items.drain(..) {
            if let Phase::Streaming { healthy, .. } = &mut self.phase {
                *healthy = true;
            }
            let quiet = match &mut self.phase {
                Phase::Streaming { last_event, .. } => {
                    let quiet = last_event.elapsed();
                    if !matches!(item, Item::Heartbeat) {
                        *last_event = Instant::now();
                    }
                    quiet
                }
                _ => Duration::ZERO,
            };
            match item {
                // Only a heartbeat after a whole interval without data proves the path survives
                // that much silence (a little slack for timer granularity).
                Item::Heartbeat if quiet < interval.mul_f64(0.9) => {}
                Item::Heartbeat => match self.tuner.heartbeat(interval) {
                    AfterHeartbeat::Keep => {}
                    AfterHeartbeat::Raise(_) => raise = true,
                    AfterHeartbeat::Settled(interval) => {
                        self.out.push_back(Ok(Event::State(State::HeartbeatSettled { interval })))
                    }
                },
                Item::Event(event, cursor) => {
                    if let (Event::Closed { reason, .. }, Phase::Streaming { closed, .. }) = (&event, &mut self.phase) {
                        *closed = Some(reason.clone());
                    }
                    self.accept(event, cursor);
                }
            }
        }
        self.items = items;
        let (healthy, closed) = match &self.phase {
            Phase::Streaming { healthy, closed, .. } => (*healthy, closed.clone()),
            _ => (false, None),
        };
        match step {
            Ok(()) if raise => {
                // Probe a longer interval: reconnect at once from the cursor (nothing is lost).
                self.phase = Phase::Connect;
            }
            Ok(()) => {}
            Err(None) => {
                if let Some(interval) = self.tuner.silent_death() {
                    self.out.push_back(Ok(Event::State(State::HeartbeatSettled { interval })));
                }
                let k = self.settings.heartbeat_factor;
                let cause = format!("no byte for {watch:?} (heartbeat {interval:?} × {k}): the link is dead");
                self.lost(cause, true, healthy);
            }
            Err(Some(Ended::TokenExpired)) => self.token_refused("the token expired".into(), healthy),
            Err(Some(Ended::Closed(_))) if closed.as_deref() == Some(TOKEN_EXPIRED) => {
                self.token_refused("the token expired".into(), healthy)
            }
            Err(Some(Ended::Closed(words))) => match closed {
                // A planned close: come back to the same server, except when it is going away.
                Some(reason) => self.lost(format!("closed by the server: {reason}"), reason == "shutdown", healthy),
                None => self.lost(words, true, healthy),
            },
            Err(Some(Ended::Failed(e))) => self.failed(e, healthy),
        }
    }

    /// One poll (long or short), as the transport says.
    async fn poll_once(&mut self) {
        let Phase::Polling { next, .. } = &mut self.phase else { return };
        if let Some(at) = next.take() {
            tokio::time::sleep_until(at).await;
        }
        let transport = self.settings.transport;
        match self.poll_request(transport).await {
            Ok(announced) => {
                let server = self.servers.current().to_string();
                let poll_interval = self.settings.poll_interval;
                let Phase::Polling { interval, connected, next } = &mut self.phase else { return };
                *interval = announced.or(*interval);
                if transport == Transport::Poll {
                    *next = Some(Instant::now() + poll_interval);
                }
                if !std::mem::replace(connected, true) {
                    let heartbeat = interval.unwrap_or(poll_interval);
                    self.backoff.reset();
                    self.out.push_back(Ok(Event::State(State::Connected { server, transport, heartbeat })));
                }
            }
            Err(e) => {
                let healthy = matches!(self.phase, Phase::Polling { connected: true, .. });
                self.failed(e, healthy)
            }
        }
    }

    /// Sends one poll and queues what it answered; gives the announced interval.
    async fn poll_request(&mut self, transport: Transport) -> Result<Option<Duration>> {
        self.ensure_token().await?;
        let server = self.servers.current().to_string();
        let url = SubRequest { heartbeat: None, ..self.request() }.url(transport);
        let timeout = match (&self.phase, transport) {
            (Phase::Polling { interval, .. }, Transport::LongPoll) => {
                // Held at most `longpoll_timeout` (announced once answered; until then the
                // configured or default heartbeat stands in for it), then the watch factor.
                let held = interval.unwrap_or_else(|| self.tuner.fallback());
                held.mul_f64(self.settings.heartbeat_factor) + self.settings.connect_timeout
            }
            _ => self.settings.connect_timeout,
        };
        let mut get = self.http()?.get(&url).timeout(timeout);
        if let Some(token) = &self.token {
            get = get.bearer_auth(token);
        }
        let response = get.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::timeout(format!("no answer to a poll of {server} within {timeout:?}"))
            } else {
                error::from_reqwest(&format!("GET {url}"), e)
            }
        })?;
        if !response.status().is_success() {
            return Err(transport::refusal(response).await);
        }
        self.fresh_token = false;
        let announced = transport::heartbeat_header(response.headers());
        let body = response.bytes().await.map_err(|e| error::from_reqwest("reading a poll answer", e))?;
        let mut items = std::mem::take(&mut self.items);
        let cursor = transport::poll_answer(&body, &self.channel_label, &mut items);
        for item in items.drain(..) {
            if let Item::Event(event, cursor) = item {
                self.accept(event, cursor);
            }
        }
        self.items = items;
        self.cursor = Some(cursor?);
        self.history = None;
        Ok(announced)
    }

    /// Queues an event and moves the cursor past it.
    fn accept(&mut self, event: Event, cursor: Option<String>) {
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            self.cursor = Some(cursor);
        }
        self.out.push_back(Ok(event));
    }

    /// Asks the token source for a token when none is in hand.
    async fn ensure_token(&mut self) -> Result<()> {
        let Some(source) = &self.settings.token else { return Ok(()) };
        if self.token.is_none() {
            self.token = Some(source.fetch().await?);
            self.fresh_token = source.can_renew();
        }
        Ok(())
    }

    /// The server refused or expired the token: with a source, drop it (a new one is asked for
    /// before the next request) and come back at once to the same server after a healthy link or
    /// a token that had been accepted, else after a backoff. Polling resumes by itself.
    fn token_refused(&mut self, cause: String, healthy: bool) {
        let at_once = healthy || !self.fresh_token;
        self.token = None;
        self.fresh_token = false;
        if at_once {
            self.backoff.reset();
            self.out.push_back(Ok(Event::State(State::Reconnecting { attempt: 1, after: Duration::ZERO, cause })));
            if !matches!(self.phase, Phase::Polling { .. }) {
                self.phase = Phase::Connect;
            }
        } else {
            self.lost(cause, false, false);
        }
    }

    /// An error: fatal ones end the stream, the rest reconnect to the next server.
    fn failed(&mut self, e: Error, healthy: bool) {
        let renewable = self.settings.token.as_ref().is_some_and(TokenSource::can_renew);
        if renewable && token::is_unauthorized(&e) {
            return self.token_refused(e.to_string(), healthy);
        }
        if !e.is_transient() {
            self.out.push_back(Err(e));
            self.done = true;
            return;
        }
        self.lost(e.to_string(), true, healthy);
    }

    /// The link is gone: back off, on the next server after a failure, then connect again.
    fn lost(&mut self, cause: String, failure: bool, healthy: bool) {
        if healthy {
            self.backoff.reset();
        }
        if failure {
            self.servers.fail_over();
        }
        let (attempt, after) = self.backoff.next_delay();
        self.out.push_back(Ok(Event::State(State::Reconnecting { attempt, after, cause })));
        self.phase = Phase::Wait(Instant::now() + after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-subscription state stays small (the 16 KB budget per subscription is mostly the
    /// transports' socket buffers): the driver and the future that reads its link.
    #[test]
    fn per_subscriber_state_is_small() {
        let sub = Subscriber::builder().channel("a").build().unwrap();
        let driver = std::mem::size_of::<Driver>();
        let future = std::mem::size_of_val(&*sub.inner);
        eprintln!("driver {driver} B, stream with its future {future} B");
        assert!(driver < 1024, "driver {driver} B");
        assert!(future < 4096, "stream {future} B");
    }
}
