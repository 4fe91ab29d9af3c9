//! Access control with JWTs, over real sockets: every endpoint with no token, a bad signature,
//! an expired token, a token without the right, and a valid one; where tokens travel (header,
//! query, cookie); private channels on every transport and WebSocket op; the public files;
//! expiry during a connection (SSE notice, WebSocket 4003, long poll 401); public keys from PEM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_proto::sse;
use holdfast_testkit::{ws_upgrade_request, RawConn, RawResponse, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-with-enough-bytes-0123456789";
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn mint_with(secret: &str, claims: Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// A token signed with the server's secret.
fn mint(claims: Value) -> String {
    mint_with(SECRET, claims)
}

/// Everything on `chat:*`, and admin.
fn full_token() -> String {
    mint(json!({"sub": "alice", "channels": ["chat:*"], "publish": ["chat:*"], "admin": true, "exp": now() + 600}))
}

/// The five kinds of request the matrix tries on every endpoint.
fn kinds() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("none", None),
        (
            "bad_signature",
            Some(mint_with(
                "another-secret-entirely-0123456789",
                json!({"channels": ["*"], "publish": ["*"], "admin": true, "exp": now() + 600}),
            )),
        ),
        ("expired", Some(mint(json!({"channels": ["*"], "publish": ["*"], "admin": true, "exp": now() - 120})))),
        ("wrong", Some(mint(json!({"channels": ["other"], "publish": ["other"], "exp": now() + 600})))),
        ("valid", Some(full_token())),
    ]
}

async fn auth_server() -> TestServer {
    TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        c.ws_client_publish = true;
        holdfast_testkit::fast_pacing(c);
    })
    .await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Sends one request and reads its answer (the head only for streams and upgrades).
