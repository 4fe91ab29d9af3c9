//! Which pages may act on the server, over real sockets: every kind of `Origin` (none, the
//! server's own, allowed exactly, allowed by a pattern, a pattern's near misses, another site,
//! `null`) against every kind of request (the state changes, reads, subscriptions, the WebSocket
//! handshake, the preflight). Also a browser-shaped cross-site POST, credentials, and `*`.

use std::time::Duration;

use holdfast_testkit::{ws_upgrade_request, RawConn, RawResponse, TestServer};

/// The configuration every test but the `*` one runs with.
fn allow_app_and_subdomains(config: &mut holdfast_server::Config) {
    config.cors_origins = vec!["https://app.example".into(), "https://*.example.com".into()];
}

/// What the server should make of an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No `Origin`: not a browser (curl, a server, an SDK).
    Absent,
    /// The server's own origin (`http://` + the `Host` the request names).
    Own,
    /// Allowed by `cors_origins`, exactly or by pattern.
    Listed,
    /// Anything else.
    Refused,
}

/// Every origin of the matrix, with what it is under [`allow_app_and_subdomains`] and `Host: t`.
const ORIGINS: &[(Option<&str>, Kind)] = &[
    (None, Kind::Absent),
    (Some("http://t"), Kind::Own),
    (Some("https://app.example"), Kind::Listed),
    (Some("https://a.example.com"), Kind::Listed),
    (Some("https://a.b.example.com"), Kind::Listed),
    // The pattern's near misses.
    (Some("https://example.com"), Kind::Refused),
    (Some("http://a.example.com"), Kind::Refused),
    (Some("https://a.example.com:8443"), Kind::Refused),
    (Some("https://evil-example.com"), Kind::Refused),
    (Some("https://a.example.com.evil.net"), Kind::Refused),
    // The own host under another scheme or port is another origin.
    (Some("https://t"), Kind::Refused),
    (Some("http://t:8080"), Kind::Refused),
    (Some("https://evil.example"), Kind::Refused),
    (Some("null"), Kind::Refused),
];

fn origin_field(origin: Option<&str>) -> String {
    origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default()
}

/// One request on a fresh connection; its response.
async fn ask(server: &TestServer, request: &str) -> RawResponse {
    let mut conn = server.connect().await;
    conn.send(request.as_bytes()).await;
    conn.response().await
}

/// A channel that exists (a message published without an `Origin`).
async fn channel(server: &TestServer, name: &str) -> String {
    server.publish(name, None, b"seed").await;
    name.to_string()
}

