//! The Redis broker: several Holdfast nodes act as one through an existing Redis (or Redis
//! Cluster), with no sticky sessions and no synced clocks.
//!
//! - **Publish** is one atomic script: the channel's next sequence number (`HINCRBY`), the entry
//!   in the channel's stream (`XADD … MAXLEN ~ history_messages`) and a note to every node
//!   (`PUBLISH`, or `SPUBLISH` in a cluster). Positions come from Redis, never from a clock.
//! - **Each node** keeps one Redis subscription per channel it holds locally, shared by all its
//!   subscribers of that channel, and feeds the channel's local ring from it: transports read the
//!   local rings exactly as with the memory broker. A node unsubscribes once nobody has held the
//!   channel for [`UNHELD_ROUNDS`] seconds.
//! - **Opening** a channel (a subscribe, a long poll) subscribes first, then loads what the
//!   stream keeps into the ring, so a cursor handed out by any node resumes on any other.
//! - **Nothing is lost silently**: a note whose sequence number is past the ring's next one, a
//!   lagging note queue, or a reconnection to Redis makes the node read back from the stream
//!   what it missed ("sync"). What the stream no longer has becomes a gap the subscribers are
//!   told about. A channel whose history Redis lost (restarted without persistence) comes back
//!   in a new epoch: its subscribers are closed with `history_lost` and their cursor, and resume
//!   into the new epoch with a gap notice.
//! - **Subscriber counts** across nodes: each node reports its count per channel into a hash
//!   field that expires, so a crashed node's share disappears (`COUNT_TTL`).
//!
//! The scripts and keys are in [`scripts`].

mod note;
mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::FromValue;
use fred::types::Message as PubSubMessage;
use holdfast_hub::broker::BrokerFuture;
use holdfast_hub::{
    validate_channel_name, Broker, Channel, ChannelError, ChannelInfo, HistoryLimits, MemoryBroker, Payload, Position,
    PublishListener, Published,
};

use note::Note;

/// Expiry rounds (seconds) a channel stays subscribed here after its last local holder left: a
/// long poll between two requests, or a client reconnecting, finds it still in sync.
pub const UNHELD_ROUNDS: u32 = 30;
/// How long a node's reported subscriber count lives in Redis without a refresh.
const COUNT_TTL: Duration = Duration::from_secs(15);
/// A count is reported again when it changes, and at least this often.
const COUNT_REFRESH: Duration = Duration::from_secs(5);
/// Longest a Redis round trip may take before the request is answered 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Notes one channel keeps while it is read back; past it they are dropped, and the first note
/// after the read back finds the ring behind and reads back again (so none is lost, and a read
/// back that takes long under a flood of notes costs bounded memory).
const EARLY_MAX: usize = 4096;
/// Notes queued between the Redis connection and the task that applies them; past it the task
/// reads everything back from the streams instead.
const NOTE_QUEUE: usize = 2048;

/// What [`RedisBroker::connect`] needs.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `redis+cluster://host:port,host:port,…` for a Redis Cluster.
    pub url: String,
    /// History bounds (`history_messages` also trims the streams).
    pub limits: HistoryLimits,
    /// Channels held locally at most (`max_channels`).
    pub max_channels: usize,
}

/// The Redis broker (see the crate's documentation).
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    local: MemoryBroker,
    client: Client,
    subscriber: SubscriberClient,
    /// A Redis Cluster: sharded pub/sub.
    sharded: bool,
    /// This node's name in the subscriber counts.
    node: String,
    /// The URL without credentials, for error messages.
    shown_url: String,
    limits: HistoryLimits,
    scripts: Scripts,
    /// The channels subscribed in Redis, with how their local ring is being fed.
    feeds: Mutex<HashMap<Arc<str>, Feed>>,
    /// Subscriber counts last reported, and when.
    reported: Mutex<HashMap<Arc<str>, (u64, Instant)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Scripts {
    publish: Script,
    open: Script,
    info: Script,
    delete: Script,
    report: Script,
}

/// How one subscribed channel's ring is fed.
struct Feed {
    /// A sync is under way: notes wait in `early` and are applied after it.
    busy: bool,
    early: Vec<Note>,
    /// Notes were dropped past [`EARLY_MAX`]: read back again once this read back is done.
    overflowed: bool,
    /// One sync of this channel at a time.
    sync: Arc<tokio::sync::Mutex<()>>,
}

