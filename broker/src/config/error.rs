//! What can be wrong with a configuration, worded for the operator who has to fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from, so an error says which layer to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML config file at this path.
    File(PathBuf),
    /// The environment variable of this name.
    Env(String),
    /// The command-line flag spelt like this (e.g. `--listen`).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// An invalid configuration. The binary prints it and exits with [`ConfigError::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML (the message gives line and column).
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's report.
        message: String,
    },
    /// A section, key or environment variable that names no setting.
    #[error("unknown setting {field}{}: {hint}", from(.origin.as_ref()))]
    Unknown {
        /// What was given: `server.lisen`, or the variable name for the environment.
        field: String,
        /// The valid names nearby.
        hint: String,
        /// Where it was given.
        origin: Option<Origin>,
    },
    /// A setting whose value is of the wrong type, does not parse, or is out of range.
    #[error("{field} = {value}{}: {problem}", from(.origin.as_ref()))]
    Invalid {
        /// The setting, as `section.field`.
        field: String,
        /// The offending value, as written in TOML (secrets are redacted).
        value: String,
        /// What is wrong and what is expected.
        problem: String,
        /// Where the value came from; `None` when [`crate::config::Config::validate`] was
        /// called on a config that was not loaded in layers.
        origin: Option<Origin>,
    },
}

fn from(origin: Option<&Origin>) -> String {
    origin.map(|o| format!(" (from {o})")).unwrap_or_default()
}

impl ConfigError {
    /// Process exit code for an invalid configuration (as for a usage error).
    pub const EXIT_CODE: i32 = 2;

    /// The setting this error is about, as `section.field`, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Unknown { field, .. } | ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }

    /// Fills in where the offending value came from, if not known yet.
    pub(super) fn with_origin(mut self, lookup: impl FnOnce(&str) -> Origin) -> Self {
        if let ConfigError::Invalid { field, origin, .. } = &mut self {
            if origin.is_none() {
                *origin = Some(lookup(field));
            }
        }
        self
    }

    /// A semantic error found by validation, origin filled in later by the loader.
    pub(super) fn invalid(
        field: &str,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            field: field.to_owned(),
            value: value.to_string(),
            problem: problem.into(),
            origin: None,
        }
    }
}