/// How many messages `GET /pub/{channel}` reports (`None`: no such channel).
async fn messages(server: &TestServer, channel: &str) -> Option<u64> {
    let info = ask(server, &format!("GET /pub/{channel} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
    (info.status == 200).then(|| info.json()["messages"].as_u64().unwrap())
}

fn assert_refused(response: &RawResponse, what: &str) {
    assert_eq!(response.status, 403, "{what}: {}", response.head);
    let body = response.json();
    assert_eq!(body["error"], "origin_not_allowed", "{what}");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "{what}");
    assert_eq!(response.header("access-control-allow-origin"), None, "{what}");
    assert_eq!(response.header("access-control-allow-credentials"), None, "{what}");
}

/// `Access-Control-Allow-Origin` on a read: the origin itself when listed, else none (the own
/// origin needs none; a refused one must get none).
fn assert_read_cors(response: &RawResponse, origin: Option<&str>, kind: Kind, what: &str) {
    let want = if kind == Kind::Listed { origin } else { None };
    assert_eq!(response.header("access-control-allow-origin"), want, "{what}");
    assert_eq!(response.header("access-control-allow-credentials"), None, "{what}");
}

#[tokio::test]
async fn every_origin_against_every_kind_of_request() {
    let server = TestServer::start(allow_app_and_subdomains).await;
    for (i, &(origin, kind)) in ORIGINS.iter().enumerate() {
        let field = origin_field(origin);
        let may_act = kind != Kind::Refused;
        let label = |what: &str| format!("{what} from {origin:?} ({kind:?})");

        // POST /pub: published, or refused with nothing published.
        let ch = format!("post{i}");
        let what = label("POST /pub");
        let response = ask(
            &server,
            &format!("POST /pub/{ch} HTTP/1.1\r\nHost: t\r\n{field}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
        )
        .await;
        if may_act {
            assert_eq!(response.status, 200, "{what}: {}", response.text());
            assert_read_cors(&response, origin, kind, &what);
            assert_eq!(messages(&server, &ch).await, Some(1), "{what}");
        } else {
            assert_refused(&response, &what);
            assert_eq!(messages(&server, &ch).await, None, "{what}: the channel exists");
        }

        // DELETE /pub: deleted, or refused with the channel kept.
        let ch = channel(&server, &format!("delete{i}")).await;
        let what = label("DELETE /pub");
        let response = ask(&server, &format!("DELETE /pub/{ch} HTTP/1.1\r\nHost: t\r\n{field}\r\n")).await;
        if may_act {
            assert_eq!(response.status, 200, "{what}: {}", response.text());
            assert_eq!(messages(&server, &ch).await, None, "{what}");
        } else {
            assert_refused(&response, &what);
            assert_eq!(messages(&server, &ch).await, Some(1), "{what}");
        }

        // POST /admin/disconnect.
        let ch = channel(&server, &format!("admin{i}")).await;
        let what = label("POST /admin/disconnect");
        let response = ask(
            &server,
            &format!("POST /admin/disconnect?channel={ch} HTTP/1.1\r\nHost: t\r\n{field}Content-Length: 0\r\n\r\n"),
        )
        .await;
        if may_act {
            assert_eq!(response.status, 200, "{what}: {}", response.text());
        } else {
            assert_refused(&response, &what);
        }

        // GET /sub (SSE): a read; any origin subscribes, only listed ones may read it in a browser.
        let what = label("GET /sub (SSE)");
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/{ch}?transport=sse HTTP/1.1\r\nHost: t\r\n{field}\r\n").as_bytes()).await;
        let head = conn.stream_head().await;
        assert_eq!(head.status, 200, "{what}: {}", head.head);
        assert_read_cors(&head, origin, kind, &what);
        drop(conn);

        // The WebSocket handshake: the rule of state changes.
        let what = label("WebSocket handshake");
        let mut conn = server.connect().await;
        conn.send(ws_upgrade_request(&format!("/sub/{ch}"), &field).as_bytes()).await;
        if may_act {
            let head = conn.stream_head().await;
            assert_eq!(head.status, 101, "{what}: {}", head.head);
        } else {
            assert_refused(&conn.response().await, &what);
        }
        drop(conn);

        // The preflight: only for listed origins (the own origin never sends one).
        let what = label("OPTIONS preflight");
        let response = ask(
            &server,
            &format!(
                "OPTIONS /pub/{ch} HTTP/1.1\r\nHost: t\r\n{field}Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: content-type\r\n\r\n"
            ),
        )
        .await;
        if kind == Kind::Listed {
            assert_eq!(response.status, 204, "{what}: {}", response.head);
            assert_eq!(response.header("access-control-allow-origin"), origin, "{what}");
            assert_eq!(response.header("access-control-allow-credentials"), None, "{what}");
        } else {
            assert_refused(&response, &what);
        }

        // GET /pub: a read, answered to all.
        let what = label("GET /pub");
        let response = ask(&server, &format!("GET /pub/{ch} HTTP/1.1\r\nHost: t\r\n{field}\r\n")).await;
        assert_eq!(response.status, 200, "{what}: {}", response.text());
        assert_read_cors(&response, origin, kind, &what);
    }
}

/// What a page on another site does with `fetch(url, {method: 'POST', mode: 'no-cors', body})`
/// or a form: a "simple" request, sent without a preflight, with the visitor's cookies. It used
/// to publish; it must not.
#[tokio::test]
async fn a_browser_shaped_cross_site_text_plain_post_is_refused() {
    let server = TestServer::start(allow_app_and_subdomains).await;
    let host = server.addr.to_string();
    let body = "hello world";
    let request = format!(
        "POST /pub/room HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\
         sec-ch-ua-platform: \"Linux\"\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\nOrigin: https://evil.example\r\n\
         Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n\
         Referer: https://evil.example/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\nCookie: holdfast_token=eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n\r\n{body}",
        body.len()
    );
    let mut conn = server.connect().await;
    conn.send(request.as_bytes()).await;
    assert_refused(&conn.response().await, "cross-site text/plain POST");
    assert_eq!(messages(&server, "room").await, None, "the cross-site POST published");

    // The body was read past: the connection carries the next request.
    conn.send(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200);

    // A form post to the admin action, while a subscriber listens: it stays subscribed.
    let ch = channel(&server, "watched").await;
    let mut subscriber = server.connect().await;
    subscriber.send(format!("GET /sub/{ch}?transport=stream HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(subscriber.stream_head().await.status, 200);
    server.wait_for_subscribers(&ch, 1).await;
    let form = format!(
        "POST /admin/disconnect?channel={ch} HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n"
    );
    assert_refused(&ask(&server, &form).await, "cross-site form POST /admin/disconnect");
    // The same from a page under Referrer-Policy: no-referrer, whose Origin is `null`.
    assert_refused(&ask(&server, &form.replace("https://evil.example", "null")).await, "null-origin form POST");
    server.publish(&ch, None, b"still here").await;
    let mut seen = String::new();
    while !seen.contains("still here") {
        seen.push_str(&String::from_utf8_lossy(&subscriber.next_chunk().await));
    }
    server.wait_for_subscribers(&ch, 1).await;
}

/// The own origin is the scheme served (http) and the `Host` named, port included.
#[tokio::test]
async fn the_own_origin_is_the_host_with_its_port() {
    let server = TestServer::start(|_| {}).await;
    let host = server.addr.to_string();
    let post = |origin: String| {
        format!("POST /pub/own HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Length: 2\r\n\r\nhi")
    };
    assert_eq!(ask(&server, &post(format!("http://{host}"))).await.status, 200);
    let other_port = format!("127.0.0.1:{}", server.addr.port().wrapping_add(1).max(1));
    for origin in [
        format!("https://{host}"),
        format!("http://{other_port}"),
        format!("http://localhost:{}", server.addr.port()),
        "http://127.0.0.1".to_string(),
    ] {
        assert_refused(&ask(&server, &post(origin.clone())).await, &origin);
    }
    // Without a Host there is no own origin to compare with (HTTP/1.0).
    let response =
        ask(&server, &format!("POST /pub/own HTTP/1.0\r\nOrigin: http://{host}\r\nContent-Length: 2\r\n\r\nhi")).await;
    assert_refused(&response, "HTTP/1.0 without Host");
}

/// Cookies or `Authorization` from a page that is not allowed: no CORS answer to read, and no
/// state change, whatever the credentials are.
#[tokio::test]
async fn credentials_from_an_origin_not_allowed_get_no_cors_and_no_state_change() {
    let server = TestServer::start(allow_app_and_subdomains).await;
    let ch = channel(&server, "creds").await;
    for credentials in ["Cookie: holdfast_token=abc\r\n", "Authorization: Bearer abc\r\n"] {
        for origin in ["https://evil.example", "https://example.com", "null"] {
            let what = format!("{origin} with {}", credentials.trim());
            let read =
                ask(&server, &format!("GET /pub/{ch} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n{credentials}\r\n"))
                    .await;
            assert_eq!(read.status, 200, "{what}");
            assert_eq!(read.header("access-control-allow-origin"), None, "{what}");
            assert_eq!(read.header("access-control-allow-credentials"), None, "{what}");
            let post = format!(
                "POST /pub/{ch} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n{credentials}Content-Length: 1\r\n\r\nx"
            );
            assert_refused(&ask(&server, &post).await, &what);
            let delete = format!("DELETE /pub/{ch} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n{credentials}\r\n");
            assert_refused(&ask(&server, &delete).await, &what);
            let mut conn = server.connect().await;
            conn.send(
                ws_upgrade_request(&format!("/sub/{ch}"), &format!("Origin: {origin}\r\n{credentials}")).as_bytes(),
            )
            .await;
            assert_refused(&conn.response().await, &what);
        }
    }
    assert_eq!(messages(&server, &ch).await, Some(1));
    // An allowed origin with a cookie: served and readable, never with credentials allowed.
    let post = "POST /pub/creds HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example.com\r\nCookie: holdfast_token=abc\r\nContent-Length: 1\r\n\r\nx";
    let response = ask(&server, post).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("https://a.example.com"));
    assert_eq!(response.header("access-control-allow-credentials"), None);
}

/// `*` lets any page read, publish and act (that is what it says), but not `null`, and never
/// with `Access-Control-Allow-Credentials`.
#[tokio::test]
async fn star_allows_any_page_but_not_null_and_never_credentials() {
    let server = TestServer::start(|c| c.cors_origins = vec!["*".into()]).await;
    let post = |origin: &str| {
        format!("POST /pub/star HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nCookie: holdfast_token=abc\r\nContent-Length: 1\r\n\r\nx")
    };
    let response = ask(&server, &post("https://anywhere.example")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("access-control-allow-credentials"), None);
    assert_refused(&ask(&server, &post("null")).await, "null under *");

    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request("/sub/star", "Origin: null\r\n").as_bytes()).await;
    assert_refused(&conn.response().await, "null WebSocket under *");
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request("/sub/star", "Origin: https://anywhere.example\r\n").as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 101);

    for request in [
        "GET /pub/star HTTP/1.1\r\nHost: t\r\nOrigin: https://anywhere.example\r\nCookie: holdfast_token=abc\r\n\r\n",
        "OPTIONS /pub/star HTTP/1.1\r\nHost: t\r\nOrigin: https://anywhere.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    ] {
        let response = ask(&server, request).await;
        assert!(response.status == 200 || response.status == 204, "{request}: {}", response.head);
        assert!(response.header("access-control-allow-origin").is_some(), "{request}");
        assert_eq!(response.header("access-control-allow-credentials"), None, "{request}");
    }
    let mut sse = server.connect().await;
    sse.send(
        b"GET /sub/star?transport=sse HTTP/1.1\r\nHost: t\r\nOrigin: https://anywhere.example\r\nCookie: a=b\r\n\r\n",
    )
    .await;
    let head = sse.stream_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("access-control-allow-credentials"), None);
}

