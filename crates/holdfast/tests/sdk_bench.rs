//! `holdfast bench sdk-memory`, `bench publisher` and `bench failover` with tiny settings against
//! real servers (an in-process one; the failover bench starts its own from the built binary):
//! each exits 0 and prints, with `--json`, the JSON lines `bench/sdk.sh` reads, and without it a
//! summary table.

use std::process::Command;

use holdfast_testkit::TestServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// Runs `holdfast bench ARGS` off the runtime; gives its stdout (asserting success).
async fn bench_text(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || Command::new(BIN).arg("bench").args(&args).output())
        .await
        .unwrap()
        .expect("run holdfast bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Runs `holdfast bench ARGS --json`; gives its stdout lines as JSON (asserting success).
async fn bench(args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = bench_text(&args).await;
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn phase<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["phase"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_memory_reports_bytes_per_subscription_on_both_transports_and_pools() {
    let server = TestServer::start(|_| {}).await;
    let url = server.url("");
    for (transport, pool) in [("sse", false), ("ws", true)] {
        let mut args = vec!["sdk-memory", "--server", &url, "--subscribers", "20", "--transport", transport];
        args.extend(["--concurrency", "10", "--settle", "0.2"]);
        if pool {
            args.push("--shared-pool");
        }
        let lines = bench(&args).await;
        let held = phase(&lines, "held");
        assert_eq!(held.len(), 1, "{lines:?}");
        assert_eq!(held[0]["connected"], 20, "{lines:?}");
        assert_eq!(held[0]["transport"], transport);
        assert_eq!(held[0]["pool"], if pool { "shared" } else { "per_subscriber" });
        assert!(held[0]["bytes_per_subscription"].as_f64().is_some(), "{lines:?}");
        assert!(held[0]["fds"].as_u64().unwrap() >= 20, "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_bench_compares_the_pool_with_a_connection_per_publish() {
    let server = TestServer::start(|_| {}).await;
    let url = server.url("");
    let lines = bench(&["publisher", "--server", &url, "--concurrency", "5", "--seconds", "0.3"]).await;
    let modes: Vec<&str> = phase(&lines, "publisher").iter().map(|l| l["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["pool", "new"], "{lines:?}");
    for line in phase(&lines, "publisher") {
        assert!(line["ok"].as_u64().unwrap() > 0 && line["failed"] == 0, "{line}");
    }
    let ratio = phase(&lines, "ratio");
    assert!(ratio[0]["ratio"].as_f64().unwrap() > 0.0, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_json_the_publisher_bench_prints_a_summary_table() {
    let server = TestServer::start(|_| {}).await;
    let url = server.url("");
    let stdout = bench_text(&["publisher", "--server", &url, "--concurrency", "2", "--seconds", "0.2"]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.iter().all(|l| serde_json::from_str::<Value>(l).is_err()), "{stdout}");
    let header = lines.iter().position(|l| l.starts_with("mode ")).unwrap_or_else(|| panic!("no header: {stdout}"));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(columns, ["mode", "concurrency", "ok", "failed", "seconds", "publishes/s"], "{stdout}");
    assert!(lines[header + 1].starts_with("pool ") && lines[header + 2].starts_with("new "), "{stdout}");
    assert!(stdout.contains("pool/new: "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_bench_times_kills_and_silent_stops() {
    let common = ["--kills", "2", "--heartbeat", "0.3", "--k", "2", "--backoff-base", "0.1"];
    for mode in ["kill", "stop"] {
        let mut args = vec!["failover", "--mode", mode];
        args.extend(common);
        let lines = bench(&args).await;
        assert_eq!(phase(&lines, "round").len(), 2, "{lines:?}");
        let summary = phase(&lines, "failover");
        assert_eq!(summary[0]["mode"], mode);
        assert_eq!(summary[0]["bound_ms"], 700);
        let median = summary[0]["median_ms"].as_f64().unwrap();
        assert!(median > 0.0 && median < 10_000.0, "{lines:?}");
        if mode == "stop" {
            // Only the heartbeat watch can notice a silent server: not before one interval.
            assert!(median >= 300.0, "{lines:?}");
        }
    }
}