async fn send(
    server: &TestServer,
    method: &str,
    target: &str,
    extra: &str,
    body: &str,
    head_only: bool,
) -> RawResponse {
    let mut conn = server.connect().await;
    let length = if method == "POST" { format!("Content-Length: {}\r\n", body.len()) } else { String::new() };
    conn.send(format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{length}{extra}\r\n{body}").as_bytes()).await;
    if head_only {
        conn.stream_head().await
    } else {
        conn.response().await
    }
}

async fn publish(server: &TestServer, token: &str, channel: &str, body: &str) {
    let answer = send(server, "POST", &format!("/pub/{channel}"), &bearer(token), body, false).await;
    assert_eq!(answer.status, 200, "publish on {channel}: {}", answer.text());
}

/// The status (and for 401/403 the error label) each kind of token gets.
fn expected(kind: &str, valid_status: u16) -> (u16, &'static str) {
    match kind {
        "none" => (401, "unauthorized"),
        "bad_signature" => (401, "invalid_token"),
        "expired" => (401, "token_expired"),
        "wrong" => (403, "forbidden"),
        _ => (valid_status, ""),
    }
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_token_with_its_status() {
    let server = auth_server().await;
    let full = full_token();
    publish(&server, &full, "chat:x", "hello").await;
    // (method, target, extra fields, body, head only, status for a valid token)
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let endpoints: Vec<(&str, &str, &str, &str, bool, u16)> = vec![
        ("POST", "/pub/chat:x", "", "hi", false, 200),
        ("GET", "/pub/chat:x", "", "", false, 200),
        ("HEAD", "/pub/chat:x", "", "", true, 200),
        ("GET", "/sub/chat:x?transport=poll", "", "", false, 200),
        ("GET", "/sub/chat:x?transport=sse", "", "", true, 200),
        ("GET", "/sub/chat:x?transport=stream", "", "", true, 200),
        ("GET", "/sub/chat:x?transport=iframe&callback=cb", "", "", true, 200),
        ("GET", "/sub/chat:x", upgrade, "", true, 101),
        ("GET", "/admin/stats", "", "", false, 200),
        ("GET", "/admin/connections", "", "", false, 200),
        ("GET", "/admin/events", "", "", true, 200),
        ("POST", "/admin/disconnect?channel=chat:x", "", "", false, 200),
        ("GET", "/metrics", "", "", false, 200),
    ];
    for (method, target, extra, body, head_only, valid_status) in endpoints {
        for (kind, token) in kinds() {
            let fields = format!("{extra}{}", token.as_deref().map(bearer).unwrap_or_default());
            let (status, label) = expected(kind, valid_status);
            // A refusal is a whole response (read its body); a stream or an upgrade, its head.
            let head_only = method == "HEAD" || (head_only && status == valid_status);
            let answer = send(&server, method, target, &fields, body, head_only).await;
            assert_eq!(answer.status, status, "{method} {target} with {kind}: {}", answer.head);
            if status == 401 {
                let challenge = answer.header("www-authenticate").expect("WWW-Authenticate on 401");
                assert!(challenge.starts_with("Bearer"), "{challenge}");
                // RFC 6750 §3: no error attribute when the request had no token.
                assert_eq!(challenge.contains("error="), kind != "none", "{kind}: {challenge}");
            }
            if !label.is_empty() && method != "HEAD" {
                assert_eq!(answer.json()["error"], label, "{method} {target} with {kind}");
            }
        }
    }
    // DELETE needs admin: a token with every channel but no admin is refused.
    publish(&server, &full, "chat:gone", "x").await;
    let publisher = mint(json!({"channels": ["*"], "publish": ["*"], "exp": now() + 600}));
    let answer = send(&server, "DELETE", "/pub/chat:gone", &bearer(&publisher), "", false).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["reason"], "token does not grant admin");
    for (kind, token) in kinds() {
        let fields = token.as_deref().map(bearer).unwrap_or_default();
        let answer = send(&server, "DELETE", "/pub/chat:gone", &fields, "", false).await;
        assert_eq!(answer.status, expected(kind, 200).0, "DELETE with {kind}: {}", answer.text());
    }
}

#[tokio::test]
async fn refusals_name_the_channel_and_the_right() {
    let server = auth_server().await;
    let reader = mint(json!({"channels": ["chat:a"], "exp": now() + 600}));
    let answer = send(&server, "GET", "/sub/chat:a,chat:x?transport=poll", &bearer(&reader), "", false).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json(), json!({"error": "forbidden", "reason": "token does not grant subscribe on chat:x"}));
    let answer = send(&server, "POST", "/pub/chat:a", &bearer(&reader), "x", false).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["reason"], "token does not grant publish on chat:a");
    // GET /pub/{channel} takes a subscribe or a publish right.
    publish(&server, &full_token(), "chat:a", "x").await;
    let writer = mint(json!({"publish": ["chat:a"], "exp": now() + 600}));
    assert_eq!(send(&server, "GET", "/pub/chat:a", &bearer(&writer), "", false).await.status, 200);
    assert_eq!(send(&server, "GET", "/pub/chat:a", &bearer(&reader), "", false).await.status, 200);
}

#[tokio::test]
async fn tokens_come_in_the_header_then_the_query_then_the_cookie() {
    let server = auth_server().await;
    let good = full_token();
    let bad = mint_with("another-secret-entirely-0123456789", json!({"channels": ["*"], "exp": now() + 600}));
    let poll = "/sub/chat:x?transport=poll";
    let status = |answer: RawResponse| answer.status;
    assert_eq!(status(send(&server, "GET", poll, &bearer(&good), "", false).await), 200);
    assert_eq!(status(send(&server, "GET", &format!("{poll}&token={good}"), "", "", false).await), 200);
    let cookie = format!("Cookie: theme=dark; holdfast_token={good}; other=1\r\n");
    assert_eq!(status(send(&server, "GET", poll, &cookie, "", false).await), 200);
    // The header wins over the query, the query over the cookie.
    assert_eq!(status(send(&server, "GET", &format!("{poll}&token={bad}"), &bearer(&good), "", false).await), 200);
    assert_eq!(status(send(&server, "GET", &format!("{poll}&token={good}"), &bearer(&bad), "", false).await), 401);
    let bad_cookie = format!("Cookie: holdfast_token={bad}\r\n");
    assert_eq!(status(send(&server, "GET", &format!("{poll}&token={good}"), &bad_cookie, "", false).await), 200);
    let good_cookie = format!("Cookie: holdfast_token={good}\r\n");
    assert_eq!(status(send(&server, "GET", &format!("{poll}&token={bad}"), &good_cookie, "", false).await), 401);
    // The scheme is case-insensitive (RFC 6750 §2.1); another scheme is no token.
    assert_eq!(status(send(&server, "GET", poll, &format!("Authorization: bearer {good}\r\n"), "", false).await), 200);
    assert_eq!(status(send(&server, "GET", poll, "Authorization: Basic dXNlcjpwYXNz\r\n", "", false).await), 401);
}

