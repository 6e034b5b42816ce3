//! How the client decides to trust a broker, and the rustls/quinn crypto config built from it.
//!
//! Three ways:
//! - **CA file** ([`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file)): every certificate in a PEM file becomes a root. A server
//!   certificate that is byte-identical to one of them is accepted as well (after the name
//!   check), because webpki refuses a CA-capable certificate as an end entity and the broker's
//!   generated development certificate is one.
//! - **System roots** ([`ClientBuilder::system_roots`](crate::ClientBuilder::system_roots)):
//!   the operating system's trust store, read with `rustls-native-certs`, for a broker with a
//!   certificate from a public (or company) CA. The OS store rather than a list compiled into
//!   the client (`webpki-roots`): it follows the CAs the machine's administrator adds or
//!   removes, and CA removals arrive with OS updates rather than a rebuild of every app.
//!   On Linux `SSL_CERT_FILE` / `SSL_CERT_DIR` point it elsewhere.
//! - **Pins** ([`ClientBuilder::pin_public_key`](crate::ClientBuilder::pin_public_key),
//!   [`ClientBuilder::pin_sha256`](crate::ClientBuilder::pin_sha256)): the server's
//!   end-entity certificate must match one of the pins: the SHA-256 of its public key (SPKI,
//!   `sha256/<base64>`, survives renewals that keep the key; give the next key's pin too
//!   before rotating it) or of the whole certificate. Nothing else about the certificate is
//!   checked (a pin is the trust). Pins take precedence over a CA file and system roots.
//!
//! The forms of both pins are [`convoke_protocol::pin`]'s, which the broker logs.
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
use std::sync::Arc;

/// What the client trusts.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// Certificates from a PEM file, each a root (and each acceptable as-is).
    Roots(Vec<CertificateDer<'static>>),
    /// The operating system's trust store.
    System,
    /// Pins: an end-entity certificate matching any one of them is accepted.
    Pins(Pins),
}

/// The pins of [`Trust::Pins`]: SHA-256 hashes of accepted certificates and public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pins {
    /// Whole-certificate hashes.
    pub(crate) certs: Vec<[u8; 32]>,
    /// Public-key (SPKI) hashes.
    pub(crate) keys: Vec<[u8; 32]>,
}

impl Pins {
    pub(crate) fn is_empty(&self) -> bool {
        self.certs.is_empty() && self.keys.is_empty()
    }
}

/// The lowercase hex SHA-256 fingerprint of a DER certificate, as [`crate::ClientBuilder::pin_sha256`] takes it.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    convoke_protocol::pin::cert_fingerprint(cert_der)
}

/// The public-key pin (`sha256/<base64>` of its SPKI) of a DER certificate, as
/// [`crate::ClientBuilder::pin_public_key`] takes it and the broker logs it.
pub fn public_key_pin(cert_der: &[u8]) -> Result<String, ClientError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| ClientError::Tls(format!("cannot parse the certificate: {e}")))?;
    Ok(convoke_protocol::pin::spki_pin(
        cert.subject_public_key_info().as_ref(),
    ))
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
    convoke_protocol::pin::parse_sha256(text).map_err(ClientError::Tls)
}

/// Parses a public-key pin, `sha256/<base64>`.
pub(crate) fn parse_public_key_pin(text: &str) -> Result<[u8; 32], ClientError> {
    convoke_protocol::pin::parse_spki_pin(text).map_err(ClientError::Tls)
}

/// The operating system's root certificates. An error when there are none (a minimal
/// container without a CA bundle), naming what was tried.
fn system_roots() -> Result<rustls::RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(ClientError::Tls(format!(
            "no usable root certificate in the system's trust store{}; install the CA \
             bundle (ca-certificates), set SSL_CERT_FILE, or use ca_file / a pin",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls verifier for this trust.
pub(crate) fn verifier(trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
    let provider = provider();
    match trust {
        Trust::Pins(pins) => Ok(Arc::new(PinnedCert {
            pins: pins.clone(),
            algorithms: provider.signature_verification_algorithms,
        })),
        Trust::System => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(system_roots()?), provider)
                .build()
                .map(|v| v as Arc<dyn ServerCertVerifier>)
                .map_err(|e| ClientError::Tls(format!("cannot build the verifier: {e}")))
        }
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

/// Accepts an end-entity certificate whose SHA-256, or whose public key's, is pinned.
#[derive(Debug)]
struct PinnedCert {
    pins: Pins,
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
        let cert = convoke_protocol::pin::cert_sha256(end_entity.as_ref());
        if self.pins.certs.contains(&cert) {
            return Ok(ServerCertVerified::assertion());
        }
        // The key the handshake signature is then checked with is this same parse's.
        let parsed = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        let spki = parsed.subject_public_key_info();
        if self
            .pins
            .keys
            .contains(&convoke_protocol::pin::spki_sha256(spki.as_ref()))
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "server certificate matches none of the {} pin(s): its sha256 is {}, its public-key pin {}",
            self.pins.certs.len() + self.pins.keys.len(),
            hex::encode(cert),
            convoke_protocol::pin::spki_pin(spki.as_ref())
        )))
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

    fn cert_pin(der: &[u8]) -> Trust {
        Trust::Pins(Pins {
            certs: vec![parse_fingerprint(&fingerprint_sha256(der)).unwrap()],
            keys: vec![],
        })
    }

    #[test]
    fn public_key_pins_accept_any_certificate_for_a_pinned_key() {
        let a = cert(false, &["localhost"]);
        let b = cert(false, &["localhost"]);
        let stranger = cert(false, &["localhost"]);
        // A renewal of `a`: another certificate for the same key.
        let a2 = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&a.signing_key)
            .unwrap();
        assert_ne!(a.cert.der(), a2.der());
        let pin_a = public_key_pin(a.cert.der()).unwrap();
        assert_eq!(public_key_pin(a2.der()).unwrap(), pin_a);
        let pins = Pins {
            certs: vec![],
            keys: vec![
                parse_public_key_pin(&pin_a).unwrap(),
                parse_public_key_pin(&public_key_pin(b.cert.der()).unwrap()).unwrap(),
            ],
        };
        let v = verifier(&Trust::Pins(pins)).unwrap();
        for ok in [a.cert.der(), &a2.der().clone(), b.cert.der()] {
            assert!(check(v.as_ref(), ok, "localhost"));
        }
        let name = ServerName::try_from("localhost").unwrap();
        let err = v
            .verify_server_cert(stranger.cert.der(), &[], &name, &[], UnixTime::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("none of the 2 pin(s)"), "{err}");
        assert!(
            err.contains(&public_key_pin(stranger.cert.der()).unwrap()),
            "names the key it saw: {err}"
        );
        assert!(public_key_pin(b"not a certificate").is_err());
    }

    #[test]
    fn pin_accepts_only_the_pinned_certificate() {
        let good = cert(false, &["localhost"]);
        let other = cert(false, &["localhost"]);
        let v = verifier(&cert_pin(good.cert.der())).unwrap();
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
        assert!(matches!(
            parse_public_key_pin("abcd"),
            Err(ClientError::Tls(_))
        ));
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
        let pins = Trust::Pins(Pins {
            certs: vec![[0; 32]],
            keys: vec![[1; 32]],
        });
        assert!(quic_crypto(&pins, false).is_ok());
    }
}
