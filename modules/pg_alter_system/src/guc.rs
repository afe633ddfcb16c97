//! PostgreSQL's own rules for a setting's value (its "GUC" rules), so that values are compared in
//! the setting's type and unit and refused before anything is changed.
//!
//! What a setting accepts is read from `pg_settings` (`vartype`, `unit`, `enumvals`, `min_val`,
//! `max_val`); the parsing follows PostgreSQL 15's `guc.c`: `parse_bool` (prefixes of true/false/
//! yes/no, `on`, `off`, `1`, `0`, any case), `parse_int` (decimal, `0x` hex, leading-zero octal, a
//! fraction rounded, then an optional unit, case-sensitive), `parse_real`, and enum lookup
//! (case-insensitive). Numbers are kept in the setting's base unit, so `1min` equals `60s` for
//! `archive_timeout` and `4MB` equals `4096kB` for `work_mem`. The error messages use
//! PostgreSQL's wording.

/// The type of a setting (`pg_settings.vartype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    /// `bool`
    Bool,
    /// `integer`
    Integer,
    /// `real`
    Real,
    /// `enum`
    Enum,
    /// `string`
    String,
}

impl VarType {
    /// From `pg_settings.vartype`.
    pub fn parse(text: &str) -> Option<VarType> {
        Some(match text {
            "bool" => VarType::Bool,
            "integer" => VarType::Integer,
            "real" => VarType::Real,
            "enum" => VarType::Enum,
            "string" => VarType::String,
            _ => return None,
        })
    }
}

/// The family of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Memory, measured in bytes.
    Memory,
    /// Time, measured in microseconds.
    Time,
}

/// Memory units PostgreSQL accepts, largest first, in bytes.
const MEMORY_UNITS: &[(&str, f64)] = &[
    ("TB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("kB", 1024.0),
    ("B", 1.0),
];

/// Time units PostgreSQL accepts, largest first, in microseconds.
const TIME_UNITS: &[(&str, f64)] = &[
    ("d", 86_400_000_000.0),
    ("h", 3_600_000_000.0),
    ("min", 60_000_000.0),
    ("s", 1_000_000.0),
    ("ms", 1_000.0),
    ("us", 1.0),
];

/// A setting's base unit (`pg_settings.unit`: `kB`, `8kB`, `MB`, `ms`, `s`, `min`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// As `pg_settings` spells it.
    pub name: String,
    /// Memory or time.
    pub dimension: Dimension,
    /// The size of one base unit in bytes or microseconds.
    pub size: f64,
}

impl Unit {
    /// From `pg_settings.unit`: an optional multiplier and a unit name (`8kB` = 8 x 1024 bytes).
    pub fn parse(text: &str) -> Option<Unit> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let factor: f64 = if digits == 0 {
            1.0
        } else {
            text[..digits].parse().ok()?
        };
        let name = &text[digits..];
        let (dimension, size) = if let Some((_, s)) = MEMORY_UNITS.iter().find(|(u, _)| *u == name)
        {
            (Dimension::Memory, *s)
        } else {
            let (_, s) = TIME_UNITS.iter().find(|(u, _)| *u == name)?;
            (Dimension::Time, *s)
        };
        Some(Unit {
            name: text.to_owned(),
            dimension,
            size: factor * size,
        })
    }

    fn table(&self) -> &'static [(&'static str, f64)] {
        match self.dimension {
            Dimension::Memory => MEMORY_UNITS,
            Dimension::Time => TIME_UNITS,
        }
    }

    /// PostgreSQL's hint for a bad unit.
    fn hint(&self) -> String {
        let names: Vec<String> = self
            .table()
            .iter()
            .rev()
            .map(|(u, _)| format!("\"{u}\""))
            .collect();
        let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (l, r));
        format!(
            "valid units for this parameter are {}, and {last}",
            rest.join(", ")
        )
    }

    /// `number` + `unit text` (as typed after the number) in this base unit, with PostgreSQL's
    /// rounding of a fractional value to the next smaller unit (`convert_to_base_unit`).
    fn to_base(&self, number: f64, unit_text: &str) -> Option<f64> {
        let table = self.table();
        let i = table.iter().position(|(u, _)| *u == unit_text)?;
        let mut value = number * table[i].1;
        if let Some((_, smaller)) = table.get(i + 1) {
            value = (value / smaller).round_ties_even() * smaller;
        }
        Some(value / self.size)
    }
}

