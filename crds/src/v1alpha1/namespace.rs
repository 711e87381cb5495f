//! `Namespace`: a conda-store namespace.

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
