//! Authorisation against the resolved objects: one item, many items of a list, the 403.

use super::*;

impl App {
    /// Whether `caller` holds `permission` on the environment `env` (conda name) of the
    /// Namespace object `ns`, or on the namespace itself.
    pub fn may(
        &self,
        caller: &Caller,
        permission: Permission,
        ns: &str,
        env: Option<&str>,
    ) -> bool {
        caller.may(
            permission,
            &self.bindings(ns),
            &self.namespace_name(ns),
            env,
        )
    }

    /// `may`, as a 403 error naming the target.
    pub fn require(
        &self,
        caller: &Caller,
        permission: Permission,
        ns: &str,
        env: Option<&str>,
    ) -> ApiResult<()> {
        if self.may(caller, permission, ns, env) {
            return Ok(());
        }
        let target = match env {
            Some(e) => format!("{}/{e}", self.namespace_name(ns)),
            None => self.namespace_name(ns),
        };
        Err(denied(caller, permission, &target))
    }
}

/// The 403 for a caller lacking `permission` on `target`: conda-store answers 403 whether or not
/// the caller logged in (credentials that are not valid are a 401, elsewhere).
pub fn denied(caller: &Caller, permission: Permission, target: &str) -> ApiError {
    if caller.authenticated() {
        ApiError::forbidden(format!(
            "{} may not {} on {target}",
            caller.entity(),
            permission.as_str()
        ))
    } else {
        ApiError::forbidden(format!(
            "anonymous callers may not {} on {target}; log in or present a token",
            permission.as_str()
        ))
    }
}

/// Authorisation for many items of one request: what Namespaces grant the caller is worked
/// out once per namespace.
pub struct ListAuthz<'a> {
    caller: &'a Caller,
    rows: &'a Rows,
    granted: HashMap<&'a str, Option<conda_store_crds::rbac::Role>>,
}

impl<'a> ListAuthz<'a> {
    /// For `caller` over `rows`.
    pub fn new(caller: &'a Caller, rows: &'a Rows) -> Self {
        ListAuthz {
            caller,
            rows,
            granted: HashMap::new(),
        }
    }

    /// Whether the caller holds `permission` on environment `env` of namespace `ns` (object
    /// name) called `ns_name`.
    pub fn may(&mut self, permission: Permission, ns: &'a str, ns_name: &str, env: &str) -> bool {
        let least = permission.least_role();
        if self.caller.carried_role(ns_name, Some(env)) >= Some(least) {
            return true;
        }
        let (caller, rows) = (self.caller, self.rows);
        let granted = *self.granted.entry(ns).or_insert_with(|| {
            caller.granted_role(rows.bindings.get(ns).map_or(&[][..], Vec::as_slice))
        });
        granted >= Some(least)
    }
}
