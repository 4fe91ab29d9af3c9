//! The request head: request line and header fields, parsed by `httparse` and checked against
//! [`Limits`] and the header rules of RFC 9112 §3.2 (Host), §6 (framing) and RFC 9110 §10.1.1
//! (Expect).
//!
//! What it does not own: the body (see [`super::decode`]) and what to answer (the server's router).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::framing::{request_framing, BodyFraming};
use super::keepalive::ConnectionOptions;
use crate::{Limits, ParseError};

/// The most header fields the parser can hold; `Limits::max_headers` may only lower it.
/// httparse needs a fixed array; 128 × 32 B lives on the stack of a synchronous call only.
pub const MAX_HEADERS_CAP: usize = 128;

/// The request methods Holdfast routes on; anything else keeps its bytes in [`RequestHead::method_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD: answered with GET's headers and no body.
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS (CORS preflight)
    Options,
    /// PATCH
    Patch,
    /// Any other token (CONNECT, TRACE, extension methods).
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// The protocol version of a request. Only these two are accepted (others → 505).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// A parsed, validated request head. It owns the head's bytes (one `Bytes`) and indexes into them,
/// so parsing allocates only the small index vector.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Bytes,
    method: Method,
    method_range: Range<u32>,
    target: Range<u32>,
    version: Version,
    headers: Vec<(Range<u32>, Range<u32>)>,
    /// How the body that follows is delimited (already validated).
    pub framing: BodyFraming,
    /// The tokens of every `Connection` field.
    pub connection: ConnectionOptions,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0, RFC 9110 §10.1.1).
    pub expects_continue: bool,
}

impl RequestHead {
    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method token as sent.
    pub fn method_str(&self) -> &str {
        // httparse only accepts tchar in the method, which is ASCII.
        std::str::from_utf8(self.slice(&self.method_range)).unwrap_or("")
    }

    /// The request-target as sent (origin-form `/path?query` for everything Holdfast serves).
    pub fn target(&self) -> &str {
        // httparse accepts bytes ≥ 0x80 in the target; a non-UTF-8 target reads as empty, which
        // routes to 404 rather than panicking.
        std::str::from_utf8(self.slice(&self.target)).unwrap_or("")
    }

    /// The path part of the target (before `?`). For an absolute-form target
    /// (`http://host/path`, RFC 9112 §3.2.2, which servers must accept) it is the path after the
    /// authority (`/` when there is none), so every handler sees the same path either way.
    pub fn path(&self) -> &str {
        let target = self.target();
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        for scheme in ["http://", "https://"] {
            // `get`, not indexing: the target may hold multi-byte UTF-8 where the scheme would end.
            if path.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme)) {
                let rest = &path[scheme.len()..];
                return rest.find('/').map_or("/", |i| &rest[i..]);
            }
        }
        path
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, query)| query)
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The first value of a header field, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find_map(|(n, v)| self.slice(n).eq_ignore_ascii_case(name.as_bytes()).then(|| self.slice(v)))
    }

    /// Every value of a header field, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every header field as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| {
            // Header names are tchar (ASCII), checked by httparse.
            let name = std::str::from_utf8(self.slice(n)).unwrap_or("");
            (name, self.slice(v))
        })
    }

    /// The size of the head on the wire.
    pub fn wire_len(&self) -> usize {
        self.raw.len()
    }

    fn slice(&self, range: &Range<u32>) -> &[u8] {
        &self.raw[range.start as usize..range.end as usize]
    }
}

