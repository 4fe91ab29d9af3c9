//! Malformed and smuggling-shaped requests over real sockets: each gets its status, a JSON
//! reason and a closed connection, and the server goes on serving others.

use holdfast_testkit::TestServer;

/// (request bytes, expected status)
const CASES: &[(&[u8], u16)] = &[
    // RFC 9112 §6.3 ¶3: Content-Length with Transfer-Encoding is refused outright.
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    // Differing Content-Length values.
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    // Final coding not chunked → 400; unknown coding → 501.
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
    (b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
    // HTTP/1.0 with Transfer-Encoding.
    (b"POST /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    // Invalid / overflowing chunk sizes, bare CR in chunk framing.
    (b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n", 400),
    (b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\rabc\r\n0\r\n\r\n", 400),
    (b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", 400),
    // Bare CR, obs-fold, whitespace before the colon.
    (b"GET /healthz HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: y\r\n folded\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    // Missing or duplicate Host on 1.1.
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    // Versions other than 1.0/1.1.
    (b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n", 505),
    (b"GET /healthz HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    // Garbage.
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
];

#[tokio::test]
async fn every_malformed_request_gets_its_status_and_a_close() {
    let server = TestServer::start(|_| {}).await;
    for (request, want) in CASES {
        let shown = String::from_utf8_lossy(request);
        let mut conn = server.connect().await;
        conn.send(request).await;
        let response = conn.response().await;
        assert_eq!(response.status, *want, "{shown}");
        assert_eq!(response.header("connection"), Some("close"), "{shown}");
        let body = response.json();
        assert!(body["error"].is_string() && body["reason"].is_string(), "{shown}: {body}");
        conn.assert_closed().await;

        // A well-formed neighbour is unaffected.
        let mut other = server.connect().await;
        other.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(other.response().await.status, 200, "after {shown}");
    }
}

#[tokio::test]
async fn smuggled_request_after_an_error_is_never_answered() {
    // If the server trusted Content-Length here, the bytes "GET /admin/stats" would be a second
    // request. It must answer the first with 400 and close without reading further.
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send(
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /admin/stats HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 400);
    let rest = conn.read_to_close().await;
    assert!(rest.is_empty(), "server answered more: {}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn oversized_heads_get_414_and_431() {
    let server = TestServer::start(|c| {
        c.max_uri_bytes = 128;
        c.max_header_bytes = 1024;
    })
    .await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(200));
    let big_head = format!("GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "b".repeat(2000));
    for (request, want) in [(long_target, 414), (big_head, 431)] {
        let mut conn = server.connect().await;
        conn.try_send(request.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, want);
        conn.assert_closed().await;
    }
}

#[tokio::test]
async fn too_large_body_gets_413() {
    let server = TestServer::start(|c| {
        c.enable_conformance_echo = true;
        c.max_body_bytes = 16;
    })
    .await;
    for request in [
        &b"POST /_conformance/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n01234567890123456"[..],
        b"POST /_conformance/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789012345\r\n1\r\nx\r\n0\r\n\r\n",
    ] {
        let mut conn = server.connect().await;
        conn.send(request).await;
        let response = conn.response().await;
        assert_eq!(response.status, 413);
        assert_eq!(response.json()["error"], "body_too_large");
        conn.assert_closed().await;
    }
}

#[tokio::test]
async fn error_response_reaches_a_client_that_keeps_sending() {
    // Lingering close: the server answers 400, then shuts down its write side and reads what the
    // client still sends. Closing at once with unread input would send RST, and the kernel would
    // drop the 400 before the client read it.
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    for _ in 0..20 {
        if !conn.try_send(&[b'x'; 8192]).await {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "missing_host");
}
