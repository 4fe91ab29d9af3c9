//! `GET /admin/events`: the dashboard's live feed, a Server-Sent Events stream with one `stats`
//! event a second: everything `GET /admin/stats` tells (the same builder), the top channels by
//! subscribers and by message rate, and the recent closes.
//!
//! The feed is an internal channel, [`FEED_CHANNEL`], in the server's node-local broker
//! (`Server::local`, a `MemoryBroker` beside the configured one): a viewer is an ordinary SSE
//! subscriber of it, handed to a push shard like any other, so it gets heartbeats and the
//! slow-consumer bound for free and costs what a subscriber costs. With `broker = "redis://…"`
//! the feed stays on this node (the figures are this node's). Clients cannot reach it: names
//! under [`RESERVED_PREFIX`] are refused by `/pub` and `/sub` (403 `reserved_channel`), and
//! deliveries of reserved channels are not counted in `messages_delivered`.
//!
//! One task publishes the snapshots, and only while someone watches: it looks every
//! [`TICK`] and does nothing (and drops what it tracked) while the channel has no subscriber.
//! A new viewer wakes it, so the first event comes without waiting for the tick (the ticks then
//! count from that snapshot).
//!
//! What it does not own: the counters (`stats`), the close ring (`recent_closes`), the SSE
//! framing and delivery (`transport::stream`, `push`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use holdfast_hub::{Broker, Channel, HistoryLimits, MemoryBroker, Payload, ReadFrom};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::response::Response;
use crate::sub_request::{Subscription, Transport};
use crate::Server;

/// Channel names only the server uses (its node-local broker's channels).
pub(crate) const RESERVED_PREFIX: &str = "_holdfast.";

/// The dashboard's feed.
pub(crate) const FEED_CHANNEL: &str = "_holdfast.admin";

/// The feed's SSE event type.
const EVENT: &str = "stats";

/// How often a snapshot goes out: what a dashboard's charts move by.
const TICK: Duration = Duration::from_secs(1);

/// Message rates are averaged over this much: long enough to smooth a burst, short enough to
/// follow a channel that quietens.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Channels listed in each top list.
const TOP: usize = 10;

/// How long a woken task waits before its snapshot, so the new viewer's stream has reached its
/// push shard and counts in it.
const JOIN_SETTLE: Duration = Duration::from_millis(50);

/// A viewer that arrives this soon after a snapshot gets the next tick's instead of one of its
/// own: it may already have the last one, and snapshots stay at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(250);

/// Whether `name` is one only the server may use.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// The node-local broker. Its history bounds keep a few seconds of snapshots: enough for a
/// viewer whose socket stalls a moment to catch up, and it empties (the channel goes) once
/// nobody has watched for [`HistoryLimits::max_age`].
pub(crate) fn local_broker() -> MemoryBroker {
    let limits = HistoryLimits { messages: 8, max_age: Duration::from_secs(10), max_bytes: 4 << 20 };
    MemoryBroker::new(limits).with_max_channels(16)
}

/// What the server keeps for the feed.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// Wakes the publishing task when a viewer arrives.
    joined: Arc<Notify>,
}

/// A viewer's subscription: SSE on the feed channel from now on, heartbeats at
/// `heartbeat_interval`.
pub(crate) fn subscription(server: &Server) -> Result<Subscription, Response> {
    let channel = server.local.channel_or_create(FEED_CHANNEL).map_err(|e| {
        Response::error(503, e.label(), &format!("the dashboard feed cannot be opened: {e}"))
            .with_header("Retry-After", "1")
    })?;
    let (seq, _) = channel.start(ReadFrom::Now);
    server.feed.joined.notify_one();
    Ok(Subscription {
        transport: Transport::Sse,
        positions: vec![(channel, seq)],
        gaps: Vec::new(),
        origin: None,
        heartbeat: server.config().heartbeat_interval,
    })
}

/// Whether deliveries on `channel` count as the server's traffic (the feed's own do not).
pub(crate) fn counts_deliveries(channel: &Channel) -> bool {
    !is_reserved(&channel.name)
}

