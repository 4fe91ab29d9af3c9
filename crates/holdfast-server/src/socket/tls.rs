//! TLS for a connection, on rustls's *unbuffered* API: the session owns its ciphertext and
//! plaintext buffers, allocates them while bytes move and frees them the moment they are empty,
//! so an idle TLS connection holds only rustls's state (its keys) — no 4 KiB read buffer kept
//! for ever as the buffered `ServerConnection` does.
//!
//! The session is driven synchronously over any non-blocking `Read + Write` (a runtime task's
//! socket through `try_read`/`try_write`, a push shard's or the parking lot's directly), so every
//! holder of a connection uses the same code.
//!
//! Writes follow OpenSSL's rule for non-blocking writes: plaintext counts as written only once
//! its ciphertext is on the wire. When the socket takes part of it, the write reports
//! `WouldBlock`, keeps the ciphertext, and the caller offers the same bytes again (every caller
//! keeps its unsent tail anyway, as it must for TCP); the retry checks that they are the same.
//! So a caller's own pending bytes stay the one measure of what is blocked.
//!
//! [`ServerTls`] holds the certificate and builds sessions; `reload` swaps the certificate for
//! new connections while the open ones keep theirs.

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ProducesTickets, ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Ciphertext read per system call: one full TLS record (16 KiB of plaintext and its overhead).
const READ_CHUNK: usize = 16 * 1024 + 512;
/// Ciphertext held at most while input is processed: a handshake message may span records
/// (rustls accepts up to 64 KiB for one); anything beyond is an attack.
const MAX_INCOMING: usize = 80 * 1024;
/// Plaintext encrypted per write at most: two records. What the socket has not taken waits as
/// ciphertext (at most this much per connection) until the caller offers the bytes again.
const MAX_WRITE: usize = 32 * 1024;
/// Ciphertext overhead per record, generously (TLS 1.2 AES-GCM: 29 B; TLS 1.3: 22 B).
const RECORD_OVERHEAD: usize = 64;
/// Plaintext per record.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// The server's TLS configuration, reloadable.
pub(crate) struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    /// Kept across reloads, so session tickets issued before a reload still resume after it.
    ticketer: Arc<dyn ProducesTickets>,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads `cert` (a PEM chain, the server's certificate first) and `key` (PEM: PKCS#8, PKCS#1
    /// or SEC1). The error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
        let config = build_config(cert, key, ticketer.clone())?;
        Ok(ServerTls { cert: cert.to_owned(), key: key.to_owned(), ticketer, config: RwLock::new(config) })
    }

    /// Reads the certificate and key files again; new connections get them, open ones keep the
    /// old. On error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = build_config(&self.cert, &self.key, self.ticketer.clone())?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// A session for a new connection.
    pub fn session(&self) -> Result<Box<TlsSession>, String> {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner()).clone();
        let conn = UnbufferedServerConnection::new(config).map_err(|e| e.to_string())?;
        Ok(Box::new(TlsSession::new(conn)))
    }
}

fn build_config(cert: &Path, key: &Path, ticketer: Arc<dyn ProducesTickets>) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no PEM certificate in the file", cert.display()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("tls_cert/tls_key ({}, {}): {e}", cert.display(), key.display()))?;
    // HTTP/1.1 only (WebSocket upgrades ride on it); a client offering h2 alone is refused.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets: resumption costs the server no memory per client.
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

/// Said when the first bytes on a TLS connection are a plain HTTP request (`GET / HTTP/1.1`),
/// so the connection can answer 400 in plain text rather than close without a word.
#[derive(Debug)]
pub(crate) struct PlainHttpOnTlsPort;

impl std::fmt::Display for PlainHttpOnTlsPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a plain HTTP request on the TLS port")
    }
}

impl std::error::Error for PlainHttpOnTlsPort {}

/// Whether `error` is a [`PlainHttpOnTlsPort`].
pub(crate) fn is_plain_http(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<PlainHttpOnTlsPort>())
}

/// One connection's TLS state and the bytes in flight.
pub(crate) struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed (a partial record, or a handshake message that
    /// spans records).
    incoming: Vec<u8>,
    /// Ciphertext to send; the first `sent` bytes are on the wire.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted and not yet taken; the first `taken` bytes were.
    plain: Vec<u8>,
    taken: usize,
    /// Plaintext whose ciphertext is in `outgoing` but was not reported written, and a hash of
    /// it to check the caller's retry.
    owed: usize,
    owed_hash: u64,
    /// The peer sent close_notify, or closed TCP.
    eof: bool,
    /// Any byte came in (the first ones tell a TLS client from a plain HTTP one).
    started: bool,
}

