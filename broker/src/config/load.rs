//! Layering: defaults <- TOML file <- `CONVOKE_` environment <- flags.
//!
//! The layers are merged as TOML values first and deserialized once, so every layer is
//! parsed by the same serde code. The shape of the config (sections, keys, and whether a
//! key is a number, a boolean or a string) is read off `Config::default()` serialized, so
//! nothing here lists the settings by hand: a new field is picked up by every layer.
//! Each value's origin is remembered so an error can say which layer to fix.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use super::{Config, ConfigError, Origin};

/// Prefix of the environment variables that set config values: `CONVOKE_SERVER__LISTEN`
/// sets `server.listen`.
pub const ENV_PREFIX: &str = "CONVOKE_";

/// One setting given on the command line, applied over the file and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSetting {
    /// The flag as the user spelt it, for error messages (`--listen`).
    pub flag: String,
    /// The setting it sets, as `section.field` (`server.listen`).
    pub key: String,
    /// The value, as text; it is typed like the same value in an environment variable.
    pub value: String,
}

impl FlagSetting {
    /// A flag that sets `key` (`section.field`) to `value`.
    pub fn new(flag: impl Into<String>, key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            flag: flag.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    /// Parses the argument of a generic `--set section.field=value` flag.
    pub fn parse_set(arg: &str) -> Result<Self, ConfigError> {
        match arg.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let key = key.trim();
                Ok(Self::new(format!("--set {key}"), key, value))
            }
            _ => Err(ConfigError::Unknown {
                field: arg.to_owned(),
                hint: "expected --set section.field=value, e.g. --set server.listen=0.0.0.0:4433"
                    .to_owned(),
                origin: Some(Origin::Flag("--set".to_owned())),
            }),
        }
    }
}

/// This process's `CONVOKE_` environment variables, for [`Config::load`].
///
/// Unlike `std::env::vars()` this never panics: a variable whose name or value is not
/// UTF-8 is passed on lossily (and then fails to parse, naming the variable).
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter(|(name, _)| name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()))
        .map(|(name, value): (OsString, OsString)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

pub(super) fn load_layered(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: impl IntoIterator<Item = super::FlagSetting>,
) -> Result<Config, ConfigError> {
    let mut layers = Layers::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        layers.overlay_file(table, &Origin::File(path.to_owned()))?;
    }
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort(); // deterministic: the first bad variable in name order is the one reported
    for (name, value) in env {
        if let Some(key) = layers.env_key(&name)? {
            layers.set(&key, &value, Origin::Env(name))?;
        }
    }
    for flag in flags {
        let key = flag.key.to_ascii_lowercase();
        layers.set(&key, &flag.value, Origin::Flag(flag.flag))?;
    }
    let config = layers.build()?;
    config
        .validate()
        .map_err(|e| e.with_origin(|field| layers.origin(field)))?;
    Ok(config)
}

/// The merged layers, as TOML, with the origin of every value set.
struct Layers {
    /// `Config::default()` as TOML: the shape every layer is checked against.
    schema: Table,
    merged: Table,
    origins: BTreeMap<String, Origin>,
}

impl Layers {
    fn new() -> Self {
        let schema = match Value::try_from(Config::default()) {
            Ok(Value::Table(t)) => t,
            // Config is a struct of structs of scalars; toml serializes that as a table.
            other => unreachable!("default config does not serialize to a table: {other:?}"),
        };
        Self {
            schema,
            merged: Table::new(),
            origins: BTreeMap::new(),
        }
    }

    fn origin(&self, field: &str) -> Origin {
        self.origins.get(field).cloned().unwrap_or(Origin::Default)
    }

    /// The section table and default value of `section.field`, or an error naming it.
    fn lookup(
        &self,
        section: &str,
        field: Option<&str>,
        given_as: &str,
        origin: &Origin,
    ) -> Result<&Value, ConfigError> {
        let unknown = |hint: String| ConfigError::Unknown {
            field: given_as.to_owned(),
            hint,
            origin: Some(origin.clone()),
        };
        let Some(Value::Table(fields)) = self.schema.get(section) else {
            return Err(unknown(format!(
                "no section [{section}]; the sections are {}",
                names(self.schema.keys())
            )));
        };
        let Some(field) = field else {
            return Ok(&self.schema[section]);
        };
        fields.get(field).ok_or_else(|| {
            unknown(format!(
                "[{section}] has no key {field:?}; its keys are {}",
                names(fields.keys())
            ))
        })
    }

    fn overlay_file(&mut self, file: Table, origin: &Origin) -> Result<(), ConfigError> {
        for (section, value) in file {
            self.lookup(&section, None, &section, origin)?;
            let Value::Table(fields) = value else {
                return Err(ConfigError::Invalid {
                    value: value.to_string(),
                    problem: format!("expected a [{section}] table of settings"),
                    field: section,
                    origin: Some(origin.clone()),
                });
            };
            for (field, value) in fields {
                let key = format!("{section}.{field}");
                self.lookup(&section, Some(&field), &key, origin)?;
                self.insert(&section, field, value);
                self.origins.insert(key, origin.clone());
            }
        }
        Ok(())
    }