/// Publishes a snapshot every [`TICK`] while someone watches; ends with the server.
pub(crate) async fn run(server: Weak<Server>) {
    let Some(joined) = server.upgrade().map(|s| s.feed.joined.clone()) else { return };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rates = Rates::default();
    let mut last_snapshot: Option<Instant> = None;
    loop {
        let woken = tokio::select! {
            _ = tick.tick() => false,
            () = joined.notified() => true,
        };
        if woken {
            if last_snapshot.is_some_and(|at| at.elapsed() < MIN_GAP) {
                continue;
            }
            tokio::time::sleep(JOIN_SETTLE).await;
            tick.reset();
        }
        let Some(server) = server.upgrade() else { return };
        server.local.expire();
        let watched = server.local.channel(FEED_CHANNEL).is_some_and(|c| subscribers(&c) > 0);
        if server.is_draining() || !(watched || woken) {
            rates = Rates::default();
            continue;
        }
        last_snapshot = Some(Instant::now());
        // Off the runtime's workers: listing and sorting the channels is linear in their number.
        let job = tokio::task::spawn_blocking(move || {
            let snapshot = snapshot(&server, &mut rates);
            let body = Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default());
            let _ = server.local.publish(FEED_CHANNEL, Some(EVENT), Payload::json(body));
            rates
        });
        match job.await {
            Ok(kept) => rates = kept,
            Err(_) => rates = Rates::default(),
        }
    }
}

/// One `stats` event.
fn snapshot(server: &Server, rates: &mut Rates) -> Value {
    let mut snapshot = crate::router::stats_json(server);
    let channels = server.broker.channels();
    let now = Instant::now();
    let rate_of = rates.update(&channels, now);
    snapshot["at_ms"] = json!(unix_ms());
    snapshot["top_channels"] = top_channels(&channels, &rate_of, rates.window(now));
    snapshot["recent_closes"] = server
        .recent_closes
        .newest_first()
        .iter()
        .map(|close| {
            json!({
                "at_ms": close.at_ms,
                "peer": close.peer.to_string(),
                "transport": close.transport,
                "reason": close.reason.label(),
            })
        })
        .collect();
    snapshot
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Subscribers of `channel` on this node.
fn subscribers(channel: &Channel) -> u64 {
    channel.subscribers.load(std::sync::atomic::Ordering::Relaxed)
}

/// `{"window_seconds", "by_subscribers": [...], "by_rate": [...]}`, each entry
/// `{"channel", "subscribers", "messages_per_second", "published", "messages"}`.
fn top_channels(channels: &[Arc<Channel>], rate_of: &HashMap<u64, f64>, window: Duration) -> Value {
    let rate = |channel: &Channel| rate_of.get(&channel.id).copied().unwrap_or(0.0);
    let entry = |channel: &Arc<Channel>| {
        let (messages, _, last) = channel.info();
        json!({
            "channel": &*channel.name,
            "subscribers": subscribers(channel),
            "messages_per_second": (rate(channel) * 100.0).round() / 100.0,
            "published": last,
            "messages": messages,
        })
    };
    let by_subscribers = top(channels.iter().filter(|c| subscribers(c) > 0), |c| subscribers(c) as f64);
    let by_rate = top(channels.iter().filter(|c| rate(c) > 0.0), |c| rate(c));
    json!({
        "window_seconds": window.as_secs_f64(),
        "by_subscribers": by_subscribers.into_iter().map(entry).collect::<Vec<_>>(),
        "by_rate": by_rate.into_iter().map(entry).collect::<Vec<_>>(),
    })
}

/// The [`TOP`] largest by `key`, largest first (ties by name): linear in the count, then a sort
/// of ten.
fn top<'a>(items: impl Iterator<Item = &'a Arc<Channel>>, key: impl Fn(&Channel) -> f64) -> Vec<&'a Arc<Channel>> {
    let mut keyed: Vec<(f64, &Arc<Channel>)> = items.map(|c| (key(c), c)).collect();
    let order =
        |a: &(f64, &Arc<Channel>), b: &(f64, &Arc<Channel>)| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name));
    if keyed.len() > TOP {
        keyed.select_nth_unstable_by(TOP - 1, order);
        keyed.truncate(TOP);
    }
    keyed.sort_by(order);
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// Messages per channel over the last [`RATE_WINDOW`], from each channel's newest sequence
/// number at every tick. Kept only while someone watches: one entry per channel (its last
/// sequence number), plus, per tick of the window, the counts of the channels that published.
#[derive(Default)]
struct Rates {
    /// Each channel's newest sequence number at the last tick, by channel id.
    last: HashMap<u64, u64>,
    last_at: Option<Instant>,
    /// Ticks of the window, oldest first: when the tick's span began, and what each channel that
    /// published in it published.
    ticks: VecDeque<(Instant, HashMap<u64, u64>)>,
}