#[tokio::test]
async fn the_page_files_stay_public_and_the_data_does_not() {
    let server = auth_server().await;
    for path in ["/healthz", "/holdfast.js", "/holdfast.d.ts", "/", "/demo/chat", "/docs/protocol.md", "/admin/"] {
        let answer = send(&server, "GET", path, "", "", false).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.head);
    }
    for path in ["/admin/stats", "/metrics", "/sub/chat:x?transport=poll", "/pub/chat:x"] {
        assert_eq!(send(&server, "GET", path, "", "", false).await.status, 401, "{path}");
    }
}

#[tokio::test]
async fn metrics_public_opens_metrics_alone() {
    let server = TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        c.metrics_public = true;
    })
    .await;
    assert_eq!(send(&server, "GET", "/metrics", "", "", false).await.status, 200);
    assert_eq!(send(&server, "GET", "/admin/stats", "", "", false).await.status, 401);
}

#[tokio::test]
async fn exp_is_required_unless_allowed_and_nbf_is_checked_with_30_seconds_of_leeway() {
    let server = auth_server().await;
    let poll = "/sub/chat:x?transport=poll";
    let no_exp = mint(json!({"channels": ["*"]}));
    let answer = send(&server, "GET", poll, &bearer(&no_exp), "", false).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token");
    let early = mint(json!({"channels": ["*"], "exp": now() + 600, "nbf": now() + 10}));
    assert_eq!(send(&server, "GET", poll, &bearer(&early), "", false).await.status, 200);
    let too_early = mint(json!({"channels": ["*"], "exp": now() + 600, "nbf": now() + 120}));
    let answer = send(&server, "GET", poll, &bearer(&too_early), "", false).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token");

    let lenient = TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        c.jwt_allow_no_exp = true;
    })
    .await;
    assert_eq!(send(&lenient, "GET", poll, &bearer(&no_exp), "", false).await.status, 200);
}

/// The next WebSocket text frame as JSON (pings skipped).
async fn ws_json(conn: &mut RawConn) -> Value {
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        if opcode == PING {
            continue;
        }
        assert_eq!(opcode, TEXT, "{:?}", String::from_utf8_lossy(&payload));
        return serde_json::from_slice(&payload).unwrap();
    }
}

async fn ws_open(server: &TestServer, target: &str, token: &str) -> RawConn {
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request(target, &bearer(token)).as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 101, "{}", head.head);
    conn
}

