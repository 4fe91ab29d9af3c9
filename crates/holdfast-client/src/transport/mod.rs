//! The transports: building `/sub` requests, opening a streaming link (SSE or NDJSON over HTTP,
//! WebSocket) and reading it one step at a time, and single polls. What to do when a link ends
//! (backoff, failover, the heartbeat search) is the subscriber's.

mod envelope;
mod ndjson;
mod socket;
mod sse;
mod stream;
mod ws;

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::error::{self, Error};
use crate::event::{Event, Transport};
use crate::tls::TlsOptions;

pub(crate) use envelope::poll_answer;

/// The response field giving the heartbeat interval in seconds (the server contract).
pub(crate) const HEARTBEAT_HEADER: &str = "holdfast-heartbeat";
/// Where a streaming subscription starts (a cursor), on its response head or 101.
pub(crate) const CURSOR_HEADER: &str = "holdfast-cursor";

/// Longest line (SSE field or NDJSON envelope) accepted: above the largest message the server
/// takes by default (`max_body_bytes` 1 MiB, as base64 or escaped JSON), bounded so that a broken
/// peer cannot make one subscriber hold unbounded memory.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

/// A line buffer that gives its memory back once a long line is done: 10,000 idle subscribers
/// should not each keep the capacity of the largest message they ever saw.
const KEEP_LINE_CAPACITY: usize = 1024;

/// What a link yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A heartbeat (SSE comment, empty NDJSON line, WebSocket ping): the link survived an interval
    /// of silence.
    Heartbeat,
    /// An event, and the cursor to resume after it (when it carries one).
    Event(Event, Option<String>),
}

/// Splits bytes into lines ending in LF, CRLF or CR (SSE allows all three; NDJSON uses LF).
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    line: Vec<u8>,
    /// The previous byte was a CR: a following LF belongs to the same line end.
    after_cr: bool,
}

impl LineBuffer {
    /// The next complete line from `rest` (advancing it), or `None` when `rest` ran out mid-line.
    fn next_line(&mut self, rest: &mut &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if rest.is_empty() {
            return Ok(None);
        }
        if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
            *rest = &rest[1..];
        }
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                self.after_cr = rest[i] == b'\r';
                let line = if self.line.is_empty() {
                    rest[..i].to_vec()
                } else {
                    self.line.extend_from_slice(&rest[..i]);
                    let line = std::mem::take(&mut self.line);
                    if line.capacity() <= KEEP_LINE_CAPACITY {
                        self.line = Vec::with_capacity(line.capacity());
                    }
                    line
                };
                *rest = &rest[i + 1..];
                if self.after_cr && rest.first() == Some(&b'\n') {
                    *rest = &rest[1..];
                    self.after_cr = false;
                }
                Ok(Some(line))
            }
            None => {
                if self.line.len() + rest.len() > MAX_LINE_BYTES {
                    return Err(Error::protocol(format!("a line longer than {MAX_LINE_BYTES} bytes")));
                }
                self.line.extend_from_slice(rest);
                *rest = &[];
                Ok(None)
            }
        }
    }
}

/// What a `/sub` request asks for.
#[derive(Debug, Clone)]
pub(crate) struct SubRequest<'a> {
    /// The server's base URL (`http[s]://host:port`, no trailing slash).
    pub server: &'a str,
    /// The channel list as the path names it (`a,b`, each percent-encoded).
    pub channels: &'a str,
    pub cursor: Option<&'a str>,
    pub history: Option<u32>,
    pub heartbeat: Option<Duration>,
    /// The access token, sent as `Authorization: Bearer` (never in the URL, which logs keep).
    pub token: Option<&'a str>,
}

