//! `holdfast serve` as a child process, listening on a port the kernel picked.
//!
//! Picking a free port first (bind port 0, read it, close) and passing it to the child races
//! with every other test doing the same: another server can take the port in between, and the
//! wait for "accepts" then connects to that other server. The child binds `127.0.0.1:0` itself
//! instead, and its address is read from its own `holdfast listening addr=…` log line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::IO_TIMEOUT;

/// A running `holdfast serve`: its address and every line it has written on stderr so far.
/// Killed (SIGKILL) on drop unless it has exited.
pub struct ServeProcess {
    /// The child (its stderr is read by a thread of this helper).
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Spawns `command` (a `holdfast serve …` without `--listen`) on `127.0.0.1:0` and waits
    /// until it says where it listens. A `RUST_LOG` quieter than `info` is extended so that line
    /// is logged (without one the server logs at `info`). Panics with what the server wrote if it exits or says nothing first.
    pub fn spawn(mut command: Command) -> ServeProcess {
        let filter = command
            .get_envs()
            .find(|(key, _)| *key == "RUST_LOG")
            .and_then(|(_, value)| value.map(|v| v.to_string_lossy().into_owned()));
        // A filter that already logs at info or finer is left alone (a `holdfast_server=info`
        // added to `debug` would hide the server's debug lines).
        let verbose = |filter: &str| ["info", "debug", "trace"].iter().any(|level| filter.contains(level));
        match filter {
            Some(filter) if !verbose(&filter) => {
                command.env("RUST_LOG", format!("{filter},holdfast_server=info"));
            }
            _ => {}
        }
        command.args(["--listen", "127.0.0.1:0"]);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn holdfast serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let listening = log.lock().unwrap_or_else(|e| e.into_inner()).iter().find_map(|line| listening_addr(line));
            if let Some(addr) = listening {
                return ServeProcess { child, addr, log };
            }
            let exited = child.try_wait().expect("try_wait");
            if exited.is_some() || Instant::now() > deadline {
                // Let the reader take the last lines.
                std::thread::sleep(std::time::Duration::from_millis(100));
                let log = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                panic!("holdfast serve did not start listening ({exited:?}); it wrote:\n{log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Everything it wrote on stderr so far, one line each.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the exit (at most [`IO_TIMEOUT`]), then for the reader to have every line: the
    /// status and stderr. `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // The pipe closes with the process; the reader ends soon after.
        let reader_done = Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&self.log) > 1 && Instant::now() < reader_done {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Some((status, self.log().join("\n")))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in the `holdfast listening` log line: `addr=127.0.0.1:PORT` in the text format,
/// `"addr":"127.0.0.1:PORT"` in JSON.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("holdfast listening") {
        return None;
    }
    let (at, marker) = match line.find("addr=") {
        Some(at) => (at, "addr="),
        None => (line.find("\"addr\":\"")?, "\"addr\":\""),
    };
    let rest = &line[at + marker.len()..];
    rest.split(|c: char| c.is_whitespace() || c == '"').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_listening_line() {
        let line = "2026-12-02T10:00:00.000000Z  INFO holdfast_server: holdfast listening addr=127.0.0.1:41234 scheme=\"http\" max_connections=10000";
        assert_eq!(listening_addr(line), Some("127.0.0.1:41234".parse().unwrap()));
        let json = r#"{"timestamp":"…","level":"INFO","message":"holdfast listening","addr":"127.0.0.1:41235","scheme":"http"}"#;
        assert_eq!(listening_addr(json), Some("127.0.0.1:41235".parse().unwrap()));
        assert_eq!(listening_addr("INFO holdfast_server: draining"), None);
    }
}