impl Feed {
    fn new() -> Feed {
        Feed { busy: true, early: Vec::new(), overflowed: false, sync: Arc::default() }
    }
}

impl RedisBroker {
    /// Connects (in the background: a Redis that is down now is retried, and meanwhile
    /// publishes and new subscriptions answer 503). Must be called within a tokio runtime.
    pub fn connect(config: RedisConfig) -> Result<RedisBroker, String> {
        let (fred_config, sharded) = fred_config(&config.url)?;
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(|e| e.to_string())?;
        // fred gives each client nine event queues of this capacity, allocated up front: only the
        // subscriber's carries notes, so only it gets room for a burst.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = NOTE_QUEUE);
        let subscriber = builder.build_subscriber_client().map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            local: MemoryBroker::new(config.limits).with_max_channels(config.max_channels),
            client,
            subscriber,
            sharded,
            node: format!("{:016x}", fastrand::u64(..)),
            shown_url: shown_url(&config.url),
            limits: config.limits,
            scripts: Scripts {
                publish: Script::from_lua(scripts::publish()),
                open: Script::from_lua(scripts::open()),
                info: Script::from_lua(scripts::info()),
                delete: Script::from_lua(scripts::delete()),
                report: Script::from_lua(scripts::report()),
            },
            feeds: Mutex::default(),
            reported: Mutex::default(),
            tasks: Mutex::default(),
        });
        let notes = inner.subscriber.message_rx();
        let reconnects = inner.subscriber.reconnect_rx();
        inner.client.connect();
        inner.subscriber.connect();
        let tasks = vec![
            tokio::spawn(follow_notes(Arc::downgrade(&inner), notes)),
            tokio::spawn(follow_reconnects(Arc::downgrade(&inner), reconnects)),
        ];
        *lock(&inner.tasks) = tasks;
        Ok(RedisBroker { inner })
    }
}

/// fred's configuration for a URL, and whether it is a cluster. `redis+cluster://a:1,b:2` is
/// written the way fred reads it (`redis-cluster://a:1?node=b:2`).
fn fred_config(url: &str) -> Result<(Config, bool), String> {
    let cluster_seeds = url.strip_prefix("redis+cluster://");
    let url = match cluster_seeds {
        Some(seeds) => {
            let mut nodes = seeds.trim_end_matches('/').split(',');
            let first = nodes.next().unwrap_or_default();
            let rest: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
            if rest.is_empty() {
                format!("redis-cluster://{first}")
            } else {
                format!("redis-cluster://{first}?{}", rest.join("&"))
            }
        }
        None => url.to_string(),
    };
    let config = Config::from_url(&url).map_err(|e| format!("broker URL {:?}: {e}", shown_url(&url)))?;
    let clustered = config.server.is_clustered();
    Ok((config, clustered))
}

