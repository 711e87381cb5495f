//! `Environment`: a declared conda environment.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ArtifactKind, Condition};

/// A declared conda environment: its environment.yaml content (or a conda-lock lockfile), the
/// platforms to build for and the artifacts to produce. Every change of the normalised
/// specification builds anew; reordering dependencies does not.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[kube(
    group = "conda.store",
    version = "v1alpha1",
    kind = "Environment",
    doc = "A conda environment declared as environment.yaml content or a conda-lock lockfile; the operator solves, installs, packs and images it.",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "cenv",
    category = "conda-store",
    printcolumn = r#"{"name":"Display name","type":"string","jsonPath":".spec.name","priority":1}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentBuild"}"#,
    printcolumn = r#"{"name":"Latest","type":"integer","jsonPath":".status.latestBuild"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!(has(self.lockfile) && has(self.dependencies))", "message": "give either dependencies or a lockfile, not both"}]))]
pub struct EnvironmentSpec {
    /// The environment's name as people know it in conda-store (it may hold `_`, capitals or
    /// dots); defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Channels to solve from, in priority order, as names (`conda-forge`) or URLs. Empty uses
    /// the policy's default channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Dependencies as in environment.yaml: conda match specs (`numpy>=1.26`) and
    /// `{pip: [requirement, ...]}` items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<DependencyItem>>,
    /// Environment variables set when the environment is activated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Accepted for compatibility with environment.yaml files; ignored (the operator chooses
    /// where environments are installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A conda-lock v1 lockfile (YAML text) to install exactly, instead of `dependencies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockfile: Option<String>,
    /// Conda platforms to solve for (`linux-64`, `osx-arm64`, ...). Empty means the cluster's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Artifacts to produce. Unset produces a lockfile, the YAML export and an archive, as
    /// conda-store does; add `image` for an OCI image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<ArtifactKind>>,
    /// Pins the environment to this build id (rollback): it stays current whatever later builds
    /// do. Unset follows the newest completed build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pinned_build: Option<i64>,
}

impl EnvironmentSpec {
    /// The artifacts to produce, defaults applied.
    pub fn artifacts(&self) -> Vec<ArtifactKind> {
        self.artifacts
            .clone()
            .unwrap_or_else(|| ArtifactKind::DEFAULTS.to_vec())
    }
}

/// One `dependencies` item: a match spec string or a `{pip: [...]}` mapping. Free-form in the
/// schema (environment.yaml mixes both shapes in one list); the operator validates it and reports
/// a wrong shape in the Environment's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DependencyItem(pub serde_json::Value);

impl From<&str> for DependencyItem {
    fn from(s: &str) -> Self {
        DependencyItem(serde_json::Value::String(s.to_string()))
    }
}

impl JsonSchema for DependencyItem {
    fn schema_name() -> Cow<'static, str> {
        "DependencyItem".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A conda match spec string, or a mapping {pip: [requirement, ...]}.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// Where an Environment stands: `Ready` (its current build is usable), `Building` (a build of
/// its specification is queued or running), `Failed` or `Canceled` (its latest build failed or
/// was canceled; a current build, if any, is still usable), `Invalid` (its specification is not
/// valid; the `Failed` condition says where and why). Unset until the operator first looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EnvironmentPhase {
    /// Its current build is usable.
    Ready,
    /// A build of its specification is queued or running.
    Building,
    /// Its latest build failed (the current build, if any, is still usable).
    Failed,
    /// Its latest build was canceled (the current build, if any, is still usable).
    Canceled,
    /// Its specification is not valid; the `Failed` condition says where and why.
    Invalid,
}

impl EnvironmentPhase {
    /// The name as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentPhase::Ready => "Ready",
            EnvironmentPhase::Building => "Building",
            EnvironmentPhase::Failed => "Failed",
            EnvironmentPhase::Canceled => "Canceled",
            EnvironmentPhase::Invalid => "Invalid",
        }
    }
}

/// What the operator observed of an Environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the environment stands; unset until the operator first looks at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EnvironmentPhase>,
    /// Id of the build the environment currently points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_build: Option<i64>,
    /// Id of the newest build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_build: Option<i64>,
    /// sha256 of the normalised specification last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specification_hash: Option<String>,
    /// Name of the Specification object for that hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specification: Option<String>,
    /// Pull reference of the current build's image, when one was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Ready`, `Building` and `Failed`, with reasons and messages (a specification error names
    /// the offending line or item).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl Environment {
    /// The environment's name as people know it in conda-store: `spec.name`, else the
    /// object's name.
    pub fn conda_name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}
