//! Storage keys: relative, `/`-separated, never able to leave the artifact space.

use std::fmt;

use crate::StorageError;

/// Longest key accepted (S3's limit is 1024 bytes).
const MAX_KEY_LEN: usize = 1024;

/// A validated storage key such as `builds/team/42/lockfile.yaml` or `blobs/sha256/<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `key`: non-empty segments of letters, digits and `. _ - + = @ :`, none starting
    /// with `.` (so no `.` or `..`), no leading or trailing `/`, at most 1024 bytes.
    pub fn new(key: &str) -> Result<Key, StorageError> {
        validate_key(key)?;
        Ok(Key(key.to_string()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a key (see [`Key::new`]).
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let err = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return err("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return err("longer than 1024 bytes");
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return err("empty path segment (leading, trailing or double '/')");
        }
        if seg.starts_with('.') {
            // Covers `.` and `..`, and keeps hidden names free for the backends' own use.
            return err("segments may not start with '.'");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+=@:".contains(&b))
        {
            return err("segments hold letters, digits and . _ - + = @ : only");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_artifact_keys() {
        for k in [
            "blobs/sha256/abcdef0123",
            "builds/team-a/42/conda-lock.yaml",
            "logs/build-1/solve.log",
            "a",
        ] {
            assert!(Key::new(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_keys() {
        for k in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "../etc/passwd",
            "a/../b",
            "a/./b",
            ".hidden/x",
            "a b",
            "a%2Fb",
            "a\\b",
            "a\0b",
        ] {
            assert!(Key::new(k).is_err(), "{k:?}");
        }
        assert!(Key::new(&"a".repeat(1025)).is_err());
    }
}
