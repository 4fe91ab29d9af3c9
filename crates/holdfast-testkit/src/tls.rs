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
