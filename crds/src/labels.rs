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

/// Whether `key` lies under the storage prefix of build `build` in `namespace`
/// (`builds/<namespace>/<build>/...`), with no empty, `.` or `..` segment. Storage is shared by
/// every team: the operator keeps a step's reported artifacts, and the gateway serves a build's
/// keys, only when this holds, whatever a report or a status says.
pub fn in_build_prefix(namespace: &str, build: &str, key: &str) -> bool {
    let prefix = format!("{}/", build_key(namespace, build));
    key.strip_prefix(&prefix).is_some_and(|rest| {
        !rest
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
    })
}

/// The label selector of the pods the Job with uid `job_uid` made (the Job controller labels
/// them `controller-uid`). A label proves nothing: check [`controlled_by_job`] too.
pub fn job_pods_selector(job_uid: &str) -> String {
    format!("controller-uid={job_uid}")
}

/// Whether the object's controller is the Job with uid `job_uid`. Pods are read as a build
/// step's only when this holds: anyone who may create pods can label one like a step's.
pub fn controlled_by_job(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    job_uid: &str,
) -> bool {
    !job_uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Job" && o.controller == Some(true) && o.uid == job_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    #[test]
    fn build_keys_stay_in_their_build() {
        assert!(in_build_prefix(
            "team",
            "b-1",
            "builds/team/b-1/logs/solve.log"
        ));
        for key in [
            "builds/team/b-10/x",
            "builds/other/b-1/x",
            "builds/team/b-1/../b-2/x",
            "builds/team/b-1/./x",
            "builds/team/b-1//x",
            "builds/team/b-1/",
            "blobs/sha256/aa",
        ] {
            assert!(!in_build_prefix("team", "b-1", key), "{key}");
        }
    }

    #[test]
    fn only_the_controlling_job_counts() {
        let owner = |kind: &str, uid: &str, controller| OwnerReference {
            kind: kind.into(),
            uid: uid.into(),
            controller: Some(controller),
            ..Default::default()
        };
        let meta = |refs| ObjectMeta {
            owner_references: Some(refs),
            ..Default::default()
        };
        assert!(controlled_by_job(
            &meta(vec![owner("Job", "u1", true)]),
            "u1"
        ));
        assert!(!controlled_by_job(
            &meta(vec![owner("Job", "u1", false)]),
            "u1"
        ));
        assert!(!controlled_by_job(
            &meta(vec![owner("ReplicaSet", "u1", true)]),
            "u1"
        ));
        assert!(!controlled_by_job(
            &meta(vec![owner("Job", "u2", true)]),
            "u1"
        ));
        assert!(!controlled_by_job(&ObjectMeta::default(), ""));
    }
}
