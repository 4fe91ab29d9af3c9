//! Socket reads and writes for the connection loop, each bounded by a deadline.
//!
//! The read buffer exists only while a request is being read: it is created when bytes arrive
//! and dropped when the connection goes idle, so an idle connection holds no buffer.

use super::TaskLink;
use bytes::BytesMut;
use std::io;
use tokio::time::{timeout_at, Instant};

use crate::stats::Stats;

/// First allocation for a request's bytes: a typical request head fits (browsers send 0.5–2 KiB).
pub(crate) const READ_CHUNK: usize = 4096;

/// The result of one bounded read.
pub(crate) enum Read {
    /// At least one byte was appended to the buffer.
    Data,
    /// The peer closed its side.
    Eof,
    /// The deadline passed first.
    Timeout,
    /// A socket error (reset, …).
    Failed(io::Error),
}

/// Reads what is available into `buf` (growing it by up to [`READ_CHUNK`]), waiting until
/// `deadline` at most. The bytes read are counted in `stats`.
pub(crate) async fn read_more(stream: &mut TaskLink, buf: &mut BytesMut, deadline: Instant, stats: &Stats) -> Read {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match timeout_at(deadline, stream.read_buf(buf)).await {
        Err(_) => Read::Timeout,
        Ok(Ok(0)) => Read::Eof,
        Ok(Ok(n)) => {
            stats.received(n);
            Read::Data
        }
        Ok(Err(e)) => Read::Failed(e),
    }
}

/// The result of writing a whole response.
pub(crate) enum Write {
    Done,
    Timeout,
    Failed(io::Error),
}

/// Writes every byte of `parts` in order, within `deadline`, counting each write in `stats`.
pub(crate) async fn write_all(stream: &mut TaskLink, parts: &[&[u8]], deadline: Instant, stats: &Stats) -> Write {
    let result = timeout_at(deadline, async {
        for part in parts {
            let mut part: &[u8] = part;
            while !part.is_empty() {
                let n = stream.write(part).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                stats.sent(n);
                part = &part[n..];
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
    match result {
        Err(_) => Write::Timeout,
        Ok(Ok(())) => Write::Done,
        Ok(Err(e)) => Write::Failed(e),
    }
}

/// Lingering close (RFC 9112 §9.6): send FIN after the last response, then read and discard what
/// the peer still sends (pipelined requests, a body we did not read) until it closes, `timeout`
/// passes or a bound is read. Closing with unread input would make the kernel send RST, which can
/// destroy the response before the peer reads it.
pub(crate) async fn lingering_close(stream: &mut TaskLink, timeout: std::time::Duration, stats: &Stats) {
    /// Bytes discarded at most; a peer still sending after this is not waiting for a response.
    const LINGER_MAX_BYTES: usize = 256 * 1024;
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + timeout;
    let mut scratch = BytesMut::new();
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        scratch.clear();
        scratch.reserve(4096);
        match timeout_at(deadline, stream.read_buf(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => {
                stats.received(n);
                discarded += n;
            }
            _ => break,
        }
    }
}
