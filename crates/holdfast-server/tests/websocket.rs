//! WebSocket subscribers over real sockets: the handshake and its refusals, envelopes and raw
//! frames, resume by cursor, client ops, server pings, the heartbeat timeout, protocol errors and
//! close codes.

use std::time::Duration;

use holdfast_testkit::{ws_client_frame, ws_upgrade_request, RawConn, TestServer};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

async fn upgrade(server: &TestServer, target: &str) -> RawConn {
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request(target, "").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 101, "{}", head.head);
    assert_eq!(head.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert!(head.header("upgrade").unwrap().eq_ignore_ascii_case("websocket"));
    conn
}

async fn text_json(conn: &mut RawConn) -> serde_json::Value {
    loop {
        let (fin, opcode, payload) = conn.ws_frame().await;
        if opcode == PING {
            continue;
        }
        assert!(fin);
        assert_eq!(opcode, TEXT, "payload {:?}", String::from_utf8_lossy(&payload));
        return serde_json::from_slice(&payload).unwrap();
    }
}

async fn op(conn: &mut RawConn, value: serde_json::Value) -> serde_json::Value {
    conn.ws_send(TEXT, value.to_string().as_bytes()).await;
    text_json(conn).await
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test]
async fn bad_handshakes_are_refused_with_their_status() {
    let server = TestServer::start(|c| c.cors_origins = vec!["https://ok.example".into()]).await;
    let good = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    let cases = [
        (format!("GET /sub/a HTTP/1.1\r\nHost: t\r\n{good}\r\n"), 400),
        (format!("GET /sub/a HTTP/1.1\r\nHost: t\r\n{good}Sec-WebSocket-Key: c2hvcnQ=\r\n\r\n"), 400),
        (ws_upgrade_request("/sub/a", "").replace("Version: 13", "Version: 8"), 426),
        (ws_upgrade_request("/sub/a", "").replace("Connection: Upgrade", "Connection: keep-alive"), 400),
        (ws_upgrade_request("/sub/a", "Origin: https://evil.example\r\n"), 403),
        (ws_upgrade_request("/sub/a b", ""), 400),
    ];
    for (request, status) in cases {
        let mut conn = server.connect().await;
        conn.send(request.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, status, "{request}");
        if status == 426 {
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
        }
    }
    // Allowed: a listed origin, and the server's own origin.
    for origin in ["https://ok.example", "http://t"] {
        let mut conn = server.connect().await;
        conn.send(ws_upgrade_request("/sub/a", &format!("Origin: {origin}\r\n")).as_bytes()).await;
        assert_eq!(conn.stream_head().await.status, 101, "{origin}");
    }
}

#[tokio::test]
async fn envelopes_by_default_and_raw_frames_on_request() {
    let server = TestServer::start(|_| {}).await;
    let mut json = upgrade(&server, "/sub/w").await;
    let mut raw = upgrade(&server, "/sub/w?format=raw").await;
    server.wait_for_subscribers("w", 2).await;
    let id = server.publish("w", Some("tick"), "héllo".as_bytes()).await;
    server.publish("w", None, &[0xff, 0x00]).await;

    let envelope = text_json(&mut json).await;
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["event"], "tick");
    assert_eq!(envelope["data"], "héllo");
    assert_eq!(text_json(&mut json).await["data_b64"], "/wA=");

    assert_eq!(raw.ws_frame().await, (true, TEXT, "héllo".as_bytes().to_vec()));
    assert_eq!(raw.ws_frame().await, (true, BINARY, vec![0xff, 0x00]));
}

