//! The development certificate of the browser listener (`webtransport.dev_certificate`):
//! a fresh ECDSA P-256 self-signed certificate at every start, valid for a few days, the
//! only kind of self-signed certificate a browser accepts through
//! `serverCertificateHashes` (at most 14 days; an RSA or a long-lived one is refused with
//! QUIC_TLS_CERTIFICATE_UNKNOWN). Its SHA-256 is what the page pins.

use anyhow::Context;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Names the development certificate is issued for (a pinned certificate's names are not
/// checked by browsers; these make it usable by ordinary clients on this machine too).
const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A generated development certificate.
#[derive(Debug)]
pub struct DevCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the certificate (DER), lowercase hex: what `serverCertificateHashes` takes.
    pub sha256: String,
    /// `DATA_DIR/webtransport/cert.sha256`, holding [`DevCert::sha256`].
    pub sha256_path: PathBuf,
}

/// Generates the certificate, valid from a minute ago for `days` days, and writes its hash
/// (and the certificate, `cert.pem`) to `DATA_DIR/webtransport/`. The key stays in memory.
pub fn generate(data_dir: &Path, days: u32) -> anyhow::Result<DevCert> {
    let mut params = rcgen::CertificateParams::new(NAMES.map(String::from).to_vec())
        .context("cannot build the development certificate's parameters")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Convoke broker (browser development)",
    );
    let now = crate::clock::now_secs();
    let from = i64::try_from(now).unwrap_or(i64::MAX) - 60;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(from + i64::from(days) * 86_400)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate an ECDSA P-256 key pair")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the development certificate")?;
    let sha256 = hex::encode(Sha256::digest(cert.der()));
    let dir = data_dir.join("webtransport");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sha256_path = dir.join("cert.sha256");
    std::fs::write(&sha256_path, format!("{sha256}\n"))
        .with_context(|| format!("cannot write {}", sha256_path.display()))?;
    let pem_path = dir.join("cert.pem");
    std::fs::write(&pem_path, cert.pem())
        .with_context(|| format!("cannot write {}", pem_path.display()))?;
    Ok(DevCert {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        sha256,
        sha256_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_would_accept_it() {
        let dir = tempfile::tempdir().unwrap();
        let cert = generate(dir.path(), 14).unwrap();
        let parsed = webpki::EndEntityCert::try_from(&cert.cert).unwrap();
        drop(parsed);
        // ECDSA P-256 (the SPKI's curve OID), at most 14 days, the hash written.
        let der = cert.cert.as_ref();
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256), "not P-256");
        let written = std::fs::read_to_string(&cert.sha256_path).unwrap();
        assert_eq!(written.trim(), cert.sha256);
        assert_eq!(cert.sha256.len(), 64);
        let (_, x509) = validity(der);
        assert!(x509 <= 14 * 86_400, "valid for {x509} s");
    }

    /// (not before, length in seconds) of a certificate, read from its UTCTime fields.
    fn validity(der: &[u8]) -> (i64, i64) {
        // UTCTime: tag 0x17, length 13, "YYMMDDHHMMSSZ"; the first two in the certificate
        // are notBefore and notAfter.
        let times: Vec<i64> = der
            .windows(15)
            .filter(|w| w[0] == 0x17 && w[1] == 13 && w[14] == b'Z')
            .take(2)
            .map(|w| {
                let d = |i: usize| i64::from(w[2 + i] - b'0') * 10 + i64::from(w[3 + i] - b'0');
                let date = time::Date::from_calendar_date(
                    2000 + i32::try_from(d(0)).unwrap(),
                    time::Month::try_from(u8::try_from(d(2)).unwrap()).unwrap(),
                    u8::try_from(d(4)).unwrap(),
                )
                .unwrap();
                date.with_hms(
                    u8::try_from(d(6)).unwrap(),
                    u8::try_from(d(8)).unwrap(),
                    u8::try_from(d(10)).unwrap(),
                )
                .unwrap()
                .assume_utc()
                .unix_timestamp()
            })
            .collect();
        assert_eq!(times.len(), 2, "no validity found");
        (times[0], times[1] - times[0])
    }
}
