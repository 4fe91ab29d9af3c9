//! What a subscriber's socket has not taken yet: the unsent tail of a write, plus whatever the
//! shard queued behind it (pongs, op answers, heartbeats, a final notice).
//!
//! Message bytes stay shared: a piece is a `Bytes` slice of the message's own encoding (a
//! reference count, not a copy), so a thousand blocked subscribers of one large message hold it
//! once. Only a subscriber's own small pieces (chunk sizes, cursors, frame headers) are copied.
//! Its length is what the subscriber is charged against `max_pending_bytes`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

/// Pieces per `writev` (the kernel takes up to 1,024).
const PIECES_PER_WRITE: usize = 64;

/// The queued bytes of one subscriber, in order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pieces: VecDeque<Bytes>,
    len: usize,
}

impl Pending {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `bytes` behind what is there.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.pieces.push_back(bytes);
        }
    }

    /// Writes as much as the socket takes. `Ok(n)` with the bytes written (0 when the socket is
    /// full); the rest stays queued.
    pub fn write_to(&mut self, stream: &mut crate::socket::LinkMut<'_>) -> io::Result<usize> {
        let mut written = 0;
        while !self.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.pieces.iter().take(PIECES_PER_WRITE).map(|p| IoSlice::new(p)).collect();
            let n = match stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(n);
            written += n;
        }
        Ok(written)
    }

    /// Drops the first `n` bytes (they were written).
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else { return };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pieces.pop_front();
        }
    }

    /// Everything queued, copied (tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_in_order_across_pieces_and_keeps_the_rest() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut server = crate::socket::LinkMut { socket: &server, tls: None };
        let big = Bytes::from(vec![7u8; 8 << 20]);
        let mut pending = Pending::default();
        pending.push(Bytes::from_static(b"head:"));
        pending.push(big.slice(1..));
        pending.push(Bytes::from_static(b":end"));
        let total = pending.len();
        assert_eq!(total, 5 + (8 << 20) - 1 + 4);
        // The socket takes part of it; what is left is exactly the rest.
        let first = pending.write_to(&mut server).unwrap();
        assert!(first > 0 && first < total, "{first}");
        assert_eq!(pending.len(), total - first);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            (&client).take(total as u64).read_to_end(&mut all).unwrap();
            all
        });
        while !pending.is_empty() {
            pending.write_to(&mut server).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let all = reader.join().unwrap();
        assert_eq!(&all[..5], b"head:");
        assert_eq!(&all[all.len() - 4..], b":end");
        assert_eq!(all.len(), total);
    }
}
