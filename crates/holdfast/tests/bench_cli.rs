//! `holdfast bench keepalive`, `transports` and `--procs` as the bench scripts run them: against a
//! spawned `holdfast serve` (and nginx when it is installed), small counts; the table names both
//! modes and the ratio, `--json` lines parse, and counts of `--procs` children add up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use holdfast_testkit::process::ServeProcess;
use serde_json::Value;

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until something accepts on `addr` and answers `GET /healthz` with a 200.
fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "nothing healthy on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server, killed on drop: `holdfast serve` on a port it picked itself, or another.
struct Server {
    process: Running,
    addr: SocketAddr,
}

enum Running {
    /// Killed by its own drop.
    Holdfast(ServeProcess),
    Other(Child),
}

impl Server {
    fn holdfast() -> Server {
        let mut command = holdfast();
        command.arg("serve").env("RUST_LOG", "warn");
        let process = ServeProcess::spawn(command);
        let addr = process.addr;
        wait_healthy(addr);
        Server { process: Running::Holdfast(process), addr }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.process {
            Running::Holdfast(process) => &mut process.child,
            Running::Other(child) => child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Running::Other(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `holdfast bench ARGS` (stdin closed, stderr captured: no progress bar), bounded in time.
fn bench(args: &[&str]) -> Output {
    let mut child = holdfast()
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holdfast bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("holdfast bench {args:?} took over 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The JSON lines of a `--json` run (every line must parse).
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "failed: {}\n{}", stdout(output), String::from_utf8_lossy(&output.stderr));
    stdout(output).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

fn by_phase<'a>(lines: &'a [Value], phase: &str) -> &'a Value {
    lines.iter().find(|l| l["phase"] == phase).unwrap_or_else(|| panic!("no {phase} line in {lines:?}"))
}

#[test]
fn keepalive_prints_both_modes_and_the_ratio() {
    let server = Server::holdfast();
    let output = bench(&["keepalive", "--server", &server.host(), "--requests", "300", "--concurrency", "4"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("keepalive ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("close ")), "{text}");
    assert!(text.contains("keep-alive/close: "), "{text}");
    // Hidden when stderr is not a terminal: no progress bar in the captured stderr.
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));

    let lines = json_lines(&bench(&[
        "keepalive",
        "--json",
        "--server",
        &server.host(),
        "--requests",
        "200",
        "--concurrency",
        "3",
    ]));
    for mode in ["keepalive", "close"] {
        let line = by_phase(&lines, mode);
        assert_eq!(line["ok"], 200, "{line}");
        assert_eq!(line["errors"], 0, "{line}");
        assert!(line["req_per_s"].as_f64().unwrap() > 0.0);
        assert!(line["p50_ms"].as_f64().unwrap() <= line["p99_ms"].as_f64().unwrap());
        assert!(line["p99_ms"].as_f64().unwrap() <= line["max_ms"].as_f64().unwrap());
    }
    // A keep-alive run keeps its 3 connections; close opens one per request.
    assert_eq!(by_phase(&lines, "keepalive")["reconnects"], 0);
    assert!(by_phase(&lines, "summary")["ratio_keepalive_close"].as_f64().unwrap() > 0.0);
}

#[test]
fn transports_give_one_row_per_transport() {
    let server = Server::holdfast();
    let all = ["sse", "ws", "ws-raw", "stream", "iframe", "longpoll", "poll"];
    let output = bench(&[
        "transports",
        "--json",
        "--server",
        &server.host(),
        "--subscribers",
        "3",
        "--messages",
        "4",
        "--settle-ms",
        "200",
        "--poll-interval-ms",
        "20",
    ]);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), all.len(), "{lines:?}");
    for (line, transport) in lines.iter().zip(all) {
        assert_eq!(line["transport"], transport);
        assert_eq!(line["deliveries"], 12, "{line}");
        assert_eq!(line["lost"], 0, "{line}");
        assert!(line["bytes_per_delivery"].as_u64().unwrap() > 4, "{line}");
    }
    // The server was found by its port: its CPU is a figure, not null.
    assert!(lines[0]["server_cpu_s"].is_number(), "{}", lines[0]);

    let output = bench(&[
        "transports",
        "--server",
        &server.host(),
        "--subscribers",
        "2",
        "--messages",
        "2",
        "--transports",
        "sse,ws",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("transport ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sse ")) && text.lines().any(|l| l.starts_with("ws ")), "{text}");
}

#[test]
fn procs_children_counts_add_up() {
    let server = Server::holdfast();
    let host = server.host();
    let lines = json_lines(&bench(&[
        "keepalive",
        "--json",
        "--server",
        &host,
        "--requests",
        "101",
        "--concurrency",
        "3",
        "--procs",
        "2",
    ]));
    for mode in ["keepalive", "close"] {
        let line = by_phase(&lines, mode);
        assert_eq!(
            (line["procs"].as_u64(), line["requests"].as_u64(), line["ok"].as_u64()),
            (Some(2), Some(101), Some(101))
        );
        // Two children of 2 and 1 connections (a share is at least 1).
        assert_eq!(line["concurrency"], 3, "{line}");
        assert!(line.get("hist").is_none(), "the merged line carries no raw histogram");
    }

    let lines = json_lines(&bench(&[
        "fanout",
        "--json",
        "--server",
        &host,
        "--subscribers",
        "5",
        "--messages",
        "4",
        "--phases",
        "2",
        "--settle-ms",
        "200",
        "--procs",
        "2",
    ]));
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!((line["subscribers"].as_u64(), line["deliveries"].as_u64()), (Some(5), Some(20)), "{line}");
        assert_eq!(line["lost"], 0);
        assert!(line["p50_ms"].is_number());
    }

    let lines =
        json_lines(&bench(&["idle", "--json", "--server", &host, "--connections", "7", "--hold", "1", "--procs", "3"]));
    assert_eq!(by_phase(&lines, "open")["open"], 7);
    assert_eq!(by_phase(&lines, "held")["open"], 7);
    assert_eq!(by_phase(&lines, "held")["closed_by_server"], 0);
}

/// nginx, if installed, on a free port with `return 200 "ok\n"` at /healthz.
struct Nginx {
    server: Server,
    dir: PathBuf,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let addr = free_addr();
        let dir = std::env::temp_dir().join(format!("holdfast-bench-nginx-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen {addr}; location /healthz {{ return 200 \"ok\\n\"; }} }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { process: Running::Other(child), addr };
        wait_healthy(addr);
        Some(Nginx { server, dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not the SIGKILL of `Server`'s drop: the master then stops its worker, which a
        // killed master would leave running.
        // SAFETY: kill(2) on our own child's pid; no memory is passed.
        unsafe { libc::kill(self.server.child().id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.server.child().try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn keepalive_works_against_nginx_when_installed() {
    let Some(nginx) = Nginx::start() else {
        eprintln!("nginx is not installed: skipped (bench/keepalive.sh runs it)");
        return;
    };
    let lines = json_lines(&bench(&[
        "keepalive",
        "--json",
        "--server",
        &nginx.server.host(),
        "--requests",
        "200",
        "--concurrency",
        "4",
    ]));
    for mode in ["keepalive", "close"] {
        assert_eq!(by_phase(&lines, mode)["ok"], 200, "{lines:?}");
    }
    assert_eq!(by_phase(&lines, "keepalive")["reconnects"], 0);
}