/// Parses one request head from the front of `buf`.
///
/// - `Ok(Some(head))`: a complete head was taken off `buf`; any body or pipelined request stays.
/// - `Ok(None)`: the head is incomplete and within limits; read more and call again.
/// - `Err(e)`: the request must be refused with `e.status()` and the connection closed.
pub fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, ParseError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    // Uninitialised slots: zeroing 128 headers (4 KiB) per call was a measurable share of a
    // keep-alive request's CPU time.
    let mut header_slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let window = limit_window(buf, limits);
    let status = match req.parse_with_uninit_headers(window, &mut header_slots[..max_headers]) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadersTooLarge),
        Err(httparse::Error::Version) => match version_error(window) {
            Some(e) => return Err(e),
            None => {
                check_partial_limits(window, limits)?;
                return Ok(None);
            }
        },
        Err(_) => return Err(ParseError::Syntax),
    };
    let head_len = match status {
        httparse::Status::Partial => {
            check_partial_limits(window, limits)?;
            return Ok(None);
        }
        httparse::Status::Complete(len) => len,
    };
    if head_len > limits.max_header_bytes {
        return Err(over_limit(window, limits));
    }

    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let range = |s: &[u8]| {
        let start = offset(s);
        start..start + s.len() as u32
    };

    // All three are Some on Complete.
    let method_token = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    if target.len() > limits.max_uri_bytes {
        return Err(ParseError::UriTooLong);
    }
    let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };

    let mut headers = Vec::with_capacity(req.headers.len());
    let mut hosts = 0;
    let mut expect: Option<&[u8]> = None;
    let mut connection = ConnectionOptions::default();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add_field(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect = Some(h.value);
        }
        headers.push((range(name.as_bytes()), range(h.value)));
    }
    // RFC 9112 §3.2 ¶6: a 1.1 request without Host, or any request with several, gets 400.
    if hosts > 1 {
        return Err(ParseError::DuplicateHost);
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(ParseError::MissingHost);
    }
    let framing = request_framing(version, req.headers.iter().map(|h| (h.name, h.value)))?;
    // RFC 9110 §10.1.1: 100-continue is the only expectation defined; a 1.0 request's Expect is
    // ignored because a 1.0 client cannot understand a 100 response.
    let expects_continue = match expect {
        Some(value) if version == Version::Http11 => {
            if trim_ows(value).eq_ignore_ascii_case(b"100-continue") {
                true
            } else {
                return Err(ParseError::UnsupportedExpectation);
            }
        }
        _ => false,
    };

    let method_range = range(method_token.as_bytes());
    let target = range(target.as_bytes());
    let method = Method::from_token(method_token);
    let raw = buf.split_to(head_len).freeze();
    Ok(Some(RequestHead { raw, method, method_range, target, version, headers, framing, connection, expects_continue }))
}

/// A request line longer than the longest target plus method and version ("GET " … " HTTP/1.1")
/// is a 414 even before the headers begin.
const LINE_OVERHEAD: usize = 32;

/// The front of `buf` that parsing may look at: up to the first byte past a limit. A head that
/// breaks a limit before it ends or turns out malformed is refused for the limit, whether its
/// bytes arrived at once or a few at a time (found by fuzzing: a long request line with bad bytes
/// further on was a 400 whole but a 414 when it arrived in pieces).
fn limit_window<'a>(buf: &'a [u8], limits: &Limits) -> &'a [u8] {
    let mut len = buf.len().min(limits.max_header_bytes.saturating_add(1));
    let line_len = len.min(limits.max_uri_bytes.saturating_add(LINE_OVERHEAD + 1));
    if memchr_newline(&buf[..line_len]).is_none() {
        len = line_len;
    }
    &buf[..len]
}

/// While the head is incomplete, refuse it as soon as it is already too long, so a peer cannot make
/// the server buffer more than the limit.
fn check_partial_limits(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let line_done = memchr_newline(buf).is_some();
    if !line_done && buf.len() > limits.max_uri_bytes + LINE_OVERHEAD {
        return Err(ParseError::UriTooLong);
    }
    if buf.len() > limits.max_header_bytes {
        return Err(over_limit(buf, limits));
    }
    Ok(())
}

