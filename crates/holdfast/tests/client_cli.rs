//! `holdfast pub` and `holdfast sub`, the built binary against in-process servers: messages in
//! order on every transport, stdin publishing, `--json`, failover between two `--server`s, and a
//! gap after a restart reported on stderr.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use holdfast_testkit::fast_pacing as fast;
use holdfast_testkit::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const WAIT: Duration = Duration::from_secs(15);

/// A `holdfast sub` running in the background, its stdout and stderr read line by line.
struct Sub {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line so far (for failure messages).
    log: Vec<String>,
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Sub {
    fn start(args: &[&str]) -> Sub {
        let mut child = Command::new(BIN)
            .arg("sub")
            .args(args)
            .args(["--backoff-base", "0.1", "--backoff-cap", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdfast sub");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Sub { child, stdout, stderr, log: Vec::new() }
    }

    /// The next stdout line.
    async fn line(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(line) = self.stdout.try_recv() {
                return line;
            }
            self.drain_stderr();
            assert!(Instant::now() < deadline, "no output line within {WAIT:?}; stderr: {:#?}", self.log);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a stderr line containing `text`; gives it.
    async fn said(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = self.log.len();
        loop {
            self.drain_stderr();
            if let Some(line) = self.log[seen..].iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            seen = self.log.len();
            assert!(Instant::now() < deadline, "stderr never said {text:?}: {:#?}", self.log);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `holdfast pub ARGS` (with `stdin`), off the runtime; gives (exit success, stdout, stderr).
async fn publish(args: Vec<String>, stdin: Option<&str>) -> (bool, Vec<String>, String) {
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .arg("pub")
            .args(&args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdfast pub");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
        (output.status.success(), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn messages_in_order_over(transport: &str) {
    let server = TestServer::start(fast).await;
    let url = server.url("");
    let channel = format!("cli-{transport}");
    let mut sub = Sub::start(&["--server", &url, &channel, "--transport", transport]);
    sub.said("connected to").await;
    for text in ["one", "two", "three"] {
        let (ok, out, err) = publish(args(&["--server", &url, &channel, text]), None).await;
        assert!(ok, "pub failed: {err}");
        assert_eq!(out.len(), 1, "one id per message: {out:?}");
    }
    for want in ["one", "two", "three"] {
        assert_eq!(sub.line().await, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_prints_messages_in_order_over_ws() {
    messages_in_order_over("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_prints_messages_in_order_over_sse() {
    messages_in_order_over("sse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_prints_messages_in_order_over_stream() {
    messages_in_order_over("stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_prints_messages_in_order_over_longpoll() {
    messages_in_order_over("longpoll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_prints_messages_in_order_over_poll() {
    messages_in_order_over("poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pub_reads_stdin_one_message_per_line_and_sub_prints_json() {
    let server = TestServer::start(fast).await;
    let url = server.url("");
    let mut sub = Sub::start(&["--server", &url, "in", "--transport", "sse", "--json"]);
    sub.said("connected to").await;
    let (ok, ids, err) = publish(args(&["--server", &url, "in", "-", "--event", "line"]), Some("a\nb b\nc\n")).await;
    assert!(ok, "{err}");
    assert_eq!(ids.len(), 3);
    for (want, id) in ["a", "b b", "c"].iter().zip(&ids) {
        let line = sub.line().await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert_eq!(v["data"], *want, "{line}");
        assert_eq!(v["event"], "line");
        assert_eq!(v["id"], id.as_str(), "the id pub printed is the cursor sub sees");
        assert_eq!(v["channel"], "in");
    }
    // No MESSAGE at all reads stdin too.
    let (ok, ids, _) = publish(args(&["--server", &url, "in"]), Some("d\n")).await;
    assert!(ok && ids.len() == 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&sub.line().await).unwrap()["data"], "d");
}

#[tokio::test]
async fn cli_pub_fails_with_one_line_and_a_nonzero_exit() {
    let mut server = TestServer::start(fast).await;
    let url = server.url("");
    let (ok, _, err) = publish(args(&["--server", &url, "bad channel", "x"]), None).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad_channel"), "{err}");
    server.stop().await;
    let (ok, _, err) = publish(args(&["--server", &url, "room", "x"]), None).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refused") || err.contains("connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_fails_over_to_the_second_server() {
    let mut first = TestServer::start(fast).await;
    let second = TestServer::start(fast).await;
    let (a, b) = (first.url(""), second.url(""));
    let mut sub = Sub::start(&["--server", &a, "--server", &b, "fo", "--transport", "ws", "--heartbeat", "1"]);
    sub.said(&format!("connected to {a}")).await;
    first.stop().await;
    sub.said(&format!("failover: moved to {b}")).await;
    let (ok, _, err) = publish(args(&["--server", &b, "fo", "on b"]), None).await;
    assert!(ok, "{err}");
    assert_eq!(sub.line().await, "on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sub_reports_a_gap_after_a_restart_on_stderr() {
    let mut server = TestServer::start(fast).await;
    let addr = server.addr;
    let url = server.url("");
    let mut sub = Sub::start(&["--server", &url, "gap", "--transport", "sse"]);
    sub.said("connected to").await;
    server.publish("gap", None, b"before").await;
    assert_eq!(sub.line().await, "before");
    server.stop().await;
    sub.said("reconnecting").await;
    let server = TestServer::start_on(addr, fast).await;
    let line = sub.said("gap").await;
    assert!(line.contains("gap in gap"), "{line}");
    server.publish("gap", None, b"after").await;
    assert_eq!(sub.line().await, "after");
}
