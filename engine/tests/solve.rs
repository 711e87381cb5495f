//! Solve and lock against a generated local channel of real packages.

use std::path::Path;

use conda_store_engine::{
    channel::{index_channel, write_synthetic_repodata, write_test_channel},
    lockfile::{export_environment, lockfile_records, read_lockfile, write_lockfile},
    solve::{SolveError, SolveRequest, solve},
};

fn request(channel: &str, specs: &[&str]) -> SolveRequest {
    SolveRequest {
        channels: vec![channel.to_string()],
        specs: specs.iter().map(|s| s.to_string()).collect(),
        platforms: vec!["linux-64".into()],
        ..Default::default()
    }
}

fn names(solution: &conda_store_engine::solve::Solution) -> Vec<String> {
    solution.platforms["linux-64"]
        .iter()
        .map(|r| {
            let p = &r.package_record;
            format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build)
        })
        .collect()
}

#[test]
fn test_channel_is_reproducible_and_indexed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ca = write_test_channel(a.path()).unwrap();
    let cb = write_test_channel(b.path()).unwrap();
    assert_eq!(ca.packages.len(), 4);
    assert!(ca.url.starts_with("file:///") && ca.url.ends_with('/'));
    for (pa, pb) in ca.packages.iter().zip(&cb.packages) {
        assert_eq!(pa.file_name(), pb.file_name());
        assert_eq!(
            std::fs::read(pa).unwrap(),
            std::fs::read(pb).unwrap(),
            "{pa:?}"
        );
    }
    let files: Vec<_> = ca
        .packages
        .iter()
        .map(|p| {
            p.strip_prefix(&ca.root)
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(
        files,
        [
            "linux-64/liba-1.0-h0_0.tar.bz2",
            "linux-64/liba-2.0-h0_0.tar.bz2",
            "noarch/libb-1.0-h0_0.tar.bz2",
            "noarch/tool-1.0-h1_0.conda",
        ]
    );
    for subdir in ["noarch", "linux-64"] {
        let ra = std::fs::read(ca.root.join(subdir).join("repodata.json")).unwrap();
        let rb = std::fs::read(cb.root.join(subdir).join("repodata.json")).unwrap();
        assert_eq!(ra, rb);
    }
    let noarch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ca.root.join("noarch/repodata.json")).unwrap())
            .unwrap();
    let tool = &noarch["packages.conda"]["tool-1.0-h1_0.conda"];
    assert_eq!(tool["depends"], serde_json::json!(["libb", "liba >=1.5"]));
    assert_eq!(tool["noarch"], "generic");
    assert!(tool["md5"].is_string() && tool["sha256"].is_string());
    // re-indexing gives the same bytes
    let before = std::fs::read(ca.root.join("noarch/repodata.json")).unwrap();
    index_channel(&ca.root).unwrap();
    assert_eq!(
        before,
        std::fs::read(ca.root.join("noarch/repodata.json")).unwrap()
    );
}

#[tokio::test]
async fn solve_picks_newest_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    let solution = solve(&request(&channel.url, &["tool"])).await.unwrap();
    assert_eq!(
        names(&solution),
        ["liba-2.0-h0_0", "libb-1.0-h0_0", "tool-1.0-h1_0"]
    );
    assert_eq!(solution.channels, vec![channel.url.clone()]);
    // a plain directory path works as well
    let by_path = solve(&request(channel.root.to_str().unwrap(), &["tool"]))
        .await
        .unwrap();
    assert_eq!(names(&by_path), names(&solution));
    // a version constraint is honoured
    let old = solve(&request(&channel.url, &["liba <2"])).await.unwrap();
    assert_eq!(names(&old), ["liba-1.0-h0_0"]);
}

