//! A connection's byte stream as every holder sees it: the TCP socket, and its TLS session when
//! the listener speaks TLS. Reads give plaintext, writes take plaintext; the same code serves
//! both. `Link<S>` is generic over the socket so a runtime task (`tokio::net::TcpStream`) and a
//! push shard or the parking lot (`std::net::TcpStream`) share it, and a connection moves
//! between them with its session.
//!
//! Plain connections pay 8 bytes (the empty `Option<Box<_>>`); TLS state lives behind the box.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use bytes::BytesMut;

use super::tls::TlsSession;

/// A socket and, on a TLS listener, its session.
pub(crate) struct Link<S> {
    pub socket: S,
    pub tls: Option<Box<TlsSession>>,
}

/// A connection held by a runtime task.
pub(crate) type TaskLink = Link<tokio::net::TcpStream>;
/// A connection held by a push shard or the parking lot (non-blocking, polled with mio).
pub(crate) type StdLink = Link<std::net::TcpStream>;

/// A push shard's view of a subscriber's connection for one operation: its socket and, on a TLS
/// listener, its session (which the shard keeps beside the slot, so a plain subscriber's slot
/// does not grow by the pointer).
pub(crate) struct LinkMut<'a> {
    pub socket: &'a std::net::TcpStream,
    pub tls: Option<&'a mut TlsSession>,
}

impl LinkMut<'_> {
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => { self.socket }.read(buf),
            Some(tls) => tls.read(&mut { self.socket }, buf),
        }
    }

    /// Input without taking it (`MSG_PEEK`, or the session's decrypted plaintext).
    pub fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.peek(buf),
            Some(tls) => tls.peek(&mut { self.socket }, buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => { self.socket }.write(buf),
            Some(tls) => tls.write(&mut { self.socket }, buf),
        }
    }

    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => { self.socket }.write_vectored(bufs),
            Some(tls) => tls.write_vectored(&mut { self.socket }, bufs),
        }
    }

    /// A last write before the connection closes, best effort. Plain: with `MSG_MORE`, so the
    /// kernel sends it with the FIN in one segment. TLS: with a close_notify behind it.
    pub fn send_last(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => socket2::SockRef::from(self.socket).send_with_flags(buf, libc::MSG_MORE),
            Some(tls) => {
                let written = tls.write(&mut { self.socket }, buf);
                tls.close_notify(&mut { self.socket });
                written
            }
        }
    }
}

impl TaskLink {
    /// A connection accepted by the listener (`tls`: a new session on a TLS listener).
    pub fn new(socket: tokio::net::TcpStream, tls: Option<Box<TlsSession>>) -> TaskLink {
        Link { socket, tls }
    }

    /// For a push shard or the parking lot.
    pub fn into_std(self) -> io::Result<StdLink> {
        Ok(Link { socket: self.socket.into_std()?, tls: self.tls })
    }

    /// Back from a push shard or the parking lot.
    pub fn from_std(link: StdLink) -> io::Result<TaskLink> {
        Ok(Link { socket: tokio::net::TcpStream::from_std(link.socket)?, tls: link.tls })
    }

    /// Whether a read may find something: the socket is readable, or (TLS) plaintext is
    /// decrypted already, or unsent ciphertext can go (a handshake answer behind a full socket).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(tls) = &self.tls {
            if tls.has_plaintext() {
                return Poll::Ready(Ok(()));
            }
            if tls.has_unsent() && self.socket.poll_write_ready(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
        }
        self.socket.poll_read_ready(cx)
    }

    /// Reads what is available into `buf` without waiting (`WouldBlock` when nothing is).
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.try_read_buf(buf),
            Some(tls) => tls.read_into(&mut TryIo(&self.socket), buf),
        }
    }

    /// Reads into `buf`, waiting until something comes (`Ok(0)` at the end).
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
                }
                result => return result,
            }
        }
    }

    /// Writes without waiting (`WouldBlock` when the socket takes nothing).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.try_write(buf),
            Some(tls) => tls.write(&mut TryIo(&self.socket), buf),
        }
    }

    /// Writes some of `buf`, waiting until the socket takes a byte.
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.writable().await?,
                result => return result,
            }
        }
    }

    /// Whether the peer has closed, without taking input: `Ok(0)` at its end, `Ok(n)` with
    /// input waiting, `WouldBlock` with none.
    pub fn peek_input(&mut self) -> io::Result<usize> {
        let mut byte = [0u8; 1];
        match &mut self.tls {
            None => super::peek(&self.socket),
            Some(tls) => tls.peek(&mut TryIo(&self.socket), &mut byte),
        }
    }

    /// Ends our side: TLS close_notify (best effort), then FIN.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.close_notify(&mut TryIo(&self.socket));
        }
        tokio::io::AsyncWriteExt::shutdown(&mut self.socket).await
    }
}

/// A runtime socket as a non-blocking `Read + Write` (tokio's `try_read`/`try_write`, which
/// clear its readiness on `WouldBlock`, so the next wait really waits).
struct TryIo<'a>(&'a tokio::net::TcpStream);

impl Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS sessions of connections held in numbered slots (the parking lot's, a push shard's),
/// kept beside the slots rather than in them: a plain connection's slot does not grow by the
/// pointer, and a TLS one pays 8 bytes here (a hash map would cost it 25–35).
#[derive(Default)]
pub(crate) struct SessionsBySlot(Vec<Option<Box<TlsSession>>>);

impl SessionsBySlot {
    pub fn insert(&mut self, slot: usize, tls: Box<TlsSession>) {
        if self.0.len() <= slot {
            self.0.resize_with(slot + 1, || None);
        }
        self.0[slot] = Some(tls);
    }

    pub fn take(&mut self, slot: usize) -> Option<Box<TlsSession>> {
        self.0.get_mut(slot).and_then(Option::take)
    }

    /// Forgets the slots from `len` on (all empty) and the room they took.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
        self.0.shrink_to(2 * len);
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut TlsSession> {
        self.0.get_mut(slot).and_then(|tls| tls.as_deref_mut())
    }
}
