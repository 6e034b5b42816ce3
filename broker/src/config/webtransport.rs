//! `[webtransport]`: the browser listener (issue #14). Off until `listen` is set: a second
//! QUIC endpoint, ALPN `h3`, that serves the same sessions as `server.listen` to browsers
//! over WebTransport (`crate::webtransport`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{empty_is_none, ConfigError};

/// `[webtransport]`: where browsers connect, and which pages may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebTransportConfig {
    /// UDP address of the browser endpoint; `""` turns it off. Must differ from
    /// `server.listen`. Default `""`.
    #[serde(with = "empty_is_none")]
    pub listen: Option<SocketAddr>,
    /// Path of the CONNECT request (`https://host:port<path>`); other paths get 404.
    /// Starts with `/`. Default `/convoke`.
    pub path: String,
    /// Origins (`scheme://host[:port]`) whose pages may connect; others get 403. `[]`: any
    /// page. Each written as browsers send it (lowercase, no default port, punycode host,
    /// no trailing `/`): it is compared with the `Origin` header exactly, so validation
    /// refuses any other form. Default `[]`.
    pub allowed_origins: Vec<String>,
    /// `true`: generate an ECDSA P-256 certificate valid for `dev_certificate_days` (kept
    /// with its key in `DATA_DIR/webtransport/` and served again by the next start while
    /// valid, so a restart keeps the hash), for pages that pin it with
    /// `serverCertificateHashes` (browsers accept such a pin only for a certificate of at
    /// most 14 days); its SHA-256 is printed, logged and written to
    /// `DATA_DIR/webtransport/cert.sha256`; a day before it expires (half-way for one
    /// day) a new one replaces it the same way. `false`: the broker's own certificate
    /// (`tls.*`), which browsers must trust like any HTTPS certificate. Default `false`.
    pub dev_certificate: bool,
    /// Days the development certificate is valid, 1 to 14. Default `10`.
    pub dev_certificate_days: u32,
}

impl Default for WebTransportConfig {
    fn default() -> Self {
        Self {
            listen: None,
            path: "/convoke".into(),
            allowed_origins: Vec::new(),
            dev_certificate: false,
            dev_certificate_days: 10,
        }
    }
}

impl WebTransportConfig {
    /// The checks of `[webtransport]`; `server_listen` is the QUIC endpoint's address.
    pub(super) fn validate(&self, server_listen: SocketAddr) -> Result<(), ConfigError> {
        if let Some(listen) = self.listen {
            if listen == server_listen && listen.port() != 0 {
                return Err(ConfigError::invalid(
                    "webtransport.listen",
                    format!("{listen:?}"),
                    "must differ from server.listen (the browser endpoint is a second UDP \
                     socket)",
                ));
            }
        }
        if !self.path.starts_with('/')
            || self.path.contains(['?', '#', ' '])
            || self.path.len() > 256
        {
            return Err(ConfigError::invalid(
                "webtransport.path",
                format!("{:?}", self.path),
                "must start with / and hold no ?, # or space (at most 256 bytes), e.g. \
                 \"/convoke\"",
            ));
        }
        for origin in &self.allowed_origins {
            if let Err(problem) = check_origin(origin) {
                return Err(ConfigError::invalid(
                    "webtransport.allowed_origins",
                    format!("{origin:?}"),
                    problem,
                ));
            }
        }
        if !(1..=14).contains(&self.dev_certificate_days) {
            return Err(ConfigError::invalid(
                "webtransport.dev_certificate_days",
                self.dev_certificate_days,
                "must be 1 to 14 (browsers refuse a pinned certificate valid for longer)",
            ));
        }
        Ok(())
    }
}

