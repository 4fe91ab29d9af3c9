//! The WebSocket handshake on `GET /sub/{channels}` (RFC 6455 §4.2): validation, the Origin
//! check, the 101 answer and gap notices; then the socket goes to a push shard
//! (`crate::push::websocket` handles frames from there on).

use std::time::Duration;

use bytes::BytesMut;
use holdfast_proto::http1::RequestHead;
use holdfast_proto::ws::deflate::{self, Agreement};
use holdfast_proto::ws::handshake::{self, HandshakeError};

use super::Subscription;
use crate::config::Config;
use crate::handover::StreamSetup;
use crate::response::Response;
use crate::wire::frame::{Format, Framing};

/// The 101 answer plus any gap notices (as text frames), and the setup the shard continues from.
/// `early_input` holds frames the client sent right behind its request.
pub(crate) fn open(
    head: &RequestHead,
    config: &Config,
    sub: Subscription,
    raw: bool,
    early_input: BytesMut,
) -> Result<(Vec<u8>, StreamSetup), Response> {
    let accept = handshake::validate(head).map_err(refusal)?;
    check_origin(head, config)?;
    let agreement = negotiate_deflate(head, config);
    let format = if raw { Format::WsRaw } else { Format::WsJson };
    let deflate = agreement.is_some_and(|a| a.server_window_bits == deflate::MAX_WINDOW_BITS);
    let framing = Framing { format, chunked: false, deflate };
    let cursor = crate::subscription::cursor_for(&sub.positions);
    let start = (!sub.positions.is_empty()).then_some(cursor.as_str());
    let out = switching_protocols(&accept, agreement, Some(sub.heartbeat), start);
    let mut out = out.to_vec();
    for gap in &sub.gaps {
        let data = crate::subscription::gap_json(gap);
        framing.put_notice(&mut out, None, &gap.channel, &cursor, "holdfast.gap", &data);
    }
    let inflate = agreement.is_some();
    let heartbeat_ms = crate::handover::heartbeat_ms(sub.heartbeat);
    let positions = sub.positions;
    Ok((out, StreamSetup { framing, extra: None, longpoll: None, positions, early_input, inflate, heartbeat_ms }))
}

/// The permessage-deflate offer accepted, if `ws_deflate` is on and the client made one this
/// server can take.
pub(crate) fn negotiate_deflate(head: &RequestHead, config: &Config) -> Option<Agreement> {
    config.ws_deflate.then(|| deflate::negotiate(head)).flatten()
}

/// The 101 answer, naming the extension when one was agreed, and for a subscriber the heartbeat
/// interval (`Holdfast-Heartbeat`) and where the subscription starts (`Holdfast-Cursor`).
pub(crate) fn switching_protocols(
    accept: &str,
    agreement: Option<Agreement>,
    heartbeat: Option<Duration>,
    cursor: Option<&str>,
) -> BytesMut {
    let mut out = BytesMut::new();
    let extension = agreement.map(|a| a.response());
    let heartbeat = heartbeat.map(super::heartbeat_header);
    let mut extra = vec![("Server", "holdfast")];
    if let Some(extension) = &extension {
        extra.push(("Sec-WebSocket-Extensions", extension));
    }
    if let Some(heartbeat) = &heartbeat {
        extra.push(("Holdfast-Heartbeat", heartbeat));
    }
    if let Some(cursor) = cursor {
        extra.push(("Holdfast-Cursor", cursor));
    }
    handshake::put_switching_protocols(&mut out, accept, &extra);
    out
}

/// A handshake error as an HTTP answer; 426 names the version we speak (RFC 6455 §4.4).
pub(crate) fn refusal(error: HandshakeError) -> Response {
    let response = Response::error(error.status(), error.label(), error.reason());
    if error.status() == 426 {
        response.with_header("Sec-WebSocket-Version", "13").with_header("Upgrade", "websocket")
    } else {
        response
    }
}

/// Browsers always send `Origin` on WebSocket handshakes, and WebSocket has no CORS: a page from
/// any site could open one, and with it read channels and (`ws_client_publish`) publish. So the
/// handshake takes the rule of state changes (`cors::origin_may_act`): no Origin (non-browser
/// clients), the server's own origin, or one `cors_origins` allows; anything else, `null`
/// included, gets 403.
pub(crate) fn check_origin(head: &RequestHead, config: &Config) -> Result<(), Response> {
    if crate::cors::origin_may_act(head, config) {
        Ok(())
    } else {
        Err(crate::cors::origin_refusal("open a WebSocket"))
    }
}
