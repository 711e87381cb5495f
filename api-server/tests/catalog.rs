//! The channel catalog: a real channel's repodata indexed into the SQL index, found through
//! `GET /api/v1/package/` and `/channel/`; incremental; and a channel of a hundred thousand
//! records indexed while the gateway keeps answering.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conda_store_api_server::app::App;
use conda_store_api_server::catalog::index_subdir;
use serde_json::Value;

async fn get(app: &Arc<App>, path: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(format!("/conda-store/api/v1/{path}"))
        .body(Body::empty())
        .unwrap();
    support::respond(app, req).await
}

fn names(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_channels_packages_are_found_without_any_build() {
    let dir = tempfile::tempdir().unwrap();
    let channel =
        conda_store_engine::channel::write_test_channel(&dir.path().join("channel")).unwrap();
    let url = channel.url.trim_end_matches('/').to_string();
    let (app, _w) = support::gateway(dir.path(), &["--catalog-channels", &url]).await;
    assert_eq!(app.catalog.channels, std::slice::from_ref(&url));
    let client = conda_store_engine::http::client();
    let mut etags = HashMap::new();
    let mut added = 0;
    for subdir in ["linux-64", "noarch"] {
        added += index_subdir(&app, &client, &mut etags, &url, subdir)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(added, 4);
    // Again: nothing new.
    for subdir in ["linux-64", "noarch"] {
        let again = index_subdir(&app, &client, &mut etags, &url, subdir)
            .await
            .unwrap();
        assert_eq!(again, Some(0));
    }
    let (s, v) = get(&app, "package/?search=lib").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(names(&v), ["liba-1.0", "liba-2.0", "libb-1.0"]);
    assert_eq!(v["count"], 3);
    let (_, v) = get(&app, "package/?search=lib&distinct_on=name&order=desc").await;
    assert_eq!(v["count"], 2);
    assert_eq!(v["data"][0]["name"], "libb");
    let (_, v) = get(&app, "package/?size=1&page=2&search=lib").await;
    assert_eq!(names(&v), ["liba-2.0"]);
    let (s, v) = get(&app, "channel/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"][0]["name"], url);
    assert!(v["data"][0]["last_update"].is_string());
    // A subdir that is not there is an error for that subdir, not a crash.
    assert!(
        index_subdir(&app, &client, &mut etags, &url, "osx-arm64")
            .await
            .is_err()
    );
}

/// A channel of 100,000 records (conda-forge's linux-64 holds several times that) is indexed
/// in batches while catalog searches keep being answered. Prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_channel_is_indexed_while_the_gateway_answers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("big");
    std::fs::create_dir_all(root.join("linux-64")).unwrap();
    let mut packages = serde_json::Map::new();
    for i in 0..100_000 {
        let name = format!("pkg{}", i % 5_000);
        let version = format!("{}.0", i / 5_000);
        packages.insert(
            format!("{name}-{version}-h0_0.conda"),
            serde_json::json!({"name": name, "version": version, "build": "h0_0",
                "build_number": 0, "depends": ["python >=3.9", "libzlib"],
                "md5": format!("{i:032x}"), "sha256": format!("{i:064x}"), "size": 1000}),
        );
    }
    let repodata = serde_json::json!({"info": {"subdir": "linux-64"}, "packages.conda": packages});
    std::fs::write(root.join("linux-64/repodata.json"), repodata.to_string()).unwrap();
    let url = url::Url::from_directory_path(&root).unwrap().to_string();
    let url = url.trim_end_matches('/').to_string();
    let (app, _w) = support::gateway(dir.path(), &[]).await;

    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let searcher = {
        let (app, done, answered) = (app.clone(), done.clone(), answered.clone());
        tokio::spawn(async move {
            let mut slowest = std::time::Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let (s, _) = get(&app, "package/?search=pkg42").await;
                assert_eq!(s, StatusCode::OK);
                slowest = slowest.max(t.elapsed());
                answered.fetch_add(1, Ordering::Relaxed);
            }
            slowest
        })
    };
    let t = std::time::Instant::now();
    let added = index_subdir(
        &app,
        &conda_store_engine::http::client(),
        &mut HashMap::new(),
        &url,
        "linux-64",
    )
    .await
    .unwrap();
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let slowest = searcher.await.unwrap();
    let during = answered.load(Ordering::Relaxed);
    eprintln!(
        "indexed 100000 records in {:.1} s; {during} searches answered meanwhile, slowest {:.0} ms",
        took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    assert_eq!(added, Some(100_000));
    assert!(
        during > 1,
        "no search was answered while the channel was indexed"
    );
    let (_, v) = get(&app, "package/?search=pkg4999&exact=true").await;
    assert_eq!(v["count"], 20);
    let again = index_subdir(
        &app,
        &conda_store_engine::http::client(),
        &mut HashMap::new(),
        &url,
        "linux-64",
    )
    .await
    .unwrap();
    assert_eq!(again, Some(0));
}
