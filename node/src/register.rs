//! The register semantics: every key is an `i64` register whose initial value is 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{Command, CommandResult};

pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key must not be empty")]
    Empty,
    #[error("key is {0} bytes long; the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
}

/// Checks a key from a client: 1 to 256 bytes of UTF-8 (a `&str` is UTF-8 already).
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    match key.len() {
        0 => Err(KeyError::Empty),
        n if n > MAX_KEY_BYTES => Err(KeyError::TooLong(n)),
        _ => Ok(()),
    }
}

/// The registers a member has applied. Absent keys read as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    values: BTreeMap<String, i64>,
}

impl Registers {
    pub fn read(&self, key: &str) -> i64 {
        self.values.get(key).copied().unwrap_or(0)
    }

    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Write { key, value } => {
                self.values.insert(key.clone(), *value);
                CommandResult::Applied { value: *value }
            }
            Command::Cas { key, expected, new } => {
                let current = self.read(key);
                if current == *expected {
                    self.values.insert(key.clone(), *new);
                    CommandResult::Applied { value: *new }
                } else {
                    CommandResult::CasMismatch { current }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: i64) -> Command {
        Command::Write {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn unknown_keys_read_zero() {
        assert_eq!(Registers::default().read("x"), 0);
    }

    #[test]
    fn cas_applies_only_on_match() {
        let mut r = Registers::default();
        r.apply(&write("x", 5));
        let ok = Command::Cas {
            key: "x".into(),
            expected: 5,
            new: 6,
        };
        assert_eq!(r.apply(&ok), CommandResult::Applied { value: 6 });
        assert_eq!(r.apply(&ok), CommandResult::CasMismatch { current: 6 });
        assert_eq!(r.read("x"), 6);
    }

    #[test]
    fn cas_on_absent_key_compares_with_zero() {
        let mut r = Registers::default();
        let cas = Command::Cas {
            key: "y".into(),
            expected: 0,
            new: 1,
        };
        assert_eq!(r.apply(&cas), CommandResult::Applied { value: 1 });
    }

    #[test]
    fn key_limits() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert!(validate_key(&"k".repeat(256)).is_ok());
        assert_eq!(validate_key(&"k".repeat(257)), Err(KeyError::TooLong(257)));
        assert!(validate_key("ключ").is_ok());
    }
}
