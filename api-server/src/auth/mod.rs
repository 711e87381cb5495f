//! Who is calling and what they may do: conda-store's roles and permissions over
//! `namespace/environment` patterns.
//!
//! A caller's role on a target (`ns` or `ns/env`) is the highest of
//! - the bindings they carry (`pattern → role`): from a token they present, or, for people and
//!   service accounts, the gateway's configured bindings (by default `admin` on their own primary
//!   namespace only), and
//! - unless they present an API token (a snapshot of rights), the `roleBindings` of the target's
//!   Namespace whose `entity` pattern matches them (`<primary namespace>/<user>`, or `anonymous`).

pub mod groups;
pub mod jwt;
pub mod login;
pub mod oidc;
pub mod sso;
pub mod users;

use std::collections::BTreeMap;

use conda_store_crds::RoleBinding;
use conda_store_crds::rbac::{Role, highest_role, matches_parts, pattern_matches};

/// What a role may do, as conda-store names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// See environments, builds and their artifacts.
    EnvironmentRead,
    /// Create an environment.
    EnvironmentCreate,
    /// Change an environment (new specification, pinned build, description, rebuild).
    EnvironmentUpdate,
    /// Delete an environment.
    EnvironmentDelete,
    /// Solve without building.
    EnvironmentSolve,
    /// Cancel a build.
    BuildCancel,
    /// Delete a build.
    BuildDelete,
    /// See a namespace.
    NamespaceRead,
    /// Create a namespace.
    NamespaceCreate,
    /// Change a namespace's metadata and role mappings.
    NamespaceUpdate,
    /// Delete a namespace.
    NamespaceDelete,
    /// See a namespace's role mappings.
    RoleMappingRead,
    /// Add role mappings.
    RoleMappingCreate,
    /// Change role mappings.
    RoleMappingUpdate,
    /// Remove role mappings.
    RoleMappingDelete,
    /// Read settings.
    SettingRead,
    /// Change settings.
    SettingUpdate,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 17] = [
        Permission::EnvironmentRead,
        Permission::EnvironmentCreate,
        Permission::EnvironmentUpdate,
        Permission::EnvironmentDelete,
        Permission::EnvironmentSolve,
        Permission::BuildCancel,
        Permission::BuildDelete,
        Permission::NamespaceRead,
        Permission::NamespaceCreate,
        Permission::NamespaceUpdate,
        Permission::NamespaceDelete,
        Permission::RoleMappingRead,
        Permission::RoleMappingCreate,
        Permission::RoleMappingUpdate,
        Permission::RoleMappingDelete,
        Permission::SettingRead,
        Permission::SettingUpdate,
    ];

    /// conda-store's name of the permission.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::EnvironmentRead => "environment::read",
            Permission::EnvironmentCreate => "environment:create",
            Permission::EnvironmentUpdate => "environment::update",
            Permission::EnvironmentDelete => "environment::delete",
            Permission::EnvironmentSolve => "environment::solve",
            Permission::BuildCancel => "build::cancel",
            Permission::BuildDelete => "build::delete",
            Permission::NamespaceRead => "namespace::read",
            Permission::NamespaceCreate => "namespace::create",
            Permission::NamespaceUpdate => "namespace::update",
            Permission::NamespaceDelete => "namespace::delete",
            Permission::RoleMappingRead => "namespace-role-mapping::read",
            Permission::RoleMappingCreate => "namespace-role-mapping::create",
            Permission::RoleMappingUpdate => "namespace-role-mapping::update",
            Permission::RoleMappingDelete => "namespace-role-mapping::delete",
            Permission::SettingRead => "setting::read",
            Permission::SettingUpdate => "setting::update",
        }
    }

    /// The least role that grants it (roles are ordered, each holding the ones below).
    pub fn least_role(self) -> Role {
        use Permission::*;
        match self {
            EnvironmentRead | NamespaceRead | RoleMappingRead => Role::Viewer,
            EnvironmentCreate | EnvironmentUpdate | EnvironmentSolve | BuildCancel
            | SettingRead => Role::Editor,
            EnvironmentDelete | BuildDelete | NamespaceCreate | NamespaceUpdate
            | NamespaceDelete | RoleMappingCreate | RoleMappingUpdate | RoleMappingDelete
            | SettingUpdate => Role::Admin,
        }
    }
}

