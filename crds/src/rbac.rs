//! Roles and `namespace/environment` patterns, as conda-store defines them.
//!
//! A pattern is `namespace/environment` with `*` matching any run of characters within one
//! segment; `team/*` also matches the namespace `team` itself. A pattern without `/` names a
//! namespace only.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A conda-store role. Ordered: `viewer < editor < admin`; `developer` is read as `editor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read environments, builds and artifacts.
    Viewer,
    /// Viewer, plus create, update and rebuild environments and cancel builds.
    Editor,
    /// Editor, plus delete and manage role bindings.
    Admin,
}

impl Role {
    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `viewer`, `editor`, `developer`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected viewer, editor (or developer) or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" | "developer" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Role {
    fn schema_name() -> Cow<'static, str> {
        "Role".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // `developer` must pass the API server's schema check too, not only our parser.
        schemars::json_schema!({
            "type": "string",
            "enum": ["viewer", "editor", "developer", "admin"],
        })
    }
}

/// A `namespace/environment` pattern that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks that `pattern` is `segment` or `segment/segment`, each segment made of conda-store name
/// characters and `*`.
pub fn validate_pattern(pattern: &str) -> Result<(), InvalidPattern> {
    let err = |reason| {
        Err(InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        })
    };
    let segments: Vec<&str> = pattern.split('/').collect();
    if segments.len() > 2 {
        return err("more than one '/'");
    }
    for seg in segments {
        if seg.is_empty() {
            return err("empty segment");
        }
        if !seg
            .chars()
            .all(|c| c == '*' || c.is_ascii_alphanumeric() || "-+_@$&?^~.=".contains(c))
        {
            return err("segments hold name characters and '*' only");
        }
    }
    Ok(())
}

/// Whether `pattern` matches `target`, which is `namespace` or `namespace/environment`.
pub fn pattern_matches(pattern: &str, target: &str) -> bool {
    let (t_ns, t_env) = split(target);
    matches_parts(pattern, t_ns, t_env)
}

/// [`pattern_matches`] with the target given as its namespace and environment (no string to
/// build for each of many targets).
pub fn matches_parts(pattern: &str, t_ns: &str, t_env: Option<&str>) -> bool {
    let (p_ns, p_env) = split(pattern);
    if !glob(p_ns, t_ns) {
        return false;
    }
    match (p_env, t_env) {
        (None, None) => true,
        (None, Some(_)) => false,
        // `team/*` grants on the namespace `team` itself.
        (Some(p), None) => glob(p, ""),
        (Some(p), Some(t)) => glob(p, t),
    }
}

fn split(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// `*` matches any run (possibly empty); everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The highest role any of `bindings` (pattern, role) grants on `target`.
pub fn highest_role<'a>(
    bindings: impl IntoIterator<Item = (&'a str, Role)>,
    target: &str,
) -> Option<Role> {
    bindings
        .into_iter()
        .filter(|(pattern, _)| pattern_matches(pattern, target))
        .map(|(_, role)| role)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn developer_is_editor() {
        assert_eq!("developer".parse::<Role>().unwrap(), Role::Editor);
        assert_eq!(serde_json::to_string(&Role::Editor).unwrap(), "\"editor\"");
        let r: Role = serde_json::from_str("\"developer\"").unwrap();
        assert_eq!(r, Role::Editor);
    }

    #[test]
    fn unknown_role_is_rejected() {
        assert!(serde_json::from_str::<Role>("\"owner\"").is_err());
        assert_eq!(
            "Admin".parse::<Role>().unwrap_err().to_string(),
            "unknown role \"Admin\"; expected viewer, editor (or developer) or admin"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
    }

    #[test]
    fn patterns_match() {
        assert!(pattern_matches("*/*", "a/b"));
        assert!(pattern_matches("team/*", "team/env"));
        assert!(pattern_matches("team/*", "team"));
        assert!(!pattern_matches("team/env", "team"));
        assert!(!pattern_matches("team/*", "other/env"));
        assert!(pattern_matches("team", "team"));
        assert!(!pattern_matches("team", "team/env"));
        assert!(pattern_matches("data-*/ml-*", "data-sci/ml-gpu"));
        assert!(!pattern_matches("data-*/ml-*", "data-sci/dl-gpu"));
        assert!(pattern_matches("*a*b*", "xxaxxbxx"));
        assert!(!pattern_matches("*a*b", "xxaxxbxx"));
    }

    #[test]
    fn star_does_not_cross_slash() {
        assert!(!pattern_matches("*", "team/env"));
    }

    #[test]
    fn highest_role_wins() {
        let bindings = [
            ("*/*", Role::Viewer),
            ("team/*", Role::Admin),
            ("x/*", Role::Editor),
        ];
        assert_eq!(highest_role(bindings, "team/env"), Some(Role::Admin));
        assert_eq!(highest_role(bindings, "other/env"), Some(Role::Viewer));
        assert_eq!(highest_role([("x/*", Role::Editor)], "y/e"), None);
    }

    #[test]
    fn pattern_validation() {
        assert!(validate_pattern("team/*").is_ok());
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("a/b/c").is_err());
        assert!(validate_pattern("a//").is_err());
        assert!(validate_pattern("/x").is_err());
        assert!(validate_pattern("a b/c").is_err());
    }
}
