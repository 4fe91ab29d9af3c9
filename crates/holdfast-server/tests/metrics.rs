//! `/metrics` and `/admin/stats` over real sockets: the latency histograms, responses by status,
//! bytes in and out, connections by transport. `/metrics` is read by the Prometheus project's
//! own Python parsers (`prometheus_client`; `scripts/setup.sh` installs it): the text format for
//! a plain request, OpenMetrics (strictly checked) for one that asks for it.

use std::process::Command;
use std::time::Duration;

use holdfast_testkit::{RawConn, TestServer};
use serde_json::Value;

/// Messages published (and delivered to the one subscriber) by the tests.
const MESSAGES: u64 = 5;

async fn run(mut command: Command) -> (bool, String, String) {
    let program = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); run scripts/setup.sh"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An SSE subscriber of `target`, once the shard holds it.
async fn sse(server: &TestServer, target: &str, channel: &str) -> RawConn {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 200);
    server.wait_for_subscribers(channel, 1).await;
    conn
}

/// Reads the stream until `n` messages (`id:` lines) have arrived.
async fn receive(conn: &mut RawConn, n: usize) {
    let mut text = String::new();
    while text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) < n {
        text.push_str(&String::from_utf8_lossy(&conn.next_chunk().await));
    }
}

/// `/admin/stats` once the push shards have added up their round (they do at its end, a moment
/// after the bytes went out): until `ready` holds, for a few seconds at most.
async fn stats_when(server: &TestServer, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let stats = server.stats().await;
        if ready(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("stats never got there: {}", server.stats().await);
}

/// The Python side: reads `/metrics` twice (plain, then `Accept: application/openmetrics-text`),
/// parses each with prometheus_client's parser for that format, and prints what the test checks
/// as JSON.
const PARSE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

def get(accept):
    request = urllib.request.Request(sys.argv[1] + "/metrics", headers=accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()

def summary(families):
    out = {}
    for family in families:
        samples = {}
        for s in family.samples:
            key = s.name + "".join("|%s=%s" % kv for kv in sorted(s.labels.items()))
            samples[key] = s.value
        out[family.name] = {"type": family.type, "samples": samples}
    return out

text_type, text = get({})
om_type, om = get({"Accept": "application/openmetrics-text; version=1.0.0"})
print(json.dumps({
    "text_type": text_type,
    "text": summary(text_string_to_metric_families(text)),
    "openmetrics_type": om_type,
    "openmetrics": summary(openmetrics_families(om)),
}))
"#;

async fn parsed_metrics(server: &TestServer) -> Value {
    let mut python = Command::new("python3");
    python.args(["-c", PARSE, &server.url("")]);
    let (ok, stdout, stderr) = run(python).await;
    assert!(ok, "python failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A histogram's count, checked to be what its buckets say (cumulative, +Inf = count).
fn histogram_count(family: &Value, name: &str) -> f64 {
    assert_eq!(family["type"], "histogram", "{name}: {family}");
    let samples = family["samples"].as_object().unwrap();
    let count = samples[&format!("{name}_count")].as_f64().unwrap();
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(key, value)| {
            let le = key.strip_prefix(&format!("{name}_bucket|le="))?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), value.as_f64().unwrap()))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 17, "{name}: 16 bounds and +Inf");
    assert_eq!(buckets[0].0, 0.0001);
    assert_eq!(buckets[15].0, 10.0);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{name}: buckets are cumulative: {buckets:?}");
    assert_eq!(buckets[16], (f64::INFINITY, count), "{name}");
    assert!(samples[&format!("{name}_sum")].as_f64().unwrap() >= 0.0);
    count
}

#[tokio::test]
async fn prometheus_client_reads_the_histograms_and_counters_after_a_fan_out() {
    let server = TestServer::start(|_| {}).await;
    let mut subscriber = sse(&server, "/sub/room", "room").await;
    for i in 0..MESSAGES {
        server.publish("room", None, format!("m{i}").as_bytes()).await;
    }
    receive(&mut subscriber, MESSAGES as usize).await;
    stats_when(&server, |s| s["latency_seconds"]["delivery"]["count"] == MESSAGES).await;

    let parsed = parsed_metrics(&server).await;
    assert_eq!(parsed["text_type"], "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(parsed["openmetrics_type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let text = &parsed["text"];
    let count = |family: &str, name: &str| histogram_count(&text[family], name);
    assert!(count("holdfast_delivery_latency_seconds", "holdfast_delivery_latency_seconds") >= MESSAGES as f64);
    assert!(count("holdfast_publish_latency_seconds", "holdfast_publish_latency_seconds") >= MESSAGES as f64);
    // The publishes and the subscriber counts asked by wait_for_subscribers.
    assert!(count("holdfast_request_latency_seconds", "holdfast_request_latency_seconds") > MESSAGES as f64);

    let value = |family: &str, sample: &str| -> f64 {
        let family = &text[family];
        family["samples"][sample].as_f64().unwrap_or_else(|| panic!("{sample} not in {family}"))
    };
    // (The parser names a counter's family without `_total`, its samples with it.)
    assert_eq!(text["holdfast_requests_by_status"]["type"], "counter");
    // The publishes, the subscriber counts and the stream's head.
    assert!(value("holdfast_requests_by_status", "holdfast_requests_by_status_total|code=200") > MESSAGES as f64);
    assert!(value("holdfast_received_bytes", "holdfast_received_bytes_total") > 0.0);
    assert!(value("holdfast_sent_bytes", "holdfast_sent_bytes_total") > 0.0);
    assert_eq!(text["holdfast_connections_by_transport"]["type"], "gauge");
    assert_eq!(value("holdfast_connections_by_transport", "holdfast_connections_by_transport|transport=sse"), 1.0);
    // Names that were there before prometheus-client.
    assert_eq!(value("holdfast_messages_published", "holdfast_messages_published_total"), MESSAGES as f64);
    assert_eq!(value("holdfast_subscribers", "holdfast_subscribers|transport=sse"), 1.0);

    // OpenMetrics: the same samples, families named without `_total`, units declared; the
    // parser refuses anything malformed (so reaching here checks the encoding too).
    let openmetrics = &parsed["openmetrics"];
    assert_eq!(openmetrics["holdfast_requests_by_status"]["type"], "counter");
    assert!(
        histogram_count(&openmetrics["holdfast_delivery_latency_seconds"], "holdfast_delivery_latency_seconds")
            >= MESSAGES as f64
    );
    assert_eq!(
        openmetrics["holdfast_connections_by_transport"]["samples"]["holdfast_connections_by_transport|transport=sse"],
        1.0
    );
}

#[tokio::test]
async fn admin_stats_has_the_histograms_in_the_dashboard_shape() {
    let server = TestServer::start(|_| {}).await;
    let mut subscriber = sse(&server, "/sub/feed", "feed").await;
    for i in 0..MESSAGES {
        server.publish("feed", None, format!("m{i}").as_bytes()).await;
    }
    receive(&mut subscriber, MESSAGES as usize).await;
    // The publishers' connections are closed (the server counts a close a moment after the
    // client's): only the stats request's own connection is open besides the subscriber.
    let stats = stats_when(&server, |s| {
        s["latency_seconds"]["delivery"]["count"] == MESSAGES && s["connections_by_transport"]["http"] == 1
    })
    .await;

    for name in ["delivery", "publish", "request"] {
        let h = &stats["latency_seconds"][name];
        let bounds = h["bounds"].as_array().unwrap();
        let counts: Vec<u64> = h["counts"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
        assert_eq!(bounds.len(), 16, "{name}: {h}");
        assert_eq!(counts.len(), bounds.len() + 1, "{name}: one count per bound and +Inf");
        assert_eq!(bounds[0], 0.0001);
        assert_eq!(bounds[15], 10.0);
        assert_eq!(counts.iter().sum::<u64>(), h["count"].as_u64().unwrap(), "{name}: counts sum to count");
        assert!(h["count"].as_u64().unwrap() >= MESSAGES, "{name}: {h}");
        assert!(h["sum"].as_f64().unwrap() > 0.0, "{name}: {h}");
    }
    assert!(stats["bytes_in"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["bytes_out"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["requests_by_status"]["200"].as_u64().unwrap() > MESSAGES, "{stats}");
    let by_transport = stats["connections_by_transport"].as_object().unwrap();
    let mut names: Vec<&str> = by_transport.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["http", "iframe", "longpoll", "sse", "stream", "websocket"]);
    assert_eq!(by_transport["sse"], 1);
}

#[tokio::test]
async fn history_a_subscriber_joins_with_is_not_timed_but_what_follows_is() {
    let server = TestServer::start(|_| {}).await;
    for i in 0..3 {
        server.publish("old", None, format!("m{i}").as_bytes()).await;
    }
    let mut subscriber = sse(&server, "/sub/old?history=3", "old").await;
    receive(&mut subscriber, 3).await;
    let stats = stats_when(&server, |s| s["messages_delivered"] == 3).await;
    assert_eq!(stats["latency_seconds"]["delivery"]["count"], 0, "replayed history is not fan-out latency");

    server.publish("old", None, b"live").await;
    receive(&mut subscriber, 1).await;
    stats_when(&server, |s| s["latency_seconds"]["delivery"]["count"] == 1).await;
}

#[tokio::test]
async fn a_websocket_publish_op_is_timed_until_its_answer() {
    let server = TestServer::start(|c| c.ws_client_publish = true).await;
    let mut ws = server.upgrade("/sub").await;
    ws.ws_send(0x1, br#"{"op":"publish","channel":"ops","data":"hi"}"#).await;
    let (_, opcode, answer) = ws.ws_frame().await;
    assert_eq!(opcode, 0x1);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["op"], "published", "{answer}");
    let stats = stats_when(&server, |s| s["latency_seconds"]["publish"]["count"] == 1).await;
    assert_eq!(stats["requests_by_status"]["101"], 1, "{stats}");
    assert_eq!(stats["connections_by_transport"]["websocket"], 1, "{stats}");
}

#[tokio::test]
async fn refused_and_missing_requests_are_counted_by_status() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 404);
    conn.send(b"GET / HTTP/9.9\r\nHost: t\r\n\r\n").await;
    let refused = conn.response().await.status;
    let stats = stats_when(&server, |s| s["requests_by_status"].get(refused.to_string()).is_some()).await;
    assert_eq!(stats["requests_by_status"]["404"], 1, "{stats}");
    assert_eq!(stats["requests_by_status"][refused.to_string()], 1, "{stats}");
}
