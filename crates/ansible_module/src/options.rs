//! A module's options, each declared once: [`options!`](crate::options!) takes one line per
//! option (its name is the field's, its type the field's type, its spec the `Opt` builder calls)
//! and makes the struct, the spec list and the reader; [`choices!`](crate::choices!) makes an
//! enum whose names are the option's `choices`. A group of options shared by modules (the
//! PostgreSQL login options) is an [`OptionGroup`], flattened into a struct.
//!
//! The reader is not serde's derive: `#[derive(Deserialize)]` on an options struct generates a
//! field visitor, a deserializer per field type and their error paths (with `#[serde(flatten)]`,
//! serde's whole buffering machinery too), several KB of code in each module binary, for a map
//! that [`crate::Spec::validate`] has already checked name by name and type by type. The
//! non-generic readers below ([`Options`], [`FromOption`]) are shared by every options struct
//! instead. A type mismatch here means the spec and the struct drifted apart, which the macro
//! makes impossible.

use crate::{Error, Opt, Secret};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// A type an option's validated value is read into (the field types [`options!`](crate::options!)
/// accepts).
pub trait FromOption: Sized {
    /// Take option `name` out of `o`.
    fn from_option(o: &mut Options, name: &str) -> Result<Self, crate::Error>;
}

/// Options read together and shared by modules (the login options): their specs and reader.
pub trait OptionGroup: Sized {
    /// The specs, to append to a module's own.
    fn options() -> Vec<Opt>;
    /// Read them.
    fn from_options(o: &mut Options) -> Result<Self, crate::Error>;
}

macro_rules! from_option {
    ($($ty:ty => $read:ident),* $(,)?) => {
        $(impl FromOption for $ty {
            fn from_option(o: &mut Options, name: &str) -> Result<Self, crate::Error> {
                o.$read(name)
            }
        })*
    };
}

from_option! {
    String => string,
    Option<String> => opt_string,
    PathBuf => path,
    Option<PathBuf> => opt_path,
    bool => bool,
    i64 => int,
    Option<i64> => opt_int,
    Option<Secret> => opt_secret,
    Map<String, Value> => dict,
    Option<Map<String, Value>> => opt_dict,
    Vec<String> => strings,
    Option<Vec<String>> => opt_strings,
    Option<Vec<Value>> => opt_list,
    Value => value,
}

/// The options struct of a module, declared once: each field is an option of the same name,
/// `field: Type = kind(args).builder(..)...` where `Opt::kind(name, args)` and the builder calls
/// make its spec. `flatten { login: LoginArgs }` appends an [`OptionGroup`]. Generates the struct
/// (with `Debug`), `Args::options()` (the specs in declaration order) and its `Deserialize`.
///
/// ```ignore
/// ansible_module::options! {
///     /// The module's options.
///     pub struct Args {
///         /// The stanza.
///         stanza: String = str().required(),
///         state: State = str().choices(State::NAMES).default("present"),
///     }
///     flatten { login: LoginArgs }
/// }
/// ```
#[macro_export]
macro_rules! options {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $kind:ident ( $($karg:expr),* )
                    $( . $method:ident ( $($marg:expr),* ) )*
            ),* $(,)?
        }
        $( flatten { $( $(#[$gmeta:meta])* $gfield:ident : $gty:ty ),* $(,)? } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $( $( $(#[$gmeta])* pub $gfield: $gty, )* )?
        }

        impl $name {
            /// The options' specs, in declaration order (flattened groups last).
            pub fn options() -> ::std::vec::Vec<$crate::Opt> {
                #[allow(unused_mut)]
                let mut options = ::std::vec![
                    $(
                        $crate::Opt::$kind(stringify!($field) $(, $karg)*)
                            $( .$method($($marg),*) )*
                    ),*
                ];
                $( $( options.extend(<$gty as $crate::options::OptionGroup>::options()); )* )?
                options
            }

            /// Read the validated options.
            pub fn read(o: &mut $crate::options::Options) -> Result<Self, $crate::Error> {
                Ok($name {
                    $( $field: $crate::options::FromOption::from_option(o, stringify!($field))?, )*
                    $( $( $gfield: <$gty as $crate::options::OptionGroup>::from_options(o)?, )* )?
                })
            }
        }

        impl $crate::options::OptionGroup for $name {
            fn options() -> ::std::vec::Vec<$crate::Opt> {
                $name::options()
            }
            fn from_options(o: &mut $crate::options::Options) -> Result<Self, $crate::Error> {
                $name::read(o)
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::options::Options::deserialize_with(d, $name::read)
            }
        }
    };
}

/// An enum of an option's choices: `Variant = "name"` each. Generates the enum (`Debug`,
/// `Clone`, `Copy`, `PartialEq`, `Eq`), `NAMES` (for `.choices(..)`), `name()`, and [`Choice`]
/// (so it and its `Option` are [`FromOption`]): a choice is a typed value from the start, never
/// a string or an index.
#[macro_export]
macro_rules! choices {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// The choices, as the option spells them.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// This choice's name.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl $crate::options::Choice for $name {
            fn from_name(name: &str) -> Option<Self> {
                $name::from_name(name)
            }
        }
    };
}

/// An enum made by [`choices!`](crate::choices!): read from its name.
pub trait Choice: Sized {
    /// The choice named `name`.
    fn from_name(name: &str) -> Option<Self>;
}

