//! `Specification`: an immutable, content-addressed snapshot of one normalised spec.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::NormalizedSpec;

/// An immutable, content-addressed snapshot of one normalised specification. Written by the
/// operator and the api-server; its name is derived from its sha256, so Environments with the
/// same specification share it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "conda.store",
    version = "v1alpha1",
    kind = "Specification",
    doc = "An immutable, content-addressed snapshot of one normalised environment specification.",
    namespaced,
    shortname = "cspec",
    category = "conda-store",
    printcolumn = r#"{"name":"SHA256","type":"string","jsonPath":".spec.sha256"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a Specification is immutable; create a new one"}]))]
pub struct SpecificationSpec {
    /// Hex sha256 of the canonical form of `spec`.
    #[schemars(length(min = 64, max = 64), regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// The normalised specification: channels in priority order, dependencies sorted.
    pub spec: NormalizedSpec,
}

impl Specification {
    /// The object name for a specification hash: `spec-` and the first 40 hex digits.
    pub fn name_for(sha256: &str) -> String {
        format!("spec-{}", &sha256[..40.min(sha256.len())])
    }

    /// A Specification object for `spec` (name and content; the caller sets the namespace).
    pub fn from_normalized(spec: NormalizedSpec) -> Specification {
        let sha256 = spec.sha256();
        Specification::new(&Self::name_for(&sha256), SpecificationSpec { sha256, spec })
    }

    /// Whether `spec.sha256` matches the content; a mismatch means the object was tampered with.
    pub fn is_consistent(&self) -> bool {
        self.spec.spec.sha256() == self.spec.sha256
    }
}
