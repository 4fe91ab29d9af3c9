//! WebSocket subscribers against clients nobody here wrote: Python's `websockets` (asyncio API),
//! a minimal raw-socket Python client for what that library hides (a peer that never answers
//! pings), and headless Chromium's own `WebSocket` (driven by `playwright-core`). The clients live
//! in `tests/interop/`; `scripts/setup.sh` installs them, and a missing one fails the test with a
//! hint (never a silent skip).
//!
//! Every wait is bounded: a client's line within [`IO_TIMEOUT`] (a Python report within
//! [`PYTHON_REPORT`]), its exit within [`IO_TIMEOUT`].

use std::process::Command;
use std::time::Duration;

use holdfast_testkit::interop::{browser_command, cors_pages, require, Client, Reports};
use holdfast_testkit::tls::TestCa;
use holdfast_testkit::{TestServer, IO_TIMEOUT};
use serde_json::{json, Value};

/// Longest wait for a Python client's whole report (each of its own waits is 5 s at most).
const PYTHON_REPORT: Duration = Duration::from_secs(20);

/// Runs a Python script from `tests/interop` to its single JSON report.
async fn python_report(args: &[&str]) -> Value {
    let mut command = Command::new("python3");
    command.args(args);
    let mut client = Client::spawn(command);
    let report = client.next(PYTHON_REPORT).await;
    client.finish().await;
    report
}

/// `ws_client.py CASE ARGS…` (Python `websockets`, asyncio API); over TLS when `ca` is given
/// (the base URLs are then `https://`, which the script turns into `wss://`).
async fn websockets_client(args: &[&str], ca: Option<&TestCa>) -> Value {
    require("python3", "python3", &["--version"]);
    require("Python websockets (13 or later)", "python3", &["-c", "import websockets.asyncio.client"]);
    let mut command = Command::new("python3");
    command.arg("ws_client.py").args(args);
    if let Some(ca) = ca {
        // Python's default TLS context (urllib and websockets alike) trusts this file.
        command.env("SSL_CERT_FILE", ca.ca_path());
    }
    let mut client = Client::spawn(command);
    let report = client.next(PYTHON_REPORT).await;
    client.finish().await;
    report
}

/// A server for the Python cases: plain, or TLS with a throw-away CA. Every case runs both ways:
/// WebSocket over `wss://` must behave as over `ws://`.
struct PyServer {
    server: TestServer,
    ca: Option<std::sync::Arc<TestCa>>,
}

impl PyServer {
    async fn start(tls: bool, configure: impl FnOnce(&mut holdfast_server::Config)) -> PyServer {
        PyServer::start_with(tls.then(|| std::sync::Arc::new(TestCa::new())), configure).await
    }

    /// A second server with the same certificate (one CA for a script that talks to both).
    async fn beside(other: &PyServer, configure: impl FnOnce(&mut holdfast_server::Config)) -> PyServer {
        PyServer::start_with(other.ca.clone(), configure).await
    }

    async fn start_with(
        ca: Option<std::sync::Arc<TestCa>>,
        configure: impl FnOnce(&mut holdfast_server::Config),
    ) -> PyServer {
        let files = ca.as_ref().map(|ca| (ca.cert_path().display().to_string(), ca.key_path().display().to_string()));
        let server = TestServer::start(move |config| {
            if let Some((cert, key)) = files {
                config.tls_cert = cert;
                config.tls_key = key;
            }
            configure(config);
        })
        .await;
        PyServer { server, ca }
    }

    /// The base URL the script gets (`http://…` or `https://…`).
    fn base(&self) -> String {
        match self.ca {
            None => self.server.url(""),
            Some(_) => format!("https://localhost:{}", self.server.addr.port()),
        }
    }

    async fn client(&self, case: &str, args: &[&str]) -> Value {
        let base = self.base();
        let mut all = vec![case, &base];
        all.extend_from_slice(args);
        websockets_client(&all, self.ca.as_deref()).await
    }

    /// `GET /admin/stats`, over TLS when the server speaks it.
    async fn stats(&self) -> Value {
        match &self.ca {
            None => self.server.stats().await,
            Some(ca) => {
                let (addr, ca_pem) = (self.server.addr, ca.ca_pem());
                tokio::task::spawn_blocking(move || {
                    let mut stream = holdfast_testkit::tls::connect(addr, &ca_pem).expect("TLS connect");
                    let request = b"GET /admin/stats HTTP/1.1\r\nHost: localhost\r\n\r\n";
                    let (_, _, body) = holdfast_testkit::tls::exchange(&mut stream, request).expect("stats");
                    serde_json::from_slice::<Value>(&body).expect("stats JSON")
                })
                .await
                .unwrap()
            }
        }
    }

