//! Hostile clients over real sockets (issue 9): what a peer that never reads, floods pings or op
//! requests, sends compressed bursts or huge subscribe ops can make the server hold, and whether
//! the other subscribers keep being served meanwhile.
//!
//! The contract: everything queued for a connection counts against `max_pending_bytes`
//! (`pending_bytes` in `/admin/connections`); past it the connection is cut (`slow_consumer`,
//! WebSocket 4000, or `flooding`, 1008, for a peer whose pongs and op answers pile up); a
//! subscriber with no write progress for `send_timeout` is cut; reads and inflation have a budget
//! per wake-up; the subscribe op has the HTTP cap of 64 channels.
//!
//! Memory is measured as the RSS of this process (the server runs in it), sampled on a thread of
//! its own; attack buffers are built before the baseline, and every test here holds
//! [`hostile::exclusive`] so no other test of this binary allocates meanwhile. Delivery delay is
//! measured by [`hostile::DelayProbe`]: an SSE subscriber on a channel of its own, published to
//! every 20 ms, delay from just before the publish request to receipt.
//!
//! Debug builds on two shared cores: the delay bound here is [`DELAY_BOUND`] (250 ms), not the
//! 100 ms release goal (bench/ checks that one).

use std::time::{Duration, Instant};

use holdfast_proto::ws::deflate::MessageDeflater;
use holdfast_testkit::hostile::{self, closed, mib, DelayProbe, Ending, RssSampler};
use holdfast_testkit::{ws_client_frame, RawConn, TestServer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const TEXT: u8 = 0x1;
const PING: u8 = 0x9;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Another subscriber's delivery delay bound while an attack runs. The goal is 100 ms (release,
/// bench/); debug builds on two cores shared with the attacking client get 250 ms. (Measured
/// without an attack, with 512 KiB messages going to another subscriber: median 1 ms, max 16 ms.)
const DELAY_BOUND: Duration = Duration::from_millis(250);

/// The next text frame as JSON (pings skipped).
async fn text_json(conn: &mut RawConn) -> Value {
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        if opcode == PING {
            continue;
        }
        assert_eq!(opcode, TEXT, "payload {:?}", String::from_utf8_lossy(&payload));
        return serde_json::from_slice(&payload).unwrap();
    }
}

async fn op(conn: &mut RawConn, value: Value) -> Value {
    conn.ws_send(TEXT, value.to_string().as_bytes()).await;
    text_json(conn).await
}

/// `n` copies of `frame` back to back.
fn repeated(frame: &[u8], n: usize) -> Vec<u8> {
    frame.repeat(n)
}

/// Publishes `count` messages of `size` bytes to `channel`.
async fn publish_big(server: &TestServer, channel: &str, count: usize, size: usize) {
    let body = vec![b'x'; size];
    for _ in 0..count {
        server.publish(channel, None, &body).await;
    }
}

