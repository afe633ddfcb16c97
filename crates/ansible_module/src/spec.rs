//! Argument specification and validation with AnsibleModule's rules.
//!
//! A module declares its options once, as a [`Spec`]; [`Spec::validate`] turns the raw JSON that
//! Ansible sent into a map of checked, coerced values (defaults filled in, aliases resolved) before
//! the module does anything. The coercion follows `ansible.module_utils.common.validation`:
//! ad-hoc `k=v` arguments arrive as strings, so `"yes"` is a boolean, `"5432"` an integer,
//! `"a,b"` a list and `'{"k": 1}'` a dict.

use serde_json::{Map, Value};
use std::fmt::Write as _;

/// The type of an option, as in AnsibleModule's `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `type: str`
    Str,
    /// `type: bool`
    Bool,
    /// `type: int`
    Int,
    /// `type: path` (a string with `~` expanded)
    Path,
    /// `type: list`, with the elements' type
    List(Elem),
    /// `type: dict`
    Dict,
    /// `type: raw` (taken as it is)
    Raw,
}

/// The element type of a list option (`elements:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// `elements: str`
    Str,
    /// `elements: int`
    Int,
    /// `elements: dict`
    Dict,
    /// `elements: raw`
    Raw,
}

impl Kind {
    /// The name Ansible's docs use for this type.
    pub fn doc_name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Path => "path",
            Kind::List(_) => "list",
            Kind::Dict => "dict",
            Kind::Raw => "raw",
        }
    }
}

impl Elem {
    /// The name Ansible's docs use for this element type.
    pub fn doc_name(self) -> &'static str {
        match self {
            Elem::Str => "str",
            Elem::Int => "int",
            Elem::Dict => "dict",
            Elem::Raw => "raw",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Elem::Str => Kind::Str,
            Elem::Int => Kind::Int,
            Elem::Dict => Kind::Dict,
            Elem::Raw => Kind::Raw,
        }
    }
}

/// One option of a module.
#[derive(Debug, Clone)]
pub struct Opt {
    /// The option's name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Must be given (no default).
    pub required: bool,
    /// The value used when the option is not given.
    pub default: Option<Value>,
    /// The allowed values (compared after coercion, as strings).
    pub choices: Vec<&'static str>,
    /// Other names the option answers to.
    pub aliases: Vec<&'static str>,
    /// The value is a secret: masked in every output.
    pub no_log: bool,
    /// The value may hold secrets that only the module recognises (a dict of settings, say):
    /// argument errors name the option but never quote the value.
    pub hide_value: bool,
}

impl Opt {
    /// A new, optional option of the given type without default.
    pub fn new(name: &'static str, kind: Kind) -> Self {
        Opt {
            name,
            kind,
            required: false,
            default: None,
            choices: Vec::new(),
            aliases: Vec::new(),
            no_log: false,
            hide_value: false,
        }
    }
    /// `type: str`
    pub fn str(name: &'static str) -> Self {
        Self::new(name, Kind::Str)
    }
    /// `type: bool`
    pub fn bool(name: &'static str) -> Self {
        Self::new(name, Kind::Bool)
    }
    /// `type: int`
    pub fn int(name: &'static str) -> Self {
        Self::new(name, Kind::Int)
    }
    /// `type: path`
    pub fn path(name: &'static str) -> Self {
        Self::new(name, Kind::Path)
    }
    /// `type: list` with `elements`
    pub fn list(name: &'static str, elements: Elem) -> Self {
        Self::new(name, Kind::List(elements))
    }
    /// `type: dict`
    pub fn dict(name: &'static str) -> Self {
        Self::new(name, Kind::Dict)
    }
    /// `required: true`
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// `default: value`
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }
    /// `choices: [...]`
    pub fn choices(mut self, choices: &[&'static str]) -> Self {
        self.choices = choices.to_vec();
        self
    }
    /// `aliases: [...]`
    pub fn aliases(mut self, aliases: &[&'static str]) -> Self {
        self.aliases = aliases.to_vec();
        self
    }
    /// `no_log: true`
    pub fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }
    /// Never quote the value in argument errors (it may hold secrets the module finds later).
    pub fn hide_value(mut self) -> Self {
        self.hide_value = true;
        self
    }
}

