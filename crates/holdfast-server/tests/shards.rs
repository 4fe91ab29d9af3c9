//! Several push shards, over real sockets: subscribers spread over them all receive every
//! message in order (one channel, several channels, one subscriber across channels); a small
//! channel's subscribers share one shard and a large one's spread over all; a delete
//! of a channel with 10,000 subscribers across shards reaches every one while the server answers
//! other requests; subscribers leaving in any order keep the others served.

use std::process::Command;
use std::time::{Duration, Instant};

use holdfast_proto::sse;
use holdfast_testkit::interop::Client;
use holdfast_testkit::{RawConn, TestServer};

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";

async fn sse(server: &TestServer, target: &str) -> (RawConn, sse::Parser) {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} {GET}Accept: text/event-stream\r\n\r\n").as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 200);
    (conn, sse::Parser::default())
}

/// The data of the next `count` message events (retry and heartbeats skipped).
async fn messages(conn: &mut RawConn, parser: &mut sse::Parser, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < count {
        for event in parser.feed(&conn.next_chunk().await) {
            if event.event == "message" || event.event.is_empty() {
                out.push(event.data);
            }
        }
    }
    out
}

#[tokio::test]
async fn subscribers_spread_over_shards_get_every_message_in_order() {
    // Every channel spread over the shards, however small (`push_spread_after = 0`).
    let server = TestServer::start(|c| {
        c.push_threads = 4;
        c.push_spread_after = 0;
    })
    .await;
    let mut subscribers = Vec::new();
    for i in 0..12 {
        let target = if i % 3 == 0 { "/sub/s1,s2".to_string() } else { format!("/sub/s{}", 1 + i % 2) };
        subscribers.push((target.clone(), sse(&server, &target).await));
    }
    server.wait_for_subscribers("s1", 8).await;
    server.wait_for_subscribers("s2", 8).await;
    for n in 0..50 {
        server.publish("s1", None, format!("a{n}").as_bytes()).await;
        server.publish("s2", None, format!("b{n}").as_bytes()).await;
    }
    for (target, (conn, parser)) in &mut subscribers {
        let both = target.contains(',');
        let got = messages(conn, parser, if both { 100 } else { 50 }).await;
        let a: Vec<&String> = got.iter().filter(|m| m.starts_with('a')).collect();
        let b: Vec<&String> = got.iter().filter(|m| m.starts_with('b')).collect();
        let want_a: Vec<String> = (0..50).map(|n| format!("a{n}")).collect();
        let want_b: Vec<String> = (0..50).map(|n| format!("b{n}")).collect();
        if both || target.ends_with("s1") {
            assert_eq!(a, want_a.iter().collect::<Vec<_>>(), "{target}");
        }
        if both || target.ends_with("s2") {
            assert_eq!(b, want_b.iter().collect::<Vec<_>>(), "{target}");
        }
    }
}

#[tokio::test]
async fn subscribers_leaving_in_any_order_leave_the_rest_served() {
    let server = TestServer::start(|c| {
        c.push_threads = 3;
        c.push_spread_after = 0;
    })
    .await;
    let mut subscribers = Vec::new();
    for _ in 0..30 {
        subscribers.push(sse(&server, "/sub/churn").await);
    }
    server.wait_for_subscribers("churn", 30).await;
    // Leave from the middle, the front and the back (the member lists swap entries around).
    for i in [15, 0, 27, 3, 3, 10, 20] {
        subscribers.remove(i);
    }
    server.wait_for_subscribers("churn", 23).await;
    server.publish("churn", None, b"still here").await;
    for (conn, parser) in &mut subscribers {
        assert_eq!(messages(conn, parser, 1).await, ["still here"]);
    }
    let stats = server.stats().await;
    assert_eq!(stats["subscribers"]["sse"], 23);
}

