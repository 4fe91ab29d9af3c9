//! [`TlsOptions`]: which certificate authorities `https://` servers are checked against, and the
//! one rustls client configuration every path uses (publishes and polls through reqwest, the
//! streaming link and WebSocket through tokio-rustls), so they all trust the same roots.
//!
//! rustls with the ring provider (no aws-lc-rs, no OpenSSL). ALPN offers only `http/1.1`: every
//! transport is HTTP/1.1 (WebSocket upgrades from it; the server offers nothing else).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// How the SDK checks `https://` servers (plain `http://` servers never use it).
///
/// By default it trusts the web PKI: Mozilla's root store, compiled in (the `webpki-roots`
/// crate), the CAs browsers trust. A server whose certificate comes from a private CA (a test
/// CA, a company CA) needs that CA added:
///
/// ```no_run
/// # fn demo() -> holdfast_client::Result<()> {
/// use holdfast_client::{Publisher, Subscriber, TlsOptions};
/// let ca = std::fs::read("/etc/holdfast/ca.pem").expect("the CA file");
/// let tls = TlsOptions::new().root_certificate_pem(&ca)?;
/// let publisher = Publisher::builder().server("https://push.internal:7700").tls(&tls).build()?;
/// let sub = Subscriber::builder().server("https://push.internal:7700").channel("room").tls(&tls).build()?;
/// # Ok(()) }
/// ```
///
/// One `TlsOptions` shared by many publishers and subscribers also shares their TLS session
/// cache: a reconnection (or a new connection of the pool) resumes an earlier session with an
/// abbreviated handshake. Without one, they share the process-wide default, which does the same.
/// Cloning is cheap (an `Arc`). There is no switch to skip verification: a certificate the
/// client does not trust fails with [`Error::is_tls`](crate::Error::is_tls).
#[derive(Clone)]
pub struct TlsOptions {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<ClientConfig>,
    /// Trust the compiled-in web PKI roots (besides `added`).
    web_pki: bool,
    /// Roots added from PEM, kept to build the configuration again when more come.
    added: Vec<CertificateDer<'static>>,
}

impl Default for TlsOptions {
    /// The process-wide default: the web PKI roots, one session cache for every user of it.
    fn default() -> Self {
        static DEFAULT: OnceLock<TlsOptions> = OnceLock::new();
        DEFAULT.get_or_init(|| TlsOptions::with_roots(true, Vec::new()).expect("the web PKI roots are valid")).clone()
    }
}

impl TlsOptions {
    /// The web PKI roots (Mozilla's, compiled in), with a session cache of its own.
    pub fn new() -> TlsOptions {
        TlsOptions::with_roots(true, Vec::new()).expect("the web PKI roots are valid")
    }

    /// Also trusts every certificate in `pem` (one or more `-----BEGIN CERTIFICATE-----`
    /// blocks: a CA's certificate, as curl's `--cacert` takes it). Fails on malformed PEM, on a
    /// PEM with no certificate, or on a certificate rustls cannot use as a root.
    pub fn root_certificate_pem(self, pem: impl AsRef<[u8]>) -> Result<TlsOptions> {
        let mut found = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem.as_ref()) {
            found.push(cert.map_err(|e| Error::invalid(format!("a root certificate PEM: {e}")))?);
        }
        if found.is_empty() {
            return Err(Error::invalid("a root certificate PEM without a CERTIFICATE block"));
        }
        let mut added = self.inner.added.clone();
        added.extend(found);
        TlsOptions::with_roots(self.inner.web_pki, added)
    }

    /// Whether to trust the web PKI roots as well as the added ones (default `true`). `false`
    /// trusts only what [`TlsOptions::root_certificate_pem`] added: a client of a private
    /// deployment that should accept no certificate from a public CA.
    pub fn web_pki_roots(self, trust: bool) -> TlsOptions {
        if trust == self.inner.web_pki {
            return self;
        }
        // The added roots were accepted once; the same set cannot fail now.
        TlsOptions::with_roots(trust, self.inner.added.clone()).expect("roots accepted before")
    }

    fn with_roots(web_pki: bool, added: Vec<CertificateDer<'static>>) -> Result<TlsOptions> {
        let mut roots = RootCertStore::empty();
        if web_pki {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &added {
            roots.add(cert.clone()).map_err(|e| Error::invalid(format!("a root certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsOptions { inner: Arc::new(Inner { config: Arc::new(config), web_pki, added }) })
    }

    /// The rustls configuration, for reqwest (which takes its own copy; the copies share the
    /// session cache, an `Arc` inside).
    pub(crate) fn client_config(&self) -> ClientConfig {
        (*self.inner.config).clone()
    }

    /// TLS over a connected socket to `host` (a name or an IP address, without brackets).
    pub(crate) async fn handshake(&self, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::invalid(format!("{host:?} is neither a DNS name nor an IP address")))?;
        TlsConnector::from(self.inner.config.clone()).connect(name, tcp).await.map_err(|e| {
            let words = format!("handshake with {host}");
            match crate::error::rustls_cause(&e) {
                Some(tls) => Error::tls(format!("{words}: {}", explain(tls))),
                // A reset or EOF in the middle: connection trouble, worth another try.
                None => Error::connect(words, Some(Box::new(e) as _)),
            }
        })
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("web_pki_roots", &self.inner.web_pki)
            .field("added_roots", &self.inner.added.len())
            .finish()
    }
}

/// A builder's TLS setting: none given (the default options), options given, or the error of a
/// root certificate PEM given to it, reported by `build()` (the builders' setters do not fail).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSetting(Option<std::result::Result<TlsOptions, String>>);

impl TlsSetting {
    pub(crate) fn set(&mut self, tls: &TlsOptions) {
        self.0 = Some(Ok(tls.clone()));
    }

    /// Adds roots to the options in hand (the default ones if none were given).
    pub(crate) fn add_pem(&mut self, pem: &[u8]) {
        self.0 = Some(match self.0.take() {
            None => TlsOptions::new().root_certificate_pem(pem).map_err(|e| e.to_string()),
            Some(Ok(tls)) => tls.root_certificate_pem(pem).map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
        });
    }

    pub(crate) fn resolve(&self) -> Result<TlsOptions> {
        match &self.0 {
            None => Ok(TlsOptions::default()),
            Some(Ok(tls)) => Ok(tls.clone()),
            Some(Err(e)) => Err(Error::invalid(e.clone())),
        }
    }
}

/// A rustls error in words, with what to do about the common one.
pub(crate) fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as E};
    match e {
        // A CA the client was not given; BadSignature when one it was given has the same name.
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => format!(
            "{e} (the server's certificate does not chain to a CA this client trusts; add its CA with \
             TlsOptions::root_certificate_pem, or --cacert on the command line)"
        ),
        E::InvalidMessage(_) => format!("{e} (is the server speaking TLS on that port?)"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_is_refused() {
        assert!(TlsOptions::new().root_certificate_pem("no pem here").unwrap_err().is_invalid());
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(TlsOptions::new().root_certificate_pem(truncated).unwrap_err().is_invalid());
    }

    #[test]
    fn added_roots_are_kept_across_settings() {
        let ca = holdfast_testkit::tls::TestCa::new();
        let tls = TlsOptions::new().root_certificate_pem(ca.ca_pem()).unwrap().web_pki_roots(false);
        assert_eq!((tls.inner.web_pki, tls.inner.added.len()), (false, 1));
        let tls = tls.web_pki_roots(true);
        assert_eq!((tls.inner.web_pki, tls.inner.added.len()), (true, 1));
    }
}
