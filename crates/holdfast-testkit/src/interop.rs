//! Interop test helpers: run clients nobody here wrote (Python libraries, headless Chromium driven
//! by `playwright-core`) from `tests/interop/` as child processes that report one JSON object per
//! stdout line.
//!
//! `scripts/setup.sh` installs those clients; a missing one fails the test with [`SETUP_HINT`]
//! (never a silent skip). Every wait is bounded, mostly by [`IO_TIMEOUT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{TestServer, IO_TIMEOUT};

/// What to do when an interop client is missing; ends every "missing" panic.
pub const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install the interop clients";

/// `tests/interop` at the workspace root (where the client scripts and their `node_modules` live).
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// The Chromium binary (Debian's package; `HOLDFAST_CHROMIUM` overrides).
pub fn chromium() -> String {
    std::env::var("HOLDFAST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// Fails the test, with [`SETUP_HINT`], unless `program args` runs and succeeds; `what` names the
/// missing piece in the message.
pub fn require(what: &str, program: &str, args: &[&str]) {
    match Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("{what} is missing ({}); {SETUP_HINT}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => panic!("{what} is missing ({e}); {SETUP_HINT}"),
    }
}

/// Fails the test, with [`SETUP_HINT`], unless node, Chromium and `playwright-core` are installed.
pub fn require_browser() {
    require("node", "node", &["--version"]);
    require("Chromium", &chromium(), &["--version"]);
    let playwright = interop_dir().join("node_modules/playwright-core/package.json");
    assert!(playwright.exists(), "playwright-core is missing ({} not found); {SETUP_HINT}", playwright.display());
}

/// `node SCRIPT` with `HOLDFAST_CHROMIUM` set, for a browser script in `tests/interop`, after
/// [`require_browser`]; add the script's arguments, then [`Client::spawn`] it.
pub fn browser_command(script: &str) -> Command {
    require_browser();
    let mut node = Command::new("node");
    node.arg(script).env("HOLDFAST_CHROMIUM", chromium());
    node
}

/// A client process, run in [`interop_dir`], that reports one JSON object per stdout line and
/// may take one JSON command per stdin line.
///
/// Its stderr is collected and shown in every failure. Dropped while still running (a failed
/// test), it gets SIGTERM (so playwright closes its browser), then SIGKILL after 3 s.
pub struct Client {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Client {
    /// Starts `command` in [`interop_dir`] with piped stdin, stdout and stderr; panics, with
    /// [`SETUP_HINT`], if it cannot run.
    pub fn spawn(mut command: Command) -> Client {
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

    /// Everything the client wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Writes one command line to the client's stdin; panics if it cannot.
    pub fn command(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            panic!("{}: cannot send {command} ({e})\nstderr:\n{}", self.name, self.stderr());
        }
    }

    /// The next reported object; panics (with the client's stderr) after `within` or at EOF.
    pub async fn next(&mut self, within: Duration) -> Value {
        match self.next_within(within).await {
            Some(report) => report,
            None => panic!("{}: nothing reported within {within:?}\nstderr:\n{}", self.name, self.stderr()),
        }
    }

    /// The next reported object, or `None` if nothing comes within `within`; panics at EOF or on
    /// a line that is not JSON.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
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

    /// Reported objects already waiting, without blocking (a line that is not JSON comes as a
    /// JSON string).
    pub fn pending(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            out.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        out
    }

    /// Closes stdin (the browser script's signal to stop), waits up to [`IO_TIMEOUT`] for a
    /// successful exit (panics otherwise) and returns the objects reported but not yet read.
    pub async fn finish(mut self) -> Vec<Value> {
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

/// A browser script's reports so far, kept in order.
#[derive(Debug, Default)]
pub struct Reports {
    /// Every report read, oldest first.
    pub seen: Vec<Value>,
}

impl Reports {
    /// No reports yet.
    pub fn new() -> Reports {
        Reports::default()
    }

    /// Reads reports from `client` until `done` holds (everything read is kept). Panics, naming
    /// `what`, if that takes longer than [`IO_TIMEOUT`], or if the script reports
    /// `{"type": "timeout"}`.
    pub async fn until(&mut self, client: &mut Client, what: &str, done: impl Fn(&Reports) -> bool) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(report) = client.next_within(left).await else {
                panic!("browser: no {what} within {IO_TIMEOUT:?}; reports so far: {:?}", self.seen)
            };
            assert_ne!(report["type"], "timeout", "browser script timed out; reports: {:?}", self.seen);
            self.seen.push(report);
        }
    }

    /// The reports that satisfy `keep`, in order.
    pub fn filter(&self, keep: impl Fn(&Value) -> bool) -> Vec<&Value> {
        self.seen.iter().filter(|r| keep(r)).collect()
    }
}

/// Starts a tiny HTTP server on its own port (so its own origin) that answers every request with
/// an empty HTML page; gives its origin, `http://127.0.0.1:PORT`. It runs until the runtime ends.
pub async fn page_server() -> String {
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

/// For a cross-origin test: two [`page_server`]s and a server whose `cors_origins` allows only the
/// first one's origin. Gives (server, allowed origin, other origin).
pub async fn cors_pages() -> (TestServer, String, String) {
    let allowed = page_server().await;
    let other = page_server().await;
    let allowed_origin = allowed.clone();
    let server = TestServer::start(move |c| c.cors_origins = vec![allowed_origin]).await;
    (server, allowed, other)
}
