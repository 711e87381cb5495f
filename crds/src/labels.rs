//! Labels and names shared by the operator and the gateway: both create Builds, and both must
//! name and label them alike.

/// On Builds: the object name of their Environment.
pub const ENVIRONMENT: &str = "conda.store/environment";
/// On Builds and Jobs: the Specification's object name.
pub const SPECIFICATION: &str = "conda.store/specification";
/// On everything conda-store creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "conda-store";
/// On Jobs (and their pods): the Build's object name.
pub const BUILD: &str = "conda.store/build";
/// On Jobs (and their pods): the Build's uid. A Job is trusted as a build's only when it
/// matches: a name alone can be taken by anyone who may create Jobs there.
pub const BUILD_UID: &str = "conda.store/build-uid";
/// On Jobs (and their pods): the step they run.
pub const STEP: &str = "conda.store/step";
/// On Kubernetes namespaces: the conda-store Namespace they hold. On Jobs (and their pods):
/// the Build's namespace, which differs from theirs when Jobs run in one shared namespace.
pub const NAMESPACE: &str = "conda.store/namespace";

/// The storage key prefix of a build's artifacts.
pub fn build_key(namespace: &str, build: &str) -> String {
    format!("builds/{namespace}/{build}")
}