#[tokio::test]
async fn deleting_a_channel_of_10000_subscribers_across_shards_reaches_all_while_serving_others() {
    let fds = holdfast_server::raise_fd_limit();
    assert!(fds > 10_200, "this test needs 10,200 file descriptors; the limit is {fds}");
    let server = TestServer::start(|c| c.push_threads = 2).await;
    // The subscribers live in another process: this one holds the server's 10,000 sockets.
    let mut crowd = Command::new("python3");
    let port = server.addr.port().to_string();
    crowd.args(["sse_crowd.py", "127.0.0.1", &port, "crowd", "10000"]);
    let mut crowd = Client::spawn(crowd);
    let ready = crowd.next(Duration::from_secs(60)).await;
    assert_eq!(ready["ready"], 10_000, "{ready}");
    server.wait_for_subscribers("crowd", 10_000).await;

    let mut delete = server.connect().await;
    let mut health = server.connect().await;
    let started = Instant::now();
    delete.send(format!("DELETE /pub/crowd {GET}\r\n").as_bytes()).await;
    health.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    let health_answer = health.response().await;
    let answered_in = started.elapsed();
    let deleted = delete.response().await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["subscribers"], 10_000);
    assert_eq!(health_answer.status, 200);
    assert!(answered_in < Duration::from_secs(1), "/healthz took {answered_in:?} during the delete");

    let report = crowd.next(Duration::from_secs(60)).await;
    assert_eq!(report["closed"], 10_000, "{report}");
    assert_eq!(report["reasons"]["channel_deleted"], 10_000, "{report}");
    assert_eq!(report["other"], 0, "{report}");
    let stats = server.stats().await;
    assert_eq!(stats["subscribers"]["sse"], 0);
    assert_eq!(stats["closed"]["channel_deleted"], 10_000);
}

/// How many subscribers of `channel` each shard holds, from `/admin/connections`.
async fn per_shard(server: &TestServer, channel: &str, shards: usize) -> Vec<usize> {
    let mut counts = vec![0; shards];
    for sub in holdfast_testkit::hostile::subscribers(server.addr).await {
        if sub["channels"] == serde_json::json!([channel]) {
            counts[sub["shard"].as_u64().unwrap() as usize] += 1;
        }
    }
    counts
}

#[tokio::test]
async fn a_small_channel_keeps_to_one_shard_and_a_large_one_spreads() {
    let fds = holdfast_server::raise_fd_limit();
    assert!(fds > 3_300, "this test needs 3,300 file descriptors; the limit is {fds}");
    let server = TestServer::start(|c| c.push_threads = 2).await;
    // Two small channels, 20 subscribers each, one channel after the other (taking turns would
    // put 10 of each on either shard).
    let mut small = Vec::new();
    for i in 0..40 {
        small.push(sse(&server, &format!("/sub/room{}", i / 20)).await);
    }
    server.wait_for_subscribers("room0", 20).await;
    server.wait_for_subscribers("room1", 20).await;
    let room0 = per_shard(&server, "room0", 2).await;
    let room1 = per_shard(&server, "room1", 2).await;
    assert!(room0.contains(&20) && room1.contains(&20), "each room on one shard: {room0:?} {room1:?}");

    // A channel of 3,000 (past `push_spread_after`, 1,024 by default) fills both.
    let mut crowd = Command::new("python3");
    let port = server.addr.port().to_string();
    crowd.args(["sse_crowd.py", "127.0.0.1", &port, "big", "3000"]);
    let mut crowd = Client::spawn(crowd);
    assert_eq!(crowd.next(Duration::from_secs(60)).await["ready"], 3_000);
    server.wait_for_subscribers("big", 3_000).await;
    let big = per_shard(&server, "big", 2).await;
    assert_eq!(big.iter().sum::<usize>(), 3_000, "{big:?}");
    // Even to within the arrivals of a round (the shards count a subscriber when it joins).
    assert!(big.iter().all(|&n| n >= 1_024), "a large channel on both shards: {big:?}");

    // Every subscriber gets the channel's messages wherever it is.
    server.publish("room0", None, b"r0").await;
    server.publish("room1", None, b"r1").await;
    for (i, (conn, parser)) in small.iter_mut().enumerate() {
        assert_eq!(messages(conn, parser, 1).await, [format!("r{}", i / 20)]);
    }
    let mut delete = server.connect().await;
    delete.send(format!("DELETE /pub/big {GET}\r\n").as_bytes()).await;
    assert_eq!(delete.response().await.json()["subscribers"], 3_000);
    let report = crowd.next(Duration::from_secs(60)).await;
    assert_eq!(report["closed"], 3_000, "{report}");
}
