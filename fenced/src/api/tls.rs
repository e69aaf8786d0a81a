//! TLS for the TCP listener: rustls with the `ring` provider, TLS 1.2 and 1.3 only.
//!
//! Why `ring` rather than `aws-lc-rs`: it builds with a C compiler alone (aws-lc needs cmake and
//! a much larger C build) and adds less code to a daemon whose idle RSS budget is 8 MiB.
//!
//! The server configuration is held behind a lock and swapped as a whole by [`TlsReloader::reload`]
//! (SIGHUP); connections already open keep the configuration they were accepted with.

use crate::config::TlsConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The crypto provider every TLS configuration of Palisade uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocol versions Palisade speaks: TLS 1.3 and 1.2, never older.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why the TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}; check the path in [api.tls] and its permissions")]
    Read {
        /// Which file (`certificate`, `key`, `client CA`, `CA`).
        what: String,
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not PEM, or holds no block of the kind needed.
    #[error("TLS {what} {path} {problem}")]
    Pem {
        /// Which file.
        what: String,
        /// The file.
        path: String,
        /// What is wrong, and what to give instead.
        problem: String,
    },
    /// The key file's permissions let others read it.
    #[error("{detail}")]
    Unsafe {
        /// What is wrong and the fix (`chmod 600 ...`).
        detail: String,
    },
    /// rustls refused the configuration (a CA, the key, or the pair).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up, with the files, and what to check.
        context: String,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The client CA could not make a verifier.
    #[error("TLS client CA {path}: {detail}; give a PEM file of CA certificates")]
    ClientCa {
        /// The file.
        path: String,
        /// rustls's error.
        detail: String,
    },
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what: what.into(),
        path: path.display().to_string(),
        source,
    })
}

fn pem_err(what: &str, path: &Path, problem: String) -> TlsError {
    TlsError::Pem {
        what: what.into(),
        path: path.display().to_string(),
        problem,
    }
}

/// Reads PEM certificates (a chain, or CA certificates) from `path`.
pub fn load_certs(
    path: &Path,
    what: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, what)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(what, path, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(
            what,
            path,
            "holds no `BEGIN CERTIFICATE` block; give a PEM certificate file".into(),
        ));
    }
    Ok(certs)
}

/// Builds the server configuration from the files `tls` names.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(&tls.cert, "certificate")?;
    crate::config::check_secret_file_mode(&tls.key).map_err(|e| TlsError::Unsafe {
        detail: e.to_string(),
    })?;
    let key_pem = zeroize::Zeroizing::new(read_pem(&tls.key, "key")?);
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| pem_err("key", &tls.key, format!("is not valid PEM: {e}")))?
        .ok_or_else(|| {
            pem_err(
                "key",
                &tls.key,
                "holds no private key; give a PEM PKCS#8, PKCS#1 or SEC1 key".into(),
            )
        })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls {
            context: "TLS setup (protocol versions of the ring provider)".into(),
            source,
        })?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca, "client CA")? {
                roots.add(c).map_err(|source| TlsError::Rustls {
                    context: format!(
                        "TLS client CA {}: a certificate is not a usable CA",
                        ca.display()
                    ),
                    source,
                })?;
            }
            // Clients without a certificate may still authenticate with a bearer token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    detail: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            context: format!(
                "TLS certificate {} and key {} do not fit together; give the key the certificate was issued for",
                tls.cert.display(),
                tls.key.display()
            ),
            source,
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The current server configuration, replaceable while serving.
pub struct TlsReloader {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsReloader {
    /// Loads the certificate and key now; an error here stops the daemon from starting.
    pub fn new(files: TlsConfig) -> Result<TlsReloader, TlsError> {
        let current = RwLock::new(server_config(&files)?);
        Ok(TlsReloader { files, current })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the certificate and key; on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let cfg = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(())
    }
}

/// Lowercase hex SHA-256 of a certificate's DER encoding (what `api.client_certs.sha256` holds).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// The subject common name of a DER certificate, if it has one (a minimal DER walk: Certificate
/// → tbsCertificate → subject → the first `2.5.4.3` attribute). Never panics on bad input.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    // Returns (tag, content, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&l0, mut b) = b.split_first()?;
        let len = if l0 < 0x80 {
            l0 as usize
        } else {
            let n = (l0 & 0x7f) as usize;
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &x in &b[..n] {
                len = (len << 8) | x as usize;
            }
            b = &b[n..];
            len
        };
        if b.len() < len {
            return None;
        }
        Some((tag, &b[..len], &b[len..]))
    }
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version is optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serial, signature algorithm, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (_, subject, _) = tlv(rest)?;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, next) = tlv(rdns)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, next) = tlv(attrs)?;
            attrs = next;
            let (oid_tag, oid, value) = tlv(attr)?;
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, v, _) = tlv(value)?;
                return std::str::from_utf8(v).ok().map(str::to_string);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_keeps_the_old_certificate_and_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsConfig {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = TlsReloader::new(files.clone()).unwrap();
        let before = r.current();
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let e = r.reload().unwrap_err().to_string();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        assert!(Arc::ptr_eq(&before, &r.current()));
        // A key others can read is refused at reload too.
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(r.reload().unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        r.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &r.current()));
        // Only TLS 1.2 and 1.3 are offered.
        let cfg = r.current();
        assert!(cfg.crypto_provider().cipher_suites.iter().all(|s| matches!(
            s.version().version,
            rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3
        )));
    }

    #[test]
    fn common_name_is_found_and_garbage_is_none() {
        let mut p = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Palisade");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "ctrl-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(subject_cn(cert.der()).as_deref(), Some("ctrl-1"));
        assert_eq!(subject_cn(b""), None);
        assert_eq!(subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        for n in 0..cert.der().len() {
            let _ = subject_cn(&cert.der()[..n]);
        }
    }
}
