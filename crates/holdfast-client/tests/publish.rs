//! The publisher against a real server: ids, batches, refusals with the server's label and
//! reason, connection errors, and a pooled connection the server closed as idle.

use std::time::Duration;

use holdfast_client::{Publication, Publisher};
use holdfast_testkit::hostile::get_json;
use holdfast_testkit::TestServer;

#[tokio::test]
async fn publish_gives_the_id_and_sets_the_event() {
    let server = TestServer::start(|_| {}).await;
    let publisher = Publisher::new(server.url("")).unwrap();
    let first = publisher.publish("room", "hello", Some("chat")).await.unwrap();
    let second = publisher.publish("room", &b"\x00\xff"[..], None).await.unwrap();
    assert_eq!(first.channel, "room");
    assert_ne!(first.id, second.id);
    let info = get_json(server.addr, "/pub/room").await;
    assert_eq!(info["messages"], 2);
    assert_eq!(info["last_id"], second.id.as_str());
}

#[tokio::test]
async fn publish_batch_runs_concurrently_and_answers_in_order() {
    let server = TestServer::start(|_| {}).await;
    let publisher = Publisher::builder().server(server.url("")).concurrency(8).build().unwrap();
    let batch = (0..50).map(|i| Publication::new(format!("b{}", i % 5), format!("m{i}")).event("tick"));
    let results = publisher.publish_batch(batch).await;
    assert_eq!(results.len(), 50);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap().channel, format!("b{}", i % 5));
    }
    for c in 0..5 {
        assert_eq!(get_json(server.addr, &format!("/pub/b{c}")).await["messages"], 10);
    }
    // Fifty publishes over a pool of at most eight connections.
    let stats = server.stats().await;
    assert!(stats["connections_accepted"].as_u64().unwrap() <= 8 + 5 + 2, "{stats}");
}

#[tokio::test]
async fn a_refusal_carries_the_status_label_and_reason() {
    let server = TestServer::start(|_| {}).await;
    let publisher = Publisher::new(server.url("")).unwrap();
    let e = publisher.publish("a b", "x", None).await.unwrap_err();
    assert!(e.is_refused(), "{e}");
    assert_eq!((e.status(), e.label()), (Some(400), Some("bad_channel")));
    assert!(e.reason().is_some());
    let e = publisher.publish("room", "x", Some("bad event!")).await.unwrap_err();
    assert_eq!(e.label(), Some("bad_event"));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let mut server = TestServer::start(|_| {}).await;
    let url = server.url("");
    server.stop().await;
    let e = Publisher::new(url).unwrap().publish("room", "x", None).await.unwrap_err();
    assert!(e.is_connect() && !e.is_refused(), "{e:?}");
    assert!(Publisher::new("ftp://nowhere").unwrap_err().is_invalid());
}

/// The server closes idle connections after 1 s while the pool would keep them 10 s: the next
/// publish must still succeed (the pool sees the close, or the one safe retry covers the race).
#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_not_an_error() {
    let server = TestServer::start(|config| config.keepalive_timeout = Duration::from_secs(1)).await;
    let publisher =
        Publisher::builder().server(server.url("")).pool_idle_timeout(Duration::from_secs(10)).build().unwrap();
    for round in 0..3 {
        publisher.publish("idle", format!("m{round}"), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(get_json(server.addr, "/pub/idle").await["messages"], 3, "no publish was doubled");
}
