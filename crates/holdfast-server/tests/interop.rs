//! Clients nobody here wrote: curl and Python `requests` must reuse one connection.
//! (`scripts/setup.sh` installs them; CI runs it first.)

use std::process::Command;

use holdfast_testkit::TestServer;

async fn run(mut command: Command) -> (bool, String, String) {
    let program = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); run scripts/setup.sh"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_reuses_one_connection_for_two_urls() {
    let server = TestServer::start(|_| {}).await;
    let mut curl = Command::new("curl");
    curl.args(["-sv", "--max-time", "10", &server.url("/healthz"), &server.url("/admin/stats")]);
    let (ok, stdout, stderr) = run(curl).await;
    assert!(ok, "curl failed: {stderr}");
    assert!(stdout.starts_with("ok\n"), "{stdout}");
    assert!(stderr.contains("Re-using existing connection"), "curl did not reuse the connection:\n{stderr}");
    assert!(stderr.contains("< Keep-Alive: timeout=75, max=999"), "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout[3..]).unwrap();
    assert_eq!(stats["connections_accepted"], 1, "{stats}");
    assert_eq!(stats["requests_reused"], 1, "{stats}");
}

#[tokio::test]
async fn curl_http10_closes_and_post_with_expect_continue_works() {
    let server = TestServer::start(|c| c.enable_conformance_echo = true).await;
    let mut curl = Command::new("curl");
    curl.args(["-sv", "--http1.0", "--max-time", "10", &server.url("/healthz")]);
    let (ok, _, stderr) = run(curl).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("< Connection: close"), "{stderr}");

    // curl sends Expect: 100-continue for bodies over 1 MiB… or when asked; ask.
    let mut curl = Command::new("curl");
    curl.args([
        "-sv",
        "--max-time",
        "10",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "hello from curl",
        &server.url("/_conformance/echo"),
    ]);
    let (ok, stdout, stderr) = run(curl).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("< HTTP/1.1 100 Continue"), "{stderr}");
    assert_eq!(stdout, "hello from curl");
}

#[tokio::test]
async fn python_requests_session_reuses_one_connection_for_100_requests() {
    let server = TestServer::start(|_| {}).await;
    let script = r#"
import sys, requests
base = sys.argv[1]
with requests.Session() as s:
    for i in range(100):
        r = s.get(base + "/healthz", timeout=10)
        assert r.status_code == 200 and r.text == "ok\n", (r.status_code, r.text)
    stats = s.get(base + "/admin/stats", timeout=10).json()
print(stats["connections_accepted"], stats["requests_reused"])
"#;
    let mut python = Command::new("python3");
    python.args(["-c", script, &server.url("")]);
    let (ok, stdout, stderr) = run(python).await;
    assert!(ok, "python failed: {stderr}");
    // 101 requests on one connection: 100 reused (the stats request is counted after its answer).
    assert_eq!(stdout.trim(), "1 100", "connections_accepted, requests_reused");
}

#[tokio::test]
async fn prometheus_client_parses_metrics() {
    let server = TestServer::start(|_| {}).await;
    server.publish("m", None, b"x").await;
    let script = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10).read().decode()
families = {f.name: f for f in text_string_to_metric_families(text)}
published = families["holdfast_messages_published"].samples[0].value
closed = [s.labels["reason"] for s in families["holdfast_connections_closed"].samples]
print(int(published), "slow_consumer" in closed, families["holdfast_subscribers"].type)
"#;
    let mut python = Command::new("python3");
    python.args(["-c", script, &server.url("")]);
    let (ok, stdout, stderr) = run(python).await;
    assert!(ok, "python failed: {stderr}");
    assert_eq!(stdout.trim(), "1 True gauge");
}
