//! TLS for benches that open their own connections (`bench keepalive --tls`): the rustls client
//! configuration (ring provider, ALPN `http/1.1`, no session resumption, so that every new
//! connection pays a full handshake), and a stream that is plain TCP or TLS over it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use clap::{Arg, ArgAction, ArgMatches};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// `--tls`, `--cacert FILE`, `--insecure-skip-verify`.
pub fn args(command: clap::Command) -> clap::Command {
    command
        .arg(Arg::new("tls").long("tls").action(ArgAction::SetTrue).help(
            "speak TLS (rustls, ring); close mode then pays a full handshake per request (no session resumption)",
        ))
        .arg(
            Arg::new("cacert")
                .long("cacert")
                .value_name("FILE")
                .requires("tls")
                .help("with --tls: trust only the CA certificate(s) in this PEM file [default: the web PKI roots]"),
        )
        .arg(
            Arg::new("insecure_skip_verify")
                .long("insecure-skip-verify")
                .action(ArgAction::SetTrue)
                .requires("tls")
                .conflicts_with("cacert")
                .help(
                    "with --tls: accept any server certificate (signatures are still checked, the chain \
                     and name are not); for benches only",
                ),
        )
}

/// The client configuration the flags ask for; `None` without `--tls`.
pub fn config(args: &ArgMatches) -> Result<Option<Arc<ClientConfig>>, String> {
    if !args.get_flag("tls") {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = if args.get_flag("insecure_skip_verify") {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match args.get_one::<String>("cacert") {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("--cacert {path}: {e}"))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("--cacert {path}: {e}"))?;
                    roots.add(cert).map_err(|e| format!("--cacert {path}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("--cacert {path}: no certificate in it"));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // What close mode measures is a connection's full cost; a resumed session would hide most
    // of the handshake (and nginx runs with `ssl_session_cache off` in bench/keepalive.sh).
    config.resumption = Resumption::disabled();
    Ok(Some(Arc::new(config)))
}

/// The name to check the certificate against: the host part of `host:port`.
pub fn server_name(server: &str) -> Result<ServerName<'static>, String> {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| format!("--server {server}: {host} is not a TLS server name"))
}

/// A bench connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// `tcp` as is, or after a TLS handshake with `name` under `tls`.
    pub async fn over(
        tcp: TcpStream,
        tls: Option<&Arc<ClientConfig>>,
        name: &ServerName<'static>,
    ) -> Result<Stream, String> {
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(config) => {
                let tls = TlsConnector::from(config.clone()).connect(name.clone(), tcp).await;
                Ok(Stream::Tls(Box::new(tls.map_err(|e| format!("TLS handshake: {e}"))?)))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `--insecure-skip-verify`: any certificate chain and name, but the handshake signatures are
/// verified as usual, so the client does the same signature work as a verifying one.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_the_port_and_brackets() {
        assert_eq!(server_name("localhost:443").unwrap(), ServerName::try_from("localhost").unwrap());
        assert_eq!(server_name("127.0.0.1:7700").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(server_name("[::1]:7700").unwrap(), ServerName::try_from("::1").unwrap());
    }
}