/// The permissions a role grants.
pub fn permissions(role: Role) -> Vec<Permission> {
    Permission::ALL
        .into_iter()
        .filter(|p| p.least_role() <= role)
        .collect()
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// No credentials.
    Anonymous,
    /// A login (static users file or its session cookie).
    Login,
    /// An API token this gateway issued: its bindings are all it grants.
    Token,
    /// A Kubernetes token checked by TokenReview.
    Kubernetes,
    /// An ID token of the configured OpenID Connect issuer.
    Oidc,
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// How they authenticated.
    pub via: Via,
    /// User name (`None` for anonymous callers).
    pub username: Option<String>,
    /// Their primary namespace (`default` for anonymous callers).
    pub primary_namespace: String,
    /// Pattern → role bindings they carry.
    pub bindings: Vec<(String, Role)>,
    /// When their credentials expire (seconds since the epoch), if they do.
    pub expires: Option<i64>,
    /// Whether their identity comes from the users file: then every token issued to them
    /// stops working when they are removed from it.
    pub from_users_file: bool,
}

impl Caller {
    /// A caller without credentials.
    pub fn anonymous(bindings: Vec<(String, Role)>) -> Caller {
        Caller {
            via: Via::Anonymous,
            username: None,
            primary_namespace: "default".into(),
            bindings,
            expires: None,
            from_users_file: false,
        }
    }

    /// Whether they presented valid credentials.
    pub fn authenticated(&self) -> bool {
        self.via != Via::Anonymous
    }

    /// What Namespace role bindings' `entity` patterns are matched against.
    pub fn entity(&self) -> String {
        match &self.username {
            Some(u) if self.authenticated() => format!("{}/{u}", self.primary_namespace),
            _ => "anonymous".into(),
        }
    }

    /// The caller's role on `ns` (and `env` within it), given that Namespace's bindings.
    pub fn role_on(
        &self,
        ns_bindings: &[RoleBinding],
        ns: &str,
        env: Option<&str>,
    ) -> Option<Role> {
        self.carried_role(ns, env)
            .max(self.granted_role(ns_bindings))
    }

    /// The highest role the caller's own bindings give on `ns` (and `env`).
    pub fn carried_role(&self, ns: &str, env: Option<&str>) -> Option<Role> {
        self.bindings
            .iter()
            .filter(|(p, _)| matches_parts(p, ns, env))
            .map(|(_, r)| *r)
            .max()
    }

    /// The highest role a Namespace's bindings grant the caller on all of it (none for API
    /// tokens: their rights are what they carry).
    pub fn granted_role(&self, ns_bindings: &[RoleBinding]) -> Option<Role> {
        if self.via == Via::Token || ns_bindings.is_empty() {
            return None;
        }
        let entity = self.entity();
        let anonymous = !self.authenticated();
        ns_bindings
            .iter()
            // `team/*` also matches the namespace `team` itself, so a pattern with a `/`
            // would match the bare entity `anonymous`: only slash-free ones may.
            .filter(|b| !(anonymous && b.entity.contains('/')))
            .filter(|b| pattern_matches(&b.entity, &entity))
            .map(|b| b.role)
            .max()
    }

    /// Whether the caller holds `permission` on `ns` (and `env`).
    pub fn may(
        &self,
        permission: Permission,
        ns_bindings: &[RoleBinding],
        ns: &str,
        env: Option<&str>,
    ) -> bool {
        self.role_on(ns_bindings, ns, env)
            .is_some_and(|r| r >= permission.least_role())
    }

