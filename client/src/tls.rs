//! How the client decides to trust a broker, and the rustls/quinn crypto config built from it.
//!
//! Two ways, both for self-signed development certificates as well as real ones:
//! - **CA file** ([`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file)): every certificate in a PEM file becomes a root. A server
//!   certificate that is byte-identical to one of them is accepted as well (after the name
//!   check), because webpki refuses a CA-capable certificate as an end entity and the broker's
//!   generated development certificate is one.
//! - **Pin** ([`ClientBuilder::pin_sha256`](crate::ClientBuilder::pin_sha256)): the SHA-256 of the server's end-entity certificate must equal
//!   the pinned value; nothing else about the certificate is checked.
//!
//! Either way the TLS 1.3 handshake signatures are verified with the ring provider's
//! algorithms. The config is always built with `builder_with_provider`: with both rustls
//! backends compiled in, `ClientConfig::builder()` panics (see notes/verified-facts.md).

use crate::error::ClientError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the client trusts.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// Certificates from a PEM file, each a root (and each acceptable as-is).
    Roots(Vec<CertificateDer<'static>>),
    /// The SHA-256 of the one end-entity certificate to accept.
    Pin([u8; 32]),
}

/// The lowercase hex SHA-256 fingerprint of a DER certificate, as [`crate::ClientBuilder::pin_sha256`] takes it.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Every certificate in a PEM document.
pub(crate) fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("cannot parse the CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Tls(
            "the CA PEM holds no CERTIFICATE block".to_string(),
        ));
    }
    Ok(certs)
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally with `:` separators and a
/// `sha256:` prefix, any case.
pub(crate) fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let digits: String = body.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits)
        .map_err(|e| ClientError::Tls(format!("fingerprint {text:?} is not hex: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        ClientError::Tls(format!(
            "fingerprint {text:?} has {} bytes, a SHA-256 has 32",
            bytes.len()
        ))
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls verifier for this trust.
pub(crate) fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
    let provider = provider();
    match trust {
        Trust::Pin(fingerprint) => Ok(Arc::new(PinnedCert {
            fingerprint: *fingerprint,
            algorithms: provider.signature_verification_algorithms,
        })),
        Trust::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(ClientError::Tls(format!(
                    "none of the {ignored} certificate(s) in the CA PEM can be a root"
                )));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ClientError::Tls(format!("cannot build the verifier: {e}")))?;
            Ok(Arc::new(TrustedFile {
                exact: certs.clone(),
                webpki,
            }))
        }
    }
}

/// The QUIC client crypto config: TLS 1.3 only, ring, ALPN `convoke/1`.
pub(crate) fn quic_crypto(
    trust: &Trust,
    zero_rtt: bool,
) -> Result<quinn::crypto::rustls::QuicClientConfig, ClientError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(format!("TLS 1.3 unavailable: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier(trust)?)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![convoke_protocol::ALPN.to_vec()];
    // Session tickets are kept in this config's in-memory cache (rustls's default), which
    // every reconnect of one client shares: a broker seen before takes the hello in 0-RTT.
    cfg.enable_early_data = zero_rtt;
    quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
        .map_err(|e| ClientError::Tls(format!("TLS config unusable for QUIC: {e}")))
}

/// Accepts exactly the certificate with the pinned SHA-256.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate sha256 {} does not match the pinned {}",
                hex::encode(got),
                hex::encode(self.fingerprint)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// webpki chain verification against the file's roots, plus "this exact certificate was in
/// the file" (still checking the server name).
#[derive(Debug)]
struct TrustedFile {
    exact: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for TrustedFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ca: bool, names: &[&str]) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing_key).unwrap();
        rcgen::CertifiedKey { cert, signing_key }
    }

    fn check(v: &dyn ServerCertVerifier, der: &CertificateDer<'_>, name: &str) -> bool {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(der, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn pin_accepts_only_the_pinned_certificate() {
        let good = cert(false, &["localhost"]);
        let other = cert(false, &["localhost"]);
        let fp = fingerprint_sha256(good.cert.der());
        let v = verifier(&Trust::Pin(parse_fingerprint(&fp).unwrap())).unwrap();
        assert!(check(v.as_ref(), good.cert.der(), "localhost"));
        // The name does not matter for a pin, the bytes do.
        assert!(check(v.as_ref(), good.cert.der(), "elsewhere.example"));
        assert!(!check(v.as_ref(), other.cert.der(), "localhost"));
        assert!(!v.supported_verify_schemes().is_empty());
    }

    #[test]
    fn fingerprint_formats() {
        let fp = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&fp).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{fp}")).unwrap(),
            [0xab; 32]
        );
        let short = parse_fingerprint("abcd").unwrap_err();
        assert!(short.to_string().contains("2 bytes"), "{short}");
        assert!(matches!(parse_fingerprint("zz"), Err(ClientError::Tls(_))));
    }

    #[test]
    fn ca_file_accepts_plain_and_ca_capable_self_signed_leaves() {
        for ca in [false, true] {
            let c = cert(ca, &["localhost", "127.0.0.1"]);
            let certs = parse_pem_certs(c.cert.pem().as_bytes()).unwrap();
            let v = verifier(&Trust::Roots(certs)).unwrap();
            assert!(check(v.as_ref(), c.cert.der(), "localhost"), "ca={ca}");
            assert!(check(v.as_ref(), c.cert.der(), "127.0.0.1"), "ca={ca}");
            assert!(!check(v.as_ref(), c.cert.der(), "other.example"), "ca={ca}");
            let stranger = cert(ca, &["localhost"]);
            assert!(!check(v.as_ref(), stranger.cert.der(), "localhost"));
        }
    }

    #[test]
    fn ca_file_verifies_a_chain() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["broker.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let v = verifier(&Trust::Roots(parse_pem_certs(ca.pem().as_bytes()).unwrap())).unwrap();
        assert!(check(v.as_ref(), leaf.der(), "broker.test"));
        assert!(!check(v.as_ref(), leaf.der(), "localhost"));
    }

    #[test]
    fn empty_or_garbage_pem_is_a_tls_error() {
        assert!(matches!(parse_pem_certs(b""), Err(ClientError::Tls(_))));
        assert!(matches!(
            parse_pem_certs(b"not a pem at all"),
            Err(ClientError::Tls(_))
        ));
    }

    #[test]
    fn quic_crypto_builds_for_both_trusts() {
        let c = cert(true, &["localhost"]);
        let roots = Trust::Roots(parse_pem_certs(c.cert.pem().as_bytes()).unwrap());
        assert!(quic_crypto(&roots, true).is_ok());
        assert!(quic_crypto(&Trust::Pin([0; 32]), false).is_ok());
    }
}