/// A module's whole argument specification.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The options.
    pub options: Vec<Opt>,
    /// Groups of options of which at most one may be given.
    pub mutually_exclusive: Vec<Vec<&'static str>>,
    /// `(option, value, requirements)`: when `option` equals `value`, all of `requirements` must be
    /// given.
    pub required_if: Vec<(&'static str, Value, Vec<&'static str>)>,
    /// The module predicts its changes in check mode.
    pub supports_check_mode: bool,
}

impl Spec {
    /// A spec with these options; check mode supported.
    pub fn new(options: Vec<Opt>) -> Self {
        Spec {
            options,
            supports_check_mode: true,
            ..Spec::default()
        }
    }
    /// Add a `mutually_exclusive` group.
    pub fn mutually_exclusive(mut self, group: &[&'static str]) -> Self {
        self.mutually_exclusive.push(group.to_vec());
        self
    }
    /// Add a `required_if` rule.
    pub fn required_if(
        mut self,
        option: &'static str,
        value: impl Into<Value>,
        requirements: &[&'static str],
    ) -> Self {
        self.required_if
            .push((option, value.into(), requirements.to_vec()));
        self
    }

    /// Options whose values must be masked.
    pub fn no_log_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.options.iter().filter(|o| o.no_log).map(|o| o.name)
    }

    /// Check and coerce the module's arguments (internal `_ansible_*` keys already removed).
    ///
    /// Returns every option by its canonical name: given values coerced, defaults filled in,
    /// `null` for an option neither given nor defaulted.
    pub fn validate(
        &self,
        raw: &Map<String, Value>,
        module_name: &str,
    ) -> Result<Map<String, Value>, String> {
        let mut given: Map<String, Value> = Map::new();
        let mut unknown: Vec<&str> = Vec::new();
        for (key, value) in raw {
            let Some(opt) = self
                .options
                .iter()
                .find(|o| o.name == key || o.aliases.contains(&key.as_str()))
            else {
                unknown.push(key);
                continue;
            };
            if given.contains_key(opt.name) {
                return Err(format!(
                    "option '{}' was given more than once (as '{}' and an alias)",
                    opt.name, key
                ));
            }
            given.insert(opt.name.to_owned(), value.clone());
        }
        if !unknown.is_empty() {
            crate::sort_small(&mut unknown, |a, b| a < b);
            let mut supported: Vec<&str> = self
                .options
                .iter()
                .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
                .collect();
            crate::sort_small(&mut supported, |a, b| a < b);
            return Err(format!(
                "Unsupported parameters for ({module_name}) module: {}. \
                 Supported parameters include: {}.",
                unknown.join(", "),
                supported.join(", ")
            ));
        }

        for group in &self.mutually_exclusive {
            let present: Vec<&str> = group
                .iter()
                .copied()
                .filter(|n| is_given(&given, n))
                .collect();
            if present.len() > 1 {
                return Err(format!(
                    "parameters are mutually exclusive: {}",
                    present.join("|")
                ));
            }
        }

        let missing: Vec<&str> = self
            .options
            .iter()
            .filter(|o| o.required && !is_given(&given, o.name))
            .map(|o| o.name)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing required arguments: {}",
                missing.join(", ")
            ));
        }

        let mut out = Map::new();
        for opt in &self.options {
            let value = match given.get(opt.name) {
                Some(Value::Null) | None => opt.default.clone().unwrap_or(Value::Null),
                Some(v) => coerce(opt.kind, v).map_err(|why| {
                    // The reason quotes the value: leave it out for a secret.
                    let hidden = opt.no_log || opt.hide_value;
                    let (shown, why) = if hidden {
                        ("********".to_owned(), "the value is hidden".to_owned())
                    } else {
                        (short(v), why)
                    };
                    format!(
                        "argument '{}' is of type {} ({shown}) and we were unable to convert \
                         to {}: {why}",
                        opt.name,
                        json_type(v),
                        opt.kind.doc_name()
                    )
                })?,
            };
            if !opt.choices.is_empty() && !value.is_null() {
                check_choice(opt, &value)?;
            }
            out.insert(opt.name.to_owned(), value);
        }

        for (option, expected, requirements) in &self.required_if {
            let actual = out.get(*option).unwrap_or(&Value::Null);
            if same_value(actual, expected) {
                let missing: Vec<&str> = requirements
                    .iter()
                    .copied()
                    .filter(|n| out.get(*n).is_none_or(Value::is_null))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!(
                        "{option} is {} but all of the following are missing: {}",
                        plain(expected),
                        missing.join(", ")
                    ));
                }
            }
        }
        Ok(out)
    }
}