    /// Every binding the caller effectively holds, given all Namespaces (`name`, bindings):
    /// what a token issued to them may hold at most.
    pub fn effective_bindings<'a>(
        &self,
        namespaces: impl IntoIterator<Item = (&'a str, &'a [RoleBinding])>,
    ) -> BTreeMap<String, Role> {
        let mut out: BTreeMap<String, Role> = BTreeMap::new();
        let mut grant = |pattern: String, role: Role| {
            let e = out.entry(pattern).or_insert(role);
            *e = (*e).max(role);
        };
        for (p, r) in &self.bindings {
            grant(p.clone(), *r);
        }
        if self.via != Via::Token {
            for (name, bindings) in namespaces {
                if let Some(role) = self.role_on(bindings, name, None)
                    && self.bindings_role(name).is_none_or(|r| r < role)
                {
                    grant(format!("{name}/*"), role);
                }
            }
        }
        out
    }

    fn bindings_role(&self, ns: &str) -> Option<Role> {
        highest_role(self.bindings.iter().map(|(p, r)| (p.as_str(), *r)), ns)
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ (for
/// secrets compared with what a caller sent).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the binding `held` (pattern, role) covers `wanted`: every target `wanted` matches,
/// `held` matches too, with at least the role. Conservative: a `*` inside a wanted segment is
/// only covered by the same segment or a bare `*`.
pub fn covers(held: (&str, Role), wanted: (&str, Role)) -> bool {
    if held.1 < wanted.1 {
        return false;
    }
    let (h, w) = (held.0, wanted.0);
    let split = |s: &str| -> (String, Option<String>) {
        match s.split_once('/') {
            Some((a, b)) => (a.to_string(), Some(b.to_string())),
            None => (s.to_string(), None),
        }
    };
    let seg = |hp: &str, wp: &str| -> bool {
        if wp.contains('*') {
            hp == wp || hp.chars().all(|c| c == '*')
        } else {
            pattern_matches(hp, wp)
        }
    };
    let ((hn, he), (wn, we)) = (split(h), split(w));
    if !seg(&hn, &wn) {
        return false;
    }
    match (he, we) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(he), None) => he.chars().all(|c| c == '*'),
        (Some(he), Some(we)) => seg(&he, &we),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(bindings: &[(&str, Role)]) -> Caller {
        Caller {
            via: Via::Login,
            username: Some("alice".into()),
            primary_namespace: "alice".into(),
            bindings: bindings.iter().map(|(p, r)| (p.to_string(), *r)).collect(),
            expires: None,
            from_users_file: true,
        }
    }

    fn rb(entity: &str, role: Role) -> RoleBinding {
        RoleBinding {
            entity: entity.into(),
            role,
        }
    }

    #[test]
    fn roles_grant_growing_sets() {
        let v = permissions(Role::Viewer);
        let e = permissions(Role::Editor);
        let a = permissions(Role::Admin);
        assert!(v.iter().all(|p| e.contains(p)) && e.iter().all(|p| a.contains(p)));
        assert!(!v.contains(&Permission::EnvironmentCreate));
        assert!(e.contains(&Permission::BuildCancel) && !e.contains(&Permission::BuildDelete));
        assert_eq!(a.len(), Permission::ALL.len());
    }

    #[test]
    fn carried_and_namespace_bindings() {
        let alice = user(&[("alice/*", Role::Admin)]);
        assert_eq!(alice.role_on(&[], "alice", None), Some(Role::Admin));
        assert_eq!(alice.role_on(&[], "alice", Some("env")), Some(Role::Admin));
        assert_eq!(alice.role_on(&[], "team", Some("env")), None);
        let team = [rb("alice/*", Role::Editor), rb("*/*", Role::Viewer)];
        assert_eq!(
            alice.role_on(&team, "team", Some("env")),
            Some(Role::Editor)
        );
        assert!(alice.may(Permission::BuildCancel, &team, "team", Some("x")));
        assert!(!alice.may(Permission::EnvironmentDelete, &team, "team", Some("x")));
        // Anonymous callers match `anonymous` and `*`, never `*/*`.
        let anon = Caller::anonymous(vec![]);
        assert_eq!(anon.role_on(&team, "team", None), None);
        assert_eq!(
            anon.role_on(&[rb("*/*", Role::Admin)], "team", Some("e")),
            None
        );
        assert_eq!(
            anon.role_on(&[rb("*", Role::Viewer)], "team", None),
            Some(Role::Viewer)
        );
        assert_eq!(
            anon.role_on(&[rb("anonymous", Role::Viewer)], "team", None),
            Some(Role::Viewer)
        );
        // A token's rights are what it carries.
        let token = Caller {
            via: Via::Token,
            ..user(&[("team/env", Role::Viewer)])
        };
        assert_eq!(
            token.role_on(&team, "team", Some("env")),
            Some(Role::Viewer)
        );
        assert_eq!(token.role_on(&team, "team", Some("other")), None);
    }

    #[test]
    fn effective_bindings_include_namespace_grants() {
        let alice = user(&[("alice/*", Role::Admin)]);
        let team = [rb("alice/*", Role::Editor)];
        let other = [rb("bob/*", Role::Admin)];
        let eff = alice.effective_bindings([("team", &team[..]), ("other", &other[..])]);
        assert_eq!(eff.get("alice/*"), Some(&Role::Admin));
        assert_eq!(eff.get("team/*"), Some(&Role::Editor));
        assert!(!eff.contains_key("other/*"));
    }

    #[test]
    fn covering() {
        assert!(covers(("*/*", Role::Admin), ("team/env", Role::Viewer)));
        assert!(covers(("team/*", Role::Editor), ("team/env", Role::Editor)));
        assert!(covers(("team/*", Role::Editor), ("team/*", Role::Viewer)));
        assert!(covers(("team/*", Role::Editor), ("team", Role::Viewer)));
        assert!(!covers(
            ("team/*", Role::Viewer),
            ("team/env", Role::Editor)
        ));
        assert!(!covers(("team/env", Role::Admin), ("team/*", Role::Viewer)));
        assert!(!covers(("team/e*", Role::Admin), ("team/*", Role::Viewer)));
        assert!(!covers(("team/*", Role::Admin), ("*/*", Role::Viewer)));
        assert!(!covers(("team", Role::Admin), ("team/env", Role::Viewer)));
    }
}
