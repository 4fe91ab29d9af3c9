//! How a node keeps its local copy of a channel in step with Redis: notes from pub/sub applied in
//! order; a read back from the stream (a "sync") when a note is past the ring's next position,
//! when the note queue lagged, after a reconnect, and when a channel is opened. Notes that come
//! during a sync wait for it, so none is applied out of order, and what the stream no longer has
//! becomes a gap.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Message as PubSubMessage;
use holdfast_hub::{validate_channel_name, Channel, ChannelError};

use crate::note::{self, Note};
use crate::{call, lock, new_epoch, scripts, unavailable, Inner};

/// Notes one channel keeps while it is read back; past it they are dropped, and the first note
/// after the read back finds the ring behind and reads back again (so none is lost, and a read
/// back that takes long under a flood of notes costs bounded memory).
const EARLY_MAX: usize = 4096;
/// How one subscribed channel's ring is fed.
pub(crate) struct Feed {
    /// A sync is under way: notes wait in `early` and are applied after it.
    pub(crate) busy: bool,
    pub(crate) early: Vec<Note>,
    /// Notes were dropped past [`EARLY_MAX`]: read back again once this read back is done.
    pub(crate) overflowed: bool,
    /// One sync of this channel at a time.
    pub(crate) sync: Arc<tokio::sync::Mutex<()>>,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed { busy: true, early: Vec::new(), overflowed: false, sync: Arc::default() }
    }
}

/// Applies the notes Redis sends, in order.
pub(crate) async fn follow_notes(inner: Weak<Inner>, mut notes: tokio::sync::broadcast::Receiver<PubSubMessage>) {
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
pub(crate) async fn follow_reconnects(
    inner: Weak<Inner>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
) {
    loop {
        let received = reconnects.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        match received {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Notes wait from now until each channel is read back: the Redis on the other
                // side may be another one (a promoted replica) whose positions must be checked
                // against the rings before any note is applied.
                let names = inner.hold_notes();
                if let Err(error) = inner.subscriber.resubscribe_all().await {
                    tracing::warn!(%error, "redis: subscribing again after a reconnect failed");
                }
                for name in names {
                    inner.spawn_sync(name);
                }
                tracing::info!(url = %inner.shown_url, "redis connection up; channels read back");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Inner {
    /// A note from Redis: applied to the channel's ring, or kept for after a sync.
    pub(crate) fn on_note(self: &Arc<Self>, topic: &str, value: &Value) {
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
    pub(crate) fn sync_all(self: &Arc<Self>) {
        for name in self.hold_notes() {
            self.spawn_sync(name);
        }
    }

    /// Makes every subscribed channel keep its notes for after a read back; gives their names.
    fn hold_notes(&self) -> Vec<Arc<str>> {
        let mut feeds = lock(&self.feeds);
        feeds
            .iter_mut()
            .map(|(name, feed)| {
                feed.busy = true;
                name.clone()
            })
            .collect()
    }

    /// Opens a channel here: subscribes to its notes (first, so nothing published after the read
    /// below is missed), then loads its history into the local ring.
    pub(crate) async fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Channel>, ChannelError> {
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
}