    /// Maps `CONVOKE_SECTION__FIELD` to `section.field`; `None` for variables that are not
    /// settings (no prefix, or no `__`, such as `CONVOKE_CONFIG`).
    fn env_key(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(None);
        };
        let rest = rest.to_ascii_lowercase();
        if let Some((section, field)) = rest.split_once("__") {
            return Ok(Some(format!("{section}.{field}")));
        }
        // `CONVOKE_SERVER_LISTEN` is almost certainly a typo for `CONVOKE_SERVER__LISTEN`;
        // silently ignoring it would leave the operator puzzled.
        for (section, fields) in &self.schema {
            let Value::Table(fields) = fields else {
                continue;
            };
            for field in fields.keys() {
                if rest == format!("{section}_{field}") {
                    return Err(ConfigError::Unknown {
                        field: format!("environment variable {name}"),
                        hint: format!(
                            "did you mean {ENV_PREFIX}{}__{}? (two underscores between \
                             section and key)",
                            section.to_ascii_uppercase(),
                            field.to_ascii_uppercase()
                        ),
                        origin: None,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Sets `section.field` from text (environment or flag), typed like its default.
    fn set(&mut self, key: &str, text: &str, origin: Origin) -> Result<(), ConfigError> {
        let given_as = key.to_owned();
        let Some((section, field)) = key.split_once('.') else {
            return Err(ConfigError::Unknown {
                field: given_as,
                hint: format!(
                    "a setting is named section.field; the sections are {}",
                    names(self.schema.keys())
                ),
                origin: Some(origin),
            });
        };
        let default = self.lookup(section, Some(field), &given_as, &origin)?;
        let invalid = |problem: &str| ConfigError::Invalid {
            field: key.to_owned(),
            value: shown(key, &Value::String(text.to_owned())),
            problem: problem.to_owned(),
            origin: Some(origin.clone()),
        };
        let value = match default {
            Value::Integer(_) => Value::Integer(
                text.trim()
                    .parse()
                    .map_err(|_| invalid("expected a whole number"))?,
            ),
            Value::Boolean(_) => Value::Boolean(
                text.trim()
                    .parse()
                    .map_err(|_| invalid("expected true or false"))?,
            ),
            Value::Float(_) => Value::Float(
                text.trim()
                    .parse()
                    .map_err(|_| invalid("expected a number"))?,
            ),
            // A list (`cluster.members`) from the environment or a flag: comma-separated.
            Value::Array(_) => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
            _ => Value::String(text.to_owned()),
        };
        let (section, field) = (section.to_owned(), field.to_owned());
        self.insert(&section, field, value);
        self.origins.insert(key.to_owned(), origin);
        Ok(())
    }

    fn insert(&mut self, section: &str, field: String, value: Value) {
        let fields = self
            .merged
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(fields) = fields {
            fields.insert(field, value);
        }
    }

    /// Deserializes the merged layers. Each value is first checked alone, so that a type
    /// or parse error names its setting and origin (serde's own error would not).
    fn build(&self) -> Result<Config, ConfigError> {
        for (section, fields) in &self.merged {
            let Value::Table(fields) = fields else {
                continue;
            };
            for (field, value) in fields {
                let mut one = Table::new();
                one.insert(field.clone(), value.clone());
                let mut probe = Table::new();
                probe.insert(section.clone(), Value::Table(one));
                if let Err(e) = Config::deserialize(probe) {
                    let key = format!("{section}.{field}");
                    return Err(ConfigError::Invalid {
                        value: shown(&key, value),
                        problem: plain_words(e.message()),
                        origin: Some(self.origin(&key)),
                        field: key,
                    });
                }
            }
        }
        Config::deserialize(self.merged.clone()).map_err(|e| ConfigError::Invalid {
            field: "config".to_owned(),
            value: String::new(),
            problem: e.message().trim_end().to_owned(),
            origin: None,
        })
    }
}

/// A value as it appears in an error message; secrets are never echoed.
pub(super) fn shown(key: &str, value: &Value) -> String {
    match value {
        Value::String(s) if key == "auth.secret" || key == "cluster.cookie" => {
            format!("<redacted, {} bytes>", s.len())
        }
        other => other.to_string(),
    }
}

/// serde speaks Rust (`expected u32`); operators read ranges.
fn plain_words(message: &str) -> String {
    let message = message.trim_end();
    for (rust, words) in [
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 9223372036854775807",
        ),
        (
            "expected usize",
            "expected a whole number from 0 to 9223372036854775807",
        ),
    ] {
        if let Some(head) = message.strip_suffix(rust) {
            return format!("{head}{words}");
        }
    }
    message.to_owned()
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(String::as_str).collect::<Vec<_>>().join(", ")
}
