//! Login tokens: who a session is, signed with the app's secret.
//!
//! The app (or `convoke token`) mints a token for a user id with [`mint`]; a client presents
//! it in its handshake and the broker checks it with [`verify`] before serving anything. The
//! user id inside a verified token is the only identity a session acts as.
//!
//! Format: `cvk1.<payload>.<mac>`, both parts base64url without padding. The payload is
//! `expires_at` (u64, big-endian, unix seconds) | flags (u8, bit 0 = app admin) | user id
//! (UTF-8). The MAC is HMAC-SHA256 with the secret as key over the text `cvk1.<payload>`, so
//! the version is signed too and nothing is decoded before the signature is checked.
//! Tokens are bearer credentials: they cannot be revoked before they expire, so mint them
//! short-lived.
//!
//! [`app_secret`] finds the secret: the file `auth.secret_file` names, else the configured
//! one (`auth.secret`), else the one saved in the data directory, else a new random one
//! saved there (owner-only file permissions).
//!
//! A session lives as long as its token ([`until_expiry`], [`expired_reason`]): the broker
//! closes it at expiry with `close::TOKEN_EXPIRED`. Requests that change state under the
//! app-admin claim are logged at info ([`audit_app_admin`]).

#![warn(missing_docs)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::config::AuthConfig;
use crate::group::rules::Caller;
use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use convoke_protocol::{ApiError, ErrorCode, Request};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Version tag that starts every token of this format.
pub const TOKEN_VERSION: &str = "cvk1";

/// Longest text [`verify`] looks at; real tokens are under 200 bytes (user ids are at most
/// 64), so anything longer is refused before any work is done on it.
pub const MAX_TOKEN_LEN: usize = 512;

/// Bytes of a generated secret.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// Payload bytes before the user id: expiry (8) and flags (1).
const FIXED_PAYLOAD: usize = 9;
const FLAG_ADMIN: u8 = 1;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id the session acts as (already checked against the user-id rules).
    pub user: String,
    /// App admin: may do everything a group owner may, in any group.
    pub admin: bool,
    /// Unix seconds at which the token stops being valid.
    pub expires_at: u64,
}

/// Why a token was refused. Messages are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was given.
    #[error("no token: log in with a token signed by the app's secret (`convoke token --user <id>` prints one)")]
    Missing,
    /// The text is not a token of this format.
    #[error(
        "malformed token: {0}; expected cvk1.<payload>.<signature> as printed by `convoke token`"
    )]
    Malformed(&'static str),
    /// The signature does not match: signed with another secret, or altered.
    #[error("token signature does not match: it was made with a different secret or altered")]
    BadSignature,
    /// The token has expired.
    #[error("token expired at {expired_at} (unix seconds); get a new one")]
    Expired {
        /// When it expired, in unix seconds.
        expired_at: u64,
    },
    /// The signed user id breaks the user-id rules (the minting side did not check it).
    #[error("token names an invalid user id: {0}")]
    BadUser(String),
}

/// Mints a token for `user`, valid until `expires_at` (unix seconds, exclusive).
///
/// `user` is not checked here: check it with [`convoke_protocol::ids::check_user_id`] first,
/// or [`verify`] will refuse the token with [`AuthError::BadUser`].
pub fn mint(secret: &[u8], user: &str, admin: bool, expires_at: u64) -> String {
    let mut payload = Vec::with_capacity(FIXED_PAYLOAD + user.len());
    payload.extend_from_slice(&expires_at.to_be_bytes());
    payload.push(if admin { FLAG_ADMIN } else { 0 });
    payload.extend_from_slice(user.as_bytes());
    let mut token = format!("{TOKEN_VERSION}.{}", URL_SAFE_NO_PAD.encode(&payload));
    let tag = mac(secret, &token).finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag));
    token
}

