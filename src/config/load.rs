//! Layering and error locations: the file layer (a config file, or the shipped demo
//! compiled in), then `WAYFARE__*` variables one by one, then validation; every refusal
//! names where the offending value came from.
//!
//! Why variables are applied one at a time: each is merged into the file's TOML tree and
//! the tree deserialized again, so a type error or an unknown key is blamed on the one
//! variable that introduced it (the tree was valid just before), by name. Errors in the
//! file itself come from deserializing the file's own text, so their line is the user's.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, ENV_PREFIX};

/// The shipped `config.toml` (the demo: three simulated sellers, ten demo accounts),
/// compiled into the binary. It is the file layer when no config file is given and there
/// is no `./config.toml`, so a bare `wayfare serve` runs the demo the README describes.
pub const SHIPPED_CONFIG: &str = include_str!("../../config.toml");

/// Where configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// [`SHIPPED_CONFIG`], compiled into the binary.
    BuiltIn,
    /// A config file.
    File(PathBuf),
    /// TOML text passed to [`Config::parse`].
    Text,
    /// One `WAYFARE__*` environment variable, by name only: its value may be a secret.
    Env(String),
    /// A command-line flag such as `--data-dir`.
    Flag(String),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::BuiltIn => f.write_str("built-in defaults (the shipped config.toml)"),
            ConfigSource::File(path) => write!(f, "config file {}", path.display()),
            ConfigSource::Text => f.write_str("config text"),
            ConfigSource::Env(name) => write!(f, "environment variable {name}"),
            ConfigSource::Flag(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// Where a value was set: its source, and the line when the source is a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The source.
    pub source: ConfigSource,
    /// 1-based line in the file layer.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

/// A validated config and the sources it was built from.
#[derive(Clone)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// The file layer first, then each override in the order applied (names only).
    pub sources: Vec<ConfigSource>,
    /// The file layer's text, to find the line of a key.
    text: String,
    /// Each override after the file layer and the dotted key path it set.
    overrides: Vec<(ConfigSource, Vec<String>)>,
}

// By hand: the file text may hold a secret (`admin.token`), and `Debug` output ends up in logs.
impl fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("config", &self.config)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl LoadedConfig {
    /// Records that a command-line flag replaced the value at the dotted `key` (so a
    /// refusal of that key blames the flag). The caller sets the value in `config`.
    pub fn set_by_flag(&mut self, flag: &str, key: &str) {
        let source = ConfigSource::Flag(flag.to_owned());
        self.sources.push(source.clone());
        self.overrides.push((source, split_key(key)));
    }

    /// Records that an environment variable outside the `WAYFARE__*` scheme (the
    /// standard `OTEL_*` ones) set the dotted `key`.
    pub(super) fn set_by_env(&mut self, name: &str, key: &str) {
        let source = ConfigSource::Env(name.to_owned());
        self.sources.push(source.clone());
        self.overrides.push((source, split_key(key)));
    }

    /// Validates again (after flags changed values), naming where a refused value was set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate().map_err(|e| self.locate(e))
    }

    /// The production rules of [`Config::refuse_in_production`], naming where a refused
    /// value was set.
    pub fn refuse_in_production(&self) -> Result<(), ConfigError> {
        self.config
            .refuse_in_production()
            .map_err(|e| self.locate(e))
    }

    /// Adds to a key's error where the key was set: the last override of it (or of a
    /// table holding it), else its line in the file layer. An error without a key, or for
    /// a key left at its code default, is returned as it is.
    pub fn locate(&self, error: ConfigError) -> ConfigError {
        let Some(key) = error_key(&error) else {
            return error;
        };
        let path = split_key(&key);
        let at = match self
            .overrides
            .iter()
            .rev()
            .find(|(_, set)| path.starts_with(set))
        {
            Some((source, _)) => Location {
                source: source.clone(),
                line: None,
            },
            None => match line_of(&self.text, &path) {
                Some(line) => Location {
                    source: self.sources[0].clone(),
                    line: Some(line),
                },
                None => return error,
            },
        };
        ConfigError::Located {
            error: Box::new(error),
            at,
        }
    }
}

