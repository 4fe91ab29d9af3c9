//! Test helpers for Holdfast: start a real server on an ephemeral loopback port, and talk to it
//! with raw bytes (so tests see exactly what goes over the wire).
//!
//! Every wait is bounded ([`IO_TIMEOUT`]) so a broken server fails a test instead of hanging it.
//!
//! [`interop`] runs third-party clients (Python libraries, headless Chromium) against it;
//! [`hostile`] has floods, peers that never read, RSS sampling and a delivery-delay probe;
//! [`process`] runs `holdfast serve` as a child on a port it picks itself;
//! [`proxy`] a TCP relay that can stop forwarding without closing (half-open links, NAT timeouts);
//! [`redis`] real Redis servers (one, or a three-master cluster) for scale-out tests;
//! [`tls`] a throw-away certificate authority and server certificates for TLS tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdfast_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod hostile;
pub mod interop;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod tls;

/// Longest wait for any single expected event in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running in the test's runtime.
pub struct TestServer {
    /// Where it listens (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Short intervals so liveness tests take seconds: heartbeats every second (`heartbeat_min`
/// lowered to 1 s so that `?heartbeat=1` is honoured), long polls held 2 s, a quick drain.
pub fn fast_pacing(config: &mut Config) {
    config.heartbeat_interval = Duration::from_secs(1);
    config.heartbeat_min = Duration::from_secs(1);
    config.longpoll_timeout = Duration::from_secs(2);
    config.shutdown_timeout = Duration::from_secs(2);
}

impl TestServer {
    /// Starts a server with the default configuration changed by `configure`.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        TestServer::serve(listener, configure)
    }