/// What to do when the session may send application data.
enum Action<'a> {
    Nothing,
    Send(&'a [u8]),
    CloseNotify,
}

impl TlsSession {
    fn new(conn: UnbufferedServerConnection) -> TlsSession {
        TlsSession {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            owed: 0,
            owed_hash: 0,
            eof: false,
            started: false,
        }
    }

    /// Ciphertext is waiting for the socket to take it.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// Decrypted plaintext is waiting to be read.
    pub fn has_plaintext(&self) -> bool {
        self.taken < self.plain.len()
    }

    /// Reads plaintext into `out`: `Ok(0)` at the end of the peer's data, `WouldBlock` when the
    /// socket has nothing more (the handshake is driven on the way).
    pub fn read(&mut self, io: &mut impl ReadWrite, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if !self.fill(io)? {
            return Ok(0);
        }
        let n = out.len().min(self.plain.len() - self.taken);
        out[..n].copy_from_slice(&self.plain[self.taken..self.taken + n]);
        self.taken += n;
        self.release_idle();
        Ok(n)
    }

    /// Appends all the plaintext available to `out`; as [`TlsSession::read`].
    pub fn read_into(&mut self, io: &mut impl ReadWrite, out: &mut bytes::BytesMut) -> io::Result<usize> {
        if !self.fill(io)? {
            return Ok(0);
        }
        let n = self.plain.len() - self.taken;
        out.extend_from_slice(&self.plain[self.taken..]);
        self.taken += n;
        self.release_idle();
        Ok(n)
    }

    /// Copies plaintext into `out` without taking it; as [`TlsSession::read`].
    pub fn peek(&mut self, io: &mut impl ReadWrite, out: &mut [u8]) -> io::Result<usize> {
        if !self.fill(io)? {
            return Ok(0);
        }
        let n = out.len().min(self.plain.len() - self.taken);
        out[..n].copy_from_slice(&self.plain[self.taken..self.taken + n]);
        Ok(n)
    }