/// Checks one `allowed_origins` entry: it must be written exactly as a browser sends its
/// `Origin` header (the URL standard's ASCII serialization of an origin: lowercase scheme and
/// host, an internationalised host in punycode, no default port, no path, not even `/`), for
/// the listener compares the header with the entries byte for byte. An entry in any other
/// form could never match; the error names the form to write when there is one.
fn check_origin(entry: &str) -> Result<(), String> {
    const EXPECTED: &str = "each must be an origin like \"https://app.example.com\" or \
                            \"http://127.0.0.1:8080\" (scheme, host, optional port; no path)";
    let Some((scheme, _)) = entry.split_once("://") else {
        return Err(EXPECTED.into());
    };
    if !["http", "https"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(EXPECTED.into());
    }
    let url = url::Url::parse(entry).map_err(|e| format!("{EXPECTED}: {e}"))?;
    if !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(EXPECTED.into());
    }
    if url.host_str().is_some_and(|h| h.contains('*')) {
        return Err("wildcards are not supported: list each origin".into());
    }
    let canonical = url.origin().ascii_serialization();
    if entry != canonical {
        return Err(format!(
            "browsers send this origin as {canonical:?} (lowercase, no default port, \
             punycode host, no trailing /), and entries are compared exactly: write that"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, FlagSetting};

    fn load(settings: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let flags = settings
            .iter()
            .map(|(k, v)| FlagSetting::new(format!("--set {k}"), *k, *v));
        Config::load_layered(None, Vec::new(), flags)
    }

    #[test]
    fn off_by_default_and_on_with_an_address() {
        assert_eq!(load(&[]).unwrap().webtransport.listen, None);
        let c = load(&[
            ("webtransport.listen", "127.0.0.1:4434"),
            (
                "webtransport.allowed_origins",
                "http://127.0.0.1:8080,https://app.example.com",
            ),
            ("webtransport.dev_certificate", "true"),
        ])
        .unwrap();
        assert_eq!(
            c.webtransport.listen,
            Some("127.0.0.1:4434".parse().unwrap())
        );
        assert_eq!(c.webtransport.allowed_origins.len(), 2);
        assert!(c.webtransport.dev_certificate);
    }

    #[test]
    fn each_bad_setting_is_named() {
        for (setting, value, words) in [
            (
                "webtransport.listen",
                "127.0.0.1:4433",
                "differ from server.listen",
            ),
            ("webtransport.listen", "nowhere", "expected an address"),
            ("webtransport.path", "convoke", "must start with /"),
            ("webtransport.path", "/a?b", "must start with /"),
            (
                "webtransport.allowed_origins",
                "app.example.com",
                "origin like",
            ),
            (
                "webtransport.allowed_origins",
                "https://a.example/x",
                "no path",
            ),
            (
                "webtransport.allowed_origins",
                "https://a.example?x",
                "no path",
            ),
            (
                "webtransport.allowed_origins",
                "https://user@a.example",
                "no path",
            ),
            (
                "webtransport.allowed_origins",
                "ftp://a.example",
                "origin like",
            ),
            (
                "webtransport.allowed_origins",
                "https://*.example.com",
                "wildcards",
            ),
            ("webtransport.dev_certificate_days", "15", "1 to 14"),
            ("webtransport.dev_certificate_days", "0", "1 to 14"),
        ] {
            let e = load(&[(setting, value)]).unwrap_err();
            assert_eq!(e.field(), Some(setting), "{setting}={value}: {e}");
            assert!(e.to_string().contains(words), "{setting}={value}: {e}");
        }
    }

    #[test]
    fn origins_a_browser_never_sends_are_refused_with_the_form_to_write() {
        // What a browser's Origin header holds for each: the only form that can match.
        for (entry, sent) in [
            ("https://App.Example.com", "https://app.example.com"),
            ("HTTPS://app.example.com", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("https://app.example.com/", "https://app.example.com"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("http://[0:0::1]:8080", "http://[::1]:8080"),
        ] {
            let e = load(&[("webtransport.allowed_origins", entry)]).unwrap_err();
            assert_eq!(
                e.field(),
                Some("webtransport.allowed_origins"),
                "{entry}: {e}"
            );
            let text = e.to_string();
            assert!(
                text.contains(&format!("{entry:?}")),
                "names the entry: {text}"
            );
            assert!(
                text.contains(&format!("browsers send this origin as {sent:?}")),
                "{text}"
            );
            // ... and the form it names is accepted.
            let c = load(&[("webtransport.allowed_origins", sent)]).unwrap();
            assert_eq!(c.webtransport.allowed_origins, vec![sent.to_owned()]);
        }
        for fine in [
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "https://app.example.com:8443",
            "http://[::1]:8080",
            "https://xn--bcher-kva.example",
        ] {
            assert!(
                load(&[("webtransport.allowed_origins", fine)]).is_ok(),
                "{fine}"
            );
        }
    }
}
