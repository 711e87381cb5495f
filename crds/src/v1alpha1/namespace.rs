//! `Namespace`: a conda-store namespace.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Policy, Retention, RoleBinding};

/// A conda-store namespace: who may do what with its environments, and the build policy that
/// applies to them. Cluster-scoped; it maps one to one to the Kubernetes namespace of the same
/// name, which holds its Environments and which the operator creates when missing.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[kube(
    group = "conda.store",
    version = "v1alpha1",
    kind = "Namespace",
    // Not "namespaces": the API server reads `/apis/<group>/<version>/namespaces/<name>/status`
    // as a namespaced path (namespace <name>, resource "status"), so a cluster-scoped
    // custom resource with that plural has no reachable status subresource.
    plural = "condanamespaces",
    doc = "A conda-store namespace: role bindings, build policy and retention for the environments in the Kubernetes namespace of the same name.",
    status = "NamespaceStatus",
    shortname = "cns",
    category = "conda-store",
    printcolumn = r#"{"name":"Display name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// The namespace's name as people know it in conda-store (it may hold `_`, capitals or
    /// dots); defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free text shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who may see and change this namespace's environments. A caller's role is the highest any
    /// matching binding grants; nobody matched has no access.
    #[serde(default)]
    pub role_bindings: Vec<RoleBinding>,
    /// Build policy for this namespace's environments; fields left out inherit the operator's
    /// global policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Build policy of single environments, by their conda name (conda-store's environment
    /// settings); fields left out inherit this namespace's policy. Kept on the Namespace, not
    /// the Environment, so that only who may change the namespace's settings changes them:
    /// whoever may edit Environments may not loosen their policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_policies: BTreeMap<String, Policy>,
    /// How many builds to keep per environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// What the operator observed of a Namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the Kubernetes namespace exists and the spec is valid.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Environments in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_count: Option<u32>,
}

impl Namespace {
    /// The policy that applies to this namespace's environments (`environment`: one of them,
    /// by conda name): `global`, overridden field by field by the namespace's policy, then by
    /// the environment's.
    pub fn effective_policy(&self, global: &Policy, environment: Option<&str>) -> Policy {
        let mut policy = match &self.spec.policy {
            Some(p) => global.overridden_by(p),
            None => global.clone(),
        };
        if let Some(p) = environment.and_then(|e| self.spec.environment_policies.get(e)) {
            policy = policy.overridden_by(p);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(c: &[&str]) -> Option<Vec<String>> {
        Some(c.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn an_environments_policy_overrides_its_namespaces_which_overrides_the_global() {
        let global = Policy {
            allowed_channels: channels(&["conda-forge", "bioconda"]),
            default_channels: channels(&["conda-forge"]),
            channel_alias: Some("https://conda.example".into()),
            ..Policy::default()
        };
        let mut ns = Namespace::new(
            "team",
            NamespaceSpec {
                policy: Some(Policy {
                    default_channels: channels(&["bioconda"]),
                    ..Policy::default()
                }),
                ..NamespaceSpec::default()
            },
        );
        ns.spec.environment_policies.insert(
            "My Env".into(),
            Policy {
                allowed_channels: channels(&["conda-forge"]),
                ..Policy::default()
            },
        );
        let of_ns = ns.effective_policy(&global, None);
        assert_eq!(of_ns.default_channels, channels(&["bioconda"]));
        assert_eq!(
            of_ns.allowed_channels,
            channels(&["conda-forge", "bioconda"])
        );
        let of_env = ns.effective_policy(&global, Some("My Env"));
        assert_eq!(of_env.allowed_channels, channels(&["conda-forge"]));
        assert_eq!(of_env.default_channels, channels(&["bioconda"]));
        assert_eq!(
            of_env.channel_alias.as_deref(),
            Some("https://conda.example")
        );
        // Another environment has the namespace's.
        assert_eq!(ns.effective_policy(&global, Some("other")), of_ns);
    }
}
