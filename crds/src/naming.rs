//! Names: what conda-store accepts as a namespace or environment name, and the valid Kubernetes
//! object name derived from it.
//!
//! People name environments `my_env`, `ML.Tools` or `Team-A`; Kubernetes object names must be
//! lowercase RFC 1123 labels. The person's name stays in the resource's spec, and the object is
//! named by [`object_name`], which is injective: two distinct conda-store names never derive the
//! same object name (up to a 40-bit hash collision between names that also sanitise alike).

use sha2::{Digest, Sha256};

/// Longest object name [`object_name`] derives. The operator appends suffixes (build numbers,
/// step names) to it and must stay within the 63-character label limit of Jobs and labels.
pub const MAX_OBJECT_NAME_LEN: usize = 40;

/// Longest conda-store name accepted (conda-store stores names in a 255-character column).
pub const MAX_CONDA_NAME_LEN: usize = 255;

/// Hex characters of the name's sha256 appended to sanitised names.
const HASH_LEN: usize = 10;

/// Why a conda-store name is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_CONDA_NAME_LEN`].
    #[error("name is {0} characters long; at most {MAX_CONDA_NAME_LEN} are allowed")]
    TooLong(usize),
    /// The name holds a character conda-store does not allow.
    #[error(
        "name {name:?} contains {character:?} at position {position}; allowed are letters, digits and - + _ @ $ & ? ^ ~ . ="
    )]
    InvalidCharacter {
        /// The whole name.
        name: String,
        /// The offending character.
        character: char,
        /// Its zero-based character position.
        position: usize,
    },
    /// `.` and `..` would be read as paths.
    #[error("name {0:?} is reserved")]
    Reserved(String),
}

/// Checks a namespace or environment name against conda-store's rule
/// (`^[A-Za-z0-9-+_@$&?^~.=]+$`), rejecting `.` and `..` as well since names become path segments.
pub fn validate_conda_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_CONDA_NAME_LEN {
        return Err(NameError::TooLong(len));
    }
    if let Some((position, character)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !is_conda_name_char(*c))
    {
        return Err(NameError::InvalidCharacter {
            name: name.to_string(),
            character,
            position,
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_string()));
    }
    Ok(())
}

fn is_conda_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-+_@$&?^~.=".contains(c)
}

/// Derives the Kubernetes object name for a conda-store name.
///
/// A name that already is a lowercase RFC 1123 label of at most [`MAX_OBJECT_NAME_LEN`]
/// characters is kept as it is, unless it ends like a derived name (`-` and ten hex digits).
/// Every other name is lowercased, its other characters turned into `-`, shortened, and given
/// `-` plus the first ten hex digits of the sha256 of the original name, so `my_env` and
/// `my-env` stay distinct objects.
pub fn object_name(name: &str) -> Result<String, NameError> {
    validate_conda_name(name)?;
    if is_rfc1123_label(name, MAX_OBJECT_NAME_LEN) && !looks_derived(name) {
        return Ok(name.to_string());
    }
    let mut base = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.ends_with('-') {
            base.push('-');
        }
    }
    let mut base = base.trim_matches('-').to_string();
    base.truncate(MAX_OBJECT_NAME_LEN - 1 - HASH_LEN);
    let base = base.trim_end_matches('-');
    let base = if base.is_empty() { "x" } else { base };
    Ok(format!("{base}-{}", short_hash(name)))
}

