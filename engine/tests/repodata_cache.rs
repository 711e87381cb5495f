//! The repodata cache shared by solves: remote channels served over real HTTP (the engine's
//! static server, with `ETag` and `Cache-Control: max-age=0`, so every solve revalidates),
//! solved with a persistent cache directory as the solve Jobs share it.

use std::path::Path;

use conda_store_engine::channel::write_test_channel;
use conda_store_engine::forge::{ForgeSize, write_forge_channel};
use conda_store_engine::solve::{Solution, SolveRequest, solve};
use conda_store_engine::static_http::{Served, StaticServer};

fn request(channel: &str, specs: &[&str], cache: &Path) -> SolveRequest {
    SolveRequest {
        channels: vec![channel.to_string()],
        specs: specs.iter().map(|s| s.to_string()).collect(),
        platforms: vec!["linux-64".into()],
        repodata_cache: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

fn names(s: &Solution) -> Vec<String> {
    s.platforms["linux-64"]
        .iter()
        .map(|r| {
            format!(
                "{}-{}",
                r.package_record.name.as_normalized(),
                r.package_record.version
            )
        })
        .collect()
}

/// The GETs answered 200 for paths ending in `suffix`.
fn downloads(served: &[Served], suffix: &str) -> usize {
    served
        .iter()
        .filter(|s| s.method == "GET" && s.status == 200 && s.path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn a_warm_cache_revalidates_instead_of_downloading_and_sees_a_changed_channel() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(&dir.path().join("channel")).unwrap();
    let server = StaticServer::start(&channel.root, "max-age=0")
        .await
        .unwrap();
    let cache = dir.path().join("cache");

    let cold = solve(&request(&server.url(), &["tool"], &cache))
        .await
        .unwrap();
    assert_eq!(
        downloads(&server.served(), "linux-64/repodata.json"),
        1,
        "{:?}",
        server.served()
    );
    server.clear();

    let warm = solve(&request(&server.url(), &["tool"], &cache))
        .await
        .unwrap();
    assert_eq!(names(&warm), names(&cold));
    let served = server.served();
    assert_eq!(
        downloads(&served, "repodata.json"),
        0,
        "revalidated, not downloaded: {served:?}"
    );
    assert!(served.iter().any(|s| s.status == 304), "{served:?}");

    // The channel publishes a newer tool (a noarch package): the next solve sees it.
    let path = channel.root.join("noarch/repodata.json");
    let mut repodata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let conda = repodata["packages.conda"].as_object_mut().unwrap();
    let (file, record) = conda
        .iter()
        .find(|(_, r)| r["name"] == "tool")
        .map(|(f, r)| (f.clone(), r.clone()))
        .unwrap();
    let mut newer = record.clone();
    newer["version"] = "9.9".into();
    conda.insert(
        file.replace(record["version"].as_str().unwrap(), "9.9"),
        newer,
    );
    std::fs::write(&path, serde_json::to_vec(&repodata).unwrap()).unwrap();
    server.clear();
    let changed = solve(&request(&server.url(), &["tool"], &cache))
        .await
        .unwrap();
    assert!(
        names(&changed).contains(&"tool-9.9".to_string()),
        "{:?}",
        names(&changed)
    );
    assert_eq!(downloads(&server.served(), "noarch/repodata.json"), 1);
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(&dir.path().join("channel")).unwrap();
    let server = StaticServer::start(&channel.root, "max-age=3600")
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let cold = solve(&request(&server.url(), &["tool"], &cache))
        .await
        .unwrap();
    // Truncate every cached repodata body (as a crash mid-write or a full disk would).
    let mut truncated = 0;
    for entry in walkdir::WalkDir::new(&cache) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type().is_file() && name.ends_with(".json") && !name.ends_with(".info.json") {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())
                .unwrap();
            f.set_len(10).unwrap();
            truncated += 1;
        }
    }
    assert!(truncated >= 1, "the cache holds repodata bodies");
    server.clear();
    let again = solve(&request(&server.url(), &["tool"], &cache))
        .await
        .unwrap();
    assert_eq!(names(&again), names(&cold));
    assert_eq!(
        downloads(&server.served(), "noarch/repodata.json"),
        1,
        "fresh by its headers, but the body does not match its record: fetched again"
    );
}

#[tokio::test]
async fn concurrent_solves_share_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let channel = write_test_channel(&dir.path().join("channel")).unwrap();
    let server = StaticServer::start(&channel.root, "max-age=60")
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let url = server.url();
    let solves: Vec<_> = (0..6)
        .map(|_| {
            let r = request(&url, &["tool"], &cache);
            tokio::spawn(async move { solve(&r).await })
        })
        .collect();
    let mut results = Vec::new();
    for s in solves {
        results.push(names(&s.await.unwrap().unwrap()));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let served = server.served();
    assert_eq!(
        downloads(&served, "linux-64/repodata.json"),
        1,
        "{served:?}"
    );
    assert_eq!(downloads(&served, "noarch/repodata.json"), 1, "{served:?}");
}

/// A small channel of the conda-forge shape, sharded and with `.zst` repodata.
fn forge(dir: &Path) -> conda_store_engine::forge::ForgeChannel {
    let size = ForgeSize {
        linux_names: 2_100,
        noarch_names: 60,
        seed: 7,
    };
    write_forge_channel(dir, size).unwrap()
}

#[tokio::test]
async fn a_sharded_channel_is_read_by_shard_and_shards_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let channel = forge(&dir.path().join("channel"));
    let server = StaticServer::start(&channel.root, "max-age=0")
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let specs: Vec<&str> = channel.request.iter().map(String::as_str).collect();
    let cold = solve(&request(&server.url(), &specs, &cache))
        .await
        .unwrap();
    assert!(names(&cold).len() > specs.len(), "{:?}", names(&cold));
    let served = server.served();
    assert_eq!(
        downloads(&served, "repodata.json"),
        0,
        "no whole repodata: {served:?}"
    );
    assert_eq!(downloads(&served, "repodata.json.zst"), 0);
    let shards =
        downloads(&served, ".msgpack.zst") - downloads(&served, "repodata_shards.msgpack.zst");
    assert!(
        shards >= names(&cold).len() && shards < 2_160,
        "only the shards needed: {shards}"
    );
    server.clear();

    let warm = solve(&request(&server.url(), &specs, &cache))
        .await
        .unwrap();
    assert_eq!(names(&warm), names(&cold));
    let served = server.served();
    assert_eq!(
        downloads(&served, ".msgpack.zst"),
        0,
        "index revalidated, shards from the cache: {served:?}"
    );
}

#[tokio::test]
async fn an_unsharded_channel_is_read_as_zst() {
    let dir = tempfile::tempdir().unwrap();
    let channel = forge(&dir.path().join("channel"));
    for subdir in ["linux-64", "noarch"] {
        std::fs::remove_file(
            channel
                .root
                .join(subdir)
                .join("repodata_shards.msgpack.zst"),
        )
        .unwrap();
    }
    let server = StaticServer::start(&channel.root, "max-age=0")
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let specs: Vec<&str> = channel.request.iter().map(String::as_str).collect();
    solve(&request(&server.url(), &specs, &cache))
        .await
        .unwrap();
    let served = server.served();
    assert_eq!(
        downloads(&served, "linux-64/repodata.json.zst"),
        1,
        "{served:?}"
    );
    assert_eq!(
        downloads(&served, "linux-64/repodata.json"),
        0,
        "{served:?}"
    );
}
