//! Typed reads of a module's validated options, for an `Args` struct's hand-written `Deserialize`.
//!
//! `#[derive(Deserialize)]` on an options struct generates a field visitor, a deserializer per
//! field type and their error paths (with `#[serde(flatten)]`, serde's whole buffering machinery
//! too): several KB of code in each module binary, for a map that [`crate::Spec::validate`] has
//! already checked name by name and type by type. These non-generic readers are shared by every
//! options struct instead. A type mismatch here means the spec and the struct drifted apart.

use crate::Secret;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The validated options, taken one by one.
pub struct Options(Map<String, Value>);

impl Options {
    /// Read the options map from a deserializer (the one [`crate::run`] feeds `Args` with).
    pub fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Options, D::Error> {
        Map::deserialize(d).map(Options)
    }

    /// An `Args` struct's whole `Deserialize`: read the options, build the struct with `build`,
    /// and report a drift between spec and struct as a deserializer error.
    pub fn deserialize_with<'de, D: Deserializer<'de>, T>(
        d: D,
        build: impl FnOnce(&mut Options) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        build(&mut Options::read(d)?).map_err(serde::de::Error::custom)
    }

    /// The option's value (`null` when neither given nor defaulted); an error when it is absent.
    pub fn value(&mut self, name: &str) -> Result<Value, String> {
        self.0
            .get_mut(name)
            .map(Value::take)
            .ok_or_else(|| format!("missing field `{name}`"))
    }

    fn wrong(name: &str) -> String {
        format!("invalid type for field `{name}`")
    }

    /// An optional string (`type: str`).
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(Self::wrong(name)),
        }
    }

    /// A string that has a default or is required.
    pub fn string(&mut self, name: &str) -> Result<String, String> {
        self.opt_string(name)?.ok_or_else(|| Self::wrong(name))
    }

    /// An optional path (`type: path`).
    pub fn opt_path(&mut self, name: &str) -> Result<Option<PathBuf>, String> {
        Ok(self.opt_string(name)?.map(PathBuf::from))
    }

    /// A path that has a default or is required.
    pub fn path(&mut self, name: &str) -> Result<PathBuf, String> {
        self.string(name).map(PathBuf::from)
    }

    /// An optional secret (`no_log: true`).
    pub fn opt_secret(&mut self, name: &str) -> Result<Option<Secret>, String> {
        Ok(self.opt_string(name)?.map(Secret::new))
    }

    /// A boolean with a default.
    pub fn bool(&mut self, name: &str) -> Result<bool, String> {
        self.value(name)?.as_bool().ok_or_else(|| Self::wrong(name))
    }

    /// An optional integer (`type: int`).
    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>, String> {
        match self.value(name)? {
            Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| Self::wrong(name)),
        }
    }

    /// An integer with a default.
    pub fn int(&mut self, name: &str) -> Result<i64, String> {
        self.opt_int(name)?.ok_or_else(|| Self::wrong(name))
    }

    /// A dict with a default.
    pub fn dict(&mut self, name: &str) -> Result<Map<String, Value>, String> {
        match self.value(name)? {
            Value::Object(m) => Ok(m),
            _ => Err(Self::wrong(name)),
        }
    }

    /// An optional choice, as the index of its value in `choices`.
    pub fn opt_choice(&mut self, name: &str, choices: &[&str]) -> Result<Option<usize>, String> {
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::String(s) => choices
                .iter()
                .position(|c| *c == s)
                .map(Some)
                .ok_or_else(|| Self::wrong(name)),
            _ => Err(Self::wrong(name)),
        }
    }

    /// A choice with a default, as the index of its value in `choices`.
    pub fn choice(&mut self, name: &str, choices: &[&str]) -> Result<usize, String> {
        self.opt_choice(name, choices)?
            .ok_or_else(|| Self::wrong(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_read_by_type_and_drift_is_an_error() {
        let mut o = Options::read(
            json!({"s": "a", "n": null, "i": 5, "b": true, "d": {"k": 1}, "c": "sql"}),
        )
        .unwrap();
        assert_eq!(o.string("s").unwrap(), "a");
        assert_eq!(o.opt_string("n").unwrap(), None);
        assert_eq!(o.int("i").unwrap(), 5);
        assert!(o.bool("b").unwrap());
        assert_eq!(o.dict("d").unwrap()["k"], json!(1));
        assert_eq!(o.choice("c", &["auto", "sql"]).unwrap(), 1);
        assert_eq!(o.value("x").unwrap_err(), "missing field `x`");
        let mut o = Options::read(json!({"i": "5"})).unwrap();
        assert_eq!(o.int("i").unwrap_err(), "invalid type for field `i`");
    }
}
