//! `holdfast pub` and `holdfast sub` over TLS, the built binary against an in-process server with
//! `tls_cert`/`tls_key` from a throw-away CA: `--cacert` (and `HOLDFAST_CACERT`) on every
//! streaming transport and a poll, and a CA the CLI was not given refused at once with one line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use holdfast_testkit::fast_pacing as fast;
use holdfast_testkit::tls::TestCa;
use holdfast_testkit::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const WAIT: Duration = Duration::from_secs(15);

async fn tls_server(ca: &TestCa) -> TestServer {
    let (cert, key) = (ca.cert_path(), ca.key_path());
    TestServer::start(|config| {
        fast(config);
        config.set("tls_cert", cert.to_str().unwrap()).expect("tls_cert");
        config.set("tls_key", key.to_str().unwrap()).expect("tls_key");
    })
    .await
}

/// A `holdfast sub` in the background; its stdout lines, and stderr lines, as they come.
struct Sub {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
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
    fn start(args: &[&str], env: &[(&str, &str)]) -> Sub {
        let mut child = Command::new(BIN)
            .arg("sub")
            .args(args)
            .args(["--backoff-base", "0.1", "--backoff-cap", "1"])
            .envs(env.iter().copied())
            .env_remove("HOLDFAST_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdfast sub");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Sub { child, stdout, stderr }
    }

    /// Waits for a line from `rx` containing `text`; panics with what came instead.
    async fn wait(rx: &mut mpsc::Receiver<String>, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            while let Ok(line) = rx.try_recv() {
                if line.contains(text) {
                    return line;
                }
                seen.push(line);
            }
            assert!(std::time::Instant::now() < deadline, "no line with {text:?} within {WAIT:?}; saw {seen:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `holdfast pub ARGS` off the runtime; gives (success, stdout, stderr).
async fn publish(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BIN)
            .arg("pub")
            .args(&args)
            .env_remove("HOLDFAST_CACERT")
            .env_remove("HOLDFAST_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run holdfast pub");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sub_and_pub_with_cacert_talk_over_tls_on_every_transport() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let base = format!("https://localhost:{}", server.addr.port());
    let cacert = ca.ca_path().to_str().unwrap().to_string();
    for transport in ["ws", "sse", "stream", "longpoll", "poll"] {
        let channel = format!("cli-{transport}");
        // The file from the environment for one, the flag for the others.
        let (flag, env): (Vec<&str>, Vec<(&str, &str)>) = if transport == "sse" {
            (vec![], vec![("HOLDFAST_CACERT", cacert.as_str())])
        } else {
            (vec!["--cacert", cacert.as_str()], vec![])
        };
        let mut args = vec!["--server", base.as_str(), channel.as_str(), "--transport", transport];
        args.extend(flag);
        let mut sub = Sub::start(&args, &env);
        Sub::wait(&mut sub.stderr, "connected to https://").await;
        let (ok, id, err) = publish(vec![
            "--server".into(),
            base.clone(),
            "--cacert".into(),
            cacert.clone(),
            channel.clone(),
            format!("hello over {transport}"),
        ])
        .await;
        assert!(ok && !id.trim().is_empty(), "pub: {err}");
        assert_eq!(Sub::wait(&mut sub.stdout, "hello").await, format!("hello over {transport}"));
    }
}

#[tokio::test]
async fn without_the_ca_pub_and_sub_fail_at_once_saying_why() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let (ok, _, err) = publish(vec!["--server".into(), base.clone(), "room".into(), "x".into()]).await;
    assert!(!ok, "published without trusting the CA");
    assert!(err.starts_with("holdfast pub: TLS failed") && err.contains("--cacert"), "{err}");
    let sub = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["sub", "--server", &base, "room"])
            .env_remove("HOLDFAST_CACERT")
            .stdin(Stdio::null())
            .output()
            .expect("run holdfast sub")
    });
    let output = tokio::time::timeout(WAIT, sub).await.expect("holdfast sub kept retrying").unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("holdfast sub: TLS failed") && err.contains("invalid peer certificate"), "{err}");
    // A --cacert file that holds no certificate is refused before any connection.
    let (ok, _, err) = publish(vec![
        "--server".into(),
        "https://127.0.0.1:1".into(),
        "--cacert".into(),
        ca.key_path().to_str().unwrap().into(),
        "room".into(),
        "x".into(),
    ])
    .await;
    assert!(!ok && err.contains("--cacert") && err.contains("CERTIFICATE"), "{err}");
}

/// Runs `holdfast bench keepalive ARGS --json` off the runtime; gives (success, lines by phase).
async fn bench_keepalive(args: Vec<String>) -> (bool, Vec<serde_json::Value>, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BIN)
            .args(["bench", "keepalive", "--json"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run holdfast bench keepalive");
        let lines = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (output.status.success(), lines, String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
    .unwrap()
}

fn phase<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    lines.iter().find(|l| l["phase"] == name).unwrap_or_else(|| panic!("no {name} line in {lines:?}"))
}

#[tokio::test]
async fn bench_keepalive_over_tls_checks_the_certificate_and_reports_both_modes() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let host = format!("127.0.0.1:{}", server.addr.port());
    let cacert = ca.ca_path().to_str().unwrap().to_string();
    let common = |extra: &[&str]| {
        let mut args: Vec<String> = ["--server", &host, "--requests", "120", "--concurrency", "3", "--tls"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    for verify in [vec!["--cacert", cacert.as_str()], vec!["--insecure-skip-verify"]] {
        let (ok, lines, err) = bench_keepalive(common(&verify)).await;
        assert!(ok, "{verify:?}: {err} {lines:?}");
        for mode in ["keepalive", "close"] {
            let line = phase(&lines, mode);
            assert_eq!(
                (line["ok"].as_u64(), line["errors"].as_u64(), line["tls"].as_bool()),
                (Some(120), Some(0), Some(true)),
                "{line}"
            );
        }
        // Three connections (three handshakes) for the keep-alive run, and none lost.
        assert_eq!(phase(&lines, "keepalive")["reconnects"], 0);
        assert_eq!(phase(&lines, "summary")["tls"], true);
    }
    // The default roots (the web PKI) do not trust the test CA: every request fails, saying why.
    let (ok, lines, _) = bench_keepalive(common(&["--modes", "keepalive"])).await;
    let line = phase(&lines, "keepalive");
    assert!(!ok && line["errors"] == 120, "{line}");
    assert!(line["first_error"].as_str().unwrap().contains("UnknownIssuer"), "{line}");
}
