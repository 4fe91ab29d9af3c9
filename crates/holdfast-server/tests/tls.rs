//! TLS (`tls_cert`, `tls_key`): HTTP/1.1 keep-alive, SSE and long polls over TLS on the same
//! code paths as plain text, against curl and a rustls client (WebSocket over `wss://`: every
//! Python `websockets` case and Chromium, in ws_interop.rs); connections that
//! park and come back; a subscriber that never reads; plain HTTP on the TLS port; the limits per
//! client before the handshake; a certificate reload (SIGHUP) under load that drops nothing.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use holdfast_testkit::interop::require;
use holdfast_testkit::tls::{self, TestCa, TlsStream};
use holdfast_testkit::{TestServer, IO_TIMEOUT};
use serde_json::Value;

async fn tls_server(ca: &TestCa, configure: impl FnOnce(&mut holdfast_server::Config)) -> TestServer {
    let cert = ca.cert_path().display().to_string();
    let key = ca.key_path().display().to_string();
    TestServer::start(move |config| {
        config.tls_cert = cert;
        config.tls_key = key;
        configure(config);
    })
    .await
}

/// `GET /admin/stats` over TLS.
async fn stats(server: &TestServer, ca: &TestCa) -> Value {
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    blocking(move || {
        let mut stream = tls::connect(addr, &ca_pem).expect("TLS connect");
        let (status, _, body) = tls::exchange(&mut stream, &get("/admin/stats")).expect("stats");
        assert_eq!(status, 200);
        serde_json::from_slice::<Value>(&body).expect("stats JSON")
    })
    .await
}

/// The `cursor` of a poll's JSON answer.
fn cursor_of(body: &[u8]) -> String {
    let answer: Value = serde_json::from_slice(body).expect("poll answer JSON");
    answer["cursor"].as_str().unwrap_or_else(|| panic!("no cursor: {answer}")).to_string()
}

fn https(server: &TestServer, path: &str) -> String {
    format!("https://{}{}", server.addr, path)
}

