//! Push transports against clients nobody here wrote: Python's `sseclient-py` (a byte-level SSE
//! parser) and headless Chromium's own `EventSource` (driven by `playwright-core`). The clients
//! live in `tests/interop/`; `scripts/setup.sh` installs them, and a missing one fails the test
//! with a hint (never a silent skip).
//!
//! Every wait is bounded: a client's line within [`IO_TIMEOUT`], its exit within a few seconds.
//!
//! [`IO_TIMEOUT`]: holdfast_testkit::IO_TIMEOUT

use std::process::Command;
use std::time::Duration;

use holdfast_testkit::interop::{browser_command, cors_pages, require, Client, Reports};
use holdfast_testkit::TestServer;
use serde_json::Value;

/// Starts `browser_eventsource.js` with (page URL, EventSource URL) pairs.
fn browser(pairs: &[(String, String)]) -> Client {
    let mut node = browser_command("browser_eventsource.js");
    for (page, source) in pairs {
        node.args([page, source]);
    }
    Client::spawn(node)
}

/// The EventSource script's reports by page and type.
trait PageReports {
    /// Reports of one page, of one type.
    fn of(&self, page: u64, kind: &str) -> Vec<&Value>;
}

impl PageReports for Reports {
    fn of(&self, page: u64, kind: &str) -> Vec<&Value> {
        self.filter(|r| r["page"] == page && r["type"] == kind)
    }
}

fn count(page: u64, kind: &'static str) -> impl Fn(&Reports) -> usize {
    move |reports| reports.of(page, kind).len()
}

/// `POST /admin/disconnect?channel=NAME`, as JSON.
async fn admin_disconnect(server: &TestServer, channel: &str) -> Value {
    let mut conn = server.connect().await;
    let head = format!(
        "POST /admin/disconnect?channel={channel} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.send(head.as_bytes()).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "admin disconnect: {}", response.text());
    response.json()
}

#[tokio::test]
async fn python_sseclient_parses_events_and_resumes_with_last_event_id() {
    require("Python requests and sseclient-py", "python3", &["-c", "import requests, sseclient"]);
    let server = TestServer::start(|c| c.heartbeat_interval = Duration::from_millis(100)).await;
    let mut command = Command::new("python3");
    command.args(["sse_resume.py", &server.url(""), "py"]);
    let mut client = Client::spawn(command);
    let report = client.next(Duration::from_secs(20)).await;
    client.finish().await;

    let published: Vec<&str> = report["published"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(published.len(), 9, "{report}");
    let first = report["first"].as_array().unwrap();
    let expected_first = [("message", "a\nb\nc"), ("tick", "second"), ("message", "third")];
    assert_eq!(first.len(), 3, "{report}");
    for (i, (event, (kind, data))) in first.iter().zip(expected_first).enumerate() {
        assert_eq!(event["event"], kind, "event {i} type: {report}");
        assert_eq!(event["data"], data, "event {i} data: {report}");
        assert_eq!(event["id"], published[i], "event {i} id is the publish response's id: {report}");
    }
    // The second connection sent Last-Event-ID = the 3rd id: exactly the 5 missed, then the
    // sentinel published after them (so no repeat and nothing extra in between).
    let resumed = report["resumed"].as_array().unwrap();
    let expected: Vec<String> = (0..5).map(|i| format!("missed {i}")).chain(["sentinel".to_string()]).collect();
    let data: Vec<&str> = resumed.iter().map(|e| e["data"].as_str().unwrap()).collect();
    assert_eq!(data, expected, "{report}");
    let ids: Vec<&str> = resumed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, published[3..], "{report}");
    assert!(report["heartbeats"].as_u64().unwrap() >= 2, "heartbeat comments were on the wire: {report}");
}

#[tokio::test]
async fn chromium_eventsource_resumes_after_admin_disconnect_without_loss_or_duplicates() {
    let mut server = TestServer::start(|c| c.sse_retry = Duration::from_millis(200)).await;
    let mut client = browser(&[(server.url("/healthz"), "/sub/room".to_string())]);
    let mut reports = Reports::new();
    let opens = count(0, "open");
    let messages = count(0, "message");
    reports.until(&mut client, "open", |s| opens(s) == 1).await;

    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(server.publish("room", None, format!("m{i}").as_bytes()).await);
    }
    reports.until(&mut client, "first 5 messages", |s| messages(s) == 5).await;

    let answer = admin_disconnect(&server, "room").await;
    assert!(answer["disconnecting"].as_u64() >= Some(1), "{answer}");
    // While the browser waits its 200 ms retry.
    for i in 6..=10 {
        ids.push(server.publish("room", None, format!("m{i}").as_bytes()).await);
    }
    let early: Vec<Value> = client.pending();
    assert!(
        !early.iter().any(|r| r["type"] == "open"),
        "the browser reconnected before the 5 publishes made while it was away were done: {early:?}"
    );
    reports.seen.extend(early);
    reports.until(&mut client, "reconnection", |s| opens(s) == 2).await;
    for i in 11..=15 {
        ids.push(server.publish("room", None, format!("m{i}").as_bytes()).await);
    }
    reports.until(&mut client, "all 15 messages", |s| messages(s) >= 15).await;
    reports.seen.extend(client.finish().await);

    let got = reports.of(0, "message");
    let data: Vec<&str> = got.iter().map(|r| r["data"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=15).map(|i| format!("m{i}")).collect();
    assert_eq!(data, expected, "every message exactly once, in order; reports: {:?}", reports.seen);
    let got_ids: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got_ids, ids, "lastEventId is the publish response's id");
    assert_eq!(reports.of(0, "open").len(), 2, "one reconnection: {:?}", reports.seen);

    let stats = server.stats().await;
    assert!(stats["closed"]["admin_disconnect"].as_u64() >= Some(1), "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn chromium_eventsource_cross_origin_needs_cors_origins() {
    let (mut server, allowed, other) = cors_pages().await;
    let source = server.url("/sub/cors");
    let mut client = browser(&[(format!("{allowed}/"), source.clone()), (format!("{other}/"), source)]);
    let mut reports = Reports::new();
    let (opens, errors, messages) = (count(0, "open"), count(1, "error"), count(0, "message"));
    reports.until(&mut client, "open on the allowed page", |s| opens(s) == 1).await;
    reports.until(&mut client, "error on the other page", |s| errors(s) == 1).await;

    server.publish("cors", None, b"one").await;
    reports.until(&mut client, "first message on the allowed page", |s| messages(s) == 1).await;
    // The same window for the other page to (wrongly) get something.
    server.publish("cors", None, b"two").await;
    reports.until(&mut client, "second message on the allowed page", |s| messages(s) == 2).await;
    reports.seen.extend(client.finish().await);

    let data: Vec<&Value> = reports.of(0, "message").iter().map(|r| &r["data"]).collect();
    assert_eq!(data, ["one", "two"], "{:?}", reports.seen);
    let refused = reports.of(1, "error");
    assert_eq!(refused[0]["readyState"], 2, "a CORS failure closes the EventSource for good: {:?}", reports.seen);
    assert!(reports.of(1, "open").is_empty(), "disallowed origin opened: {:?}", reports.seen);
    assert!(reports.of(1, "message").is_empty(), "disallowed origin got a message: {:?}", reports.seen);
    server.stop().await;
}