/// Verifies `token` against `secret` at time `now_unix_secs` and returns its claims.
///
/// Checks, in order: present, well-formed, signature (constant-time), user id, expiry. A
/// token is valid while `now_unix_secs < expires_at`. Never panics, whatever the input.
pub fn verify(secret: &[u8], token: &str, now_unix_secs: u64) -> Result<Claims, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("too long"));
    }
    let (signed, tag) = token
        .rsplit_once('.')
        .ok_or(AuthError::Malformed("no signature part"))?;
    let (version, payload) = signed
        .split_once('.')
        .ok_or(AuthError::Malformed("no payload part"))?;
    if version != TOKEN_VERSION {
        return Err(AuthError::Malformed("not a cvk1 token"));
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    mac(secret, signed)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadSignature)?;

    // Signed by us from here on; the checks below only guard against a buggy minter.
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
    let (fixed, user) = payload
        .split_at_checked(FIXED_PAYLOAD)
        .ok_or(AuthError::Malformed("payload too short"))?;
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&fixed[..8]);
    let expires_at = u64::from_be_bytes(expiry);
    let flags = fixed[8];
    if flags & !FLAG_ADMIN != 0 {
        return Err(AuthError::Malformed("unknown flags"));
    }
    let user = std::str::from_utf8(user)
        .map_err(|_| AuthError::Malformed("user id is not UTF-8"))?
        .to_owned();
    convoke_protocol::ids::check_user_id("user id", &user)
        .map_err(|e| AuthError::BadUser(e.message))?;
    if now_unix_secs >= expires_at {
        return Err(AuthError::Expired {
            expired_at: expires_at,
        });
    }
    Ok(Claims {
        user,
        admin: flags & FLAG_ADMIN != 0,
        expires_at,
    })
}

/// The longest a session waits for its token's expiry in one sleep (tokio's timer wheel
/// does not take much more than two years); a later expiry is waited for in steps.
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long from now until a token valid until `expires_at` (unix seconds) expires, at most
/// [`MAX_EXPIRY_WAIT`]; zero if it already has.
pub fn until_expiry(expires_at: u64) -> Duration {
    Duration::from_secs(expires_at.saturating_sub(crate::clock::now_secs())).min(MAX_EXPIRY_WAIT)
}

/// If a token valid until `expires_at` has expired, the reason its session is closed with
/// (with [`convoke_protocol::close::TOKEN_EXPIRED`]): a `TOKEN_NOT_ASSIGNED` refusal in the
/// one form clients read back ([`convoke_protocol::handshake::refusal_reason`]).
pub fn expired_reason(expires_at: u64) -> Option<Vec<u8>> {
    let now = crate::clock::now_secs();
    (now >= expires_at).then(|| {
        let err = ApiError::new(
            ErrorCode::TokenNotAssigned,
            format!(
                "token expired at {expires_at} (unix seconds): the session ended with it; \
                 log in again with a new token"
            ),
        );
        convoke_protocol::handshake::refusal_reason(&err)
    })
}

/// Logs, at info, a request that may change state made under the app-admin claim: app
/// admins may do what any owner may in any group, so what they do is kept in the log
/// (who, which method, which group). Reads are not logged; nor are ordinary users' requests.
pub fn audit_app_admin(caller: &Caller, request: &Request) {
    if caller.app_admin && request.class() != convoke_protocol::RequestClass::Read {
        tracing::info!(
            admin = %caller.user,
            session = caller.session_id,
            method = request.method(),
            group = request.group_id().unwrap_or("-"),
            "app-admin request"
        );
    }
}

fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
    // HMAC is defined for keys of any length (long ones are hashed, short ones padded).
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signed.as_bytes());
    mac
}

/// Finds the app secret as `[auth]` says: `auth.secret_file`'s contents if set, else as
/// [`load_or_create_secret`]. Returns the key bytes and whether it was generated just now.
pub fn app_secret(auth: &AuthConfig, data_dir: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    match &auth.secret_file {
        Some(path) => Ok((read_secret_file(path)?, false)),
        None => load_or_create_secret(data_dir, auth.secret.as_deref()),
    }
}

