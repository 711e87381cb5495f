//! The dev-only static users file: people who log in with a user name and password.
//!
//! ```yaml
//! users:
//!   - username: alice
//!     password: "sha256:<hex of the password's sha256>"   # or the password itself
//!     primary_namespace: alice                           # defaults to the user name
//! ```

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A problem with the users file.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// It cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not the expected YAML.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// Login name.
    pub username: String,
    /// `sha256:<hex>` or the password in clear (development only).
    pub password: String,
    /// Their primary namespace; the user name when unset.
    #[serde(default)]
    pub primary_namespace: Option<String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    users: Vec<User>,
}

/// The users who may log in.
#[derive(Debug, Clone, Default)]
pub struct Users(Vec<User>);

impl Users {
    /// Reads the users file.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text).map_err(|message| UsersError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses users-file YAML.
    pub fn parse(text: &str) -> Result<Users, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for u in &file.users {
            conda_store_crds::naming::validate_conda_name(&u.username)
                .map_err(|e| format!("user {:?}: {e}", u.username))?;
        }
        Ok(Users(file.users))
    }

    /// The user, if `password` is theirs.
    pub fn check(&self, username: &str, password: &str) -> Option<&User> {
        let user = self.0.iter().find(|u| u.username == username)?;
        let given = hex::encode(Sha256::digest(password.as_bytes()));
        let stored = match user.password.strip_prefix("sha256:") {
            Some(h) => h.to_ascii_lowercase(),
            None => hex::encode(Sha256::digest(user.password.as_bytes())),
        };
        // Both sides are digests: comparing them leaks nothing about the password.
        (given == stored).then_some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_and_clear_passwords() {
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        let users = Users::parse(&format!(
            "users:\n  - username: alice\n    password: \"sha256:{hash}\"\n  - username: bob\n    password: pw\n    primary_namespace: team\n"
        ))
        .unwrap();
        assert!(users.check("alice", "s3cret").is_some());
        assert!(users.check("alice", "wrong").is_none());
        assert_eq!(
            users
                .check("bob", "pw")
                .unwrap()
                .primary_namespace
                .as_deref(),
            Some("team")
        );
        assert!(users.check("carol", "pw").is_none());
        assert!(Users::parse("users:\n  - username: a/b\n    password: x\n").is_err());
    }
}
