//! Access tokens in the client SDK and the CLI, against a real server with `jwt_secret`: a
//! subscriber with a token source whose tokens live 2–3 s gets every message across several
//! expiries, once and in order, over SSE, NDJSON, WebSocket and long poll (the server ends the link with
//! `token_expired`; the subscriber asks for a new token and resumes from its cursor); a refused
//! static token ends the stream with `Err`; a publisher's source is asked again after a 401;
//! `holdfast sub --token` and `holdfast pub --token` work, and fail readably without one.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use holdfast_client::{Event, Publisher, State, Subscriber, Transport};
use holdfast_testkit::TestServer;
use serde_json::json;

const SECRET: &str = "sdk-token-test-secret-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token for every channel, expiring `lifetime` seconds from now (to the second).
fn mint(lifetime: u64) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let claims = json!({"sub": "sdk", "channels": ["*"], "publish": ["*"], "exp": now() + lifetime});
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

async fn auth_server() -> TestServer {
    TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        holdfast_testkit::fast_pacing(c);
    })
    .await
}

fn publisher(server: &TestServer) -> Publisher {
    Publisher::builder().server(server.url("")).token(mint(600)).build().unwrap()
}

/// Publishes `n` messages 150 ms apart (about `n × 0.15` s) while a subscriber whose tokens live
/// 2–3 s reads them: all must arrive once, in order, and the source must have been asked again.
async fn survives_expiries_over(transport: Transport) {
    let server = auth_server().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let mut sub = Subscriber::builder()
        .server(server.url(""))
        .channel("ticks")
        .transport(transport)
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
        .token_source(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(mint(3)) }
        })
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Event::State(State::Connected { .. }) = next(&mut sub, deadline).await.expect("no error") {
            break;
        }
    }
    const N: usize = 50;
    let publisher = publisher(&server);
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            publisher.publish("ticks", format!("m{i}"), None).await.expect("publish");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let mut got = Vec::new();
    let mut expiries = 0;
    while got.len() < N {
        match next(&mut sub, deadline).await {
            Ok(Event::Message(m)) => got.push(m.text().unwrap().to_string()),
            Ok(Event::State(State::Reconnecting { cause, after, .. }))
                if cause.contains("token") || cause.contains("401") =>
            {
                // After a healthy link the subscriber comes back at once, without backoff.
                assert_eq!(after, Duration::ZERO, "{transport:?}: {cause}");
                expiries += 1
            }
            Ok(_) => {}
            Err(e) => panic!("{transport:?}: fatal error {e}"),
        }
    }
    publishing.await.unwrap();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "{transport:?}: every message once, in order");
    let asked = asked.load(Ordering::SeqCst);
    assert!(asked >= 3, "{transport:?}: the source was asked {asked} times");
    assert!(expiries >= 2, "{transport:?}: {expiries} token expiries seen");
}

#[tokio::test]
async fn a_token_source_survives_expiries_over_sse() {
    survives_expiries_over(Transport::Sse).await;
}

#[tokio::test]
async fn a_token_source_survives_expiries_over_websocket() {
    survives_expiries_over(Transport::Ws).await;
}

#[tokio::test]
async fn a_token_source_survives_expiries_over_ndjson() {
    survives_expiries_over(Transport::Stream).await;
}

#[tokio::test]
async fn a_token_source_survives_expiries_over_longpoll() {
    survives_expiries_over(Transport::LongPoll).await;
}

/// The subscriber's next item, before `deadline`.
async fn next(sub: &mut Subscriber, deadline: Instant) -> Result<Event, holdfast_client::Error> {
    tokio::time::timeout_at(deadline.into(), sub.next()).await.expect("in time").expect("the stream goes on")
}

/// The first item that is not a state change.
async fn first_outcome(mut sub: Subscriber) -> (Result<Event, holdfast_client::Error>, bool) {
    let wait = Duration::from_secs(10);
    loop {
        let item = tokio::time::timeout(wait, sub.next()).await.expect("in time").expect("an item");
        if !matches!(item, Ok(Event::State(_))) {
            let ended = tokio::time::timeout(wait, sub.next()).await.expect("in time").is_none();
            return (item, ended);
        }
    }
}

#[tokio::test]
async fn a_refused_static_token_or_a_missing_right_is_fatal() {
    let server = auth_server().await;
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let other = json!({"channels": ["other"], "exp": now() + 600});
    let other = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &other, &key).unwrap();
    for transport in [Transport::Ws, Transport::Sse, Transport::LongPoll] {
        for (token, status) in [("not-a-jwt".to_string(), 401), (other.clone(), 403)] {
            let sub = Subscriber::builder()
                .server(server.url(""))
                .channel("ticks")
                .transport(transport)
                .backoff(Duration::from_millis(50), Duration::from_millis(100))
                .token(token)
                .build()
                .unwrap();
            let (item, ended) = first_outcome(sub).await;
            let e = item.expect_err("a refusal");
            assert_eq!(e.status(), Some(status), "{transport:?}: {e}");
            assert!(!e.is_transient() && ended, "{transport:?}: {e}");
        }
    }
}

#[tokio::test]
async fn a_publisher_asks_its_source_again_after_a_401() {
    let server = auth_server().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    // The first token is already expired; the second is good.
    let publisher = Publisher::builder()
        .server(server.url(""))
        .token_source(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, String>(if n == 0 { "expired".to_string() } else { mint(600) }) }
        })
        .build()
        .unwrap();
    publisher.publish("ticks", "one", None).await.expect("published after asking again");
    publisher.publish("ticks", "two", None).await.expect("the kept token serves");
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    let refused = Publisher::builder().server(server.url("")).token("bad").build().unwrap();
    let e = refused.publish("ticks", "three", None).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!format!("{refused:?}").contains("bad"), "the token stays out of Debug");
}

/// Runs the binary to completion (or kills it after `wait`): exit success, stdout, stderr.
fn run(args: &[&str], wait: Duration) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("HOLDFAST_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + wait;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pub_and_sub_take_a_token_and_fail_readably_without_one() {
    let server = auth_server().await;
    let url = server.url("");
    let token = mint(600);
    let sub_url = url.clone();
    let sub_token = token.clone();
    let sub = std::thread::spawn(move || {
        run(
            &["sub", "--server", &sub_url, "--transport", "sse", "--history", "5", "room", "--token", &sub_token],
            WAIT_SUB,
        )
    });
    // The subscriber replays history, so publishing before it connects loses nothing.
    let url2 = url.clone();
    let token2 = token.clone();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(&["pub", "--server", &url2, "--token", &token2, "room", "hello"], Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(ok, "pub --token: {stderr}");
    assert!(!stdout.trim().is_empty() && !stderr.contains(&token));
    let (_, stdout, stderr) = sub.join().unwrap();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["hello"], "sub --token: {stderr}");
    assert!(!stderr.contains(&token), "the token is never printed");

    let url3 = url.clone();
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || run(&["pub", "--server", &url3, "room", "hello"], Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(!ok && stderr.contains("401") && stderr.contains("unauthorized"), "pub without a token: {stderr}");
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || run(&["sub", "--server", &url, "room"], Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(!ok && stderr.contains("401") && stderr.contains("unauthorized"), "sub without a token: {stderr}");
}

/// How long `holdfast sub` runs before it is stopped (it subscribes until interrupted).
const WAIT_SUB: Duration = Duration::from_secs(4);
