//! The specification model end to end: environment.yaml text (or an Environment resource, or a
//! lockfile) → validated, normalised, hashed.

use conda_store_crds::spec::{
    NormalizedSpec, RawSpec, SpecErrorKind, SpecErrors, canonical_match_spec, normalize,
    normalize_yaml, package_name,
};
use conda_store_crds::{DependencyItem, EnvironmentSpec, Policy};

fn ok(text: &str) -> NormalizedSpec {
    normalize_yaml(text, &Policy::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> SpecErrors {
    normalize_yaml(text, &Policy::default()).expect_err("should be refused")
}

fn err_with(text: &str, policy: &Policy) -> SpecErrors {
    normalize_yaml(text, policy).expect_err("should be refused")
}

/// The single error, its line and its kind.
fn single(errors: &SpecErrors) -> (Option<usize>, &SpecErrorKind) {
    assert_eq!(errors.0.len(), 1, "expected one error, got: {errors}");
    (errors.0[0].location.line, &errors.0[0].kind)
}

const BASIC: &str = "\
name: data-science
channels:
  - conda-forge
dependencies:
  - python=3.11
  - numpy>=1.26
  - pandas
  - pip:
    - requests==2.31
";

// ---- parsing: the shapes conda-store accepts ----

#[test]
fn parses_basic_environment() {
    let spec = ok(BASIC);
    assert_eq!(spec.channels, ["conda-forge"]);
    assert_eq!(spec.dependencies, ["numpy>=1.26", "pandas", "python=3.11"]);
    assert_eq!(spec.pip, ["requests==2.31"]);
    assert!(spec.lockfile.is_none());
}

#[test]
fn name_and_description_do_not_enter_the_hash() {
    let a = ok(BASIC);
    let b = ok(&BASIC.replace("name: data-science", "name: other\ndescription: hello"));
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn prefix_is_accepted_and_ignored() {
    let with_prefix = format!("{BASIC}prefix: /opt/conda/envs/ds\n");
    assert_eq!(ok(&with_prefix), ok(BASIC));
}

#[test]
fn channel_urls_are_accepted() {
    let spec = ok("channels:\n  - https://conda.example.org/internal/\ndependencies: [numpy]\n");
    assert_eq!(spec.channels, ["https://conda.example.org/internal"]);
    // A local command's own file may name a directory of the machine it runs on.
    let local = conda_store_crds::spec::normalize_yaml_local(
        "channels:\n  - file:///srv/channel\ndependencies: [numpy]\n",
        &Policy::default(),
    )
    .unwrap();
    assert_eq!(local.channels, ["file:///srv/channel"]);
}

/// A tenant's specification may not read the build pod's volumes through a `file://` channel
/// (or a lockfile package URL): only what the deployment's policy names.
#[test]
fn local_channels_only_where_the_policy_points() {
    for text in [
        "channels: [file:///envs/other-team]\ndependencies: [numpy]\n",
        "channels: ['FILE:///etc']\ndependencies: [numpy]\n",
    ] {
        let e = err(text).to_string();
        assert!(e.contains("file://") && e.contains("not allowed"), "{e}");
    }
    let policy = Policy {
        allowed_channels: Some(vec!["file:///srv/mirror".into()]),
        ..Default::default()
    };
    assert!(
        normalize_yaml(
            "channels: [file:///srv/mirror]\ndependencies: [numpy]\n",
            &policy
        )
        .is_ok()
    );
    let e = err_with(
        "channels: [file:///srv/other]\ndependencies: [numpy]\n",
        &policy,
    )
    .to_string();
    assert!(e.contains("not allowed"), "{e}");
    // A file:// channel alias set by the deployment expands names under it.
    let alias = Policy {
        channel_alias: Some("file:///srv/channels".into()),
        ..Default::default()
    };
    let spec = normalize_yaml("channels: [main]\ndependencies: [numpy]\n", &alias).unwrap();
    assert_eq!(spec.channels, ["main"]);
    let lock = "version: 1\nmetadata:\n  content_hash: {linux-64: x}\n  channels: [{url: 'file:///envs', used_env_vars: []}]\n  platforms: [linux-64]\n  sources: [environment.yaml]\npackage:\n- name: liba\n  version: '2.0'\n  manager: conda\n  platform: linux-64\n  dependencies: {}\n  url: file:///envs/team-b/secret/liba-2.0-h1_0.conda\n  hash: {md5: 0123456789abcdef0123456789abcdef, sha256: abababababababababababababababababababababababababababababababab}\n  category: main\n  optional: false\n";
    let spec = conda_store_crds::EnvironmentSpec {
        lockfile: Some(lock.into()),
        ..Default::default()
    };
    let e = normalize(
        &RawSpec::from_environment(&spec).unwrap(),
        &Policy::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("file:///envs/team-b") && e.contains("not allowed"),
        "{e}"
    );
}

#[test]
fn flow_style_lists_are_accepted() {
    let spec = ok("channels: [conda-forge]\ndependencies: [numpy, scipy]\n");
    assert_eq!(spec.dependencies, ["numpy", "scipy"]);
}

#[test]
fn pip_only_environment_is_accepted() {
    let spec = ok("dependencies:\n  - pip:\n    - requests\n");
    assert!(spec.dependencies.is_empty());
    assert_eq!(spec.pip, ["requests"]);
}

#[test]
fn several_pip_sections_merge() {
    let spec = ok("dependencies:\n  - python\n  - pip: [b]\n  - pip: [a]\n");
    assert_eq!(spec.pip, ["a", "b"]);
}

#[test]
fn variables_keep_source_text() {
    let spec =
        ok("dependencies: [python]\nvariables:\n  OMP_NUM_THREADS: 4\n  VERSION: 1.10\n  EMPTY:\n");
    assert_eq!(spec.variables["OMP_NUM_THREADS"], "4");
    assert_eq!(spec.variables["VERSION"], "1.10");
    assert_eq!(spec.variables["EMPTY"], "");
}

#[test]
fn platforms_are_sorted_and_deduplicated() {
    let spec = ok("dependencies: [python]\nplatforms: [osx-arm64, linux-64, linux-64]\n");
    assert_eq!(spec.platforms, ["linux-64", "osx-arm64"]);
}

#[test]
fn comments_and_quotes_are_fine() {
    let spec = ok("# team env\ndependencies:\n  - \"numpy >=1.2\"  # pinned\n  - 'scipy'\n");
    assert_eq!(spec.dependencies, ["numpy>=1.2", "scipy"]);
}

// ---- normalisation ----

#[test]
fn reordering_dependencies_does_not_change_the_hash() {
    let a = ok("dependencies: [numpy, pandas, python=3.11]\n");
    let b = ok("dependencies: [python=3.11, numpy, pandas]\n");
    assert_eq!(a, b);
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn reordering_pip_does_not_change_the_hash() {
    let a = ok("dependencies: [python, {pip: [a, b]}]\n");
    let b = ok("dependencies: [{pip: [b, a]}, python]\n");
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn reordering_variables_does_not_change_the_hash() {
    let a = ok("dependencies: [python]\nvariables: {A: '1', B: '2'}\n");
    let b = ok("dependencies: [python]\nvariables: {B: '2', A: '1'}\n");
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn duplicate_dependencies_are_removed() {
    let spec = ok("dependencies: [numpy, numpy, 'numpy ', pandas]\n");
    assert_eq!(spec.dependencies, ["numpy", "pandas"]);
}

#[test]
fn channel_order_is_kept_because_it_is_priority() {
    let a = ok("channels: [conda-forge, bioconda]\ndependencies: [python]\n");
    let b = ok("channels: [bioconda, conda-forge]\ndependencies: [python]\n");
    assert_eq!(a.channels, ["conda-forge", "bioconda"]);
    assert_ne!(a.sha256(), b.sha256());
}

#[test]
fn duplicate_channels_keep_first_position() {
    let spec = ok("channels: [conda-forge, bioconda, conda-forge/]\ndependencies: [python]\n");
    assert_eq!(spec.channels, ["conda-forge", "bioconda"]);
}

#[test]
fn whitespace_around_operators_is_canonical() {
    assert_eq!(
        canonical_match_spec("numpy >= 1.26").unwrap(),
        "numpy>=1.26"
    );
    assert_eq!(
        canonical_match_spec("numpy>=1.26, <2").unwrap(),
        "numpy>=1.26,<2"
    );
    assert_eq!(
        canonical_match_spec("  python  =  3.11 ").unwrap(),
        "python=3.11"
    );
}

#[test]
fn space_separated_version_and_build_are_kept() {
    assert_eq!(
        canonical_match_spec("numpy 1.26.*   py311*").unwrap(),
        "numpy 1.26.* py311*"
    );
}

#[test]
fn package_names_are_lowercased_but_versions_not() {
    assert_eq!(
        canonical_match_spec("NumPy>=1.0a1").unwrap(),
        "numpy>=1.0a1"
    );
    assert_eq!(
        canonical_match_spec("conda-forge::PyYAML").unwrap(),
        "conda-forge::pyyaml"
    );
}

#[test]
fn bracket_specs_are_kept() {
    assert_eq!(
        canonical_match_spec("numpy [version='>=1.2']").unwrap(),
        "numpy[version='>=1.2']"
    );
}

#[test]
fn package_name_of_specs() {
    assert_eq!(package_name("numpy>=1"), "numpy");
    assert_eq!(package_name("conda-forge::numpy 1.2"), "numpy");
    assert_eq!(package_name("numpy[version='>=1']"), "numpy");
    assert_eq!(package_name("python"), "python");
}

#[test]
fn spellings_of_the_same_spec_hash_alike() {
    let a = ok("dependencies: ['NumPy >= 1.26', python]\n");
    let b = ok("dependencies: [python, numpy>=1.26]\n");
    assert_eq!(a.sha256(), b.sha256());
}

// ---- hashing ----

#[test]
fn hash_is_hex_sha256() {
    let h = ok(BASIC).sha256();
    assert_eq!(h.len(), 64);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn hash_is_stable_across_releases() {
    // A changed canonical form would rebuild every environment: this value must only change on
    // purpose, together with the canonical form's version.
    let spec = ok("channels: [conda-forge]\ndependencies: [python=3.11, numpy]\n");
    assert_eq!(
        spec.sha256(),
        "be9e90b0ef37d259b878e9673b5c7e8801296f2de70580bf6f2dd0489cca6d35"
    );
}

#[test]
fn changing_a_dependency_changes_the_hash() {
    let a = ok("dependencies: [python=3.11]\n");
    let b = ok("dependencies: [python=3.12]\n");
    assert_ne!(a.sha256(), b.sha256());
}

#[test]
fn changing_a_variable_or_platform_changes_the_hash() {
    let base = ok("dependencies: [python]\n");
    let var = ok("dependencies: [python]\nvariables: {A: b}\n");
    let plat = ok("dependencies: [python]\nplatforms: [linux-aarch64]\n");
    assert_ne!(base.sha256(), var.sha256());
    assert_ne!(base.sha256(), plat.sha256());
}

#[test]
fn a_dependency_moving_to_pip_changes_the_hash() {
    let a = ok("dependencies: [python, requests]\n");
    let b = ok("dependencies: [python, {pip: [requests]}]\n");
    assert_ne!(a.sha256(), b.sha256());
}

// ---- validation errors, each naming the line or item ----

#[test]
fn unknown_top_level_key_names_its_line() {
    let e = err("name: x\ndependencies: [python]\nchanels: [conda-forge]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert!(matches!(kind, SpecErrorKind::UnknownKey { key, .. } if key == "chanels"));
    assert!(
        e.to_string()
            .starts_with("line 3 (chanels): unknown key \"chanels\""),
        "{e}"
    );
}

#[test]
fn invalid_match_spec_names_its_line_and_item() {
    let e = err("dependencies:\n  - python\n  - 'numpy >=>= 1'\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert!(matches!(kind, SpecErrorKind::InvalidMatchSpec { spec, .. } if spec == "numpy >=>= 1"));
    assert!(e.to_string().contains("dependencies[1]"), "{e}");
}

#[test]
fn an_environment_without_dependencies_is_empty_not_invalid() {
    for text in [
        "name: x\ndependencies: []\n",
        "name: x\nchannels: [conda-forge]\n",
        "name: x\n",
    ] {
        let spec = normalize_yaml(text, &Policy::default()).unwrap();
        assert!(
            spec.dependencies.is_empty() && spec.pip.is_empty(),
            "{text}"
        );
    }
}

#[test]
fn channel_not_in_allowlist_names_it() {
    let policy = Policy {
        allowed_channels: Some(vec!["conda-forge".into()]),
        ..Policy::default()
    };
    let e = err_with(
        "channels:\n  - conda-forge\n  - defaults\ndependencies: [python]\n",
        &policy,
    );
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert!(
        matches!(kind, SpecErrorKind::ChannelNotAllowed { channel, allowed } if channel == "defaults" && allowed == "conda-forge")
    );
}

#[test]
fn allowlist_matches_names_and_their_urls() {
    let policy = Policy {
        allowed_channels: Some(vec!["https://conda.anaconda.org/conda-forge/".into()]),
        ..Policy::default()
    };
    assert!(normalize_yaml("channels: [conda-forge]\ndependencies: [python]\n", &policy).is_ok());
    let with_alias = Policy {
        allowed_channels: Some(vec!["conda-forge".into()]),
        channel_alias: Some("https://mirror.example.org/".into()),
        ..Policy::default()
    };
    assert!(
        normalize_yaml(
            "channels: [https://mirror.example.org/conda-forge]\ndependencies: [python]\n",
            &with_alias
        )
        .is_ok()
    );
}

#[test]
fn invalid_channel_is_refused() {
    let e = err("channels:\n  - 'conda forge'\ndependencies: [python]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(2));
    assert!(
        matches!(kind, SpecErrorKind::InvalidChannel { channel, .. } if channel == "conda forge")
    );
}

#[test]
fn invalid_platform_is_refused() {
    let e = err("dependencies: [python]\nplatforms:\n  - linux-64\n  - amiga-68k\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(4));
    assert_eq!(kind, &SpecErrorKind::InvalidPlatform("amiga-68k".into()));
}

#[test]
fn invalid_variable_name_is_refused() {
    let e = err("dependencies: [python]\nvariables:\n  1BAD: x\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert_eq!(kind, &SpecErrorKind::InvalidVariableName("1BAD".into()));
}

#[test]
fn invalid_pip_requirement_is_refused() {
    let e = err("dependencies:\n  - python\n  - pip:\n    - '>=1.0'\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(4));
    assert!(
        matches!(kind, SpecErrorKind::InvalidPipRequirement { requirement, .. } if requirement == ">=1.0"),
        "{kind:?}"
    );
    assert!(e.to_string().contains("dependencies[1].pip[0]"), "{e}");
}

#[test]
fn editable_and_local_pip_lines_are_refused_with_their_line() {
    let e = err(
        "dependencies:\n  - python\n  - pip:\n    - flask\n    - -e ./mypkg\n    - /srv/x.whl\n",
    );
    let text = e.to_string();
    assert!(
        text.contains("dependencies[1].pip[1]") && text.contains("editable"),
        "{text}"
    );
    assert!(
        text.contains("dependencies[1].pip[2]") && text.contains("local paths"),
        "{text}"
    );
    assert!(text.contains("line 5") || text.contains(":5"), "{text}");
}

#[test]
fn pip_policy_default_included_required_and_indexes() {
    let policy = Policy {
        pypi_default_packages: Some(vec!["ipykernel".into()]),
        pypi_included_packages: Some(vec!["nbformat>=5".into()]),
        pypi_index_url: Some("https://pypi.example/simple".into()),
        ..Policy::default()
    };
    // No pip section: the defaults, the included packages, the policy's index.
    let spec = normalize_yaml("dependencies: [python]\n", &policy).unwrap();
    assert_eq!(
        spec.pip,
        [
            "--index-url https://pypi.example/simple",
            "ipykernel",
            "nbformat>=5"
        ]
    );
    // A pip section of its own: no defaults; an included package it names is not added twice.
    let spec = normalize_yaml(
        "dependencies: [python, {pip: [Flask, NBFormat==5.9]}]\n",
        &policy,
    )
    .unwrap();
    assert_eq!(
        spec.pip,
        [
            "--index-url https://pypi.example/simple",
            "Flask",
            "NBFormat==5.9"
        ]
    );
    // Required and missing: refused, naming it.
    let strict = Policy {
        pypi_required_packages: Some(vec!["ipykernel".into()]),
        ..Policy::default()
    };
    let e = err_with("dependencies: [python, {pip: [flask]}]\n", &strict);
    assert!(
        e.to_string()
            .contains("\"ipykernel\" is required by policy"),
        "{e}"
    );
    assert!(
        normalize_yaml(
            "dependencies: [python, {pip: [flask, ipykernel]}]\n",
            &strict
        )
        .is_ok()
    );
    // An index outside the allowlist: refused, naming it; one on it passes.
    let allow = Policy {
        pypi_allowed_indexes: Some(vec!["https://pypi.example/simple/".into()]),
        ..Policy::default()
    };
    let e = err_with(
        "dependencies:\n  - python\n  - pip:\n    - --extra-index-url https://evil.example/simple\n    - flask\n",
        &allow,
    );
    let (line, kind) = single(&e);
    assert_eq!(line, Some(4));
    assert!(
        matches!(kind, SpecErrorKind::PipIndexNotAllowed { index, .. } if index == "https://evil.example/simple"),
        "{kind:?}"
    );
    assert!(
        normalize_yaml(
            "dependencies: [python, {pip: ['--index-url https://PYPI.example/simple', flask]}]\n",
            &allow
        )
        .is_ok()
    );
}

#[test]
fn unknown_key_in_dependency_mapping_is_refused() {
    let e = err("dependencies:\n  - python\n  - npm: [left-pad]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert!(matches!(kind, SpecErrorKind::UnknownKey { key, allowed: "pip" } if key == "npm"));
}

#[test]
fn dependency_of_wrong_shape_is_refused() {
    let e = err("dependencies:\n  - python\n  - [numpy]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert!(matches!(
        kind,
        SpecErrorKind::WrongType {
            found: "a list",
            ..
        }
    ));
}

#[test]
fn dependencies_as_a_string_is_refused() {
    let e = err("dependencies: numpy\n");
    assert!(matches!(
        single(&e).1,
        SpecErrorKind::WrongType {
            expected: "a list",
            ..
        }
    ));
}

#[test]
fn document_that_is_not_a_mapping_is_refused() {
    let e = err("- numpy\n- scipy\n");
    assert!(matches!(
        single(&e).1,
        SpecErrorKind::WrongType {
            found: "a list",
            ..
        }
    ));
}

#[test]
fn empty_document_is_refused() {
    let e = err("");
    assert!(matches!(
        single(&e).1,
        SpecErrorKind::WrongType { found: "empty", .. }
    ));
}

#[test]
fn yaml_syntax_error_names_its_line() {
    let e = err("name: x\ndependencies:\n  - python\n  - [numpy\n");
    let (line, kind) = single(&e);
    assert!(matches!(kind, SpecErrorKind::Syntax(_)));
    assert!(line.is_some_and(|l| l >= 4), "{e}");
}

#[test]
fn tabs_are_a_syntax_error() {
    let e = err("dependencies:\n\t- python\n");
    assert!(matches!(single(&e).1, SpecErrorKind::Syntax(_)));
}

#[test]
fn duplicate_top_level_key_is_refused() {
    let e = err("dependencies: [python]\nchannels: [a]\nchannels: [b]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(3));
    assert_eq!(kind, &SpecErrorKind::DuplicateKey("channels".into()));
}

#[test]
fn invalid_environment_name_is_refused() {
    let e = err("name: ../etc\ndependencies: [python]\n");
    let (line, kind) = single(&e);
    assert_eq!(line, Some(1));
    assert!(matches!(kind, SpecErrorKind::InvalidName(_)));
}

#[test]
fn every_error_is_reported_at_once() {
    let e = err("foo: 1\nchannels: ['a b']\ndependencies:\n  - 'x >=>= 1'\nplatforms: [nope]\n");
    let lines: Vec<_> = e.iter().map(|e| e.location.line.unwrap()).collect();
    assert_eq!(lines, [1, 2, 4, 5], "{e}");
}

#[test]
fn oversized_specification_is_refused() {
    let big = format!("dependencies:\n{}", "  - numpy\n".repeat(120_000));
    let e = err(&big);
    assert!(matches!(single(&e).1, SpecErrorKind::TooLarge { .. }));
}

#[test]
fn yaml_aliases_are_refused() {
    let e = err("dependencies: &d [python]\nchannels: *d\n");
    assert!(matches!(single(&e).1, SpecErrorKind::Syntax(m) if m.contains("aliases")));
}

// ---- policy ----

#[test]
fn default_channels_fill_an_empty_list() {
    let policy = Policy {
        default_channels: Some(vec!["conda-forge".into()]),
        ..Policy::default()
    };
    let spec = normalize_yaml("dependencies: [python]\n", &policy).unwrap();
    assert_eq!(spec.channels, ["conda-forge"]);
    let own = normalize_yaml("channels: [bioconda]\ndependencies: [python]\n", &policy).unwrap();
    assert_eq!(own.channels, ["bioconda"]);
}

#[test]
fn default_packages_are_added_unless_named() {
    let policy = Policy {
        default_packages: Some(vec!["ipykernel".into(), "python".into()]),
        ..Policy::default()
    };
    let spec = normalize_yaml("dependencies: [python=3.11, numpy]\n", &policy).unwrap();
    assert_eq!(spec.dependencies, ["ipykernel", "numpy", "python=3.11"]);
}

#[test]
fn required_package_missing_is_refused() {
    let policy = Policy {
        required_packages: Some(vec!["ipykernel".into()]),
        ..Policy::default()
    };
    let e = err_with("name: x\ndependencies: [numpy]\n", &policy);
    let (line, kind) = single(&e);
    assert_eq!(line, Some(2));
    assert_eq!(
        kind,
        &SpecErrorKind::RequiredPackageMissing("ipykernel".into())
    );
    assert!(normalize_yaml("dependencies: ['ipykernel>=6']\n", &policy).is_ok());
}

#[test]
fn namespace_policy_overrides_global_field_by_field() {
    let global = Policy {
        allowed_channels: Some(vec!["conda-forge".into()]),
        default_packages: Some(vec!["ipykernel".into()]),
        ..Policy::default()
    };
    let ns = Policy {
        allowed_channels: Some(vec!["bioconda".into()]),
        ..Policy::default()
    };
    let merged = global.overridden_by(&ns);
    assert_eq!(merged.allowed_channels, Some(vec!["bioconda".into()]));
    assert_eq!(merged.default_packages, Some(vec!["ipykernel".into()]));
}

// ---- Environment resources ----

fn env_spec(deps: Vec<serde_json::Value>) -> EnvironmentSpec {
    EnvironmentSpec {
        channels: vec!["conda-forge".into()],
        dependencies: Some(deps.into_iter().map(DependencyItem).collect()),
        ..EnvironmentSpec::default()
    }
}

#[test]
fn environment_resource_and_yaml_normalise_alike() {
    let spec = env_spec(vec![
        serde_json::json!("python=3.11"),
        serde_json::json!("numpy>=1.26"),
        serde_json::json!("pandas"),
        serde_json::json!({"pip": ["requests==2.31"]}),
    ]);
    let raw = RawSpec::from_environment(&spec).unwrap();
    let from_resource = normalize(&raw, &Policy::default()).unwrap();
    assert_eq!(from_resource, ok(BASIC));
}

#[test]
fn environment_resource_errors_name_field_paths() {
    let spec = env_spec(vec![serde_json::json!("python"), serde_json::json!(42)]);
    let e = RawSpec::from_environment(&spec).unwrap_err();
    let (line, kind) = single(&e);
    assert_eq!(line, None);
    assert_eq!(e.0[0].location.path, "spec.dependencies[1]");
    assert!(matches!(
        kind,
        SpecErrorKind::WrongType {
            found: "a number",
            ..
        }
    ));
}

#[test]
fn environment_resource_invalid_spec_names_its_path() {
    let spec = env_spec(vec![serde_json::json!("numpy >=>= 1")]);
    let e = normalize(
        &RawSpec::from_environment(&spec).unwrap(),
        &Policy::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string().split(':').next().unwrap(),
        "spec.dependencies[0]"
    );
}

#[test]
fn environment_deserialises_from_a_manifest() {
    let manifest = r#"
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: ds, namespace: team}
spec:
  name: Data_Science
  channels: [conda-forge]
  dependencies:
    - python=3.11
    - pip: [requests]
  artifacts: [lockfile, image]
"#;
    let env: conda_store_crds::Environment = serde_yaml::from_str(manifest).unwrap();
    assert_eq!(env.spec.name.as_deref(), Some("Data_Science"));
    let raw = RawSpec::from_environment(&env.spec).unwrap();
    let spec = normalize(&raw, &Policy::default()).unwrap();
    assert_eq!(spec.dependencies, ["python=3.11"]);
    assert_eq!(spec.pip, ["requests"]);
}

// ---- lockfiles ----

const LOCK: &str = "\
version: 1
metadata:
  content_hash: {linux-64: abc}
  channels:
    - url: conda-forge
      used_env_vars: []
  platforms: [linux-64]
  sources: [environment.yml]
package:
  - name: python
    version: 3.11.0
    manager: conda
    platform: linux-64
    dependencies: {libzlib: '>=1.2'}
    url: https://conda.anaconda.org/conda-forge/linux-64/python-3.11.0-h1.conda
    hash: {md5: 0123, sha256: abcd}
    category: main
    optional: false
  - name: libzlib
    version: 1.3.1
    manager: conda
    platform: linux-64
    dependencies: {}
    url: https://conda.anaconda.org/conda-forge/linux-64/libzlib-1.3.1-h2.conda
    hash: {md5: 4567, sha256: ef01}
    category: main
    optional: false
";

fn lock_spec(text: &str) -> EnvironmentSpec {
    EnvironmentSpec {
        lockfile: Some(text.to_string()),
        ..EnvironmentSpec::default()
    }
}

fn normalize_env(spec: &EnvironmentSpec, policy: &Policy) -> Result<NormalizedSpec, SpecErrors> {
    normalize(&RawSpec::from_environment(spec)?, policy)
}

#[test]
fn lockfile_is_parsed_and_sorted() {
    let spec = normalize_env(&lock_spec(LOCK), &Policy::default()).unwrap();
    let lock = spec.lockfile.as_ref().unwrap();
    let names: Vec<_> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["libzlib", "python"]);
    assert_eq!(spec.platforms, ["linux-64"]);
    assert_eq!(spec.channels, ["conda-forge"]);
    assert_eq!(lock.packages[1].dependencies["libzlib"], ">=1.2");
}

#[test]
fn lockfile_package_order_does_not_change_the_hash() {
    // Swap the two package entries.
    let (head, rest) = LOCK.split_once("  - name: python").unwrap();
    let (python, zlib) = rest.split_once("  - name: libzlib").unwrap();
    let swapped = format!("{head}  - name: libzlib{zlib}  - name: python{python}");
    let a = normalize_env(&lock_spec(LOCK), &Policy::default()).unwrap();
    let b = normalize_env(&lock_spec(&swapped), &Policy::default()).unwrap();
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn lockfile_of_another_version_is_refused() {
    let e = normalize_env(
        &lock_spec(&LOCK.replace("version: 1", "version: 6")),
        &Policy::default(),
    )
    .unwrap_err();
    let (line, kind) = single(&e);
    assert_eq!(line, Some(1));
    assert!(matches!(kind, SpecErrorKind::InvalidLockfile(m) if m.contains("version 6")));
}

#[test]
fn lockfile_entry_without_hash_is_refused() {
    let text = LOCK.replace("    hash: {md5: 4567, sha256: ef01}\n", "");
    let e = normalize_env(&lock_spec(&text), &Policy::default()).unwrap_err();
    let (line, kind) = single(&e);
    assert_eq!(line, Some(19));
    assert!(matches!(kind, SpecErrorKind::InvalidLockfile(m) if m.contains("no md5 or sha256")));
    assert!(e.to_string().contains("spec.lockfile.package[1]"), "{e}");
}

#[test]
fn lockfile_platform_outside_metadata_is_refused() {
    let text = LOCK.replacen("platform: linux-64", "platform: osx-64", 1);
    let e = normalize_env(&lock_spec(&text), &Policy::default()).unwrap_err();
    assert!(matches!(single(&e).1, SpecErrorKind::InvalidLockfile(m) if m.contains("osx-64")));
}

#[test]
fn lockfile_with_dependencies_is_refused() {
    let mut spec = lock_spec(LOCK);
    spec.dependencies = Some(vec!["numpy".into()]);
    let e = normalize_env(&spec, &Policy::default()).unwrap_err();
    assert_eq!(single(&e).1, &SpecErrorKind::SpecAndLockfile);
}

#[test]
fn lockfile_packages_outside_the_allowlist_are_refused() {
    let policy = Policy {
        allowed_channels: Some(vec!["bioconda".into()]),
        ..Policy::default()
    };
    let e = normalize_env(&lock_spec(LOCK), &policy).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(
        e.iter()
            .all(|e| matches!(e.kind, SpecErrorKind::ChannelNotAllowed { .. }))
    );
}

#[test]
fn empty_lockfile_package_list_is_an_empty_environment() {
    let text = format!("{}package: []\n", LOCK.split("package:").next().unwrap());
    let spec = normalize_env(&lock_spec(&text), &Policy::default()).unwrap();
    assert!(spec.lockfile.unwrap().packages.is_empty());
}

/// The lockfile of an environment with no dependencies (which this project builds, as
/// conda-store does) is a lockfile: posted back it builds the same empty environment.
#[test]
fn an_empty_environments_lockfile_is_a_lockfile() {
    let text = "version: 1\nmetadata:\n  content_hash: {linux-64: x}\n  channels: []\n  platforms: [linux-64]\n  sources: [environment.yml]\npackage: []\n";
    let lock = conda_store_crds::spec::parse_lockfile(
        text,
        &conda_store_crds::spec::Location::path("lockfile"),
    )
    .unwrap();
    assert!(lock.packages.is_empty());
    assert_eq!(lock.platforms, ["linux-64"]);
}
