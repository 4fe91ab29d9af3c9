//! Response heads, chunk framing and the cached `Date` header.
//!
//! Heads are written straight into a `BytesMut` the caller then sends (with the body, in one
//! vectored write). Nothing here decides *what* to answer; it only spells it correctly.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use super::keepalive::Persistence;
use super::request::Version;

/// The reason phrase for the status codes Holdfast sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a response head: status line, `Date`, the caller's fields, and the connection fields
/// that follow from a [`Persistence`] decision. Finish with [`ResponseHead::finish`].
pub struct ResponseHead<'a> {
    out: &'a mut BytesMut,
}

impl<'a> ResponseHead<'a> {
    /// Starts a head with the status line and `Date`. Responses are always sent as HTTP/1.1
    /// (RFC 9110 §6.2: the server's highest version), also to 1.0 clients.
    pub fn new(out: &'a mut BytesMut, status: u16) -> ResponseHead<'a> {
        out.reserve(256);
        out.put_slice(b"HTTP/1.1 ");
        put_decimal(out, u64::from(status));
        out.put_u8(b' ');
        out.put_slice(reason_phrase(status).as_bytes());
        out.put_slice(b"\r\nDate: ");
        with_http_date(|date| out.put_slice(date));
        out.put_slice(b"\r\n");
        ResponseHead { out }
    }

    /// Adds one header field. The caller passes names and values that are valid field syntax.
    pub fn header(self, name: &str, value: &[u8]) -> Self {
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
        self
    }

    /// Adds `Content-Length`.
    pub fn content_length(self, len: u64) -> Self {
        self.out.put_slice(b"Content-Length: ");
        put_decimal(self.out, len);
        self.out.put_slice(b"\r\n");
        self
    }

    /// Adds the fields that announce the connection's fate (RFC 9112 §9.3, RFC 2068 §19.7.1):
    /// `Connection: close`, or `Keep-Alive: timeout=…, max=…` plus `Connection: keep-alive` for a
    /// 1.0 client, which would otherwise assume close.
    pub fn persistence(self, persistence: Persistence, version: Version, keepalive_timeout_secs: u64) -> Self {
        match persistence {
            Persistence::Close => {
                self.out.put_slice(b"Connection: close\r\n");
            }
            Persistence::KeepAlive { requests_left } => {
                if version == Version::Http10 {
                    self.out.put_slice(b"Connection: keep-alive\r\n");
                }
                self.out.put_slice(b"Keep-Alive: timeout=");
                put_decimal(self.out, keepalive_timeout_secs);
                self.out.put_slice(b", max=");
                put_decimal(self.out, u64::from(requests_left));
                self.out.put_slice(b"\r\n");
            }
        }
        self
    }

    /// Ends the head with the empty line.
    pub fn finish(self) {
        self.out.put_slice(b"\r\n");
    }
}

/// Writes the prefix of one chunk (`<hex size>\r\n`) for a body sent chunked.
pub fn put_chunk_prefix(out: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

/// The chunk suffix, written after each chunk's data.
pub const CHUNK_SUFFIX: &[u8] = b"\r\n";

/// The last chunk with no trailers: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// The IMF-fixdate of the current second, formatted once per second per thread (RFC 9110 §6.6.1
/// wants one per response; formatting it per response is measurable at 100k responses/s).
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    /// "Sun, 06 Nov 1994 08:49:37 GMT" is 29 bytes.
    const DATE_LEN: usize = 29;
    thread_local! {
        static CACHE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            let mut text = [0u8; DATE_LEN];
            let formatted = httpdate::fmt_http_date(now);
            let _ = (&mut text[..]).write_all(formatted.as_bytes());
            *cache = (second, text);
        }
        f(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_text(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut out = BytesMut::new();
        f(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn keep_alive_head_for_11() {
        let text = head_text(|out| {
            ResponseHead::new(out, 200)
                .content_length(2)
                .persistence(Persistence::KeepAlive { requests_left: 99 }, Version::Http11, 75)
                .finish()
        });
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{text}");
        assert!(text.ends_with("GMT\r\nContent-Length: 2\r\nKeep-Alive: timeout=75, max=99\r\n\r\n"), "{text}");
        assert!(!text.contains("Connection:"));
    }

    #[test]
    fn keep_alive_head_for_10_says_connection_keep_alive() {
        let text = head_text(|out| {
            ResponseHead::new(out, 404)
                .persistence(Persistence::KeepAlive { requests_left: 1 }, Version::Http10, 5)
                .finish()
        });
        assert!(text.contains("\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=1\r\n\r\n"), "{text}");
    }

    #[test]
    fn close_head_says_close() {
        let text =
            head_text(|out| ResponseHead::new(out, 400).persistence(Persistence::Close, Version::Http11, 75).finish());
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn chunk_prefix_is_lowercase_hex() {
        for (len, want) in [(0, "0\r\n"), (1, "1\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
            assert_eq!(head_text(|out| put_chunk_prefix(out, len)), want);
        }
    }

    #[test]
    fn date_is_imf_fixdate() {
        let date = with_http_date(|d| String::from_utf8(d.to_vec()).unwrap());
        assert_eq!(date.len(), 29);
        assert!(date.ends_with(" GMT"));
        assert!(httpdate::parse_http_date(&date).is_ok());
    }
}
