//! What every transport and the WebSocket ops share about a subscription, so they cannot drift
//! apart: channel names and the per-connection channel cap, where each channel starts (a cursor,
//! `?history=N`, or now), the gaps to report, the cursor handed out, and refusals as
//! (status, code, reason) that HTTP answers as a response and WebSocket as an error op.
//!
//! What it does not own: how a request names these (query, header, op fields: the transports and
//! `push::websocket` read them) and how notices look on the wire (`push::frame`).

use std::sync::Arc;

use holdfast_hub::cursor::MAX_CURSOR_CHANNELS;
use holdfast_hub::{Broker, Channel, ChannelError, Cursor, Gap, Position, ReadFrom};
use serde_json::{json, Value};

use crate::response::Response;

/// Channels one connection may subscribe to in all: what one cursor can hold.
pub(crate) const MAX_CHANNELS: usize = MAX_CURSOR_CHANNELS;

/// Each channel of a subscription with the last sequence number its subscriber has (it gets what
/// follows).
pub(crate) type Positions = Vec<(Arc<Channel>, u64)>;

/// Why a subscribe or publish is refused: an HTTP status, a stable code and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub reason: String,
}

impl Refusal {
    /// A 400 refusal.
    pub fn bad(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal { status: 400, code, reason: reason.into() }
    }

    /// As an HTTP answer: `{"error":code,"reason":…}` with the status.
    pub fn response(&self) -> Response {
        let response = Response::error(self.status, self.code, &self.reason);
        if self.status == 503 {
            response.with_header("Retry-After", "1")
        } else {
            response
        }
    }

    /// As a WebSocket error op: `{"op":"error","code":…,"reason":…}`.
    pub fn op(&self) -> Value {
        json!({"op": "error", "code": self.code, "reason": self.reason})
    }
}

/// Checks a channel name a client gave (to `/pub`, `/sub` or a WebSocket op): 400 `bad_channel`
/// for an invalid one, 403 `reserved_channel` for one only the server uses (the dashboard's feed).
pub(crate) fn check_name(name: &str) -> Result<(), Refusal> {
    holdfast_hub::validate_channel_name(name).map_err(|e| Refusal::bad("bad_channel", format!("{e}: {name:?}")))?;
    if crate::admin_feed::is_reserved(name) {
        return Err(Refusal {
            status: 403,
            code: "reserved_channel",
            reason: format!(
                "channel {name:?} is reserved: names starting with {:?} are the server's own (the dashboard's \
                 feed is GET /admin/events)",
                crate::admin_feed::RESERVED_PREFIX
            ),
        });
    }
    Ok(())
}

impl From<ChannelError> for Refusal {
    /// A channel that could not be found or created: a bad name is the client's fault (400);
    /// `max_channels` reached is temporary (503, retry in a second: channels that hold nothing
    /// are dropped every second), and so is an unreachable broker (503).
    fn from(error: ChannelError) -> Refusal {
        let status = match error {
            ChannelError::Name(_) => 400,
            ChannelError::TooManyChannels(_) | ChannelError::Unavailable(_) => 503,
        };
        Refusal { status, code: error.label(), reason: error.to_string() }
    }
}

/// The names in `names` that are not in `held` yet, validated and without repeats, refused as a
/// whole when a name is invalid or the connection would hold more than [`MAX_CHANNELS`].
/// Stops at the first name over the cap, so a list of any length costs at most that much work.
pub(crate) fn new_channel_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    held: &[&str],
) -> Result<Vec<&'a str>, Refusal> {
    let room = MAX_CHANNELS.saturating_sub(held.len());
    let mut new: Vec<&str> = Vec::new();
    for name in names {
        check_name(name)?;
        if new.contains(&name) || held.contains(&name) {
            continue;
        }
        if new.len() == room {
            return Err(Refusal::bad(
                "too_many_channels",
                format!("at most {MAX_CHANNELS} channels per connection (this one has {})", held.len()),
            ));
        }
        new.push(name);
    }
    Ok(new)
}

/// A cursor as a client sent it.
pub(crate) fn parse_cursor(text: &str) -> Result<Cursor, Refusal> {
    Cursor::decode(text).map_err(|e| Refusal::bad("bad_cursor", e.to_string()))
}

/// The channels `names` as held here, when every one is ready without a round trip to the broker
/// (always, for the memory broker); `None` when one must be opened first ([`open`]), which the
/// caller does off a shard thread. A refused name or `max_channels` is an answer.
pub(crate) fn ready(broker: &dyn Broker, names: &[&str]) -> Option<Result<Vec<Arc<Channel>>, Refusal>> {
    let mut channels = Vec::with_capacity(names.len());
    for name in names {
        match broker.ready(name)? {
            Ok(channel) => channels.push(channel),
            Err(error) => return Some(Err(error.into())),
        }
    }
    Some(Ok(channels))
}

