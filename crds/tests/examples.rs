//! The example manifests people copy must stay valid against the types and the spec model.

use conda_store_crds::spec::{RawSpec, normalize, normalize_yaml};
use conda_store_crds::{Environment, Namespace, Policy};

fn example(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn example_manifests_are_valid() {
    let ns: Namespace = serde_yaml::from_str(&example("manifests/namespace.yaml")).unwrap();
    let env: Environment = serde_yaml::from_str(&example("manifests/environment.yaml")).unwrap();
    let policy = Policy::default().overridden_by(ns.spec.policy.as_ref().unwrap());
    let spec = normalize(&RawSpec::from_environment(&env.spec).unwrap(), &policy).unwrap();
    // The namespace's default package is added.
    assert!(spec.dependencies.iter().any(|d| d == "ipykernel"));
    assert_eq!(spec.pip, ["requests"]);
}

#[test]
fn example_environment_yaml_is_valid() {
    let spec = normalize_yaml(&example("environment.yaml"), &Policy::default()).unwrap();
    assert_eq!(spec.channels, ["conda-forge"]);
}
