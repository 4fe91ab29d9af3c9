//! The HTTP streaming link (SSE and NDJSON): one `GET` over a bare socket (TCP, or TLS over TCP
//! for `https://`: one code path, through `AsyncRead`/`AsyncWrite`), its response head parsed with
//! httparse, its body (chunked, Content-Length or until close) decoded by the
//! same sans-IO decoder as the server's (`holdfast_proto::http1::BodyDecoder`).
//!
//! Why not reqwest, as for polls: an open hyper response costs a connection task, an 8 KiB read
//! buffer, a write buffer and the channels between them, about 20 KB per subscription held (the
//! SDK memory bench, `bench/sdk.sh`). This link keeps the socket, a decoder of a few words and
//! the bytes of an incomplete chunk (none, most of the time): reads go through one scratch buffer
//! per thread, and what they bring is decoded and handed on at once. Over TLS, rustls adds its own
//! buffers (the record being received, the plaintext not yet read), a few more kilobytes.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use holdfast_proto::http1::{BodyDecoder, BodyFraming, Decoded};
use holdfast_proto::Limits;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::socket::{Endpoint, Socket};
use super::{usable_cursor, Ended, CURSOR_HEADER, HEARTBEAT_HEADER};
use crate::error::{self, Error};
use crate::tls::TlsOptions;

/// Largest response head accepted (the server's is about 250 B).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most of an error answer's body read (for its JSON `error` and `reason`).
const MAX_REFUSAL_BYTES: usize = 4096;
/// Bound on reading an error answer's body.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-thread read buffer: a read takes what the socket has, up to this, and keeps none of it.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// How the body ends.
enum Body {
    /// Chunked or Content-Length.
    Framed(BodyDecoder),
    /// No framing (HTTP/1.0 style): the body is everything until the server closes.
    UntilClose,
}

/// An open streaming response.
pub(crate) struct StreamLink {
    socket: Socket,
    body: Body,
    /// Bytes read and not yet decoded: an incomplete chunk-size line or chunk; empty when idle.
    pending: BytesMut,
}

/// A response head: status, the heartbeat it announced, how its body is framed.
#[derive(Debug)]
struct Head {
    status: u16,
    heartbeat: Option<Duration>,
    /// `Holdfast-Cursor`: where the subscription starts.
    cursor: Option<String>,
    framing: BodyFraming,
}