    /// Encrypts and sends plaintext from `bufs` (at most [`MAX_WRITE`] bytes per call). Returns
    /// how many are on the wire; `WouldBlock` when none could be (the caller offers the same
    /// bytes again when the socket is writable).
    pub fn write_vectored(&mut self, io: &mut impl ReadWrite, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush(io)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.owed > 0 {
            // The last call encrypted these bytes and the socket has now taken them.
            if hash_prefix(bufs, self.owed) != Some(self.owed_hash) {
                return Err(io::Error::other("TLS write retried with other bytes than the ones it encrypted"));
            }
            let owed = std::mem::take(&mut self.owed);
            return Ok(owed);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let staged: std::borrow::Cow<'_, [u8]> = match bufs.iter().find(|b| !b.is_empty()) {
            Some(only) if only.len() == total => std::borrow::Cow::Borrowed(&only[..total.min(MAX_WRITE)]),
            _ => {
                let mut staged = Vec::with_capacity(total.min(MAX_WRITE));
                for buf in bufs {
                    let room = MAX_WRITE - staged.len();
                    staged.extend_from_slice(&buf[..buf.len().min(room)]);
                    if staged.len() == MAX_WRITE {
                        break;
                    }
                }
                std::borrow::Cow::Owned(staged)
            }
        };
        if !self.process(Action::Send(&staged))? {
            // Still handshaking: nothing can be sent yet.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.flush(io)? {
            Ok(staged.len())
        } else {
            self.owed = staged.len();
            self.owed_hash = fnv1a(std::iter::once(&staged[..]));
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// As [`TlsSession::write_vectored`] with one buffer.
    pub fn write(&mut self, io: &mut impl ReadWrite, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(io, &[IoSlice::new(buf)])
    }

    /// Sends what ciphertext is waiting: `Ok(true)` when none is left.
    pub fn flush(&mut self, io: &mut impl ReadWrite) -> io::Result<bool> {
        while self.sent < self.outgoing.len() {
            match io.write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.release_idle();
        Ok(true)
    }

    /// Queues a close_notify alert (the TLS end of the stream) and tries to send it.
    pub fn close_notify(&mut self, io: &mut impl ReadWrite) {
        if matches!(self.process(Action::CloseNotify), Ok(true)) {
            let _ = self.flush(io);
        }
    }

    /// Makes plaintext available: `Ok(true)` when there is some, `Ok(false)` at the end of the
    /// peer's data, `WouldBlock` when the socket has no more for now.
    fn fill(&mut self, io: &mut impl ReadWrite) -> io::Result<bool> {
        if self.has_unsent() {
            self.flush(io)?;
        }
        loop {
            if self.has_plaintext() {
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            if !self.incoming.is_empty() {
                self.process(Action::Nothing)?;
                // Handshake answers (and a key update) go out as they are made; a full socket
                // keeps them for the next flush.
                self.flush(io)?;
                if self.has_plaintext() || self.eof {
                    continue;
                }
            }
            if self.incoming.len() >= MAX_INCOMING {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: oversized handshake message"));
            }
            let start = self.incoming.len();
            self.incoming.resize(start + READ_CHUNK, 0);
            let read = io.read(&mut self.incoming[start..]);
            match read {
                Ok(0) => {
                    self.incoming.truncate(start);
                    self.eof = true;
                }
                Ok(n) => {
                    self.incoming.truncate(start + n);
                    if !self.started {
                        self.started = true;
                        // A TLS client starts with a handshake record (22); a letter is a method.
                        if self.incoming[0].is_ascii_uppercase() {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, PlainHttpOnTlsPort));
                        }
                    }
                }
                Err(e) => {
                    self.incoming.truncate(start);
                    self.release_idle();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Runs rustls over the ciphertext received until it needs more input or may send
    /// application data; then does `action`. Returns whether the session may send.
    fn process(&mut self, action: Action<'_>) -> io::Result<bool> {
        let mut action = Some(action);
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
            let state = state.map_err(tls_error)?;
            let mut finished = None;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // 0-RTT is not offered (max_early_data_size is 0); taken as ordinary input.
                    while let Some(record) = early.next_record() {
                        let record = record.map_err(tls_error)?;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let mut room = 4096;
                    loop {
                        let start = self.outgoing.len();
                        self.outgoing.resize(start + room, 0);
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(n) => {
                                self.outgoing.truncate(start + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                                self.outgoing.truncate(start);
                                room = required_size;
                            }
                            Err(e) => {
                                self.outgoing.truncate(start);
                                return Err(io::Error::other(format!("TLS: {e}")));
                            }
                        }
                    }
                }
                // The records wait in `outgoing`, sent once by the next flush.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::BlockedHandshake => finished = Some(false),
                // The peer's data ended; ours may still go (the loop comes back as WriteTraffic).
                ConnectionState::PeerClosed => {
                    self.eof = true;
                    if matches!(action, Some(Action::Nothing) | None) {
                        finished = Some(false);
                    }
                }
                ConnectionState::Closed => {
                    self.eof = true;
                    finished = Some(false);
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    match action.take() {
                        Some(Action::Send(data)) => {
                            for record in data.chunks(RECORD_PLAINTEXT * 2) {
                                let start = self.outgoing.len();
                                let mut room = record.len() + RECORD_OVERHEAD * (record.len() / RECORD_PLAINTEXT + 1);
                                loop {
                                    self.outgoing.resize(start + room, 0);
                                    match traffic.encrypt(record, &mut self.outgoing[start..]) {
                                        Ok(n) => {
                                            self.outgoing.truncate(start + n);
                                            break;
                                        }
                                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                            required_size,
                                        })) => room = required_size,
                                        Err(e) => {
                                            self.outgoing.truncate(start);
                                            return Err(io::Error::other(format!("TLS: {e}")));
                                        }
                                    }
                                }
                            }
                        }
                        Some(Action::CloseNotify) => {
                            let start = self.outgoing.len();
                            self.outgoing.resize(start + RECORD_OVERHEAD, 0);
                            match traffic.queue_close_notify(&mut self.outgoing[start..]) {
                                Ok(n) => self.outgoing.truncate(start + n),
                                Err(_) => self.outgoing.truncate(start),
                            }
                        }
                        Some(Action::Nothing) | None => {}
                    }
                    finished = Some(true);
                }
                _ => finished = Some(false),
            }
            self.incoming.drain(..discard);
            if let Some(may_send) = finished {
                return Ok(may_send);
            }
        }
    }

    /// Frees every buffer that is empty: an idle session holds none.
    fn release_idle(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        if self.taken == self.plain.len() && self.plain.capacity() > 0 {
            self.plain = Vec::new();
            self.taken = 0;
        }
        if self.sent == self.outgoing.len() && self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }
}

/// Both directions of a non-blocking socket.
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}"))
}