impl SubRequest<'_> {
    /// The URL for `transport` (the WebSocket one with a `ws://` or `wss://` scheme).
    pub(crate) fn url(&self, transport: Transport) -> String {
        let mut url = format!("{}/sub/{}", self.server, self.channels);
        let mut sep = '?';
        let mut param = |name: &str, value: &str| {
            url.push(sep);
            url.push_str(name);
            url.push('=');
            url.push_str(&percent_encode(value));
            sep = '&';
        };
        match transport {
            Transport::Ws => {}
            other => param("transport", other.name()),
        }
        if let Some(cursor) = self.cursor {
            param("cursor", cursor);
        }
        if let Some(history) = self.history {
            param("history", &history.to_string());
        }
        if let Some(heartbeat) = self.heartbeat.filter(|_| transport.is_streaming()) {
            param("heartbeat", &crate::heartbeat::seconds_text(heartbeat));
        }
        if transport == Transport::Ws {
            if let Some(rest) = url.strip_prefix("http://") {
                return format!("ws://{rest}");
            }
            if let Some(rest) = url.strip_prefix("https://") {
                return format!("wss://{rest}");
            }
        }
        url
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (channel names, events and
/// cursors need none of it today, but a caller's typo should fail as `bad_channel`, not as a
/// different request).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The base URL of a server as given (`http://host:port` or `https://host:port`, a trailing `/`
/// dropped).
pub(crate) fn normalize_server(server: &str) -> Result<String, Error> {
    let url = reqwest::Url::parse(server).map_err(|e| Error::invalid(format!("server URL {server:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::invalid(format!("server URL {server:?}: only http[s]://host[:port] is supported")));
    }
    Ok(server.trim_end_matches('/').to_string())
}

/// The `Holdfast-Heartbeat` value (seconds, fractions allowed).
/// The `Holdfast-Cursor` value, if there is a usable one.
pub(crate) fn cursor_header(headers: &HeaderMap) -> Option<String> {
    usable_cursor(headers.get(CURSOR_HEADER)?.to_str().ok()?)
}

/// A cursor as announced: non-empty, URL-safe (it goes back in `?cursor=`).
pub(crate) fn usable_cursor(value: &str) -> Option<String> {
    let value = value.trim();
    let safe = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b','));
    (!value.is_empty() && safe).then(|| value.to_string())
}

pub(crate) fn heartbeat_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(HEARTBEAT_HEADER)?.to_str().ok()?.trim().parse::<f64>().ok()?;
    (value.is_finite() && value > 0.0).then(|| Duration::from_secs_f64(value.min(86_400.0)))
}

/// Turns an error answer into a refusal (reading a bounded part of its body).
pub(crate) async fn refusal(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes()).await;
    let body = match &body {
        Ok(Ok(bytes)) => &bytes[..bytes.len().min(4096)],
        _ => &[][..],
    };
    error::from_answer(status, body)
}

/// One parser per streaming HTTP transport.
#[derive(Debug)]
enum Decoder {
    Sse(sse::SseParser),
    Ndjson(ndjson::NdjsonParser),
}

/// An open streaming link.
pub(crate) struct Link {
    kind: LinkKind,
    /// The heartbeat interval the server announced (`Holdfast-Heartbeat`), if it did.
    pub announced: Option<Duration>,
    /// Where the subscription starts (`Holdfast-Cursor`), if the server said.
    pub start: Option<String>,
}

enum LinkKind {
    Http { stream: stream::StreamLink, decoder: Decoder },
    Ws(ws::WsLink),
}

/// How a link's step ended when it did not just yield items.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The server ended the response or closed the socket (after a notice, or not).
    Closed(String),
    /// An error (reset, protocol violation, a WebSocket error op).
    Failed(Error),
    /// The server ended the link because its token expired (WebSocket close 4003; the streaming
    /// transports say it with a `holdfast.closed` notice, seen by the subscriber).
    TokenExpired,
}