/// A URL without its password.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies the notes Redis sends, in order.
async fn follow_notes(inner: Weak<Inner>, mut notes: tokio::sync::broadcast::Receiver<PubSubMessage>) {
    loop {
        let received = notes.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        match received {
            Ok(message) => inner.on_note(&message.channel, &message.value),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "redis notes came faster than they were applied; reading back from the streams");
                inner.sync_all();
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// After the subscriber connection comes back: subscribe again, then read back what was missed.
async fn follow_reconnects(
    inner: Weak<Inner>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
) {
    loop {
        let received = reconnects.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        match received {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if let Err(error) = inner.subscriber.resubscribe_all().await {
                    tracing::warn!(%error, "redis: subscribing again after a reconnect failed");
                }
                inner.sync_all();
                tracing::info!(url = %inner.shown_url, "redis connection up; channels read back");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Why a Redis call failed, as the 503 answer tells it.
fn unavailable(inner: &Inner, why: impl std::fmt::Display) -> ChannelError {
    ChannelError::Unavailable(format!("redis at {}: {why}", inner.shown_url).into())
}

/// A Redis call with [`COMMAND_TIMEOUT`]: its error, or `None` when it took too long.
async fn call_raw<T>(
    inner: &Inner,
    work: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, Option<fred::error::Error>> {
    if !inner.client.is_connected() {
        return Err(Some(fred::error::Error::new(fred::error::ErrorKind::IO, "not connected")));
    }
    tokio::time::timeout(COMMAND_TIMEOUT, work).await.map_err(|_| None)?.map_err(Some)
}

/// A Redis call with [`COMMAND_TIMEOUT`].
async fn call<T>(
    inner: &Inner,
    work: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, ChannelError> {
    if !inner.client.is_connected() {
        return Err(unavailable(inner, "not connected"));
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(unavailable(inner, error)),
        Err(_) => Err(unavailable(inner, "no answer in time")),
    }
}

impl Inner {
    /// Runs a script once. Never sent again after a reconnect (fred would resend a command that
    /// was in flight when its connection dropped: a publish answered 503 would then be applied
    /// later, after newer ones), and refused at once while disconnected. A Redis that lacks the
    /// script (restarted; NOSCRIPT: nothing ran) gets it loaded, then it runs.
    async fn run_script<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, ChannelError> {
        let once = self.client.with_options(&Options {
            max_attempts: Some(1),
            fail_fast: true,
            timeout: Some(COMMAND_TIMEOUT),
            ..Default::default()
        });
        let first = call_raw(self, once.evalsha::<R, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())).await;
        match first {
            Err(Some(error)) if error.details().starts_with("NOSCRIPT") => {
                call(self, script.load(&self.client)).await?;
                call(self, once.evalsha(script.sha1().clone(), keys, args)).await
            }
            Err(Some(error)) => Err(unavailable(self, error)),
            Err(None) => Err(unavailable(self, "no answer in time")),
            Ok(value) => Ok(value),
        }
    }

    /// Milliseconds a channel's keys live in Redis without a publish or a holder's refresh.
    fn channel_ttl_ms(&self) -> u64 {
        (self.limits.max_age.max(Duration::from_secs(60)) + Duration::from_secs(60)).as_millis().min(u64::MAX as u128)
            as u64
    }

    fn sharded_arg(&self) -> &'static str {
        if self.sharded {
            "1"
        } else {
            "0"
        }
    }

    /// A note from Redis: applied to the channel's ring, or kept for after a sync.
    fn on_note(self: &Arc<Self>, topic: &str, value: &Value) {
        let Some(name) = scripts::channel_of(topic) else { return };
        let Some(note) = value.clone().into_bytes().and_then(Note::parse) else {
            tracing::warn!(topic, "redis: a note that is not Holdfast's; ignored");
            return;
        };
        let mut feeds = lock(&self.feeds);
        let Some(name) = feeds.get_key_value(name).map(|(name, _)| name.clone()) else { return };
        let Some(feed) = feeds.get_mut(&name) else { return };
        if feed.busy {
            if feed.early.len() < EARLY_MAX {
                feed.early.push(note);
            } else {
                feed.overflowed = true;
            }
            return;
        }
        if let Err(note) = self.apply(&name, note) {
            feed.busy = true;
            feed.early.push(note);
            self.spawn_sync(name);
        }
    }

    /// Applies a note to the ring, or gives it back when the ring must be synced first (a
    /// sequence number past its next one, another epoch).
    fn apply(&self, name: &str, note: Note) -> Result<(), Note> {
        match note {
            Note::Deleted => {
                self.local.delete(name);
                Ok(())
            }
            Note::Message { epoch, seq, ref event, ref payload } => {
                // Nobody here holds the channel any more: nothing to feed.
                let Some(channel) = self.local.channel(name) else { return Ok(()) };
                let last = channel.head().seq;
                if epoch != channel.epoch || seq > last + 1 {
                    return Err(note);
                }
                if seq == last + 1 {
                    self.local.insert(&channel, seq, event.as_deref(), payload.clone(), Duration::ZERO);
                }
                Ok(())
            }
        }
    }

    /// Reads a channel back until that succeeds (Redis may be coming back: the subscriber
    /// connection often reconnects before the command one), or until the channel is no longer
    /// subscribed here.
    fn spawn_sync(self: &Arc<Self>, name: Arc<str>) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            for attempt in 1.. {
                let Some(inner) = inner.upgrade() else { return };
                match inner.sync(&name).await {
                    Ok(_) => return,
                    Err(error) => {
                        if attempt % 20 == 1 {
                            tracing::warn!(channel = %name, %error, attempt, "redis: reading a channel back failed; retrying");
                        }
                        let mut feeds = lock(&inner.feeds);
                        match feeds.get_mut(&name) {
                            // Notes wait meanwhile, so none is applied out of order.
                            Some(feed) => feed.busy = true,
                            None => return,
                        }
                    }
                }
                drop(inner);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
    }

    /// Reads every subscribed channel back from its stream (after a reconnect or a lag).
    fn sync_all(self: &Arc<Self>) {
        let names: Vec<Arc<str>> = {
            let mut feeds = lock(&self.feeds);
            feeds
                .iter_mut()
                .map(|(name, feed)| {
                    feed.busy = true;
                    name.clone()
                })
                .collect()
        };
        for name in names {
            self.spawn_sync(name);
        }
    }

    /// Opens a channel here: subscribes to its notes (first, so nothing published after the read
    /// below is missed), then loads its history into the local ring.
    async fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Channel>, ChannelError> {
        validate_channel_name(name)?;
        if let Some(channel) = self.local.channel(name) {
            return Ok(channel);
        }
        if !self.subscriber.is_connected() {
            return Err(unavailable(self, "not connected"));
        }
        let (name, new, sync) = {
            let mut feeds = lock(&self.feeds);
            let held = feeds.get_key_value(name).map(|(name, _)| name.clone());
            match held.and_then(|name| Some((name.clone(), feeds.get_mut(&name)?))) {
                Some((name, feed)) => {
                    feed.busy = true;
                    (name, false, feed.sync.clone())
                }
                None => {
                    let name: Arc<str> = name.into();
                    let feed = Feed::new();
                    let sync = feed.sync.clone();
                    feeds.insert(name.clone(), feed);
                    (name, true, sync)
                }
            }
        };
        let guard = sync.lock().await;
        if new {
            let topic = scripts::topic(&name);
            let subscribed = if self.sharded {
                call(self, self.subscriber.ssubscribe(topic)).await
            } else {
                call(self, self.subscriber.subscribe(topic)).await
            };
            if let Err(error) = subscribed {
                let mut feeds = lock(&self.feeds);
                if let Some(feed) = feeds.get_mut(&*name) {
                    feed.busy = false;
                    feed.early.clear();
                }
                return Err(error);
            }
        }
        let synced = self.sync_locked(&name).await;
        drop(guard);
        if synced.is_err() && self.local.channel(&name).is_none() {
            // Nothing here to feed: the feed goes at the next tending (unsubscribed).
            if let Some(feed) = lock(&self.feeds).get_mut(&name) {
                feed.busy = false;
                feed.early.clear();
            }
        }
        synced?.ok_or_else(|| unavailable(self, "the channel went while it was opened"))
    }

    /// Brings a channel's ring up to date with its stream (one sync per channel at a time).
    async fn sync(self: &Arc<Self>, name: &Arc<str>) -> Result<Option<Arc<Channel>>, ChannelError> {
        let sync = match lock(&self.feeds).get(name) {
            Some(feed) => feed.sync.clone(),
            None => return Ok(None),
        };
        let _guard = sync.lock().await;
        self.sync_locked(name).await
    }

    async fn sync_locked(self: &Arc<Self>, name: &Arc<str>) -> Result<Option<Arc<Channel>>, ChannelError> {
        let result = self.read_back(name).await;
        // Read back: the notes that waited are applied now, in order.
        let mut feeds = lock(&self.feeds);
        let Some(feed) = feeds.get_mut(&**name) else { return result.map(Some) };
        if result.is_err() {
            // The notes keep waiting for the next read back (the caller retries).
            return result.map(Some);
        }
        let early = std::mem::take(&mut feed.early);
        feed.busy = false;
        if std::mem::take(&mut feed.overflowed) {
            feed.busy = true;
            self.spawn_sync(name.clone());
        } else {
            let mut pending = early.into_iter();
            for note in pending.by_ref() {
                if let Err(note) = self.apply(name, note) {
                    feed.busy = true;
                    feed.early.push(note);
                    feed.early.extend(pending);
                    self.spawn_sync(name.clone());
                    break;
                }
            }
        }
        result.map(Some)
    }

    /// One open script: the channel's epoch and newest seq, and the stream entries after what
    /// the ring holds (or the newest ones, in a new epoch), put into the ring.
    async fn read_back(self: &Arc<Self>, name: &Arc<str>) -> Result<Arc<Channel>, ChannelError> {
        let held = self.local.channel(name);
        let (held_epoch, held_seq) = held.as_ref().map_or((0, 0), |c| (c.epoch, c.head().seq));
        let keys = scripts::keys(name);
        let candidate = new_epoch();
        let max = self.limits.messages.max(1);
        let args: Vec<Value> = vec![
            candidate.to_string().into(),
            self.channel_ttl_ms().to_string().into(),
            held_epoch.to_string().into(),
            held_seq.to_string().into(),
            max.to_string().into(),
        ];
        let answer: Vec<Value> = self.run_script(&self.scripts.open, keys[..2].to_vec(), args).await?;
        let opened = note::Opened::parse(answer).ok_or_else(|| unavailable(self, "unexpected answer to open"))?;
        let first_seq = opened.entries.first().map_or(opened.seq, |e| e.seq - 1);
        let (channel, _) = self.local.adopt(name, opened.epoch, first_seq)?;
        for entry in opened.entries {
            let age = Duration::from_millis(opened.now_ms.saturating_sub(entry.at_ms));
            self.local.insert(&channel, entry.seq, entry.event.as_deref(), entry.payload, age);
        }
        // What the stream no longer has (trimmed past the ring) is skipped: a gap for whoever
        // was there.
        self.local.skip_to(&channel, opened.seq);
        Ok(channel)
    }

    async fn publish(
        self: Arc<Self>,
        name: String,
        event: Option<String>,
        payload: Payload,
    ) -> Result<Published, ChannelError> {
        validate_channel_name(&name)?;
        let args: Vec<Value> = vec![
            new_epoch().to_string().into(),
            self.limits.messages.to_string().into(),
            event.as_deref().unwrap_or(note::NO_EVENT).into(),
            Value::Bytes(payload.bytes),
            (if payload.is_json { "1" } else { "0" }).into(),
            self.sharded_arg().into(),
            self.channel_ttl_ms().to_string().into(),
        ];
        let answer: Vec<Value> = self.run_script(&self.scripts.publish, scripts::keys(&name), args).await?;
        let number = |i: usize| answer.get(i).and_then(note::number);
        let (Some(epoch), Some(seq), Some(subscribers)) = (number(0), number(1), number(2)) else {
            return Err(unavailable(&self, "unexpected answer to publish"));
        };
        let position = Position { epoch: epoch as u32, seq };
        let id = holdfast_hub::Cursor::new([(name.as_str(), position)]).encode();
        Ok(Published { position, id, subscribers })
    }

    async fn info(self: Arc<Self>, name: String) -> Result<Option<ChannelInfo>, ChannelError> {
        validate_channel_name(&name)?;
        let keys = scripts::keys(&name)[..3].to_vec();
        let answer: Vec<Value> = self.run_script(&self.scripts.info, keys, Vec::new()).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        let number = |i: usize| answer.get(i).and_then(note::number);
        let first = answer.get(3).and_then(|v| v.as_string()).and_then(|id| note::entry_seq(&id));
        let (Some(epoch), Some(seq), Some(messages), Some(first), Some(subscribers)) =
            (number(0), number(1), number(2), first, number(4))
        else {
            return Err(unavailable(&self, "unexpected answer to info"));
        };
        let at = |seq| (messages > 0).then_some(Position { epoch: epoch as u32, seq });
        Ok(Some(ChannelInfo { subscribers, messages, first: at(first), last: at(seq) }))
    }

    async fn delete(self: Arc<Self>, name: String) -> Result<Option<u64>, ChannelError> {
        validate_channel_name(&name)?;
        let args: Vec<Value> = vec![self.sharded_arg().into()];
        let answer: i64 = self.run_script(&self.scripts.delete, scripts::keys(&name), args).await?;
        Ok(u64::try_from(answer).ok())
    }

    /// Drops the feeds of channels no longer held here (unsubscribing), and reports subscriber
    /// counts that changed or are due for a refresh.
    fn tend(self: &Arc<Self>) {
        let mut gone = Vec::new();
        lock(&self.feeds).retain(|name, feed| {
            let keep = feed.busy || self.local.channel(name).is_some();
            if !keep {
                gone.push(scripts::topic(name));
            }
            keep
        });
        let now = Instant::now();
        let mut reports = Vec::new();
        {
            let mut reported = lock(&self.reported);
            let mut seen = std::collections::HashSet::new();
            for channel in self.local.channels() {
                let count = channel.subscribers.load(std::sync::atomic::Ordering::Relaxed);
                seen.insert(channel.name.clone());
                let due = match reported.get(&channel.name) {
                    Some((last, at)) => *last != count || now.duration_since(*at) >= COUNT_REFRESH,
                    None => count > 0,
                };
                if due {
                    reported.insert(channel.name.clone(), (count, now));
                    reports.push((channel.name.clone(), count));
                }
            }
            reported.retain(|name, (count, _)| {
                let keep = seen.contains(name);
                if !keep && *count > 0 {
                    reports.push((name.clone(), 0));
                }
                keep
            });
            reported.retain(|_, (count, _)| *count > 0);
        }
        if gone.is_empty() && reports.is_empty() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            for topic in gone {
                let result = if inner.sharded {
                    call(&inner, inner.subscriber.sunsubscribe(topic)).await
                } else {
                    call(&inner, inner.subscriber.unsubscribe(topic)).await
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "redis: unsubscribe failed");
                }
            }
            for (name, count) in reports {
                let keys = scripts::keys(&name)[..3].to_vec();
                let args: Vec<Value> = vec![
                    inner.node.as_str().into(),
                    count.to_string().into(),
                    (COUNT_TTL.as_millis() as u64).to_string().into(),
                    inner.channel_ttl_ms().to_string().into(),
                ];
                let reported: Result<i64, _> = inner.run_script(&inner.scripts.report, keys, args).await;
                if reported.is_err() {
                    // Reported again next round.
                    lock(&inner.reported).remove(&name);
                }
            }
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, subscriber) = (self.client.clone(), self.subscriber.clone());
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = client.quit().await;
            });
        }
    }
}