impl Rates {
    /// Takes this tick's sequence numbers; gives each publishing channel's rate, by id.
    fn update(&mut self, channels: &[Arc<Channel>], now: Instant) -> HashMap<u64, f64> {
        let mut last = HashMap::with_capacity(channels.len());
        let mut counts = HashMap::new();
        for channel in channels {
            let (_, _, seq) = channel.info();
            let published = match (self.last.get(&channel.id), self.last_at) {
                (Some(&before), _) => seq.saturating_sub(before),
                // New since the last tick (or recreated, with a new id): what it kept since then.
                (None, Some(since)) if channel.created >= since => {
                    let kept = channel.read_after(0, usize::MAX).messages;
                    kept.iter().filter(|m| m.published_at >= since).count() as u64
                }
                // There before anyone watched: counted from the next tick.
                (None, _) => 0,
            };
            if published > 0 {
                counts.insert(channel.id, published);
            }
            last.insert(channel.id, seq);
        }
        if let Some(since) = self.last_at {
            self.ticks.push_back((since, counts));
        }
        while self.ticks.front().is_some_and(|(began, _)| now.duration_since(*began) > RATE_WINDOW + TICK / 2) {
            self.ticks.pop_front();
        }
        self.last = last;
        self.last_at = Some(now);
        // At least a tick: a snapshot soon after another (a new viewer's) would inflate rates.
        let seconds = self.window(now).max(TICK).as_secs_f64();
        let mut totals: HashMap<u64, f64> = HashMap::new();
        for (_, counts) in &self.ticks {
            for (id, n) in counts {
                *totals.entry(*id).or_default() += *n as f64;
            }
        }
        if seconds > 0.0 {
            totals.values_mut().for_each(|n| *n /= seconds);
        }
        totals
    }

    /// The span the rates cover.
    fn window(&self, now: Instant) -> Duration {
        self.ticks.front().map_or(Duration::ZERO, |(began, _)| now.duration_since(*began))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_channel_is_reserved_and_valid() {
        assert!(is_reserved(FEED_CHANNEL));
        assert!(holdfast_hub::validate_channel_name(FEED_CHANNEL).is_ok());
        assert!(!is_reserved("holdfast.admin"));
        assert!(!is_reserved("room"));
    }

    #[test]
    fn rates_follow_sequence_numbers_over_the_window() {
        let broker = local_broker();
        let publish = |name: &str, n: usize| {
            for _ in 0..n {
                broker.publish(name, None, Payload::text(Bytes::from_static(b"x"))).unwrap();
            }
        };
        publish("busy", 1);
        publish("quiet", 1);
        let mut rates = Rates::default();
        let start = Instant::now();
        let first = rates.update(&broker.channels(), start);
        assert!(first.is_empty(), "nothing is counted before the first tick: {first:?}");
        publish("busy", 6);
        publish("fresh", 2);
        let second = rates.update(&broker.channels(), start + Duration::from_secs(2));
        let id = |name: &str| broker.channel(name).unwrap().id;
        assert_eq!(second.get(&id("busy")), Some(&3.0));
        assert_eq!(second.get(&id("fresh")), Some(&1.0));
        assert_eq!(second.get(&id("quiet")), None);
        let channels = broker.channels();
        let listed = top_channels(&channels, &second, Duration::from_secs(2));
        assert_eq!(listed["by_rate"][0]["channel"], "busy");
        assert_eq!(listed["by_rate"][0]["published"], 7);
        assert_eq!(listed["by_rate"].as_array().unwrap().len(), 2);
        // Past the window the old tick no longer counts.
        let later = rates.update(&broker.channels(), start + Duration::from_secs(10));
        assert!(later.is_empty(), "{later:?}");
    }
}