fn is_given(given: &Map<String, Value>, name: &str) -> bool {
    given.get(name).is_some_and(|v| !v.is_null())
}

fn check_choice(opt: &Opt, value: &Value) -> Result<(), String> {
    let values: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for v in values {
        let text = plain(v);
        if !opt.choices.contains(&text.as_str()) {
            return Err(format!(
                "value of {} must be one of: {}, got: {text}",
                opt.name,
                opt.choices.join(", ")
            ));
        }
    }
    Ok(())
}

fn same_value(a: &Value, b: &Value) -> bool {
    a == b || plain(a) == plain(b)
}

/// A value as a user would write it (strings without quotes).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    let text = plain(v);
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("'{cut}...'")
    } else {
        format!("'{text}'")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The strings Ansible reads as true and false (`ansible.module_utils.parsing.convert_bool`).
const TRUTHY: &[&str] = &["y", "yes", "on", "1", "true", "t"];
const FALSY: &[&str] = &["n", "no", "off", "0", "false", "f"];

/// Coerce one value to a type with Ansible's rules.
pub fn coerce(kind: Kind, v: &Value) -> Result<Value, String> {
    match kind {
        Kind::Raw => Ok(v.clone()),
        Kind::Str => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Bool(_) | Value::Number(_) => Ok(Value::String(plain(v))),
            _ => Err(format!("a {} is not a string", json_type(v))),
        },
        Kind::Path => match v {
            Value::String(s) => Ok(Value::String(expand_home(s))),
            _ => Err(format!("a {} is not a path", json_type(v))),
        },
        Kind::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
            Value::String(s) => {
                let lower = s.trim().to_ascii_lowercase();
                if TRUTHY.contains(&lower.as_str()) {
                    Ok(Value::Bool(true))
                } else if FALSY.contains(&lower.as_str()) {
                    Ok(Value::Bool(false))
                } else {
                    Err(format!(
                        "'{s}' is not a valid boolean; valid booleans include: {}",
                        [TRUTHY, FALSY].concat().join(", ")
                    ))
                }
            }
            _ => Err("not a valid boolean".to_owned()),
        },
        Kind::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                _ => Err(format!("{n} is not an integer")),
            },
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("invalid literal for int(): '{s}'")),
            _ => Err("not an integer".to_owned()),
        },
        Kind::List(elem) => {
            let items: Vec<Value> = match v {
                Value::Array(items) => items.clone(),
                Value::String(s) if s.is_empty() => Vec::new(),
                Value::String(s) => s
                    .split(',')
                    .map(|p| Value::String(p.trim().to_owned()))
                    .collect(),
                Value::Number(_) | Value::Bool(_) => vec![Value::String(plain(v))],
                _ => return Err(format!("a {} is not a list", json_type(v))),
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| coerce(elem.kind(), item).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Kind::Dict => match v {
            Value::Object(_) => Ok(v.clone()),
            Value::String(s) if s.trim_start().starts_with('{') => {
                match serde_json::from_str::<Value>(s) {
                    Ok(parsed @ Value::Object(_)) => Ok(parsed),
                    _ => Err("the string is not a JSON object".to_owned()),
                }
            }
            Value::String(s) => parse_kv(s).map(Value::Object),
            _ => Err(format!("a {} is not a dict", json_type(v))),
        },
    }
}

/// `k1=v1 k2=v2` or `k1=v1, k2=v2`, as Ansible's `check_type_dict` accepts.
fn parse_kv(s: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for field in s.split([',', ' ']).map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("'{field}' is not key=value"))?;
        map.insert(
            key.trim().to_owned(),
            Value::String(value.trim().to_owned()),
        );
    }
    Ok(map)
}

fn expand_home(s: &str) -> String {
    match (s.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => s.to_owned(),
    }
}

