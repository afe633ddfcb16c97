//! Stanza names.
//!
//! pgBackRest takes a stanza name as a section header of its configuration (`[NAME]`,
//! `[NAME:command]`), as a directory name in the repository and in lock file names, so a name
//! that is safe everywhere is: letters, digits, `-`, `_`, `.`, starting with a letter or digit, at
//! most 64 characters, and not `global` (the section of options for every stanza).

use crate::Error;

/// A validated stanza name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaName(String);

impl StanzaName {
    /// Validate `name`; the error names the `stanza` option and the value.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if name == "global" {
            return Err(Error::Invalid(
                "stanza: 'global' is reserved by pgBackRest for options of every stanza".into(),
            ));
        }
        if ok {
            Ok(StanzaName(name.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "stanza: '{}' is not a valid stanza name (letters, digits, '-', '_', '.'; \
                 starting with a letter or digit; at most 64 characters)",
                name.escape_default()
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StanzaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_names_are_validated_one_way() {
        for good in ["main", "db-1_prod.eu", "1st", "A"] {
            assert!(StanzaName::parse(good).is_ok(), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "", "-x", ".x", "_x", "a b", "a]b", "a:b", "a/b", "global", "é", &long,
        ] {
            let e = StanzaName::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("stanza: '"), "{e}");
        }
    }
}
