//! Opening a streaming subscription (SSE, NDJSON, iframe): the response head, the prelude
//! (`retry:` for SSE, ≥ 1 KiB of padding for the iframe so old browsers render progressively),
//! gap notices, then the socket goes to a push shard with its positions.

use bytes::BytesMut;
use holdfast_proto::http1::{ResponseHead, Version};
use holdfast_proto::sse;

use super::Subscription;
use crate::handover::StreamSetup;
use crate::subscription::{cursor_for, gap_json};
use crate::wire::frame::{Format, Framing};

/// Padding that makes old browsers start rendering (and running) a streamed HTML document.
const IFRAME_PADDING: usize = 1024;

/// The head, prelude and gap notices of a streaming response, ready to write; and the setup the
/// push shard continues from.
/// `format` is the HTTP streaming format the subscription asked for (SSE, NDJSON or iframe, with
/// its callback).
pub(crate) fn open(
    sse_retry: std::time::Duration,
    version: Version,
    sub: Subscription,
    format: Format,
    callback: Option<String>,
) -> (Vec<u8>, StreamSetup) {
    let content_type = match format {
        Format::Sse => "text/event-stream; charset=utf-8",
        Format::Iframe => "text/html; charset=utf-8",
        _ => "application/x-ndjson",
    };
    // HTTP/1.0 has no chunked coding: the stream is delimited by the connection's close.
    let chunked = version == Version::Http11;
    let framing = Framing { format, chunked, deflate: false };

    let mut head = BytesMut::new();
    let mut writer = ResponseHead::new(&mut head, 200)
        .header("Server", b"holdfast")
        .header("Content-Type", content_type.as_bytes())
        // SSE: no-cache (WHATWG); every stream must bypass caches and proxy buffering (nginx).
        .header("Cache-Control", b"no-cache, no-store")
        .header("X-Accel-Buffering", b"no");
    let heartbeat = super::heartbeat_header(sub.heartbeat);
    // Where the subscription starts: a client can resume from here even if the link dies before
    // the first message (no position is lost in between).
    let cursor = cursor_for(&sub.positions);
    writer = writer.header("Holdfast-Heartbeat", heartbeat.as_bytes()).header("Holdfast-Cursor", cursor.as_bytes());
    if let Some(origin) = &sub.origin {
        writer = writer
            .header("Access-Control-Allow-Origin", origin.as_bytes())
            .header("Vary", b"Origin")
            .header("Access-Control-Expose-Headers", b"Holdfast-Heartbeat, Holdfast-Cursor");
    }
    writer =
        if chunked { writer.header("Transfer-Encoding", b"chunked") } else { writer.header("Connection", b"close") };
    writer.finish();

    let mut out = head.to_vec();
    let mut prelude = BytesMut::new();
    match format {
        Format::Sse => sse::put_retry(&mut prelude, sse_retry.as_millis() as u64),
        Format::Iframe => {
            prelude.extend_from_slice(b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>\n<!--");
            prelude.extend_from_slice(&vec![b' '; IFRAME_PADDING]);
            prelude.extend_from_slice(b"-->\n");
        }
        // A first line so clients see the stream is open before any message.
        _ => prelude.extend_from_slice(b"\n"),
    }
    framing.put_piece(&mut out, &prelude);
    for gap in &sub.gaps {
        framing.put_notice(&mut out, callback.as_deref(), &gap.channel, &cursor, "holdfast.gap", &gap_json(gap));
    }
    let setup = StreamSetup {
        framing,
        extra: callback.map(|c| Box::new(crate::handover::Extra::Callback(c.into_boxed_str()))),
        longpoll: None,
        positions: sub.positions,
        early_input: Default::default(),
        inflate: false,
        heartbeat_ms: crate::handover::heartbeat_ms(sub.heartbeat),
    };
    (out, setup)
}
