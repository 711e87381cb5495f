//! The pack and image steps run as a Job would run them: the binary, local storage, a
//! termination-message file; then the results used as a person would (extract, unpack, run the
//! script; read the image with skopeo).

use std::path::{Path, PathBuf};
use std::process::Command;

const OPERATOR: &str = env!("CARGO_BIN_EXE_conda-store-operator");

/// A minimal installed prefix at `prefix`: one package whose script embeds the prefix path.
fn installed_prefix(prefix: &Path) {
    let p = prefix.to_str().unwrap();
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::create_dir_all(prefix.join("share/tool")).unwrap();
    std::fs::create_dir_all(prefix.join("conda-meta")).unwrap();
    let script = format!("#!/bin/sh\necho \"prefix is {p}\"\ncat \"{p}/share/tool/data.txt\"\n");
    std::fs::write(prefix.join("bin/tool"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        prefix.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(prefix.join("share/tool/data.txt"), "hello from data\n").unwrap();
    let record = serde_json::json!({
        "name": "tool", "version": "1.0", "build": "h0_0",
        "files": ["bin/tool", "share/tool/data.txt"],
        "paths_data": {"paths_version": 1, "paths": [
            {"_path": "bin/tool", "path_type": "hardlink", "file_mode": "text",
             "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3"},
            {"_path": "share/tool/data.txt", "path_type": "hardlink"}
        ]}
    });
    std::fs::write(
        prefix.join("conda-meta/tool-1.0-h0_0.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
}

struct Run {
    code: i32,
    report: serde_json::Value,
}

fn step(args: &[&str], storage: &Path, termination: &Path) -> Run {
    let out = Command::new(OPERATOR)
        .arg("step")
        .args(args)
        .args(["--build-key", "builds/team-a/data-science-1"])
        .args(["--storage", "local", "--storage-dir"])
        .arg(storage)
        .arg("--termination-message-path")
        .arg(termination)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(termination).unwrap_or_else(|e| {
        panic!(
            "no termination message ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        code: out.status.code().unwrap(),
        report: serde_json::from_str(&text).unwrap(),
    }
}

fn artifact<'a>(report: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} artifact in {report}"))
}

#[test]
fn pack_step_stores_an_archive_that_unpacks_and_runs_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("envs/team-a/data-science-1");
    installed_prefix(&prefix);
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");

    let run = step(
        &["pack", "--prefix", prefix.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["ok"], true);
    let archive = artifact(&run.report, "archive");
    assert_eq!(
        archive["key"],
        "builds/team-a/data-science-1/archive.tar.gz"
    );
    assert!(archive["digest"].as_str().unwrap().starts_with("sha256:"));
    let log = artifact(&run.report, "logs");
    let log_text = std::fs::read_to_string(storage.join(log["key"].as_str().unwrap())).unwrap();
    assert!(log_text.contains("step pack succeeded"), "{log_text}");

    // Extract somewhere else entirely, relocate with the binary's unpack, run the script.
    let elsewhere = dir.path().join("home/alice/my env");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let tar = Command::new("tar")
        .arg("--gzip")
        .arg("-xf")
        .arg(storage.join("builds/team-a/data-science-1/archive.tar.gz"))
        .arg("-C")
        .arg(&elsewhere)
        .status()
        .unwrap();
    assert!(tar.success());
    let unpack = Command::new(OPERATOR)
        .arg("unpack")
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let out = Command::new(elsewhere.join("bin/tool")).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!("prefix is {}\nhello from data\n", elsewhere.display())
    );
}

#[test]
fn pack_step_failure_reports_why_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let missing = dir.path().join("no-such-prefix");
    let run = step(
        &["pack", "--prefix", missing.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.report["ok"], false);
    let msg = run.report["message"].as_str().unwrap();
    assert!(msg.contains("no-such-prefix"), "{msg}");
    // The log is kept even for a failure, and nothing else was stored.
    artifact(&run.report, "logs");
    assert!(
        !storage
            .join("builds/team-a/data-science-1/archive.tar.gz")
            .exists()
    );
}

#[test]
fn image_step_stores_blobs_that_skopeo_reads() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("envs/team-a/data-science-1");
    installed_prefix(&prefix);
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let args = [
        "image",
        "--prefix",
        prefix.to_str().unwrap(),
        "--name",
        "data-science",
        "--build-id",
        "1",
    ];
    let run = step(&args, &storage, &term);
    assert_eq!(run.code, 0, "{}", run.report);
    let image = artifact(&run.report, "image");
    let digest = image["digest"].as_str().unwrap().to_string();
    assert!(run.report["details"]["blobsUploaded"].as_u64().unwrap() >= 3);

    // A second build of the same prefix uploads nothing new: blobs are content-addressed.
    let again = step(&args, &storage, &term);
    assert_eq!(again.report["details"]["blobsUploaded"], 0);
    assert_eq!(artifact(&again.report, "image")["digest"], digest.as_str());

    // The storage root holds blobs/sha256/: with an index it is an OCI layout skopeo reads.
    let manifest_path: PathBuf = storage.join(format!(
        "blobs/sha256/{}",
        digest.trim_start_matches("sha256:")
    ));
    let size = std::fs::metadata(&manifest_path).unwrap().len();
    std::fs::write(
        storage.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "1"}
        }]
    });
    std::fs::write(storage.join("index.json"), index.to_string()).unwrap();
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1", storage.display()))
        .output()
        .expect("skopeo is installed by scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    let env = inspect["Env"].to_string();
    assert!(env.contains("/opt/conda/envs/data-science/bin"), "{env}");
}

