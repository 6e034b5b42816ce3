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
    /// page. Default `[]`.
    pub allowed_origins: Vec<String>,
    /// `true`: generate a fresh ECDSA P-256 certificate valid for
    /// `dev_certificate_days` at every start, for pages that pin it with
    /// `serverCertificateHashes` (browsers accept such a pin only for a certificate of at
    /// most 14 days); its SHA-256 is printed, logged and written to
    /// `DATA_DIR/webtransport/cert.sha256`. `false`: the broker's own certificate (`tls.*`),
    /// which browsers must trust like any HTTPS certificate. Default `false`.
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
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']));
            if !ok {
                return Err(ConfigError::invalid(
                    "webtransport.allowed_origins",
                    format!("{origin:?}"),
                    "each must be an origin like \"https://app.example.com\" or \
                     \"http://127.0.0.1:8080\" (scheme, host, optional port; no path)",
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
            ("webtransport.dev_certificate_days", "15", "1 to 14"),
            ("webtransport.dev_certificate_days", "0", "1 to 14"),
        ] {
            let e = load(&[(setting, value)]).unwrap_err();
            assert_eq!(e.field(), Some(setting), "{setting}={value}: {e}");
            assert!(e.to_string().contains(words), "{setting}={value}: {e}");
        }
    }
}