    /// Starts a server on `addr`, typically the address of one just stopped (a restart: the new
    /// server has none of the old one's channels, so cursors from before point into old epochs).
    /// Retries the bind for a moment while the old listener goes away.
    pub async fn start_on(addr: SocketAddr, configure: impl FnOnce(&mut Config)) -> TestServer {
        let deadline = Instant::now() + IO_TIMEOUT;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr} again: {e}"),
            }
        };
        TestServer::serve(listener, configure)
    }

    fn serve(listener: TcpListener, configure: impl FnOnce(&mut Config)) -> TestServer {
        // Tests drain at once unless they ask for a spread (tests/drain.rs): most stop the server
        // midway and wait on the closes.
        let mut config = Config { drain_seconds: Duration::ZERO, ..Config::default() };
        configure(&mut config);
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(holdfast_server::run(listener, config, async {
            let _ = rx.await;
        }));
        TestServer { addr, shutdown: Some(tx), task: Some(task) }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Opens a raw connection to the server.
    pub async fn connect(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }

    /// Opens a WebSocket on `target` (`/sub/…`), asserting the 101.
    pub async fn upgrade(&self, target: &str) -> RawConn {
        let mut conn = self.connect().await;
        conn.send(ws_upgrade_request(target, "").as_bytes()).await;
        let head = conn.stream_head().await;
        assert_eq!(head.status, 101, "WebSocket upgrade on {target}: {}", head.head);
        conn
    }

    /// Triggers a graceful shutdown (what SIGTERM does in `holdfast serve`) without waiting for
    /// it; [`TestServer::stop`] then waits.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers a graceful shutdown and waits for `run` to return; gives how long that took.
    pub async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server did not stop within 30 s")
                .expect("server task panicked")
                .expect("server returned an error");
        }
        started.elapsed()
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Publishes `body` to `channel` (with an event type) and returns the message id (cursor).
    pub async fn publish(&self, channel: &str, event: Option<&str>, body: &[u8]) -> String {
        let mut conn = self.connect().await;
        let query = event.map(|e| format!("?event={e}")).unwrap_or_default();
        let head = format!("POST /pub/{channel}{query} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
        conn.send(head.as_bytes()).await;
        conn.send(body).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "publish failed: {}", response.text());
        response.json()["id"].as_str().expect("id").to_string()
    }

    /// Waits until `GET /pub/{channel}` reports `n` subscribers (the push shard registers a new
    /// subscriber a moment after its response head is sent).
    pub async fn wait_for_subscribers(&self, channel: &str, n: u64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let mut conn = self.connect().await;
            conn.send(format!("GET /pub/{channel} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
            let info = conn.response().await;
            if info.status == 200 && info.json()["subscribers"] == n {
                return;
            }
            assert!(Instant::now() < deadline, "{channel} never had {n} subscribers");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `POST /admin/disconnect?channel=NAME`: closes that channel's streaming subscribers; gives
    /// how many.
    pub async fn disconnect(&self, channel: &str) -> u64 {
        let mut conn = self.connect().await;
        let head = format!("POST /admin/disconnect?channel={channel} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        conn.send(head.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "admin disconnect: {}", response.text());
        response.json()["disconnecting"].as_u64().unwrap_or(0)
    }

    /// `GET /admin/stats` on a fresh connection, as JSON.
    pub async fn stats(&self) -> serde_json::Value {
        let mut conn = self.connect().await;
        conn.send(b"GET /admin/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
        let response = conn.response().await;
        assert_eq!(response.status, 200);
        response.json()
    }
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body after de-chunking.
    pub body: Vec<u8>,
    /// The head as text (status line and fields).
    pub head: String,
}

impl RawResponse {
    /// The first value of a header field (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw TCP connection to the server, with a read buffer of its own.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect to the test server");
        RawConn { stream, buf: Vec::new() }
    }

    /// Connects to `addr` from the address `source` (on Linux every address of 127/8 is on the
    /// loopback interface: each is a client of its own to the server's limits per client IP).
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> RawConn {
        let socket = if source.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        let socket = socket.expect("a client socket");
        socket.bind(SocketAddr::new(source, 0)).unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let stream = socket.connect(addr).await.expect("connect to the test server");
        RawConn { stream, buf: Vec::new() }
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the server");
    }

    /// Sends bytes, tolerating a server that already closed (for malformed-input tests).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads the next response to a non-HEAD request.
    pub async fn response(&mut self) -> RawResponse {
        self.read_response(false).await
    }

    /// Reads a streaming response's head only; the body follows with [`RawConn::next_chunk`].
    pub async fn stream_head(&mut self) -> RawResponse {
        self.read_response(true).await
    }

    /// Reads the next chunk of a chunked body (empty at the last chunk).
    pub async fn next_chunk(&mut self) -> Vec<u8> {
        self.next_chunk_within(IO_TIMEOUT).await.expect("a chunk")
    }

    /// The next chunk, or `None` if none arrives within `wait` (or the connection closed).
    pub async fn next_chunk_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !self.fill_until(deadline).await {
                return None;
            }
        };
        let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        while self.buf.len() < line_end + 2 + size + 2 {
            assert!(self.fill_until(deadline).await, "stream ended mid-chunk");
        }
        let chunk = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n", "chunk not followed by CRLF");
        self.buf.drain(..line_end + 4 + size);
        Some(chunk)
    }

    /// Sends one masked client WebSocket frame (FIN set).
    pub async fn ws_send(&mut self, opcode: u8, payload: &[u8]) {
        self.send(&ws_client_frame(true, opcode, payload)).await;
    }

    /// Reads one server WebSocket frame: (FIN, opcode, payload). Panics if none arrives.
    pub async fn ws_frame(&mut self) -> (bool, u8, Vec<u8>) {
        self.ws_frame_within(IO_TIMEOUT).await.expect("a WebSocket frame")
    }

    /// One server frame, or `None` if none arrives within `wait` (or the connection closed).
    pub async fn ws_frame_within(&mut self, wait: Duration) -> Option<(bool, u8, Vec<u8>)> {
        let (first, payload) = self.ws_frame_bits_within(wait).await?;
        Some((first & 0x80 != 0, first & 0x0f, payload))
    }

    /// Reads one server frame whole: its first byte (FIN, RSV1–3, opcode) and payload. Panics if
    /// none arrives.
    pub async fn ws_frame_bits(&mut self) -> (u8, Vec<u8>) {
        self.ws_frame_bits_within(IO_TIMEOUT).await.expect("a WebSocket frame")
    }

    async fn ws_frame_bits_within(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 2 {
                let first = self.buf[0];
                assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if header > 0 && self.buf.len() >= header + len {
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((first, payload));
                }
            }
            if !self.fill_until(deadline).await {
                return None;
            }
        }
    }

    /// Reads more bytes until `deadline`; false on timeout or EOF.
    async fn fill_until(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads the next response to a HEAD request (no body whatever Content-Length says).
    pub async fn head_response(&mut self) -> RawResponse {
        self.read_response(true).await
    }

    async fn read_response(&mut self, to_head: bool) -> RawResponse {
        let (status, headers, head, head_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            match parsed.parse(&self.buf).expect("malformed response head") {
                httparse::Status::Complete(len) => {
                    let status = parsed.code.expect("status");
                    let headers: Vec<(String, String)> = parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    let head = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                    break (status, headers, head, len);
                }
                httparse::Status::Partial => {
                    let n = self.fill().await;
                    assert!(
                        n > 0,
                        "connection closed before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
            }
        };
        self.buf.drain(..head_len);
        let mut response = RawResponse { status, headers, body: Vec::new(), head };
        if to_head || status < 200 || status == 204 || status == 304 {
            return response;
        }
        if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            response.body = self.read_chunked().await;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.trim().parse().expect("numeric Content-Length");
            while self.buf.len() < length {
                assert!(self.fill().await > 0, "connection closed mid-body");
            }
            response.body = self.buf.drain(..length).collect();
        } else {
            while self.fill().await > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await > 0, "connection closed mid-chunk");
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill().await > 0, "connection closed mid-chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Reads more bytes into the buffer; 0 at EOF (or reset). Panics after [`IO_TIMEOUT`].
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut chunk)).await {
            Err(_) => {
                panic!("no bytes from the server within {IO_TIMEOUT:?}; have {:?}", String::from_utf8_lossy(&self.buf))
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Ok(Err(_)) => 0,
        }
    }

    /// Waits up to `within` for the server to close the connection; true if it closed with no
    /// further bytes, false if it stayed open. Panics if unexpected bytes arrive.
    pub async fn closes_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => {
                assert!(self.buf.is_empty(), "unread bytes before close: {:?}", String::from_utf8_lossy(&self.buf));
                true
            }
            Ok(Ok(n)) => panic!("expected a close, got bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
        }
    }

    /// Asserts that the server closes the connection (within [`IO_TIMEOUT`]).
    pub async fn assert_closed(&mut self) {
        assert!(self.closes_within(IO_TIMEOUT).await, "server kept the connection open");
    }

    /// Asserts that the connection is still open after `wait` (no close, no bytes).
    pub async fn assert_open(&mut self, wait: Duration) {
        assert!(!self.closes_within(wait).await, "server closed the connection");
    }

    /// Reads everything until the server closes.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }
}

/// A masked client frame (RFC 6455 §5.2), with a fixed masking key (tests only).
pub fn ws_client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

/// A WebSocket upgrade request for `target` with the RFC 6455 example key.
pub fn ws_upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}
