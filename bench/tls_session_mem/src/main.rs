//! Live heap bytes of idle rustls `UnbufferedServerConnection`s configured and driven as Holdfast's
//! server does (crates/holdfast-server/src/socket/tls.rs: ring provider, safe default versions,
//! one certificate, ALPN http/1.1, stateless tickets; `process_tls_records` with its own
//! incoming/outgoing/plaintext buffers, freed when idle), each after a full handshake and one
//! request and answer, in memory against a rustls client (which checks nothing).
//!
//! Usage: tls-session-mem DIR [SESSIONS]   (DIR holds cert.pem and key.pem, as bench/tls_idle.sh
//! makes them). Prints the size of the connection struct (inline in Holdfast's boxed TlsSession)
//! and the heap blocks the server side still holds, requested and rounded up to jemalloc's size
//! classes; DETAIL=1 lists them with the frames that allocated them (ALL=1: every frame);
//! SUITE=aes128 or SUITE=chacha limits the server to that TLS 1.3 cipher suite (default: ring's
//! defaults, which pick TLS13_AES_256_GCM_SHA384 as Holdfast does).
//!
//! Allocations are attributed to the server while its calls run (a thread-local flag), so the
//! client's never count.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

struct Counting;
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}
static LIVE: Mutex<Option<HashMap<usize, (usize, std::backtrace::Backtrace)>>> = Mutex::new(None);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        note_alloc(p, l.size());
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note_free(p);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let was = note_free(p);
        let q = System.realloc(p, l, n);
        if was { force_note(q, n) } else { note_alloc(q, n) }
        q
    }
}
fn note_alloc(p: *mut u8, size: usize) {
    if TRACK.with(|t| t.get()) && !INSIDE.with(|i| i.get()) {
        force_note(p, size);
    }
}
fn force_note(p: *mut u8, size: usize) {
    if INSIDE.with(|i| i.replace(true)) { return; }
    let bt = std::backtrace::Backtrace::force_capture();
    LIVE.lock().unwrap().get_or_insert_with(HashMap::new).insert(p as usize, (size, bt));
    INSIDE.with(|i| i.set(false));
}
fn note_free(p: *mut u8) -> bool {
    if INSIDE.with(|i| i.get()) { return false; }
    INSIDE.with(|i| i.set(true));
    let was = LIVE.lock().unwrap().as_mut().and_then(|m| m.remove(&(p as usize))).is_some();
    INSIDE.with(|i| i.set(false));
    was
}
#[global_allocator]
static A: Counting = Counting;

/// The client takes any certificate: the server's side is what is measured.
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCheck {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &rustls_pki_types::ServerName<'_>,
        _: &[u8], _: rustls_pki_types::UnixTime) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &rustls::DigitallySignedStruct)
        -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &rustls::DigitallySignedStruct)
        -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn server<R>(f: impl FnOnce() -> R) -> R {
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    r
}

