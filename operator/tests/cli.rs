//! The operator binary's commands, run as a person would.

use std::io::Write;
use std::process::{Command, Stdio};

fn operator(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conda-store-operator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn help_lists_commands() {
    let (code, out, _) = operator(&["--help"], "");
    assert_eq!(code, 0);
    assert!(out.contains("crds") && out.contains("spec"), "{out}");
}

#[test]
fn crds_prints_the_checked_in_definitions() {
    let (code, out, _) = operator(&["crds"], "");
    assert_eq!(code, 0);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    let expected: String = ["namespaces", "environments", "specifications", "builds"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{dir}/{f}.yaml")).unwrap())
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn normalize_prints_spec_and_hash() {
    let (code, out, err) = operator(
        &["spec", "normalize", "-"],
        "dependencies:\n  - python\n  - NumPy >= 1.2\n",
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["spec"]["dependencies"],
        serde_json::json!(["numpy>=1.2", "python"])
    );
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn normalize_reports_every_error_with_its_line() {
    let (code, out, err) = operator(
        &["spec", "normalize", "-"],
        "dependencies:\n  - python\n  - 'x >=>= 1'\nfoo: 1\n",
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("-: line 3 (dependencies[1]):"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("-: line 4 (foo): unknown key"),
        "{err}"
    );
}

#[test]
fn normalize_applies_a_policy_file() {
    let dir = std::env::temp_dir().join(format!("cs-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "allowedChannels: [conda-forge]\n").unwrap();
    let (code, _, err) = operator(
        &[
            "spec",
            "normalize",
            "--policy",
            policy.to_str().unwrap(),
            "-",
        ],
        "channels: [defaults]\ndependencies: [python]\n",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("channel \"defaults\" is not allowed"), "{err}");
}

#[test]
fn name_derives_object_names() {
    let (code, out, _) = operator(&["spec", "name", "data-science"], "");
    assert_eq!((code, out.trim()), (0, "data-science"));
    let (code, out, _) = operator(&["spec", "name", "My_Env"], "");
    assert_eq!(code, 0);
    assert!(out.trim().starts_with("my-env-"));
    let (code, _, err) = operator(&["spec", "name", "a/b"], "");
    assert_eq!(code, 1);
    assert!(err.contains("'/'"), "{err}");
}

/// `run` without a cluster: how far it gets tells whether its settings were read.
fn run_without_cluster(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conda-store-operator"))
        .arg("run")
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("CONDA_STORE_CONFIG")
        .env_remove("CONDA_STORE_JOB_IMAGE")
        .env_remove("CONDA_STORE_ENVS_VOLUME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn run_takes_required_settings_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operator.yaml");
    std::fs::write(
        &file,
        "job-image: conda-store:1\nenvs-volume: pvc:envs\nmax-builds: 2\nlisten: 127.0.0.1:0\n",
    )
    .unwrap();
    let (code, err) = run_without_cluster(&["--config", file.to_str().unwrap()]);
    // Parsed: it went on to look for a cluster.
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("required"), "{err}");
    assert!(err.to_lowercase().contains("kubeconfig"), "{err}");
}

#[test]
fn run_reports_missing_settings_and_bad_config_files() {
    let (code, err) = run_without_cluster(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--job-image"), "{err}");

    let (code, err) = run_without_cluster(&["--config", "/nonexistent/operator.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("reading the config file /nonexistent/operator.yaml"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "- not\n- a mapping\n").unwrap();
    let (code, err) = run_without_cluster(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a YAML mapping"), "{err}");

    let (code, err) = run_without_cluster(&["--job-image=x", "--envs-volume=nfs:/somewhere"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("hostPath:/absolute/path or pvc:CLAIM-NAME"),
        "{err}"
    );
}
