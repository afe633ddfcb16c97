//! A secret string: readable on purpose only, never printed, never serialized.

use serde::Deserialize;

/// A secret option value (a password, a key). `Debug` prints `_`; there is no `Serialize` and no
/// `Display`, so it cannot reach a result, a diff or a log line by accident. Read it with
/// [`Secret::expose`] where it is handed to a program's environment or a 0600 file.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s: Secret = serde_json::from_str("\"hunter2-canary\"").unwrap();
        assert_eq!(format!("{s:?}"), "_");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(_)");
        assert_eq!(s.expose(), "hunter2-canary");
    }
}
