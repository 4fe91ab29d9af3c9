//! Reading HTTP/1.1 responses off a client connection, for benches that talk to any server
//! (`bench keepalive`): the head by httparse, the body framed as RFC 9112 §6.3 says (no body for
//! 1xx/204/304 or after a HEAD, else chunked, else Content-Length, else until the server closes),
//! decoded by the server's own `BodyDecoder`. It does not write requests; bytes read past one
//! response stay buffered for the next.

use bytes::{Buf, BytesMut};
use holdfast_proto::http1::{BodyDecoder, BodyFraming, Decoded};
use holdfast_proto::Limits;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Header fields parsed per response; more is an error (servers send well under this).
const MAX_HEADERS: usize = 64;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What a response said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Body bytes (decoded: without chunk framing).
    pub body_bytes: u64,
    /// Bytes read off the socket for it (head and framed body).
    pub wire_bytes: u64,
    /// Whether the connection may carry another request (RFC 9112 §9.3).
    pub keep_alive: bool,
}

/// One client connection (a TCP stream, or TLS over one) and its read buffer.
pub struct Conn<S> {
    pub stream: S,
    buf: BytesMut,
}

/// How the body after a parsed head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Decoder(BodyFraming),
    /// No length and not chunked: the body ends when the server closes (RFC 9112 §6.3 ¶8).
    UntilClose,
}

/// A parsed head: its length in the buffer, status, framing and persistence.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn { stream, buf: BytesMut::with_capacity(16 * 1024) }
    }

    /// Reads one whole response to a request with method `head_request` = HEAD or not.
    pub async fn read_response(&mut self, head_request: bool) -> Result<Answer, String> {
        let head = loop {
            if let Some(head) = parse_head(&self.buf, head_request)? {
                break head;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err("response head too large".into());
            }
            self.fill().await?.then_some(()).ok_or("closed before the response head")?;
        };
        let mut wire_bytes = head.len as u64;
        self.buf.advance(head.len);
        let mut body_bytes = 0u64;
        let mut keep_alive = head.keep_alive;
        match head.framing {
            Framing::UntilClose => {
                keep_alive = false;
                loop {
                    body_bytes += self.buf.len() as u64;
                    wire_bytes += self.buf.len() as u64;
                    self.buf.clear();
                    if !self.fill().await? {
                        break;
                    }
                }
            }
            Framing::Decoder(framing) => {
                let limits = Limits { max_body_bytes: u64::MAX, ..Limits::default() };
                let mut decoder = BodyDecoder::new(framing, &limits).map_err(|e| format!("body: {e:?}"))?;
                loop {
                    let before = self.buf.len();
                    let step = decoder.decode(&mut self.buf).map_err(|e| format!("body: {e:?}"))?;
                    wire_bytes += (before - self.buf.len()) as u64;
                    match step {
                        Decoded::Data(data) => body_bytes += data.len() as u64,
                        Decoded::End => break,
                        Decoded::NeedMore => {
                            self.fill().await?.then_some(()).ok_or("closed inside the response body")?;
                        }
                    }
                }
            }
        }
        Ok(Answer { status: head.status, body_bytes, wire_bytes, keep_alive })
    }

    /// Reads more bytes into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| format!("read: {e}"))?;
        Ok(n > 0)
    }
}

/// Parses a response head at the start of `buf`; `Ok(None)` while incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let http11 = response.version == Some(1);
    let (mut close, mut keep_alive_token, mut chunked) = (false, false, false);
    let mut length = None;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("");
        if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3 ¶4: chunked must be the final coding for the length to be known.
            chunked = value.rsplit(',').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Ok(Some(Head { len, status, framing: Framing::UntilClose, keep_alive: false }));
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.trim().parse().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length fields".into());
            }
            length = Some(n);
        }
    }
    // RFC 9112 §6.3 ¶1-2: no body after HEAD, 1xx, 204, 304; ¶3 chunked wins over a length.
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Decoder(BodyFraming::None)
    } else if chunked {
        Framing::Decoder(BodyFraming::Chunked)
    } else if let Some(n) = length {
        Framing::Decoder(BodyFraming::Length(n))
    } else {
        Framing::UntilClose
    };
    // RFC 9112 §9.3: 1.1 persists unless `close`; 1.0 only with `keep-alive`.
    let keep_alive = !close && (http11 || keep_alive_token) && framing != Framing::UntilClose;
    Ok(Some(Head { len, status, framing, keep_alive }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), false).unwrap().unwrap()
    }

    #[test]
    fn heads_give_framing_and_persistence() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        assert_eq!((h.status, h.framing, h.keep_alive), (200, Framing::Decoder(BodyFraming::Length(3)), true));
        assert_eq!(h.len, 38);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Decoder(BodyFraming::Chunked));
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 30\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Decoder(BodyFraming::None), true));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false), Ok(None));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false).is_err());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }

    #[tokio::test]
    async fn reads_chunked_and_length_bodies_split_anywhere() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n\
                           HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwxyz\
                           HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
        for split in [1, 2, 7, 50, wire.len()] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (mut s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                for piece in wire.chunks(split) {
                    s.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let mut conn = Conn::new(tokio::net::TcpStream::connect(addr).await.unwrap());
            let a = conn.read_response(false).await.unwrap();
            assert_eq!((a.status, a.body_bytes, a.keep_alive), (200, 5, true));
            let b = conn.read_response(false).await.unwrap();
            assert_eq!((b.body_bytes, b.wire_bytes, b.keep_alive), (4, 42, true));
            let c = conn.read_response(false).await.unwrap();
            assert_eq!((c.body_bytes, c.keep_alive), (13, false));
            assert_eq!(a.wire_bytes + b.wire_bytes + c.wire_bytes, wire.len() as u64);
            server.await.unwrap();
        }
    }
}
