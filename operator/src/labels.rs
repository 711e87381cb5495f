//! Labels, annotations and names the operator puts on the objects it manages.

pub use conda_store_crds::labels::{
    BUILD, BUILD_UID, ENVIRONMENT, MANAGED_BY, MANAGER, NAMESPACE, SPECIFICATION, STEP, build_key,
    controlled_by_job, in_build_prefix, job_pods_selector,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "conda-store-operator";
/// The finalizer on Builds: their artifacts in storage are deleted before they go.
pub const ARTIFACTS_FINALIZER: &str = "conda.store/artifacts";

/// The name of the Job running `step` of `build`: `<build>-<step>` in the build's own
/// namespace (at most 63 characters: build names are at most 54; injective, since steps hold
/// no `-`). In a namespace shared by every build, `<namespace>.<build>-<step>`: namespace and
/// build names hold no `.`, so the name still says which build it is, and no two builds of
/// different namespaces can share it (`demo` and `probe-b` give `demo.probe-b-...`,
/// `demo-probe` and `b` give `demo-probe.b-...`). Where that passes the 63 characters a pod's `job-name` label
/// allows, `<namespace, shortened>.<16 hex of the sha256 of namespace/build>-<step>`, which
/// no unshortened name can equal (a build name always ends in `-<digits>`). Deterministic: a
/// restarted operator finds the Jobs it created; a Job found under the name is still only
/// trusted when its build-uid label is the build's.
pub fn job_name(namespace: &str, build: &str, step: &str, shared: bool) -> String {
    if !shared {
        return format!("{build}-{step}");
    }
    let full = format!("{namespace}.{build}-{step}");
    if full.len() <= 63 {
        return full;
    }
    let hash = conda_store_crds::naming::hash_hex(&format!("{namespace}/{build}"), 16);
    let room = 63 - step.len() - hash.len() - 2;
    let head = &namespace[..room.min(namespace.len())];
    format!("{}.{hash}-{step}", head.trim_end_matches('-'))
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
            "team.env-1a2b3c4d-1-solve"
        );
        // The collision the tenant issue found: `demo` + `probe-b-...` and `demo-probe` + `b-...`.
        assert_ne!(
            job_name("demo", "probe-b-1a2b3c4d-1", "solve", true),
            job_name("demo-probe", "b-1a2b3c4d-1", "solve", true)
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

    /// Over many namespace and build names that share their dashes every way round, no two
    /// (namespace, build, step) give one name.
    #[test]
    fn shared_job_names_are_injective() {
        let mut seen = std::collections::HashMap::new();
        let parts = ["a", "b", "a-b", "b-a", "a-b-c", "x".repeat(30).leak(), "y"];
        for ns in parts {
            for env in parts {
                for attempt in [1, 12] {
                    let build = format!("{env}-1a2b3c4d-{attempt}");
                    for step in ["solve", "install", "pack", "image"] {
                        let name = job_name(ns, &build, step, true);
                        assert!(name.len() <= 63, "{name}");
                        let key = (ns.to_string(), build.clone(), step);
                        if let Some(other) = seen.insert(name.clone(), key.clone()) {
                            panic!("{name} for both {other:?} and {key:?}");
                        }
                    }
                }
            }
        }
    }
}
