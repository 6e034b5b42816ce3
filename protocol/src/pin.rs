//! How a client pins a broker's certificate, in the one form the broker prints and the
//! client checks, so that the two can never disagree on a fingerprint.
//!
//! Two kinds of pin, both SHA-256:
//! - a **certificate fingerprint**: the hash of the whole DER certificate, written as 64
//!   lower-case hex digits (`openssl x509 -fingerprint -sha256` prints the same digits,
//!   upper-case with colons; [`parse_sha256`] takes either). It changes with every new
//!   certificate, even one for the same key.
//! - a **public-key pin** (SPKI): the hash of the certificate's DER
//!   `SubjectPublicKeyInfo`, written `sha256/<base64>` as HPKP (RFC 7469), curl
//!   (`--pinnedpubkey`) and OkHttp write it. It stays the same across renewals that keep
//!   the key, and a client may hold several (the current key and the next one) so that a
//!   key can be rotated without breaking clients.
//!
//! Extracting the SPKI from a certificate is the caller's (the broker and the client use
//! webpki, the parser that also checks the handshake signature with that key); this
//! module only hashes and formats, sans-IO.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The prefix of a public-key pin.
pub const SPKI_PREFIX: &str = "sha256/";

/// The certificate fingerprint of a DER certificate: lower-case hex SHA-256.
pub fn cert_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// The public-key pin of a DER `SubjectPublicKeyInfo` (with its outer SEQUENCE):
/// `sha256/<base64 of its SHA-256>`.
pub fn spki_pin(spki_der: &[u8]) -> String {
    format!("{SPKI_PREFIX}{}", STANDARD.encode(Sha256::digest(spki_der)))
}

/// The SHA-256 of a DER `SubjectPublicKeyInfo`, as [`parse_spki_pin`] returns it.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// The SHA-256 of a DER certificate, as [`parse_sha256`] returns it.
pub fn cert_sha256(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// Parses a certificate fingerprint: 64 hex digits, any case, optionally with `:`
/// separators and a `sha256:` prefix. The error names the text (a short prefix of it).
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let digits: String = body.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits)
        .map_err(|e| format!("fingerprint {:?} is not hex: {e}", prefix(text)))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "fingerprint {:?} has {} bytes, a SHA-256 has 32",
            prefix(text),
            bytes.len()
        )
    })
}

/// Parses a public-key pin, `sha256/<base64>` (standard alphabet, padded or not). The error
/// names the text (a short prefix of it).
pub fn parse_spki_pin(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let Some(body) = trimmed.strip_prefix(SPKI_PREFIX) else {
        return Err(format!(
            "public-key pin {:?} does not start with {SPKI_PREFIX:?} (the form is sha256/<base64>, as the broker logs it)",
            prefix(text)
        ));
    };
    let bytes = STANDARD
        .decode(body)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(body))
        .map_err(|e| format!("public-key pin {:?} is not base64: {e}", prefix(text)))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "public-key pin {:?} has {} bytes, a SHA-256 has 32",
            prefix(text),
            bytes.len()
        )
    })
}

/// At most the first 80 characters of a bad value, for an error message.
fn prefix(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lower_hex_sha256() {
        assert_eq!(
            cert_fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            parse_sha256(&cert_fingerprint(b"abc")).unwrap(),
            cert_sha256(b"abc")
        );
    }

    #[test]
    fn fingerprint_formats() {
        let fp = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_sha256(&fp).unwrap(), [0xab; 32]);
        assert_eq!(parse_sha256(&colons).unwrap(), [0xab; 32]);
        assert_eq!(parse_sha256(&format!("sha256:{fp}")).unwrap(), [0xab; 32]);
        let short = parse_sha256("abcd").unwrap_err();
        assert!(
            short.contains("2 bytes") && short.contains("abcd"),
            "{short}"
        );
        assert!(parse_sha256("zz").unwrap_err().contains("not hex"));
        let long = parse_sha256(&"z".repeat(1000)).unwrap_err();
        assert!(long.len() < 200, "the message echoes only a prefix: {long}");
    }

    #[test]
    fn spki_pins_round_trip() {
        let pin = spki_pin(b"some spki");
        assert!(pin.starts_with("sha256/") && pin.ends_with('='), "{pin}");
        assert_eq!(parse_spki_pin(&pin).unwrap(), spki_sha256(b"some spki"));
        let unpadded = pin.trim_end_matches('=');
        assert_eq!(parse_spki_pin(unpadded).unwrap(), spki_sha256(b"some spki"));
        let e = parse_spki_pin(&cert_fingerprint(b"x")).unwrap_err();
        assert!(e.contains("sha256/"), "{e}");
        assert!(parse_spki_pin("sha256/!!!").unwrap_err().contains("base64"));
        assert!(parse_spki_pin("sha256/AAAA")
            .unwrap_err()
            .contains("3 bytes"));
    }
}