impl StreamLink {
    /// Connects (with TLS for `https://`, trusting what `tls` says), sends `GET url` with
    /// `Accept: accept`, reads the head within `connect_timeout`. An error status becomes a
    /// refusal with what its body said. Gives the link, its `Holdfast-Heartbeat` and its
    /// `Holdfast-Cursor`.
    pub(crate) async fn open(
        url: &str,
        accept: &str,
        token: Option<&str>,
        tls: &TlsOptions,
        connect_timeout: Duration,
    ) -> Result<(StreamLink, Option<Duration>, Option<String>), Error> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Error::invalid(format!("URL {url}: {e}")))?;
        let to = Endpoint::of(url)?;
        let authority = to.authority();
        let mut target = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        let mut request = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: {accept}\r\nUser-Agent: holdfast-client\r\n"
        );
        if let Some(token) = token {
            if token.bytes().any(|b| b.is_ascii_control()) {
                return Err(Error::invalid("a token with control characters"));
            }
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        let exchange = async {
            let mut socket = Socket::connect(&to, tls).await?;
            socket
                .write_all(request.as_bytes())
                .await
                .map_err(|e| Error::connect(format!("GET {url}"), Some(Box::new(e) as _)))?;
            // TLS keeps records a write could not send yet until flushed (plain TCP: a no-op).
            socket.flush().await.map_err(|e| Error::connect(format!("GET {url}"), Some(Box::new(e) as _)))?;
            let mut buf = BytesMut::with_capacity(1024);
            let head = loop {
                if read_some(&mut socket, &mut buf).await? == 0 {
                    return Err(Error::connect(format!("GET {url}: closed before an answer"), None));
                }
                if let Some((head, len)) = parse_head(&buf)? {
                    // Keep only what followed the head, in a buffer of its own size.
                    break (head, BytesMut::from(&buf[len..]));
                }
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(Error::protocol(format!("a response head over {MAX_HEAD_BYTES} bytes")));
                }
            };
            Ok::<_, Error>((socket, head))
        };
        let (socket, (head, pending)) = match tokio::time::timeout(connect_timeout, exchange).await {
            Err(_) => return Err(Error::timeout(format!("no answer from {authority} within {connect_timeout:?}"))),
            Ok(result) => result?,
        };
        // No sensible limit on a stream's length; the parsers bound each line.
        let limits = Limits { max_body_bytes: u64::MAX, ..Limits::default() };
        let body = match head.framing {
            BodyFraming::None => Body::UntilClose,
            framing => Body::Framed(
                BodyDecoder::new(framing, &limits).map_err(|_| Error::protocol("an unusable response framing"))?,
            ),
        };
        let mut link = StreamLink { socket, body, pending };
        if !(200..300).contains(&head.status) {
            return Err(link.refusal(head.status).await);
        }
        Ok((link, head.heartbeat, head.cursor))
    }

    /// Waits up to `watch` for bytes; gives the body data they complete (possibly none: an
    /// incomplete chunk). `Err(None)` when nothing came within `watch`.
    pub(crate) async fn step(&mut self, watch: Duration) -> Result<Vec<Bytes>, Option<Ended>> {
        let mut data = self.decode().map_err(Some)?;
        if !data.is_empty() {
            return Ok(data);
        }
        let read = match tokio::time::timeout(watch, read_some(&mut self.socket, &mut self.pending)).await {
            Err(_) => return Err(None),
            Ok(Err(e)) => return Err(Some(Ended::Failed(e))),
            Ok(Ok(n)) => n,
        };
        if read == 0 {
            return Err(Some(Ended::Closed("the server closed the connection".into())));
        }
        data = self.decode().map_err(Some)?;
        Ok(data)
    }

    /// Decodes what `pending` holds. The end of a framed body ends the link.
    fn decode(&mut self) -> Result<Vec<Bytes>, Ended> {
        let mut out = Vec::new();
        match &mut self.body {
            Body::UntilClose => {
                if !self.pending.is_empty() {
                    out.push(self.pending.split().freeze());
                }
            }
            Body::Framed(decoder) => loop {
                match decoder.decode(&mut self.pending) {
                    Ok(Decoded::Data(bytes)) => out.push(bytes),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) if out.is_empty() => {
                        return Err(Ended::Closed("the server ended the response".into()))
                    }
                    // The data first; the end shows on the next step.
                    Ok(Decoded::End) => break,
                    Err(_) => return Err(Ended::Failed(Error::protocol("a malformed chunked body"))),
                }
            },
        }
        if self.pending.is_empty() {
            // Give back the read's allocation: an idle link holds no buffer.
            self.pending = BytesMut::new();
        }
        Ok(out)
    }

    /// Reads a bounded part of an error answer's body and makes it a refusal.
    async fn refusal(&mut self, status: u16) -> Error {
        let mut body = Vec::new();
        let read = async {
            loop {
                match self.decode() {
                    Ok(data) => data.iter().for_each(|d| body.extend_from_slice(d)),
                    Err(_) => return,
                }
                let done = matches!(&self.body, Body::Framed(decoder) if decoder.is_done());
                if done || body.len() >= MAX_REFUSAL_BYTES {
                    return;
                }
                match read_some(&mut self.socket, &mut self.pending).await {
                    Ok(0) | Err(_) => {
                        if let Ok(data) = self.decode() {
                            data.iter().for_each(|d| body.extend_from_slice(d));
                        }
                        return;
                    }
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, read).await;
        body.truncate(MAX_REFUSAL_BYTES);
        error::from_answer(status, &body)
    }
}

/// Waits until the socket has bytes, then appends them (read through the thread's scratch
/// buffer, borrowed only within one poll) to `buf`. Gives the byte count, 0 at end of stream.
async fn read_some<S: AsyncRead + Unpin>(socket: &mut S, buf: &mut BytesMut) -> Result<usize, Error> {
    let read = std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut into = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *socket).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(into.filled());
                    Poll::Ready(Ok(into.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    });
    read.await.map_err(|e| match error::rustls_cause(&e) {
        // A TLS alert or a corrupt record mid-stream: the link failed (retried like a reset).
        Some(tls) => Error::connect(format!("reading the stream: TLS: {tls}"), None),
        None => Error::connect("reading the stream", Some(Box::new(e) as _)),
    })
}

/// Parses a complete response head at the front of `buf`; gives it and its length.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::protocol(format!("a malformed response head: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let (mut heartbeat, mut chunked, mut length, mut cursor) = (None, false, None, None);
    for field in response.headers.iter() {
        let value = std::str::from_utf8(field.value).unwrap_or("").trim();
        if field.name.eq_ignore_ascii_case(HEARTBEAT_HEADER) {
            heartbeat = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
        } else if field.name.eq_ignore_ascii_case(CURSOR_HEADER) {
            cursor = usable_cursor(value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3 ¶4: chunked, when last, frames the body (and wins over a length).
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| Error::protocol("a malformed Content-Length"))?);
        }
    }
    let framing = match (chunked, length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::None,
    };
    let heartbeat = heartbeat.map(|v| Duration::from_secs_f64(v.min(86_400.0)));
    Ok(Some((Head { status, heartbeat, cursor, framing }, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_heartbeat_and_framing() {
        let head = b"HTTP/1.1 200 OK\r\nHoldfast-Heartbeat: 2.5\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        let (parsed, len) = parse_head(head).unwrap().unwrap();
        assert_eq!(&head[len..], b"rest");
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.heartbeat, Some(Duration::from_millis(2500)));
        assert_eq!(parsed.framing, BodyFraming::Chunked);
        let (parsed, _) = parse_head(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\n").unwrap().unwrap();
        assert_eq!((parsed.status, parsed.framing, parsed.heartbeat), (400, BodyFraming::Length(7), None));
        let (parsed, _) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(parsed.framing, BodyFraming::None);
        for cut in 0..head.len() - 4 {
            assert!(parse_head(&head[..cut]).unwrap().is_none(), "complete at {cut}?");
        }
        assert!(parse_head(b"NOPE\r\n\r\n").unwrap_err().is_protocol());
    }
}
