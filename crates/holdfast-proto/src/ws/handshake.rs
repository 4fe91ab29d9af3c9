//! The opening handshake, server side (RFC 6455 §4.2): is a request an upgrade, is it a valid
//! one, and the `101 Switching Protocols` answer with its `Sec-WebSocket-Accept` key.
//!
//! What it does not own: parsing the request head (see [`crate::http1::request`]), routing, and
//! writing the error response for a refused handshake (the server's, from
//! [`HandshakeError::status`] and [`HandshakeError::reason`]), and extensions (see
//! [`super::deflate::negotiate`]; the answer goes in `extra`). No subprotocol is negotiated, so
//! `Sec-WebSocket-Protocol` is ignored and never answered (RFC 6455 §4.2.2 /4: the server then
//! uses none).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::BytesMut;
use sha1::{Digest, Sha1};

use crate::http1::request::trim_ows;
use crate::http1::{Method, RequestHead, Version};

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3, §4.2.2 /5.4).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version spoken (RFC 6455 §4.1). A server refusing a handshake with
/// [`HandshakeError::UnsupportedVersion`] sends it back as `Sec-WebSocket-Version: 13` (§4.4).
pub const VERSION: &str = "13";

/// Why an upgrade request was refused. Each variant has one status ([`HandshakeError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not GET (RFC 6455 §4.2.1 /1).
    NotGet,
    /// The request is not HTTP/1.1 (RFC 6455 §4.2.1 /1; 1.0 has no Upgrade).
    NotHttp11,
    /// No `Upgrade` field lists the `websocket` token (RFC 6455 §4.2.1 /3).
    NoUpgradeToken,
    /// No `Connection` field lists the `upgrade` token (RFC 6455 §4.2.1 /4).
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Key` is missing, repeated, or not the base64 of exactly 16 bytes
    /// (RFC 6455 §4.2.1 /5).
    BadKey,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13 (RFC 6455 §4.2.1 /6): 426 with
    /// `Sec-WebSocket-Version: 13` (§4.4).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The status code that answers this error: 426 Upgrade Required for a version this server
    /// does not speak (RFC 6455 §4.4), 400 for the rest (§4.2.1).
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// A sentence for the client, put in the error response's body.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::NotGet => "a WebSocket handshake must be a GET",
            HandshakeError::NotHttp11 => "a WebSocket handshake must be HTTP/1.1",
            HandshakeError::NoUpgradeToken => "Upgrade must list websocket",
            HandshakeError::NoConnectionUpgrade => "Connection must list upgrade",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be the base64 of 16 bytes, sent once",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
        }
    }

    /// A short label shared by logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeError::NotGet => "ws_not_get",
            HandshakeError::NotHttp11 => "ws_not_http11",
            HandshakeError::NoUpgradeToken => "ws_no_upgrade",
            HandshakeError::NoConnectionUpgrade => "ws_no_connection_upgrade",
            HandshakeError::BadKey => "ws_bad_key",
            HandshakeError::UnsupportedVersion => "ws_bad_version",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HandshakeError {}

/// Whether the request asks for a WebSocket upgrade: an `Upgrade` field lists the `websocket`
/// token, case-insensitively (RFC 6455 §4.2.1 /3, RFC 9110 §7.8). Says nothing about whether the
/// handshake is valid; see [`validate`].
pub fn is_upgrade_request(head: &RequestHead) -> bool {
    head.headers_named("upgrade").any(|value| has_token(value, b"websocket"))
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and returns the `Sec-WebSocket-Accept`
/// value for the answer: GET, HTTP/1.1, `Upgrade` lists `websocket`, `Connection` lists
/// `upgrade`, one `Sec-WebSocket-Key` that is the base64 of exactly 16 bytes, and one
/// `Sec-WebSocket-Version: 13`. Checked in that order; the first failure is returned. (Host is
/// already required of every HTTP/1.1 request by the parser.)
pub fn validate(head: &RequestHead) -> Result<String, HandshakeError> {
    // RFC 6455 §4.2.1 /1: "An HTTP/1.1 or higher GET request".
    if head.method() != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if head.version() != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    // RFC 6455 §4.2.1 /3.
    if !is_upgrade_request(head) {
        return Err(HandshakeError::NoUpgradeToken);
    }
    // RFC 6455 §4.2.1 /4.
    if !head.connection.upgrade {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    // RFC 6455 §4.2.1 /5: "a base64-encoded value that, when decoded, is 16 bytes in length".
    let key = only_value(head, "sec-websocket-key").ok_or(HandshakeError::BadKey)?;
    let key = std::str::from_utf8(key).ok().filter(|key| is_valid_key(key)).ok_or(HandshakeError::BadKey)?;
    // RFC 6455 §4.2.1 /6: "The value of this header field MUST be 13."
    if only_value(head, "sec-websocket-version") != Some(VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(accept_key(key))
}

/// The `Sec-WebSocket-Accept` value for a client's key: base64(SHA-1(key + GUID)) (RFC 6455
/// §4.2.2 /5.4). `key` is the header value as sent, without surrounding whitespace.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// Appends the `101 Switching Protocols` head (RFC 6455 §4.2.2 /5) to `out`: status line,
/// `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Accept: <accept>`, then each of
/// `extra` as `name: value`, then the blank line. After it, the connection speaks WebSocket.
pub fn put_switching_protocols(out: &mut BytesMut, accept: &str, extra: &[(&str, &str)]) {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let extra_len: usize = extra.iter().map(|(name, value)| name.len() + value.len() + 4).sum();
    out.reserve(HEAD.len() + 24 + accept.len() + extra_len + 2);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The value of a field that must appear exactly once, trimmed; `None` if absent or repeated.
fn only_value<'a>(head: &'a RequestHead, name: &'a str) -> Option<&'a [u8]> {
    let mut values = head.headers_named(name);
    let value = values.next()?;
    values.next().is_none().then(|| trim_ows(value))
}

/// Whether a comma-separated field value lists `token` (case-insensitive, RFC 9110 §5.6.1).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

/// Whether `key` is canonical base64 (padded, no stray bits) of exactly 16 bytes: 24 characters.
fn is_valid_key(key: &str) -> bool {
    // Room for the decoder's worst-case estimate of 24 characters (18 bytes).
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_request;
    use crate::Limits;

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn head(request: &str) -> RequestHead {
        let mut buf = BytesMut::from(request.as_bytes());
        parse_request(&mut buf, &Limits::default()).unwrap().unwrap()
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_handshake_returns_the_accept_key() {
        assert_eq!(validate(&head(GOOD)), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()));
        // Tokens among others, any case, extra whitespace, a browser's extra fields.
        let request = "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: h2c, WebSocket\r\n\
                       Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== \r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\
                       Origin: http://example.com\r\n\r\n";
        assert_eq!(validate(&head(request)), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()));
    }

    #[test]
    fn invalid_handshakes_are_refused_with_their_status() {
        use HandshakeError::*;
        let replace = |from: &str, to: &str| GOOD.replacen(from, to, 1);
        let cases: Vec<(String, HandshakeError, u16)> = vec![
            (replace("GET", "POST"), NotGet, 400),
            (replace("GET", "HEAD"), NotGet, 400),
            (replace("HTTP/1.1", "HTTP/1.0"), NotHttp11, 400),
            (replace("Upgrade: websocket\r\n", ""), NoUpgradeToken, 400),
            (replace("Upgrade: websocket", "Upgrade: websocketx"), NoUpgradeToken, 400),
            (replace("Upgrade: websocket", "Upgrade: h2c"), NoUpgradeToken, 400),
            (replace("Connection: Upgrade", "Connection: keep-alive"), NoConnectionUpgrade, 400),
            (replace("Connection: Upgrade\r\n", ""), NoConnectionUpgrade, 400),
            (replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), BadKey, 400),
            // 15 and 17 bytes, unpadded, not base64, bad trailing bits, URL-safe alphabet.
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"), BadKey, 400),
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZSE="), BadKey, 400),
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"), BadKey, 400),
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZ!=="), BadKey, 400),
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="), BadKey, 400),
            (replace("dGhlIHNhbXBsZSBub25jZQ==", "-_hlIHNhbXBsZSBub25jZQ=="), BadKey, 400),
            (
                replace(
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                ),
                BadKey,
                400,
            ),
            (replace("Sec-WebSocket-Version: 13\r\n", ""), UnsupportedVersion, 426),
            (replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), UnsupportedVersion, 426),
            (replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13, 8"), UnsupportedVersion, 426),
            (
                replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13"),
                UnsupportedVersion,
                426,
            ),
        ];
        for (request, want, status) in cases {
            let got = validate(&head(&request));
            assert_eq!(got, Err(want), "{request:?}");
            assert_eq!(want.status(), status);
            assert!(!want.reason().is_empty() && want.label().starts_with("ws_"));
        }
    }

    #[test]
    fn upgrade_request_is_recognised_by_the_websocket_token() {
        let cases: &[(&str, bool)] = &[
            ("Upgrade: websocket\r\n", true),
            ("Upgrade: WEBSOCKET\r\n", true),
            ("Upgrade: h2c,websocket\r\n", true),
            ("Upgrade: h2c\r\nUpgrade: websocket\r\n", true),
            ("Upgrade: h2c\r\n", false),
            ("Upgrade: web socket\r\n", false),
            ("", false),
        ];
        for (fields, want) in cases {
            let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
            assert_eq!(is_upgrade_request(&head(&request)), *want, "{fields:?}");
        }
    }

    #[test]
    fn switching_protocols_head_is_exact() {
        let mut out = BytesMut::new();
        put_switching_protocols(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &[]);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let mut out = BytesMut::new();
        put_switching_protocols(&mut out, "x", &[("Server", "holdfast"), ("X-A", "1")]);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: x\r\nServer: holdfast\r\nX-A: 1\r\n\r\n"
        );
    }
}