/// A value in a setting's own terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer, in the base unit.
    Int(i64),
    /// A real, in the base unit.
    Real(f64),
    /// An enum value, lower case, boolean aliases as `on`/`off`.
    Enum(String),
    /// A string, as it is.
    Str(String),
}

impl Value {
    /// The same value for PostgreSQL (reals within rounding of `pg_settings`' `%g`).
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Real(a), Value::Real(b)) => {
                a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
            }
            (a, b) => a == b,
        }
    }
}

/// String settings that hold a list of names (GUC_LIST_QUOTE): PostgreSQL writes an empty list
/// as `""`.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
];

/// What PostgreSQL says about one setting (a row of `pg_settings`).
#[derive(Debug, Clone)]
pub struct Setting {
    /// The canonical name (`archive_mode`, `DateStyle`).
    pub name: String,
    /// `vartype`
    pub vartype: VarType,
    /// `unit`
    pub unit: Option<Unit>,
    /// `enumvals`
    pub enumvals: Vec<String>,
    /// `min_val`, in the base unit.
    pub min: Option<f64>,
    /// `max_val`, in the base unit.
    pub max: Option<f64>,
}

/// A value PostgreSQL would refuse: its message and, maybe, its hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong, in PostgreSQL's words.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The strings every boolean-like enum also accepts (hidden from `enumvals`).
const ENUM_BOOL_ALIASES: &[(&str, &str)] = &[
    ("true", "on"),
    ("yes", "on"),
    ("1", "on"),
    ("false", "off"),
    ("no", "off"),
    ("0", "off"),
];

impl Setting {
    fn invalid(&self, text: &str, hint: Option<String>) -> Invalid {
        Invalid {
            message: format!("invalid value for parameter \"{}\": \"{text}\"", self.name),
            hint,
        }
    }

    /// Read a value as PostgreSQL would, or say why it would refuse it.
    pub fn parse(&self, text: &str) -> Result<Value, Invalid> {
        match self.vartype {
            VarType::Bool => parse_bool(text).map(Value::Bool).ok_or_else(|| Invalid {
                message: format!(
                    "parameter \"{}\" requires a Boolean value, got \"{text}\"",
                    self.name
                ),
                hint: None,
            }),
            VarType::Integer => self.parse_int(text).map(Value::Int),
            VarType::Real => self.parse_real(text).map(Value::Real),
            VarType::Enum => self.parse_enum(text).map(Value::Enum),
            // PostgreSQL shows an empty list setting as `""`: the same as the empty string given.
            VarType::String if LIST_SETTINGS.contains(&self.name.as_str()) && text == "\"\"" => {
                Ok(Value::Str(String::new()))
            }
            VarType::String => Ok(Value::Str(text.to_owned())),
        }
    }

    fn parse_enum(&self, text: &str) -> Result<String, Invalid> {
        let lower = text.to_ascii_lowercase();
        if self.enumvals.iter().any(|v| v.eq_ignore_ascii_case(&lower)) {
            return Ok(lower);
        }
        // archive_mode, synchronous_commit, huge_pages, ... also take the boolean spellings.
        let has = |v: &str| self.enumvals.iter().any(|e| e == v);
        if has("on") && has("off") {
            if let Some((_, canonical)) = ENUM_BOOL_ALIASES.iter().find(|(a, _)| *a == lower) {
                return Ok((*canonical).to_owned());
            }
        }
        Err(self.invalid(
            text,
            Some(format!("available values: {}", self.enumvals.join(", "))),
        ))
    }

