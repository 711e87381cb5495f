//! The gateway served on loopback, spoken to over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::TcpStream;

use conda_store_api_server::{Config, router};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

async fn serve(prefix: &str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(&Config::with_prefix(prefix));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn api_root_reports_version_in_envelope() {
    let addr = serve("/conda-store").await;
    let (code, body) = tokio::task::spawn_blocking(move || get(addr, "/conda-store/api/v1/"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["data"]["version"],
        conda_store_api_server::CONDA_STORE_API_VERSION
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_unknown_paths() {
    let addr = serve("/").await;
    let (health, api, missing) = tokio::task::spawn_blocking(move || {
        (
            get(addr, "/healthz"),
            get(addr, "/api/v1/"),
            get(addr, "/nope"),
        )
    })
    .await
    .unwrap();
    assert_eq!(health.0, 200);
    assert_eq!(api.0, 200);
    assert_eq!(missing.0, 404);
    let v: serde_json::Value = serde_json::from_str(&missing.1).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["message"], "not found");
}

#[test]
fn prefix_is_normalised() {
    assert_eq!(
        Config::with_prefix("conda-store").url_prefix,
        "/conda-store/"
    );
    assert_eq!(Config::with_prefix("/a/b/").url_prefix, "/a/b/");
    assert_eq!(Config::with_prefix("").url_prefix, "/");
    assert_eq!(Config::with_prefix("/").url_prefix, "/");
}

#[test]
fn binary_prints_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conda-store-api-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}