impl Config {
    /// Loads `path` (or, when `None`, the shipped demo [`SHIPPED_CONFIG`]), applies
    /// `WAYFARE__*` overrides from the process environment, and validates. A `path` that
    /// cannot be read is an error naming it; it never falls back to the demo.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(Self::load_layered(path, env_overrides()?)?.config)
    }

    /// Like [`load`](Self::load) with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Ok(Self::load_layered(path, env)?.config)
    }

    /// Like [`load_with_env`](Self::load_with_env), keeping the sources used (for the
    /// start-up log) and what is needed to locate later refusals.
    pub fn load_layered(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
                layer(ConfigSource::File(path.to_owned()), text, env)
            }
            None => layer(ConfigSource::BuiltIn, SHIPPED_CONFIG.to_owned(), env),
        }
    }

    /// Parses TOML text (on code defaults, not on the shipped demo), applies overrides
    /// and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Ok(layer(ConfigSource::Text, text.to_owned(), env)?.config)
    }
}

/// The process's `WAYFARE__*` variables. Others are not looked at (`std::env::vars` would
/// panic on any variable that is not UTF-8); one of ours that is not UTF-8 is refused.
pub fn env_overrides() -> Result<Vec<(String, String)>, ConfigError> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(ENV_PREFIX).then(|| {
                value.into_string().map(|v| (name.clone(), v)).map_err(|_| {
                    ConfigError::Parse(format!("environment variable {name}: value is not UTF-8"))
                })
            })
        })
        .collect()
}

fn layer(
    source: ConfigSource,
    text: String,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigError> {
    let in_file = |e: toml::de::Error, table: Option<&toml::Table>| {
        ConfigError::Parse(describe(&source, &text, &e, table))
    };
    let mut table: toml::Table = text.parse().map_err(|e| in_file(e, None))?;
    let mut config: Config = toml::from_str(&text).map_err(|e| in_file(e, Some(&table)))?;
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // The OS lists variables in no particular order; names are unique, so sorting by name
    // makes the order (and so which of two clashing variables wins) reproducible.
    env.sort();
    let mut overrides = Vec::with_capacity(env.len());
    for (name, raw) in env {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let refused = |reason: &str| {
            ConfigError::Parse(format!(
                "environment variable {name} (key {}): {}",
                path.join("."),
                one_line(reason)
            ))
        };
        set_path(&mut table, &path, env_value(&raw)).map_err(|e| refused(&e))?;
        // Re-rendering lets toml's deserializer check the merged tree with keys named.
        let merged = toml::to_string(&table).map_err(|e| refused(&e.to_string()))?;
        config = toml::from_str(&merged).map_err(|e| refused(&plain_message(&e, Some(&table))))?;
        overrides.push((ConfigSource::Env(name), path));
    }
    let mut sources = vec![source];
    sources.extend(overrides.iter().map(|(s, _)| s.clone()));
    let loaded = LoadedConfig {
        config,
        sources,
        text,
        overrides,
    };
    loaded.validate()?;
    Ok(loaded)
}

/// A TOML error in the file layer as one line: source, line, column, message, and the
/// offending line (which shows the key).
fn describe(
    source: &ConfigSource,
    text: &str,
    e: &toml::de::Error,
    table: Option<&toml::Table>,
) -> String {
    let message = plain_message(e, table);
    let Some(span) = e.span() else {
        return format!("{source}: {message}");
    };
    let (line, column) = line_col(text, span.start);
    let shown: String = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect();
    format!("{source}, line {line}, column {column}: {message} (at `{shown}`)")
}

/// serde's message, or for a negative number given to a key that cannot be negative, what
/// the key allows in plain words (serde's "expected u64" names a Rust type, not a range).
fn plain_message(e: &toml::de::Error, table: Option<&toml::Table>) -> String {
    table
        .and_then(|t| explain_negative(t, e.message()))
        .unwrap_or_else(|| one_line(e.message()))
}

/// For serde's "invalid value: integer `-5`, expected u64": puts 0 where the -5 was and
/// asks [`Config::validate`] about it, so the refusal states the key's own range in the
/// same words as for an in-range number that is too small, whichever layer set the value.
fn explain_negative(table: &toml::Table, message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid value: integer `")?;
    let (number, expected) = rest.split_once("`, expected ")?;
    let value: i64 = number.parse().ok()?;
    if value >= 0 || !expected.trim().starts_with('u') {
        return None;
    }
    let mut probe = table.clone();
    let mut paths = Vec::new();
    zero_negatives(&mut probe, value, &mut Vec::new(), &mut paths);
    let key = paths.first()?.clone();
    let reason = toml::to_string(&probe)
        .ok()
        .and_then(|text| toml::from_str::<Config>(&text).ok())
        .and_then(|config| match config.validate() {
            Err(ConfigError::Invalid {
                key: refused,
                reason,
            }) if paths.iter().any(|p| p == refused) => Some(reason),
            Err(ConfigError::Nested(text)) => paths.iter().find_map(|p| {
                text.strip_prefix(p.as_str())
                    .and_then(|r| r.strip_prefix(": "))
                    .map(str::to_owned)
            }),
            _ => None,
        })
        .unwrap_or_else(|| "must be 0 or more".into());
    Some(format!("{key} {reason}, got {value}"))
}

/// Replaces every integer equal to `value` with 0, collecting the dotted keys it was at.
fn zero_negatives(
    table: &mut toml::Table,
    value: i64,
    at: &mut Vec<String>,
    found: &mut Vec<String>,
) {
    for (name, item) in table.iter_mut() {
        at.push(name.clone());
        match item {
            toml::Value::Integer(n) if *n == value => {
                *n = 0;
                found.push(at.join("."));
            }
            toml::Value::Table(t) => zero_negatives(t, value, at, found),
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(t) = item {
                        at.push(i.to_string());
                        zero_negatives(t, value, at, found);
                        at.pop();
                    }
                }
            }
            _ => {}
        }
        at.pop();
    }
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

