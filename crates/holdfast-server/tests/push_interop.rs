//! Push transports against clients nobody here wrote: Python's `sseclient-py` (a byte-level SSE
//! parser) and headless Chromium's own `EventSource` (driven by `playwright-core`). The clients
//! live in `tests/interop/`; `scripts/setup.sh` installs them, and a missing one fails the test
//! with a hint (never a silent skip).
//!
//! Every wait is bounded: a client's line within [`IO_TIMEOUT`], its exit within a few seconds.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_testkit::{TestServer, IO_TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install the interop clients";

/// `tests/interop` at the workspace root.
fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// The Chromium binary (Debian's package; `HOLDFAST_CHROMIUM` overrides).
fn chromium() -> String {
    std::env::var("HOLDFAST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// Fails the test, with the hint, unless `command` runs and succeeds.
fn require(what: &str, mut command: Command) {
    match command.stdout(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("{what} is missing ({}); {SETUP_HINT}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => panic!("{what} is missing ({e}); {SETUP_HINT}"),
    }
}

fn require_browser() {
    require("node", {
        let mut c = Command::new("node");
        c.arg("--version");
        c
    });
    require("Chromium", {
        let mut c = Command::new(chromium());
        c.arg("--version");
        c
    });
    let playwright = interop_dir().join("node_modules/playwright-core/package.json");
    assert!(playwright.exists(), "playwright-core is missing ({} not found); {SETUP_HINT}", playwright.display());
}

/// A client process that reports one JSON object per stdout line.
struct Client {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Client {
    fn spawn(mut command: Command) -> Client {
        let name = format!("{command:?}");
        command.current_dir(interop_dir()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {name} ({e}); {SETUP_HINT}"));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        Client { name, child, stdin, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next reported object; panics (with the client's stderr) after `within` or at EOF.
    async fn next(&mut self, within: Duration) -> Value {
        match self.next_within(within).await {
            Some(report) => report,
            None => panic!("{}: nothing reported within {within:?}\nstderr:\n{}", self.name, self.stderr()),
        }
    }

    /// The next reported object, or `None` if nothing comes within `within`; panics at EOF.
    async fn next_within(&mut self, within: Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(Some(line)) => Some(serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("{}: not a JSON line ({e}): {line:?}\nstderr:\n{}", self.name, self.stderr())
            })),
            Ok(None) => {
                // Give the stderr reader a moment to take the last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("{} ended early; status {:?}\nstderr:\n{}", self.name, self.child.try_wait(), self.stderr())
            }
            Err(_) => None,
        }
    }

    /// Reported objects already waiting, without blocking.
    fn pending(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            out.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        out
    }

    /// Closes stdin (the browser script's signal to stop) and waits for a successful exit.
    async fn finish(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                tokio::time::sleep(Duration::from_millis(50)).await; // let the readers drain
                assert!(status.success(), "{} failed with {status}\nstderr:\n{}", self.name, self.stderr());
                return self.pending();
            }
            assert!(Instant::now() < deadline, "{} did not exit within {IO_TIMEOUT:?}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Client {
    /// A client left running (a failed test) gets SIGTERM, so playwright closes its browser, then
    /// SIGKILL.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `browser_eventsource.js` with (page URL, EventSource URL) pairs.
fn browser(pairs: &[(String, String)]) -> Client {
    require_browser();
    let mut node = Command::new("node");
    node.arg("browser_eventsource.js").env("HOLDFAST_CHROMIUM", chromium());
    for (page, source) in pairs {
        node.args([page, source]);
    }
    Client::spawn(node)
}

/// The browser's reports so far, kept in order, with helpers to wait for one.
struct Reports {
    seen: Vec<Value>,
}

impl Reports {
    /// Reads reports until one satisfies `done` (it and everything before it are kept).
    async fn until(&mut self, client: &mut Client, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(report) = client.next_within(left).await else {
                panic!("browser: no {what} within {IO_TIMEOUT:?}; reports so far: {:?}", self.seen)
            };
            assert_ne!(report["type"], "timeout", "browser script timed out; reports: {:?}", self.seen);
            self.seen.push(report);
        }
    }

    fn of(&self, page: u64, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|r| r["page"] == page && r["type"] == kind).collect()
    }
}

fn count(page: u64, kind: &'static str) -> impl Fn(&[Value]) -> usize {
    move |seen| seen.iter().filter(|r| r["page"] == page && r["type"] == kind).count()
}

/// A tiny HTTP server on its own port (its own origin) answering every request with an empty page.
async fn page_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a page server");
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match tokio::time::timeout(IO_TIMEOUT, socket.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let body = "<!DOCTYPE html><title>another origin</title>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    origin
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
    let python = || {
        let mut c = Command::new("python3");
        c.args(["-c", "import requests, sseclient"]);
        c
    };
    require("Python requests and sseclient-py", python());
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
    let mut reports = Reports { seen: Vec::new() };
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
    let allowed = page_server().await;
    let other = page_server().await;
    let allowed_origin = allowed.clone();
    let mut server = TestServer::start(move |c| c.cors_origins = vec![allowed_origin]).await;
    let source = server.url("/sub/cors");
    let mut client = browser(&[(format!("{allowed}/"), source.clone()), (format!("{other}/"), source)]);
    let mut reports = Reports { seen: Vec::new() };
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
