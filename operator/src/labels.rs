//! Labels, annotations and names the operator puts on the objects it manages.

pub use conda_store_crds::labels::{
    BUILD, ENVIRONMENT, MANAGED_BY, MANAGER, NAMESPACE, SPECIFICATION, STEP, build_key,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "conda-store-operator";
/// The finalizer on Builds: their artifacts in storage are deleted before they go.
pub const ARTIFACTS_FINALIZER: &str = "conda.store/artifacts";

/// The name of the Job running `step` of `build`: `<build>-<step>` in the build's own
/// namespace (at most 63 characters: build names are at most 54). In a namespace shared by
/// every build (`shared`), builds of different namespaces may share a name, so the build's
/// namespace comes first, shortened and made unique by a hash where the whole would pass the
/// 63 characters a pod's `job-name` label allows. Deterministic: a restarted operator finds
/// the Jobs it created.
pub fn job_name(namespace: &str, build: &str, step: &str, shared: bool) -> String {
    if !shared {
        return format!("{build}-{step}");
    }
    let full = format!("{namespace}-{build}-{step}");
    if full.len() <= 63 {
        return full;
    }
    let hash = conda_store_crds::naming::short_hash(&format!("{namespace}/{build}"));
    let room = 63 - step.len() - hash.len() - 2;
    let head = format!("{namespace}-{build}");
    let head = head[..room.min(head.len())].trim_end_matches('-');
    format!("{head}-{hash}-{step}")
}

#[cfg(test)]
mod tests {
    use super::job_name;

    #[test]
    fn job_names_are_unique_per_namespace_and_fit_a_label() {
        assert_eq!(
            job_name("team", "env-1a2b3c4d-1", "solve", false),
            "env-1a2b3c4d-1-solve"
        );
        assert_eq!(
            job_name("team", "env-1a2b3c4d-1", "solve", true),
            "team-env-1a2b3c4d-1-solve"
        );
        let ns = "a-very-long-namespace-name-that-takes-most-of-the-room";
        let build = "an-environment-with-a-long-name-too-0123abcd-12";
        let a = job_name(ns, build, "install", true);
        let b = job_name(&format!("{ns}x"), build, "install", true);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-install") && !a.contains("--"), "{a}");
        assert_eq!(a, job_name(ns, build, "install", true), "deterministic");
    }
}
