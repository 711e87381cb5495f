//! One contract, two backends: the local directory and S3 against a real S3-compatible server
//! (moto's server, installed by `scripts/install-test-deps.sh`) started on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use std::time::{Duration, Instant};

use bytes::Bytes;
use conda_store_storage::testing::S3Server;
use conda_store_storage::{
    ArtifactStore, ByteRange, Key, LocalStore, S3Config, S3Store, StorageError,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

async fn read_all(store: &dyn ArtifactStore, k: &str, range: Option<ByteRange>) -> Vec<u8> {
    let mut r = store.get(&key(k), range).await.unwrap();
    let mut buf = Vec::new();
    r.body.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf.len() as u64, r.len, "{k}: announced length");
    buf
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (so a wrong offset cannot go unnoticed).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn contract(store: &dyn ArtifactStore, dir: &std::path::Path) {
    // put / get / head
    let info = store
        .put_bytes(
            &key("builds/ns/1/lockfile.yaml"),
            Bytes::from_static(b"version: 1\n"),
        )
        .await
        .unwrap();
    assert_eq!(info.size, 11);
    assert_eq!(info.sha256.as_deref(), Some(sha(b"version: 1\n").as_str()));
    assert_eq!(
        read_all(store, "builds/ns/1/lockfile.yaml", None).await,
        b"version: 1\n"
    );
    assert_eq!(
        store
            .head(&key("builds/ns/1/lockfile.yaml"))
            .await
            .unwrap()
            .unwrap()
            .size,
        11
    );
    assert!(
        store
            .head(&key("builds/ns/1/missing"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.get(&key("builds/ns/1/missing"), None).await,
        Err(StorageError::NotFound(_))
    ));

    // overwrite replaces whole
    store
        .put_bytes(&key("builds/ns/1/lockfile.yaml"), Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!(
        read_all(store, "builds/ns/1/lockfile.yaml", None).await,
        b"v2"
    );

    // a large file goes up in parts (12 MiB over 5 MiB parts) and comes back intact
    let big = pattern(12 * 1024 * 1024 + 123);
    let path = dir.join("big.bin");
    std::fs::write(&path, &big).unwrap();
    let info = store
        .put_file(&key("blobs/sha256/big"), &path)
        .await
        .unwrap();
    assert_eq!(info.size, big.len() as u64);
    assert_eq!(info.sha256.as_deref(), Some(sha(&big).as_str()));
    assert!(read_all(store, "blobs/sha256/big", None).await == big);

    // a file of exactly one part is a single put
    let exact = pattern(5 * 1024 * 1024);
    std::fs::write(dir.join("exact.bin"), &exact).unwrap();
    let info = store
        .put_file(&key("blobs/sha256/exact"), &dir.join("exact.bin"))
        .await
        .unwrap();
    assert_eq!(info.sha256.as_deref(), Some(sha(&exact).as_str()));
    assert!(read_all(store, "blobs/sha256/exact", None).await == exact);

    // ranges, as a resumed download asks for them
    let r = |start, end| Some(ByteRange { start, end });
    assert!(read_all(store, "blobs/sha256/big", r(100, Some(199))).await == big[100..200]);
    let tail_start = big.len() as u64 - 10;
    assert!(
        read_all(store, "blobs/sha256/big", r(tail_start, None)).await == big[big.len() - 10..]
    );
    let got = store
        .get(&key("blobs/sha256/big"), r(5, Some(9)))
        .await
        .unwrap();
    assert_eq!((got.len, got.total), (5, big.len() as u64));
    assert!(matches!(
        store
            .get(&key("blobs/sha256/big"), r(big.len() as u64 + 5, None))
            .await,
        Err(StorageError::InvalidRange { .. })
    ));

    // list by prefix, sorted; delete; delete_prefix
    let listed: Vec<String> = store
        .list("blobs/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, ["blobs/sha256/big", "blobs/sha256/exact"]);
    assert!(store.list("nothing/").await.unwrap().is_empty());
    store.delete(&key("blobs/sha256/exact")).await.unwrap();
    store.delete(&key("blobs/sha256/exact")).await.unwrap(); // absent: fine
    assert!(
        store
            .head(&key("blobs/sha256/exact"))
            .await
            .unwrap()
            .is_none()
    );
    store
        .put_bytes(
            &key("builds/ns/1/logs/solve.log"),
            Bytes::from_static(b"log"),
        )
        .await
        .unwrap();
    store
        .put_bytes(
            &key("builds/ns/2/lockfile.yaml"),
            Bytes::from_static(b"two"),
        )
        .await
        .unwrap();
    assert_eq!(store.delete_prefix("builds/ns/1/").await.unwrap(), 2);
    let left: Vec<String> = store
        .list("builds/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        left,
        ["builds/ns/2/lockfile.yaml"],
        "another build's objects are untouched"
    );

    // a failed write leaves the existing object as it was
    let err = store
        .put_file(
            &key("builds/ns/2/lockfile.yaml"),
            &dir.join("does-not-exist"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!(
        read_all(store, "builds/ns/2/lockfile.yaml", None).await,
        b"two"
    );
}

#[tokio::test]
async fn local_backend_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("store")).unwrap();
    contract(&store, dir.path()).await;
    assert_eq!(
        store
            .presign_get(&key("blobs/x"), Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    // No partial write is left beside any object.
    let leftovers: Vec<_> = walk(&dir.path().join("store"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".incoming")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A deleted build leaves no directory behind, not even one holding a partial write a killed
/// step left; other builds are untouched.
#[tokio::test]
async fn local_deletes_leave_no_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = LocalStore::new(&root).unwrap();
    for k in [
        "builds/ns/b-1/conda-lock.yaml",
        "builds/ns/b-1/logs/solve.log",
        "builds/ns/b-2/x",
    ] {
        store
            .put_bytes(&key(k), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    std::fs::write(root.join("builds/ns/b-1/.incoming-1-2"), b"partial").unwrap();
    assert_eq!(store.delete_prefix("builds/ns/b-1/").await.unwrap(), 2);
    assert!(!root.join("builds/ns/b-1").exists());
    assert!(root.join("builds/ns/b-2/x").exists());
    store.delete(&key("builds/ns/b-2/x")).await.unwrap();
    assert!(
        !root.join("builds/ns").exists(),
        "empty namespace directory left"
    );
    assert!(root.is_dir(), "the root stays");
}

#[tokio::test]
async fn s3_backend_meets_the_contract() {
    let server = S3Server::start();
    let store = S3Store::new(&server.config("contract"));
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap(); // idempotent
    let dir = tempfile::tempdir().unwrap();
    contract(&store, dir.path()).await;
}

#[tokio::test]
async fn s3_presigned_url_serves_the_object() {
    let server = S3Server::start();
    let store = S3Store::new(&server.config("presign"));
    store.ensure_bucket().await.unwrap();
    store
        .put_bytes(
            &key("builds/ns/7/archive.tar.zst"),
            Bytes::from_static(b"archive bytes"),
        )
        .await
        .unwrap();
    let url = store
        .presign_get(
            &key("builds/ns/7/archive.tar.zst"),
            Duration::from_secs(300),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let path = url
        .split_once(&format!("127.0.0.1:{}", server.port))
        .unwrap()
        .1
        .to_string();
    assert!(
        path.starts_with("/presign/artifacts/builds/ns/7/archive.tar.zst?"),
        "{path}"
    );
    let port = server.port;
    let body = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).to_string()
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("archive bytes"), "{body}");
}

#[tokio::test]
async fn s3_down_gives_a_clear_error_in_bounded_time() {
    // A port nobody listens on: connection refused on every attempt.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = S3Store::new(&S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key: "test".into(),
        secret_key: "test".into(),
        max_attempts: 2,
        ..S3Config::default()
    });
    let started = Instant::now();
    let err = store
        .put_bytes(&key("builds/ns/1/lockfile.yaml"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let msg = err.to_string();
    assert!(
        matches!(err, StorageError::Backend { op: "writing", .. }),
        "{msg}"
    );
    assert!(msg.contains("builds/ns/1/lockfile.yaml"), "{msg}");
}

#[tokio::test]
async fn keys_that_could_escape_are_refused_before_any_io() {
    for bad in ["../x", "a/../../b", "/etc/passwd", "a//b", ".incoming/x"] {
        assert!(
            matches!(Key::new(bad), Err(StorageError::InvalidKey { .. })),
            "{bad}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    assert!(store.list("../").await.is_err());
}
