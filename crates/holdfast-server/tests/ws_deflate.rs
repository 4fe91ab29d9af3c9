//! permessage-deflate (RFC 7692) over real sockets: off unless configured; the offer answered
//! with what the server does; messages compressed from the shared copy (one channel and several,
//! envelopes and raw); a limited server window gets plain frames; compressed client messages
//! inflated under the size cap; the conformance echo both ways. Python `websockets`, Chromium
//! and Autobahn's cases 12–13 test the same against other implementations (ws_interop.rs,
//! scripts/autobahn.sh).

use holdfast_proto::ws::deflate::{inflate, MessageDeflater};
use holdfast_testkit::{ws_client_frame, ws_upgrade_request, RawConn, TestServer};
use serde_json::{json, Value};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
/// FIN + RSV1: the first byte of a compressed single-frame message, less its opcode.
const COMPRESSED: u8 = 0xC0;
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Upgrades with `extra` header lines; returns the connection and its extensions answer.
async fn upgrade(server: &TestServer, target: &str, extra: &str) -> (RawConn, Option<String>) {
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request(target, extra).as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 101, "{}", head.head);
    let extensions = head.header("sec-websocket-extensions").map(str::to_owned);
    (conn, extensions)
}

/// The next data frame (pings skipped): first byte and payload, inflated when RSV1 is set.
async fn message(conn: &mut RawConn) -> (u8, Vec<u8>) {
    loop {
        let (first, payload) = conn.ws_frame_bits().await;
        if first & 0x0f == PING {
            continue;
        }
        let data = if first & 0x40 != 0 { inflate(&payload, 1 << 24).unwrap().to_vec() } else { payload };
        return (first, data);
    }
}

fn json_of(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(data)))
}

/// A payload that compresses well, like a price feed's.
fn ticks(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"sym\":\"ABC\",\"px\":{}.25,\"qty\":{}}}", 100 + i % 7, i % 13))
        .collect::<Vec<_>>()
        .join(",")
}

fn compressed(data: &[u8]) -> Vec<u8> {
    MessageDeflater::new(15).deflate(data, 0).expect("compressible")
}

#[tokio::test]
async fn deflate_is_off_unless_configured() {
    let server = TestServer::start(|_| {}).await;
    let (mut conn, extensions) = upgrade(&server, "/sub/off", OFFER).await;
    assert_eq!(extensions, None);
    // Without the extension RSV1 is a protocol error.
    conn.send(&ws_client_frame(true, 0x40 | TEXT, &compressed(ticks(20).as_bytes()))).await;
    let (first, payload) = conn.ws_frame_bits().await;
    assert_eq!((first & 0x0f, u16::from_be_bytes([payload[0], payload[1]])), (CLOSE, 1002));
    conn.assert_closed().await;
}

#[tokio::test]
async fn messages_arrive_compressed_for_one_channel_and_several() {
    let server = TestServer::start(|c| c.ws_deflate = true).await;
    let (mut one, extensions) = upgrade(&server, "/sub/dz", OFFER).await;
    assert_eq!(extensions.as_deref(), Some(ANSWER));
    let (mut two, _) = upgrade(&server, "/sub/dz,dy", OFFER).await;
    let (mut raw, _) = upgrade(&server, "/sub/dz?format=raw", OFFER).await;
    let (mut plain, extensions) = upgrade(&server, "/sub/dz", "").await;
    assert_eq!(extensions, None);
    server.wait_for_subscribers("dz", 4).await;

    let big = ticks(60);
    let id = server.publish("dz", None, big.as_bytes()).await;
    let short_id = server.publish("dz", None, b"hi").await;

    let (first, data) = message(&mut one).await;
    assert_eq!(first, COMPRESSED | TEXT);
    let envelope = json_of(&data);
    assert_eq!((envelope["id"].as_str(), envelope["data"].as_str()), (Some(&*id), Some(&*big)));
    // Too short to be worth it: a plain frame on the same connection.
    let (first, data) = message(&mut one).await;
    assert_eq!((first, json_of(&data)["id"].as_str()), (0x80 | TEXT, Some(&*short_id)));

    // Several channels: this subscriber's own cursor, in the stored block before the shared part.
    let (first, data) = message(&mut two).await;
    assert_eq!(first, COMPRESSED | TEXT);
    let envelope = json_of(&data);
    assert_eq!(envelope["data"].as_str(), Some(&*big));
    assert_ne!(envelope["id"].as_str(), Some(&*id), "a two-channel cursor: {envelope}");

    // Raw: the payload itself compressed.
    let (first, data) = message(&mut raw).await;
    assert_eq!((first, data), (COMPRESSED | TEXT, big.clone().into_bytes()));

    // A subscriber without the extension gets the same message plain.
    let (first, data) = message(&mut plain).await;
    assert_eq!((first, json_of(&data)["data"].as_str()), (0x80 | TEXT, Some(&*big)));
}

