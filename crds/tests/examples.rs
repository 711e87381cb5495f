//! The example manifests people copy must stay valid against the types and the spec model.

use conda_store_crds::spec::{RawSpec, normalize, normalize_yaml};
use conda_store_crds::{Environment, Namespace, Policy};

fn example(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn example_manifests_are_valid() {
    let ns: Namespace = serde_yaml::from_str(&example("namespace.yaml")).unwrap();
    let env: Environment = serde_yaml::from_str(&example("data-science.yaml")).unwrap();
    assert_eq!(
        env.metadata.namespace.as_deref(),
        ns.metadata.name.as_deref()
    );
    let policy = Policy::default().overridden_by(ns.spec.policy.as_ref().unwrap());
    // The channels pass the namespace's allowlist.
    let spec = normalize(&RawSpec::from_environment(&env.spec).unwrap(), &policy).unwrap();
    assert!(
        spec.dependencies
            .iter()
            .any(|d| d.starts_with("scikit-learn"))
    );
    // Nothing the builds cannot do yet (pip packages are refused at solve time).
    assert!(spec.pip.is_empty());
}

#[test]
fn example_environment_yaml_is_valid() {
    let spec = normalize_yaml(&example("environment.yaml"), &Policy::default()).unwrap();
    assert_eq!(spec.channels, ["conda-forge"]);
}

#[test]
fn demo_examples_are_valid_once_the_channel_is_filled_in() {
    let fill = |path: &str| example(path).replace("DEMO_CHANNEL_URL/", "http://10.0.0.1:8000/");
    let ns: Namespace = serde_yaml::from_str(&example("demo/namespace.yaml")).unwrap();
    assert_eq!(ns.metadata.name.as_deref(), Some("demo"));
    let tools: Environment = serde_yaml::from_str(&fill("demo/tools.yaml")).unwrap();
    let spec = normalize(
        &RawSpec::from_environment(&tools.spec).unwrap(),
        &Policy::default(),
    )
    .unwrap();
    assert_eq!(spec.channels, ["http://10.0.0.1:8000"]);

    // The lockfile example locks what the demo Environment resolves to.
    let locked: Environment = serde_yaml::from_str(&fill("demo/tools-locked.yaml")).unwrap();
    let spec = normalize(
        &RawSpec::from_environment(&locked.spec).unwrap(),
        &Policy::default(),
    )
    .unwrap();
    let lock = spec.lockfile.expect("a lockfile specification");
    let mut names: Vec<_> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["liba", "libb", "tool"]);
    assert!(
        lock.packages
            .iter()
            .all(|p| p.url.starts_with("http://10.0.0.1:8000/"))
    );
}