#[tokio::test]
async fn a_private_channel_never_reaches_an_unauthorised_subscriber_on_any_transport() {
    let server = auth_server().await;
    let full = full_token();
    let outsider = mint(json!({"channels": ["chat:public"], "publish": ["chat:public"], "exp": now() + 600}));
    publish(&server, &full, "chat:private", "secret-0").await;
    let with = bearer(&outsider);
    let upgrade = ws_upgrade_request("/sub/chat:private?history=5", &with);
    let attempts = [
        format!("GET /sub/chat:private?history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:private?transport=poll&history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:private?transport=sse&history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:private?transport=stream&history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:private?transport=iframe&callback=cb&history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:public,chat:private?transport=sse&history=5 HTTP/1.1\r\nHost: t\r\n{with}\r\n"),
        format!("GET /sub/chat:private?transport=poll&history=5&token={outsider} HTTP/1.1\r\nHost: t\r\n\r\n"),
        upgrade,
    ];
    for request in attempts {
        let mut conn = server.connect().await;
        conn.send(request.as_bytes()).await;
        let answer = conn.response().await;
        assert_eq!(answer.status, 403, "{request}");
        assert!(!answer.text().contains("secret-0"), "{request}: {}", answer.text());
    }

    // A WebSocket allowed on chat:public asks for chat:private by op: refused, and it stays up.
    let mut ws = ws_open(&server, "/sub", &outsider).await;
    ws.ws_send(TEXT, json!({"op": "subscribe", "channels": ["chat:private"], "history": 5}).to_string().as_bytes())
        .await;
    let answer = ws_json(&mut ws).await;
    assert_eq!(answer["op"], "error");
    assert_eq!(answer["code"], "forbidden");
    assert_eq!(answer["reason"], "token does not grant subscribe on chat:private");
    ws.ws_send(TEXT, json!({"op": "subscribe", "channels": ["chat:public"]}).to_string().as_bytes()).await;
    assert_eq!(ws_json(&mut ws).await["op"], "subscribed");
    // Its publish op on chat:private is refused too.
    ws.ws_send(TEXT, json!({"op": "publish", "channel": "chat:private", "data": "x"}).to_string().as_bytes()).await;
    let answer = ws_json(&mut ws).await;
    assert_eq!(answer["code"], "forbidden");
    assert_eq!(answer["reason"], "token does not grant publish on chat:private");
    ws.ws_send(TEXT, json!({"op": "publish", "channel": "chat:public", "data": "mine"}).to_string().as_bytes()).await;
    let mut saw = Vec::new();
    while saw.len() < 2 {
        saw.push(ws_json(&mut ws).await);
    }
    // Private messages published meanwhile never arrive; the public one does.
    publish(&server, &full, "chat:private", "secret-1").await;
    publish(&server, &full, "chat:public", "after").await;
    loop {
        let value = ws_json(&mut ws).await;
        assert_ne!(value["channel"], "chat:private", "{value}");
        if value["data"] == "after" {
            break;
        }
    }
    for value in &saw {
        assert_ne!(value["channel"], "chat:private", "{value}");
    }
}

/// SSE events until one named `event` arrives.
async fn sse_until(conn: &mut RawConn, parser: &mut sse::Parser, event: &str, within: Duration) -> sse::Event {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let chunk = conn.next_chunk_within(left).await.unwrap_or_else(|| panic!("no {event} within {within:?}"));
        if let Some(found) = parser.feed(&chunk).into_iter().find(|e| e.event == event) {
            return found;
        }
    }
}

#[tokio::test]
async fn an_expiring_token_closes_sse_with_a_notice_and_websocket_with_4003() {
    let server = auth_server().await;
    let short = mint(json!({"channels": ["chat:*"], "exp": now() + 2}));
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/chat:x?transport=sse HTTP/1.1\r\nHost: t\r\n{}\r\n", bearer(&short)).as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 200);
    let mut ws = ws_open(&server, "/sub/chat:x", &short).await;

    let mut parser = sse::Parser::default();
    let closed = sse_until(&mut conn, &mut parser, "holdfast.closed", Duration::from_secs(6)).await;
    let data: Value = serde_json::from_str(&closed.data).unwrap();
    assert_eq!(data["reason"], "token_expired");
    assert!(data["cursor"].as_str().is_some_and(|c| !c.is_empty()), "{data}");
    assert_eq!(conn.next_chunk().await, b"", "the stream ends with its last chunk");

    loop {
        let (_, opcode, payload) = ws.ws_frame_within(Duration::from_secs(6)).await.expect("a close frame");
        if opcode == CLOSE {
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4003);
            assert_eq!(&payload[2..], b"token_expired");
            break;
        }
    }
    // Counted as the shard closes each (a moment after the client has read the close).
    let mut stats = Value::Null;
    for _ in 0..50 {
        stats = send(&server, "GET", "/admin/stats", &bearer(&full_token()), "", false).await.json();
        if stats["closed"]["token_expired"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats["closed"]["token_expired"], 2, "{}", stats["closed"]);
}

