//! The whole build pipeline, as the steps hand it on, with artifacts in a real S3 server:
//! environment.yaml → normalise → solve → lockfile (stored) → install from the stored lockfile
//! into `<root>/<namespace>/<build>` → pack (stored) → download, extract elsewhere, unpack, run
//! the package's script → image → skopeo reads it.

use std::process::Command;
use std::time::Duration;

use conda_store_crds::Policy;
use conda_store_crds::spec::normalize_yaml;
use conda_store_engine::channel::write_test_channel;
use conda_store_engine::image::{ImageOptions, build_image};
use conda_store_engine::install::{install_lockfile, switch_current};
use conda_store_engine::lockfile::{export_environment, write_lockfile};
use conda_store_engine::pack::{self, Compression};
use conda_store_engine::prefix::read_installed;
use conda_store_engine::solve::{SolveRequest, solve};
use conda_store_storage::testing::S3Server;
use conda_store_storage::{ArtifactStore, Key, S3Store};

#[tokio::test(flavor = "multi_thread")]
async fn environment_yaml_to_archive_and_image_through_s3() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(&dir.path().join("channel")).unwrap();
    let server = S3Server::start();
    let store = S3Store::new(&server.config("pipeline"));
    store.ensure_bucket().await.unwrap();
    let build = "builds/team-a/data-science-1";

    // The person's environment.yaml, normalised as the operator does, under a policy that
    // names the local channel (a tenant may not name file:// channels on their own).
    let yaml = format!(
        "name: data-science\nchannels:\n  - {}\ndependencies:\n  - tool\n",
        channel.url
    );
    let policy = Policy {
        allowed_channels: Some(vec![channel.url.clone()]),
        ..Default::default()
    };
    let spec = normalize_yaml(&yaml, &policy).unwrap();

    // solve → lockfile and YAML export in storage
    let solution = solve(&SolveRequest {
        channels: spec.channels.clone(),
        specs: spec.dependencies.clone(),
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let lock = write_lockfile(&solution).unwrap();
    let lock_key = Key::new(&format!("{build}/conda-lock.yaml")).unwrap();
    store
        .put_bytes(&lock_key, lock.clone().into())
        .await
        .unwrap();
    let export = export_environment(&solution, "linux-64", "data-science").unwrap();
    assert!(export.contains("tool=1.0=h1_0"), "{export}");
    store
        .put_bytes(
            &Key::new(&format!("{build}/environment.yaml")).unwrap(),
            export.into(),
        )
        .await
        .unwrap();

    // install from the lockfile as stored (the hand-off between steps)
    let stored_lock =
        String::from_utf8(store.get_bytes(&lock_key).await.unwrap().to_vec()).unwrap();
    assert_eq!(stored_lock, lock);
    let root = dir.path().join("environments");
    let prefix = root.join("team-a").join("data-science-1");
    let cache = dir.path().join("pkgs");
    let installed = install_lockfile(&stored_lock, "linux-64", &prefix, &cache)
        .await
        .unwrap();
    assert_eq!(installed.operations, 3);
    let names: Vec<String> = read_installed(&prefix)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["liba", "libb", "tool"]);
    // The environment's current link now points at this build.
    let current = root.join("team-a").join("data-science");
    switch_current(&current, &prefix).unwrap();
    assert_eq!(std::fs::read_link(&current).unwrap(), prefix);

    // pack → storage → download → extract elsewhere → unpack → run the package's script
    let archive = dir.path().join("archive.tar.zst");
    let packed = pack::pack(
        &prefix,
        prefix.to_str().unwrap(),
        Compression::default(),
        std::fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    let archive_key = Key::new(&format!("{build}/archive.tar.zst")).unwrap();
    let stored = store.put_file(&archive_key, &archive).await.unwrap();
    assert_eq!(stored.sha256.as_deref(), Some(packed.sha256.as_str()));
    let url = store
        .presign_get(&archive_key, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("X-Amz-Signature"));
    let downloaded = dir.path().join("downloaded.tar.zst");
    std::fs::write(&downloaded, store.get_bytes(&archive_key).await.unwrap()).unwrap();
    let elsewhere = dir.path().join("home/alice/unpacked env");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let status = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&downloaded)
        .arg("-C")
        .arg(&elsewhere)
        .status()
        .unwrap();
    assert!(status.success());
    let unpack = Command::new(elsewhere.join("bin/conda-unpack"))
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let out = Command::new(elsewhere.join("bin/tool")).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("prefix: {}\ntool data\n", elsewhere.display())
    );

    // image of the installed prefix → a real client reads it
    let layout = dir.path().join("layout");
    let image = build_image(
        &prefix,
        "/opt/conda/envs/data-science",
        &layout,
        &ImageOptions::new("data-science"),
    )
    .unwrap();
    for layer in &image.layers {
        let hex = layer.digest.trim_start_matches("sha256:");
        let key = Key::new(&format!("blobs/sha256/{hex}")).unwrap();
        store
            .put_file(&key, &layout.join("blobs/sha256").join(hex))
            .await
            .unwrap();
    }
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .expect("skopeo is installed by scripts/install-test-deps.sh");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], image.manifest_digest.as_str());
    assert_eq!(v["Layers"].as_array().unwrap().len(), image.layers.len());

    // everything the build produced is in the bucket
    let keys: Vec<String> = store
        .list(build)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{build}/archive.tar.zst"),
            format!("{build}/conda-lock.yaml"),
            format!("{build}/environment.yaml"),
        ]
    );
    assert_eq!(
        store.list("blobs/sha256/").await.unwrap().len(),
        image.layers.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_solve_touches_no_storage() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(&dir.path().join("channel")).unwrap();
    let server = S3Server::start();
    let store = S3Store::new(&server.config("failed"));
    store.ensure_bucket().await.unwrap();
    store
        .put_bytes(
            &Key::new("builds/team-a/other-1/conda-lock.yaml").unwrap(),
            "kept".into(),
        )
        .await
        .unwrap();
    let err = solve(&SolveRequest {
        channels: vec![channel.url.clone()],
        specs: vec!["tool".into(), "liba<1.5".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("liba"), "{err}");
    let keys: Vec<String> = store
        .list("builds/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["builds/team-a/other-1/conda-lock.yaml"]);
}