#[tokio::test]
async fn resume_by_cursor_and_gap_notice() {
    let server = TestServer::start(|c| c.history_messages = 4).await;
    let first = server.publish("r", None, b"0").await;
    for i in 1..=3 {
        server.publish("r", None, i.to_string().as_bytes()).await;
    }
    let mut conn = upgrade(&server, &format!("/sub/r?cursor={first}")).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(text_json(&mut conn).await["data"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["1", "2", "3"]);
    drop(conn);
    for i in 4..=9 {
        server.publish("r", None, i.to_string().as_bytes()).await;
    }
    let mut conn = upgrade(&server, &format!("/sub/r?cursor={first}")).await;
    let gap = text_json(&mut conn).await;
    assert_eq!(gap["event"], "holdfast.gap");
    // Ten messages (seq 1–10) with four kept: 7–10, whose payloads are "6" to "9".
    assert_eq!(gap["json"]["first_available"], 7);
    for want in 6..=9 {
        assert_eq!(text_json(&mut conn).await["data"], want.to_string());
    }
}

#[tokio::test]
async fn client_ops_subscribe_unsubscribe_publish_and_ping() {
    let server = TestServer::start(|c| c.ws_client_publish = true).await;
    let mut conn = upgrade(&server, "/sub/a").await;
    assert_eq!(op(&mut conn, serde_json::json!({"op": "ping"})).await, serde_json::json!({"op": "pong"}));
    let subscribed = op(&mut conn, serde_json::json!({"op": "subscribe", "channels": ["b"]})).await;
    assert_eq!(subscribed["op"], "subscribed");
    assert_eq!(subscribed["channels"], serde_json::json!(["a", "b"]));
    let published = op(&mut conn, serde_json::json!({"op": "publish", "channel": "b", "data": "from ws"})).await;
    assert_eq!(published["op"], "published");
    let delivered = text_json(&mut conn).await;
    assert_eq!((delivered["channel"].as_str(), delivered["data"].as_str()), (Some("b"), Some("from ws")));
    let left = op(&mut conn, serde_json::json!({"op": "unsubscribe", "channels": ["a"]})).await;
    assert_eq!(left["channels"], serde_json::json!(["b"]));
    server.publish("a", None, b"not for me").await;
    server.publish("b", None, b"for me").await;
    assert_eq!(text_json(&mut conn).await["data"], "for me");
}

#[tokio::test]
async fn bad_ops_get_an_error_and_the_connection_stays_up() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = upgrade(&server, "/sub/a").await;
    for (bad, code) in [
        (serde_json::json!({"op": "dance"}), "bad_op"),
        (serde_json::json!({"channels": []}), "bad_op"),
        (serde_json::json!({"op": "subscribe", "channels": ["no spaces"]}), "bad_channel"),
        (serde_json::json!({"op": "subscribe", "channels": ["x"], "cursor": "!!"}), "bad_cursor"),
        (serde_json::json!({"op": "publish", "channel": "a", "data": "x"}), "forbidden"),
    ] {
        let answer = op(&mut conn, bad.clone()).await;
        assert_eq!(answer["op"], "error", "{bad}");
        assert_eq!(answer["code"], code, "{bad}");
    }
    conn.ws_send(TEXT, b"not json").await;
    assert_eq!(text_json(&mut conn).await["code"], "bad_json");
    conn.ws_send(BINARY, b"\x00").await;
    assert_eq!(text_json(&mut conn).await["code"], "bad_op");
    // Still subscribed and alive.
    server.publish("a", None, b"still here").await;
    assert_eq!(text_json(&mut conn).await["data"], "still here");
}

#[tokio::test]
async fn client_ping_gets_pong_with_the_same_payload() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = upgrade(&server, "/sub/a").await;
    conn.ws_send(PING, b"are you there").await;
    assert_eq!(conn.ws_frame().await, (true, PONG, b"are you there".to_vec()));
}

#[tokio::test]
async fn frames_sent_right_behind_the_upgrade_are_handled() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    let mut bytes = ws_upgrade_request("/sub/a", "").into_bytes();
    bytes.extend(ws_client_frame(true, PING, b"early"));
    conn.send(&bytes).await;
    assert_eq!(conn.stream_head().await.status, 101);
    assert_eq!(conn.ws_frame().await, (true, PONG, b"early".to_vec()));
}

