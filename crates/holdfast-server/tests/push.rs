//! Pub/sub over every HTTP transport, over real sockets: publish and channel info, SSE byte for
//! byte, NDJSON, iframe, poll and long poll, resume by cursor on each, gaps, multi-channel
//! subscriptions, deletes, slow consumers, CORS.

use std::time::Duration;

use holdfast_proto::sse;
use holdfast_testkit::{RawConn, TestServer};

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";

/// Opens a streaming subscription and checks its head.
async fn open_stream(server: &TestServer, target: &str, extra: &str) -> (RawConn, holdfast_testkit::RawResponse) {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} {GET}{extra}\r\n").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 200, "{}", head.head);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    (conn, head)
}

/// SSE events from a stream until `count` have arrived.
async fn sse_events(conn: &mut RawConn, parser: &mut sse::Parser, count: usize) -> Vec<sse::Event> {
    let mut events = Vec::new();
    while events.len() < count {
        events.extend(parser.feed(&conn.next_chunk().await));
    }
    events
}

/// NDJSON envelopes from a stream until `count` have arrived (blank heartbeat lines skipped).
async fn ndjson(conn: &mut RawConn, count: usize) -> Vec<serde_json::Value> {
    let mut values = Vec::new();
    while values.len() < count {
        let chunk = conn.next_chunk().await;
        for line in String::from_utf8(chunk).unwrap().lines().filter(|l| !l.is_empty()) {
            values.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    values
}

async fn get(server: &TestServer, target: &str) -> holdfast_testkit::RawResponse {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} {GET}\r\n").as_bytes()).await;
    conn.response().await
}

#[tokio::test]
async fn publish_answers_with_id_and_channel_info() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(get(&server, "/pub/news").await.status, 404);
    let mut conn = server.connect().await;
    conn.send(b"POST /pub/news?event=flash HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").await;
    let published = conn.response().await;
    assert_eq!(published.status, 200);
    let body = published.json();
    assert_eq!(body["channel"], "news");
    assert_eq!(body["subscribers"], 0);
    let id = body["id"].as_str().unwrap().to_string();
    let info = get(&server, "/pub/news").await.json();
    assert_eq!(info["messages"], 1);
    assert_eq!(info["first_id"], id.as_str());
    assert_eq!(info["last_id"], id.as_str());
}