fn over_limit(buf: &[u8], limits: &Limits) -> ParseError {
    match memchr_newline(buf) {
        // The request line itself did not fit.
        None => ParseError::UriTooLong,
        Some(end) if end > limits.max_uri_bytes => ParseError::UriTooLong,
        Some(_) => ParseError::HeadersTooLarge,
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// httparse reports any version other than 1.0/1.1 as an error. A well-formed `HTTP/<digit>…`
/// (HTTP/2.0, HTTP/1.2, HTTP/3) deserves 505; anything else is a syntax error. `None` while the
/// line is incomplete and could still become `HTTP/<digit>` (httparse may fail on a prefix).
fn version_error(buf: &[u8]) -> Option<ParseError> {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    // request-line = method SP request-target SP HTTP-version: the version is the third part,
    // and a space inside it (e.g. a target with a space) is a syntax error.
    let token = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    // HTTP-version is `"HTTP/" DIGIT "." DIGIT` (RFC 9112 §2.3); httparse rejects it at its first
    // byte that cannot continue "HTTP/1.0" or "HTTP/1.1". Judge only the bytes up to that one: the
    // rest may not have arrived yet, and the answer must not depend on how the bytes came in
    // (found by fuzzing).
    let matched = token.iter().zip(b"HTTP/1.").take_while(|(a, b)| a == b).count();
    let token = &token[..token.len().min(matched + 1)];
    if token.contains(&b' ') {
        return Some(ParseError::Syntax);
    }
    match token {
        [b'H', b'T', b'T', b'P', b'/', d, ..] if d.is_ascii_digit() => Some(ParseError::UnsupportedVersion),
        _ if line_end.is_none() && b"HTTP/".starts_with(token) => None,
        _ => Some(ParseError::Syntax),
    }
}

/// Trims optional whitespace (SP / HTAB, RFC 9110 §5.6.3) at both ends.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_whole(input: &[u8]) -> Result<Option<RequestHead>, ParseError> {
        parse_whole_with(input, &Limits::default())
    }

    fn parse_whole_with(input: &[u8], limits: &Limits) -> Result<Option<RequestHead>, ParseError> {
        let mut buf = BytesMut::from(input);
        parse_request(&mut buf, limits)
    }

    /// Feeds `input` in two parts split at every offset: the parser must give the same answer as
    /// with the whole input, and say "need more" (never a different error) for the first part.
    fn assert_split_consistent(input: &[u8], limits: &Limits) -> Result<Option<RequestHead>, ParseError> {
        let whole = parse_whole_with(input, limits);
        for split in 0..input.len() {
            let mut buf = BytesMut::from(&input[..split]);
            match parse_request(&mut buf, limits) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("complete at split {split} of {:?}", String::from_utf8_lossy(input)),
                Err(e) => {
                    // An early error must be the same error the whole input gets.
                    assert_eq!(Err(e), whole.as_ref().map(|_| ()).map_err(|e| *e), "split {split}");
                    return whole;
                }
            }
            buf.extend_from_slice(&input[split..]);
            let got = parse_request(&mut buf, limits);
            match (&got, &whole) {
                (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a.target(), b.target()),
                (Err(a), Err(b)) => assert_eq!(a, b, "split {split}"),
                (Ok(None), Ok(None)) => {}
                _ => panic!("split {split}: {:?} vs {:?}", got.is_ok(), whole.is_ok()),
            }
        }
        whole
    }

    fn status_of(input: &[u8]) -> u16 {
        match assert_split_consistent(input, &Limits::default()) {
            Err(e) => e.status(),
            Ok(Some(_)) => 0,
            Ok(None) => 1,
        }
    }

    #[test]
    fn absolute_form_targets_have_the_origin_path() {
        for (target, path, query) in [
            ("http://example.com/pub/room?event=x", "/pub/room", Some("event=x")),
            ("HTTPS://example.com:8443/sub/a,b", "/sub/a,b", None),
            ("http://example.com", "/", None),
            ("http://example.com?x=1", "/", Some("x=1")),
            ("/healthz", "/healthz", None),
            // Found by the fuzzer: multi-byte UTF-8 across the scheme's length panicked.
            ("H=TT\u{44f}\u{48b}", "H=TT\u{44f}\u{48b}", None),
            ("http:/\u{44f}x", "http:/\u{44f}x", None),
        ] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n");
            let head = assert_split_consistent(request.as_bytes(), &Limits::default()).unwrap().unwrap();
            assert_eq!((head.path(), head.query()), (path, query), "{target}");
        }
    }

    #[test]
    fn simple_get_parses_with_headers() {
        let head = assert_split_consistent(
            b"GET /sub/a?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing: one\r\nx-thing: two\r\n\r\n",
            &Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.method(), Method::Get);
        assert_eq!(head.path(), "/sub/a");
        assert_eq!(head.query(), Some("x=1"));
        assert_eq!(head.version(), Version::Http11);
        assert_eq!(head.headers_named("X-THING").collect::<Vec<_>>(), vec![&b"one"[..], b"two"]);
        assert_eq!(head.framing, BodyFraming::None);
    }

    #[test]
    fn parse_leaves_body_and_pipelined_bytes_in_buffer() {
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET"[..]);
        let head = parse_request(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert_eq!(&buf[..], b"abcGET");
    }

    #[test]
    fn http10_without_host_is_accepted() {
        assert_eq!(status_of(b"GET / HTTP/1.0\r\n\r\n"), 0);
    }

    #[test]
    fn malformed_requests_get_their_status() {
        let cases: &[(&[u8], u16)] = &[
            // missing / duplicate Host
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            // versions
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / FOO\r\nHost: a\r\n\r\n", 400),
            // bare CR, obs-fold, whitespace before the colon
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\t: b\r\n\r\n", 400),
            // NUL in a value, no method, spaces in target
            (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
            (b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            // framing (details in framing.rs)
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            // expectations
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        ];
        for (input, want) in cases {
            assert_eq!(status_of(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn bad_version_is_judged_where_httparse_rejects_it() {
        // Fuzz regressions: the whole line gave 400 (a space further on) while a prefix that
        // httparse already rejected gave 505, so the status depended on how the bytes arrived.
        assert_eq!(status_of(b"P / HTTP/1ic  "), 505);
        assert_eq!(status_of(b"POST /p HTTP/2. \0\0-\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/1.x y\r\nHost: a\r\n\r\n"), 505);
        // A space before that byte is still a syntax error.
        assert_eq!(status_of(b"GET / HTTP/1 1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn expect_continue_is_recognised_on_11_and_ignored_on_10() {
        let head = parse_whole(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.expects_continue);
        let head =
            parse_whole(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap().unwrap();
        assert!(!head.expects_continue);
        // An unknown expectation on 1.0 is ignored too.
        assert!(parse_whole(b"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn long_target_is_414_and_big_head_is_431() {
        let limits = Limits { max_uri_bytes: 64, max_header_bytes: 256, ..Limits::default() };
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
        assert_eq!(assert_split_consistent(long_target.as_bytes(), &limits).unwrap_err().status(), 414);
        let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(300));
        assert_eq!(assert_split_consistent(big_head.as_bytes(), &limits).unwrap_err().status(), 431);
        // An endless request line is refused without waiting for its end.
        let endless = format!("GET /{}", "a".repeat(200));
        assert_eq!(parse_whole_with(endless.as_bytes(), &limits).unwrap_err().status(), 414);
        // Endless headers are refused once past the limit.
        let endless = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "b".repeat(300));
        assert_eq!(parse_whole_with(endless.as_bytes(), &limits).unwrap_err().status(), 431);
    }

    #[test]
    fn long_request_line_is_414_however_it_arrives() {
        // Fuzz regression: a request line past max_uri_bytes + LINE_OVERHEAD (here through a long
        // method) was a 414 when read in pieces but a 400 (bad byte further on) or even accepted
        // (short target) when read at once.
        let limits = Limits { max_uri_bytes: 256, max_header_bytes: 1024, ..Limits::default() };
        let method = "s".repeat(356);
        let bad_later = format!("{method}`P/p H\0\0OS");
        assert_eq!(assert_split_consistent(bad_later.as_bytes(), &limits).unwrap_err().status(), 414);
        let short_target = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(assert_split_consistent(short_target.as_bytes(), &limits).unwrap_err().status(), 414);
        // A line that fits is unaffected.
        let fits = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "s".repeat(270));
        assert!(assert_split_consistent(fits.as_bytes(), &limits).unwrap().is_some());
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits { max_headers: 4, ..Limits::default() };
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(assert_split_consistent(input, &limits).unwrap_err().status(), 431);
    }

    #[test]
    fn connection_tokens_are_read_from_every_field() {
        let head =
            parse_whole(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: Keep-Alive, CLOSE\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(head.connection.close);
        assert!(head.connection.keep_alive);
    }
}
