//! Access tokens as an operator meets them through the binary: a bad key file stops
//! `holdfast serve` with exit code 2 and one line, and a token sent in the query (as EventSource
//! and browser WebSockets must) never reaches the logs, even at debug level.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast_testkit::process::ServeProcess;

const SECRET: &str = "log-test-secret-0123456789abcdef";

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

fn mint(claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// Sends one request on a new connection and reads until the server closes or `wait` passes.
fn exchange(addr: SocketAddr, request: &str, wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_bad_key_file_exits_2_with_one_line() {
    let output = holdfast().args(["serve", "--jwt-public-key", "/nonexistent/holdfast.pem"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("jwt_public_key") && stderr.contains("cannot be read"), "{stderr}");
}

#[test]
fn a_token_in_the_query_never_reaches_the_logs() {
    let mut command = holdfast();
    command.args(["serve", "--heartbeat-interval", "1s"]).env("HOLDFAST_JWT_SECRET", SECRET).env("RUST_LOG", "debug");
    let mut server = ServeProcess::spawn(command);
    let addr = server.addr;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let short = mint(serde_json::json!({"channels": ["room"], "exp": now + 2}));
    let admin = mint(serde_json::json!({"admin": true, "exp": now + 600}));
    // A stream whose token expires while it runs (its close is logged with its reason), a refused
    // poll, and the admin list, each with a token in the query.
    let target = format!("GET /sub/room?transport=sse&token={short} HTTP/1.1\r\nHost: t\r\n\r\n");
    let stream = std::thread::spawn(move || exchange(addr, &target, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    let listed = exchange(
        addr,
        &format!("GET /admin/connections?token={admin} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        Duration::from_secs(2),
    );
    assert!(listed.starts_with("HTTP/1.1 200") && listed.contains("\"room\""), "{listed}");
    let refused = exchange(
        addr,
        "GET /sub/room?transport=poll&token=not.a.token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let streamed = stream.join().unwrap();
    assert!(streamed.contains("token_expired"), "{streamed}");

    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let (_, stderr) = server.wait_exit().expect("no exit after SIGTERM");
    assert!(stderr.contains("token_expired"), "the expiry close is logged: {stderr}");
    for needle in ["token=", "not.a.token", &short[short.len() - 20..], &admin[admin.len() - 20..], SECRET] {
        assert!(!stderr.contains(needle), "{needle:?} in the logs: {stderr}");
    }
}