    async fn stop(&mut self) {
        self.server.stop().await;
    }
}

/// Two tests from one case: over `ws://` and over `wss://`.
macro_rules! plain_and_tls {
    ($case:ident: $plain:ident, $tls:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $plain() {
            $case(false).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tls() {
            $case(true).await
        }
    };
}

/// A field of a report that is a string.
fn text<'a>(report: &'a Value, pointer: &str) -> &'a str {
    report.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer}: {report}"))
}

/// A received frame of `ws_client.py` that must be a text frame holding JSON.
fn envelope(frame: &Value) -> Value {
    assert_eq!(frame["kind"], "text", "{frame}");
    serde_json::from_str(text(frame, "/text")).unwrap_or_else(|e| panic!("not JSON ({e}): {frame}"))
}

plain_and_tls!(envelopes_case: python_websockets_gets_json_envelopes_with_the_publish_ids, python_websockets_over_wss_gets_json_envelopes_with_the_publish_ids);

async fn envelopes_case(tls: bool) {
    let mut server = PyServer::start(tls, |_| {}).await;
    let report = server.client("envelopes", &["py-envelopes"]).await;
    let published = report["published"].as_array().unwrap();
    let frames = report["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3, "{report}");
    let expected = [("message", "plain"), ("message", "line one\nline two\r\nline three"), ("chat", "typed")];
    for (i, (frame, (event, data))) in frames.iter().zip(expected).enumerate() {
        let envelope = envelope(frame);
        assert_eq!(envelope["id"], published[i], "envelope {i}'s id is the publish response's id: {report}");
        assert_eq!(envelope["channel"], "py-envelopes", "envelope {i}: {report}");
        assert_eq!(envelope["event"], event, "envelope {i}: {report}");
        assert_eq!(envelope["data"], data, "envelope {i}: {report}");
    }
    server.stop().await;
}

plain_and_tls!(raw_case: python_websockets_raw_format_sends_text_and_binary_frames, python_websockets_over_wss_raw_format_sends_text_and_binary_frames);

async fn raw_case(tls: bool) {
    let mut server = PyServer::start(tls, |_| {}).await;
    let report = server.client("raw", &["py-raw"]).await;
    let frames = &report["frames"];
    assert_eq!(frames[0], json!({"kind": "text", "text": "h\u{e9}llo \u{2713} \u{1f600}"}), "UTF-8: {report}");
    assert_eq!(frames[1], json!({"kind": "binary", "hex": "ff00"}), "not UTF-8: {report}");
    server.stop().await;
}

plain_and_tls!(resume_case: python_websockets_resumes_exactly_after_its_cursor, python_websockets_over_wss_resumes_exactly_after_its_cursor);

async fn resume_case(tls: bool) {
    let mut server = PyServer::start(tls, |_| {}).await;
    let report = server.client("resume", &["py-resume"]).await;
    let published: Vec<&str> = report["published"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(published.len(), 7, "{report}");
    let first: Vec<&str> = report["first"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(first, published[..2], "{report}");
    // Reconnected with ?cursor=<2nd id>: exactly the 4 missed, then the sentinel published after
    // them (so nothing repeated and nothing extra in between).
    let resumed = report["resumed"].as_array().unwrap();
    let data: Vec<&str> = resumed.iter().map(|e| e["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["missed 0", "missed 1", "missed 2", "missed 3", "sentinel"], "{report}");
    let ids: Vec<&str> = resumed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, published[2..], "{report}");
    server.stop().await;
}

plain_and_tls!(ops_case: python_websockets_client_ops, python_websockets_over_wss_client_ops);

async fn ops_case(tls: bool) {
    let mut open = PyServer::start(tls, |c| c.ws_client_publish = true).await;
    let mut closed = PyServer::beside(&open, |c| c.ws_client_publish = false).await;
    let report = websockets_client(&["ops", &open.base(), &closed.base(), "ops"], open.ca.as_deref()).await;

    assert_eq!(report["pong"], json!({"op": "pong"}), "{report}");
    assert_eq!(report["subscribed"]["op"], "subscribed", "{report}");
    assert_eq!(report["subscribed"]["channels"], json!(["ops", "ops-second"]), "{report}");
    let from_second = &report["from_second"];
    assert_eq!(from_second["channel"], "ops-second", "{report}");
    assert_eq!(from_second["data"], "on the second channel", "{report}");
    // Two channels: the id is the subscription's cursor over both, not the channel's own id.
    assert!(!text(from_second, "/id").is_empty(), "{report}");

    assert_eq!(report["unsubscribed"]["op"], "unsubscribed", "{report}");
    assert_eq!(report["unsubscribed"]["channels"], json!(["ops"]), "{report}");
    let after = &report["after_unsubscribe"];
    assert_eq!(after["channel"], "ops", "nothing from the channel it left: {report}");
    assert_eq!(after["id"], report["room_id"], "one channel again: the publish id: {report}");
    assert_eq!(report["after_unsubscribe_extra"], json!([]), "nothing from the channel it left: {report}");

    let published = &report["published"];
    assert_eq!(published["op"], "published", "{report}");
    assert_eq!(published["channel"], "ops-talk", "{report}");
    let received = &report["b_received"];
    let expected = json!({"id": published["id"], "channel": "ops-talk", "event": "chat", "data": "from a"});
    assert_eq!(*received, expected, "the other subscriber got the op's message: {report}");

    for (key, code) in [("bad_op", "bad_op"), ("bad_json", "bad_json"), ("no_op", "bad_op")] {
        assert_eq!(report[key]["op"], "error", "{key}: {report}");
        assert_eq!(report[key]["code"], code, "{key}: {report}");
        assert!(!text(&report[key], "/reason").is_empty(), "{key}: {report}");
    }
    assert_eq!(report["alive"]["id"], report["alive_id"], "still up after bad ops: {report}");
    assert_eq!(report["alive"]["data"], "still here", "{report}");

    let forbidden = &report["forbidden"];
    assert_eq!(forbidden["op"], "error", "{report}");
    assert_eq!(forbidden["code"], "forbidden", "{report}");
    assert!(!text(forbidden, "/reason").is_empty(), "{report}");
    // The next message is the HTTP one: the refused op published nothing, and the connection lived.
    assert_eq!(report["forbidden_alive"]["id"], report["forbidden_alive_id"], "{report}");
    assert_eq!(report["forbidden_alive"]["data"], "after forbidden", "{report}");
    open.stop().await;
    closed.stop().await;
}

plain_and_tls!(heartbeat_case: python_websockets_answers_server_pings_and_stays_open_while_quiet, python_websockets_over_wss_answers_server_pings_and_stays_open_while_quiet);

async fn heartbeat_case(tls: bool) {
    // The timeout is shorter than the quiet spell: only the library's pongs keep it open.
    let mut server = PyServer::start(tls, |c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_millis(600);
    })
    .await;
    let report = server.client("heartbeat", &["py-heartbeat", "1.5"]).await;
    assert_eq!(report["received_while_quiet"], json!([]), "{report}");
    assert_eq!(report["state"], "OPEN", "open after 1.5 s (7 intervals) of no messages: {report}");
    let pings = report["pings"].as_array().unwrap();
    assert!(pings.len() >= 4, "server pings every 200 ms while quiet; seen at {pings:?}: {report}");
    assert_eq!(report["after"]["id"], report["published"], "{report}");
    assert_eq!(report["after"]["data"], "after the quiet", "{report}");
    let stats = server.stats().await;
    assert!(stats["closed"]["heartbeat_timeout"].as_u64().unwrap_or(0) == 0, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn raw_python_peer_that_never_answers_pings_is_cut_after_heartbeat_timeout() {
    require("python3", "python3", &["--version"]);
    let mut server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(500);
    })
    .await;
    let report = python_report(&["ws_silent_peer.py", &server.addr.to_string(), "silent", "5"]).await;
    assert_eq!(report["status"], 101, "{report}");
    assert_eq!(report["accept_ok"], true, "{report}");
    let close = &report["close"];
    assert_eq!(close["code"], 1001, "{report}");
    assert_eq!(close["reason"], "heartbeat_timeout", "{report}");
    let after = close["after"].as_f64().unwrap();
    assert!((0.45..=1.5).contains(&after), "cut {after} s after the handshake, want 0.5 s (+ up to 1 s): {report}");
    assert!(report["pings"].as_array().unwrap().len() >= 2, "pings came before the cut: {report}");
    let notices: Vec<Value> = report["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| serde_json::from_str(t.as_str().unwrap()).unwrap_or_else(|e| panic!("not JSON ({e}): {report}")))
        .collect();
    assert!(
        notices.iter().any(|n| n["event"] == "holdfast.closed" && n["json"]["reason"] == "heartbeat_timeout"),
        "a holdfast.closed notice before the close frame: {report}"
    );
    assert_eq!(report["eof_after_close"], true, "TCP closed after the close frame: {report}");
    let stats = server.stats().await;
    assert!(stats["closed"]["heartbeat_timeout"].as_u64() >= Some(1), "{stats}");
    server.stop().await;
}

/// Starts `browser_websocket.js` with one page per URL and waits for it to be ready.
async fn browser(pages: &[String]) -> Client {
    let mut node = browser_command("browser_websocket.js");
    node.args(pages);
    let mut client = Client::spawn(node);
    let ready = client.next(IO_TIMEOUT * 3).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    client
}

/// The WebSocket script's reports by page, socket and type.
trait SocketReports {
    /// Reports of one socket of one page, of one type.
    fn of(&self, page: u64, socket: &str, kind: &str) -> Vec<&Value>;

    /// The text messages of a socket, parsed as JSON.
    fn json(&self, page: u64, socket: &str) -> Vec<Value>;
}

impl SocketReports for Reports {
    fn of(&self, page: u64, socket: &str, kind: &str) -> Vec<&Value> {
        self.filter(|r| r["page"] == page && r["socket"] == socket && r["type"] == kind)
    }

    fn json(&self, page: u64, socket: &str) -> Vec<Value> {
        let parse = |r: &&Value| serde_json::from_str(r["data"].as_str()?).ok();
        self.of(page, socket, "message").iter().map(|r| parse(r).unwrap_or_else(|| panic!("not JSON: {r}"))).collect()
    }
}

fn open(page: u64, socket: &str, url: &str) -> Value {
    json!({"page": page, "socket": socket, "open": url})
}

fn send(page: u64, socket: &str, value: &Value) -> Value {
    json!({"page": page, "socket": socket, "send": value.to_string()})
}

#[tokio::test]
async fn chromium_websocket_same_origin_receives_envelopes_and_publishes_with_ops() {
    let mut server = TestServer::start(|c| c.ws_client_publish = true).await;
    let mut client = browser(&[server.url("/healthz")]).await;
    let mut reports = Reports::new();
    client.command(open(0, "a", "/sub/room"));
    client.command(open(0, "b", "/sub/talk"));
    client.command(open(0, "raw", "/sub/bin?format=raw"));
    reports.until(&mut client, "3 opens", |r| ["a", "b", "raw"].iter().all(|s| r.of(0, s, "open").len() == 1)).await;

    let ids = [
        server.publish("room", None, b"first").await,
        server.publish("room", Some("chat"), b"two\nlines").await,
        server.publish("room", None, b"third").await,
    ];
    reports.until(&mut client, "3 envelopes on a", |r| r.of(0, "a", "message").len() == 3).await;
    let expected = [("message", "first"), ("chat", "two\nlines"), ("message", "third")];
    for (i, (envelope, (event, data))) in reports.json(0, "a").iter().zip(expected).enumerate() {
        let want = json!({"id": ids[i], "channel": "room", "event": event, "data": data});
        assert_eq!(*envelope, want, "envelope {i}; reports: {:?}", reports.seen);
    }

    // The page publishes over its socket a; its socket b gets the message.
    let op = json!({"op": "publish", "channel": "talk", "event": "chat", "data": "from the page"});
    client.command(send(0, "a", &op));
    reports.until(&mut client, "the publish answer", |r| r.of(0, "a", "message").len() == 4).await;
    reports.until(&mut client, "the message on b", |r| r.of(0, "b", "message").len() == 1).await;
    let answer = &reports.json(0, "a")[3];
    assert_eq!(answer["op"], "published", "{:?}", reports.seen);
    let want = json!({"id": answer["id"], "channel": "talk", "event": "chat", "data": "from the page"});
    assert_eq!(reports.json(0, "b")[0], want, "{:?}", reports.seen);

    // ?format=raw: a text frame is a string, a binary frame an ArrayBuffer.
    server.publish("bin", None, "plain text \u{2713}".as_bytes()).await;
    server.publish("bin", None, b"\xff\x00").await;
    reports.until(&mut client, "2 raw frames", |r| r.of(0, "raw", "message").len() == 2).await;
    let raw = reports.of(0, "raw", "message");
    assert_eq!(raw[0]["data"], "plain text \u{2713}", "{:?}", reports.seen);
    assert_eq!(raw[1]["binary"], "ff00", "{:?}", reports.seen);

    reports.seen.extend(client.finish().await);
    for socket in ["a", "b", "raw"] {
        assert!(reports.of(0, socket, "error").is_empty(), "{socket}: {:?}", reports.seen);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_websocket_over_wss_receives_envelopes_and_publishes_with_ops() {
    let ca = holdfast_testkit::tls::TestCa::new();
    let (cert, key) = (ca.cert_path().display().to_string(), ca.key_path().display().to_string());
    let mut server = TestServer::start(move |c| {
        c.ws_client_publish = true;
        c.tls_cert = cert;
        c.tls_key = key;
    })
    .await;
    let mut node = browser_command("browser_websocket.js");
    node.arg(format!("https://localhost:{}/healthz", server.addr.port()));
    node.env("HOLDFAST_IGNORE_HTTPS_ERRORS", "1");
    let mut client = Client::spawn(node);
    let ready = client.next(IO_TIMEOUT * 3).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let mut reports = Reports::new();
    client.command(open(0, "a", "/sub/sroom"));
    client.command(open(0, "b", "/sub/stalk"));
    reports.until(&mut client, "2 opens", |r| ["a", "b"].iter().all(|s| r.of(0, s, "open").len() == 1)).await;

    let (addr, ca_pem) = (server.addr, ca.ca_pem());
    let id = tokio::task::spawn_blocking(move || {
        let mut stream = holdfast_testkit::tls::connect(addr, &ca_pem).expect("TLS connect");
        let request = b"POST /pub/sroom HTTP/1.1\r\nHost: localhost\r\nContent-Length: 13\r\n\r\nover wss://!!";
        let (status, head, body) = holdfast_testkit::tls::exchange(&mut stream, request).expect("publish");
        assert_eq!(status, 200, "{head}");
        serde_json::from_slice::<Value>(&body).unwrap()["id"].clone()
    })
    .await
    .unwrap();
    reports.until(&mut client, "the envelope on a", |r| r.of(0, "a", "message").len() == 1).await;
    let want = json!({"id": id, "channel": "sroom", "event": "message", "data": "over wss://!!"});
    assert_eq!(reports.json(0, "a")[0], want, "{:?}", reports.seen);

    // The page publishes over its socket a (an https page's own origin); b gets it.
    let op = json!({"op": "publish", "channel": "stalk", "data": "from an https page"});
    client.command(send(0, "a", &op));
    reports.until(&mut client, "the message on b", |r| r.of(0, "b", "message").len() == 1).await;
    assert_eq!(reports.json(0, "b")[0]["data"], "from an https page", "{:?}", reports.seen);

    reports.seen.extend(client.finish().await);
    for socket in ["a", "b"] {
        assert!(reports.of(0, socket, "error").is_empty(), "{socket}: {:?}", reports.seen);
    }
    server.stop().await;
}

#[tokio::test]
async fn chromium_websocket_with_permessage_deflate_both_ways() {
    let mut server = TestServer::start(|c| {
        c.ws_deflate = true;
        c.ws_client_publish = true;
    })
    .await;
    let mut client = browser(&[server.url("/healthz")]).await;
    let mut reports = Reports::new();
    client.command(open(0, "a", "/sub/zroom"));
    client.command(open(0, "b", "/sub/ztalk,zroom"));
    reports.until(&mut client, "2 opens", |r| ["a", "b"].iter().all(|s| r.of(0, s, "open").len() == 1)).await;
    // Chromium offers "permessage-deflate; client_max_window_bits" and shows what was agreed.
    let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    assert_eq!(reports.of(0, "a", "open")[0]["extensions"], agreed, "{:?}", reports.seen);

    let long: String = (0..200).map(|i| format!("{{\"sym\":\"Q\",\"px\":{}.75}}", 50 + i % 11)).collect();
    let id = server.publish("zroom", None, long.as_bytes()).await;
    reports
        .until(&mut client, "the long message on a and b", |r| {
            r.of(0, "a", "message").len() == 1 && r.of(0, "b", "message").len() == 1
        })
        .await;
    let want = json!({"id": id, "channel": "zroom", "event": "message", "data": long});
    assert_eq!(reports.json(0, "a")[0], want, "{:?}", reports.seen);
    // b has two channels: its own cursor as id, in front of the same shared compressed bytes.
    let on_b = &reports.json(0, "b")[0];
    assert_eq!((&on_b["channel"], &on_b["data"]), (&want["channel"], &want["data"]), "{:?}", reports.seen);
    assert_ne!(on_b["id"], want["id"], "{:?}", reports.seen);

    // The page's own messages go compressed; the server inflates the op and publishes it.
    let op = json!({"op": "publish", "channel": "ztalk", "data": long});
    client.command(send(0, "a", &op));
    reports.until(&mut client, "the publish answer", |r| r.of(0, "a", "message").len() == 2).await;
    reports.until(&mut client, "the message on b", |r| r.of(0, "b", "message").len() == 2).await;
    assert_eq!(reports.json(0, "a")[1]["op"], "published", "{:?}", reports.seen);
    assert_eq!(reports.json(0, "b")[1]["data"], long, "{:?}", reports.seen);

    reports.seen.extend(client.finish().await);
    for socket in ["a", "b"] {
        assert!(reports.of(0, socket, "error").is_empty(), "{socket}: {:?}", reports.seen);
    }
    server.stop().await;
}

#[tokio::test]
async fn chromium_websocket_cross_origin_needs_cors_origins() {
    let (mut server, allowed, other) = cors_pages().await;
    let target = format!("ws://{}/sub/cors", server.addr);
    let mut client = browser(&[format!("{allowed}/"), format!("{other}/")]).await;
    let mut reports = Reports::new();
    client.command(open(0, "a", &target));
    client.command(open(1, "a", &target));
    reports.until(&mut client, "open on the allowed page", |r| r.of(0, "a", "open").len() == 1).await;
    reports.until(&mut client, "close on the other page", |r| r.of(1, "a", "close").len() == 1).await;

    server.publish("cors", None, b"one").await;
    reports.until(&mut client, "a message on the allowed page", |r| r.of(0, "a", "message").len() == 1).await;
    // The same window for the other page to (wrongly) get something.
    server.publish("cors", None, b"two").await;
    reports.until(&mut client, "a 2nd message on the allowed page", |r| r.of(0, "a", "message").len() == 2).await;
    reports.seen.extend(client.finish().await);

    let data: Vec<Value> = reports.json(0, "a").iter().map(|e| e["data"].clone()).collect();
    assert_eq!(data, ["one", "two"], "{:?}", reports.seen);
    assert!(reports.of(1, "a", "open").is_empty(), "disallowed origin opened: {:?}", reports.seen);
    assert!(reports.of(1, "a", "message").is_empty(), "disallowed origin got a message: {:?}", reports.seen);
    assert_eq!(reports.of(1, "a", "error").len(), 1, "a refused handshake is an error: {:?}", reports.seen);
    let close = reports.of(1, "a", "close")[0];
    assert_eq!(close["code"], 1006, "refused handshake: abnormal closure: {:?}", reports.seen);
    assert_eq!(close["wasClean"], false, "{:?}", reports.seen);
    server.stop().await;
}

plain_and_tls!(deflate_case: python_websockets_negotiates_deflate_and_both_sides_compress, python_websockets_over_wss_negotiates_deflate_and_both_sides_compress);

async fn deflate_case(tls: bool) {
    let mut server = PyServer::start(tls, |c| {
        c.ws_deflate = true;
        c.ws_client_publish = true;
    })
    .await;
    let report = server.client("deflate", &["py-deflate"]).await;
    assert_eq!(report["extensions"], json!(["permessage-deflate"]), "{report}");
    let agreed = json!({"server_no_context_takeover": true, "client_no_context_takeover": true});
    assert_eq!(report["agreed"], agreed, "{report}");
    let published = &report["published"];
    // The long message comes compressed, the short one plain; both parse to what was published.
    assert_eq!(report["received"][0], json!({"id": published[0], "data_ok": true, "rsv1": true}), "{report}");
    assert_eq!(report["received"][1], json!({"id": published[1], "data_ok": true, "rsv1": false}), "{report}");
    // zlib compressed the op; the server inflated it and published it.
    assert_eq!(report["sent_rsv1"], json!([true]), "{report}");
    assert_eq!(report["answer"]["op"], "published", "{report}");
    assert_eq!(report["echoed_ok"], true, "{report}");
    server.stop().await;
}
