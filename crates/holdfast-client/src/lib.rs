#![deny(missing_docs)]
//! Client SDK for Holdfast: publish to channels, and
//! subscribe over any of its transports with a link that looks after itself.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use holdfast_client::{Event, Publisher, Subscriber, Transport};
//!
//! # async fn demo() -> Result<(), holdfast_client::Error> {
//! let publisher = Publisher::new("http://127.0.0.1:7700")?;
//! let id = publisher.publish("room", "hello", Some("chat")).await?;
//! println!("published {}", id.id);
//!
//! let mut sub = Subscriber::builder()
//!     .server("http://127.0.0.1:7700")
//!     .server("http://127.0.0.1:7701") // failover
//!     .channel("room")
//!     .transport(Transport::Sse)
//!     .build()?;
//! while let Some(event) = sub.next().await {
//!     match event? {
//!         Event::Message(m) => println!("{}: {:?}", m.channel, m.text()),
//!         Event::Gap(gap) => eprintln!("gap in {}: {:?} lost", gap.channel, gap.lost),
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What the subscriber does by itself
//!
//! * **Resume.** Every event carries the cursor after it; on every reconnection, on every
//!   transport, the subscriber hands back the last one (`?cursor=`), so each message comes exactly
//!   once and in order. When the server no longer has what followed the cursor (history expired,
//!   server restarted, another server), it says so and the subscriber yields an [`Event::Gap`]:
//!   never silent. Without a starting cursor it takes the position the server names on the
//!   stream's head or 101 (`Holdfast-Cursor`, before any replayed `history`; from a server that
//!   does not send it, with one short poll first), so even a reconnect before the first message
//!   loses nothing.
//! * **Heartbeat watch.** Streaming responses and the WebSocket handshake carry
//!   `Holdfast-Heartbeat: <seconds>`, the interval after which a quiet server sends a heartbeat.
//!   No byte for `interval × k` (k = 2 by default) means the link is dead (a half-open TCP
//!   connection, a NAT that forgot the flow): the subscriber drops it and reconnects, without
//!   waiting for TCP to notice. Long polls are bounded the same way by their announced
//!   `longpoll_timeout`.
//! * **Backoff.** Reconnections wait a random time in `[0, min(cap, base · 2ⁿ)]` (full jitter;
//!   1 s base and 30 s cap by default), n counting attempts since the last healthy connection
//!   (one that delivered an event or a heartbeat). Planned closes (`admin_disconnect`,
//!   `slow_consumer`, …) back off too, from the first window, so a mass disconnect does not come
//!   back as a stampede.
//! * **Failover.** Given several servers, it stays on one while it is healthy, moves to the next
//!   on a failure (connection refused, error status, dead link, end without notice, `shutdown`
//!   notice) and wraps around to the first only after the last failed.
//! * **Adaptive heartbeat** ([`Heartbeat::Adaptive`]): start at `min`; each time the link
//!   survives a whole interval of silence (a heartbeat arrives), raise by `step` up to `max`,
//!   reconnecting from the cursor to ask the server for it (`?heartbeat=`; the server clamps it to
//!   its `[heartbeat_min, heartbeat_max]`); after a silent death (the watch fired) go back to the
//!   last interval that survived and hold it for the subscriber's life (a new subscriber probes
//!   afresh). Reported in [`State::Connected`] and [`State::HeartbeatSettled`]. Applies to the
//!   streaming transports and WebSocket.
//! * **Tokens** ([`SubscriberBuilder::token_source`]): for a server with access control, a
//!   callback asked for a token for the first link and again whenever the server refuses the one
//!   in hand (401) or ends the link with `token_expired` (WebSocket close 4003, the
//!   `holdfast.closed` notice, a long poll's 401); the subscriber then reconnects at once (no
//!   backoff after a healthy link) and resumes from its cursor, so nothing is lost. Sent as
//!   `Authorization: Bearer`, never in the URL. A fixed [`SubscriberBuilder::token`] that the
//!   server refuses, or any 403, is a fatal `Err`.
//!
//! Both need a tokio runtime (with the time and I/O drivers) where they are polled.
//!
//! Memory: a subscriber runs no task of its own (the link is read as the stream is polled); SSE
//! and NDJSON links are a bare socket read through a per-thread buffer, WebSocket links have a
//! 4 KiB read buffer instead of tungstenite's 128 KiB; line buffers give back what a large
//! message took. About 5 KB (SSE) and 9 KB (WebSocket) of client memory per subscription at
//! 10,000 in one process. Polls and publishes go through a reqwest client: one per publisher and
//! per polling subscriber, unless they are given one shared [`HttpPool`].
//!
//! # TLS
//!
//! Name a server `https://host:port` and every path speaks TLS: publishes and polls, the SSE and
//! NDJSON streams, WebSocket (as `wss://`). rustls with the ring provider, ALPN `http/1.1`. The
//! server's certificate is checked against the web PKI (Mozilla's roots, compiled in) unless
//! [`TlsOptions`] say otherwise; a private CA is added from PEM:
//!
//! ```no_run
//! # fn demo() -> holdfast_client::Result<()> {
//! use holdfast_client::{Publisher, Subscriber, TlsOptions};
//! let tls = TlsOptions::new().root_certificate_pem(std::fs::read("ca.pem").expect("ca.pem"))?;
//! let publisher = Publisher::builder().server("https://127.0.0.1:7700").tls(&tls).build()?;
//! let sub = Subscriber::builder().server("https://127.0.0.1:7700").channel("room").tls(&tls).build()?;
//! # Ok(()) }
//! ```
//!
//! A certificate the client does not trust fails with [`Error::is_tls`]: a publish returns it, a
//! subscriber yields it and ends (it is configuration, not a passing failure). There is no switch
//! to skip verification. Over TLS a link also holds rustls's state and buffers (the record being
//! received, plaintext not yet read): about 8.7 KB more per subscription than the figures above.

mod error;
mod event;
mod heartbeat;
mod pool;
mod publisher;
mod reconnect;
mod subscriber;
mod tls;
mod token;
mod transport;

pub use error::{Error, Result};
pub use event::{Event, Gap, Message, State, Transport};
pub use heartbeat::{Heartbeat, DEFAULT_HEARTBEAT};
pub use pool::{HttpPool, DEFAULT_POOL_MAX_IDLE};
pub use publisher::{
    Publication, PublishedId, Publisher, PublisherBuilder, DEFAULT_BATCH_CONCURRENCY, DEFAULT_PUBLISH_TIMEOUT,
};
pub use reconnect::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP};
pub use subscriber::{
    Subscriber, SubscriberBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_FACTOR, DEFAULT_POLL_INTERVAL,
    DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_SERVER,
};
pub use tls::TlsOptions;
