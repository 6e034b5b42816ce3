//! The development certificate of the browser listener (`webtransport.dev_certificate`):
//! an ECDSA P-256 self-signed certificate valid for a few days (kept in the data dir with
//! its key and served again by the next start while it is valid, so a restart keeps the
//! hash pages pinned), the
//! only kind of self-signed certificate a browser accepts through
//! `serverCertificateHashes` (at most 14 days; an RSA or a long-lived one is refused with
//! QUIC_TLS_CERTIFICATE_UNKNOWN). Its SHA-256 is what the page pins.
//!
//! A broker up longer than that renews it ([`DevCertificate::renew_if_due`], checked every
//! minute against the wall clock by [`spawn_renewal`]): a day before it expires (half-way
//! for a one-day certificate) a new one is generated, its hash written where the first one
//! was, printed and logged, and new connections get it through the listener's certificate
//! resolver; connections already open keep theirs. A page must pin the new hash to
//! connect again.

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Names the development certificate is issued for (a pinned certificate's names are not
/// checked by browsers; these make it usable by ordinary clients on this machine too).
const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How often [`spawn_renewal`] looks at the clock. The wall clock, not a timer: a timer
/// does not advance while the machine sleeps, the certificate's validity does.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// How long before its expiry a certificate is renewed, at most.
const RENEW_BEFORE_SECS: u64 = 86_400;

/// A generated development certificate.
#[derive(Debug)]
pub struct DevCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the certificate (DER), lowercase hex: what `serverCertificateHashes` takes.
    pub sha256: String,
    /// `DATA_DIR/webtransport/cert.sha256`, holding [`DevCert::sha256`].
    pub sha256_path: PathBuf,
    /// When it expires (unix seconds).
    pub not_after: u64,
}

/// Generates the certificate, valid from a minute before `now` (unix seconds) for `days`
/// days, and writes its hash (and the certificate, `cert.pem`) to
/// `DATA_DIR/webtransport/`: both written under temporary names, then each renamed over
/// the old one, so an error leaves both as they were. The key stays in memory.
pub fn generate(data_dir: &Path, days: u32, now: u64) -> anyhow::Result<DevCert> {
    let mut params = rcgen::CertificateParams::new(NAMES.map(String::from).to_vec())
        .context("cannot build the development certificate's parameters")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Convoke broker (browser development)",
    );
    let from = i64::try_from(now).unwrap_or(i64::MAX) - 60;
    let until = from + i64::from(days) * 86_400;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(until)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate an ECDSA P-256 key pair")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the development certificate")?;
    let sha256 = hex::encode(Sha256::digest(cert.der()));
    let dir = data_dir.join("webtransport");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Both are written before either is replaced, so a hash that cannot be written does
    // not leave cert.pem holding a certificate that is never served.
    let pem_path = dir.join("cert.pem");
    let key_path = dir.join(KEY_FILE);
    let sha256_path = dir.join("cert.sha256");
    // The key and its certificate's expiry first (only read back together with a matching
    // cert.pem and hash: see `load`), then the certificate, then the hash: a reader that
    // sees the new hash finds its certificate too.
    let not_after_path = dir.join(NOT_AFTER_FILE);
    let files: [(&Path, Vec<u8>, u32); 4] = [
        (&key_path, key.serialize_pem().into_bytes(), 0o600),
        (&not_after_path, format!("{until}\n").into_bytes(), 0o644),
        (&pem_path, cert.pem().into_bytes(), 0o644),
        (&sha256_path, format!("{sha256}\n").into_bytes(), 0o644),
    ];
    let mut staged = Vec::new();
    for (path, contents, mode) in &files {
        match stage_mode(path, contents, *mode) {
            Ok(s) => staged.push((s, path.to_path_buf())),
            Err(e) => {
                for (s, _) in &staged {
                    let _ = std::fs::remove_file(s);
                }
                return Err(e);
            }
        }
    }
    for (i, (from, path)) in staged.iter().enumerate() {
        std::fs::rename(from, path).map_err(|e| {
            for (s, _) in &staged[i..] {
                let _ = std::fs::remove_file(s);
            }
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        })?;
    }
    if let Ok(dir) = std::fs::File::open(&dir) {
        // Makes the renames durable; not possible on every platform, hence best effort.
        let _ = dir.sync_all();
    }
    Ok(DevCert {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        sha256,
        sha256_path,
        not_after: u64::try_from(until).unwrap_or(0),
    })
}

