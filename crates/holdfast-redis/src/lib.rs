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
//! Modules: `scripts` (the Lua scripts and the keys they use), `note` (what they send and answer,
//! read back), `feed` (keeping a local ring in step: notes, read backs, reconnects); this file
//! holds the broker itself (connect, publish, info, delete, subscriber counts).

mod feed;
mod note;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::FromValue;
use holdfast_hub::broker::BrokerFuture;
use holdfast_hub::{
    validate_channel_name, Broker, Channel, ChannelError, ChannelInfo, HistoryLimits, MemoryBroker, Payload, Position,
    PublishListener, Published,
};

use feed::{follow_notes, follow_reconnects, Feed};

/// Expiry rounds (seconds) a channel stays subscribed here after its last local holder left: a
/// long poll between two requests, or a client reconnecting, finds it still in sync.
pub const UNHELD_ROUNDS: u32 = 30;
/// How long a node's reported subscriber count lives in Redis without a refresh.
const COUNT_TTL: Duration = Duration::from_secs(15);
/// A count is reported again when it changes, and at least this often.
const COUNT_REFRESH: Duration = Duration::from_secs(5);
/// Longest a Redis round trip may take before the request is answered 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
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

pub(crate) struct Inner {
    local: MemoryBroker,
    client: Client,
    subscriber: SubscriberClient,
    /// A Redis Cluster: sharded pub/sub.
    sharded: bool,
    /// This node's name in the subscriber counts and publish tokens.
    node: String,
    /// Publishes sent: with `node`, each publish's token (see `scripts`).
    publishes: AtomicU64,
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
            publishes: AtomicU64::new(0),
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

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a Redis call failed, as the 503 answer tells it.
pub(crate) fn unavailable(inner: &Inner, why: impl std::fmt::Display) -> ChannelError {
    ChannelError::Unavailable(format!("redis at {}: {why}", inner.shown_url).into())
}

/// Why a Redis call failed.
enum CallError {
    NotConnected,
    Redis(fred::error::Error),
    TimedOut,
}

impl CallError {
    /// As the 503 answer tells it.
    fn unavailable(self, inner: &Inner) -> ChannelError {
        match self {
            CallError::NotConnected => unavailable(inner, "not connected"),
            CallError::Redis(error) => unavailable(inner, error),
            CallError::TimedOut => unavailable(inner, "no answer in time"),
        }
    }
}

/// A Redis call with [`COMMAND_TIMEOUT`], refused at once while disconnected.
async fn call_raw<T>(
    inner: &Inner,
    work: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, CallError> {
    if !inner.client.is_connected() {
        return Err(CallError::NotConnected);
    }
    tokio::time::timeout(COMMAND_TIMEOUT, work).await.map_err(|_| CallError::TimedOut)?.map_err(CallError::Redis)
}

/// [`call_raw`], failing as the 503 answer tells it.
pub(crate) async fn call<T>(
    inner: &Inner,
    work: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, ChannelError> {
    call_raw(inner, work).await.map_err(|e| e.unavailable(inner))
}

impl Inner {
    /// Runs a script once. Never sent again after a reconnect (fred would resend a command that
    /// was in flight when its connection dropped: a publish answered 503 would then be applied
    /// later, after newer ones), and refused at once while disconnected. A Redis that lacks the
    /// script (restarted; NOSCRIPT: nothing ran) gets it loaded, then it runs.
    pub(crate) async fn run_script<R: FromValue>(
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
            Err(CallError::Redis(error)) if error.details().starts_with("NOSCRIPT") => {
                call(self, script.load(&self.client)).await?;
                call(self, once.evalsha(script.sha1().clone(), keys, args)).await
            }
            result => result.map_err(|e| e.unavailable(self)),
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
            format!("{}:{}", self.node, self.publishes.fetch_add(1, Ordering::Relaxed)).into(),
            scripts::DEDUPE_WINDOW.to_string().into(),
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
pub(crate) fn new_epoch() -> u32 {
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

    fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner.local.channels()
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
        let (config, clustered) = fred_config("redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=hf").unwrap();
        assert!(!clustered && config.server.hosts().len() == 1);
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
        assert_eq!(keys, ["hf:{room:1}:m", "hf:{room:1}:s", "hf:{room:1}:n", "hf:{room:1}", "hf:{room:1}:d"]);
        assert_eq!(scripts::channel_of(&scripts::topic("room:1")), Some("room:1"));
        assert_eq!(scripts::channel_of("other"), None);
    }
}