/// Whether `s` is a lowercase RFC 1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`) of at most `max`
/// characters.
pub fn is_rfc1123_label(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn looks_derived(s: &str) -> bool {
    let Some(idx) = s.len().checked_sub(HASH_LEN + 1) else {
        return false;
    };
    let tail = &s[idx..];
    tail.starts_with('-')
        && tail[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first ten hex digits of the sha256 of `name`: what derived names end with.
pub fn short_hash(name: &str) -> String {
    hash_hex(name, HASH_LEN)
}

/// The first `len` hex digits of the sha256 of `s`.
pub fn hash_hex(s: &str, len: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut hex = crate::hex(&digest);
    hex.truncate(len);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn valid_label_is_kept() {
        assert_eq!(object_name("data-science").unwrap(), "data-science");
        assert_eq!(object_name("env1").unwrap(), "env1");
    }

    #[test]
    fn underscores_and_capitals_are_sanitised_and_hashed() {
        let n = object_name("My_Env").unwrap();
        assert!(n.starts_with("my-env-"), "{n}");
        assert!(is_rfc1123_label(&n, MAX_OBJECT_NAME_LEN));
    }

    #[test]
    fn dots_become_dashes() {
        let n = object_name("ml.tools").unwrap();
        assert!(n.starts_with("ml-tools-"), "{n}");
    }

    #[test]
    fn long_names_are_shortened_within_limit() {
        let long = "a".repeat(200);
        let n = object_name(&long).unwrap();
        assert!(n.len() <= MAX_OBJECT_NAME_LEN, "{n}");
        assert!(is_rfc1123_label(&n, MAX_OBJECT_NAME_LEN));
        // Two long names sharing their first 100 characters stay distinct.
        let other = format!("{}b", "a".repeat(199));
        assert_ne!(object_name(&other).unwrap(), n);
    }

    #[test]
    fn derivation_is_deterministic() {
        assert_eq!(
            object_name("My_Env").unwrap(),
            object_name("My_Env").unwrap()
        );
    }

    #[test]
    fn names_that_sanitise_alike_stay_distinct() {
        let names = [
            "my_env", "my-env", "My-Env", "my.env", "MY_ENV", "my__env", "my+env",
        ];
        let mut seen = HashMap::new();
        for name in names {
            let derived = object_name(name).unwrap();
            if let Some(prev) = seen.insert(derived.clone(), name) {
                panic!("{prev} and {name} both derive {derived}");
            }
        }
    }

    #[test]
    fn a_valid_name_that_looks_derived_is_hashed_too() {
        // Otherwise "my-env-<hash of my_env>" written by a person would collide with "my_env".
        let derived = object_name("my_env").unwrap();
        let again = object_name(&derived).unwrap();
        assert_ne!(again, derived);
        assert!(again.starts_with(&derived), "{again}");
    }

    #[test]
    fn symbols_only_name_gets_placeholder_base() {
        let n = object_name("+++").unwrap();
        assert!(n.starts_with("x-"), "{n}");
        assert!(is_rfc1123_label(&n, MAX_OBJECT_NAME_LEN));
    }

    #[test]
    fn leading_digit_and_trailing_symbol() {
        let n = object_name("3d_tools_").unwrap();
        assert!(n.starts_with("3d-tools-"), "{n}");
        assert!(is_rfc1123_label(&n, MAX_OBJECT_NAME_LEN));
    }

    #[test]
    fn many_generated_names_never_collide() {
        let mut seen = HashMap::new();
        let alphabet = ['a', 'B', '_', '.', '-', '1', '='];
        for i in 0..5000usize {
            let mut name = String::new();
            let mut k = i;
            loop {
                name.push(alphabet[k % alphabet.len()]);
                k /= alphabet.len();
                if k == 0 {
                    break;
                }
            }
            if validate_conda_name(&name).is_err() {
                continue;
            }
            let derived = object_name(&name).unwrap();
            assert!(
                is_rfc1123_label(&derived, MAX_OBJECT_NAME_LEN),
                "{name} -> {derived}"
            );
            if let Some(prev) = seen.insert(derived.clone(), name.clone()) {
                panic!("{prev:?} and {name:?} both derive {derived}");
            }
        }
    }

    #[test]
    fn empty_name_is_rejected() {
        assert_eq!(object_name(""), Err(NameError::Empty));
    }

    #[test]
    fn slash_is_rejected_with_position() {
        match validate_conda_name("team/env") {
            Err(NameError::InvalidCharacter {
                character,
                position,
                ..
            }) => {
                assert_eq!(character, '/');
                assert_eq!(position, 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn space_and_unicode_are_rejected() {
        assert!(matches!(
            validate_conda_name("my env"),
            Err(NameError::InvalidCharacter { character: ' ', .. })
        ));
        assert!(matches!(
            validate_conda_name("café"),
            Err(NameError::InvalidCharacter {
                character: 'é', ..
            })
        ));
    }

    #[test]
    fn dot_names_are_reserved() {
        assert_eq!(
            validate_conda_name(".."),
            Err(NameError::Reserved("..".into()))
        );
        assert_eq!(
            validate_conda_name("."),
            Err(NameError::Reserved(".".into()))
        );
        assert!(validate_conda_name("...").is_ok());
    }

    #[test]
    fn too_long_is_rejected() {
        let name = "a".repeat(MAX_CONDA_NAME_LEN + 1);
        assert_eq!(
            validate_conda_name(&name),
            Err(NameError::TooLong(MAX_CONDA_NAME_LEN + 1))
        );
        assert!(validate_conda_name(&"a".repeat(MAX_CONDA_NAME_LEN)).is_ok());
    }

    #[test]
    fn conda_store_symbols_are_accepted() {
        assert!(validate_conda_name("a-+_@$&?^~.=z").is_ok());
    }

    #[test]
    fn label_check() {
        assert!(is_rfc1123_label("a-b", 63));
        assert!(!is_rfc1123_label("-ab", 63));
        assert!(!is_rfc1123_label("ab-", 63));
        assert!(!is_rfc1123_label("aB", 63));
        assert!(!is_rfc1123_label("", 63));
        assert!(!is_rfc1123_label("abc", 2));
    }
}
