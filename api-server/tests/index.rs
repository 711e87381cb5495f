//! The SQL index on SQLite and on a real PostgreSQL (started by tests/support/postgres.sh):
//! the same migrations, ids stable across reopening, packages and catalog from lockfiles.

use std::path::Path;
use std::process::Command;

use conda_store_api_server::index::{Index, Kind};
use conda_store_crds::spec::lockfile::LockedPackage;

fn package(name: &str, version: &str, build: &str) -> LockedPackage {
    LockedPackage {
        platform: "linux-64".into(),
        manager: "conda".into(),
        name: name.into(),
        version: version.into(),
        url: format!("http://127.0.0.1/channel/linux-64/{name}-{version}-{build}.conda"),
        md5: None,
        sha256: Some("ab".repeat(32)),
        dependencies: Default::default(),
        category: "main".into(),
        optional: false,
    }
}

async fn exercise(url: &str) {
    let index = Index::open(url).await.expect("opens and migrates");
    let a = index.id(Kind::Environment, "team/a").await.unwrap();
    let b = index.id(Kind::Environment, "team/b").await.unwrap();
    assert_ne!(a, b);
    assert_eq!(index.id(Kind::Environment, "team/a").await.unwrap(), a);
    // Kinds count separately.
    assert_eq!(index.id(Kind::Namespace, "team").await.unwrap(), 1);

    // Many ids at once stay distinct.
    let keys: Vec<String> = (0..20).map(|i| format!("team/e{i}")).collect();
    let ids = futures::future::join_all(keys.iter().map(|k| index.id(Kind::Environment, k))).await;
    let mut ids: Vec<i64> = ids.into_iter().map(Result::unwrap).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);

    let pkgs = [package("liba", "2.0", "h1_0"), package("tool", "1.0", "0")];
    index
        .index_build(7, "team", "a-1234abcd-1", &pkgs)
        .await
        .unwrap();
    // Twice is once.
    index
        .index_build(7, "team", "a-1234abcd-1", &pkgs)
        .await
        .unwrap();
    index
        .index_build(8, "team", "b-1234abcd-1", &pkgs[..1])
        .await
        .unwrap();
    assert!(index.build_indexed(7).await.unwrap());
    let listed = index.build_packages(7).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["liba", "tool"]
    );
    assert_eq!(listed[0].build, "h1_0");
    assert_eq!(listed[0].channel, "http://127.0.0.1/channel");
    let mut with = index.builds_with("liba").await.unwrap();
    with.sort();
    assert_eq!(with, [7, 8]);
    assert_eq!(index.channels().await.unwrap().len(), 1);
    let n = |search: Option<&'static str>, exact: bool, distinct_names: bool| {
        let index = &index;
        async move {
            let filter = conda_store_api_server::index::PackageFilter {
                search,
                exact,
                build: None,
                distinct_names,
            };
            let (rows, count) = index.packages(&filter, 0, 100, false).await.unwrap();
            assert_eq!(rows.len(), count);
            count
        }
    };
    assert_eq!(n(Some("to"), false, false).await, 1);
    assert_eq!(n(Some("to"), true, false).await, 0);
    assert_eq!(n(None, false, true).await, 2);
    // A search with SQL wildcards in it matches them literally or not at all, never everything.
    assert_eq!(n(Some("%"), false, false).await, 2);
    index.forget_build(7).await.unwrap();
    assert!(!index.build_indexed(7).await.unwrap());
    assert_eq!(index.builds_with("tool").await.unwrap(), Vec::<i64>::new());
    drop(index);

    // Reopened (a restart): the same ids, nothing migrated twice.
    let again = Index::open(url).await.expect("reopens");
    assert_eq!(again.id(Kind::Environment, "team/a").await.unwrap(), a);
    assert_eq!(again.id(Kind::Environment, "team/b").await.unwrap(), b);
    assert!(again.ping().await);
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&format!(
        "sqlite://{}",
        dir.path().join("index.db").display()
    ))
    .await;
}

struct Postgres(std::path::PathBuf);

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/postgres.sh")
}

#[tokio::test]
async fn postgres() {
    let dir = tempfile::Builder::new()
        .prefix("pg-index-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let _ = Command::new("chmod").arg("755").arg(&dir).status();
    let state = dir.join("pg");
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&state)
        .output()
        .expect("runs the PostgreSQL helper");
    let _guard = Postgres(state);
    assert!(
        out.status.success(),
        "starting PostgreSQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let index = Index::open(&url).await.unwrap();
    assert!(index.is_postgres());
    drop(index);
    exercise(&url).await;
}