/// Holdfast's TlsSession::process, minus the I/O: runs the records in `incoming`, appends what
/// to send to `outgoing`, plaintext to `plain`; sends `data` when it may.
fn process(conn: &mut UnbufferedServerConnection, incoming: &mut Vec<u8>, outgoing: &mut Vec<u8>, plain: &mut Vec<u8>, mut data: Option<&[u8]>) -> bool {
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
        let state = state.unwrap();
        let mut finished = None;
        match state {
            ConnectionState::ReadTraffic(mut t) => {
                while let Some(r) = t.next_record() { plain.extend_from_slice(r.unwrap().payload); }
            }
            ConnectionState::EncodeTlsData(mut e) => {
                let mut room = 4096;
                loop {
                    let start = outgoing.len();
                    outgoing.resize(start + room, 0);
                    match e.encode(&mut outgoing[start..]) {
                        Ok(n) => { outgoing.truncate(start + n); break; }
                        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => { outgoing.truncate(start); room = required_size; }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            ConnectionState::TransmitTlsData(t) => t.done(),
            ConnectionState::BlockedHandshake => finished = Some(false),
            ConnectionState::WriteTraffic(mut t) => {
                if let Some(d) = data.take() {
                    let start = outgoing.len();
                    outgoing.resize(start + d.len() + 64, 0);
                    match t.encrypt(d, &mut outgoing[start..]) {
                        Ok(n) => outgoing.truncate(start + n),
                        Err(EncryptError::InsufficientSize(_)) => panic!("room"),
                        Err(e) => panic!("{e}"),
                    }
                }
                finished = Some(true);
            }
            other => panic!("state {other:?}"),
        }
        if discard > 0 { incoming.drain(..discard); }
        if let Some(f) = finished { return f; }
    }
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: tls-session-mem DIR [SESSIONS]");
    let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(format!("{dir}/cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/key.pem")).unwrap();
    // SUITE=aes128 / chacha: the server offers only that TLS 1.3 suite (what a key costs).
    let mut provider = rustls::crypto::ring::default_provider();
    match std::env::var("SUITE").as_deref() {
        Ok("aes128") => provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        Ok("chacha") => provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        _ => {}
    }
    let provider = Arc::new(provider);
    let mut sc = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap()
        .with_no_client_auth().with_single_cert(chain.clone(), key).unwrap();
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    sc.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let sc = Arc::new(sc);
    let cc = Arc::new(rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap()
        .dangerous().with_custom_certificate_verifier(Arc::new(NoCheck(provider))).with_no_client_auth());
    println!("size_of UnbufferedServerConnection = {} B", std::mem::size_of::<UnbufferedServerConnection>());

    let rounds: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    let mut keep = Vec::new();
    for _ in 0..rounds {
        let mut client = rustls::ClientConnection::new(cc.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut conn = server(|| UnbufferedServerConnection::new(sc.clone()).unwrap());
        let (mut inc, mut out, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        let mut sent_request = false;
        let mut answered = false;
        for _ in 0..20 {
            // client -> server
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            inc.extend_from_slice(&buf);
            let may_send = server(|| process(&mut conn, &mut inc, &mut out, &mut plain, None));
            // server -> client
            client.read_tls(&mut &out[..]).unwrap();
            out.clear();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !sent_request {
                client.writer().write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
                sent_request = true;
            }
            if may_send && plain.ends_with(b"\r\n\r\n") && !answered {
                server(|| process(&mut conn, &mut inc, &mut out, &mut plain, Some(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")));
                client.read_tls(&mut &out[..]).unwrap();
                out.clear();
                client.process_new_packets().unwrap();
                let mut got = [0u8; 128];
                let n = client.reader().read(&mut got).unwrap();
                assert!(got[..n].starts_with(b"HTTP/1.1 200"));
                answered = true;
                break;
            }
        }
        assert!(answered, "no answer");
        if keep.is_empty() {
            println!("negotiated {:?} {:?}", conn.protocol_version(), conn.negotiated_cipher_suite().map(|s| s.suite()));
        }
        // Holdfast releases its empty buffers when idle.
        drop((inc, out, plain));
        keep.push((conn, client));
    }
    let live = LIVE.lock().unwrap().take().unwrap_or_default();
    let total: usize = live.values().map(|v| v.0).sum();
    let jclass = |s: usize| -> usize {
        // jemalloc size classes (4 per doubling above 64)
        if s <= 8 { return 8; }
        if s <= 128 { return (s + 15) / 16 * 16; }
        let mut g = 128usize;
        loop { let step = g / 4; if s <= g * 2 { return (s + step - 1) / step * step; } g *= 2; }
    };
    let jtotal: usize = live.values().map(|v| jclass(v.0)).sum();
    println!("server-side live heap after {rounds} idle session(s): {} allocations, {} B requested, {} B in jemalloc size classes; per session {} / {} B",
        live.len(), total, jtotal, total / rounds, jtotal / rounds);
    if std::env::var("DETAIL").is_ok() {
        let mut v: Vec<_> = live.values().collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
        for (size, bt) in v.iter().take(rounds.max(1) * 40) {
            let s = bt.to_string();
            let frames: Vec<&str> = s.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
                .map(|l| l.trim()).filter(|l| std::env::var("ALL").is_ok() || (!l.contains("alloc::") && !l.contains("tls_session_mem::") && !l.contains("std::") && !l.contains("core::") && !l.contains("<tls_session_mem"))).take(if std::env::var("ALL").is_ok() { 16 } else { 4 }).collect();
            println!("{size:6} B  {}", frames.join(" <- "));
        }
    }
}
