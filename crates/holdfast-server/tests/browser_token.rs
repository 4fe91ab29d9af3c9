//! holdfast.js against a server with authentication on, in headless Chromium
//! (`tests/interop/holdfast_js_token.js`): pages subscribe with a token callback whose tokens
//! live 3 s, on WebSocket, SSE and long polling. Each expiry ends the link (WebSocket 4003, the
//! `token_expired` notice, a held long poll's 401); the client must ask the callback again and
//! resume from its cursor, so every message published across several expiries arrives exactly
//! once, in order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_testkit::interop::{browser_command, Client, Reports};
use holdfast_testkit::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "browser-token-secret-0123456789abcdef";
const CHANNEL: &str = "private:room";
const TRANSPORTS: [&str; 3] = ["ws", "sse", "longpoll"];

fn publisher_token() -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = json!({"sub": "test", "publish": [CHANNEL], "exp": exp});
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
        .unwrap()
}

fn of<'a>(reports: &'a Reports, page: usize, kind: &str) -> Vec<&'a Value> {
    reports.filter(|r| r["page"] == page && r["type"] == kind)
}

#[tokio::test]
async fn expiring_tokens_are_renewed_through_the_callback_and_nothing_is_lost_on_any_transport() {
    let mut server = TestServer::start(|c| {
        c.jwt_secret = SECRET.into();
        holdfast_testkit::fast_pacing(c);
    })
    .await;
    let mut node = browser_command("holdfast_js_token.js");
    node.arg(server.url("")).args([SECRET, CHANNEL, "3"]).args(TRANSPORTS);
    let mut client = Client::spawn(node);
    let mut reports = Reports::new();
    let connected =
        |r: &Reports| (0..TRANSPORTS.len()).all(|p| r.seen.iter().any(|x| x["page"] == p && x["state"] == "connected"));
    reports.until(&mut client, "every page connected", connected).await;

    // Published over 9 s: three token lifetimes, so each page's link expires at least twice.
    let token = publisher_token();
    let count = 36;
    for n in 1..=count {
        let mut conn = server.connect().await;
        let request = format!(
            "POST /pub/{CHANNEL} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\nm{n}",
            format!("m{n}").len()
        );
        conn.send(request.as_bytes()).await;
        let answer = conn.response().await;
        assert_eq!(answer.status, 200, "publish {n}: {}", answer.text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = |r: &Reports| (0..TRANSPORTS.len()).all(|p| of(r, p, "message").len() >= count);
    reports.until(&mut client, "every message on every page", all).await;
    let trouble = reports.filter(|r| r["type"] == "page_error" || r["type"] == "script_error");
    assert!(trouble.is_empty(), "{trouble:?}\nstderr:\n{}", client.stderr());

    let want: Vec<String> = (1..=count).map(|n| format!("m{n}")).collect();
    for (page, transport) in TRANSPORTS.iter().enumerate() {
        let got: Vec<&str> = of(&reports, page, "message").iter().map(|m| m["data"].as_str().unwrap()).collect();
        assert_eq!(got, want, "{transport}: every message once, in order");
        let minted = of(&reports, page, "minted").len();
        assert!(minted >= 3, "{transport}: the callback was asked {minted} times over three lifetimes");
        let states = of(&reports, page, "state");
        let expiries: Vec<&&Value> = states
            .iter()
            .filter(|s| {
                s["state"] == "reconnecting" && s["cause"].as_str().is_some_and(|c| c.contains("token_expired"))
            })
            .collect();
        assert!(expiries.len() >= 2, "{transport}: links ended by expiry: {expiries:?}");
        let closed = of(&reports, page, "state").iter().any(|s| s["state"] == "closed");
        assert!(!closed, "{transport}: the subscription ended");
    }
    server.stop().await;
}
