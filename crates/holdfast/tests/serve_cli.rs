//! The `holdfast serve` command as a user runs it: help, config sources and their precedence,
//! boolean switches and lists, readable errors with exit code 2, log formats, and a graceful exit
//! on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus};

use holdfast_testkit::process::ServeProcess;
use std::time::{Duration, Instant};

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

/// A running `holdfast serve` on a port it picked itself, its stderr collected; killed on drop.
struct Served {
    process: ServeProcess,
    addr: SocketAddr,
}

impl Served {
    /// Runs `<base> serve <extra>` and waits until it says where it listens.
    fn start(mut base: Command, extra: &[&str]) -> Served {
        base.arg("serve").args(extra);
        let process = ServeProcess::spawn(base);
        let addr = process.addr;
        Served { process, addr }
    }

    /// The head of the response to `GET /healthz`.
    fn healthz_head(&self) -> String {
        self.first_read(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    }

    /// Sends one raw request on a new connection; what the first read returns (a whole head for
    /// the small answers asked for here).
    fn first_read(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Sends SIGTERM and waits (at most 5 s) for the exit; its status and everything on stderr.
    fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill").args(["-TERM", &self.process.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.wait_exit("SIGTERM")
    }

    /// Waits (at most 5 s) for the exit that `cause` started; its status and everything on
    /// stderr.
    fn wait_exit(&mut self, cause: &str) -> (ExitStatus, String) {
        let started = Instant::now();
        let exit = self.process.wait_exit().unwrap_or_else(|| panic!("no exit after {cause}"));
        assert!(started.elapsed() < Duration::from_secs(5), "no exit within 5 s of {cause}");
        exit
    }
}

#[test]
fn help_lists_every_key_with_its_default() {
    let output = holdfast().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for key in holdfast_server::config::KEYS {
        let flag = format!("--{}", key.name.replace('_', "-"));
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(help.contains(&format!("[default: {}]", key.default)), "--help lacks the default of {}", key.name);
        assert!(
            help.contains(&format!("HOLDFAST_{}", key.name.to_ascii_uppercase())),
            "--help lacks the env of {}",
            key.name
        );
    }
}

#[test]
fn invalid_values_exit_2_with_one_line_naming_the_key() {
    /// (flags, environment, what the error line must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--keepalive-timeout", "soon"], vec![], "keepalive_timeout (from --keepalive-timeout)"),
        (vec![], vec![("HOLDFAST_MAX_BODY_BYTES", "lots")], "max_body_bytes (from HOLDFAST_MAX_BODY_BYTES)"),
        (vec!["--listen", "nowhere"], vec![], "listen (from --listen)"),
        (vec!["--cors-origins", "https://*.com"], vec![], "cors_origins (from --cors-origins)"),
        (vec![], vec![("HOLDFAST_CORS_ORIGINS", "https://a.*.example.com")], "whole leftmost label"),
        (vec!["--keepalive-requests", "0"], vec![], "keepalive_requests"),
        (vec!["--log-format", "xml"], vec![], "log_format (from --log-format)"),
        (vec![], vec![("HOLDFAST_LOG_FORMAT", "yaml")], "log_format (from HOLDFAST_LOG_FORMAT)"),
        (vec!["--ws-deflate=maybe"], vec![], "ws_deflate (from --ws-deflate)"),
    ];
    for (args, envs, want) in cases {
        let output = holdfast().arg("serve").args(&args).envs(envs).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn tls_files_that_cannot_be_used_exit_2_naming_them() {
    let missing = ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"];
    let cases: [(&[&str], &str); 2] =
        [(&missing, "tls_cert /nonexistent/cert.pem"), (&["--tls-cert", "/nonexistent/cert.pem"], "go together")];
    for (args, want) in cases {
        let output = holdfast().args(["serve", "--listen", "127.0.0.1:0"]).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("holdfast: ") && last.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn file_then_env_then_flag_take_precedence() {
    let dir = std::env::temp_dir().join(format!("holdfast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("holdfast.toml");
    std::fs::write(&file, "keepalive_timeout = 5\nkeepalive_requests = 50\n").unwrap();
    let file = file.to_str().unwrap();

    let mut only_file = holdfast();
    only_file.env("HOLDFAST_CONFIG", file);
    let served = Served::start(only_file, &[]);
    assert!(served.healthz_head().contains("Keep-Alive: timeout=5, max=49"));
    drop(served);

    let mut file_and_env = holdfast();
    file_and_env.env("HOLDFAST_CONFIG", file).env("HOLDFAST_KEEPALIVE_TIMEOUT", "6s");
    let served = Served::start(file_and_env, &[]);
    assert!(served.healthz_head().contains("Keep-Alive: timeout=6, max=49"));
    drop(served);

    let mut all_three = holdfast();
    all_three.env("HOLDFAST_KEEPALIVE_TIMEOUT", "6s");
    let served = Served::start(all_three, &["--config", file, "--keepalive-timeout", "2m"]);
    assert!(served.healthz_head().contains("Keep-Alive: timeout=120, max=49"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut command = holdfast();
    command.env("RUST_LOG", "info");
    let served = Served::start(command, &[]);
    // An idle keep-alive connection must not hold the exit back.
    let mut idle = TcpStream::connect(served.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let _ = idle.read(&mut buf).unwrap();

    let (exit, stderr) = served.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    // The idle connection was closed.
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
}

/// Whether a WebSocket handshake offering permessage-deflate is answered with it.
fn negotiates_deflate(served: &Served) -> bool {
    let head = served.first_read(
        b"GET /sub/room HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head.to_ascii_lowercase().contains("sec-websocket-extensions: permessage-deflate")
}

#[test]
fn boolean_flags_work_bare_or_with_a_value_and_from_env() {
    /// (flags, environment, whether deflate is on)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, bool);
    let cases: Vec<Case> = vec![
        (vec![], vec![], false),
        (vec!["--ws-deflate"], vec![], true),
        // Bare, then another flag: the next flag is not taken as the value.
        (vec!["--ws-deflate", "--keepalive-requests", "10"], vec![], true),
        (vec!["--ws-deflate=true"], vec![], true),
        (vec!["--ws-deflate", "false"], vec![], false),
        (vec!["--ws-deflate=false"], vec![("HOLDFAST_WS_DEFLATE", "true")], false),
        (vec![], vec![("HOLDFAST_WS_DEFLATE", "1")], true),
        (vec![], vec![("HOLDFAST_WS_DEFLATE", "0")], false),
    ];
    for (args, envs, want) in cases {
        let mut command = holdfast();
        command.envs(envs.clone());
        let served = Served::start(command, &args);
        assert_eq!(negotiates_deflate(&served), want, "{args:?} {envs:?}");
    }
}

#[test]
fn cors_origins_from_a_toml_list_allow_each_listed_origin() {
    let dir = std::env::temp_dir().join(format!("holdfast-cli-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("holdfast.toml");
    std::fs::write(&file, "cors_origins = [\"https://a.example\", \"https://b.example\"]\n").unwrap();
    let preflight = |served: &Served, origin: &str| {
        let request = format!(
            "OPTIONS /pub/room HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\r\n"
        );
        served.first_read(request.as_bytes())
    };
    let served = Served::start(holdfast(), &["--config", file.to_str().unwrap()]);
    for origin in ["https://a.example", "https://b.example"] {
        let head = preflight(&served, origin);
        assert!(head.starts_with("HTTP/1.1 204"), "{origin}: {head}");
        assert!(head.contains(&format!("Access-Control-Allow-Origin: {origin}")), "{head}");
    }
    assert!(preflight(&served, "https://c.example").starts_with("HTTP/1.1 403"));
    drop(served);

    // The same list as a comma-separated string in the environment.
    let mut command = holdfast();
    command.env("HOLDFAST_CORS_ORIGINS", "https://a.example, https://b.example");
    let served = Served::start(command, &[]);
    assert!(preflight(&served, "https://b.example").starts_with("HTTP/1.1 204"));
    assert!(preflight(&served, "https://c.example").starts_with("HTTP/1.1 403"));
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let mut command = holdfast();
    command.env("RUST_LOG", "info");
    let served = Served::start(command, &["--log-format", "json"]);
    let (exit, stderr) = served.terminate();
    assert!(exit.success(), "{exit:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["level"].is_string() && object["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"message\":\"SIGTERM: shutting down\"")), "{stderr}");
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let mut command = holdfast();
    // Set whatever the surrounding shell has: colour must follow the terminal test alone.
    command.env("RUST_LOG", "info").env_remove("NO_COLOR");
    let served = Served::start(command, &[]);
    let (exit, stderr) = served.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(stderr.contains("INFO") && stderr.contains("SIGTERM"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI escape in piped logs: {stderr:?}");
}

#[test]
fn readme_config_table_matches_the_keys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for key in holdfast_server::config::KEYS {
        let row = format!("| `{}` | `{}` | {} |", key.name, key.default, key.help);
        assert!(readme.contains(&row), "README lacks the row: {row}");
    }
}

/// A clone is complete: the README and docs/ point only at files in the repository.
#[test]
fn readme_and_docs_link_only_to_files_in_the_repository() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    for doc in ["README.md", "docs/protocol.md", "docs/architecture.md"] {
        let path = root.join(doc);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert!(!text.contains("../shared") && !text.contains("see `issues`"), "{doc} points outside the repository");
        // Markdown links `](target)`: each relative target must exist beside the document.
        for target in text.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(t, _)| t)) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            assert!(
                path.parent().unwrap().join(file).exists(),
                "{doc} links to {target}, which is not in the repository"
            );
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("(docs/protocol.md)") && readme.contains("(docs/architecture.md)"));
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 14th, stime the 15th.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_neither_crashes_nor_spins() {
    // 40 descriptors for the whole process, and a connection cap far above that: accept() fails
    // with EMFILE while clients are waiting in the backlog.
    let mut command = Command::new("bash");
    command.args(["-c", "ulimit -n 40 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_holdfast")]);
    let served = Served::start(command, &["--max-connections", "1000"]);
    // A keep-alive client already connected goes on being served while accepts fail.
    let mut kept = TcpStream::connect(served.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = |stream: &mut TcpStream| {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(ask(&mut kept).starts_with("HTTP/1.1 200"));
    let mut clients = Vec::new();
    for _ in 0..60 {
        if let Ok(stream) = TcpStream::connect_timeout(&served.addr, Duration::from_secs(1)) {
            clients.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(served.process.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(served.process.child.id()) - before;
    // A spinning accept loop burns ~100 ticks per second; backing off costs almost nothing.
    assert!(spent < 20, "server used {spent} ticks in 1 s while out of descriptors");
    let answer = ask(&mut kept);
    assert!(answer.starts_with("HTTP/1.1 200"), "an open connection while out of descriptors: {answer}");
    drop(clients);
    // Once descriptors are free again it serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(served.addr) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut buf = [0u8; 256];
            if matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200")) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /admin/drain` drains as SIGTERM does, and the process exits (0) when the drain is over:
/// the subscriber gets its `shutdown` notice, `/healthz` answers 503 meanwhile.
#[test]
fn post_admin_drain_drains_and_exits() {
    let served = Served::start(holdfast(), &["--drain-seconds", "1"]);
    let mut subscriber = TcpStream::connect(served.addr).unwrap();
    subscriber.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    subscriber.write_all(b"GET /sub/cli?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = [0u8; 1024];
    let n = subscriber.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let asked = served.first_read(b"POST /admin/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert!(asked.starts_with("HTTP/1.1 202"), "{asked}");
    assert!(served.healthz_head().starts_with("HTTP/1.1 503"));
    let mut rest = Vec::new();
    subscriber.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("holdfast.closed") && rest.contains("shutdown"), "{rest:?}");
    let mut served = served;
    let (exit, stderr) = served.wait_exit("the drain's end");
    assert!(exit.success(), "{exit:?}");
    assert!(stderr.contains("POST /admin/drain"), "{stderr}");
}
