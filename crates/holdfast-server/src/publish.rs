//! `/pub/{channel}`: publish (POST), channel info (GET), delete (DELETE); and the one publish
//! path that the WebSocket `publish` op shares ([`publish_message`]).

use bytes::Bytes;
use holdfast_hub::{Broker, Payload, Published};
use holdfast_proto::http1::RequestHead;

use crate::query::{self, percent_decode};
use crate::response::Response;
use crate::stats::Stats;
use crate::subscription::Refusal;

/// Longest event type a publisher may set.
const MAX_EVENT_LEN: usize = 64;

/// The channel named by `/pub/{channel}`, percent-decoded and validated.
fn channel_name(head: &RequestHead) -> Result<String, Response> {
    let raw = head.path().strip_prefix("/pub/").unwrap_or("");
    let name = percent_decode(raw, false)
        .ok_or_else(|| Response::error(400, "bad_channel", "channel name is not valid percent-encoded UTF-8"))?;
    holdfast_hub::validate_channel_name(&name).map_err(|e| Response::error(400, "bad_channel", &e.to_string()))?;
    Ok(name.into_owned())
}

/// The event type from `?event=` or the `Holdfast-Event` header.
fn event_type(head: &RequestHead) -> Result<Option<String>, Response> {
    let from_query = match query::param(head.query(), "event") {
        Some(Ok(event)) => Some(event.into_owned()),
        Some(Err(())) => return Err(Response::error(400, "bad_event", "event is not valid percent-encoded UTF-8")),
        None => None,
    };
    let from_header = head.header("holdfast-event").map(|v| String::from_utf8_lossy(v).trim().to_string());
    Ok(from_query.or(from_header))
}

/// Whether the body is declared JSON: `Content-Type: application/json`, parameters allowed.
fn is_json(head: &RequestHead) -> bool {
    head.header("content-type").is_some_and(|value| {
        let media_type = value.split(|&b| b == b';').next().unwrap_or(b"");
        media_type.trim_ascii().eq_ignore_ascii_case(b"application/json")
    })
}

/// Publishes one message: the one path for `POST /pub/{channel}` and the WebSocket `publish` op.
/// Checks the channel name, the event type (`[A-Za-z0-9_.:-]{1,64}`) and, for a JSON payload,
/// that it is valid JSON.
pub(crate) fn publish_message(
    broker: &dyn Broker,
    stats: &Stats,
    channel: &str,
    event: Option<&str>,
    payload: Payload,
) -> Result<Published, Refusal> {
    holdfast_hub::validate_channel_name(channel)
        .map_err(|e| Refusal::bad("bad_channel", format!("{e}: {channel:?}")))?;
    if let Some(event) = event {
        let valid = !event.is_empty()
            && event.len() <= MAX_EVENT_LEN
            && event.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if !valid {
            return Err(Refusal::bad("bad_event", "event must be 1-64 of A-Z a-z 0-9 _ . : -"));
        }
    }
    if payload.is_json {
        serde_json::from_slice::<serde::de::IgnoredAny>(&payload.bytes)
            .map_err(|e| Refusal::bad("bad_json", format!("the body is declared JSON but is not: {e}")))?;
    }
    let published = broker.publish(channel, event, payload)?;
    stats.published();
    Ok(published)
}

pub(crate) fn publish(head: &RequestHead, body: Bytes, broker: &dyn Broker, stats: &Stats) -> Response {
    let result = channel_name(head).and_then(|name| Ok((name, event_type(head)?)));
    let (name, event) = match result {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let payload = if is_json(head) { Payload::json(body) } else { Payload::text(body) };
    match publish_message(broker, stats, &name, event.as_deref(), payload) {
        Ok(published) => {
            let subscribers = published.channel.subscribers.load(std::sync::atomic::Ordering::Relaxed);
            Response::json(
                200,
                &serde_json::json!({
                    "id": String::from_utf8_lossy(&published.message.cursor),
                    "channel": name,
                    "subscribers": subscribers,
                }),
            )
        }
        Err(refusal) => refusal.response(),
    }
}

pub(crate) fn info(head: &RequestHead, broker: &dyn Broker) -> Response {
    let name = match channel_name(head) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let Some(channel) = broker.channel(&name) else {
        return Response::error(404, "no_channel", &format!("channel {name:?} does not exist"));
    };
    let (messages, first_seq, last_seq) = channel.info();
    let id = |seq: u64| {
        (messages > 0).then(|| {
            holdfast_hub::Cursor::new([(&*channel.name, holdfast_hub::Position { epoch: channel.epoch, seq })]).encode()
        })
    };
    Response::json(
        200,
        &serde_json::json!({
            "channel": name,
            "subscribers": channel.subscribers.load(std::sync::atomic::Ordering::Relaxed),
            "messages": messages,
            "first_id": id(first_seq),
            "last_id": id(last_seq),
        }),
    )
    .with_header("Cache-Control", "no-store")
}

pub(crate) fn delete(head: &RequestHead, broker: &dyn Broker) -> Response {
    let name = match channel_name(head) {
        Ok(name) => name,
        Err(response) => return response,
    };
    // Counted before the delete: the push shards start closing subscribers at once.
    let subscribers = broker.channel(&name).map(|c| c.subscribers.load(std::sync::atomic::Ordering::Relaxed));
    match (broker.delete(&name), subscribers) {
        (Some(_), Some(subscribers)) => {
            Response::json(200, &serde_json::json!({ "channel": name, "deleted": true, "subscribers": subscribers }))
        }
        _ => Response::error(404, "no_channel", &format!("channel {name:?} does not exist")),
    }
}