#[tokio::test]
async fn bad_channel_names_events_and_bodies_are_refused() {
    let server = TestServer::start(|c| c.max_body_bytes = 10).await;
    for (request, status, label) in [
        ("POST /pub/a%20b HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 400, "bad_channel"),
        ("POST /pub/ok?event=a%0Ab HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 400, "bad_event"),
        ("POST /pub/ok HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n01234567890", 413, "body_too_large"),
        ("GET /sub/a,b/c HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_channel"),
        ("GET /sub/a?transport=pigeon HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_transport"),
        ("GET /sub/a?cursor=!!! HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_cursor"),
        ("GET /sub/a?transport=poll&cursor=AQAA HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_cursor"),
        ("GET /sub/a?history=lots HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_history"),
        ("GET /sub/a?transport=iframe&callback=alert(1) HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_callback"),
        ("GET /sub/a?transport=iframe HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_callback"),
    ] {
        let mut conn = server.connect().await;
        conn.send(request.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, status, "{request}");
        assert_eq!(response.json()["error"], label, "{request}");
        assert!(response.json()["reason"].as_str().unwrap().len() > 10);
    }
}

#[tokio::test]
async fn sse_stream_is_exact_on_the_wire() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.sse_retry = Duration::from_millis(1500);
    })
    .await;
    let (mut conn, head) = open_stream(&server, "/sub/room", "Accept: text/event-stream\r\n").await;
    assert_eq!(head.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(head.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(conn.next_chunk().await, b"retry: 1500\n\n");
    server.wait_for_subscribers("room", 1).await;
    let id1 = server.publish("room", Some("chat"), b"line one\r\nline two\rthree\nfour").await;
    let id2 = server.publish("room", None, b"").await;
    let first = conn.next_chunk().await;
    assert_eq!(
        String::from_utf8(first).unwrap(),
        format!("id: {id1}\nevent: chat\ndata: line one\ndata: line two\ndata: three\ndata: four\n\n")
    );
    assert_eq!(String::from_utf8(conn.next_chunk().await).unwrap(), format!("id: {id2}\ndata: \n\n"));
    // Quiet: a heartbeat comment within two intervals.
    assert_eq!(conn.next_chunk_within(Duration::from_millis(600)).await.as_deref(), Some(&b":\n\n"[..]));
}

#[tokio::test]
async fn ndjson_stream_and_iframe_deliver_envelopes() {
    let server = TestServer::start(|_| {}).await;
    let (mut stream, head) = open_stream(&server, "/sub/ticker?transport=stream", "").await;
    assert_eq!(head.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(stream.next_chunk().await, b"\n");
    let (mut iframe, head) = open_stream(&server, "/sub/ticker?transport=iframe&callback=app.onMessage", "").await;
    assert_eq!(head.header("content-type"), Some("text/html; charset=utf-8"));
    let prelude = iframe.next_chunk().await;
    assert!(prelude.len() >= 1024, "iframe padding is {} bytes", prelude.len());
    assert!(prelude.starts_with(b"<!DOCTYPE html>"));
    server.wait_for_subscribers("ticker", 2).await;
    let id = server.publish("ticker", Some("price"), b"{\"eur\":1.08} </script>").await;

    let envelope = &ndjson(&mut stream, 1).await[0];
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["channel"], "ticker");
    assert_eq!(envelope["event"], "price");
    assert_eq!(envelope["data"], "{\"eur\":1.08} </script>");

    let script = String::from_utf8(iframe.next_chunk().await).unwrap();
    let json = script.strip_prefix("<script>parent.app.onMessage(").unwrap().strip_suffix(");</script>\n").unwrap();
    assert!(!json.contains("</script>"), "payload must not close the script: {script}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(json).unwrap(), *envelope);
}

#[tokio::test]
async fn binary_payloads_go_as_base64() {
    let server = TestServer::start(|_| {}).await;
    server.publish("bin", None, &[0xff, 0xfe, 0x00]).await;
    let answer = get(&server, "/sub/bin?transport=poll&history=1").await.json();
    assert_eq!(answer["messages"][0]["data_b64"], "//4A");
}

#[tokio::test]
async fn poll_answers_at_once_and_long_poll_holds_until_a_message() {
    let server = TestServer::start(|_| {}).await;
    let empty = get(&server, "/sub/q?transport=poll").await;
    assert_eq!(empty.header("cache-control"), Some("no-store"));
    let empty = empty.json();
    assert_eq!(empty["messages"], serde_json::json!([]));
    let cursor = empty["cursor"].as_str().unwrap().to_string();

    let started = std::time::Instant::now();
    let mut waiting = server.connect().await;
    waiting.send(format!("GET /sub/q?cursor={cursor} {GET}\r\n").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let id = server.publish("q", None, b"wake up").await;
    let answer = waiting.response().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let body = answer.json();
    assert_eq!(body["messages"][0]["data"], "wake up");
    assert_eq!(body["cursor"], id.as_str());
    // The connection stays usable: the next poll on it returns what was published meanwhile.
    server.publish("q", None, b"next").await;
    waiting.send(format!("GET /sub/q?cursor={id} {GET}\r\n").as_bytes()).await;
    assert_eq!(waiting.response().await.json()["messages"][0]["data"], "next");
}

#[tokio::test]
async fn long_poll_times_out_with_an_empty_list_and_the_same_cursor() {
    let server = TestServer::start(|c| c.longpoll_timeout = Duration::from_millis(200)).await;
    let cursor = server.publish("t", None, b"old").await;
    let started = std::time::Instant::now();
    let answer = get(&server, &format!("/sub/t?cursor={cursor}")).await.json();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(answer["messages"], serde_json::json!([]));
    assert_eq!(answer["cursor"], cursor.as_str());
}

#[tokio::test]
async fn long_poll_client_that_leaves_is_cleaned_up_at_once() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/gone {GET}\r\n").as_bytes()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().await["subscribers"]["longpoll"] != 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let stats = server.stats().await;
        if stats["subscribers"]["longpoll"] == 0 && stats["closed"]["peer_closed"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "held poll not cleaned up: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn long_poll_under_a_fast_stream_loses_nothing() {
    let server = TestServer::start(|c| c.history_messages = 2000).await;
    let start = get(&server, "/sub/fast?transport=poll").await.json()["cursor"].as_str().unwrap().to_string();
    let publisher = {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            for i in 0..1000 {
                let body = i.to_string();
                let head =
                    format!("POST /pub/fast HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                conn.send(head.as_bytes()).await;
                assert_eq!(conn.response().await.status, 200);
            }
        })
    };
    let mut conn = server.connect().await;
    let mut cursor = start;
    let mut seen = Vec::new();
    let mut polls = 0;
    while seen.len() < 1000 {
        conn.send(format!("GET /sub/fast?cursor={cursor} {GET}\r\n").as_bytes()).await;
        let answer = conn.response().await.json();
        assert!(answer.get("gap").is_none(), "unexpected gap: {answer}");
        for message in answer["messages"].as_array().unwrap() {
            seen.push(message["data"].as_str().unwrap().parse::<u32>().unwrap());
        }
        cursor = answer["cursor"].as_str().unwrap().to_string();
        polls += 1;
    }
    publisher.await.unwrap();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    assert!(polls <= 1000);
}

/// Disconnect, publish k messages, reconnect with the last id: exactly those k, in order.
#[tokio::test]
async fn every_transport_resumes_from_its_cursor() {
    let server = TestServer::start(|_| {}).await;
    for transport in ["sse", "stream", "iframe&callback=cb", "poll", "longpoll"] {
        let channel = format!("r{}", transport.len());
        let mut last = String::new();
        // A subscriber saw these, then dropped.
        for i in 0..3 {
            last = server.publish(&channel, None, format!("seen-{i}").as_bytes()).await;
        }
        let sent: Vec<String> = (0..4).map(|i| format!("{transport}-{i}")).collect();
        for body in &sent {
            server.publish(&channel, None, body.as_bytes()).await;
        }
        let target = format!("/sub/{channel}?transport={transport}&cursor={last}");
        let got: Vec<String> = match transport {
            "poll" | "longpoll" => {
                let answer = get(&server, &target).await.json();
                answer["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap().to_string()).collect()
            }
            _ => {
                let (mut conn, _) = open_stream(&server, &target, "").await;
                conn.next_chunk().await; // prelude
                let mut got = Vec::new();
                let mut parser = sse::Parser::default();
                while got.len() < sent.len() {
                    let chunk = String::from_utf8(conn.next_chunk().await).unwrap();
                    if transport == "sse" {
                        got.extend(parser.feed(chunk.as_bytes()).into_iter().map(|e| e.data));
                    } else {
                        let json =
                            chunk.trim_start_matches("<script>parent.cb(").trim_end().trim_end_matches(");</script>");
                        got.push(
                            serde_json::from_str::<serde_json::Value>(json).unwrap()["data"]
                                .as_str()
                                .unwrap()
                                .to_string(),
                        );
                    }
                }
                assert!(
                    conn.next_chunk_within(Duration::from_millis(100)).await.is_none(),
                    "{transport}: more than sent"
                );
                got
            }
        };
        assert_eq!(got, sent, "{transport}");
    }
}

#[tokio::test]
async fn sse_last_event_id_header_wins_over_the_query_cursor() {
    let server = TestServer::start(|_| {}).await;
    let a = server.publish("h", None, b"a").await;
    let b = server.publish("h", None, b"b").await;
    server.publish("h", None, b"c").await;
    let (mut conn, _) = open_stream(
        &server,
        &format!("/sub/h?cursor={a}"),
        &format!("Accept: text/event-stream\r\nLast-Event-ID: {b}\r\n"),
    )
    .await;
    conn.next_chunk().await;
    let mut parser = sse::Parser::default();
    let events = sse_events(&mut conn, &mut parser, 1).await;
    assert_eq!(events[0].data, "c");
}

#[tokio::test]
async fn history_replays_the_last_n_then_goes_live() {
    let server = TestServer::start(|_| {}).await;
    for i in 0..5 {
        server.publish("hist", None, format!("m{i}").as_bytes()).await;
    }
    let (mut conn, _) = open_stream(&server, "/sub/hist?transport=sse&history=2", "").await;
    conn.next_chunk().await;
    let mut parser = sse::Parser::default();
    let replayed = sse_events(&mut conn, &mut parser, 2).await;
    assert_eq!(replayed.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["m3", "m4"]);
    server.publish("hist", None, b"live").await;
    assert_eq!(sse_events(&mut conn, &mut parser, 1).await[0].data, "live");
    // Without cursor or history a subscriber starts at "now".
    let answer = get(&server, "/sub/hist?transport=poll").await.json();
    assert_eq!(answer["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn a_cursor_older_than_the_history_gets_a_gap_notice_first() {
    let server = TestServer::start(|c| c.history_messages = 3).await;
    let old = server.publish("g", None, b"0").await;
    for i in 1..=5 {
        server.publish("g", None, i.to_string().as_bytes()).await;
    }
    // Kept: 3, 4, 5. Lost after `old` (seq 1): 2.
    let answer = get(&server, &format!("/sub/g?transport=poll&cursor={old}")).await.json();
    assert_eq!(answer["gap"][0]["channel"], "g");
    assert_eq!(answer["gap"][0]["first_available"], 4);
    assert_eq!(answer["gap"][0]["lost"], 2);
    let data: Vec<&str> = answer["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["3", "4", "5"]);

    let (mut conn, _) = open_stream(&server, &format!("/sub/g?transport=sse&cursor={old}"), "").await;
    conn.next_chunk().await;
    let mut parser = sse::Parser::default();
    let events = sse_events(&mut conn, &mut parser, 4).await;
    assert_eq!(events[0].event, "holdfast.gap");
    let gap: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(gap["lost"], 2);
    assert_eq!(events[1..].iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["3", "4", "5"]);

    let (mut conn, _) = open_stream(&server, &format!("/sub/g?transport=stream&cursor={old}"), "").await;
    conn.next_chunk().await;
    assert_eq!(ndjson(&mut conn, 1).await[0]["event"], "holdfast.gap");
}

#[tokio::test]
async fn a_deleted_channel_gets_a_new_epoch_and_old_cursors_a_gap() {
    let server = TestServer::start(|_| {}).await;
    let old = server.publish("e", None, b"x").await;
    let mut conn = server.connect().await;
    conn.send(b"DELETE /pub/e HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.json()["deleted"], true);
    server.publish("e", None, b"y").await;
    let answer = get(&server, &format!("/sub/e?transport=poll&cursor={old}")).await.json();
    assert_eq!(answer["gap"][0]["lost"], serde_json::Value::Null, "epoch changed: loss unknown");
    assert_eq!(answer["messages"][0]["data"], "y");
}

#[tokio::test]
async fn multi_channel_subscription_delivers_and_resumes_every_channel() {
    let server = TestServer::start(|_| {}).await;
    let (mut conn, _) = open_stream(&server, "/sub/a,b?transport=sse", "").await;
    conn.next_chunk().await;
    server.wait_for_subscribers("b", 1).await;
    server.publish("a", None, b"a1").await;
    server.publish("b", None, b"b1").await;
    let mut parser = sse::Parser::default();
    let events = sse_events(&mut conn, &mut parser, 2).await;
    assert_eq!(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a1", "b1"]);
    let cursor = events[1].id.clone();
    drop(conn);
    server.publish("b", None, b"b2").await;
    server.publish("a", None, b"a2").await;
    let answer = get(&server, &format!("/sub/a,b?transport=poll&cursor={cursor}")).await.json();
    let data: Vec<&str> = answer["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["b2", "a2"]);
    // The poll's cursor resumes both channels: nothing more.
    let again = get(&server, &format!("/sub/b,a?transport=poll&cursor={}", answer["cursor"].as_str().unwrap())).await;
    assert_eq!(again.json()["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn delete_sends_a_final_notice_and_closes_subscribers() {
    let server = TestServer::start(|_| {}).await;
    let (mut conn, _) = open_stream(&server, "/sub/doomed?transport=sse", "").await;
    conn.next_chunk().await;
    server.wait_for_subscribers("doomed", 1).await;
    let mut deleter = server.connect().await;
    deleter.send(b"DELETE /pub/doomed HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let response = deleter.response().await.json();
    assert_eq!(response["subscribers"], 1);
    let mut parser = sse::Parser::default();
    let events = sse_events(&mut conn, &mut parser, 1).await;
    assert_eq!(events[0].event, "holdfast.closed");
    assert!(events[0].data.contains("channel_deleted"));
    assert_eq!(conn.next_chunk().await, b"", "last chunk");
    conn.assert_closed().await;
}

#[tokio::test]
async fn a_slow_consumer_is_cut_without_slowing_others() {
    let server = TestServer::start(|c| c.max_pending_bytes = 64 * 1024).await;
    // The slow one never reads.
    let mut slow = server.connect().await;
    slow.send(format!("GET /sub/firehose?transport=stream {GET}\r\n").as_bytes()).await;
    let (mut fast, _) = open_stream(&server, "/sub/firehose?transport=stream", "").await;
    fast.next_chunk().await;
    server.wait_for_subscribers("firehose", 2).await;
    let payload = vec![b'x'; 4000];
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while count < 2000 {
            let chunk = fast.next_chunk().await;
            count += chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        }
        count
    });
    for _ in 0..2000 {
        server.publish("firehose", None, &payload).await;
    }
    assert_eq!(reader.await.unwrap(), 2000, "the fast subscriber got everything");
    let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
    while server.stats().await["closed"]["slow_consumer"] != 1 {
        assert!(std::time::Instant::now() < deadline, "slow consumer never cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cors_preflight_and_allowed_origin() {
    let server = TestServer::start(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let mut conn = server.connect().await;
    conn.send(b"OPTIONS /sub/x HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n\r\n").await;
    let preflight = conn.response().await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(preflight.header("access-control-allow-headers").unwrap().contains("Last-Event-ID"));
    assert_eq!(preflight.header("content-length"), None);

    conn.send(b"OPTIONS /sub/x HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 403);

    let (_, head) = open_stream(&server, "/sub/x?transport=sse", "Origin: https://app.example\r\n").await;
    assert_eq!(head.header("access-control-allow-origin"), Some("https://app.example"));
    let (_, head) = open_stream(&server, "/sub/x?transport=sse", "Origin: https://evil.example\r\n").await;
    assert_eq!(head.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn stats_count_transports_channels_and_messages() {
    let server = TestServer::start(|_| {}).await;
    let (_sse, _) = open_stream(&server, "/sub/s1?transport=sse", "").await;
    let (_nd, _) = open_stream(&server, "/sub/s1,s2?transport=stream", "").await;
    server.wait_for_subscribers("s2", 1).await;
    server.publish("s1", None, b"x").await;
    let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
    loop {
        let stats = server.stats().await;
        if stats["messages_delivered"] == 2 {
            assert_eq!(stats["subscribers"]["sse"], 1);
            assert_eq!(stats["subscribers"]["stream"], 1);
            assert_eq!(stats["channels"], 2);
            assert_eq!(stats["messages_published"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_sends_streams_a_final_notice() {
    let mut server = TestServer::start(|_| {}).await;
    let (mut conn, _) = open_stream(&server, "/sub/bye?transport=sse", "").await;
    conn.next_chunk().await;
    server.wait_for_subscribers("bye", 1).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    let mut parser = sse::Parser::default();
    let events = sse_events(&mut conn, &mut parser, 1).await;
    assert_eq!(events[0].event, "holdfast.closed");
    assert!(events[0].data.contains("shutdown"));
    conn.next_chunk().await;
    conn.assert_closed().await;
    assert!(stopping.await.unwrap() < Duration::from_secs(5));
}

#[tokio::test]
async fn admin_connections_lists_subscribers_and_parked_connections() {
    let server = TestServer::start(|c| c.park_after = Duration::from_millis(10)).await;
    let (mut sse, _) = open_stream(&server, "/sub/one,two?transport=sse", "").await;
    sse.next_chunk().await;
    let mut idle = server.connect().await;
    idle.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    idle.response().await;
    server.wait_for_subscribers("two", 1).await;
    server.publish("one", None, b"hello").await;
    sse.next_chunk().await;
    let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
    loop {
        let listing = get(&server, "/admin/connections").await.json();
        let list = listing["connections"].as_array().unwrap();
        let subscriber = list.iter().find(|c| c["transport"] == "sse");
        let parked = list.iter().find(|c| c["transport"] == "http" && c["state"] == "idle");
        if let (Some(subscriber), Some(parked)) = (subscriber, parked) {
            assert_eq!(subscriber["channels"], serde_json::json!(["one", "two"]));
            assert!(subscriber["bytes_out"].as_u64().unwrap() > 20, "{subscriber}");
            assert_eq!(parked["requests"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listing}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
