//! `GET /_conformance/echo` with `Upgrade: websocket`: echoes every message, for the Autobahn
//! suite to test the frame codec. Off unless `enable_conformance_echo`; it runs in the connection
//! task (per-connection memory does not matter for a conformance endpoint).
//!
//! With permessage-deflate agreed, every echoed message that compresses goes compressed, each on
//! its own (no context takeover) with the window the client allowed, so Autobahn's cases 12 and
//! 13 test both directions.

use crate::socket::TaskLink;
use bytes::BytesMut;
use holdfast_proto::ws::codec::{Decoder, Event};
use holdfast_proto::ws::deflate::{Agreement, MessageDeflater};
use holdfast_proto::ws::{close, frame};
use tokio::time::Instant;

use crate::socket::io::{read_more, write_all, Read, Write};
use crate::{CloseReason, Server};

/// How long the echo waits for a peer's next frame.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Echoes until the close handshake, a protocol error or the peer leaving.
pub(crate) async fn run(
    stream: &mut TaskLink,
    server: &Server,
    mut input: BytesMut,
    agreement: Option<Agreement>,
) -> CloseReason {
    let max = server.config().ws_max_message_bytes;
    let mut decoder = if agreement.is_some() { Decoder::with_deflate(max) } else { Decoder::new(max) };
    let mut deflater = agreement.map(|a| MessageDeflater::new(a.server_window_bits));
    let mut out = BytesMut::new();
    loop {
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(Event::Text(text))) => put_message(&mut out, frame::OpCode::Text, &text, deflater.as_mut()),
                Ok(Some(Event::Binary(data))) => put_message(&mut out, frame::OpCode::Binary, &data, deflater.as_mut()),
                Ok(Some(Event::Ping(payload))) => frame::put_frame(&mut out, frame::OpCode::Pong, &payload),
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close { code, .. })) => {
                    close::put_close(&mut out, code.unwrap_or(close::NORMAL), "");
                    let _ = send(stream, server, &out).await;
                    return CloseReason::WsClosed;
                }
                Ok(None) => break,
                Err(error) => {
                    close::put_close(&mut out, error.code, error.reason);
                    let _ = send(stream, server, &out).await;
                    return CloseReason::ProtocolError;
                }
            }
        }
        if !out.is_empty() {
            if !send(stream, server, &out).await {
                return CloseReason::PeerAborted;
            }
            out.clear();
        }
        match read_more(stream, &mut input, Instant::now() + IDLE, &server.stats).await {
            Read::Data => {}
            Read::Eof => return CloseReason::PeerClosed,
            Read::Timeout => return CloseReason::IdleTimeout,
            Read::Failed(_) => return CloseReason::PeerAborted,
        }
    }
}

/// One message as a frame, compressed when a deflater is given and the data compresses.
fn put_message(out: &mut BytesMut, opcode: frame::OpCode, data: &[u8], deflater: Option<&mut MessageDeflater>) {
    match deflater.and_then(|d| d.deflate(data, 0)) {
        Some(compressed) => frame::put_frame_with(out, true, opcode, &compressed),
        None => frame::put_frame(out, opcode, data),
    }
}

async fn send(stream: &mut TaskLink, server: &Server, bytes: &[u8]) -> bool {
    let deadline = Instant::now() + server.config().send_timeout;
    matches!(write_all(stream, &[bytes], deadline, &server.stats).await, Write::Done)
}
