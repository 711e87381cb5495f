//! conda-store's JSON shapes of the resources: pure functions, ids passed in.

use conda_store_crds::{
    ArtifactKind, Build, BuildPhase, Environment, Namespace, Specification, spec::NormalizedSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

/// The name people use for a Namespace (its display name, else the object name).
pub fn namespace_name(ns: &Namespace) -> String {
    ns.spec
        .display_name
        .clone()
        .unwrap_or_else(|| ns.name_any())
}

/// The name people use for an Environment (`spec.name`, else the object name).
pub fn environment_name(env: &Environment) -> String {
    env.conda_name()
}

/// The build's conda-store state; a build not yet seen by the operator is queued.
pub fn build_phase(b: &Build) -> BuildPhase {
    b.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// conda-store's artifact type of an artifact kind.
pub fn artifact_type(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Lockfile => "LOCKFILE",
        ArtifactKind::Yaml => "YAML",
        ArtifactKind::Archive => "CONDA_PACK",
        ArtifactKind::Image => "DOCKER_MANIFEST",
        ArtifactKind::Logs => "LOGS",
    }
}

/// The artifact kind of a conda-store artifact type, if we produce it.
pub fn artifact_kind(artifact_type: &str) -> Option<ArtifactKind> {
    Some(match artifact_type {
        "LOCKFILE" => ArtifactKind::Lockfile,
        "YAML" => ArtifactKind::Yaml,
        "CONDA_PACK" => ArtifactKind::Archive,
        "DOCKER_MANIFEST" | "DOCKER_BLOB" | "CONTAINER_REGISTRY" => ArtifactKind::Image,
        "LOGS" => ArtifactKind::Logs,
        _ => return None,
    })
}

/// The artifact types conda-store knows (what a filter may name).
pub const ARTIFACT_TYPES: [&str; 9] = [
    "DIRECTORY",
    "LOCKFILE",
    "LOGS",
    "YAML",
    "CONDA_PACK",
    "DOCKER_MANIFEST",
    "CONSTRUCTOR_INSTALLER",
    "CONTAINER_REGISTRY",
    "DOCKER_BLOB",
];

/// A time as conda-store serves it: UTC without an offset (`2026-12-05T23:01:02`), which
/// conda-store-ui reads by appending `Z` (with an offset already there it shows no date).
fn time(t: &Option<Time>) -> Option<String> {
    t.as_ref()
        .map(|t| t.0.to_zoned(jiff::tz::TimeZone::UTC).datetime().to_string())
}

/// A role mapping of a namespace.
#[derive(Debug, Clone, Serialize)]
pub struct RoleMappingView {
    /// Its position, from 1.
    pub id: usize,
    /// Whom it applies to.
    pub entity: String,
    /// The role.
    pub role: &'static str,
}

/// conda-store's Namespace.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceView {
    /// Numeric id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Free metadata (`description`).
    pub metadata_: BTreeMap<&'static str, String>,
    /// Role mappings.
    pub role_mappings: Vec<RoleMappingView>,
}

/// A Namespace.
pub fn namespace(ns: &Namespace, id: i64) -> NamespaceView {
    let mut metadata_ = BTreeMap::new();
    if let Some(d) = &ns.spec.description {
        metadata_.insert("description", d.clone());
    }
    NamespaceView {
        id,
        name: namespace_name(ns),
        metadata_,
        role_mappings: ns
            .spec
            .role_bindings
            .iter()
            .enumerate()
            .map(|(i, b)| RoleMappingView {
                id: i + 1,
                entity: b.entity.clone(),
                role: b.role.as_str(),
            })
            .collect(),
    }
}

/// The specification of a build as conda-store shows it (an environment.yaml as JSON).
pub fn specification(spec: &Specification, id: i64, env_name: &str) -> Value {
    json!({
        "id": id,
        "name": env_name,
        "spec": spec_json(&spec.spec.spec, env_name),
        "sha256": spec.spec.sha256,
        "created_on": time(&spec.metadata.creation_timestamp),
    })
}

/// A normalised spec as environment.yaml-shaped JSON.
pub fn spec_json(spec: &NormalizedSpec, env_name: &str) -> Value {
    let mut deps: Vec<Value> = spec.dependencies.iter().map(|d| json!(d)).collect();
    if !spec.pip.is_empty() {
        deps.push(json!({"pip": spec.pip}));
    }
    let mut out = json!({
        "name": env_name,
        "channels": spec.channels,
        "dependencies": deps,
        "variables": spec.variables,
    });
    if !spec.platforms.is_empty() {
        out["platforms"] = json!(spec.platforms);
    }
    if spec.lockfile.is_some() {
        out["lockfile"] = json!(true);
    }
    out
}

/// An artifact of a build.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactView {
    /// Numeric id (the build's id times 100 plus its position).
    pub id: i64,
    /// conda-store's artifact type.
    pub artifact_type: &'static str,
    /// Storage key.
    pub key: String,
}

/// conda-store's Build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    /// Numeric id.
    pub id: i64,
    /// Its environment's id.
    pub environment_id: i64,
    /// Its specification, when asked for.
    pub specification: Option<Value>,
    /// Not listed here: `/build/{id}/packages/` has them.
    pub packages: Option<Vec<Value>>,
    /// `QUEUED`, `BUILDING`, `COMPLETED`, `FAILED` or `CANCELED`.
    pub status: &'static str,
    /// What happened, for people.
    pub status_info: Option<String>,
    /// Bytes of its artifacts.
    pub size: u64,
    /// When it was queued.
    pub scheduled_on: Option<String>,
    /// When it started.
    pub started_on: Option<String>,
    /// When it ended.
    pub ended_on: Option<String>,
    /// Its artifacts.
    pub build_artifacts: Vec<ArtifactView>,
}

