//! `/pub/{channel}`: publish (POST), channel info (GET), delete (DELETE); and the one publish
//! path that the WebSocket `publish` op shares ([`publish_message`]).

use std::sync::Arc;

use bytes::Bytes;
use holdfast_hub::{Broker, BrokerFuture, Payload, Position, Published};
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
    crate::subscription::check_name(&name).map_err(|refusal| refusal.response())?;
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
/// that it is valid JSON, then hands it to the broker: what comes back is the broker's answer to
/// await (ready at once for the memory broker). Counted as published once the broker took it.
pub(crate) fn publish_message(
    broker: &dyn Broker,
    stats: &Arc<Stats>,
    channel: &str,
    event: Option<&str>,
    payload: Payload,
) -> Result<BrokerFuture<Result<Published, Refusal>>, Refusal> {
    crate::subscription::check_name(channel)?;
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
    let published = broker.publish(channel, event, payload);
    let stats = stats.clone();
    Ok(Box::pin(async move {
        let published = published.await?;
        stats.published();
        Ok(published)
    }))
}

pub(crate) async fn publish(head: &RequestHead, body: Bytes, broker: &dyn Broker, stats: &Arc<Stats>) -> Response {
    let result = channel_name(head).and_then(|name| Ok((name, event_type(head)?)));
    let (name, event) = match result {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let payload = if is_json(head) { Payload::json(body) } else { Payload::text(body) };
    let published = match publish_message(broker, stats, &name, event.as_deref(), payload) {
        Ok(published) => published.await,
        Err(refusal) => Err(refusal),
    };
    match published {
        Ok(published) => Response::json(
            200,
            &serde_json::json!({ "id": published.id, "channel": name, "subscribers": published.subscribers }),
        ),
        Err(refusal) => refusal.response(),
    }
}

pub(crate) async fn info(head: &RequestHead, broker: &dyn Broker) -> Response {
    let name = match channel_name(head) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let info = match broker.info(&name).await {
        Ok(Some(info)) => info,
        Ok(None) => return Response::error(404, "no_channel", &format!("channel {name:?} does not exist")),
        Err(error) => return Refusal::from(error).response(),
    };
    let id = |position: Option<Position>| position.map(|p| holdfast_hub::Cursor::new([(name.as_str(), p)]).encode());
    Response::json(
        200,
        &serde_json::json!({
            "channel": name,
            "subscribers": info.subscribers,
            "messages": info.messages,
            "first_id": id(info.first),
            "last_id": id(info.last),
        }),
    )
    .with_header("Cache-Control", "no-store")
}

pub(crate) async fn delete(head: &RequestHead, broker: &dyn Broker) -> Response {
    let name = match channel_name(head) {
        Ok(name) => name,
        Err(response) => return response,
    };
    match broker.delete(&name).await {
        Ok(Some(subscribers)) => {
            Response::json(200, &serde_json::json!({ "channel": name, "deleted": true, "subscribers": subscribers }))
        }
        Ok(None) => Response::error(404, "no_channel", &format!("channel {name:?} does not exist")),
        Err(error) => Refusal::from(error).response(),
    }
}