/// The development certificate's private key, beside it (mode 0600), so that a restart
/// serves the same certificate while it is valid and pages keep their pinned hash.
const KEY_FILE: &str = "key.pem";
/// When the development certificate expires (unix seconds), beside it.
const NOT_AFTER_FILE: &str = "cert.not_after";

/// The development certificate a previous start left in `DATA_DIR/webtransport/`, if it is
/// whole (key, certificate, expiry, and a hash file that matches), was made for at most
/// `days` days, and is not yet due for renewal at `now`: served again, so that a restart
/// does not change the hash pages pinned. `None` otherwise (a new one is generated).
pub fn load(data_dir: &Path, days: u32, now: u64) -> Option<DevCert> {
    use rustls_pki_types::pem::PemObject;
    let dir = data_dir.join("webtransport");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let not_after: u64 = read(NOT_AFTER_FILE)?.trim().parse().ok()?;
    if now >= renew_at(not_after, days) || not_after > now + u64::from(days) * 86_400 + 60 {
        return None;
    }
    let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).ok()?;
    let key = PrivateKeyDer::from_pem_file(dir.join(KEY_FILE)).ok()?;
    let sha256 = hex::encode(Sha256::digest(cert.as_ref()));
    if read("cert.sha256")?.trim() != sha256 {
        return None;
    }
    Some(DevCert {
        cert,
        key,
        sha256,
        sha256_path: dir.join("cert.sha256"),
        not_after,
    })
}

/// Where [`stage_mode`] writes the next contents of `path`: beside it, under a temporary name.
fn staging_path(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    Ok(path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Writes `contents` (synced, with file mode `mode`: 0o600 for the private key, 0o644 for
/// the rest) to [`staging_path`] of `path`, to be renamed over `path` once every file of
/// the certificate is written; returns the staged file.
fn stage_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    let staged = staging_path(path)?;
    let _ = std::fs::remove_file(&staged); // a leftover from a crash
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&staged)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })?;
    Ok(staged)
}

/// When a certificate valid for `days` days until `not_after` is renewed (unix seconds): a
/// day before it expires, or half-way through a one-day certificate.
fn renew_at(not_after: u64, days: u32) -> u64 {
    let validity = u64::from(days) * 86_400;
    not_after.saturating_sub(RENEW_BEFORE_SECS.min(validity / 2))
}

/// The development certificate the listener serves (its rustls certificate resolver),
/// renewed before it expires.
#[derive(Debug)]
pub struct DevCertificate {
    data_dir: PathBuf,
    days: u32,
    current: RwLock<Served>,
    /// The hash served to new connections, for whoever prints it.
    hash: watch::Sender<String>,
    sha256_path: PathBuf,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    not_after: u64,
}

impl DevCertificate {
    /// The certificate a previous start left, while valid ([`load`]), or a new one
    /// ([`generate`]).
    pub fn new(data_dir: &Path, days: u32, now: u64) -> anyhow::Result<Arc<Self>> {
        // A left-over certificate whose key does not match it (a start cut short between
        // the renames of a renewal) is replaced, never a reason not to start.
        let (dev, served) =
            match load(data_dir, days, now).and_then(|d| served(&d).ok().map(|s| (d, s))) {
                Some(loaded) => loaded,
                None => {
                    let dev = generate(data_dir, days, now)?;
                    let served = served(&dev)?;
                    (dev, served)
                }
            };
        Ok(Arc::new(Self {
            data_dir: data_dir.to_owned(),
            days,
            current: RwLock::new(served),
            hash: watch::channel(dev.sha256).0,
            sha256_path: dev.sha256_path,
        }))
    }

    /// The SHA-256 (hex) of the certificate new connections get.
    pub fn sha256(&self) -> String {
        self.hash.borrow().clone()
    }

    /// `DATA_DIR/webtransport/cert.sha256`, which holds [`DevCertificate::sha256`].
    pub fn sha256_path(&self) -> &Path {
        &self.sha256_path
    }