/// A Build. `spec` is the view of its specification when the caller wants it.
pub fn build(b: &Build, environment_id: i64, spec: Option<Value>) -> BuildView {
    let status = b.status.as_ref();
    let id = status.and_then(|s| s.id).unwrap_or_default();
    let build_artifacts = status
        .map(|s| {
            s.artifacts
                .iter()
                .enumerate()
                .map(|(i, a)| ArtifactView {
                    id: id * 100 + i as i64 + 1,
                    artifact_type: artifact_type(a.kind),
                    key: a.key.clone(),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut build_artifacts = build_artifacts;
    // conda-store's log artifact exists from a build's first line (it appends as it goes), and
    // `logs/` serves a running build's pods' output: list it while the build runs, so the UI
    // links it then.
    if build_phase(b) == BuildPhase::Building
        && !build_artifacts
            .iter()
            .any(|a| a.artifact_type == artifact_type(ArtifactKind::Logs))
    {
        build_artifacts.push(ArtifactView {
            id: id * 100 + 99,
            artifact_type: artifact_type(ArtifactKind::Logs),
            key: format!("logs/{id}"),
        });
    }
    // conda-store's status_info says why a build failed or what it waits for; the UI shows it
    // beside the status, so a step's "done in 0.1 s" is not it.
    let status_info = status.and_then(|s| {
        s.message.clone().or_else(|| {
            s.conditions
                .iter()
                .rev()
                .find(|c| c.status == "False" && !c.message.is_empty())
                .map(|c| c.message.clone())
        })
    });
    BuildView {
        id,
        environment_id,
        specification: spec,
        packages: None,
        status: build_phase(b).conda_store_name(),
        status_info,
        size: status.and_then(|s| s.size).unwrap_or(0),
        scheduled_on: time(
            &status
                .and_then(|s| s.scheduled_on.clone())
                .or(b.metadata.creation_timestamp.clone()),
        ),
        started_on: time(&status.and_then(|s| s.started_on.clone())),
        ended_on: time(&status.and_then(|s| s.ended_on.clone())),
        build_artifacts,
    }
}

/// conda-store's Environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentView {
    /// Numeric id.
    pub id: i64,
    /// Its namespace.
    pub namespace: NamespaceView,
    /// Name.
    pub name: String,
    /// The current build's id.
    pub current_build_id: Option<i64>,
    /// The current build, when asked for.
    pub current_build: Option<BuildView>,
    /// Description.
    pub description: Option<String>,
}

/// An Environment; `current_build` is the view of its current build when wanted.
pub fn environment(
    env: &Environment,
    id: i64,
    namespace: NamespaceView,
    current_build: Option<BuildView>,
) -> EnvironmentView {
    EnvironmentView {
        id,
        namespace,
        name: environment_name(env),
        current_build_id: env.status.as_ref().and_then(|s| s.current_build),
        current_build,
        description: env.spec.description.clone(),
    }
}

/// conda-store's CondaPackage of an indexed package; the file's hashes too when `hashes`
/// (a build's package list shows them, the catalog does not).
pub fn package(p: &crate::index::PackageRow, hashes: bool) -> Value {
    let mut v = json!({
        "id": p.id,
        "channel": {"id": p.channel_id, "name": p.channel, "last_update": null},
        "name": p.name,
        "version": p.version,
        "build": p.build,
        "subdir": p.subdir,
        "license": null,
        "summary": null,
    });
    if hashes {
        v["sha256"] = json!(p.sha256);
        v["md5"] = json!(p.md5);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use conda_store_crds::{Artifact, BuildSpec, BuildStatus};

    #[test]
    fn a_completed_build_as_conda_store_shows_it() {
        let mut b = Build::new(
            "env-1234abcd-1",
            BuildSpec {
                environment: "env".into(),
                specification: "spec-1234abcd".into(),
                cancel: false,
            },
        );
        b.status = Some(BuildStatus {
            id: Some(7),
            phase: Some(BuildPhase::Completed),
            size: Some(42),
            artifacts: vec![Artifact {
                kind: ArtifactKind::Archive,
                key: "builds/team/env-1234abcd-1/archive.tar.zst".into(),
                size: Some(42),
                digest: None,
            }],
            ..Default::default()
        });
        let v = serde_json::to_value(build(&b, 3, None)).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["environment_id"], 3);
        assert_eq!(v["status"], "COMPLETED");
        assert_eq!(v["size"], 42);
        assert_eq!(v["build_artifacts"][0]["artifact_type"], "CONDA_PACK");
        // A build the operator has not seen yet is queued, with its artifacts listed (empty).
        let fresh = Build::new("x", b.spec.clone());
        let v = serde_json::to_value(build(&fresh, 3, None)).unwrap();
        assert_eq!(v["status"], "QUEUED");
        assert_eq!(v["build_artifacts"], json!([]));
    }

    #[test]
    fn artifact_types_round_trip() {
        for k in [
            ArtifactKind::Lockfile,
            ArtifactKind::Yaml,
            ArtifactKind::Archive,
            ArtifactKind::Image,
            ArtifactKind::Logs,
        ] {
            assert_eq!(artifact_kind(artifact_type(k)), Some(k));
            assert!(ARTIFACT_TYPES.contains(&artifact_type(k)));
        }
    }
}