#[tokio::test]
async fn a_held_long_poll_is_answered_401_when_its_token_expires() {
    let server = TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        c.longpoll_timeout = Duration::from_secs(30);
        c.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let short = mint(json!({"channels": ["chat:*"], "exp": now() + 2}));
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/chat:x HTTP/1.1\r\nHost: t\r\n{}\r\n", bearer(&short)).as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(6), conn.response()).await.expect("answered at expiry");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "token_expired");
    assert!(answer.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn a_long_poll_held_in_its_task_is_answered_401_when_its_token_expires_too() {
    // A request pipelined behind the long poll keeps the poll in the connection's task (not a
    // push shard); its token's expiry answers it all the same, and the next request follows.
    let server = TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        c.longpoll_timeout = Duration::from_secs(30);
    })
    .await;
    let short = mint(json!({"channels": ["chat:*"], "exp": now() + 2}));
    let mut conn = server.connect().await;
    let poll = format!("GET /sub/chat:x HTTP/1.1\r\nHost: t\r\n{}\r\n", bearer(&short));
    conn.send(format!("{poll}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(6), conn.response()).await.expect("answered at expiry");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "token_expired");
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn tokens_are_not_listed_in_admin_connections() {
    let server = auth_server().await;
    let token = full_token();
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/chat:x?transport=sse&token={token} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 200);
    // The shard registers the subscriber a moment after the head is sent.
    let full = full_token();
    for _ in 0..100 {
        let info = send(&server, "GET", "/pub/chat:x", &bearer(&full), "", false).await;
        if info.status == 200 && info.json()["subscribers"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = mint(json!({"admin": true, "exp": now() + 600}));
    let listed = send(&server, "GET", "/admin/connections", &bearer(&admin), "", false).await;
    assert_eq!(listed.status, 200);
    assert!(listed.text().contains("chat:x"));
    assert!(!listed.text().contains(&token[..20]), "{}", listed.text());
}

/// A key pair from the `openssl` command line, if it is installed: (private PKCS#8 PEM, public
/// key file).
fn openssl_key(dir: &std::path::Path, algorithm: &[&str]) -> Option<(Vec<u8>, std::path::PathBuf)> {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey"])
        .args(algorithm)
        .arg("-out")
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .ok()?
            .success();
    made.then(|| (std::fs::read(&private).unwrap(), public))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-auth-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn public_keys_from_pem_verify_es256_and_rs256_tokens() {
    let cases: [(&str, &[&str], Algorithm); 2] = [
        ("es256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], Algorithm::ES256),
        ("rs256", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], Algorithm::RS256),
    ];
    for (name, args, algorithm) in cases {
        let dir = temp_dir(name);
        let Some((private, public)) = openssl_key(&dir, args) else {
            panic!("openssl is needed for this test (apt-get install openssl)");
        };
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private).unwrap(),
            _ => EncodingKey::from_rsa_pem(&private).unwrap(),
        };
        let claims = json!({"channels": ["chat:*"], "exp": now() + 600});
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap();
        let public_path = public.to_str().unwrap().to_string();
        let server = TestServer::start(|c| c.set("jwt_public_key", &public_path).unwrap()).await;
        let poll = "/sub/chat:x?transport=poll";
        assert_eq!(send(&server, "GET", poll, &bearer(&token), "", false).await.status, 200, "{name}");
        // HS256 with the public key as the shared secret (algorithm confusion) is refused.
        let confused = mint_with(&String::from_utf8(std::fs::read(&public).unwrap()).unwrap(), claims.clone());
        let answer = send(&server, "GET", poll, &bearer(&confused), "", false).await;
        assert_eq!(answer.status, 401, "{name}");
        assert_eq!(answer.json()["error"], "invalid_token");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn a_bad_key_file_is_a_readable_configuration_error() {
    let mut config = holdfast_server::Config::default();
    let error = config.set("jwt_public_key", "/nonexistent/key.pem").unwrap_err();
    let line = error.to_string();
    assert!(line.contains("jwt_public_key") && line.contains("\"/nonexistent/key.pem\" cannot be read"), "{line}");
    let dir = temp_dir("garbage");
    let path = dir.join("garbage.pem");
    std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n").unwrap();
    let line = config.set("jwt_public_key", path.to_str().unwrap()).unwrap_err().to_string();
    assert!(line.contains("is not a PEM public key"), "{line}");
    assert!(!line.contains('\n'));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn without_keys_everything_stays_open() {
    let server = TestServer::start(|_| {}).await;
    for path in ["/admin/stats", "/metrics", "/sub/chat:x?transport=poll"] {
        assert_eq!(send(&server, "GET", path, "", "", false).await.status, 200, "{path}");
    }
}