/// The key in an `auth.secret_file`: its bytes less one trailing newline (`\n` or `\r\n`),
/// at least 16 of them.
fn read_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut secret = fs::read(path)
        .with_context(|| format!("cannot read auth.secret_file {}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    anyhow::ensure!(
        secret.len() >= MIN_SECRET_BYTES,
        "auth.secret_file {} holds {} bytes; the app secret must be at least {MIN_SECRET_BYTES}",
        path.display(),
        secret.len()
    );
    warn_if_readable_by_others(path);
    Ok(secret)
}

/// The shortest app secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// Finds the token secret. Returns the key bytes and whether it was generated just now
/// (then the caller should say where it is and how to mint tokens).
///
/// - `configured` (`auth.secret`) wins: its UTF-8 bytes are the key.
/// - else `DATA_DIR/auth/secret`: hex text; the decoded bytes are the key.
/// - else 32 random bytes are generated and saved there as hex (directory 0700, file
///   0600 on unix; written to a temporary file and renamed, so a crash never leaves half a
///   secret).
pub fn load_or_create_secret(
    data_dir: &Path,
    configured: Option<&str>,
) -> anyhow::Result<(Vec<u8>, bool)> {
    if let Some(secret) = configured {
        anyhow::ensure!(!secret.is_empty(), "auth.secret is set but empty");
        return Ok((secret.as_bytes().to_vec(), false));
    }
    load_or_create_key(
        &data_dir.join("auth"),
        "secret",
        "token secret",
        "which invalidates every token issued so far",
    )
}