/// The channels `names`, opened (created) where needed: a network broker loads what it keeps of
/// their history into the local rings first, so a cursor from another node resumes here.
pub(crate) async fn open(broker: &dyn Broker, names: &[&str]) -> Result<Vec<Arc<Channel>>, Refusal> {
    let mut channels = Vec::with_capacity(names.len());
    for name in names {
        let channel = match broker.ready(name) {
            Some(ready) => ready?,
            None => broker.open(name).await?,
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// Where each of `channels` starts for a subscriber that resumes from `cursor` (for the channels
/// it names) or else replays the last `history` messages (or starts now); the gaps to tell it
/// about come with them.
pub(crate) fn start(
    channels: Vec<Arc<Channel>>,
    cursor: Option<&Cursor>,
    history: Option<u64>,
) -> (Positions, Vec<Gap>) {
    let mut positions = Vec::with_capacity(channels.len());
    let mut gaps = Vec::new();
    for channel in channels {
        let from = match (cursor.and_then(|c| c.position(&channel.name)), history) {
            (Some(position), _) => ReadFrom::After(position),
            (None, Some(n)) => ReadFrom::Last(n),
            (None, None) => ReadFrom::Now,
        };
        let (start, gap) = channel.start(from);
        gaps.extend(gap);
        positions.push((channel, start));
    }
    (positions, gaps)
}

/// The cursor for these positions: what a subscriber hands back to resume exactly here.
pub(crate) fn cursor_for(positions: &[(Arc<Channel>, u64)]) -> String {
    cursor_of(positions.iter().map(|(c, seq)| (&**c, *seq)))
}

/// [`cursor_for`] from (channel, last sequence number) pairs.
pub(crate) fn cursor_of<'a>(positions: impl IntoIterator<Item = (&'a Channel, u64)>) -> String {
    Cursor::new(positions.into_iter().map(|(c, seq)| (&*c.name, Position { epoch: c.epoch, seq }))).encode()
}

/// The channels of a subscription as one name for connection-wide notices: the list as
/// `/sub/{a,b}` writes it.
pub(crate) fn channel_list<'a>(channels: impl IntoIterator<Item = &'a Channel>) -> String {
    let names: Vec<&str> = channels.into_iter().map(|c| &*c.name).collect();
    names.join(",")
}

/// A gap as the JSON object every transport uses.
pub(crate) fn gap_json(gap: &Gap) -> String {
    let lost = if gap.asked.epoch == gap.epoch {
        (gap.first_available.saturating_sub(1).saturating_sub(gap.asked.seq)).to_string()
    } else {
        "null".to_string()
    };
    format!(
        "{{\"channel\":\"{}\",\"asked\":{{\"epoch\":{},\"seq\":{}}},\"epoch\":{},\"first_available\":{},\"lost\":{lost}}}",
        gap.channel, gap.asked.epoch, gap.asked.seq, gap.epoch, gap.first_available
    )
}

/// The data of a `holdfast.closed` notice: why, and the cursor to resume from.
pub(crate) fn closed_json(reason: &str, cursor: &str) -> String {
    format!("{{\"reason\":\"{reason}\",\"cursor\":\"{cursor}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_hub::{HistoryLimits, MemoryBroker};

    fn broker() -> MemoryBroker {
        MemoryBroker::new(HistoryLimits {
            messages: 10,
            max_age: std::time::Duration::from_secs(60),
            max_bytes: u64::MAX,
        })
    }

    /// Opens (the memory broker never waits) and starts.
    fn start_on(
        b: &MemoryBroker,
        names: &[&str],
        cursor: Option<&Cursor>,
        history: Option<u64>,
    ) -> Result<(Positions, Vec<Gap>), Refusal> {
        let channels = ready(b, names).expect("the memory broker is always ready")?;
        Ok(start(channels, cursor, history))
    }

    #[test]
    fn names_are_validated_deduplicated_and_capped_with_what_is_held() {
        assert_eq!(new_channel_names(["a", "b", "a"], &[]).unwrap(), vec!["a", "b"]);
        assert_eq!(new_channel_names(["a", "bad name"], &[]).unwrap_err().code, "bad_channel");
        let b = broker();
        let names: Vec<String> = (0..MAX_CHANNELS).map(|i| format!("c{i}")).collect();
        let (held, _) = start_on(&b, &names.iter().map(String::as_str).collect::<Vec<_>>(), None, None).unwrap();
        // Names already held cost nothing; one more is refused.
        let held: Vec<&str> = held.iter().map(|(c, _)| &*c.name).collect();
        assert!(new_channel_names(["c0", "c1"], &held).unwrap().is_empty());
        assert_eq!(new_channel_names(["c0", "extra"], &held).unwrap_err().code, "too_many_channels");
        // A huge list stops at the cap.
        let many: Vec<String> = (0..60_000).map(|i| format!("x{i}")).collect();
        let refused = new_channel_names(many.iter().map(String::as_str), &[]).unwrap_err();
        assert_eq!(refused.code, "too_many_channels");
    }

    #[test]
    fn start_resumes_from_the_cursor_else_history_else_now() {
        let b = broker();
        for i in 0..5 {
            b.publish("a", None, bytes::Bytes::from(format!("{i}")).into()).unwrap();
        }
        let (now, gaps) = start_on(&b, &["a"], None, None).unwrap();
        assert_eq!((now[0].1, gaps.len()), (5, 0));
        let (replay, _) = start_on(&b, &["a"], None, Some(2)).unwrap();
        assert_eq!(replay[0].1, 3);
        let cursor = parse_cursor(&cursor_for(&[(replay[0].0.clone(), 4)])).unwrap();
        let (resumed, _) = start_on(&b, &["a", "b"], Some(&cursor), Some(2)).unwrap();
        assert_eq!(
            resumed.iter().map(|(c, s)| (c.name.to_string(), *s)).collect::<Vec<_>>(),
            [("a".into(), 4), ("b".into(), 0)]
        );
        assert_eq!(channel_list(resumed.iter().map(|(c, _)| &**c)), "a,b");
        assert_eq!(parse_cursor("!!").unwrap_err().code, "bad_cursor");
    }
}
