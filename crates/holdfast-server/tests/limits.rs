//! Limits per client IP over real sockets: open connections and new connections a second (429 at
//! accept, before the request is read), publishes a second (429 over HTTP, the error op and then
//! close 1008 over WebSocket), and `trusted_proxies` (X-Forwarded-For believed from a trusted
//! peer only). Clients are told apart by their source address: Linux routes all of 127/8 on the
//! loopback interface, so each test binds its clients to addresses of their own there.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use holdfast_testkit::{ws_client_frame, ws_upgrade_request, RawConn, RawResponse, TestServer, IO_TIMEOUT};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn connect(server: &TestServer, source: &str) -> RawConn {
    RawConn::connect_from(server.addr, ip(source)).await
}

/// `GET /healthz` on a connection that stays open.
async fn healthz(conn: &mut RawConn) -> RawResponse {
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    conn.response().await
}

/// `/admin/stats`, asked from an address no test limits.
async fn stats(server: &TestServer) -> serde_json::Value {
    let mut conn = connect(server, "127.0.0.250").await;
    conn.send(b"GET /admin/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    conn.response().await.json()
}

/// `/admin/stats` once `ready` holds of it (closes are counted when they are over).
async fn stats_when(server: &TestServer, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let stats = stats(server).await;
        if ready(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn publish_request(channel: &str, body: &str, extra: &str) -> String {
    format!("POST /pub/{channel} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
}

async fn publish_from(server: &TestServer, source: &str, channel: &str, body: &str, extra: &str) -> RawResponse {
    let mut conn = connect(server, source).await;
    conn.send(publish_request(channel, body, extra).as_bytes()).await;
    conn.response().await
}

#[tokio::test]
async fn beyond_max_connections_per_ip_the_next_gets_429_while_other_addresses_are_served() {
    let server = TestServer::start(|c| c.max_connections_per_ip = 20).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut conn = connect(&server, "127.0.0.1").await;
        assert_eq!(healthz(&mut conn).await.status, 200);
        held.push(conn);
    }
    // The 21st is answered before it sends anything, then closed.
    let mut refused = connect(&server, "127.0.0.1").await;
    let answer = refused.response().await;
    assert_eq!(answer.status, 429, "{}", answer.head);
    assert_eq!(answer.json()["error"], "too_many_connections");
    assert!(answer.json()["reason"].as_str().is_some_and(|r| r.contains("max_connections_per_ip")));
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.header("connection"), Some("close"));
    refused.assert_closed().await;

    // Other addresses are other clients.
    for other in ["127.0.0.2", "127.0.0.3"] {
        let mut conn = connect(&server, other).await;
        assert_eq!(healthz(&mut conn).await.status, 200, "{other}");
    }
    // The twenty are unaffected.
    for conn in &mut held {
        assert_eq!(healthz(conn).await.status, 200);
    }
    // One leaves: a new one is let in once its close is counted.
    drop(held.pop());
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut conn = connect(&server, "127.0.0.1").await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        if conn.response().await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never made room");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The refused connection's close is counted once its lingering close is over.
    let stats = stats_when(&server, |s| s["closed"]["too_many_connections"].as_u64() >= Some(1)).await;
    assert!(stats["limited"]["connections_per_ip"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["clients_tracked"].as_u64().unwrap() >= 1, "{stats}");
}

#[tokio::test]
async fn a_burst_of_new_connections_beyond_the_rate_gets_429_with_retry_after() {
    let server = TestServer::start(|c| {
        c.new_connections_per_ip_per_second = 2.0;
        c.new_connections_per_ip_burst = 4;
    })
    .await;
    let started = Instant::now();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..10 {
        let mut conn = connect(&server, "127.0.0.20").await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
        let answer = conn.response().await;
        match answer.status {
            200 => served += 1,
            429 => {
                refused += 1;
                assert_eq!(answer.json()["error"], "rate_limited");
                let retry: u64 = answer.header("retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("unexpected {other}: {}", answer.head),
        }
    }
    // The burst, plus what two a second refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 2.0).floor() as i32;
    assert!((4..=4 + refilled).contains(&served), "served {served}, refused {refused}");
    assert!(refused >= 1, "nothing refused");
    // Another address is not affected.
    let mut other = connect(&server, "127.0.0.21").await;
    assert_eq!(healthz(&mut other).await.status, 200);
    // After a pause the client is served again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut again = connect(&server, "127.0.0.20").await;
    assert_eq!(healthz(&mut again).await.status, 200);
    let stats = stats_when(&server, |s| s["closed"]["rate_limited"].as_u64() >= Some(refused as u64)).await;
    assert_eq!(stats["limited"]["new_connections_per_ip"].as_u64().unwrap(), refused as u64, "{stats}");
}

#[tokio::test]
async fn a_publish_flood_gets_429_while_others_publish_subscribers_receive_and_the_server_answers() {
    let server = TestServer::start(|c| c.publishes_per_ip_per_second = 20.0).await;
    let mut subscriber = connect(&server, "127.0.0.31").await;
    subscriber.send(b"GET /sub/room?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(subscriber.stream_head().await.status, 200);
    server.wait_for_subscribers("room", 1).await;

    let addr = server.addr;
    let flood = tokio::spawn(async move {
        let mut conn = RawConn::connect_from(addr, ip("127.0.0.30")).await;
        let started = Instant::now();
        let (mut ok, mut limited, mut retry_after) = (0u32, 0u32, None);
        for i in 0..400 {
            conn.send(publish_request("room", &format!("flood {i}"), "").as_bytes()).await;
            let answer = conn.response().await;
            match answer.status {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    assert_eq!(answer.json()["error"], "rate_limited");
                    retry_after.get_or_insert(answer.header("retry-after").map(str::to_string));
                    assert_ne!(answer.header("connection"), Some("close"), "a 429 keeps the connection");
                }
                other => panic!("unexpected {other}"),
            }
        }
        (ok, limited, retry_after.flatten(), started.elapsed())
    });

    // Meanwhile: the server answers another address at once, and another client publishes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let asked = Instant::now();
    let mut probe = connect(&server, "127.0.0.32").await;
    assert_eq!(healthz(&mut probe).await.status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1), "healthz took {:?} during the flood", asked.elapsed());
    let other = publish_from(&server, "127.0.0.33", "room", "from another client", "").await;
    assert_eq!(other.status, 200, "{}", other.text());

    let (ok, limited, retry_after, took) = flood.await.unwrap();
    let allowed = 20 + (took.as_secs_f64() * 20.0).ceil() as u32;
    assert!((20..=allowed).contains(&ok), "{ok} publishes went through in {took:?}");
    assert!(limited > 0, "no 429");
    let retry: u64 = retry_after.expect("Retry-After on the 429").parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");

    // The subscriber got the other client's message.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let chunk = subscriber.next_chunk().await;
        if String::from_utf8_lossy(&chunk).contains("from another client") {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber never got the other client's message");
    }
    let stats = stats(&server).await;
    assert_eq!(stats["limited"]["publishes_per_ip"].as_u64().unwrap(), u64::from(limited), "{stats}");
    assert!(stats["requests_by_status"]["429"].as_u64().unwrap() >= u64::from(limited), "{stats}");
}

/// The frames a WebSocket client gets until the server's close frame: op answers, notices, then
/// the close code and reason.
async fn ws_until_close(conn: &mut RawConn) -> (Vec<serde_json::Value>, u16, String) {
    let mut texts = Vec::new();
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        match opcode {
            1 => texts.push(serde_json::from_slice(&payload).unwrap()),
            8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (texts, code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
}

async fn upgrade_from(server: &TestServer, source: &str, target: &str) -> RawConn {
    let mut conn = connect(server, source).await;
    conn.send(ws_upgrade_request(target, "").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 101, "{}", head.head);
    conn
}

#[tokio::test]
async fn a_websocket_publish_flood_gets_rate_limited_ops_then_close_1008() {
    let server = TestServer::start(|c| {
        c.ws_client_publish = true;
        c.publishes_per_ip_per_second = 10.0;
    })
    .await;
    let mut flooder = upgrade_from(&server, "127.0.0.40", "/sub").await;
    let op = br#"{"op":"publish","channel":"ws-room","data":"x"}"#;
    // In one write: the server reads them all before it closes, so the close is a FIN, not a
    // reset for unread input.
    let flood: Vec<u8> = (0..60).flat_map(|_| ws_client_frame(true, 1, op)).collect();
    flooder.send(&flood).await;
    let (answers, code, reason) = ws_until_close(&mut flooder).await;
    assert_eq!((code, reason.as_str()), (1008, "rate_limited"));
    let published = answers.iter().filter(|a| a["op"] == "published").count();
    let limited: Vec<_> = answers.iter().filter(|a| a["op"] == "error").collect();
    assert!((10..=12).contains(&published), "{published} published: {answers:?}");
    assert!(!limited.is_empty() && limited.iter().all(|a| a["code"] == "rate_limited"), "{answers:?}");
    // Refused ops owe their token: at about twice the burst refused, it is flooding.
    assert!((15..=25).contains(&limited.len()), "{} refused before the close", limited.len());
    let notice = answers.last().unwrap();
    assert_eq!(notice["event"], "holdfast.closed", "{notice}");
    assert_eq!(notice["json"]["reason"], "rate_limited", "{notice}");

    // Another address publishes over WebSocket as usual.
    let mut other = upgrade_from(&server, "127.0.0.41", "/sub").await;
    other.ws_send(1, op).await;
    let (_, _, answer) = other.ws_frame().await;
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["op"], "published", "{answer}");
    stats_when(&server, |s| s["closed"]["rate_limited"] == 1).await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let server = TestServer::start(|c| {
        c.publishes_per_ip_per_second = 2.0;
        c.trusted_proxies = holdfast_server::config::Cidr::parse("127.0.0.1").into_iter().collect();
    })
    .await;
    let via = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    // Through the trusted proxy (127.0.0.1): each named client has its own two a second.
    for _ in 0..2 {
        assert_eq!(publish_from(&server, "127.0.0.1", "p", "a", &via("203.0.113.1")).await.status, 200);
    }
    assert_eq!(publish_from(&server, "127.0.0.1", "p", "a", &via("203.0.113.1")).await.status, 429);
    assert_eq!(publish_from(&server, "127.0.0.1", "p", "b", &via("203.0.113.2")).await.status, 200);
    // What a client put on the left of the list is not believed: the right-most hop counts.
    let spoofed = via("198.51.100.99, 203.0.113.1");
    assert_eq!(publish_from(&server, "127.0.0.1", "p", "a", &spoofed).await.status, 429);

    // From an address that is not a trusted proxy the header is ignored: the peer is the client.
    for i in 0..2 {
        let status = publish_from(&server, "127.0.0.50", "p", "c", &via(&format!("203.0.113.{}", 10 + i))).await.status;
        assert_eq!(status, 200);
    }
    let status = publish_from(&server, "127.0.0.50", "p", "c", &via("203.0.113.20")).await.status;
    assert_eq!(status, 429, "a new X-Forwarded-For from an untrusted peer must not buy a new bucket");

    // The admin list shows the client the trusted proxy named.
    let mut subscriber = connect(&server, "127.0.0.1").await;
    subscriber.send(b"GET /sub/q?transport=stream HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n").await;
    assert_eq!(subscriber.stream_head().await.status, 200);
    server.wait_for_subscribers("q", 1).await;
    let mut admin = connect(&server, "127.0.0.250").await;
    admin.send(b"GET /admin/connections HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let list = admin.response().await.json();
    let peers: Vec<&str> = list["connections"].as_array().unwrap().iter().filter_map(|c| c["peer"].as_str()).collect();
    assert!(peers.contains(&"198.51.100.7"), "{list}");
}
