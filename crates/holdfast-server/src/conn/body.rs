//! Reading or discarding a request body, with `Expect: 100-continue` handled before the first
//! body byte is read (RFC 9110 §10.1.1).

use crate::socket::TaskLink;
use bytes::{Bytes, BytesMut};
use holdfast_proto::http1::{BodyDecoder, BodyFraming, Decoded, RequestHead};
use holdfast_proto::ParseError;
use tokio::time::Instant;

use crate::socket::io::{read_more, write_all, Read, Write};
use crate::Server;

/// Body bytes read and thrown away so a connection can carry its next request; a longer unread
/// body closes the connection instead (nginx's lingering/discard logic bounds it the same way).
const DISCARD_LIMIT: u64 = 64 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What became of the body.
pub(crate) enum Body {
    /// The handler gets these bytes (empty when there was no body).
    Read(Bytes),
    /// Read and discarded; the connection may carry another request.
    Discarded,
    /// Left unread (too long to discard, or a 100-continue we chose not to answer): the
    /// connection must close after the response.
    Unread,
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// Refuse with this error's status, then close.
    Refuse(ParseError),
    /// The body stalled past `body_timeout`: 408, then close.
    Timeout,
    /// The peer went away mid-body.
    Aborted,
}

/// Reads the body into memory when `keep`, else discards it within [`DISCARD_LIMIT`].
pub(crate) async fn consume(
    stream: &mut TaskLink,
    server: &Server,
    head: &RequestHead,
    keep: bool,
    buf: &mut BytesMut,
) -> Result<Body, BodyError> {
    if head.framing == BodyFraming::None {
        return Ok(Body::Read(Bytes::new()));
    }
    let mut limits = server.limits();
    if !keep {
        if let BodyFraming::Length(n) = head.framing {
            if n > DISCARD_LIMIT {
                return Ok(Body::Unread);
            }
        }
        // A client waiting for 100 may or may not send the body; we cannot tell where the next
        // request would start, so answer now and close.
        if head.expects_continue && buf.is_empty() {
            return Ok(Body::Unread);
        }
        limits.max_body_bytes = DISCARD_LIMIT;
    }
    let mut decoder = BodyDecoder::new(head.framing, &limits).map_err(BodyError::Refuse)?;
    // RFC 9110 §10.1.1: send 100 only once we have decided to read the body, and not if the
    // client already started sending it.
    if head.expects_continue && buf.is_empty() {
        let deadline = Instant::now() + server.config().send_timeout;
        if !matches!(write_all(stream, &[CONTINUE], deadline, &server.stats).await, Write::Done) {
            return Err(BodyError::Aborted);
        }
    }
    let mut body = BytesMut::new();
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(data)) => {
                if keep {
                    body.extend_from_slice(&data);
                }
            }
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) => {
                let deadline = Instant::now() + server.config().body_timeout;
                match read_more(stream, buf, deadline, &server.stats).await {
                    Read::Data => {}
                    Read::Timeout => return Err(BodyError::Timeout),
                    Read::Eof | Read::Failed(_) => return Err(BodyError::Aborted),
                }
            }
            Err(ParseError::BodyTooLarge) if !keep => return Ok(Body::Unread),
            Err(e) => return Err(BodyError::Refuse(e)),
        }
    }
    Ok(if keep { Body::Read(body.freeze()) } else { Body::Discarded })
}
