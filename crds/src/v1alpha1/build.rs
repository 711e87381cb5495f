//! `Build`: one attempt to build a Specification.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{CustomResource, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Artifact, ArtifactKind, Condition, Environment};
use crate::labels;

/// One attempt to build a Specification for an Environment: solve, install, pack and image, each
/// run as a Job. Created by the operator.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[kube(
    group = "conda.store",
    version = "v1alpha1",
    kind = "Build",
    doc = "One attempt to build a Specification for an Environment; its status holds the phase, per-step conditions and artifacts.",
    namespaced,
    status = "BuildStatus",
    shortname = "cbuild",
    category = "conda-store",
    printcolumn = r#"{"name":"Id","type":"integer","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Packages","type":"integer","jsonPath":".status.packageCount","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// Name of the Environment object this build is for.
    pub environment: String,
    /// Name of the Specification object to build.
    pub specification: String,
    /// Set to true to cancel: the operator deletes the build's Jobs and marks it `Canceled`.
    #[serde(default)]
    pub cancel: bool,
}

/// The phases of a build, as conda-store's build states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum BuildPhase {
    /// Waiting for a build slot.
    #[default]
    Queued,
    /// Its Jobs run.
    Building,
    /// Every step succeeded.
    Completed,
    /// A step failed; `message` says why.
    Failed,
    /// Canceled by a person.
    Canceled,
}

impl BuildPhase {
    /// Whether the build has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BuildPhase::Completed | BuildPhase::Failed | BuildPhase::Canceled
        )
    }

    /// conda-store's name of the state (`QUEUED`, `BUILDING`, ...).
    pub fn conda_store_name(self) -> &'static str {
        match self {
            BuildPhase::Queued => "QUEUED",
            BuildPhase::Building => "BUILDING",
            BuildPhase::Completed => "COMPLETED",
            BuildPhase::Failed => "FAILED",
            BuildPhase::Canceled => "CANCELED",
        }
    }
}

/// Declares the build steps once: each step's variant, documentation, name (Job names, the
/// `step` subcommand), condition, the step whose result it starts from, and the artifacts that
/// make a build run it (none: every build runs it). The enum, [`BuildStep::ALL`] and every
/// lookup come from this one table, so a new step cannot be left out of any of them.
macro_rules! build_steps {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident {
            name: $name:literal,
            condition: $condition:ident,
            needs: $needs:expr,
            runs_for: [$($runs_for:ident),*] $(,)?
        }
    )*) => {
        /// The steps of a build, each a Job, each reported as a condition of the build's
        /// status.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            JsonSchema,
        )]
        #[serde(rename_all = "lowercase")]
        pub enum BuildStep {
            $($(#[doc = $doc])* $variant,)*
        }

        impl BuildStep {
            /// Every step, in pipeline order.
            pub const ALL: &'static [BuildStep] = &[$(BuildStep::$variant),*];

            /// The condition type that reports this step.
            pub fn condition_type(self) -> super::ConditionType {
                match self {
                    $(BuildStep::$variant => super::ConditionType::$condition,)*
                }
            }

            /// The step's name, as in Job names and the `step` subcommand.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(BuildStep::$variant => $name,)*
                }
            }

            /// The step whose result this one starts from.
            pub fn needs(self) -> Option<BuildStep> {
                match self {
                    $(BuildStep::$variant => $needs,)*
                }
            }

            /// The artifacts that make a build run this step; empty: every build runs it.
            pub fn runs_for(self) -> &'static [ArtifactKind] {
                match self {
                    $(BuildStep::$variant => &[$(ArtifactKind::$runs_for),*],)*
                }
            }
        }
    };
}

build_steps! {
    /// Solve the specification into a lockfile (the hand-off to every later step).
    Solve { name: "solve", condition: Solved, needs: None, runs_for: [] }
    /// Install the lockfile into a prefix (the environment itself).
    Install { name: "install", condition: Installed, needs: Some(BuildStep::Solve), runs_for: [] }
    /// Pack the prefix into a relocatable archive.
    Pack { name: "pack", condition: Packed, needs: Some(BuildStep::Install), runs_for: [Archive] }
    /// Build an OCI image from the prefix.
    Image { name: "image", condition: ImageBuilt, needs: Some(BuildStep::Install), runs_for: [Image] }
}

impl BuildStep {
    /// The steps a build runs for the artifacts asked for, in pipeline order.
    pub fn for_artifacts(artifacts: &[ArtifactKind]) -> Vec<BuildStep> {
        BuildStep::ALL
            .iter()
            .copied()
            .filter(|s| {
                s.runs_for().is_empty() || s.runs_for().iter().any(|a| artifacts.contains(a))
            })
            .collect()
    }

    /// The step named `name` (`solve`, ...).
    pub fn from_name(name: &str) -> Option<BuildStep> {
        BuildStep::ALL.iter().copied().find(|s| s.as_str() == name)
    }
}

/// What the operator observed of a Build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The numeric build id conda-store clients see; unique across the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `Queued`, `Building`, `Completed`, `Failed` or `Canceled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BuildPhase>,
    /// Per-step conditions: `Solved`, `Installed`, `Packed`, `ImageBuilt`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the build was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_on: Option<Time>,
    /// When its first Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_on: Option<Time>,
    /// The artifacts written to storage.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Number of packages in the solved environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_count: Option<u32>,
    /// Installed size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why the build failed or was canceled, readable by a person (for an unsolvable
    /// specification, the solver's explanation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job that runs each started step: the one place its pods (and their logs) are
    /// looked for. Pods count only when that Job, by uid, controls them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["step"]))]
    pub jobs: Vec<StepJob>,
}

/// The Job running one step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepJob {
    /// The step it runs.
    pub step: BuildStep,
    /// Its Kubernetes namespace (the build's own, or the operator's shared job namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid: the `controller-uid` of its pods.
    pub uid: String,
}

impl Build {
    /// The object name of the `attempt`-th Build of `specification` (a `spec-<hex>` name) for
    /// the Environment object `environment`: at most 40 + 1 + 8 + 1 + 4 = 54 characters, so the
    /// names of its Jobs stay under 63. The same decision taken twice names the same Build, so
    /// the second create fails with AlreadyExists instead of making a duplicate.
    pub fn name_for(environment: &str, specification: &str, attempt: u32) -> String {
        let hex = specification.strip_prefix("spec-").unwrap_or(specification);
        format!("{environment}-{}-{attempt}", &hex[..8.min(hex.len())])
    }

    /// The attempt number a Build name ends with (0 when it has none).
    pub fn attempt_of(name: &str) -> u32 {
        name.rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    }

    /// A new Build of `specification` for `env`, named by [`Build::name_for`], labelled and
    /// owned by the Environment (so deleting it cascades). `None` when `env` has no uid yet.
    pub fn new_for(env: &Environment, specification: &str, attempt: u32) -> Option<Build> {
        let env_name = env.metadata.name.clone()?;
        let owner = env.controller_owner_ref(&())?;
        Some(Build {
            metadata: ObjectMeta {
                name: Some(Build::name_for(&env_name, specification, attempt)),
                namespace: env.metadata.namespace.clone(),
                labels: Some(BTreeMap::from([
                    (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                    (labels::ENVIRONMENT.to_string(), env_name.clone()),
                    (labels::SPECIFICATION.to_string(), specification.to_string()),
                ])),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: BuildSpec {
                environment: env_name,
                specification: specification.to_string(),
                cancel: false,
            },
            status: None,
        })
    }
}
