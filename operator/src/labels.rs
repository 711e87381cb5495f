//! Labels, annotations and names the operator puts on the objects it manages.

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "conda-store-operator";
/// On Builds: the object name of their Environment.
pub const ENVIRONMENT: &str = "conda.store/environment";
/// On Builds and Jobs: the Specification's object name.
pub const SPECIFICATION: &str = "conda.store/specification";
/// On Jobs (and their pods): the Build's object name.
pub const BUILD: &str = "conda.store/build";
/// On Jobs (and their pods): the step they run.
pub const STEP: &str = "conda.store/step";
/// On everything the operator creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "conda-store";
/// On Kubernetes namespaces: the conda-store Namespace they hold.
pub const NAMESPACE: &str = "conda.store/namespace";
/// The finalizer on Builds: their artifacts in storage are deleted before they go.
pub const ARTIFACTS_FINALIZER: &str = "conda.store/artifacts";

/// The storage key prefix of a build's artifacts.
pub fn build_key(namespace: &str, build: &str) -> String {
    format!("builds/{namespace}/{build}")
}

/// The name of the Job running `step` of `build` (at most 63 characters: build names are
/// at most 54).
pub fn job_name(build: &str, step: &str) -> String {
    format!("{build}-{step}")
}
