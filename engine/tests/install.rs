//! Solve, lock and install the generated channel into a prefix; run what it installed.

use std::process::Command;

use conda_store_engine::{
    channel::write_test_channel,
    install::{install_lockfile, switch_current},
    lockfile::write_lockfile,
    prefix::read_installed,
    solve::{SolveRequest, solve},
};

/// The lockfile of `tool` solved from a test channel written under `dir`.
async fn tool_lockfile(dir: &std::path::Path) -> String {
    let channel = write_test_channel(&dir.join("channel")).unwrap();
    let solution = solve(&SolveRequest {
        channels: vec![channel.url.clone()],
        specs: vec!["tool".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    write_lockfile(&solution).unwrap()
}

#[tokio::test]
async fn install_from_lockfile() {
    let dir = tempfile::tempdir().unwrap();
    let lock = tool_lockfile(dir.path()).await;
    let cache = dir.path().join("pkgs");
    let prefix = dir.path().join("envs").join("demo-1");

    let first = install_lockfile(&lock, "linux-64", &prefix, &cache)
        .await
        .unwrap();
    assert_eq!(first.operations, 3);
    assert!(!prefix.join("CACHEDIR.TAG").exists());

    let meta: Vec<String> = std::fs::read_dir(prefix.join("conda-meta"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        meta.iter()
            .any(|m| m.starts_with("tool-1.0-") && m.ends_with(".json")),
        "{meta:?}"
    );

    // the placeholder was replaced by the prefix, and the script reads through it
    let out = Command::new(prefix.join("bin/tool")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!("prefix: {}\ntool data\n", prefix.display()),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/tool/config.txt")).unwrap(),
        format!("prefix={}\n", prefix.display())
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("share/liba/VERSION")).unwrap(),
        "2.0\n"
    );

    let installed = read_installed(&prefix).unwrap();
    let names: Vec<String> = installed
        .iter()
        .map(|p| format!("{}-{}-{}", p.name, p.version, p.build))
        .collect();
    assert_eq!(names, ["liba-2.0-h0_0", "libb-1.0-h0_0", "tool-1.0-h1_0"]);
    let tool = installed.iter().find(|p| p.name == "tool").unwrap();
    assert!(
        tool.files.contains(&"bin/tool".to_string()),
        "{:?}",
        tool.files
    );
    let prefix_files: Vec<&str> = tool.prefix_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(prefix_files, ["bin/tool", "etc/tool/config.txt"]);

    // again: nothing to do
    let second = install_lockfile(&lock, "linux-64", &prefix, &cache)
        .await
        .unwrap();
    assert_eq!(second.operations, 0);
    assert!(!prefix.join("CACHEDIR.TAG").exists());

    // a second prefix from the same cache
    let other = dir.path().join("envs").join("demo-2");
    install_lockfile(&lock, "linux-64", &other, &cache)
        .await
        .unwrap();
    let out = Command::new(other.join("bin/tool")).output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&format!("prefix: {}\n", other.display()))
    );

    // a lockfile without the platform
    assert!(
        install_lockfile(&lock, "osx-64", &other, &cache)
            .await
            .is_err()
    );
}

#[test]
fn switch_current_is_atomic_replace() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let link = dir.path().join("current");
    switch_current(&link, &a).unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), a);
    switch_current(&link, &b).unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), b);
    switch_current(&link, std::path::Path::new("a")).unwrap();
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::Path::new("a")
    );
    assert!(link.join(".").is_dir());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_corrupted_package_cache_is_not_installed_from() {
    let dir = tempfile::tempdir().unwrap();
    let lock = tool_lockfile(dir.path()).await;
    let cache = dir.path().join("pkgs");
    install_lockfile(&lock, "linux-64", &dir.path().join("envs/first"), &cache)
        .await
        .unwrap();
    // Damage the cached copy of tool's data file (a disk error, a hand edit).
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("tool-1.0")
        })
        .expect("tool is in the cache");
    let data = cached.join("share/tool/data.txt");
    std::fs::remove_file(&data).unwrap();
    std::fs::write(&data, "tampered\n").unwrap();

    let prefix = dir.path().join("envs/second");
    // The damaged entry fails validation and is extracted again from the package archive.
    install_lockfile(&lock, "linux-64", &prefix, &cache)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(prefix.join("share/tool/data.txt")).unwrap(),
        "tool data\n",
        "installed from a corrupted cache"
    );
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "tool data\n",
        "cache repaired"
    );
    // The first environment is untouched.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("envs/first/share/tool/data.txt")).unwrap(),
        "tool data\n"
    );
}

/// A channel served over HTTP on loopback (Python's http.server), stopped on drop.
struct HttpChannel(std::process::Child, u16);

impl HttpChannel {
    fn serve(dir: &std::path::Path) -> HttpChannel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 serves the channel");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpChannel(child, port)
    }
}