/// Reads the hex key in `dir/file`, or generates 32 random bytes and saves them there (the
/// same way as the token secret above); true when it was generated. `what` names the key in
/// errors, `loss` says what deleting it costs.
pub(crate) fn load_or_create_key(
    dir: &Path,
    file: &str,
    what: &str,
    loss: &str,
) -> anyhow::Result<(Vec<u8>, bool)> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let secret = hex::decode(text.trim()).with_context(|| {
                format!(
                    "{what} file {} is not hex text; fix it, or delete it to generate a \
                     new one ({loss})",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                secret.len() >= 16,
                "{what} file {} holds {} bytes; at least 16 are needed",
                path.display(),
                secret.len()
            );
            warn_if_readable_by_others(&path);
            Ok((secret, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; GENERATED_SECRET_BYTES];
            rand::rng().fill_bytes(&mut secret);
            create_private_dir(dir)?;
            let mut text = hex::encode(&secret);
            text.push('\n');
            write_atomically(&path, text.as_bytes(), true)?;
            Ok((secret, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {what} file {}", path.display())),
    }
}

/// Creates `dir` (and parents); on unix the last component is made owner-only.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes `contents` to `path` through a temporary file in the same directory, synced and
/// renamed over `path`, so readers see the old file or the whole new one. With `private`,
/// the file is created owner-read/write only (0600) on unix.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp); // a leftover from a crash would keep its old mode
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // Makes the rename durable; not possible on every platform, hence best effort.
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// A secret other users can read is a secret no longer; say so, but keep running.
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "secret file is readable by other users; run chmod 600 on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    #[test]
    fn round_trip() {
        let token = mint(SECRET, "alice", false, NOW + 60);
        assert!(token.starts_with("cvk1."));
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        let claims = verify(SECRET, &token, NOW).unwrap();
        assert_eq!(
            claims,
            Claims {
                user: "alice".into(),
                admin: false,
                expires_at: NOW + 60
            }
        );
        let max_user = "u".repeat(64);
        let token = mint(SECRET, &max_user, true, u64::MAX);
        assert!(token.len() < 200, "{}", token.len());
        assert_eq!(verify(SECRET, &token, NOW).unwrap().user, max_user);
    }

    #[test]
    fn admin_flag_is_signed() {
        let admin = mint(SECRET, "root", true, NOW + 60);
        assert!(verify(SECRET, &admin, NOW).unwrap().admin);
        let user = mint(SECRET, "root", false, NOW + 60);
        assert!(!verify(SECRET, &user, NOW).unwrap().admin);
        // Graft the admin payload onto the plain user's signature: refused.
        let (admin_signed, _) = admin.rsplit_once('.').unwrap();
        let (_, user_tag) = user.rsplit_once('.').unwrap();
        let forged = format!("{admin_signed}.{user_tag}");
        assert_eq!(verify(SECRET, &forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampering_and_wrong_secret() {
        let token = mint(SECRET, "alice", false, NOW + 60);
        assert_eq!(
            verify(b"another secret, same length!!!!!", &token, NOW),
            Err(AuthError::BadSignature)
        );
        // Change the user id inside the payload.
        let (_, payload, tag) = split3(&token);
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        *bytes.last_mut().unwrap() = b'b';
        let other = format!("cvk1.{}.{tag}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(verify(SECRET, &other, NOW), Err(AuthError::BadSignature));
        // Extend the expiry.
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        bytes[0] = 0xff;
        let later = format!("cvk1.{}.{tag}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(verify(SECRET, &later, NOW), Err(AuthError::BadSignature));
        // Flip a bit of the mac, truncate it, drop it.
        let mut tag_bytes = URL_SAFE_NO_PAD.decode(tag).unwrap();
        tag_bytes[0] ^= 1;
        let bad = format!("cvk1.{payload}.{}", URL_SAFE_NO_PAD.encode(&tag_bytes));
        assert_eq!(verify(SECRET, &bad, NOW), Err(AuthError::BadSignature));
        let short = format!(
            "cvk1.{payload}.{}",
            URL_SAFE_NO_PAD.encode(&tag_bytes[..16])
        );
        assert_eq!(verify(SECRET, &short, NOW), Err(AuthError::BadSignature));
        let empty_tag = format!("cvk1.{payload}.");
        assert_eq!(
            verify(SECRET, &empty_tag, NOW),
            Err(AuthError::BadSignature)
        );
        // Another version tag.
        let v2 = token.replacen("cvk1", "cvk2", 1);
        assert!(matches!(
            verify(SECRET, &v2, NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    fn split3(token: &str) -> (&str, &str, &str) {
        let (signed, tag) = token.rsplit_once('.').unwrap();
        let (version, payload) = signed.split_once('.').unwrap();
        (version, payload, tag)
    }

    #[test]
    fn expiry_boundary() {
        let token = mint(SECRET, "alice", false, NOW);
        assert!(verify(SECRET, &token, NOW - 1).is_ok());
        assert_eq!(
            verify(SECRET, &token, NOW),
            Err(AuthError::Expired { expired_at: NOW })
        );
        assert_eq!(
            verify(SECRET, &token, u64::MAX),
            Err(AuthError::Expired { expired_at: NOW })
        );
        let msg = verify(SECRET, &token, NOW).unwrap_err().to_string();
        assert!(msg.contains(&NOW.to_string()), "{msg}");
    }

    #[test]
    fn bad_user_ids_are_refused_even_when_signed() {
        for user in ["", "bad name", "ünicode", &"x".repeat(65)] {
            let token = mint(SECRET, user, false, NOW + 60);
            assert!(
                matches!(verify(SECRET, &token, NOW), Err(AuthError::BadUser(_))),
                "{user:?}"
            );
        }
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(verify(SECRET, "", NOW), Err(AuthError::Missing));
        for bad in [
            "x",
            "cvk1",
            "cvk1.",
            "cvk1..",
            "...",
            "cvk1.abc",
            "cvk1.!!!.AAAA",
            "cvk1.abc.!!!",
            "Bearer cvk1.a.b",
        ] {
            let err = verify(SECRET, bad, NOW).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed(_) | AuthError::BadSignature),
                "{bad:?}: {err:?}"
            );
        }
        let huge = format!("cvk1.{}.AAAA", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            verify(SECRET, &huge, NOW),
            Err(AuthError::Malformed("too long"))
        );
        // A correctly signed payload that is too short or has unknown flags.
        for payload in [vec![0u8; 3], {
            let mut p = (NOW + 60).to_be_bytes().to_vec();
            p.push(0x80);
            p.extend_from_slice(b"alice");
            p
        }] {
            let signed = format!("cvk1.{}", URL_SAFE_NO_PAD.encode(&payload));
            let tag = mac(SECRET, &signed).finalize().into_bytes();
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag));
            assert!(matches!(
                verify(SECRET, &token, NOW),
                Err(AuthError::Malformed(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_random_text(token in "\\PC{0,300}") {
            let _ = verify(SECRET, &token, NOW);
        }

        #[test]
        fn never_panics_on_token_shaped_text(token in "cvk1\\.[A-Za-z0-9_=-]{0,120}\\.[A-Za-z0-9_=.-]{0,60}") {
            prop_assert!(verify(SECRET, &token, NOW).is_err());
        }

        #[test]
        fn any_valid_user_round_trips(user in "[A-Za-z0-9_.@-]{1,64}", admin: bool, ttl in 1u64..1_000_000) {
            let token = mint(SECRET, &user, admin, NOW + ttl);
            let claims = verify(SECRET, &token, NOW).unwrap();
            prop_assert_eq!(claims, Claims { user, admin, expires_at: NOW + ttl });
        }
    }

    #[test]
    fn secret_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "configured-secret-value\r\n").unwrap();
        let auth = AuthConfig {
            secret: None,
            secret_file: Some(file.clone()),
        };
        let (secret, generated) = app_secret(&auth, dir.path()).unwrap();
        assert_eq!(secret, b"configured-secret-value");
        assert!(!generated);
        assert!(!dir.path().join("auth").exists(), "nothing generated");
        std::fs::write(&file, "short\n").unwrap();
        let err = format!("{:#}", app_secret(&auth, dir.path()).unwrap_err());
        assert!(
            err.contains("auth.secret_file") && err.contains("5 bytes"),
            "{err}"
        );
        let missing = AuthConfig {
            secret: None,
            secret_file: Some(dir.path().join("nope")),
        };
        let err = format!("{:#}", app_secret(&missing, dir.path()).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn expiry_waits_and_reasons() {
        let now = crate::clock::now_secs();
        assert_eq!(until_expiry(now.saturating_sub(5)), Duration::ZERO);
        assert!(until_expiry(now + 100) <= Duration::from_secs(100));
        assert_eq!(until_expiry(u64::MAX), MAX_EXPIRY_WAIT);
        assert!(expired_reason(now + 100).is_none());
        let reason = expired_reason(now.saturating_sub(1)).unwrap();
        let back = convoke_protocol::handshake::parse_refusal(&reason).unwrap();
        assert_eq!(back.code, ErrorCode::TokenNotAssigned);
        assert!(back.message.contains("log in again"), "{}", back.message);
    }

    #[test]
    fn configured_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, generated) =
            load_or_create_secret(dir.path(), Some("configured-secret-value")).unwrap();
        assert_eq!(secret, b"configured-secret-value");
        assert!(!generated);
        assert!(!dir.path().join("auth").exists(), "nothing written");
    }

    #[test]
    fn generated_secret_is_saved_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (first, generated) = load_or_create_secret(&data, None).unwrap();
        assert!(generated);
        assert_eq!(first.len(), GENERATED_SECRET_BYTES);
        let path = data.join("auth/secret");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            hex::encode(&first)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(data.join("auth"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        let (again, generated) = load_or_create_secret(&data, None).unwrap();
        assert!(!generated);
        assert_eq!(again, first);
        // Only the secret is left in the directory: no temporary file.
        let names: Vec<_> = std::fs::read_dir(data.join("auth"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"]);
        // A token minted with it verifies with the reloaded one.
        let token = mint(&first, "alice", false, NOW + 1);
        assert!(verify(&again, &token, NOW).is_ok());
    }

    #[test]
    fn corrupt_secret_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("auth")).unwrap();
        let path = dir.path().join("auth/secret");
        std::fs::write(&path, "not hex at all").unwrap();
        let err = format!("{:#}", load_or_create_secret(dir.path(), None).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex at all");
        std::fs::write(&path, "abcd").unwrap();
        assert!(load_or_create_secret(dir.path(), None).is_err());
    }
}