    /// The number and what follows it (`parse_int`: strtol with base 0, then strtod when the
    /// number goes on with a fraction or an exponent).
    fn number<'t>(&self, text: &'t str, integer: bool) -> Result<(f64, &'t str), Invalid> {
        let parsed = if integer {
            match strtol(text) {
                Some((_, rest)) if rest.starts_with(['.', 'e', 'E']) => strtod(text),
                None if text.trim_start_matches(is_c_space).starts_with('.') => strtod(text),
                other => other.map(|(n, rest)| (n as f64, rest)),
            }
        } else {
            strtod(text)
        };
        parsed.ok_or_else(|| self.invalid(text, None))
    }

    /// The unit part, if any, applied to `number`.
    fn with_unit(&self, text: &str, number: f64, rest: &str) -> Result<f64, Invalid> {
        let rest = rest.trim_matches(is_c_space);
        if rest.is_empty() {
            return Ok(number);
        }
        let Some(unit) = &self.unit else {
            return Err(self.invalid(text, None));
        };
        unit.to_base(number, rest)
            .ok_or_else(|| self.invalid(text, Some(unit.hint())))
    }

    fn out_of_range(&self, shown: String) -> Invalid {
        let unit = self
            .unit
            .as_ref()
            .map(|u| format!(" {}", u.name))
            .unwrap_or_default();
        let bound = |b: Option<f64>| b.map(fmt_real).unwrap_or_else(|| "?".to_owned());
        Invalid {
            message: format!(
                "{shown}{unit} is outside the valid range for parameter \"{}\" ({} .. {})",
                self.name,
                bound(self.min),
                bound(self.max)
            ),
            hint: None,
        }
    }

    fn parse_int(&self, text: &str) -> Result<i64, Invalid> {
        let (number, rest) = self.number(text, true)?;
        let value = self.with_unit(text, number, rest)?.round_ties_even();
        if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&value) {
            return Err(Invalid {
                message: format!("invalid value for parameter \"{}\": \"{text}\"", self.name),
                hint: Some(format!(
                    "value exceeds integer range{}",
                    self.unit
                        .as_ref()
                        .map(|u| format!(" (in {})", u.name))
                        .unwrap_or_default()
                )),
            });
        }
        let int = value as i64;
        if self.min.is_some_and(|m| value < m) || self.max.is_some_and(|m| value > m) {
            return Err(self.out_of_range(int.to_string()));
        }
        Ok(int)
    }

    fn parse_real(&self, text: &str) -> Result<f64, Invalid> {
        let (number, rest) = self.number(text, false)?;
        let value = self.with_unit(text, number, rest)?;
        if !value.is_finite()
            || self.min.is_some_and(|m| value < m)
            || self.max.is_some_and(|m| value > m)
        {
            return Err(self.out_of_range(fmt_real(value)));
        }
        Ok(value)
    }

    /// A value as `SHOW` prints it: numbers in the largest unit that divides them evenly.
    pub fn show(&self, value: &Value) -> String {
        match value {
            Value::Bool(b) => if *b { "on" } else { "off" }.to_owned(),
            Value::Enum(s) | Value::Str(s) => s.clone(),
            Value::Int(n) => match &self.unit {
                // PostgreSQL shows zero and negative values (-1: disabled) without a unit.
                Some(unit) if *n > 0 => {
                    let total = *n as f64 * unit.size;
                    let (name, size) = unit
                        .table()
                        .iter()
                        .find(|(_, size)| *size <= unit.size || total % size == 0.0)
                        .copied()
                        .unwrap_or((unit.name.as_str(), unit.size));
                    format!("{}{name}", (total / size).round())
                }
                _ => n.to_string(),
            },
            Value::Real(x) => match &self.unit {
                Some(unit) if *x > 0.0 => {
                    let total = x * unit.size;
                    let table = unit.table();
                    let (name, size) = table
                        .iter()
                        .find(|(_, size)| {
                            let v = total / size;
                            ((v.round() / v) - 1.0).abs() <= 1e-8
                        })
                        .or(table.last())
                        .copied()
                        .unwrap_or(("", 1.0));
                    format!("{}{name}", fmt_real(total / size))
                }
                _ => fmt_real(*x),
            },
        }
    }
}

