//! Labels, annotations and names the operator puts on the objects it manages.

pub use conda_store_crds::labels::{
    BUILD, ENVIRONMENT, MANAGED_BY, MANAGER, SPECIFICATION, STEP, build_key,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "conda-store-operator";
/// On Kubernetes namespaces: the conda-store Namespace they hold.
pub const NAMESPACE: &str = "conda.store/namespace";
/// The finalizer on Builds: their artifacts in storage are deleted before they go.
pub const ARTIFACTS_FINALIZER: &str = "conda.store/artifacts";

/// The name of the Job running `step` of `build` (at most 63 characters: build names are
/// at most 54).
pub fn job_name(build: &str, step: &str) -> String {
    format!("{build}-{step}")
}
