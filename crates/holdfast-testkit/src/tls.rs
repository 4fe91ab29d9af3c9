//! A throw-away certificate authority for TLS tests: a CA certificate (what a client trusts, as
//! `curl --cacert` does) and server certificates it signed for `localhost` and `127.0.0.1`, written
//! as PEM files in a temporary directory the server's `tls_cert` / `tls_key` can point at.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// A CA and the directory holding `ca.pem`, `cert.pem` (the server's chain) and `key.pem`.
pub struct TestCa {
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    /// Certificates issued so far; each gets its own serial and common name.
    issued: u32,
}

impl TestCa {
    /// A new CA and a first server certificate, written to a fresh temporary directory.
    pub fn new() -> TestCa {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("holdfast-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the TLS test directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Holdfast test CA");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = params.self_signed(&ca_key).expect("self-sign the CA");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        let mut ca = TestCa { dir, ca_cert, ca_key, issued: 0 };
        ca.issue();
        ca
    }

    /// Issues a new server certificate and key (same CA, new key, common name
    /// `holdfast test server N`) over `cert.pem` and `key.pem`; returns N. A reload test uses it
    /// to see which certificate a new connection is served.
    pub fn issue(&mut self) -> u32 {
        self.issued += 1;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, format!("holdfast test server {}", self.issued));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).expect("sign the server certificate");
        // Written beside and renamed, so a reload never reads half a file.
        let tmp_cert = self.dir.join("cert.pem.tmp");
        let tmp_key = self.dir.join("key.pem.tmp");
        std::fs::write(&tmp_cert, cert.pem()).expect("write cert.pem");
        std::fs::write(&tmp_key, key.serialize_pem()).expect("write key.pem");
        std::fs::rename(&tmp_key, self.key_path()).expect("rename key.pem");
        std::fs::rename(&tmp_cert, self.cert_path()).expect("rename cert.pem");
        self.issued
    }

    /// The CA certificate a client trusts.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// The server's certificate (`tls_cert`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server's private key (`tls_key`).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking TLS client connection that trusts `ca` (one TestCa), for tests that need to see
/// the bytes (and the certificate served). Run it off the runtime's threads (`spawn_blocking`
/// or a plain thread) when the server runs in the same runtime.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// Connects to `addr` over TLS (server name `localhost`), completing the handshake.
pub fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> std::io::Result<TlsStream> {
    handshake(std::net::TcpStream::connect(addr)?, ca_pem)
}

/// As [`connect`], from the local address `source` (127.0.0.2, …: another client for the
/// limits per IP).
pub fn connect_from(addr: std::net::SocketAddr, source: std::net::IpAddr, ca_pem: &str) -> std::io::Result<TlsStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
    socket.connect(&addr.into())?;
    handshake(socket.into(), ca_pem)
}

fn handshake(tcp: std::net::TcpStream, ca_pem: &str) -> std::io::Result<TlsStream> {
    tcp.set_read_timeout(Some(crate::IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(crate::IO_TIMEOUT))?;
    let mut conn = rustls::ClientConnection::new(client_config(ca_pem), "localhost".try_into().expect("name"))
        .map_err(std::io::Error::other)?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// A client configuration (ring, TLS 1.2 and 1.3, ALPN http/1.1) trusting `ca_pem` only.
pub fn client_config(ca_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add the CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// The certificate the server presented (DER).
pub fn served_certificate(stream: &TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
}

/// The DER of the PEM certificate at `path` (the first one).
pub fn certificate_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path).expect("certificate PEM").to_vec()
}

/// Writes `request` and reads one response (head and a Content-Length body) from a blocking
/// TLS stream: (status, head, body).
pub fn exchange(stream: &mut TlsStream, request: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    use std::io::{Read, Write};
    stream.write_all(request)?;
    stream.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head, buf[head_end..head_end + length].to_vec()))
}