/// The option list as Ansible docs would render it, for comparing with a sidecar doc.
///
/// Returns one line per option:
/// `name type=... required=... default=... choices=... aliases=... no_log=...`.
pub fn describe(spec: &Spec) -> Vec<String> {
    let mut lines: Vec<String> = spec
        .options
        .iter()
        .map(|o| {
            let mut line = format!("{} type={}", o.name, o.kind.doc_name());
            if let Kind::List(e) = o.kind {
                let _ = write!(line, " elements={}", e.doc_name());
            }
            let _ = write!(line, " required={}", o.required);
            if let Some(d) = &o.default {
                let _ = write!(line, " default={d}");
            }
            if !o.choices.is_empty() {
                let _ = write!(line, " choices={}", o.choices.join(","));
            }
            if !o.aliases.is_empty() {
                let _ = write!(line, " aliases={}", o.aliases.join(","));
            }
            let _ = write!(line, " no_log={}", o.no_log);
            line
        })
        .collect();
    lines.sort();
    lines
}

/// The same lines as [`describe`], from a sidecar doc's `DOCUMENTATION.options` (as JSON).
///
/// A module's test compares the two so that the YAML an operator reads and the spec the module
/// enforces cannot drift apart.
pub fn describe_doc(options: &Value) -> Vec<String> {
    let Some(options) = options.as_object() else {
        return vec!["DOCUMENTATION.options is not a mapping".to_owned()];
    };
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().map(plain).collect())
            .unwrap_or_default()
    };
    let mut lines: Vec<String> = options
        .iter()
        .map(|(name, o)| {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("str");
            let mut line = format!("{name} type={kind}");
            if kind == "list" {
                let _ = write!(
                    line,
                    " elements={}",
                    o.get("elements").and_then(Value::as_str).unwrap_or("str")
                );
            }
            let _ = write!(
                line,
                " required={}",
                o.get("required").and_then(Value::as_bool).unwrap_or(false)
            );
            if let Some(d) = o.get("default") {
                let _ = write!(line, " default={d}");
            }
            let choices = strings(o.get("choices"));
            if !choices.is_empty() {
                let _ = write!(line, " choices={}", choices.join(","));
            }
            let aliases = strings(o.get("aliases"));
            if !aliases.is_empty() {
                let _ = write!(line, " aliases={}", aliases.join(","));
            }
            // Ansible docs do not carry no_log; a secret's description must say it is hidden.
            let secret = o
                .get("description")
                .is_some_and(|d| d.to_string().contains("Never shown"));
            let _ = write!(line, " no_log={secret}");
            line
        })
        .collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec::new(vec![
            Opt::str("source").choices(&["auto", "sql"]).default("auto"),
            Opt::int("login_port").aliases(&["port"]),
            Opt::bool("fail_on_unknown").default(false),
            Opt::list("reset", Elem::Str),
            Opt::dict("settings"),
            Opt::str("login_password").no_log(),
            Opt::str("stanza"),
            Opt::str("role"),
        ])
        .mutually_exclusive(&["source", "role"])
        .required_if("source", "sql", &["stanza"])
    }

    fn validate(args: Value) -> Result<Map<String, Value>, String> {
        spec().validate(args.as_object().expect("object"), "test_module")
    }

    #[test]
    fn strings_coerce_like_ad_hoc_arguments() {
        let out = validate(json!({
            "port": "5432",
            "fail_on_unknown": "yes",
            "reset": "a, b",
            "settings": "{\"x\": 1}"
        }))
        .unwrap();
        assert_eq!(out["login_port"], json!(5432));
        assert_eq!(out["fail_on_unknown"], json!(true));
        assert_eq!(out["reset"], json!(["a", "b"]));
        assert_eq!(out["settings"], json!({"x": 1}));
    }

    #[test]
    fn booleans_accept_ansible_spellings_and_refuse_others() {
        for (given, want) in [
            ("YES", true),
            ("on", true),
            ("1", true),
            ("t", true),
            ("no", false),
            ("Off", false),
            ("0", false),
        ] {
            assert_eq!(
                coerce(Kind::Bool, &json!(given)).unwrap(),
                json!(want),
                "{given}"
            );
        }
        assert_eq!(coerce(Kind::Bool, &json!(1)).unwrap(), json!(true));
        let err = validate(json!({"fail_on_unknown": "maybe"})).unwrap_err();
        assert!(
            err.contains("fail_on_unknown") && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn int_refuses_words_and_names_option_and_value() {
        let err = validate(json!({"login_port": "fivefourthreetwo"})).unwrap_err();
        assert!(
            err.contains("'login_port'") && err.contains("fivefourthreetwo") && err.contains("int"),
            "{err}"
        );
        assert_eq!(coerce(Kind::Int, &json!(5.0)).unwrap(), json!(5));
        assert!(coerce(Kind::Int, &json!(5.5)).is_err());
    }

    #[test]
    fn dict_from_key_value_string() {
        assert_eq!(
            coerce(Kind::Dict, &json!("a=1 b=two")).unwrap(),
            json!({"a": "1", "b": "two"})
        );
        assert!(coerce(Kind::Dict, &json!("justaword")).is_err());
        assert!(coerce(Kind::Dict, &json!("{not json")).is_err());
    }

    #[test]
    fn defaults_fill_in_and_absent_options_are_null() {
        let out = validate(json!({})).unwrap();
        assert_eq!(out["source"], json!("auto"));
        assert_eq!(out["fail_on_unknown"], json!(false));
        assert_eq!(out["login_port"], Value::Null);
    }

    #[test]
    fn unknown_options_are_refused_with_the_supported_list() {
        let err = validate(json!({"sorce": "sql", "bogus": 1})).unwrap_err();
        assert!(
            err.starts_with("Unsupported parameters for (test_module) module: bogus, sorce."),
            "{err}"
        );
        assert!(
            err.contains(
                "Supported parameters include: fail_on_unknown, login_password, login_port, port, \
                 reset"
            ),
            "{err}"
        );
    }

    #[test]
    fn choices_are_enforced() {
        let err = validate(json!({"source": "monitor"})).unwrap_err();
        assert_eq!(
            err,
            "value of source must be one of: auto, sql, got: monitor"
        );
    }

    #[test]
    fn mutually_exclusive_and_required_if() {
        let err = validate(json!({"source": "sql", "role": "primary"})).unwrap_err();
        assert_eq!(err, "parameters are mutually exclusive: source|role");
        let err = validate(json!({"source": "sql"})).unwrap_err();
        assert_eq!(
            err,
            "source is sql but all of the following are missing: stanza"
        );
        assert!(validate(json!({"source": "sql", "stanza": "main"})).is_ok());
    }

    #[test]
    fn required_options_must_be_given() {
        let spec = Spec::new(vec![
            Opt::str("stanza").required(),
            Opt::str("path").required(),
        ]);
        let err = spec.validate(&Map::new(), "m").unwrap_err();
        assert_eq!(err, "missing required arguments: stanza, path");
        let err = spec
            .validate(
                json!({"stanza": null, "path": "x"}).as_object().unwrap(),
                "m",
            )
            .unwrap_err();
        assert_eq!(err, "missing required arguments: stanza");
    }

    #[test]
    fn an_alias_and_its_option_together_are_refused() {
        let err = validate(json!({"port": 1, "login_port": 2})).unwrap_err();
        assert!(err.contains("login_port"), "{err}");
    }

    #[test]
    fn a_value_marked_hide_value_is_not_quoted_but_others_are() {
        let spec = Spec::new(vec![
            Opt::dict("global").hide_value(),
            Opt::dict("settings"),
        ]);
        let err = spec
            .validate(
                json!({"global": "repo1-cipher-pass canary-in-a-dict"})
                    .as_object()
                    .unwrap(),
                "m",
            )
            .unwrap_err();
        assert!(
            !err.contains("canary-in-a-dict") && err.contains("'global'"),
            "{err}"
        );
        let err = spec
            .validate(json!({"settings": "not-a-dict"}).as_object().unwrap(), "m")
            .unwrap_err();
        assert!(
            err.contains("'settings'") && err.contains("not-a-dict"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_that_fails_coercion_is_not_echoed() {
        let spec = Spec::new(vec![Opt::int("pin").no_log()]);
        let err = spec
            .validate(json!({"pin": "s3cr3t-canary"}).as_object().unwrap(), "m")
            .unwrap_err();
        assert!(!err.contains("s3cr3t-canary"), "{err}");
        assert!(err.contains("'pin'"), "{err}");
    }
}
