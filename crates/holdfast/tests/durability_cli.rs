//! The disk history store (`history_store = "disk"`) through the real binary: `kill -9` in the
//! middle of concurrent publishes, then a restart on the same `data_dir`. Every publish that got
//! its 200 is in the history, each publisher's in its order, and cursors handed out before the
//! kill resume after it with no gap on SSE, long poll and WebSocket. A damaged store stops
//! `serve` with exit code 2, and `holdfast store repair` is the way out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use holdfast_testkit::process::ServeProcess;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

/// A `holdfast serve` with the disk store in `dir`, killed on drop.
struct Served {
    process: ServeProcess,
    addr: SocketAddr,
}

impl Served {
    fn start(dir: &Path, durability: &str) -> Served {
        let mut command = holdfast();
        command
            .args(["serve", "--history-store", "disk", "--durability", durability])
            .args(["--history-messages", "5000", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn");
        let process = ServeProcess::spawn(command);
        let addr = process.addr;
        Served { process, addr }
    }

    fn kill9(&mut self) {
        let _ = self.process.child.kill(); // SIGKILL
        let _ = self.process.child.wait();
    }
}

/// Runs `holdfast serve` on the disk store in `data`, which must refuse to start with exit code
/// 2: what it wrote on stderr.
fn serve_refused(data: &Path) -> String {
    let out = holdfast()
        .args(["serve", "--listen", "127.0.0.1:0", "--history-store", "disk", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// One request on a new connection; the status and body (`None` if the connection failed).
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("{head}\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn publish(addr: SocketAddr, channel: &str, text: &str) -> Option<String> {
    let (status, body) = request(addr, &format!("POST /pub/{channel} HTTP/1.1"), text.as_bytes())?;
    (status == 200).then(|| json(&body)["id"].as_str().unwrap().to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The channel's whole history, as a short poll gives it: payloads in order.
fn history(addr: SocketAddr, channel: &str) -> Vec<String> {
    let (status, body) =
        request(addr, &format!("GET /sub/{channel}?transport=poll&history=5000 HTTP/1.1"), b"").unwrap();
    assert_eq!(status, 200, "{body}");
    json(&body)["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap().to_string()).collect()
}

/// Publishes from 10 threads at once, kills the server with SIGKILL once `kill_after` have been
/// answered, restarts it, and checks that every answered publish is in the history, in order.
/// The cursor after `before-5` (published before) then resumes on every transport.
fn kill9_then_restart(durability: &str, per_publisher: usize, kill_after: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(dir.path(), durability);
    let addr = server.addr;
    let mut cursor = String::new();
    for i in 1..=10 {
        let id = publish(addr, "room", &format!("before-{i}")).expect("publish before the kill");
        if i == 5 {
            cursor = id;
        }
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let publishers: Vec<_> = (0..10)
        .map(|p| {
            let (answered, acked) = (answered.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per_publisher {
                    let text = format!("p{p}-{i:04}");
                    match publish(addr, "room", &text) {
                        Some(_) => {
                            mine.push(text);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        None => break, // the server is gone
                    }
                }
                acked.lock().unwrap().push(mine);
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < kill_after {
        assert!(Instant::now() < deadline, "publishes too slow: {} answered", answered.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total >= kill_after && total < 10 * per_publisher, "killed in the middle: {total} answered");

    let server = Served::start(dir.path(), durability);
    let kept = history(server.addr, "room");
    // What the restart recovered, as /admin/stats reports it.
    let (_, stats) = request(server.addr, "GET /admin/stats HTTP/1.1", b"").unwrap();
    let store = &json(&stats)["store"];
    assert_eq!(store["durability"], durability, "{stats}");
    assert_eq!(store["recovered"]["messages"], kept.len(), "{stats}");
    assert_eq!(store["recovered"]["closed_cleanly"], false, "killed: {stats}");
    assert_eq!(store["recovered"]["new_epochs"], false, "same machine: {stats}");
    assert_eq!(kept[..10], (1..=10).map(|i| format!("before-{i}")).collect::<Vec<_>>()[..]);
    for mine in &acked {
        // This publisher's answered messages, in its order, among what was kept.
        let prefix = match mine.first() {
            Some(first) => first[..first.find('-').unwrap() + 1].to_string(),
            None => continue,
        };
        let its: Vec<&String> = kept.iter().filter(|m| m.starts_with(&prefix)).collect();
        assert!(its.len() >= mine.len(), "{prefix}: {} answered, {} kept", mine.len(), its.len());
        assert_eq!(
            its[..mine.len()].iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            mine.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }

    // The cursor from before the kill resumes right after before-5, with no gap, on each transport.
    let (status, body) =
        request(server.addr, &format!("GET /sub/room?transport=longpoll&cursor={cursor} HTTP/1.1"), b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    assert!(answer.get("gap").is_none(), "long poll: {body}");
    assert_eq!(answer["messages"][0]["data"], "before-6", "long poll: {body}");

    let first_sse = first_sse_event(server.addr, &cursor);
    assert!(!first_sse.contains("holdfast.gap"), "SSE: {first_sse}");
    assert!(first_sse.contains("data: before-6"), "SSE: {first_sse}");

    let first_ws = first_ws_text(server.addr, &cursor);
    assert!(!first_ws.contains("holdfast.gap"), "WebSocket: {first_ws}");
    assert_eq!(json(&first_ws)["data"], "before-6", "WebSocket: {first_ws}");

    // Numbering goes on in the same epoch: a new publish comes right after what was kept.
    publish(server.addr, "room", "after").unwrap();
    let now = history(server.addr, "room");
    assert_eq!((now.len(), now.last().map(String::as_str)), (kept.len() + 1, Some("after")));
}

/// The first SSE event (after `retry:`) of a subscription resuming after `cursor`.
fn first_sse_event(addr: SocketAddr, cursor: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head =
        format!("GET /sub/room HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {cursor}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut lines = BufReader::new(stream);
    let mut event = String::new();
    let mut line = String::new();
    let mut in_body = false;
    loop {
        line.clear();
        assert!(lines.read_line(&mut line).unwrap() > 0, "SSE stream ended: {event}");
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if !in_body {
            in_body = trimmed.is_empty();
            continue;
        }
        // Chunk-size lines of the chunked body are hex; SSE lines have a colon.
        if !trimmed.contains(':') {
            if trimmed.is_empty() && event.contains("data:") {
                return event;
            }
            continue;
        }
        if trimmed.starts_with("retry:") || trimmed.starts_with(':') {
            continue;
        }
        event.push_str(trimmed);
        event.push('\n');
    }
}

/// The first text message of a WebSocket subscription resuming after `cursor`.
fn first_ws_text(addr: SocketAddr, cursor: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "GET /sub/room?cursor={cursor} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    loop {
        let mut frame = [0u8; 2];
        stream.read_exact(&mut frame).unwrap();
        let len = match frame[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                stream.read_exact(&mut ext).unwrap();
                u16::from_be_bytes(ext) as usize
            }
            127 => {
                let mut ext = [0u8; 8];
                stream.read_exact(&mut ext).unwrap();
                u64::from_be_bytes(ext) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        if frame[0] & 0x0f == 1 {
            return String::from_utf8(payload).unwrap();
        }
    }
}

#[test]
fn durability_always_kill9_keeps_every_answered_publish_and_cursors_resume_without_gap() {
    kill9_then_restart("always", 100, 500);
}

#[test]
fn durability_none_kill9_keeps_every_answered_publish_too() {
    // Written to the OS before the answer: a process crash loses nothing (a power cut could).
    kill9_then_restart("none", 60, 300);
}

#[test]
fn a_damaged_store_stops_serve_with_exit_2_and_repair_is_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = Served::start(&data, "always");
        publish(server.addr, "room", "kept").unwrap();
        let status = Command::new("kill").args(["-TERM", &server.process.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let mut server = server;
        let exit = server.process.child.wait().unwrap();
        assert!(exit.success(), "{exit}");
    }
    // Flip bytes in the middle of every table file (checksummed blocks).
    let mut damaged = 0;
    for keyspace in std::fs::read_dir(data.join("keyspaces")).unwrap().flatten() {
        let Ok(tables) = std::fs::read_dir(keyspace.path().join("tables")) else { continue };
        for table in tables.flatten() {
            let mut bytes = std::fs::read(table.path()).unwrap();
            for b in bytes.iter_mut().skip(8).take(64) {
                *b ^= 0x5a;
            }
            std::fs::write(table.path(), bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no table file to damage under {}", data.display());

    let stderr = serve_refused(&data);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&data.display().to_string()) && last.contains("holdfast store repair"), "{stderr}");

    let check = holdfast().args(["store", "check"]).arg(&data).output().unwrap();
    assert_ne!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let repair = holdfast().args(["store", "repair"]).arg(&data).output().unwrap();
    let said = String::from_utf8_lossy(&repair.stdout);
    assert!(repair.status.success(), "{said}{}", String::from_utf8_lossy(&repair.stderr));
    assert!(said.contains("moved aside") || said.contains("kept"), "{said}");
    let check = holdfast().args(["store", "check"]).arg(&data).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    // And the server starts again.
    let server = Served::start(&data, "always");
    assert!(publish(server.addr, "room", "again").is_some());
}

/// A message that cannot be read, in a store whose files are whole: the server serves at once
/// (it reads messages back in the background), finds it there, refuses publishes and stops with
/// the same error and exit code 2 as for damage found at start.
#[test]
fn damage_found_while_reading_messages_back_stops_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut server = Served::start(&data, "always");
        publish(server.addr, "room", "kept").unwrap();
        let status = Command::new("kill").args(["-TERM", &server.process.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        assert!(server.process.child.wait().unwrap().success());
    }
    {
        let db = fjall::Database::builder(&data).open().unwrap();
        let messages = db.keyspace("messages", fjall::KeyspaceCreateOptions::default).unwrap();
        let mut key = b"room\0".to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        messages.insert(key, [9u8, 1, 2]).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let stderr = serve_refused(&data);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let listening = stderr.find("holdfast listening").unwrap_or_else(|| panic!("it served first: {stderr}"));
    let found = stderr.find("the history store is damaged").unwrap_or_else(|| panic!("{stderr}"));
    assert!(listening < found, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&data.display().to_string()) && last.contains("messages key room"), "{stderr}");
    assert!(last.contains("holdfast store repair"), "{stderr}");
}

/// The journal file cut in the middle of its data (a damaged disk, a bad copy): the server
/// starts with everything before the damage, says the newest writes may be lost, and a cursor
/// from past the damage resumes behind a gap notice instead of silently.
#[test]
fn a_journal_cut_in_the_middle_keeps_what_was_before_and_tells_cursors_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut published = Vec::new();
    let mut last_id = String::new();
    {
        let mut server = Served::start(dir.path(), "always");
        for i in 1..=40 {
            last_id = publish(server.addr, "room", &format!("m{i:02}")).unwrap();
            published.push(format!("m{i:02}"));
        }
        server.kill9();
    }
    let journal = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .expect("a journal file");
    let bytes = std::fs::read(&journal).unwrap();
    let data_end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    std::fs::write(&journal, &bytes[..data_end / 2]).unwrap();

    let server = Served::start(dir.path(), "always");
    let kept = history(server.addr, "room");
    assert!(kept.len() < published.len(), "half the journal is gone: {} kept", kept.len());
    assert_eq!(kept[..], published[..kept.len()], "what is kept is what came before the damage");
    let (_, stats) = request(server.addr, "GET /admin/stats HTTP/1.1", b"").unwrap();
    assert_eq!(json(&stats)["store"]["recovered"]["new_epochs"], true, "{stats}");
    // A cursor past the damage: told, with the first position it can still have.
    let (status, body) =
        request(server.addr, &format!("GET /sub/room?transport=poll&cursor={last_id} HTTP/1.1"), b"").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["gap"].is_array(), "a gap notice: {body}");
    // Publishing goes on; the history is whole from the damage on.
    publish(server.addr, "room", "after").unwrap();
    assert_eq!(history(server.addr, "room").last().map(String::as_str), Some("after"));
}

/// One server per data_dir: a second one, and `store check`/`repair` while it runs, are refused
/// with exit code 2 and leave the store alone.
#[test]
fn a_store_in_use_is_refused_to_a_second_server_and_to_check_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Served::start(&data, "batch");
    publish(server.addr, "room", "kept").unwrap();
    let stderr = serve_refused(&data);
    assert!(stderr.lines().last().unwrap_or_default().contains("in use"), "{stderr}");
    for verb in ["check", "repair"] {
        let out = holdfast().args(["store", verb]).arg(&data).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{verb}: {said}");
        assert!(said.contains("in use"), "{verb}: {said}");
    }
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(beside, ["data"], "nothing moved aside");
    assert_eq!(history(server.addr, "room"), ["kept"]);
}