impl Drop for HttpChannel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_over_http_solves_and_installs() {
    let dir = tempfile::tempdir().unwrap();
    write_test_channel(&dir.path().join("channels/demo")).unwrap();
    let server = HttpChannel::serve(&dir.path().join("channels"));
    let alias = format!("http://127.0.0.1:{}", server.1);
    let solution = solve(&SolveRequest {
        channels: vec!["demo".into()],
        channel_alias: Some(alias.clone()),
        specs: vec!["tool".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let lock = write_lockfile(&solution).unwrap();
    assert!(
        lock.contains(&format!("url: {alias}/demo/noarch/tool-1.0")),
        "{lock}"
    );
    let prefix = dir.path().join("envs/remote");
    let summary = install_lockfile(&lock, "linux-64", &prefix, &dir.path().join("pkgs"))
        .await
        .unwrap();
    assert_eq!(summary.operations, 3);
    let out = Command::new(prefix.join("bin/tool")).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("tool data"));

    // A channel the server does not have is an error naming it.
    let err = solve(&SolveRequest {
        channels: vec![format!("{alias}/missing")],
        specs: vec!["tool".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing"), "{err}");
}

/// A lockfile given back as an environment's specification (read by the specification model,
/// as the operator does, which keeps "no constraint" as `*`) locks to the same bytes: the
/// conda-store round trip of download, then POST with `is_lockfile`.
#[tokio::test]
async fn a_lockfile_given_back_locks_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lock = tool_lockfile(dir.path()).await;
    let spec = conda_store_crds::spec::lockfile::parse_lockfile(
        &lock,
        &conda_store_crds::spec::error::Location::path("lockfile"),
    )
    .unwrap();
    assert!(
        spec.packages
            .iter()
            .any(|p| p.dependencies.values().any(|v| v == "*")),
        "the model keeps no constraint as *"
    );
    let solution = conda_store_engine::lockfile::solution_from_locked(
        &spec.channels,
        spec.packages
            .iter()
            .map(|p| conda_store_engine::lockfile::LockInput {
                manager: &p.manager,
                platform: &p.platform,
                name: &p.name,
                version: &p.version,
                url: &p.url,
                md5: p.md5.as_deref(),
                sha256: p.sha256.as_deref(),
                dependencies: &p.dependencies,
            }),
    )
    .unwrap();
    assert_eq!(write_lockfile(&solution).unwrap(), lock);
}

/// The test channel under `dir/channels/demo` served over HTTP (the engine's static server,
/// which counts what it served), and the lockfile of `tool` solved from it.
async fn served_tool_lockfile(
    dir: &std::path::Path,
) -> (conda_store_engine::static_http::StaticServer, String) {
    write_test_channel(&dir.join("channels/demo")).unwrap();
    let server =
        conda_store_engine::static_http::StaticServer::start(&dir.join("channels"), "max-age=0")
            .await
            .unwrap();
    let solution = solve(&SolveRequest {
        channels: vec![format!("{}demo", server.url())],
        specs: vec!["tool".into()],
        platforms: vec!["linux-64".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    (server, write_lockfile(&solution).unwrap())
}

/// Installs over HTTP fetch each archive into the shared cache once, even when several installs
/// of the same packages run at once (concurrent build pods on the cache volume), and leave no
/// spooled download behind.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_installs_over_http_download_each_archive_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, lock) = served_tool_lockfile(dir.path()).await;
    server.clear();
    let cache = dir.path().join("pkgs");
    let installs: Vec<_> = (0..4)
        .map(|i| {
            let (lock, cache) = (lock.clone(), cache.clone());
            let prefix = dir.path().join(format!("envs/e{i}"));
            tokio::spawn(async move { install_lockfile(&lock, "linux-64", &prefix, &cache).await })
        })
        .collect();
    for install in installs {
        assert_eq!(install.await.unwrap().unwrap().operations, 3);
    }
    for i in 0..4 {
        let out = Command::new(dir.path().join(format!("envs/e{i}/bin/tool")))
            .output()
            .unwrap();
        assert!(String::from_utf8(out.stdout).unwrap().contains("tool data"));
    }
    let mut archives: Vec<String> = server
        .served()
        .into_iter()
        .filter(|s| s.method == "GET" && s.status == 200)
        .map(|s| s.path)
        .collect();
    archives.sort();
    let count = archives.len();
    archives.dedup();
    assert_eq!(
        count, 3,
        "three packages, each downloaded once: {archives:?}"
    );
    assert_eq!(archives.len(), 3);
    let spool: Vec<_> = std::fs::read_dir(cache.join(".downloads"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "downloads left behind: {spool:?}");
}

/// An archive whose bytes are not the ones the lockfile names fails the install with both
/// digests, and caches nothing: once the channel serves the right bytes again, it installs.
/// A package the channel does not have names its URL and the answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_missing_archive_over_http_fails_clearly_and_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, lock) = served_tool_lockfile(dir.path()).await;
    let archive = std::fs::read_dir(dir.path().join("channels/demo/noarch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tool-1.0")
        })
        .expect("tool's archive");
    let good = std::fs::read(&archive).unwrap();
    // The channel now serves other bytes under the locked name (a mirror gone wrong, a
    // tenant's tampering): a valid archive all the same, only its digest tells.
    let mut tampered = good.clone();
    let comment = tampered.len() - 2;
    // A zip's last two bytes are its (empty) comment's length; a comment keeps it valid.
    tampered[comment] = 1;
    tampered.push(b'x');
    std::fs::write(&archive, &tampered).unwrap();
    let cache = dir.path().join("pkgs");
    let err = install_lockfile(&lock, "linux-64", &dir.path().join("envs/a"), &cache)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256") && err.contains("tool-1.0"), "{err}");
    let cached: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tool-1.0"))
        .collect();
    assert!(
        cached.iter().all(|n| n.ends_with(".lock")),
        "the wrong bytes were cached: {cached:?}"
    );

    std::fs::write(&archive, &good).unwrap();
    install_lockfile(&lock, "linux-64", &dir.path().join("envs/a"), &cache)
        .await
        .unwrap();

    std::fs::remove_file(&archive).unwrap();
    let err = install_lockfile(
        &lock,
        "linux-64",
        &dir.path().join("envs/b"),
        &dir.path().join("other-pkgs"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("404") && err.contains(&format!("{}demo/noarch/tool-1.0", server.url())),
        "{err}"
    );
}