#[tokio::test]
async fn server_pings_and_cuts_a_silent_peer() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(500);
    })
    .await;
    let mut conn = upgrade(&server, "/sub/quiet").await;
    let (_, opcode, _) = conn.ws_frame_within(Duration::from_millis(400)).await.expect("a ping");
    assert_eq!(opcode, PING);
    // Never answer: closed with 1001 heartbeat_timeout.
    let started = std::time::Instant::now();
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        if opcode == CLOSE {
            assert_eq!(close_code(&payload), 1001);
            assert_eq!(&payload[2..], b"heartbeat_timeout");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    conn.assert_closed().await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(300);
    })
    .await;
    let mut conn = upgrade(&server, "/sub/alive").await;
    let until = std::time::Instant::now() + Duration::from_millis(900);
    while std::time::Instant::now() < until {
        let (_, opcode, payload) = conn.ws_frame().await;
        assert_eq!(opcode, PING, "closed although pongs were sent");
        conn.ws_send(PONG, &payload).await;
    }
}

#[tokio::test]
async fn protocol_violations_close_with_the_right_code() {
    let server = TestServer::start(|c| c.ws_max_message_bytes = 1000).await;
    let unmasked = {
        let mut frame = vec![0x81, 0x02];
        frame.extend_from_slice(b"hi");
        frame
    };
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (unmasked, 1002),
        (ws_client_frame(true, 0x3, b""), 1002),
        (ws_client_frame(false, PING, b""), 1002),
        (ws_client_frame(true, TEXT, &[0xc3, 0x28]), 1007),
        (ws_client_frame(true, BINARY, &vec![0u8; 1001]), 1009),
    ];
    for (frame, code) in cases {
        let mut conn = upgrade(&server, "/sub/p").await;
        conn.send(&frame).await;
        let (_, opcode, payload) = conn.ws_frame().await;
        assert_eq!((opcode, close_code(&payload)), (CLOSE, code));
        conn.assert_closed().await;
    }
}

#[tokio::test]
async fn close_handshake_echoes_the_code() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = upgrade(&server, "/sub/c").await;
    conn.ws_send(CLOSE, &[0x0f, 0xa0, b'b', b'y', b'e']).await;
    let (_, opcode, payload) = conn.ws_frame().await;
    assert_eq!((opcode, close_code(&payload)), (CLOSE, 4000));
    conn.assert_closed().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1012() {
    let mut server = TestServer::start(|_| {}).await;
    let mut conn = upgrade(&server, "/sub/s").await;
    server.wait_for_subscribers("s", 1).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    let notice = text_json(&mut conn).await;
    assert_eq!(notice["event"], "holdfast.closed");
    let (_, opcode, payload) = conn.ws_frame().await;
    assert_eq!((opcode, close_code(&payload)), (CLOSE, 1012));
    stopping.await.unwrap();
}

#[tokio::test]
async fn conformance_echo_echoes_text_binary_and_fragments() {
    let server = TestServer::start(|c| c.enable_conformance_echo = true).await;
    let mut conn = upgrade(&server, "/_conformance/echo").await;
    conn.ws_send(TEXT, b"hello").await;
    assert_eq!(conn.ws_frame().await, (true, TEXT, b"hello".to_vec()));
    conn.send(&ws_client_frame(false, TEXT, b"frag")).await;
    conn.send(&ws_client_frame(true, PING, b"p")).await;
    conn.send(&ws_client_frame(true, 0x0, b"mented")).await;
    assert_eq!(conn.ws_frame().await, (true, PONG, b"p".to_vec()));
    assert_eq!(conn.ws_frame().await, (true, TEXT, b"fragmented".to_vec()));
    conn.ws_send(BINARY, &[1, 2, 3]).await;
    assert_eq!(conn.ws_frame().await, (true, BINARY, vec![1, 2, 3]));
}