#[tokio::test]
async fn a_limited_server_window_is_answered_and_gets_plain_frames() {
    let server = TestServer::start(|c| c.ws_deflate = true).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (mut conn, extensions) = upgrade(&server, "/sub/win", offer).await;
    assert_eq!(extensions, Some(format!("{ANSWER}; server_max_window_bits=10")));
    server.wait_for_subscribers("win", 1).await;
    server.publish("win", None, ticks(60).as_bytes()).await;
    let (first, data) = message(&mut conn).await;
    assert_eq!((first, json_of(&data)["data"].as_str()), (0x80 | TEXT, Some(&*ticks(60))));
    // An offer the server cannot take (a 256-byte window) means no extension, not a refusal.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n";
    assert_eq!(upgrade(&server, "/sub/win", offer).await.1, None);
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_under_the_cap() {
    let server = TestServer::start(|c| {
        c.ws_deflate = true;
        c.ws_client_publish = true;
        c.ws_max_message_bytes = 4096;
    })
    .await;
    let (mut conn, _) = upgrade(&server, "/sub/up", OFFER).await;
    let data = ticks(30);
    let op = json!({"op": "publish", "channel": "up", "data": data}).to_string();
    // Compressed, and in two fragments with RSV1 on the first only.
    let packed = compressed(op.as_bytes());
    let (a, b) = packed.split_at(packed.len() / 2);
    conn.send(&[ws_client_frame(false, 0x40 | TEXT, a), ws_client_frame(true, 0x0, b)].concat()).await;
    let (_, answer) = message(&mut conn).await;
    assert_eq!(json_of(&answer)["op"], "published", "{}", String::from_utf8_lossy(&answer));
    let (first, delivered) = message(&mut conn).await;
    assert_eq!((first, json_of(&delivered)["data"].as_str()), (COMPRESSED | TEXT, Some(&*data)));

    // 5,000 bytes once inflated, from a frame of a few dozen: 1009.
    let bomb = compressed(&[b' '; 5000]);
    assert!(bomb.len() < 100);
    conn.send(&ws_client_frame(true, 0x40 | BINARY, &bomb)).await;
    let (first, payload) = conn.ws_frame_bits().await;
    assert_eq!((first & 0x0f, u16::from_be_bytes([payload[0], payload[1]])), (CLOSE, 1009));
    conn.assert_closed().await;

    // Not DEFLATE: 1007.
    let (mut conn, _) = upgrade(&server, "/sub/up", OFFER).await;
    conn.send(&ws_client_frame(true, 0x40 | TEXT, &[0xff, 0xff, 0xff])).await;
    let (first, payload) = conn.ws_frame_bits().await;
    assert_eq!((first & 0x0f, u16::from_be_bytes([payload[0], payload[1]])), (CLOSE, 1007));
}

#[tokio::test]
async fn conformance_echo_compresses_both_ways() {
    let server = TestServer::start(|c| {
        c.ws_deflate = true;
        c.enable_conformance_echo = true;
    })
    .await;
    let (mut conn, extensions) = upgrade(&server, "/_conformance/echo", OFFER).await;
    assert_eq!(extensions.as_deref(), Some(ANSWER));
    let data = ticks(40);
    conn.send(&ws_client_frame(true, 0x40 | TEXT, &compressed(data.as_bytes()))).await;
    assert_eq!(message(&mut conn).await, (COMPRESSED | TEXT, data.clone().into_bytes()));
    conn.ws_send(BINARY, data.as_bytes()).await;
    assert_eq!(message(&mut conn).await, (COMPRESSED | BINARY, data.into_bytes()));
    conn.ws_send(TEXT, b"short").await;
    assert_eq!(message(&mut conn).await, (0x80 | TEXT, b"short".to_vec()));
}