fn choice<T: Choice>(text: &str, name: &str) -> Result<T, crate::Error> {
    T::from_name(text).ok_or_else(|| Error::Invalid(format!("invalid choice for field `{name}`")))
}

impl<T: Choice> FromOption for T {
    fn from_option(o: &mut Options, name: &str) -> Result<Self, crate::Error> {
        choice(&o.string(name)?, name)
    }
}

impl<T: Choice> FromOption for Option<T> {
    fn from_option(o: &mut Options, name: &str) -> Result<Self, crate::Error> {
        o.opt_string(name)?.map(|t| choice(&t, name)).transpose()
    }
}

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
        build: impl FnOnce(&mut Options) -> Result<T, crate::Error>,
    ) -> Result<T, D::Error> {
        build(&mut Options::read(d)?).map_err(serde::de::Error::custom)
    }

    /// The option's value (`null` when neither given nor defaulted); an error when it is absent.
    pub fn value(&mut self, name: &str) -> Result<Value, Error> {
        self.0
            .get_mut(name)
            .map(Value::take)
            .ok_or_else(|| Error::Invalid(format!("missing field `{name}`")))
    }

    fn wrong(name: &str) -> Error {
        Error::Invalid(format!("invalid type for field `{name}`"))
    }

    /// An optional string (`type: str`).
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(Self::wrong(name)),
        }
    }

    /// A string that has a default or is required.
    pub fn string(&mut self, name: &str) -> Result<String, Error> {
        self.opt_string(name)?.ok_or_else(|| Self::wrong(name))
    }

    /// An optional path (`type: path`).
    pub fn opt_path(&mut self, name: &str) -> Result<Option<PathBuf>, Error> {
        Ok(self.opt_string(name)?.map(PathBuf::from))
    }

    /// A path that has a default or is required.
    pub fn path(&mut self, name: &str) -> Result<PathBuf, Error> {
        self.string(name).map(PathBuf::from)
    }

    /// An optional secret (`no_log: true`).
    pub fn opt_secret(&mut self, name: &str) -> Result<Option<Secret>, Error> {
        Ok(self.opt_string(name)?.map(Secret::new))
    }

    /// A boolean with a default.
    pub fn bool(&mut self, name: &str) -> Result<bool, Error> {
        self.value(name)?.as_bool().ok_or_else(|| Self::wrong(name))
    }

    /// An optional integer (`type: int`).
    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>, Error> {
        match self.value(name)? {
            Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| Self::wrong(name)),
        }
    }

    /// An integer with a default.
    pub fn int(&mut self, name: &str) -> Result<i64, Error> {
        self.opt_int(name)?.ok_or_else(|| Self::wrong(name))
    }

    /// A dict with a default.
    pub fn dict(&mut self, name: &str) -> Result<Map<String, Value>, Error> {
        match self.value(name)? {
            Value::Object(m) => Ok(m),
            _ => Err(Self::wrong(name)),
        }
    }

    /// An optional dict.
    pub fn opt_dict(&mut self, name: &str) -> Result<Option<Map<String, Value>>, Error> {
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::Object(m) => Ok(Some(m)),
            _ => Err(Self::wrong(name)),
        }
    }

    /// An optional list, its elements as they are.
    pub fn opt_list(&mut self, name: &str) -> Result<Option<Vec<Value>>, Error> {
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::Array(items) => Ok(Some(items)),
            _ => Err(Self::wrong(name)),
        }
    }

    /// An optional list of strings (`elements: str`).
    pub fn opt_strings(&mut self, name: &str) -> Result<Option<Vec<String>>, Error> {
        let Some(items) = self.opt_list(name)? else {
            return Ok(None);
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(Self::wrong(name)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A list of strings with a default.
    pub fn strings(&mut self, name: &str) -> Result<Vec<String>, Error> {
        self.opt_strings(name)?.ok_or_else(|| Self::wrong(name))
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
        assert_eq!(o.value("x").unwrap_err().to_string(), "missing field `x`");
        let mut o = Options::read(json!({"i": "5"})).unwrap();
        assert_eq!(
            o.int("i").unwrap_err().to_string(),
            "invalid type for field `i`"
        );
    }

    crate::choices! {
        /// A test choice.
        enum Mode {
            /// a
            Fast = "fast",
            /// b
            Safe = "safe",
        }
    }

    crate::options! {
        /// Test options.
        struct Args {
            /// a
            name: String = str().required(),
            /// b
            mode: Mode = str().choices(Mode::NAMES).default("safe"),
            /// c
            tags: Vec<String> = list(crate::Elem::Str).default(json!([])),
            /// d
            level: Option<i64> = int(),
        }
    }

    #[test]
    fn the_macro_declares_each_option_once() {
        let options = Args::options();
        let names: Vec<_> = options.iter().map(|o| o.name).collect();
        assert_eq!(names, ["name", "mode", "tags", "level"]);
        assert!(options[0].required);
        assert_eq!(options[1].choices, ["fast", "safe"]);
        let args: Args = serde_json::from_value(
            json!({"name": "n", "mode": "fast", "tags": ["x"], "level": null}),
        )
        .unwrap();
        assert_eq!(
            (args.name.as_str(), args.mode, args.level),
            ("n", Mode::Fast, None)
        );
        assert_eq!(args.tags, ["x"]);
        assert_eq!(Mode::Safe.name(), "safe");
        let bad = serde_json::from_value::<Args>(
            json!({"name": "n", "mode": "other", "tags": [], "level": null}),
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("invalid choice for field `mode`"));
    }
}
