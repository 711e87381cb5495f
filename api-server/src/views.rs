//! conda-store's JSON shapes of the resources: pure functions, ids passed in.

use conda_store_crds::{
    ArtifactKind, Build, BuildPhase, Environment, Namespace, Specification, spec::NormalizedSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
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
    env.spec.name.clone().unwrap_or_else(|| env.name_any())
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

fn time(t: &Option<Time>) -> Value {
    match t {
        Some(t) => json!(t.0.to_string()),
        None => Value::Null,
    }
}

/// A Namespace.
pub fn namespace(ns: &Namespace, id: i64) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(d) = &ns.spec.description {
        metadata.insert("description".into(), json!(d));
    }
    let role_mappings: Vec<Value> = ns
        .spec
        .role_bindings
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"id": i + 1, "entity": b.entity, "role": b.role.as_str()}))
        .collect();
    json!({
        "id": id,
        "name": namespace_name(ns),
        "metadata_": metadata,
        "role_mappings": role_mappings,
    })
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

/// A Build. `spec` is the view of its specification when the caller wants it.
pub fn build(b: &Build, environment_id: i64, spec: Option<Value>) -> Value {
    let status = b.status.clone().unwrap_or_default();
    let id = status.id.unwrap_or_default();
    let artifacts: Vec<Value> = status
        .artifacts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "id": id * 100 + i as i64 + 1,
                "artifact_type": artifact_type(a.kind),
                "key": a.key,
            })
        })
        .collect();
    let info = status.message.clone().or_else(|| {
        status
            .conditions
            .iter()
            .rev()
            .find(|c| !c.message.is_empty())
            .map(|c| c.message.clone())
    });
    json!({
        "id": id,
        "environment_id": environment_id,
        "specification": spec,
        "packages": null,
        "status": build_phase(b).conda_store_name(),
        "status_info": info,
        "size": status.size.unwrap_or(0),
        "scheduled_on": time(&status.scheduled_on.clone().or(b.metadata.creation_timestamp.clone())),
        "started_on": time(&status.started_on),
        "ended_on": time(&status.ended_on),
        "build_artifacts": artifacts,
    })
}

/// An Environment; `current_build` is the view of its current build when wanted.
pub fn environment(
    env: &Environment,
    id: i64,
    namespace: Value,
    current_build: Option<Value>,
) -> Value {
    let current = env.status.as_ref().and_then(|s| s.current_build);
    json!({
        "id": id,
        "namespace": namespace,
        "name": environment_name(env),
        "current_build_id": current,
        "current_build": current_build,
        "description": env.spec.description,
    })
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
        let v = build(&b, 3, None);
        assert_eq!(v["id"], 7);
        assert_eq!(v["environment_id"], 3);
        assert_eq!(v["status"], "COMPLETED");
        assert_eq!(v["size"], 42);
        assert_eq!(v["build_artifacts"][0]["artifact_type"], "CONDA_PACK");
        // A build the operator has not seen yet is queued, with its artifacts listed (empty).
        let fresh = Build::new("x", b.spec.clone());
        let v = build(&fresh, 3, None);
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