/// The `/admin/connections` entry of the only subscriber on `channel`, once `done` holds for it
/// (or the last one seen after `within`).
async fn subscriber_until(
    server: &TestServer,
    channel: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let list = hostile::subscribers(server.addr).await;
        let entry = list.into_iter().find(|s| s["channels"].as_array().is_some_and(|c| c.iter().any(|c| c == channel)));
        match entry {
            Some(entry) if done(&entry) || Instant::now() >= deadline => return entry,
            None if Instant::now() >= deadline => panic!("no subscriber on {channel} in /admin/connections"),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

fn pending(entry: &Value) -> u64 {
    entry["pending_bytes"].as_u64().unwrap_or_else(|| panic!("no \"pending_bytes\" in /admin/connections: {entry}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_bytes_counts_queued_messages_pongs_and_op_answers() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| c.max_pending_bytes = 64 * MIB as u64).await;
    let (mut peer, _, _) = hostile::ws_connect_small(server.addr, "/sub/acct", "").await;
    server.wait_for_subscribers("acct", 1).await;
    // 6 MiB: more than the kernel buffers of both sides take (4 MiB + 16 KiB), far less than
    // the limit.
    publish_big(&server, "acct", 12, 512 * KIB).await;
    let blocked = subscriber_until(&server, "acct", Duration::from_secs(5), |s| s["state"] == "blocked").await;
    assert_eq!(blocked["state"], "blocked", "a peer that never reads: {blocked}");
    // Settled: the same figure twice in a row.
    let mut before = pending(&blocked);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pending(&subscriber_until(&server, "acct", Duration::ZERO, |_| true).await);
        if now == before {
            break;
        }
        before = now;
    }
    assert!(before > 0, "a blocked subscriber with 6 MiB published has nothing pending: {blocked}");

    // 200 pings of 125 bytes: 200 pongs of 127 bytes queued behind the messages.
    peer.write_all(&repeated(&ws_client_frame(true, PING, &[b'p'; 125]), 200)).await.unwrap();
    let want = before + 200 * 127;
    let after_pings = subscriber_until(&server, "acct", Duration::from_secs(3), |s| pending(s) >= want).await;
    assert!(pending(&after_pings) >= want, "pongs not counted: {before} pending before 200 pongs, then {after_pings}");

    // 200 ping ops: 200 answers {"op":"pong"} (15 bytes framed).
    let before = pending(&after_pings);
    peer.write_all(&repeated(&ws_client_frame(true, TEXT, br#"{"op":"ping"}"#), 200)).await.unwrap();
    let want = before + 200 * 15;
    let after_ops = subscriber_until(&server, "acct", Duration::from_secs(3), |s| pending(s) >= want).await;
    assert!(
        pending(&after_ops) >= want,
        "op answers not counted: {before} pending before 200 answers, then {after_ops}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscriber_that_never_reads_is_cut_as_slow_consumer_with_close_4000() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| c.max_pending_bytes = MIB as u64).await;
    let (mut peer, _, rest) = hostile::ws_connect_small(server.addr, "/sub/slow", "").await;
    server.wait_for_subscribers("slow", 1).await;
    publish_big(&server, "slow", 16, 512 * KIB).await;
    let (stats, cut) =
        hostile::stats_until(server.addr, Duration::from_secs(5), |s| closed(s, "slow_consumer") >= 1).await;
    assert!(cut, "8 MiB behind with max_pending_bytes = 1 MiB and not cut: {}", stats["closed"]);
    // Best effort: a close frame 4000 after what the socket held, or just the end.
    let (ending, _) = hostile::ws_ending(&mut peer, rest, Duration::from_secs(5)).await;
    assert!(
        matches!(&ending, Ending::Eof) || ending == Ending::Close(4000, "slow_consumer".into()),
        "ended with {ending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_flooding_ops_without_reading_is_closed_1008_as_flooding() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| c.max_pending_bytes = MIB as u64).await;
    let (mut peer, _, rest) = hostile::ws_connect_small(server.addr, "/sub/opflood", "").await;
    let pattern = repeated(&ws_client_frame(true, TEXT, br#"{"op":"ping"}"#), 4096);
    let sampler = RssSampler::start();
    // 12 MiB of ping ops: about 10 MiB of answers, most of which only the server can hold.
    let flood = hostile::flood(&mut peer, &pattern, pattern.len() as u64 * 160, Duration::from_secs(10)).await;
    let (stats, counted) =
        hostile::stats_until(server.addr, Duration::from_secs(3), |s| closed(s, "flooding") >= 1).await;
    let (ending, _) = hostile::ws_ending(&mut peer, rest, Duration::from_secs(3)).await;
    let growth = sampler.finish();
    assert!(
        flood.cut || ending == Ending::Eof || matches!(ending, Ending::Close(1008, _)),
        "a peer that floods ops and never reads was not cut ({flood:?}, then {ending:?}); RSS grew {:.1} MiB",
        mib(growth)
    );
    assert!(counted, "closed.flooding not counted: {}", stats["closed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_subscriber_without_write_progress_for_send_timeout_is_cut() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| {
        c.send_timeout = Duration::from_secs(1);
        c.max_pending_bytes = 256 * MIB as u64;
    })
    .await;
    let mut peer = hostile::connect_small(server.addr, 16 * 1024).await;
    let (head, _) =
        hostile::request_head(&mut peer, "GET /sub/stuck HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
            .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    server.wait_for_subscribers("stuck", 1).await;
    publish_big(&server, "stuck", 12, 512 * KIB).await;
    let published = Instant::now();
    let entry = subscriber_until(&server, "stuck", Duration::from_secs(5), |s| s["state"] == "blocked").await;
    assert_eq!(entry["state"], "blocked", "precondition: the socket is full: {entry}");
    let (stats, cut) =
        hostile::stats_until(server.addr, Duration::from_secs(4), |s| closed(s, "send_timeout") >= 1).await;
    assert!(
        cut,
        "blocked with no write progress for {:?} (send_timeout 1 s) and still connected: closed {}, subscribers {}",
        published.elapsed(),
        stats["closed"],
        stats["subscribers"]
    );
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_65th_channel_over_the_subscribe_op_is_refused_and_the_connection_stays_up() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.upgrade("/sub/c0").await;
    let names: Vec<String> = (1..64).map(|i| format!("c{i}")).collect();
    let answer = op(&mut conn, json!({"op": "subscribe", "channels": names})).await;
    assert_eq!(answer["op"], "subscribed", "64 channels in all is the cap, not over it: {answer}");
    assert_eq!(answer["channels"].as_array().map(Vec::len), Some(64));
    let answer = op(&mut conn, json!({"op": "subscribe", "channels": ["c64"]})).await;
    assert_eq!(
        (answer["op"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{answer}"
    );
    assert!(answer["reason"].as_str().is_some_and(|r| !r.is_empty()), "{answer}");
    // Still up, still on its 64 channels, and not on the refused one.
    server.publish("c64", None, b"not for me").await;
    server.publish("c63", None, b"for me").await;
    assert_eq!(text_json(&mut conn).await["data"], "for me");

    // One op that would take a fresh connection from 1 to 65 channels: refused whole.
    let mut conn = server.upgrade("/sub/d0").await;
    let names: Vec<String> = (1..=64).map(|i| format!("d{i}")).collect();
    let answer = op(&mut conn, json!({"op": "subscribe", "channels": names})).await;
    assert_eq!(
        (answer["op"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{answer}"
    );
    server.publish("d1", None, b"not subscribed").await;
    server.publish("d0", None, b"still here").await;
    assert_eq!(text_json(&mut conn).await["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_op_with_60000_channels_is_refused_fast_without_stalling_others() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.upgrade("/sub/big").await;
    let names: Vec<String> = (0..60_000).map(|i| format!("ch{i}")).collect();
    let request = json!({"op": "subscribe", "channels": names}).to_string();
    assert!(request.len() < MIB, "under ws_max_message_bytes");
    let probe = DelayProbe::start(&server, "probe-big").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    conn.ws_send(TEXT, request.as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(3), text_json(&mut conn)).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = probe.finish().await;
    let answer = answer.unwrap_or_else(|_| panic!("no answer to a 60,000-channel subscribe op within 3 s; {report:?}"));
    assert_eq!(
        (answer["op"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{answer}"
    );
    assert!(took < Duration::from_secs(1), "refusing took {took:?}");
    assert!(report.max_delay < DELAY_BOUND, "another subscriber was stalled: {report:?}");
    server.publish("big", None, b"still up").await;
    assert_eq!(text_json(&mut conn).await["data"], "still up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_blocked_sse_subscribers_with_history_hold_at_most_max_pending_bytes_and_go_within_3s() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| {
        c.max_pending_bytes = MIB as u64;
        c.send_timeout = Duration::from_secs(1);
        c.history_messages = 64;
    })
    .await;
    const MESSAGE: u64 = 512 * KIB as u64;
    publish_big(&server, "hist", 64, MESSAGE as usize).await;
    let sampler = RssSampler::start();
    let started = Instant::now();
    let mut peers = Vec::new();
    for _ in 0..4 {
        let mut peer = hostile::connect_small(server.addr, 16 * 1024).await;
        let request = "GET /sub/hist?history=64 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n";
        let (head, _) = hostile::request_head(&mut peer, request).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        peers.push(peer);
    }
    // Watch them: each one's pending_bytes, until none is left (or 5 s).
    let mut largest = 0u64;
    let mut missing = None;
    let mut gone_after = None;
    while started.elapsed() < Duration::from_secs(5) {
        let list = hostile::subscribers(server.addr).await;
        let listed: Vec<&Value> = list.iter().filter(|s| s["transport"] == "sse").collect();
        if listed.is_empty() {
            gone_after = Some(started.elapsed());
            break;
        }
        for entry in listed {
            match entry["pending_bytes"].as_u64() {
                Some(n) => largest = largest.max(n),
                None => missing = Some(entry.clone()),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth = sampler.finish();
    let stats = hostile::get_json(server.addr, "/admin/stats").await;
    // About 6 MiB for four of them at the limit plus one message; the history itself came before
    // the baseline.
    assert!(
        growth < 24 * MIB as u64,
        "4 blocked subscribers grew RSS by {:.1} MiB (max_pending_bytes 1 MiB each)",
        mib(growth)
    );
    assert!(missing.is_none(), "no \"pending_bytes\" in /admin/connections: {}", missing.unwrap());
    assert!(largest <= MIB as u64 + MESSAGE + 4 * KIB as u64, "pending_bytes reached {largest}");
    let gone_after = gone_after.unwrap_or_else(|| panic!("still connected after 5 s: closed {}", stats["closed"]));
    assert!(gone_after < Duration::from_millis(3500), "gone only after {gone_after:?}");
    assert!(closed(&stats, "slow_consumer") + closed(&stats, "send_timeout") >= 4, "{}", stats["closed"]);
    drop(peers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_is_cut_and_leaves_memory_and_other_subscribers_alone() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|_| {}).await;
    let (mut peer, _, rest) = hostile::ws_connect_small(server.addr, "/sub/pingflood", "").await;
    // About 1 MiB of 125-byte pings, sent over and over: 64 MiB in all.
    let pattern = repeated(&ws_client_frame(true, PING, &[b'p'; 125]), 8000);
    let probe = DelayProbe::start(&server, "probe-ping").await;
    let sampler = RssSampler::start();
    let flood = hostile::flood(&mut peer, &pattern, pattern.len() as u64 * 64, Duration::from_secs(15)).await;
    let (stats, counted) =
        hostile::stats_until(server.addr, Duration::from_secs(3), |s| closed(s, "flooding") >= 1).await;
    let (ending, _) = hostile::ws_ending(&mut peer, rest, Duration::from_secs(3)).await;
    let growth = sampler.finish();
    let report = probe.finish().await;
    assert!(
        growth < 32 * MIB as u64,
        "a ping flood of {:.0} MiB grew RSS by {:.1} MiB ({flood:?})",
        mib(flood.sent),
        mib(growth)
    );
    assert!(
        flood.cut || ending == Ending::Eof || matches!(ending, Ending::Close(1008, _)),
        "not cut: {flood:?}, then {ending:?}"
    );
    assert!(counted, "closed.flooding not counted: {}", stats["closed"]);
    assert!(report.max_delay < DELAY_BOUND, "another subscriber was stalled: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_burst_keeps_memory_bounded_and_other_subscribers_served() {
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| c.ws_deflate = true).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (mut peer, head, _) = hostile::ws_connect_small(server.addr, "/sub/bomb", offer).await;
    assert!(head.to_ascii_lowercase().contains("permessage-deflate"), "{head}");
    // Text that inflates to just under ws_max_message_bytes (1 MiB) from about 1 KiB; not an op
    // (the answer is a short bad_json error).
    let mut text = vec![b' '; MIB - 1024];
    text[0] = b'x';
    let packed = MessageDeflater::new(15).deflate(&text, 0).expect("compressible");
    assert!(packed.len() < 2048, "{}", packed.len());
    let pattern = repeated(&ws_client_frame(true, 0x40 | TEXT, &packed), 1000);
    let probe = DelayProbe::start(&server, "probe-bomb").await;
    let sampler = RssSampler::start();
    let flood = hostile::flood(&mut peer, &pattern, pattern.len() as u64, Duration::from_secs(10)).await;
    // 1,000 MiB once inflated: watch for 3 s while the server works through it (or cuts it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let growth = sampler.finish();
    let report = probe.finish().await;
    let mut health = server.connect().await;
    health.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let alive = tokio::time::timeout(Duration::from_secs(2), health.response()).await;
    assert!(!server.is_finished(), "the server died");
    assert!(
        growth < 64 * MIB as u64,
        "1,000 compressed messages ({:.1} MiB sent, inflating to ~1 GiB) grew RSS by {:.1} MiB ({flood:?})",
        mib(flood.sent),
        mib(growth)
    );
    assert!(report.max_delay < DELAY_BOUND, "another subscriber was stalled: {report:?}");
    assert_eq!(alive.expect("/healthz answers within 2 s").status, 200);
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_flooding_peers_at_once_do_not_hold_up_another_subscribers_deliveries() {
    // Each peer alone is within its own budget; together they would fill a shard's every round
    // without a budget per round (measured before it: seconds of delay for the others).
    let _only = hostile::exclusive().await;
    let server = TestServer::start(|c| c.push_threads = 1).await;
    let pattern = repeated(&ws_client_frame(true, PING, &[b'p'; 125]), 2000);
    let mut floods = Vec::new();
    for i in 0..40 {
        let (mut peer, _, _) = hostile::ws_connect_small(server.addr, &format!("/sub/crowd{i}"), "").await;
        let pattern = pattern.clone();
        floods.push(tokio::spawn(async move {
            hostile::flood(&mut peer, &pattern, pattern.len() as u64 * 40, Duration::from_secs(8)).await
        }));
    }
    let probe = DelayProbe::start(&server, "probe-crowd").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = probe.finish().await;
    for flood in floods {
        flood.abort();
    }
    assert!(report.max_delay < DELAY_BOUND, "40 flooding peers stalled another subscriber: {report:?}");
}

/// Slowloris: 1,000 connections each sending one byte of a request head a second. Each is cut
/// at `header_timeout` (408), the server answers others promptly meanwhile, and once they are
/// gone nothing of them is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_are_cut_at_header_timeout_while_others_are_served() {
    let _exclusive = hostile::exclusive().await;
    const SLOW: usize = 1000;
    let server = TestServer::start(|c| c.header_timeout = Duration::from_secs(2)).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        slow.push(server.connect().await);
    }
    // One byte a second from each, for longer than header_timeout.
    let dripping = tokio::spawn(async move {
        let mut cut = vec![false; SLOW];
        for second in 0..5 {
            for (conn, cut) in slow.iter_mut().zip(cut.iter_mut()) {
                if !*cut && !conn.try_send(&head[second..second + 1]).await {
                    *cut = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    // Meanwhile a normal client is answered promptly, on a new connection each time.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let asked = Instant::now();
        let mut conn = server.connect().await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(conn.response().await.status, 200);
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(slowest < DELAY_BOUND, "a normal request took {slowest:?} during the slowloris");
    let mut slow = dripping.await.unwrap();
    // Every slow connection got its 408 and was closed.
    let mut answered_408 = 0;
    for conn in &mut slow {
        let rest = tokio::time::timeout(Duration::from_secs(5), conn.read_to_close()).await.expect("closed");
        if rest.starts_with(b"HTTP/1.1 408") {
            answered_408 += 1;
        }
    }
    assert_eq!(answered_408, SLOW, "each slow connection is answered 408 before it is closed");
    drop(slow);
    // Nothing of them is left: only the stats request's own connection is open.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = server.stats().await["connections_open"].as_u64().unwrap();
        if open <= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still open after the slowloris ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