    /// Sees each renewal's hash.
    pub fn subscribe(&self) -> watch::Receiver<String> {
        self.hash.subscribe()
    }

    /// When the served certificate expires (unix seconds).
    pub fn not_after(&self) -> u64 {
        self.read().not_after
    }

    /// Generates a new certificate if the served one is due for renewal at `now` (unix
    /// seconds), and serves it to new connections; returns its hash. On an error (the hash
    /// file cannot be written, ...) the served certificate is unchanged.
    pub fn renew_if_due(&self, now: u64) -> anyhow::Result<Option<String>> {
        if now < renew_at(self.not_after(), self.days) {
            return Ok(None);
        }
        let dev = generate(&self.data_dir, self.days, now)?;
        let served = served(&dev)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = served;
        self.hash.send_replace(dev.sha256.clone());
        Ok(Some(dev.sha256))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        // A panic while holding the lock left a whole certificate in it either way.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn served(dev: &DevCert) -> anyhow::Result<Served> {
    let key = CertifiedKey::from_der(
        vec![dev.cert.clone()],
        dev.key.clone_key(),
        &rustls::crypto::ring::default_provider(),
    )
    .context("cannot use the development certificate")?;
    Ok(Served {
        key: Arc::new(key),
        not_after: dev.not_after,
    })
}

impl ResolvesServerCert for DevCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

/// Renews `cert` when due (checked every [`CHECK_EVERY`] against the wall clock), logging
/// each new hash (info) or why it could not be renewed (error, with the time left; retried
/// at the next check). Ends when `cert` is dropped.
pub fn spawn_renewal(cert: &Arc<DevCertificate>) {
    let weak: Weak<DevCertificate> = Arc::downgrade(cert);
    tokio::spawn(async move {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(cert) = weak.upgrade() else { return };
            let now = crate::clock::now_secs();
            match cert.renew_if_due(now) {
                Ok(None) => {}
                Ok(Some(sha256)) => {
                    tracing::info!(cert_sha256 = %sha256, hash_file = %cert.sha256_path().display(), "webtransport: development certificate renewed before it expires; pages must pin the new hash to connect again");
                }
                Err(e) => {
                    let left = cert.not_after().saturating_sub(now);
                    tracing::error!(error = format_args!("{e:#}"), seconds_left = left, "webtransport: cannot renew the development certificate; browsers refuse it once expired");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_would_accept_it() {
        let dir = tempfile::tempdir().unwrap();
        let cert = generate(dir.path(), 14, crate::clock::now_secs()).unwrap();
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

    /// The SHA-256 (hex) of the certificate `cert` serves to a new connection.
    fn served_hash(cert: &DevCertificate) -> String {
        // What the resolver hands rustls is what a connection gets; the ClientHello is not
        // looked at, so any will do: read the key straight from the lock the resolver uses.
        let key = cert.read().key.clone();
        hex::encode(Sha256::digest(key.end_entity_cert().unwrap()))
    }

    #[test]
    fn a_certificate_is_renewed_a_day_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let start = 1_800_000_000;
        let cert = DevCertificate::new(dir.path(), 10, start).unwrap();
        let first = cert.sha256();
        assert_eq!(served_hash(&cert), first);
        let expires = cert.not_after();
        assert_eq!(expires, start - 60 + 10 * 86_400);
        let mut renewals = cert.subscribe();
        // Not before the last day.
        assert_eq!(cert.renew_if_due(start + 3600).unwrap(), None);
        assert_eq!(cert.renew_if_due(expires - 86_401).unwrap(), None);
        assert_eq!(served_hash(&cert), first);
        // Then a new one: served, written, announced, valid for 10 days from then.
        let now = expires - 86_400;
        let second = cert.renew_if_due(now).unwrap().expect("renewed");
        assert_ne!(second, first);
        assert_eq!(served_hash(&cert), second);
        assert_eq!(cert.sha256(), second);
        let written = std::fs::read_to_string(cert.sha256_path()).unwrap();
        assert_eq!(written.trim(), second);
        assert!(renewals.has_changed().unwrap());
        assert_eq!(*renewals.borrow_and_update(), second);
        assert_eq!(cert.not_after(), now - 60 + 10 * 86_400);
        let (from, length) = validity(cert.read().key.end_entity_cert().unwrap());
        assert_eq!(from, i64::try_from(now).unwrap() - 60);
        assert_eq!(length, 10 * 86_400);
        // Not again until the new one's last day.
        assert_eq!(cert.renew_if_due(now + 86_400).unwrap(), None);
    }

    /// A restart serves the certificate the previous start left while it is valid (pages
    /// keep their pinned hash), and a new one once it is due for renewal, made for more
    /// days than configured now, or incomplete.
    #[test]
    fn a_restart_keeps_a_valid_certificate_and_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let start = 1_800_000_000;
        let first = DevCertificate::new(dir.path(), 10, start).unwrap().sha256();
        let again = DevCertificate::new(dir.path(), 10, start + 3 * 86_400).unwrap();
        assert_eq!(again.sha256(), first);
        assert_eq!(served_hash(&again), first);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("webtransport").join(KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        // Due for renewal: a new one.
        let late = DevCertificate::new(dir.path(), 10, start + 9 * 86_400).unwrap();
        assert_ne!(late.sha256(), first);
        // Configured for fewer days than it was made for: a new one.
        let second = late.sha256();
        let shorter = DevCertificate::new(dir.path(), 2, start + 9 * 86_400 + 60).unwrap();
        assert_ne!(shorter.sha256(), second);
        // A key that is not the certificate's (a renewal cut short between its renames):
        // a new one, not a failed start.
        let other = dir.path().join("other");
        let _ = DevCertificate::new(&other, 2, start + 9 * 86_400 + 60).unwrap();
        std::fs::copy(
            other.join("webtransport").join(KEY_FILE),
            dir.path().join("webtransport").join(KEY_FILE),
        )
        .unwrap();
        let mismatched = DevCertificate::new(dir.path(), 2, start + 9 * 86_400 + 90).unwrap();
        assert_ne!(mismatched.sha256(), shorter.sha256());
        let shorter = mismatched;
        // A hash file that does not match: a new one.
        let third = shorter.sha256();
        std::fs::write(dir.path().join("webtransport/cert.sha256"), "00\n").unwrap();
        let fixed = DevCertificate::new(dir.path(), 2, start + 9 * 86_400 + 120).unwrap();
        assert_ne!(fixed.sha256(), third);
    }

    #[test]
    fn a_one_day_certificate_is_renewed_half_way() {
        assert_eq!(renew_at(1_000_000, 1), 1_000_000 - 43_200);
        assert_eq!(renew_at(1_000_000, 2), 1_000_000 - 86_400);
        assert_eq!(renew_at(1_000_000, 14), 1_000_000 - 86_400);
    }

    #[test]
    fn a_renewal_whose_hash_cannot_be_written_leaves_both_files_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let cert = DevCertificate::new(dir.path(), 2, 1_800_000_000).unwrap();
        let pem_path = dir.path().join("webtransport/cert.pem");
        let pem = std::fs::read_to_string(&pem_path).unwrap();
        let hash = std::fs::read_to_string(cert.sha256_path()).unwrap();
        // The hash's temporary file cannot be created: a directory is in its place.
        std::fs::create_dir(staging_path(cert.sha256_path()).unwrap()).unwrap();
        assert!(cert.renew_if_due(cert.not_after()).is_err());
        assert_eq!(
            std::fs::read_to_string(&pem_path).unwrap(),
            pem,
            "cert.pem unchanged"
        );
        assert_eq!(std::fs::read_to_string(cert.sha256_path()).unwrap(), hash);
        assert!(
            !staging_path(&pem_path).unwrap().exists(),
            "no staged certificate left behind"
        );
    }

    #[test]
    fn a_failed_renewal_keeps_the_served_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = DevCertificate::new(dir.path(), 2, 1_800_000_000).unwrap();
        let first = cert.sha256();
        // The hash cannot be written: a directory where the file goes.
        let hash_file = cert.sha256_path().to_owned();
        std::fs::remove_file(&hash_file).unwrap();
        std::fs::create_dir(&hash_file).unwrap();
        assert!(cert.renew_if_due(cert.not_after()).is_err());
        assert_eq!(served_hash(&cert), first);
        assert_eq!(cert.sha256(), first);
    }
}