/// Writes a test channel under `dir` and an environment.yaml `{before}<channel url>{after}`.
fn environment_yaml(dir: &Path, before: &str, after: &str) -> PathBuf {
    let channel = conda_store_engine::channel::write_test_channel(&dir.join("channel")).unwrap();
    let spec = dir.join("environment.yaml");
    std::fs::write(&spec, format!("{before}{}{after}", channel.url)).unwrap();
    spec
}

#[test]
fn solve_then_install_steps_build_a_working_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let spec = environment_yaml(
        dir.path(),
        "name: demo\nchannels: [",
        "]\ndependencies: [tool]\n",
    );

    let run = step(
        &[
            "solve",
            "--specification",
            spec.to_str().unwrap(),
            "--name",
            "demo",
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["details"]["packages"]["linux-64"], 3);
    let lock = artifact(&run.report, "lockfile");
    assert_eq!(lock["key"], "builds/team-a/data-science-1/conda-lock.yaml");
    let yaml = std::fs::read_to_string(
        storage.join(artifact(&run.report, "yaml")["key"].as_str().unwrap()),
    )
    .unwrap();
    assert!(yaml.contains("tool=1.0="), "{yaml}");

    let prefix = dir.path().join("envs/team-a/data-science-1");
    let cache = dir.path().join("pkgs");
    let install = [
        "install",
        "--prefix",
        prefix.to_str().unwrap(),
        "--package-cache",
        cache.to_str().unwrap(),
    ];
    let run = step(&install, &storage, &term);
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["details"]["operations"], 3);
    let out = Command::new(prefix.join("bin/tool")).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("prefix: {}\ntool data\n", prefix.display())
    );
    // A retried install Job finds the work done.
    let again = step(&install, &storage, &term);
    assert_eq!(again.report["details"]["operations"], 0);
}

