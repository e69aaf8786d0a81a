//! How the BMC's TLS certificate is checked, and the rustls configuration for each way.
//!
//! BMCs mostly ship self-signed certificates, which is why agents grow an "ignore the
//! certificate" switch that then stays on forever. Here verification is on by default, and the
//! two ways to trust a self-signed BMC without switching it off are a CA file (the BMC's own
//! certificate works) or a pinned SHA-256 fingerprint of the certificate.

use super::error::RedfishError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// How the BMC's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerify {
    /// Against the system's trust store (`/etc/ssl/certs`), the default.
    SystemRoots,
    /// Against the CA certificate(s) in this PEM file (the BMC's self-signed certificate
    /// itself works too), and nothing else.
    CaFile(PathBuf),
    /// The BMC's certificate must have this SHA-256 fingerprint (of its DER encoding); name
    /// and expiry are not checked, as the pin already says exactly which certificate.
    Fingerprint([u8; 32]),
    /// No verification at all: anyone on the path can impersonate the BMC and read its
    /// password. Only with `insecure = true`, and logged as a warning on every start.
    Insecure,
}

impl TlsVerify {
    /// Parses a fingerprint as `openssl x509 -fingerprint -sha256` prints it (`AB:CD:...`) or
    /// as 64 plain hex digits.
    pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], RedfishError> {
        let hex: String = text
            .trim()
            .trim_start_matches("sha256:")
            .trim_start_matches("SHA256:")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return Err(RedfishError::FingerprintLength {
                text: text.to_string(),
                digits: hex.len(),
            });
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| RedfishError::FingerprintNotHex {
                    text: text.to_string(),
                })?;
        }
        Ok(out)
    }
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:...` (openssl's format).
pub fn fingerprint_text(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration that trusts exactly one certificate by fingerprint.
pub(crate) fn pinned_config(pin: [u8; 32]) -> Result<rustls::ClientConfig, RedfishError> {
    let provider = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RedfishError::TlsSetup {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    Ok(cfg)
}

/// Reads the PEM certificates of a CA file.
pub(crate) fn read_ca_file(path: &PathBuf) -> Result<Vec<reqwest::Certificate>, RedfishError> {
    let pem = std::fs::read(path).map_err(|e| RedfishError::CaFileUnreadable {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| RedfishError::CaFileNotPem {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        certs.push(reqwest::Certificate::from_der(&der).map_err(|e| {
            RedfishError::CaFileBadCertificate {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
    }
    if certs.is_empty() {
        return Err(RedfishError::CaFileEmpty { path: path.clone() });
    }
    Ok(certs)
}

#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            // The fingerprint seen goes into the error so the operator can compare it with
            // the BMC's; a certificate is public, nothing secret leaks.
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned one",
                fingerprint_text(end_entity.as_ref())
            )))
        }
    }

    // The handshake signatures are still checked: the pin says which certificate, the
    // signature proves the peer holds its key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_openssl_and_plain_form() {
        let colon = (0..32)
            .map(|i| format!("{i:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let plain = colon.replace(':', "").to_lowercase();
        let want: Vec<u8> = (0..32).collect();
        assert_eq!(TlsVerify::parse_fingerprint(&colon).unwrap().to_vec(), want);
        assert_eq!(TlsVerify::parse_fingerprint(&plain).unwrap().to_vec(), want);
        let short = TlsVerify::parse_fingerprint("AB:CD").unwrap_err();
        assert!(
            matches!(short, RedfishError::FingerprintLength { digits: 4, .. }),
            "{short}"
        );
        assert!(short.to_string().contains("openssl"), "{short}");
        let e = TlsVerify::parse_fingerprint(&"zz".repeat(32)).unwrap_err();
        assert!(matches!(e, RedfishError::FingerprintNotHex { .. }), "{e}");
        assert!(e.to_string().contains("openssl"), "{e}");
    }
}