impl Link {
    /// Opens a streaming link (SSE, NDJSON or WebSocket) and reads its response head, within
    /// `connect_timeout`.
    pub(crate) async fn open(
        transport: Transport,
        request: &SubRequest<'_>,
        tls: &TlsOptions,
        connect_timeout: Duration,
    ) -> Result<Link, Error> {
        let url = request.url(transport);
        if transport == Transport::Ws {
            let (link, announced, start) = ws::WsLink::open(&url, request.token, tls, connect_timeout).await?;
            return Ok(Link { kind: LinkKind::Ws(link), announced, start });
        }
        let (accept, decoder) = match transport {
            Transport::Sse => ("text/event-stream", Decoder::Sse(sse::SseParser::default())),
            _ => ("application/x-ndjson", Decoder::Ndjson(ndjson::NdjsonParser::default())),
        };
        let (stream, announced, start) =
            stream::StreamLink::open(&url, accept, request.token, tls, connect_timeout).await?;
        Ok(Link { kind: LinkKind::Http { stream, decoder }, announced, start })
    }

    /// Waits up to `watch` for bytes and pushes what they complete. `Err(None)` when nothing came
    /// within `watch` (the heartbeat watch fired).
    pub(crate) async fn step(
        &mut self,
        channel: &str,
        watch: Duration,
        out: &mut Vec<Item>,
    ) -> Result<(), Option<Ended>> {
        match &mut self.kind {
            LinkKind::Http { stream, decoder } => {
                for chunk in stream.step(watch).await? {
                    let parsed = match decoder {
                        Decoder::Sse(parser) => parser.feed(&chunk, channel, out),
                        Decoder::Ndjson(parser) => parser.feed(&chunk, channel, out),
                    };
                    parsed.map_err(|e| Some(Ended::Failed(e)))?;
                }
                Ok(())
            }
            LinkKind::Ws(link) => link.step(channel, watch, out).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_transport_cursor_history_and_heartbeat() {
        let r = SubRequest {
            server: "http://127.0.0.1:7700",
            channels: "a,b",
            cursor: Some("xy_z-"),
            history: Some(3),
            heartbeat: Some(Duration::from_millis(5500)),
            token: Some("secret"),
        };
        assert_eq!(
            r.url(Transport::Sse),
            "http://127.0.0.1:7700/sub/a,b?transport=sse&cursor=xy_z-&history=3&heartbeat=5.5"
        );
        assert_eq!(r.url(Transport::Ws), "ws://127.0.0.1:7700/sub/a,b?cursor=xy_z-&history=3&heartbeat=5.5");
        assert_eq!(
            r.url(Transport::LongPoll),
            "http://127.0.0.1:7700/sub/a,b?transport=longpoll&cursor=xy_z-&history=3"
        );
    }

    #[test]
    fn percent_encoding_leaves_unreserved_bytes() {
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(percent_encode("a b:c@d"), "a%20b%3Ac%40d");
    }

    #[test]
    fn servers_are_http_or_https_roots() {
        assert_eq!(normalize_server("http://127.0.0.1:7700/").unwrap(), "http://127.0.0.1:7700");
        assert_eq!(normalize_server("https://example.com").unwrap(), "https://example.com");
        assert_eq!(normalize_server("https://[::1]:7700/").unwrap(), "https://[::1]:7700");
        for bad in ["nonsense", "ws://example.com", "ftp://example.com"] {
            assert!(normalize_server(bad).unwrap_err().is_invalid(), "{bad}");
        }
    }

    #[test]
    fn websocket_urls_follow_the_scheme() {
        let r = SubRequest {
            server: "https://h:1",
            channels: "a",
            cursor: None,
            history: None,
            heartbeat: None,
            token: None,
        };
        assert_eq!(r.url(Transport::Ws), "wss://h:1/sub/a");
        assert_eq!(r.url(Transport::Sse), "https://h:1/sub/a?transport=sse");
    }

    #[test]
    fn lines_end_in_lf_crlf_or_cr_across_feeds() {
        let mut lines = LineBuffer::default();
        let mut got = Vec::new();
        for piece in [&b"a\r"[..], b"\nb\rc", b"\n", b"\r\n"] {
            let mut rest = piece;
            while let Some(line) = lines.next_line(&mut rest).unwrap() {
                got.push(String::from_utf8(line).unwrap());
            }
        }
        assert_eq!(got, ["a", "b", "c", ""]);
    }
}
