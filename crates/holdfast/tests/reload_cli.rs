//! SIGHUP on a running `holdfast serve`: the configuration file is read again and the keys that
//! can change live (limits per client, timeouts, CORS) apply to new requests and connections,
//! while an open subscriber stays connected and keeps receiving; a file that does not parse or
//! validate changes nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use holdfast_testkit::process::ServeProcess;
use std::time::{Duration, Instant};

/// How long a test waits for something the server does at once (a reload, a delivery).
const WAIT: Duration = Duration::from_secs(5);

/// A running `holdfast serve --config FILE`, its stderr collected line by line; killed on drop.
struct Served {
    process: ServeProcess,
    addr: SocketAddr,
}

impl Served {
    fn start(config: &Path) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        command.args(["serve", "--config", config.to_str().unwrap()]).env("RUST_LOG", "info");
        let process = ServeProcess::spawn(command);
        let addr = process.addr;
        Served { process, addr }
    }

    /// Sends SIGHUP.
    fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.process.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits until `count` log lines contain `text`; returns the last of them.
    fn wait_for_log(&self, text: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let log = self.process.log();
                let matching: Vec<&String> = log.iter().filter(|l| l.contains(text)).collect();
                if matching.len() >= count {
                    return matching[count - 1].clone();
                }
                assert!(Instant::now() < deadline, "no log line {text:?} (#{count}) in:\n{}", log.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }

    /// The head of the answer to a CORS preflight from `origin`, on a connection of its own.
    fn preflight(&self, origin: &str) -> String {
        let mut stream = self.connect();
        let request = format!(
            "OPTIONS /pub/room HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// An SSE subscriber of `room`, its response head read.
    fn subscribe(&self) -> TcpStream {
        let mut stream = self.connect();
        stream.write_all(b"GET /sub/room?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let seen = read_until(&mut stream, "\r\n\r\n");
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        stream
    }
}

/// Reads until what was read contains `text` (or panics after [`WAIT`]); returns all of it.
fn read_until(stream: &mut TcpStream, text: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(text) {
        assert!(Instant::now() < deadline, "{text:?} not received; got {:?}", String::from_utf8_lossy(&seen));
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed before {text:?}; got {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed before {text:?}: {e}; got {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Publishes `body` to `room` over `stream` (kept alive); the response head.
fn publish(stream: &mut TcpStream, body: &str) -> String {
    let request = format!("POST /pub/room HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    read_until(stream, "\r\n\r\n")
}

/// A configuration file of its own for one test.
fn config_file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-reload-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("holdfast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sighup_applies_cors_and_the_connection_limit_while_a_subscriber_stays() {
    let file = config_file(
        "live",
        "cors_origins = [\"https://a.example\"]\nmax_connections_per_ip = 10\nhistory_messages = 1000\n",
    );
    let served = Served::start(&file);
    let mut subscriber = served.subscribe();
    assert!(served.preflight("https://a.example").starts_with("HTTP/1.1 204"));
    assert!(served.preflight("https://b.example").starts_with("HTTP/1.1 403"));

    // A new origin, a lower limit, and a key that needs a restart.
    std::fs::write(&file, "cors_origins = [\"https://b.example\"]\nmax_connections_per_ip = 2\nhistory_messages = 5\n")
        .unwrap();
    served.hangup();
    let changed = served.wait_for_log("configuration reloaded", 1);
    assert!(changed.contains("cors_origins=[\"https://b.example\"]"), "{changed}");
    assert!(changed.contains("max_connections_per_ip=2"), "{changed}");
    assert!(!changed.contains("history_messages"), "{changed}");
    let restart = served.wait_for_log("restart to apply", 1);
    assert!(restart.contains("history_messages") && restart.contains("WARN"), "{restart}");

    // The newly allowed origin gets its Access-Control-Allow-Origin; the one dropped does not.
    let head = served.preflight("https://b.example");
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(head.contains("Access-Control-Allow-Origin: https://b.example"), "{head}");
    assert!(served.preflight("https://a.example").starts_with("HTTP/1.1 403"));

    // The subscriber and one more connection are this client's two; a third is refused. (The
    // preflights' connections are closed by their client; the server may take a moment to see it.)
    let deadline = Instant::now() + WAIT;
    let mut publisher = loop {
        let mut stream = served.connect();
        let head = publish(&mut stream, "after-reload");
        if head.starts_with("HTTP/1.1 2") {
            break stream;
        }
        assert!(head.starts_with("HTTP/1.1 429") && Instant::now() < deadline, "{head}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut third = served.connect();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let refused = read_until(&mut third, "\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("too_many_connections") || refused.contains("Retry-After"), "{refused}");

    // The subscriber opened before the reload is still there and receives.
    read_until(&mut subscriber, "after-reload");
    assert!(publish(&mut publisher, "and-again").starts_with("HTTP/1.1 2"));
    read_until(&mut subscriber, "and-again");
}

#[test]
fn sighup_with_a_file_that_does_not_parse_or_validate_keeps_every_old_value() {
    let file = config_file("broken", "cors_origins = [\"https://a.example\"]\n");
    let served = Served::start(&file);
    let mut subscriber = served.subscribe();

    // Not TOML.
    std::fs::write(&file, "cors_origins = [\"https://b.example\"\nmax_connections_per_ip = \n").unwrap();
    served.hangup();
    let error = served.wait_for_log("configuration not reloaded", 1);
    assert!(error.contains("ERROR") && error.contains("holdfast.toml"), "{error}");

    // Each value parses but together they do not validate: nothing is half-applied, not even
    // the origin.
    std::fs::write(&file, "cors_origins = [\"https://b.example\"]\nheartbeat_min = \"600s\"\n").unwrap();
    served.hangup();
    let error = served.wait_for_log("configuration not reloaded", 2);
    assert!(error.contains("heartbeat_min"), "{error}");

    assert!(served.preflight("https://a.example").starts_with("HTTP/1.1 204"));
    assert!(served.preflight("https://b.example").starts_with("HTTP/1.1 403"));
    assert!(!served.process.log().iter().any(|l| l.contains("configuration reloaded")));
    let mut publisher = served.connect();
    assert!(publish(&mut publisher, "still-here").starts_with("HTTP/1.1 2"));
    read_until(&mut subscriber, "still-here");
}

/// The README's reload section names every live key, and no other key among its live ones.
#[test]
fn readme_lists_the_live_keys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("### Reload without a restart (SIGHUP)").nth(1).expect("the README's reload section");
    let live = section.split("**Every other key**").next().unwrap();
    for key in holdfast_server::config::KEYS {
        let named = live.contains(&format!("`{}`", key.name));
        assert_eq!(named, key.is_live(), "{}: live is {}, the README says {named}", key.name, key.is_live());
    }
}