/// A real as `%g` would print the values one meets in settings.
fn fmt_real(x: f64) -> String {
    if x.abs() >= 1e15 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// `parse_bool`: any case, a non-empty prefix of true/false/yes/no, `on`, `of(f)`, `1`, `0`.
pub fn parse_bool(text: &str) -> Option<bool> {
    let lower = text.to_ascii_lowercase();
    let prefix_of = |word: &str| !lower.is_empty() && word.starts_with(&lower);
    match lower.as_bytes().first()? {
        b't' if prefix_of("true") => Some(true),
        b'f' if prefix_of("false") => Some(false),
        b'y' if prefix_of("yes") => Some(true),
        b'n' if prefix_of("no") => Some(false),
        // "o" alone is ambiguous.
        b'o' if lower == "on" => Some(true),
        b'o' if lower.len() >= 2 && prefix_of("off") => Some(false),
        b'1' if lower.len() == 1 => Some(true),
        b'0' if lower.len() == 1 => Some(false),
        _ => None,
    }
}

/// C's `strtol(text, &end, 0)` for an `int`-sized result: leading space, sign, `0x` hex, leading
/// `0` octal or decimal. `None` when no digit was read or the number overflows.
fn strtol(text: &str) -> Option<(i64, &str)> {
    let s = text.trim_start_matches(is_c_space);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].starts_with(|c: char| c.is_ascii_hexdigit())
    {
        (16, &s[2..])
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let len = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if len == 0 {
        return None;
    }
    let magnitude = i64::from_str_radix(&digits[..len], radix).ok()?;
    Some((
        if negative { -magnitude } else { magnitude },
        &digits[len..],
    ))
}

/// C's `strtod` for decimal numbers: leading space, sign, digits, fraction, exponent.
fn strtod(text: &str) -> Option<(f64, &str)> {
    let s = text.trim_start_matches(is_c_space);
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        frac_digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if int_digits + frac_digits > 0 {
            i += 1 + frac_digits;
        }
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let exp_digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let value: f64 = s[..i].parse().ok()?;
    value.is_finite().then_some((value, &s[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(vartype: VarType, unit: Option<&str>, min: f64, max: f64) -> Setting {
        Setting {
            name: "x".into(),
            vartype,
            unit: unit.map(|u| Unit::parse(u).unwrap()),
            enumvals: Vec::new(),
            min: Some(min),
            max: Some(max),
        }
    }

    fn archive_timeout() -> Setting {
        Setting {
            name: "archive_timeout".into(),
            ..setting(VarType::Integer, Some("s"), 0.0, 1073741823.0)
        }
    }

    #[test]
    fn time_in_any_unit_is_compared_in_the_base_unit() {
        let s = archive_timeout();
        for text in [
            "60", "60s", "1min", " 1 min ", "60000ms", "0x3c", "074", "1.0min", "6e1",
        ] {
            assert_eq!(s.parse(text), Ok(Value::Int(60)), "{text}");
        }
        assert_eq!(s.parse("1.5min"), Ok(Value::Int(90)));
        assert_eq!(s.show(&Value::Int(60)), "1min");
        assert_eq!(s.show(&Value::Int(90)), "90s");
        assert_eq!(s.show(&Value::Int(0)), "0");
        assert_eq!(s.show(&Value::Int(86400)), "1d");
    }

    #[test]
    fn units_are_case_sensitive_and_refused_with_postgres_hint() {
        let s = archive_timeout();
        let err = s.parse("5 parsecs").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for parameter \"archive_timeout\": \"5 parsecs\" (valid units for this \
             parameter are \"us\", \"ms\", \"s\", \"min\", \"h\", and \"d\")"
        );
        assert!(s.parse("1MIN").is_err());
        assert!(s.parse("abc").is_err());
        assert!(s.parse("").is_err());
        assert!(s.parse("1min 2").is_err());
    }

    #[test]
    fn ranges_use_postgres_wording() {
        let err = archive_timeout().parse("-5").unwrap_err();
        assert_eq!(
            err.message,
            "-5 s is outside the valid range for parameter \"archive_timeout\" (0 .. 1073741823)"
        );
        assert!(archive_timeout().parse("99999999999").is_err());
    }

    #[test]
    fn memory_units_including_8kb_blocks() {
        let shared_buffers = setting(VarType::Integer, Some("8kB"), 16.0, 1073741823.0);
        assert_eq!(shared_buffers.parse("128MB"), Ok(Value::Int(16384)));
        assert_eq!(shared_buffers.parse("16384"), Ok(Value::Int(16384)));
        assert_eq!(shared_buffers.show(&Value::Int(16384)), "128MB");
        assert_eq!(shared_buffers.show(&Value::Int(3)), "24kB");
        let work_mem = setting(VarType::Integer, Some("kB"), 64.0, 2147483647.0);
        assert_eq!(work_mem.parse("4MB"), work_mem.parse("4096kB"));
        assert_eq!(work_mem.parse("4MB"), Ok(Value::Int(4096)));
        assert_eq!(work_mem.parse("1.5GB"), Ok(Value::Int(1572864)));
        assert_eq!(work_mem.show(&Value::Int(1572864)), "1536MB");
        assert!(work_mem.parse("4mb").is_err());
        let min_wal = setting(VarType::Integer, Some("MB"), 2.0, 2147483647.0);
        assert_eq!(min_wal.parse("1GB"), Ok(Value::Int(1024)));
        assert_eq!(min_wal.show(&Value::Int(80)), "80MB");
    }

    #[test]
    fn an_integer_without_unit_refuses_one() {
        let s = setting(VarType::Integer, None, 1.0, 262143.0);
        assert_eq!(s.parse("100"), Ok(Value::Int(100)));
        assert!(s.parse("100kB").is_err());
        assert_eq!(s.show(&Value::Int(100)), "100");
    }

    #[test]
    fn reals_with_and_without_units() {
        let cost = setting(VarType::Real, None, 0.0, 1.79769e308);
        assert!(cost.parse("1.1").unwrap().same(&Value::Real(1.1)));
        assert_eq!(cost.parse("4"), Ok(Value::Real(4.0)));
        assert_eq!(cost.show(&Value::Real(4.0)), "4");
        let delay = setting(VarType::Real, Some("ms"), 0.0, 100.0);
        assert_eq!(delay.parse("2ms"), Ok(Value::Real(2.0)));
        assert_eq!(delay.parse("500us"), Ok(Value::Real(0.5)));
        assert_eq!(delay.show(&Value::Real(0.5)), "500us");
        assert_eq!(delay.show(&Value::Real(2.0)), "2ms");
        assert!(delay.parse("1s").is_err(), "1000 ms is above 100");
        assert!(delay.parse("nan").is_err());
    }

    #[test]
    fn booleans_take_postgres_spellings() {
        for (text, want) in [
            ("on", true),
            ("ON", true),
            ("true", true),
            ("tru", true),
            ("t", true),
            ("yes", true),
            ("Y", true),
            ("1", true),
            ("off", false),
            ("of", false),
            ("false", false),
            ("no", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(text), Some(want), "{text}");
        }
        for text in ["o", "", "2", "truee", "10", "enable", " on"] {
            assert_eq!(parse_bool(text), None, "{text}");
        }
        let s = Setting {
            name: "fsync".into(),
            ..setting(VarType::Bool, None, 0.0, 0.0)
        };
        assert_eq!(
            s.parse("maybe").unwrap_err().message,
            "parameter \"fsync\" requires a Boolean value, got \"maybe\""
        );
    }

    #[test]
    fn enums_are_case_insensitive_and_take_boolean_aliases() {
        let s = Setting {
            name: "archive_mode".into(),
            enumvals: vec!["always".into(), "on".into(), "off".into()],
            ..setting(VarType::Enum, None, 0.0, 0.0)
        };
        assert_eq!(s.parse("ON"), Ok(Value::Enum("on".into())));
        assert_eq!(s.parse("yes"), Ok(Value::Enum("on".into())));
        assert_eq!(s.parse("0"), Ok(Value::Enum("off".into())));
        assert_eq!(
            s.parse("maybe").unwrap_err().to_string(),
            "invalid value for parameter \"archive_mode\": \"maybe\" \
             (available values: always, on, off)"
        );
        let level = Setting {
            name: "wal_level".into(),
            enumvals: vec!["minimal".into(), "replica".into(), "logical".into()],
            ..s
        };
        assert!(
            level.parse("yes").is_err(),
            "no boolean aliases without on/off"
        );
        assert_eq!(level.parse("Replica"), Ok(Value::Enum("replica".into())));
    }

    #[test]
    fn unit_names_from_pg_settings() {
        let u = Unit::parse("8kB").unwrap();
        assert_eq!((u.dimension, u.size), (Dimension::Memory, 8192.0));
        assert_eq!(Unit::parse("min").unwrap().size, 60_000_000.0);
        assert_eq!(Unit::parse("16MB").unwrap().size, 16.0 * 1024.0 * 1024.0);
        assert!(Unit::parse("parsec").is_none());
    }
}
