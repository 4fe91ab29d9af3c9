//! Short and long polling. Both answer `{"messages":[…],"cursor":"…"}` (plus `"gap":[…]` when
//! the cursor pointed at lost messages) and leave the connection keep-alive.
//!
//! A long poll with nothing to send waits for the first publish on any of its channels, or
//! `longpoll_timeout`, or the client leaving (then it is dropped at once). It is stateless: the
//! cursor carries the position, so any node with the same history can answer the next poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::socket::TaskLink;
use holdfast_hub::{Channel, Message};

use super::Subscription;
use crate::poll_answer::{collect, render};
use crate::response::Response;
use crate::Server;

/// How a poll ended.
pub(crate) enum Answer {
    Respond(Response),
    /// The client went away while the poll was held.
    ClientGone,
}

/// Answers a poll; holds it first when `hold` (long poll) and nothing is pending, at most until
/// its token expires (`token_deadline`, unix seconds, 0 = never): then the answer is 401
/// `token_expired`, as from a push shard.
pub(crate) async fn answer(
    stream: &mut TaskLink,
    server: &Server,
    mut sub: Subscription,
    hold: bool,
    token_deadline: u32,
) -> Answer {
    let mut messages = collect(&mut sub.positions, &mut sub.gaps);
    if messages.is_empty() && hold {
        let held = Held::new(server, &sub);
        let waited = wait(stream, server, &mut sub, token_deadline).await;
        drop(held);
        match waited {
            Some(found) => messages = found,
            None => return Answer::ClientGone,
        }
        if messages.is_empty() && crate::auth::is_expired(token_deadline, crate::auth::unix_now()) {
            let expired = crate::auth::Rejection::Expired.response();
            return Answer::Respond(crate::cors::decorate(expired, sub.origin.as_deref()));
        }
    }
    server.stats.delivered(messages.len() as u64);
    let longest_silence = hold.then_some(server.config().longpoll_timeout);
    Answer::Respond(render(&mut sub.positions, &sub.gaps, &messages, sub.origin.as_deref(), longest_silence))
}

/// A long poll being held: counted as a subscriber of its channels (`GET /pub/{channel}`) and
/// in `/admin/stats` for as long as it waits, however the wait ends.
struct Held<'a> {
    server: &'a Server,
    channels: Vec<Arc<Channel>>,
}

impl<'a> Held<'a> {
    fn new(server: &'a Server, sub: &Subscription) -> Held<'a> {
        let channels: Vec<Arc<Channel>> = sub.positions.iter().map(|(c, _)| c.clone()).collect();
        for channel in &channels {
            channel.subscribers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        server.stats.subscriber_opened(crate::wire::frame::Format::LongPoll);
        Held { server, channels }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for channel in &self.channels {
            channel.subscribers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.server.stats.subscriber_closed(crate::wire::frame::Format::LongPoll);
    }
}

/// Waits for messages; `None` if the client disconnected first. A graceful shutdown answers at
/// once with what there is (nothing), so the client gets its cursor rather than a cut.
async fn wait(
    stream: &mut TaskLink,
    server: &Server,
    sub: &mut Subscription,
    token_deadline: u32,
) -> Option<Vec<(usize, Arc<Message>)>> {
    let mut deadline = tokio::time::Instant::now() + server.config().longpoll_timeout;
    if token_deadline != 0 {
        let left = u64::from(token_deadline).saturating_sub(crate::auth::unix_now());
        deadline = deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(left));
    }
    let mut watch_client = true;
    let draining = server.drain_started.notified();
    tokio::pin!(draining);
    draining.as_mut().enable();
    loop {
        let channels: Vec<Arc<Channel>> = sub.positions.iter().map(|(c, _)| c.clone()).collect();
        let mut waiters: Vec<_> = channels.iter().map(|c| Box::pin(c.notified())).collect();
        for waiter in &mut waiters {
            waiter.as_mut().enable();
        }
        // Checked after enabling the waiters, so a publish in between is not missed.
        let messages = collect(&mut sub.positions, &mut sub.gaps);
        if !messages.is_empty() || channels.iter().any(|c| c.is_deleted()) || server.is_draining() {
            return Some(messages);
        }
        tokio::select! {
            _ = AnyOf(&mut waiters) => {}
            _ = &mut draining => return Some(Vec::new()),
            _ = tokio::time::sleep_until(deadline) => return Some(Vec::new()),
            gone = client_gone(stream), if watch_client => {
                if gone {
                    return None;
                }
                // Bytes (a pipelined request) rather than EOF: stop watching, keep waiting.
                watch_client = false;
            }
        }
    }
}

/// Completes when the peer closes (true) or sends bytes (false); it reads nothing.
async fn client_gone(stream: &mut TaskLink) -> bool {
    loop {
        if std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await.is_err() {
            return true;
        }
        match stream.peek_input() {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return true,
        }
    }
}

/// Completes when any of the waiters does.
struct AnyOf<'a, F>(&'a mut Vec<Pin<Box<F>>>);

impl<F: Future> Future for AnyOf<'_, F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        for waiter in self.0.iter_mut() {
            if waiter.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