/// The operator starts a build's Jobs together: a step given `--after` waits until the step
/// it follows stored its completion marker, and only then begins (its own duration excludes
/// the wait). A step that failed leaves no marker.
#[test]
fn a_step_after_another_waits_for_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let spec = environment_yaml(
        dir.path(),
        "name: demo\nchannels: [",
        "]\ndependencies: [tool]\n",
    );
    let prefix = dir.path().join("envs/team-a/data-science-1");
    // The install starts first and waits.
    let mut install = Command::new(OPERATOR)
        .args(["step", "install", "--after", "solve", "--prefix"])
        .arg(&prefix)
        .arg("--package-cache")
        .arg(dir.path().join("pkgs"))
        .args([
            "--build-key",
            "builds/team-a/data-science-1",
            "--storage",
            "local",
        ])
        .arg("--storage-dir")
        .arg(&storage)
        .arg("--termination-message-path")
        .arg(dir.path().join("install-termination"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        install.try_wait().unwrap().is_none(),
        "it waits for the solve"
    );
    assert!(!prefix.join("conda-meta").exists());
    let solve = step(
        &[
            "solve",
            "--specification",
            spec.to_str().unwrap(),
            "--name",
            "demo",
        ],
        &storage,
        &dir.path().join("solve-termination"),
    );
    assert_eq!(solve.code, 0, "{}", solve.report);
    assert!(
        storage
            .join("builds/team-a/data-science-1/steps/solve.done")
            .exists()
    );
    let out = install.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for step solve to finish"));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("install-termination")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["details"]["operations"], 3, "{report}");
    assert!(
        report["durationMs"].as_u64().unwrap() < 800,
        "the wait is not the step's: {report}"
    );
    assert!(prefix.join("bin/tool").exists());

    // A failed step leaves no marker for the next to find.
    let bad = environment_yaml(
        dir.path(),
        "name: bad\nchannels: [",
        "]\ndependencies: [nope]\n",
    );
    let other = dir.path().join("other");
    let failed = step(
        &["solve", "--specification", bad.to_str().unwrap()],
        &other,
        &dir.path().join("bad-termination"),
    );
    assert_eq!(failed.code, 1);
    assert!(
        !other
            .join("builds/team-a/data-science-1/steps/solve.done")
            .exists()
    );
}