/// Runs blocking client code off the runtime (the server runs in the same one).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("client thread panicked")
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn publish_over(stream: &mut TlsStream, channel: &str, body: &str) -> Value {
    let request =
        format!("POST /pub/{channel} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let (status, head, body) = tls::exchange(stream, request.as_bytes()).expect("publish over TLS");
    assert_eq!(status, 200, "{head}");
    serde_json::from_slice(&body).expect("publish answer")
}

/// Reads from a blocking TLS stream until `text` has arrived (or fails after IO_TIMEOUT).
fn read_until(stream: &mut TlsStream, seen: &mut Vec<u8>, text: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(text) {
        assert!(Instant::now() < deadline, "never saw {text:?} in {:?}", String::from_utf8_lossy(seen));
        let n = stream.read(&mut chunk).expect("read over TLS");
        assert!(n > 0, "EOF before {text:?}: {:?}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_ca_reuses_one_tls_connection_and_the_reuse_shows_in_admin_stats() {
    require("curl", "curl", &["--version"]);
    let ca = TestCa::new();
    let mut server = tls_server(&ca, |_| {}).await;
    let (url, cacert) = (https(&server, "/healthz"), ca.ca_path());
    let output = blocking(move || {
        Command::new("curl").args(["-sS", "-v", "--cacert"]).arg(&cacert).args([&url, &url, &url]).output()
    })
    .await
    .expect("run curl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "curl failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).matches("ok").count(), 3, "{stderr}");
    assert!(stderr.contains("TLSv1.3") || stderr.contains("TLSv1.2"), "{stderr}");
    assert!(stderr.contains("ALPN: server accepted http/1.1"), "{stderr}");
    assert_eq!(stderr.matches("Connected to").count(), 1, "one TCP connection for three requests: {stderr}");

    let stats = stats(&server, &ca).await;
    assert!(stats["requests_reused"].as_u64().unwrap() >= 2, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_subscriber_over_tls_gets_messages_heartbeats_and_its_cursor_back() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca, holdfast_testkit::fast_pacing).await;
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    blocking(move || {
        let mut subscriber = tls::connect(addr, &ca_pem).expect("TLS connect");
        subscriber.write_all(&get("/sub/tls-sse?transport=sse&heartbeat=1")).unwrap();
        let mut seen = Vec::new();
        read_until(&mut subscriber, &mut seen, "text/event-stream");
        let mut publisher = tls::connect(addr, &ca_pem).expect("TLS connect");
        // A body larger than a TLS record: the message spans records.
        let big = "x".repeat(40_000);
        let first = publish_over(&mut publisher, "tls-sse", "hello over tls");
        publish_over(&mut publisher, "tls-sse", &big);
        read_until(&mut subscriber, &mut seen, "hello over tls");
        read_until(&mut subscriber, &mut seen, &big);
        let text = String::from_utf8_lossy(&seen).to_string();
        assert!(text.contains(&format!("id: {}", first["id"].as_str().unwrap())), "{text}");
        // Quiet now: a heartbeat comes from the push shard within ~1.25 s.
        let before = seen.len();
        read_until(&mut subscriber, &mut seen, ":\n");
        assert!(seen.len() > before);
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_keepalive_connection_parks_comes_back_and_long_polls_are_answered_on_it() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca, |config| {
        holdfast_testkit::fast_pacing(config);
        // Idle connections leave the runtime for the parking lot almost at once.
        config.park_after = Duration::from_millis(20);
    })
    .await;
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    blocking(move || {
        let mut conn = tls::connect(addr, &ca_pem).expect("TLS connect");
        for round in 0..3 {
            let (status, _, body) = tls::exchange(&mut conn, &get("/healthz")).expect("healthz");
            assert_eq!((status, &body[..]), (200, &b"ok\n"[..]), "round {round}");
            // Parked (its session goes with it), then woken by the next request.
            let deadline = Instant::now() + IO_TIMEOUT;
            loop {
                let mut other = tls::connect(addr, &ca_pem).expect("TLS connect");
                let (_, _, body) = tls::exchange(&mut other, &get("/admin/stats")).expect("stats");
                let stats: Value = serde_json::from_slice(&body).unwrap();
                if stats["connections_parked"].as_u64() >= Some(1) {
                    break;
                }
                assert!(Instant::now() < deadline, "never parked: {stats}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A long poll with nothing to answer waits in a push shard; a publish answers it; the
        // connection then serves its next request (read by the shard through the session).
        let start = tls::exchange(&mut conn, &get("/sub/tls-lp?transport=poll")).expect("poll");
        assert_eq!(start.0, 200, "{}", start.1);
        let cursor = cursor_of(&start.2);
        let publisher = std::thread::spawn({
            let ca_pem = ca_pem.clone();
            move || {
                std::thread::sleep(Duration::from_millis(200));
                let mut publisher = tls::connect(addr, &ca_pem).expect("TLS connect");
                publish_over(&mut publisher, "tls-lp", "answered")
            }
        });
        let held = tls::exchange(&mut conn, &get(&format!("/sub/tls-lp?transport=longpoll&cursor={cursor}")))
            .expect("long poll");
        publisher.join().unwrap();
        assert_eq!(held.0, 200, "{}", held.1);
        assert!(String::from_utf8_lossy(&held.2).contains("answered"), "{:?}", String::from_utf8_lossy(&held.2));
        let cursor = cursor_of(&held.2);
        // Held again, answered empty at longpoll_timeout (2 s); then a plain request on it.
        let empty = tls::exchange(&mut conn, &get(&format!("/sub/tls-lp?transport=longpoll&cursor={cursor}")))
            .expect("long poll timeout");
        assert_eq!(empty.0, 200, "{}", empty.1);
        let (status, _, _) = tls::exchange(&mut conn, &get("/healthz")).expect("healthz after");
        assert_eq!(status, 200);
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_subscriber_that_never_reads_is_cut_and_the_others_keep_getting_messages() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca, |config| {
        config.max_pending_bytes = 256 * 1024;
        config.send_timeout = Duration::from_secs(3);
    })
    .await;
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    blocking(move || {
        let mut stuck = tls::connect(addr, &ca_pem).expect("TLS connect");
        stuck.write_all(&get("/sub/tls-slow?transport=sse")).unwrap();
        let mut healthy = tls::connect(addr, &ca_pem).expect("TLS connect");
        healthy.write_all(&get("/sub/tls-slow?transport=sse")).unwrap();
        let mut seen = Vec::new();
        read_until(&mut healthy, &mut seen, "text/event-stream");
        let mut publisher = tls::connect(addr, &ca_pem).expect("TLS connect");
        let body = "y".repeat(16_000);
        // ~8 MB to a subscriber that reads nothing: its socket fills, then its pending bytes
        // pass max_pending_bytes and it is cut. The healthy one reads each message.
        for i in 0..500 {
            publish_over(&mut publisher, "tls-slow", &format!("{i}:{body}"));
            read_until(&mut healthy, &mut seen, &format!("{i}:{body}"));
            seen.clear();
        }
        let (status, _, body) = tls::exchange(&mut publisher, &get("/pub/tls-slow")).expect("channel info");
        assert_eq!(status, 200);
        let info: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(info["subscribers"], 1, "the stuck subscriber was cut: {info}");
        drop(stuck);
    })
    .await;
    let stats = stats(&server, &ca).await;
    assert!(stats["closed"]["slow_consumer"].as_u64().unwrap_or(0) >= 1, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_a_readable_400() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca, |_| {}).await;
    let mut conn = server.connect().await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let response = conn.response().await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("plain_http_on_tls_port"), "{}", response.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_per_ip_refuses_before_the_handshake_and_serves_other_ips() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca, |config| config.max_connections_per_ip = 2).await;
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    blocking(move || {
        let first = tls::connect(addr, &ca_pem).expect("first");
        let second = tls::connect(addr, &ca_pem).expect("second");
        // The third is closed before any handshake byte is answered.
        let third = tls::connect(addr, &ca_pem);
        assert!(third.is_err(), "a third TLS connection from 127.0.0.1 was let in");
        // Another address is its own client.
        let mut stream = tls::connect_from(addr, "127.0.0.2".parse().unwrap(), &ca_pem).expect("127.0.0.2 is served");
        let (status, _, body) = tls::exchange(&mut stream, &get("/admin/stats")).unwrap();
        assert_eq!(status, 200);
        let stats: Value = serde_json::from_slice(&body).unwrap();
        assert!(stats["limited"]["connections_per_ip"].as_u64().unwrap_or(0) >= 1, "{stats}");
        drop((first, second));
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_under_load_and_drops_nothing() {
    let mut ca = TestCa::new();
    let mut server = tls_server(&ca, |_| {}).await;
    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    let first_cert = tls::certificate_der(&ca.cert_path());

    // Load: SSE subscribers and keep-alive clients, all opened before the reload.
    let subscribers: Vec<TlsStream> = blocking({
        let ca_pem = ca_pem.clone();
        move || {
            (0..4)
                .map(|_| {
                    let mut s = tls::connect(addr, &ca_pem).expect("subscriber");
                    assert_eq!(tls::served_certificate(&s), first_cert);
                    s.write_all(&get("/sub/reload?transport=sse")).unwrap();
                    let mut seen = Vec::new();
                    read_until(&mut s, &mut seen, "text/event-stream");
                    s
                })
                .collect()
        }
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (stop, ca_pem) = (stop.clone(), ca_pem.clone());
            std::thread::spawn(move || {
                let mut stream = tls::connect(addr, &ca_pem).expect("client");
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = format!("{c}-{n}");
                    let request = format!(
                        "POST /pub/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let (status, head, _) = tls::exchange(&mut stream, request.as_bytes()).expect("publish over TLS");
                    assert_eq!(status, 200, "{head}");
                    n += 1;
                    // A fast client reaches the request cap (`keepalive_requests`): the answer says
                    // so, and the next request goes on a new connection, as a browser's would.
                    if head.to_ascii_lowercase().contains("connection: close") {
                        stream = tls::connect(addr, &ca_pem).expect("client, again");
                    }
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    let second = ca.issue();
    assert_eq!(second, 2);
    let second_cert = tls::certificate_der(&ca.cert_path());
    // SAFETY: kill(2) on our own pid; the server took SIGHUP over before it listened.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    // New connections get the new certificate once the reload is done.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let ca_pem = ca_pem.clone();
        let served =
            blocking(move || tls::served_certificate(&tls::connect(addr, &ca_pem).expect("new connection"))).await;
        if served == second_cert {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published: Vec<u64> =
        clients.into_iter().map(|c| c.join().expect("a client failed across the reload")).collect();
    assert!(published.iter().all(|&n| n > 0), "{published:?}");

    // Every subscriber opened before the reload gets every message, the last ones included.
    blocking(move || {
        for (i, mut s) in subscribers.into_iter().enumerate() {
            let mut seen = Vec::new();
            for (c, n) in published.iter().enumerate() {
                read_until(&mut s, &mut seen, &format!("data: {c}-{}\n", n - 1));
            }
            let text = String::from_utf8_lossy(&seen);
            for (c, n) in published.iter().enumerate() {
                for k in 0..*n {
                    assert!(text.contains(&format!("data: {c}-{k}\n")), "subscriber {i} lost {c}-{k}");
                }
            }
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_is_logged_and_the_server_goes_on() {
    let mut server = TestServer::start(|_| {}).await;
    // SAFETY: kill(2) on our own pid; every server takes SIGHUP over before it listens.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = server.connect().await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 200);
    server.stop().await;
}
