//! One contract on every transport (issue 9), over real sockets: the WebSocket publish op
//! validates like `POST /pub`; absolute-form targets; every server-initiated close sends the
//! transport's `holdfast.closed` notice and ends the response cleanly; notices are envelopes like
//! messages, with an id that resumes; held long polls answer at once on shutdown and count as
//! subscribers; JSON publishes travel as JSON values; a WebSocket on bare `/sub` subscribes by op.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_proto::sse;
use holdfast_testkit::{ws_upgrade_request, RawConn, RawResponse, TestServer};
use serde_json::{json, Value};

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

async fn request(server: &TestServer, text: &str) -> RawResponse {
    let mut conn = server.connect().await;
    conn.send(text.as_bytes()).await;
    conn.response().await
}

async fn get(server: &TestServer, target: &str) -> RawResponse {
    request(server, &format!("GET {target} {GET}\r\n")).await
}

/// `POST /pub/{channel}` with a Content-Type; the response.
async fn publish_typed(server: &TestServer, channel: &str, content_type: &str, body: &str) -> RawResponse {
    request(
        server,
        &format!(
            "POST /pub/{channel} {GET}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// Opens a streaming subscription, checks its head and reads its prelude.
async fn open_stream(server: &TestServer, target: &str) -> RawConn {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} {GET}\r\n").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 200, "{}", head.head);
    conn.next_chunk().await; // retry: / newline / iframe padding
    conn
}

/// The next WebSocket data frame (pings skipped): opcode and payload.
async fn ws_data(conn: &mut RawConn) -> (u8, Vec<u8>) {
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        if opcode != PING {
            return (opcode, payload);
        }
    }
}

async fn ws_json(conn: &mut RawConn) -> Value {
    let (opcode, payload) = ws_data(conn).await;
    assert_eq!(opcode, TEXT, "payload {:?}", String::from_utf8_lossy(&payload));
    serde_json::from_slice(&payload).unwrap()
}

async fn op(conn: &mut RawConn, value: Value) -> Value {
    conn.ws_send(TEXT, value.to_string().as_bytes()).await;
    ws_json(conn).await
}

/// The next NDJSON envelope (heartbeat lines skipped).
async fn ndjson(conn: &mut RawConn) -> Value {
    loop {
        let chunk = String::from_utf8(conn.next_chunk().await).unwrap();
        if let Some(line) = chunk.lines().find(|l| !l.is_empty()) {
            return serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
}

/// The next NDJSON line, which must come within 3 s (a cut without a notice fails with `what`).
async fn ndjson_notice(conn: &mut RawConn, what: &str) -> Value {
    let chunk = conn.next_chunk_within(Duration::from_secs(3)).await;
    let chunk = chunk.unwrap_or_else(|| panic!("{what}: cut with no holdfast.closed notice"));
    serde_json::from_slice(chunk.trim_ascii()).unwrap_or_else(|e| panic!("{what}: {e}: {chunk:?}"))
}

/// The envelope inside an iframe chunk `<script>parent.cb(…);</script>`.
fn iframe_envelope(chunk: &[u8]) -> Value {
    let text = String::from_utf8_lossy(chunk);
    let json = text
        .trim_end()
        .strip_prefix("<script>parent.cb(")
        .and_then(|t| t.strip_suffix(");</script>"))
        .unwrap_or_else(|| panic!("not an iframe message: {text:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The next SSE chunk as text.
async fn sse_text(conn: &mut RawConn) -> String {
    String::from_utf8(conn.next_chunk().await).unwrap()
}

async fn admin_disconnect(server: &TestServer, channel: &str) {
    let answer =
        request(server, &format!("POST /admin/disconnect?channel={channel} {GET}Content-Length: 0\r\n\r\n")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Asserts the last chunk, then EOF.
async fn ends_cleanly(conn: &mut RawConn, what: &str) {
    let last = conn.next_chunk_within(Duration::from_secs(3)).await;
    assert_eq!(last.as_deref(), Some(&b""[..]), "{what}: the last chunk 0\\r\\n\\r\\n after the notice");
    assert!(conn.closes_within(Duration::from_secs(3)).await, "{what}: FIN after the last chunk");
}

/// Asserts a notice envelope: `{"id":C,"channel":…,"event":…,"json":{"reason":…,"cursor":C}}`;
/// gives C.
fn closed_envelope(envelope: &Value, channel: &str, reason: &str) -> String {
    assert_eq!(envelope["event"], "holdfast.closed", "{envelope}");
    assert_eq!(envelope["channel"], channel, "the notice's channel: {envelope}");
    assert_eq!(envelope["json"]["reason"], reason, "{envelope}");
    let id = envelope["id"].as_str().unwrap_or_else(|| panic!("a notice envelope has an id: {envelope}"));
    assert_eq!(envelope["json"]["cursor"], id, "id and cursor agree: {envelope}");
    assert!(envelope.get("data").is_none(), "the reason goes in \"json\", not \"data\": {envelope}");
    id.to_string()
}

/// Polls from `cursor` (channels `channels`): the data of what comes, and the gap (if any).
async fn poll_from(server: &TestServer, channels: &str, cursor: &str) -> (Vec<String>, Value) {
    let answer = get(server, &format!("/sub/{channels}?transport=poll&cursor={cursor}")).await;
    assert_eq!(answer.status, 200, "poll with cursor {cursor}: {}", answer.text());
    let body = answer.json();
    let data =
        body["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap_or("").to_string()).collect();
    (data, body.get("gap").cloned().unwrap_or(Value::Null))
}

// ---- 6. The WebSocket publish op validates like POST /pub ----

#[tokio::test]
async fn the_websocket_publish_op_refuses_a_bad_event_type_with_bad_event() {
    let server = TestServer::start(|c| c.ws_client_publish = true).await;
    let mut conn = server.upgrade("/sub/c").await;
    for event in ["a b", "line\nbreak", "", &"e".repeat(65), "naïve"] {
        let answer = op(&mut conn, json!({"op": "publish", "channel": "c", "event": event, "data": "x"})).await;
        assert_eq!(
            (answer["op"].as_str(), answer["code"].as_str()),
            (Some("error"), Some("bad_event")),
            "{event:?}: {answer}"
        );
    }
    // What POST /pub takes, the op takes.
    let answer =
        op(&mut conn, json!({"op": "publish", "channel": "c", "event": "price.tick:v-2_x", "data": "x"})).await;
    assert_eq!(answer["op"], "published", "{answer}");
    let info = get(&server, "/pub/c").await.json();
    assert_eq!(info["messages"], 1, "refused ops published nothing: {info}");
}

#[tokio::test]
async fn the_websocket_publish_op_publishes_json_from_json_or_non_string_data() {
    let server = TestServer::start(|c| c.ws_client_publish = true).await;
    let start = get(&server, "/sub/c?transport=poll").await.json()["cursor"].as_str().unwrap().to_string();
    let mut conn = server.upgrade("/sub/other").await;
    let answer = op(&mut conn, json!({"op": "publish", "channel": "c", "json": {"a": [1, 2]}})).await;
    assert_eq!(answer["op"], "published", "{answer}");
    let answer = op(&mut conn, json!({"op": "publish", "channel": "c", "data": {"b": true}})).await;
    assert_eq!(answer["op"], "published", "{answer}");
    let answer = op(&mut conn, json!({"op": "publish", "channel": "c", "data": "text"})).await;
    assert_eq!(answer["op"], "published", "{answer}");
    let body = get(&server, &format!("/sub/c?transport=poll&cursor={start}")).await.json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{body}");
    assert_eq!(messages[0]["json"], json!({"a": [1, 2]}), "{body}");
    assert_eq!(messages[1]["json"], json!({"b": true}), "{body}");
    assert!(messages[0].get("data").is_none() && messages[1].get("data").is_none(), "{body}");
    assert_eq!(messages[2]["data"], "text", "{body}");
}

// ---- 7. Absolute-form targets ----

#[tokio::test]
async fn absolute_form_targets_work_for_publish_subscribe_info_and_delete() {
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let host = format!("Host: {}\r\n", server.addr);
    let published =
        request(&server, &format!("POST {base}/pub/room HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello")).await;
    assert_eq!(published.status, 200, "POST {base}/pub/room: {}", published.text());
    let id = published.json()["id"].as_str().unwrap().to_string();
    // history=1: a poll without a cursor starts at "now".
    let polled =
        request(&server, &format!("GET {base}/sub/room?transport=poll&history=1 HTTP/1.1\r\n{host}\r\n")).await;
    assert_eq!(polled.status, 200, "GET {base}/sub/room: {}", polled.text());
    assert_eq!(polled.json()["messages"][0]["data"], "hello", "{}", polled.text());
    assert_eq!(polled.json()["messages"][0]["id"], id.as_str());
    let info = request(&server, &format!("GET {base}/pub/room HTTP/1.1\r\n{host}\r\n")).await;
    assert_eq!(info.status, 200, "GET {base}/pub/room: {}", info.text());
    assert_eq!(info.json()["messages"], 1, "{}", info.text());
    let deleted = request(&server, &format!("DELETE {base}/pub/room HTTP/1.1\r\n{host}\r\n")).await;
    assert_eq!(deleted.status, 200, "DELETE {base}/pub/room: {}", deleted.text());
    assert_eq!(deleted.json()["deleted"], true, "{}", deleted.text());
}

// ---- 8. Every server-initiated close: the notice, then a clean end ----

#[tokio::test]
async fn admin_disconnect_ends_sse_with_the_closed_notice_and_the_last_chunk() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = open_stream(&server, "/sub/ad?transport=sse").await;
    server.wait_for_subscribers("ad", 1).await;
    server.publish("ad", None, b"before").await;
    sse_text(&mut conn).await;
    admin_disconnect(&server, "ad").await;
    let chunk = conn.next_chunk_within(Duration::from_secs(3)).await;
    let text = String::from_utf8(chunk.unwrap_or_default()).unwrap();
    let mut parser = sse::Parser::default();
    let events = parser.feed(text.as_bytes());
    assert_eq!(events.len(), 1, "one holdfast.closed event before the end: {text:?}");
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    let cursor = data["cursor"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        text,
        format!("id: {cursor}\nevent: holdfast.closed\ndata: {{\"reason\":\"admin_disconnect\",\"cursor\":\"{cursor}\"}}\n\n")
    );
    ends_cleanly(&mut conn, "sse").await;
}

#[tokio::test]
async fn admin_disconnect_ends_ndjson_and_iframe_with_the_closed_notice_and_the_last_chunk() {
    let server = TestServer::start(|_| {}).await;
    let mut stream = open_stream(&server, "/sub/ad?transport=stream").await;
    let mut iframe = open_stream(&server, "/sub/ad?transport=iframe&callback=cb").await;
    server.wait_for_subscribers("ad", 2).await;
    admin_disconnect(&server, "ad").await;
    closed_envelope(&ndjson_notice(&mut stream, "stream").await, "ad", "admin_disconnect");
    ends_cleanly(&mut stream, "stream").await;
    let chunk = iframe.next_chunk_within(Duration::from_secs(3)).await.expect("iframe: a notice, not a cut");
    closed_envelope(&iframe_envelope(&chunk), "ad", "admin_disconnect");
    ends_cleanly(&mut iframe, "iframe").await;
}

#[tokio::test]
async fn admin_disconnect_sends_a_websocket_the_closed_notice_then_close_4002() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.upgrade("/sub/wd").await;
    server.wait_for_subscribers("wd", 1).await;
    admin_disconnect(&server, "wd").await;
    closed_envelope(&ws_json(&mut conn).await, "wd", "admin_disconnect");
    let (opcode, payload) = ws_data(&mut conn).await;
    assert_eq!(opcode, CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4002);
    assert!(conn.closes_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn curl_exits_0_when_admin_disconnect_ends_its_sse_stream() {
    let server = TestServer::start(|_| {}).await;
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "10", "-H", "Accept: text/event-stream", &server.url("/sub/curl")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed");
    server.wait_for_subscribers("curl", 1).await;
    admin_disconnect(&server, "curl").await;
    let deadline = Instant::now() + Duration::from_secs(12);
    let status = loop {
        if let Some(status) = curl.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "curl still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = curl.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(status.code(), Some(0), "curl exit (18 = transfer closed with outstanding read data); got {stdout:?}");
    assert!(stdout.contains("event: holdfast.closed"), "{stdout:?}");
}

#[tokio::test]
async fn shutdown_ends_ndjson_and_iframe_with_the_closed_notice_and_the_last_chunk() {
    let mut server = TestServer::start(|_| {}).await;
    let mut stream = open_stream(&server, "/sub/sd?transport=stream").await;
    let mut iframe = open_stream(&server, "/sub/sd?transport=iframe&callback=cb").await;
    server.wait_for_subscribers("sd", 2).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    closed_envelope(&ndjson_notice(&mut stream, "stream").await, "sd", "shutdown");
    ends_cleanly(&mut stream, "stream").await;
    let chunk = iframe.next_chunk_within(Duration::from_secs(3)).await.expect("iframe: a notice");
    closed_envelope(&iframe_envelope(&chunk), "sd", "shutdown");
    ends_cleanly(&mut iframe, "iframe").await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_websocket_heartbeat_timeout_sends_the_closed_notice_before_close_1001() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(400);
    })
    .await;
    let mut conn = server.upgrade("/sub/hb").await;
    let notice = tokio::time::timeout(Duration::from_secs(3), ws_json(&mut conn)).await.expect("a notice");
    closed_envelope(&notice, "hb", "heartbeat_timeout");
    let (opcode, payload) = ws_data(&mut conn).await;
    assert_eq!((opcode, u16::from_be_bytes([payload[0], payload[1]])), (CLOSE, 1001));
}

// ---- 9. Notices are envelopes like messages, with an id that resumes ----

#[tokio::test]
async fn closed_notices_name_the_subscription_channels_and_their_id_resumes() {
    let server = TestServer::start(|_| {}).await;
    // One channel.
    let mut one = open_stream(&server, "/sub/n1?transport=stream").await;
    // Two channels: a connection-wide close names both, joined by ",".
    let mut two = open_stream(&server, "/sub/n1,n2?transport=stream").await;
    server.wait_for_subscribers("n1", 2).await;
    server.wait_for_subscribers("n2", 1).await;
    server.publish("n1", None, b"seen").await;
    ndjson(&mut one).await;
    ndjson(&mut two).await;
    admin_disconnect(&server, "n1").await;
    let id_one = closed_envelope(&ndjson_notice(&mut one, "n1").await, "n1", "admin_disconnect");
    let id_two = closed_envelope(&ndjson_notice(&mut two, "n1,n2").await, "n1,n2", "admin_disconnect");
    server.publish("n2", None, b"next-2").await;
    server.publish("n1", None, b"next-1").await;
    let (data, gap) = poll_from(&server, "n1", &id_one).await;
    assert_eq!((data, gap), (vec!["next-1".to_string()], Value::Null), "resume n1 from the notice's id");
    let (data, gap) = poll_from(&server, "n1,n2", &id_two).await;
    assert_eq!((data, gap), (vec!["next-2".to_string(), "next-1".to_string()], Value::Null), "resume n1,n2");

    // A delete closes a multi-channel subscription with a notice for that channel.
    let mut both = open_stream(&server, "/sub/x,y?transport=stream").await;
    server.wait_for_subscribers("x", 1).await;
    let deleted = request(&server, &format!("DELETE /pub/x {GET}\r\n")).await;
    assert_eq!(deleted.status, 200);
    closed_envelope(&ndjson_notice(&mut both, "x,y").await, "x", "channel_deleted");
}

#[tokio::test]
async fn gap_notices_are_envelopes_with_an_id_that_resumes_without_a_gap() {
    let server = TestServer::start(|c| c.history_messages = 3).await;
    let old = server.publish("g", None, b"0").await;
    for i in 1..=5 {
        server.publish("g", None, i.to_string().as_bytes()).await;
    }
    // Kept: 3, 4, 5.
    let mut stream = open_stream(&server, &format!("/sub/g?transport=stream&cursor={old}")).await;
    let gap = ndjson(&mut stream).await;
    assert_eq!(gap["event"], "holdfast.gap", "{gap}");
    assert_eq!(gap["channel"], "g", "{gap}");
    assert_eq!(gap["json"]["first_available"], 4, "the gap object goes in \"json\": {gap}");
    assert!(gap.get("data").is_none(), "{gap}");
    let id = gap["id"].as_str().unwrap_or_else(|| panic!("a gap notice has an id: {gap}")).to_string();
    let (data, again) = poll_from(&server, "g", &id).await;
    assert_eq!((data, again), (vec!["3".to_string(), "4".to_string(), "5".to_string()], Value::Null));

    let mut conn = open_stream(&server, &format!("/sub/g?transport=sse&cursor={old}")).await;
    let text = sse_text(&mut conn).await;
    let first = text.split("\n\n").next().unwrap();
    assert!(first.starts_with(&format!("id: {id}\nevent: holdfast.gap\ndata: ")), "SSE gap notice: {text:?}");

    let mut ws = server.upgrade(&format!("/sub/g?cursor={old}")).await;
    let gap = ws_json(&mut ws).await;
    assert_eq!((gap["event"].as_str(), gap["id"].as_str()), (Some("holdfast.gap"), Some(&*id)), "{gap}");
    assert_eq!(gap["json"]["first_available"], 4, "{gap}");
}

// ---- 10, 11. Long polls: answered at shutdown, counted as subscribers ----

async fn wait_for_longpolls(server: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().await["subscribers"]["longpoll"] != n {
        assert!(Instant::now() < deadline, "never {n} long polls held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_waiting_long_poll_is_answered_at_once_on_shutdown() {
    let mut server = TestServer::start(|c| c.shutdown_timeout = Duration::from_secs(5)).await;
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/lp {GET}\r\n").as_bytes()).await;
    wait_for_longpolls(&server, 1).await;
    let started = Instant::now();
    let stopping = tokio::spawn(async move { server.stop().await });
    let answer = tokio::time::timeout(Duration::from_secs(1), conn.response())
        .await
        .unwrap_or_else(|_| panic!("a held long poll got no answer within 1 s of the shutdown"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("close"), "{}", answer.head);
    let body = answer.json();
    assert_eq!(body["messages"], json!([]), "{body}");
    assert!(body["cursor"].as_str().is_some_and(|c| !c.is_empty()), "{body}");
    let stopped = tokio::time::timeout(Duration::from_millis(2500), stopping).await;
    assert!(stopped.is_ok(), "the server did not stop within 2.5 s ({:?} since the shutdown)", started.elapsed());
}

#[tokio::test]
async fn a_held_long_poll_counts_as_a_subscriber_in_channel_info_and_stats() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/held {GET}\r\n").as_bytes()).await;
    wait_for_longpolls(&server, 1).await;
    let info = get(&server, "/pub/held").await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["subscribers"], 1, "{}", info.text());
    let published = server.publish("held", None, b"wake").await;
    assert_eq!(conn.response().await.json()["cursor"], published.as_str());
}

// ---- 12. JSON payloads ----

#[tokio::test]
async fn a_json_publish_must_be_valid_json() {
    let server = TestServer::start(|_| {}).await;
    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let refused = publish_typed(&server, "j", content_type, "{not json").await;
        assert_eq!(refused.status, 400, "{content_type}: {}", refused.text());
        assert_eq!(refused.json()["error"], "bad_json", "{content_type}: {}", refused.text());
        assert_eq!(publish_typed(&server, "j", content_type, r#"{"ok":1}"#).await.status, 200);
    }
}

#[tokio::test]
async fn a_json_publish_arrives_as_a_json_value_on_every_transport() {
    let server = TestServer::start(|_| {}).await;
    let value = json!({"a": [1, 2], "b": "x"});
    let start = get(&server, "/sub/j?transport=poll").await.json()["cursor"].as_str().unwrap().to_string();
    let mut sse = open_stream(&server, "/sub/j?transport=sse").await;
    let mut stream = open_stream(&server, "/sub/j?transport=stream").await;
    let mut iframe = open_stream(&server, "/sub/j?transport=iframe&callback=cb").await;
    let mut ws = server.upgrade("/sub/j").await;
    let mut raw = server.upgrade("/sub/j?format=raw").await;
    server.wait_for_subscribers("j", 5).await;
    // After the count above: a held long poll counts too (item 11).
    let mut longpoll = server.connect().await;
    longpoll.send(format!("GET /sub/j?cursor={start} {GET}\r\n").as_bytes()).await;
    wait_for_longpolls(&server, 1).await;
    let published = publish_typed(&server, "j", "application/json", &value.to_string()).await;
    assert_eq!(published.status, 200, "{}", published.text());
    let id = published.json()["id"].as_str().unwrap().to_string();

    let check = |what: &str, envelope: &Value| {
        assert_eq!(envelope["id"], id.as_str(), "{what}: {envelope}");
        assert_eq!(envelope["json"], value, "{what}: a JSON value, not a string: {envelope}");
        assert!(envelope.get("data").is_none(), "{what}: {envelope}");
    };
    check("stream", &ndjson(&mut stream).await);
    check("iframe", &iframe_envelope(&iframe.next_chunk().await));
    check("websocket", &ws_json(&mut ws).await);
    check("long poll", &longpoll.response().await.json()["messages"][0]);
    check("poll", &get(&server, &format!("/sub/j?transport=poll&cursor={start}")).await.json()["messages"][0]);
    let (opcode, payload) = ws_data(&mut raw).await;
    assert_eq!(opcode, TEXT, "raw: a text frame");
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), value, "raw");
    let mut parser = sse::Parser::default();
    let events = parser.feed(sse_text(&mut sse).await.as_bytes());
    assert_eq!(serde_json::from_str::<Value>(&events[0].data).unwrap(), value, "sse: data: <json text>");
    assert_eq!(events[0].id, id);

    // Text stays text; the charset parameter is the same JSON.
    server.publish("j", None, b"plain").await;
    assert_eq!(ndjson(&mut stream).await["data"], "plain");
    assert_eq!(publish_typed(&server, "j", "application/json; charset=utf-8", r#"[1,"two"]"#).await.status, 200);
    assert_eq!(ndjson(&mut stream).await["json"], json!([1, "two"]));
}

// ---- 13. A WebSocket on bare /sub subscribes by op ----

#[tokio::test]
async fn a_websocket_on_bare_sub_subscribes_by_op_and_gets_messages() {
    let server = TestServer::start(|_| {}).await;
    for (target, channel) in [("/sub", "room"), ("/sub/", "hall")] {
        let mut conn = server.upgrade(target).await;
        let answer = op(&mut conn, json!({"op": "subscribe", "channels": [channel]})).await;
        assert_eq!(answer["op"], "subscribed", "{target}: {answer}");
        assert_eq!(answer["channels"], json!([channel]), "{target}: {answer}");
        server.wait_for_subscribers(channel, 1).await;
        let id = server.publish(channel, None, b"hello").await;
        let envelope = ws_json(&mut conn).await;
        assert_eq!((envelope["id"].as_str(), envelope["data"].as_str()), (Some(&*id), Some("hello")), "{target}");
    }
}

#[tokio::test]
async fn bare_sub_without_upgrade_is_still_refused() {
    let server = TestServer::start(|_| {}).await;
    for target in ["/sub", "/sub/"] {
        let status = get(&server, target).await.status;
        assert!(status == 404 || status == 400, "GET {target}: {status}");
    }
}

// ---- 10. Streaming answers and the 101 say where the subscription starts ----

#[tokio::test]
async fn streaming_heads_and_the_101_carry_the_starting_cursor_which_resumes_without_loss() {
    let server = TestServer::start(|_| {}).await;
    server.publish("sc", None, b"old-1").await;
    server.publish("sc", None, b"old-2").await;
    for (label, upgrade_to) in [("sse", false), ("stream", false), ("websocket", true)] {
        let mut conn = server.connect().await;
        if upgrade_to {
            conn.send(ws_upgrade_request("/sub/sc", "").as_bytes()).await;
        } else {
            conn.send(format!("GET /sub/sc?transport={label} {GET}\r\n").as_bytes()).await;
        }
        let head = conn.stream_head().await;
        let cursor = head.header("holdfast-cursor").unwrap_or_else(|| panic!("{label}: {}", head.head)).to_string();
        // The link dies before any message; what is published meanwhile is not lost.
        drop(conn);
        let fresh = format!("new-{label}");
        server.publish("sc", None, fresh.as_bytes()).await;
        let (data, gap) = poll_from(&server, "sc", &cursor).await;
        assert_eq!((data, gap), (vec![fresh], Value::Null), "{label}: resume from the head's cursor");
    }
    // A WebSocket with no channel yet has no position to announce.
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request("/sub", "").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!((head.status, head.header("holdfast-cursor")), (101, None));
}