/// A refused request costs the server nothing more: the connection stays usable, and a long
/// body is not read into memory (the connection closes after the answer instead).
#[tokio::test]
async fn a_refused_state_change_keeps_or_closes_the_connection_cleanly() {
    let server = TestServer::start(allow_app_and_subdomains).await;
    let mut conn: RawConn = server.connect().await;
    let big = 256 * 1024;
    conn.send(
        format!("POST /pub/big HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nContent-Length: {big}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_refused(&conn.response().await, "a long cross-site body");
    assert!(conn.closes_within(Duration::from_secs(5)).await, "the unread body's connection stayed open");
    assert_eq!(messages(&server, "big").await, None);
}

/// The same in a real browser: pages of two sites, one in `cors_origins`, each send POSTs that
/// need no preflight (a `no-cors` fetch, a `text/plain` form, a CORS-mode fetch) and a form under
/// `Referrer-Policy: no-referrer` (`Origin: null`). Only the allowed page publishes, never the
/// `null` form, and only the allowed page may read its answer.
#[tokio::test]
async fn chromium_pages_of_other_sites_cannot_publish_without_a_preflight() {
    let (server, allowed, other) = holdfast_testkit::interop::cors_pages().await;
    let base = server.url("");
    let mut node = holdfast_testkit::interop::browser_command("browser_csrf.js");
    node.args([
        format!("{allowed}/"),
        base.clone(),
        "fromallowed".into(),
        format!("{other}/"),
        base,
        "fromother".into(),
    ]);
    let mut client = holdfast_testkit::interop::Client::spawn(node);
    let mut steps = Vec::new();
    loop {
        let report = client.next(Duration::from_secs(45)).await;
        if report["type"] == "ready" {
            break;
        }
        steps.push(report);
    }
    client.finish().await;
    let step = |page: u64, name: &str| {
        steps
            .iter()
            .find(|s| s["page"] == page && s["step"] == name)
            .unwrap_or_else(|| panic!("{name}: {steps:?}"))
            .clone()
    };
    // The allowed page: its no-cors fetch, its form and its CORS fetch published; it reads the last.
    assert_eq!(step(0, "cors")["status"], 200, "{steps:?}");
    assert_eq!(step(0, "form")["status"], "loaded", "{steps:?}");
    // The other site: each request reached the server (the form loaded its answer), none published,
    // and its CORS-mode fetch could not read the answer.
    assert_eq!(step(1, "form")["status"], "loaded", "{steps:?}");
    assert!(step(1, "cors")["error"].is_string(), "{steps:?}");
    assert_eq!(messages(&server, "fromallowed").await, Some(3), "no-cors, form, cors; not the null form: {steps:?}");
    assert_eq!(messages(&server, "fromother").await, None, "another site published: {steps:?}");
}
