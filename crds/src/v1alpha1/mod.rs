//! The `conda.store/v1alpha1` resources.
//!
//! Every public field carries a doc comment: schemars turns it into the CRD's schema description,
//! which is what `kubectl explain` shows.

mod build;
mod common;
mod conditions;
mod environment;
mod namespace;
mod specification;

pub use build::{Build, BuildPhase, BuildSpec, BuildStatus, BuildStep, StepJob};
pub use common::{Artifact, ArtifactKind, Policy, Retention, RoleBinding};
pub use conditions::{ConditionStatus, ConditionType, find_condition, is_true};
pub use environment::{
    DependencyItem, Environment, EnvironmentPhase, EnvironmentSpec, EnvironmentStatus,
};
pub use namespace::{Namespace, NamespaceSpec, NamespaceStatus};
pub use specification::{Specification, SpecificationSpec};

/// The API group of every resource here.
pub const GROUP: &str = "conda.store";
/// The API version of every resource here.
pub const VERSION: &str = "v1alpha1";

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
