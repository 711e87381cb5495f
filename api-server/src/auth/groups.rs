//! The identity provider's groups as role bindings (`--group-binding GROUP:PATTERN=ROLE`), as
//! Nebari maps Keycloak groups to conda-store namespaces.
//!
//! `GROUP` is a group name or `*` (every group); `PATTERN` may hold `{group}`, replaced by the
//! group's name. A group name is substituted only when it is a valid namespace name, so no
//! group (whoever may name groups at the provider) can widen a pattern: `*` and `/` are not
//! name characters.

use conda_store_crds::rbac::Role;

/// The placeholder a pattern may hold.
const PLACEHOLDER: &str = "{group}";

/// One mapping of a group to a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBinding {
    /// The group's name, or `*` for every group.
    pub group: String,
    /// The pattern bound, maybe with `{group}`.
    pub pattern: String,
    /// The role.
    pub role: Role,
}

impl std::str::FromStr for GroupBinding {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupBinding, String> {
        let (lhs, role) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("{s:?}: expected GROUP:PATTERN=ROLE"))?;
        let (group, pattern) = lhs
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected GROUP:PATTERN=ROLE"))?;
        if group.is_empty() {
            return Err(format!("{s:?}: the group is empty"));
        }
        // What the pattern becomes for any group must be a valid pattern.
        conda_store_crds::rbac::validate_pattern(&pattern.replace(PLACEHOLDER, "g"))
            .map_err(|e| format!("{s:?}: {e}"))?;
        Ok(GroupBinding {
            group: normalise(group).to_string(),
            pattern: pattern.to_string(),
            role: role.parse().map_err(|e| format!("{s:?}: {e}"))?,
        })
    }
}

/// A group as compared: Keycloak's full path of a top-level group (`/team`) is `team`.
fn normalise(group: &str) -> &str {
    match group.strip_prefix('/') {
        Some(rest) if !rest.contains('/') => rest,
        _ => group,
    }
}

/// The bindings `groups` earn under `rules`.
pub fn bindings(rules: &[GroupBinding], groups: &[String]) -> Vec<(String, Role)> {
    let mut out = Vec::new();
    for g in groups {
        let g = normalise(g);
        for r in rules.iter().filter(|r| r.group == "*" || r.group == g) {
            if !r.pattern.contains(PLACEHOLDER) {
                out.push((r.pattern.clone(), r.role));
            } else if conda_store_crds::naming::validate_conda_name(g).is_ok() {
                out.push((r.pattern.replace(PLACEHOLDER, g), r.role));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> GroupBinding {
        s.parse().unwrap()
    }

    #[test]
    fn groups_become_bindings() {
        let rules = [
            rule("*:{group}/*=editor"),
            rule("platform:*/*=admin"),
            rule("/analysts:shared/*=viewer"),
        ];
        let got = bindings(&rules, &["/analysts".into(), "platform".into()]);
        assert_eq!(
            got,
            vec![
                ("*/*".into(), Role::Admin),
                ("analysts/*".into(), Role::Editor),
                ("platform/*".into(), Role::Editor),
                ("shared/*".into(), Role::Viewer),
            ]
        );
        assert!(bindings(&rules, &[]).is_empty());
    }

    #[test]
    fn a_group_name_cannot_widen_a_pattern() {
        let rules = [rule("*:{group}/*=admin")];
        for hostile in ["*", "a/b", "/a/b", "", "..", "x*"] {
            assert!(
                bindings(&rules, &[hostile.into()]).is_empty(),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "team/*=admin",
            ":team/*=admin",
            "team:a/b/c=admin",
            "team:team/*=owner",
            "team:team/*",
        ] {
            assert!(bad.parse::<GroupBinding>().is_err(), "{bad:?}");
        }
    }
}