#[tokio::test]
async fn lockfile_round_trip_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    let first = solve(&request(&channel.url, &["tool"])).await.unwrap();
    let text = write_lockfile(&first).unwrap();
    let second = solve(&request(&channel.url, &["tool"])).await.unwrap();
    assert_eq!(
        text,
        write_lockfile(&second).unwrap(),
        "solving twice differs"
    );

    assert!(text.contains("version: 1"), "{text}");
    assert!(text.contains("- environment.yml"), "{text}");
    assert!(text.contains("- linux-64"), "{text}");
    assert!(text.contains(&format!("url: {}", channel.url)), "{text}");

    let locked = read_lockfile(&text).unwrap();
    assert_eq!(locked.len(), 3);
    for (lp, record) in locked.iter().zip(&first.platforms["linux-64"]) {
        let p = &record.package_record;
        assert_eq!(lp.platform, "linux-64");
        assert_eq!(lp.name, p.name.as_normalized());
        assert_eq!(lp.version, p.version.to_string());
        assert_eq!(lp.build, p.build.to_string());
        assert_eq!(lp.url, record.url.to_string());
        assert_eq!(lp.file_name, record.identifier.to_string());
        assert_eq!(lp.subdir, p.subdir);
        assert_eq!(lp.channel, channel.url);
        assert_eq!(
            lp.md5.as_deref(),
            Some(hex::encode(p.md5.unwrap()).as_str())
        );
        assert_eq!(
            lp.sha256.as_deref(),
            Some(hex::encode(p.sha256.unwrap()).as_str())
        );
        let mut depends = p.depends.clone();
        depends.sort();
        assert_eq!(lp.depends, depends);
    }
    let tool = locked.iter().find(|p| p.name == "tool").unwrap();
    assert_eq!(tool.subdir, "noarch");
    assert_eq!(tool.file_name, "tool-1.0-h1_0.conda");

    let records = lockfile_records(&text, "linux-64").unwrap();
    assert_eq!(records.len(), 3);
    for (a, b) in records.iter().zip(&first.platforms["linux-64"]) {
        assert_eq!(a.url, b.url);
        assert_eq!(a.identifier, b.identifier);
        assert_eq!(a.package_record.sha256, b.package_record.sha256);
        assert_eq!(a.package_record.md5, b.package_record.md5);
    }
    assert!(lockfile_records(&text, "osx-arm64").is_err());

    let env = export_environment(&first, "linux-64", "demo").unwrap();
    let expected = format!(
        "name: demo\nchannels:\n- {}\ndependencies:\n- liba=2.0=h0_0\n- libb=1.0=h0_0\n- tool=1.0=h1_0\n",
        channel.url
    );
    assert_eq!(env, expected);
}

#[tokio::test]
async fn conflict_is_unsolvable_with_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    let err = solve(&request(&channel.url, &["tool", "liba <1.5"]))
        .await
        .unwrap_err();
    let SolveError::Unsolvable { platform, message } = &err else {
        panic!("expected Unsolvable, got {err:?}");
    };
    eprintln!("{err}");
    assert_eq!(platform, "linux-64");
    assert!(message.contains("liba"), "{message}");
    assert!(message.contains("tool"), "{message}");
    assert!(
        message.contains(">=1.5") || message.contains(">=2"),
        "{message}"
    );
}

#[tokio::test]
async fn missing_package_is_unsolvable() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    let err = solve(&request(&channel.url, &["does-not-exist"]))
        .await
        .unwrap_err();
    let SolveError::Unsolvable { message, .. } = &err else {
        panic!("expected Unsolvable, got {err:?}");
    };
    eprintln!("{err}");
    assert!(message.contains("does-not-exist"), "{message}");
    assert!(err.to_string().contains("linux-64"), "{err}");
}