/// conda-store builds `{"name": "x"}`: an environment with no package at all, whose prefix
/// holds only conda-meta and still packs (and activates).
#[test]
fn an_empty_environment_solves_installs_and_packs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let spec = dir.path().join("environment.yaml");
    std::fs::write(&spec, "name: empty\n").unwrap();
    let run = step(
        &[
            "solve",
            "--specification",
            spec.to_str().unwrap(),
            "--name",
            "empty",
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["details"]["packages"]["linux-64"], 0);
    let prefix = dir.path().join("envs/team-a/data-science-1");
    let cache = dir.path().join("pkgs");
    let run = step(
        &[
            "install",
            "--prefix",
            prefix.to_str().unwrap(),
            "--package-cache",
            cache.to_str().unwrap(),
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert!(prefix.join("conda-meta").is_dir());
    let run = step(
        &["pack", "--prefix", prefix.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    artifact(&run.report, "archive");
}

#[test]
fn unsolvable_specification_fails_with_the_solver_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let spec = environment_yaml(
        dir.path(),
        "channels: [",
        "]\ndependencies: [tool, 'liba<1.5']\n",
    );
    let run = step(
        &["solve", "--specification", spec.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 1);
    let msg = run.report["message"].as_str().unwrap();
    assert!(msg.contains("liba"), "{msg}");
    assert!(
        !storage
            .join("builds/team-a/data-science-1/conda-lock.yaml")
            .exists()
    );
}

#[test]
fn install_without_a_lockfile_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let prefix = dir.path().join("envs/x/1");
    let run = step(
        &["install", "--prefix", prefix.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 1);
    let msg = run.report["message"].as_str().unwrap();
    assert!(msg.contains("conda-lock.yaml"), "{msg}");
    assert!(!prefix.exists());
}

#[test]
fn a_lockfile_specification_is_stored_and_installed_without_a_solve() {
    let dir = tempfile::tempdir().unwrap();
    let term = dir.path().join("termination-log");
    let spec = environment_yaml(
        dir.path(),
        "channels: [",
        "]\ndependencies: [tool, 'liba>=2']\n",
    );
    let first = dir.path().join("first");
    let run = step(
        &["solve", "--specification", spec.to_str().unwrap()],
        &first,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let text = std::fs::read_to_string(first.join("builds/team-a/data-science-1/conda-lock.yaml"))
        .unwrap();

    // The lockfile as an Environment's specification (what the operator hands the Job).
    let lock = conda_store_crds::spec::parse_lockfile(
        &text,
        &conda_store_crds::spec::Location::path("spec.lockfile"),
    )
    .unwrap();
    let normalized = conda_store_crds::spec::NormalizedSpec {
        lockfile: Some(lock),
        ..Default::default()
    };
    let json = serde_json::to_string(&normalized).unwrap();
    let storage = dir.path().join("second");
    let run = step(
        &["solve", "--specification-json", &json, "--name", "locked"],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["details"]["packages"]["linux-64"], 3);
    let yaml = std::fs::read_to_string(
        storage.join(artifact(&run.report, "yaml")["key"].as_str().unwrap()),
    )
    .unwrap();
    assert!(yaml.contains("liba=2.0="), "{yaml}");

    let prefix = dir.path().join("envs/locked");
    let cache = dir.path().join("pkgs");
    let run = step(
        &[
            "install",
            "--prefix",
            prefix.to_str().unwrap(),
            "--package-cache",
            cache.to_str().unwrap(),
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let out = Command::new(prefix.join("bin/tool")).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("tool data"));
}

/// A specification of 60,000 dependencies (about 800 KB, under the API server's 1 MiB object
/// limit) reaches the solver through storage. The environment variable the operator used to
/// pass it in is refused by the kernel (`argument list too long`) at that size.
#[test]
fn a_specification_of_any_size_reaches_the_solve_step_through_storage() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let channel =
        conda_store_engine::channel::write_test_channel(&dir.path().join("channel")).unwrap();
    let deps: Vec<String> = (0..60_000).map(|i| format!("dep-number-{i}")).collect();
    let spec = conda_store_crds::spec::NormalizedSpec {
        channels: vec![channel.url.clone()],
        dependencies: deps,
        ..Default::default()
    };
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.len() > 700_000, "{}", json.len());

    // The old way: the variable alone is past what execve takes.
    let spawned = Command::new(OPERATOR)
        .env("CONDA_STORE_SPECIFICATION", &json)
        .arg("--version")
        .output();
    assert!(
        spawned.is_err(),
        "a {} byte variable was accepted",
        json.len()
    );

    let key = "builds/team-a/data-science-1/specification.json";
    std::fs::create_dir_all(storage.join("builds/team-a/data-science-1")).unwrap();
    std::fs::write(storage.join(key), &json).unwrap();
    let run = step(&["solve", "--specification-key", key], &storage, &term);
    // It gets as far as solving: the packages are not in the channel.
    assert_eq!(run.code, 1);
    let msg = run.report["message"].as_str().unwrap();
    assert!(msg.contains("dep-number-"), "{msg}");
    assert!(!msg.contains("argument list"), "{msg}");
}

/// An environment.yaml's `variables:` (conda-store keeps them) reach the YAML export, the
/// prefix's `conda-meta/state` (what `conda activate` sets, and what is packed) and the image's
/// environment.
#[test]
fn variables_reach_the_export_the_prefix_and_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("artifacts");
    let term = dir.path().join("termination-log");
    let spec = environment_yaml(
        dir.path(),
        "name: demo\nchannels: [",
        "]\ndependencies: [tool]\nvariables:\n  MY_SETTING: hello world\n  OTHER: '2'\n",
    );
    let run = step(
        &["solve", "--specification", spec.to_str().unwrap()],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let yaml = std::fs::read_to_string(
        storage.join(artifact(&run.report, "yaml")["key"].as_str().unwrap()),
    )
    .unwrap();
    let export: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(export["variables"]["MY_SETTING"], "hello world", "{yaml}");

    let prefix = dir.path().join("envs/team-a/data-science-1");
    let cache = dir.path().join("pkgs");
    let run = step(
        &[
            "install",
            "--prefix",
            prefix.to_str().unwrap(),
            "--package-cache",
            cache.to_str().unwrap(),
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prefix.join("conda-meta/state")).unwrap())
            .unwrap();
    assert_eq!(state["env_vars"]["MY_SETTING"], "hello world");
    assert_eq!(state["env_vars"]["OTHER"], "2");

    let run = step(
        &[
            "image",
            "--prefix",
            prefix.to_str().unwrap(),
            "--name",
            "demo",
        ],
        &storage,
        &term,
    );
    assert_eq!(run.code, 0, "{}", run.report);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(storage.join("builds/team-a/data-science-1/image.json")).unwrap(),
    )
    .unwrap();
    let config_hex = summary["configDigest"]
        .as_str()
        .or(summary["config_digest"].as_str())
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(storage.join(format!("blobs/sha256/{config_hex}"))).unwrap(),
    )
    .unwrap();
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"MY_SETTING=hello world"), "{env:?}");
    assert!(env.contains(&"OTHER=2"), "{env:?}");
}
