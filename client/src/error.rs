//! The one error type of the client, and how a QUIC close is turned into it.
//!
//! Every fallible call returns [`ClientError`]. A refusal by the broker keeps its
//! [`ApiError`] (code and message) intact; everything else says which layer failed
//! (connect, TLS, transport, protocol, local I/O) and names the offending value.

use convoke_protocol::close;
use convoke_protocol::{ApiError, ErrorCode};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker refused the request or the handshake; its code and message, unchanged.
    ///
    /// Displays as `error <code> <NAME>: <message>`, e.g.
    /// `error 605 GROUP_NOT_EXIST: group "9" does not exist`.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The connection could not be established: bad address, unreachable broker, handshake
    /// failure or no answer within the connect timeout.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection is gone. Every pending and every later call on the same client returns
    /// this, with the same reason.
    #[error("connection closed: {reason}")]
    Closed {
        /// The QUIC application close code when the connection was closed with one (by the
        /// broker or by this client), see [`convoke_protocol::close`]; `None` for a transport
        /// failure such as an idle timeout.
        code: Option<u32>,
        /// Who closed it and why, e.g. `closed by the broker with code 3 (slow consumer): ...`.
        reason: String,
    },
    /// No connection to the broker within the request timeout: the client is reconnecting
    /// (or gave up). The request was not sent.
    #[error("disconnected: {reason}")]
    Disconnected {
        /// Why there is no connection (the last drop's or attempt's reason).
        reason: String,
    },
    /// No response within the request timeout. The request may still take effect.
    #[error("request timed out")]
    Timeout,
    /// The broker sent something the contract does not allow here (wrong response variant,
    /// unexpected frame), or a request could not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A local or stream I/O failure (reading an upload source, writing a download, a reset
    /// transfer stream).
    #[error("i/o error: {0}")]
    Io(String),
    /// The TLS configuration is unusable: unreadable CA file, no certificate in it, a
    /// malformed fingerprint.
    #[error("tls error: {0}")]
    Tls(String),
    /// A file transfer was cancelled through its [`crate::CancelHandle`] (or its handle was
    /// dropped).
    #[error("transfer cancelled")]
    Cancelled,
}

impl ClientError {
    /// The API error code, when the broker refused the call.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether this error means the connection is gone.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether the broker ended the session because its token expired
    /// ([`close::TOKEN_EXPIRED`]): the application should log in again (get a new token).
    /// A client built with a [`crate::ClientBuilder::token_provider`] does so by itself: it
    /// reconnects with a token from the provider.
    pub fn is_token_expired(&self) -> bool {
        matches!(
            self,
            Self::Closed {
                code: Some(close::TOKEN_EXPIRED),
                ..
            }
        )
    }

    /// Whether the broker refused the hello itself (the token, the protocol version or
    /// the hello's fields): every server of a cluster answers it alike, and reconnecting
    /// cannot change it.
    pub fn is_refused_hello(&self) -> bool {
        matches!(
            self,
            Self::Api(e) if matches!(
                e.code,
                ErrorCode::TokenNotAssigned
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::RequestParameterError
            )
        )
    }

    /// Whether retrying the same call later (on the same or a new connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(e) => e.code.is_retryable(),
            Self::Timeout | Self::Closed { .. } | Self::Connect(_) | Self::Disconnected { .. } => {
                true
            }
            _ => false,
        }
    }

    pub(crate) fn io(context: &str, err: impl std::fmt::Display) -> Self {
        Self::Io(format!("{context}: {err}"))
    }
}

/// A readable name for a Convoke close code ([`close::name`]).
pub fn close_code_name(code: u32) -> &'static str {
    close::name(code)
}

/// Turns the way a connection ended into the error every caller sees.
///
/// `local` is the code and reason this client closed with, if it closed first; quinn only
/// reports `LocallyClosed` then, so the reason is kept on our side.
pub(crate) fn closed_error(
    err: &quinn::ConnectionError,
    local: Option<(u32, String)>,
) -> ClientError {
    use quinn::ConnectionError as E;
    match err {
        E::ApplicationClosed(app) => {
            let code = u32::try_from(app.error_code.into_inner()).ok();
            let text = String::from_utf8_lossy(&app.reason);
            let name = code.map_or("unknown code", close_code_name);
            let mut reason = format!(
                "closed by the broker with code {} ({name})",
                app.error_code.into_inner()
            );
            if !text.is_empty() {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            ClientError::Closed { code, reason }
        }
        E::LocallyClosed => match local {
            Some((code, why)) => ClientError::Closed {
                code: Some(code),
                reason: format!("closed by this client with code {code}: {why}"),
            },
            None => ClientError::Closed {
                code: Some(close::NORMAL),
                reason: "closed by this client".to_string(),
            },
        },
        E::TimedOut => ClientError::Closed {
            code: None,
            reason: "timed out: no packet from the broker within the idle timeout".to_string(),
        },
        E::Reset => ClientError::Closed {
            code: None,
            reason: "reset by the broker (it probably restarted)".to_string(),
        },
        other => ClientError::Closed {
            code: None,
            reason: format!("transport error: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_displays_code_and_name() {
        let e = ClientError::from(ApiError::no_group("9"));
        assert_eq!(e.code(), Some(ErrorCode::GroupNotExist));
        assert_eq!(
            e.to_string(),
            "error 605 GROUP_NOT_EXIST: group \"9\" does not exist"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn local_close_keeps_our_reason() {
        let e = closed_error(
            &quinn::ConnectionError::LocallyClosed,
            Some((close::MALFORMED_FRAME, "bad push".into())),
        );
        assert_eq!(
            e,
            ClientError::Closed {
                code: Some(1),
                reason: "closed by this client with code 1: bad push".into()
            }
        );
        assert!(e.is_closed() && e.code().is_none());
        assert!(!e.is_token_expired());
    }

    #[test]
    fn token_expiry_is_recognised() {
        let e = ClientError::Closed {
            code: Some(close::TOKEN_EXPIRED),
            reason: "closed by the broker with code 8 (token expired)".into(),
        };
        assert!(e.is_token_expired() && e.is_closed() && e.is_retryable());
        assert_eq!(close_code_name(close::TOKEN_EXPIRED), "token expired");
    }
}