/// 1-based line and byte column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.len()
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

/// The line of the value at `path` in `text`, when the text sets it.
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    for segment in path {
        item = match segment.parse::<usize>() {
            Ok(index) => item.get(index),
            Err(_) => item.get(segment.as_str()),
        }?;
    }
    Some(line_col(text, item.span()?.start).0)
}

/// The dotted key a refusal is about, when it has one.
fn error_key(error: &ConfigError) -> Option<String> {
    match error {
        ConfigError::Invalid { key, .. } => Some((*key).to_owned()),
        ConfigError::Nested(text) => text.split(':').next().map(str::to_owned),
        _ => None,
    }
}

/// `sellers[1].simulated.seed` -> `["sellers", "1", "simulated", "seed"]`.
fn split_key(key: &str) -> Vec<String> {
    key.split(['.', '[', ']'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An environment value as TOML: numbers and booleans keep their type, anything else is
/// a string (so `WAYFARE__STORE__DATA_DIR=/tmp/x` needs no quotes).
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wayfare.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn no_file_means_the_shipped_demo() {
        let loaded = Config::load_layered(None, env(&[])).unwrap();
        assert_eq!(loaded.sources, vec![ConfigSource::BuiltIn]);
        let names: Vec<&str> = loaded
            .config
            .sellers
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["alpha", "bravo", "charlie"]);
        assert_eq!(loaded.config.demo.accounts, 10);
    }

    #[test]
    fn a_given_file_replaces_the_demo_and_a_missing_one_is_named() {
        let (_dir, path) = file_with("[accounts]\nshards = 2\n");
        let loaded = Config::load_layered(Some(&path), env(&[])).unwrap();
        assert_eq!(loaded.sources, vec![ConfigSource::File(path.clone())]);
        assert!(loaded.config.sellers.is_empty());
        assert_eq!(loaded.config.demo.accounts, 0);
        let missing = path.with_file_name("nope.toml");
        let e = Config::load_layered(Some(&missing), env(&[])).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }

    #[test]
    fn a_negative_number_gets_the_keys_range_in_the_same_words_from_file_and_env() {
        let (_dir, path) = file_with("[accounts]\ndeadline_ms = -5\n");
        let from_file = Config::load_layered(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        let from_env = Config::parse("", env(&[("WAYFARE__ACCOUNTS__DEADLINE_MS", "-5")]))
            .unwrap_err()
            .to_string();
        let in_range = Config::parse("", env(&[("WAYFARE__ACCOUNTS__DEADLINE_MS", "0")]))
            .unwrap_err()
            .to_string();
        let sentence = "must be between 1 and 600000";
        for text in [&from_file, &from_env, &in_range] {
            assert!(text.contains(sentence), "{text}");
            assert!(!text.contains("u64"), "{text}");
        }
        assert!(
            from_file.contains("accounts.deadline_ms must be between 1 and 600000, got -5"),
            "{from_file}"
        );
        assert!(from_file.contains("line 2"), "{from_file}");
        // A key that allows 0 says so.
        let e = Config::parse("[search.cache]\nstale_for_secs = -1\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("search.cache.stale_for_secs must be 0 or more, got -1"),
            "{e}"
        );
    }

    #[test]
    fn file_errors_name_the_file_line_and_key() {
        let (_dir, path) = file_with("[server]\nworkers = 1\n\n[accounts]\nshards = \"many\"\n");
        let e = Config::load_layered(Some(&path), env(&[])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("config file {}, line 5", path.display())),
            "{text}"
        );
        assert!(text.contains("shards"), "{text}");
        assert!(!text.contains('\n'), "{text}");

        let (_dir, path) = file_with("[accounts]\nshards = 1\nshardz = 1\n");
        let text = Config::load_layered(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("line 3") && text.contains("shardz"), "{text}");

        // Range checks point at the line too.
        let (_dir, path) = file_with("[server]\nworkers = 0\n\n[accounts]\ndeadline_ms = 0\n");
        let text = Config::load_layered(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("accounts.deadline_ms"), "{text}");
        assert!(
            text.contains(&format!("config file {}, line 5", path.display())),
            "{text}"
        );
        let text = "[[sellers]]\nname = \"a\"\nkind = \"simulated\"\n[[sellers]]\nname = \"b\"\nkind = \"simulated\"\n[sellers.simulated]\nerror_rate = 2.0\n";
        let (_dir, path) = file_with(text);
        let text = Config::load_layered(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("sellers[1].simulated.error_rate"), "{text}");
        assert!(text.contains("line 8"), "{text}");
    }

    #[test]
    fn env_errors_name_the_variable_not_a_merged_line() {
        // An unknown key.
        let e = Config::load_layered(None, env(&[("WAYFARE__ACCOUNTS__SHARDZ", "3")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("environment variable WAYFARE__ACCOUNTS__SHARDZ"),
            "{text}"
        );
        assert!(text.contains("shardz"), "{text}");
        assert!(!text.contains(", line "), "{text}");
        // A wrong type.
        let e =
            Config::load_layered(None, env(&[("WAYFARE__ACCOUNTS__SHARDS", "many")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("WAYFARE__ACCOUNTS__SHARDS") && text.contains("accounts.shards"),
            "{text}"
        );
        // Out of range, though the file sets the same key: the variable is blamed.
        let e = Config::load_layered(None, env(&[("WAYFARE__ACCOUNTS__DEADLINE_MS", "0")]))
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("accounts.deadline_ms"), "{text}");
        assert!(
            text.contains("environment variable WAYFARE__ACCOUNTS__DEADLINE_MS"),
            "{text}"
        );
        assert!(!text.contains("config.toml"), "{text}");
    }

    #[test]
    fn sources_list_variables_by_name_only() {
        let secret = "a-very-secret-operator-token";
        let loaded = Config::load_layered(
            None,
            env(&[
                ("WAYFARE__ADMIN__TOKEN", secret),
                ("WAYFARE__ACCOUNTS__SHARDS", "4"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            loaded.sources,
            vec![
                ConfigSource::BuiltIn,
                ConfigSource::Env("WAYFARE__ACCOUNTS__SHARDS".into()),
                ConfigSource::Env("WAYFARE__ADMIN__TOKEN".into()),
            ]
        );
        let shown = format!("{loaded:?} {:?}", loaded.sources);
        assert!(!shown.contains(secret), "{shown}");
    }

    #[test]
    fn flags_are_blamed_for_what_they_set() {
        let mut loaded = Config::load_layered(None, env(&[])).unwrap();
        loaded.config.server.bind = "nowhere".into();
        loaded.set_by_flag("--bind", "server.bind");
        let text = loaded.validate().unwrap_err().to_string();
        assert!(
            text.contains("server.bind") && text.contains("command-line flag --bind"),
            "{text}"
        );
        // Production refuses the demo's accounts, pointing at the shipped file's line.
        let text = loaded.refuse_in_production().unwrap_err().to_string();
        assert!(
            text.contains("demo.accounts") && text.contains("built-in defaults"),
            "{text}"
        );
    }
}
