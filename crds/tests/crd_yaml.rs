//! The checked-in `crds/*.yaml` must be what the types generate: run
//! `cargo run -p conda-store-crds --bin crdgen` after changing a type.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in conda_store_crds::crds() {
        let expected = conda_store_crds::crd_yaml(&crd);
        let actual = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}; run the crdgen binary"));
        assert!(
            actual == expected,
            "{file} is out of date: run `cargo run -p conda-store-crds --bin crdgen`"
        );
    }
}

#[test]
fn every_schema_property_is_documented() {
    // `kubectl explain` shows these descriptions; an undocumented field is a defect.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let top_level =
                    path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
                if prop.get("description").is_none() && !top_level {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for (file, crd) in conda_store_crds::crds() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            assert!(
                schema.get("description").is_some(),
                "{file}: no root description"
            );
            walk(&format!("{file}:"), &schema, &mut missing);
        }
    }
    assert!(missing.is_empty(), "undocumented fields: {missing:#?}");
}

#[test]
fn group_version_and_scopes() {
    for (file, crd) in conda_store_crds::crds() {
        assert_eq!(crd.spec.group, "conda.store", "{file}");
        assert_eq!(crd.spec.versions[0].name, "v1alpha1", "{file}");
        let expected_scope = if file == "namespaces.yaml" {
            "Cluster"
        } else {
            "Namespaced"
        };
        assert_eq!(crd.spec.scope, expected_scope, "{file}");
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{file}"
        );
    }
}