#[tokio::test]
async fn unknown_channel_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let url = url::Url::from_directory_path(&missing).unwrap().to_string();
    let err = solve(&request(&url, &["tool"])).await.unwrap_err();
    assert!(
        matches!(&err, SolveError::UnknownChannel { channel, .. } if *channel == url),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");

    // a directory that is not a channel
    std::fs::create_dir(&missing).unwrap();
    let err = solve(&request(missing.to_str().unwrap(), &["tool"]))
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::UnknownChannel { .. }), "{err:?}");
    // remote channels are not supported yet
    let err = solve(&request("conda-forge", &["tool"])).await.unwrap_err();
    assert!(matches!(err, SolveError::UnsupportedChannel(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_requests() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    let err = solve(&request(&channel.url, &["tool >=>1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::InvalidSpec { .. }), "{err:?}");

    let mut pip = request(&channel.url, &["tool"]);
    pip.pip = vec!["requests".into()];
    let err = solve(&pip).await.unwrap_err();
    assert!(matches!(err, SolveError::PipNotSupported(_)), "{err:?}");
    assert!(err.to_string().contains("requests"), "{err}");

    let mut bad_platform = request(&channel.url, &["tool"]);
    bad_platform.platforms = vec!["linux-65".into()];
    let err = solve(&bad_platform).await.unwrap_err();
    assert!(matches!(err, SolveError::InvalidPlatform(_)), "{err:?}");
}

#[tokio::test]
async fn virtual_packages_matter() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(dir.path()).unwrap();
    // liba needs __glibc >=2.17: an old glibc makes it unsolvable
    let mut old_glibc = request(&channel.url, &["tool"]);
    old_glibc.virtual_packages.insert(
        "linux-64".into(),
        vec!["__glibc=2.12=0".into(), "__unix=0=0".into()],
    );
    let err = solve(&old_glibc).await.unwrap_err();
    let SolveError::Unsolvable { message, .. } = &err else {
        panic!("expected Unsolvable, got {err:?}");
    };
    assert!(message.contains("__glibc"), "{message}");
    // osx-64 has no liba at all (liba is linux-64 only)
    let mut osx = request(&channel.url, &["tool"]);
    osx.platforms = vec!["osx-64".into()];
    assert!(matches!(
        solve(&osx).await.unwrap_err(),
        SolveError::Unsolvable { .. }
    ));
}

fn synthetic(dir: &Path, n: usize, seed: u64) -> conda_store_engine::channel::SyntheticChannel {
    write_synthetic_repodata(dir, n, seed).unwrap()
}

#[tokio::test]
async fn synthetic_repodata_is_deterministic_and_solvable() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ca = synthetic(a.path(), 2000, 7);
    let cb = synthetic(b.path(), 2000, 7);
    assert_eq!(ca.records, 2000);
    let ra = std::fs::read(ca.root.join("linux-64/repodata.json")).unwrap();
    assert_eq!(
        ra,
        std::fs::read(cb.root.join("linux-64/repodata.json")).unwrap()
    );
    let parsed: serde_json::Value = serde_json::from_slice(&ra).unwrap();
    assert_eq!(parsed["packages.conda"].as_object().unwrap().len(), 2000);
    assert!(!ca.suggested_specs.is_empty());

    let specs: Vec<&str> = ca.suggested_specs.iter().map(String::as_str).collect();
    let solution = solve(&request(&ca.url, &specs)).await.unwrap();
    let records = &solution.platforms["linux-64"];
    assert!(records.len() > specs.len(), "a trivial solve: {records:?}");
}

#[tokio::test]
async fn channel_names_expand_with_the_channel_alias() {
    let dir = tempfile::tempdir().unwrap();
    write_test_channel(&dir.path().join("demo")).unwrap();
    let alias = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    let mut req = request("demo", &["tool"]);
    req.channel_alias = Some(alias.clone());
    let solution = solve(&req).await.unwrap();
    assert_eq!(names(&solution).len(), 3);
    assert!(
        solution.channels[0].starts_with(alias.trim_end_matches('/')),
        "{:?}",
        solution.channels
    );
    // A name that the alias does not hold is an unknown channel, named in full.
    let mut req = request("conda-forge", &["tool"]);
    req.channel_alias = Some(alias.clone());
    let err = solve(&req).await.unwrap_err();
    assert!(matches!(err, SolveError::UnknownChannel { .. }), "{err:?}");
    assert!(err.to_string().contains("conda-forge"), "{err}");
}

/// A "channel" that accepts connections and never answers (a tarpit) fails the solve once the
/// network bound passes, instead of holding the build; and its error reads the same as a port
/// where nothing listens, so a build's message is no port scanner.
#[tokio::test]
async fn unreachable_channels_fail_in_bounded_time_and_alike() {
    use std::time::{Duration, Instant};
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tarpit_port = tarpit.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in tarpit.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let message = |port: u16| async move {
        let mut r = request(&format!("http://127.0.0.1:{port}/channel"), &["liba"]);
        r.network_timeout = Some(Duration::from_secs(1));
        let start = Instant::now();
        let e = solve(&r).await.unwrap_err().to_string();
        (e.replace(&port.to_string(), "PORT"), start.elapsed())
    };
    let (tarpit_msg, tarpit_took) = message(tarpit_port).await;
    let (closed_msg, _) = message(closed_port).await;
    assert!(
        tarpit_took < Duration::from_secs(30),
        "took {tarpit_took:?}"
    );
    assert!(tarpit_msg.contains("could not be reached"), "{tarpit_msg}");
    assert_eq!(tarpit_msg, closed_msg);
    drop(held);
}
