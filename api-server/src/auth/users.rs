//! The static users file: people who log in with a user name and password.
//!
//! ```yaml
//! users:
//!   - username: alice
//!     password: "$argon2id$v=19$m=19456,t=2,p=1$..."   # `conda-store-api-server hash-password`
//!     primary_namespace: alice                         # defaults to the user name
//! ```
//!
//! Passwords are argon2 hashes (PHC strings); plain text and unsalted digests are refused when
//! the file is read. The file is read again when it changes, so a person removed from it is
//! refused from the next request on, with every session and token issued to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;

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
    /// An argon2 hash of the password, as a PHC string.
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
            let is_argon2 = PasswordHash::new(&u.password)
                .is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"));
            if !is_argon2 {
                return Err(format!(
                    "user {:?}: the password must be an argon2 hash (a PHC string, `$argon2id$...`); \
                     make one with `conda-store-api-server hash-password`",
                    u.username
                ));
            }
        }
        Ok(Users(file.users))
    }

    /// The user, if `password` is theirs.
    pub fn check(&self, username: &str, password: &str) -> Option<&User> {
        let user = self.get(username)?;
        let hash = PasswordHash::new(&user.password).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()
            .map(|()| user)
    }

    /// The user called `username`.
    pub fn get(&self, username: &str) -> Option<&User> {
        self.0.iter().find(|u| u.username == username)
    }
}

/// An argon2id hash of `password` with a fresh random salt (the users file's format).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .expect("the system's random source");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with its default parameters")
        .to_string()
}

/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// The users file, read again whenever it changes. A file that turns unreadable or invalid
/// leaves nobody able to log in (and says why in the log) rather than keeping people who may
/// have been removed.
pub struct UsersFile {
    path: Option<PathBuf>,
    state: RwLock<Loaded>,
}

struct Loaded {
    users: Arc<Users>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl UsersFile {
    /// The file at `path` (none: nobody logs in with a password), read now.
    pub fn open(path: Option<PathBuf>) -> Result<UsersFile, UsersError> {
        let (users, modified) = match &path {
            Some(p) => (Users::load(p)?, modified(p)),
            None => (Users::default(), None),
        };
        Ok(UsersFile {
            path,
            state: RwLock::new(Loaded {
                users: Arc::new(users),
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether people may sign in with a password here at all.
    pub fn is_configured(&self) -> bool {
        self.path.is_some() || !self.current().0.is_empty()
    }

    /// Fixed users (tests).
    pub fn fixed(users: Users) -> UsersFile {
        UsersFile {
            path: None,
            state: RwLock::new(Loaded {
                users: Arc::new(users),
                modified: None,
                checked: Instant::now(),
            }),
        }
    }

    /// The users as the file says now.
    pub fn current(&self) -> Arc<Users> {
        {
            let s = self.state.read().expect("not poisoned");
            if self.path.is_none() || s.checked.elapsed() < RECHECK {
                return s.users.clone();
            }
        }
        let path = self.path.as_ref().expect("checked");
        let mut s = self.state.write().expect("not poisoned");
        s.checked = Instant::now();
        let now = modified(path);
        if now != s.modified || now.is_none() {
            s.modified = now;
            s.users = Arc::new(match Users::load(path) {
                Ok(u) => {
                    tracing::info!(path = %path.display(), "read the users file again");
                    u
                }
                Err(e) => {
                    tracing::error!(error = %e, "the users file is not valid; nobody logs in with a password until it is");
                    Users::default()
                }
            });
        }
        s.users.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Failed logins a user name may have within [`THROTTLE_WINDOW`] before further attempts are
/// refused until the window has passed (whatever the password).
pub const THROTTLE_ATTEMPTS: u32 = 5;
/// See [`THROTTLE_ATTEMPTS`].
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
const THROTTLE_MAX_NAMES: usize = 10_000;

/// Failed password logins per user name: guessing is slowed to five tries a minute.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// Whether `username` may try now.
    pub fn allowed(&self, username: &str) -> bool {
        let f = self.failures.lock().expect("not poisoned");
        match f.get(username) {
            Some((n, since)) => *n < THROTTLE_ATTEMPTS || since.elapsed() >= THROTTLE_WINDOW,
            None => true,
        }
    }

    /// Records the outcome of an attempt.
    pub fn record(&self, username: &str, ok: bool) {
        let mut f = self.failures.lock().expect("not poisoned");
        if ok {
            f.remove(username);
            return;
        }
        if f.len() >= THROTTLE_MAX_NAMES {
            f.retain(|_, (_, since)| since.elapsed() < THROTTLE_WINDOW);
        }
        let e = f.entry(username.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= THROTTLE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_passwords_only() {
        let hash = hash_password("s3cret");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let users = Users::parse(&format!(
            "users:\n  - username: alice\n    password: \"{hash}\"\n  - username: bob\n    password: \"{}\"\n    primary_namespace: team\n",
            hash_password("pw")
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
        // Plain text and unsalted digests are refused, naming the user.
        for weak in [
            "pw",
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
        ] {
            let e = Users::parse(&format!(
                "users:\n  - username: carol\n    password: \"{weak}\"\n"
            ))
            .unwrap_err();
            assert!(e.contains("carol") && e.contains("argon2"), "{e}");
        }
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        let line = |u: &str| {
            format!(
                "  - username: {u}\n    password: \"{}\"\n",
                hash_password("pw")
            )
        };
        std::fs::write(&path, format!("users:\n{}{}", line("alice"), line("bob"))).unwrap();
        let file = UsersFile::open(Some(path.clone())).unwrap();
        assert!(file.current().get("bob").is_some());
        std::fs::write(&path, format!("users:\n{}", line("alice"))).unwrap();
        // A different modification time, whatever the file system's resolution.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::thread::sleep(RECHECK);
        assert!(file.current().get("bob").is_none());
        assert!(file.current().get("alice").is_some());
        // Broken: nobody.
        std::fs::write(&path, "users: [{username: x, password: plain}]\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        std::thread::sleep(RECHECK);
        assert!(file.current().get("alice").is_none());
    }

    #[test]
    fn failed_logins_are_throttled_per_name() {
        let t = Throttle::default();
        for _ in 0..THROTTLE_ATTEMPTS {
            assert!(t.allowed("alice"));
            t.record("alice", false);
        }
        assert!(!t.allowed("alice"));
        assert!(t.allowed("bob"));
    }
}