/// FNV-1a over the bytes of `parts`.
fn fnv1a<'a>(parts: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The hash of the first `n` bytes of `bufs`, if they hold that many.
fn hash_prefix(bufs: &[IoSlice<'_>], n: usize) -> Option<u64> {
    let mut left = n;
    let mut parts = Vec::new();
    for buf in bufs {
        if left == 0 {
            break;
        }
        let take = buf.len().min(left);
        parts.push(&buf[..take]);
        left -= take;
    }
    (left == 0).then(|| fnv1a(parts.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server session on one end of a loopback connection, handshaken with a rustls client on
    /// the other (a blocking thread that runs `client`).
    fn pair<T: Send + 'static>(
        client: impl FnOnce(holdfast_testkit::tls::TlsStream) -> T + Send + 'static,
    ) -> (std::net::TcpStream, Box<TlsSession>, std::thread::JoinHandle<T>, holdfast_testkit::tls::TestCa) {
        let ca = holdfast_testkit::tls::TestCa::new();
        let tls = ServerTls::load(&ca.cert_path(), &ca.key_path()).expect("load the test certificate");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, ca_pem) = (listener.local_addr().unwrap(), ca.ca_pem());
        let thread = std::thread::spawn(move || client(holdfast_testkit::tls::connect(addr, &ca_pem).unwrap()));
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        (socket, tls.session().unwrap(), thread, ca)
    }

    /// Drives the session until `want` plaintext bytes came (the handshake on the way).
    fn read_exactly(session: &mut TlsSession, mut socket: &std::net::TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
        while got.len() < want {
            assert!(std::time::Instant::now() < deadline, "only {} of {want} bytes", got.len());
            match session.read(&mut socket, &mut buf) {
                Ok(0) => panic!("EOF after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn a_write_the_socket_cannot_take_is_reported_once_on_the_wire_and_only_for_the_same_bytes() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (mut socket, mut session, client, _ca) = pair(move |mut stream| {
            stream.write_all(b"hello").unwrap();
            // Reads nothing until told: the server's socket fills.
            wait.recv().unwrap();
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all);
            all
        });
        assert_eq!(read_exactly(&mut session, &socket, 5), b"hello");
        let chunk: Vec<u8> = (0..MAX_WRITE).map(|i| (i % 251) as u8).collect();
        let mut sent = Vec::new();
        // Until the socket is full: each write is all-or-nothing on the wire.
        let blocked = loop {
            match session.write(&mut socket, &chunk) {
                Ok(n) => {
                    assert_eq!(n, chunk.len());
                    sent.extend_from_slice(&chunk);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) => panic!("{e}"),
            }
            assert!(sent.len() < 64 << 20, "the socket never filled");
        };
        assert!(blocked && session.has_unsent());
        // Other bytes than the ones encrypted are refused, once the socket took those.
        release.send(()).unwrap();
        let other = vec![0u8; MAX_WRITE];
        let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
        let refused = loop {
            match session.write(&mut socket, &other) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "the peer never read");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                result => break result,
            }
        };
        assert!(refused.is_err(), "a retry with other bytes was taken: {refused:?}");
        // The same bytes are reported written, and the peer gets every byte once.
        assert_eq!(session.write(&mut socket, &chunk).unwrap(), chunk.len());
        sent.extend_from_slice(&chunk);
        session.close_notify(&mut socket);
        drop(socket);
        let received = client.join().unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "the stream arrived altered");
    }

    #[test]
    fn an_idle_session_holds_no_buffer() {
        let (socket, mut session, client, _ca) = pair(|mut stream| {
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut answer = [0u8; 2];
            stream.read_exact(&mut answer).unwrap();
            answer
        });
        read_exactly(&mut session, &socket, 18);
        assert_eq!(session.write(&mut &socket, b"ok").unwrap(), 2);
        assert_eq!(&client.join().unwrap(), b"ok");
        assert_eq!(
            (session.incoming.capacity(), session.outgoing.capacity(), session.plain.capacity()),
            (0, 0, 0),
            "buffers kept while idle"
        );
    }

    #[test]
    fn a_plain_http_request_is_told_apart_from_a_client_hello() {
        let ca = holdfast_testkit::tls::TestCa::new();
        let tls = ServerTls::load(&ca.cert_path(), &ca.key_path()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (socket, _) = listener.accept().unwrap();
        let mut session = tls.session().unwrap();
        let error = session.read(&mut &socket, &mut [0u8; 64]).unwrap_err();
        assert!(is_plain_http(&error), "{error}");
    }

    #[test]
    fn a_missing_or_mismatched_key_is_named_in_the_error() {
        let ca = holdfast_testkit::tls::TestCa::new();
        let missing = ServerTls::load(&ca.cert_path(), Path::new("/nonexistent/key.pem")).err().unwrap();
        assert!(missing.contains("tls_key /nonexistent/key.pem"), "{missing}");
        let other = holdfast_testkit::tls::TestCa::new();
        let mismatched = ServerTls::load(&ca.cert_path(), &other.key_path()).err().unwrap();
        assert!(mismatched.contains("tls_cert/tls_key"), "{mismatched}");
        let not_pem = ServerTls::load(&ca.dir().join("nothing"), &ca.key_path()).err().unwrap();
        assert!(not_pem.starts_with("tls_cert "), "{not_pem}");
    }
}