/// A random epoch for a channel Redis does not know yet (Redis keeps the first one given).
fn new_epoch() -> u32 {
    fastrand::u32(1..)
}

impl Broker for RedisBroker {
    fn publish(
        &self,
        channel: &str,
        event: Option<&str>,
        payload: Payload,
    ) -> BrokerFuture<Result<Published, ChannelError>> {
        Box::pin(self.inner.clone().publish(channel.to_string(), event.map(str::to_string), payload))
    }

    fn ready(&self, name: &str) -> Option<Result<Arc<Channel>, ChannelError>> {
        self.inner.local.channel(name).map(Ok)
    }

    fn open(&self, name: &str) -> BrokerFuture<Result<Arc<Channel>, ChannelError>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        Box::pin(async move { inner.open(&name).await })
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.local.channel(name)
    }

    fn info(&self, name: &str) -> BrokerFuture<Result<Option<ChannelInfo>, ChannelError>> {
        Box::pin(self.inner.clone().info(name.to_string()))
    }

    fn delete(&self, name: &str) -> BrokerFuture<Result<Option<u64>, ChannelError>> {
        Box::pin(self.inner.clone().delete(name.to_string()))
    }

    fn add_listener(&self, listener: Arc<dyn PublishListener>) {
        self.inner.local.add_listener(listener);
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connected(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }

    fn wait_connected(&self, within: Duration) -> BrokerFuture<bool> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                if inner.client.is_connected() && inner.subscriber.is_connected() {
                    return true;
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn expire(&self) {
        self.inner.local.expire_unheld(UNHELD_ROUNDS);
        self.inner.tend();
    }

    fn channel_count(&self) -> usize {
        self.inner.local.channel_count()
    }

    fn channel_bytes(&self) -> u64 {
        self.inner.local.channel_bytes()
    }

    fn history_bytes(&self) -> u64 {
        self.inner.local.history_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_seed_lists_are_written_as_fred_reads_them() {
        let (config, clustered) = fred_config("redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003").unwrap();
        assert!(clustered);
        assert_eq!(config.server.hosts().len(), 3);
        let (_, clustered) = fred_config("redis://127.0.0.1:6379/0").unwrap();
        assert!(!clustered);
        assert!(fred_config("redis://[bad").is_err());
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(shown_url("redis://user:secret@host:6379/0"), "redis://…@host:6379/0");
        assert_eq!(shown_url("redis://host:6379/0"), "redis://host:6379/0");
    }

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let keys = scripts::keys("room:1");
        assert_eq!(keys, ["hf:{room:1}:m", "hf:{room:1}:s", "hf:{room:1}:n", "hf:{room:1}"]);
        assert_eq!(scripts::channel_of(&scripts::topic("room:1")), Some("room:1"));
        assert_eq!(scripts::channel_of("other"), None);
    }
}
